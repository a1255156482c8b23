//! The bundle reader and verification on any bytes: form, signatures
//! against the conformance vectors' trust store, and every segment's bytes
//! and entries (whether or not the signatures held, to reach the
//! decompression and entry checks), through both the `bundle verify` walk
//! and the apply pipeline. Errors are fine; panics, hangs and unbounded
//! memory are not.
#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use ferry::bundle::BundleReader;
use ferry::keys::TrustStore;
use ferry::progress::Silent;
use ferry::verify::{check_entries, check_segment, check_signatures_each, Depth};
use libfuzzer_sys::fuzz_target;

fn trust() -> &'static TrustStore {
    static TRUST: OnceLock<TrustStore> = OnceLock::new();
    TRUST.get_or_init(|| {
        serde_json::from_str(include_str!("../../fixtures/vectors/trust.json")).expect("the vectors' trust store")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = BundleReader::new(Cursor::new(data)) else { return };
    let _ = check_signatures_each(&reader, trust());
    let pipeline = data.len() % 2 == 1;
    loop {
        match reader.next_segment() {
            Ok(Some(member)) => {
                let _ = if pipeline {
                    check_entries(member, &mut Silent, |_, _| Ok(()))
                } else {
                    check_segment(member, Depth::Entries, &mut Silent)
                };
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let _ = reader.finish();
});
