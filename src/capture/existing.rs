//! Rows ferry did not journal, accounted for.
//!
//! - **Rows entered before tracking.** When a table starts being tracked,
//!   the keys of the rows it already holds are recorded in
//!   `_ferry_baseline`: other nodes may not have them, and `ferry track`
//!   says how many. `ferry track --include-existing` journals them as
//!   inserts so they travel like any other; rows with integer ids below
//!   every id block (ids 1, 2, 3 … that every laptop hands out) first get
//!   ids in this node's block, every reference following, so they cannot
//!   collide with another laptop's.
//! - **Writes made while capture was off.** A migration that rebuilds a
//!   table (Django's way of altering one on SQLite) drops its capture
//!   triggers; one that adds a column leaves triggers that do not know it.
//!   Writes made between the migration and the next `ferry track` would be
//!   missed. `ferry track` finds them: it replays the journal into the state
//!   it implies for each table whose capture had gone stale, compares that
//!   with the table as it is, and journals the difference (rows inserted,
//!   values changed, rows deleted), stamped with the time of the refresh.
//!   Rows recorded in the baseline, and values another node sent (`bundle
//!   apply` on a server that also tracks), are not the node's own edits and
//!   are left out.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{params, params_from_iter, Connection};

use super::track::{Layout, TS_SQL};
use crate::schema::{quote, Table};
use crate::value::Value;

/// The baseline table (see the module docs).
pub(crate) const BASELINE_SQL: &str = "CREATE TABLE IF NOT EXISTS _ferry_baseline (
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;";

/// A row's key as the baseline and the comparisons hold it.
fn key_text(vals: &[Value]) -> String {
    serde_json::to_string(vals).unwrap_or_default()
}

/// A row: its key values (key order) and every column's value by name.
type KeyedRow = (Vec<Value>, Vec<(String, Value)>);

/// Every row of `t`.
fn rows(conn: &Connection, t: &Table) -> rusqlite::Result<Vec<KeyedRow>> {
    let keys: Vec<String> = t.pk_columns().iter().map(|c| c.name.clone()).collect();
    let cols: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
    let select: Vec<String> = keys.iter().chain(&cols).map(|c| quote(c)).collect();
    let mut stmt = conn.prepare(&format!("SELECT {} FROM {}", select.join(", "), quote(&t.name)))?;
    let (nk, nc) = (keys.len(), cols.len());
    let rows = stmt.query_map([], |r| {
        let v = |i: usize| r.get::<_, rusqlite::types::Value>(i).map(Value::from);
        let key = (0..nk).map(v).collect::<Result<Vec<_>, _>>()?;
        let row = (0..nc).map(|i| Ok((cols[i].clone(), v(nk + i)?))).collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((key, row))
    })?;
    rows.collect()
}

/// The node id of the node tracking `conn`'s database.
fn this_node(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row("SELECT origin FROM _ferry_control WHERE id = 1", [], |r| r.get(0))
}

/// Whether a server's apply ledger holds this row from another node.
fn sent_by_others(conn: &Connection, t: &Table, key: &[Value], me: &str) -> rusqlite::Result<bool> {
    let lkey = crate::apply::engine::ledger_key(key);
    Ok(match crate::apply::ledger::lookup(conn, &t.name, &lkey)? {
        Some((st, origins)) => st.ins.is_some_and(|v| origins.get(&v.origin).is_some_and(|o| o != me)),
        None => false,
    })
}

/// Records the rows `t` holds now as rows ferry has not journalled (the
/// first time `t` is tracked), except rows other nodes sent; how many.
pub(crate) fn record_baseline(conn: &Connection, t: &Table) -> rusqlite::Result<u64> {
    let me = this_node(conn)?;
    let mut n = 0;
    let mut insert = conn.prepare_cached("INSERT OR IGNORE INTO _ferry_baseline (tbl, key) VALUES (?1, ?2)")?;
    for (key, _) in rows(conn, t)? {
        if !sent_by_others(conn, t, &key, &me)? {
            n += insert.execute(params![t.name, key_text(&key)])? as u64;
        }
    }
    Ok(n)
}

/// Rows recorded as never journalled, per table.
/// (None recorded when capture was installed by a ferry without a baseline.)
pub(crate) fn baseline_counts(conn: &Connection) -> rusqlite::Result<BTreeMap<String, u64>> {
    let has: bool =
        conn.query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE name = '_ferry_baseline'", [], |r| r.get(0))?;
    if !has {
        return Ok(BTreeMap::new());
    }
    let mut stmt = conn.prepare("SELECT tbl, count(*) FROM _ferry_baseline GROUP BY tbl ORDER BY tbl")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// Appends one journal row for layout `tid`/`l`: an insert of `row`, an
/// update of the columns in `row` of the row keyed `key`, or a delete.
fn journal(
    conn: &Connection,
    tid: i64,
    l: &Layout,
    op: i64,
    key: &[Value],
    row: &[(String, Value)],
) -> rusqlite::Result<()> {
    let mut cols = vec!["tid".to_owned(), "op".to_owned()];
    let mut vals: Vec<Value> = vec![Value::Integer(tid), Value::Integer(op)];
    if op != 1 {
        for (j, v) in key.iter().enumerate() {
            cols.push(format!("k{j}"));
            vals.push(v.clone());
        }
    }
    if op == 2 {
        let mask: String = l.columns.iter().map(|c| if row.iter().any(|(x, _)| x == c) { '1' } else { '0' }).collect();
        cols.push("mask".into());
        vals.push(Value::Text(mask));
    }
    if op != 3 {
        for (c, v) in row {
            if let Some(i) = l.columns.iter().position(|x| x == c) {
                cols.push(format!("v{i}"));
                vals.push(v.clone());
            }
        }
    }
    let marks: Vec<String> = (1..=vals.len()).map(|i| format!("?{i}")).collect();
    conn.execute(
        &format!("INSERT INTO _ferry_journal (ts, {}) VALUES ({TS_SQL}, {})", cols.join(", "), marks.join(", ")),
        params_from_iter(vals.iter()),
    )?;
    Ok(())
}

/// What `include` did for one table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Included {
    pub rows: u64,
    /// Rows given ids in this node's block first.
    pub renumbered: u64,
}

/// Journals the rows of `t` recorded in the baseline as inserts (see the
/// module docs), renumbering those below every id block into `block`
/// first (through `renumber`, applied by the caller before calling
/// [`journal_baseline`]). Returns the ids to renumber.
pub(crate) fn baseline_ids_below_blocks(conn: &Connection, t: &Table) -> rusqlite::Result<Vec<i64>> {
    let pk = t.pk_columns();
    if pk.len() != 1 || !pk[0].decl_type.eq_ignore_ascii_case("integer") {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare("SELECT key FROM _ferry_baseline WHERE tbl = ?1")?;
    let keys: Vec<String> = stmt.query_map([&t.name], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_str::<Vec<Value>>(k).ok())
        .filter_map(|k| match k.as_slice() {
            [Value::Integer(id)] if (0..(1i64 << 32)).contains(id) => Some(*id),
            _ => None,
        })
        .collect())
}

/// Journals the baseline rows of `t` (as they are now, after any
/// renumbering) as inserts, and forgets them; how many.
pub(crate) fn journal_baseline(
    conn: &Connection,
    t: &Table,
    tid: i64,
    l: &Layout,
    renumbered: &HashMap<i64, i64>,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare("SELECT key FROM _ferry_baseline WHERE tbl = ?1")?;
    let keys: HashSet<String> = stmt
        .query_map([&t.name], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|k| match serde_json::from_str::<Vec<Value>>(&k).ok().as_deref() {
            Some([Value::Integer(id)]) => renumbered.get(id).map_or(k, |new| key_text(&[Value::Integer(*new)])),
            _ => k,
        })
        .collect();
    let mut n = 0;
    for (key, row) in rows(conn, t)? {
        if keys.contains(&key_text(&key)) {
            journal(conn, tid, l, 1, &key, &row)?;
            n += 1;
        }
    }
    conn.execute("DELETE FROM _ferry_baseline WHERE tbl = ?1", [&t.name])?;
    Ok(n)
}

/// What [`reconcile`] found in one table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Recovered {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// The state the journal implies for the table named `name`: key text →
/// (key values, columns journalled). `None` when the journal no longer
/// starts at entry 1 (pruned): the state cannot be known.
#[allow(clippy::type_complexity)]
fn journalled_state(
    conn: &Connection,
    path: &str,
    name: &str,
) -> Result<Option<HashMap<String, (Vec<Value>, BTreeMap<String, Value>)>>, super::CaptureError> {
    let err = super::sql_err(path);
    let (first, last): (i64, i64) = conn
        .query_row("SELECT coalesce(min(seq), 1), coalesce(max(seq), 0) FROM _ferry_journal", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(&err)?;
    if first > 1 {
        return Ok(None);
    }
    let mut state: HashMap<String, (Vec<Value>, BTreeMap<String, Value>)> = HashMap::new();
    for r in super::JournalRows::new(conn, path, 1, last.max(0) as u64)? {
        let (e, _) = r?;
        if e.table != name {
            continue;
        }
        let key: Vec<Value> = e.pk.0.iter().map(|(_, v)| v.clone()).collect();
        let k = key_text(&key);
        match e.op {
            crate::journal::Op::Insert => {
                let row = e.fields.iter().flat_map(|f| f.0.iter().cloned()).collect();
                state.insert(k, (key, row));
            }
            crate::journal::Op::Update => {
                let fields: Vec<(String, Value)> = e.fields.iter().flat_map(|f| f.0.iter().cloned()).collect();
                // The older form of a key change: an update whose fields hold the new key.
                let moved: Vec<Value> = e
                    .pk
                    .0
                    .iter()
                    .map(|(c, v)| fields.iter().find(|(x, _)| x == c).map_or_else(|| v.clone(), |(_, nv)| nv.clone()))
                    .collect();
                let mut entry = state.remove(&k).unwrap_or_else(|| (key.clone(), BTreeMap::new()));
                for (c, v) in fields {
                    if !e.pk.0.iter().any(|(pc, _)| *pc == c) {
                        entry.1.insert(c, v);
                    }
                }
                entry.0 = moved.clone();
                state.insert(key_text(&moved), entry);
            }
            crate::journal::Op::Delete => {
                state.remove(&k);
            }
        }
    }
    Ok(Some(state))
}

/// Journals what was written to `t` while its capture was off (see the
/// module docs), with layout `tid`/`l`. `None` when the journal was
/// pruned and the table cannot be checked.
pub(crate) fn reconcile(
    conn: &Connection,
    path: &str,
    t: &Table,
    tid: i64,
    l: &Layout,
) -> Result<Option<Recovered>, super::CaptureError> {
    let err = super::sql_err(path);
    let Some(mut expected) = journalled_state(conn, path, &t.name)? else { return Ok(None) };
    let me = this_node(conn).map_err(&err)?;
    let defaults: HashMap<String, Value> = {
        let mut stmt = conn.prepare("SELECT name, dflt_value FROM pragma_table_info(?1)").map_err(&err)?;
        let rows: Vec<(String, Option<String>)> = stmt
            .query_map([&t.name], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(&err)?
            .collect::<Result<_, _>>()
            .map_err(&err)?;
        rows.into_iter()
            .map(|(c, d)| {
                let v = d
                    .filter(|e| !e.to_ascii_uppercase().contains("CURRENT"))
                    .and_then(|e| {
                        conn.query_row(&format!("SELECT {e}"), [], |r| r.get::<_, rusqlite::types::Value>(0)).ok()
                    })
                    .map_or(Value::Null, Value::from);
                (c, v)
            })
            .collect()
    };
    let baseline: HashSet<String> = {
        let mut stmt = conn.prepare("SELECT key FROM _ferry_baseline WHERE tbl = ?1").map_err(&err)?;
        let keys = stmt.query_map([&t.name], |r| r.get(0)).map_err(&err)?.collect::<Result<_, _>>().map_err(&err)?;
        keys
    };
    // Columns whose value another node sent (a server that also applies):
    // not this node's edits.
    let applies =
        crate::apply::ledger::version(conn).map_err(|e| err(e.into()))? == Some(crate::apply::ledger::LEDGER_VERSION);
    let numbers = if applies {
        crate::apply::ledger::column_numbers(conn).map_err(|e| err(e.into()))?.remove(&t.name).unwrap_or_default()
    } else {
        Vec::new()
    };
    let sent_columns = |key: &[Value]| -> rusqlite::Result<HashSet<String>> {
        let lkey = crate::apply::engine::ledger_key(key);
        Ok(match crate::apply::ledger::lookup(conn, &t.name, &lkey)? {
            Some((st, origins)) => st
                .cols
                .iter()
                .filter(|(_, v)| origins.get(&v.origin).is_some_and(|o| *o != me))
                .filter_map(|(no, _)| numbers.iter().find(|(_, n)| n == no).map(|(c, _)| c.clone()))
                .collect(),
            None => HashSet::new(),
        })
    };
    let is_key = |c: &str| t.pk_columns().iter().any(|p| p.name == c);
    let mut found = Recovered::default();
    for (key, row) in rows(conn, t).map_err(&err)? {
        let k = key_text(&key);
        let non_key: Vec<(String, Value)> = row.into_iter().filter(|(c, _)| !is_key(c)).collect();
        match expected.remove(&k) {
            Some((_, journalled)) => {
                let sent = sent_columns(&key).map_err(&err)?;
                let changed: Vec<(String, Value)> = non_key
                    .into_iter()
                    .filter(|(c, v)| {
                        let was = journalled.get(c).or_else(|| defaults.get(c)).cloned().unwrap_or(Value::Null);
                        was != *v && !sent.contains(c)
                    })
                    .collect();
                if !changed.is_empty() {
                    journal(conn, tid, l, 2, &key, &changed).map_err(&err)?;
                    found.updated += 1;
                }
            }
            None if baseline.contains(&k) || sent_by_others(conn, t, &key, &me).map_err(&err)? => {}
            None => {
                let mut all = non_key;
                for (c, v) in t.pk_columns().iter().zip(&key) {
                    all.push((c.name.clone(), v.clone()));
                }
                journal(conn, tid, l, 1, &key, &all).map_err(&err)?;
                found.inserted += 1;
            }
        }
    }
    for (_, (key, _)) in expected {
        // Gone while capture was off, unless a delete another node sent removed it.
        let deleted_by_others =
            match crate::apply::ledger::lookup(conn, &t.name, &crate::apply::engine::ledger_key(&key))
                .map_err(|e| err(e.into()))?
            {
                Some((st, origins)) => st.del.is_some_and(|v| origins.get(&v.origin).is_some_and(|o| *o != me)),
                None => false,
            };
        if !deleted_by_others {
            journal(conn, tid, l, 3, &key, &[]).map_err(&err)?;
            found.deleted += 1;
        }
    }
    Ok(Some(found))
}
