//! Reading the captured journal as canonical entry lines, and bundling it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::stamp::Stamper;
use super::track::{layouts, stale_reasons, Layout};
use super::{is_tracked, open_db, sql_err, watermark, CaptureError, CAPTURE_FORMAT};
use crate::bundle::create::{CreateOptions, CreateReport, Packer};
use crate::chain::ChainHash;
use crate::journal::{check_name, Entry, EntryHead, Op, Row, Timestamp};
use crate::node::Node;
use crate::progress::Progress;
use crate::value::Value;

/// Rows read per query. Each query is its own short read transaction, so a
/// long bundling run never holds the database for long.
const CHUNK: i64 = 4096;

/// The journal rows `from..=to` as entries with their canonical line bytes,
/// read in chunks.
pub struct JournalRows<'c> {
    conn: &'c Connection,
    path: String,
    layouts: HashMap<i64, Layout>,
    select: String,
    nk: usize,
    nv: usize,
    next: u64,
    to: u64,
    buf: VecDeque<(Entry, Vec<u8>)>,
    lines: LineWriter,
    stamper: Stamper,
}

impl<'c> JournalRows<'c> {
    /// Reads seqs `from..=to` of the journal in `conn` (a tracked database).
    /// Entry times continue from the recorded time of entry `from - 1`; a
    /// reader that kept the stamped time of that entry gives it with
    /// [`JournalRows::after`] (see [`super::stamp`]).
    pub fn new(conn: &'c Connection, path: &str, from: u64, to: u64) -> Result<Self, CaptureError> {
        let err = sql_err(path);
        let prev = super::stamp::recorded_time(conn, from.saturating_sub(1)).map_err(&err)?;
        let stamper = Stamper::new(conn, prev).map_err(&err)?;
        let layouts = layouts(conn, "").map_err(&err)?.into_iter().collect();
        let mut st = conn.prepare("SELECT name FROM pragma_table_info('_ferry_journal') ORDER BY cid").map_err(&err)?;
        let cols: Vec<String> =
            st.query_map([], |r| r.get(0)).map_err(&err)?.collect::<Result<_, _>>().map_err(&err)?;
        let count = |prefix: char| (0..).take_while(|i| cols.contains(&format!("{prefix}{i}"))).count();
        let (nk, nv) = (count('k'), count('v'));
        let mut list = vec!["seq".to_owned(), "ts".into(), "op".into(), "tid".into(), "mask".into()];
        list.extend((0..nk).map(|i| format!("k{i}")));
        list.extend((0..nv).map(|i| format!("v{i}")));
        let select =
            format!("SELECT {} FROM _ferry_journal WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq", list.join(", "));
        Ok(JournalRows {
            conn,
            path: path.to_owned(),
            layouts,
            select,
            nk,
            nv,
            next: from,
            to,
            buf: VecDeque::new(),
            lines: LineWriter::default(),
            stamper,
        })
    }

    /// Entry times continue from `prev` (a Julian day number): the stamped
    /// time of entry `from - 1`, as a reader kept it.
    pub fn after(mut self, prev: f64) -> Self {
        self.stamper.restart(prev);
        self
    }

    /// The stamped time of the last entry read (a Julian day number), for
    /// the reader to keep.
    pub fn last_time(&self) -> f64 {
        self.stamper.last()
    }

    fn fill(&mut self) -> Result<(), CaptureError> {
        let err = sql_err(&self.path);
        let hi = self.to.min(self.next.saturating_add(CHUNK as u64 - 1));
        let mut st = self.conn.prepare_cached(&self.select).map_err(&err)?;
        let mut rows = st.query([self.next as i64, hi as i64]).map_err(&err)?;
        while let Some(r) = rows.next().map_err(&err)? {
            let seq = r.get::<_, i64>(0).map_err(&err)? as u64;
            let damaged = |reason: String| CaptureError::Damaged { path: self.path.clone(), seq, reason };
            let ts = capture_time(self.stamper.stamp(seq, r.get::<_, f64>(1).map_err(&err)?)).map_err(&damaged)?;
            let op: i64 = r.get(2).map_err(&err)?;
            let tid: i64 = r.get(3).map_err(&err)?;
            let mask: Option<String> = r.get(4).map_err(&err)?;
            let l = self.layouts.get(&tid).ok_or_else(|| damaged(format!("unknown table layout {tid}")))?;
            let k = |i: usize| -> rusqlite::Result<Value> { r.get_ref(5 + i).and_then(exact_value) };
            let v = |i: usize| -> rusqlite::Result<Value> { r.get_ref(5 + self.nk + i).and_then(exact_value) };
            if l.pk.len() > self.nk || l.columns.len() > self.nv {
                return Err(damaged("the journal has fewer value columns than the table".into()));
            }
            let key_from = |get: &dyn Fn(usize) -> rusqlite::Result<Value>, by_position: bool| {
                l.pk.iter()
                    .enumerate()
                    .map(|(j, &i)| Ok((l.columns[i].clone(), get(if by_position { i } else { j })?)))
                    .collect::<rusqlite::Result<Vec<_>>>()
            };
            let (op, pk, fields) = match op {
                1 => {
                    let pk = key_from(&v, true).map_err(&err)?;
                    let fields = (0..l.columns.len())
                        .filter(|i| !l.pk.contains(i))
                        .map(|i| Ok((l.columns[i].clone(), v(i)?)))
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(&err)?;
                    (Op::Insert, pk, Some(Row(fields)))
                }
                2 => {
                    let mask = mask.ok_or_else(|| damaged("an update without a mask".into()))?;
                    if mask.len() != l.columns.len() {
                        return Err(damaged("the update mask does not match the table".into()));
                    }
                    let fields = mask
                        .bytes()
                        .enumerate()
                        .filter(|(_, b)| *b == b'1')
                        .map(|(i, _)| Ok((l.columns[i].clone(), v(i)?)))
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(&err)?;
                    (Op::Update, key_from(&k, false).map_err(&err)?, Some(Row(fields)))
                }
                3 => (Op::Delete, key_from(&k, false).map_err(&err)?, None),
                other => return Err(damaged(format!("unknown op {other}"))),
            };
            let entry = Entry { seq, ts, op, table: l.name.clone(), pk: Row(pk), fields };
            entry.check().map_err(damaged)?;
            let mut bytes = Vec::with_capacity(128);
            self.lines.write(&entry, &mut bytes);
            self.buf.push_back((entry, bytes));
        }
        self.next = hi + 1;
        Ok(())
    }
}

impl JournalRows<'_> {
    /// Streams the rows to `sink` as (head, line bytes) without building
    /// entries: the same bytes the iterator yields (tested), written straight
    /// from SQLite's values. Used by [`create_from_db`]. Returns the stamped
    /// time of the last entry (see [`JournalRows::last_time`]).
    pub fn for_each_line(
        mut self,
        mut sink: impl FnMut(&EntryHead<'_>, &[u8]) -> Result<(), CaptureError>,
    ) -> Result<f64, CaptureError> {
        let err = sql_err(&self.path);
        let mut line = Vec::with_capacity(512);
        // Names are checked for the layouts entries use, when first used: a
        // layout of a table that is not tracked never reaches a bundle.
        let mut checked = std::collections::HashSet::new();
        while self.next <= self.to {
            let hi = self.to.min(self.next.saturating_add(CHUNK as u64 - 1));
            let mut st = self.conn.prepare_cached(&self.select).map_err(&err)?;
            let mut rows = st.query([self.next as i64, hi as i64]).map_err(&err)?;
            while let Some(r) = rows.next().map_err(&err)? {
                let seq = r.get::<_, i64>(0).map_err(&err)? as u64;
                let damaged =
                    |reason: &str| CaptureError::Damaged { path: self.path.clone(), seq, reason: reason.into() };
                let ts = capture_time(self.stamper.stamp(seq, r.get::<_, f64>(1).map_err(&err)?))
                    .map_err(|m| damaged(&m))?;
                let tid: i64 = r.get(3).map_err(&err)?;
                let l = self.layouts.get(&tid).ok_or_else(|| damaged("unknown table layout"))?;
                if checked.insert(tid) {
                    check_name("table", &l.name).map_err(|m| damaged(&m))?;
                    for c in &l.columns {
                        check_name(&format!("column of table {:?}: the", l.name), c).map_err(|m| damaged(&m))?;
                    }
                }
                let bad_text = |column: &str| {
                    damaged(&format!(
                        "column {column:?} of table {:?} holds TEXT that is not valid UTF-8, which a journal \
                         cannot carry yet; store such bytes as a BLOB, or fix the row",
                        l.name
                    ))
                };
                if l.pk.len() > self.nk || l.columns.len() > self.nv || l.pk.is_empty() {
                    return Err(damaged("the journal does not match the table layout"));
                }
                let op = match r.get::<_, i64>(2).map_err(&err)? {
                    1 => Op::Insert,
                    2 => Op::Update,
                    3 => Op::Delete,
                    _ => return Err(damaged("unknown op")),
                };
                let (k0, v0) = (5, 5 + self.nk);
                line.clear();
                self.lines.head(seq, ts, op, &l.name, &mut line);
                line.extend_from_slice(b",\"pk\":{");
                for (j, &i) in l.pk.iter().enumerate() {
                    let at = if op == Op::Insert { v0 + i } else { k0 + j };
                    write_pair(j == 0, &l.columns[i], r.get_ref(at).map_err(&err)?, &mut line)
                        .map_err(|()| bad_text(&l.columns[i]))?;
                }
                line.push(b'}');
                match op {
                    Op::Insert => {
                        line.extend_from_slice(b",\"fields\":{");
                        let mut first = true;
                        for (i, c) in l.columns.iter().enumerate().filter(|(i, _)| !l.pk.contains(i)) {
                            write_pair(first, c, r.get_ref(v0 + i).map_err(&err)?, &mut line)
                                .map_err(|()| bad_text(c))?;
                            first = false;
                        }
                        line.push(b'}');
                    }
                    Op::Update => {
                        let mask = r.get_ref(4).map_err(&err)?;
                        let mask = mask.as_str().map_err(|_| damaged("an update without a mask"))?;
                        if mask.len() != l.columns.len() || !mask.contains('1') {
                            return Err(damaged("the update mask does not match the table"));
                        }
                        line.extend_from_slice(b",\"fields\":{");
                        for (n, (i, _)) in mask.bytes().enumerate().filter(|(_, b)| *b == b'1').enumerate() {
                            write_pair(n == 0, &l.columns[i], r.get_ref(v0 + i).map_err(&err)?, &mut line)
                                .map_err(|()| bad_text(&l.columns[i]))?;
                        }
                        line.push(b'}');
                    }
                    Op::Delete => {}
                }
                line.push(b'}');
                sink(&EntryHead { seq, ts, op, table: std::borrow::Cow::Borrowed(&l.name) }, &line)?;
            }
            self.next = hi + 1;
        }
        Ok(self.stamper.last())
    }
}

/// Writes `"name":value` (preceded by a comma unless `first`), the value
/// exactly as [`Value`]'s serialisation writes it (TEXT that is not valid
/// UTF-8 in its tagged form, `{"text_base64": …}`).
fn write_pair(first: bool, name: &str, v: ValueRef<'_>, out: &mut Vec<u8>) -> Result<(), ()> {
    if !first {
        out.push(b',');
    }
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, name);
    out.push(b':');
    let _ = match v {
        ValueRef::Null => serde_json::to_writer(&mut *out, &()),
        ValueRef::Integer(i) => serde_json::to_writer(&mut *out, &i),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(text) => serde_json::to_writer(&mut *out, text),
            // Not UTF-8: the tagged form keeps every byte.
            Err(_) => serde_json::to_writer(&mut *out, &Value::from(v)),
        },
        ValueRef::Real(f) => serde_json::to_writer(&mut *out, &Value::Real(f)),
        ValueRef::Blob(_) => serde_json::to_writer(&mut *out, &Value::from(v)),
    };
    Ok(())
}

/// A journal value exactly as SQLite holds it (TEXT that is not valid UTF-8
/// included, as [`Value::TextBytes`]), never rewritten.
fn exact_value(v: ValueRef<'_>) -> rusqlite::Result<Value> {
    Ok(Value::from(v))
}

/// A captured `julianday('now')` as a timestamp, refused outside years
/// 0000–9999 (no ferry could read a bundle holding it back).
fn capture_time(jd: f64) -> Result<Timestamp, String> {
    Timestamp(super::track::julian_to_micros(jd)).in_range().ok_or_else(|| {
        format!("its time (Julian day {jd}) is outside years 0000 to 9999: is the computer's clock right?")
    })
}

impl Iterator for JournalRows<'_> {
    type Item = Result<(Entry, Vec<u8>), CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.buf.is_empty() && self.next <= self.to {
            if let Err(e) = self.fill() {
                self.next = self.to.saturating_add(1);
                return Some(Err(e));
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

/// `ferry bundle create --db`: bundles the captured entries not yet bundled
/// (or from `opts.since`), then records the watermark in the database once
/// the bundle file is durable. Refuses stale capture.
pub fn create_from_db(
    node: &Node,
    db: &Path,
    opts: &CreateOptions,
    progress: &mut dyn Progress,
) -> Result<CreateReport, CaptureError> {
    create_from_db_resuming(node, db, opts, None, progress)
}

/// Where sending again may start inside a journal whose earlier entries
/// were pruned: right after entry `seq`, whose chain hash and stamped time
/// (a Julian day number) were kept when it was sent.
#[derive(Debug, Clone, Copy)]
pub struct Resume {
    pub seq: u64,
    pub chain: ChainHash,
    pub ts: f64,
}

/// [`create_from_db`], sending again from `opts.since` even when the entries
/// before it were pruned, starting after `resume` (which must be entry
/// `since - 1`).
pub fn create_from_db_resuming(
    node: &Node,
    db: &Path,
    opts: &CreateOptions,
    resume: Option<Resume>,
    progress: &mut dyn Progress,
) -> Result<CreateReport, CaptureError> {
    let p = db.display().to_string();
    let err = sql_err(&p);
    let conn = open_db(db)?;
    if !is_tracked(&conn).map_err(&err)? {
        return Err(CaptureError::NotTracked { path: p });
    }
    // One short read transaction for the checks and the snapshot bounds.
    conn.execute_batch("BEGIN DEFERRED").map_err(&err)?;
    let checked = (|| -> Result<_, CaptureError> {
        let (origin, format): (String, i64) = conn
            .query_row("SELECT origin, format FROM _ferry_control WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(&err)?;
        if format > CAPTURE_FORMAT {
            return Err(CaptureError::NewerFormat { path: p.clone(), found: format });
        }
        if origin != node.id().as_str() {
            return Err(CaptureError::OtherOrigin { path: p.clone(), tracked_by: origin, this: node.id().to_string() });
        }
        let reasons = stale_reasons(&conn).map_err(&err)?;
        if !reasons.is_empty() {
            return Err(CaptureError::Stale { path: p.clone(), reasons });
        }
        let (first, last): (i64, i64) = conn
            .query_row("SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM _ferry_journal", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(&err)?;
        let fingerprint = crate::schema::fingerprint(&conn).map_err(&err)?;
        let has_ts: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM pragma_table_info('_ferry_control') WHERE name = 'bundled_ts'",
                [],
                |r| r.get(0),
            )
            .map_err(&err)?;
        let wm_ts: Option<f64> = if has_ts {
            conn.query_row("SELECT bundled_ts FROM _ferry_control WHERE id = 1", [], |r| r.get(0)).map_err(&err)?
        } else {
            None
        };
        Ok((first as u64, last as u64, watermark(&conn).map_err(&err)?, wm_ts, has_ts, fingerprint))
    })();
    conn.execute_batch("COMMIT").map_err(&err)?;
    let (min_seq, last, (wm_seq, wm_chain), wm_ts, has_ts, fingerprint) = checked?;
    let wm = (wm_seq > 0).then_some((wm_seq, wm_chain));

    // Where reading starts, the chain hash before it, and the stamped time
    // of the entry before it when the watermark kept it.
    let (first, chain, prev_ts) = match (opts.since, wm) {
        (None, Some((seq, chain))) => (seq + 1, chain, wm_ts),
        (Some(since), _) if min_seq > 1 && resume.is_some_and(|r| r.seq + 1 == since && since >= min_seq) => {
            let r = resume.unwrap_or(Resume { seq: 0, chain: ChainHash::GENESIS, ts: 0.0 });
            (since, r.chain, Some(r.ts))
        }
        _ if min_seq > 1 => {
            return Err(CaptureError::Pruned { path: p, since: opts.since.unwrap_or(1), first: min_seq })
        }
        _ => (1, ChainHash::GENESIS, Some(0.0)),
    };
    progress.start("bundling", Some(last.saturating_sub(first - 1)));
    let mut packer = Packer::new(node, opts, first, chain, wm)?;
    let mut rows = JournalRows::new(&conn, &p, first, last)?;
    if let Some(prev) = prev_ts {
        rows = rows.after(prev);
    }
    let last_ts = rows.for_each_line(|head, bytes| {
        progress.advance(1);
        Ok(packer.push(head, bytes)?)
    })?;
    let (report, chain_after) = packer.finish(Some(fingerprint))?;
    progress.finish();
    if let (Some(first_seq), Some(seq), Some(file)) = (report.first_seq, report.last_seq, &report.file) {
        // What was sent, for receipts to confirm (before the watermark: a
        // crash in between sends the same entries again, recorded again).
        let sent = crate::receipt::sent::Sent {
            first_seq,
            last_seq: seq,
            chain_after,
            ts_after: Some(last_ts),
            at: crate::journal::Timestamp::now(),
            file: file.display().to_string(),
        };
        let state = node.state().map_err(|e| CaptureError::Create(e.into()))?;
        crate::receipt::sent::record(&state, node.id(), &sent).map_err(|e| CaptureError::Create(e.into()))?;
    }
    if let Some(seq) = report.last_seq {
        // Only once the bundle is durable: a crash before this bundles the
        // same entries again next time, which every hop drops as duplicates.
        crate::crashpoint::hit("bundle durable, database watermark not yet recorded");
        if has_ts {
            // The time kept must be that of the watermark's entry, or none.
            let ts = (seq == last).then_some(last_ts);
            conn.execute(
                "UPDATE _ferry_control SET bundled_seq = ?1, bundled_chain = ?2, bundled_ts = ?3
                 WHERE id = 1 AND bundled_seq <= ?1",
                rusqlite::params![seq as i64, &chain_after.0[..], ts],
            )
            .map_err(&err)?;
        } else {
            conn.execute(
                "UPDATE _ferry_control SET bundled_seq = ?1, bundled_chain = ?2 WHERE id = 1 AND bundled_seq <= ?1",
                rusqlite::params![seq as i64, &chain_after.0[..]],
            )
            .map_err(&err)?;
        }
        crate::crashpoint::hit("database watermark recorded");
    }
    Ok(report)
}

/// Writes entries as exactly the bytes of [`Entry::to_line`], faster: keys in
/// the same order, values through the same serde serialisers, and the
/// timestamp formatted once per distinct value (a bulk statement's rows share
/// one). `entry_lines_are_canonical` checks the equivalence.
#[derive(Default)]
struct LineWriter {
    ts: Option<(i64, String)>,
}

impl LineWriter {
    /// `{"seq":…,"ts":…,"op":…,"table":…` (the line up to `"pk"`).
    fn head(&mut self, seq: u64, ts: Timestamp, op: Op, table: &str, out: &mut Vec<u8>) {
        use std::io::Write;
        let text = match &self.ts {
            Some((t, s)) if *t == ts.0 => s,
            _ => &self.ts.insert((ts.0, format_ts(ts))).1,
        };
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{{\"seq\":{seq},\"ts\":\"{text}\",\"op\":\"{}\",\"table\":", op.as_str());
        let _ = serde_json::to_writer(&mut *out, table);
    }

    fn write(&mut self, e: &Entry, out: &mut Vec<u8>) {
        self.head(e.seq, e.ts, e.op, &e.table, out);
        out.extend_from_slice(b",\"pk\":");
        write_row(&e.pk, out);
        if let Some(f) = &e.fields {
            out.extend_from_slice(b",\"fields\":");
            write_row(f, out);
        }
        out.push(b'}');
    }
}

fn write_row(row: &Row, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in row.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, v);
    }
    out.push(b'}');
}

/// [`Timestamp::to_rfc3339`] without parsing a format string per call.
fn format_ts(ts: Timestamp) -> String {
    use chrono::{Datelike, Timelike};
    match chrono::DateTime::from_timestamp_micros(ts.0) {
        Some(dt) if (0..=9999).contains(&dt.year()) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.timestamp_subsec_micros()
        ),
        _ => ts.to_rfc3339(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn julian_days_convert_to_the_exact_millisecond() {
        let conn = Connection::open_in_memory().expect("db");
        for (text, micros) in [
            ("1970-01-01 00:00:00.000", 0),
            ("2026-11-23 12:34:56.789", 1_795_437_296_789_000),
            ("1969-12-31 23:59:59.999", -1000),
            ("2099-12-31 23:59:59.999", 4_102_444_799_999_000),
        ] {
            let jd: f64 = conn.query_row("SELECT julianday(?1)", [text], |r| r.get(0)).expect("jd");
            assert_eq!(super::super::track::julian_to_micros(jd), micros, "{text}");
        }
    }

    #[test]
    fn capture_times_outside_years_0000_to_9999_are_refused() {
        let conn = Connection::open_in_memory().expect("db");
        let jd: f64 = conn.query_row("SELECT julianday('9999-12-31 23:59:59.999')", [], |r| r.get(0)).expect("jd");
        assert!(capture_time(jd).is_ok());
        assert!(capture_time(jd + 1.0).expect_err("year 10000").contains("clock"));
        assert!(capture_time(-1.0).is_err());
    }

    #[test]
    fn entry_lines_are_canonical() {
        let row = |pairs: &[(&str, Value)]| Row(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect());
        let values = [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Real(0.1 + 0.2),
            Value::Real(-0.0),
            Value::Real(4.0),
            Value::Real(f64::NEG_INFINITY),
            Value::Text("q\"\\\u{1}é\u{1F600}".into()),
            Value::Blob(vec![0, 255]),
        ];
        let stamps = [0, 1, -1, 1_700_000_000_123_456, -62_135_596_800_000_000, 253_402_300_799_999_999, i64::MAX];
        let mut w = LineWriter::default();
        for (i, ts) in stamps.iter().enumerate() {
            for (op, fields) in [
                (Op::Insert, Some(row(&[("a\"b", values[i % values.len()].clone()), ("c", Value::Integer(1))]))),
                (Op::Update, Some(row(&[("x", values[(i + 3) % values.len()].clone())]))),
                (Op::Delete, None),
            ] {
                let e = Entry {
                    seq: i as u64 + 1,
                    ts: Timestamp(*ts),
                    op,
                    table: "t\u{7}\"".into(),
                    pk: row(&[("id", Value::Text("k".into())), ("n", values[i % values.len()].clone())]),
                    fields,
                };
                let mut out = Vec::new();
                w.write(&e, &mut out);
                assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&e.to_line()));
            }
        }
    }
}
