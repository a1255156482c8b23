//! Migrations of older ledger layouts to the current one, run by
//! [`super::prepare`] inside the first apply run of a newer ferry.

/// The first ledger layout (no `_ferry_meta`): `_ferry_rows (tbl, key,
/// present, ins, del, cols, parked)` with 20-byte big-endian versions.
pub mod v1 {
    use rusqlite::Connection;

    use std::collections::HashMap;

    use super::super::{column_number, damaged, row_table, Cols, RowState, Rows, Ver};
    use crate::value::Value;

    const VER_LEN: usize = 20;
    const SAME_AS_INS: u16 = 0x8000;

    fn ver(b: &[u8]) -> Option<Ver> {
        Some(Ver {
            ts: i64::from_be_bytes(b.get(0..8)?.try_into().ok()?),
            origin: u32::from_be_bytes(b.get(8..12)?.try_into().ok()?),
            seq: u64::from_be_bytes(b.get(12..VER_LEN)?.try_into().ok()?),
        })
    }

    fn cols(mut b: &[u8], ins: Option<Ver>) -> Option<Vec<(String, Ver)>> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let head = u16::from_be_bytes(b.get(0..2)?.try_into().ok()?);
            let n = (head & !SAME_AS_INS) as usize;
            let name = std::str::from_utf8(b.get(2..2 + n)?).ok()?.to_owned();
            let (v, used) = if head & SAME_AS_INS != 0 { (ins?, 0) } else { (ver(b.get(2 + n..)?)?, VER_LEN) };
            out.push((name, v));
            b = &b[2 + n + used..];
        }
        Some(out)
    }

    /// Moves the version 1 `_ferry_rows` out of the way of the current one.
    /// Not ALTER TABLE … RENAME: that re-checks every view and trigger of
    /// the app's schema and fails on one the app left broken.
    pub fn set_aside(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("CREATE TABLE _ferry_rows_v1 AS SELECT * FROM _ferry_rows; DROP TABLE _ferry_rows;")
    }

    /// Copies every row of `_ferry_rows_v1` (see [`set_aside`]) into the
    /// current layout and drops it. Rows it cannot decode stop the migration
    /// (and so the apply run) with an error naming the table and key:
    /// guessing would change what wins.
    pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
        let mut tables = conn.prepare("SELECT DISTINCT tbl FROM _ferry_rows_v1")?;
        for t in tables.query_map([], |r| r.get::<_, String>(0))? {
            // Tables the target no longer has keep their keys too.
            row_table(conn, &t?)?;
        }
        let rows = Rows::new(conn)?;
        let mut numbers: HashMap<(String, String), u32> = HashMap::new();
        let mut stmt = conn.prepare("SELECT tbl, key, present, ins, del, cols, parked FROM _ferry_rows_v1")?;
        let mut it = stmt.query([])?;
        while let Some(r) = it.next()? {
            let tbl: String = r.get(0)?;
            let key = Value::from(r.get::<_, rusqlite::types::Value>(1)?);
            let bad = |what: &str| {
                let key = serde_json::to_string(&key).unwrap_or_default();
                damaged(format!("the version 1 ledger row of key {key} of table {tbl:?} has a bad {what}"))
            };
            let version = |i: usize, what: &str| -> rusqlite::Result<Option<Ver>> {
                match r.get_ref(i)?.as_blob_or_null().map_err(|_| bad(what))? {
                    None => Ok(None),
                    Some(b) if b.len() == VER_LEN => Ok(ver(b)),
                    Some(_) => Err(bad(what)),
                }
            };
            let (ins, del) = (version(3, "insert version")?, version(4, "delete version")?);
            let blob = r.get_ref(5)?.as_blob().map_err(|_| bad("column list"))?;
            let mut numbered = Cols::new();
            for (name, v) in cols(blob, ins).ok_or_else(|| bad("column list"))? {
                let no = match numbers.get(&(tbl.clone(), name.clone())) {
                    Some(no) => *no,
                    None => {
                        let no = column_number(conn, &tbl, &name)?;
                        numbers.insert((tbl.clone(), name), no);
                        no
                    }
                };
                numbered.push((no, v));
            }
            let st = RowState {
                present: r.get::<_, i64>(2)? != 0,
                ins,
                del,
                cols: numbered,
                parked: r.get::<_, i64>(6)? != 0,
                held: false,
            };
            rows.save_row(&tbl, &key, &st)?;
        }
        rows.flush()?;
        drop(it);
        drop(stmt);
        drop(rows);
        conn.execute_batch("DROP TABLE _ferry_rows_v1")
    }
}

/// Version 2: one row per single-integer key in `_ferry_rows_<id> (key
/// INTEGER PRIMARY KEY, flags, st)`, versions absolute. `_ferry_rows` (every
/// other key) is the same in version 3.
pub mod v2 {
    use rusqlite::Connection;

    use super::super::{create_group_table, damaged, decode_state, groups, row_tables, table_exists, Rows};
    use crate::value::Value;

    /// Copies every `_ferry_rows_<id>` into its grouped ledger, in key order
    /// (so each group is written once), and drops it. A state it cannot
    /// decode stops the migration with an error naming the table and key.
    pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
        let tables = row_tables(conn)?;
        for (_, id) in &tables {
            // Tables the target no longer has keep their keys too.
            create_group_table(conn, *id)?;
        }
        let rows = Rows::new(conn)?;
        for (tbl, id) in &tables {
            let old = format!("_ferry_rows_{id}");
            if !table_exists(conn, &old)? {
                continue;
            }
            let mut stmt = conn.prepare(&format!("SELECT key, flags, st FROM {old} ORDER BY key"))?;
            let mut it = stmt.query([])?;
            while let Some(r) = it.next()? {
                let key: i64 = r.get(0)?;
                let st = r.get_ref(2)?.as_blob().ok().and_then(|b| decode_state(r.get(1).ok()?, b, groups::ZERO));
                let st = st.ok_or_else(|| {
                    damaged(format!("the version 2 ledger state of key {key} of table {tbl:?} cannot be decoded"))
                })?;
                rows.save_row(tbl, &Value::Integer(key), &st)?;
            }
            rows.flush()?;
            drop(it);
            drop(stmt);
            conn.execute_batch(&format!("DROP TABLE {old}"))?;
        }
        Ok(())
    }
}

/// Version 3: chain hashes only at segment boundaries and every 256th seq,
/// in `_ferry_chain (origin, seq, hash)`; no outcome counters, held rows,
/// waiting entries; parked and quarantined rows without the columns
/// version 4 added.
pub mod v3 {
    use rusqlite::{params, Connection};

    use super::super::hashes::Hashes;
    use super::super::{ranges, table_exists};
    use crate::chain::ChainHash;

    /// Columns version 4 added to tables older ledgers already have
    /// (`CREATE TABLE IF NOT EXISTS` does not add them).
    const ADDED: &[(&str, &str, &str)] = &[
        ("_ferry_origins", "n_received", "INTEGER NOT NULL DEFAULT 0"),
        ("_ferry_origins", "n_applied", "INTEGER NOT NULL DEFAULT 0"),
        ("_ferry_origins", "n_superseded", "INTEGER NOT NULL DEFAULT 0"),
        ("_ferry_origins", "n_parked", "INTEGER NOT NULL DEFAULT 0"),
        ("_ferry_origins", "n_quarantined", "INTEGER NOT NULL DEFAULT 0"),
        ("_ferry_origins", "n_skipped", "INTEGER NOT NULL DEFAULT 0"),
        ("_ferry_parked", "counted", "INTEGER NOT NULL DEFAULT 1"),
        ("_ferry_parked", "reason", "TEXT"),
        ("_ferry_quarantine", "key", "TEXT"),
        ("_ferry_forks", "entries", "INTEGER NOT NULL DEFAULT 0"),
        ("_ferry_refused", "name", "TEXT"),
    ];

    /// Adds the columns of [`ADDED`] that are missing.
    pub fn add_columns(conn: &Connection) -> rusqlite::Result<()> {
        for (table, column, decl) in ADDED {
            if !table_exists(conn, table)? {
                continue;
            }
            let has: bool = conn.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                params![table, column],
                |r| r.get(0),
            )?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
            }
        }
        Ok(())
    }

    /// Moves the checkpoint chain hashes into `_ferry_hashes` and gives
    /// every origin its outcome counters, estimated from what the old ledger
    /// kept: every applied entry was received; parked and quarantined are
    /// what the tables hold; the rest counts as applied.
    pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
        if table_exists(conn, "_ferry_chain")? {
            let mut stmt = conn.prepare("SELECT origin, seq, hash FROM _ferry_chain ORDER BY origin, seq")?;
            let mut rows = stmt.query([])?;
            let mut current: Option<(u32, Hashes)> = None;
            while let Some(r) = rows.next()? {
                let origin: u32 = r.get(0)?;
                let seq = r.get::<_, i64>(1)? as u64;
                let hash: Vec<u8> = r.get(2)?;
                let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else { continue };
                if current.as_ref().map(|c| c.0) != Some(origin) {
                    if let Some((_, mut h)) = current.take() {
                        h.flush()?;
                    }
                    current = Some((origin, Hashes::new(conn, origin)));
                }
                if let Some((_, h)) = current.as_mut() {
                    if seq > 0 {
                        h.set(seq, &ChainHash(hash))?;
                    }
                }
            }
            if let Some((_, mut h)) = current {
                h.flush()?;
            }
            drop(rows);
            drop(stmt);
            conn.execute_batch("DROP TABLE _ferry_chain")?;
        }
        let origins: Vec<(u32, String)> = {
            let mut stmt = conn.prepare("SELECT id, node FROM _ferry_origins")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, node) in origins {
            let received: u64 = ranges(conn, id)?.iter().map(|(a, b)| b - a + 1).sum();
            let count = |sql: &str| conn.query_row(sql, [&node], |r| r.get::<_, i64>(0)).map(|n| n as u64);
            let parked = count("SELECT count(*) FROM _ferry_parked WHERE origin = ?1")?;
            let quarantined = count("SELECT count(*) FROM _ferry_quarantine WHERE origin = ?1")?;
            let applied = received.saturating_sub(parked + quarantined);
            conn.execute(
                "UPDATE _ferry_origins SET n_received = ?2, n_applied = ?3, n_parked = ?4, n_quarantined = ?5
                 WHERE id = ?1",
                params![id, received as i64, applied as i64, parked as i64, quarantined as i64],
            )?;
        }
        Ok(())
    }
}
