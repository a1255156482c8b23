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
//! | TEXT    | a string; TEXT whose bytes are not UTF-8: `{"text_base64":"<standard base64>"}` |
//! | BLOB    | `{"blob":"<standard base64>"}`                          |
//!
//! REALs are written with the shortest representation that parses back to the
//! same bits (ryu), and parsed with the standard library's correctly rounded
//! parser, so they round-trip bit for bit.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// One SQLite value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    /// TEXT whose bytes are not valid UTF-8 (SQLite stores whatever bytes
    /// it is given). Never valid UTF-8: such bytes are a [`Value::Text`].
    TextBytes(Vec<u8>),
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
            Value::Text(_) | Value::TextBytes(_) => "text",
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
            V::Text(s) => match std::str::from_utf8(s) {
                Ok(t) => Value::Text(t.to_owned()),
                Err(_) => Value::TextBytes(s.to_vec()),
            },
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
            Value::TextBytes(b) => ValueRef::Text(b),
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
            Value::TextBytes(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("text_base64", &base64::engine::general_purpose::STANDARD.encode(b))?;
                m.end()
            }
            Value::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("blob", &base64::engine::general_purpose::STANDARD.encode(b))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    /// Values are read from their raw JSON text (so it only works on borrowed
    /// input: `serde_json::from_slice`/`from_str`), which lets REALs be
    /// parsed by the standard library's exact, fast float parser.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        Value::from_json(raw.get()).map_err(de::Error::custom)
    }
}

/// What a raw JSON value is, by its first byte.
enum Kind {
    Null,
    Text,
    Number,
    Tagged,
    Other(&'static str),
}

fn kind(raw: &str) -> Kind {
    match raw.as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b'"') => Kind::Text,
        Some(b'-' | b'0'..=b'9') => Kind::Number,
        Some(b'{') => Kind::Tagged,
        Some(b't' | b'f') => Kind::Other("booleans are not SQLite values; use 0 or 1"),
        Some(b'[') => Kind::Other("arrays are not SQLite values; store JSON as text"),
        _ => Kind::Other("not a JSON value"),
    }
}

fn number(raw: &str) -> Result<Value, String> {
    if raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        match raw.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Real(f)),
            _ => Err(format!("number {raw} is out of range for a REAL (use {{\"real\":\"inf\"}})")),
        }
    } else {
        // Like SQLite, an integer literal too large for 64 bits becomes a REAL.
        raw.parse::<i64>().map(Value::Integer).or_else(|_| match raw.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Real(f)),
            _ => Err(format!("number {raw} is out of range")),
        })
    }
}

impl Value {
    /// Parses one value from its JSON text (see the module docs).
    pub fn from_json(raw: &str) -> Result<Value, String> {
        let raw = raw.trim();
        match kind(raw) {
            Kind::Null => Ok(Value::Null),
            Kind::Text => serde_json::from_str::<String>(raw).map(Value::Text).map_err(|e| e.to_string()),
            Kind::Number => number(raw),
            Kind::Tagged => {
                let mut d = serde_json::Deserializer::from_str(raw);
                serde::Deserializer::deserialize_map(&mut d, TagVisitor).map_err(|e| e.to_string())
            }
            Kind::Other(why) => Err(why.into()),
        }
    }

    /// Checks that `raw` is a valid value without building it (strings are
    /// not copied). Accepts exactly what [`Value::from_json`] accepts, given
    /// JSON text that a parser has already scanned.
    pub fn check_json(raw: &str) -> Result<(), String> {
        let raw = raw.trim();
        match kind(raw) {
            Kind::Null => Ok(()),
            // An escaped surrogate (`\ud800`) must pair up as the parser
            // requires: check such strings with it.
            Kind::Text if raw.as_bytes().windows(3).any(|w| w[0] == b'\\' && w[1] == b'u' && w[2] | 0x20 == b'd') => {
                serde_json::from_str::<std::borrow::Cow<'_, str>>(raw).map(drop).map_err(|e| e.to_string())
            }
            Kind::Text => Ok(()),
            // Only a literal with an exponent or very many digits can leave
            // the REAL range; every other number the scanner accepted is valid.
            Kind::Number if raw.len() < 300 && !raw.bytes().any(|b| b == b'e' || b == b'E') => Ok(()),
            Kind::Number => number(raw).map(drop),
            Kind::Tagged => Value::from_json(raw).map(drop),
            Kind::Other(why) => Err(why.into()),
        }
    }
}

/// Validates one value in place (no copies), accepting exactly what
/// [`Value::from_json`] accepts. Used on the hot path of bundling and
/// verification, where entries are checked but not built.
pub struct ValueCheck;

impl<'de> de::DeserializeSeed<'de> for ValueCheck {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueCheck {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "null, a number, a string, {\"blob\": BASE64}, {\"text_base64\": BASE64} or {\"real\": \"inf\"|\"-inf\"}",
        )
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom("booleans are not SQLite values; use 0 or 1"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number is out of range for a REAL"))
        }
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        TagVisitor.visit_map(map).map(drop)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom("arrays are not SQLite values; store JSON as text"))
    }
}

/// Reads the tagged forms `{"blob": …}`, `{"text_base64": …}` and `{"real": …}`.
struct TagVisitor;

impl<'de> Visitor<'de> for TagVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("{\"blob\": BASE64}, {\"text_base64\": BASE64} or {\"real\": \"inf\"|\"-inf\"}")
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
                // SQLite has no NaN (it stores one as NULL): a journal
                // holding one was not written from a SQLite row, and
                // applying it would silently write NULL.
                "nan" => Err(de::Error::custom(
                    "{\"real\":\"nan\"} is not a SQLite value (SQLite stores NaN as NULL); write null if that is meant",
                )),
                other => {
                    Err(de::Error::custom(format!("unknown special real {other:?} (expected \"inf\" or \"-inf\")")))
                }
            },
            "text_base64" => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(payload.as_bytes())
                    .map_err(|e| de::Error::custom(format!("bad base64 in text_base64: {e}")))?;
                match String::from_utf8(bytes) {
                    // One encoding per value: valid UTF-8 is written as a string.
                    Ok(_) => Err(de::Error::custom("text_base64 holds valid UTF-8: write it as a JSON string")),
                    Err(e) => Ok(Value::TextBytes(e.into_bytes())),
                }
            }
            other => Err(de::Error::custom(format!(
                "unknown value tag {other:?} (expected \"blob\", \"text_base64\" or \"real\")"
            ))),
        }
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
    fn a_lone_escaped_surrogate_is_refused_by_the_check_as_by_the_parser() {
        assert!(Value::check_json(r#""\ud800""#).is_err());
        assert!(serde_json::from_str::<Value>(r#""\ud800""#).is_err());
        assert!(Value::check_json(r#""\ud83d\ude00""#).is_ok(), "a pair is a character");
        assert!(Value::check_json(r#""\u00e9""#).is_ok());
    }

    #[test]
    fn text_that_is_not_utf8_round_trips_in_its_one_tagged_form() {
        let v = Value::TextBytes(vec![0x41, 0xff, 0x42]);
        let json = serde_json::to_string(&v).expect("json");
        assert_eq!(json, r#"{"text_base64":"Qf9C"}"#);
        assert_eq!(serde_json::from_str::<Value>(&json).expect("back"), v);
        assert!(Value::check_json(&json).is_ok());
        assert!(serde_json::from_str::<Value>(r#"{"text_base64":"QUI="}"#).is_err(), "valid UTF-8 is a string");
    }

    #[test]
    fn nan_is_refused_not_turned_into_null() {
        let e = serde_json::from_str::<Value>(r#"{"real":"nan"}"#).expect_err("nan");
        assert!(e.to_string().contains("not a SQLite value"), "{e}");
        assert!(Value::check_json(r#"{"real":"nan"}"#).is_err());
        assert!(Value::check_json(r#"{"real":"-inf"}"#).is_ok());
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
            Value::TextBytes(vec![0x41, 0xff, 0x42]),
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
        for bad in
            ["true", "[1]", "{}", "{\"x\":\"1\"}", "{\"blob\":\"!!\"}", "1e999", "-1e999", "{\"text_base64\":\"QUJD\"}"]
        {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad} accepted");
            assert!(Value::check_json(bad).is_err(), "{bad} passed the check");
            let mut d = serde_json::Deserializer::from_str(bad);
            assert!(serde::de::DeserializeSeed::deserialize(ValueCheck, &mut d).is_err(), "{bad} passed ValueCheck");
        }
    }

    #[test]
    fn oversized_integer_literals_become_reals_like_sqlite() {
        let v: Value = serde_json::from_str("18446744073709551615").expect("parse");
        assert!(v.same_as(&Value::Real(18446744073709551615.0)));
    }
}
