//! Source files and positions: what a diagnostic points at.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::pointer::JsonPointer;

/// A connector file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    path: PathBuf,
    text: String,
}

impl SourceFile {
    /// Wraps text that was read from `path`.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Reads `path`.
    ///
    /// Fails with the path in the message when the file cannot be read or is not UTF-8.
    pub fn load(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let text = fs_err::read_to_string(&path)?;
        Ok(Self { path, text })
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
}
