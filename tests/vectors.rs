//! Conformance vectors: `fixtures/vectors/*.tar` with the rule of
//! `docs/FORMAT.md` each shows and its expected outcome in
//! `fixtures/vectors/vectors.json`, checked by one table test against
//! `fixtures/vectors/trust.json` (full verification, entries included); and
//! journal files in `fixtures/vectors/journals/` with the rule of
//! `docs/JOURNAL.md` each shows in `journals.json`.
//!
//! The vectors are generated from fixed keys by
//! `FERRY_REGEN_VECTORS=1 cargo test --test vectors` and committed; a vector
//! file that exists is kept byte for byte (bundles carry their sealing
//! time), so only new vectors are written (`FERRY_REGEN_VECTORS=all`
//! rewrites every file). The normal run only verifies them, so a change in
//! the format or the checks that breaks old bundles shows up here.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ferry::bundle::format::{hop_message, tar_header, SegmentDescriptor, HOP_PREFIX, MANIFEST_PREFIX, SEGMENT_PREFIX};
use ferry::bundle::{write_bundle, writer::copy_file, BuiltSegment, Hop, ManifestSegment, OpCounts, SegmentBuilder};
use ferry::chain::ChainHash;
use ferry::journal::{Entry, Op, Row, Timestamp};
use ferry::keys::{self, NodeId, Role, TrustStore};
use ferry::progress::Silent;
use ferry::value::Value;
use ferry::verify::{verify_file, verify_file_with, Depth};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    file: String,
    /// The rule of docs/FORMAT.md it shows (A1, M2, …).
    rule: String,
    /// What the vector shows.
    about: String,
    /// `None`: must verify; `Some(text)`: must fail with `text` in the reason.
    error: Option<String>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vectors")
}

#[test]
fn conformance_vectors() {
    if std::env::var_os("FERRY_REGEN_VECTORS").is_some() {
        generate(&dir());
    }
    let trust: TrustStore =
        serde_json::from_slice(&std::fs::read(dir().join("trust.json")).expect("trust.json")).expect("trust");
    let vectors: Vec<Vector> =
        serde_json::from_slice(&std::fs::read(dir().join("vectors.json")).expect("vectors.json")).expect("vectors");
    assert!(vectors.len() >= 40);
    // The vectors' recipient ("central"): encrypted vectors are opened and
    // their entries checked like every other vector's.
    let keyring = vector_keyring();
    let mut failures = Vec::new();
    for v in &vectors {
        let r = verify_file_with(&dir().join(&v.file), &trust, &keyring, Depth::Entries, &mut Silent);
        match (&v.error, r.ok, &r.error) {
            (None, true, _) => {}
            (Some(want), false, Some(got)) if got.contains(want.as_str()) => {}
            _ => failures.push(format!("{}: expected {:?}, got ok={} {:?}", v.file, v.error, r.ok, r.error)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The encryption identity of the vectors' recipient ("central" in
/// trust.json): `fixtures/vectors/encryption.key`, made once.
fn vector_identity() -> ferry::crypt::Identity {
    let path = dir().join("encryption.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => ferry::crypt::parse_identity(&text, &path).expect("encryption.key"),
        Err(_) => {
            let id = ferry::crypt::generate();
            std::fs::write(&path, ferry::crypt::format_identity(&id)).expect("write encryption.key");
            id
        }
    }
}

fn vector_keyring() -> ferry::crypt::Keyring {
    ferry::crypt::Keyring::new(None, vec![vector_identity()])
}

#[test]
fn encrypted_vectors_are_read_by_their_recipient_and_checked_blind_by_others() {
    let trust: TrustStore =
        serde_json::from_slice(&std::fs::read(dir().join("trust.json")).expect("trust.json")).expect("trust");
    let f = dir().join("ok_encrypted.tar");
    let r = verify_file_with(&f, &trust, &vector_keyring(), Depth::Entries, &mut Silent);
    assert!(r.ok && r.segments.iter().all(|s| s.entries_checked), "{r:?}");
    // Without the key: every signature and the encrypted bytes' hash, as a relay checks.
    let r = verify_file(&f, &trust, &mut Silent);
    assert!(r.ok && r.segments.iter().all(|s| !s.entries_checked && !s.encrypted_to.is_empty()), "{r:?}");
    let r =
        verify_file_with(&dir().join("ok_encrypted_other.tar"), &trust, &vector_keyring(), Depth::Entries, &mut Silent);
    assert!(r.ok && !r.segments[0].entries_checked, "{r:?}");
}

/// A journal-file vector (`fixtures/vectors/journals.json`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalVector {
    file: String,
    /// The rule of docs/JOURNAL.md it shows (J1, J2, …).
    rule: String,
    about: String,
    /// `Some(text)`: reading must fail with `text` in the reason.
    error: Option<String>,
    /// `Some(n)`: reading must give `n` entries.
    entries: Option<u64>,
}

/// Numbers legacy entries in memory (a node's state store does it on disk).
#[derive(Default)]
struct Registry(std::collections::HashMap<(String, u64, [u8; 32]), u64>);

impl ferry::journal::SeqRegistry for Registry {
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

#[test]
fn journal_vectors() {
    let dir = dir().join("journals");
    let vectors: Vec<JournalVector> =
        serde_json::from_slice(&std::fs::read(dir.join("../journals.json")).expect("journals.json")).expect("vectors");
    assert!(vectors.len() >= 30);
    let mut failures = Vec::new();
    for v in &vectors {
        let mut n = 0u64;
        let result = ferry::journal::Journal::open(&dir.join(&v.file)).and_then(|j| {
            j.scan::<ferry::journal::JournalError>(Some(&mut Registry::default()), |_, _| {
                n += 1;
                Ok(())
            })
        });
        let got = result.as_ref().err().map(|e| ferry::verify::error_chain(e));
        match (&v.error, &got, v.entries) {
            (None, None, Some(want)) if want == n => {}
            (Some(want), Some(got), None) if got.contains(want.as_str()) => {}
            _ => failures.push(format!(
                "{} ({}: {}): expected {:?}/{:?}, got {:?} after {n} entries",
                v.file, v.rule, v.about, v.error, v.entries, got
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn id(k: &SigningKey) -> NodeId {
    NodeId::of(&k.verifying_key())
}

fn entry(seq: u64) -> Entry {
    Entry {
        seq,
        ts: Timestamp(1_772_000_000_000_000 + seq as i64 * 1_000_000),
        op: if seq.is_multiple_of(3) { Op::Update } else { Op::Insert },
        table: "survey_household".into(),
        pk: Row(vec![("id".into(), Value::Integer(4_294_967_296 + seq as i64))]),
        fields: Some(Row(vec![("members".into(), Value::Integer(seq as i64)), ("lat".into(), Value::Real(-0.5))])),
    }
}

fn segment(dir: &Path, origin: &NodeId, signer: &SigningKey, first: u64, last: u64, chain: ChainHash) -> BuiltSegment {
    let mut b = SegmentBuilder::new(origin.clone(), chain, dir).expect("builder");
    for s in first..=last {
        let e = entry(s);
        b.push(&e, &e.to_line()).expect("push");
    }
    b.finish(Some("0".repeat(64)), signer).expect("finish")
}

fn write(dir: &Path, name: &str, segs: &[BuiltSegment], records: Vec<ManifestSegment>, sealer: &SigningKey) {
    let descriptors: Vec<SegmentDescriptor> = segs.iter().map(|s| s.descriptor.clone()).collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let w =
        write_bundle(tmp.path(), records, &descriptors, sealer, |i, out| copy_file(&segs[i].file, out)).expect("write");
    save(dir, name, &std::fs::read(&w.path).expect("read"));
}

/// Writes a vector file, keeping one that exists (unless FERRY_REGEN_VECTORS=all).
fn save(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    if path.exists() && std::env::var("FERRY_REGEN_VECTORS").as_deref() != Ok("all") {
        return;
    }
    std::fs::write(path, bytes).expect("write vector");
}

fn plain(dir: &Path, name: &str, segs: &[BuiltSegment], sealer: &SigningKey) {
    write(dir, name, segs, segs.iter().map(|s| s.record.clone()).collect(), sealer);
}

/// A canonical archive of `members` (docs/FORMAT.md A1-A4).
fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        out.extend_from_slice(&tar_header(name, data.len() as u64).expect("header"));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

/// A bundle from a manifest's text (sealed by `sealer`) and members.
fn sealed(manifest: &str, sealer: &SigningKey, members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let seal = keys::encode_signature(&keys::sign(sealer, MANIFEST_PREFIX, manifest.as_bytes()));
    let mut all: Vec<(&str, &[u8])> = vec![("manifest.json", manifest.as_bytes()), ("manifest.sig", seal.as_bytes())];
    all.extend(members.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    archive(&all)
}

/// An entry line of seq `seq` at 2026-02-25T06:13:20Z (text, no parsing).
fn raw_line(seq: u64, table: &str) -> Vec<u8> {
    format!(
        "{{\"seq\":{seq},\"ts\":\"2026-02-25T06:13:20.000000Z\",\"op\":\"insert\",\"table\":\"{table}\",\"pk\":{{\"id\":{seq}}},\"fields\":{{\"v\":{seq}}}}}"
    )
    .into_bytes()
}

/// One zstd frame of `plain` as ferry writes it.
fn frame(plain: &[u8], checksum: bool) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.include_checksum(checksum).expect("checksum");
    std::io::Write::write_all(&mut enc, plain).expect("write");
    enc.finish().expect("finish")
}

/// A descriptor for `lines` (exact bytes, `\n` after each) stored as
/// `zstd`, counting each line under `table` as an insert; times from
/// 2026-02-25T06:13:00Z.
fn raw_descriptor(
    origin: &NodeId,
    first: u64,
    lines: &[Vec<u8>],
    zstd: &[u8],
    chain_before: ChainHash,
) -> SegmentDescriptor {
    let mut plain = Vec::new();
    let mut chain = chain_before;
    for l in lines {
        plain.extend_from_slice(l);
        plain.push(b'\n');
        chain = chain.next(l);
    }
    let n = lines.len() as u64;
    SegmentDescriptor {
        origin: origin.clone(),
        first_seq: first,
        last_seq: first + n - 1,
        count: n,
        ts_min: Timestamp(1_772_000_000_000_000),
        ts_max: Timestamp(1_772_000_000_000_000),
        chain_before: chain_before.to_hex(),
        chain_after: chain.to_hex(),
        schema: None,
        tables: [("t".to_owned(), OpCounts { insert: n, update: 0, delete: 0 })].into(),
        entries_len: plain.len() as u64,
        entries_sha256: hex::encode(Sha256::digest(&plain)),
        zstd_len: zstd.len() as u64,
        zstd_sha256: hex::encode(Sha256::digest(zstd)),
        encryption: None,
    }
}

/// A manifest record whose descriptor text is `raw` (whatever it is), signed by `signer`.
fn raw_record(raw: String, signer: &SigningKey) -> ManifestSegment {
    ManifestSegment {
        signature: keys::encode_signature(&keys::sign(signer, SEGMENT_PREFIX, raw.as_bytes())),
        descriptor: serde_json::value::RawValue::from_string(raw).expect("raw"),
        hops: Vec::new(),
    }
}

/// A manifest's text sealed by `sealer` at a fixed time.
fn manifest_text(sealer: &NodeId, records: Vec<ManifestSegment>) -> String {
    let m = ferry::bundle::Manifest {
        format: "ferry-bundle".into(),
        version: 1,
        sealed_by: sealer.clone(),
        sealed_at: Timestamp(1_772_100_000_000_000),
        segments: records,
    };
    serde_json::to_string(&m).expect("json")
}

/// A one-segment bundle by `origin` of `lines` stored as `zstd`, its
/// descriptor honest, then changed by `tweak` (text in, text out) and signed.
fn one_segment(
    origin: &SigningKey,
    lines: &[Vec<u8>],
    zstd: Vec<u8>,
    tweak: impl FnOnce(&mut SegmentDescriptor),
    text: impl FnOnce(String) -> String,
) -> Vec<u8> {
    let mut d = raw_descriptor(&id(origin), 1, lines, &zstd, ChainHash::GENESIS);
    tweak(&mut d);
    let raw = text(serde_json::to_string(&d).expect("json"));
    let name = d.member_name();
    sealed(&manifest_text(&id(origin), vec![raw_record(raw, origin)]), origin, &[(name, zstd)])
}

/// A signature by `key` over `prefix ‖ message` whose R is the identity
/// point (small order): S = k·a, so [S]B = [k]A = R + [k]A holds, and a
/// cofactorless check without the small-order test accepts it.
fn small_order_r_signature(key: &SigningKey, prefix: &[u8], message: &[u8]) -> ed25519_dalek::Signature {
    use sha2::Sha512;
    let mut r = [0u8; 32];
    r[0] = 1; // the identity point, y = 1
    let mut h = Sha512::new();
    h.update(r);
    h.update(key.verifying_key().as_bytes());
    h.update(prefix);
    h.update(message);
    let k = curve25519_dalek::Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = k * key.to_scalar();
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&r);
    bytes[32..].copy_from_slice(s.as_bytes());
    ed25519_dalek::Signature::from_bytes(&bytes)
}

/// `n` poorly compressible hex digits (a fixed pseudo-random sequence).
fn noise(x: &mut u64, n: usize) -> String {
    let mut s = String::with_capacity(n + 16);
    while s.len() < n {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        s.push_str(&format!("{:016x}", *x));
    }
    s.truncate(n);
    s
}

fn generate(dir: &Path) {
    let (origin, relay, stranger, revoked) = (key(0x11), key(0x22), key(0x33), key(0x44));
    let (central, other) = (key(0x55), key(0x66));
    let central_key = vector_identity().to_public();
    let mut trust = TrustStore { version: 1, keys: Vec::new() };
    trust.add("origin", &origin.verifying_key(), &[Role::Origin]).expect("add");
    trust.add("relay", &relay.verifying_key(), &[Role::Relay]).expect("add");
    trust.add("central", &central.verifying_key(), &[Role::Relay]).expect("add");
    trust.set_encryption("central", &central_key).expect("encryption key");
    trust.add("revoked", &revoked.verifying_key(), &[Role::Origin]).expect("add");
    trust.revoke("revoked").expect("revoke");
    for k in &mut trust.keys {
        k.added = Timestamp(1_772_000_000_000_000);
        k.revoked = k.revoked.map(|_| Timestamp(1_772_100_000_000_000));
    }
    std::fs::write(dir.join("trust.json"), serde_json::to_vec_pretty(&trust).expect("json")).expect("write");
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let g = ChainHash::GENESIS;
    let mut vectors = Vec::new();
    let mut add = |file: &str, rule: &str, about: &str, error: Option<&str>| {
        vectors.push(Vector {
            file: file.into(),
            rule: rule.into(),
            about: about.into(),
            error: error.map(str::to_owned),
        })
    };

    let one = segment(t, &id(&origin), &origin, 1, 3, g);
    plain(dir, "ok_single.tar", std::slice::from_ref(&one), &origin);
    add("ok_single.tar", "A1", "one segment, straight from its origin", None);

    let a = segment(t, &id(&origin), &origin, 1, 2, g);
    let b = segment(t, &id(&origin), &origin, 3, 5, a.descriptor.chain_after().expect("chain"));
    plain(dir, "ok_two_segments.tar", &[a, b], &origin);
    add("ok_two_segments.tar", "C1", "two adjacent segments of one origin that chain", None);

    let hop_at = |s: &BuiltSegment, by: &SigningKey, at: Timestamp| {
        let sig = keys::decode_signature(&s.record.signature).expect("sig");
        let msg = hop_message(s.record.descriptor.get().as_bytes(), &sig.to_bytes(), None, &id(by), at);
        let mut r = s.record.clone();
        r.hops.push(Hop { node: id(by), at, signature: keys::encode_signature(&keys::sign(by, HOP_PREFIX, &msg)) });
        r
    };
    let hop = |s: &BuiltSegment, by: &SigningKey| hop_at(s, by, Timestamp(1_772_050_000_000_000));
    let s = segment(t, &id(&origin), &origin, 1, 3, g);
    write(dir, "ok_relayed.tar", std::slice::from_ref(&s), vec![hop(&s, &relay)], &relay);
    add("ok_relayed.tar", "S3", "carried by a trusted relay, which added a hop and sealed", None);

    let s = segment(t, &id(&stranger), &stranger, 1, 3, g);
    plain(dir, "fail_unknown_signer.tar", &[s], &stranger);
    add("fail_unknown_signer.tar", "S3", "sealed and signed by a key nobody trusts", Some("unknown signer"));

    let s = segment(t, &id(&revoked), &revoked, 1, 3, g);
    plain(dir, "fail_revoked_signer.tar", &[s], &revoked);
    add("fail_revoked_signer.tar", "S3", "sealed and signed by a revoked key", Some("revoked signer"));

    let s = segment(t, &id(&origin), &stranger, 1, 3, g);
    plain(dir, "fail_forged_origin.tar", &[s], &origin);
    add("fail_forged_origin.tar", "S3", "claims the trusted origin, signed by another key", Some("bad signature"));

    let s = segment(t, &id(&origin), &origin, 1, 3, g);
    write(dir, "fail_hop_wrong_role.tar", std::slice::from_ref(&s), vec![hop(&s, &origin)], &origin);
    add(
        "fail_hop_wrong_role.tar",
        "S4",
        "a hop signed by a key trusted only as an origin",
        Some("signed as relay, but this node trusts it only as origin"),
    );

    let s = segment(t, &id(&origin), &origin, 1, 3, g);
    plain(dir, "fail_sealed_by_non_carrier.tar", std::slice::from_ref(&s), &relay);
    add("fail_sealed_by_non_carrier.tar", "S3", "sealed by a relay that added no hop", Some("last carried by"));

    let a = segment(t, &id(&origin), &origin, 1, 2, g);
    let b = segment(t, &id(&origin), &origin, 3, 5, g);
    plain(dir, "fail_broken_chain.tar", &[a, b], &origin);
    add(
        "fail_broken_chain.tar",
        "C1",
        "second segment does not continue the first's chain",
        Some("does not continue the chain"),
    );

    let mut s = segment(t, &id(&origin), &origin, 1, 3, g);
    s.descriptor.entries_len = s.descriptor.zstd_len * 1001;
    let raw = serde_json::to_string(&s.descriptor).expect("json");
    s.record.signature =
        keys::encode_signature(&keys::sign(&origin, ferry::bundle::format::SEGMENT_PREFIX, raw.as_bytes()));
    s.record.descriptor = serde_json::value::RawValue::from_string(raw).expect("raw");
    plain(dir, "fail_expansion_bomb.tar", &[s], &origin);
    add(
        "fail_expansion_bomb.tar",
        "D6",
        "a signed descriptor claiming a 1001x expansion",
        Some("beyond the 1000x limit"),
    );

    let good = std::fs::read(dir.join("ok_single.tar")).expect("read");
    let member_at = good.windows(9).position(|w| w == b".jsonl.zs").expect("member") / 512 * 512 + 512;
    let mut bad = good.clone();
    bad[member_at + 20] ^= 0xff;
    save(dir, "fail_segment_byte_changed.tar", &bad);
    add("fail_segment_byte_changed.tar", "Z6", "one compressed byte changed", Some("hash mismatch"));

    save(dir, "fail_truncated.tar", &good[..good.len() / 2]);
    add("fail_truncated.tar", "A1", "the second half is missing", Some("truncated"));

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"extra");
    save(dir, "fail_trailing_data.tar", &trailing);
    add("fail_trailing_data.tar", "A1", "bytes after the end of the archive", Some("trailing data"));

    let mut newer = good.clone();
    let v = newer.windows(11).position(|w| w == b"\"version\":1").expect("version") + 10;
    newer[v] = b'3';
    save(dir, "fail_newer_version.tar", &newer);
    add("fail_newer_version.tar", "M1", "manifest version 3", Some("made by a newer ferry?"));

    save(dir, "fail_not_a_bundle.tar", "hello, world\n".repeat(100).as_bytes());
    add("fail_not_a_bundle.tar", "M1", "not a tar archive at all", Some("not a ferry bundle"));

    // --- Rules added with issue 15 ---------------------------------------
    // The parts of ok_single.tar, to rebuild it with one thing changed.
    let reader = ferry::bundle::BundleReader::open(&dir.join("ok_single.tar")).expect("ok_single");
    let m_text = String::from_utf8(reader.manifest_bytes().to_vec()).expect("utf8");
    let d0 = reader.descriptors()[0].clone();
    let zstd0 = good[member_at..member_at + d0.zstd_len as usize].to_vec();
    let member0 = (d0.member_name(), zstd0.clone());
    drop(reader);

    let mut extra = sealed(&m_text, &origin, std::slice::from_ref(&member0));
    extra.truncate(extra.len() - 1024);
    extra.extend_from_slice(&archive(&[("extra.txt", b"an extra member")]));
    save(dir, "fail_extra_member.tar", &extra);
    add(
        "fail_extra_member.tar",
        "A1",
        "a member after the last segment",
        Some("unexpected member after the last segment"),
    );

    let renamed = sealed(&m_text, &origin, &[(member0.0.replace(".1-", ".01-"), zstd0.clone())]);
    save(dir, "fail_member_name.tar", &renamed);
    add("fail_member_name.tar", "A2", "the segment member's seq written with a leading zero", Some("expected member"));

    let mut mtime = good.clone();
    mtime[136 + 10] = b'1';
    let sum: u32 =
        mtime[..512].iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
    mtime[148..156].copy_from_slice(format!("{sum:07o}\0").as_bytes());
    save(dir, "fail_header_not_canonical.tar", &mtime);
    add(
        "fail_header_not_canonical.tar",
        "A3",
        "the manifest's header has mtime 1 (checksum right)",
        Some("not in canonical form"),
    );

    let mut pad = good.clone();
    let manifest_end = 512 + m_text.len();
    assert!(!manifest_end.is_multiple_of(512), "ok_single's manifest has padding");
    pad[manifest_end] = b' ';
    save(dir, "fail_padding_not_zero.tar", &pad);
    add("fail_padding_not_zero.tar", "A4", "a space in the manifest's padding", Some("non-zero bytes in tar padding"));

    let spaced = m_text.replacen("{\"format\"", "{ \"format\"", 1);
    save(dir, "fail_manifest_not_canonical.tar", &sealed(&spaced, &origin, std::slice::from_ref(&member0)));
    add(
        "fail_manifest_not_canonical.tar",
        "M2",
        "a space in the manifest, sealed",
        Some("manifest.json is not in canonical form"),
    );

    let commented = format!("{},\"comment\":\"hi\"}}", &m_text[..m_text.len() - 1]);
    save(dir, "fail_unknown_field.tar", &sealed(&commented, &origin, std::slice::from_ref(&member0)));
    add("fail_unknown_field.tar", "M2", "an unknown key in the manifest, sealed", Some("unknown field"));

    let empty = manifest_text(&id(&origin), Vec::new());
    save(dir, "fail_no_segments.tar", &sealed(&empty, &origin, &[]));
    add("fail_no_segments.tar", "M2", "a sealed manifest listing no segment", Some("at least one"));

    let rec = raw_record(serde_json::to_string(&d0).expect("json"), &origin);
    let twice = manifest_text(&id(&origin), vec![rec.clone(), rec]);
    save(dir, "fail_segment_listed_twice.tar", &sealed(&twice, &origin, &[member0.clone(), member0.clone()]));
    add("fail_segment_listed_twice.tar", "M3", "the same segment listed twice", Some("listed twice"));

    let huge = m_text.replacen("\"version\":1", "\"version\":4294967296", 1);
    save(dir, "fail_version_huge.tar", &sealed(&huge, &origin, std::slice::from_ref(&member0)));
    add(
        "fail_version_huge.tar",
        "M1",
        "a version beyond 32 bits",
        Some("unsupported bundle format version 4294967296"),
    );

    let lines: Vec<Vec<u8>> = (1..=3).map(|s| raw_line(s, "t")).collect();
    let joined: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    let z = frame(&joined, true);
    save(
        dir,
        "fail_descriptor_timestamp_form.tar",
        &one_segment(
            &origin,
            &lines,
            z.clone(),
            |_| {},
            |t| t.replacen("06:13:20.000000Z", "06:13:20.000000+00:00", 1),
        ),
    );
    add(
        "fail_descriptor_timestamp_form.tar",
        "M4",
        "ts_min written with +00:00 instead of Z, signed",
        Some("descriptor is not in canonical form"),
    );

    let s = segment(t, &id(&origin), &origin, 1, 3, g);
    let early = hop_at(&s, &relay, Timestamp(946_684_800_000_000));
    write(dir, "ok_hop_times_unordered.tar", std::slice::from_ref(&s), vec![early], &relay);
    add("ok_hop_times_unordered.tar", "M5", "a hop dated 2000, before the entries it carried", None);

    let two_tables: Vec<Vec<u8>> = vec![raw_line(1, "b"), raw_line(2, "a")];
    let joined2: Vec<u8> = two_tables.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    let z2 = frame(&joined2, true);
    let unsorted = one_segment(
        &origin,
        &two_tables,
        z2,
        |d| {
            d.tables = [
                ("a".to_owned(), OpCounts { insert: 1, update: 0, delete: 0 }),
                ("b".to_owned(), OpCounts { insert: 1, update: 0, delete: 0 }),
            ]
            .into()
        },
        |t| {
            t.replacen(
                "\"a\":{\"insert\":1,\"update\":0,\"delete\":0},\"b\":{\"insert\":1,\"update\":0,\"delete\":0}",
                "\"b\":{\"insert\":1,\"update\":0,\"delete\":0},\"a\":{\"insert\":1,\"update\":0,\"delete\":0}",
                1,
            )
        },
    );
    save(dir, "fail_tables_unsorted.tar", &unsorted);
    add(
        "fail_tables_unsorted.tar",
        "D1",
        "tables listed b before a, signed",
        Some("descriptor is not in canonical form"),
    );

    type Tweak = Box<dyn FnOnce(&mut SegmentDescriptor)>;
    let cases: Vec<(&str, &str, &str, &str, Tweak)> = vec![
        (
            "fail_seq_above_max.tar",
            "D2",
            "seqs 2^63 to 2^63+2, signed",
            "above the largest seq",
            Box::new(|d| {
                d.first_seq = 1 << 63;
                d.last_seq = (1 << 63) + 2;
                d.chain_before = "1".repeat(64);
            }),
        ),
        (
            "fail_uppercase_hex.tar",
            "D1",
            "chain_after in uppercase hex, signed",
            "lowercase hex",
            Box::new(|d| d.chain_after = d.chain_after.to_uppercase()),
        ),
        (
            "fail_seq1_chain_not_zero.tar",
            "D4",
            "a segment from seq 1 with a non-zero chain_before, signed",
            "zero chain hash",
            Box::new(|d| d.chain_before = "1".repeat(64)),
        ),
        (
            "fail_table_counts.tar",
            "D5",
            "per-table counts adding up to 4 for 3 entries, signed",
            "add up to",
            Box::new(|d| d.tables.values_mut().for_each(|c| c.update += 1)),
        ),
        ("fail_empty_segment.tar", "D6", "entries_len 0, signed", "empty segment", Box::new(|d| d.entries_len = 0)),
    ];
    for (file, rule, about, error, tweak) in cases {
        save(dir, file, &one_segment(&origin, &lines, z.clone(), tweak, |t| t));
        add(file, rule, about, Some(error));
    }

    let skippable = [&[0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, b'f', b'r', b'e', b'e'][..], &z].concat();
    save(dir, "fail_skippable_frame.tar", &one_segment(&origin, &lines, skippable, |_| {}, |t| t));
    add("fail_skippable_frame.tar", "Z1", "a skippable frame before the zstd frame", Some("skippable"));

    save(
        dir,
        "fail_two_frames.tar",
        &one_segment(&origin, &lines, [&z[..], &frame(b"", true)].concat(), |_| {}, |t| t),
    );
    add("fail_two_frames.tar", "Z1", "a second (empty) zstd frame after the first", Some("after the zstd frame"));

    save(dir, "fail_no_checksum.tar", &one_segment(&origin, &lines, frame(&joined, false), |_| {}, |t| t));
    add("fail_no_checksum.tar", "Z3", "a zstd frame without its content checksum", Some("no content checksum"));

    // The bulk API's frame declares its content size; its header is then
    // replaced by one asking for a 1 GiB window (not single-segment).
    let mut c = zstd::bulk::Compressor::new(3).expect("compressor");
    c.include_checksum(true).expect("checksum");
    let bulk = c.compress(&joined).expect("compress");
    let h = ferry::bundle::format::check_frame_header(&bulk, joined.len() as u64).expect("a valid frame");
    let mut wide = vec![0x28, 0xb5, 0x2f, 0xfd, 0x44, 0xa0];
    wide.extend_from_slice(&u16::try_from(joined.len() - 256).expect("small").to_le_bytes());
    wide.extend_from_slice(&bulk[h.len..]);
    save(dir, "fail_window_too_large.tar", &one_segment(&origin, &lines, wide, |_| {}, |t| t));
    add(
        "fail_window_too_large.tar",
        "Z4",
        "a frame declaring its content size and a 1 GiB window (zstd's one-pass path would not check it)",
        Some("window of 1073741824 bytes"),
    );

    let no_newline = &joined[..joined.len() - 1];
    let mut d_nl = raw_descriptor(&id(&origin), 1, &lines, &frame(no_newline, true), g);
    d_nl.entries_len -= 1;
    d_nl.entries_sha256 = hex::encode(Sha256::digest(no_newline));
    let z_nl = frame(no_newline, true);
    let rec_nl = raw_record(serde_json::to_string(&d_nl).expect("json"), &origin);
    save(
        dir,
        "fail_last_line_no_newline.tar",
        &sealed(&manifest_text(&id(&origin), vec![rec_nl]), &origin, &[(d_nl.member_name(), z_nl)]),
    );
    add("fail_last_line_no_newline.tar", "E1", "the last entry line has no \\n", Some("no newline"));

    // 16 MiB + 1 bytes: mostly repeated, with enough noise to stay under
    // the 1000x expansion limit.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut v = String::new();
    while v.len() < 16 << 20 {
        v.push_str(&noise(&mut x, 16));
        v.push_str(&"a".repeat(8176));
    }
    let head = b"{\"seq\":1,\"ts\":\"2026-02-25T06:13:20.000000Z\",\"op\":\"insert\",\"table\":\"t\",\"pk\":{\"id\":1},\"fields\":{\"v\":\"";
    v.truncate((16 << 20) + 1 - head.len() - 3);
    let long = [&head[..], v.as_bytes(), b"\"}}"].concat();
    assert_eq!(long.len(), (16 << 20) + 1);
    let long_lines = vec![long];
    let z_long = frame(&[&long_lines[0][..], b"\n"].concat(), true);
    save(dir, "fail_line_too_long.tar", &one_segment(&origin, &long_lines, z_long, |_| {}, |t| t));
    add("fail_line_too_long.tar", "E1", "one entry line of 16 MiB + 1 byte", Some("longer than 16777216 bytes"));

    let with_blank = vec![lines[0].clone(), Vec::new(), lines[1].clone()];
    let joined_blank: Vec<u8> = with_blank.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    save(dir, "fail_empty_line.tar", &one_segment(&origin, &with_blank, frame(&joined_blank, true), |_| {}, |t| t));
    add(
        "fail_empty_line.tar",
        "E3",
        "an empty line between two entries, counted and signed",
        Some("nothing before or after it"),
    );

    let gap = vec![raw_line(1, "t"), raw_line(3, "t")];
    let joined_gap: Vec<u8> = gap.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    save(dir, "fail_seq_gap.tar", &one_segment(&origin, &gap, frame(&joined_gap, true), |_| {}, |t| t));
    add("fail_seq_gap.tar", "E4", "entries with seqs 1 and 3 in a segment 1-2, signed", Some("seq 3 where 2 was due"));

    let far =
        vec![b"{\"seq\":1,\"ts\":\"9999-12-31T23:59:59-01:00\",\"op\":\"delete\",\"table\":\"t\",\"pk\":{\"id\":1}}"
            .to_vec()];
    let joined_far: Vec<u8> = [&far[0][..], b"\n"].concat();
    save(dir, "fail_entry_time_out_of_range.tar", &one_segment(&origin, &far, frame(&joined_far, true), |_| {}, |t| t));
    add(
        "fail_entry_time_out_of_range.tar",
        "E3",
        "an entry whose time is year 10000 in UTC, signed (docs/JOURNAL.md, J4)",
        Some("outside years 0000 to 9999"),
    );

    let a = segment(t, &id(&origin), &origin, 1, 3, g);
    let b = segment(t, &id(&origin), &origin, 2, 4, a.descriptor.chain_after().expect("chain"));
    plain(dir, "fail_overlapping_segments.tar", &[a, b], &origin);
    add("fail_overlapping_segments.tar", "C1", "segments 1-3 and 2-4 of one origin", Some("overlap"));

    let raw0 = serde_json::to_string(&d0).expect("json");
    let mut rec_b64 = raw_record(raw0.clone(), &origin);
    let sig_bytes = keys::decode_signature(&rec_b64.signature).expect("sig").to_bytes();
    // The last character carries 2 bits and 4 zero bits; set one of those.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = rec_b64.signature.pop().expect("char");
    let idx = alphabet.iter().position(|&c| c == last as u8).expect("base64url") | 1;
    rec_b64.signature.push(alphabet[idx] as char);
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    assert_eq!(
        base64::Engine::decode(&lenient, &rec_b64.signature).expect("lenient"),
        sig_bytes.to_vec(),
        "same bytes, other text"
    );
    save(
        dir,
        "fail_signature_not_canonical_base64.tar",
        &sealed(&manifest_text(&id(&origin), vec![rec_b64]), &origin, std::slice::from_ref(&member0)),
    );
    add(
        "fail_signature_not_canonical_base64.tar",
        "S1",
        "the origin signature's last base64url character with a trailing bit set (same 64 bytes to a lenient decoder), sealed",
        Some("not base64url"),
    );

    let weak_sig = small_order_r_signature(&origin, SEGMENT_PREFIX, raw0.as_bytes());
    let mut m = SEGMENT_PREFIX.to_vec();
    m.extend_from_slice(raw0.as_bytes());
    assert!(ed25519_dalek::Verifier::verify(&origin.verifying_key(), &m, &weak_sig).is_ok(), "plain verify accepts it");
    assert!(origin.verifying_key().verify_strict(&m, &weak_sig).is_err(), "verify_strict refuses it");
    let rec_weak = ManifestSegment {
        descriptor: serde_json::value::RawValue::from_string(raw0).expect("raw"),
        signature: keys::encode_signature(&weak_sig),
        hops: Vec::new(),
    };
    save(
        dir,
        "fail_small_order_r.tar",
        &sealed(&manifest_text(&id(&origin), vec![rec_weak]), &origin, std::slice::from_ref(&member0)),
    );
    add(
        "fail_small_order_r.tar",
        "S2",
        "an origin signature with a small-order R, made with the secret key: plain verification accepts it",
        Some("bad signature"),
    );

    let mine = segment(t, &id(&origin), &origin, 1, 3, g);
    let theirs = segment(t, &id(&revoked), &revoked, 1, 2, g);
    let records = vec![hop(&mine, &relay), hop(&theirs, &relay)];
    write(dir, "fail_revoked_origin_relayed.tar", &[mine, theirs], records, &relay);
    add(
        "fail_revoked_origin_relayed.tar",
        "S4",
        "a relay's bundle holding a trusted origin's segment and a revoked origin's: only the latter is refused",
        Some("origin of 6fe841c464f77a8d.1-2.jsonl.zst: revoked signer"),
    );

    let mut big = tar_header("manifest.json", (64 << 20) + 1).expect("header").to_vec();
    big.extend_from_slice(b"{\"format\":\"ferry-bundle\"");
    save(dir, "fail_manifest_too_large.tar", &big);
    add(
        "fail_manifest_too_large.tar",
        "M6",
        "a manifest header claiming 64 MiB + 1 byte",
        Some("exceeds the 67108864-byte limit"),
    );

    let late = |d: &mut SegmentDescriptor| d.ts_min = Timestamp(d.ts_max.0 + 1);
    save(dir, "fail_ts_min_after_max.tar", &one_segment(&origin, &lines, z.clone(), late, |t| t));
    add(
        "fail_ts_min_after_max.tar",
        "D3",
        "ts_min one microsecond after ts_max, signed",
        Some("ts_min is later than ts_max"),
    );

    // Descriptor byte 0x05: checksum and a 1-byte dictionary id (then window, id).
    let mut dict = z.clone();
    let fhd = dict[4];
    dict[4] = fhd | 0x01;
    dict.insert(if fhd & 0x20 == 0 { 6 } else { 5 }, 7);
    save(dir, "fail_dictionary.tar", &one_segment(&origin, &lines, dict, |_| {}, |t| t));
    add("fail_dictionary.tar", "Z2", "a zstd frame naming dictionary 7", Some("names a dictionary"));

    let short = |d: &mut SegmentDescriptor| {
        d.entries_len -= 1;
        d.entries_sha256 = hex::encode(Sha256::digest(&joined[..joined.len() - 1]));
    };
    save(dir, "fail_content_size_mismatch.tar", &one_segment(&origin, &lines, bulk.clone(), short, |t| t));
    add(
        "fail_content_size_mismatch.tar",
        "Z5",
        "a frame declaring one byte more content than entries_len, signed",
        Some("declares"),
    );

    let wrong_chain = |d: &mut SegmentDescriptor| d.chain_after = ChainHash::GENESIS.next(b"x").to_hex();
    save(dir, "fail_chain_after_wrong.tar", &one_segment(&origin, &lines, z.clone(), wrong_chain, |t| t));
    add(
        "fail_chain_after_wrong.tar",
        "E2",
        "a chain_after that the lines do not lead to, signed",
        Some("chain hash at the last entry differs from chain_after"),
    );

    // --- Encrypted segments (format version 2, issue 14) ------------------
    let to_central = vec![(id(&central), central_key.clone())];
    let sealed_segment = |first: u64, last: u64, chain: ChainHash, to: Vec<(NodeId, ferry::crypt::Recipient)>| {
        let mut b = SegmentBuilder::new_encrypted(id(&origin), chain, t, to).expect("builder");
        for s in first..=last {
            let e = entry(s);
            b.push(&e, &e.to_line()).expect("push");
        }
        b.finish(Some("0".repeat(64)), &origin).expect("finish")
    };
    let s = sealed_segment(1, 3, g, to_central.clone());
    plain(dir, "ok_encrypted.tar", std::slice::from_ref(&s), &origin);
    add("ok_encrypted.tar", "X1", "one segment encrypted to central, which opens and checks it", None);

    let other_key = ferry::crypt::generate().to_public();
    let s = sealed_segment(1, 3, g, vec![(id(&other), other_key)]);
    plain(dir, "ok_encrypted_other.tar", std::slice::from_ref(&s), &origin);
    add(
        "ok_encrypted_other.tar",
        "X4",
        "encrypted to a node whose key the verifier lacks: signatures and encrypted bytes checked",
        None,
    );

    let a = segment(t, &id(&origin), &origin, 1, 2, g);
    let b = sealed_segment(3, 5, a.descriptor.chain_after().expect("chain"), to_central.clone());
    plain(dir, "ok_mixed_plain_and_encrypted.tar", &[a, b], &origin);
    add("ok_mixed_plain_and_encrypted.tar", "X5", "a plain and an encrypted segment that chain, one bundle", None);

    let good = std::fs::read(dir.join("ok_encrypted.tar")).expect("read");
    let mut v1 = good.clone();
    let v = v1.windows(11).position(|w| w == b"\"version\":2").expect("version") + 10;
    v1[v] = b'1';
    save(dir, "fail_encrypted_in_version_1.tar", &v1);
    add(
        "fail_encrypted_in_version_1.tar",
        "X5",
        "an encrypted segment in a version-1 manifest",
        Some("version-1 bundle"),
    );

    let mut bad = good.clone();
    let at = bad.windows(14).position(|w| w == b".jsonl.zst.age").expect("member") / 512 * 512 + 512;
    bad[at + 100] ^= 0x01;
    save(dir, "fail_encrypted_byte_changed.tar", &bad);
    add("fail_encrypted_byte_changed.tar", "X4", "one byte of ciphertext changed", Some("hash mismatch"));

    let mut bad = good.clone();
    let at = bad.windows(10).position(|w| w == b"\"sealed\":\"").expect("sealed") + 10;
    bad[at] = b'+';
    save(dir, "fail_sealed_not_base64url.tar", &bad);
    add(
        "fail_sealed_not_base64url.tar",
        "X2",
        "a sealed field in the standard base64 alphabet",
        Some("canonical base64url"),
    );

    let mut s = sealed_segment(1, 3, g, to_central.clone());
    if let Some(c) = s.descriptor.tables.values_mut().next() {
        c.insert += 1;
    }
    let private = serde_json::to_vec(&s.descriptor.private_fields()).expect("json");
    let resealed = ferry::crypt::seal_bytes(std::slice::from_ref(&central_key), &private).expect("seal");
    if let Some(e) = s.descriptor.encryption.as_mut() {
        use base64::Engine as _;
        e.sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(resealed);
    }
    let raw = s.descriptor.to_json().expect("json");
    s.record.signature = keys::encode_signature(&keys::sign(&origin, SEGMENT_PREFIX, raw.as_bytes()));
    s.record.descriptor = serde_json::value::RawValue::from_string(raw).expect("raw");
    plain(dir, "fail_sealed_counts_wrong.tar", &[s], &origin);
    add(
        "fail_sealed_counts_wrong.tar",
        "X3",
        "signed, encrypted fields whose per-table counts do not add up to count",
        Some("per-table counts add up to 4, not to count 3"),
    );

    std::fs::write(dir.join("vectors.json"), serde_json::to_vec_pretty(&vectors).expect("json")).expect("write");
}
