//! What a target database holds from whom: per-origin applied and missing
//! seq ranges, last seen, forks, parked entries, conflicts
//! (`ferry status --db`), and the conflict list (`ferry conflicts --db`).
//! Read-only: opening a database that was never applied to reports nothing.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::session::{self, Dialect, Session};
use crate::args;
use serde::{Deserialize, Serialize};

use crate::journal::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("failed to read {path}")]
    Sqlite {
        path: String,
        #[source]
        source: session::DbError,
    },
    #[error(transparent)]
    Server(#[from] super::server::ServerError),
    #[error("cannot read {path}")]
    NewerLedger {
        path: String,
        #[source]
        source: super::ledger::NewerLedger,
    },
}

/// What became of the entries that reached apply: each entry received is
/// in exactly one of the other counts (`ferry status --db` checks they add
/// up). Counts kept by a ledger older than version 4 are estimated from
/// what it recorded.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Outcomes {
    /// Entries read from bundles, duplicates included.
    pub received: u64,
    /// Their writes are in the database (columns may have lost to newer writes).
    pub applied: u64,
    /// Every value they carried lost to newer writes (see `ferry conflicts`).
    pub superseded: u64,
    /// Waiting for their row, or for their time to come.
    pub parked: u64,
    /// Refused by the database or held back with their row; kept with the reason.
    pub quarantined: u64,
    /// Duplicates of entries applied before.
    pub skipped: u64,
}

impl Outcomes {
    /// Whether every received entry has exactly one outcome.
    pub fn adds_up(&self) -> bool {
        self.received == self.applied + self.superseded + self.parked + self.quarantined + self.skipped
    }
    fn add(&mut self, o: &Outcomes) {
        self.received += o.received;
        self.applied += o.applied;
        self.superseded += o.superseded;
        self.parked += o.parked;
        self.quarantined += o.quarantined;
        self.skipped += o.skipped;
    }
}

/// One origin's state in a target database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginStatus {
    pub origin: String,
    /// The name the reading node's trust store gives the origin (filled by
    /// the caller that has one).
    #[serde(default)]
    pub name: Option<String>,
    /// Applied seq ranges, inclusive, sorted.
    pub applied: Vec<(u64, u64)>,
    /// Seq ranges below the highest applied one that never arrived.
    pub missing: Vec<(u64, u64)>,
    pub entries_applied: u64,
    /// What became of this origin's entries.
    pub outcomes: Outcomes,
    /// Newest entry timestamp applied from this origin.
    pub last_entry: Option<Timestamp>,
    /// When a segment from this origin was last applied here.
    pub last_apply: Option<String>,
    pub forks: u64,
    /// Updates of this origin waiting for their row.
    pub parked: u64,
    /// Entries of this origin dated more than a day ahead of this computer's
    /// clock when they arrived, waiting for that time.
    pub future: u64,
    /// The latest time among them.
    pub future_latest: Option<Timestamp>,
    /// Conflicts in which this origin's write lost.
    pub conflicts: u64,
}

/// `ferry status --db`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DbStatus {
    pub db: String,
    pub origins: Vec<OriginStatus>,
    /// Every origin's outcomes together.
    pub outcomes: Outcomes,
    pub conflicts: u64,
    /// Writes waiting for their row (`_ferry_parked`).
    pub parked: u64,
    /// Entries waiting for their time (dated ahead of this computer's clock).
    pub future: u64,
    /// Rows held out of their table until they can stand there (a missing
    /// parent, a unique value an older row has, a constraint).
    pub held: u64,
    /// Deletes waiting for a row that has not arrived (tombstones without a row).
    pub tombstones_waiting: u64,
    /// Entries the database refused (`_ferry_quarantine`).
    pub quarantined: u64,
    pub forks: u64,
    /// Bundles refused and not applied since.
    pub refused_bundles: u64,
    /// For a database this node tracks (a laptop's, or a community
    /// server's own edits): what the computers downstream confirmed of the
    /// entries sent from it (filled by the caller that has the node home;
    /// `null` otherwise).
    #[serde(default)]
    pub receipts: Option<crate::receipt::confirm::Report>,
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
    /// The losing origin's name in the reading node's trust store.
    #[serde(default)]
    pub loser_name: Option<String>,
    pub loser_seq: Option<u64>,
    pub loser_ts: Option<Timestamp>,
    /// The losing value (JSON), kept so a person can restore it.
    pub loser_value: Option<String>,
    pub winner_origin: Option<String>,
    /// The winning origin's name in the reading node's trust store.
    #[serde(default)]
    pub winner_name: Option<String>,
    pub winner_seq: Option<u64>,
    pub winner_ts: Option<Timestamp>,
    pub detail: String,
    pub recorded_at: String,
}

/// Opens what `--db` names, for reading: a SQLite file (read-only), or a
/// server by its URL; with the name to show for it (never a password).
fn open(path: &Path) -> Result<(Box<dyn Session>, String), StatusError> {
    match crate::target::Target::parse(path.as_os_str()) {
        Ok(crate::target::Target::Server(s)) => Ok((super::server::session(&s)?, s.to_string())),
        _ => {
            let err = |source: rusqlite::Error| StatusError::Sqlite {
                path: path.display().to_string(),
                source: source.into(),
            };
            let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
            Ok((Box::new(c), path.display().to_string()))
        }
    }
}

fn has_ledger(conn: &dyn Session) -> session::Result<bool> {
    super::ledger::table_exists(conn, "_ferry_applied")
}

/// Reads the per-origin status of a target database (a SQLite file or a
/// server URL).
pub fn db_status(path: &Path) -> Result<DbStatus, StatusError> {
    let (conn, name) = open(path)?;
    let err = |source| StatusError::Sqlite { path: name.clone(), source };
    refuse_newer(&*conn, &name)?;
    read_status(&*conn, &name).map_err(err)
}

/// A ledger newer than this ferry may mean other things than it reads.
fn refuse_newer(conn: &dyn Session, name: &str) -> Result<(), StatusError> {
    let path = name.to_owned();
    match super::ledger::check_version(conn) {
        Err(source) => Err(StatusError::Sqlite { path, source }),
        Ok(Err(source)) => Err(StatusError::NewerLedger { path, source }),
        Ok(Ok(())) => Ok(()),
    }
}

fn count(conn: &dyn Session, sql: &str) -> session::Result<u64> {
    Ok(conn.query_one(sql, &[])?.get::<i64>(0)?.max(0) as u64)
}

fn has_column(conn: &dyn Session, table: &str, column: &str) -> session::Result<bool> {
    let sql = match conn.dialect() {
        Dialect::Sqlite => "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        Dialect::Postgres => {
            "SELECT count(*) FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1 AND column_name = ?2"
        }
        Dialect::Mysql => {
            "SELECT count(*) FROM information_schema.columns
             WHERE table_schema = database() AND table_name = ?1 AND column_name = ?2"
        }
    };
    Ok(conn.query_one(sql, args![table, column])?.get::<i64>(0)? > 0)
}

fn has_table(conn: &dyn Session, name: &str) -> session::Result<bool> {
    super::ledger::table_exists(conn, name)
}

pub fn read_status(conn: &dyn Session, db: &str) -> session::Result<DbStatus> {
    let mut s = DbStatus {
        db: db.to_owned(),
        origins: Vec::new(),
        outcomes: Outcomes::default(),
        conflicts: 0,
        parked: 0,
        future: 0,
        held: 0,
        tombstones_waiting: 0,
        quarantined: 0,
        forks: 0,
        refused_bundles: 0,
        receipts: None,
    };
    if !has_ledger(conn)? {
        return Ok(s);
    }
    let counted = has_column(conn, "_ferry_origins", "n_received")?;
    let waiting = has_table(conn, "_ferry_waiting")?;
    let held = has_table(conn, "_ferry_held")?;
    let counters = if counted {
        "n_received, n_applied, n_superseded, n_parked, n_quarantined, n_skipped"
    } else {
        "0, 0, 0, 0, 0, 0"
    };
    #[allow(clippy::type_complexity)]
    let origins: Vec<(u32, String, Option<i64>, Option<String>, [i64; 6])> = conn
        .query(&format!("SELECT id, node, last_ts, last_apply, {counters} FROM _ferry_origins ORDER BY node"), &[])?
        .iter()
        .map(|r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                [r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?],
            ))
        })
        .collect::<session::Result<_>>()?;
    for (id, node, last_ts, last_apply, n) in origins {
        let applied = super::ledger::ranges(conn, id)?;
        let mut missing = Vec::new();
        let mut next = 1u64;
        for &(a, b) in &applied {
            if a > next {
                missing.push((next, a - 1));
            }
            next = b + 1;
        }
        let per =
            |sql: &str| -> session::Result<u64> { Ok(conn.query_one(sql, args![node])?.get::<i64>(0)?.max(0) as u64) };
        let entries_applied = applied.iter().map(|(a, b)| b - a + 1).sum();
        let parked = per("SELECT count(*) FROM _ferry_parked WHERE origin = ?1")?;
        let (future, future_latest) = if waiting {
            let r = conn.query_one("SELECT count(*), max(ts) FROM _ferry_waiting WHERE origin = ?1", args![node])?;
            (r.get::<i64>(0)?.max(0) as u64, r.get::<Option<i64>>(1)?.map(Timestamp))
        } else {
            (0, None)
        };
        let outcomes = if counted {
            let [received, applied, superseded, parked, quarantined, skipped] = n.map(|x| x.max(0) as u64);
            Outcomes { received, applied, superseded, parked, quarantined, skipped }
        } else {
            // An older ledger kept no counts: every applied seq was received once.
            let quarantined = per("SELECT count(*) FROM _ferry_quarantine WHERE origin = ?1")?;
            Outcomes {
                received: entries_applied,
                applied: entries_applied.saturating_sub(parked + quarantined),
                parked,
                quarantined,
                ..Outcomes::default()
            }
        };
        s.outcomes.add(&outcomes);
        s.origins.push(OriginStatus {
            entries_applied,
            applied,
            missing,
            outcomes,
            last_entry: last_ts.map(Timestamp),
            last_apply,
            forks: per("SELECT count(*) FROM _ferry_forks WHERE origin = ?1")?,
            parked,
            future,
            future_latest,
            conflicts: per("SELECT count(*) FROM _ferry_conflicts WHERE loser_origin = ?1")?,
            origin: node,
            name: None,
        });
    }
    s.conflicts = count(conn, "SELECT count(*) FROM _ferry_conflicts")?;
    s.parked = count(conn, "SELECT count(*) FROM _ferry_parked")?;
    if waiting {
        s.future = count(conn, "SELECT count(*) FROM _ferry_waiting")?;
    }
    if held {
        s.held = count(conn, "SELECT count(*) FROM _ferry_held")?;
    }
    s.tombstones_waiting = super::ledger::tombstones_waiting(conn)?;
    s.quarantined = count(conn, "SELECT count(*) FROM _ferry_quarantine")?;
    s.forks = count(conn, "SELECT count(*) FROM _ferry_forks")?;
    s.refused_bundles = if has_column(conn, "_ferry_refused", "name")? {
        count(conn, "SELECT count(DISTINCT coalesce(name, bundle)) FROM _ferry_refused")?
    } else {
        count(conn, "SELECT count(DISTINCT bundle) FROM _ferry_refused")?
    };
    Ok(s)
}

/// One entry or row that waits, is held back or is quarantined
/// (`ferry status --db --list`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub table: String,
    /// The row's key values as a JSON array (when known).
    pub key: Option<String>,
    /// The origin of the entry it stands for (when one does).
    pub origin: Option<String>,
    pub seq: Option<u64>,
    pub reason: String,
    /// When it was recorded (UTC), or the entry's date for entries waiting for their time.
    pub since: Option<String>,
}

/// What waits and why (`ferry status --db --list`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Lists {
    /// Writes waiting for their row.
    pub waiting_for_row: Vec<Item>,
    /// Entries waiting for their time.
    pub waiting_for_time: Vec<Item>,
    /// Rows held back from their table.
    pub held: Vec<Item>,
    /// Entries refused, kept for a person (retry with `bundle apply --retry-quarantined`).
    pub quarantined: Vec<Item>,
}

/// Reads what waits, is held back or is quarantined in a target database.
pub fn lists(path: &Path) -> Result<Lists, StatusError> {
    let (conn, name) = open(path)?;
    let err = |source| StatusError::Sqlite { path: name.clone(), source };
    refuse_newer(&*conn, &name)?;
    read_lists(&*conn).map_err(err)
}

pub fn read_lists(conn: &dyn Session) -> session::Result<Lists> {
    let mut out = Lists::default();
    if !has_ledger(conn)? {
        return Ok(out);
    }
    let key_json = |v: crate::value::Value| -> String {
        match super::ledger::key_from_db(v) {
            crate::value::Value::Text(t) if t.starts_with('[') => t,
            other => serde_json::to_string(&[other]).unwrap_or_default(),
        }
    };
    let reason = if has_column(conn, "_ferry_parked", "reason")? { "reason" } else { "NULL" };
    let sql = format!(
        "SELECT tbl, key, origin, seq, coalesce({reason}, 'its row has not arrived yet') FROM _ferry_parked
         ORDER BY tbl, key, ts"
    );
    for r in conn.query(&sql, &[])? {
        out.waiting_for_row.push(Item {
            table: r.get(0)?,
            key: Some(key_json(r.value(1))),
            origin: Some(r.get(2)?),
            seq: Some(r.get::<i64>(3)? as u64),
            reason: r.get(4)?,
            since: None,
        });
    }
    if has_table(conn, "_ferry_waiting")? {
        for r in conn.query("SELECT origin, seq, ts, entry FROM _ferry_waiting ORDER BY ts", &[])? {
            let entry: String = r.get(3)?;
            let table = crate::journal::Entry::parse(entry.as_bytes()).map(|e| e.table).unwrap_or_default();
            let ts = Timestamp(r.get(2)?);
            out.waiting_for_time.push(Item {
                table,
                key: None,
                origin: Some(r.get(0)?),
                seq: Some(r.get::<i64>(1)? as u64),
                reason: format!("dated {ts}, more than a day ahead of this computer's clock when it came"),
                since: Some(ts.to_rfc3339()),
            });
        }
    }
    if has_table(conn, "_ferry_held")? {
        for r in conn.query("SELECT tbl, key, origin, seq, reason, since FROM _ferry_held ORDER BY since", &[])? {
            out.held.push(Item {
                table: r.get(0)?,
                key: Some(key_json(r.value(1))),
                origin: r.get(2)?,
                seq: r.get::<Option<i64>>(3)?.map(|n| n as u64),
                reason: r.get(4)?,
                since: Some(r.get(5)?),
            });
        }
    }
    let key = if has_column(conn, "_ferry_quarantine", "key")? { "key" } else { "NULL" };
    let sql = format!("SELECT tbl, {key}, origin, seq, reason, recorded_at FROM _ferry_quarantine ORDER BY id");
    for r in conn.query(&sql, &[])? {
        out.quarantined.push(Item {
            table: r.get(0)?,
            key: r.get(1)?,
            origin: Some(r.get(2)?),
            seq: r.get::<Option<i64>>(3)?.map(|n| n as u64),
            reason: r.get(4)?,
            since: Some(r.get(5)?),
        });
    }
    Ok(out)
}

/// Lists the recorded conflicts, oldest first.
pub fn conflicts(path: &Path) -> Result<Vec<Conflict>, StatusError> {
    let (conn, name) = open(path)?;
    let err = |source| StatusError::Sqlite { path: name.clone(), source };
    refuse_newer(&*conn, &name)?;
    read_conflicts(&*conn).map_err(err)
}

pub fn read_conflicts(conn: &dyn Session) -> session::Result<Vec<Conflict>> {
    if !has_ledger(conn)? {
        return Ok(Vec::new());
    }
    let rows = conn.query(
        "SELECT id, kind, tbl, key, col, loser_origin, loser_seq, loser_ts, loser_value,
                winner_origin, winner_seq, winner_ts, detail, recorded_at
         FROM _ferry_conflicts ORDER BY id",
        &[],
    )?;
    rows.iter()
        .map(|r| {
            Ok(Conflict {
                id: r.get(0)?,
                kind: r.get(1)?,
                table: r.get(2)?,
                key: r.get(3)?,
                column: r.get(4)?,
                loser_origin: r.get(5)?,
                loser_name: None,
                loser_seq: r.get::<Option<i64>>(6)?.map(|n| n as u64),
                loser_ts: r.get::<Option<i64>>(7)?.map(Timestamp),
                loser_value: r.get(8)?,
                winner_origin: r.get(9)?,
                winner_name: None,
                winner_seq: r.get::<Option<i64>>(10)?.map(|n| n as u64),
                winner_ts: r.get::<Option<i64>>(11)?.map(Timestamp),
                detail: r.get(12)?,
                recorded_at: r.get(13)?,
            })
        })
        .collect()
}
