//! How a value captured on SQLite crosses to a server column: the type
//! mapping of `docs/APPLY.md ("Engines")`, as a pure rule. [`ColumnType::of_postgres`]
//! and [`ColumnType::of_mysql`] read a column's declared type as the server
//! reports it; [`fits`] says whether a value can be stored there exactly as
//! Django would have stored it itself, or why not. Nothing is rounded,
//! truncated or coerced: a value that does not fit is a [`Misfit`], which
//! refuses its bundle naming origin, seq, table, column and value.

use crate::value::Value;

/// A server column's type, as far as the mapping needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// An integer column holding `min..=max` (`smallint`, `integer`,
    /// `bigint`, MySQL's unsigned and `mediumint` kinds).
    Integer { min: i128, max: i128 },
    /// `boolean` (PostgreSQL) or `tinyint(1)`/`bool` (MariaDB/MySQL):
    /// Django on SQLite stores 0 and 1.
    Bool,
    /// `numeric(p, s)` / `decimal(p, s)`; `None`: PostgreSQL's unbounded `numeric`.
    Decimal { precision: Option<u32>, scale: Option<u32> },
    /// `double precision` / `double` (bit-exact), or `real` / `float` (single).
    Float { double: bool, nan_inf: bool },
    /// Text of at most `max` characters (`None`: unbounded), `nul`: whether
    /// U+0000 may be stored (PostgreSQL refuses it).
    Text { max: Option<u64>, nul: bool },
    /// `uuid` (PostgreSQL, MariaDB 10.7+); Django on SQLite stores 32 hex digits.
    Uuid,
    /// `timestamptz` / `timestamp` / `datetime(6)`; Django on SQLite stores
    /// naive UTC text `YYYY-MM-DD HH:MM:SS[.ffffff]`.
    Timestamp,
    /// `date`: `YYYY-MM-DD`.
    Date,
    /// `time`: `HH:MM:SS[.ffffff]`.
    Time,
    /// `json`/`jsonb` (MariaDB's `JSON` is `longtext` with a check).
    Json,
    /// `bytea` / `blob` kinds, at most `max` bytes.
    Binary { max: Option<u64> },
    /// A type the mapping does not know: the server is left to judge.
    Other(String),
}

/// Why a value does not fit a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit(pub String);

impl ColumnType {
    /// From PostgreSQL's `information_schema.columns`: `data_type`,
    /// `character_maximum_length`, `numeric_precision`, `numeric_scale`.
    pub fn of_postgres(
        data_type: &str,
        max_len: Option<i64>,
        precision: Option<i64>,
        scale: Option<i64>,
    ) -> ColumnType {
        let t = data_type.to_ascii_lowercase();
        match t.as_str() {
            "smallint" => int_range(16, false),
            "integer" => int_range(32, false),
            "bigint" => int_range(64, false),
            "boolean" => ColumnType::Bool,
            "numeric" => ColumnType::Decimal {
                precision: precision.and_then(|p| u32::try_from(p).ok()),
                scale: scale.and_then(|s| u32::try_from(s).ok()),
            },
            "double precision" => ColumnType::Float { double: true, nan_inf: true },
            "real" => ColumnType::Float { double: false, nan_inf: true },
            "text" | "character varying" | "character" | "citext" => {
                ColumnType::Text { max: max_len.and_then(|m| u64::try_from(m).ok()), nul: false }
            }
            "uuid" => ColumnType::Uuid,
            "timestamp with time zone" | "timestamp without time zone" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            "time without time zone" => ColumnType::Time,
            "json" | "jsonb" => ColumnType::Json,
            "bytea" => ColumnType::Binary { max: None },
            _ => ColumnType::Other(t),
        }
    }

    /// From MariaDB/MySQL's `information_schema.columns`: `data_type`,
    /// `column_type` (with its width and `unsigned`),
    /// `character_maximum_length`, `numeric_precision`, `numeric_scale`,
    /// and whether the column has a `json_valid` check (MariaDB's JSON).
    pub fn of_mysql(
        data_type: &str,
        column_type: &str,
        max_len: Option<u64>,
        precision: Option<u64>,
        scale: Option<u64>,
        json_check: bool,
    ) -> ColumnType {
        let t = data_type.to_ascii_lowercase();
        let ct = column_type.to_ascii_lowercase();
        let unsigned = ct.contains("unsigned");
        match t.as_str() {
            "tinyint" if ct.starts_with("tinyint(1)") => ColumnType::Bool,
            "tinyint" => int_range(8, unsigned),
            "smallint" => int_range(16, unsigned),
            "mediumint" => int_range(24, unsigned),
            "int" | "integer" => int_range(32, unsigned),
            "bigint" => int_range(64, unsigned),
            "decimal" | "numeric" => ColumnType::Decimal {
                precision: precision.and_then(|p| u32::try_from(p).ok()),
                scale: scale.and_then(|s| u32::try_from(s).ok()),
            },
            "double" | "double precision" | "real" => ColumnType::Float { double: true, nan_inf: false },
            "float" => ColumnType::Float { double: false, nan_inf: false },
            "uuid" => ColumnType::Uuid,
            // Django's UUIDField on MySQL (and MariaDB before 10.7).
            "char" if max_len == Some(32) => ColumnType::Text { max: Some(32), nul: true },
            "longtext" if json_check => ColumnType::Json,
            "json" => ColumnType::Json,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                ColumnType::Text { max: max_len, nul: true }
            }
            "datetime" | "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            "time" => ColumnType::Time,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ColumnType::Binary { max: max_len }
            }
            _ => ColumnType::Other(t),
        }
    }

    /// A 32-bit (or smaller) integer column: ids from id blocks above 0
    /// (block × 2^32) cannot be stored in it.
    pub fn max_int(&self) -> Option<i128> {
        match self {
            ColumnType::Integer { max, .. } => Some(*max),
            _ => None,
        }
    }
}

fn int_range(bits: u32, unsigned: bool) -> ColumnType {
    if unsigned {
        ColumnType::Integer { min: 0, max: (1i128 << bits) - 1 }
    } else {
        ColumnType::Integer { min: -(1i128 << (bits - 1)), max: (1i128 << (bits - 1)) - 1 }
    }
}

/// A value for messages: short, and never more than 80 characters.
pub fn shown(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

fn misfit(v: &Value, why: impl std::fmt::Display) -> Result<(), Misfit> {
    Err(Misfit(format!("the value {} {why}", shown(v))))
}

/// Whether `v`, as captured on SQLite, can be stored in a column of type
/// `ty` exactly (see the table in `docs/APPLY.md ("Engines")`). NULL always fits (a
/// NOT NULL column is the server's to refuse).
pub fn fits(v: &Value, ty: &ColumnType) -> Result<(), Misfit> {
    if *v == Value::Null {
        return Ok(());
    }
    if let Value::TextBytes(_) = v {
        return misfit(v, "is text that is not UTF-8, which a server column cannot hold");
    }
    match ty {
        ColumnType::Integer { min, max } => match v {
            Value::Integer(i) if (*min..=*max).contains(&i128::from(*i)) => Ok(()),
            Value::Integer(_) => misfit(v, format_args!("is outside this integer column's range ({min} to {max})")),
            _ => misfit(v, format_args!("is {}, not an integer", article(v))),
        },
        ColumnType::Bool => match v {
            Value::Integer(0 | 1) => Ok(()),
            _ => misfit(v, "is not a boolean (Django stores 0 or 1 on SQLite)"),
        },
        ColumnType::Decimal { precision, scale } => {
            let text = match v {
                Value::Integer(i) => i.to_string(),
                // The shortest text that reads back as this double: what
                // Django's `str(Decimal)` wrote before SQLite made it a REAL
                // (SQLite keeps 15 significant digits, which this recovers).
                Value::Real(f) if f.is_finite() => format!("{f}"),
                Value::Real(_) => return misfit(v, "is not a number a decimal column can hold"),
                Value::Text(t) => t.trim().to_owned(),
                _ => return misfit(v, format_args!("is {}, not a decimal number", article(v))),
            };
            let Some((int_digits, frac_digits)) = decimal_digits(&text) else {
                return misfit(v, "is not a decimal number");
            };
            if let (Some(s), _) = (scale, precision) {
                if frac_digits > *s {
                    return misfit(v, format_args!("has {frac_digits} decimal places; the column keeps {s}"));
                }
            }
            if let (Some(p), Some(s)) = (precision, scale) {
                if int_digits > p.saturating_sub(*s) {
                    return misfit(
                        v,
                        format_args!("has {int_digits} digits before the point; the column ({p}, {s}) keeps {}", p - s),
                    );
                }
            }
            Ok(())
        }
        ColumnType::Float { double, nan_inf } => match v {
            Value::Real(f) if !f.is_finite() && !nan_inf => {
                misfit(v, "cannot be stored: MariaDB/MySQL has no NaN or infinity")
            }
            Value::Real(f) if !double && f.is_finite() && f64::from(*f as f32).to_bits() != f.to_bits() => {
                misfit(v, "would lose digits in a single-precision column")
            }
            Value::Real(_) => Ok(()),
            Value::Integer(i) if i.unsigned_abs() <= 1 << 53 => Ok(()),
            Value::Integer(_) => misfit(v, "would lose digits as a floating-point number"),
            _ => misfit(v, format_args!("is {}, not a number", article(v))),
        },
        ColumnType::Text { max, nul } => match v {
            Value::Text(t) => {
                if !nul && t.contains('\0') {
                    return misfit(v, "holds a NUL character, which PostgreSQL text cannot hold");
                }
                match max {
                    Some(m) if t.chars().count() as u64 > *m => {
                        misfit(v, format_args!("is {} characters long; the column keeps {m}", t.chars().count()))
                    }
                    _ => Ok(()),
                }
            }
            // SQLite's TEXT affinity keeps numbers as their text.
            Value::Integer(_) | Value::Real(_) => Ok(()),
            _ => misfit(v, format_args!("is {}, not text", article(v))),
        },
        ColumnType::Uuid => match v {
            Value::Text(t) if is_uuid(t) => Ok(()),
            _ => misfit(v, "is not a UUID (32 hexadecimal digits, with or without hyphens)"),
        },
        ColumnType::Timestamp => match v {
            Value::Text(t) if parse_datetime(t).is_some() => Ok(()),
            _ => misfit(v, "is not a date and time (YYYY-MM-DD HH:MM:SS[.ffffff], as Django stores them)"),
        },
        ColumnType::Date => match v {
            Value::Text(t) if chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok() => Ok(()),
            _ => misfit(v, "is not a date (YYYY-MM-DD)"),
        },
        ColumnType::Time => match v {
            Value::Text(t) if chrono::NaiveTime::parse_from_str(t, "%H:%M:%S%.f").is_ok() => Ok(()),
            _ => misfit(v, "is not a time of day (HH:MM:SS[.ffffff])"),
        },
        ColumnType::Json => match v {
            Value::Text(t) if serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok() => Ok(()),
            _ => misfit(v, "is not JSON text"),
        },
        ColumnType::Binary { max } => match v {
            Value::Blob(b) => match max {
                Some(m) if b.len() as u64 > *m => misfit(v, format_args!("is {} bytes; the column keeps {m}", b.len())),
                _ => Ok(()),
            },
            _ => misfit(v, format_args!("is {}, not binary data", article(v))),
        },
        ColumnType::Other(_) => Ok(()),
    }
}

fn article(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a floating-point number",
        Value::Text(_) | Value::TextBytes(_) => "text",
        Value::Blob(_) => "binary data",
    }
}

/// Digits before and after the point of a plain decimal literal
/// (`-12.50`, `3`, `1e3` is refused: Django never writes exponents).
fn decimal_digits(text: &str) -> Option<(u32, u32)> {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    Some((int.len() as u32, frac.len() as u32))
}

fn is_uuid(t: &str) -> bool {
    let hex: String = t.chars().filter(|c| *c != '-').collect();
    let hyphens = t.len() - hex.len();
    hex.len() == 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && (hyphens == 0 || (hyphens == 4 && [8, 13, 18, 23].iter().all(|i| t.as_bytes().get(*i) == Some(&b'-'))))
}

/// Django's SQLite datetime text (naive UTC), with a `T` or a space, and
/// an optional `+00:00` that older versions wrote.
pub fn parse_datetime(t: &str) -> Option<chrono::NaiveDateTime> {
    let t = t.strip_suffix("+00:00").unwrap_or(t);
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: Value, ty: &ColumnType) {
        assert_eq!(fits(&v, ty), Ok(()), "{v:?} in {ty:?}");
    }

    fn no(v: Value, ty: &ColumnType, why: &str) {
        match fits(&v, ty) {
            Err(Misfit(m)) => assert!(m.contains(why), "{m}"),
            Ok(()) => panic!("{v:?} fits {ty:?}"),
        }
    }

    #[test]
    fn integers_are_range_checked_per_column_width() {
        let int = ColumnType::of_postgres("integer", None, Some(32), Some(0));
        ok(Value::Integer(2_147_483_647), &int);
        no(Value::Integer(1 << 32), &int, "outside this integer column's range");
        no(Value::Integer(-2_147_483_649), &int, "range");
        ok(Value::Integer(1 << 40), &ColumnType::of_postgres("bigint", None, None, None));
        let unsigned = ColumnType::of_mysql("int", "int(10) unsigned", None, None, None, false);
        ok(Value::Integer(4_294_967_295), &unsigned);
        no(Value::Integer(-1), &unsigned, "range");
        no(Value::Text("5".into()), &int, "not an integer");
        no(Value::Real(1.0), &int, "not an integer");
    }

    #[test]
    fn booleans_are_django_zero_or_one() {
        let b = ColumnType::of_mysql("tinyint", "tinyint(1)", None, None, None, false);
        assert_eq!(b, ColumnType::Bool);
        ok(Value::Integer(1), &b);
        ok(Value::Integer(0), &ColumnType::of_postgres("boolean", None, None, None));
        no(Value::Integer(2), &b, "not a boolean");
    }

    #[test]
    fn decimals_are_exact_and_never_rounded() {
        let d = ColumnType::of_postgres("numeric", None, Some(5), Some(2));
        ok(Value::Real(123.45), &d);
        ok(Value::Integer(999), &d);
        ok(Value::Text("-0.10".into()), &d);
        no(Value::Real(1.005), &d, "3 decimal places");
        no(Value::Integer(1000), &d, "4 digits before the point");
        no(Value::Text("1e3".into()), &d, "not a decimal");
        no(Value::Real(f64::NAN), &d, "not a number");
        ok(Value::Real(0.1 + 0.2 - 0.3 + 0.3), &ColumnType::Decimal { precision: None, scale: None });
    }

    #[test]
    fn floats_are_bit_exact() {
        let dbl = ColumnType::of_postgres("double precision", None, None, None);
        ok(Value::Real(0.1), &dbl);
        ok(Value::Real(f64::INFINITY), &dbl);
        no(Value::Real(f64::NAN), &ColumnType::of_mysql("double", "double", None, None, None, false), "NaN");
        no(Value::Real(0.1), &ColumnType::of_postgres("real", None, None, None), "single-precision");
        ok(Value::Real(0.5), &ColumnType::of_postgres("real", None, None, None));
        no(Value::Integer((1 << 53) + 1), &dbl, "lose digits");
    }

    #[test]
    fn text_uuid_times_json_and_binary() {
        let v = ColumnType::of_postgres("character varying", Some(3), None, None);
        ok(Value::Text("äöü".into()), &v);
        no(Value::Text("abcd".into()), &v, "4 characters long; the column keeps 3");
        no(Value::Text("a\0b".into()), &ColumnType::of_postgres("text", None, None, None), "NUL");
        ok(Value::Text("a\0b".into()), &ColumnType::of_mysql("longtext", "longtext", None, None, None, false));
        no(Value::TextBytes(vec![0xff]), &ColumnType::of_postgres("text", None, None, None), "not UTF-8");
        let u = ColumnType::of_postgres("uuid", None, None, None);
        ok(Value::Text("0123456789abcdef0123456789ABCDEF".into()), &u);
        ok(Value::Text("01234567-89ab-cdef-0123-456789abcdef".into()), &u);
        no(Value::Text("0123".into()), &u, "not a UUID");
        let ts = ColumnType::of_postgres("timestamp with time zone", None, None, None);
        ok(Value::Text("2024-05-01 10:11:12.123456".into()), &ts);
        ok(Value::Text("2024-05-01 10:11:12".into()), &ts);
        no(Value::Text("yesterday".into()), &ts, "not a date and time");
        ok(Value::Text("2024-02-29".into()), &ColumnType::of_postgres("date", None, None, None));
        no(Value::Text("2023-02-29".into()), &ColumnType::of_postgres("date", None, None, None), "not a date");
        let j = ColumnType::of_mysql("longtext", "longtext", None, None, None, true);
        assert_eq!(j, ColumnType::Json);
        ok(Value::Text("{\"a\": [1, 2]}".into()), &j);
        no(Value::Text("{".into()), &j, "not JSON");
        let b = ColumnType::of_mysql("varbinary", "varbinary(2)", Some(2), None, None, false);
        ok(Value::Blob(vec![1, 2]), &b);
        no(Value::Blob(vec![1, 2, 3]), &b, "3 bytes");
        no(Value::Text("x".into()), &b, "not binary");
        ok(Value::Null, &b);
    }
}
