//! The apply ledger's row-state decoders, reached through their public
//! door (`ledger::Rows`) the way a damaged or hand-edited target database
//! reaches them: the input becomes a grouped ledger row (32 integer keys'
//! states) or a `_ferry_rows` state, then states are loaded, rewritten and
//! flushed. Errors are fine; panics are not.
#![no_main]

use std::cell::RefCell;

use ferry::apply::ledger::{self, Rows};
use ferry::value::Value;
use libfuzzer_sys::fuzz_target;
use rusqlite::Connection;

thread_local! {
    static DB: RefCell<Option<(Connection, String)>> = const { RefCell::new(None) };
}

/// An in-memory target with one integer-keyed and one text-keyed table and
/// a current ledger; the name of the integer table's group ledger.
fn setup() -> (Connection, String) {
    let conn = Connection::open_in_memory().expect("db");
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, a, b); CREATE TABLE u (k TEXT PRIMARY KEY, a);")
        .expect("tables");
    let tables = ferry::schema::tables(&conn).expect("schema");
    ledger::prepare(&conn, &tables).expect("ledger");
    let id: i64 = conn.query_row("SELECT id FROM _ferry_row_tables WHERE tbl = 't'", [], |r| r.get(0)).expect("id");
    (conn, format!("_ferry_groups_{id}"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, blob)) = data.split_first() else { return };
    DB.with(|db| {
        let mut db = db.borrow_mut();
        let (conn, groups) = db.get_or_insert_with(setup);
        let _ = conn.execute_batch("SAVEPOINT f");
        if mode & 1 == 0 {
            let _ = conn.execute(&format!("INSERT OR REPLACE INTO {groups} (grp, states) VALUES (0, ?1)"), [blob]);
        } else {
            let flags = i64::from(mode >> 1);
            let _ = conn.execute(
                "INSERT OR REPLACE INTO _ferry_rows (tbl, key, flags, st) VALUES ('u', 'k', ?1, ?2)",
                rusqlite::params![flags, blob],
            );
        }
        if let Ok(rows) = Rows::new(conn) {
            for key in
                [Value::Integer(0), Value::Integer(i64::from(mode % 32)), Value::Integer(31), Value::Text("k".into())]
            {
                let tbl = if matches!(key, Value::Text(_)) { "u" } else { "t" };
                if let Ok(Some(st)) = rows.load_row(tbl, &key) {
                    // A state that decoded must encode and decode again.
                    let _ = rows.save_row(tbl, &key, &st);
                    let _ = rows.flush();
                    rows.discard();
                    assert_eq!(rows.load_row(tbl, &key).ok().flatten().as_ref(), Some(&st));
                }
            }
            let _ = rows.flush();
        }
        let _ = conn.execute_batch("ROLLBACK TO f; RELEASE f");
    });
});
