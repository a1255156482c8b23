//! The PostgreSQL session: `?N` placeholders become `$N`, values are bound
//! in the binary form of the type PostgreSQL infers for each parameter
//! (the column's own type: see [`crate::apply::types`] for which values
//! fit which types), and read back in the form Django gives them on SQLite
//! (booleans as 0/1, UUIDs as 32 hex digits, times as naive UTC text), so
//! conflicts and held rows read the same on every engine.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;

use postgres::types::{FromSql, IsNull, Kind, ToSql, Type};

use super::{DbError, DbRow, Dialect, ErrorKind, Param, Prepared, Result, Session};
use crate::value::Value;

type BoxError = Box<dyn StdError + Sync + Send>;

/// An open PostgreSQL connection inside one transaction.
pub struct PgSession {
    client: RefCell<postgres::Client>,
    stmts: RefCell<HashMap<String, postgres::Statement>>,
}

impl PgSession {
    pub fn new(client: postgres::Client) -> PgSession {
        PgSession { client: RefCell::new(client), stmts: RefCell::new(HashMap::new()) }
    }

    fn statement(&self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.stmts.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.borrow_mut().prepare(&placeholders(sql))?;
        let mut stmts = self.stmts.borrow_mut();
        if stmts.len() >= 512 {
            stmts.clear();
        }
        stmts.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// `?N` → `$N`, outside quoted text and identifiers.
pub(crate) fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

/// The kind of a PostgreSQL error, by its SQLSTATE.
pub(super) fn kind(e: &postgres::Error) -> ErrorKind {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection or the protocol failed, or a value
        // could not be converted (which is ferry's to refuse).
        return if e.is_closed() || StdError::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
            ErrorKind::Fatal
        } else {
            ErrorKind::Other
        };
    };
    match code.code() {
        "23505" => match e.as_db_error().and_then(|d| d.constraint()) {
            Some(c) if c.ends_with("_pkey") => ErrorKind::Key,
            _ => ErrorKind::Unique,
        },
        "23503" => ErrorKind::ForeignKey,
        "23502" => ErrorKind::NotNull,
        "23514" | "23000" | "23P01" => ErrorKind::Check,
        // Data exceptions: a value the column cannot take.
        c if c.starts_with("22") => ErrorKind::Check,
        // Connection, resources, operator intervention, system errors,
        // serialization and deadlocks.
        c if ["08", "53", "57", "58", "XX", "40"].iter().any(|p| c.starts_with(p)) => ErrorKind::Fatal,
        _ => ErrorKind::Other,
    }
}

/// The server's own message for a refused write.
pub(super) fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{} ({detail})", d.message()),
            None => d.message().to_owned(),
        },
        None => {
            let mut s = e.to_string();
            let mut src = StdError::source(e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    }
}

/// A parameter bound in the form of the type PostgreSQL asks for.
#[derive(Debug)]
struct Bound<'a>(Param<'a>);

fn bad(what: &str, ty: &Type) -> BoxError {
    format!("{what} cannot be stored in a column of type {ty}").into()
}

impl ToSql for Bound<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> std::result::Result<IsNull, BoxError> {
        let v: std::borrow::Cow<'_, Value> = match self.0 {
            Param::Null => return Ok(IsNull::Yes),
            Param::Int(i) => std::borrow::Cow::Owned(Value::Integer(i)),
            Param::Real(f) => std::borrow::Cow::Owned(Value::Real(f)),
            Param::Text(s) => std::borrow::Cow::Owned(Value::Text(s.to_owned())),
            Param::Blob(b) => std::borrow::Cow::Owned(Value::Blob(b.to_vec())),
            Param::Value(v) => std::borrow::Cow::Borrowed(v),
        };
        encode(&v, ty, out)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// The PostgreSQL epoch (2000-01-01) in Unix seconds.
const PG_EPOCH: i64 = 946_684_800;

fn encode(v: &Value, ty: &Type, out: &mut bytes::BytesMut) -> std::result::Result<IsNull, BoxError> {
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::Text(t) => Some(t.clone()),
            Value::Integer(i) => Some(i.to_string()),
            Value::Real(f) => Some(format!("{f:?}")),
            _ => None,
        }
    };
    let int = |v: &Value| -> std::result::Result<i64, BoxError> {
        match v {
            Value::Integer(i) => Ok(*i),
            Value::Text(t) => t.trim().parse().map_err(|_| bad("this text", ty)),
            _ => Err(bad(&format!("{} value", v.type_name()), ty)),
        }
    };
    if let Value::Null = v {
        return Ok(IsNull::Yes);
    }
    match *ty {
        Type::INT2 => {
            let i = i16::try_from(int(v)?).map_err(|_| bad("this integer", ty))?;
            i.to_sql(ty, out)
        }
        Type::INT4 => {
            let i = i32::try_from(int(v)?).map_err(|_| bad("this integer", ty))?;
            i.to_sql(ty, out)
        }
        Type::INT8 => int(v)?.to_sql(ty, out),
        Type::OID => u32::try_from(int(v)?).map_err(|_| bad("this integer", ty))?.to_sql(ty, out),
        Type::BOOL => match v {
            Value::Integer(0) => false.to_sql(ty, out),
            Value::Integer(1) => true.to_sql(ty, out),
            _ => Err(bad("a value other than 0 or 1", ty)),
        },
        Type::FLOAT8 => match v {
            Value::Real(f) => f.to_sql(ty, out),
            Value::Integer(i) => (*i as f64).to_sql(ty, out),
            _ => Err(bad("this value", ty)),
        },
        Type::FLOAT4 => match v {
            Value::Real(f) => (*f as f32).to_sql(ty, out),
            Value::Integer(i) => (*i as f32).to_sql(ty, out),
            _ => Err(bad("this value", ty)),
        },
        Type::NUMERIC => {
            let t = match v {
                Value::Real(f) if f.is_finite() => format!("{f}"),
                v => text(v).ok_or_else(|| bad("this value", ty))?,
            };
            let bytes = numeric(t.trim()).ok_or_else(|| bad("this text", ty))?;
            out.extend_from_slice(&bytes);
            Ok(IsNull::No)
        }
        Type::BYTEA => match v {
            Value::Blob(b) | Value::TextBytes(b) => b.as_slice().to_sql(ty, out),
            Value::Text(t) => t.as_bytes().to_sql(ty, out),
            _ => Err(bad("this value", ty)),
        },
        Type::UUID => {
            let t = text(v).ok_or_else(|| bad("this value", ty))?;
            let hex: String = t.chars().filter(|c| *c != '-').collect();
            let b = (hex.len() == 32).then(|| hex::decode(&hex).ok()).flatten().ok_or_else(|| bad("this text", ty))?;
            out.extend_from_slice(&b);
            Ok(IsNull::No)
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let t = text(v).ok_or_else(|| bad("this value", ty))?;
            let dt = crate::apply::types::parse_datetime(&t).ok_or_else(|| bad("this text", ty))?;
            let micros = dt.and_utc().timestamp_micros() - PG_EPOCH * 1_000_000;
            out.extend_from_slice(&micros.to_be_bytes());
            Ok(IsNull::No)
        }
        Type::DATE => {
            let t = text(v).ok_or_else(|| bad("this value", ty))?;
            let d = chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d").map_err(|_| bad("this text", ty))?;
            let days = d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default());
            let days = i32::try_from(days.num_days()).map_err(|_| bad("this date", ty))?;
            out.extend_from_slice(&days.to_be_bytes());
            Ok(IsNull::No)
        }
        Type::TIME => {
            let t = text(v).ok_or_else(|| bad("this value", ty))?;
            let tm = chrono::NaiveTime::parse_from_str(&t, "%H:%M:%S%.f").map_err(|_| bad("this text", ty))?;
            let micros = tm.signed_duration_since(chrono::NaiveTime::MIN).num_microseconds().unwrap_or(0);
            out.extend_from_slice(&micros.to_be_bytes());
            Ok(IsNull::No)
        }
        Type::JSON => {
            let t = text(v).ok_or_else(|| bad("this value", ty))?;
            out.extend_from_slice(t.as_bytes());
            Ok(IsNull::No)
        }
        Type::JSONB => {
            let t = text(v).ok_or_else(|| bad("this value", ty))?;
            out.extend_from_slice(&[1]);
            out.extend_from_slice(t.as_bytes());
            Ok(IsNull::No)
        }
        _ if matches!(ty.kind(), Kind::Domain(_)) => match ty.kind() {
            Kind::Domain(inner) => encode(v, inner, out),
            _ => Err(bad("this value", ty)),
        },
        _ => {
            // text, varchar, char, name, citext and the like take text.
            let t = match v {
                Value::Blob(_) | Value::TextBytes(_) => return Err(bad("binary data", ty)),
                v => text(v).ok_or_else(|| bad("this value", ty))?,
            };
            out.extend_from_slice(t.as_bytes());
            Ok(IsNull::No)
        }
    }
}

/// A decimal number in PostgreSQL's binary NUMERIC form (base 10000
/// digits), exactly; `None` for text that is not a plain decimal number.
fn numeric(t: &str) -> Option<Vec<u8>> {
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let dscale = u16::try_from(frac.len()).ok()?;
    let int = int.trim_start_matches('0');
    // Integer digits padded on the left, fraction digits on the right, to groups of four.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let digits: String = "0".repeat(int_pad) + int + frac + &"0".repeat(frac_pad);
    let mut groups: Vec<i16> =
        digits.as_bytes().chunks(4).map(|c| c.iter().fold(0i16, |a, d| a * 10 + i16::from(d - b'0'))).collect();
    let mut weight = i32::try_from((int.len() + int_pad) / 4).ok()? - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&i16::try_from(groups.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&i16::try_from(weight).ok()?.to_be_bytes());
    out.extend_from_slice(&(if neg && !groups.is_empty() { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Some(out)
}

/// The text of a binary NUMERIC.
fn numeric_text(raw: &[u8]) -> Option<String> {
    let n = |i: usize| raw.get(i..i + 2).map(|b| i16::from_be_bytes([b[0], b[1]]));
    let (ndigits, weight, sign, dscale) = (n(0)?, n(2)?, n(4)? as u16, n(6)?);
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let groups: Vec<i16> = (0..ndigits as usize).map(|i| n(8 + 2 * i)).collect::<Option<_>>()?;
    let mut int = String::new();
    for w in 0..=weight.max(-1) {
        let g = groups.get(w as usize).copied().unwrap_or(0);
        if int.is_empty() {
            if g != 0 {
                int = g.to_string();
            }
        } else {
            int.push_str(&format!("{g:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale as usize {
        let g = if i < 0 { 0 } else { groups.get(i as usize).copied().unwrap_or(0) };
        frac.push_str(&format!("{g:04}"));
        i += 1;
    }
    frac.truncate(dscale as usize);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") })
}

/// A column value read back in the form Django gives it on SQLite.
struct Read(Value);

impl<'a> FromSql<'a> for Read {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Read, BoxError> {
        let be8 = |raw: &[u8]| -> std::result::Result<i64, BoxError> {
            Ok(i64::from_be_bytes(raw.try_into().map_err(|_| "a value of the wrong size")?))
        };
        Ok(Read(match *ty {
            Type::INT2 => Value::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::INT4 => Value::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::OID => Value::Integer(i64::from(u32::from_sql(ty, raw)?)),
            Type::BOOL => Value::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::NUMERIC => Value::Text(numeric_text(raw).ok_or("a damaged numeric value")?),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::UUID => Value::Text(hex::encode(raw)),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let micros = be8(raw)?.saturating_add(PG_EPOCH * 1_000_000);
                let dt = chrono::DateTime::from_timestamp_micros(micros).ok_or("a time out of range")?.naive_utc();
                Value::Text(if dt.and_utc().timestamp_subsec_micros() == 0 {
                    dt.format("%Y-%m-%d %H:%M:%S").to_string()
                } else {
                    dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
                })
            }
            Type::DATE => {
                let days = i32::from_sql(ty, raw)?;
                let d = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
                    .and_then(|e| e.checked_add_signed(chrono::TimeDelta::days(i64::from(days))))
                    .ok_or("a date out of range")?;
                Value::Text(d.format("%Y-%m-%d").to_string())
            }
            Type::TIME => {
                let micros = be8(raw)?;
                let t = chrono::NaiveTime::MIN + chrono::TimeDelta::microseconds(micros);
                Value::Text(if micros % 1_000_000 == 0 {
                    t.format("%H:%M:%S").to_string()
                } else {
                    t.format("%H:%M:%S%.6f").to_string()
                })
            }
            Type::JSONB => Value::Text(String::from_utf8_lossy(raw.get(1..).unwrap_or_default()).into_owned()),
            _ => match std::str::from_utf8(raw) {
                Ok(s) => Value::Text(s.to_owned()),
                Err(_) => Value::Blob(raw.to_vec()),
            },
        }))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Read, BoxError> {
        Ok(Read(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn row_of(r: &postgres::Row) -> Result<DbRow> {
    let mut out = Vec::with_capacity(r.len());
    for i in 0..r.len() {
        out.push(r.try_get::<_, Read>(i)?.0);
    }
    Ok(DbRow(out))
}

fn bound<'a>(params: &'a [Param<'a>]) -> Vec<Bound<'a>> {
    params.iter().map(|p| Bound(*p)).collect()
}

fn refs<'a>(b: &'a [Bound<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    b.iter().map(|b| b as &(dyn ToSql + Sync)).collect()
}

/// A prepared statement of a [`PgSession`].
struct PgPrepared<'s> {
    session: &'s PgSession,
    stmt: postgres::Statement,
}

impl Prepared for PgPrepared<'_> {
    fn execute(&mut self, params: &[Param<'_>]) -> Result<usize> {
        let b = bound(params);
        Ok(self.session.client.borrow_mut().execute(&self.stmt, &refs(&b))? as usize)
    }

    fn query_opt(&mut self, params: &[Param<'_>]) -> Result<Option<DbRow>> {
        let b = bound(params);
        let rows = self.session.client.borrow_mut().query(&self.stmt, &refs(&b))?;
        rows.first().map(row_of).transpose()
    }

    fn query(&mut self, params: &[Param<'_>]) -> Result<Vec<DbRow>> {
        let b = bound(params);
        let rows = self.session.client.borrow_mut().query(&self.stmt, &refs(&b))?;
        rows.iter().map(row_of).collect()
    }
}

impl Session for PgSession {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize> {
        PgPrepared { session: self, stmt: self.statement(sql)? }.execute(params)
    }

    fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<DbRow>> {
        PgPrepared { session: self, stmt: self.statement(sql)? }.query_opt(params)
    }

    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<DbRow>> {
        PgPrepared { session: self, stmt: self.statement(sql)? }.query(params)
    }

    fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.client.borrow_mut().batch_execute(sql)?)
    }

    fn prepare<'s>(&'s self, sql: &str) -> Result<Box<dyn Prepared + 's>> {
        let stmt = self.client.borrow_mut().prepare(&placeholders(sql))?;
        Ok(Box::new(PgPrepared { session: self, stmt }))
    }

    fn guarded(&self, write: &mut dyn FnMut() -> Result<usize>) -> Result<usize> {
        self.batch("SAVEPOINT ferry_write")?;
        match write() {
            Ok(n) => {
                self.batch("RELEASE SAVEPOINT ferry_write")?;
                Ok(n)
            }
            Err(e) => {
                self.batch("ROLLBACK TO SAVEPOINT ferry_write; RELEASE SAVEPOINT ferry_write")?;
                Err(e)
            }
        }
    }

    fn last_insert_id(&self) -> Result<i64> {
        self.query_one("SELECT lastval()", &[])?.get(0)
    }

    fn sqlite(&self) -> Option<&rusqlite::Connection> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgresql_outside_quotes() {
        assert_eq!(
            placeholders("SELECT ?1, '?2', \"a?3\", ?12 WHERE x = ?2"),
            "SELECT $1, '?2', \"a?3\", $12 WHERE x = $2"
        );
    }

    #[test]
    fn decimals_cross_in_postgresql_numeric_form_exactly() {
        for t in ["0", "1", "-1", "12.50", "0.0001", "123456789.123456789", "-0.5", "10000", "99999999999999999999.01"]
        {
            let b = numeric(t).expect(t);
            assert_eq!(numeric_text(&b).expect("text"), t);
        }
        assert_eq!(numeric_text(&numeric("007.10").expect("n")).expect("t"), "7.10");
        assert!(numeric("1e5").is_none() && numeric("abc").is_none() && numeric("").is_none());
    }
}
