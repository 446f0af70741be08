//! The instance-state parser: `FileStore::load` of a file holding the input bytes (read-only use
//! of engine-store's public API), then `Schedule::read` and a listing's `Summary::of` on what it read.
#![no_main]

use engine_store::{FileStore, InstanceStore, Schedule, Summary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("a temporary directory");
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
    }
    DIR.with(|dir| {
        let path = dir.path().join("instance.json");
        std::fs::write(&path, data).expect("the temporary file is writable");
        let store = FileStore::for_file(&path);
        RUNTIME.with(|runtime| {
            if let Ok(read) = runtime.block_on(store.load("fuzz")) {
                let _ = Schedule::read(&read.state);
                let _ = Summary::of("fuzz".to_owned(), read.version, &read.state);
            }
        });
    });
});
