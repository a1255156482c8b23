//! A target database whose ledger was written by an older ferry keeps
//! working: bundles applied to it afterwards give exactly what they give on
//! a database that was always current. Two old layouts: ledger v1
//! (`_ferry_rows` with fixed-width versions, commit 1771ac7) and ledger v2
//! (a `_ferry_rows_<id>` row per single-integer key, commit a2b9937).
//!
//! The fixture (`fixtures/old-ledgers/`, made by its `make.sh` and
//! `make-v2.sh`, which cannot be re-run with later versions): two origins'
//! bundles in two rounds, and `target-v1.sqlite3` and `target-v2.sqlite3`,
//! the schema with round 1 applied by each version. In those ledgers,
//! item 50 only has a parked update (its insert comes in round 2), items 2 and
//! 4 and visit ("k9", 9) are tombstones (the latter waiting for its row),
//! items 1, 3 and tag "red" carry column versions other than their insert's,
//! and 5 conflicts are recorded (4 `overwritten`, 1 `row_exists` on item 100).
//! Round 2 is written so that losing any of these changes the result: beta's
//! insert of item 50 must bring in alpha's parked update; beta's insert of
//! item 4 and alpha's of visit ("k9", 9) are older than their tombstones and
//! must stay deleted; updates of items 1, 3 and 200 are older than the
//! columns' current versions (but newer than the insert version, or exactly
//! racing it) and must lose; of two updates of tag "red" (a text key) and of
//! item 100 (the row both inserted), each wins or loses by its column's
//! version: the label and item 100's `a` stay beta's, the weight and item
//! 100's `b` change.

mod common;

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::Value as Json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/old-ledgers").join(name)
}

/// A fresh node home trusting the fixture's two origins (`trust.txt`: NAME KEY).
fn home_trusting_fixture(dir: &Path) -> PathBuf {
    let home = common::init_node(dir, "central", None);
    let trust = std::fs::read_to_string(fixture("trust.txt")).expect("trust.txt");
    let mut n = 0;
    for line in trust.lines().filter(|l| !l.trim().is_empty()) {
        let (name, key) = line.split_once(' ').expect("NAME KEY");
        common::ferry(&home).args(["trust", "add", name, key.trim(), "--role", "origin"]).assert().success();
        n += 1;
    }
    assert_eq!(n, 2, "trust.txt names alpha and beta");
    home
}

/// `ferry bundle apply --json --db DB PATHS…`, which must exit 0; its report.
fn apply(home: &Path, db: &Path, paths: &[PathBuf]) -> Json {
    // Copies of the fixture folders: apply leaves its receipt in the folders
    // it reads from, and the committed fixtures stay as they are.
    let copies = tempfile::tempdir().expect("tmp");
    let mut copied = Vec::new();
    for p in paths {
        let to = copies.path().join(p.file_name().expect("name"));
        std::fs::create_dir_all(&to).expect("mkdir");
        for f in std::fs::read_dir(p).expect("read fixture").flatten() {
            std::fs::copy(f.path(), to.join(f.file_name())).expect("copy");
        }
        copied.push(to);
    }
    let o =
        common::ferry(home).args(["bundle", "apply", "--json", "--db"]).arg(db).args(&copied).output().expect("run");
    assert_eq!(o.status.code(), Some(0), "apply failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("apply json")
}

fn command_json(home: &Path, args: &[&str], db: &Path) -> Json {
    let o = common::ferry(home).args(args).arg("--db").arg(db).arg("--json").output().expect("run");
    assert_eq!(o.status.code(), Some(0), "{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// `ferry conflicts --json` without what depends on the run rather than on
/// the data: `id` (a rowid; a ledger rewrite may renumber) and `recorded_at`
/// (the wall clock of the apply). The order (as listed: recording order) is
/// kept and compared.
fn conflicts(home: &Path, db: &Path) -> Json {
    let mut v = command_json(home, &["conflicts"], db);
    for c in v.as_array_mut().expect("conflicts array") {
        let c = c.as_object_mut().expect("conflict object");
        assert!(c.remove("id").is_some() && c.remove("recorded_at").is_some(), "conflict fields: {c:?}");
    }
    v
}

/// `ferry status --db --json` without `db` (the path as given on the command
/// line, which differs between the databases compared) and each origin's
/// `last_apply` (the wall clock of the last apply run). Everything else
/// (applied and missing ranges, entries, last entry time, parked, tombstones
/// waiting…) is data and compared; with `round1_made_by_old_code`, also
/// without the outcome counts (an old ledger kept none: they are estimated)
/// and conflict counts (round 1's records were made by the old code).
fn status(home: &Path, db: &Path, round1_made_by_old_code: bool) -> Json {
    let mut v = command_json(home, &["status"], db);
    let o = v.as_object_mut().expect("status object");
    assert!(o.remove("db").is_some(), "status has db: {o:?}");
    if round1_made_by_old_code {
        assert!(o.remove("outcomes").is_some() && o.remove("conflicts").is_some(), "status totals: {o:?}");
    }
    for origin in o.get_mut("origins").and_then(Json::as_array_mut).expect("origins") {
        let origin = origin.as_object_mut().expect("origin");
        assert!(origin.remove("last_apply").is_some(), "origin has last_apply");
        if round1_made_by_old_code {
            assert!(origin.remove("outcomes").is_some() && origin.remove("conflicts").is_some(), "{origin:?}");
        }
    }
    v
}

/// The conflicts recorded from the `skip`th on.
fn conflicts_from(home: &Path, db: &Path, skip: usize) -> Vec<Json> {
    conflicts(home, db).as_array().expect("conflicts").iter().skip(skip).cloned().collect()
}

/// Every user table (not `_ferry*`, not `sqlite_*`), every row ordered by
/// primary key, every value with its `typeof()`; reals by their bits, so
/// -0.0 and 0.0 differ.
fn dump(db: &Path) -> Vec<String> {
    let conn = Connection::open(db).expect("open");
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_ferry%' ESCAPE '\\' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("tables");
    assert_eq!(tables, ["item", "tag", "visit"]);
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = Vec::new();
    for t in &tables {
        let mut cols: Vec<(String, i64)> = conn
            .prepare(&format!("SELECT name, pk FROM pragma_table_info({})", q(t).replace('"', "'")))
            .expect("columns")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("columns")
            .collect::<Result<_, _>>()
            .expect("columns");
        let select: Vec<String> = cols.iter().map(|(c, _)| format!("typeof({0}), {0}", q(c))).collect();
        cols.retain(|(_, pk)| *pk > 0);
        cols.sort_by_key(|(_, pk)| *pk);
        let order: Vec<String> = cols.iter().map(|(c, _)| q(c)).collect();
        let sql = format!("SELECT {} FROM {} ORDER BY {}", select.join(", "), q(t), order.join(", "));
        let mut stmt = conn.prepare(&sql).expect("select");
        let n = stmt.column_count();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(r) = rows.next().expect("row") {
            let mut line = t.clone();
            for i in (0..n).step_by(2) {
                let ty: String = r.get(i).expect("typeof");
                let v = match r.get_ref(i + 1).expect("value") {
                    ValueRef::Null => "NULL".to_owned(),
                    ValueRef::Integer(x) => x.to_string(),
                    ValueRef::Real(x) => format!("{x:?} ({:#018x})", x.to_bits()),
                    ValueRef::Text(s) => format!("{:?}", String::from_utf8_lossy(s)),
                    ValueRef::Blob(b) => format!("x'{}'", hex::encode(b)),
                };
                line.push_str(&format!(" | {ty} {v}"));
            }
            out.push(line);
        }
    }
    out
}

fn integrity_ok(db: &Path) {
    let conn = Connection::open(db).expect("open");
    let r: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(r, "ok", "{}", db.display());
}

fn fresh_db(path: &Path) {
    let schema = std::fs::read_to_string(fixture("schema.sql")).expect("schema.sql");
    Connection::open(path).expect("create").execute_batch(&schema).expect("schema");
}

/// The fixture's old targets.
const TARGETS: [&str; 2] = ["target-v1.sqlite3", "target-v2.sqlite3"];

/// The fixture's `target` copied to `dir`, with round 2 applied by a fresh
/// home (the first open by the current code: where a migration happens).
fn migrated(dir: &Path, home: &Path, target: &str) -> PathBuf {
    let db = dir.join(format!("migrated-{target}"));
    std::fs::copy(fixture(target), &db).expect("copy fixture");
    apply(home, &db, &[fixture("round2")]);
    let conn = Connection::open(&db).expect("open");
    let version: i64 = conn
        .query_row("SELECT value FROM _ferry_meta WHERE key = 'ledger_version'", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, ferry::apply::ledger::LEDGER_VERSION, "{target} was migrated");
    db
}

fn totals(report: &Json) -> (u64, u64, u64, u64) {
    let t = &report["totals"];
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("totals.{k} in {report}"));
    (n("applied"), n("skipped"), n("parked"), n("conflicts"))
}

/// The fixture is what this file's header says (read straight from its v1
/// tables), so the comparisons below are about something.
fn assert_fixture_is_a_v1_ledger_with_parked_tombstoned_and_versioned_rows() {
    let conn = Connection::open(fixture("target-v1.sqlite3")).expect("open fixture");
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert_eq!(one("SELECT count(*) FROM _ferry_parked WHERE tbl = 'item' AND key = 50"), 1);
    assert_eq!(one("SELECT count(*) FROM _ferry_rows WHERE present = 0 AND del IS NOT NULL"), 3);
    // Columns whose version is not the insert's carry a 20-byte version
    // (items 1, 3 and 100, tag "red").
    assert_eq!(one("SELECT count(*) FROM _ferry_rows WHERE length(cols) > 20 AND present = 1"), 4);
    assert_eq!(one("SELECT count(*) FROM _ferry_conflicts"), 5);
    let applied: String = conn
        .query_row(
            "SELECT group_concat(r, ',') FROM (SELECT origin || ':' || first_seq || '-' || last_seq AS r \
             FROM _ferry_applied ORDER BY origin, first_seq)",
            [],
            |r| r.get(0),
        )
        .expect("applied");
    assert_eq!(applied, "1:1-15,2:1-9");
}

/// The v2 target holds the same history in the v2 layout: integer keys one
/// row each (items 1, 2, 3, 4, 50, 100, 200), the others in `_ferry_rows`.
fn assert_fixture_is_a_v2_ledger_of_the_same_history() {
    let conn = Connection::open(fixture("target-v2.sqlite3")).expect("open fixture");
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert_eq!(one("SELECT value FROM _ferry_meta WHERE key = 'ledger_version'"), 2);
    assert_eq!(one("SELECT count(*) FROM _ferry_row_tables WHERE tbl = 'item' AND id = 1"), 1);
    let keys: String = conn
        .query_row("SELECT group_concat(key) FROM (SELECT key FROM _ferry_rows_1 ORDER BY key)", [], |r| r.get(0))
        .expect("keys");
    assert_eq!(keys, "1,2,3,4,50,100,200");
    // Item 50 holds only a parked update; items 2 and 4 are tombstones.
    assert_eq!(one("SELECT flags FROM _ferry_rows_1 WHERE key = 50"), 2);
    assert_eq!(one("SELECT count(*) FROM _ferry_rows_1 WHERE flags & 9 = 8"), 2);
    assert_eq!(one("SELECT count(*) FROM _ferry_rows WHERE flags & 9 = 8"), 1, "visit k9/9");
    assert_eq!(one("SELECT count(*) FROM _ferry_conflicts"), 5);
}

#[test]
fn an_old_ledger_is_migrated_and_later_bundles_apply_as_if_it_had_always_been_current() {
    assert_fixture_is_a_v1_ledger_with_parked_tombstoned_and_versioned_rows();
    assert_fixture_is_a_v2_ledger_of_the_same_history();
    let dir = tempfile::tempdir().expect("tmp");
    let home = home_trusting_fixture(dir.path());
    let reference = dir.path().join("reference.sqlite3");
    fresh_db(&reference);
    apply(&home, &reference, &[fixture("round1")]);
    let round1 = conflicts(&home, &reference).as_array().map_or(0, Vec::len);
    apply(&home, &reference, &[fixture("round2")]);
    integrity_ok(&reference);
    let want = dump(&reference);

    for target in TARGETS {
        let migrated = migrated(dir.path(), &home, target);
        integrity_ok(&migrated);
        assert_eq!(dump(&migrated), want, "{target}");
        // Round 1's conflicts were recorded by the old code (the fixture holds 5).
        assert_eq!(conflicts_from(&home, &migrated, 5), conflicts_from(&home, &reference, round1), "{target}");
        assert_eq!(status(&home, &migrated, true), status(&home, &reference, true), "{target}");
        let s = command_json(&home, &["status"], &migrated);
        let outcomes: ferry::apply::status::Outcomes = serde_json::from_value(s["outcomes"].clone()).expect("outcomes");
        assert!(outcomes.adds_up(), "{target}: the estimated counts add up: {outcomes:?}");
    }

    // What the fixture means, pinned: the parked update came in (item 50),
    // late inserts older than their tombstones stayed deleted (item 4,
    // visit k9/9), and updates older than non-insert column versions lost.
    let row = |prefix: &str| want.iter().find(|l| l.starts_with(prefix)).cloned();
    assert_eq!(
        row("item | integer 50 ").as_deref(),
        Some("item | integer 50 | text \"parked by alpha\" | integer 50 | real 5.5 (0x4016000000000000) | null NULL")
    );
    assert_eq!(row("item | integer 4 "), None);
    assert_eq!(row("visit | text \"k9\" "), None);
    assert_eq!(
        row("item | integer 1 ").as_deref(),
        Some("item | integer 1 | text \"one\" | integer 10 | real 8.5 (0x4021000000000000) | blob x'000102'")
    );
    assert_eq!(
        row("item | integer 200 ").as_deref(),
        Some("item | integer 200 | text \"two hundred\" | integer 2 | real 0.1 (0x3fb999999999999a) | null NULL")
    );
    assert_eq!(
        row("tag | text \"red\" ").as_deref(),
        Some("tag | text \"red\" | text \"Scarlet\" | real 3.5 (0x400c000000000000)")
    );
    assert_eq!(
        row("item | integer 100 ").as_deref(),
        Some("item | integer 100 | text \"beta's hundred\" | integer 77 | real 2.5 (0x4004000000000000) | null NULL")
    );
    assert_eq!(want.len(), 10, "{want:#?}");
}

#[test]
fn reapplying_both_rounds_to_a_migrated_ledger_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = home_trusting_fixture(dir.path());
    for target in TARGETS {
        let migrated = migrated(dir.path(), &home, target);
        let (rows, confl, stat) = (dump(&migrated), conflicts(&home, &migrated), status(&home, &migrated, false));

        let report = apply(&home, &migrated, &[fixture("round1"), fixture("round2")]);
        // alpha 1-15 + beta 1-9, then alpha 16-24 + beta 10-17: all skipped.
        assert_eq!(totals(&report), (0, 15 + 9 + 9 + 8, 0, 0), "{target}: {report:#}");
        integrity_ok(&migrated);
        assert_eq!(dump(&migrated), rows, "{target}");
        assert_eq!(conflicts(&home, &migrated), confl, "{target}");
        let mut again = status(&home, &migrated, false);
        // The re-applied entries were received again, as duplicates.
        for origin in again["origins"].as_array_mut().expect("origins") {
            let skipped = origin["outcomes"]["skipped"].as_u64().expect("skipped");
            let received = origin["outcomes"]["received"].as_u64().expect("received");
            assert!(skipped > 0, "{target}: {origin}");
            origin["outcomes"]["skipped"] = 0.into();
            origin["outcomes"]["received"] = (received - skipped).into();
        }
        let total_skipped = again["outcomes"]["skipped"].as_u64().expect("skipped");
        again["outcomes"]["received"] =
            (again["outcomes"]["received"].as_u64().expect("received") - total_skipped).into();
        again["outcomes"]["skipped"] = 0.into();
        assert_eq!(again, stat, "{target}");
    }
}

/// `status` and `conflicts` are read-only: on an old database they read the
/// old layout and leave the file as it was (the next `bundle apply`
/// migrates it).
#[test]
fn status_and_conflicts_read_an_old_ledger_without_touching_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = home_trusting_fixture(dir.path());
    for target in TARGETS {
        let db = dir.path().join(target);
        std::fs::copy(fixture(target), &db).expect("copy fixture");
        let before = std::fs::read(&db).expect("read");
        let s = command_json(&home, &["status"], &db);
        assert_eq!(s["parked"], 1, "{target}: {s}");
        assert_eq!(
            s["tombstones_waiting"], 1,
            "{target}: visit k9/9 waits for its row; item 50 holds only a parked update: {s}"
        );
        assert_eq!(s["conflicts"], 5, "{target}: {s}");
        assert_eq!(conflicts(&home, &db).as_array().map(Vec::len), Some(5), "{target}");
        assert_eq!(std::fs::read(&db).expect("read"), before, "{target}: read-only");
    }
}
