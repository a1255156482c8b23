//! The statements that change the target's own tables: insert a row, set
//! columns, delete a row, read values. Values are always bound parameters;
//! identifiers come from [`TableInfo`] (the target's own schema), quoted.
//! The merge decisions in [`crate::apply::merge`] say which of these to run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::table::TableInfo;
use super::Fail;
use crate::apply::session::{self, ErrorKind, Param, Prepared, Session};
use crate::journal::Row;
use crate::value::Value;

/// Why the database refused a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A row with this key is already in the table.
    Key,
    /// A unique index other than the key has the value already.
    Unique(String),
    /// NOT NULL, CHECK, a type the column refuses, an app trigger.
    Other(String),
}

/// The outcome of a physical write.
#[derive(Debug)]
pub enum Written {
    Done(usize),
    Refused(Refusal),
}

/// A write's result, with a refusal by a constraint told apart from a
/// failure of the database.
pub fn written(r: session::Result<usize>) -> Result<Written, Fail> {
    match r {
        Ok(n) => Ok(Written::Done(n)),
        Err(e) if e.kind().is_constraint() => Ok(Written::Refused(match e.kind() {
            ErrorKind::Key => Refusal::Key,
            ErrorKind::Unique => Refusal::Unique(e.message()),
            _ => Refusal::Other(e.message()),
        })),
        Err(e) => Err(Fail::Db(e)),
    }
}

/// Values as statement parameters.
fn bind<'a>(vals: impl Iterator<Item = &'a Value>) -> smallvec::SmallVec<[Param<'a>; 8]> {
    vals.map(Param::Value).collect()
}

/// What a cached SQL text does (see [`SqlTexts`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlKind {
    Insert,
    Update,
    Delete,
}

/// Statements built once per table and column list: building their text
/// per entry (quoting, joining) cost more than running some of them.
pub struct SqlTexts<'c>(RefCell<HashMap<u64, Vec<SqlText<'c>>>>);

impl Default for SqlTexts<'_> {
    fn default() -> Self {
        SqlTexts(RefCell::new(HashMap::new()))
    }
}

/// A prepared statement: kind, table, column list, statement. Held here
/// rather than in rusqlite's statement cache, whose lookups by SQL text
/// cost a tenth of the apply thread's time.
type SqlText<'c> = (SqlKind, String, Vec<String>, Box<dyn Prepared + 'c>);

/// At most this many texts are kept (a bundle could use many column lists).
const SQL_TEXTS_MAX: usize = 1024;

impl<'c> SqlTexts<'c> {
    /// Runs `f` on the statement for `kind`, `table` and `cols`, prepared
    /// from `build()` on first use.
    fn with<'a, T>(
        &self,
        conn: &'c dyn Session,
        kind: SqlKind,
        table: &str,
        cols: impl Iterator<Item = &'a str> + Clone,
        build: impl FnOnce() -> String,
        f: impl FnOnce(&mut dyn Prepared) -> session::Result<T>,
    ) -> session::Result<T> {
        let mut h = std::hash::DefaultHasher::new();
        (kind, table).hash(&mut h);
        for c in cols.clone() {
            c.hash(&mut h);
        }
        let hash = h.finish();
        let mut map = self.0.borrow_mut();
        if let Some(bucket) = map.get_mut(&hash) {
            if let Some(hit) = bucket
                .iter_mut()
                .find(|(k, t, cs, _)| *k == kind && t == table && cs.iter().map(String::as_str).eq(cols.clone()))
            {
                return f(&mut *hit.3);
            }
        }
        if map.values().map(Vec::len).sum::<usize>() >= SQL_TEXTS_MAX {
            map.clear();
        }
        let mut stmt = conn.prepare(&build())?;
        let out = f(&mut *stmt);
        map.entry(hash).or_default().push((kind, table.to_owned(), cols.map(str::to_owned).collect(), stmt));
        out
    }

    /// `INSERT INTO t (cols) VALUES (…)`: a row with these columns (key
    /// columns among them, unless the database is to assign the key).
    pub fn insert<'a>(
        &self,
        conn: &'c dyn Session,
        t: &TableInfo,
        cols: impl Iterator<Item = &'a str> + Clone,
        vals: impl Iterator<Item = &'a Value>,
    ) -> Result<Written, Fail> {
        let names_of = cols.clone();
        let build = || {
            let names: Vec<String> = names_of.map(TableInfo::sql_name).collect();
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            if names.is_empty() {
                format!("INSERT INTO {} DEFAULT VALUES", t.quoted)
            } else {
                format!("INSERT INTO {} ({}) VALUES ({})", t.quoted, names.join(", "), marks.join(", "))
            }
        };
        let params = bind(vals);
        let mut build = Some(build);
        let mut write = || {
            let build = || build.take().map(|b| b()).unwrap_or_default();
            self.with(conn, SqlKind::Insert, &t.name, cols.clone(), build, |s| s.execute(&params))
        };
        written(conn.guarded(&mut write))
    }

    /// `UPDATE t SET cols WHERE key`: how many rows it changed.
    pub fn update<'a>(
        &self,
        conn: &'c dyn Session,
        t: &TableInfo,
        key_vals: &'a [Value],
        cols: impl Iterator<Item = &'a str> + Clone,
        vals: impl Iterator<Item = &'a Value>,
    ) -> Result<Written, Fail> {
        let n = key_vals.len();
        let names_of = cols.clone();
        let build = || {
            let sets: Vec<String> =
                names_of.enumerate().map(|(i, c)| format!("{} = ?{}", TableInfo::sql_name(c), n + i + 1)).collect();
            format!("UPDATE {} SET {} WHERE {}", t.quoted, sets.join(", "), t.key_where)
        };
        let all = key_vals.iter().chain(vals);
        let params = bind(all);
        let mut build = Some(build);
        let mut write = || {
            let build = || build.take().map(|b| b()).unwrap_or_default();
            self.with(conn, SqlKind::Update, &t.name, cols.clone(), build, |s| s.execute(&params))
        };
        written(conn.guarded(&mut write))
    }

    /// `DELETE FROM t WHERE key`: how many rows went.
    pub fn delete(&self, conn: &'c dyn Session, t: &TableInfo, key_vals: &[Value]) -> session::Result<usize> {
        let build = || format!("DELETE FROM {} WHERE {}", t.quoted, t.key_where);
        self.with(conn, SqlKind::Delete, &t.name, std::iter::empty(), build, |s| s.execute(&bind(key_vals.iter())))
    }
}

/// Whether the row with this key is in the table.
pub fn exists(conn: &dyn Session, t: &TableInfo, key_vals: &[Value]) -> session::Result<bool> {
    let sql = format!("SELECT count(*) FROM {} WHERE {}", t.quoted, t.key_where);
    Ok(conn.query_one(&sql, &bind(key_vals.iter()))?.get::<i64>(0)? > 0)
}

/// Deletes the row with this key; how many rows went.
pub fn delete(conn: &dyn Session, t: &TableInfo, key_vals: &[Value]) -> session::Result<usize> {
    let sql = format!("DELETE FROM {} WHERE {}", t.quoted, t.key_where);
    conn.execute(&sql, &bind(key_vals.iter()))
}

/// The values of `cols` in the row with this key (`None`: no such row).
pub fn read<'a>(
    conn: &dyn Session,
    t: &TableInfo,
    key_vals: &[Value],
    cols: impl Iterator<Item = &'a str>,
) -> session::Result<Option<Vec<Value>>> {
    let names: Vec<String> = cols.map(TableInfo::sql_name).collect();
    if names.is_empty() {
        return Ok(exists(conn, t, key_vals)?.then(Vec::new));
    }
    let sql = format!("SELECT {} FROM {} WHERE {}", names.join(", "), t.quoted, t.key_where);
    Ok(conn.query_opt(&sql, &bind(key_vals.iter()))?.map(|r| r.0))
}

/// The whole row with this key, every column by name (and `rowid` for a
/// table keyed by it).
pub fn read_row(conn: &dyn Session, t: &TableInfo, key_vals: &[Value]) -> session::Result<Option<Row>> {
    let cols = t.row_columns();
    let vals = read(conn, t, key_vals, cols.iter().copied())?;
    Ok(vals.map(|vals| Row(cols.iter().map(|c| (*c).to_owned()).zip(vals).collect())))
}

/// The keys of the rows whose values of `cols` equal `vals`, but for the
/// row keyed `not`.
pub fn find_by(
    conn: &dyn Session,
    t: &TableInfo,
    cols: &[String],
    vals: &[Value],
    not: &[Value],
) -> session::Result<Vec<Vec<Value>>> {
    let n = cols.len();
    let wheres: Vec<String> =
        cols.iter().enumerate().map(|(i, c)| format!("{} = ?{}", TableInfo::sql_name(c), i + 1)).collect();
    let keys: Vec<String> = t.key.iter().map(|k| TableInfo::sql_name(k)).collect();
    let same = conn.dialect().pick("IS", "IS NOT DISTINCT FROM", "<=>");
    let not_key: Vec<String> =
        t.key.iter().enumerate().map(|(i, k)| format!("{} {same} ?{}", TableInfo::sql_name(k), n + i + 1)).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} AND NOT ({})",
        keys.join(", "),
        t.quoted,
        wheres.join(" AND "),
        not_key.join(" AND ")
    );
    Ok(conn.query(&sql, &bind(vals.iter().chain(not.iter())))?.into_iter().map(|r| r.0).collect())
}
