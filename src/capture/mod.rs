//! Capture: `ferry track` installs triggers into an app's SQLite database so
//! that every committed row change lands in a journal table inside that same
//! database (see `docs/CAPTURE.md`).
//!
//! Everything ferry adds is named `_ferry…`:
//!
//! - `_ferry_control`: one row: the no-echo switch `applying`, the origin node,
//!   the schema fingerprint at the last `track`, the table selection, and the
//!   watermark (last bundled seq and its chain hash).
//! - `_ferry_tables`: one row per table layout (`tid`): table name, column
//!   names in declaration order, primary-key positions. A layout never
//!   changes once written, so journal rows stay readable after migrations.
//! - `_ferry_journal`: one row per captured change: `seq` (the rowid, so
//!   max + 1: gap-free and in commit order), `ts` (`julianday('now')` when
//!   captured; the time entries carry is worked out in journal order when
//!   they are read, see [`stamp`]),
//!   `op`, `tid`, `mask` (updates: `'0'`/`'1'` per column), `k0…` (old key
//!   values), `v0…` (column values). The `k`/`v` columns have no declared
//!   type, so SQLite stores every value exactly as the app wrote it (storage
//!   class and bits), with no text conversion.
//! - triggers `_ferry_ins_T`, `_ferry_upd_T`, `_ferry_del_T` on each tracked table.
//!
//! [`JournalRows`] turns journal rows into canonical entry lines;
//! [`create_from_db`] bundles them.

mod existing;
mod read;
mod reissue;
mod renumber;
pub(crate) mod stamp;
mod track;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use existing::{Included, Recovered};
pub use read::{create_from_db, create_from_db_resuming, JournalRows, Resume};
pub use reissue::{reissue, ForkCheck, ReissueError, ReissueReport};
pub(crate) use track::micros_to_julian;
pub use track::{status, track, untrack, Status, TrackOptions, TrackReport, DEFAULT_EXCLUDES};

use crate::bundle::create::CreateError;
use crate::chain::ChainHash;

/// The layout version of ferry's objects inside an app database.
/// 2: a key change is journalled as a delete of the old key and an insert
/// of the new row; entries are stamped in journal order (`clock_floor`);
/// `_ferry_control` records the node's id block.
/// 3: the triggers record the clock as it is, and entries are stamped in
/// journal order when read ([`stamp`]; floors in `_ferry_floors`, the
/// watermark's time in `_ferry_control.bundled_ts`).
pub const CAPTURE_FORMAT: i64 = 3;

/// Errors of capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("failed to use the database {path}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no database at {path} (give the app's SQLite file)")]
    NoDatabase { path: String },
    #[error("{path} is not tracked: run `ferry track {path}` first")]
    NotTracked { path: String },
    #[error(
        "{path} is tracked by node {tracked_by}, not by this node ({this}). If you meant that node, give its home \
         (`ferry --home DIR …`, or FERRY_HOME). If this database was copied from that computer, both would send \
         entries under one name: see `ferry node reissue --help`"
    )]
    OtherOrigin { path: String, tracked_by: String, this: String },
    #[error(
        "{path} holds {} not yet bundled ({}); removing capture would lose them. Bundle them first \
         (`ferry bundle create --db {path} --out DIR`), or pass --discard-unsent to throw them away",
        if .last - .first == 0 { "1 entry".to_owned() } else { format!("{} entries", .last - .first + 1) },
        if .first == .last { format!("entry {first}") } else { format!("entries {first}–{last}") }
    )]
    Unsent { path: String, first: u64, last: u64 },
    #[error("{path} was tracked by a newer ferry (capture format {found}); upgrade ferry")]
    NewerFormat { path: String, found: i64 },
    #[error("no table matches {0:?}")]
    NoSuchTable(String),
    #[error("tables without a primary key cannot be tracked (their rows cannot be found again on another computer): {}; add a primary key, or leave them out with --exclude", .0.join(", "))]
    NoPrimaryKey(Vec<String>),
    #[error("tables {} use AUTOINCREMENT keys, but this node has no id block, so rows made here would collide with rows made elsewhere; make a node with `ferry node init --name NAME --id-block N` (N unique per computer)", .0.join(", "))]
    NoIdBlock(Vec<String>),
    #[error("capture in {path} is stale: {}; run `ferry track {path}` to refresh it before bundling", .reasons.join("; "))]
    Stale { path: String, reasons: Vec<String> },
    #[error("the journal in {path} is damaged at seq {seq}: {reason}")]
    Damaged { path: String, seq: u64, reason: String },
    #[error("cannot send again from seq {since}: entries before seq {first} were pruned from the journal in {path}")]
    Pruned { path: String, since: u64, first: u64 },
    #[error("failed to bundle")]
    Create(#[from] CreateError),
}

pub(crate) fn sql_err(path: &str) -> impl Fn(rusqlite::Error) -> CaptureError {
    let path = path.to_owned();
    move |source| CaptureError::Sqlite { path: path.clone(), source }
}

/// Opens an existing app database (never creates one) with a busy timeout,
/// so ferry waits briefly for the app's writers instead of failing.
pub fn open_db(path: &std::path::Path) -> Result<Connection, CaptureError> {
    let p = path.display().to_string();
    if !path.is_file() {
        return Err(CaptureError::NoDatabase { path: p });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sql_err(&p))?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(sql_err(&p))?;
    Ok(conn)
}

/// The tables ferry makes in a database: capture's (`ferry track`) and the
/// apply ledger's (`bundle apply`; `_ferry_rows_<n>` and `_ferry_groups_<n>`
/// are numbered). A test
/// applies bundles to a tracked database and checks this list covers them.
pub const FERRY_TABLES: &[&str] = &[
    "_ferry_control",
    "_ferry_tables",
    "_ferry_journal",
    "_ferry_applied",
    "_ferry_baseline",
    "_ferry_floors",
    "_ferry_blocks",
    "_ferry_chain",
    "_ferry_columns",
    "_ferry_conflicts",
    "_ferry_forks",
    "_ferry_hashes",
    "_ferry_held",
    "_ferry_meta",
    "_ferry_origins",
    "_ferry_parked",
    "_ferry_quarantine",
    "_ferry_refused",
    "_ferry_row_tables",
    "_ferry_rows",
    "_ferry_rows_v1",
    "_ferry_waiting",
];

/// Tables whose names start with `_ferry` but that ferry did not make: the
/// app's own. Names starting with `_ferry` are reserved for ferry, so these
/// are never captured (`ferry track` says so).
pub fn reserved_name_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE '\\_ferry%' ESCAPE '\\' ORDER BY name",
    )?;
    let names: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let numbered = |n: &str, prefix: &str| {
        n.strip_prefix(prefix).is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    let ours = |n: &str| FERRY_TABLES.contains(&n) || numbered(n, "_ferry_rows_") || numbered(n, "_ferry_groups_");
    Ok(names.into_iter().filter(|n| !ours(n)).collect())
}

/// Whether ferry's objects are installed in `conn`'s database.
pub fn is_tracked(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_ferry_control'", [], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

/// The no-echo switch. Sets `_ferry_control.applying` (when the database is
/// tracked; otherwise does nothing). While it is 1, no trigger captures
/// anything. `bundle apply` calls `suppress(tx, true)` first thing inside its
/// write transaction and `suppress(tx, false)` just before COMMIT, so other
/// connections never see it set and the app's own writes are never missed.
pub fn suppress(conn: &Connection, on: bool) -> rusqlite::Result<()> {
    if is_tracked(conn)? {
        conn.execute("UPDATE _ferry_control SET applying = ?1 WHERE id = 1", [i64::from(on)])?;
    }
    Ok(())
}

/// The watermark: the last bundled seq (0 when nothing was bundled) and the
/// chain hash after it.
pub fn watermark(conn: &Connection) -> rusqlite::Result<(u64, ChainHash)> {
    conn.query_row("SELECT bundled_seq, bundled_chain FROM _ferry_control WHERE id = 1", [], |r| {
        let seq: i64 = r.get(0)?;
        let chain: Vec<u8> = r.get(1)?;
        Ok((seq as u64, ChainHash::from_slice(&chain).unwrap_or(ChainHash::GENESIS)))
    })
}
