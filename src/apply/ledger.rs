//! The ledger tables ferry keeps inside a target database (all named
//! `_ferry_*`, so [`crate::schema`] ignores them), and the compact encoding
//! of write versions. Every ledger write happens in the same transaction as
//! the data it describes.

use rusqlite::{params, Connection, OptionalExtension};

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

/// `cols` encoding: per column, a u16 name length, the name, a version.
pub fn encode_cols(cols: &[(String, Ver)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cols.len() * (VER_LEN + 12));
    for (name, v) in cols {
        let n = name.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&name.as_bytes()[..n]);
        v.encode_into(&mut out);
    }
    out
}

pub fn decode_cols(mut b: &[u8]) -> Option<Vec<(String, Ver)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u16::from_be_bytes(b.get(0..2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(b.get(2..2 + n)?).ok()?.to_owned();
        let v = Ver::decode(b.get(2 + n..)?)?;
        out.push((name, v));
        b = &b[2 + n + VER_LEN..];
    }
    Some(out)
}

pub fn load_row(conn: &Connection, tbl: &str, key: &Value) -> rusqlite::Result<Option<RowState>> {
    let mut stmt =
        conn.prepare_cached("SELECT present, ins, del, cols, parked FROM _ferry_rows WHERE tbl = ?1 AND key = ?2")?;
    stmt.query_row(params![tbl, key], |r| {
        let ins: Option<Vec<u8>> = r.get(1)?;
        let del: Option<Vec<u8>> = r.get(2)?;
        let cols: Vec<u8> = r.get(3)?;
        Ok(RowState {
            present: r.get::<_, i64>(0)? != 0,
            ins: ins.as_deref().and_then(Ver::decode),
            del: del.as_deref().and_then(Ver::decode),
            cols: decode_cols(&cols).unwrap_or_default(),
            parked: r.get::<_, i64>(4)? != 0,
        })
    })
    .optional()
}

pub fn save_row(conn: &Connection, tbl: &str, key: &Value, st: &RowState) -> rusqlite::Result<()> {
    // Most saves change a key the ledger already holds: an in-place UPDATE
    // is cheaper than REPLACE (delete + insert).
    let cols = encode_cols(&st.cols);
    let (ins, del) = (st.ins.map(|v| v.encode()), st.del.map(|v| v.encode()));
    let n = conn
        .prepare_cached(
            "UPDATE _ferry_rows SET present = ?3, ins = ?4, del = ?5, cols = ?6, parked = ?7 WHERE tbl = ?1 AND key = ?2",
        )?
        .execute(params![tbl, key, st.present, ins, del, cols, st.parked])?;
    if n == 0 {
        conn.prepare_cached("INSERT INTO _ferry_rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .execute(params![tbl, key, st.present, ins, del, cols, st.parked])?;
    }
    Ok(())
}

/// Records the state of a key the ledger has not seen; false when it has.
pub fn insert_new_row(conn: &Connection, tbl: &str, key: &Value, st: &RowState) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO _ferry_rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tbl, key) DO NOTHING",
    )?;
    let n = stmt.execute(params![
        tbl,
        key,
        st.present,
        st.ins.map(|v| v.encode()),
        st.del.map(|v| v.encode()),
        encode_cols(&st.cols),
        st.parked
    ])?;
    Ok(n == 1)
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
        assert_eq!(decode_cols(&encode_cols(&cols)), Some(cols));
        assert_eq!(decode_cols(&[0, 5, b'a']), None, "truncated input is refused, not a panic");
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
