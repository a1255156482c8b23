//! Receipts benchmark: `cargo bench --bench receipts` (prints figures).
//!
//! A laptop whose app database holds 1,000,000 journal rows, sent in 100
//! bundles of 10,000 (the sent log), all but the last 10,000 confirmed by the
//! archive; it holds 1,000 receipts (the archive's and 999 other trusted
//! nodes', each naming 50 origins), and the same 1,000 receipt files lie on
//! the stick `bundle create` writes to. Each command runs in a child process
//! (`ferry --quiet …`), best of 3 fresh copies, with and without receipts:
//!
//! 1. `ferry status --db`;
//! 2. `ferry bundle create --db` of 10,000 new entries;
//! 3. `ferry prune --db`: with the archive's receipt alone (the command
//!    without the other receipts) vs with all 1,000; and the prune of the
//!    990,000 confirmed rows against a plain `DELETE FROM _ferry_journal
//!    WHERE rowid <= 990000` on a copy of the same database, in the same run.
//!
//! `FERRY_BENCH_ENTRIES` changes the journal size (default 1,000,000).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry::capture::{self, TrackOptions};
use ferry::journal::Timestamp;
use ferry::keys::{NodeId, Role};
use ferry::node::Node;
use ferry::receipt::Holdings;
use rusqlite::{params, Connection};

const DDL: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n INTEGER, x REAL, note TEXT);";
const RECEIPTS: usize = 1000;
const BATCHES: i64 = 100;

fn insert_rows(db: &Path, from: i64, n: i64) {
    let mut c = Connection::open(db).expect("open");
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;").expect("pragmas");
    let tx = c.transaction().expect("tx");
    {
        let mut st = tx.prepare("INSERT INTO t (id, name, n, x, note) VALUES (?1, ?2, ?3, ?4, ?5)").expect("prep");
        for i in from..from + n {
            st.execute(params![i, format!("household {i}"), i * 7, i as f64 / 3.0, "a note of moderate length"])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn ferry(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.arg("--home").arg(home).arg("--quiet").args(args).env_remove("FERRY_OVERDUE_DAYS");
    c
}

fn time(mut cmd: Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().expect("run ferry");
    let t = start.elapsed();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
    t
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// A fresh copy of the laptop (home, database, stick) in `dir/name`.
fn fresh(template: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    let _ = std::fs::remove_dir_all(&to);
    copy_dir(template, &to);
    to
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    let n: i64 = std::env::var("FERRY_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let batch = n / BATCHES;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();

    // The laptop, without receipts: 1M rows sent in 100 bundles, then 10,000 new ones.
    let plain = dir.join("plain");
    let home = plain.join("home");
    let db = plain.join("app.sqlite3");
    let node = Node::init_kind(&home, "field-1", Some(1), Some(ferry::node::NodeKind::Field)).expect("node");
    Connection::open(&db).expect("db").execute_batch(DDL).expect("ddl");
    capture::track(&node, &db, &TrackOptions::default()).expect("track");
    let start = Instant::now();
    for b in 0..BATCHES {
        insert_rows(&db, b * batch + 1, batch);
        let st = ferry(&home, &["bundle", "create", "--db"]).arg(&db).arg("--out").arg(dir.join("sent")).status();
        assert!(st.expect("create").success());
    }
    insert_rows(&db, n + 1, batch);
    // The bundles went on sticks that left: prune finds no files to remove.
    std::fs::remove_dir_all(dir.join("sent")).expect("sticks gone");
    println!("set up {n} journal rows sent in {BATCHES} bundles, {batch} new: {:.1}s", secs(start.elapsed()));
    std::fs::create_dir_all(plain.join("stick")).expect("stick");

    // The same laptop with 1,000 receipts: the archive's, confirming all but
    // the last bundle, and 999 other nodes' (all trusted).
    let with = dir.join("with");
    copy_dir(&plain, &with);
    let whome = with.join("home");
    let laptop = Node::open(&whome).expect("laptop");
    let sent = ferry::receipt::sent::all(&laptop.state().expect("state"), laptop.id()).expect("sent");
    let confirmed_to = (n - batch) as u64;
    let chain = sent.iter().find(|s| s.last_seq == confirmed_to).expect("a bundle ends there").chain_after;
    let mut trust = laptop.trust().expect("trust");
    let store = ferry::receipt::Store::open(&whome);
    let stick = with.join("stick");
    let others: Vec<NodeId> = (0..50u8)
        .map(|i| NodeId::try_from(format!("{:016x}", 0xabc0_0000_0000_0000u64 + u64::from(i))).expect("id"))
        .collect();
    let mut keys = Vec::new();
    for i in 0..RECEIPTS {
        let key = ferry::keys::generate().expect("key");
        let roles = if i == 0 { vec![Role::Origin, Role::Relay, Role::Archive] } else { vec![Role::Relay] };
        let name = if i == 0 { "central".to_owned() } else { format!("node-{i}") };
        trust.add(&name, &key.verifying_key(), &roles).expect("trust");
        keys.push((name, key));
    }
    laptop.save_trust(&trust).expect("save trust");
    for (name, key) in &keys {
        let mut h = Holdings::default();
        h.add(laptop.id(), 1, confirmed_to, Some(&chain.0));
        for (j, o) in others.iter().enumerate() {
            h.add(o, 1, 1000 + j as u64, Some(&[j as u8; 32]));
        }
        let r = ferry::receipt::sign(key, Timestamp::now(), &h);
        store.keep(&r, &trust).expect("keep");
        std::fs::write(stick.join(r.file_name(Some(name))), &r.bytes).expect("write");
    }
    // The archive's receipt alone: the prune without the other receipts.
    let archive_only = dir.join("archive-only");
    copy_dir(&with, &archive_only);
    let central = NodeId::of(&keys[0].1.verifying_key());
    for e in std::fs::read_dir(archive_only.join("home/receipts")).expect("receipts") {
        let p = e.expect("entry").path();
        if p.file_stem().is_some_and(|s| s != central.as_str()) {
            std::fs::remove_file(p).expect("rm");
        }
    }
    for e in std::fs::read_dir(archive_only.join("stick")).expect("stick") {
        std::fs::remove_file(e.expect("entry").path()).expect("rm");
    }

    let runs = 3;
    let best = |template: &Path, name: &str, args: &[&str]| -> Duration {
        let mut best = Duration::MAX;
        for r in 0..runs {
            let w = fresh(template, dir, &format!("run-{name}-{r}"));
            let mut words: Vec<String> = Vec::new();
            for a in args {
                words.push(
                    a.replace("DB", &w.join("app.sqlite3").display().to_string())
                        .replace("STICK", &w.join("stick").display().to_string()),
                );
            }
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            best = best.min(time(ferry(&w.join("home"), &words)));
            let _ = std::fs::remove_dir_all(&w);
        }
        best
    };
    let report = |what: &str, base: Duration, with: Duration| {
        println!(
            "{what}: without receipts {:.3}s, with {RECEIPTS} receipts {:.3}s: {:+.1}% (target <= +10%)",
            secs(base),
            secs(with),
            100.0 * (secs(with) / secs(base) - 1.0)
        );
    };
    let status = ["status", "--db", "DB"];
    report("status --db", best(&plain, "status-plain", &status), best(&with, "status-with", &status));
    let create = ["bundle", "create", "--db", "DB", "--out", "STICK"];
    report(
        &format!("bundle create --db ({batch} new entries)"),
        best(&plain, "create-plain", &create),
        best(&with, "create-with", &create),
    );
    let prune = ["prune", "--db", "DB"];
    let prune_one = best(&archive_only, "prune-one", &prune);
    let prune_all = best(&with, "prune-all", &prune);
    report(
        &format!("prune --db ({confirmed_to} confirmed rows; without = the archive's receipt alone)"),
        prune_one,
        prune_all,
    );

    // Plain DELETE on a copy of the same database, same run.
    let mut delete = Duration::MAX;
    for r in 0..runs {
        let w = fresh(&with, dir, &format!("run-delete-{r}"));
        let c = Connection::open(w.join("app.sqlite3")).expect("open");
        let start = Instant::now();
        c.execute("DELETE FROM _ferry_journal WHERE rowid <= ?1", [confirmed_to as i64]).expect("delete");
        delete = delete.min(start.elapsed());
        drop(c);
        let _ = std::fs::remove_dir_all(&w);
    }
    println!(
        "prune of {confirmed_to} confirmed rows {:.3}s vs plain DELETE … WHERE rowid <= {confirmed_to} {:.3}s: prune runs at {:.0}% of its speed (target >= 50%)",
        secs(prune_all),
        secs(delete),
        100.0 * secs(delete) / secs(prune_all)
    );
}
