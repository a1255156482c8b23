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
                // Wide rows get a hash set of their names, so checking for
                // repeats stays linear in the number of columns.
                let mut wide: Option<std::collections::HashSet<String>> = None;
                while let Some(k) = map.next_key::<String>()? {
                    check_name("column", &k).map_err(de::Error::custom)?;
                    let repeated = match &wide {
                        Some(set) => set.contains(&k),
                        None => pairs.iter().any(|(c, _)| *c == k),
                    };
                    if repeated {
                        return Err(de::Error::custom(format!("column {k:?} appears twice")));
                    }
                    if pairs.len() >= MAX_COLUMNS {
                        return Err(de::Error::custom(format!("more than {MAX_COLUMNS} columns in one object")));
                    }
                    match &mut wide {
                        Some(set) => {
                            set.insert(k.clone());
                        }
                        None if pairs.len() >= 16 => {
                            let mut set: std::collections::HashSet<String> =
                                pairs.iter().map(|(c, _)| c.clone()).collect();
                            set.insert(k.clone());
                            wide = Some(set);
                        }
                        None => {}
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

/// The most columns one `pk` or `fields` object may hold: SQLite's largest
/// possible table (`SQLITE_MAX_COLUMN` at its ceiling). Bounds the memory a
/// parsed entry takes beyond its line's bytes.
pub const MAX_COLUMNS: usize = 32767;

/// The column names of one row object seen so far: refuses bad names, a
/// repeated name and more than [`MAX_COLUMNS`] names, in time linear in the
/// number of columns (a hash set takes over from a short list for wide rows).
#[derive(Default)]
struct NameSet<'a> {
    few: smallvec::SmallVec<[std::borrow::Cow<'a, str>; 16]>,
    many: std::collections::HashSet<std::borrow::Cow<'a, str>>,
}

impl<'a> NameSet<'a> {
    fn insert(&mut self, name: std::borrow::Cow<'a, str>) -> Result<(), String> {
        check_name("column", &name)?;
        let repeated = if self.many.is_empty() { self.few.contains(&name) } else { self.many.contains(&name) };
        if repeated {
            return Err(format!("column {name:?} appears twice"));
        }
        if self.len() >= MAX_COLUMNS {
            return Err(format!("more than {MAX_COLUMNS} columns in one object"));
        }
        if self.many.is_empty() && self.few.len() < self.few.inline_size() {
            self.few.push(name);
        } else {
            if self.many.is_empty() {
                self.many.extend(self.few.drain(..));
            }
            self.many.insert(name);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.few.len() + self.many.len()
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

    /// The earliest instant a journal can hold: `0000-01-01T00:00:00.000000Z`.
    pub const MIN: Timestamp = Timestamp(-62_167_219_200_000_000);
    /// The latest instant a journal can hold: `9999-12-31T23:59:59.999999Z`.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// Parses the timestamp form of `docs/JOURNAL.md`:
    /// `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)` (uppercase `T` and
    /// `Z`, seconds 00–59), normalised to UTC, which must fall in years
    /// 0000–9999. The canonical form `YYYY-MM-DDTHH:MM:SS.ffffffZ` takes a
    /// fast path.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = match parse_canonical(s.as_bytes()) {
            Some(t) => t,
            None => parse_general(s.as_bytes()).ok_or_else(|| {
                format!("timestamp {s:?} is not RFC 3339 of the form YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM|-HH:MM)")
            })?,
        };
        Timestamp(t).in_range().ok_or_else(|| format!("timestamp {s:?} is outside years 0000 to 9999 in UTC"))
    }

    /// `Some(self)` when it lies in years 0000–9999 (UTC), the range every
    /// ferry can write and read back.
    pub fn in_range(self) -> Option<Self> {
        (Timestamp::MIN..=Timestamp::MAX).contains(&self).then_some(self)
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
    if b.len() != 27 || b[19] != b'.' || b[26] != b'Z' {
        return None;
    }
    let us = digits(&b[20..26])?;
    Some(date_time(&b[..19])? + i64::from(us))
}

/// Decimal digits as a number; `None` unless every byte is a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
}

/// `YYYY-MM-DDTHH:MM:SS` as microseconds since the epoch (no offset applied).
fn date_time(b: &[u8]) -> Option<i64> {
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)?;
    let (h, m, s) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let days = date.signed_duration_since(chrono::NaiveDate::default()).num_days();
    Some((days * 86_400 + i64::from(h * 3600 + m * 60 + s)) * 1_000_000)
}

/// Any form [`Timestamp::parse`] accepts, as UTC microseconds.
fn parse_general(b: &[u8]) -> Option<i64> {
    let base = date_time(b.get(..19)?)?;
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 6 {
            return None;
        }
        micros = i64::from(digits(&frac[..n])?) * 10i64.pow(6 - n as u32);
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    Some(base + micros - offset * 1_000_000)
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
                let mut keys = NameSet::default();
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let raw: &'de serde_json::value::RawValue = map.next_value()?;
                    check_value(raw.get()).map_err(|e| de::Error::custom(format!("column {k:?}: {e}")))?;
                    keys.insert(k).map_err(de::Error::custom)?;
                }
                Ok(RowCheck(keys.len()))
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks one value's JSON text as entries accept it: exactly what
/// [`Value::from_json`] accepts, without building the value when it can.
/// [`Value::check_json`] lets a string through unread, but a string whose
/// escapes encode a lone UTF-16 surrogate (`"\ud800"`) is no text at all and
/// `from_json` refuses it; such strings (only strings with a `\` can be) are
/// decoded here to find out (only those with a `\uD` escape). Found by fuzzing: a journal line with one was
/// bundled and signed, then refused by every apply.
pub fn check_value(raw: &str) -> Result<(), String> {
    let text = raw.trim();
    // Only an escape `\uD…` can encode a surrogate: other strings need no decoding.
    let surrogate_escape = || text.as_bytes().windows(3).any(|w| w[0] == b'\\' && w[1] == b'u' && w[2] | 0x20 == b'd');
    if text.starts_with('"') && surrogate_escape() {
        return serde_json::from_str::<std::borrow::Cow<'_, str>>(text).map(drop).map_err(|e| e.to_string());
    }
    Value::check_json(text)
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

/// An entry line is one JSON object and nothing else: its first byte is
/// `{` and its last `}` (no whitespace around it, no `\r`).
fn check_framing(line: &[u8]) -> Result<(), String> {
    if line.first() == Some(&b'{') && line.last() == Some(&b'}') {
        Ok(())
    } else {
        Err("an entry line is one JSON object, from its { to its }, with nothing before or after it".into())
    }
}

impl Entry {
    /// Parses one JSON Lines entry and checks the rules of `docs/JOURNAL.md`
    /// that a single line can break.
    pub fn parse(line: &[u8]) -> Result<Entry, String> {
        check_framing(line)?;
        let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
        let entry: Entry = serde_json::from_str(text).map_err(|e| e.to_string())?;
        entry.check()?;
        Ok(entry)
    }

    /// Checks a line as [`Entry::parse`] does, returning only its head.
    pub fn parse_head(line: &[u8]) -> Result<EntryHead<'_>, String> {
        check_framing(line)?;
        // UTF-8 is checked once for the whole line; parsing from `str` then
        // borrows strings without checking each again.
        let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
        // The common shapes take a hand-written path; anything it does not
        // accept (including every malformed line) goes through serde, which
        // decides and words the error. The fast path only ever accepts what
        // serde accepts (the `entry` fuzz target checks the two agree).
        if let Some(head) = fast::head(text) {
            return Ok(head);
        }
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

/// A scanner for the common shape of entry lines, for [`Entry::parse_head`]:
/// keys and `op`, `ts`, `table` without escapes, values that are `null`,
/// numbers or strings (with escapes other than `\u`). It returns `None` for
/// anything else, valid or not, and the caller falls back to serde.
mod fast {
    use super::{check_rules, EntryHead, NameSet, Op, Timestamp};
    use crate::value::Value;

    struct Scan<'a> {
        s: &'a str,
        b: &'a [u8],
        i: usize,
        /// Whether the line holds a byte below 0x20 anywhere (most do not:
        /// then strings are scanned for their end with memchr).
        controls: bool,
    }

    /// Whether any byte is below 0x20, in 64-byte blocks the compiler can
    /// check without a branch per byte.
    fn has_controls(b: &[u8]) -> bool {
        b.chunks(64).any(|c| c.iter().fold(false, |acc, &x| acc | (x < 0x20)))
    }

    impl<'a> Scan<'a> {
        fn ws(&mut self) {
            while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            }
        }

        /// Skips whitespace; true (and consumed) when the next byte is `c`.
        fn eat(&mut self, c: u8) -> bool {
            self.ws();
            if self.b.get(self.i) == Some(&c) {
                self.i += 1;
                true
            } else {
                false
            }
        }

        /// A string; `Some(text)` only when it has no escape at all.
        fn plain_str(&mut self) -> Option<&'a str> {
            let (start, end, escaped) = self.string()?;
            (!escaped).then(|| &self.s[start..end])
        }

        /// A string's content range and whether it holds escapes. `None` for
        /// a `\u` escape (left to serde) or anything JSON does not allow.
        fn string(&mut self) -> Option<(usize, usize, bool)> {
            if !self.eat(b'"') {
                return None;
            }
            let start = self.i;
            let mut escaped = false;
            loop {
                // Up to a quote, a backslash or a control character (which
                // JSON does not allow raw in a string).
                let at = if self.controls {
                    let mut at = self.i;
                    while at < self.b.len() && !matches!(self.b[at], b'"' | b'\\' | 0..=0x1f) {
                        at += 1;
                    }
                    at
                } else {
                    memchr::memchr2(b'"', b'\\', &self.b[self.i..]).map_or(self.b.len(), |k| self.i + k)
                };
                match self.b.get(at) {
                    Some(b'"') => {
                        self.i = at + 1;
                        return Some((start, at, escaped));
                    }
                    Some(b'\\') => {
                        if !matches!(self.b.get(at + 1), Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't')) {
                            return None;
                        }
                        escaped = true;
                        self.i = at + 2;
                    }
                    _ => return None,
                }
            }
        }

        /// A JSON number's text: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
        fn number(&mut self) -> Option<&'a str> {
            self.ws();
            let start = self.i;
            let digits = |sc: &mut Scan<'_>| {
                let from = sc.i;
                while sc.i < sc.b.len() && sc.b[sc.i].is_ascii_digit() {
                    sc.i += 1;
                }
                sc.i > from
            };
            if self.b.get(self.i) == Some(&b'-') {
                self.i += 1;
            }
            match self.b.get(self.i) {
                Some(b'0') => self.i += 1,
                Some(b'1'..=b'9') => {
                    digits(self);
                }
                _ => return None,
            }
            if self.b.get(self.i) == Some(&b'.') {
                self.i += 1;
                if !digits(self) {
                    return None;
                }
            }
            if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
                self.i += 1;
                if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                    self.i += 1;
                }
                if !digits(self) {
                    return None;
                }
            }
            Some(&self.s[start..self.i])
        }

        /// One row value: null, a number or a string; `None` for anything else.
        fn value(&mut self) -> Option<()> {
            self.ws();
            match self.b.get(self.i)? {
                b'n' => {
                    let ok = self.b[self.i..].starts_with(b"null");
                    self.i += 4;
                    ok.then_some(())
                }
                b'"' => self.string().map(drop),
                b'-' | b'0'..=b'9' => Value::check_json(self.number()?).ok(),
                _ => None,
            }
        }

        /// A row object; its number of columns.
        fn row(&mut self) -> Option<usize> {
            if !self.eat(b'{') {
                return None;
            }
            let mut names = NameSet::default();
            if self.eat(b'}') {
                return Some(0);
            }
            loop {
                let name = self.plain_str()?;
                if !self.eat(b':') {
                    return None;
                }
                self.value()?;
                names.insert(std::borrow::Cow::Borrowed(name)).ok()?;
                if self.eat(b',') {
                    continue;
                }
                return self.eat(b'}').then(|| names.len());
            }
        }
    }

    /// The head of a line in the common shape, `None` otherwise.
    pub(super) fn head(text: &str) -> Option<EntryHead<'_>> {
        let mut sc = Scan { s: text, b: text.as_bytes(), i: 0, controls: has_controls(text.as_bytes()) };
        if !sc.eat(b'{') {
            return None;
        }
        let (mut seq, mut ts, mut op, mut table, mut pk, mut fields) = (None, None, None, None, None, None);
        loop {
            let key = sc.plain_str()?;
            if !sc.eat(b':') {
                return None;
            }
            let repeated = match key {
                "seq" => {
                    let n = sc.number()?;
                    if !n.bytes().all(|c| c.is_ascii_digit()) {
                        return None;
                    }
                    seq.replace(n.parse::<u64>().ok()?).is_some()
                }
                "ts" => ts.replace(Timestamp::parse(sc.plain_str()?).ok()?).is_some(),
                "op" => {
                    let o = match sc.plain_str()? {
                        "insert" => Op::Insert,
                        "update" => Op::Update,
                        "delete" => Op::Delete,
                        _ => return None,
                    };
                    op.replace(o).is_some()
                }
                "table" => table.replace(sc.plain_str()?).is_some(),
                "pk" => pk.replace(sc.row()?).is_some(),
                "fields" => {
                    sc.ws();
                    let f = if sc.b[sc.i..].starts_with(b"null") {
                        sc.i += 4;
                        None
                    } else {
                        Some(sc.row()?)
                    };
                    fields.replace(f).is_some()
                }
                _ => return None,
            };
            if repeated {
                return None;
            }
            if sc.eat(b',') {
                continue;
            }
            if !sc.eat(b'}') {
                return None;
            }
            break;
        }
        sc.ws();
        if sc.i != sc.b.len() {
            return None;
        }
        let (seq, ts, op, table, pk) = (seq?, ts?, op?, table?, pk?);
        let fields = fields.flatten();
        check_rules(seq, op, table, pk, fields).ok()?;
        Some(EntryHead { seq, ts, op, table: std::borrow::Cow::Borrowed(table) })
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
    fn timestamps_follow_the_documented_grammar() {
        for (s, want) in [
            ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000000Z"),
            ("2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.500000Z"),
            ("2026-01-01T00:00:00.123456-00:30", "2026-01-01T00:30:00.123456Z"),
            ("2024-02-29T23:59:59.999999+23:59", "2024-02-29T00:00:59.999999Z"),
            ("0000-01-01T00:00:00.000000Z", "0000-01-01T00:00:00.000000Z"),
            ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
        ] {
            assert_eq!(Timestamp::parse(s).map(Timestamp::to_rfc3339).as_deref(), Ok(want), "{s}");
        }
        for bad in [
            "2026-01-01t00:00:00Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00z",
            "2026-01-01T00:00:60Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.0000000Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00+24:00",
            "2025-02-29T00:00:00Z",
            "+2026-01-01T00:00:00Z",
            " 2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z ",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// An entry whose `fields` hold `n` columns (`c0`, `c1`, …), the last
    /// one named `last`.
    fn wide(n: usize, last: &str) -> Vec<u8> {
        let mut s =
            String::from(r#"{"seq":1,"ts":"2026-01-01T00:00:00Z","op":"insert","table":"t","pk":{"id":1},"fields":{"#);
        for i in 0..n - 1 {
            s.push_str(&format!("\"c{i}\":{i},"));
        }
        s.push_str(&format!("\"{last}\":0}}}}"));
        s.into_bytes()
    }

    #[test]
    fn wide_entries_are_checked_in_linear_time() {
        let started = std::time::Instant::now();
        let line = wide(MAX_COLUMNS, "end");
        assert_eq!(Entry::parse(&line).map(|e| e.fields.map(|f| f.len())), Ok(Some(MAX_COLUMNS)));
        assert!(Entry::parse_head(&line).is_ok());
        // Comparing every column with every other took seconds here.
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        let repeated = wide(MAX_COLUMNS, "c7");
        for e in [Entry::parse(&repeated).err(), Entry::parse_head(&repeated).err()] {
            assert!(e.is_some_and(|e| e.contains("\"c7\" appears twice")));
        }
        let too_many = wide(MAX_COLUMNS + 1, "end");
        for e in [Entry::parse(&too_many).err(), Entry::parse_head(&too_many).err()] {
            assert!(e.is_some_and(|e| e.contains("more than 32767 columns")));
        }
    }

    #[test]
    fn the_fast_head_path_agrees_with_serde() {
        let lines = [
            &br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"insert","table":"t","pk":{"id":1},"fields":{"a":"x\ny \"q\"","b":-1.5e3,"c":null,"d":0}}"#[..],
            br#"{ "ts" : "2026-01-01T00:00:00Z" , "seq":7,"op":"delete","table":"t","pk":{"id":"k"},"fields":null }"#,
            br#"{"seq":2,"ts":"2026-01-01T00:00:00Z","op":"update","table":"t","pk":{"id":1},"fields":{"a":"\u00e9"}}"#,
            br#"{"seq":2,"ts":"2026-01-01T00:00:00Z","op":"update","table":"t","pk":{"id":1},"fields":{"a":{"blob":""}}}"#,
        ];
        for l in lines {
            let text = std::str::from_utf8(l).expect("utf8");
            let slow: HeadWire<'_> = serde_json::from_str(text).expect("serde");
            if let Some(h) = fast::head(text) {
                assert_eq!((h.seq, h.op, &*h.table), (slow.seq, slow.op, &*slow.table), "{text}");
            }
            assert!(Entry::parse(l).is_ok() && Entry::parse_head(l).is_ok(), "{text}");
        }
        assert!(fast::head(std::str::from_utf8(lines[0]).expect("utf8")).is_some(), "the common shape is fast");
        for bad in [
            &br#"{"seq":01,"ts":"2026-01-01T00:00:00Z","op":"delete","table":"t","pk":{"id":1}}"#[..],
            br#"{"seq":1,"seq":1,"ts":"2026-01-01T00:00:00Z","op":"delete","table":"t","pk":{"id":1}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00Z","op":"delete","table":"t","pk":{"id":1},"x":1}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00Z","op":"delete","table":"t","pk":{"id":1,}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00Z","op":"delete","table":"t","pk":{"id":"a	b"}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00Z","op":"delete","table":"t","pk":{"id":1.}}"#,
            br#"{"seq":1,"ts":"2026-01-01T00:00:00Z","op":"delete","table":"t","pk":{"id":1}"#,
        ] {
            let text = std::str::from_utf8(bad).expect("utf8");
            assert!(fast::head(text).is_none() && Entry::parse_head(bad).is_err(), "{text}");
        }
    }

    #[test]
    fn a_lone_surrogate_escape_is_refused_by_both_parsers() {
        // Found by the value fuzz target (fuzz/artifacts, kept here).
        for v in [r#""\ud800""#, r#""a\udddd b""#, r#""\udc00\ud800""#] {
            let line = format!(
                r#"{{"seq":1,"ts":"2026-01-01T00:00:00Z","op":"insert","table":"t","pk":{{"id":1}},"fields":{{"v":{v}}}}}"#
            );
            assert!(Entry::parse(line.as_bytes()).is_err(), "{v}");
            assert!(Entry::parse_head(line.as_bytes()).is_err(), "head: {v}");
            assert!(check_value(v).is_err() && Value::from_json(v).is_err(), "{v}");
        }
        assert!(check_value(r#""\ud83e\udda0 \u0041""#).is_ok(), "a surrogate pair is one character");
    }

    #[test]
    fn an_entry_line_is_one_object_and_nothing_else() {
        let ok = br#"{"seq":1,"ts":"2026-01-01T00:00:00Z","op":"delete","table":"t","pk":{"id":1}}"#;
        assert!(Entry::parse(ok).is_ok());
        for bad in [[b" ", &ok[..]].concat(), [&ok[..], b" "].concat(), [&ok[..], b"\r"].concat()] {
            assert!(
                Entry::parse(&bad).is_err() && Entry::parse_head(&bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    #[test]
    fn timestamps_outside_years_0000_to_9999_are_refused() {
        for bad in ["0000-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "9999-12-31T23:30:00.000000-01:00"] {
            let e = Timestamp::parse(bad).expect_err(bad);
            assert!(e.contains("outside years 0000 to 9999"), "{e}");
        }
        assert_eq!(Timestamp::parse("0000-01-01T00:00:00Z"), Ok(Timestamp::MIN));
        assert_eq!(Timestamp::parse("9999-12-31T23:59:59.999999Z"), Ok(Timestamp::MAX));
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
