//! Reading the files a command is given (instance files, test files, their connectors and
//! cassettes): regular files only, at most [`engine_spec::MAX_SOURCE_SIZE`] bytes, read as
//! connector files are.

use std::io;
use std::path::Path;

/// Refuses anything at `path` but a regular file, before it is opened: opening a FIFO waits for
/// a writer, a device (`/dev/zero`) never ends.
pub(crate) fn regular(path: &Path) -> io::Result<()> {
    if fs_err::metadata(path)?.is_file() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "failed to read `{}`: not a regular file (a FIFO, a device or a directory)",
            path.display()
        ),
    ))
}

/// The text of the regular file at `path` ([`regular`]): a file over the limit is an error
/// naming it, never a read without end.
pub(crate) fn read_text(path: &Path) -> io::Result<String> {
    regular(path)?;
    let bytes = engine_spec::read_bounded(path, engine_spec::MAX_SOURCE_SIZE)?;
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("failed to read `{}`: it is not UTF-8", path.display()),
        )
    })
}
