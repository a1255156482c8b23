//! Crash safety: `ferry bundle apply` is killed with SIGKILL at every crash
//! point it passes (FERRY_CRASH_AT=n). Every time, the target passes
//! `integrity_check` and `foreign_key_check`, holds the run wholly or not at
//! all, and a re-run converges to the uninterrupted result.
#![cfg(unix)]

mod apply_support;

use std::path::{Path, PathBuf};

use apply_support::*;
use assert_cmd::Command;
use ferry::journal::Op;
use ferry::keys::Role;
use ferry::node::Node;
use ferry::value::Value;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER DEFAULT 7);
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id), v TEXT);";

fn ferry(home: &Path) -> Command {
    let mut c = Command::cargo_bin("ferry").expect("binary");
    c.env_remove("FERRY_HOME").env_remove("FERRY_CRASH_AT").env_remove("FERRY_CRASH_TRACE").arg("--home").arg(home);
    c
}

/// User tables plus the applied ranges: what must match after convergence.
fn state(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).expect("open");
    let ranges: Vec<String> = match c.prepare("SELECT o.node, a.first_seq, a.last_seq FROM _ferry_applied a JOIN _ferry_origins o ON o.id = a.origin ORDER BY 1, 2") {
        Ok(mut s) => s
            .query_map([], |r| Ok(format!("{}:{}-{}", r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("rows"),
        Err(_) => Vec::new(),
    };
    format!("{}ranges {}\n", dump(db), ranges.join(" "))
}

fn checks(db: &Path) {
    let c = rusqlite::Connection::open(db).expect("open");
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity");
    assert_eq!(ok, "ok");
    let broken: i64 = c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).expect("fk");
    assert_eq!(broken, 0);
}

fn apply_cmd(home: &Path, db: &Path, inbox: &Path) -> Command {
    let mut c = ferry(home);
    c.args(["--quiet", "bundle", "apply", "--db"]).arg(db).arg(inbox);
    c
}

#[test]
fn killed_at_every_crash_point_the_target_is_before_or_after_and_rerun_converges() {
    let dir = tempfile::tempdir().expect("tmp");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    // a: 1200 rows and edits in two-segment bundles; b: edits of a's rows,
    // parents and children (children first), and deletes.
    for i in 1..=1200 {
        a.insert(i, i, &[("a", text("a")), ("b", Value::Integer(i))]);
    }
    for i in 1..=100 {
        b.update(2000 + i, i, &[("a", text("b wins"))]);
    }
    b.update(5000, 5000, &[("a", text("parked"))]);
    b.push(5001, Op::Insert, "child", id_row(1), Some(row(&[("parent_id", Value::Integer(1))])));
    b.push(5002, Op::Insert, "parent", id_row(1), Some(row(&[("name", text("p"))])));
    for i in 1..=20 {
        b.delete(6000 + i, 1000 + i);
    }
    let mut first = 1;
    while first <= 1200 {
        a.bundle(&inbox, &[(first, first + 59), (first + 60, first + 119)], None);
        first += 120;
    }
    b.bundle(&inbox, &[(1, 50), (51, 103)], None);
    b.bundle(&inbox, &[(104, 123)], None);

    let home = dir.path().join("central");
    let node = Node::init(&home, "central", None).expect("node");
    let mut trust = node.trust().expect("trust");
    for o in [&a, &b] {
        trust.add(&o.node.info.name, &o.node.signing_key().verifying_key(), &[Role::Origin]).expect("add");
    }
    node.save_trust(&trust).expect("save");

    // The state before: one earlier bundle already applied, so "before" is not empty.
    let base = target(dir.path(), "base.sqlite3", SCHEMA);
    let early = dir.path().join("early");
    std::fs::create_dir_all(&early).expect("early");
    let mut c = Origin::new(dir.path(), "c");
    c.insert(1, 9999, &[("a", text("earlier"))]);
    let early_bundle = c.bundle(&early, &[(1, 1)], None);
    trust.add("c", &c.node.signing_key().verifying_key(), &[Role::Origin]).expect("add");
    node.save_trust(&trust).expect("save");
    apply_cmd(&home, &base, &early_bundle).assert().success();
    let before = state(&base);

    // The uninterrupted run, tracing its crash points.
    let reference = dir.path().join("reference.sqlite3");
    std::fs::copy(&base, &reference).expect("copy");
    let out = apply_cmd(&home, &reference, &inbox).env("FERRY_CRASH_TRACE", "1").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let points = String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("ferry-crashpoint ")).count();
    assert!(points >= 50, "only {points} crash points");
    let after = state(&reference);
    assert_ne!(before, after);

    let mut outcomes = (0, 0);
    for n in 1..=points {
        let db: PathBuf = dir.path().join(format!("crash{n}.sqlite3"));
        std::fs::copy(&base, &db).expect("copy");
        let out = apply_cmd(&home, &db, &inbox).env("FERRY_CRASH_AT", n.to_string()).output().expect("run");
        assert_eq!(out.status.code(), None, "point {n}: the process was to be killed");
        checks(&db);
        let now = state(&db);
        if now == before {
            outcomes.0 += 1;
        } else {
            assert_eq!(now, after, "point {n}: neither before nor after the run");
            outcomes.1 += 1;
        }
        apply_cmd(&home, &db, &inbox).assert().success();
        checks(&db);
        assert_eq!(state(&db), after, "point {n}: re-run did not converge");
        std::fs::remove_file(&db).expect("rm");
    }
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "crashes landed both before and after commit: {outcomes:?}");
}
