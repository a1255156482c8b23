//! A JSON Lines journal file, read as `bundle create --journal` reads it
//! (line splitting, blank lines, `\r\n`, the 16 MiB limit, seq continuity).
#![no_main]

use std::io::Write;

use ferry::journal::{Journal, JournalError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::Builder::new().suffix(".jsonl").tempfile_in(scratch()) else { return };
    if file.write_all(data).is_err() {
        return;
    }
    let Ok(journal) = Journal::open(file.path()) else { return };
    let mut last = None;
    let _ = journal.scan::<JournalError>(None, |head, bytes| {
        assert!(!bytes.is_empty() && bytes.len() <= ferry::journal::MAX_LINE);
        if let Some(prev) = last {
            assert_eq!(head.seq, prev + 1, "seqs run without gaps");
        }
        last = Some(head.seq);
        Ok(())
    });
});

/// A RAM-backed folder where there is one (journals are read from files).
fn scratch() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
