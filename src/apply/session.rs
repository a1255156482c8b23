//! One open connection to a target database, as apply's engine and ledger
//! use it: statements with bound values, rows read back as
//! [`Value`]s, prepared statements kept for a run, savepoints, the id a
//! database assigned, and what kind of failure an error is (the engine asks
//! the merge again when a constraint refuses a write, and stops the run
//! when the database itself failed).
//!
//! SQL is written once, with numbered placeholders `?1`, `?2` …; each
//! engine's session takes it in the form its database reads (SQLite reads
//! it as it is). What differs between engines beyond that is asked of
//! [`Dialect`].
//!
//! SQLite's [`rusqlite::Connection`] is a session itself, so code that
//! holds one (capture, receipts) calls the ledger's functions with it.

use crate::value::Value;

mod pg;
pub use pg::PgSession;

/// Which database a session talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    /// The statement for this engine, from its forms for each.
    pub fn pick(self, sqlite: &'static str, postgres: &'static str, mysql: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
            Dialect::Mysql => mysql,
        }
    }
}

/// What kind of failure a database error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The run cannot go on: the disk, the file, memory, a lock, the
    /// connection.
    Fatal,
    /// A row with this primary key is already in the table.
    Key,
    /// A unique index other than the primary key has the value already.
    Unique,
    /// A foreign key refused the write.
    ForeignKey,
    /// A NOT NULL column was given no value.
    NotNull,
    /// A CHECK constraint, an app trigger or a value of a type the column
    /// refuses.
    Check,
    /// Anything else (bad SQL, a value the engine cannot read): refuses
    /// what was being applied, not the run.
    Other,
}

impl ErrorKind {
    /// A constraint of the table refused a write (the merge decides what
    /// happens next).
    pub fn is_constraint(self) -> bool {
        matches!(
            self,
            ErrorKind::Key | ErrorKind::Unique | ErrorKind::ForeignKey | ErrorKind::NotNull | ErrorKind::Check
        )
    }
}

/// A failure of a statement or of reading its result.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg::message(.0))]
    Postgres(postgres::Error),
    #[error("column {index} of a ledger row: expected {expected}, found {found}")]
    Type { index: usize, expected: &'static str, found: &'static str },
    #[error("a query that must return a row returned none")]
    NoRow,
    #[error("the ledger is not as this ferry left it: {0}")]
    Ledger(String),
    #[error("ferry cannot do this on this database yet: {0}")]
    Unsupported(String),
}

impl DbError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DbError::Sqlite(e) => sqlite_kind(e),
            DbError::Postgres(e) => pg::kind(e),
            DbError::Type { .. } | DbError::NoRow | DbError::Ledger(_) => ErrorKind::Other,
            DbError::Unsupported(_) => ErrorKind::Fatal,
        }
    }

    /// The database's own words for a refused write.
    pub fn message(&self) -> String {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, msg)) => msg.clone().unwrap_or_else(|| e.to_string()),
            DbError::Postgres(e) => pg::message(e),
            e => e.to_string(),
        }
    }
}

/// Code that works on a SQLite connection alone (migrations, capture,
/// receipts) calls session functions with it and keeps its error type.
impl From<DbError> for rusqlite::Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sqlite(e) => e,
            DbError::NoRow => rusqlite::Error::QueryReturnedNoRows,
            e => rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        }
    }
}

const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
const SQLITE_CONSTRAINT_ROWID: i32 = 2579;
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;
const SQLITE_CONSTRAINT_FOREIGNKEY: i32 = 787;
const SQLITE_CONSTRAINT_NOTNULL: i32 = 1299;

fn sqlite_kind(e: &rusqlite::Error) -> ErrorKind {
    use rusqlite::ErrorCode as C;
    let rusqlite::Error::SqliteFailure(f, _) = e else { return ErrorKind::Other };
    match f.code {
        C::DatabaseBusy
        | C::DatabaseLocked
        | C::OutOfMemory
        | C::ReadOnly
        | C::OperationInterrupted
        | C::SystemIoFailure
        | C::DatabaseCorrupt
        | C::DiskFull
        | C::CannotOpen
        | C::FileLockingProtocolFailed
        | C::NotADatabase
        | C::PermissionDenied => ErrorKind::Fatal,
        C::ConstraintViolation => match f.extended_code {
            SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_ROWID => ErrorKind::Key,
            SQLITE_CONSTRAINT_UNIQUE => ErrorKind::Unique,
            SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKey,
            SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNull,
            _ => ErrorKind::Check,
        },
        C::TypeMismatch => ErrorKind::Check,
        _ => ErrorKind::Other,
    }
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A value bound to a statement, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    Value(&'a Value),
}

/// What can be bound as a [`Param`] (see [`args!`](crate::args)).
pub trait ToParam {
    fn to_param(&self) -> Param<'_>;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl ToParam for $t {
            fn to_param(&self) -> Param<'_> {
                Param::Int(i64::from(*self))
            }
        }
    )*};
}
int_param!(i64, i32, u32, u8, bool);

impl ToParam for f64 {
    fn to_param(&self) -> Param<'_> {
        Param::Real(*self)
    }
}
impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for std::borrow::Cow<'_, str> {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for [u8] {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}
impl ToParam for Vec<u8> {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}
impl ToParam for Value {
    fn to_param(&self) -> Param<'_> {
        Param::Value(self)
    }
}
impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        match self {
            Some(v) => v.to_param(),
            None => Param::Null,
        }
    }
}
impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}

/// The parameters of a statement: `args![a, b]` binds `a` as `?1` and `b`
/// as `?2`.
#[macro_export]
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        &[$($crate::apply::session::ToParam::to_param(&$x)),*][..]
    };
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(i) => ValueRef::Integer(i),
            Param::Real(f) => ValueRef::Real(f),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
            Param::Value(v) => return v.to_sql(),
        }))
    }
}

/// One row of a result, its columns as values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbRow(pub Vec<Value>);

impl DbRow {
    /// Column `i` as a `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).ok_or(DbError::Type { index: i, expected: T::NAME, found: v.type_name() })
    }

    /// Column `i` as it is.
    pub fn value(&self, i: usize) -> Value {
        self.0.get(i).cloned().unwrap_or(Value::Null)
    }

    /// Column `i` taken out of the row.
    pub fn take(&mut self, i: usize) -> Value {
        self.0.get_mut(i).map(|v| std::mem::replace(v, Value::Null)).unwrap_or(Value::Null)
    }
}

/// What a column's value can be read as.
pub trait FromValue: Sized {
    const NAME: &'static str;
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    const NAME: &'static str = "integer";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for u32 {
    const NAME: &'static str = "integer (32-bit, not negative)";
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| u32::try_from(i).ok())
    }
}
impl FromValue for bool {
    const NAME: &'static str = "integer (boolean)";
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    const NAME: &'static str = "real";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Real(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }
}
impl FromValue for String {
    const NAME: &'static str = "text";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            Value::TextBytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    const NAME: &'static str = "blob";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) | Value::TextBytes(b) => Some(b.clone()),
            Value::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}
impl FromValue for Value {
    const NAME: &'static str = "value";
    fn from_value(v: &Value) -> Option<Self> {
        Some(v.clone())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    const NAME: &'static str = T::NAME;
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A statement prepared once and run many times in a run.
pub trait Prepared {
    /// Runs it; how many rows it changed.
    fn execute(&mut self, params: &[Param<'_>]) -> Result<usize>;
    /// Runs it; its first row, if any.
    fn query_opt(&mut self, params: &[Param<'_>]) -> Result<Option<DbRow>>;
    /// Runs it; every row.
    fn query(&mut self, params: &[Param<'_>]) -> Result<Vec<DbRow>>;
}

/// An open connection to a target database, inside the apply run's
/// transaction.
pub trait Session {
    fn dialect(&self) -> Dialect;

    /// Runs a statement (prepared once per text and kept); how many rows it
    /// changed.
    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize>;

    /// Runs a query; its first row, if any.
    fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<DbRow>>;

    /// Runs a query; every row.
    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<DbRow>>;

    /// Runs statements without parameters, separated by `;`.
    fn batch(&self, sql: &str) -> Result<()>;

    /// Prepares a statement for the caller to keep.
    fn prepare<'s>(&'s self, sql: &str) -> Result<Box<dyn Prepared + 's>>;

    /// The key the database assigned to the row the last insert made.
    fn last_insert_id(&self) -> Result<i64>;

    /// The SQLite connection, for what only SQLite has (its schema
    /// pragmas, old ledger layouts, capture).
    fn sqlite(&self) -> Option<&rusqlite::Connection>;

    /// Runs a query that returns exactly one row.
    fn query_one(&self, sql: &str, params: &[Param<'_>]) -> Result<DbRow> {
        self.query_opt(sql, params)?.ok_or(DbError::NoRow)
    }

    /// Runs a write a constraint may refuse, so that a refusal leaves the
    /// transaction usable: PostgreSQL aborts a transaction at any error, so
    /// there the write gets a savepoint of its own; SQLite needs none.
    fn guarded(&self, write: &mut dyn FnMut() -> Result<usize>) -> Result<usize> {
        write()
    }

    /// Starts savepoint `name`.
    fn savepoint(&self, name: &str) -> Result<()> {
        self.batch(&format!("SAVEPOINT {name}"))
    }

    /// Ends savepoint `name`, keeping what it holds.
    fn release(&self, name: &str) -> Result<()> {
        self.batch(&format!("RELEASE SAVEPOINT {name}"))
    }

    /// Undoes everything since savepoint `name`, which stays open.
    fn rollback_to(&self, name: &str) -> Result<()> {
        self.batch(&format!("ROLLBACK TO SAVEPOINT {name}"))
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DbRow> {
    let n = r.as_ref().column_count();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(Value::from(r.get_ref(i)?));
    }
    Ok(DbRow(out))
}

fn sqlite_params<'a>(params: &'a [Param<'a>]) -> rusqlite::ParamsFromIter<std::slice::Iter<'a, Param<'a>>> {
    rusqlite::params_from_iter(params.iter())
}

impl Prepared for rusqlite::Statement<'_> {
    fn execute(&mut self, params: &[Param<'_>]) -> Result<usize> {
        Ok(rusqlite::Statement::execute(self, sqlite_params(params))?)
    }

    fn query_opt(&mut self, params: &[Param<'_>]) -> Result<Option<DbRow>> {
        let mut rows = rusqlite::Statement::query(self, sqlite_params(params))?;
        match rows.next()? {
            Some(r) => Ok(Some(sqlite_row(r)?)),
            None => Ok(None),
        }
    }

    fn query(&mut self, params: &[Param<'_>]) -> Result<Vec<DbRow>> {
        let mut rows = rusqlite::Statement::query(self, sqlite_params(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(sqlite_row(r)?);
        }
        Ok(out)
    }
}

impl Session for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize> {
        Ok(self.prepare_cached(sql)?.execute(sqlite_params(params))?)
    }

    fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<DbRow>> {
        let mut stmt = self.prepare_cached(sql)?;
        Prepared::query_opt(&mut *stmt, params)
    }

    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<DbRow>> {
        let mut stmt = self.prepare_cached(sql)?;
        Prepared::query(&mut *stmt, params)
    }

    fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.execute_batch(sql)?)
    }

    fn prepare<'s>(&'s self, sql: &str) -> Result<Box<dyn Prepared + 's>> {
        Ok(Box::new(rusqlite::Connection::prepare(self, sql)?))
    }

    fn last_insert_id(&self) -> Result<i64> {
        Ok(self.last_insert_rowid())
    }

    fn sqlite(&self) -> Option<&rusqlite::Connection> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_are_told_apart_by_kind() {
        let c = rusqlite::Connection::open_in_memory().expect("db");
        c.execute_batch(
            "CREATE TABLE p (id INTEGER PRIMARY KEY);
             CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, n TEXT NOT NULL DEFAULT 'x', c INTEGER CHECK (c > 0),
                             p INTEGER REFERENCES p (id));
             PRAGMA foreign_keys = ON;
             INSERT INTO t (id, u) VALUES (1, 'a');",
        )
        .expect("schema");
        let s: &dyn Session = &c;
        let kind = |sql: &str| s.execute(sql, &[]).expect_err(sql).kind();
        assert_eq!(kind("INSERT INTO t (id) VALUES (1)"), ErrorKind::Key);
        assert_eq!(kind("INSERT INTO t (id, u) VALUES (2, 'a')"), ErrorKind::Unique);
        assert_eq!(kind("INSERT INTO t (id, n) VALUES (2, NULL)"), ErrorKind::NotNull);
        assert_eq!(kind("INSERT INTO t (id, c) VALUES (2, 0)"), ErrorKind::Check);
        assert_eq!(kind("INSERT INTO t (id, p) VALUES (2, 9)"), ErrorKind::ForeignKey);
        assert_eq!(kind("INSERT INTO nowhere VALUES (1)"), ErrorKind::Other);
        assert!(ErrorKind::Key.is_constraint() && !ErrorKind::Other.is_constraint());
    }

    #[test]
    fn values_bind_and_read_back_through_a_sqlite_session() {
        let c = rusqlite::Connection::open_in_memory().expect("db");
        let s: &dyn Session = &c;
        s.batch("CREATE TABLE t (a, b, c, d, e)").expect("schema");
        let v = Value::Real(-0.5);
        let none: Option<i64> = None;
        let n = s.execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)", args![7i64, "x", &[1u8, 2][..], v, none]);
        assert_eq!(n.expect("insert"), 1);
        assert_eq!(s.last_insert_id().expect("id"), 1);
        let r = s.query_one("SELECT a, b, c, d, e FROM t", &[]).expect("row");
        assert_eq!(r.get::<i64>(0).expect("a"), 7);
        assert_eq!(r.get::<String>(1).expect("b"), "x");
        assert_eq!(r.get::<Vec<u8>>(2).expect("c"), vec![1, 2]);
        assert_eq!(r.value(3), Value::Real(-0.5));
        assert_eq!(r.get::<Option<i64>>(4).expect("e"), None);
        let err = r.get::<i64>(1).expect_err("text is no integer").to_string();
        assert!(err.contains("expected integer") && err.contains("text"), "{err}");
        assert!(s.query_opt("SELECT a FROM t WHERE a = ?1", args![8i64]).expect("none").is_none());
        s.savepoint("sp").expect("savepoint");
        s.execute("DELETE FROM t", &[]).expect("delete");
        s.rollback_to("sp").expect("rollback");
        s.release("sp").expect("release");
        assert_eq!(s.query("SELECT a FROM t", &[]).expect("rows").len(), 1, "the rollback undid the delete");
        let mut p = s.prepare("SELECT b FROM t WHERE a = ?1").expect("prepare");
        assert_eq!(p.query_opt(args![7i64]).expect("row").map(|r| r.value(0)), Some(Value::Text("x".into())));
    }
}
