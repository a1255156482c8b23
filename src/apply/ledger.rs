//! The ledger tables ferry keeps inside a target database (all named
//! `_ferry_*`, so [`crate::schema`] ignores them), and the compact encoding
//! of write versions. Every ledger write happens in the same transaction as
//! the data it describes.

use std::cell::RefCell;
use std::collections::HashMap;

use integer_encoding::VarInt;
use rusqlite::{params, Connection, OptionalExtension, Statement};
use smallvec::SmallVec;

use crate::value::Value;

/// Ledger DDL (ledger version [`LEDGER_VERSION`]). What ferry knows about
/// each row key lives in a *row ledger*: for a single-integer key, in
/// `_ferry_rows_<id>` (one rowid table per target table, registered in
/// `_ferry_row_tables`, see [`prepare`]), keyed by the integer itself; for
/// any other key, in `_ferry_rows`, keyed by the table name and the key's
/// JSON text. Both hold `flags` ([`RowState`]'s booleans) and `st`, the
/// versions in the compact encoding of [`encode_state`], which names
/// columns by their number in `_ferry_columns` (numbered per table in order
/// of first sight, never reused, so a migration that adds or drops columns
/// renumbers nothing).
pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS _ferry_origins (
    id          INTEGER PRIMARY KEY,
    node        TEXT NOT NULL UNIQUE,
    last_ts     INTEGER,
    last_apply  TEXT
);
CREATE TABLE IF NOT EXISTS _ferry_applied (
    origin      INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    PRIMARY KEY (origin, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_chain (
    origin      INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    hash        BLOB NOT NULL,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_meta (
    key         TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_row_tables (
    id          INTEGER PRIMARY KEY,
    tbl         TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS _ferry_columns (
    tbl         TEXT NOT NULL,
    name        TEXT NOT NULL,
    no          INTEGER NOT NULL,
    PRIMARY KEY (tbl, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_rows (
    tbl         TEXT NOT NULL,
    key         NOT NULL,
    flags       INTEGER NOT NULL,
    st          BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_parked (
    tbl         TEXT NOT NULL,
    key         NOT NULL,
    ts          INTEGER NOT NULL,
    origin      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    fields      TEXT NOT NULL,
    PRIMARY KEY (tbl, key, ts, origin, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_conflicts (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,
    tbl           TEXT NOT NULL,
    key           TEXT NOT NULL,
    col           TEXT,
    loser_origin  TEXT,
    loser_seq     INTEGER,
    loser_ts      INTEGER,
    loser_value   TEXT,
    winner_origin TEXT,
    winner_seq    INTEGER,
    winner_ts     INTEGER,
    detail        TEXT NOT NULL,
    recorded_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _ferry_quarantine (
    id          INTEGER PRIMARY KEY,
    origin      TEXT NOT NULL,
    seq         INTEGER,
    kind        TEXT NOT NULL,
    tbl         TEXT NOT NULL,
    reason      TEXT NOT NULL,
    entry       TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _ferry_forks (
    id          INTEGER PRIMARY KEY,
    origin      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    known_hash  TEXT NOT NULL,
    new_hash    TEXT NOT NULL,
    segment     TEXT NOT NULL,
    bundle      TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _ferry_refused (
    id          INTEGER PRIMARY KEY,
    bundle      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
";

/// The ledger layout this version of ferry reads and writes, recorded in
/// `_ferry_meta` under `ledger_version`. Version 1 (no `_ferry_meta`; one
/// `_ferry_rows` table with fixed-width versions) is migrated by [`prepare`].
pub const LEDGER_VERSION: i64 = 2;

/// A target whose ledger is newer than this ferry understands: what it
/// records may mean more than this version reads, so nothing touches it.
#[derive(Debug, thiserror::Error)]
#[error("it holds a ferry ledger of version {0}, newer than this ferry understands ({LEDGER_VERSION}): upgrade ferry")]
pub struct NewerLedger(pub i64);

/// Refuses a ledger newer than [`LEDGER_VERSION`] (the outer `Err`; the
/// inner one is a database failure).
pub fn check_version(conn: &Connection) -> rusqlite::Result<Result<(), NewerLedger>> {
    Ok(match version(conn)? {
        Some(v) if v > LEDGER_VERSION => Err(NewerLedger(v)),
        _ => Ok(()),
    })
}

/// The ledger version recorded in a target: `None` when it has no ledger,
/// `Some(1)` for the first layout (which recorded no version).
pub fn version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    use rusqlite::types::Value as V;
    if table_exists(conn, "_ferry_meta")? {
        let v: Option<V> = conn
            .query_row("SELECT value FROM _ferry_meta WHERE key = 'ledger_version'", [], |r| r.get(0))
            .optional()?;
        return match v {
            Some(V::Integer(n)) => Ok(Some(n)),
            Some(V::Text(t)) if t.trim().parse::<i64>().is_ok() => Ok(t.trim().parse().ok()),
            _ => Err(damaged("_ferry_meta holds no readable ledger_version".into())),
        };
    }
    if !table_exists(conn, "_ferry_rows")? {
        return Ok(None);
    }
    let v1: bool =
        conn.query_row("SELECT count(*) > 0 FROM pragma_table_info('_ferry_rows') WHERE name = 'present'", [], |r| {
            r.get(0)
        })?;
    if v1 {
        Ok(Some(1))
    } else {
        Err(damaged("_ferry_rows is not a version 1 ledger, and _ferry_meta is missing".into()))
    }
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1", [name], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
}

/// Makes the ledger of a target current, inside the apply run's
/// transaction: creates the ledger tables, a row ledger and column numbers
/// for each of the target's `tables` (so nothing is created mid-run, where a
/// savepoint rollback could take it away again), and migrates a version 1
/// ledger. The caller has checked [`version`] is at most [`LEDGER_VERSION`].
pub fn prepare(conn: &Connection, tables: &[crate::schema::Table]) -> rusqlite::Result<()> {
    let v1 = version(conn)? == Some(1);
    if v1 {
        // Not ALTER TABLE … RENAME: that re-checks every view and trigger of
        // the app's schema and fails on one the app left broken.
        conn.execute_batch("CREATE TABLE _ferry_rows_v1 AS SELECT * FROM _ferry_rows; DROP TABLE _ferry_rows;")?;
    }
    conn.execute_batch(DDL)?;
    conn.execute("INSERT OR REPLACE INTO _ferry_meta VALUES ('ledger_version', ?1)", [LEDGER_VERSION])?;
    for t in tables {
        row_table(conn, &t.name)?;
        for c in &t.columns {
            column_number(conn, &t.name, &c.name)?;
        }
    }
    if v1 {
        v1::migrate(conn)?;
        conn.execute_batch("DROP TABLE _ferry_rows_v1")?;
    }
    Ok(())
}

/// The name of the row ledger for single-integer keys of `tbl`, created
/// and registered on first use.
fn row_table(conn: &Connection, tbl: &str) -> rusqlite::Result<String> {
    conn.execute("INSERT OR IGNORE INTO _ferry_row_tables (tbl) VALUES (?1)", [tbl])?;
    let id: i64 = conn.query_row("SELECT id FROM _ferry_row_tables WHERE tbl = ?1", [tbl], |r| r.get(0))?;
    let name = format!("_ferry_rows_{id}");
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {name} (key INTEGER PRIMARY KEY, flags INTEGER NOT NULL, st BLOB NOT NULL)"
    ))?;
    Ok(name)
}

/// The number of column `name` of `tbl` in row states, assigned on first use.
fn column_number(conn: &Connection, tbl: &str, name: &str) -> rusqlite::Result<u32> {
    let get = "SELECT no FROM _ferry_columns WHERE tbl = ?1 AND name = ?2";
    if let Some(no) = conn.prepare_cached(get)?.query_row([tbl, name], |r| r.get(0)).optional()? {
        return Ok(no);
    }
    conn.prepare_cached(
        "INSERT INTO _ferry_columns SELECT ?1, ?2, coalesce(max(no) + 1, 0) FROM _ferry_columns WHERE tbl = ?1",
    )?
    .execute([tbl, name])?;
    conn.prepare_cached(get)?.query_row([tbl, name], |r| r.get(0))
}

/// Column numbers of every table: table → (column name, number).
pub fn column_numbers(conn: &Connection) -> rusqlite::Result<HashMap<String, Vec<(String, u32)>>> {
    let mut out: HashMap<String, Vec<(String, u32)>> = HashMap::new();
    let mut stmt = conn.prepare("SELECT tbl, name, no FROM _ferry_columns ORDER BY tbl, no")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        out.entry(r.get(0)?).or_default().push((r.get(1)?, r.get(2)?));
    }
    Ok(out)
}

/// Every row ledger: (target table, ledger table).
pub fn row_tables(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    if !table_exists(conn, "_ferry_row_tables")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare("SELECT tbl, id FROM _ferry_row_tables ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, format!("_ferry_rows_{}", r.get::<_, i64>(1)?))))?;
    rows.collect()
}

/// How many keys have a tombstone but were never inserted here (deletes
/// waiting for their row), over every row ledger (or in a version 1 ledger,
/// which the next apply migrates).
pub fn tombstones_waiting(conn: &Connection) -> rusqlite::Result<u64> {
    if version(conn)? == Some(1) {
        let sql = "SELECT count(*) FROM _ferry_rows WHERE present = 0 AND ins IS NULL AND del IS NOT NULL";
        return conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as u64);
    }
    let waiting = format!("flags & {} = {HAS_DEL}", PRESENT | HAS_INS | HAS_DEL);
    let mut n: i64 = conn.query_row(&format!("SELECT count(*) FROM _ferry_rows WHERE {waiting}"), [], |r| r.get(0))?;
    for (_, table) in row_tables(conn)? {
        n += conn.query_row(&format!("SELECT count(*) FROM {table} WHERE {waiting}"), [], |r| r.get::<_, i64>(0))?;
    }
    Ok(n as u64)
}

/// The version of a write: `(ts, origin, seq)`. `origin` is the local id of
/// the origin in `_ferry_origins`; comparisons use the origin's node id text
/// (see [`super::engine`]), so the order is the same in every database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ver {
    pub ts: i64,
    pub origin: u32,
    pub seq: u64,
}

impl Ver {
    /// Three varints: `ts` (zigzag), `origin`, `seq`; 11–13 bytes for
    /// today's timestamps.
    fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.ts);
        put_varint(out, self.origin);
        put_varint(out, self.seq);
    }
    fn decode(b: &mut &[u8]) -> Option<Ver> {
        Some(Ver { ts: take_varint(b)?, origin: take_varint(b)?, seq: take_varint(b)? })
    }
}

fn put_varint<T: VarInt>(out: &mut Vec<u8>, v: T) {
    let mut buf = [0u8; 10];
    let n = v.encode_var(&mut buf);
    out.extend_from_slice(&buf[..n]);
}

fn take_varint<T: VarInt>(b: &mut &[u8]) -> Option<T> {
    let (v, n) = T::decode_var(b)?;
    *b = &b[n..];
    Some(v)
}

/// What the ledger knows about one key of one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowState {
    pub present: bool,
    pub ins: Option<Ver>,
    pub del: Option<Ver>,
    /// Column number (see [`column_numbers`]) → version of its current
    /// value (only columns ferry wrote).
    pub cols: Cols,
    pub parked: bool,
}

/// A row's column versions; rows rarely have more columns than fit inline.
pub type Cols = SmallVec<[(u32, Ver); 8]>;

impl RowState {
    pub fn col(&self, no: u32) -> Option<Ver> {
        self.cols.iter().find(|(c, _)| *c == no).map(|(_, v)| *v)
    }
    pub fn set_col(&mut self, no: u32, v: Ver) {
        match self.cols.iter_mut().find(|(c, _)| *c == no) {
            Some(slot) => slot.1 = v,
            None => self.cols.push((no, v)),
        }
    }
}

/// `flags` bits.
const PRESENT: i64 = 1;
const PARKED: i64 = 2;
const HAS_INS: i64 = 4;
const HAS_DEL: i64 = 8;

/// How a column's version is stored in `st`, in the low two bits of the
/// varint that also holds its number.
const COL_OWN: u64 = 0;
const COL_INS: u64 = 1;
const COL_PREV: u64 = 2;

/// Encodes a row state as `(flags, st)`. `st` is the insert version (when
/// `flags` has [`HAS_INS`]), the delete version (with [`HAS_DEL`]), then per
/// column a varint `number << 2 | how` and, when `how` is [`COL_OWN`], the
/// version; [`COL_INS`] means the insert version and [`COL_PREV`] the
/// previous column's, so a freshly inserted row costs one version and a
/// byte per column, and an update of several columns one version more.
pub fn encode_state(st: &RowState, out: &mut Vec<u8>) -> i64 {
    out.clear();
    let mut flags = 0;
    if st.present {
        flags |= PRESENT;
    }
    if st.parked {
        flags |= PARKED;
    }
    if let Some(v) = st.ins {
        flags |= HAS_INS;
        v.encode_into(out);
    }
    if let Some(v) = st.del {
        flags |= HAS_DEL;
        v.encode_into(out);
    }
    let mut prev: Option<Ver> = None;
    for (no, v) in &st.cols {
        let how = if st.ins == Some(*v) {
            COL_INS
        } else if prev == Some(*v) {
            COL_PREV
        } else {
            COL_OWN
        };
        put_varint(out, u64::from(*no) << 2 | how);
        if how == COL_OWN {
            v.encode_into(out);
        }
        prev = Some(*v);
    }
    flags
}

/// The inverse of [`encode_state`]; `None` for bytes it did not write.
pub fn decode_state(flags: i64, mut b: &[u8]) -> Option<RowState> {
    let b = &mut b;
    let ins = if flags & HAS_INS != 0 { Some(Ver::decode(b)?) } else { None };
    let del = if flags & HAS_DEL != 0 { Some(Ver::decode(b)?) } else { None };
    let mut cols = Cols::new();
    let mut prev: Option<Ver> = None;
    while !b.is_empty() {
        let head: u64 = take_varint(b)?;
        let no = u32::try_from(head >> 2).ok()?;
        let v = match head & 3 {
            COL_OWN => Ver::decode(b)?,
            COL_INS => ins?,
            COL_PREV => prev?,
            _ => return None,
        };
        cols.push((no, v));
        prev = Some(v);
    }
    Some(RowState { present: flags & PRESENT != 0, ins, del, cols, parked: flags & PARKED != 0 })
}

/// The error for a ledger row this version cannot read (never written by
/// ferry: the ledger was edited by hand or the file is damaged).
fn undecodable(tbl: &str, key: &Value) -> rusqlite::Error {
    let key = serde_json::to_string(key).unwrap_or_default();
    damaged(format!("the ledger state of key {key} of table {tbl:?} cannot be decoded"))
}

/// An error for a ledger that ferry did not write (edited by hand, damaged).
fn damaged(what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Blob,
        format!("{what} (was the ledger edited by hand?)").into(),
    )
}

/// Reads and writes row states. Statements are prepared once per run
/// (looking them up in rusqlite's cache by SQL text costs more than some
/// of them take to run). Single-integer keys go to their table's rowid
/// ledger, every other key to `_ferry_rows`; both statement sets bind the
/// same parameters (`?1` the table name, unused by a rowid ledger, `?2`
/// the key, `?3` flags, `?4` st).
pub struct Rows<'c> {
    generic: RefCell<RowStmts<'c>>,
    by_table: HashMap<String, RefCell<RowStmts<'c>>>,
    buf: RefCell<Vec<u8>>,
}

struct RowStmts<'c> {
    load: Statement<'c>,
    save: Statement<'c>,
    claim: Statement<'c>,
    forget: Statement<'c>,
}

impl<'c> RowStmts<'c> {
    /// `table` is a rowid ledger (keyed by `key`) or `_ferry_rows` (by `tbl, key`).
    fn new(conn: &'c Connection, table: &str, rowid: bool) -> rusqlite::Result<RowStmts<'c>> {
        let (key, cols, vals, wher) = if rowid {
            ("key", "key, flags, st", "?2, ?3, ?4", "key = ?2")
        } else {
            ("tbl, key", "tbl, key, flags, st", "?1, ?2, ?3, ?4", "tbl = ?1 AND key = ?2")
        };
        Ok(RowStmts {
            load: conn.prepare(&format!("SELECT flags, st FROM {table} WHERE {wher}"))?,
            save: conn.prepare(&format!(
                "INSERT INTO {table} ({cols}) VALUES ({vals}) \
                 ON CONFLICT ({key}) DO UPDATE SET flags = excluded.flags, st = excluded.st"
            ))?,
            claim: conn.prepare(&format!("INSERT INTO {table} ({cols}) VALUES ({vals}) ON CONFLICT DO NOTHING"))?,
            forget: conn.prepare(&format!("DELETE FROM {table} WHERE {wher}"))?,
        })
    }
}

impl<'c> Rows<'c> {
    /// Prepares the statements ([`prepare`] must have run).
    pub fn new(conn: &'c Connection) -> rusqlite::Result<Rows<'c>> {
        let mut by_table = HashMap::new();
        for (tbl, table) in row_tables(conn)? {
            by_table.insert(tbl, RefCell::new(RowStmts::new(conn, &table, true)?));
        }
        Ok(Rows {
            generic: RefCell::new(RowStmts::new(conn, "_ferry_rows", false)?),
            by_table,
            buf: RefCell::new(Vec::with_capacity(64)),
        })
    }

    fn stmts(&self, tbl: &str, key: &Value) -> &RefCell<RowStmts<'c>> {
        match key {
            Value::Integer(_) => self.by_table.get(tbl).unwrap_or(&self.generic),
            _ => &self.generic,
        }
    }

    /// The state of a key, `None` when the ledger has never seen it.
    pub fn load_row(&self, tbl: &str, key: &Value) -> rusqlite::Result<Option<RowState>> {
        let mut s = self.stmts(tbl, key).borrow_mut();
        let found = s
            .load
            .query_row(params![tbl, key], |r| {
                decode_state(r.get(0)?, r.get_ref(1)?.as_blob()?).ok_or_else(|| undecodable(tbl, key))
            })
            .optional()?;
        Ok(found)
    }

    /// Records the state of a key.
    pub fn save_row(&self, tbl: &str, key: &Value, st: &RowState) -> rusqlite::Result<()> {
        let mut buf = self.buf.borrow_mut();
        let flags = encode_state(st, &mut buf);
        self.stmts(tbl, key).borrow_mut().save.execute(params![tbl, key, flags, buf.as_slice()])?;
        Ok(())
    }

    /// Records the state of a key the ledger has not seen; false when it has
    /// (and then changes nothing).
    pub fn insert_new_row(&self, tbl: &str, key: &Value, st: &RowState) -> rusqlite::Result<bool> {
        let mut buf = self.buf.borrow_mut();
        let flags = encode_state(st, &mut buf);
        let n = self.stmts(tbl, key).borrow_mut().claim.execute(params![tbl, key, flags, buf.as_slice()])?;
        Ok(n == 1)
    }

    /// Forgets a key.
    pub fn forget_row(&self, tbl: &str, key: &Value) -> rusqlite::Result<()> {
        self.stmts(tbl, key).borrow_mut().forget.execute(params![tbl, key])?;
        Ok(())
    }
}

/// The first ledger layout (no `_ferry_meta`): `_ferry_rows (tbl, key,
/// present, ins, del, cols, parked)` with 20-byte big-endian versions.
mod v1 {
    use rusqlite::Connection;

    use std::collections::HashMap;

    use super::{column_number, damaged, row_table, Cols, RowState, Rows, Ver};
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

    /// Copies every row of `_ferry_rows_v1` into the current layout. Rows
    /// it cannot decode stop the migration (and so the apply run) with an
    /// error naming the table and key: guessing would change what wins.
    pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
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
            };
            rows.save_row(&tbl, &key, &st)?;
        }
        Ok(())
    }
}

/// The applied seq ranges of one origin, sorted.
pub fn ranges(conn: &Connection, origin: u32) -> rusqlite::Result<Vec<(u64, u64)>> {
    let mut stmt =
        conn.prepare_cached("SELECT first_seq, last_seq FROM _ferry_applied WHERE origin = ?1 ORDER BY first_seq")?;
    let rows = stmt.query_map([origin], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// Records `first..=last` as applied for `origin`, merging it with the
/// ranges it touches so the table stays one row per contiguous run.
pub fn add_range(conn: &Connection, origin: u32, first: u64, last: u64) -> rusqlite::Result<()> {
    let mut lo = first;
    let mut hi = last;
    let touching: Vec<(u64, u64)> = ranges(conn, origin)?
        .into_iter()
        .filter(|&(a, b)| a <= hi.saturating_add(1) && lo <= b.saturating_add(1))
        .collect();
    for (a, b) in &touching {
        lo = lo.min(*a);
        hi = hi.max(*b);
        conn.prepare_cached("DELETE FROM _ferry_applied WHERE origin = ?1 AND first_seq = ?2")?
            .execute(params![origin, *a as i64])?;
    }
    conn.prepare_cached("INSERT INTO _ferry_applied VALUES (?1, ?2, ?3)")?
        .execute(params![origin, lo as i64, hi as i64])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(st: &RowState) -> Vec<u8> {
        let mut buf = Vec::new();
        let flags = encode_state(st, &mut buf);
        assert_eq!(decode_state(flags, &buf).as_ref(), Some(st));
        buf
    }

    #[test]
    fn row_states_round_trip_and_repeat_no_version() {
        let v = |ts, origin, seq| Ver { ts, origin, seq };
        let ins = v(1_790_000_000_000_000, 1, 70_000);
        let fresh = RowState {
            present: true,
            ins: Some(ins),
            del: None,
            cols: [(1, ins), (2, ins)].into_iter().collect(),
            parked: false,
        };
        let one_version = round_trip(&RowState { cols: Cols::new(), ..fresh.clone() }).len();
        assert_eq!(round_trip(&fresh).len(), one_version + 2, "columns at the insert version cost a byte each");
        let upd = v(1_790_000_000_000_001, 2, 5);
        let updated = RowState { cols: [(1, upd), (2, upd), (3, ins)].into_iter().collect(), ..fresh.clone() };
        let n = round_trip(&updated).len();
        assert!(n < 2 * one_version + 10, "two columns of one update share a version ({n} bytes)");
        let extremes = RowState {
            present: false,
            ins: None,
            del: Some(v(i64::MIN, u32::MAX, u64::MAX)),
            cols: [(u32::MAX, v(-5, 0, 0)), (0, v(i64::MAX, 7, 1))].into_iter().collect(),
            parked: true,
        };
        round_trip(&extremes);
        round_trip(&RowState::default());
        let both = RowState { present: true, ins: Some(upd), del: Some(ins), ..fresh.clone() };
        round_trip(&both);
        round_trip(&RowState { ins: Some(ins), del: Some(upd), ..both });
    }

    #[test]
    fn undecodable_states_are_refused_not_a_panic() {
        let mut buf = Vec::new();
        let flags =
            encode_state(&RowState { ins: Some(Ver { ts: 9, origin: 1, seq: 2 }), ..Default::default() }, &mut buf);
        assert_eq!(decode_state(flags, &buf[..buf.len() - 1]), None, "truncated version");
        assert_eq!(decode_state(0, &[1 << 2 | COL_OWN as u8, 0x80]), None, "a version cut short");
        assert_eq!(decode_state(0, &[1 << 2 | COL_INS as u8]), None, "no insert version to refer to");
        assert_eq!(decode_state(0, &[1 << 2 | COL_PREV as u8]), None, "no previous column to refer to");
        assert_eq!(decode_state(0, &[1 << 2 | 3]), None, "unknown column kind");
    }

    #[test]
    fn a_v1_ledger_is_migrated_to_row_ledgers() {
        let c = Connection::open_in_memory().expect("db");
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b);
             CREATE TABLE scratch (x); CREATE VIEW broken AS SELECT x FROM scratch; DROP TABLE scratch;
             CREATE TABLE _ferry_rows (tbl TEXT NOT NULL, key NOT NULL, present INTEGER NOT NULL, ins BLOB,
                 del BLOB, cols BLOB NOT NULL, parked INTEGER NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID;",
        )
        .expect("v1");
        let ins = Ver { ts: 1_790_000_000_000_000, origin: 1, seq: 3 };
        let upd = Ver { ts: 1_790_000_000_000_009, origin: 2, seq: 8 };
        let be = |v: Ver| [&v.ts.to_be_bytes()[..], &v.origin.to_be_bytes(), &v.seq.to_be_bytes()].concat();
        let mut cols = vec![0x80, 1, b'a', 0, 1, b'b'];
        cols.extend(be(upd));
        c.execute("INSERT INTO _ferry_rows VALUES ('t', 42, 1, ?1, NULL, ?2, 0)", rusqlite::params![be(ins), cols])
            .expect("row");
        c.execute("INSERT INTO _ferry_rows VALUES ('t', '[\"k\",1]', 0, NULL, ?1, X'', 1)", [be(upd)]).expect("row");
        c.execute("INSERT INTO _ferry_rows VALUES ('gone', 7, 1, ?1, NULL, X'', 0)", [be(ins)]).expect("row");
        assert_eq!(version(&c).expect("version"), Some(1));
        prepare(&c, &crate::schema::tables(&c).expect("tables")).expect("migrate");
        assert_eq!(version(&c).expect("version"), Some(LEDGER_VERSION));
        let rows = Rows::new(&c).expect("rows");
        let st = rows.load_row("t", &Value::Integer(42)).expect("load").expect("migrated");
        assert_eq!(
            st,
            RowState {
                present: true,
                ins: Some(ins),
                del: None,
                cols: [(1, ins), (2, upd)].into_iter().collect(),
                parked: false
            }
        );
        let tomb = rows.load_row("t", &Value::Text("[\"k\",1]".into())).expect("load").expect("migrated");
        assert_eq!(tomb, RowState { del: Some(upd), parked: true, ..Default::default() });
        assert_eq!(tombstones_waiting(&c).expect("count"), 1);
        let gone = rows.load_row("gone", &Value::Integer(7)).expect("load").expect("migrated");
        assert_eq!(gone.ins, Some(ins), "a table the target no longer has keeps its keys");
        let n: i64 = c.query_row("SELECT count(*) FROM _ferry_rows_2", [], |r| r.get(0)).expect("count");
        assert_eq!(n, 1, "…in its own rowid ledger, where they are found if the table comes back");
        let n: i64 = c.query_row("SELECT count(*) FROM _ferry_rows_1", [], |r| r.get(0)).expect("count");
        assert_eq!(n, 1, "the integer key went to t's rowid ledger");
        assert!(!table_exists(&c, "_ferry_rows_v1").expect("exists"), "the old table is gone");
        let numbers = column_numbers(&c).expect("numbers");
        assert_eq!(numbers["t"], [("id".to_owned(), 0), ("a".to_owned(), 1), ("b".to_owned(), 2)]);
    }

    #[test]
    fn a_damaged_v1_row_stops_the_migration_naming_its_key() {
        let c = Connection::open_in_memory().expect("db");
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a);
             CREATE TABLE _ferry_rows (tbl TEXT NOT NULL, key NOT NULL, present INTEGER NOT NULL, ins BLOB,
                 del BLOB, cols BLOB NOT NULL, parked INTEGER NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID;
             INSERT INTO _ferry_rows VALUES ('t', 42, 1, X'0102', NULL, X'', 0);",
        )
        .expect("v1");
        let err = prepare(&c, &crate::schema::tables(&c).expect("tables")).expect_err("refused").to_string();
        assert!(err.contains("key 42 of table \"t\"") && err.contains("insert version"), "{err}");
    }

    #[test]
    fn the_ledger_version_is_read_strictly() {
        let c = Connection::open_in_memory().expect("db");
        assert_eq!(version(&c).expect("none"), None, "no ledger");
        c.execute_batch(DDL).expect("ddl");
        assert!(version(&c).is_err(), "a _ferry_meta without a version is not guessed at");
        c.execute("INSERT INTO _ferry_meta VALUES ('ledger_version', '2')", []).expect("text");
        assert_eq!(version(&c).expect("text"), Some(2));
        let c = Connection::open_in_memory().expect("db");
        c.execute_batch("CREATE TABLE _ferry_rows (tbl, key, flags, st)").expect("ddl");
        assert!(version(&c).is_err(), "a current layout without _ferry_meta is not taken for version 1");
    }

    #[test]
    fn ranges_merge_when_adjacent_or_overlapping() {
        let c = Connection::open_in_memory().expect("db");
        c.execute_batch(DDL).expect("ddl");
        add_range(&c, 1, 5, 9).expect("add");
        add_range(&c, 1, 1, 3).expect("add");
        assert_eq!(ranges(&c, 1).expect("r"), vec![(1, 3), (5, 9)]);
        add_range(&c, 1, 4, 4).expect("add");
        assert_eq!(ranges(&c, 1).expect("r"), vec![(1, 9)]);
        add_range(&c, 1, 8, 12).expect("add");
        assert_eq!(ranges(&c, 1).expect("r"), vec![(1, 12)]);
    }
}
