//! A relay killed (SIGKILL) at every crash point, then run again, ends with
//! the same output as an uninterrupted run; nothing partial ever shows under
//! a final name, and `--move` never loses an input whose content was not
//! written.
#![cfg(unix)]

mod common;
mod relay_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use relay_common::*;

/// The middleman's home and a stick, ready to relay; copied fresh for each run.
struct Template {
    world: World,
    stick: PathBuf,
}

fn template() -> Template {
    let w = World::new();
    let stick = w.path("stick");
    // Poorly compressible entries, so that with --max-size 16K the output
    // is split into several bundles (more crash points between them).
    let j = w.path("journals/f1.jsonl");
    noisy_journal(&j, 100, 120, 1);
    let first = create_bundle(&w.field1, &j, &stick.join("a")).expect("f1 1..=100");
    noisy_journal(&j, 200, 120, 1);
    create_bundle(&w.field1, &j, &stick.join("b")).expect("f1 101..=200");
    w.bundle(&w.field2, 7, &stick.join("a"));
    // A copy of a bundle, and a tampered bundle.
    std::fs::copy(&first, stick.join("b").join(first.file_name().expect("name"))).expect("copy");
    let bad = w.bundle(&w.field2, 12, &stick.join("c"));
    tamper_segment(&bad);
    Template { world: w, stick }
}

struct Run {
    _dir: tempfile::TempDir,
    home: PathBuf,
    stick: PathBuf,
    out: PathBuf,
}

fn fresh(t: &Template) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("middleman");
    copy_dir(&t.world.middleman, &home);
    let stick = dir.path().join("stick");
    copy_dir(&t.stick, &stick);
    let out = dir.path().join("out");
    Run { home, stick, out, _dir: dir }
}

fn relay_cmd(r: &Run, extra: &[&str]) -> assert_cmd::Command {
    let mut c = ferry(&r.home);
    c.args(["bundle", "relay", "--max-size", "16K", "--from"]).arg(&r.stick).arg("--out").arg(&r.out).args(extra);
    c
}

fn crash_points(t: &Template, extra: &[&str]) -> usize {
    let r = fresh(t);
    let o = relay_cmd(&r, extra).env("FERRY_CRASH_TRACE", "1").output().expect("run");
    assert_eq!(o.status.code(), Some(1), "the tampered bundle makes the verdict negative");
    String::from_utf8_lossy(&o.stderr).lines().filter(|l| l.starts_with("ferry-crashpoint ")).count()
}

/// Segment identities without hops: what must never be lost.
fn content(set: &BTreeSet<SegmentKey>) -> BTreeSet<(String, u64, u64, String)> {
    set.iter().map(|s| (s.0.clone(), s.1, s.2, s.3.clone())).collect()
}

/// Every bundle under a final name in `dir` is complete and verifies.
fn all_complete(t: &Template, dir: &Path, when: &str) {
    let trust = ferry::node::Node::open(&t.world.community).expect("node").trust().expect("trust");
    for f in tars(dir) {
        let v = ferry::verify::verify_file(&f, &trust, &mut ferry::progress::Silent);
        assert!(v.ok, "{when}: {} is not a complete bundle: {:?}", f.display(), v.error);
    }
}

fn segments_on_stick(stick: &Path) -> BTreeSet<(String, u64, u64, String)> {
    let mut set = BTreeSet::new();
    for f in ferry::bundle::find_bundles(&[stick.to_path_buf()]).expect("walk") {
        let r = ferry::bundle::BundleReader::open(&f).expect("open");
        for d in r.descriptors() {
            set.insert((d.origin.to_string(), d.first_seq, d.last_seq, d.chain_after.clone()));
        }
    }
    set
}

fn run_every_crash_point(extra: &[&str]) {
    let t = template();
    let reference = {
        let r = fresh(&t);
        assert_eq!(relay_cmd(&r, extra).output().expect("run").status.code(), Some(1));
        assert!(tars(&r.out).len() >= 2, "the output is split");
        segment_set(&r.out)
    };
    assert_eq!(reference.len(), 3, "three good segments: {reference:?}");
    let n = crash_points(&t, extra);
    assert!(n >= 11, "expected crash points in every step and between output bundles, saw {n}");
    let good_on_stick = segments_on_stick(&t.stick);
    for at in 1..=n {
        let r = fresh(&t);
        let o = relay_cmd(&r, extra).env("FERRY_CRASH_AT", at.to_string()).output().expect("run");
        assert_eq!(o.status.code(), None, "crash point {at} did not kill the relay");
        let when = format!("after a kill at point {at}");
        all_complete(&t, &r.out, &when);
        // Nothing lost: every segment is still on the stick or already written.
        let have: BTreeSet<_> = segments_on_stick(&r.stick).union(&content(&segment_set(&r.out))).cloned().collect();
        for s in content(&reference) {
            assert!(have.contains(&s), "{when}: segment {s:?} is neither on the stick nor written");
        }
        if segments_on_stick(&r.stick) != good_on_stick {
            // --move removed something: the tampered input must be in quarantine by then.
            let q = r.home.join("quarantine");
            let bad_gone = !segments_on_stick(&r.stick).iter().any(|s| s.2 == 12);
            assert!(!bad_gone || tars(&q).len() == 1, "{when}: a removed rejected input is not in quarantine");
        }
        // Run again: the job completes, with the same output as without the kill.
        let o = relay_cmd(&r, extra).output().expect("rerun");
        assert_eq!(o.status.code(), Some(1), "{when}: {}", String::from_utf8_lossy(&o.stderr));
        all_complete(&t, &r.out, &when);
        assert_eq!(segment_set(&r.out), reference, "{when}: output differs from an uninterrupted run");
        let q = r.home.join("quarantine");
        assert_eq!(tars(&q).len(), 1, "{when}: the tampered bundle is quarantined once");
        assert!(q.join(format!("{}.reason.txt", tars(&q)[0].file_name().expect("n").to_string_lossy())).exists());
        if extra.contains(&"--move") {
            assert!(segments_on_stick(&r.stick).is_empty(), "{when}: --move left inputs behind");
        }
    }
}

#[test]
fn killed_at_every_crash_point_then_rerun_gives_the_uninterrupted_output() {
    run_every_crash_point(&[]);
}

#[test]
fn killed_at_every_crash_point_with_move_never_loses_an_input() {
    run_every_crash_point(&["--move"]);
}
