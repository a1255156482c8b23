//! One journal entry: a committed row change.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::value::Value;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Column name → value, in the order the entry lists them. Duplicate columns
/// are rejected when parsing.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(into = "RowMap")]
pub struct Row(pub Vec<(String, Value)>);

/// Serialisation helper: a row serialises as a JSON object in order.
#[derive(Serialize)]
#[serde(transparent)]
struct RowMap(#[serde(serialize_with = "serialize_pairs")] Vec<(String, Value)>);

impl From<Row> for RowMap {
    fn from(r: Row) -> Self {
        RowMap(r.0)
    }
}

fn serialize_pairs<S: serde::Serializer>(pairs: &[(String, Value)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

impl Row {
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.iter().find(|(c, _)| c == column).map(|(_, v)| v)
    }
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(c, _)| c.as_str())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of column → value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut pairs: Vec<(String, Value)> = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    check_name("column", &k).map_err(de::Error::custom)?;
                    if pairs.iter().any(|(c, _)| *c == k) {
                        return Err(de::Error::custom(format!("column {k:?} appears twice")));
                    }
                    let v: Value = map.next_value()?;
                    pairs.push((k, v));
                }
                Ok(Row(pairs))
            }
        }
        d.deserialize_map(RowVisitor)
    }
}

/// Table and column names: non-empty, at most 255 bytes, no control characters.
/// (Whether the name exists is checked against the target schema at apply.)
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("empty {kind} name"));
    }
    if name.len() > 255 {
        return Err(format!("{kind} name longer than 255 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{kind} name {name:?} contains a control character"));
    }
    Ok(())
}

/// A UTC instant in microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(chrono::Utc::now().timestamp_micros())
    }

    /// Parses RFC 3339. The canonical form `YYYY-MM-DDTHH:MM:SS.ffffffZ` takes a
    /// fast path; any other offset or precision up to microseconds is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(t) = parse_canonical(s.as_bytes()) {
            return Ok(Timestamp(t));
        }
        let dt =
            chrono::DateTime::parse_from_rfc3339(s).map_err(|e| format!("timestamp {s:?} is not RFC 3339: {e}"))?;
        if dt.timestamp_subsec_nanos() % 1000 != 0 {
            return Err(format!("timestamp {s:?} is more precise than microseconds"));
        }
        Ok(Timestamp(dt.timestamp_micros()))
    }

    /// The canonical text form, `2026-11-23T12:00:00.000000Z`.
    pub fn to_rfc3339(self) -> String {
        match chrono::DateTime::from_timestamp_micros(self.0) {
            Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            None => format!("@{}us", self.0),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(de::Error::custom)
    }
}

fn parse_canonical(b: &[u8]) -> Option<i64> {
    if b.len() != 27 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b[19] != b'.' || b[26] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let (h, m, s, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let days = i64::from(date.signed_duration_since(chrono::NaiveDate::default()).num_days() as i32);
    let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + s);
    Some(secs * 1_000_000 + i64::from(us))
}

/// One committed row change, as specified in `docs/JOURNAL.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub ts: Timestamp,
    pub op: Op,
    pub table: String,
    pub pk: Row,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Row>,
}

impl Entry {
    /// Parses one JSON Lines entry and checks the rules of `docs/JOURNAL.md`
    /// that a single line can break.
    pub fn parse(line: &[u8]) -> Result<Entry, String> {
        let entry: Entry = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        entry.check()?;
        Ok(entry)
    }

    /// The per-entry rules: seq from 1, names sane, fields present for insert
    /// and update and absent for delete, a key to find the row by.
    pub fn check(&self) -> Result<(), String> {
        if self.seq == 0 {
            return Err("seq starts at 1".into());
        }
        if self.seq > i64::MAX as u64 {
            return Err(format!("seq {} is above the largest seq, {}", self.seq, i64::MAX));
        }
        check_name("table", &self.table)?;
        match (self.op, &self.fields) {
            (Op::Insert, None) => return Err("an insert needs \"fields\"".into()),
            (Op::Update, None) => return Err("an update needs \"fields\"".into()),
            (Op::Update, Some(f)) if f.is_empty() => return Err("an update must change at least one field".into()),
            (Op::Delete, Some(_)) => return Err("a delete has no \"fields\"".into()),
            _ => {}
        }
        if self.pk.is_empty() && self.op != Op::Insert {
            return Err(format!("an {} needs a non-empty \"pk\"", self.op));
        }
        Ok(())
    }

    /// The canonical JSON Lines form (without the newline).
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_timestamp_fast_path_agrees_with_chrono() {
        for s in ["1970-01-01T00:00:00.000000Z", "2026-11-23T12:34:56.789012Z", "1969-12-31T23:59:59.999999Z"] {
            let fast = parse_canonical(s.as_bytes()).expect("canonical");
            let slow = chrono::DateTime::parse_from_rfc3339(s).expect("rfc").timestamp_micros();
            assert_eq!(fast, slow, "{s}");
            assert_eq!(Timestamp(fast).to_rfc3339(), s);
        }
    }

    #[test]
    fn offsets_normalise_to_utc() {
        let t = Timestamp::parse("2026-01-01T01:00:00+01:00").expect("parse");
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00.000000Z");
        assert!(Timestamp::parse("2026-01-01T00:00:00.0000001Z").is_err());
        assert!(Timestamp::parse("2026-13-01T00:00:00.000000Z").is_err());
    }

    #[test]
    fn entry_rules() {
        let ok =
            br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"update","table":"t","pk":{"id":1},"fields":{"a":2}}"#;
        assert!(Entry::parse(ok).is_ok());
        let bad = [
            &br#"{"seq":0,"ts":"2026-01-01T00:00:00.000000Z","op":"delete","table":"t","pk":{"id":1}}"#[..],
            br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"delete","table":"t","pk":{"id":1},"fields":{}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"update","table":"t","pk":{"id":1},"fields":{}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"delete","table":"t","pk":{}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"insert","table":"","pk":{"id":1},"fields":{}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"insert","table":"t","pk":{"id":1,"id":2},"fields":{}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"merge","table":"t","pk":{"id":1}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"delete","table":"t","pk":{"id":1},"extra":1}"#,
        ];
        for b in bad {
            assert!(Entry::parse(b).is_err(), "{}", String::from_utf8_lossy(b));
        }
    }
}
