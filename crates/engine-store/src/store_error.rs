use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// An error from a [`StateStore`](crate::StateStore) or a [`StateLock`](crate::StateLock).
///
/// Match on [`StoreError::kind`] for the cause. `Display` is the kind's message and `source()`
/// continues with the kind's cause, so a renderer can print the whole chain.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError {
    kind: Box<StoreErrorKind>,
}

impl StoreError {
    /// Returns what went wrong.
    pub fn kind(&self) -> &StoreErrorKind {
        &self.kind
    }
}

impl From<StoreErrorKind> for StoreError {
    fn from(kind: StoreErrorKind) -> Self {
        Self {
            kind: Box::new(kind),
        }
    }
}

/// The cause of a [`StoreError`].
///
/// `path` is the instance file, except where a variant says otherwise. A
/// [`MemoryStore`](crate::MemoryStore) has no files and reports the instance id as the path.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreErrorKind {
    /// The instance has no stored state.
    #[error("instance file `{}` does not exist", path.display())]
    NotFound {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// The instance file is not valid JSON.
    #[error(
        "instance file `{}` is not valid JSON at line {line}, column {column}: {message}",
        path.display()
    )]
    Malformed {
        /// The file that failed to parse.
        path: PathBuf,
        /// The 1-based line of the error.
        line: usize,
        /// The 1-based column of the error.
        column: usize,
        /// What the parser expected, without the position.
        message: String,
    },
    /// The instance file is valid JSON, but its top level is not an object.
    #[error("instance file `{}` must contain a JSON object at the top level", path.display())]
    NotAnObject {
        /// The offending file.
        path: PathBuf,
    },
    /// The instance id cannot be used as a file stem.
    #[error(
        "invalid instance id `{id}`: use only ASCII letters, digits, `.`, `_` and `-`, and do not start with `.`"
    )]
    InvalidInstanceId {
        /// The rejected id.
        id: String,
    },
    /// Another holder kept the instance's lock for longer than the caller was willing to wait.
    #[error("timed out after {waited:?} waiting for the lock on `{}`", path.display())]
    LockTimeout {
        /// The instance file whose lock was wanted.
        path: PathBuf,
        /// How long the caller waited (the requested timeout).
        waited: Duration,
    },
    /// A filesystem operation failed.
    #[error("failed to {operation} `{}`", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// One of `read`, `lock`, `write`, `rename` or `sync`.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let path = PathBuf::from("state/acme.json");
        let kinds = [
            StoreErrorKind::NotFound { path: path.clone() },
            StoreErrorKind::Malformed {
                path: path.clone(),
                line: 3,
                column: 7,
                message: "expected `:`".to_owned(),
            },
            StoreErrorKind::NotAnObject { path: path.clone() },
            StoreErrorKind::InvalidInstanceId {
                id: "../etc".to_owned(),
            },
            StoreErrorKind::LockTimeout {
                path: path.clone(),
                waited: Duration::from_millis(250),
            },
            StoreErrorKind::Io {
                path,
                operation: "rename",
                source: io::Error::other("disk on fire"),
            },
        ];
        let messages: Vec<String> = kinds
            .into_iter()
            .map(|kind| StoreError::from(kind).to_string())
            .collect();
        assert_eq!(
            messages,
            [
                "instance file `state/acme.json` does not exist",
                "instance file `state/acme.json` is not valid JSON at line 3, column 7: expected `:`",
                "instance file `state/acme.json` must contain a JSON object at the top level",
                "invalid instance id `../etc`: use only ASCII letters, digits, `.`, `_` and `-`, and do not start with `.`",
                "timed out after 250ms waiting for the lock on `state/acme.json`",
                "failed to rename `state/acme.json`",
            ]
        );
    }

    #[test]
    fn io_error_keeps_its_source() {
        let error = StoreError::from(StoreErrorKind::Io {
            path: PathBuf::from("acme.json"),
            operation: "write",
            source: io::Error::other("disk on fire"),
        });
        let source = error.source().expect("io errors have a source");
        assert_eq!(source.to_string(), "disk on fire");
        assert!(matches!(
            error.kind(),
            StoreErrorKind::Io {
                operation: "write",
                ..
            }
        ));
    }
}
