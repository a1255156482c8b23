//! The ledger tables ferry keeps inside a target database (all named
//! `_ferry_*`, so [`crate::schema`] ignores them), and the compact encoding
//! of write versions. Every ledger write happens in the same transaction as
//! the data it describes.

mod groups;
pub mod hashes;
mod migrate;

pub use hashes::{Hashes, HASH_BLOCK};

use std::cell::RefCell;
use std::collections::HashMap;

use super::session::{self, Dialect, Prepared, Session};
use crate::args;
use hashlink::linked_hash_map::Entry;
use integer_encoding::VarInt;
use smallvec::SmallVec;

use crate::value::Value;
use groups::Group;

/// Ledger DDL (ledger version [`LEDGER_VERSION`]). What ferry knows about
/// each row key lives in a *row ledger*: for a single-integer key, in
/// `_ferry_groups_<id>` (one per target table, registered in
/// `_ferry_row_tables`, see [`prepare`]), where a row holds the states of 32
/// neighbouring keys (see [`groups`]); for any other key, in `_ferry_rows`,
/// keyed by the table name and the key's JSON text, with `flags`
/// ([`RowState`]'s booleans) and `st`. States are in the compact encoding of
/// [`encode_state`], which names columns by their number in `_ferry_columns`
/// (numbered per table in order of first sight, never reused, so a
/// migration that adds or drops columns renumbers nothing).
pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS _ferry_origins (
    id            INTEGER PRIMARY KEY,
    node          TEXT NOT NULL UNIQUE,
    last_ts       INTEGER,
    last_apply    TEXT,
    n_received    INTEGER NOT NULL DEFAULT 0,
    n_applied     INTEGER NOT NULL DEFAULT 0,
    n_superseded  INTEGER NOT NULL DEFAULT 0,
    n_parked      INTEGER NOT NULL DEFAULT 0,
    n_quarantined INTEGER NOT NULL DEFAULT 0,
    n_skipped     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS _ferry_applied (
    origin      INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    PRIMARY KEY (origin, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_hashes (
    origin      INTEGER NOT NULL,
    blk         INTEGER NOT NULL,
    hashes      BLOB NOT NULL,
    PRIMARY KEY (origin, blk)
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
    counted     INTEGER NOT NULL DEFAULT 1,
    reason      TEXT,
    PRIMARY KEY (tbl, key, ts, origin, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_waiting (
    origin      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    entry       TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _ferry_held (
    tbl         TEXT NOT NULL,
    key         NOT NULL,
    row         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    origin      TEXT,
    seq         INTEGER,
    since       TEXT NOT NULL,
    PRIMARY KEY (tbl, key)
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
    recorded_at TEXT NOT NULL,
    key         TEXT
);
CREATE TABLE IF NOT EXISTS _ferry_forks (
    id          INTEGER PRIMARY KEY,
    origin      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    known_hash  TEXT NOT NULL,
    new_hash    TEXT NOT NULL,
    segment     TEXT NOT NULL,
    bundle      TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    entries     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS _ferry_blocks (
    block       INTEGER PRIMARY KEY,
    origin      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _ferry_refused (
    id          INTEGER PRIMARY KEY,
    bundle      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    name        TEXT
);
";

/// [`DDL`] in the form `dialect` reads: on a server, 64-bit integers,
/// identity columns for SQLite's `INTEGER PRIMARY KEY`, `bytea`/`longblob`
/// for blobs, typed key columns (keys are stored as their text there; see
/// [`key_from_db`]) and byte-wise text order, as SQLite compares text.
pub fn ddl(dialect: Dialect) -> std::borrow::Cow<'static, str> {
    if dialect == Dialect::Sqlite {
        return DDL.into();
    }
    let pg = dialect == Dialect::Postgres;
    let mut out = String::with_capacity(DDL.len() * 2);
    for line in DDL.lines() {
        let l = line.replace(") WITHOUT ROWID;", ");");
        let (name, rest) = l.trim_start().split_once(' ').unwrap_or((l.trim(), ""));
        let rest = rest.trim_start();
        let column = !l.starts_with("CREATE") && !l.starts_with(')') && !name.is_empty() && name != "PRIMARY";
        if !column {
            out.push_str(&l);
            out.push('\n');
            continue;
        }
        let comma = if rest.ends_with(',') || (rest.is_empty() && l.ends_with(',')) { "," } else { "" };
        let rest = rest.trim_end_matches(',');
        let ty = if rest.starts_with("INTEGER PRIMARY KEY") {
            if pg {
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY".to_owned()
            } else {
                "BIGINT AUTO_INCREMENT PRIMARY KEY".to_owned()
            }
        } else if let Some(more) = rest.strip_prefix("INTEGER") {
            format!("BIGINT{more}")
        } else if let Some(more) = rest.strip_prefix("BLOB") {
            format!("{}{more}", if pg { "BYTEA" } else { "LONGBLOB" })
        } else if let Some(more) = rest.strip_prefix("TEXT") {
            // Text in a key or unique index needs a length on MySQL.
            let keyed = ["tbl", "name", "node", "origin", "key", "bundle"].contains(&name) || more.contains("UNIQUE");
            match (pg, keyed) {
                (true, _) => format!("TEXT COLLATE \"C\"{more}"),
                (false, true) => format!("VARCHAR(255) COLLATE utf8mb4_bin{more}"),
                (false, false) => format!("LONGTEXT COLLATE utf8mb4_bin{more}"),
            }
        } else if rest.is_empty() || rest.starts_with("NOT NULL") {
            // Untyped in SQLite: a row key or a meta value, stored as text.
            let t = if pg { "TEXT COLLATE \"C\"" } else { "VARCHAR(255) COLLATE utf8mb4_bin" };
            format!("{t} {rest}")
        } else {
            rest.to_owned()
        };
        let pad = &l[..l.len() - l.trim_start().len()];
        out.push_str(&format!("{pad}{name} {}{comma}\n", ty.trim_end()));
    }
    if !pg {
        out = out.replace(");\n", ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n");
    }
    out.into()
}

/// A row key as the ledger stored it: servers keep keys as text, and a key
/// that is not a JSON array is a single integer (see [`super::engine::ledger_key`]).
pub fn key_from_db(v: Value) -> Value {
    match v {
        Value::Text(t) if !t.starts_with('[') => match t.parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Text(t),
        },
        v => v,
    }
}

/// The ledger layout this version of ferry reads and writes, recorded in
/// `_ferry_meta` under `ledger_version`. Older layouts are migrated by
/// [`prepare`]: version 1 (no `_ferry_meta`; one `_ferry_rows` table with
/// fixed-width versions), version 2 (one row per single-integer key, in
/// `_ferry_rows_<id>`) and version 3 (chain hashes at checkpoints only in
/// `_ferry_chain`; no outcome counters, held rows or waiting entries).
pub const LEDGER_VERSION: i64 = 4;

/// A target whose ledger is newer than this ferry understands: what it
/// records may mean more than this version reads, so nothing touches it.
#[derive(Debug, thiserror::Error)]
#[error("it holds a ferry ledger of version {0}, newer than this ferry understands ({LEDGER_VERSION}): upgrade ferry")]
pub struct NewerLedger(pub i64);

/// Refuses a ledger newer than [`LEDGER_VERSION`] (the outer `Err`; the
/// inner one is a database failure).
pub fn check_version(conn: &dyn Session) -> session::Result<Result<(), NewerLedger>> {
    Ok(match version(conn)? {
        Some(v) if v > LEDGER_VERSION => Err(NewerLedger(v)),
        _ => Ok(()),
    })
}

/// The ledger version recorded in a target: `None` when it has no ledger,
/// `Some(1)` for the first layout (which recorded no version).
pub fn version(conn: &dyn Session) -> session::Result<Option<i64>> {
    if table_exists(conn, "_ferry_meta")? {
        let v = conn.query_opt("SELECT value FROM _ferry_meta WHERE key = 'ledger_version'", &[])?.map(|r| r.value(0));
        return match v {
            Some(Value::Integer(n)) => Ok(Some(n)),
            Some(Value::Text(t)) if t.trim().parse::<i64>().is_ok() => Ok(t.trim().parse().ok()),
            _ => Err(damaged("_ferry_meta holds no readable ledger_version".into()).into()),
        };
    }
    if !table_exists(conn, "_ferry_rows")? {
        return Ok(None);
    }
    let v1 = match conn.sqlite() {
        Some(c) => {
            c.query_row("SELECT count(*) > 0 FROM pragma_table_info('_ferry_rows') WHERE name = 'present'", [], |r| {
                r.get(0)
            })?
        }
        // Servers never held a first-layout ledger.
        None => false,
    };
    if v1 {
        Ok(Some(1))
    } else {
        Err(damaged("_ferry_rows is not a version 1 ledger, and _ferry_meta is missing".into()).into())
    }
}

pub(crate) fn table_exists(conn: &dyn Session, name: &str) -> session::Result<bool> {
    let sql = match conn.dialect() {
        Dialect::Sqlite => "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        Dialect::Postgres => {
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?1"
        }
        Dialect::Mysql => {
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = database() AND table_name = ?1"
        }
    };
    Ok(conn.query_one(sql, args![name])?.get::<i64>(0)? > 0)
}

/// Makes the ledger of a target current, inside the apply run's
/// transaction: creates the ledger tables, a row ledger and column numbers
/// for each of the target's `tables` (so nothing is created mid-run, where a
/// savepoint rollback could take it away again), and migrates an older
/// ledger. The caller has checked [`version`] is at most [`LEDGER_VERSION`].
pub fn prepare(conn: &dyn Session, tables: &[crate::schema::Table]) -> session::Result<()> {
    let from = version(conn)?;
    // Older layouts only ever lived in SQLite targets.
    let old = conn.sqlite().filter(|_| from.is_some_and(|v| v < LEDGER_VERSION));
    if let Some(c) = old {
        if from == Some(1) {
            migrate::v1::set_aside(c)?;
        }
        migrate::v3::add_columns(c)?;
    }
    conn.batch(&ddl(conn.dialect()))?;
    let set = conn.dialect().pick(
        "INSERT OR REPLACE INTO _ferry_meta VALUES ('ledger_version', ?1)",
        "INSERT INTO _ferry_meta (key, value) VALUES ('ledger_version', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        "REPLACE INTO _ferry_meta (\"key\", value) VALUES ('ledger_version', ?1)",
    );
    conn.execute(set, args![LEDGER_VERSION])?;
    for t in tables {
        row_table(conn, &t.name)?;
        for c in &t.columns {
            column_number(conn, &t.name, &c.name)?;
        }
    }
    if let Some(c) = old {
        match from {
            Some(1) => migrate::v1::migrate(c)?,
            Some(2) => migrate::v2::migrate(c)?,
            _ => {}
        }
        migrate::v3::migrate(c)?;
    }
    Ok(())
}

/// The id of the row ledger for single-integer keys of `tbl`, created and
/// registered on first use.
fn row_table(conn: &dyn Session, tbl: &str) -> session::Result<i64> {
    let add = conn.dialect().pick(
        "INSERT OR IGNORE INTO _ferry_row_tables (tbl) VALUES (?1)",
        "INSERT INTO _ferry_row_tables (tbl) VALUES (?1) ON CONFLICT DO NOTHING",
        "INSERT IGNORE INTO _ferry_row_tables (tbl) VALUES (?1)",
    );
    conn.execute(add, args![tbl])?;
    let id: i64 = conn.query_one("SELECT id FROM _ferry_row_tables WHERE tbl = ?1", args![tbl])?.get(0)?;
    create_group_table(conn, id)?;
    Ok(id)
}

fn create_group_table(conn: &dyn Session, id: i64) -> session::Result<()> {
    let name = group_table(id);
    let columns = conn.dialect().pick(
        "grp INTEGER PRIMARY KEY, states BLOB NOT NULL",
        "grp BIGINT PRIMARY KEY, states BYTEA NOT NULL",
        "grp BIGINT PRIMARY KEY, states LONGBLOB NOT NULL",
    );
    conn.batch(&format!("CREATE TABLE IF NOT EXISTS {name} ({columns})"))
}

/// The grouped row ledger of registered table `id`.
fn group_table(id: i64) -> String {
    format!("_ferry_groups_{id}")
}

/// The number of column `name` of `tbl` in row states, assigned on first use.
fn column_number(conn: &dyn Session, tbl: &str, name: &str) -> session::Result<u32> {
    let get = "SELECT no FROM _ferry_columns WHERE tbl = ?1 AND name = ?2";
    if let Some(r) = conn.query_opt(get, args![tbl, name])? {
        return r.get(0);
    }
    let next: i64 =
        conn.query_one("SELECT coalesce(max(no) + 1, 0) FROM _ferry_columns WHERE tbl = ?1", args![tbl])?.get(0)?;
    conn.execute("INSERT INTO _ferry_columns (tbl, name, no) VALUES (?1, ?2, ?3)", args![tbl, name, next])?;
    conn.query_one(get, args![tbl, name])?.get(0)
}

/// Column numbers of every table: table → (column name, number).
pub fn column_numbers(conn: &dyn Session) -> session::Result<HashMap<String, Vec<(String, u32)>>> {
    let mut out: HashMap<String, Vec<(String, u32)>> = HashMap::new();
    for r in conn.query("SELECT tbl, name, no FROM _ferry_columns ORDER BY tbl, no", &[])? {
        out.entry(r.get(0)?).or_default().push((r.get(1)?, r.get(2)?));
    }
    Ok(out)
}

/// What the ledger of a database bundles were applied to knows about one
/// key, read without a cache (for capture, which must tell rows others sent
/// from its own): the row state and the node id of each column's writer.
/// `None` when the database has no ledger or the ledger never saw the key.
#[allow(clippy::type_complexity)]
pub fn lookup(conn: &dyn Session, tbl: &str, key: &Value) -> session::Result<Option<(RowState, HashMap<u32, String>)>> {
    if !table_exists(conn, "_ferry_meta")? || version(conn)? != Some(LEDGER_VERSION) {
        return Ok(None);
    }
    let state = match key {
        Value::Integer(k) => {
            let id = conn.query_opt("SELECT id FROM _ferry_row_tables WHERE tbl = ?1", args![tbl])?;
            let Some(id) = id else { return Ok(None) };
            let id: i64 = id.get(0)?;
            let (grp, slot) = groups::locate(*k);
            let sql = format!("SELECT states FROM {} WHERE grp = ?1", group_table(id));
            let blob = conn.query_opt(&sql, args![grp])?.map(|r| r.get::<Vec<u8>>(0)).transpose()?;
            let Some(blob) = blob else { return Ok(None) };
            let g = Group::parse(&blob).ok_or_else(|| damaged_group(tbl, grp))?;
            g.get(slot).map_err(|()| undecodable(tbl, key))?
        }
        _ => match conn.query_opt("SELECT flags, st FROM _ferry_rows WHERE tbl = ?1 AND key = ?2", args![tbl, key])? {
            Some(r) => Some(
                decode_state(r.get(0)?, &r.get::<Vec<u8>>(1)?, groups::ZERO).ok_or_else(|| undecodable(tbl, key))?,
            ),
            None => None,
        },
    };
    let Some(state) = state else { return Ok(None) };
    let mut origins = HashMap::new();
    for r in conn.query("SELECT id, node FROM _ferry_origins", &[])? {
        origins.insert(r.get(0)?, r.get(1)?);
    }
    Ok(Some((state, origins)))
}

/// Every registered row ledger: (target table, id).
pub fn row_tables(conn: &dyn Session) -> session::Result<Vec<(String, i64)>> {
    if !table_exists(conn, "_ferry_row_tables")? {
        return Ok(Vec::new());
    }
    let rows = conn.query("SELECT tbl, id FROM _ferry_row_tables ORDER BY id", &[])?;
    rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect()
}

/// How many keys have a tombstone but were never inserted here (deletes
/// waiting for their row), over every row ledger, of this version or an
/// older one (which the next apply migrates).
pub fn tombstones_waiting(conn: &dyn Session) -> session::Result<u64> {
    let count = |sql: &str| -> session::Result<u64> { Ok(conn.query_one(sql, &[])?.get::<i64>(0)? as u64) };
    let version = version(conn)?;
    if version == Some(1) {
        return count("SELECT count(*) FROM _ferry_rows WHERE present = 0 AND ins IS NULL AND del IS NOT NULL");
    }
    let mask = PRESENT | HAS_INS | HAS_DEL;
    let mut n = count(&format!("SELECT count(*) FROM _ferry_rows WHERE flags & {mask} = {HAS_DEL}"))?;
    for (tbl, id) in row_tables(conn)? {
        let v2 = version == Some(2);
        let table = if v2 { format!("_ferry_rows_{id}") } else { group_table(id) };
        if !table_exists(conn, &table)? {
            continue;
        }
        if v2 {
            n += count(&format!("SELECT count(*) FROM {table} WHERE flags & {mask} = {HAS_DEL}"))?;
            continue;
        }
        for r in conn.query(&format!("SELECT grp, states FROM {table}"), &[])? {
            let grp: i64 = r.get(0)?;
            let blob = r.get::<Vec<u8>>(1).ok();
            let g = blob.as_deref().and_then(Group::parse).ok_or_else(|| damaged_group(&tbl, grp))?;
            n += g.flags().filter(|f| f & mask == HAS_DEL).count() as u64;
        }
    }
    Ok(n)
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
    /// Three varints: `ts` (zigzag), `origin`, `seq`. Relative to a `base`
    /// other than [`groups::ZERO`], `ts` and `seq` are wrapping differences
    /// from it (both zigzag, so an older neighbour costs as little as a
    /// newer one): a few bytes for a neighbour's version, against 11–13 for
    /// today's timestamps written absolute (relative to `ZERO`).
    fn encode_into(&self, out: &mut Vec<u8>, base: Ver) {
        put_varint(out, self.ts.wrapping_sub(base.ts));
        put_varint(out, self.origin);
        if base == groups::ZERO {
            put_varint(out, self.seq);
        } else {
            put_varint(out, self.seq.wrapping_sub(base.seq) as i64);
        }
    }
    fn decode(b: &mut &[u8], base: Ver) -> Option<Ver> {
        let ts = base.ts.wrapping_add(take_varint(b)?);
        let origin = take_varint(b)?;
        let seq =
            if base == groups::ZERO { take_varint(b)? } else { base.seq.wrapping_add(take_varint::<i64>(b)? as u64) };
        Some(Ver { ts, origin, seq })
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
    /// Present, but kept out of its table until it can stand there (a
    /// missing parent, a unique value an older row holds, a constraint it
    /// breaks); its values are in `_ferry_held`.
    pub held: bool,
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
const HELD: i64 = 16;
/// Every flag set.
const FLAGS_MAX: i64 = PRESENT | PARKED | HAS_INS | HAS_DEL | HELD;

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
/// Versions are relative to `base` (see [`Ver::encode_into`]).
fn encode_state(st: &RowState, out: &mut Vec<u8>, base: Ver) -> i64 {
    out.clear();
    let mut flags = 0;
    if st.present {
        flags |= PRESENT;
    }
    if st.parked {
        flags |= PARKED;
    }
    if st.held {
        flags |= HELD;
    }
    if let Some(v) = st.ins {
        flags |= HAS_INS;
        v.encode_into(out, base);
    }
    if let Some(v) = st.del {
        flags |= HAS_DEL;
        v.encode_into(out, base);
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
            v.encode_into(out, base);
        }
        prev = Some(*v);
    }
    flags
}

/// The inverse of [`encode_state`]; `None` for bytes it did not write.
fn decode_state(flags: i64, mut b: &[u8], base: Ver) -> Option<RowState> {
    let b = &mut b;
    let ins = if flags & HAS_INS != 0 { Some(Ver::decode(b, base)?) } else { None };
    let del = if flags & HAS_DEL != 0 { Some(Ver::decode(b, base)?) } else { None };
    let mut cols = Cols::new();
    let mut prev: Option<Ver> = None;
    while !b.is_empty() {
        let head: u64 = take_varint(b)?;
        let no = u32::try_from(head >> 2).ok()?;
        let v = match head & 3 {
            COL_OWN => Ver::decode(b, base)?,
            COL_INS => ins?,
            COL_PREV => prev?,
            _ => return None,
        };
        cols.push((no, v));
        prev = Some(v);
    }
    Some(RowState {
        present: flags & PRESENT != 0,
        ins,
        del,
        cols,
        parked: flags & PARKED != 0,
        held: flags & HELD != 0,
    })
}

/// The error for a ledger row this version cannot read (never written by
/// ferry: the ledger was edited by hand or the file is damaged).
fn undecodable(tbl: &str, key: &Value) -> rusqlite::Error {
    let key = serde_json::to_string(key).unwrap_or_default();
    damaged(format!("the ledger state of key {key} of table {tbl:?} cannot be decoded"))
}

/// The error for a group of a row ledger this version cannot read.
fn damaged_group(tbl: &str, grp: i64) -> rusqlite::Error {
    let first = grp.saturating_mul(groups::KEYS);
    let last = first.saturating_add(groups::KEYS - 1);
    damaged(format!("the ledger group of keys {first}..={last} of table {tbl:?} cannot be decoded"))
}

/// An error for a ledger that ferry did not write (edited by hand, damaged).
fn damaged(what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Blob,
        format!("{what} (was the ledger edited by hand?)").into(),
    )
}

/// Reads and writes row states. Single-integer keys of a table with a
/// grouped row ledger go through a write-behind cache of groups (at most
/// [`CACHE_BYTES`]); every other key goes straight to `_ferry_rows`.
/// Statements are prepared once per run (looking them up in rusqlite's
/// cache by SQL text costs more than some of them take to run).
///
/// Groups changed in the cache reach the database when they leave it or at
/// [`Rows::flush`]: callers flush before a savepoint starts or ends and
/// before commit, and [`Rows::discard`] when they roll one back.
pub struct Rows<'c> {
    generic: RefCell<RowStmts<'c>>,
    grouped: HashMap<String, usize>,
    group_stmts: Vec<GroupStmts<'c>>,
    cache: RefCell<GroupCache>,
    buf: RefCell<Vec<u8>>,
    scratch: RefCell<Vec<u8>>,
}

/// Memory for groups (their records plus [`CACHED_OVERHEAD`] each): some
/// 20,000 groups, the states of over half a million keys. Fixed, so memory
/// does not grow with the ledger; SQLite's page cache (see
/// [`crate::apply::open_target`]) gets 16 MiB besides.
const CACHE_BYTES: usize = 14 << 20;
/// A cached group's memory besides its records: the cache's node and hash
/// slot, the group's fields, the allocator's headers.
const CACHED_OVERHEAD: usize = 160;

/// `_ferry_rows`, keyed by `(tbl, key)`; `?1` the table name, `?2` the key,
/// `?3` flags, `?4` st.
struct RowStmts<'c> {
    load: Box<dyn Prepared + 'c>,
    save: Box<dyn Prepared + 'c>,
    claim: Box<dyn Prepared + 'c>,
    forget: Box<dyn Prepared + 'c>,
}

impl<'c> RowStmts<'c> {
    fn new(conn: &'c dyn Session) -> session::Result<RowStmts<'c>> {
        Ok(RowStmts {
            load: conn.prepare("SELECT flags, st FROM _ferry_rows WHERE tbl = ?1 AND key = ?2")?,
            save: conn.prepare(
                "INSERT INTO _ferry_rows (tbl, key, flags, st) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (tbl, key) DO UPDATE SET flags = excluded.flags, st = excluded.st",
            )?,
            claim: conn.prepare(
                "INSERT INTO _ferry_rows (tbl, key, flags, st) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?,
            forget: conn.prepare("DELETE FROM _ferry_rows WHERE tbl = ?1 AND key = ?2")?,
        })
    }
}

/// One grouped row ledger; `?1` the group, `?2` its states.
struct GroupStmts<'c> {
    tbl: String,
    load: RefCell<Box<dyn Prepared + 'c>>,
    insert: RefCell<Box<dyn Prepared + 'c>>,
    update: RefCell<Box<dyn Prepared + 'c>>,
    delete: RefCell<Box<dyn Prepared + 'c>>,
}

impl<'c> GroupStmts<'c> {
    fn new(conn: &'c dyn Session, tbl: &str, id: i64) -> session::Result<GroupStmts<'c>> {
        let t = group_table(id);
        Ok(GroupStmts {
            tbl: tbl.to_owned(),
            load: RefCell::new(conn.prepare(&format!("SELECT states FROM {t} WHERE grp = ?1"))?),
            insert: RefCell::new(conn.prepare(&format!("INSERT INTO {t} (grp, states) VALUES (?1, ?2)"))?),
            update: RefCell::new(conn.prepare(&format!("UPDATE {t} SET states = ?2 WHERE grp = ?1"))?),
            delete: RefCell::new(conn.prepare(&format!("DELETE FROM {t} WHERE grp = ?1"))?),
        })
    }

    /// Group `grp` as stored, `None` when there is no row for it.
    fn load(&self, grp: i64) -> session::Result<Option<Group>> {
        let mut load = self.load.borrow_mut();
        let Some(mut r) = load.query_opt(args![grp])? else {
            return Ok(None);
        };
        let Value::Blob(blob) = r.take(0) else { return Err(damaged_group(&self.tbl, grp).into()) };
        Ok(Some(Group::parse(&blob).ok_or_else(|| damaged_group(&self.tbl, grp))?))
    }
}

/// A group in the cache; `stored` when the database has a row for it.
struct Cached {
    group: Group,
    stored: bool,
    dirty: bool,
}

impl Cached {
    fn cost(&self) -> usize {
        self.group.footprint() + CACHED_OVERHEAD
    }
}

/// Groups by (row ledger, group), least recently used first.
struct GroupCache {
    groups: hashlink::LruCache<(usize, i64), Cached>,
    bytes: usize,
    budget: usize,
}

impl<'c> Rows<'c> {
    /// Prepares the statements ([`prepare`] must have run).
    pub fn new(conn: &'c dyn Session) -> session::Result<Rows<'c>> {
        Rows::with_budget(conn, CACHE_BYTES)
    }

    /// [`Rows::new`] keeping at most `budget` bytes of groups in memory.
    fn with_budget(conn: &'c dyn Session, budget: usize) -> session::Result<Rows<'c>> {
        let mut grouped = HashMap::new();
        let mut group_stmts = Vec::new();
        for (tbl, id) in row_tables(conn)? {
            grouped.insert(tbl.clone(), group_stmts.len());
            group_stmts.push(GroupStmts::new(conn, &tbl, id)?);
        }
        Ok(Rows {
            generic: RefCell::new(RowStmts::new(conn)?),
            grouped,
            group_stmts,
            cache: RefCell::new(GroupCache { groups: hashlink::LruCache::new_unbounded(), bytes: 0, budget }),
            buf: RefCell::new(Vec::with_capacity(64)),
            scratch: RefCell::new(Vec::with_capacity(64)),
        })
    }

    /// The grouped ledger, group and slot of a key, `None` for a key kept in
    /// `_ferry_rows`.
    fn grouped(&self, tbl: &str, key: &Value) -> Option<(usize, i64, u8)> {
        match key {
            Value::Integer(k) => {
                let (grp, slot) = groups::locate(*k);
                self.grouped.get(tbl).map(|&ledger| (ledger, grp, slot))
            }
            _ => None,
        }
    }

    /// Runs `f` on a group, loading it into the cache first; `f` returns
    /// whether it changed the group.
    fn with_group<T>(&self, ledger: usize, grp: i64, f: impl FnOnce(&mut Group) -> (T, bool)) -> session::Result<T> {
        let mut cache = self.cache.borrow_mut();
        let cache = &mut *cache;
        let c = match cache.groups.entry((ledger, grp)) {
            Entry::Occupied(mut o) => {
                o.to_back();
                o.into_mut()
            }
            Entry::Vacant(v) => {
                let stored = self.group_stmts[ledger].load(grp)?;
                let c = Cached { stored: stored.is_some(), group: stored.unwrap_or_else(Group::new), dirty: false };
                cache.bytes += c.cost();
                v.insert(c)
            }
        };
        let before = c.cost();
        let (out, changed) = f(&mut c.group);
        c.dirty |= changed;
        cache.bytes = cache.bytes + c.cost() - before;
        while cache.bytes > cache.budget && cache.groups.len() > 1 {
            let Some(((ledger, grp), gone)) = cache.groups.remove_lru() else { break };
            cache.bytes -= gone.cost();
            self.write(ledger, grp, &gone)?;
        }
        Ok(out)
    }

    /// Stores a cached group if it changed.
    fn write(&self, ledger: usize, grp: i64, c: &Cached) -> session::Result<()> {
        if !c.dirty {
            return Ok(());
        }
        let s = &self.group_stmts[ledger];
        if c.group.is_empty() {
            if c.stored {
                s.delete.borrow_mut().execute(args![grp])?;
            }
            return Ok(());
        }
        let mut buf = self.buf.borrow_mut();
        c.group.encode_into(&mut buf);
        let stmt = if c.stored { &s.update } else { &s.insert };
        stmt.borrow_mut().execute(args![grp, buf.as_slice()])?;
        Ok(())
    }

    /// Writes every changed group to the database, in ledger order.
    pub fn flush(&self) -> session::Result<()> {
        let mut cache = self.cache.borrow_mut();
        let mut dirty: Vec<(usize, i64)> = cache.groups.iter().filter(|(_, c)| c.dirty).map(|(k, _)| *k).collect();
        dirty.sort_unstable();
        for k in dirty {
            if let Some(c) = cache.groups.peek_mut(&k) {
                self.write(k.0, k.1, c)?;
                c.stored = !c.group.is_empty();
                c.dirty = false;
            }
        }
        Ok(())
    }

    /// Forgets the cache (after a rollback, which may have undone what it holds).
    pub fn discard(&self) {
        let mut cache = self.cache.borrow_mut();
        cache.groups.clear();
        cache.bytes = 0;
    }

    /// The state of a key, `None` when the ledger has never seen it.
    pub fn load_row(&self, tbl: &str, key: &Value) -> session::Result<Option<RowState>> {
        if let Some((ledger, grp, slot)) = self.grouped(tbl, key) {
            return Ok(self.with_group(ledger, grp, |g| (g.get(slot), false))?.map_err(|()| undecodable(tbl, key))?);
        }
        let mut s = self.generic.borrow_mut();
        let Some(mut r) = s.load.query_opt(args![tbl, key])? else { return Ok(None) };
        let Value::Blob(st) = r.take(1) else { return Err(undecodable(tbl, key).into()) };
        Ok(Some(decode_state(r.get(0)?, &st, groups::ZERO).ok_or_else(|| undecodable(tbl, key))?))
    }

    /// Records the state of a key.
    pub fn save_row(&self, tbl: &str, key: &Value, st: &RowState) -> session::Result<()> {
        if let Some((ledger, grp, slot)) = self.grouped(tbl, key) {
            return self.with_group(ledger, grp, |g| (g.put(slot, st, &mut self.scratch.borrow_mut()), true));
        }
        let mut buf = self.buf.borrow_mut();
        let flags = encode_state(st, &mut buf, groups::ZERO);
        self.generic.borrow_mut().save.execute(args![tbl, key, flags, buf.as_slice()])?;
        Ok(())
    }

    /// Records the state of a key the ledger has not seen; false when it has
    /// (and then changes nothing).
    pub fn insert_new_row(&self, tbl: &str, key: &Value, st: &RowState) -> session::Result<bool> {
        if let Some((ledger, grp, slot)) = self.grouped(tbl, key) {
            return self.with_group(ledger, grp, |g| {
                if g.has(slot) {
                    (false, false)
                } else {
                    g.put(slot, st, &mut self.scratch.borrow_mut());
                    (true, true)
                }
            });
        }
        let mut buf = self.buf.borrow_mut();
        let flags = encode_state(st, &mut buf, groups::ZERO);
        let n = self.generic.borrow_mut().claim.execute(args![tbl, key, flags, buf.as_slice()])?;
        Ok(n == 1)
    }

    /// Forgets a key.
    pub fn forget_row(&self, tbl: &str, key: &Value) -> session::Result<()> {
        if let Some((ledger, grp, slot)) = self.grouped(tbl, key) {
            return self.with_group(ledger, grp, |g| ((), g.remove(slot)));
        }
        self.generic.borrow_mut().forget.execute(args![tbl, key])?;
        Ok(())
    }
}

/// The applied seq ranges of one origin, sorted.
pub fn ranges(conn: &dyn Session, origin: u32) -> session::Result<Vec<(u64, u64)>> {
    let rows = conn
        .query("SELECT first_seq, last_seq FROM _ferry_applied WHERE origin = ?1 ORDER BY first_seq", args![origin])?;
    rows.iter().map(|r| Ok((r.get::<i64>(0)? as u64, r.get::<i64>(1)? as u64))).collect()
}

/// Records `first..=last` as applied for `origin`, merging it with the
/// ranges it touches so the table stays one row per contiguous run.
pub fn add_range(conn: &dyn Session, origin: u32, first: u64, last: u64) -> session::Result<()> {
    let mut lo = first;
    let mut hi = last;
    let touching: Vec<(u64, u64)> = ranges(conn, origin)?
        .into_iter()
        .filter(|&(a, b)| a <= hi.saturating_add(1) && lo <= b.saturating_add(1))
        .collect();
    for (a, b) in &touching {
        lo = lo.min(*a);
        hi = hi.max(*b);
        conn.execute("DELETE FROM _ferry_applied WHERE origin = ?1 AND first_seq = ?2", args![origin, *a as i64])?;
    }
    conn.execute(
        "INSERT INTO _ferry_applied (origin, first_seq, last_seq) VALUES (?1, ?2, ?3)",
        args![origin, lo as i64, hi as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{params, Connection};

    fn round_trip(st: &RowState) -> Vec<u8> {
        let mut buf = Vec::new();
        let flags = encode_state(st, &mut buf, groups::ZERO);
        assert_eq!(decode_state(flags, &buf, groups::ZERO).as_ref(), Some(st));
        let base = Ver { ts: 1_790_000_000_000_000, origin: 3, seq: 70_000 };
        let mut rel = Vec::new();
        let flags = encode_state(st, &mut rel, base);
        assert_eq!(decode_state(flags, &rel, base).as_ref(), Some(st), "relative to a base");
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
            held: false,
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
            held: true,
        };
        round_trip(&extremes);
        round_trip(&RowState::default());
        let both = RowState { present: true, ins: Some(upd), del: Some(ins), ..fresh.clone() };
        round_trip(&both);
        round_trip(&RowState { ins: Some(ins), del: Some(upd), ..both });
    }

    #[test]
    fn undecodable_states_are_refused_not_a_panic() {
        const Z: Ver = groups::ZERO;
        let mut buf = Vec::new();
        let flags =
            encode_state(&RowState { ins: Some(Ver { ts: 9, origin: 1, seq: 2 }), ..Default::default() }, &mut buf, Z);
        assert_eq!(decode_state(flags, &buf[..buf.len() - 1], Z), None, "truncated version");
        assert_eq!(decode_state(0, &[1 << 2 | COL_OWN as u8, 0x80], Z), None, "a version cut short");
        assert_eq!(decode_state(0, &[1 << 2 | COL_INS as u8], Z), None, "no insert version to refer to");
        assert_eq!(decode_state(0, &[1 << 2 | COL_PREV as u8], Z), None, "no previous column to refer to");
        assert_eq!(decode_state(0, &[1 << 2 | 3], Z), None, "unknown column kind");
    }

    #[test]
    fn a_v1_ledger_is_migrated_to_grouped_row_ledgers() {
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
                parked: false,
                held: false,
            }
        );
        let tomb = rows.load_row("t", &Value::Text("[\"k\",1]".into())).expect("load").expect("migrated");
        assert_eq!(tomb, RowState { del: Some(upd), parked: true, ..Default::default() });
        assert_eq!(tombstones_waiting(&c).expect("count"), 1);
        let gone = rows.load_row("gone", &Value::Integer(7)).expect("load").expect("migrated");
        assert_eq!(gone.ins, Some(ins), "a table the target no longer has keeps its keys");
        let n: i64 = c.query_row("SELECT count(*) FROM _ferry_groups_2", [], |r| r.get(0)).expect("count");
        assert_eq!(n, 1, "…in its own row ledger, where they are found if the table comes back");
        let n: i64 = c.query_row("SELECT count(*) FROM _ferry_groups_1", [], |r| r.get(0)).expect("count");
        assert_eq!(n, 1, "the integer key went to t's row ledger");
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
    fn a_v2_ledger_is_grouped_and_a_damaged_state_stops_it_naming_its_key() {
        let v2 = |st: &[u8]| {
            let c = Connection::open_in_memory().expect("db");
            c.execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, a);
                 CREATE TABLE _ferry_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
                 INSERT INTO _ferry_meta VALUES ('ledger_version', 2);
                 CREATE TABLE _ferry_row_tables (id INTEGER PRIMARY KEY, tbl TEXT NOT NULL UNIQUE);
                 INSERT INTO _ferry_row_tables VALUES (1, 't'), (2, 'gone');
                 CREATE TABLE _ferry_rows_1 (key INTEGER PRIMARY KEY, flags INTEGER NOT NULL, st BLOB NOT NULL);
                 CREATE TABLE _ferry_rows_2 (key INTEGER PRIMARY KEY, flags INTEGER NOT NULL, st BLOB NOT NULL);",
            )
            .expect("v2");
            let mut good = Vec::new();
            let ins = Ver { ts: 1_790_000_000_000_000, origin: 1, seq: 3 };
            let flags = encode_state(
                &RowState { present: true, ins: Some(ins), ..Default::default() },
                &mut good,
                groups::ZERO,
            );
            for key in [-1i64, 0, 31, 32, 1000] {
                c.execute("INSERT INTO _ferry_rows_1 VALUES (?1, ?2, ?3)", params![key, flags, good]).expect("row");
            }
            c.execute("INSERT INTO _ferry_rows_2 VALUES (7, ?1, ?2)", params![flags, good]).expect("row");
            c.execute("INSERT INTO _ferry_rows_1 VALUES (42, ?1, ?2)", params![flags, st]).expect("row");
            (c, RowState { present: true, ins: Some(ins), ..Default::default() })
        };
        let (c, _) = v2(&[0x01]);
        let err = prepare(&c, &crate::schema::tables(&c).expect("tables")).expect_err("refused").to_string();
        assert!(err.contains("key 42 of table \"t\""), "{err}");

        let mut good = Vec::new();
        encode_state(
            &RowState { present: true, ins: Some(Ver { ts: 5, origin: 1, seq: 1 }), ..Default::default() },
            &mut good,
            groups::ZERO,
        );
        let (c, st) = v2(&good);
        prepare(&c, &crate::schema::tables(&c).expect("tables")).expect("migrate");
        assert_eq!(version(&c).expect("version"), Some(LEDGER_VERSION));
        for old in ["_ferry_rows_1", "_ferry_rows_2"] {
            assert!(!table_exists(&c, old).expect("exists"), "{old} is gone");
        }
        let rows = Rows::new(&c).expect("rows");
        for key in [-1i64, 0, 31, 32, 1000] {
            assert_eq!(rows.load_row("t", &Value::Integer(key)).expect("load"), Some(st.clone()), "key {key}");
        }
        assert_eq!(rows.load_row("gone", &Value::Integer(7)).expect("load"), Some(st), "a table the target lost");
        assert_eq!(rows.load_row("t", &Value::Integer(42)).expect("load").map(|s| s.ins.map(|v| v.ts)), Some(Some(5)));
        let groups: i64 = c.query_row("SELECT count(*) FROM _ferry_groups_1", [], |r| r.get(0)).expect("count");
        assert_eq!(groups, 4, "keys -1 | 0, 31 | 32, 42 | 1000: four groups");
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

    mod cache {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Op {
            Save(Value, u64),
            Claim(Value, u64),
            Forget(Value),
            Load(Value),
            Flush,
            Savepoint,
            Release,
            RollbackTo,
        }

        /// Integer keys over some 20 groups (negative ones too), and text keys.
        fn key() -> impl Strategy<Value = Value> {
            prop_oneof![
                8 => (-330i64..330).prop_map(Value::Integer),
                1 => (0u8..4).prop_map(|k| Value::Text(format!("[\"k{k}\"]"))),
            ]
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (key(), any::<u64>()).prop_map(|(k, s)| Op::Save(k, s)),
                4 => (key(), any::<u64>()).prop_map(|(k, s)| Op::Claim(k, s)),
                2 => key().prop_map(Op::Forget),
                4 => key().prop_map(Op::Load),
                1 => Just(Op::Flush),
                1 => Just(Op::Savepoint),
                1 => Just(Op::Release),
                1 => Just(Op::RollbackTo),
            ]
        }

        /// A state of every shape, from a seed.
        fn state(seed: u64) -> RowState {
            let v = |i: u64| Ver {
                ts: 1_790_000_000_000_000 + (seed >> (i * 7) & 0xffff) as i64 * 1000 - 30_000_000,
                origin: (seed >> (i * 3) & 3) as u32,
                seq: (seed >> (i * 5)) & 0xfff,
            };
            let mut cols = Cols::new();
            for no in 0..(seed % 5) as u32 {
                cols.push((no, if seed >> no & 1 == 0 { v(0) } else { v(u64::from(no) + 1) }));
            }
            RowState {
                present: seed & 0x100 != 0,
                ins: (seed & 0x200 != 0).then(|| v(0)),
                del: (seed & 0x400 != 0).then(|| v(7)),
                cols,
                parked: seed & 0x800 != 0,
                held: seed & 0x1000 != 0,
            }
        }

        fn run(ops: &[Op], budget: usize) -> Result<(), TestCaseError> {
            let c = Connection::open_in_memory().expect("db");
            c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, a, b, c, d);").expect("schema");
            prepare(&c, &crate::schema::tables(&c).expect("tables")).expect("prepare");
            let rows = Rows::with_budget(&c, budget).expect("rows");
            let mut model: BTreeMap<String, RowState> = BTreeMap::new();
            // Savepoints: what the model was when each was opened.
            let mut marks: Vec<BTreeMap<String, RowState>> = Vec::new();
            let name = |k: &Value| serde_json::to_string(k).expect("key");
            for op in ops {
                match op {
                    Op::Save(k, s) => {
                        rows.save_row("t", k, &state(*s)).expect("save");
                        model.insert(name(k), state(*s));
                    }
                    Op::Claim(k, s) => {
                        let claimed = rows.insert_new_row("t", k, &state(*s)).expect("claim");
                        prop_assert_eq!(claimed, !model.contains_key(&name(k)));
                        model.entry(name(k)).or_insert_with(|| state(*s));
                    }
                    Op::Forget(k) => {
                        rows.forget_row("t", k).expect("forget");
                        model.remove(&name(k));
                    }
                    Op::Load(k) => {
                        let got = rows.load_row("t", k).expect("load");
                        prop_assert_eq!(got.as_ref(), model.get(&name(k)));
                    }
                    Op::Flush => rows.flush().expect("flush"),
                    Op::Savepoint => {
                        rows.flush().expect("flush");
                        c.execute_batch(&format!("SAVEPOINT s{}", marks.len())).expect("savepoint");
                        marks.push(model.clone());
                    }
                    Op::Release => {
                        if marks.pop().is_some() {
                            rows.flush().expect("flush");
                            c.execute_batch(&format!("RELEASE s{}", marks.len())).expect("release");
                        }
                    }
                    Op::RollbackTo => {
                        if let Some(m) = marks.last() {
                            rows.discard();
                            c.execute_batch(&format!("ROLLBACK TO s{}", marks.len() - 1)).expect("rollback");
                            model = m.clone();
                        }
                    }
                }
            }
            rows.flush().expect("flush");
            drop(rows);
            // Everything reads back from the database alone.
            let fresh = Rows::new(&c).expect("rows");
            for k in (-330i64..330).map(Value::Integer).chain((0..4).map(|k| Value::Text(format!("[\"k{k}\"]")))) {
                let got = fresh.load_row("t", &k).expect("load");
                prop_assert_eq!(got.as_ref(), model.get(&name(&k)), "key {:?}", k);
            }
            let groups: i64 = c.query_row("SELECT count(*) FROM _ferry_groups_1", [], |r| r.get(0)).expect("count");
            let keys: std::collections::BTreeSet<i64> =
                model.keys().filter_map(|k| k.parse::<i64>().ok()).map(|k| k.div_euclid(groups::KEYS)).collect();
            prop_assert_eq!(groups as usize, keys.len(), "one row per group with a key, none for emptied groups");
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            /// The cache (evicting after a group or two, or never) gives what
            /// writing every state straight to the database would, also across
            /// savepoints rolled back and released.
            #[test]
            fn the_group_cache_reads_back_what_was_written(ops in proptest::collection::vec(op(), 0..120), big in any::<bool>()) {
                run(&ops, if big { CACHE_BYTES } else { 300 })?;
            }
        }
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
