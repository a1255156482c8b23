//! SQLite values as they appear in journal JSON.
//!
//! The encoding (specified in `docs/JOURNAL.md`) is chosen so that every SQLite
//! value survives a round trip exactly:
//!
//! | SQLite  | JSON                                                    |
//! |---------|---------------------------------------------------------|
//! | NULL    | `null`                                                  |
//! | INTEGER | a number without fraction or exponent (`-9223372036854775808`) |
//! | REAL    | a number with a fraction or exponent (`0.1`, `-0.0`, `5e-324`), or `{"real":"inf"}` / `{"real":"-inf"}` |
//! | TEXT    | a string                                                |
//! | BLOB    | `{"blob":"<standard base64>"}`                          |
//!
//! REALs are written with the shortest representation that parses back to the
//! same bits, and parsed with correct rounding, so they round-trip bit for bit.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One SQLite value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    /// Bitwise equality: `-0.0` differs from `0.0`, and a NaN equals itself.
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Real(a), Value::Real(b)) => a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }

    /// The SQLite storage class name (`null`, `integer`, `real`, `text`, `blob`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

impl From<rusqlite::types::Value> for Value {
    fn from(v: rusqlite::types::Value) -> Self {
        use rusqlite::types::Value as V;
        match v {
            V::Null => Value::Null,
            V::Integer(i) => Value::Integer(i),
            V::Real(f) => Value::Real(f),
            V::Text(s) => Value::Text(s),
            V::Blob(b) => Value::Blob(b),
        }
    }
}

impl From<rusqlite::types::ValueRef<'_>> for Value {
    fn from(v: rusqlite::types::ValueRef<'_>) -> Self {
        use rusqlite::types::ValueRef as V;
        match v {
            V::Null => Value::Null,
            V::Integer(i) => Value::Integer(i),
            V::Real(f) => Value::Real(f),
            V::Text(s) => Value::Text(String::from_utf8_lossy(s).into_owned()),
            V::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Real(f) => {
                let tag = if f.is_nan() {
                    "nan"
                } else if *f > 0.0 {
                    "inf"
                } else {
                    "-inf"
                };
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("real", tag)?;
                m.end()
            }
            Value::Text(t) => s.serialize_str(t),
            Value::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("blob", &base64::engine::general_purpose::STANDARD.encode(b))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null, a number, a string, {\"blob\": BASE64} or {\"real\": \"inf\"|\"-inf\"}")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Err(E::custom("booleans are not SQLite values; use 0 or 1"))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Integer)
            .map_err(|_| E::custom(format!("integer {v} does not fit in 64 signed bits")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Real(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Text(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let key: String = map.next_key()?.ok_or_else(|| de::Error::custom("an empty object is not a value"))?;
        let payload: String = map.next_value()?;
        if map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a tagged value has exactly one key"));
        }
        match key.as_str() {
            "blob" => base64::engine::general_purpose::STANDARD
                .decode(payload.as_bytes())
                .map(Value::Blob)
                .map_err(|e| de::Error::custom(format!("bad base64 in blob: {e}"))),
            "real" => match payload.as_str() {
                "inf" => Ok(Value::Real(f64::INFINITY)),
                "-inf" => Ok(Value::Real(f64::NEG_INFINITY)),
                "nan" => Ok(Value::Real(f64::NAN)),
                other => Err(de::Error::custom(format!(
                    "unknown special real {other:?} (expected \"inf\", \"-inf\" or \"nan\")"
                ))),
            },
            other => Err(de::Error::custom(format!("unknown value tag {other:?} (expected \"blob\" or \"real\")"))),
        }
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom("arrays are not SQLite values; store JSON as text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) -> Value {
        let s = serde_json::to_string(v).expect("serialize");
        serde_json::from_str(&s).expect("parse")
    }

    #[test]
    fn extremes_round_trip_bit_for_bit() {
        let cases = [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Integer(0),
            Value::Real(0.1),
            Value::Real(0.1 + 0.2),
            Value::Real(-0.0),
            Value::Real(1e308),
            Value::Real(5e-324),
            Value::Real(f64::MAX),
            Value::Real(1.0),
            Value::Real(f64::INFINITY),
            Value::Real(f64::NEG_INFINITY),
            Value::Text("héllo \u{1F600} \0 \"q\" \n".into()),
            Value::Blob(vec![0, 1, 2, 255, 254]),
            Value::Blob(vec![]),
        ];
        for v in &cases {
            assert!(round_trip(v).same_as(v), "{v:?} changed");
        }
    }

    #[test]
    fn integer_and_real_stay_distinct() {
        assert_eq!(round_trip(&Value::Real(1.0)).type_name(), "real");
        assert_eq!(round_trip(&Value::Integer(1)).type_name(), "integer");
        assert_eq!(serde_json::to_string(&Value::Real(-0.0)).expect("ser"), "-0.0");
    }

    #[test]
    fn rejects_non_sqlite_json() {
        for bad in ["true", "[1]", "{}", "{\"x\":\"1\"}", "18446744073709551615", "{\"blob\":\"!!\"}"] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad} accepted");
        }
    }
}
