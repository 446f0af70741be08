//! Connector loading, and the [`Registry`]: connectors loaded once, found by the name an
//! instance records (`engine_store::connector_of`), reloaded when their file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use engine_spec::Connector;

use crate::{Error, ErrorKind};

/// Loads and validates the connector file at `path`. Fails when it cannot be read, or when its
/// diagnostics hold an error ([`ErrorKind::InvalidConnector`] carries them all).
pub fn load_connector(path: &Path) -> Result<Connector, Error> {
    let report = engine_spec::load(path).map_err(|error| ErrorKind::ConnectorUnreadable {
        path: path.to_owned(),
        error,
    })?;
    if report.has_errors() || report.connector().is_none() {
        return Err(ErrorKind::InvalidConnector {
            path: path.to_owned(),
            report: Box::new(report),
        }
        .into());
    }
    Ok(report
        .into_connector()
        .expect("a report without errors holds its connector"))
}

/// One loaded connector file.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    modified: Option<SystemTime>,
    /// When the file's modification time was last compared with `modified`.
    checked: Instant,
    connector: Arc<Connector>,
}

/// Connectors by the names instances record them by. A registry made with
/// [`Registry::load`] knows every connector file of a directory under its path
/// (`DIR/acme.json`), its file stem (`acme`) and its key; any registry also takes a name that
/// is the path of a connector file, and loads it on first use. [`Registry::get`] reloads a
/// file whose modification time changed (looked at on every lookup, or at most once per
/// [`Registry::recheck_every`]).
#[derive(Debug, Default)]
pub struct Registry {
    /// Entries by path, as loaded. (The maps of a process's own connectors: hashed fast.)
    entries: foldhash::HashMap<PathBuf, Entry>,
    /// Other names (stems, keys) of the entries, to their path.
    aliases: foldhash::HashMap<String, PathBuf>,
    /// The directory [`Registry::load`] loaded; `None`: every name is a path.
    directory: Option<PathBuf>,
    /// How long a file's modification time is trusted before it is read again.
    recheck: Duration,
}

impl Registry {
    /// An empty registry: names are the paths of connector files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a loaded file's modification time at most once per `interval` (a system call a
    /// lookup would make otherwise: a server looks its connector up on every call); a change
    /// is then seen within `interval`. Zero, the default, reads it on every lookup.
    #[must_use]
    pub fn recheck_every(mut self, interval: Duration) -> Self {
        self.recheck = interval;
        self
    }

    /// Loads every connector file of `directory` (`*.json`, test files `*.test.json`,
    /// cassettes `*.cassette.json` and JSON files that are no connector aside). Returns the registry and, for each file that did not
    /// load, its error; fails when the directory cannot be listed.
    pub fn load(directory: &Path) -> Result<(Self, Vec<Error>), Error> {
        let unreadable = |error| ErrorKind::ConnectorUnreadable {
            path: directory.to_owned(),
            error,
        };
        let mut paths = Vec::new();
        for entry in fs_err::read_dir(directory).map_err(unreadable)? {
            let path = entry.map_err(unreadable)?.path();
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let skipped = name.ends_with(".test.json") || name.ends_with(".cassette.json");
            let json = path
                .extension()
                .is_some_and(|extension| extension == "json");
            if json && !skipped && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut registry = Self {
            directory: Some(directory.to_owned()),
            ..Self::default()
        };
        let mut errors = Vec::new();
        for path in paths {
            match registry.insert(&path) {
                Ok(connector) => {
                    if let Some(stem) = path.file_stem() {
                        registry
                            .aliases
                            .insert(stem.to_string_lossy().into_owned(), path.clone());
                    }
                    registry
                        .aliases
                        .entry(connector.key().to_owned())
                        .or_insert_with(|| path.clone());
                }
                // JSON that is no connector at all (an instance file) is not the registry's.
                Err(error)
                    if matches!(error.kind(), ErrorKind::InvalidConnector { report, .. }
                        if report.is_not_a_connector()) => {}
                Err(error) => errors.push(error),
            }
        }
        Ok((registry, errors))
    }

    /// The connector `name` names: a name the registry knows, or the path of a connector file.
    /// Reloads the file when it changed since it was loaded. Fails with
    /// [`ErrorKind::UnknownConnector`] when a registry of a directory knows no such name and no
    /// file has it as its path, and with the load's error when the file cannot be read (a
    /// registry without a directory) or is invalid now.
    pub fn get(&mut self, name: &str) -> Result<Arc<Connector>, Error> {
        let path = self
            .aliases
            .get(name)
            .map_or_else(|| Path::new(name), PathBuf::as_path);
        if let Some(entry) = self.entries.get_mut(path) {
            if entry.checked.elapsed() < self.recheck {
                return Ok(Arc::clone(&entry.connector));
            }
            if modified(&entry.path) == entry.modified {
                entry.checked = Instant::now();
                return Ok(Arc::clone(&entry.connector));
            }
        }
        if self.directory.is_some() && !self.entries.contains_key(path) && !path.is_file() {
            let mut known: Vec<String> = self
                .aliases
                .keys()
                .cloned()
                .chain(self.entries.keys().map(|path| path.display().to_string()))
                .collect();
            known.sort();
            return Err(ErrorKind::UnknownConnector {
                name: name.to_owned(),
                known,
            }
            .into());
        }
        let path = path.to_owned();
        self.insert(&path)
    }

    /// Loads the file at `path` into the registry under its path.
    fn insert(&mut self, path: &Path) -> Result<Arc<Connector>, Error> {
        // The time before the load: a change during it is seen at the next lookup.
        let before = modified(path);
        let checked = Instant::now();
        let connector = Arc::new(load_connector(path)?);
        self.entries.insert(
            path.to_owned(),
            Entry {
                path: path.to_owned(),
                modified: before,
                checked,
                connector: Arc::clone(&connector),
            },
        );
        Ok(connector)
    }
}

/// The modification time of `path`; `None` when it cannot be read.
fn modified(path: &Path) -> Option<SystemTime> {
    fs_err::metadata(path).ok()?.modified().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The shipped demo connector, its name changed to `name`.
    fn demo_named(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../connectors/demo.json");
        let text = fs_err::read_to_string(path).unwrap();
        text.replacen("\"Demo vendor\"", &format!("{name:?}"), 1)
    }

    /// Writes `text` to `path` and sets its modification time to `seconds` after the epoch, so
    /// that a change is seen whatever the file system's time resolution.
    fn write(path: &Path, text: &str, seconds: u64) {
        fs_err::write(path, text).unwrap();
        let file = fs_err::File::options().write(true).open(path).unwrap();
        file.file()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
            .unwrap();
    }

    #[test]
    fn a_directory_is_loaded_once_and_found_by_stem_key_and_path() {
        let temp = tempfile::tempdir().unwrap();
        write(&temp.path().join("acme.json"), &demo_named("Acme"), 1_000);
        write(&temp.path().join("acme.test.json"), "{}", 1_000);
        write(&temp.path().join("broken.json"), "{", 1_000);
        let (mut registry, errors) = Registry::load(temp.path()).unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            matches!(errors[0].kind(), ErrorKind::InvalidConnector { path, .. } if path.ends_with("broken.json")),
            "{errors:?}"
        );
        let by_stem = registry.get("acme").unwrap();
        let by_key = registry.get("demo").unwrap();
        let by_path = registry
            .get(&temp.path().join("acme.json").display().to_string())
            .unwrap();
        assert_eq!(by_stem.name(), "Acme");
        assert!(Arc::ptr_eq(&by_stem, &by_key) && Arc::ptr_eq(&by_stem, &by_path));
    }

    #[test]
    fn a_changed_file_is_reloaded_on_lookup() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("acme.json");
        write(&path, &demo_named("Acme"), 1_000);
        let (mut registry, _) = Registry::load(temp.path()).unwrap();
        let first = registry.get("acme").unwrap();
        assert!(Arc::ptr_eq(&first, &registry.get("acme").unwrap()));

        write(&path, &demo_named("Acme v2"), 2_000);
        assert_eq!(registry.get("acme").unwrap().name(), "Acme v2");

        // A change that breaks the file is an error on lookup, with its diagnostics.
        write(&path, "{\"name\": 1}", 3_000);
        let error = registry.get("acme").unwrap_err();
        assert!(
            matches!(error.kind(), ErrorKind::InvalidConnector { report, .. } if report.has_errors()),
            "{error:?}"
        );
    }

    #[test]
    fn a_registry_that_rechecks_at_intervals_keeps_a_changed_file_until_then() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("acme.json");
        write(&path, &demo_named("Acme"), 1_000);
        let (registry, _) = Registry::load(temp.path()).unwrap();
        let mut registry = registry.recheck_every(Duration::from_hours(1));
        let first = registry.get("acme").unwrap();

        write(&path, &demo_named("Acme v2"), 2_000);
        // Within the hour the file is not looked at again.
        assert!(Arc::ptr_eq(&first, &registry.get("acme").unwrap()));
        // Past it, it is: the change is picked up.
        let mut registry = registry.recheck_every(Duration::ZERO);
        assert_eq!(registry.get("acme").unwrap().name(), "Acme v2");
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_the_known_ones() {
        let temp = tempfile::tempdir().unwrap();
        write(&temp.path().join("acme.json"), &demo_named("Acme"), 1_000);
        let (mut registry, _) = Registry::load(temp.path()).unwrap();
        let error = registry.get("acmee").unwrap_err();
        assert_eq!(error.to_string(), "unknown connector `acmee`");
        let ErrorKind::UnknownConnector { known, .. } = error.kind() else {
            panic!("{error:?}");
        };
        assert!(known.contains(&"acme".to_owned()), "{known:?}");
    }

    #[test]
    fn a_registry_without_a_directory_loads_paths_on_first_use() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("acme.json");
        write(&path, &demo_named("Acme"), 1_000);
        let mut registry = Registry::new();
        let name = path.display().to_string();
        assert_eq!(registry.get(&name).unwrap().name(), "Acme");
        // A name that is no file is one that cannot be read.
        let missing = temp.path().join("missing.json").display().to_string();
        let error = registry.get(&missing).unwrap_err();
        assert!(
            matches!(error.kind(), ErrorKind::ConnectorUnreadable { .. }),
            "{error:?}"
        );
    }
}
