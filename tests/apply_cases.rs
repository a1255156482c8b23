//! One test per way `bundle apply` used to lose a write or misreport it
//! (the cases listed in the issue "Apply never loses a write silently"),
//! each checking the behaviour that replaced it.

mod apply_support;
mod common;

use std::path::{Path, PathBuf};

use apply_support::*;
use ferry::apply::status::{read_conflicts, read_status};
use ferry::apply::{apply, ApplyOptions, ApplyReport};
use ferry::bundle::create::CreateOptions;
use ferry::capture::{self, TrackOptions};
use ferry::journal::{Op, Row, Timestamp};
use ferry::keys::{Role, TrustStore};
use ferry::node::Node;
use ferry::progress::Silent;
use ferry::value::Value;
use rusqlite::Connection;

fn run(db: &Path, files: &[PathBuf], trust: &TrustStore) -> ApplyReport {
    apply(db, files, trust, &ApplyOptions::default(), &mut Silent).expect("apply")
}

fn conn(db: &Path) -> Connection {
    Connection::open(db).expect("open")
}

fn one<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> T {
    conn(db).query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// A field laptop with a tracked app database, as in the field.
struct Laptop {
    node: Node,
    db: PathBuf,
    out: PathBuf,
}

impl Laptop {
    fn new(dir: &Path, name: &str, block: u32, schema: &str) -> Laptop {
        let node = Node::init(&dir.join(format!("{name}-home")), name, Some(block)).expect("node");
        let db = dir.join(format!("{name}.sqlite3"));
        conn(&db).execute_batch(schema).expect("schema");
        capture::track(&node, &db, &TrackOptions::default()).expect("track");
        Laptop { node, out: dir.join(format!("{name}-out")), db }
    }
    fn sql(&self, sql: &str) {
        let c = conn(&self.db);
        c.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
        c.execute_batch(sql).expect(sql);
    }
    fn bundle(&self) -> PathBuf {
        let opts = CreateOptions { out_dir: self.out.clone(), since: None };
        let r = capture::create_from_db(&self.node, &self.db, &opts, &mut Silent).expect("bundle create");
        r.file.expect("something to bundle")
    }
}

fn trusting(nodes: &[&Node]) -> TrustStore {
    let mut t = TrustStore::default();
    for n in nodes {
        t.add(&n.info.name, &n.signing_key().verifying_key(), &[Role::Origin, Role::Relay]).expect("trust");
    }
    t
}

const ITEMS: &str = "CREATE TABLE item (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
CREATE TABLE tag (code TEXT PRIMARY KEY, label TEXT);";

#[test]
fn a_key_change_follows_the_row_and_later_updates_to_the_new_key_apply() {
    let dir = tempfile::tempdir().expect("tmp");
    let l = Laptop::new(dir.path(), "field-1", 1, ITEMS);
    l.sql("INSERT INTO item (name) VALUES ('spade'); INSERT INTO tag VALUES ('red', 'Red');");
    let first = l.bundle();
    let id: i64 = one(&l.db, "SELECT id FROM item");
    l.sql(&format!(
        "UPDATE item SET id = {} WHERE id = {id}; UPDATE tag SET code = 'crimson' WHERE code = 'red';",
        id + 100
    ));
    l.sql(&format!(
        "UPDATE item SET name = 'fork' WHERE id = {}; UPDATE tag SET label = 'Crimson' WHERE code = 'crimson';",
        id + 100
    ));
    let second = l.bundle();
    let trust = trusting(&[&l.node]);
    for order in [[first.clone(), second.clone()], [second.clone(), first.clone()]] {
        let central = target(dir.path(), "central.sqlite3", ITEMS);
        let r = run(&central, &order, &trust);
        assert_eq!(r.refused, 0, "{r:?}");
        assert_eq!(dump(&central), dump(&l.db), "central holds the laptop's rows under their new keys");
        assert_eq!(read_status(&conn(&central), "c").expect("status").parked, 0, "nothing waits for the old key");
        std::fs::remove_file(&central).expect("rm");
    }
}

#[test]
fn a_key_change_in_the_older_journal_form_moves_the_row() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(10, 1, &[("a", text("x")), ("b", Value::Integer(5))]);
    // The form older capture wrote: one update keyed by the old key, the new key in its fields.
    a.update(20, 1, &[("id", Value::Integer(2)), ("a", text("y"))]);
    a.update(30, 2, &[("b", Value::Integer(6))]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let r = run(&db, &[a.bundle(dir.path(), &[(1, 3)], None)], &trust(&[&a]));
    assert_eq!((r.totals.applied, r.totals.parked), (3, 0), "{r:?}");
    assert_eq!(dump(&db), "table t\n[2,\"y\",6]\n");
}

const UNIQUE: &str = "CREATE TABLE person (id INTEGER PRIMARY KEY, code TEXT UNIQUE, name TEXT);";

#[test]
fn a_unique_clash_holds_the_later_row_and_keeps_its_later_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.push(10, Op::Insert, "person", id_row(1), Some(row(&[("code", text("P-7")), ("name", text("Amina"))])));
    b.push(20, Op::Insert, "person", id_row(2), Some(row(&[("code", text("P-7")), ("name", text("Joseph"))])));
    b.push(30, Op::Update, "person", id_row(2), Some(row(&[("name", text("Joseph K."))])));
    a.push(40, Op::Update, "person", id_row(1), Some(row(&[("code", text("P-8"))])));
    let trust = trust(&[&a, &b]);
    let (a1, a2) = (a.bundle(dir.path(), &[(1, 1)], None), a.bundle(dir.path(), &[(2, 2)], None));
    let b1 = b.bundle(dir.path(), &[(1, 2)], None);
    for order in [vec![a1.clone(), b1.clone()], vec![b1.clone(), a1.clone()]] {
        let db = target(dir.path(), "db.sqlite3", UNIQUE);
        let r = run(&db, &order, &trust);
        assert_eq!(r.refused, 0);
        // Amina had P-7 first: her row stands; Joseph's is held, with his later edit in it.
        assert_eq!(dump(&db), "table person\n[1,\"P-7\",\"Amina\"]\n", "{order:?}");
        let (reason, held): (String, String) = conn(&db)
            .query_row("SELECT reason, row FROM _ferry_held WHERE tbl = 'person'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("held");
        assert!(reason.contains("P-7") && reason.contains("[1]"), "names the value and the row that has it: {reason}");
        assert!(held.contains("Joseph K."), "the later update is kept in the held row: {held}");
        let s = read_status(&conn(&db), "db").expect("status");
        assert_eq!(s.held, 1);
        assert!(s.outcomes.adds_up(), "{:?}", s.outcomes);
        // Amina's code changes: P-7 is free, and Joseph's row goes in by itself.
        let r = run(&db, std::slice::from_ref(&a2), &trust);
        assert_eq!(r.events.released, 1, "{r:?}");
        assert_eq!(dump(&db), "table person\n[1,\"P-8\",\"Amina\"]\n[2,\"P-7\",\"Joseph K.\"]\n");
        std::fs::remove_file(&db).expect("rm");
    }
}

#[test]
fn two_inserts_of_one_key_record_the_value_that_lost() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 57, &[("a", text("from a"))]);
    b.insert(20, 57, &[("a", text("from b"))]);
    let trust = trust(&[&a, &b]);
    let (ba, bb) = (a.bundle(dir.path(), &[(1, 1)], None), b.bundle(dir.path(), &[(1, 1)], None));
    for order in [[ba.clone(), bb.clone()], [bb.clone(), ba.clone()]] {
        let db = target(dir.path(), "db.sqlite3", SIMPLE);
        run(&db, &order, &trust);
        assert_eq!(dump(&db), "table t\n[57,\"from b\",7]\n");
        let c = read_conflicts(&conn(&db)).expect("conflicts");
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].kind, "row_exists");
        assert_eq!(c[0].loser_origin.as_deref(), Some(a.id().as_str()), "the older insert lost");
        assert_eq!(c[0].loser_value.as_deref(), Some("{\"a\":\"from a\"}"), "and its value is kept");
        assert_eq!(c[0].winner_origin.as_deref(), Some(b.id().as_str()));
        std::fs::remove_file(&db).expect("rm");
    }
}

#[test]
fn a_server_never_numbers_its_own_rows_inside_another_nodes_block() {
    let dir = tempfile::tempdir().expect("tmp");
    // A laptop in block 5 and a community server in block 2: the wrong way round.
    let laptop = Laptop::new(dir.path(), "field-5", 5, ITEMS);
    laptop.sql("INSERT INTO item (name) VALUES ('from the laptop')");
    let bundle = laptop.bundle();
    let server = Laptop::new(dir.path(), "clinic", 2, ITEMS);
    let before = dump(&server.db);
    let r = run(&server.db, std::slice::from_ref(&bundle), &trusting(&[&laptop.node]));
    assert_eq!(r.refused, 1, "{r:?}");
    let why = r.bundles[0].error.as_deref().unwrap_or_default();
    assert!(why.contains("id block 5") && why.contains("ferry node set-block"), "names the block and the fix: {why}");
    assert_eq!(dump(&server.db), before, "nothing of it was written");
    // The way out: the server moves above every laptop, tracks again, applies again.
    let mut node = Node::open(&server.node.home).expect("open");
    node.set_id_block(1000).expect("set-block");
    capture::track(&node, &server.db, &TrackOptions::default()).expect("track again");
    let r = run(&server.db, &[bundle], &trusting(&[&laptop.node]));
    assert_eq!(r.refused, 0, "{r:?}");
    server.sql("INSERT INTO item (name) VALUES ('the clinic''s own')");
    let ids: Vec<i64> = conn(&server.db)
        .prepare("SELECT id FROM item ORDER BY id")
        .expect("ids")
        .query_map([], |r| r.get(0))
        .expect("ids")
        .collect::<Result<_, _>>()
        .expect("ids");
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0] >> 32, 5, "the laptop's row");
    assert_eq!(ids[1] >> 32, 1000, "the clinic's own row is in its own block");
}

#[test]
fn track_status_names_a_table_holding_ids_above_the_block() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = common::init_node(dir.path(), "clinic", Some(2));
    let db = dir.path().join("clinic.sqlite3");
    conn(&db).execute_batch(ITEMS).expect("schema");
    common::ferry(&home).arg("track").arg(&db).assert().success();
    conn(&db).execute_batch("INSERT INTO item (id, name) VALUES (21474836481, 'from block 5')").expect("row");
    let o = common::ferry(&home).args(["track", "--status"]).arg(&db).output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("PROBLEM") && text.contains("table item") && text.contains("ferry node set-block"), "{text}");
}

#[test]
fn a_bundle_writing_a_full_text_index_is_refused_alone_and_names_itself() {
    let dir = tempfile::tempdir().expect("tmp");
    let schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER DEFAULT 7);
                  CREATE VIRTUAL TABLE doc USING fts5(body);";
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.push(1, Op::Insert, "doc", Row(vec![("rowid".into(), Value::Integer(1))]), Some(row(&[("body", text("x"))])));
    a.push(2, Op::Insert, "doc_data", id_row(99), Some(row(&[("block", Value::Blob(vec![1, 2]))])));
    b.insert(3, 1, &[("a", text("fine"))]);
    let (bad, bad2, good) = (
        a.bundle(dir.path(), &[(1, 1)], None),
        a.bundle(dir.path(), &[(2, 2)], None),
        b.bundle(dir.path(), &[(1, 1)], None),
    );
    let home = common::init_node(dir.path(), "central", None);
    common::trust(&home, &dir.path().join("a"), "a", &["origin"]);
    common::trust(&home, &dir.path().join("b"), "b", &["origin"]);
    let db = target(dir.path(), "db.sqlite3", schema);
    let o = common::ferry(&home)
        .args(["bundle", "apply", "--db"])
        .arg(&db)
        .args([&bad, &bad2, &good])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1), "one refused bundle is a negative verdict, not an error");
    let text = String::from_utf8_lossy(&o.stdout);
    let name = |p: &Path| p.file_name().expect("name").to_string_lossy().into_owned();
    assert!(text.contains(&format!("REFUSED  {}", bad.display())) && text.contains("virtual table"), "{text}");
    assert!(text.contains(&name(&bad2)) && text.contains("internal storage"), "{text}");
    assert!(text.contains(&format!("applied  {}", good.display())), "{text}");
    assert_eq!(dump_t(&db), "[1,\"fine\",7]", "the good bundle applied");
    let ok: String = one(&db, "SELECT 'ok' WHERE (SELECT count(*) FROM doc) = 0");
    assert_eq!(ok, "ok");
    conn(&db).execute_batch("INSERT INTO doc(doc) VALUES ('integrity-check')").expect("the index is intact");
}

/// Table `t`'s rows as JSON arrays, one per line.
fn dump_t(db: &Path) -> String {
    let c = conn(db);
    let mut stmt = c.prepare("SELECT id, a, b FROM t ORDER BY id").expect("select");
    let rows = stmt
        .query_map([], |r| {
            Ok((0..3).map(|i| Value::from(r.get::<_, rusqlite::types::Value>(i).expect("v"))).collect::<Vec<_>>())
        })
        .expect("rows");
    rows.map(|r| serde_json::to_string(&r.expect("row")).expect("json")).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_child_without_its_parent_in_a_without_rowid_table_is_held_not_fatal() {
    let dir = tempfile::tempdir().expect("tmp");
    let schema = "CREATE TABLE site (id INTEGER PRIMARY KEY, name TEXT);
                  CREATE TABLE visit (site_id INTEGER NOT NULL REFERENCES site(id), day INTEGER NOT NULL,
                                      note TEXT, PRIMARY KEY (site_id, day)) WITHOUT ROWID;";
    let mut a = Origin::new(dir.path(), "a");
    let key = |s: i64, d: i64| Row(vec![("site_id".into(), Value::Integer(s)), ("day".into(), Value::Integer(d))]);
    a.push(1, Op::Insert, "visit", key(7, 1), Some(row(&[("note", text("early"))])));
    a.push(2, Op::Insert, "site", id_row(7), Some(row(&[("name", text("Kisumu"))])));
    let trust = trust(&[&a]);
    let db = target(dir.path(), "db.sqlite3", schema);
    let r = run(&db, &[a.bundle(dir.path(), &[(1, 1)], None)], &trust);
    assert_eq!((r.refused, r.events.held), (0, 1), "{r:?}");
    assert_eq!(one::<i64>(&db, "SELECT count(*) FROM visit"), 0);
    let r = run(&db, &[a.bundle(dir.path(), &[(2, 2)], None)], &trust);
    assert_eq!(r.events.released, 1, "{r:?}");
    assert_eq!(one::<String>(&db, "SELECT note FROM visit WHERE site_id = 7"), "early");
}

#[test]
fn a_child_newer_than_its_parents_delete_ends_the_same_in_every_order_despite_a_cascade() {
    let dir = tempfile::tempdir().expect("tmp");
    let schema = "CREATE TABLE site (id INTEGER PRIMARY KEY, name TEXT);
                  CREATE TABLE visit (id INTEGER PRIMARY KEY, site_id INTEGER REFERENCES site(id) ON DELETE CASCADE);";
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.push(1, Op::Insert, "site", id_row(1), Some(row(&[("name", text("s"))])));
    a.push(5, Op::Delete, "site", id_row(1), None);
    b.push(9, Op::Insert, "visit", id_row(3), Some(row(&[("site_id", Value::Integer(1))])));
    let trust = trust(&[&a, &b]);
    let (ins, del) = (a.bundle(dir.path(), &[(1, 1)], None), a.bundle(dir.path(), &[(2, 2)], None));
    let child = b.bundle(dir.path(), &[(1, 1)], None);
    let mut results = Vec::new();
    for order in [vec![ins.clone(), child.clone(), del.clone()], vec![ins.clone(), del.clone(), child.clone()]] {
        let db = target(dir.path(), "db.sqlite3", schema);
        for f in &order {
            run(&db, std::slice::from_ref(f), &trust);
        }
        let held: i64 = one(&db, "SELECT count(*) FROM _ferry_held WHERE tbl = 'visit'");
        results.push((dump(&db), held));
        std::fs::remove_file(&db).expect("rm");
    }
    assert_eq!(results[0], results[1], "the same in both orders");
    assert_eq!(results[0].1, 1, "the child is held, not silently gone");
}

#[test]
fn an_update_of_a_row_deleted_here_outside_ferry_waits_and_says_why() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(10, 1, &[("a", text("x"))]);
    a.update(20, 1, &[("a", text("edited in the field"))]);
    let trust = trust(&[&a]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    run(&db, &[a.bundle(dir.path(), &[(1, 1)], None)], &trust);
    conn(&db).execute_batch("DELETE FROM t WHERE id = 1").expect("a local delete, not tracked");
    let r = run(&db, &[a.bundle(dir.path(), &[(2, 2)], None)], &trust);
    assert_eq!((r.totals.applied, r.totals.parked), (0, 1), "{r:?}");
    let (fields, reason): (String, String) = conn(&db)
        .query_row("SELECT fields, reason FROM _ferry_parked", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("parked");
    assert!(fields.contains("edited in the field"), "{fields}");
    assert!(reason.contains("deleted in this database outside ferry"), "{reason}");
}

#[test]
fn a_community_servers_own_newer_edit_wins_there_and_at_central() {
    let dir = tempfile::tempdir().expect("tmp");
    let laptop = Laptop::new(dir.path(), "field-1", 1, ITEMS);
    laptop.sql("INSERT INTO item (name) VALUES ('first')");
    let b1 = laptop.bundle();
    let clinic = Laptop::new(dir.path(), "clinic", 1000, ITEMS);
    let trust = trusting(&[&laptop.node, &clinic.node]);
    run(&clinic.db, std::slice::from_ref(&b1), &trust);
    // The laptop edits; the clinic edits the same field later; the laptop's stick arrives after.
    laptop.sql("UPDATE item SET name = 'laptop edit'");
    let b2 = laptop.bundle();
    std::thread::sleep(std::time::Duration::from_millis(5));
    clinic.sql("UPDATE item SET name = 'clinic edit'");
    let r = run(&clinic.db, std::slice::from_ref(&b2), &trust);
    assert_eq!(r.local.received, 1, "the clinic's edit took part: {r:?}");
    assert_eq!(one::<String>(&clinic.db, "SELECT name FROM item"), "clinic edit", "the newer local edit stays");
    let c = read_conflicts(&conn(&clinic.db)).expect("conflicts");
    assert!(c.iter().any(|c| c.loser_value.as_deref() == Some("{\"name\":\"laptop edit\"}")), "recorded: {c:?}");
    // Central gets both, in the other order: the same answer.
    let central = target(dir.path(), "central.sqlite3", ITEMS);
    let clinic_bundle = clinic.bundle();
    run(&central, &[clinic_bundle, b1, b2], &trust);
    assert_eq!(dump(&central), dump(&clinic.db), "central and the clinic agree");
}

#[test]
fn an_entry_stamped_earlier_than_the_one_before_it_loses_on_the_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    a.insert(100, 1, &[("a", text("before the clock went back"))]);
    a.update(50, 1, &[("a", text("after the clock went back"))]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    run(&db, &[a.bundle(dir.path(), &[(1, 2)], None)], &trust(&[&a]));
    let c = read_conflicts(&conn(&db)).expect("conflicts");
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].detail.contains("clock went back"), "{c:?}");
    assert_eq!(c[0].loser_seq, Some(2));
}

#[test]
fn capture_never_stamps_an_entry_before_the_one_ahead_of_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let l = Laptop::new(dir.path(), "field-1", 1, ITEMS);
    l.sql("INSERT INTO item (name) VALUES ('a')");
    // The clock was half a day ahead when that entry was made, and is right now.
    conn(&l.db).execute_batch("UPDATE _ferry_journal SET ts = julianday('now') + 0.5").expect("ahead");
    l.sql("UPDATE item SET name = 'b'");
    // An entry three days ahead is a wrong date, not a clock to follow.
    conn(&l.db).execute_batch("UPDATE _ferry_journal SET ts = julianday('now') + 3 WHERE seq = 2").expect("far");
    l.sql("UPDATE item SET name = 'c'");
    let ts: Vec<f64> = conn(&l.db)
        .prepare("SELECT ts FROM _ferry_journal ORDER BY seq")
        .expect("ts")
        .query_map([], |r| r.get(0))
        .expect("ts")
        .collect::<Result<_, _>>()
        .expect("ts");
    let now: f64 = one(&l.db, "SELECT julianday('now')");
    assert!(ts[1] >= now + 0.49, "the second entry follows the first: {ts:?}");
    assert!(ts[2] < now + 0.01, "but not a date days ahead: {ts:?}");
}

#[test]
fn entries_dated_far_ahead_wait_for_their_time_and_are_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    let now = 1_800_000_000_000_000;
    let day = 24 * 3600 * 1_000_000;
    a.insert(now, 1, &[("a", text("right"))]);
    b.update(now + 30 * day, 1, &[("a", text("from a laptop dated a month ahead"))]);
    let trust = trust(&[&a, &b]);
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let at = |t: i64| ApplyOptions { now: Some(Timestamp(t)), ..ApplyOptions::default() };
    let files = [a.bundle(dir.path(), &[(1, 1)], None), b.bundle(dir.path(), &[(1, 1)], None)];
    let r = apply(&db, &files, &trust, &at(now), &mut Silent).expect("apply");
    assert_eq!(r.totals.parked, 1, "{r:?}");
    assert_eq!(dump_t(&db), "[1,\"right\",7]", "it does not win now");
    let s = read_status(&conn(&db), "db").expect("status");
    let o = s.origins.iter().find(|o| o.origin == b.id()).expect("b");
    assert_eq!((o.future, o.future_latest), (1, Some(Timestamp(now + 30 * day))));
    // A month later it is due, and applies like any other entry.
    let r = apply(&db, &[], &trust, &at(now + 30 * day), &mut Silent).expect("apply");
    assert_eq!(r.events.unparked, 1, "{r:?}");
    assert_eq!(dump_t(&db), "[1,\"from a laptop dated a month ahead\",7]");
    assert!(read_status(&conn(&db), "db").expect("status").outcomes.adds_up());
}

#[test]
fn the_numbers_agree_and_a_refusal_clears_once_the_bundle_applies() {
    let dir = tempfile::tempdir().expect("tmp");
    let schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER DEFAULT 7);
                  CREATE TABLE c (id INTEGER PRIMARY KEY, t_id INTEGER REFERENCES t(id));";
    let home = common::init_node(dir.path(), "central", None);
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(10, 1, &[("a", text("a"))]);
    a.push(11, Op::Insert, "c", id_row(1), Some(row(&[("t_id", Value::Integer(99))])));
    b.insert(20, 1, &[("a", text("b"))]);
    b.update(5, 1, &[("b", Value::Integer(1))]);
    let (fa, fb) = (a.bundle(dir.path(), &[(1, 2)], None), b.bundle(dir.path(), &[(1, 2)], None));
    common::trust(&home, &dir.path().join("a"), "a", &["origin"]);
    let db = target(dir.path(), "db.sqlite3", schema);
    let apply_json = |files: &[&PathBuf]| {
        let o = common::ferry(&home)
            .args(["bundle", "apply", "--json", "--db"])
            .arg(&db)
            .args(files)
            .output()
            .expect("run");
        serde_json::from_slice::<ApplyReport>(&o.stdout).expect("report")
    };
    // b is not trusted yet: its bundle is refused.
    let r = apply_json(&[&fa, &fb]);
    assert_eq!(r.refused, 1);
    let mut sum = ferry::apply::Counts::default();
    for bundle in &r.bundles {
        sum.add(&bundle.counts);
    }
    assert_eq!(sum, r.totals, "the bundles' counts add up to the totals");
    assert!(r.totals.adds_up(), "{:?}", r.totals);
    assert_eq!(r.events.held, 1, "the child without a parent");
    let status = |home: &Path| {
        let o = common::ferry(home).args(["status", "--json", "--db"]).arg(&db).output().expect("run");
        serde_json::from_slice::<ferry::apply::status::DbStatus>(&o.stdout).expect("status")
    };
    assert_eq!(status(&home).refused_bundles, 1);
    common::trust(&home, &dir.path().join("b"), "b", &["origin"]);
    let r = apply_json(&[&fb]);
    assert_eq!(r.refused, 0);
    let s = status(&home);
    assert_eq!(s.refused_bundles, 0, "a bundle that applied is no longer counted as refused");
    let o = common::ferry(&home).args(["conflicts", "--json", "--db"]).arg(&db).output().expect("run");
    let listed: Vec<ferry::apply::status::Conflict> = serde_json::from_slice(&o.stdout).expect("conflicts");
    assert_eq!(listed.len() as u64, s.conflicts, "status and the conflict list agree");
    assert!(s.outcomes.adds_up(), "{:?}", s.outcomes);
    assert_eq!(s.outcomes.received, 4);
}

#[test]
fn malformed_keys_are_quarantined_with_their_reason_and_a_legacy_insert_gets_a_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "a");
    // pk names a column that is not part of the key.
    a.push(
        1,
        Op::Insert,
        "t",
        row(&[("id", Value::Integer(1)), ("a", text("x"))]),
        Some(row(&[("b", Value::Integer(1))])),
    );
    // The key in fields differs from the one in pk.
    a.push(2, Op::Insert, "t", id_row(2), Some(row(&[("id", Value::Integer(3)), ("a", text("y"))])));
    // A legacy "new" without an id: the target numbers it.
    a.push(3, Op::Insert, "t", Row::default(), Some(row(&[("a", text("numbered here"))])));
    let db = target(dir.path(), "db.sqlite3", SIMPLE);
    let r = run(&db, &[a.bundle(dir.path(), &[(1, 3)], None)], &trust(&[&a]));
    assert_eq!((r.totals.quarantined, r.totals.applied), (2, 1), "{r:?}");
    assert_eq!(dump_t(&db), "[1,\"numbered here\",7]");
    let reasons: Vec<String> = conn(&db)
        .prepare("SELECT reason FROM _ferry_quarantine ORDER BY seq")
        .expect("q")
        .query_map([], |r| r.get(0))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("q");
    assert!(reasons[0].contains("\"a\", which is not part of the key"), "{reasons:?}");
    assert!(reasons[1].contains("cannot change its key"), "{reasons:?}");
}

/// Copies a directory tree (a laptop's disk, cloned).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

#[test]
fn a_cloned_laptop_is_caught_and_the_printed_steps_keep_both_copies_work() {
    let dir = tempfile::tempdir().expect("tmp");
    let schema = "CREATE TABLE household (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
                  CREATE TABLE member (id INTEGER PRIMARY KEY AUTOINCREMENT,
                                       household_id INTEGER REFERENCES household(id), name TEXT);";
    let a = dir.path().join("laptop-a");
    std::fs::create_dir_all(&a).expect("mkdir");
    let home_a = common::init_node(&a, "home", Some(1));
    let db_a = a.join("app.sqlite3");
    conn(&db_a).execute_batch(schema).expect("schema");
    common::ferry(&home_a).arg("track").arg(&db_a).assert().success();
    let sql = |db: &Path, s: &str| conn(db).execute_batch(s).expect(s);
    sql(&db_a, "INSERT INTO household (name) VALUES ('Achieng'); INSERT INTO member (household_id, name) SELECT id, 'Otieno' FROM household;");
    let stick = dir.path().join("stick");
    let create = |home: &Path, db: &Path| {
        common::ferry(home).args(["bundle", "create", "--db"]).arg(db).arg("--out").arg(&stick).assert().success();
    };
    create(&home_a, &db_a);
    // The laptop is copied, disk and all; both copies go on working.
    let b = dir.path().join("laptop-b");
    copy_tree(&a, &b);
    let (home_b, db_b) = (b.join("home"), b.join("app.sqlite3"));
    sql(&db_a, "INSERT INTO household (name) VALUES ('Wanjiru'); UPDATE household SET name = 'Achieng O.' WHERE name = 'Achieng';");
    sql(&db_b, "INSERT INTO household (name) VALUES ('Kamau'); INSERT INTO member (household_id, name) SELECT id, 'Njeri' FROM household WHERE name = 'Kamau';");
    create(&home_a, &db_a);
    let from_b = dir.path().join("stick-b");
    common::ferry(&home_b).args(["bundle", "create", "--db"]).arg(&db_b).arg("--out").arg(&from_b).assert().success();

    // Central applies laptop A's bundles, then B's: a fork, not a silent skip.
    let central = dir.path().join("central");
    std::fs::create_dir_all(&central).expect("mkdir");
    let home_c = common::init_node(&central, "home", None);
    common::trust(&home_c, &home_a, "field-1", &["origin"]);
    let db_c = central.join("central.sqlite3");
    conn(&db_c).execute_batch(schema).expect("schema");
    common::ferry(&home_c).args(["bundle", "apply", "--db"]).arg(&db_c).arg(&stick).assert().success();
    let o = common::ferry(&home_c).args(["bundle", "apply", "--db"]).arg(&db_c).arg(&from_b).output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("FORK") && text.contains("field-1"), "{text}");
    // The printed command, with the values it names.
    let line = text.lines().find(|l| l.trim_start().starts_with("ferry node reissue")).expect("a command to run");
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |flag: &str| words[words.iter().position(|w| *w == flag).expect(flag) + 1].to_owned();
    let (from, fork) = (value("--from"), value("--fork"));

    // On the wrong computer the command changes nothing.
    let (id_a, journal_a) = (common::node_id(&home_a), dump(&db_a));
    let o = common::ferry(&home_a)
        .args(["node", "reissue"])
        .arg(&db_a)
        .args(["--name", "field-1-b", "--id-block", "7", "--from", &from, "--fork", &fork])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("other computer"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(common::node_id(&home_a), id_a, "the identity is untouched");
    assert_eq!(dump(&db_a), journal_a, "so is the database");
    assert!(!home_a.join("reissue-staging").exists());

    // On the copy: the printed steps.
    common::ferry(&home_b)
        .args(["node", "reissue"])
        .arg(&db_b)
        .args(["--name", "field-1-b", "--id-block", "7", "--from", &from, "--fork", &fork])
        .assert()
        .success();
    common::trust(&home_c, &home_b, "field-1-b", &["origin"]);
    let again = dir.path().join("stick-b2");
    common::ferry(&home_b).args(["bundle", "create", "--db"]).arg(&db_b).arg("--out").arg(&again).assert().success();
    common::ferry(&home_c).args(["bundle", "apply", "--db"]).arg(&db_c).arg(&again).assert().success();

    // Central has both computers' work: every household and member, none merged away.
    let names = |db: &Path, sql: &str| -> Vec<String> {
        let c = conn(db);
        let mut stmt = c.prepare(sql).expect("names");
        let mut v: Vec<String> =
            stmt.query_map([], |r| r.get(0)).expect("names").collect::<Result<_, _>>().expect("names");
        v.sort();
        v
    };
    assert_eq!(names(&db_c, "SELECT name FROM household"), ["Achieng O.", "Kamau", "Wanjiru"]);
    assert_eq!(names(&db_c, "SELECT name FROM member"), ["Njeri", "Otieno"]);
    let kamau: i64 = one(&db_c, "SELECT id FROM household WHERE name = 'Kamau'");
    assert_eq!(kamau >> 32, 7, "the copy's new row moved into its new block");
    assert_eq!(one::<i64>(&db_c, "SELECT household_id FROM member WHERE name = 'Njeri'"), kamau, "its member followed");
    // And the copy itself goes on in its new block.
    sql(&db_b, "INSERT INTO household (name) VALUES ('Mutua')");
    assert_eq!(one::<i64>(&db_b, "SELECT id FROM household WHERE name = 'Mutua'") >> 32, 7);
}

#[test]
fn a_write_the_database_fails_for_another_reason_refuses_that_bundle_only() {
    let dir = tempfile::tempdir().expect("tmp");
    // An app trigger that fails on some rows (not a constraint: an error).
    let schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER DEFAULT 7);
                  CREATE TABLE log (x);
                  CREATE TRIGGER audit AFTER INSERT ON t BEGIN
                    INSERT INTO log SELECT json_extract(NEW.a, '$.x');
                  END;";
    let mut a = Origin::new(dir.path(), "a");
    let mut b = Origin::new(dir.path(), "b");
    a.insert(1, 1, &[("a", text("boom"))]);
    b.insert(2, 2, &[("a", text("{\"x\":1}"))]);
    let (bad, good) = (a.bundle(dir.path(), &[(1, 1)], None), b.bundle(dir.path(), &[(1, 1)], None));
    let db = target(dir.path(), "db.sqlite3", schema);
    let r = run(&db, &[bad.clone(), good], &trust(&[&a, &b]));
    assert_eq!(r.refused, 1, "{r:?}");
    let why = r.bundles[0].error.as_deref().unwrap_or_default();
    assert!(why.contains("seq 1") && why.contains("malformed JSON"), "names the entry and the cause: {why}");
    assert_eq!(dump_t(&db), "[2,\"{\\\"x\\\":1}\",7]", "the other bundle applied");
}

/// A middleman's bundle carries three laptops' entries; the server trusts
/// only two of them: their entries apply, the third's are refused alone.
#[test]
fn trusted_origins_in_a_relayed_bundle_apply_when_another_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let laptops: Vec<Laptop> = (1..=3).map(|i| Laptop::new(dir.path(), &format!("field-{i}"), i, ITEMS)).collect();
    let stick = dir.path().join("stick");
    for (i, l) in laptops.iter().enumerate() {
        l.sql(&format!("INSERT INTO item (name) VALUES ('from laptop {}')", i + 1));
        let opts = CreateOptions { out_dir: stick.clone(), since: None };
        capture::create_from_db(&l.node, &l.db, &opts, &mut Silent).expect("bundle");
    }
    let driver = common::init_node(dir.path(), "driver", None);
    for l in &laptops {
        common::trust(&driver, &l.node.home, &l.node.info.name, &["origin"]);
    }
    let town = dir.path().join("town");
    common::ferry(&driver).args(["bundle", "relay", "--from"]).arg(&stick).arg("--out").arg(&town).assert().success();
    let central = common::init_node(dir.path(), "central", None);
    common::trust(&central, &driver, "driver", &["relay"]);
    common::trust(&central, &laptops[0].node.home, "field-1", &["origin"]);
    common::trust(&central, &laptops[1].node.home, "field-2", &["origin"]);
    let db = target(dir.path(), "central.sqlite3", ITEMS);
    let o = common::ferry(&central).args(["bundle", "apply", "--db"]).arg(&db).arg(&town).output().expect("run");
    assert_eq!(o.status.code(), Some(1), "a refused part is a negative verdict");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("REFUSED") && text.contains("the rest of the bundle applied"), "{text}");
    let names: Vec<String> = conn(&db)
        .prepare("SELECT name FROM item ORDER BY name")
        .expect("q")
        .query_map([], |r| r.get(0))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("q");
    assert_eq!(names, ["from laptop 1", "from laptop 2"]);
    // Once field-3 is trusted, the same bundle brings its entries too.
    common::trust(&central, &laptops[2].node.home, "field-3", &["origin"]);
    common::ferry(&central).args(["bundle", "apply", "--db"]).arg(&db).arg(&town).assert().success();
    assert_eq!(one::<i64>(&db, "SELECT count(*) FROM item"), 3);
}

/// Two laptops given the same id block: the first server to see both stops
/// the second's rows before they overwrite the first's, naming both and the
/// fix.
#[test]
fn two_laptops_in_one_id_block_are_caught_before_rows_are_overwritten() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = Laptop::new(dir.path(), "field-1", 1, ITEMS);
    let b = Laptop::new(dir.path(), "field-2", 1, ITEMS);
    a.sql("INSERT INTO item (name) VALUES ('Achieng')");
    b.sql("INSERT INTO item (name) VALUES ('Kamau')");
    let (fa, fb) = (a.bundle(), b.bundle());
    let trust = trusting(&[&a.node, &b.node]);
    let db = target(dir.path(), "central.sqlite3", ITEMS);
    let r = run(&db, &[fa, fb.clone()], &trust);
    assert_eq!(r.refused, 1, "{r:?}");
    let why = r.bundles[1].segments.iter().find_map(|s| s.refused.clone()).unwrap_or_default();
    assert!(why.contains("field-1") || why.contains(&a.node.id().to_string()), "{why}");
    assert!(why.contains("same id block") && why.contains("ferry node reissue"), "{why}");
    assert_eq!(one::<String>(&db, "SELECT group_concat(name) FROM item"), "Achieng", "nothing was overwritten");
    // Applied again (the bundle stays in its folder): the same refusal is
    // reported as known, not as a new alarm.
    let again = run(&db, &[fb], &trust);
    assert_eq!((again.refused, again.refused_again), (0, 1), "{again:?}");
    assert!(!again.negative());
    assert!(again.bundles[0].segments[0].refused_before.is_some());
}

/// A community server's hop is one command: it applies the laptops'
/// bundles, bundles its own edits and relays everything on. Applied data
/// that a server never passed on is named by `status --db`.
#[test]
fn a_community_server_applies_and_passes_on_in_one_command() {
    let dir = tempfile::tempdir().expect("tmp");
    let laptop = Laptop::new(dir.path(), "field-1", 1, ITEMS);
    laptop.sql("INSERT INTO item (name) VALUES ('from the field')");
    let stick = dir.path().join("stick");
    capture::create_from_db(
        &laptop.node,
        &laptop.db,
        &CreateOptions { out_dir: stick.clone(), since: None },
        &mut Silent,
    )
    .expect("bundle");
    let clinic_home = common::init_node(dir.path(), "clinic", Some(1000));
    common::trust(&clinic_home, &laptop.node.home, "field-1", &["origin"]);
    let clinic_db = dir.path().join("clinic.sqlite3");
    conn(&clinic_db).execute_batch(ITEMS).expect("schema");
    common::ferry(&clinic_home).arg("track").arg(&clinic_db).assert().success();
    // Applied but not relayed: status says so, naming the laptop and the entries.
    common::ferry(&clinic_home).args(["bundle", "apply", "--db"]).arg(&clinic_db).arg(&stick).assert().success();
    let o = common::ferry(&clinic_home).args(["status", "--db"]).arg(&clinic_db).output().expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    // (no relay ledger yet: a node that never relays is not warned)
    assert!(!text.contains("NOT PASSED ON"), "{text}");
    conn(&clinic_db).execute_batch("INSERT INTO item (name) VALUES ('the clinic''s own')").expect("local edit");
    let to_town = dir.path().join("to-town");
    let o = common::ferry(&clinic_home)
        .args(["bundle", "relay", "--from"])
        .arg(&stick)
        .arg("--out")
        .arg(&to_town)
        .arg("--apply")
        .arg(&clinic_db)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names: Vec<String> = std::fs::read_dir(&to_town)
        .expect("out")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("ferry-clinic-")), "bundles say whose they are: {names:?}");
    // Central gets the laptop's row and the clinic's own.
    let central = common::init_node(dir.path(), "central", None);
    common::trust(&central, &clinic_home, "clinic", &["origin", "relay"]);
    common::trust(&central, &laptop.node.home, "field-1", &["origin"]);
    let central_db = target(dir.path(), "central.sqlite3", ITEMS);
    common::ferry(&central).args(["bundle", "apply", "--db"]).arg(&central_db).arg(&to_town).assert().success();
    assert_eq!(one::<i64>(&central_db, "SELECT count(*) FROM item"), 2);
    // A later stick applied without relaying is named by status.
    laptop.sql("INSERT INTO item (name) VALUES ('second trip')");
    let stick2 = dir.path().join("stick2");
    capture::create_from_db(
        &laptop.node,
        &laptop.db,
        &CreateOptions { out_dir: stick2.clone(), since: None },
        &mut Silent,
    )
    .expect("bundle");
    common::ferry(&clinic_home).args(["bundle", "apply", "--db"]).arg(&clinic_db).arg(&stick2).assert().success();
    let o = common::ferry(&clinic_home).args(["status", "--db"]).arg(&clinic_db).output().expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("NOT PASSED ON: field-1's entry 2: applied here, never relayed"), "{text}");
}

/// A tracked server whose clock is behind the entries it applied (a laptop
/// clock an hour ahead, within the day apply accepts) stamps its own next
/// edit after them (the clock floor), so the edit is the newest write there,
/// in the bundle it sends, and at the next fold; without the floor it would
/// lose to the older laptop write at central.
#[test]
fn a_servers_own_edit_after_an_apply_is_stamped_after_what_it_applied() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Origin::new(dir.path(), "field-1");
    let ahead = Timestamp::now().0 + 3_600_000_000;
    a.insert(ahead, 1, &[("a", text("from the laptop"))]);
    let from_laptop = a.bundle(dir.path(), &[(1, 1)], None);
    let server = Node::init(&dir.path().join("server-home"), "server", Some(1000)).expect("node");
    let db = target(dir.path(), "server.sqlite3", SIMPLE);
    capture::track(&server, &db, &TrackOptions::default()).expect("track");
    let trust = trust(&[&a]);
    run(&db, std::slice::from_ref(&from_laptop), &trust);
    conn(&db).execute_batch("UPDATE t SET a = 'edited at the server' WHERE id = 1").expect("edit");
    let out = dir.path().join("server-out");
    let r = capture::create_from_db(&server, &db, &CreateOptions { out_dir: out, since: None }, &mut Silent)
        .expect("bundle");
    let file = r.file.expect("the edit is bundled");
    let mut reader = ferry::bundle::BundleReader::open(&file).expect("open");
    let seg = reader.next_segment().expect("segment").expect("one");
    let mut lines = seg.entries().expect("entries");
    let line = lines.next_line().expect("line").expect("one entry").to_vec();
    let entry = ferry::journal::Entry::parse(&line).expect("entry");
    assert!(entry.ts.0 > ahead, "stamped after the laptop's entry: {} <= {ahead}", entry.ts.0);
    // The next run folds the edit with that time: it stays.
    run(&db, &[from_laptop], &trust);
    assert_eq!(one::<String>(&db, "SELECT a FROM t WHERE id = 1"), "edited at the server");
}
