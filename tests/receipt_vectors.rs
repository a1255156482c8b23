//! Receipt conformance vectors: `fixtures/vectors/receipts/*.json`, with the
//! rule of `docs/FORMAT.md` ("Receipts", R1–R5) each shows and its expected
//! outcome in `fixtures/vectors/receipts.json`, checked by one table test
//! against `fixtures/vectors/trust.json` (the bundle vectors' trust store).
//!
//! Generated from fixed keys and times by
//! `FERRY_REGEN_VECTORS=1 cargo test --test receipt_vectors` (signatures are
//! deterministic, so regenerating gives the same bytes) and committed; the
//! normal run only checks them.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ferry::keys::{self, NodeId, TrustStore};
use ferry::receipt::{self, RECEIPT_PREFIX};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    file: String,
    /// The rule of docs/FORMAT.md it shows (R1, R2, …).
    rule: String,
    about: String,
    /// `None`: must verify; `Some(text)`: must fail with `text` in the reason.
    error: Option<String>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vectors")
}

#[test]
fn receipt_conformance_vectors() {
    if std::env::var_os("FERRY_REGEN_VECTORS").is_some() {
        generate(&dir());
    }
    let trust: TrustStore =
        serde_json::from_slice(&std::fs::read(dir().join("trust.json")).expect("trust.json")).expect("trust");
    let vectors: Vec<Vector> =
        serde_json::from_slice(&std::fs::read(dir().join("receipts.json")).expect("receipts.json")).expect("vectors");
    assert!(vectors.len() >= 15);
    let mut failures = Vec::new();
    for v in &vectors {
        let bytes = std::fs::read(dir().join("receipts").join(&v.file)).expect("vector file");
        let got = receipt::verify(&bytes, &trust).map_err(|e| ferry::verify::error_chain(&e));
        match (&v.error, &got) {
            (None, Ok(_)) => {}
            (Some(want), Err(e)) if e.contains(want.as_str()) => {}
            _ => failures.push(format!("{} ({}): expected {:?}, got {:?}", v.file, v.rule, v.error, got.err())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The good vector's chain hash at a range end is what a laptop compares:
/// the first 8 bytes of its own chain hash there.
#[test]
fn the_good_vector_says_what_it_holds() {
    let trust: TrustStore =
        serde_json::from_slice(&std::fs::read(dir().join("trust.json")).expect("trust.json")).expect("trust");
    let r = receipt::read_file(&dir().join("receipts/ok_receipt.json"), &trust).expect("verifies");
    let origin = NodeId::of(&key(0x11).verifying_key());
    let ranges: Vec<(u64, u64)> = r.receipt.ranges_of(&origin).iter().map(|g| (g.first, g.last)).collect();
    assert_eq!(ranges, vec![(1, 5), (9, 12)]);
    assert_eq!(r.receipt.node, NodeId::of(&key(0x22).verifying_key()));
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn id(k: &SigningKey) -> String {
    NodeId::of(&k.verifying_key()).to_string()
}

/// A receipt file: `body`, signed by `by`.
fn file(body: &str, by: &SigningKey) -> Vec<u8> {
    let sig = keys::encode_signature(&keys::sign(by, RECEIPT_PREFIX, body.as_bytes()));
    format!("{body}\n{sig}\n").into_bytes()
}

fn generate(dir: &Path) {
    let (origin, relay, stranger, revoked) = (key(0x11), key(0x22), key(0x33), key(0x44));
    let out = dir.join("receipts");
    std::fs::create_dir_all(&out).expect("dir");
    let mut vectors = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>, rule: &str, about: &str, error: Option<&str>| {
        std::fs::write(out.join(name), bytes).expect("write");
        vectors.push(Vector {
            file: name.into(),
            rule: rule.into(),
            about: about.into(),
            error: error.map(str::to_owned),
        });
    };
    // Two origins in ascending id order.
    let (o1, o2) = {
        let (a, b) = (id(&origin), id(&revoked));
        if a < b {
            (a, b)
        } else {
            (b, a)
        }
    };
    let body = |node: &str, version: &str, origins: &str| {
        format!(
            r#"{{"format":"ferry-receipt","version":{version},"node":"{node}","at":"2026-03-01T12:00:00.000000Z","origins":{origins}}}"#
        )
    };
    let good_origins = |first: &str| {
        let own = id(&origin);
        let mut v = vec![(
            own.clone(),
            format!(
                r#"{{"origin":"{own}","ranges":[{{"first":{first},"last":5,"chain":"0123456789abcdef"}},{{"first":9,"last":12,"chain":"fedcba9876543210"}}]}}"#
            ),
        )];
        let other = if o1 == own { o2.clone() } else { o1.clone() };
        v.push((
            other.clone(),
            format!(r#"{{"origin":"{other}","ranges":[{{"first":1,"last":3,"chain":"00000000000000aa"}}]}}"#),
        ));
        v.sort();
        format!("[{}]", v.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(","))
    };
    let r = id(&relay);
    let good = body(&r, "1", &good_origins("1"));
    put("ok_receipt.json", file(&good, &relay), "R1", "a receipt of two origins, signed by a trusted node", None);
    put("ok_receipt_no_origins.json", file(&body(&r, "1", "[]"), &relay), "R4", "a receipt that holds nothing", None);
    put(
        "fail_receipt_newer_version.json",
        file(&body(&r, "2", &good_origins("1")), &relay),
        "R2",
        "version 2: refused, never guessed at",
        Some("unsupported receipt format version 2"),
    );
    put(
        "fail_receipt_not_a_receipt.json",
        file(&good.replace("ferry-receipt", "ferry-bundle"), &relay),
        "R2",
        "the format field names something else",
        Some("not a ferry receipt"),
    );
    put(
        "fail_receipt_not_canonical.json",
        file(&good.replace(r#""version":1,"#, r#""version":1, "#), &relay),
        "R3",
        "a space after a comma: not the canonical form",
        Some("not in canonical form"),
    );
    put(
        "fail_receipt_unknown_field.json",
        file(&good.replace(r#","origins":"#, r#","note":"x","origins":"#), &relay),
        "R3",
        "a field the format does not have",
        Some("unknown field"),
    );
    let own = id(&origin);
    let single = |ranges: &str| body(&r, "1", &format!(r#"[{{"origin":"{own}","ranges":{ranges}}}]"#));
    put(
        "fail_receipt_ranges_overlap.json",
        file(
            &single(
                r#"[{"first":1,"last":5,"chain":"0123456789abcdef"},{"first":5,"last":9,"chain":"0123456789abcdef"}]"#,
            ),
            &relay,
        ),
        "R4",
        "two ranges share seq 5",
        Some("ascending, apart and merged"),
    );
    put(
        "fail_receipt_ranges_touch.json",
        file(
            &single(
                r#"[{"first":1,"last":5,"chain":"0123456789abcdef"},{"first":6,"last":9,"chain":"0123456789abcdef"}]"#,
            ),
            &relay,
        ),
        "R4",
        "two ranges that touch must be one",
        Some("ascending, apart and merged"),
    );
    put(
        "fail_receipt_no_ranges.json",
        file(&single("[]"), &relay),
        "R4",
        "an origin listed with no ranges",
        Some("has no ranges"),
    );
    put(
        "fail_receipt_seq_zero.json",
        file(&single(r#"[{"first":0,"last":5,"chain":"0123456789abcdef"}]"#), &relay),
        "R4",
        "a range starting at seq 0",
        Some("1 ≤ first ≤ last"),
    );
    put(
        "fail_receipt_chain_uppercase.json",
        file(&single(r#"[{"first":1,"last":5,"chain":"0123456789ABCDEF"}]"#), &relay),
        "R4",
        "a chain hash in uppercase hex",
        Some("16 lowercase hex"),
    );
    put(
        "fail_receipt_chain_full_length.json",
        file(&single(&format!(r#"[{{"first":1,"last":5,"chain":"{}"}}]"#, "ab".repeat(32))), &relay),
        "R4",
        "a whole chain hash (64 hex) where the format keeps 16",
        Some("16 lowercase hex"),
    );
    let mut swapped: Vec<&str> = vec![&o1, &o2];
    swapped.reverse();
    put(
        "fail_receipt_origins_unsorted.json",
        file(
            &body(
                &r,
                "1",
                &format!(
                    "[{}]",
                    swapped
                        .iter()
                        .map(|o| format!(
                            r#"{{"origin":"{o}","ranges":[{{"first":1,"last":2,"chain":"0123456789abcdef"}}]}}"#
                        ))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
            &relay,
        ),
        "R4",
        "origins not in ascending order",
        Some("not in ascending order"),
    );
    put(
        "fail_receipt_forged.json",
        file(&good, &stranger),
        "R5",
        "claims the trusted relay, signed by another key",
        Some("bad signature"),
    );
    put(
        "fail_receipt_unknown_signer.json",
        file(&body(&id(&stranger), "1", &good_origins("1")), &stranger),
        "R5",
        "signed by a key nobody trusts",
        Some("unknown signer"),
    );
    put(
        "fail_receipt_revoked_signer.json",
        file(&body(&id(&revoked), "1", &good_origins("1")), &revoked),
        "R5",
        "signed by a revoked key",
        Some("revoked signer"),
    );
    let mut changed = file(&good, &relay);
    // The same length, still canonical: seq 5 becomes 7 after signing.
    let at = changed.windows(8).position(|w| w == br#""last":5"#).expect("last 5");
    changed[at + 7] = b'7';
    put("fail_receipt_body_changed.json", changed, "R5", "a range changed after signing", Some("bad signature"));
    let mut padded = file(&good, &relay);
    padded.truncate(padded.len() - 1);
    padded.extend_from_slice(b"==\n");
    put(
        "fail_receipt_signature_padded.json",
        padded,
        "R5",
        "a signature with base64 padding (S1)",
        Some("bad signature"),
    );
    let mut third = file(&good, &relay);
    third.extend_from_slice(b"extra\n");
    put("fail_receipt_third_line.json", third, "R1", "a line after the signature", Some("more than two lines"));
    let mut cut = file(&good, &relay);
    cut.pop();
    put(
        "fail_receipt_no_final_newline.json",
        cut,
        "R1",
        "the signature line without its line ending",
        Some("must end with a line ending"),
    );
    std::fs::write(dir.join("receipts.json"), serde_json::to_vec_pretty(&vectors).expect("json")).expect("write");
}
