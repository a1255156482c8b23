//! The seed's legacy journal format ("Real Offline Django", 2010):
//!
//! ```text
//! 00:1a:2b:3c:4d:5e
//! {
//! ['2010-12-1 12:14:00','new','Blog','blog_blog',{title:'Fahhem\'s Blog',description:'Misc.'}]
//! ['2010-12-1 12:20:00','edit','Blog','blog_blog',{id:1,title:'Renamed'}]
//! ['2010-12-1 12:30:00','delete','Blog','blog_blog',{id:1}]
//! }
//! ```
//!
//! The first line is the machine's MAC address, then `{`, then one statement a
//! line: `[datetime, action, model, table, {fields}]` with the datetime in UTC as
//! `%Y-%m-%d %H:%M:%S`, action `new`/`edit`/`delete`, JavaScript-style literals
//! (single quotes, bare keys). The closing `}` may be missing. The row key is the
//! `id` (or `pk`) field; a `new` without one is an insert whose key the target
//! assigns. Legacy lines carry no seq: the node's state store numbers them once,
//! by (file, line, content), so re-reading gives the same seqs, and they are
//! bundled in the canonical JSON Lines form.

use std::io::BufReader;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{
    read_line_bounded, trim_newline, Entry, JournalError, JournalLine, Location, Op, Row, SeqRegistry, Timestamp,
};
use crate::value::Value;

/// A MAC address line: six hex pairs separated by `:` or `-`, or twelve hex digits.
pub fn is_mac_line(line: &[u8]) -> bool {
    let s = match std::str::from_utf8(line) {
        Ok(s) => s.trim(),
        Err(_) => return false,
    };
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let hex = |p: &str| p.chars().all(|c| c.is_ascii_hexdigit());
    (parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && hex(p))) || (s.len() == 12 && hex(s))
}

/// A legacy statement before it has a seq.
struct Statement {
    ts: Timestamp,
    op: Op,
    table: String,
    pk: Row,
    fields: Option<Row>,
}

/// Parses one statement line (a trailing comma is tolerated).
fn parse_statement(line: &str) -> Result<Statement, String> {
    let line = line.trim().trim_end_matches(',');
    let v: serde_json::Value = json5::from_str(line).map_err(|e| format!("not a legacy statement: {e}"))?;
    let items = v.as_array().ok_or("a legacy statement is a list [datetime, action, model, table, {fields}]")?;
    if !(4..=5).contains(&items.len()) {
        return Err(format!("a legacy statement has 4 or 5 items, found {}", items.len()));
    }
    let text =
        |i: usize, what: &str| items[i].as_str().ok_or_else(|| format!("item {} ({what}) must be a string", i + 1));
    let ts = parse_datetime(text(0, "datetime")?)?;
    let op = match text(1, "action")? {
        "new" => Op::Insert,
        "edit" => Op::Update,
        "delete" => Op::Delete,
        other => return Err(format!("unknown action {other:?} (expected new, edit or delete)")),
    };
    let table = text(3, "table")?.to_owned();
    super::check_name("table", &table)?;
    let mut fields = Vec::new();
    if let Some(obj) = items.get(4) {
        let obj = obj.as_object().ok_or("item 5 (fields) must be an object")?;
        for (k, v) in obj {
            super::check_name("column", k)?;
            fields.push((k.clone(), json_to_value(v)));
        }
    }
    let key_at = fields.iter().position(|(k, _)| k == "id").or_else(|| fields.iter().position(|(k, _)| k == "pk"));
    let pk = match key_at {
        Some(i) => {
            let (k, v) = fields.remove(i);
            Row(vec![(if k == "pk" { "id".into() } else { k }, v)])
        }
        None if op == Op::Insert => Row::default(),
        None => return Err(format!("an {op} needs an id field to find the row")),
    };
    let fields = match op {
        Op::Delete => None,
        Op::Update if fields.is_empty() => return Err("an edit must change at least one field".into()),
        _ => Some(Row(fields)),
    };
    Ok(Statement { ts, op, table, pk, fields })
}

/// `%Y-%m-%d %H:%M:%S` in UTC; one-digit months and days are accepted, as in
/// the seed's own sample.
/// The result must lie in years 0000–9999 (`docs/JOURNAL.md`, J5): chrono
/// also reads `-026-3-2`, whose canonical form no ferry reads back.
fn parse_datetime(s: &str) -> Result<Timestamp, String> {
    let t = chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S")
        .map(|dt| Timestamp(dt.and_utc().timestamp_micros()))
        .map_err(|e| format!("datetime {s:?} is not \"%Y-%m-%d %H:%M:%S\": {e}"))?;
    t.in_range().ok_or_else(|| format!("datetime {s:?} is outside years 0000 to 9999"))
}

fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    }
}

/// Reads and validates every legacy file, then numbers the statements through
/// `registry`. Legacy journals are small, hand-made files: they are held in
/// memory, which lets a malformed file stop the run before anything is numbered.
pub(super) fn read_all<'a>(
    files: impl Iterator<Item = (&'a Path, &'a str)>,
    registry: &mut dyn SeqRegistry,
) -> Result<Vec<JournalLine>, JournalError> {
    let mut parsed = Vec::new();
    for (path, key) in files {
        let file = std::fs::File::open(path).map_err(|e| JournalError::Io { path: path.into(), source: e })?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let (mut line_no, mut seen_mac, mut closed) = (0u64, false, false);
        loop {
            buf.clear();
            line_no += 1;
            let n = read_line_bounded(&mut reader, &mut buf)
                .map_err(|e| JournalError::malformed(path, line_no, e.to_string()))?;
            if n == 0 {
                break;
            }
            let raw = trim_newline(&buf);
            let line =
                std::str::from_utf8(raw).map_err(|_| JournalError::malformed(path, line_no, "not UTF-8"))?.trim();
            if line.is_empty() {
                continue;
            }
            if closed {
                return Err(JournalError::malformed(path, line_no, "text after the closing }"));
            }
            if !seen_mac {
                if !is_mac_line(line.as_bytes()) {
                    return Err(JournalError::malformed(
                        path,
                        line_no,
                        "a legacy journal starts with the machine's MAC address",
                    ));
                }
                seen_mac = true;
                continue;
            }
            match line {
                "{" => continue,
                "}" => {
                    closed = true;
                    continue;
                }
                _ => {}
            }
            let st = parse_statement(line).map_err(|m| JournalError::malformed(path, line_no, m))?;
            let hash: [u8; 32] = Sha256::digest(raw).into();
            parsed.push((path.to_path_buf(), key.to_owned(), line_no, hash, st));
        }
    }
    let mut out = Vec::with_capacity(parsed.len());
    for (path, key, line, hash, st) in parsed {
        let seq = registry.seq_for(&key, line, &hash).map_err(JournalError::Registry)?;
        let entry = Entry { seq, ts: st.ts, op: st.op, table: st.table, pk: st.pk, fields: st.fields };
        let bytes = entry.to_line();
        out.push(JournalLine { entry, bytes, location: Location { file: path, line } });
    }
    out.sort_by_key(|l| l.entry.seq);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_sample_statement_parses() {
        let st = parse_statement(
            r"['2010-12-1 12:14:00','new','Blog','blog_blog',{title:'Fahhem\'s Blog',description:'Misc.',date_created:'2010-12-1 12:14:00'}]",
        )
        .expect("seed sample");
        assert_eq!(st.op, Op::Insert);
        assert_eq!(st.table, "blog_blog");
        assert!(st.pk.is_empty());
        let fields = st.fields.expect("fields");
        assert_eq!(fields.get("title"), Some(&Value::Text("Fahhem's Blog".into())));
        assert_eq!(st.ts.to_rfc3339(), "2010-12-01T12:14:00.000000Z");
    }

    #[test]
    fn malformed_statements_say_why() {
        for (line, why) in [
            ("['2010-12-1 12:14:00','zap','B','b',{}]", "unknown action"),
            ("['2010-12-1','new','B','b',{}]", "datetime"),
            ("['2010-12-1 12:14:00','edit','B','b',{title:'x'}]", "id field"),
            ("['2010-12-1 12:14:00','new','B']", "4 or 5 items"),
            ("not a list", "not a legacy statement"),
            // Found by the legacy fuzz target: year -26 was bundled as "-0026-…",
            // which no ferry reads back.
            ("['-026-3-2 07:55:00','new','Household','survey_household',{id:7}]", "outside years 0000 to 9999"),
        ] {
            let err = parse_statement(line).err().expect("must fail");
            assert!(err.contains(why), "{line}: {err}");
        }
    }
}
