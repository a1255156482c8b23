//! Hostile input (issue 15): bundles and files made by an attacker or an
//! independent implementer that the format's rules must refuse, cheaply and
//! with a message a person can act on.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use ferry::bundle::format::{Summary, MANIFEST_PREFIX, SEGMENT_PREFIX};
use ferry::bundle::{write_bundle, ManifestSegment, SegmentDescriptor};
use ferry::chain::ChainHash;
use ferry::journal::{Entry, Timestamp, MAX_LINE};
use ferry::keys::{self, NodeId, Role, TrustStore};
use ferry::progress::Silent;
use ferry::verify::{verify_file_to, Depth};
use sha2::{Digest, Sha256};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn id(k: &SigningKey) -> NodeId {
    NodeId::of(&k.verifying_key())
}

fn trusting(origins: &[&SigningKey]) -> TrustStore {
    let mut t = TrustStore { version: 1, keys: Vec::new() };
    for (i, k) in origins.iter().enumerate() {
        t.add(&format!("origin-{i}"), &k.verifying_key(), &[Role::Origin]).expect("trust");
    }
    t
}

/// `n` hex digits that compress poorly (a fixed pseudo-random sequence).
fn noise(n: usize) -> String {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut s = String::with_capacity(n + 16);
    while s.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(n);
    s
}

/// An entry line of seq `seq` whose field `v` holds `text`.
fn line(seq: u64, text: &str) -> Vec<u8> {
    format!(
        "{{\"seq\":{seq},\"ts\":\"2026-01-01T00:00:00.000000Z\",\"op\":\"insert\",\"table\":\"t\",\"pk\":{{\"id\":{seq}}},\"fields\":{{\"v\":{}}}}}",
        serde_json::to_string(text).expect("json")
    )
    .into_bytes()
}

/// The descriptor an honest origin would write for `lines` stored as `zstd`.
fn descriptor(origin: &NodeId, lines: &[Vec<u8>], zstd: &[u8]) -> SegmentDescriptor {
    let mut s = Summary::new(ChainHash::GENESIS);
    let mut plain = Vec::new();
    for l in lines {
        s.push(&Entry::parse_head(l).expect("a valid line"), l).expect("in order");
        plain.extend_from_slice(l);
        plain.push(b'\n');
    }
    SegmentDescriptor {
        origin: origin.clone(),
        first_seq: s.first_seq.expect("lines"),
        last_seq: s.last_seq,
        count: s.count,
        ts_min: s.ts_min,
        ts_max: s.ts_max,
        chain_before: ChainHash::GENESIS.to_hex(),
        chain_after: s.chain.to_hex(),
        schema: None,
        tables: s.tables,
        entries_len: plain.len() as u64,
        entries_sha256: hex::encode(Sha256::digest(&plain)),
        zstd_len: zstd.len() as u64,
        zstd_sha256: hex::encode(Sha256::digest(zstd)),
        encryption: None,
    }
}

/// `d` signed by `signer` as a manifest record.
fn record(d: &SegmentDescriptor, signer: &SigningKey) -> ManifestSegment {
    let raw = serde_json::to_string(d).expect("json");
    ManifestSegment {
        signature: keys::encode_signature(&keys::sign(signer, SEGMENT_PREFIX, raw.as_bytes())),
        descriptor: serde_json::value::RawValue::from_string(raw).expect("raw"),
        hops: Vec::new(),
    }
}

/// A bundle sealed by `origin` holding one segment: `lines` stored as the
/// compressed bytes `zstd` (whatever they are), its descriptor honest
/// about both and then changed by `tweak`, and signed.
fn bundle_with(
    dir: &Path,
    origin: &SigningKey,
    lines: &[Vec<u8>],
    zstd: Vec<u8>,
    tweak: impl FnOnce(&mut SegmentDescriptor),
) -> PathBuf {
    let mut d = descriptor(&id(origin), lines, &zstd);
    tweak(&mut d);
    let w =
        write_bundle(dir, vec![record(&d, origin)], std::slice::from_ref(&d), origin, |_, out| out.write_all(&zstd))
            .expect("write");
    w.path
}

/// One zstd frame as ferry writes it (checksum, 2 MiB window, no declared size).
fn compress(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.include_checksum(true).expect("checksum");
    for l in lines {
        std::io::Write::write_all(&mut enc, l).expect("write");
        std::io::Write::write_all(&mut enc, b"\n").expect("write");
    }
    enc.finish().expect("finish")
}

use std::io::Write as _;

fn verify(path: &Path, trust: &TrustStore, depth: Depth) -> Result<(), String> {
    let r = verify_file_to(path, trust, depth, &mut Silent);
    match r.error {
        None if r.ok => Ok(()),
        e => Err(e.unwrap_or_default()),
    }
}

#[test]
fn a_line_longer_than_16_mib_fails_even_when_chunks_cut_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let origin = key(1);
    let trust = trusting(&[&origin]);
    let overhead = line(1, "").len();
    // Exactly the limit passes; one byte more fails, however the decompressed
    // chunks happen to cut the line.
    let at_limit = vec![line(1, &noise(MAX_LINE - overhead))];
    assert_eq!(at_limit[0].len(), MAX_LINE);
    let ok = bundle_with(dir.path(), &origin, &at_limit, compress(&at_limit), |_| {});
    for depth in [Depth::Bytes, Depth::Entries] {
        verify(&ok, &trust, depth).unwrap_or_else(|e| panic!("{depth:?}: a line of exactly 16 MiB fails: {e}"));
    }
    let over = vec![line(1, &noise(MAX_LINE - overhead + 1))];
    let bad = bundle_with(dir.path(), &origin, &over, compress(&over), |_| {});
    for depth in [Depth::Bytes, Depth::Entries] {
        let e = verify(&bad, &trust, depth).expect_err("a line over 16 MiB passed");
        assert!(e.contains("longer than 16777216 bytes"), "{depth:?}: {e}");
    }
}

#[test]
fn journal_files_count_16_mib_without_the_line_ending() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = ferry::node::Node::init(&dir.path().join("n"), "n", None).expect("node");
    let overhead = line(1, "").len();
    for (ending, len, ok) in [("\n", MAX_LINE, true), ("\r\n", MAX_LINE, true), ("\n", MAX_LINE + 1, false)] {
        let j = dir.path().join("j.jsonl");
        let mut text = line(1, &"b".repeat(len - overhead));
        text.extend_from_slice(ending.as_bytes());
        std::fs::write(&j, &text).expect("write");
        let opts = ferry::bundle::create::CreateOptions { out_dir: dir.path().join("out"), since: Some(1) };
        let r = ferry::bundle::create::create_from_journal(&node, &j, &opts, &mut Silent);
        assert_eq!(r.is_ok(), ok, "{len} bytes and {ending:?}: {:?}", r.err().map(|e| e.to_string()));
    }
}

/// `frame` with its header replaced by one that declares a 1 GiB window (not
/// single-segment) and the frame's content size.
fn with_huge_window(frame: &[u8], content: u64) -> Vec<u8> {
    // RFC 8878 3.1.1.1: magic, descriptor, window byte unless single
    // segment, no dictionary id here, then the content size field.
    let fhd = frame[4];
    let single = fhd & 0x20 != 0;
    let fcs = match fhd >> 6 {
        0 => usize::from(single),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let header_len = 5 + usize::from(!single) + fcs;
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x44, 0xa0];
    out.extend_from_slice(&u16::try_from(content - 256).expect("small").to_le_bytes());
    out.extend_from_slice(&frame[header_len..]);
    out
}

#[test]
fn the_window_limit_holds_when_a_frame_declares_its_content_size() {
    let dir = tempfile::tempdir().expect("tmp");
    let origin = key(2);
    let trust = trusting(&[&origin]);
    let lines = vec![line(1, &"small ".repeat(40)), line(2, &"content ".repeat(40))];
    let plain: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let mut c = zstd::bulk::Compressor::new(3).expect("compressor");
    c.include_checksum(true).expect("checksum");
    let frame = c.compress(&[lines[0].as_slice(), b"\n", &lines[1], b"\n"].concat()).expect("compress");
    // The frame as the bulk API made it (single segment: window = content) is fine.
    let fine = bundle_with(dir.path(), &origin, &lines, frame.clone(), |_| {});
    verify(&fine, &trust, Depth::Entries).expect("a declared content size is allowed");
    // The same blocks under a header that needs a 1 GiB window must fail,
    // although zstd could decode them in one pass without that window.
    let huge = with_huge_window(&frame, plain);
    assert_eq!(zstd::stream::decode_all(&huge[..]).expect("zstd itself decodes it").len() as u64, plain);
    let bad = bundle_with(dir.path(), &origin, &lines, huge, |_| {});
    for depth in [Depth::Bytes, Depth::Entries] {
        let e = verify(&bad, &trust, depth).expect_err("a 1 GiB window passed");
        assert!(e.contains("window of 1073741824 bytes"), "{e}");
    }
}

#[test]
fn zstd_member_rules_are_enforced() {
    let dir = tempfile::tempdir().expect("tmp");
    let origin = key(3);
    let trust = trusting(&[&origin]);
    let lines = vec![line(1, "x")];
    let frame = compress(&lines);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("skippable", [&[0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0][..], &frame].concat()),
        ("no content checksum", {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
            enc.include_checksum(false).expect("no checksum");
            enc.write_all(&[lines[0].as_slice(), b"\n"].concat()).expect("write");
            enc.finish().expect("finish")
        }),
        ("after the zstd frame", [&frame[..], &frame].concat()),
        ("too few for a zstd frame header", frame[..3].to_vec()),
    ];
    for (why, bytes) in cases {
        let p = bundle_with(dir.path(), &origin, &lines, bytes, |_| {});
        let e = verify(&p, &trust, Depth::Bytes).expect_err(why);
        assert!(e.contains(why), "{why}: {e}");
        assert!(!e.contains("truncated"), "{why}: {e}");
    }
}

/// A bundle file holding only a manifest and a seal (no segment members):
/// enough for everything that runs before segments are read.
fn manifest_only(path: &Path, manifest: &[u8], seal: &str) {
    let mut out = Vec::new();
    for (name, data) in [("manifest.json", manifest), ("manifest.sig", seal.as_bytes())] {
        out.extend_from_slice(&ferry::bundle::format::tar_header(name, data.len() as u64).expect("header"));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    std::fs::write(path, out).expect("write");
}

/// `n` descriptors of one origin, chained 1..=n, with made-up hashes.
fn many_descriptors(origin: &NodeId, n: u64) -> Vec<SegmentDescriptor> {
    let chain = |i: u64| if i == 0 { ChainHash::GENESIS.to_hex() } else { format!("{i:064x}") };
    (1..=n)
        .map(|i| SegmentDescriptor {
            origin: origin.clone(),
            first_seq: i,
            last_seq: i,
            count: 1,
            ts_min: Timestamp(0),
            ts_max: Timestamp(0),
            chain_before: chain(i - 1),
            chain_after: chain(i),
            schema: None,
            tables: [("t".to_owned(), ferry::bundle::OpCounts { insert: 1, update: 0, delete: 0 })].into(),
            entries_len: 100,
            entries_sha256: "0".repeat(64),
            zstd_len: 50,
            zstd_sha256: "0".repeat(64),
            encryption: None,
        })
        .collect()
}

fn manifest_of(sealer: &NodeId, records: Vec<ManifestSegment>) -> Vec<u8> {
    let m = ferry::bundle::Manifest {
        format: "ferry-bundle".into(),
        version: 1,
        sealed_by: sealer.clone(),
        sealed_at: Timestamp(0),
        segments: records,
    };
    serde_json::to_vec(&m).expect("json")
}

#[test]
fn an_unsigned_manifest_of_many_segments_is_rejected_in_linear_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let stranger = key(4);
    let fake_sig = keys::encode_signature(&ed25519_dalek::Signature::from_bytes(&[0; 64]));
    let records: Vec<ManifestSegment> = many_descriptors(&id(&stranger), 20_000)
        .iter()
        .map(|d| ManifestSegment {
            descriptor: serde_json::value::RawValue::from_string(serde_json::to_string(d).expect("json")).expect("raw"),
            signature: fake_sig.clone(),
            hops: Vec::new(),
        })
        .collect();
    let path = dir.path().join("ferry-20260101-000000000000.tar");
    manifest_only(&path, &manifest_of(&id(&stranger), records), &fake_sig);
    let started = Instant::now();
    let e = verify(&path, &trusting(&[&key(5)]), Depth::Bytes).expect_err("unsigned");
    assert!(e.contains("unknown signer"), "{e}");
    // Quadratic checks took minutes here; linear ones take well under a second.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn a_signed_manifest_of_many_segments_is_checked_in_near_linear_time() {
    let origin = key(6);
    let ds = many_descriptors(&id(&origin), 50_000);
    let records: Vec<ManifestSegment> = ds.iter().map(|d| record(d, &origin)).collect();
    let manifest = manifest_of(&id(&origin), records);
    let seal = keys::encode_signature(&keys::sign(&origin, MANIFEST_PREFIX, &manifest));
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("b.tar");
    manifest_only(&path, &manifest, &seal);
    let reader = ferry::bundle::BundleReader::open(&path).expect("form");
    let started = Instant::now();
    let reports = ferry::verify::check_signatures(&reader, &trusting(&[&origin])).expect("signatures");
    assert_eq!(reports.len(), 50_000);
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn descriptor_rules_are_enforced_before_any_signature() {
    let dir = tempfile::tempdir().expect("tmp");
    let origin = key(7);
    let lines = vec![line(1, "x")];
    type Tweak = Box<dyn FnOnce(&mut SegmentDescriptor)>;
    let cases: Vec<(&str, Tweak)> = vec![
        (
            "above the largest seq",
            Box::new(|d| {
                d.first_seq = 1 << 63;
                d.last_seq = 1 << 63;
                d.chain_before = "1".repeat(64);
            }),
        ),
        ("64 lowercase hex", Box::new(|d| d.chain_after = d.chain_after.to_uppercase())),
        ("zero chain hash", Box::new(|d| d.chain_before = "1".repeat(64))),
        ("empty segment", Box::new(|d| d.entries_len = 0)),
        ("add up to", Box::new(|d| d.tables.values_mut().for_each(|c| c.insert += 1))),
        ("later than ts_max", Box::new(|d| d.ts_min = Timestamp(d.ts_max.0 + 1))),
    ];
    for (why, tweak) in cases {
        let p = bundle_with(dir.path(), &origin, &lines, compress(&lines), tweak);
        let e = ferry::bundle::BundleReader::open(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(why), "{why}: {e:?}");
    }
}

#[test]
fn a_bundle_with_no_segment_is_malformed() {
    let dir = tempfile::tempdir().expect("tmp");
    let origin = key(8);
    let w = write_bundle(dir.path(), Vec::new(), &[], &origin, |_, _| Ok(())).expect("write");
    let e = verify(&w.path, &trusting(&[&origin]), Depth::Bytes).expect_err("no segment");
    assert!(e.contains("at least one"), "{e}");
}

#[test]
fn a_huge_version_number_reads_as_a_newer_version() {
    let origin = key(9);
    let mut m = String::from_utf8(manifest_of(
        &id(&origin),
        many_descriptors(&id(&origin), 1).iter().map(|d| record(d, &origin)).collect(),
    ))
    .expect("utf8");
    m = m.replace("\"version\":1", "\"version\":99999999999");
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("b.tar");
    manifest_only(&p, m.as_bytes(), &"A".repeat(86));
    let e = ferry::bundle::BundleReader::open(&p).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("unsupported bundle format version 99999999999"), "{e}");
}
