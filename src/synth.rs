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
        let roll = self.rng.u32(..100);
        let op = if self.live.is_empty() || roll < 60 {
            Op::Insert
        } else if roll < 90 {
            Op::Update
        } else {
            Op::Delete
        };
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
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut synth = Synth::new(seed, origin);
    let mut bytes = 0;
    for _ in 0..n {
        let line = synth.next_entry().to_line();
        w.write_all(&line)?;
        w.write_all(b"\n")?;
        bytes += line.len() as u64 + 1;
    }
    w.flush()?;
    Ok(bytes)
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
}
