//! The apply commands through the real binary: `bundle apply`, `conflicts`,
//! `status --db`, `bundle verify --against`; exit codes and JSON shapes
//! (deserialised with `deny_unknown_fields`).

mod apply_support;
mod common;

use apply_support::*;
use ferry::apply::status::{Conflict, DbStatus};
use ferry::apply::ApplyReport;
use ferry::value::Value;

struct Setup {
    dir: tempfile::TempDir,
    home: std::path::PathBuf,
    a: Origin,
    b: Origin,
    db: std::path::PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let a = Origin::new(dir.path(), "a");
    let b = Origin::new(dir.path(), "b");
    let home = common::init_node(dir.path(), "central", None);
    common::trust(&home, &dir.path().join("a"), "a", &["origin"]);
    common::trust(&home, &dir.path().join("b"), "b", &["origin"]);
    let db = target(dir.path(), "central.sqlite3", SIMPLE);
    Setup { dir, home, a, b, db }
}

#[test]
fn apply_json_reports_counts_and_a_second_run_skips_everything() {
    let mut s = setup();
    s.a.insert(10, 1, &[("a", text("x"))]);
    s.a.update(20, 1, &[("b", Value::Integer(2))]);
    let inbox = s.dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    s.a.bundle(&inbox, &[(1, 2)], None);
    let run = || {
        let o = common::ferry(&s.home)
            .args(["bundle", "apply", "--json", "--db"])
            .arg(&s.db)
            .arg(&inbox)
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<ApplyReport>(&o.stdout).expect("report shape")
    };
    let r = run();
    assert_eq!((r.totals.applied, r.totals.skipped), (2, 0));
    let r = run();
    assert_eq!((r.totals.applied, r.totals.skipped), (0, 2));
}

#[test]
fn an_entry_naming_a_missing_column_is_quarantined_and_listed_with_its_fix() {
    let mut s = setup();
    s.a.insert(10, 1, &[("missing_col", text("x"))]);
    let f = s.a.bundle(s.dir.path(), &[(1, 1)], None);
    let o = common::ferry(&s.home).args(["bundle", "apply", "--db"]).arg(&s.db).arg(&f).output().expect("run");
    assert_eq!(o.status.code(), Some(0));
    let hints = String::from_utf8_lossy(&o.stderr);
    assert!(hints.contains("1 quarantined") && hints.contains("--list"), "{hints}");
    // The summary names only what there is, and where to look.
    let o = common::ferry(&s.home).args(["status", "--db"]).arg(&s.db).output().expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("in all    0 conflicts recorded, 1 entry quarantined\n"), "{text}");
    assert!(text.contains("ferry status --db") && text.contains("--list`"), "{text}");
    let o = common::ferry(&s.home).args(["status", "--list", "--db"]).arg(&s.db).output().expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("quarantined") && text.contains("no column missing_col") && text.contains("a's entry 1"),
        "{text}"
    );
    let o = common::ferry(&s.home).args(["status", "--list", "--json", "--db"]).arg(&s.db).output().expect("run");
    let l: ferry::apply::status::Lists = serde_json::from_slice(&o.stdout).expect("lists shape");
    assert_eq!(l.quarantined.len(), 1);
    assert_eq!(l.quarantined[0].seq, Some(1));
}

#[test]
fn apply_to_a_missing_database_is_an_error() {
    let mut s = setup();
    s.a.insert(10, 1, &[("a", text("x"))]);
    let f = s.a.bundle(s.dir.path(), &[(1, 1)], None);
    let o = common::ferry(&s.home)
        .args(["bundle", "apply", "--db"])
        .arg(s.dir.path().join("nope.sqlite3"))
        .arg(&f)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("migrations"));
}

#[test]
fn conflicts_and_status_list_what_happened() {
    let mut s = setup();
    s.a.insert(10, 1, &[("a", text("from a"))]);
    s.a.insert(11, 2, &[("a", text("x"))]);
    s.a.insert(12, 3, &[("a", text("x"))]);
    s.b.update(20, 1, &[("a", text("from b"))]);
    s.b.update(21, 77, &[("a", text("waits"))]);
    let f1 = s.a.bundle(s.dir.path(), &[(1, 1)], None);
    let f3 = s.a.bundle(s.dir.path(), &[(3, 3)], None);
    let fb = s.b.bundle(s.dir.path(), &[(1, 2)], None);
    common::ferry(&s.home).args(["bundle", "apply", "--db"]).arg(&s.db).args([&fb, &f1, &f3]).assert().success();

    let o = common::ferry(&s.home).args(["conflicts", "--json", "--db"]).arg(&s.db).output().expect("run");
    assert!(o.status.success());
    let list: Vec<Conflict> = serde_json::from_slice(&o.stdout).expect("conflicts shape");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].kind, "overwritten");
    assert_eq!(list[0].loser_value.as_deref(), Some("{\"a\":\"from a\"}"));
    let o = common::ferry(&s.home).args(["conflicts", "--db"]).arg(&s.db).output().expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("t [1], column a: a's entry 1 lost to b's entry 1"), "names from the trust store: {text}");
    assert!(text.contains("lost: {\"a\":\"from a\"}"), "{text}");

    let o = common::ferry(&s.home).args(["status", "--json", "--db"]).arg(&s.db).output().expect("run");
    assert!(o.status.success());
    let st: DbStatus = serde_json::from_slice(&o.stdout).expect("status shape");
    let a = st.origins.iter().find(|o| o.origin == s.a.id()).expect("origin a");
    assert_eq!(a.applied, vec![(1, 1), (3, 3)]);
    assert_eq!(a.missing, vec![(2, 2)]);
    assert_eq!(st.parked, 1);
    let o = common::ferry(&s.home).args(["status", "--db"]).arg(&s.db).output().expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("missing   2"), "{text}");
}

#[test]
fn verify_against_says_whether_a_bundle_would_apply() {
    let mut s = setup();
    s.a.insert(10, 1, &[("a", text("x"))]);
    s.b.insert(10, 1, &[("zzz", text("x"))]);
    let good = s.a.bundle(s.dir.path(), &[(1, 1)], None);
    let bad = s.b.bundle(s.dir.path(), &[(1, 1)], None);
    common::ferry(&s.home).args(["bundle", "verify", "--against"]).arg(&s.db).arg(&good).assert().success();
    let o = common::ferry(&s.home).args(["bundle", "verify", "--against"]).arg(&s.db).arg(&bad).output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"zzz\""));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("b's entry 1") && out.contains("--retry-quarantined"), "names origin, entry, fix: {out}");
    // A different schema fingerprint alone is no problem: every entry fits.
    let drift = s.a.bundle(s.dir.path(), &[(1, 1)], Some("feed"));
    common::ferry(&s.home).args(["bundle", "verify", "--against"]).arg(&s.db).arg(&drift).assert().success();
    assert_eq!(
        count(&s.db, "SELECT count(*) FROM sqlite_schema WHERE name LIKE '\\_ferry%' ESCAPE '\\'"),
        0,
        "verify writes nothing"
    );
}

#[test]
fn a_ledger_newer_than_this_ferry_is_refused_untouched() {
    let mut s = setup();
    s.a.insert(10, 1, &[("a", text("x"))]);
    let first = s.a.bundle(s.dir.path(), &[(1, 1)], None);
    common::ferry(&s.home).args(["bundle", "apply", "--db"]).arg(&s.db).arg(&first).assert().success();
    let c = rusqlite::Connection::open(&s.db).expect("db");
    c.execute("UPDATE _ferry_meta SET value = 99 WHERE key = 'ledger_version'", []).expect("bump");
    drop(c);
    s.a.insert(11, 2, &[("a", text("y"))]);
    let second = s.a.bundle(s.dir.path(), &[(2, 2)], None);
    let o = common::ferry(&s.home).args(["bundle", "apply", "--db"]).arg(&s.db).arg(&second).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "an error, not a verdict");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ledger of version 99") && err.contains("upgrade ferry"), "{err}");
    let c = rusqlite::Connection::open(&s.db).expect("db");
    let rows: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("count");
    assert_eq!(rows, 1, "nothing of the second bundle was applied");
}

#[test]
fn a_server_url_is_read_as_a_server_and_its_password_never_shown() {
    let s = setup();
    let url = "postgresql://ana:hunter2secret@127.0.0.1:5432/central";
    for args in [vec!["bundle", "apply", "--db", url, "."], vec!["status", "--db", url], vec!["conflicts", "--db", url]]
    {
        let o = common::ferry(&s.home).args(&args).output().expect("run");
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!all.contains("hunter2secret"), "{args:?}: {all}");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {all}");
        assert!(all.contains("PostgreSQL") && all.contains("postgresql://ana:****@127.0.0.1:5432/central"), "{all}");
    }
    // A bad URL is refused naming what is wrong, without the password.
    let o = common::ferry(&s.home)
        .args(["status", "--db", "mysql://ana:hunter2secret@db:notaport/central"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("port") && err.contains("ana:****@") && !err.contains("hunter2secret"), "{err}");
    // A path that is no URL stays a SQLite path.
    let o = common::ferry(&s.home).args(["status", "--db"]).arg(&s.db).output().expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn commands_that_write_sqlite_only_refuse_a_server_url_without_showing_its_password() {
    let s = setup();
    let url = "postgresql://ana:hunter2secret@127.0.0.1:5432/central";
    let out = s.dir.path().join("out");
    for args in [
        vec!["track", url],
        vec!["untrack", url],
        vec!["bundle", "create", "--db", url, "--out", out.to_str().expect("utf-8")],
        vec!["prune", "--db", url],
        vec!["bundle", "relay", "--from", ".", "--out", out.to_str().expect("utf-8"), "--apply", url],
    ] {
        let o = common::ferry(&s.home).args(&args).output().expect("run");
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!all.contains("hunter2secret"), "{args:?}: {all}");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {all}");
        assert!(all.contains("PostgreSQL server") && all.contains("ana:****@"), "{args:?}: {all}");
    }
}
