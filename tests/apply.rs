//! Apply engine behaviour: exactly once, last-writer-wins, tombstones,
//! parking, conflicts, refusals, forks, gaps, no echoes, foreign keys.

mod apply_support;

use std::path::{Path, PathBuf};

use apply_support::*;
use ferry::apply::status::{read_conflicts, read_status};
use ferry::apply::{apply, ApplyOptions, ApplyReport};
use ferry::keys::TrustStore;
use ferry::progress::Silent;
use ferry::value::Value;

fn run(db: &Path, files: &[PathBuf], trust: &TrustStore) -> ApplyReport {
    apply(db, files, trust, &ApplyOptions::default(), &mut Silent).expect("apply")
}

fn conn(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).expect("open")
}

#[test]
fn applies_once_and_reapplying_any_bundle_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(10, 1, &[("a", text("x")), ("b", Value::Integer(1))]);
    a.insert(11, 2, &[("a", text("y"))]);
    a.update(12, 1, &[("a", text("x2"))]);
    a.delete(13, 2);
    let b1 = a.bundle(dir.path(), &[(1, 2)], None);
    let b2 = a.bundle(dir.path(), &[(3, 4)], None);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let trust = trust(&[&a]);
    let r = run(&db, &[b1.clone(), b2.clone()], &trust);
    assert_eq!((r.totals.applied, r.totals.skipped, r.refused), (4, 0, 0));
    let once = dump(&db);
    assert_eq!(once, "table t\n[1,\"x2\",1]\n");
    let r = run(&db, &[b2, b1.clone(), b1], &trust);
    assert_eq!((r.totals.applied, r.totals.skipped), (0, 6), "every entry is counted as already applied");
    assert_eq!(dump(&db), once);
}

#[test]
fn later_write_wins_per_field_in_any_order_and_the_loser_is_recorded() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 1, &[("a", text("a0")), ("b", Value::Integer(0))]);
    a.update(30, 1, &[("a", text("a-late"))]);
    b.update(20, 1, &[("a", text("b-mid")), ("b", Value::Integer(5))]);
    let ba = a.bundle(dir.path(), &[(1, 2)], None);
    let bb = b.bundle(dir.path(), &[(1, 1)], None);
    let trust = trust(&[&a, &b]);
    let db1 = target(dir.path(), "1.sqlite3", SIMPLE);
    let db2 = target(dir.path(), "2.sqlite3", SIMPLE);
    run(&db1, &[ba.clone(), bb.clone()], &trust);
    run(&db2, &[bb], &trust);
    run(&db2, &[ba], &trust);
    assert_eq!(dump(&db1), "table t\n[1,\"a-late\",5]\n", "a from the later write, b from b's update");
    assert_eq!(dump(&db1), dump(&db2));
    let c = read_conflicts(&conn(&db1)).expect("conflicts");
    assert!(
        c.iter().any(|c| c.kind == "overwritten"
            && c.column.as_deref() == Some("a")
            && c.loser_origin.as_deref() == Some(b.id().as_str())
            && c.loser_value.as_deref() == Some("{\"a\":\"b-mid\"}")),
        "{c:?}"
    );
}

#[test]
fn update_before_its_row_is_parked_then_applied_when_the_row_arrives() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 1, &[("a", text("new"))]);
    b.update(20, 1, &[("b", Value::Integer(9))]);
    let trust = trust(&[&a, &b]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let r = run(&db, &[b.bundle(dir.path(), &[(1, 1)], None)], &trust);
    assert_eq!(r.totals.parked, 1);
    assert_eq!(dump(&db), "table t\n");
    assert_eq!(read_status(&conn(&db), "db").expect("status").parked, 1);
    run(&db, &[a.bundle(dir.path(), &[(1, 1)], None)], &trust);
    assert_eq!(dump(&db), "table t\n[1,\"new\",9]\n");
    assert_eq!(read_status(&conn(&db), "db").expect("status").parked, 0, "the parked update was used up");
}

#[test]
fn deletes_are_tombstones_an_older_insert_stays_deleted_a_newer_one_recreates() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 1, &[("a", text("old"))]);
    b.delete(20, 1);
    a.insert(30, 2, &[("a", text("two"))]);
    b.delete(25, 2); // older than the insert of row 2: the insert wins
    let trust = trust(&[&a, &b]);
    let ba = a.bundle(dir.path(), &[(1, 2)], None);
    let bb = b.bundle(dir.path(), &[(1, 2)], None);
    let db1 = target(dir.path(), "1.sqlite3", SIMPLE);
    let db2 = target(dir.path(), "2.sqlite3", SIMPLE);
    run(&db1, std::slice::from_ref(&bb), &trust); // deletes first: tombstones for rows not yet seen
    assert_eq!(read_status(&conn(&db1), "db").expect("status").tombstones_waiting, 2);
    run(&db1, std::slice::from_ref(&ba), &trust);
    run(&db2, &[ba, bb], &trust);
    assert_eq!(dump(&db1), "table t\n[2,\"two\",7]\n");
    assert_eq!(dump(&db1), dump(&db2));
}

#[test]
fn a_delete_older_than_a_reinsert_resets_only_the_values_written_before_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 1, &[("a", text("first"))]);
    a.update(15, 1, &[("b", Value::Integer(1))]);
    b.delete(20, 1);
    a.insert(30, 1, &[("a", text("again"))]);
    let trust = trust(&[&a, &b]);
    let ba = a.bundle(dir.path(), &[(1, 3)], None);
    let bb = b.bundle(dir.path(), &[(1, 1)], None);
    let db1 = target(dir.path(), "1.sqlite3", SIMPLE);
    let db2 = target(dir.path(), "2.sqlite3", SIMPLE);
    run(&db1, &[ba.clone(), bb.clone()], &trust);
    run(&db2, &[bb, ba], &trust);
    assert_eq!(dump(&db1), "table t\n[1,\"again\",7]\n", "b went back to its default 7");
    assert_eq!(dump(&db1), dump(&db2));
}

#[test]
fn an_update_after_another_origins_delete_waits_with_its_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 1, &[("a", text("x"))]);
    b.delete(20, 1);
    a.update(30, 1, &[("a", text("edited after delete"))]);
    let trust = trust(&[&a, &b]);
    let ba = a.bundle(dir.path(), &[(1, 2)], None);
    let bb = b.bundle(dir.path(), &[(1, 1)], None);
    for order in [[ba.clone(), bb.clone()], [bb.clone(), ba.clone()]] {
        let db = target(dir.path(), "o.sqlite3", SIMPLE);
        run(&db, &order, &trust);
        assert_eq!(dump(&db), "table t\n", "the delete wins over a later update");
        let c = read_conflicts(&conn(&db)).expect("conflicts");
        assert!(!c.iter().any(|c| c.loser_seq == Some(2)), "the update is not lost, it waits: {c:?}");
        assert_eq!(read_status(&conn(&db), "db").expect("status").parked, 1);
        let reason: String = conn(&db).query_row("SELECT reason FROM _ferry_parked", [], |r| r.get(0)).expect("reason");
        assert!(
            reason.contains("deleted by b (entry 1)"),
            "the reason names who deleted the row, by its trusted name: {reason}"
        );
        std::fs::remove_file(&db).expect("rm");
    }
}

#[test]
fn an_insert_of_a_key_another_origin_inserted_is_a_row_exists_conflict() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 57, &[("a", text("from a")), ("b", Value::Integer(1))]);
    b.insert(20, 57, &[("a", text("from b")), ("b", Value::Integer(2))]);
    let trust = trust(&[&a, &b]);
    let ba = a.bundle(dir.path(), &[(1, 1)], None);
    let bb = b.bundle(dir.path(), &[(1, 1)], None);
    let db1 = target(dir.path(), "1.sqlite3", SIMPLE);
    let db2 = target(dir.path(), "2.sqlite3", SIMPLE);
    run(&db1, &[ba.clone(), bb.clone()], &trust);
    run(&db2, &[bb, ba], &trust);
    assert_eq!(dump(&db1), dump(&db2));
    assert_eq!(dump(&db1), "table t\n[57,\"from b\",2]\n", "the later insert's row, whole");
    for db in [&db1, &db2] {
        let c = read_conflicts(&conn(db)).expect("conflicts");
        let rx: Vec<_> = c.iter().filter(|c| c.kind == "row_exists").collect();
        assert_eq!(rx.len(), 1, "{c:?}");
        assert!(rx[0].loser_value.is_some(), "the other insert's values are kept in the record");
    }
}

#[test]
fn an_insert_of_a_key_already_in_the_target_outside_ferry_is_a_conflict() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(10, 1, &[("a", text("remote"))]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    conn(&db).execute_batch("INSERT INTO t VALUES (1, 'local', 3)").expect("local row");
    run(&db, &[a.bundle(dir.path(), &[(1, 1)], None)], &trust(&[&a]));
    let c = read_conflicts(&conn(&db)).expect("conflicts");
    assert_eq!(c.iter().filter(|c| c.kind == "row_exists").count(), 1);
}

#[test]
fn an_entry_naming_an_unknown_table_or_column_is_quarantined_naming_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 1, &[("a", text("fine"))]);
    b.insert(10, 2, &[("a", text("ok"))]);
    b.insert(11, 3, &[("nope", text("bad"))]);
    b.push(12, ferry::journal::Op::Insert, "gone", id_row(4), Some(row(&[("a", text("x"))])));
    let trust = trust(&[&a, &b]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let r = run(&db, &[b.bundle(dir.path(), &[(1, 3)], None), a.bundle(dir.path(), &[(1, 1)], None)], &trust);
    assert_eq!((r.refused, r.totals.quarantined, r.totals.applied), (0, 2, 2), "{r:?}");
    assert!(!r.negative());
    let reasons: Vec<String> = conn(&db)
        .prepare("SELECT reason FROM _ferry_quarantine ORDER BY seq")
        .expect("q")
        .query_map([], |r| r.get(0))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("q");
    assert!(reasons[0].contains("\"t\" here has no column nope"), "{reasons:?}");
    assert!(reasons[1].contains("no table \"gone\""), "{reasons:?}");
    assert_eq!(dump(&db), "table t\n[1,\"fine\",7]\n[2,\"ok\",7]\n", "everything that fits applied");
}

#[test]
fn a_tampered_bundle_is_refused_and_the_others_still_apply() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 1, &[("a", text("fine"))]);
    for i in 0..50 {
        b.insert(10 + i, 100 + i, &[("a", text("payload"))]);
    }
    let trust = trust(&[&a, &b]);
    let bad = b.bundle(dir.path(), &[(1, 50)], None);
    let mut bytes = std::fs::read(&bad).expect("read");
    let n = bytes.len();
    bytes[n - 1024 - 20] ^= 0x40; // inside the compressed segment, before the end blocks
    std::fs::write(&bad, bytes).expect("write");
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let r = run(&db, &[bad, a.bundle(dir.path(), &[(1, 1)], None)], &trust);
    assert_eq!(r.refused, 1, "{r:?}");
    assert_eq!(dump(&db), "table t\n[1,\"fine\",7]\n");
}

#[test]
fn an_untrusted_origin_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(10, 1, &[("a", text("x"))]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let r = run(&db, &[a.bundle(dir.path(), &[(1, 1)], None)], &TrustStore::default());
    assert_eq!(r.refused, 1);
    assert_eq!(dump(&db), "table t\n");
}

/// Another schema version no longer refuses a bundle: what fits applies,
/// entries naming columns the target lacks are quarantined, naming them,
/// and go in once the target is migrated and they are retried.
#[test]
fn a_different_schema_quarantines_only_the_entries_that_do_not_fit() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 1, &[("a", text("x")), ("phone", text("0712"))]);
    a.insert(11, 2, &[("a", text("y"))]);
    b.insert(12, 3, &[("a", text("other origin"))]);
    let trust = trust(&[&a, &b]);
    let (ba, bb) = (a.bundle(dir.path(), &[(1, 2)], Some("0000")), b.bundle(dir.path(), &[(1, 1)], None));
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let r = run(&db, &[ba, bb], &trust);
    assert_eq!((r.refused, r.totals.applied, r.totals.quarantined), (0, 2, 1), "{r:?}");
    assert_eq!(dump(&db), "table t\n[2,\"y\",7]\n[3,\"other origin\",7]\n");
    let reason: String = conn(&db).query_row("SELECT reason FROM _ferry_quarantine", [], |r| r.get(0)).expect("q");
    assert!(reason.contains("no column phone") && reason.contains("--retry-quarantined"), "{reason}");
    conn(&db).execute_batch("ALTER TABLE t ADD COLUMN phone TEXT").expect("migrate");
    let opts = ApplyOptions { retry_quarantined: true, ..ApplyOptions::default() };
    let r = apply(&db, &[], &trust, &opts, &mut Silent).expect("retry");
    assert_eq!((r.retried.received, r.retried.applied), (1, 1), "{r:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM _ferry_quarantine"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM t WHERE phone = '0712'"), 1);
    let s = read_status(&conn(&db), "db").expect("status");
    assert!(s.outcomes.adds_up());
    assert_eq!(s.outcomes.quarantined, 0);
}

#[test]
fn a_matching_schema_fingerprint_applies() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(10, 1, &[("a", text("x"))]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let fp = ferry::schema::fingerprint(&conn(&db)).expect("fp");
    let r = run(&db, &[a.bundle(dir.path(), &[(1, 1)], Some(&fp))], &trust(&[&a]));
    assert_eq!(r.refused, 0);
}

#[test]
fn gaps_per_origin_are_visible_in_status() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    for i in 1..=9 {
        a.insert(i, i, &[("a", text("x"))]);
    }
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    run(&db, &[a.bundle(dir.path(), &[(1, 3), (4, 4)], None), a.bundle(dir.path(), &[(7, 9)], None)], &trust(&[&a]));
    let s = read_status(&conn(&db), "db").expect("status");
    assert_eq!(s.origins.len(), 1);
    assert_eq!(s.origins[0].applied, vec![(1, 4), (7, 9)]);
    assert_eq!(s.origins[0].missing, vec![(5, 6)]);
    assert_eq!(s.origins[0].entries_applied, 7);
    assert_eq!(s.origins[0].last_entry, Some(ferry::journal::Timestamp(9)));
}

#[test]
fn a_forked_journal_is_reported_and_the_newcomer_not_applied() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(10, 1, &[("a", text("original"))]);
    a.insert(11, 2, &[("a", text("original"))]);
    let first = a.bundle(dir.path(), &[(1, 2)], None);
    // A clone with the same key writes a different seq 2 and a seq 3.
    a.lines.truncate(1);
    a.insert(12, 2, &[("a", text("clone"))]);
    a.insert(13, 3, &[("a", text("clone"))]);
    let clone = a.bundle(dir.path(), &[(2, 3)], None);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let trust = trust(&[&a]);
    run(&db, &[first], &trust);
    let r = run(&db, &[clone], &trust);
    assert_eq!(r.forks, 1);
    assert!(r.negative());
    assert_eq!(dump(&db), "table t\n[1,\"original\",7]\n[2,\"original\",7]\n", "nothing of the clone applied");
    let s = read_status(&conn(&db), "db").expect("status");
    assert_eq!(s.forks, 1);
    assert_eq!(s.origins[0].forks, 1);
}

#[test]
fn a_fork_inside_an_applied_range_is_caught_at_a_chain_checkpoint() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    for i in 1..=600 {
        a.insert(i, i, &[("a", text("original"))]);
    }
    let first = a.bundle(dir.path(), &[(1, 600)], None);
    // The clone rewrote seqs 250..=270: a range strictly inside what was
    // applied, caught because the hash of every applied entry is kept.
    a.lines.truncate(249);
    for i in 250..=270 {
        a.insert(i, i, &[("a", text("clone"))]);
    }
    let clone = a.bundle(dir.path(), &[(250, 270)], None);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let trust = trust(&[&a]);
    run(&db, &[first], &trust);
    let before = dump(&db);
    let r = run(&db, &[clone], &trust);
    assert_eq!(r.forks, 1, "{r:?}");
    assert_eq!(dump(&db), before);
}

#[test]
fn applied_changes_are_not_captured_again_but_local_edits_are() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(10, 1, &[("a", text("remote"))]);
    let db = target(
        dir.path(),
        "db.sqlite3",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER DEFAULT 7);
         CREATE TABLE _ferry_control (id INTEGER PRIMARY KEY, applying INTEGER NOT NULL);
         INSERT INTO _ferry_control VALUES (1, 0);
         CREATE TABLE _ferry_journal (seq INTEGER PRIMARY KEY, what TEXT);
         CREATE TRIGGER cap AFTER INSERT ON t WHEN (SELECT applying FROM _ferry_control) = 0
         BEGIN INSERT INTO _ferry_journal (what) VALUES ('insert ' || NEW.id); END;",
    );
    run(&db, &[a.bundle(dir.path(), &[(1, 1)], None)], &trust(&[&a]));
    assert_eq!(count(&db, "SELECT count(*) FROM t"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM _ferry_journal"), 0, "the apply made no journal entry");
    assert_eq!(count(&db, "SELECT applying FROM _ferry_control"), 0, "suppression is off again after apply");
    conn(&db).execute_batch("INSERT INTO t (id, a) VALUES (2, 'local')").expect("local edit");
    assert_eq!(count(&db, "SELECT count(*) FROM _ferry_journal"), 1, "a local edit afterwards is captured");
}

const FK: &str = "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id), v TEXT);";

#[test]
fn children_before_parents_in_one_apply_are_fine_orphans_are_held() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.push(1, ferry::journal::Op::Insert, "child", id_row(1), Some(row(&[("parent_id", Value::Integer(1))])));
    a.push(2, ferry::journal::Op::Insert, "parent", id_row(1), Some(row(&[("name", text("p"))])));
    a.push(3, ferry::journal::Op::Insert, "child", id_row(2), Some(row(&[("parent_id", Value::Integer(99))])));
    let child_first = a.bundle(dir.path(), &[(1, 1)], None);
    let parent = a.bundle(dir.path(), &[(2, 2)], None);
    let orphan = a.bundle(dir.path(), &[(3, 3)], None);
    let db = target(dir.path(), "db.sqlite3", FK);
    let r = run(&db, &[child_first, parent, orphan], &trust(&[&a]));
    assert_eq!(r.events.held, 1, "{r:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM child"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM _ferry_held WHERE kind = 'foreign_key'"), 1);
    let c = conn(&db);
    let broken: i64 = c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).expect("fk");
    assert_eq!(broken, 0);
}

#[test]
fn an_entry_the_database_refuses_is_quarantined_not_dropped() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(1, 1, &[("a", Value::Null)]);
    a.insert(2, 2, &[("a", text("fine"))]);
    let db = target(dir.path(), "db.sqlite3", "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL);");
    let r = run(&db, &[a.bundle(dir.path(), &[(1, 2)], None)], &trust(&[&a]));
    assert_eq!(r.totals.quarantined, 1);
    assert_eq!(dump(&db), "table t\n[2,\"fine\"]\n");
    let (seq, reason): (i64, String) = conn(&db)
        .query_row("SELECT seq, reason FROM _ferry_held WHERE kind = 'constraint'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("held");
    assert_eq!(seq, 1);
    assert!(reason.contains("NOT NULL"), "{reason}");
    // Re-applying does not hold it twice.
    run(&db, &[a.bundle(dir.path(), &[(1, 2)], None)], &trust(&[&a]));
    assert_eq!(count(&db, "SELECT count(*) FROM _ferry_held"), 1);
}

#[test]
fn values_are_bound_and_hostile_names_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(1, 1, &[("a", text("'); DROP TABLE t; --"))]);
    a.push(2, ferry::journal::Op::Insert, "t\"; DROP TABLE t; --", id_row(2), Some(row(&[("a", text("x"))])));
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let trust = trust(&[&a]);
    run(&db, &[a.bundle(dir.path(), &[(1, 1)], None)], &trust);
    assert_eq!(dump(&db), "table t\n[1,\"'); DROP TABLE t; --\",7]\n");
    let r = run(&db, &[a.bundle(dir.path(), &[(2, 2)], None)], &trust);
    assert_eq!(r.totals.quarantined, 1, "a table the target does not have: quarantined, never spliced");
    assert_eq!(count(&db, "SELECT count(*) FROM t"), 1);
}

#[test]
fn ledger_tables_do_not_change_the_schema_fingerprint() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(1, 1, &[("a", text("x"))]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let before = ferry::schema::fingerprint(&conn(&db)).expect("fp");
    run(&db, &[a.bundle(dir.path(), &[(1, 1)], None)], &trust(&[&a]));
    assert_eq!(ferry::schema::fingerprint(&conn(&db)).expect("fp"), before);
}

#[test]
fn rows_that_broke_a_foreign_key_before_the_apply_are_left_alone() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.push(1, ferry::journal::Op::Insert, "parent", id_row(1), Some(row(&[("name", text("p"))])));
    let db = target(dir.path(), "db.sqlite3", FK);
    conn(&db)
        .execute_batch("PRAGMA foreign_keys = OFF; INSERT INTO child VALUES (5, 42, 'the app''s own orphan')")
        .expect("orphan");
    let r = run(&db, &[a.bundle(dir.path(), &[(1, 1)], None)], &trust(&[&a]));
    assert_eq!(r.events.held, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM child"), 1, "ferry does not remove the app's rows");
    assert_eq!(count(&db, "SELECT count(*) FROM parent"), 1);
}

#[test]
fn a_dropped_column_loses_its_versions_and_later_deletes_still_apply() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(8, 1, &[("a", text("x")), ("b", Value::Integer(1))]);
    a.update(10, 1, &[("a", text("newer than the delete"))]);
    b.delete(9, 1);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let trust = trust(&[&a, &b]);
    run(&db, &[a.bundle(dir.path(), &[(1, 2)], None)], &trust);
    conn(&db).execute_batch("ALTER TABLE t DROP COLUMN a").expect("migration drops a");
    // The delete is older than a's update of `a`, which would survive it as
    // a parked write, but the column is gone: the delete must not try to
    // read it back.
    let r = run(&db, &[b.bundle(dir.path(), &[(1, 1)], None)], &trust);
    assert_eq!((r.totals.applied, r.refused), (1, 0));
    assert_eq!(dump(&db), "table t\n");
}

#[test]
fn a_key_holding_only_a_parked_update_is_not_a_waiting_tombstone() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.update(10, 1, &[("a", text("early"))]);
    a.delete(11, 2);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    run(&db, &[a.bundle(dir.path(), &[(1, 2)], None)], &trust(&[&a]));
    let s = read_status(&conn(&db), "db").expect("status");
    assert_eq!((s.parked, s.tombstones_waiting), (1, 1), "key 1 is parked, key 2 a tombstone waiting for its row");
}

#[test]
fn one_text_key_written_as_integer_and_as_text_does_not_stop_later_runs() {
    use ferry::journal::{Op, Row};
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    let k = |v: Value| Row(vec![("k".into(), v)]);
    // Key 5 (an integer) and key "5" are one row of a TEXT key column, but
    // two keys to the ledger.
    a.push(10, Op::Insert, "tt", k(Value::Integer(5)), Some(row(&[("a", text("x"))])));
    a.push(13, Op::Update, "tt", k(Value::Integer(5)), Some(row(&[("a", text("y"))])));
    b.push(11, Op::Delete, "tt", k(text("5")), None);
    b.push(12, Op::Delete, "tt", k(Value::Integer(5)), None);
    let db = target(dir.path(), "db.sqlite3", "CREATE TABLE tt (k TEXT PRIMARY KEY, a TEXT);");
    let trust = trust(&[&a, &b]);
    let files = [a.bundle(dir.path(), &[(1, 2)], None), b.bundle(dir.path(), &[(1, 2)], None)];
    let r = apply(&db, &files, &trust, &ApplyOptions::default(), &mut Silent).expect("the run completes");
    assert_eq!((r.totals.applied, r.refused), (4, 0));
    let again = apply(&db, &files, &trust, &ApplyOptions::default(), &mut Silent).expect("and so does the next");
    assert_eq!(again.totals.skipped, 4);
    // As one key: inserted at 10, deleted at 11 and 12; the update at 13 is
    // newer than the delete and waits for the row to come back.
    assert_eq!(dump(&db), "table tt\n");
    let s = read_status(&conn(&db), "db").expect("status");
    assert_eq!(s.parked, 1);
}

/// The row ledger keeps groups of neighbouring keys in memory during a run:
/// what a refused bundle recorded there must go with its rollback (key 2
/// shares a group with key 1, which stays).
#[test]
fn a_refused_bundle_leaves_no_trace_in_the_row_ledger() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    let mut c = Origin::new(dir.path(), "c");
    a.insert(10, 1, &[("a", text("fine"))]);
    b.insert(10, 2, &[("a", text("refused"))]);
    // The target's own trigger fails on this row: the bundle is refused after its first entry was written.
    b.insert(11, 3, &[("a", text("boom"))]);
    c.insert(5, 2, &[("a", text("late"))]);
    c.update(5, 1, &[("a", text("older"))]);
    let trust = trust(&[&a, &b, &c]);
    let db = target(
        dir.path(),
        "db.sqlite3",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER DEFAULT 7);
         CREATE TABLE log (x);
         CREATE TRIGGER audit AFTER INSERT ON t WHEN NEW.a = 'boom' BEGIN INSERT INTO log SELECT json_extract(NEW.a, '$'); END;",
    );
    let r = run(&db, &[a.bundle(dir.path(), &[(1, 1)], None), b.bundle(dir.path(), &[(1, 2)], None)], &trust);
    assert_eq!(r.refused, 1);
    let r = run(&db, &[c.bundle(dir.path(), &[(1, 2)], None)], &trust);
    assert_eq!(r.refused, 0);
    assert_eq!(dump(&db), "table log\ntable t\n[1,\"fine\",7]\n[2,\"late\",7]\n", "c's insert of 2 is not lost");
    let conflicts = read_conflicts(&conn(&db)).expect("conflicts");
    assert_eq!(conflicts.len(), 1, "only c's older update of 1 loses: {conflicts:?}");
}

/// A row held for its foreign key after the last bundle is held in the
/// ledger once the run commits (the ledger's groups are written back after
/// that last step), so a later insert of its key merges into it and lets it
/// stand.
#[test]
fn a_row_held_for_its_foreign_key_is_held_in_the_ledger_afterwards() {
    let fk = "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
              CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));";
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.push(1, ferry::journal::Op::Insert, "parent", id_row(1), Some(row(&[("name", text("p"))])));
    a.push(3, ferry::journal::Op::Insert, "child", id_row(2), Some(row(&[("parent_id", Value::Integer(99))])));
    b.push(10, ferry::journal::Op::Insert, "child", id_row(2), Some(row(&[("parent_id", Value::Integer(1))])));
    let trust = trust(&[&a, &b]);
    let db = target(dir.path(), "db.sqlite3", fk);
    let r = run(&db, &[a.bundle(dir.path(), &[(1, 2)], None)], &trust);
    assert_eq!(r.events.held, 1);
    let r = run(&db, &[b.bundle(dir.path(), &[(1, 1)], None)], &trust);
    assert_eq!(r.events.released, 1, "{r:?}");
    assert_eq!(dump(&db), "table child\n[2,1]\ntable parent\n[1,\"p\"]\n");
    let conflicts = read_conflicts(&conn(&db)).expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].kind, "row_exists");
    assert_eq!(conflicts[0].loser_value.as_deref(), Some("{\"parent_id\":99}"), "a's value is the lost one");
}

/// A fork found in a bundle's later segment rolls back that segment only;
/// what the bundle's earlier segments recorded in the row ledger (still in
/// memory when the segment's savepoint opens) stays.
#[test]
fn a_fork_in_a_later_segment_keeps_what_the_earlier_segments_recorded() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut x = Origin::new(dir.path(), "a");
    for i in 1..=6 {
        x.insert(100 + i, i, &[("a", text("x"))]);
    }
    // A clone of the same node: the same seqs 1 and 2, a different 3 and 4.
    let mut y = Origin::with_node(x.node.clone());
    y.lines = x.lines[..2].to_vec();
    y.insert(200, 3, &[("a", text("clone"))]);
    y.insert(201, 4, &[("a", text("clone"))]);
    let mut c = Origin::new(dir.path(), "c");
    c.update(50, 1, &[("a", text("older than the insert"))]);
    let trust = trust(&[&x, &c]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    // Seqs 5-6 first: the target then knows the chain at 4 (and 6).
    run(&db, &[x.bundle(dir.path(), &[(5, 6)], None)], &trust);
    // Segment 1-2 applies; segment 3-4 forks at 4 and is rolled back.
    let r = run(&db, &[y.bundle(dir.path(), &[(1, 2), (3, 4)], None)], &trust);
    assert_eq!(r.forks, 1, "{r:?}");
    let r = run(&db, &[c.bundle(dir.path(), &[(1, 1)], None)], &trust);
    assert_eq!(r.totals.conflicts, 1, "c's update is older than a's insert of key 1: {r:?}");
    assert_eq!(dump(&db), "table t\n[1,\"x\",7]\n[2,\"x\",7]\n[5,\"x\",7]\n[6,\"x\",7]\n", "key 1 keeps a's value");
}
