//! `ferry bundle relay` and `ferry status`: duplicates, forks, quarantine,
//! multi-hop, splitting, `--move`.

mod common;
mod relay_common;

use std::path::Path;

use common::*;
use relay_common::*;

fn verify_ok(home: &Path, dir: &Path) -> serde_json::Value {
    let o = ferry(home).args(["bundle", "verify", "--json"]).arg(dir).output().expect("verify");
    assert!(o.status.success(), "verify failed: {}", String::from_utf8_lossy(&o.stdout));
    serde_json::from_slice(&o.stdout).expect("json")
}

#[test]
fn relay_forwards_new_segments_with_its_hop_and_leaves_inputs_alone() {
    let w = World::new();
    let stick = w.path("stick");
    let b = w.bundle(&w.field1, 10, &stick);
    let before = std::fs::read(&b).expect("read");
    let out = w.path("out");
    let (code, r) = relay(&w.middleman, &[&stick], &out, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(count(&r, "segments_verified"), 1);
    assert_eq!(count(&r, "bundles_written"), 1);
    assert_eq!(count(&r, "entries_written"), 10);
    assert_eq!(std::fs::read(&b).expect("read"), before, "input untouched");
    let set = segment_set(&out);
    assert_eq!(set.len(), 1);
    let seg = set.iter().next().expect("segment");
    assert_eq!(seg.4, vec![node_id(&w.middleman)], "one hop, by the middleman");
    // The community trusts the middleman as a relay: the output verifies there.
    verify_ok(&w.community, &out);
}

#[test]
fn duplicate_same_bundle_copied_twice_is_dropped_and_counted() {
    let w = World::new();
    let stick = w.path("stick");
    let b = w.bundle(&w.field1, 10, &stick);
    std::fs::create_dir_all(stick.join("backup")).expect("mkdir");
    std::fs::copy(&b, stick.join("backup").join(b.file_name().expect("name"))).expect("copy");
    let out = w.path("out");
    let (code, r) = relay(&w.middleman, &[&stick], &out, &[]);
    assert_eq!(code, 0);
    assert_eq!(count(&r, "bundles_read"), 2);
    assert_eq!(count(&r, "segments_written"), 1);
    assert_eq!(count(&r, "duplicates"), 1);
    assert_eq!(count(&r, "duplicate_same_bundle"), 1);
}

#[test]
fn duplicate_same_segment_in_another_bundle_is_dropped() {
    // The field laptop's own bundle and the middleman's relay of it reach the
    // community server together (two routes).
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 10, &stick);
    let via_middleman = w.path("via-middleman");
    relay(&w.middleman, &[&stick], &via_middleman, &[]);
    let out = w.path("out");
    let (code, r) = relay(&w.community, &[&stick, &via_middleman], &out, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(count(&r, "segments_written"), 1);
    assert_eq!(count(&r, "duplicate_other_bundle"), 1);
}

#[test]
fn rerun_with_the_same_stick_writes_nothing_and_says_so() {
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 10, &stick);
    let out = w.path("out");
    relay(&w.middleman, &[&stick], &out, &[]);
    let (code, r) = relay(&w.middleman, &[&stick], &out, &[]);
    assert_eq!(code, 0);
    assert_eq!(count(&r, "bundles_written"), 0);
    assert_eq!(count(&r, "duplicate_already_carried"), 1);
    assert_eq!(tars(&out).len(), 1);
    // Even into another folder: the ledger remembers what was passed on.
    let out2 = w.path("out2");
    let o = ferry(&w.middleman)
        .args(["bundle", "relay", "--from"])
        .arg(&stick)
        .arg("--out")
        .arg(&out2)
        .output()
        .expect("run");
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing new to pass on"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(tars(&out2).is_empty());
}

#[test]
fn overlapping_segments_are_compared_entry_by_entry_and_both_forwarded_separately() {
    let w = World::new();
    let stick = w.path("stick");
    let j = w.path("journals/f1.jsonl");
    journal_with(&j, 10, u64::MAX, "");
    create_bundle(&w.field1, &j, &stick).expect("1..=10");
    journal_with(&j, 15, u64::MAX, "");
    let o = ferry(&w.field1)
        .args(["bundle", "create", "--since", "5", "--journal"])
        .arg(&j)
        .arg("--out")
        .arg(&stick)
        .output()
        .expect("run");
    assert!(o.status.success());
    let out = w.path("out");
    let (code, r) = relay(&w.middleman, &[&stick], &out, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(count(&r, "forks"), 0);
    // 5..=15 holds new entries: forwarded, but never in one bundle with 1..=10.
    assert_eq!(count(&r, "segments_written"), 2);
    assert_eq!(count(&r, "bundles_written"), 2);
    verify_ok(&w.community, &out);
    // A segment wholly inside what was carried, with matching chains, is a duplicate.
    let (_, r) = relay(&w.middleman, &[&stick], &w.path("out2"), &[]);
    assert_eq!(count(&r, "duplicate_already_carried"), 2);
}

/// A field laptop cloned from field-1 (same key) from a backup taken before
/// it bundled anything, whose journal differs from seq 6.
fn cloned_bundle(w: &World, n: u64, out: &Path) {
    let clone = w.path("field-1-clone");
    copy_dir(&w.field1, &clone);
    for f in ["state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"] {
        let _ = std::fs::remove_file(clone.join(f));
    }
    let j = w.path("journals/clone.jsonl");
    journal_with(&j, n, 6, "clone");
    create_bundle(&clone, &j, out).expect("clone bundle");
}

#[test]
fn fork_in_one_run_is_reported_with_both_sources_and_the_newcomer_quarantined() {
    let w = World::new();
    let stick1 = w.path("stick1");
    let stick2 = w.path("stick2");
    w.bundle(&w.field1, 10, &stick1);
    std::thread::sleep(std::time::Duration::from_millis(5));
    cloned_bundle(&w, 12, &stick2);
    let out = w.path("out");
    let (code, r) = relay(&w.middleman, &[&stick1, &stick2], &out, &[]);
    assert_eq!(code, 1, "a fork is a negative verdict");
    assert_eq!(count(&r, "forks"), 1);
    assert_eq!(count(&r, "segments_written"), 1, "the original passes on");
    let f = &r["forks"][0];
    assert!(f["file"].as_str().expect("file").contains("stick2"), "{f}");
    assert!(f["conflicts_with_source"].as_str().expect("src").contains("stick1"), "{f}");
    assert_eq!(f["seq"], 6, "found by comparing entries");
    assert!(f["recovery"].as_str().expect("recovery").contains("ferry node reissue"));
    let q = Path::new(f["quarantined"].as_str().expect("quarantined"));
    assert!(q.starts_with(w.middleman.join("quarantine")));
    let reason = std::fs::read_to_string(format!("{}.reason.txt", q.display())).expect("reason");
    assert!(reason.contains("fork"), "{reason}");
    // Never merged: the output holds only the original.
    let set = segment_set(&out);
    assert_eq!(set.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), vec![(1, 10)]);
}

#[test]
fn fork_against_the_ledger_is_caught_on_a_later_run() {
    let w = World::new();
    let stick1 = w.path("stick1");
    w.bundle(&w.field1, 10, &stick1);
    let out = w.path("out");
    relay(&w.middleman, &[&stick1], &out, &[]);
    let stick2 = w.path("stick2");
    cloned_bundle(&w, 10, &stick2);
    let (code, r) = relay(&w.middleman, &[&stick2], &out, &[]);
    assert_eq!(code, 1);
    assert_eq!(count(&r, "forks"), 1);
    assert_eq!(count(&r, "bundles_written"), 0);
    assert!(r["forks"][0]["conflicts_with_source"].as_str().expect("src").contains("stick1"));
}

#[test]
fn tampered_and_untrusted_bundles_are_quarantined_and_good_ones_still_pass() {
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 10, &stick);
    let bad = w.bundle(&w.field2, 10, &stick);
    tamper_segment(&bad);
    let stranger = init_node(w.dir.path(), "stranger", None);
    w.bundle(&stranger, 5, &stick);
    std::fs::write(stick.join("notes.txt"), "shopping list").expect("foreign");
    std::fs::write(stick.join(".ferry-half.tmp"), "partial").expect("tmp");
    let out = w.path("out");
    let (code, r) = relay(&w.middleman, &[&stick], &out, &[]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(count(&r, "rejected"), 2);
    assert_eq!(count(&r, "segments_written"), 1);
    let reasons: Vec<String> = r["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|x| {
            let q = x["quarantined"].as_str().expect("quarantined");
            assert!(Path::new(q).exists());
            std::fs::read_to_string(format!("{q}.reason.txt")).expect("reason file")
        })
        .collect();
    assert!(reasons.iter().any(|r| r.contains("hash mismatch")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("unknown signer")), "{reasons:?}");
    assert!(bad.exists(), "inputs are never removed without --move");
    verify_ok(&w.community, &out);
}

#[test]
fn three_hops_end_to_end_verify_and_inspect_list_every_hop_in_order() {
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 10, &stick);
    w.bundle(&w.field2, 7, &stick);
    let (m, c, z) = (w.path("to-community"), w.path("to-central"), w.path("central-inbox"));
    assert_eq!(relay(&w.middleman, &[&stick], &m, &[]).0, 0);
    assert_eq!(relay(&w.community, &[&m], &c, &[]).0, 0);
    assert_eq!(relay(&w.central, &[&c], &z, &[]).0, 0);
    let v = verify_ok(&w.central, &z);
    let hops: Vec<&str> =
        v[0]["segments"][0]["hops"].as_array().expect("hops").iter().map(|h| h["name"].as_str().expect("n")).collect();
    assert_eq!(hops, ["middleman", "community", "central"]);
    let file = &tars(&z)[0];
    let o = ferry(&w.central).args(["bundle", "inspect", "--json"]).arg(file).output().expect("inspect");
    let i: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(i["segments"].as_array().expect("segs").len(), 2);
    let ids: Vec<&str> =
        i["segments"][0]["hops"].as_array().expect("h").iter().map(|h| h["node"].as_str().expect("n")).collect();
    assert_eq!(ids, [node_id(&w.middleman), node_id(&w.community), node_id(&w.central)]);
    let text = ferry(&w.central).args(["bundle", "inspect"]).arg(file).output().expect("inspect");
    let text = String::from_utf8_lossy(&text.stdout);
    let at = |who: &str| text.find(&format!("carried by {who} (")).unwrap_or_else(|| panic!("{who} in {text}"));
    assert!(at("middleman") < at("community") && at("community") < at("central"), "hops in order: {text}");
    // Time order: field-1's entries (00:00:01..) before field-2's? Both start at the same
    // instant; the order is then by origin id, and stable.
    let seg_ts: Vec<&str> =
        i["segments"].as_array().expect("s").iter().map(|s| s["ts_min"].as_str().expect("ts")).collect();
    assert!(seg_ts.windows(2).all(|p| p[0] <= p[1]), "{seg_ts:?}");
}

#[test]
fn a_relay_that_does_not_trust_the_upstream_relay_rejects_its_bundles() {
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 10, &stick);
    let m = w.path("m");
    relay(&w.middleman, &[&stick], &m, &[]);
    // field-2 trusts field-1 as an origin but not the middleman as a relay.
    trust(&w.field2, &w.field1, "field-1", &["origin"]);
    let (code, r) = relay(&w.field2, &[&m], &w.path("out"), &[]);
    assert_eq!(code, 1);
    assert!(r["rejected"][0]["reason"].as_str().expect("reason").contains("unknown signer"), "{r}");
}

#[test]
fn output_is_split_below_max_size_with_portable_unique_names() {
    let w = World::new();
    let stick = w.path("stick");
    for (home, seed) in [(&w.field1, 1), (&w.field2, 2)] {
        for k in 0..2u64 {
            let j = w.path(&format!("journals/noisy-{seed}.jsonl"));
            noisy_journal(&j, 200 * (k + 1), 120, seed);
            create_bundle(home, &j, &stick).expect("bundle");
        }
    }
    let out = w.path("out");
    let max = 24 * 1024;
    let (code, r) = relay(&w.middleman, &[&stick], &out, &["--max-size", "24K"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(count(&r, "segments_written"), 4);
    let files = tars(&out);
    assert!(files.len() >= 2, "split into several bundles: {files:?}");
    let mut folded = std::collections::BTreeSet::new();
    for f in &files {
        assert!(std::fs::metadata(f).expect("meta").len() <= max, "{} exceeds --max-size", f.display());
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        assert!(
            name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
            "{name}"
        );
        assert!(folded.insert(name.to_lowercase()), "names clash under case folding");
    }
    verify_ok(&w.community, &out);
}

#[test]
fn move_removes_inputs_only_once_relayed_or_quarantined() {
    let w = World::new();
    let stick = w.path("stick");
    let good = w.bundle(&w.field1, 10, &stick);
    let bad = w.bundle(&w.field2, 10, &stick);
    tamper_segment(&bad);
    std::fs::write(stick.join("notes.txt"), "not ours").expect("foreign");
    let out = w.path("out");
    let (code, r) = relay(&w.middleman, &[&stick], &out, &["--move"]);
    assert_eq!(code, 1);
    assert_eq!(count(&r, "moved"), 2);
    assert!(!good.exists() && !bad.exists());
    assert!(stick.join("notes.txt").exists(), "foreign files are left alone");
    assert_eq!(segment_set(&out).len(), 1);
    let q = r["rejected"][0]["quarantined"].as_str().expect("q");
    assert!(Path::new(q).exists(), "the rejected input survives in quarantine");
}

#[test]
fn status_lists_what_was_carried_per_origin() {
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 10, &stick);
    w.bundle(&w.field2, 4, &stick);
    relay(&w.middleman, &[&stick], &w.path("out"), &[]);
    let o = ferry(&w.middleman).args(["status", "--json"]).output().expect("status");
    assert!(o.status.success());
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let origins = s["origins"].as_array().expect("origins");
    assert_eq!(origins.len(), 2);
    let f1 = origins.iter().find(|o| o["name"] == "field-1").expect("field-1");
    assert_eq!(f1["ranges"], serde_json::json!([[1, 10]]));
    assert_eq!(f1["entries"], 10);
    assert_eq!(f1["tables"]["t"]["insert"], 10);
    assert!(f1["sources"][0].as_str().expect("src").ends_with("stick"));
    assert!(f1["segments"][0]["output"].as_str().expect("out").contains("ferry-"));
    let text = ferry(&w.middleman).arg("status").output().expect("status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("from field-2: 4 entries carried (entries 1–4)"), "names and ranges for people: {text}");
}

#[test]
fn a_longer_resend_is_checked_against_the_ledger_chain_and_forwarded() {
    let w = World::new();
    let j = w.path("journals/f1.jsonl");
    journal_with(&j, 10, u64::MAX, "");
    let stick1 = w.path("stick1");
    create_bundle(&w.field1, &j, &stick1).expect("1..=10");
    let out = w.path("out");
    relay(&w.middleman, &[&stick1], &out, &[]);
    journal_with(&j, 15, u64::MAX, "");
    let stick2 = w.path("stick2");
    let o = ferry(&w.field1)
        .args(["bundle", "create", "--since", "1", "--journal"])
        .arg(&j)
        .arg("--out")
        .arg(&stick2)
        .output()
        .expect("run");
    assert!(o.status.success());
    let (code, r) = relay(&w.middleman, &[&stick2], &out, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(count(&r, "forks"), 0);
    assert_eq!(count(&r, "segments_written"), 1, "1..=15 adds 11..=15");
    assert!(r["warnings"].as_array().expect("warnings").is_empty(), "the overlap was settled: {r}");
}

#[test]
fn a_fork_inside_a_longer_segment_is_found_at_the_ledger_boundary() {
    let w = World::new();
    let stick1 = w.path("stick1");
    w.bundle(&w.field1, 10, &stick1);
    let out = w.path("out");
    relay(&w.middleman, &[&stick1], &out, &[]);
    let stick2 = w.path("stick2");
    cloned_bundle(&w, 12, &stick2);
    let (code, r) = relay(&w.middleman, &[&stick2], &out, &[]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(count(&r, "forks"), 1);
    assert_eq!(r["forks"][0]["seq"], 10, "the chain after seq 10 differs from the one carried");
    assert_eq!(count(&r, "bundles_written"), 0);
}

/// The documented `--json` shape of `ferry bundle relay` (docs/RELAY.md).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JsonReport {
    counts: JsonCounts,
    written: Vec<JsonWritten>,
    forks: Vec<serde_json::Value>,
    rejected: Vec<JsonRejection>,
    refused_segments: Vec<JsonRefusal>,
    foreign: Vec<String>,
    moved: Vec<String>,
    warnings: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JsonCounts {
    bundles_read: u64,
    foreign: u64,
    segments_read: u64,
    bundles_verified: u64,
    segments_verified: u64,
    duplicates: u64,
    duplicate_same_bundle: u64,
    duplicate_other_bundle: u64,
    duplicate_already_carried: u64,
    forks: u64,
    segments_refused: u64,
    rejected: u64,
    quarantined: u64,
    bundles_written: u64,
    segments_written: u64,
    entries_written: u64,
    bytes_written: u64,
    moved: u64,
    recovered: u64,
    sent_again: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JsonWritten {
    file: String,
    bytes: u64,
    segments: u64,
    entries: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JsonRejection {
    file: String,
    reason: String,
    quarantined: Option<String>,
    whole: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JsonRefusal {
    file: String,
    segment: String,
    reason: String,
    quarantined: Option<String>,
}

#[test]
fn relay_json_has_the_documented_shape() {
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 3, &stick);
    let bad = w.bundle(&w.field2, 3, &stick);
    tamper_segment(&bad);
    std::fs::write(stick.join("photos.tar"), "not a bundle").expect("foreign");
    let mut other = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_cksum();
    other.append_data(&mut h, "holiday.txt", &b"sun"[..]).expect("tar");
    std::fs::write(stick.join("backup.tar"), other.into_inner().expect("tar")).expect("foreign tar");
    let (_, r) = relay(&w.middleman, &[&stick], &w.path("out"), &[]);
    let parsed: JsonReport = serde_json::from_value(r.clone()).expect("documented shape");
    assert_eq!(parsed.counts.bundles_written, 1);
    assert_eq!(parsed.counts.rejected, 1);
    assert_eq!(parsed.written[0].entries, 3);
    assert_eq!(parsed.rejected.len(), 1);
    assert_eq!(parsed.foreign.len(), 2, "someone's own archives are skipped, not quarantined");
    assert_eq!(parsed.counts.quarantined, 1);
}

#[test]
fn a_missing_stick_or_a_tiny_max_size_is_an_error_not_a_silent_success() {
    let w = World::new();
    let out = w.path("out");
    let o = ferry(&w.middleman)
        .args(["bundle", "relay", "--from"])
        .arg(w.dir.path().join("not-mounted"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not-mounted"));
    let stick = w.path("stick");
    w.bundle(&w.field1, 3, &stick);
    let o = ferry(&w.middleman)
        .args(["bundle", "relay", "--max-size", "100", "--from"])
        .arg(&stick)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-size"));
}
