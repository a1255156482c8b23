//! A journal file in the seed proposal's legacy format (MAC line, `{`,
//! JavaScript-style statements), numbered by an in-memory registry.
#![no_main]

use std::collections::HashMap;
use std::io::Write;

use ferry::journal::{Journal, JournalError, SeqRegistry};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Registry(HashMap<(String, u64, [u8; 32]), u64>);

impl SeqRegistry for Registry {
    fn seq_for(
        &mut self,
        file: &str,
        line: u64,
        hash: &[u8; 32],
    ) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        let next = self.0.len() as u64 + 1;
        Ok(*self.0.entry((file.to_owned(), line, *hash)).or_insert(next))
    }
}

fuzz_target!(|data: &[u8]| {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let Ok(mut file) = tempfile::Builder::new().suffix(".txt").tempfile_in(dir) else { return };
    if file.write_all(data).is_err() {
        return;
    }
    let Ok(journal) = Journal::open(file.path()) else { return };
    let mut registry = Registry::default();
    let _ = journal.scan::<JournalError>(Some(&mut registry), |head, bytes| {
        // Bundled legacy entries are canonical JSON Lines entries.
        let again = ferry::journal::Entry::parse(bytes).expect("a numbered legacy entry is a valid entry");
        assert_eq!(again.head(), *head);
        Ok(())
    });
});
