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
    // Control characters are C0 (below 0x20), DEL, and C1 (U+0080–U+009F,
    // encoded 0xC2 0x80–0x9F): checked on bytes, this is on the hot path.
    let b = name.as_bytes();
    let control =
        b.iter().any(|&c| c < 0x20 || c == 0x7f) || b.windows(2).any(|w| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]));
    if control {
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

/// The parts of an entry that bundling and verification need, parsed from a
/// line without building its rows (strings borrowed, values only checked).
/// [`Entry::parse_head`] accepts exactly the lines [`Entry::parse`] accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryHead<'a> {
    pub seq: u64,
    pub ts: Timestamp,
    pub op: Op,
    pub table: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadWire<'a> {
    seq: u64,
    #[serde(borrow)]
    ts: std::borrow::Cow<'a, str>,
    op: Op,
    #[serde(borrow)]
    table: std::borrow::Cow<'a, str>,
    pk: RowCheck,
    #[serde(default)]
    fields: Option<RowCheck>,
}

/// Checks a row object (names, duplicates, values) and counts its columns.
struct RowCheck(usize);

impl<'de> Deserialize<'de> for RowCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RowCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of column → value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowCheck, A::Error> {
                let mut keys: smallvec::SmallVec<[std::borrow::Cow<'de, str>; 16]> = smallvec::SmallVec::new();
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    check_name("column", &k).map_err(de::Error::custom)?;
                    if keys.contains(&k) {
                        return Err(de::Error::custom(format!("column {k:?} appears twice")));
                    }
                    let raw: &'de serde_json::value::RawValue = map.next_value()?;
                    Value::check_json(raw.get()).map_err(|e| de::Error::custom(format!("column {k:?}: {e}")))?;
                    keys.push(k);
                }
                Ok(RowCheck(keys.len()))
            }
        }
        d.deserialize_map(V)
    }
}

/// The per-entry rules: seq from 1 (and storable in SQLite), names sane,
/// fields present for insert and update and absent for delete, a key to find
/// the row by.
fn check_rules(seq: u64, op: Op, table: &str, pk_len: usize, fields_len: Option<usize>) -> Result<(), String> {
    if seq == 0 {
        return Err("seq starts at 1".into());
    }
    if seq > i64::MAX as u64 {
        return Err(format!("seq {seq} is above the largest seq, {}", i64::MAX));
    }
    check_name("table", table)?;
    match (op, fields_len) {
        (Op::Insert, None) => return Err("an insert needs \"fields\"".into()),
        (Op::Update, None) => return Err("an update needs \"fields\"".into()),
        (Op::Update, Some(0)) => return Err("an update must change at least one field".into()),
        (Op::Delete, Some(_)) => return Err("a delete has no \"fields\"".into()),
        _ => {}
    }
    if pk_len == 0 && op != Op::Insert {
        return Err(format!("an {op} needs a non-empty \"pk\""));
    }
    Ok(())
}

impl Entry {
    /// Parses one JSON Lines entry and checks the rules of `docs/JOURNAL.md`
    /// that a single line can break.
    pub fn parse(line: &[u8]) -> Result<Entry, String> {
        let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
        let entry: Entry = serde_json::from_str(text).map_err(|e| e.to_string())?;
        entry.check()?;
        Ok(entry)
    }

    /// Checks a line as [`Entry::parse`] does, returning only its head.
    pub fn parse_head(line: &[u8]) -> Result<EntryHead<'_>, String> {
        // UTF-8 is checked once for the whole line; parsing from `str` then
        // borrows strings without checking each again.
        let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
        let w: HeadWire<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let ts = Timestamp::parse(&w.ts)?;
        check_rules(w.seq, w.op, &w.table, w.pk.0, w.fields.as_ref().map(|f| f.0))?;
        Ok(EntryHead { seq: w.seq, ts, op: w.op, table: w.table })
    }

    /// The per-entry rules (see [`Entry::parse`]).
    pub fn check(&self) -> Result<(), String> {
        check_rules(self.seq, self.op, &self.table, self.pk.len(), self.fields.as_ref().map(Row::len))
    }

    /// The head of this entry.
    pub fn head(&self) -> EntryHead<'_> {
        EntryHead { seq: self.seq, ts: self.ts, op: self.op, table: std::borrow::Cow::Borrowed(&self.table) }
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
    fn control_characters_in_names_are_refused() {
        for bad in ["a\nb", "a\u{7f}", "a\u{85}b", "\u{9f}", ""] {
            assert!(check_name("table", bad).is_err(), "{bad:?}");
        }
        for good in ["survey_household", "ñandú", "表", "a b"] {
            assert!(check_name("table", good).is_ok(), "{good:?}");
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
            assert!(Entry::parse_head(b).is_err(), "head: {}", String::from_utf8_lossy(b));
        }
        let head = Entry::parse_head(ok).expect("head");
        assert_eq!((head.seq, head.op, &*head.table), (1, Op::Update, "t"));
    }
}
