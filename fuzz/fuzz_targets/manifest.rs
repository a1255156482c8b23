//! `manifest.json` and segment descriptors: the input is the manifest's
//! bytes, wrapped in the canonical archive around it (the header, the seal
//! member, the end blocks), so the strict tar framing is passed and the
//! manifest parser, canonical-form check and descriptor rules see every
//! input. Descriptors are also parsed on their own.
#![no_main]

use std::io::Cursor;

use ferry::bundle::format::tar_header;
use ferry::bundle::reader::parse_descriptor;
use ferry::bundle::BundleReader;
use libfuzzer_sys::fuzz_target;

fn member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    if let Ok(h) = tar_header(name, data.len() as u64) {
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_descriptor(text);
    }
    let mut bytes = Vec::with_capacity(data.len() + 2048);
    member(&mut bytes, "manifest.json", data);
    member(&mut bytes, "manifest.sig", &[b'A'; 86]);
    bytes.extend_from_slice(&[0; 1024]);
    if let Ok(reader) = BundleReader::new(Cursor::new(bytes)) {
        // Whatever parsed must have been in canonical form.
        assert_eq!(reader.manifest_bytes(), data);
        assert_eq!(reader.descriptors().len(), reader.manifest().segments.len());
        assert!(!reader.descriptors().is_empty());
    }
});
