//! A tracked target's own edits take part in the merge. A community server
//! both captures its own edits (`ferry track`) and applies others'. Its
//! edits are already in its tables; what the ledger must learn is their
//! versions, or an older write arriving later would overwrite a newer local
//! edit with no conflict recorded, and the community and central servers
//! would end up disagreeing. So every run first *folds* the journal entries
//! captured since the last run into the ledger, as writes of this node
//! (the same versions the central server will see when they arrive there),
//! without touching the tables.
//!
//! The other half is the clock: after applying, the target's capture is
//! told the newest time it applied (`_ferry_control.clock_floor`), and
//! stamps its next edits no earlier, so an edit made after seeing a value
//! is newer than it even when this computer's clock is behind.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Engine, Fail};
use crate::apply::ledger::{self, Hashes};
use crate::apply::merge::Outcome;
use crate::chain::ChainHash;

/// The target's own capture.
#[derive(Debug, Clone)]
pub struct Local {
    /// The node that tracks it.
    pub node: String,
    /// That node's id block, when the target records it.
    pub block: Option<u32>,
    /// The tables it captures.
    pub tracked: HashSet<String>,
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2", params![table, column], |r| {
        r.get(0)
    })
}

impl Local {
    /// The target's capture, `None` when it is not tracked.
    pub fn read(conn: &Connection) -> rusqlite::Result<Option<Local>> {
        if !crate::capture::is_tracked(conn)? || !has_column(conn, "_ferry_control", "origin")? {
            return Ok(None);
        }
        let block_sql = if has_column(conn, "_ferry_control", "id_block")? { "id_block" } else { "NULL" };
        let Some((node, block)) = conn
            .query_row(&format!("SELECT origin, {block_sql} FROM _ferry_control WHERE id = 1"), [], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = conn.prepare("SELECT name FROM _ferry_tables WHERE current = 1 AND tracked = 1")?;
        let tracked = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(Some(Local { node, block: block.and_then(|b| u32::try_from(b).ok()), tracked }))
    }
}

/// Tells a tracked target's capture to stamp its next edits after `newest`
/// (microseconds), plus a millisecond (capture's clock has millisecond
/// steps, so an edit can never tie with what it follows).
pub fn raise_clock_floor(conn: &Connection, newest: i64) -> rusqlite::Result<()> {
    if !crate::capture::is_tracked(conn)? || !has_column(conn, "_ferry_control", "clock_floor")? {
        return Ok(());
    }
    let floor = crate::capture::micros_to_julian(newest.saturating_add(1000));
    // Triggers of capture format 2 read the column; format 3 stamps entries
    // by the floors recorded (`capture::stamp`).
    conn.execute("UPDATE _ferry_control SET clock_floor = max(coalesce(clock_floor, 0), ?1) WHERE id = 1", [floor])?;
    crate::capture::stamp::record_floor(conn, floor)
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<rusqlite::types::Value>> {
    conn.query_row("SELECT value FROM _ferry_meta WHERE key = ?1", [key], |r| r.get(0)).optional()
}

impl<'c> Engine<'c> {
    /// Folds the target's own edits captured since the last run into the
    /// ledger (see the module docs); how many entries.
    pub fn fold_local(&mut self, path: &str) -> Result<u64, Fail> {
        let Some(local) = self.local.clone() else { return Ok(0) };
        // Only a SQLite target captures its own edits.
        let session = self.conn;
        let Some(conn) = session.sqlite() else { return Ok(0) };
        use rusqlite::types::Value as V;
        let from = match meta(conn, "local_folded")? {
            Some(V::Integer(n)) => n.max(0) as u64,
            _ => 0,
        };
        let mut chain = match meta(conn, "local_chain")? {
            Some(V::Blob(b)) => ChainHash::from_slice(&b).unwrap_or(ChainHash::GENESIS),
            _ => ChainHash::GENESIS,
        };
        let last: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM _ferry_journal", [], |r| r.get(0))?;
        let last = last.max(0) as u64;
        if last <= from {
            return Ok(0);
        }
        let first_kept: i64 = conn.query_row("SELECT coalesce(min(seq), 0) FROM _ferry_journal", [], |r| r.get(0))?;
        if from > 0 && (first_kept as u64) > from + 1 {
            // Pruned past what was folded: the chain cannot be followed; fold
            // what is there without hashes.
            chain = ChainHash::GENESIS;
        }
        let oid = self.origin_id(&local.node)?;
        let applied = ledger::ranges(self.conn, oid)?;
        let mut hashes = Hashes::new(self.conn, oid);
        let mut rows = crate::capture::JournalRows::new(conn, path, from + 1, last)
            .map_err(|e| Fail::Refused(crate::verify::error_chain(&e)))?;
        // Entry times continue from the last folded entry's (see
        // `capture::stamp`), kept beside the fold's progress.
        if let Some(V::Real(prev)) = meta(conn, "local_ts")? {
            rows = rows.after(prev);
        }
        let mut n = 0;
        for r in rows.by_ref() {
            let (entry, line) = r.map_err(|e| Fail::Refused(crate::verify::error_chain(&e)))?;
            chain = chain.next(&line);
            let seq = entry.seq;
            let i = applied.partition_point(|r| r.1 < seq);
            if applied.get(i).is_some_and(|r| r.0 <= seq) {
                self.skipped(oid, 1);
                continue;
            }
            let outcome = if self.tables.contains_key(&entry.table) {
                self.apply_entry(oid, &entry, &line, true)?
            } else {
                Outcome::Applied
            };
            self.count(oid, outcome);
            if chain != ChainHash::GENESIS {
                hashes.set(seq, &chain)?;
            }
            n += 1;
        }
        hashes.flush()?;
        ledger::add_range(self.conn, oid, from + 1, last)?;
        conn.execute(
            "INSERT OR REPLACE INTO _ferry_meta VALUES ('local_folded', ?1), ('local_chain', ?2), ('local_ts', ?3)",
            params![last as i64, chain.0.as_slice(), rows.last_time()],
        )?;
        Ok(n)
    }
}
