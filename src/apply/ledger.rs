//! The ledger tables ferry keeps inside a target database (all named
//! `_ferry_*`, so [`crate::schema`] ignores them), and the compact encoding
//! of write versions. Every ledger write happens in the same transaction as
//! the data it describes.

use rusqlite::{params, Connection, OptionalExtension, Statement};

use crate::value::Value;

/// Ledger DDL. `_ferry_rows` holds one row per key ferry has seen: whether it
/// is present, the newest insert and delete versions (the delete is the
/// tombstone), and the version of every column's current value. `key` has
/// no type affinity: an integer for single-integer keys, else JSON text.
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
CREATE TABLE IF NOT EXISTS _ferry_rows (
    tbl         TEXT NOT NULL,
    key         NOT NULL,
    present     INTEGER NOT NULL,
    ins         BLOB,
    del         BLOB,
    cols        BLOB NOT NULL,
    parked      INTEGER NOT NULL,
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

/// The version of a write: `(ts, origin, seq)`. `origin` is the local id of
/// the origin in `_ferry_origins`; comparisons use the origin's node id text
/// (see [`super::engine`]), so the order is the same in every database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ver {
    pub ts: i64,
    pub origin: u32,
    pub seq: u64,
}

const VER_LEN: usize = 20;

impl Ver {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ts.to_be_bytes());
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(VER_LEN);
        self.encode_into(&mut v);
        v
    }
    pub fn decode(b: &[u8]) -> Option<Ver> {
        if b.len() < VER_LEN {
            return None;
        }
        Some(Ver {
            ts: i64::from_be_bytes(b[0..8].try_into().ok()?),
            origin: u32::from_be_bytes(b[8..12].try_into().ok()?),
            seq: u64::from_be_bytes(b[12..20].try_into().ok()?),
        })
    }
}

/// What the ledger knows about one key of one table.
#[derive(Debug, Clone, Default)]
pub struct RowState {
    pub present: bool,
    pub ins: Option<Ver>,
    pub del: Option<Ver>,
    /// Column → version of its current value (only columns ferry wrote).
    pub cols: Vec<(String, Ver)>,
    pub parked: bool,
}

impl RowState {
    pub fn col(&self, name: &str) -> Option<Ver> {
        self.cols.iter().find(|(c, _)| c == name).map(|(_, v)| *v)
    }
    pub fn set_col(&mut self, name: &str, v: Ver) {
        match self.cols.iter_mut().find(|(c, _)| c == name) {
            Some(slot) => slot.1 = v,
            None => self.cols.push((name.to_owned(), v)),
        }
    }
}

/// Set in a column's length field when its version is the row's insert
/// version (`ins`), which is then not repeated: a freshly inserted row's
/// columns cost their names only.
const SAME_AS_INS: u16 = 0x8000;

/// `cols` encoding: per column, a u16 name length (its top bit
/// [`SAME_AS_INS`]), the name, and, unless the top bit is set, a version.
pub fn encode_cols(cols: &[(String, Ver)], ins: Option<Ver>) -> Vec<u8> {
    let mut out = Vec::with_capacity(cols.len() * 8);
    for (name, v) in cols {
        let n = name.len().min((SAME_AS_INS - 1) as usize);
        let same = ins == Some(*v);
        out.extend_from_slice(&(n as u16 | if same { SAME_AS_INS } else { 0 }).to_be_bytes());
        out.extend_from_slice(&name.as_bytes()[..n]);
        if !same {
            v.encode_into(&mut out);
        }
    }
    out
}

pub fn decode_cols(mut b: &[u8], ins: Option<Ver>) -> Option<Vec<(String, Ver)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let head = u16::from_be_bytes(b.get(0..2)?.try_into().ok()?);
        let n = (head & !SAME_AS_INS) as usize;
        let name = std::str::from_utf8(b.get(2..2 + n)?).ok()?.to_owned();
        let (v, used) = if head & SAME_AS_INS != 0 { (ins?, 0) } else { (Ver::decode(b.get(2 + n..)?)?, VER_LEN) };
        out.push((name, v));
        b = &b[2 + n + used..];
    }
    Some(out)
}

pub fn load_row(conn: &Connection, tbl: &str, key: &Value) -> rusqlite::Result<Option<RowState>> {
    conn.prepare_cached(LOAD_ROW)?.query_row(params![tbl, key], read_row).optional()
}

pub fn save_row(conn: &Connection, tbl: &str, key: &Value, st: &RowState) -> rusqlite::Result<()> {
    // Most saves change a key the ledger already holds: an in-place UPDATE
    // is cheaper than REPLACE (delete + insert).
    let cols = encode_cols(&st.cols, st.ins);
    let (ins, del) = (st.ins.map(|v| v.encode()), st.del.map(|v| v.encode()));
    if conn.prepare_cached(UPDATE_ROW)?.execute(params![tbl, key, st.present, ins, del, cols, st.parked])? == 0 {
        conn.prepare_cached(INSERT_ROW)?.execute(params![tbl, key, st.present, ins, del, cols, st.parked])?;
    }
    Ok(())
}

/// The `_ferry_rows` statements apply runs for nearly every entry,
/// prepared once per run (lookups in rusqlite's statement cache by SQL text
/// cost more than some of these statements).
pub struct Rows<'c> {
    conn: &'c Connection,
    stmts: std::cell::RefCell<RowStmts<'c>>,
}

struct RowStmts<'c> {
    load: Statement<'c>,
    update: Statement<'c>,
    insert: Statement<'c>,
    claim: Statement<'c>,
}

impl<'c> Rows<'c> {
    /// Prepares the statements (the ledger tables must exist).
    pub fn new(conn: &'c Connection) -> rusqlite::Result<Rows<'c>> {
        Ok(Rows {
            conn,
            stmts: std::cell::RefCell::new(RowStmts {
                load: conn.prepare(LOAD_ROW)?,
                update: conn.prepare(UPDATE_ROW)?,
                insert: conn.prepare(INSERT_ROW)?,
                claim: conn.prepare(CLAIM_ROW)?,
            }),
        })
    }

    /// [`load_row`].
    pub fn load_row(&self, tbl: &str, key: &Value) -> rusqlite::Result<Option<RowState>> {
        let mut s = self.stmts.borrow_mut();
        s.load.query_row(params![tbl, key], read_row).optional()
    }

    /// [`save_row`].
    pub fn save_row(&self, tbl: &str, key: &Value, st: &RowState) -> rusqlite::Result<()> {
        let mut s = self.stmts.borrow_mut();
        let cols = encode_cols(&st.cols, st.ins);
        let (ins, del) = (st.ins.map(|v| v.encode()), st.del.map(|v| v.encode()));
        if s.update.execute(params![tbl, key, st.present, ins, del, cols, st.parked])? == 0 {
            s.insert.execute(params![tbl, key, st.present, ins, del, cols, st.parked])?;
        }
        Ok(())
    }

    /// [`insert_new_row`].
    pub fn insert_new_row(&self, tbl: &str, key: &Value, st: &RowState) -> rusqlite::Result<bool> {
        let mut s = self.stmts.borrow_mut();
        let (ins, del) = (st.ins.map(|v| v.encode()), st.del.map(|v| v.encode()));
        let n = s.claim.execute(params![tbl, key, st.present, ins, del, encode_cols(&st.cols, st.ins), st.parked])?;
        Ok(n == 1)
    }

    /// [`forget_row`].
    pub fn forget_row(&self, tbl: &str, key: &Value) -> rusqlite::Result<()> {
        forget_row(self.conn, tbl, key)
    }
}

const LOAD_ROW: &str = "SELECT present, ins, del, cols, parked FROM _ferry_rows WHERE tbl = ?1 AND key = ?2";
const UPDATE_ROW: &str =
    "UPDATE _ferry_rows SET present = ?3, ins = ?4, del = ?5, cols = ?6, parked = ?7 WHERE tbl = ?1 AND key = ?2";
const INSERT_ROW: &str = "INSERT INTO _ferry_rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const CLAIM_ROW: &str = "INSERT INTO _ferry_rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tbl, key) DO NOTHING";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RowState> {
    let ins = r.get_ref(1)?.as_blob_or_null()?.and_then(Ver::decode);
    let del = r.get_ref(2)?.as_blob_or_null()?.and_then(Ver::decode);
    Ok(RowState {
        present: r.get::<_, i64>(0)? != 0,
        ins,
        del,
        cols: decode_cols(r.get_ref(3)?.as_blob()?, ins).unwrap_or_default(),
        parked: r.get::<_, i64>(4)? != 0,
    })
}

/// Records the state of a key the ledger has not seen; false when it has.
pub fn insert_new_row(conn: &Connection, tbl: &str, key: &Value, st: &RowState) -> rusqlite::Result<bool> {
    let (ins, del) = (st.ins.map(|v| v.encode()), st.del.map(|v| v.encode()));
    let cols = encode_cols(&st.cols, st.ins);
    Ok(conn.prepare_cached(CLAIM_ROW)?.execute(params![tbl, key, st.present, ins, del, cols, st.parked])? == 1)
}

pub fn forget_row(conn: &Connection, tbl: &str, key: &Value) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM _ferry_rows WHERE tbl = ?1 AND key = ?2")?.execute(params![tbl, key])?;
    Ok(())
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

    #[test]
    fn cols_round_trip() {
        let cols = vec![
            ("a".to_owned(), Ver { ts: -5, origin: 1, seq: 7 }),
            ("wé\"ird".to_owned(), Ver { ts: i64::MAX, origin: u32::MAX, seq: u64::MAX }),
        ];
        assert_eq!(decode_cols(&encode_cols(&cols, None), None), Some(cols.clone()));
        assert_eq!(decode_cols(&[0, 5, b'a'], None), None, "truncated input is refused, not a panic");
        let ins = Some(cols[1].1);
        let short = encode_cols(&cols, ins);
        assert_eq!(short.len(), 2 + 1 + VER_LEN + 2 + "wé\"ird".len(), "the insert version is not repeated");
        assert_eq!(decode_cols(&short, ins), Some(cols));
        assert_eq!(decode_cols(&short, None), None, "a column at the insert version needs one");
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
