//! `ferry track`: capture of an app database's committed changes, and
//! `ferry bundle create --db`.

mod common;

use std::path::{Path, PathBuf};

use ferry::bundle::create::CreateOptions;
use ferry::bundle::BundleReader;
use ferry::capture::{self, JournalRows, TrackOptions};
use ferry::journal::Entry;
use ferry::node::Node;
use ferry::progress::Silent;
use ferry::value::Value;
use rusqlite::Connection;
use serde_json::json;

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    node: Node,
    db: PathBuf,
}

fn fixture(ddl: &str, id_block: Option<u32>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::init(&dir.path().join("home"), "field-1", id_block).expect("node");
    let db = dir.path().join("app.sqlite3");
    Connection::open(&db).expect("db").execute_batch(ddl).expect("ddl");
    Fixture { dir: dir.path().to_path_buf(), _dir: dir, node, db }
}

impl Fixture {
    fn track(&self) -> capture::TrackReport {
        capture::track(&self.node, &self.db, &TrackOptions::default()).expect("track")
    }
    fn conn(&self) -> Connection {
        Connection::open(&self.db).expect("open")
    }
    /// Every captured entry, as the bundle would carry it.
    fn entries(&self) -> Vec<Entry> {
        let conn = self.conn();
        let last: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM _ferry_journal", [], |r| r.get(0)).expect("max");
        let rows = JournalRows::new(&conn, "app", 1, last as u64).expect("rows");
        rows.map(|r| r.expect("row").0).collect()
    }
    /// The captured entries as JSON values without `ts` (for comparisons).
    fn summary(&self) -> Vec<serde_json::Value> {
        self.entries()
            .iter()
            .map(|e| {
                let mut v: serde_json::Value = serde_json::from_slice(&e.to_line()).expect("json");
                v.as_object_mut().expect("object").remove("ts");
                v
            })
            .collect()
    }
    fn bundle(&self, since: Option<u64>) -> ferry::bundle::create::CreateReport {
        let opts = CreateOptions { out_dir: self.dir.join("out"), since };
        capture::create_from_db(&self.node, &self.db, &opts, &mut Silent).expect("bundle create --db")
    }
}

/// The entry lines of a bundle's only segment.
fn bundle_lines(path: &Path) -> Vec<Vec<u8>> {
    let mut reader = BundleReader::open(path).expect("open bundle");
    let seg = reader.next_segment().expect("segment").expect("one segment");
    let mut lines = seg.entries().expect("entries");
    let mut out = Vec::new();
    while let Some(l) = lines.next_line().expect("line") {
        out.push(l.to_vec());
    }
    out
}

const SIMPLE: &str = "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, qty, price REAL);";

/// The times entries carry: a clock put back (here: recorded times moved
/// back by hand, as a laptop whose clock was reset records them) never puts
/// an entry before the one ahead of it, in one bundle or across the next,
/// and a time more than a day ahead of the clock is not followed.
#[test]
fn entries_carry_times_in_journal_order_when_the_clock_goes_back() {
    let f = fixture(SIMPLE, None);
    f.track();
    let c = f.conn();
    c.execute_batch(
        "INSERT INTO item (id) VALUES (1); INSERT INTO item (id) VALUES (2); INSERT INTO item (id) VALUES (3);",
    )
    .expect("insert");
    let t1: f64 = c.query_row("SELECT ts FROM _ferry_journal WHERE seq = 1", [], |r| r.get(0)).expect("ts");
    c.execute("UPDATE _ferry_journal SET ts = ?1 WHERE seq IN (2, 3)", [t1 - 0.5]).expect("clock back");
    let times = |report: &ferry::bundle::create::CreateReport| -> Vec<String> {
        bundle_lines(report.file.as_ref().expect("a bundle"))
            .iter()
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).expect("json")["ts"].as_str().expect("ts").to_owned()
            })
            .collect()
    };
    let first = times(&f.bundle(None));
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|t| *t == first[0]), "entries 2 and 3 are stamped at entry 1's time: {first:?}");
    // The next bundle starts after the watermark: its entry follows entry 3's
    // stamped time, not the time recorded for entry 3.
    c.execute_batch("INSERT INTO item (id) VALUES (4)").expect("insert");
    c.execute("UPDATE _ferry_journal SET ts = ?1 WHERE seq = 4", [t1 - 0.4]).expect("clock still back");
    let second = times(&f.bundle(None));
    assert_eq!(second, vec![first[0].clone()], "entry 4 comes after entry 3");
    // Sent again from the start: the same times, byte for byte.
    let again = times(&f.bundle(Some(1)));
    assert_eq!(again, [first.clone(), second].concat());
    // A wrong date more than a day ahead is not followed by the next entry.
    c.execute_batch("INSERT INTO item (id) VALUES (5); INSERT INTO item (id) VALUES (6);").expect("insert");
    c.execute("UPDATE _ferry_journal SET ts = ?1 WHERE seq = 5", [t1 + 400.0]).expect("wrong date");
    c.execute("UPDATE _ferry_journal SET ts = ?1 WHERE seq = 6", [t1 + 0.1]).expect("right date");
    let third = times(&f.bundle(None));
    assert!(third[1] < third[0] && third[1] > first[0], "{third:?}");
}

#[test]
fn insert_update_delete_become_entries_with_only_changed_fields() {
    let f = fixture(SIMPLE, None);
    f.track();
    let c = f.conn();
    c.execute_batch(
        "INSERT INTO item VALUES (1, 'apple', 3, 1.5);
         UPDATE item SET name = 'apple', qty = 4, price = 1.5 WHERE id = 1;  -- save(): rewrites all, one changed
         UPDATE item SET name = 'APPLE' WHERE id = 1;                         -- NOCASE column, still a change
         UPDATE item SET qty = 4.0 WHERE id = 1;                              -- 4 -> 4.0: storage class changed
         UPDATE item SET qty = 4.0, name = 'APPLE' WHERE id = 1;              -- no-op: nothing
         DELETE FROM item WHERE id = 1;",
    )
    .expect("dml");
    assert_eq!(
        f.summary(),
        vec![
            json!({"seq":1,"op":"insert","table":"item","pk":{"id":1},"fields":{"name":"apple","qty":3,"price":1.5}}),
            json!({"seq":2,"op":"update","table":"item","pk":{"id":1},"fields":{"qty":4}}),
            json!({"seq":3,"op":"update","table":"item","pk":{"id":1},"fields":{"name":"APPLE"}}),
            json!({"seq":4,"op":"update","table":"item","pk":{"id":1},"fields":{"qty":4.0}}),
            json!({"seq":5,"op":"delete","table":"item","pk":{"id":1}}),
        ]
    );
    assert_eq!(f.entries()[3].fields.as_ref().expect("fields").get("qty"), Some(&Value::Real(4.0)));
}

#[test]
fn rolled_back_transactions_and_savepoints_leave_nothing_and_seqs_have_no_gaps() {
    let f = fixture(SIMPLE, None);
    f.track();
    let c = f.conn();
    c.execute_batch("BEGIN; INSERT INTO item (id, name) VALUES (1, 'gone'); ROLLBACK;").expect("rollback");
    c.execute_batch(
        "BEGIN;
         INSERT INTO item (id, name) VALUES (2, 'kept');
         SAVEPOINT s; INSERT INTO item (id, name) VALUES (3, 'gone'); ROLLBACK TO s; RELEASE s;
         COMMIT;",
    )
    .expect("savepoint");
    // A statement that fails part-way is undone with its journal rows.
    assert!(c.execute_batch("INSERT INTO item (id, name) VALUES (4, 'x'), (2, 'dup')").is_err());
    c.execute_batch("INSERT INTO item (id, name) VALUES (5, 'kept too')").expect("insert");
    let s = f.summary();
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0]["pk"]["id"], 2);
    assert_eq!((s[1]["seq"].clone(), s[1]["pk"]["id"].clone()), (json!(2), json!(5)));
}

/// A key change moves the row: other computers see the old key deleted and
/// the whole row inserted under the new key, in one statement's time, so
/// the change applies the same whatever they hold of the row.
#[test]
fn primary_key_change_is_a_delete_of_the_old_key_and_an_insert_of_the_row() {
    let f = fixture("CREATE TABLE p (a TEXT, b INTEGER, note TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;", None);
    f.track();
    let c = f.conn();
    c.execute_batch("INSERT INTO p VALUES ('x', 1, 'n'); UPDATE p SET b = 2, note = 'm' WHERE a = 'x';").expect("dml");
    let s = f.summary();
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(s[1], json!({"seq":2,"op":"delete","table":"p","pk":{"a":"x","b":1}}));
    assert_eq!(s[2], json!({"seq":3,"op":"insert","table":"p","pk":{"a":"x","b":2},"fields":{"note":"m"}}));
    // An update that leaves the key alone is still one update of what changed.
    c.execute_batch("UPDATE p SET note = 'o'").expect("dml");
    assert_eq!(f.summary()[3], json!({"seq":4,"op":"update","table":"p","pk":{"a":"x","b":2},"fields":{"note":"o"}}));
}

#[test]
fn upsert_and_insert_or_ignore_capture_exactly_what_happened() {
    let f = fixture(SIMPLE, None);
    f.track();
    let c = f.conn();
    c.execute_batch(
        "INSERT INTO item (id, name, qty) VALUES (1, 'a', 1);
         INSERT OR IGNORE INTO item (id, name, qty) VALUES (1, 'ignored', 9);
         INSERT INTO item (id, name, qty) VALUES (1, 'a', 1) ON CONFLICT (id) DO UPDATE SET qty = excluded.qty + 1;
         INSERT INTO item (id, name, qty) VALUES (2, 'b', 1) ON CONFLICT (id) DO UPDATE SET qty = 99;
         INSERT INTO item (id, name, qty) VALUES (2, 'b', 1) ON CONFLICT (id) DO UPDATE SET qty = 99;",
    )
    .expect("dml");
    assert_eq!(
        f.summary(),
        vec![
            json!({"seq":1,"op":"insert","table":"item","pk":{"id":1},"fields":{"name":"a","qty":1,"price":null}}),
            json!({"seq":2,"op":"update","table":"item","pk":{"id":1},"fields":{"qty":2}}),
            json!({"seq":3,"op":"insert","table":"item","pk":{"id":2},"fields":{"name":"b","qty":1,"price":null}}),
            json!({"seq":4,"op":"update","table":"item","pk":{"id":2},"fields":{"qty":99}}),
        ]
    );
}

#[test]
fn values_round_trip_bit_for_bit_through_capture_and_bundle() {
    let f = fixture("CREATE TABLE v (id INTEGER PRIMARY KEY, x, r REAL);", None);
    f.track();
    let values = vec![
        Value::Null,
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Real(0.1 + 0.2),
        Value::Real(-0.0),
        Value::Real(5e-324),
        Value::Real(f64::MAX),
        Value::Real(1.0),
        Value::Real(f64::INFINITY),
        Value::Text("héllo \u{1F600} \"q\" \n\t".into()),
        Value::Text(String::new()),
        Value::Blob(vec![0, 1, 2, 255, 254]),
        Value::Blob(vec![]),
    ];
    let c = f.conn();
    for (i, v) in values.iter().enumerate() {
        c.execute("INSERT INTO v (id, x) VALUES (?1, ?2)", rusqlite::params![i as i64, v]).expect("insert");
    }
    // Updates carry exact values too (REAL column: what SQLite stored).
    c.execute("UPDATE v SET x = ?1, r = ?1 WHERE id = 0", [0.1f64 + 0.2]).expect("update");
    let report = f.bundle(None);
    let lines = bundle_lines(report.file.as_deref().expect("file"));
    assert_eq!(lines.len(), values.len() + 1);
    for (line, v) in lines.iter().zip(&values) {
        let e = Entry::parse(line).expect("entry");
        let got = e.fields.as_ref().and_then(|f| f.get("x")).expect("x");
        assert!(got.same_as(v), "{v:?} came back as {got:?}");
        assert_eq!(e.to_line(), *line, "entry lines are canonical");
    }
    let upd = Entry::parse(&lines[values.len()]).expect("entry");
    let fields = upd.fields.expect("fields");
    assert!(fields.get("x").expect("x").same_as(&Value::Real(0.1 + 0.2)));
    assert!(fields.get("r").expect("r").same_as(&Value::Real(0.1 + 0.2)));
}

#[test]
fn suppressed_writes_are_not_captured_and_capture_resumes_after() {
    let f = fixture(SIMPLE, None);
    f.track();
    let mut c = f.conn();
    let tx = c.transaction().expect("tx");
    capture::suppress(&tx, true).expect("suppress on");
    tx.execute_batch("INSERT INTO item (id, name) VALUES (1, 'applied'); UPDATE item SET qty = 1;").expect("dml");
    capture::suppress(&tx, false).expect("suppress off");
    tx.commit().expect("commit");
    c.execute_batch("UPDATE item SET qty = 2 WHERE id = 1").expect("local edit");
    assert_eq!(f.summary(), vec![json!({"seq":1,"op":"update","table":"item","pk":{"id":1},"fields":{"qty":2}})]);
    // On an untracked database suppress does nothing and does not fail.
    let plain = Connection::open_in_memory().expect("db");
    capture::suppress(&plain, true).expect("no-op");
}

#[test]
fn autoincrement_tables_move_into_the_node_id_block() {
    let ddl = "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT); INSERT INTO a (v) VALUES ('old');";
    let f = fixture(ddl, Some(3));
    let r = f.track();
    assert_eq!(r.sequences_raised.get("a"), Some(&(3i64 << 32)));
    let c = f.conn();
    c.execute_batch("INSERT INTO a (v) VALUES ('new')").expect("insert");
    let id: i64 = c.query_row("SELECT max(id) FROM a", [], |r| r.get(0)).expect("id");
    assert_eq!(id, (3i64 << 32) + 1);
    // Tracking again keeps the counter where it is.
    f.track();
    c.execute_batch("INSERT INTO a (v) VALUES ('newer')").expect("insert");
    let id: i64 = c.query_row("SELECT max(id) FROM a", [], |r| r.get(0)).expect("id");
    assert_eq!(id, (3i64 << 32) + 2);
}

#[test]
fn autoincrement_without_id_block_and_tables_without_key_are_refused() {
    let f = fixture("CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);", None);
    let e = capture::track(&f.node, &f.db, &TrackOptions::default()).expect_err("no id block");
    assert!(e.to_string().contains("id block"), "{e}");
    let f = fixture("CREATE TABLE nokey (v TEXT); CREATE TABLE ok (id TEXT PRIMARY KEY);", None);
    let e = capture::track(&f.node, &f.db, &TrackOptions::default()).expect_err("no pk");
    assert!(e.to_string().contains("nokey") && e.to_string().contains("--exclude"), "{e}");
    // Nothing was installed by the refused attempt.
    assert!(!capture::is_tracked(&f.conn()).expect("check"));
    let opts = TrackOptions { exclude: Some(vec!["nokey".into()]), ..Default::default() };
    let r = capture::track(&f.node, &f.db, &opts).expect("track with exclude");
    assert_eq!(r.tables, vec!["ok".to_owned()]);
}

#[test]
fn django_bookkeeping_tables_are_excluded_by_default() {
    let f = fixture(
        "CREATE TABLE django_session (session_key TEXT PRIMARY KEY, d TEXT);
         CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT);
         CREATE TABLE survey_household (id TEXT PRIMARY KEY);",
        None,
    );
    let r = f.track();
    assert_eq!(r.tables, vec!["survey_household".to_owned()]);
    f.conn().execute_batch("INSERT INTO django_session VALUES ('k', 'd')").expect("insert");
    assert!(f.entries().is_empty());
}

#[test]
fn schema_change_makes_capture_stale_until_track_refreshes_it() {
    let f = fixture(SIMPLE, None);
    f.track();
    let c = f.conn();
    c.execute_batch("INSERT INTO item (id, name) VALUES (1, 'a')").expect("insert");
    c.execute_batch("ALTER TABLE item ADD COLUMN colour TEXT; CREATE TABLE extra (id INTEGER PRIMARY KEY);")
        .expect("migrate");
    let s = capture::status(&f.db).expect("status");
    assert!(s.stale.iter().any(|r| r.contains("colour")), "{:?}", s.stale);
    assert!(s.stale.iter().any(|r| r.contains("extra")), "{:?}", s.stale);
    let opts = CreateOptions { out_dir: f.dir.join("out"), since: None };
    let e = capture::create_from_db(&f.node, &f.db, &opts, &mut Silent).expect_err("stale");
    assert!(e.to_string().contains("stale"), "{e}");

    f.track();
    assert!(capture::status(&f.db).expect("status").stale.is_empty());
    c.execute_batch("UPDATE item SET colour = 'red' WHERE id = 1; INSERT INTO extra VALUES (7);").expect("dml");
    let s = f.summary();
    assert_eq!(s[0]["fields"], json!({"name":"a","qty":null,"price":null}), "old layout still read");
    assert_eq!(s[1]["fields"], json!({"colour":"red"}));
    assert_eq!(s[2]["table"], "extra");

    // A migration that rebuilds a table drops its triggers: stale too.
    c.execute_batch(
        "CREATE TABLE new__item (id INTEGER PRIMARY KEY, name TEXT, qty, price REAL, colour TEXT);
         INSERT INTO new__item SELECT * FROM item; DROP TABLE item; ALTER TABLE new__item RENAME TO item;",
    )
    .expect("rebuild");
    let s = capture::status(&f.db).expect("status");
    assert!(s.stale.iter().any(|r| r.contains("triggers")), "{:?}", s.stale);
}

fn dump(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    for t in ferry::schema::tables(conn).expect("tables") {
        let mut st = conn.prepare(&format!("SELECT * FROM {} ORDER BY 1", ferry::schema::quote(&t.name))).expect("sel");
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("query");
        for r in rows {
            out.push(format!("{}: {}", t.name, r.expect("row").join("|")));
        }
    }
    let mut st = conn.prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY name").expect("schema");
    let rows = st.query_map([], |r| Ok(format!("{:?}", (r.get::<_, String>(0)?, r.get::<_, String>(1)?)))).expect("q");
    out.extend(rows.map(|r| r.expect("row")));
    out
}

#[test]
fn untrack_removes_everything_ferry_added_and_leaves_the_data() {
    let f = fixture(
        "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT); CREATE TABLE b (k TEXT PRIMARY KEY, x);",
        Some(1),
    );
    let c = f.conn();
    c.execute_batch("INSERT INTO a (v) VALUES ('x'); INSERT INTO b VALUES ('k', 1.5);").expect("seed");
    f.track();
    c.execute_batch("INSERT INTO a (v) VALUES ('y'); UPDATE b SET x = x'00ff'; INSERT INTO b VALUES ('z', NULL);")
        .expect("dml");
    f.bundle(None);
    let before = dump(&c);
    assert!(capture::untrack(&f.db, false).expect("untrack"));
    let after = dump(&c);
    let ferry_objects: Vec<&String> = before.iter().filter(|l| l.contains("_ferry")).collect();
    assert!(!ferry_objects.is_empty());
    let expected: Vec<String> = before.iter().filter(|l| !l.contains("_ferry")).cloned().collect();
    assert_eq!(after, expected);
    assert!(!capture::untrack(&f.db, false).expect("second untrack"), "nothing left to remove");
    let triggers: i64 =
        c.query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'", [], |r| r.get(0)).expect("q");
    assert_eq!(triggers, 0);
}

#[test]
fn bundle_create_db_bundles_new_entries_once_and_since_sends_again() {
    let f = fixture(SIMPLE, None);
    f.track();
    let c = f.conn();
    c.execute_batch("INSERT INTO item (id) VALUES (1), (2), (3)").expect("insert");
    let r1 = f.bundle(None);
    assert_eq!((r1.first_seq, r1.last_seq), (Some(1), Some(3)));
    assert!(f.bundle(None).file.is_none(), "nothing new");
    c.execute_batch("DELETE FROM item WHERE id = 2").expect("delete");
    let r2 = f.bundle(None);
    assert_eq!((r2.first_seq, r2.last_seq), (Some(4), Some(4)));
    let again = f.bundle(Some(2));
    assert_eq!((again.first_seq, again.last_seq), (Some(2), Some(4)));
    assert_eq!(capture::watermark(&c).expect("wm").0, 4);
    // The segments chain: the second starts where the first ended, and carries the schema fingerprint.
    let d1 = BundleReader::open(r1.file.as_deref().expect("f")).expect("open").descriptors()[0].clone();
    let d2 = BundleReader::open(r2.file.as_deref().expect("f")).expect("open").descriptors()[0].clone();
    assert_eq!(d1.chain_after, d2.chain_before);
    assert_eq!(d2.schema, Some(ferry::schema::fingerprint(&c).expect("fp")));
}

#[test]
fn bundle_create_db_refuses_a_database_tracked_by_another_node() {
    let f = fixture(SIMPLE, None);
    f.track();
    let other = Node::init(&f.dir.join("other"), "clone", None).expect("node");
    let opts = CreateOptions { out_dir: f.dir.join("out"), since: None };
    let e = capture::create_from_db(&other, &f.db, &opts, &mut Silent).expect_err("other node");
    assert!(e.to_string().contains("tracked by node"), "{e}");
}

#[test]
fn bundle_create_db_runs_while_the_app_holds_a_write_transaction() {
    let f = fixture(SIMPLE, None);
    f.track();
    f.conn().execute_batch("INSERT INTO item (id) VALUES (1)").expect("insert");
    let db = f.db.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let c = Connection::open(&db).expect("open");
        c.execute_batch("BEGIN IMMEDIATE; INSERT INTO item (id) VALUES (2);").expect("write");
        ready_tx.send(()).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(300));
        c.execute_batch("COMMIT").expect("commit");
    });
    ready_rx.recv().expect("ready");
    let r = f.bundle(None);
    writer.join().expect("writer");
    assert_eq!((r.first_seq, r.last_seq), (Some(1), Some(1)), "only committed entries");
    assert_eq!(f.bundle(None).first_seq, Some(2));
}

#[test]
fn cli_track_status_bundle_and_untrack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = common::init_node(dir.path(), "field-1", Some(2));
    let db = dir.path().join("app.sqlite3");
    Connection::open(&db)
        .expect("db")
        .execute_batch("CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);")
        .expect("ddl");
    common::ferry(&home).args(["track", "--status"]).arg(&db).assert().code(1);
    common::ferry(&home).arg("track").arg(&db).assert().success();
    common::ferry(&home).args(["track", "--status"]).arg(&db).assert().success();
    Connection::open(&db).expect("db").execute_batch("INSERT INTO a (v) VALUES ('x')").expect("insert");
    let out = dir.path().join("out");
    let bundle = common::create_bundle_db(&home, &db, &out).expect("a bundle");
    let file = bundle.to_str().expect("utf-8 path");
    common::ferry(&home).args(["bundle", "verify", file]).assert().success();
    let o = common::ferry(&home).args(["bundle", "inspect", "--entries", file]).output().expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("\"pk\":{{\"id\":{}}}", (2i64 << 32) + 1)), "{text}");
    // --journal and --db are alternatives: exactly one.
    common::ferry(&home).args(["bundle", "create", "--out"]).arg(&out).assert().code(2);
    common::ferry(&home)
        .args(["bundle", "create", "--journal", "j", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2);
    Connection::open(&db).expect("db").execute_batch("ALTER TABLE a ADD COLUMN w").expect("alter");
    common::ferry(&home).args(["track", "--status"]).arg(&db).assert().code(1);
    // Bundling refreshes out-of-date capture itself, saying so.
    let o =
        common::ferry(&home).args(["bundle", "create", "--db"]).arg(&db).arg("--out").arg(&out).output().expect("run");
    assert!(o.status.success(), "{o:?}");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("was out of date") && said.contains("columns added: w"), "{said}");
    common::ferry(&home).args(["track", "--status"]).arg(&db).assert().success();
    common::ferry(&home).arg("untrack").arg(&db).assert().success();
}

/// Untracking never throws away entries nobody has yet, unless told to, and
/// says which and how to keep them.
#[test]
fn untrack_refuses_while_entries_are_unsent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = common::init_node(dir.path(), "field-1", Some(2));
    let db = dir.path().join("app.sqlite3");
    Connection::open(&db).expect("db").execute_batch(SIMPLE).expect("ddl");
    common::ferry(&home).arg("track").arg(&db).assert().success();
    Connection::open(&db).expect("db").execute_batch("INSERT INTO item (id) VALUES (1), (2)").expect("insert");
    let o = common::ferry(&home).arg("untrack").arg(&db).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("2 entries not yet bundled (entries 1–2)") && e.contains("ferry bundle create --db"), "{e}");
    assert!(capture::is_tracked(&Connection::open(&db).expect("db")).expect("tracked"), "nothing was removed");
    common::create_bundle_db(&home, &db, &dir.path().join("out")).expect("a bundle");
    common::ferry(&home).arg("untrack").arg(&db).assert().success();
    // With unsent entries and --discard-unsent it goes, as asked.
    common::ferry(&home).arg("track").arg(&db).assert().success();
    Connection::open(&db).expect("db").execute_batch("INSERT INTO item (id) VALUES (3)").expect("insert");
    common::ferry(&home).args(["untrack", "--discard-unsent"]).arg(&db).assert().success();
}

/// `ferry status --db` on a laptop's database says who tracks it, what
/// waits to be bundled (with the command that bundles it) and which rows
/// from before tracking were never sent (with the command that sends them).
#[test]
fn status_db_shows_what_a_laptop_still_has_to_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = common::init_node(dir.path(), "field-1", Some(2));
    let db = dir.path().join("app.sqlite3");
    let conn = Connection::open(&db).expect("db");
    conn.execute_batch(SIMPLE).expect("ddl");
    conn.execute_batch("INSERT INTO item (id) VALUES (100)").expect("a row from before tracking");
    common::ferry(&home).arg("track").arg(&db).assert().success();
    conn.execute_batch("INSERT INTO item (id) VALUES (1), (2)").expect("insert");
    let status = || {
        let o = common::ferry(&home).args(["status", "--db"]).arg(&db).output().expect("run");
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = status();
    assert!(text.contains("tracked by this node (field-1)"), "{text}");
    assert!(text.contains("entries 1–2 waiting to be bundled") && text.contains("ferry bundle create --db"), "{text}");
    assert!(text.contains("item: 1 row from before tracking") && text.contains("--include-existing=item"), "{text}");
    common::create_bundle_db(&home, &db, &dir.path().join("out")).expect("a bundle");
    common::ferry(&home).args(["track", "--include-existing=item"]).arg(&db).assert().success();
    let text = status();
    assert!(text.contains("entry 3 waiting to be bundled"), "the included row is journalled: {text}");
    assert!(!text.contains("from before tracking"), "{text}");
    common::create_bundle_db(&home, &db, &dir.path().join("out")).expect("a bundle");
    assert!(status().contains("3 recorded, all bundled"));
}

/// A database copied from another computer is refused with the safe ways
/// out, never with advice that would lose its entries.
#[test]
fn a_database_tracked_by_another_node_gets_safe_advice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::init_node(dir.path(), "field-1", Some(1));
    let b = common::init_node(dir.path(), "field-2", Some(2));
    let db = dir.path().join("app.sqlite3");
    Connection::open(&db).expect("db").execute_batch(SIMPLE).expect("ddl");
    common::ferry(&a).arg("track").arg(&db).assert().success();
    let o = common::ferry(&b)
        .args(["bundle", "create", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("run");
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(e.contains("--home") && e.contains("ferry node reissue"), "{e}");
    assert!(!e.contains("untrack"), "no advice that loses data: {e}");
}

#[cfg(unix)]
#[test]
fn crash_before_watermark_bundles_the_same_entries_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = common::init_node(dir.path(), "field-1", None);
    let db = dir.path().join("app.sqlite3");
    Connection::open(&db).expect("db").execute_batch(SIMPLE).expect("ddl");
    common::ferry(&home).arg("track").arg(&db).assert().success();
    Connection::open(&db).expect("db").execute_batch("INSERT INTO item (id) VALUES (1), (2)").expect("insert");
    let out = dir.path().join("out");
    let create = |envs: &[(&str, &str)]| {
        let mut c = common::ferry(&home);
        c.args(["bundle", "create", "--json", "--db"]).arg(&db).arg("--out").arg(&out);
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("run")
    };
    // Find the crash point's number, then crash there.
    let trace = dir.path().join("trace");
    let o = {
        let mut c = common::ferry(&home);
        c.args(["bundle", "create", "--db"]).arg(&db).arg("--out").arg(&trace).env("FERRY_CRASH_TRACE", "1");
        // The traced run bundles into `trace` and advances the watermark; it is rewound below.
        c.output().expect("run")
    };
    let stderr = String::from_utf8_lossy(&o.stderr);
    let n = stderr
        .lines()
        .find(|l| l.contains("database watermark not yet recorded"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("crash point traced")
        .to_owned();
    Connection::open(&db)
        .expect("db")
        .execute_batch("UPDATE _ferry_control SET bundled_seq = 0, bundled_chain = zeroblob(32)")
        .expect("rewind");
    let o = create(&[("FERRY_CRASH_AT", n.as_str())]);
    assert!(!o.status.success(), "the process was killed");
    assert_eq!(capture::watermark(&Connection::open(&db).expect("db")).expect("wm").0, 0, "watermark not advanced");
    let crashed: Vec<PathBuf> = ferry::bundle::find_bundles(std::slice::from_ref(&out)).expect("list");
    assert_eq!(crashed.len(), 1, "the bundle itself was durable");
    let o = create(&[]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!((v["first_seq"].as_u64(), v["last_seq"].as_u64()), (Some(1), Some(2)), "same entries again");
    let a = BundleReader::open(&crashed[0]).expect("open").descriptors()[0].clone();
    let b = BundleReader::open(Path::new(v["file"].as_str().expect("file"))).expect("open").descriptors()[0].clone();
    assert_eq!((a.entries_sha256, a.chain_after), (b.entries_sha256, b.chain_after), "identical entries");
    assert_eq!(capture::watermark(&Connection::open(&db).expect("db")).expect("wm").0, 2);
}

#[test]
fn refresh_reuses_the_stored_selection_even_after_an_excluded_table_is_dropped() {
    let f = fixture("CREATE TABLE a (id TEXT PRIMARY KEY); CREATE TABLE cache (id TEXT PRIMARY KEY);", None);
    let opts = TrackOptions { exclude: Some(vec!["cache".into()]), ..Default::default() };
    capture::track(&f.node, &f.db, &opts).expect("track");
    let unknown = TrackOptions { tables: Some(vec!["nope".into()]), ..Default::default() };
    let e = capture::track(&f.node, &f.db, &unknown).expect_err("unknown table");
    assert!(e.to_string().contains("nope"), "{e}");
    f.conn().execute_batch("DROP TABLE cache; CREATE TABLE b (id TEXT PRIMARY KEY);").expect("migrate");
    let r = f.track();
    assert_eq!(r.tables, vec!["a".to_owned(), "b".to_owned()]);
    f.conn().execute_batch("INSERT INTO b VALUES ('x')").expect("insert");
    assert_eq!(f.summary()[0]["table"], "b");
}

/// The documented `--json` shapes of `track` and `track --status` (docs/CAPTURE.md).
#[allow(dead_code)]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackJson {
    db: String,
    origin: String,
    refreshed: bool,
    tables: Vec<String>,
    excluded: Vec<String>,
    id_block: Option<u32>,
    sequences_raised: std::collections::BTreeMap<String, i64>,
    warnings: Vec<String>,
    fingerprint: String,
    existing: std::collections::BTreeMap<String, u64>,
    included: serde_json::Map<String, serde_json::Value>,
    recovered: serde_json::Map<String, serde_json::Value>,
    unchecked: Vec<String>,
}

#[allow(dead_code)]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusJson {
    db: String,
    tracked: bool,
    origin: Option<String>,
    tables: Vec<String>,
    stale: Vec<String>,
    last_seq: u64,
    bundled_seq: u64,
    problems: Vec<String>,
    notes: Vec<String>,
    existing: serde_json::Map<String, serde_json::Value>,
}

#[test]
fn cli_json_output_has_the_documented_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = common::init_node(dir.path(), "field-1", Some(1));
    let db = dir.path().join("app.sqlite3");
    Connection::open(&db)
        .expect("db")
        .execute_batch("CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT);")
        .expect("ddl");
    let o = common::ferry(&home).args(["track", "--json"]).arg(&db).output().expect("run");
    assert!(o.status.success());
    let t: TrackJson = serde_json::from_slice(&o.stdout).expect("track json");
    assert_eq!(
        (t.tables, t.refreshed, t.sequences_raised.get("a").copied()),
        (vec!["a".to_owned()], false, Some(1 << 32))
    );
    Connection::open(&db).expect("db").execute_batch("INSERT INTO a DEFAULT VALUES").expect("insert");
    let o = common::ferry(&home).args(["track", "--status", "--json"]).arg(&db).output().expect("run");
    let s: StatusJson = serde_json::from_slice(&o.stdout).expect("status json");
    assert!(s.tracked && s.stale.is_empty() && s.problems.is_empty() && s.notes.is_empty());
    assert_eq!((s.last_seq, s.bundled_seq), (1, 0));
}

#[test]
fn virtual_tables_and_their_shadow_tables_are_left_out() {
    let f = fixture(
        "CREATE TABLE doc (id INTEGER PRIMARY KEY, body TEXT); CREATE VIRTUAL TABLE doc_fts USING fts5(body);",
        None,
    );
    let r = f.track();
    assert_eq!(r.tables, vec!["doc".to_owned()]);
    assert!(r.warnings.iter().any(|w| w.starts_with("doc_fts:")), "{:?}", r.warnings);
    f.conn().execute_batch("INSERT INTO doc VALUES (1, 'x'); INSERT INTO doc_fts (body) VALUES ('x');").expect("dml");
    assert_eq!(f.summary().len(), 1);
    assert!(capture::status(&f.db).expect("status").stale.is_empty());
}

#[test]
fn streamed_lines_equal_the_canonical_entry_lines() {
    let f = fixture(
        "CREATE TABLE v (id INTEGER PRIMARY KEY, x, r REAL);
         CREATE TABLE p (a TEXT, b BLOB, note TEXT, PRIMARY KEY (a, b));",
        None,
    );
    f.track();
    let c = f.conn();
    let values = [
        Value::Null,
        Value::Integer(i64::MIN),
        Value::Real(0.1 + 0.2),
        Value::Real(-0.0),
        Value::Real(f64::NEG_INFINITY),
        Value::Text("é\u{1F600}\"\\\u{1}".into()),
        Value::Blob(vec![0, 255, 7]),
    ];
    for (i, v) in values.iter().enumerate() {
        c.execute("INSERT INTO v (id, x, r) VALUES (?1, ?2, ?2)", rusqlite::params![i as i64, v]).expect("insert");
        c.execute("INSERT INTO p (a, b, note) VALUES (?1, ?2, ?3)", rusqlite::params![format!("k{i}"), v, v])
            .expect("insert");
    }
    c.execute_batch(
        "UPDATE v SET x = 1.0 WHERE id = 1; UPDATE v SET id = 100, r = 2 WHERE id = 2; DELETE FROM v WHERE id = 3;
         UPDATE p SET note = 'n', b = x'01' WHERE a = 'k4'; DELETE FROM p WHERE a = 'k5';",
    )
    .expect("dml");
    let last: i64 = c.query_row("SELECT MAX(seq) FROM _ferry_journal", [], |r| r.get(0)).expect("max");
    let canonical: Vec<Vec<u8>> =
        JournalRows::new(&c, "app", 1, last as u64).expect("rows").map(|r| r.expect("row").0.to_line()).collect();
    let mut streamed = Vec::new();
    JournalRows::new(&c, "app", 1, last as u64)
        .expect("rows")
        .for_each_line(|head, bytes| {
            assert_eq!(head.seq as usize, streamed.len() + 1);
            streamed.push(bytes.to_vec());
            Ok(())
        })
        .expect("stream");
    assert_eq!(streamed.len(), canonical.len());
    for (s, c) in streamed.iter().zip(&canonical) {
        assert_eq!(String::from_utf8_lossy(s), String::from_utf8_lossy(c));
    }
}

#[cfg(unix)]
#[test]
fn crash_inside_track_leaves_the_database_untracked_and_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = common::init_node(dir.path(), "field-1", Some(1));
    let db = dir.path().join("app.sqlite3");
    Connection::open(&db)
        .expect("db")
        .execute_batch("CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT); INSERT INTO a (v) VALUES ('x');")
        .expect("ddl");
    let before = dump(&Connection::open(&db).expect("db"));
    let copy = dir.path().join("copy.sqlite3");
    std::fs::copy(&db, &copy).expect("copy");
    let o = common::ferry(&home).arg("track").arg(&copy).env("FERRY_CRASH_TRACE", "1").output().expect("run");
    let n = String::from_utf8_lossy(&o.stderr)
        .lines()
        .find(|l| l.contains("track: capture installed"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .expect("crash point traced");
    let o = common::ferry(&home).arg("track").arg(&db).env("FERRY_CRASH_AT", &n).output().expect("run");
    assert!(!o.status.success(), "killed");
    let c = Connection::open(&db).expect("db");
    assert!(!capture::is_tracked(&c).expect("check"));
    assert_eq!(dump(&c), before, "nothing half-installed");
    let seq: i64 = c.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'a'", [], |r| r.get(0)).expect("seq");
    assert_eq!(seq, 1, "the id block move rolled back too");
    common::ferry(&home).arg("track").arg(&db).assert().success();
}

#[test]
fn text_that_is_not_utf8_arrives_byte_for_byte() {
    let f = fixture("CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT);", None);
    f.track();
    f.conn().execute_batch("INSERT INTO note VALUES (1, CAST(x'41FF42' AS TEXT));").expect("insert");
    let b = f.bundle(None).file.expect("a bundle");
    let lines = bundle_lines(&b);
    assert!(
        String::from_utf8_lossy(&lines[0]).contains(r#""body":{"text_base64":"Qf9C"}"#),
        "{:?}",
        String::from_utf8_lossy(&lines[0])
    );
    let central = f.dir.join("central.sqlite3");
    Connection::open(&central)
        .expect("db")
        .execute_batch("CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT);")
        .expect("ddl");
    let mut trust = ferry::keys::TrustStore { version: 1, keys: Vec::new() };
    trust.add("f", &f.node.signing_key().verifying_key(), &[ferry::keys::Role::Origin]).expect("trust");
    let r = ferry::apply::apply(&central, &[b], &trust, &ferry::apply::ApplyOptions::default(), &mut Silent)
        .expect("apply");
    assert_eq!(r.refused, 0);
    let (kind, hex): (String, String) = Connection::open(&central)
        .expect("open")
        .query_row("SELECT typeof(body), hex(body) FROM note", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("row");
    assert_eq!((kind.as_str(), hex.as_str()), ("text", "41FF42"));
}

#[test]
fn a_control_character_in_an_excluded_table_does_not_block_bundling() {
    let f = fixture(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE scratch (id INTEGER PRIMARY KEY, \"bad\x01name\" TEXT);",
        None,
    );
    capture::track(&f.node, &f.db, &TrackOptions { exclude: Some(vec!["scratch".into()]), ..Default::default() })
        .expect("track");
    f.conn().execute_batch("INSERT INTO item VALUES (1, 'a'); INSERT INTO scratch VALUES (1, 'b');").expect("insert");
    let r = f.bundle(None);
    assert_eq!(r.entries, 1);
}

#[test]
fn an_app_table_named_like_ferrys_own_is_named_at_track() {
    let f = fixture(
        "CREATE TABLE item (id INTEGER PRIMARY KEY);
         CREATE TABLE _ferryboat_trips (id INTEGER PRIMARY KEY);",
        None,
    );
    let o = common::ferry(&f.node.home).arg("track").arg(&f.db).output().expect("track");
    assert!(o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("_ferryboat_trips is not tracked") && e.contains("reserved"), "{e}");
}

#[test]
fn ferrys_own_tables_are_not_taken_for_the_apps() {
    // Capture and the apply ledger in one database (a community server):
    // none of their tables is reported as an app table with a reserved name.
    let dir = tempfile::tempdir().expect("tmp");
    let field = Node::init(&dir.path().join("field"), "field", Some(1)).expect("field");
    let server = Node::init(&dir.path().join("server"), "server", Some(2)).expect("server");
    let ddl = "CREATE TABLE item (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
               CREATE TABLE tag (name TEXT PRIMARY KEY, n INTEGER);";
    let app = dir.path().join("app.sqlite3");
    let central = dir.path().join("central.sqlite3");
    for db in [&app, &central] {
        Connection::open(db).expect("db").execute_batch(ddl).expect("ddl");
    }
    capture::track(&field, &app, &TrackOptions::default()).expect("track field");
    capture::track(&server, &central, &TrackOptions::default()).expect("track server");
    Connection::open(&app)
        .expect("open")
        .execute_batch(
            "INSERT INTO item (name) VALUES ('a'); UPDATE item SET name = 'b'; INSERT INTO tag VALUES ('x', 1);",
        )
        .expect("writes");
    let opts = CreateOptions { out_dir: dir.path().join("out"), since: None };
    let b = capture::create_from_db(&field, &app, &opts, &mut Silent).expect("bundle").file.expect("file");
    let mut trust = server.trust().expect("trust");
    trust.add("field", &field.signing_key().verifying_key(), &[ferry::keys::Role::Origin]).expect("add");
    let r = ferry::apply::apply(&central, &[b], &trust, &ferry::apply::ApplyOptions::default(), &mut Silent)
        .expect("apply");
    assert_eq!(r.refused, 0);
    let conn = Connection::open(&central).expect("open");
    let ferry_tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name LIKE '\\_ferry%' ESCAPE '\\'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert!(ferry_tables > 5, "the ledger is there");
    assert_eq!(capture::reserved_name_tables(&conn).expect("list"), Vec::<String>::new());
}

/// Applies every bundle in `dir` to a fresh database with `ddl` and returns it.
fn central_from(f: &Fixture, ddl: &str, bundles: &Path) -> PathBuf {
    let central = f.dir.join(format!("central-{}.sqlite3", std::process::id()));
    let _ = std::fs::remove_file(&central);
    Connection::open(&central).expect("db").execute_batch(ddl).expect("ddl");
    let files = ferry::bundle::find_bundles(&[bundles.to_path_buf()]).expect("bundles");
    let trust = f.node.trust().expect("trust");
    let r = ferry::apply::apply(&central, &files, &trust, &Default::default(), &mut Silent).expect("apply");
    assert_eq!(r.refused, 0, "{r:?}");
    central
}

/// Every row of every app table, by key.
fn rows_of(db: &Path) -> Vec<String> {
    let c = Connection::open(db).expect("db");
    let mut out = Vec::new();
    for t in ferry::schema::tables(&c).expect("tables") {
        let cols: Vec<String> = t.columns.iter().map(|c| ferry::schema::quote(&c.name)).collect();
        let mut st = c
            .prepare(&format!("SELECT {} FROM {} ORDER BY 1", cols.join(", "), ferry::schema::quote(&t.name)))
            .expect("select");
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("rows");
        for r in rows {
            out.push(format!("{}: {}", t.name, r.expect("row").join("|")));
        }
    }
    out
}

/// Writes made after a migration dropped (or outran) the capture triggers
/// and before `ferry track` refreshed them are found by the refresh and
/// journalled: the servers end up with every write.
#[test]
fn writes_made_while_a_migration_had_capture_off_are_found_and_sent() {
    let before = "CREATE TABLE item (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, qty INTEGER);
                  CREATE TABLE note (code TEXT PRIMARY KEY, body TEXT);";
    let after = "CREATE TABLE item (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, qty INTEGER, colour TEXT);
                 CREATE TABLE note (code TEXT PRIMARY KEY, body TEXT, pinned INTEGER);";
    let f = fixture(before, Some(3));
    f.track();
    let c = f.conn();
    c.execute_batch(
        "INSERT INTO item (name, qty) VALUES ('spade', 1), ('hoe', 2), ('rake', 3);
         INSERT INTO note VALUES ('a', 'first'), ('b', 'second');",
    )
    .expect("writes");
    // A migration: item rebuilt the way Django does it on SQLite (the
    // triggers go with the old table), note given a column in place.
    c.execute_batch(
        "CREATE TABLE new__item (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, qty INTEGER, colour TEXT);
         INSERT INTO new__item (id, name, qty) SELECT id, name, qty FROM item;
         DROP TABLE item; ALTER TABLE new__item RENAME TO item;
         ALTER TABLE note ADD COLUMN pinned INTEGER;",
    )
    .expect("migrate");
    // The app goes on before anyone runs `ferry track`.
    c.execute_batch(
        "INSERT INTO item (name, qty, colour) VALUES ('sickle', 4, 'red');
         UPDATE item SET qty = 20, colour = 'blue' WHERE name = 'hoe';
         DELETE FROM item WHERE name = 'rake';
         UPDATE note SET pinned = 1 WHERE code = 'a';
         INSERT INTO note VALUES ('c', 'third', 0);",
    )
    .expect("writes while capture is off");
    let s = capture::status(&f.db).expect("status");
    assert!(!s.stale.is_empty(), "capture is stale: {s:?}");
    let r = f.track();
    let item = &r.recovered["item"];
    assert_eq!((item.inserted, item.updated, item.deleted), (1, 1, 1), "{:?}", r.recovered);
    let note = &r.recovered["note"];
    // Note 'a' got pinned; note 'c' was captured by the old trigger, which
    // knew no `pinned`: its 0 was found too.
    assert_eq!((note.inserted, note.updated, note.deleted), (0, 2, 0), "{:?}", r.recovered);
    let out = f.dir.join("out");
    let opts = CreateOptions { out_dir: out.clone(), since: None };
    capture::create_from_db(&f.node, &f.db, &opts, &mut Silent).expect("bundle");
    let central = central_from(&f, after, &out);
    assert_eq!(rows_of(&central), rows_of(&f.db), "the server has every write");
    // A second refresh finds nothing more.
    assert!(f.track().recovered.is_empty());
}

/// Rows entered before tracking are counted, and on request journalled,
/// renumbered into the node's id block first (every laptop numbered them
/// 1, 2, 3 …), references following.
#[test]
fn rows_entered_before_tracking_are_counted_and_sent_on_request() {
    let ddl = "CREATE TABLE village (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
               CREATE TABLE household (id INTEGER PRIMARY KEY AUTOINCREMENT,
                                       village_id INTEGER REFERENCES village(id), name TEXT);";
    let mut bundles = Vec::new();
    let mut laptops = Vec::new();
    for (block, names) in [(4, ["Kanyadet", "Achieng"]), (5, ["Siaya", "Kamau"])] {
        let f = fixture(ddl, Some(block));
        f.conn()
            .execute_batch(&format!(
                "INSERT INTO village (name) VALUES ('{}'); INSERT INTO household (village_id, name) VALUES (1, '{}');",
                names[0], names[1]
            ))
            .expect("data before tracking");
        let r = f.track();
        assert_eq!(r.existing.get("village"), Some(&1), "{r:?}");
        assert_eq!(r.existing.get("household"), Some(&1));
        let r = capture::track(&f.node, &f.db, &TrackOptions { include_existing: Some(vec![]), ..Default::default() })
            .expect("include");
        assert_eq!(r.included["village"].rows, 1);
        assert_eq!(r.included["village"].renumbered, 1);
        assert!(r.existing.is_empty(), "nothing left out: {r:?}");
        let (vid, hvid): (i64, i64) = f
            .conn()
            .query_row("SELECT v.id, h.village_id FROM village v, household h", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("ids");
        assert_eq!(vid >> 32, i64::from(block), "moved into the block");
        assert_eq!(hvid, vid, "the reference followed");
        let out = f.dir.join("out");
        capture::create_from_db(&f.node, &f.db, &CreateOptions { out_dir: out.clone(), since: None }, &mut Silent)
            .expect("bundle");
        bundles.push(out);
        laptops.push(f);
    }
    // Both laptops' rows reach a server, none overwriting the other.
    let c = laptops[0].dir.join("both.sqlite3");
    Connection::open(&c).expect("db").execute_batch(ddl).expect("ddl");
    let mut trust = ferry::keys::TrustStore::default();
    for l in &laptops {
        trust
            .add(&format!("{}", l.node.id()), &l.node.signing_key().verifying_key(), &[ferry::keys::Role::Origin])
            .expect("trust");
    }
    let files: Vec<PathBuf> =
        bundles.iter().flat_map(|b| ferry::bundle::find_bundles(std::slice::from_ref(b)).expect("b")).collect();
    let r = ferry::apply::apply(&c, &files, &trust, &Default::default(), &mut Silent).expect("apply");
    assert_eq!((r.refused, r.totals.conflicts), (0, 0), "{r:?}");
    let n: i64 =
        Connection::open(&c).expect("db").query_row("SELECT count(*) FROM household", [], |r| r.get(0)).expect("n");
    assert_eq!(n, 2);
}
