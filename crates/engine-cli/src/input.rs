//! Reading the files a command is given (instance files, test files, their connectors and
//! cassettes, the files of `multipart` inputs): regular files only, bounded, read as connector
//! files are.

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

/// The bytes of the regular file at `path` ([`regular`]), at most `limit`: a caller's file
/// (`--param NAME=@FILE`). The error is the reason alone (the caller names the file).
pub(crate) fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    regular(path)
        .and_then(|()| engine_spec::read_bounded(path, limit))
        .map_err(|error| reason(&error, limit))
}

/// Standard input, at most `limit` bytes (`--param NAME=@-`).
pub(crate) fn read_stdin(limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| reason(&error, limit))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "larger than the limit of {}",
            engine_spec::human_size(limit)
        ));
    }
    Ok(bytes)
}

/// Why a read failed, without the path (the message names it already).
fn reason(error: &io::Error, limit: u64) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::InvalidInput => {
            "not a regular file (a FIFO, a device or a directory)".to_owned()
        }
        io::ErrorKind::FileTooLarge => {
            format!(
                "larger than the limit of {}",
                engine_spec::human_size(limit)
            )
        }
        _ => {
            std::error::Error::source(error).map_or_else(|| error.to_string(), ToString::to_string)
        }
    }
}
