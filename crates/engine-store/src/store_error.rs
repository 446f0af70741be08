use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// An error from an [`InstanceStore`](crate::InstanceStore) or an
/// [`InstanceLock`](crate::InstanceLock).
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

impl StoreErrorKind {
    /// True when the store holds no such instance: [`StoreErrorKind::NotFound`] (a file store)
    /// or [`StoreErrorKind::UnknownInstance`] (a database store).
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::UnknownInstance { .. })
    }
}

/// The cause of a [`StoreError`].
///
/// `path` is the instance file, except where a variant says otherwise. A
/// [`MemoryStore`](crate::MemoryStore) has no files and reports the instance id as the path;
/// other backends report their own failures as [`StoreErrorKind::Backend`], with the source.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreErrorKind {
    /// The instance has no stored state.
    #[error("instance file `{}` does not exist", path.display())]
    NotFound {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A database store holds no instance with this id.
    #[error("instance `{instance}` does not exist in `{store}`")]
    UnknownInstance {
        /// The instance id.
        instance: String,
        /// The store, as its URL without credentials (`sqlite:state.db`).
        store: String,
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
        "invalid instance id `{id}`: use 1 to 200 ASCII letters, digits, `.`, `_` and `-`, and do not start with `.`"
    )]
    InvalidInstanceId {
        /// The rejected id.
        id: String,
    },
    /// Another holder kept the instance's lock for longer than the caller was willing to wait.
    #[error("timed out after {waited:?} waiting for the lock on `{}`", path.display())]
    LockTimeout {
        /// The lock that was wanted: a file store's sidecar lock file, a memory store's
        /// instance id.
        path: PathBuf,
        /// How long the caller waited (the requested timeout).
        waited: Duration,
    },
    /// A write or delete named a version that is no longer the stored one: another writer got
    /// there first. Re-read and decide again.
    #[error(
        "instance `{instance}` changed since it was read (version {found}, expected {expected})"
    )]
    Conflict {
        /// The instance id.
        instance: String,
        /// The version the writer read.
        expected: u64,
        /// The version stored now.
        found: u64,
    },
    /// A lease from [`InstanceStore::claim_due`](crate::InstanceStore::claim_due) is no longer
    /// held: it ended (and may have gone to another claimer) before it was renewed.
    #[error("the lease on instance `{instance}` ended before it was renewed")]
    LeaseLost {
        /// The instance id.
        instance: String,
    },
    /// An encrypted value of `instance` cannot be read: the key it needs is not given, or does
    /// not decrypt it.
    #[error("cannot decrypt instance `{instance}`: {message}")]
    Secret {
        /// The instance.
        instance: String,
        /// What is wrong, naming the key (never its bytes).
        message: String,
    },
    /// The backend failed (a database, a network store); `source` says why.
    #[error("the instance store failed on `{instance}`")]
    Backend {
        /// The instance id, or what was being done for a listing.
        instance: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
            StoreErrorKind::Conflict {
                instance: "acme".to_owned(),
                expected: 3,
                found: 4,
            },
            StoreErrorKind::LeaseLost {
                instance: "acme".to_owned(),
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
                "invalid instance id `../etc`: use 1 to 200 ASCII letters, digits, `.`, `_` and `-`, and do not start with `.`",
                "timed out after 250ms waiting for the lock on `state/acme.json`",
                "instance `acme` changed since it was read (version 4, expected 3)",
                "the lease on instance `acme` ended before it was renewed",
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
