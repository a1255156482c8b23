//! Conformance vectors: `fixtures/vectors/*.tar` with their expected
//! outcomes in `fixtures/vectors/vectors.json`, checked by one table test
//! against `fixtures/vectors/trust.json`.
//!
//! The vectors are generated from fixed keys by
//! `FERRY_REGEN_VECTORS=1 cargo test --test vectors` and committed; the
//! normal run only verifies them, so a change in the format or the checks
//! that breaks old bundles shows up here.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ferry::bundle::format::{hop_message, SegmentDescriptor, HOP_PREFIX};
use ferry::bundle::{write_bundle, writer::copy_file, BuiltSegment, Hop, ManifestSegment, SegmentBuilder};
use ferry::chain::ChainHash;
use ferry::journal::{Entry, Op, Row, Timestamp};
use ferry::keys::{self, NodeId, Role, TrustStore};
use ferry::progress::Silent;
use ferry::value::Value;
use ferry::verify::verify_file;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    file: String,
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
    assert!(vectors.len() >= 10);
    let mut failures = Vec::new();
    for v in &vectors {
        let r = verify_file(&dir().join(&v.file), &trust, &mut Silent);
        match (&v.error, r.ok, &r.error) {
            (None, true, _) => {}
            (Some(want), false, Some(got)) if got.contains(want.as_str()) => {}
            _ => failures.push(format!("{}: expected {:?}, got ok={} {:?}", v.file, v.error, r.ok, r.error)),
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
        op: if seq % 3 == 0 { Op::Update } else { Op::Insert },
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
    std::fs::copy(&w.path, dir.join(name)).expect("copy");
}

fn plain(dir: &Path, name: &str, segs: &[BuiltSegment], sealer: &SigningKey) {
    write(dir, name, segs, segs.iter().map(|s| s.record.clone()).collect(), sealer);
}

fn generate(dir: &Path) {
    let (origin, relay, stranger, revoked) = (key(0x11), key(0x22), key(0x33), key(0x44));
    let mut trust = TrustStore { version: 1, keys: Vec::new() };
    trust.add("origin", &origin.verifying_key(), &[Role::Origin]).expect("add");
    trust.add("relay", &relay.verifying_key(), &[Role::Relay]).expect("add");
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
    let mut add = |file: &str, about: &str, error: Option<&str>| {
        vectors.push(Vector { file: file.into(), about: about.into(), error: error.map(str::to_owned) })
    };

    let one = segment(t, &id(&origin), &origin, 1, 3, g);
    plain(dir, "ok_single.tar", std::slice::from_ref(&one), &origin);
    add("ok_single.tar", "one segment, straight from its origin", None);

    let a = segment(t, &id(&origin), &origin, 1, 2, g);
    let b = segment(t, &id(&origin), &origin, 3, 5, a.descriptor.chain_after().expect("chain"));
    plain(dir, "ok_two_segments.tar", &[a, b], &origin);
    add("ok_two_segments.tar", "two chained segments of one origin", None);

    let hop = |s: &BuiltSegment, by: &SigningKey| {
        let sig = keys::decode_signature(&s.record.signature).expect("sig");
        let at = Timestamp(1_772_050_000_000_000);
        let msg = hop_message(s.record.descriptor.get().as_bytes(), &sig.to_bytes(), None, &id(by), at);
        let mut r = s.record.clone();
        r.hops.push(Hop { node: id(by), at, signature: keys::encode_signature(&keys::sign(by, HOP_PREFIX, &msg)) });
        r
    };
    let s = segment(t, &id(&origin), &origin, 1, 3, g);
    write(dir, "ok_relayed.tar", std::slice::from_ref(&s), vec![hop(&s, &relay)], &relay);
    add("ok_relayed.tar", "carried by a trusted relay, which added a hop and sealed", None);

    let s = segment(t, &id(&stranger), &stranger, 1, 3, g);
    plain(dir, "fail_unknown_signer.tar", &[s], &stranger);
    add("fail_unknown_signer.tar", "sealed and signed by a key nobody trusts", Some("unknown signer"));

    let s = segment(t, &id(&revoked), &revoked, 1, 3, g);
    plain(dir, "fail_revoked_signer.tar", &[s], &revoked);
    add("fail_revoked_signer.tar", "signed by a revoked key", Some("revoked signer"));

    let s = segment(t, &id(&origin), &stranger, 1, 3, g);
    plain(dir, "fail_forged_origin.tar", &[s], &origin);
    add("fail_forged_origin.tar", "claims the trusted origin, signed by another key", Some("bad signature"));

    let s = segment(t, &id(&origin), &origin, 1, 3, g);
    write(dir, "fail_hop_wrong_role.tar", std::slice::from_ref(&s), vec![hop(&s, &origin)], &origin);
    add(
        "fail_hop_wrong_role.tar",
        "a hop signed by a key trusted only as an origin",
        Some("signed as relay, but this node trusts it only as origin"),
    );

    let s = segment(t, &id(&origin), &origin, 1, 3, g);
    plain(dir, "fail_sealed_by_non_carrier.tar", std::slice::from_ref(&s), &relay);
    add("fail_sealed_by_non_carrier.tar", "sealed by a relay that added no hop", Some("last carried by"));

    let a = segment(t, &id(&origin), &origin, 1, 2, g);
    let b = segment(t, &id(&origin), &origin, 3, 5, g);
    plain(dir, "fail_broken_chain.tar", &[a, b], &origin);
    add(
        "fail_broken_chain.tar",
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
    add("fail_expansion_bomb.tar", "a signed descriptor claiming a 1001x expansion", Some("beyond the 1000x limit"));

    let good = std::fs::read(dir.join("ok_single.tar")).expect("read");
    let member_at = good.windows(9).position(|w| w == b".jsonl.zs").expect("member") / 512 * 512 + 512;
    let mut bad = good.clone();
    bad[member_at + 20] ^= 0xff;
    std::fs::write(dir.join("fail_segment_byte_changed.tar"), bad).expect("write");
    add("fail_segment_byte_changed.tar", "one compressed byte changed", Some("hash mismatch"));

    std::fs::write(dir.join("fail_truncated.tar"), &good[..good.len() / 2]).expect("write");
    add("fail_truncated.tar", "the second half is missing", Some("truncated"));

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"extra");
    std::fs::write(dir.join("fail_trailing_data.tar"), trailing).expect("write");
    add("fail_trailing_data.tar", "bytes after the end of the archive", Some("trailing data"));

    let mut newer = good.clone();
    let v = newer.windows(11).position(|w| w == b"\"version\":1").expect("version") + 10;
    newer[v] = b'2';
    std::fs::write(dir.join("fail_newer_version.tar"), newer).expect("write");
    add("fail_newer_version.tar", "manifest version 2", Some("made by a newer ferry?"));

    std::fs::write(dir.join("fail_not_a_bundle.tar"), "hello, world\n".repeat(100)).expect("write");
    add("fail_not_a_bundle.tar", "not a tar archive at all", Some("not a ferry bundle"));

    std::fs::write(dir.join("vectors.json"), serde_json::to_vec_pretty(&vectors).expect("json")).expect("write");
}
