//! Capture benchmark: `cargo bench --bench capture` (prints figures).
//!
//! 0. The app's ordinary writes: 5,000 inserts then 5,000 `save()`-style
//!    updates, each its own transaction (autocommit, as a web request
//!    saves), tracked vs untracked, with SQLite's default `synchronous=FULL`
//!    (what Django uses) and with `synchronous=NORMAL`.
//!    Then the same through the app itself: `fixtures/django/bench_writes.py`
//!    times 2,000 `create()` and 2,000 `save()` calls through Django's ORM on
//!    a migrated database, untracked and tracked (needs Python with Django:
//!    `FERRY_PYTHON`, else `.venv/bin/python`; skipped with a note without).
//! 1. 100,000 inserts in one transaction into a tracked vs an untracked table.
//! 2. 100,000 single-row `save()`-style updates (every column written, one
//!    changed) in one transaction, tracked vs untracked.
//! 3. `ferry bundle create --db` on a 1,000,000-entry journal table vs
//!    `ferry bundle create --journal` on the same entries as a JSON Lines
//!    file, each in a child process, with its peak RSS (Linux: VmHWM).
//!
//! `FERRY_BENCH_ENTRIES` changes the size of part 3 (default 1,000,000).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry::capture::{self, JournalRows, TrackOptions};
use ferry::node::Node;
use rusqlite::{params, Connection};

const ROWS: i64 = 100_000;
const DDL: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n INTEGER, x REAL, note TEXT);";

fn open(db: &Path) -> Connection {
    let c = Connection::open(db).expect("open");
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;").expect("pragmas");
    c
}

const AUTOCOMMIT_ROWS: i64 = 5_000;

/// `n` inserts, then `n` updates of those rows, each statement its own
/// transaction. Returns (inserts, updates) wall time.
fn autocommit_writes(c: &Connection, n: i64) -> (Duration, Duration) {
    let start = Instant::now();
    let mut ins = c.prepare("INSERT INTO t (id, name, n, x, note) VALUES (?1, ?2, ?3, ?4, ?5)").expect("prep");
    for i in 1..=n {
        ins.execute(params![i, format!("household {i}"), i * 7, i as f64 / 3.0, "a note of moderate length"])
            .expect("insert");
    }
    let inserts = start.elapsed();
    let start = Instant::now();
    let mut upd = c.prepare("UPDATE t SET name = ?2, n = ?3, x = ?4, note = ?5 WHERE id = ?1").expect("prep");
    for i in 1..=n {
        upd.execute(params![i, format!("household {i}"), i * 7 + 1, i as f64 / 3.0, "a note of moderate length"])
            .expect("update");
    }
    (inserts, start.elapsed())
}

/// Part 0 for one `synchronous` setting: best of 3 interleaved rounds.
fn autocommit_part(dir: &Path, node: &Node, synchronous: &str) {
    let mut best = [Duration::MAX; 4];
    for round in 0..3 {
        for tracked in [false, true] {
            let db = dir.join(format!("auto-{synchronous}-{round}-{tracked}.sqlite3"));
            let c = Connection::open(&db).expect("open");
            c.execute_batch(&format!("PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous};")).expect("pragmas");
            c.execute_batch(DDL).expect("ddl");
            if tracked {
                capture::track(node, &db, &TrackOptions::default()).expect("track");
            }
            let (i, u) = autocommit_writes(&c, AUTOCOMMIT_ROWS);
            let k = usize::from(tracked);
            best[k] = best[k].min(i);
            best[2 + k] = best[2 + k].min(u);
        }
    }
    for (what, p, t) in [("inserts", 0, 1), ("updates", 2, 3)] {
        println!(
            "autocommit {what}, {AUTOCOMMIT_ROWS} transactions, synchronous={synchronous} (best of 3): untracked \
             {:.0} µs, tracked {:.0} µs per write, ratio {:.2}x (target <= 1.5x)",
            best[p].as_secs_f64() * 1e6 / AUTOCOMMIT_ROWS as f64,
            best[t].as_secs_f64() * 1e6 / AUTOCOMMIT_ROWS as f64,
            ratio(best[t], best[p])
        );
    }
}

/// The Python that has Django: `FERRY_PYTHON`, else the repository's `.venv`.
fn django_python() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("FERRY_PYTHON") {
        return Some(p.into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(if cfg!(windows) {
        ".venv/Scripts/python.exe"
    } else {
        ".venv/bin/python"
    });
    venv.exists().then_some(venv)
}

/// Part 0 through Django's ORM: best of 3 interleaved rounds.
fn django_part(dir: &Path, node: &Node) {
    let Some(py) = django_python() else {
        println!("django autocommit writes: skipped (no Python with Django: run scripts/setup-test-deps)");
        return;
    };
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/django");
    let python = |db: &Path, args: &[&str]| {
        let o = Command::new(&py).current_dir(&app).env("FERRY_DJANGO_DB", db).args(args).output().expect("python");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    const N: usize = 2000;
    let mut best = [f64::MAX; 4];
    for round in 0..3 {
        for tracked in [false, true] {
            let db = dir.join(format!("django-{round}-{tracked}.sqlite3"));
            python(&db, &["manage.py", "migrate", "--noinput", "-v", "0"]);
            if tracked {
                capture::track(node, &db, &TrackOptions::default()).expect("track");
            } else {
                // Tracking switches the database to WAL: the untracked copy
                // runs in WAL too, so only capture differs.
                Connection::open(&db).expect("open").execute_batch("PRAGMA journal_mode=WAL").expect("wal");
            }
            let out = python(&db, &["bench_writes.py", &N.to_string()]);
            let t: Vec<f64> = out.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            let k = usize::from(tracked);
            best[k] = best[k].min(t[0]);
            best[2 + k] = best[2 + k].min(t[1]);
        }
    }
    for (what, p, t) in [("create()", 0, 1), ("save()", 2, 3)] {
        println!(
            "django {what} through the ORM, {N} autocommit writes (best of 3): untracked {:.0} µs, tracked {:.0} µs \
             per write, ratio {:.2}x (target <= 1.5x)",
            best[p] * 1e6 / N as f64,
            best[t] * 1e6 / N as f64,
            best[t] / best[p]
        );
    }
}

fn insert_rows(c: &mut Connection, n: i64) -> Duration {
    let start = Instant::now();
    let tx = c.transaction().expect("tx");
    {
        let mut st = tx.prepare("INSERT INTO t (id, name, n, x, note) VALUES (?1, ?2, ?3, ?4, ?5)").expect("prep");
        for i in 1..=n {
            st.execute(params![i, format!("household {i}"), i * 7, i as f64 / 3.0, "a note of moderate length"])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    start.elapsed()
}

fn update_rows(c: &mut Connection, n: i64) -> Duration {
    let start = Instant::now();
    let tx = c.transaction().expect("tx");
    {
        let mut st = tx.prepare("UPDATE t SET name = ?2, n = ?3, x = ?4, note = ?5 WHERE id = ?1").expect("prep");
        for i in 1..=n {
            st.execute(params![i, format!("household {i}"), i * 7 + 1, i as f64 / 3.0, "a note of moderate length"])
                .expect("update");
        }
    }
    tx.commit().expect("commit");
    start.elapsed()
}

/// Runs `cmd`, returning wall time and peak RSS in KiB (Linux only).
fn run_measured(mut cmd: Command) -> (Duration, Option<u64>) {
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn ferry");
    let mut peak: Option<u64> = None;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "ferry failed: {status}");
            break;
        }
        if let Some(kb) = vm_hwm(child.id()) {
            peak = Some(peak.map_or(kb, |p| p.max(kb)));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (start.elapsed(), peak)
}

/// CPU time (user + system, in clock ticks) of the calling thread, Linux only.
#[cfg(target_os = "linux")]
fn cpu_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[cfg(not(target_os = "linux"))]
fn cpu_ticks() -> Option<u64> {
    None
}

#[cfg(target_os = "linux")]
fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
fn vm_hwm(_pid: u32) -> Option<u64> {
    None
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let node = Node::init(&home, "bench", Some(1)).expect("node");

    // 0: the app's ordinary writes, one transaction each.
    for synchronous in ["FULL", "NORMAL"] {
        autocommit_part(dir.path(), &node, synchronous);
    }
    django_part(dir.path(), &node);

    // 1 and 2: tracked vs untracked writes; 5 fresh rounds each. The machine
    // is shared, so both the best wall time and the total CPU time of this
    // thread (Linux; immune to waiting for a core) are reported.
    let mut best = [Duration::MAX; 4];
    let mut cpu = [0u64; 4];
    for round in 0..5 {
        let plain_db = dir.path().join(format!("plain{round}.sqlite3"));
        let tracked_db = dir.path().join(format!("tracked{round}.sqlite3"));
        let mut plain = open(&plain_db);
        plain.execute_batch(DDL).expect("ddl");
        let mut tracked = open(&tracked_db);
        tracked.execute_batch(DDL).expect("ddl");
        capture::track(&node, &tracked_db, &TrackOptions::default()).expect("track");
        // Interleaved: plain and tracked runs see the same machine load.
        for i in 0..4 {
            let conn = if i % 2 == 0 { &mut plain } else { &mut tracked };
            let before = cpu_ticks();
            let t = if i < 2 { insert_rows(conn, ROWS) } else { update_rows(conn, ROWS) };
            best[i] = best[i].min(t);
            if let (Some(a), Some(b)) = (before, cpu_ticks()) {
                cpu[i] += b - a;
            }
        }
    }
    let cpu_ratio = |t: usize, p: usize| {
        if cpu[p] > 0 {
            format!(", CPU-time ratio {:.2}x", cpu[t] as f64 / cpu[p] as f64)
        } else {
            String::new()
        }
    };
    println!(
        "insert {ROWS} rows, one transaction (best of 5): untracked {:.3}s, tracked {:.3}s, ratio {:.2}x{} (target <= 3x)",
        best[0].as_secs_f64(),
        best[1].as_secs_f64(),
        ratio(best[1], best[0]),
        cpu_ratio(1, 0)
    );
    println!(
        "update {ROWS} rows (save()-style: 4 columns written, 1 changed), one transaction (best of 5): untracked {:.3}s, tracked {:.3}s, ratio {:.2}x{} (target <= 3x)",
        best[2].as_secs_f64(),
        best[3].as_secs_f64(),
        ratio(best[3], best[2]),
        cpu_ratio(3, 2)
    );

    // 3: bundle create --db vs --journal on the same entries.
    let n: i64 = std::env::var("FERRY_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let big_db = dir.path().join("big.sqlite3");
    let mut big = open(&big_db);
    big.execute_batch(DDL).expect("ddl");
    capture::track(&node, &big_db, &TrackOptions::default()).expect("track");
    let t = insert_rows(&mut big, n);
    println!("captured {n} inserts in {:.2}s", t.as_secs_f64());
    let jsonl = dir.path().join("journal.jsonl");
    {
        let mut w = BufWriter::new(std::fs::File::create(&jsonl).expect("create"));
        for item in JournalRows::new(&big, "big", 1, n as u64).expect("rows") {
            let (_, bytes) = item.expect("row");
            w.write_all(&bytes).expect("write");
            w.write_all(b"\n").expect("write");
        }
        w.flush().expect("flush");
    }
    drop(big);
    let db_size = std::fs::metadata(&big_db).map(|m| m.len()).unwrap_or(0);
    let jsonl_size = std::fs::metadata(&jsonl).map(|m| m.len()).unwrap_or(0);
    println!("journal: {:.1} MiB JSON Lines, app database {:.1} MiB", mib(jsonl_size), mib(db_size));

    let exe = env!("CARGO_BIN_EXE_ferry");
    let journal_home = dir.path().join("home-journal");
    Node::init(&journal_home, "bench-journal", Some(1)).expect("node");
    let mut cmd = Command::new(exe);
    cmd.arg("--home").arg(&journal_home).args(["--quiet", "bundle", "create", "--journal"]).arg(&jsonl);
    cmd.arg("--out").arg(dir.path().join("out-journal"));
    let (t_journal, rss_journal) = run_measured(cmd);
    let mut cmd = Command::new(exe);
    cmd.arg("--home").arg(&home).args(["--quiet", "bundle", "create", "--db"]).arg(&big_db);
    cmd.arg("--out").arg(dir.path().join("out-db"));
    let (t_db, rss_db) = run_measured(cmd);
    let rate = |t: Duration| n as f64 / t.as_secs_f64();
    let rss = |r: Option<u64>| r.map_or("n/a".to_owned(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0));
    println!(
        "bundle create --journal, {n} entries: {:.2}s ({:.0} entries/s), peak RSS {}",
        t_journal.as_secs_f64(),
        rate(t_journal),
        rss(rss_journal)
    );
    println!(
        "bundle create --db,      {n} entries: {:.2}s ({:.0} entries/s), peak RSS {}",
        t_db.as_secs_f64(),
        rate(t_db),
        rss(rss_db)
    );
    println!("--db speed relative to --journal: {:.0}% (target >= 50%)", 100.0 * rate(t_db) / rate(t_journal));
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}
