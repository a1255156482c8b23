//! README's first command, `ferry demo`, runs the whole chain on the
//! built-in fixtures and checks the central database against
//! `fixtures/demo/expected-central.json`; the sample journal files bundle
//! and verify too.

mod common;

use std::path::Path;

use common::*;
use predicates::prelude::*;

#[test]
fn demo_runs_the_whole_chain_and_reaches_the_expected_central_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut c = assert_cmd::Command::cargo_bin("ferry").expect("bin");
    c.args(["demo", "--dir"]).arg(dir.path()).assert().success().stdout(
        predicate::str::contains("central equals the expected state")
            .and(predicate::str::contains("1 conflict recorded"))
            .and(predicate::str::contains("4 already applied before")),
    );
    // The commands the demo prints are the ones a user types: run from the
    // demo folder, the central server's own view agrees: four origins,
    // nothing missing.
    let o = assert_cmd::Command::cargo_bin("ferry")
        .expect("bin")
        .current_dir(dir.path())
        .args(["--home", "central", "status", "--json", "--db", "central/app.sqlite3"])
        .output()
        .expect("run");
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["origins"].as_array().map(Vec::len), Some(4));
    assert!(v["origins"].as_array().expect("origins").iter().all(|o| o["missing"] == serde_json::json!([])));
}

#[test]
fn sample_journal_files_bundle_and_verify() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/journals");
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "field-1", Some(1));
    let b = init_node(dir.path(), "field-2", Some(2));
    let c = init_node(dir.path(), "central", None);
    trust(&c, &a, "field-1", &["origin"]);
    trust(&c, &b, "field-2", &["origin"]);
    let out = dir.path().join("usb");
    create_bundle(&a, &fixtures.join("field-1.jsonl"), &out).expect("json lines bundle");
    create_bundle(&b, &fixtures.join("field-2-legacy.txt"), &out).expect("legacy bundle");
    ferry(&c).args(["bundle", "verify"]).arg(&out).assert().success().stdout(predicate::str::contains("ok").count(2));
}
