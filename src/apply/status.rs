//! What a target database holds from whom: per-origin applied and missing
//! seq ranges, last seen, forks, parked entries, conflicts
//! (`ferry status --db`), and the conflict list (`ferry conflicts --db`).
//! Read-only: opening a database that was never applied to reports nothing.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::journal::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("failed to read {path}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot read {path}")]
    NewerLedger {
        path: String,
        #[source]
        source: super::ledger::NewerLedger,
    },
}

/// One origin's state in a target database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginStatus {
    pub origin: String,
    /// Applied seq ranges, inclusive, sorted.
    pub applied: Vec<(u64, u64)>,
    /// Seq ranges below the highest applied one that never arrived.
    pub missing: Vec<(u64, u64)>,
    pub entries_applied: u64,
    /// Newest entry timestamp applied from this origin.
    pub last_entry: Option<Timestamp>,
    /// When a segment from this origin was last applied here.
    pub last_apply: Option<String>,
    pub forks: u64,
    pub parked: u64,
    /// Conflicts in which this origin's write lost.
    pub conflicts: u64,
}

/// `ferry status --db`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DbStatus {
    pub db: String,
    pub origins: Vec<OriginStatus>,
    pub conflicts: u64,
    pub parked: u64,
    /// Deletes waiting for a row that has not arrived (tombstones without a row).
    pub tombstones_waiting: u64,
    pub quarantined: u64,
    pub forks: u64,
    pub refused_bundles: u64,
}

/// One recorded conflict (`ferry conflicts --db`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Conflict {
    pub id: i64,
    pub kind: String,
    pub table: String,
    /// The row's key values as a JSON array.
    pub key: String,
    pub column: Option<String>,
    pub loser_origin: Option<String>,
    pub loser_seq: Option<u64>,
    pub loser_ts: Option<Timestamp>,
    /// The losing value (JSON), kept so a person can restore it.
    pub loser_value: Option<String>,
    pub winner_origin: Option<String>,
    pub winner_seq: Option<u64>,
    pub winner_ts: Option<Timestamp>,
    pub detail: String,
    pub recorded_at: String,
}

fn open(path: &Path) -> Result<Connection, StatusError> {
    let err = |source| StatusError::Sqlite { path: path.display().to_string(), source };
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)
}

fn has_ledger(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = '_ferry_applied')", [], |r| r.get(0))
}

/// Reads the per-origin status of a target database.
pub fn db_status(path: &Path) -> Result<DbStatus, StatusError> {
    let conn = open(path)?;
    let err = |source| StatusError::Sqlite { path: path.display().to_string(), source };
    refuse_newer(&conn, path)?;
    read_status(&conn, &path.display().to_string()).map_err(err)
}

/// A ledger newer than this ferry may mean other things than it reads.
fn refuse_newer(conn: &Connection, path: &Path) -> Result<(), StatusError> {
    let path = path.display().to_string();
    match super::ledger::check_version(conn) {
        Err(source) => Err(StatusError::Sqlite { path, source }),
        Ok(Err(source)) => Err(StatusError::NewerLedger { path, source }),
        Ok(Ok(())) => Ok(()),
    }
}

fn count(conn: &Connection, sql: &str) -> rusqlite::Result<u64> {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
}

pub fn read_status(conn: &Connection, db: &str) -> rusqlite::Result<DbStatus> {
    let mut s = DbStatus {
        db: db.to_owned(),
        origins: Vec::new(),
        conflicts: 0,
        parked: 0,
        tombstones_waiting: 0,
        quarantined: 0,
        forks: 0,
        refused_bundles: 0,
    };
    if !has_ledger(conn)? {
        return Ok(s);
    }
    let origins: Vec<(u32, String, Option<i64>, Option<String>)> = {
        let mut stmt = conn.prepare("SELECT id, node, last_ts, last_apply FROM _ferry_origins ORDER BY node")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, node, last_ts, last_apply) in origins {
        let applied = super::ledger::ranges(conn, id)?;
        let mut missing = Vec::new();
        let mut next = 1u64;
        for &(a, b) in &applied {
            if a > next {
                missing.push((next, a - 1));
            }
            next = b + 1;
        }
        let per = |sql: &str| conn.query_row(sql, [&node], |r| r.get::<_, i64>(0)).map(|n| n as u64);
        s.origins.push(OriginStatus {
            entries_applied: applied.iter().map(|(a, b)| b - a + 1).sum(),
            applied,
            missing,
            last_entry: last_ts.map(Timestamp),
            last_apply,
            forks: per("SELECT count(*) FROM _ferry_forks WHERE origin = ?1")?,
            parked: per("SELECT count(*) FROM _ferry_parked WHERE origin = ?1")?,
            conflicts: per("SELECT count(*) FROM _ferry_conflicts WHERE loser_origin = ?1")?,
            origin: node,
        });
    }
    s.conflicts = count(conn, "SELECT count(*) FROM _ferry_conflicts")?;
    s.parked = count(conn, "SELECT count(*) FROM _ferry_parked")?;
    s.tombstones_waiting = super::ledger::tombstones_waiting(conn)?;
    s.quarantined = count(conn, "SELECT count(*) FROM _ferry_quarantine")?;
    s.forks = count(conn, "SELECT count(*) FROM _ferry_forks")?;
    s.refused_bundles = count(conn, "SELECT count(*) FROM _ferry_refused")?;
    Ok(s)
}

/// Lists the recorded conflicts, oldest first.
pub fn conflicts(path: &Path) -> Result<Vec<Conflict>, StatusError> {
    let conn = open(path)?;
    let err = |source| StatusError::Sqlite { path: path.display().to_string(), source };
    refuse_newer(&conn, path)?;
    read_conflicts(&conn).map_err(err)
}

pub fn read_conflicts(conn: &Connection) -> rusqlite::Result<Vec<Conflict>> {
    if !has_ledger(conn)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT id, kind, tbl, key, col, loser_origin, loser_seq, loser_ts, loser_value,
                winner_origin, winner_seq, winner_ts, detail, recorded_at
         FROM _ferry_conflicts ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Conflict {
            id: r.get(0)?,
            kind: r.get(1)?,
            table: r.get(2)?,
            key: r.get(3)?,
            column: r.get(4)?,
            loser_origin: r.get(5)?,
            loser_seq: r.get::<_, Option<i64>>(6)?.map(|n| n as u64),
            loser_ts: r.get::<_, Option<i64>>(7)?.map(Timestamp),
            loser_value: r.get(8)?,
            winner_origin: r.get(9)?,
            winner_seq: r.get::<_, Option<i64>>(10)?.map(|n| n as u64),
            winner_ts: r.get::<_, Option<i64>>(11)?.map(Timestamp),
            detail: r.get(12)?,
            recorded_at: r.get(13)?,
        })
    })?;
    rows.collect()
}
