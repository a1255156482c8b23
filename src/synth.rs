//! Seeded synthetic journals for benchmarks and tests: Django-like rows of
//! 150–300 bytes a line, 60% inserts, 30% updates, 10% deletes, over the
//! tables of [`SCHEMA`]. The same seed gives the same journal, byte for byte.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::journal::{Entry, Op, Row, Timestamp};
use crate::value::Value;

/// The app schema the synthetic entries are written against.
pub const SCHEMA: &str = "
CREATE TABLE survey_household (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(100) NOT NULL,
    village VARCHAR(100) NOT NULL,
    members INTEGER NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    visited DATETIME NOT NULL,
    notes TEXT NOT NULL
);
CREATE TABLE survey_specimen (
    id CHAR(32) NOT NULL PRIMARY KEY,
    household_id INTEGER NOT NULL,
    kind VARCHAR(20) NOT NULL,
    weight_g REAL NOT NULL,
    collected DATETIME NOT NULL,
    label TEXT NOT NULL
);
";

const VILLAGES: &[&str] = &["Kanyadet", "Ndhiwa", "Rongo", "Awendo", "Migori", "Homa Bay", "Oyugis", "Kendu Bay"];
const NAMES: &[&str] = &["Achieng", "Ouma", "Wanjiru", "Otieno", "Akinyi", "Omondi", "Nyambura", "Kiprono"];
const KINDS: &[&str] = &["blood", "stool", "saliva", "swab", "urine"];
const WORDS: &[&str] =
    &["visit", "follow", "up", "mother", "child", "clinic", "card", "seen", "fever", "none", "ok", "rain"];

/// 60% inserts (always one while nothing is live), 30% updates, 10% deletes.
fn pick_op(rng: &mut fastrand::Rng, nothing_live: bool) -> Op {
    let roll = rng.u32(..100);
    if nothing_live || roll < 60 {
        Op::Insert
    } else if roll < 90 {
        Op::Update
    } else {
        Op::Delete
    }
}

/// Writes the next `n` entries of `next` as JSON Lines; returns the bytes written.
fn write_lines(path: &Path, n: u64, mut next: impl FnMut() -> Entry) -> io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut bytes = 0;
    for _ in 0..n {
        let line = next().to_line();
        w.write_all(&line)?;
        w.write_all(b"\n")?;
        bytes += line.len() as u64 + 1;
    }
    w.flush()?;
    Ok(bytes)
}

/// Generates one origin's journal.
pub struct Synth {
    rng: fastrand::Rng,
    seq: u64,
    ts: i64,
    id_base: i64,
    next_id: i64,
    /// Live rows: (is_household, key). Updates and deletes pick from here.
    live: Vec<(bool, i64)>,
}

impl Synth {
    /// An origin's generator; `origin` picks its id block (`origin + 1`) and
    /// varies its data; `seed` fixes everything.
    pub fn new(seed: u64, origin: u32) -> Synth {
        let mut rng = fastrand::Rng::with_seed(seed ^ (u64::from(origin) << 40) ^ 0x5eed);
        let ts = 1_767_225_600_000_000 + rng.i64(0..1_000_000);
        let id_base = (i64::from(origin) + 1) << 32;
        Synth { rng, seq: 0, ts, id_base, next_id: 1, live: Vec::new() }
    }

    fn words(&mut self, min: usize, max: usize) -> String {
        let n = self.rng.usize(min..=max);
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[self.rng.usize(..WORDS.len())]);
        }
        s
    }

    fn ts_text(&mut self) -> String {
        Timestamp(self.ts - self.rng.i64(0..86_400_000_000)).to_rfc3339()
    }

    fn household_fields(&mut self) -> Row {
        Row(vec![
            (
                "name".into(),
                Value::Text(format!("{} {}", NAMES[self.rng.usize(..NAMES.len())], self.rng.u32(..10_000))),
            ),
            ("village".into(), Value::Text(VILLAGES[self.rng.usize(..VILLAGES.len())].into())),
            ("members".into(), Value::Integer(self.rng.i64(1..12))),
            ("lat".into(), Value::Real(-1.0 + self.rng.f64())),
            ("lon".into(), Value::Real(34.0 + self.rng.f64())),
            ("visited".into(), Value::Text(self.ts_text())),
            ("notes".into(), Value::Text(self.words(2, 9))),
        ])
    }

    fn specimen_fields(&mut self, household: i64) -> Row {
        Row(vec![
            ("household_id".into(), Value::Integer(household)),
            ("kind".into(), Value::Text(KINDS[self.rng.usize(..KINDS.len())].into())),
            ("weight_g".into(), Value::Real(self.rng.f64() * 10.0)),
            ("collected".into(), Value::Text(self.ts_text())),
            ("label".into(), Value::Text(self.words(1, 6))),
        ])
    }

    /// The next entry of this origin's journal.
    pub fn next_entry(&mut self) -> Entry {
        self.seq += 1;
        self.ts += self.rng.i64(1..5_000_000);
        let op = pick_op(&mut self.rng, self.live.is_empty());
        let (table, pk, fields) = match op {
            Op::Insert => {
                let household = self.live.iter().rev().find(|(h, _)| *h).map(|(_, k)| *k);
                if household.is_none() || self.rng.bool() {
                    let id = self.id_base + self.next_id;
                    self.next_id += 1;
                    self.live.push((true, id));
                    ("survey_household", Value::Integer(id), Some(self.household_fields()))
                } else {
                    let id = self.id_base + self.next_id;
                    self.next_id += 1;
                    self.live.push((false, id));
                    let key = Value::Text(format!("{:016x}{:016x}", self.id_base, id));
                    ("survey_specimen", key, Some(self.specimen_fields(household.unwrap_or(0))))
                }
            }
            Op::Update | Op::Delete => {
                let at = self.rng.usize(..self.live.len());
                let (is_household, id) = if op == Op::Delete { self.live.swap_remove(at) } else { self.live[at] };
                let (table, key) = if is_household {
                    ("survey_household", Value::Integer(id))
                } else {
                    ("survey_specimen", Value::Text(format!("{:016x}{:016x}", self.id_base, id)))
                };
                let fields = (op == Op::Update).then(|| {
                    let all = if is_household { self.household_fields() } else { self.specimen_fields(0) };
                    let keep = self.rng.usize(1..=3);
                    let mut cols: Vec<(String, Value)> =
                        all.0.into_iter().filter(|(c, _)| c != "household_id").collect();
                    self.rng.shuffle(&mut cols);
                    cols.truncate(keep);
                    Row(cols)
                });
                (table, key, fields)
            }
        };
        Entry {
            seq: self.seq,
            ts: Timestamp(self.ts),
            op,
            table: table.into(),
            pk: Row(vec![("id".into(), pk)]),
            fields,
        }
    }
}

/// Writes `n` entries of origin `origin` as a JSON Lines journal; returns its size in bytes.
pub fn write_journal(path: &Path, seed: u64, origin: u32, n: u64) -> io::Result<u64> {
    let mut synth = Synth::new(seed, origin);
    write_lines(path, n, || synth.next_entry())
}

/// A journal shaped like a Django app's own: UUID text keys, datetimes as
/// Django writes them to SQLite (`2026-03-02 08:15:00.123456`), decimals
/// (REALs with two places, as a `DecimalField` lands in a NUMERIC column),
/// and free-text notes with punctuation, quotes, line breaks and non-ASCII
/// letters (JSON escapes), 60% inserts, 30% updates, 10% deletes.
pub struct DjangoSynth {
    rng: fastrand::Rng,
    seq: u64,
    ts: i64,
    /// Live visits: (key, household key).
    live: Vec<(String, String)>,
    households: Vec<String>,
}

const NOTE_WORDS: &[&str] = &[
    "Mama",
    "alisema",
    "mtoto",
    "ana",
    "homa",
    "tangu",
    "jana",
    "—",
    "follow-up",
    "needed;",
    "\"no",
    "change\"",
    "clinic",
    "card",
    "seen,",
    "BP",
    "120/80",
    "(ok)",
    "niño",
    "Zoë",
    "rain",
    "road",
    "closed.",
    "café",
    "déjà",
];

impl DjangoSynth {
    pub fn new(seed: u64) -> DjangoSynth {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0xd1a9_0000);
        let ts = 1_767_225_600_000_000 + rng.i64(0..1_000_000);
        DjangoSynth { rng, seq: 0, ts, live: Vec::new(), households: Vec::new() }
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.rng.u64(..), self.rng.u64(..));
        let h = format!("{a:016x}{b:016x}");
        format!("{}-{}-4{}-{}-{}", &h[..8], &h[8..12], &h[13..16], &h[16..20], &h[20..32])
    }

    fn datetime(&mut self) -> Value {
        let t = Timestamp(self.ts - self.rng.i64(0..86_400_000_000)).to_rfc3339();
        Value::Text(format!("{} {}", &t[..10], &t[11..26]))
    }

    fn decimal(&mut self, max: u32) -> Value {
        Value::Real(f64::from(self.rng.u32(..max * 100)) / 100.0)
    }

    fn note(&mut self) -> Value {
        let n = self.rng.usize(3..60);
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push(if self.rng.u8(..20) == 0 { '\n' } else { ' ' });
            }
            s.push_str(NOTE_WORDS[self.rng.usize(..NOTE_WORDS.len())]);
        }
        Value::Text(s)
    }

    fn visit_fields(&mut self, household: &str) -> Vec<(String, Value)> {
        let status = ["scheduled", "done", "missed", "refused"][self.rng.usize(..4)];
        vec![
            ("household_id".into(), Value::Text(household.to_owned())),
            ("visited_at".into(), self.datetime()),
            ("temperature_c".into(), Value::Real(f64::from(self.rng.u32(355..405)) / 10.0)),
            ("fee".into(), self.decimal(5000)),
            ("status".into(), Value::Text(status.into())),
            ("notes".into(), self.note()),
            ("created_at".into(), self.datetime()),
            ("updated_at".into(), self.datetime()),
        ]
    }

    /// The next entry.
    pub fn next_entry(&mut self) -> Entry {
        self.seq += 1;
        self.ts += self.rng.i64(1..5_000_000);
        let op = pick_op(&mut self.rng, self.live.is_empty());
        let (pk, fields) = match op {
            Op::Insert => {
                if self.households.is_empty() || self.rng.u8(..4) == 0 {
                    let h = self.uuid();
                    self.households.push(h);
                }
                let household = self.households[self.rng.usize(..self.households.len())].clone();
                let id = self.uuid();
                let fields = self.visit_fields(&household);
                self.live.push((id.clone(), household));
                (id, Some(Row(fields)))
            }
            Op::Update => {
                let at = self.rng.usize(..self.live.len());
                let (id, household) = self.live[at].clone();
                let mut cols = self.visit_fields(&household);
                cols.retain(|(c, _)| c != "household_id" && c != "created_at");
                self.rng.shuffle(&mut cols);
                cols.truncate(self.rng.usize(1..=3));
                (id, Some(Row(cols)))
            }
            Op::Delete => {
                let at = self.rng.usize(..self.live.len());
                (self.live.swap_remove(at).0, None)
            }
        };
        Entry {
            seq: self.seq,
            ts: Timestamp(self.ts),
            op,
            table: "survey_visit".into(),
            pk: Row(vec![("id".into(), Value::Text(pk))]),
            fields,
        }
    }
}

/// Writes `n` entries of [`DjangoSynth`] as a JSON Lines journal; returns its size in bytes.
pub fn write_django_journal(path: &Path, seed: u64, n: u64) -> io::Result<u64> {
    let mut synth = DjangoSynth::new(seed);
    write_lines(path, n, || synth.next_entry())
}

/// Writes `n` entries spread over `k` origins: `dir/origin-<i>.jsonl`, one journal each.
pub fn write_journals(dir: &Path, seed: u64, k: u32, n: u64) -> io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let mut total = 0;
    for i in 0..k {
        let share = n / u64::from(k) + u64::from(u64::from(i) < n % u64::from(k));
        total += write_journal(&dir.join(format!("origin-{i}.jsonl")), seed, i, share)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_mix_and_sizes() {
        let mut s = Synth::new(7, 0);
        let entries: Vec<Entry> = (0..10_000).map(|_| s.next_entry()).collect();
        let mut again = Synth::new(7, 0);
        assert!(entries.iter().all(|e| again.next_entry().to_line() == e.to_line()), "same seed, same journal");
        let share = |op| entries.iter().filter(|e| e.op == op).count() as f64 / entries.len() as f64;
        assert!((share(Op::Insert) - 0.6).abs() < 0.03, "{}", share(Op::Insert));
        assert!((share(Op::Update) - 0.3).abs() < 0.03);
        assert!((share(Op::Delete) - 0.1).abs() < 0.03);
        let avg = entries.iter().map(|e| e.to_line().len()).sum::<usize>() / entries.len();
        assert!((150..=300).contains(&avg), "average line {avg} bytes");
        assert!(entries.iter().all(|e| e.check().is_ok()));
    }

    #[test]
    fn django_shaped_entries_are_valid_and_escaped() {
        let mut s = DjangoSynth::new(3);
        let lines: Vec<Vec<u8>> = (0..5_000).map(|_| s.next_entry().to_line()).collect();
        assert!(lines.iter().all(|l| Entry::parse(l).is_ok()));
        let text = lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect::<String>();
        assert!(text.contains("\\n") && text.contains("\\\"") && text.contains('é'), "escapes and non-ASCII");
        assert!(text.contains("\"pk\":{\"id\":\"") && text.contains("\"fee\":"), "UUID keys and decimals");
    }
}
