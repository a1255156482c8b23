//! `cargo bench --bench apply`: ferry's apply throughput against a plain
//! prepared-statement loop doing the same row changes (same run, same
//! durability), against Django's `loaddata` per row, and its peak memory as
//! the input grows 10x. Prints figures; see `docs/PERFORMANCE.md`.
//!
//! Environment: `FERRY_BENCH_ENTRIES` (default 1000000), `FERRY_PYTHON`
//! (a python with Django installed, e.g. /work/venv/bin/python),
//! `FERRY_BENCH_KEYS=uuid` (text keys in random order, like a Django
//! `UUIDField` primary key, instead of integers counting up).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry::apply::{apply, ApplyOptions};
use ferry::bundle::writer::copy_file;
use ferry::bundle::{write_bundle, SegmentBuilder};
use ferry::chain::ChainHash;
use ferry::journal::{Entry, Op, Row, Timestamp};
use ferry::node::Node;
use ferry::progress::Silent;
use ferry::value::Value;
use rusqlite::{params_from_iter, Connection};

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL, b INTEGER, c REAL);";
const SCHEMA_UUID: &str = "CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT NOT NULL, b INTEGER, c REAL);";

/// Whether keys are UUID-like text (`FERRY_BENCH_KEYS=uuid`).
fn uuid_keys() -> bool {
    static UUID: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UUID.get_or_init(|| std::env::var("FERRY_BENCH_KEYS").is_ok_and(|v| v == "uuid"))
}

fn schema() -> &'static str {
    if uuid_keys() {
        SCHEMA_UUID
    } else {
        SCHEMA
    }
}

/// Row `id`'s key value: the integer, or UUID-like text scattered over the key space.
fn key_value(id: i64) -> Value {
    if !uuid_keys() {
        return Value::Integer(id);
    }
    let mut x = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let y = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    Value::Text(format!("{x:016x}-{:016x}", y ^ (y >> 31)))
}
const SEGMENT: u64 = 100_000;

/// A seeded stream of entries: 60% inserts, 30% updates, 10% deletes of live rows.
struct Synth {
    rng: u64,
    seq: u64,
    next_id: i64,
    live: Vec<i64>,
}

impl Synth {
    fn new() -> Synth {
        Synth { rng: 0x9E37_79B9_7F4A_7C15, seq: 0, next_id: 1, live: Vec::new() }
    }
    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
    fn next(&mut self) -> Entry {
        self.seq += 1;
        let ts = Timestamp(1_790_000_000_000_000 + self.seq as i64 * 1000);
        let roll = self.rand() % 10;
        let key = |id: i64| Row(vec![("id".into(), key_value(id))]);
        if roll < 6 || self.live.is_empty() {
            let id = self.next_id;
            self.next_id += 1;
            self.live.push(id);
            let r = self.rand();
            let fields = Row(vec![
                ("a".into(), Value::Text(format!("household {id} visit {}", r % 1000))),
                ("b".into(), Value::Integer((r % 100_000) as i64)),
                ("c".into(), Value::Real((r % 10_000) as f64 / 7.0)),
            ]);
            Entry { seq: self.seq, ts, op: Op::Insert, table: "t".into(), pk: key(id), fields: Some(fields) }
        } else if roll < 9 {
            let i = (self.rand() % self.live.len() as u64) as usize;
            let id = self.live[i];
            let r = self.rand();
            let mut fields = vec![("b".into(), Value::Integer((r % 100_000) as i64))];
            if r.is_multiple_of(2) {
                fields.push(("a".into(), Value::Text(format!("corrected {r}"))));
            }
            Entry { seq: self.seq, ts, op: Op::Update, table: "t".into(), pk: key(id), fields: Some(Row(fields)) }
        } else {
            let i = (self.rand() % self.live.len() as u64) as usize;
            let id = self.live.swap_remove(i);
            Entry { seq: self.seq, ts, op: Op::Delete, table: "t".into(), pk: key(id), fields: None }
        }
    }
}

fn make_bundle(node: &Node, n: u64, out: &Path) -> PathBuf {
    make_bundle_to(node, n, out, Vec::new())
}

/// [`make_bundle`] with every segment encrypted to `to` (none: plain).
fn make_bundle_to(node: &Node, n: u64, out: &Path, to: Vec<(ferry::keys::NodeId, ferry::crypt::Recipient)>) -> PathBuf {
    std::fs::create_dir_all(out).expect("out dir");
    let mut synth = Synth::new();
    let mut chain = ChainHash::GENESIS;
    let mut built = Vec::new();
    let mut done = 0;
    while done < n {
        let mut b = SegmentBuilder::new_encrypted(node.id().clone(), chain, out, to.clone()).expect("builder");
        for _ in 0..SEGMENT.min(n - done) {
            let e = synth.next();
            b.push(&e, &e.to_line()).expect("push");
            done += 1;
        }
        chain = b.chain();
        built.push(b.finish(None, node.signing_key()).expect("finish"));
    }
    let ds: Vec<_> = built.iter().map(|b| b.descriptor.clone()).collect();
    let rs: Vec<_> = built.iter().map(|b| b.record.clone()).collect();
    write_bundle(out, rs, &ds, node.signing_key(), |i, w| copy_file(&built[i].file, w)).expect("bundle").path
}

fn fresh_db(path: &Path) {
    let _ = std::fs::remove_file(path);
    Connection::open(path).expect("open").execute_batch(schema()).expect("schema");
}

/// The baseline: the same row changes, prepared statements, one transaction,
/// `synchronous=FULL`, foreign keys on.
fn plain_loop(db: &Path, n: u64) -> Duration {
    fresh_db(db);
    let mut conn = Connection::open(db).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;").expect("pragmas");
    let mut synth = Synth::new();
    let start = Instant::now();
    let tx = conn.transaction().expect("tx");
    for _ in 0..n {
        let e = synth.next();
        let id = e.pk.0[0].1.clone();
        match e.op {
            Op::Insert => {
                let f = e.fields.as_ref().expect("fields");
                let mut s = tx.prepare_cached("INSERT INTO t (id, a, b, c) VALUES (?1, ?2, ?3, ?4)").expect("prep");
                s.execute(params_from_iter([&id, &f.0[0].1, &f.0[1].1, &f.0[2].1])).expect("insert");
            }
            Op::Update => {
                let f = e.fields.as_ref().expect("fields");
                if f.len() == 1 {
                    let mut s = tx.prepare_cached("UPDATE t SET b = ?2 WHERE id = ?1").expect("prep");
                    s.execute(params_from_iter([&id, &f.0[0].1])).expect("update");
                } else {
                    let mut s = tx.prepare_cached("UPDATE t SET b = ?2, a = ?3 WHERE id = ?1").expect("prep");
                    s.execute(params_from_iter([&id, &f.0[0].1, &f.0[1].1])).expect("update");
                }
            }
            Op::Delete => {
                let mut s = tx.prepare_cached("DELETE FROM t WHERE id = ?1").expect("prep");
                s.execute([&id]).expect("delete");
            }
        }
    }
    tx.commit().expect("commit");
    start.elapsed()
}

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Child mode: apply BUNDLE to DB with HOME's trust; prints `secs hwm_kib`.
fn child(db: &Path, bundle: &Path, home: &Path) {
    let node = Node::open(home).expect("node");
    let trust = node.trust().expect("trust");
    let start = Instant::now();
    // The node's own key opens encrypted bundles (a plain one costs nothing more).
    let opts = ApplyOptions { keyring: node.keyring(), ..ApplyOptions::default() };
    let r = apply(db, &[bundle.to_path_buf()], &trust, &opts, &mut Silent).expect("apply");
    assert_eq!(r.refused, 0);
    println!("{} {} {}", start.elapsed().as_secs_f64(), vm_hwm_kib().unwrap_or(0), r.totals.applied);
}

fn run_child(db: &Path, bundle: &Path, home: &Path) -> (f64, u64) {
    fresh_db(db);
    let exe = std::env::current_exe().expect("exe");
    let out = Command::new(exe).arg("--child").arg(db).arg(bundle).arg(home).output().expect("child");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let secs: f64 = it.next().and_then(|s| s.parse().ok()).expect("secs");
    let hwm: u64 = it.next().and_then(|s| s.parse().ok()).expect("hwm");
    (secs, hwm)
}

/// Django `loaddata` of `rows` inserts (one save per row), in seconds.
fn django(python: &str, dir: &Path, rows: u64) -> Result<f64, String> {
    let proj = dir.join("django");
    std::fs::create_dir_all(proj.join("benchapp")).map_err(|e| e.to_string())?;
    std::fs::write(proj.join("benchapp/__init__.py"), "").map_err(|e| e.to_string())?;
    std::fs::write(
        proj.join("benchapp/models.py"),
        "from django.db import models\n\nclass Row(models.Model):\n    a = models.TextField()\n    b = models.IntegerField(null=True)\n    c = models.FloatField(null=True)\n",
    )
    .map_err(|e| e.to_string())?;
    let mut synth = Synth::new();
    let mut fixture = String::from("[");
    let mut written = 0;
    while written < rows {
        let e = synth.next();
        if e.op != Op::Insert {
            continue;
        }
        let f = e.fields.as_ref().expect("fields");
        let obj = serde_json::json!({
            "model": "benchapp.row",
            "pk": e.pk.0[0].1,
            "fields": {"a": f.0[0].1, "b": f.0[1].1, "c": f.0[2].1},
        });
        if written > 0 {
            fixture.push(',');
        }
        fixture.push_str(&obj.to_string());
        written += 1;
    }
    fixture.push(']');
    std::fs::write(proj.join("rows.json"), fixture).map_err(|e| e.to_string())?;
    let script = r#"
import sys, time, django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["benchapp"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sys.argv[1]}},
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
)
django.setup()
from django.core.management import call_command
from django.db import connection
with connection.schema_editor() as editor:
    from benchapp.models import Row
    editor.create_model(Row)
t = time.perf_counter()
call_command("loaddata", sys.argv[2], verbosity=0)
print(time.perf_counter() - t)
"#;
    std::fs::write(proj.join("bench.py"), script).map_err(|e| e.to_string())?;
    let db = proj.join("django.sqlite3");
    let _ = std::fs::remove_file(&db);
    let out = Command::new(python)
        .current_dir(&proj)
        .arg("bench.py")
        .arg(&db)
        .arg(proj.join("rows.json"))
        .output()
        .map_err(|e| format!("failed to run {python}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("{e}"))
}

enum KeptDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl KeptDir {
    fn path(&self) -> &Path {
        match self {
            KeptDir::Temp(t) => t.path(),
            KeptDir::Kept(p) => p,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(Path::new(&args[2]), Path::new(&args[3]), Path::new(&args[4]));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench binaries without `--bench`:
        // the full benchmark is for `cargo bench` only.
        println!("apply benchmark: run with `cargo bench --bench apply`");
        return;
    }
    let n: u64 = std::env::var("FERRY_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(std::env::var_os("FERRY_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into()))
        .expect("tmp");
    // FERRY_BENCH_KEEP=1 keeps the bundles and node home (to profile the child).
    let dir = if std::env::var_os("FERRY_BENCH_KEEP").is_some() {
        let kept = dir.keep();
        println!("keeping {}", kept.display());
        KeptDir::Kept(kept)
    } else {
        KeptDir::Temp(dir)
    };
    let home = dir.path().join("origin");
    let node = Node::init(&home, "bench", None).expect("node");
    let keys = if uuid_keys() { "UUID-like text keys" } else { "integer keys" };
    println!("ferry apply benchmark: {n} entries (60% insert, 30% update, 10% delete), one origin, {keys}");

    let t = Instant::now();
    let small = make_bundle(&node, n / 10, &dir.path().join("small"));
    let big = make_bundle(&node, n, &dir.path().join("big"));
    let me = vec![(node.id().clone(), node.encryption_key().expect("an encryption key"))];
    let sealed = make_bundle_to(&node, n, &dir.path().join("sealed"), me);
    println!(
        "bundles made in {:.1}s ({} bytes for {n} entries)",
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0)
    );

    let trust = node.trust().expect("trust");
    let t = Instant::now();
    let v = ferry::verify::verify_file(&big, &trust, &mut Silent);
    assert!(v.ok, "{:?}", v.error);
    let verify_secs = t.elapsed().as_secs_f64();
    println!(
        "verify only (signatures, hashes, decompress, parse): {verify_secs:.2}s  {:>10.0} entries/s",
        n as f64 / verify_secs
    );

    let db = dir.path().join("target.sqlite3");
    let plain = plain_loop(&db, n).as_secs_f64();
    // Plain and encrypted apply in turns, best of two each (issue 14).
    let (mut ferry_secs, mut hwm_big, mut sealed_secs) = (f64::MAX, 0, f64::MAX);
    for _ in 0..2 {
        let (secs, hwm) = run_child(&db, &big, &home);
        if secs < ferry_secs {
            (ferry_secs, hwm_big) = (secs, hwm);
        }
        sealed_secs = sealed_secs.min(run_child(&db, &sealed, &home).0);
    }
    let (_, hwm_small) = run_child(&db, &small, &home);
    let plain_rate = n as f64 / plain;
    let ferry_rate = n as f64 / ferry_secs;
    println!("plain prepared-statement loop: {plain:.2}s  {plain_rate:>10.0} entries/s");
    println!("ferry bundle apply (verify+apply): {ferry_secs:.2}s  {ferry_rate:>10.0} entries/s");
    println!("ferry / plain: {:.0}% (target >= 50%)", 100.0 * ferry_rate / plain_rate);
    let sealed_rate = n as f64 / sealed_secs;
    println!("ferry bundle apply, encrypted (decrypt+verify+apply): {sealed_secs:.2}s  {sealed_rate:>10.0} entries/s");
    println!("encrypted apply / plain apply: {:.0}% (target >= 90%)", 100.0 * sealed_rate / ferry_rate);
    println!("peak memory (VmHWM): {} KiB at {} entries, {} KiB at {n} entries", hwm_small, n / 10, hwm_big);

    let rows = (n / 50).clamp(1_000, 20_000);
    match std::env::var("FERRY_PYTHON") {
        _ if uuid_keys() => {
            println!("django loaddata: SKIPPED with FERRY_BENCH_KEYS=uuid (its model has integer keys)")
        }
        Err(_) => println!(
            "django loaddata: SKIPPED, FERRY_PYTHON is not set (a python with Django, e.g. /work/venv/bin/python)"
        ),
        Ok(py) => match django(&py, dir.path(), rows) {
            Ok(secs) => {
                let rate = rows as f64 / secs;
                println!("django loaddata: {rows} rows in {secs:.2}s  {rate:>10.0} rows/s");
                println!("ferry / django: {:.0}x (target >= 25x)", ferry_rate / rate);
            }
            Err(e) => println!("django loaddata: FAILED: {e}"),
        },
    }
}
