//! Source files and positions: what a diagnostic points at.

use std::fmt;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use crate::pointer::JsonPointer;

/// A connector file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    path: PathBuf,
    text: String,
}

/// The largest connector file the engine reads: 16 MiB. The largest real export we know of is
/// under 1 MB; a larger file (or an endless one such as `/dev/zero`) is refused with an error
/// naming the file and this limit.
pub const MAX_SOURCE_SIZE: u64 = 16 * 1024 * 1024;

impl SourceFile {
    /// Wraps text that was read from `path`. A leading UTF-8 byte-order mark (written by some
    /// Windows editors) is dropped: positions count from the character after it.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        let mut text = text.into();
        if text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        Self {
            path: path.into(),
            text,
        }
    }

    /// Reads `path`, at most [`MAX_SOURCE_SIZE`] bytes.
    ///
    /// Fails with the path in the message when the file cannot be read, is larger than the
    /// limit or is not UTF-8.
    pub fn load(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let bytes = read_bounded(&path, MAX_SOURCE_SIZE)?;
        Self::from_bytes(path, bytes)
    }

    /// Wraps bytes that were read from `path`, as [`SourceFile::new`] does text.
    ///
    /// Fails with the path in the message when the bytes are not UTF-8.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> io::Result<Self> {
        let path = path.into();
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Self::new(path, text)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "failed to read file `{}`: stream did not contain valid UTF-8",
                    path.display()
                ),
            )),
        }
    }

    /// The path the file was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line_start = before.rfind('\n').map_or(0, |index| index + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// The byte offset of a 1-based line and column (in characters), clamped to the text.
    pub fn offset(&self, position: Position) -> usize {
        let mut offset = 0;
        for _ in 1..position.line {
            match self.text[offset..].find('\n') {
                Some(index) => offset += index + 1,
                None => return self.text.len(),
            }
        }
        let line = &self.text[offset..];
        let line = &line[..line.find('\n').unwrap_or(line.len())];
        offset
            + line
                .char_indices()
                .nth(position.column.saturating_sub(1))
                .map_or(line.len(), |(index, _)| index)
    }
}

/// Reads the file at `path`, refusing one longer than `limit` bytes without reading more than
/// `limit + 1` (so a FIFO fed forever or `/dev/zero` ends with an error, not a hang).
///
/// The error names the file and the limit.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = fs_err::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, limit));
    }
    Ok(bytes)
}

/// The error of a file longer than `limit` bytes: it names the file and the limit.
pub fn too_large(path: &Path, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "failed to read file `{}`: larger than the limit of {}",
            path.display(),
            human_size(limit)
        ),
    )
}

/// `16 MiB`, `512 KiB` or `100 bytes`.
pub fn human_size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// A byte range in a [`SourceFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A 1-based line and column; the column counts characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Where something is in a connector file: the JSON pointer of the node, and optionally a byte
/// range inside that node's string value (for a key inside a template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// The JSON pointer of the node, e.g. `/resources/1/parameters/0/name`.
    pub pointer: JsonPointer,
    /// A byte range inside the node's string value (as written between the quotes).
    pub inner: Option<(usize, usize)>,
}

impl Location {
    /// The location of a whole node.
    pub fn new(file: impl Into<PathBuf>, pointer: JsonPointer) -> Self {
        Self {
            file: file.into(),
            pointer,
            inner: None,
        }
    }

    /// The same node, narrowed to `start..end` of its string value.
    #[must_use]
    pub fn narrow(mut self, start: usize, end: usize) -> Self {
        self.inner = Some((start, end));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let file = SourceFile::new("x.json", "{\n  \"é\": 1\n}");
        assert_eq!(file.position(0), Position { line: 1, column: 1 });
        let offset = file.text().find('1').unwrap();
        assert_eq!(file.position(offset), Position { line: 2, column: 8 });
        assert_eq!(file.offset(Position { line: 2, column: 8 }), offset);
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped() {
        let file = SourceFile::new("x.json", "\u{feff}{}");
        assert_eq!(file.text(), "{}");
        let file = SourceFile::from_bytes("x.json", b"\xef\xbb\xbf".to_vec()).unwrap();
        assert_eq!(file.text(), "");
        // Only a leading one: a later U+FEFF is content.
        assert_eq!(SourceFile::new("x", "a\u{feff}").text(), "a\u{feff}");
    }

    #[test]
    fn reads_are_bounded_and_name_the_file_and_the_limit() {
        let dir = std::env::temp_dir().join(format!("engine-spec-bounded-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let path = dir.join("big.json");
        fs_err::write(&path, vec![b' '; 101]).unwrap();
        let error = read_bounded(&path, 100).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            error.to_string(),
            format!(
                "failed to read file `{}`: larger than the limit of 100 bytes",
                path.display()
            )
        );
        assert_eq!(read_bounded(&path, 101).unwrap().len(), 101);
        // An endless special file stops at the limit.
        if Path::new("/dev/zero").exists() {
            let error = read_bounded(Path::new("/dev/zero"), 1024).unwrap_err();
            assert!(
                error.to_string().contains("larger than the limit of 1 KiB"),
                "{error}"
            );
        }
        fs_err::remove_dir_all(&dir).unwrap();
    }
}
