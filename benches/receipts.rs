//! Receipts benchmark: `cargo bench --bench receipts` (prints figures).
//!
//! A laptop whose app database holds 1,000,000 journal rows, sent in 100
//! bundles of 10,000 (the sent log), all but the last 10,000 confirmed by the
//! archive. Receipts (each naming 50 other origins), two ways: (a) as on a
//! laptop's road, 1,000 receipt files of its three receiving nodes (driver,
//! community, central) on the stick `bundle create` writes to, the oldest of
//! each held (a node keeps the newest receipt per signer); (b) the extreme,
//! 1,000 trusted signers, one receipt each, all held and on the stick. Each
//! command runs in a child process (`ferry --quiet …`), best of 3 fresh
//! copies, with and without receipts:
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
    // FERRY_BENCH_STOP_AFTER_SETUP=1: build the laptops, print where, keep them and stop (for profiling).
    let stop_after_setup = std::env::var_os("FERRY_BENCH_STOP_AFTER_SETUP").is_some();

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
    let laptop = Node::open(&home).expect("laptop");
    let sent = ferry::receipt::sent::all(&laptop.state().expect("state"), laptop.id()).expect("sent");
    let confirmed_to = (n - batch) as u64;
    let chain = sent.iter().find(|s| s.last_seq == confirmed_to).expect("a bundle ends there").chain_after;
    drop(laptop);
    // (a) the road: 1,000 receipt files of the driver, the community server
    // and central on the stick, the oldest of each held; (b) 1,000 trusted
    // signers, one receipt each, all held and on the stick.
    let (road, central) = with_receipts(&plain, &dir.join("road"), 3, confirmed_to, &chain);
    let (many, central_many) = with_receipts(&plain, &dir.join("many"), RECEIPTS, confirmed_to, &chain);
    if stop_after_setup {
        println!("kept: {}", tmp.keep().display());
        return;
    }

    // Without receipts, for each case: the same laptop with the same trust
    // store, holding none and with none on the stick; for prune, holding
    // the archive's receipt alone (without one nothing is pruned).
    let strip = |from: &Path, name: &str, keep: Option<&NodeId>| -> PathBuf {
        let to = dir.join(name);
        copy_dir(from, &to);
        let state = Connection::open(to.join("home/state.sqlite3")).expect("state");
        for table in ["receipts_held", "receipts_ranges"] {
            state
                .execute(&format!("DELETE FROM {table} WHERE node != ?1"), [keep.map_or("", |k| k.as_str())])
                .expect("forget receipts");
        }
        drop(state);
        for e in std::fs::read_dir(to.join("stick")).expect("stick") {
            std::fs::remove_file(e.expect("entry").path()).expect("rm");
        }
        to
    };

    let runs = 5;
    let args_for = |w: &Path, args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|a| {
                a.replace("DB", &w.join("app.sqlite3").display().to_string())
                    .replace("STICK", &w.join("stick").display().to_string())
            })
            .collect()
    };
    // One run on a fresh copy of `template`.
    let once = |template: &Path, name: &str, args: &[&str]| -> Duration {
        let w = fresh(template, dir, name);
        let words = args_for(&w, args);
        let t = time(ferry(&w.join("home"), &words.iter().map(String::as_str).collect::<Vec<_>>()));
        let _ = std::fs::remove_dir_all(&w);
        t
    };
    // Best of `runs`, the two commands interleaved (each on a fresh copy)
    // so that both see the same machine load.
    let pair = |without: &Path, with: &Path, name: &str, args: &[&str]| -> (Duration, Duration) {
        let (mut a, mut b) = (Duration::MAX, Duration::MAX);
        for r in 0..runs {
            a = a.min(once(without, &format!("run-{name}-without-{r}"), args));
            b = b.min(once(with, &format!("run-{name}-with-{r}"), args));
        }
        (a, b)
    };
    let report = |what: &str, (base, with): (Duration, Duration)| {
        println!(
            "{what}: without receipts {:.4}s, with {:.4}s: {:+.1}% (target <= +10%)",
            secs(base),
            secs(with),
            100.0 * (secs(with) / secs(base) - 1.0)
        );
    };
    let status = ["status", "--db", "DB"];
    let create = ["bundle", "create", "--db", "DB", "--out", "STICK"];
    let prune = ["prune", "--db", "DB"];
    // status changes nothing: 25 runs on one copy each, interleaved.
    let status_pair = |without: &Path, with: &Path| -> (Duration, Duration) {
        let (mut a, mut b) = (Duration::MAX, Duration::MAX);
        let (pa, wa) = (args_for(without, &status), args_for(with, &status));
        for _ in 0..25 {
            a = a.min(time(ferry(&without.join("home"), &pa.iter().map(String::as_str).collect::<Vec<_>>())));
            b = b.min(time(ferry(&with.join("home"), &wa.iter().map(String::as_str).collect::<Vec<_>>())));
        }
        (a, b)
    };
    let mut prune_all = Duration::MAX;
    for (label, name, with, central) in [
        ("(a) 1,000 receipts of 3 nodes on the stick", "road", &road, &central),
        ("(b) 1,000 receipts of 1,000 trusted nodes", "many", &many, &central_many),
    ] {
        println!("{label}:");
        let bare = strip(with, &format!("{name}-bare"), None);
        let archive_only = strip(with, &format!("{name}-archive-only"), Some(central));
        report("  status --db (best of 25)", status_pair(&bare, with));
        report("  status --db vs the laptop with its own small trust store", status_pair(&plain, with));
        report(
            &format!("  bundle create --db ({batch} new entries, best of {runs})"),
            pair(&bare, with, "create", &create),
        );
        let p = pair(&archive_only, with, "prune", &prune);
        prune_all = prune_all.min(p.1);
        report(
            &format!(
                "  prune --db ({confirmed_to} confirmed rows, best of {runs}; without = the archive's receipt alone)"
            ),
            p,
        );
    }

    // Plain DELETE on a copy of the same database, same run.
    let mut delete = Duration::MAX;
    for r in 0..runs {
        let w = fresh(&road, dir, &format!("run-delete-{r}"));
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

/// A copy of the laptop `plain` in `to` with 1,000 receipts from `signers`
/// trusted nodes (the first is central, the archive): each confirms entries
/// 1..=`confirmed_to` and names 50 other origins; receipt `k` is signed by
/// node `k % signers` at a later time than receipt `k - 1`. The first receipt
/// of each signer (its oldest) is held; all 1,000 lie on the stick. Returns
/// the copy and central's id.
fn with_receipts(
    plain: &Path,
    to: &Path,
    signers: usize,
    confirmed_to: u64,
    chain: &ferry::chain::ChainHash,
) -> (PathBuf, NodeId) {
    copy_dir(plain, to);
    let home = to.join("home");
    let laptop = Node::open(&home).expect("laptop");
    let mut trust = laptop.trust().expect("trust");
    let store = ferry::receipt::Store::open(&home).expect("store");
    let stick = to.join("stick");
    let others: Vec<NodeId> = (0..50u8)
        .map(|i| NodeId::try_from(format!("{:016x}", 0xabc0_0000_0000_0000u64 + u64::from(i))).expect("id"))
        .collect();
    let mut keys = Vec::new();
    for i in 0..signers {
        let key = ferry::keys::generate().expect("key");
        let roles = if i == 0 { vec![Role::Origin, Role::Relay, Role::Archive] } else { vec![Role::Relay] };
        let name = if i == 0 { "central".to_owned() } else { format!("node-{i}") };
        trust.add(&name, &key.verifying_key(), &roles).expect("trust");
        keys.push((name, key));
    }
    laptop.save_trust(&trust).expect("save trust");
    let t0 = Timestamp::now().0 - 1_000_000_000;
    for k in 0..RECEIPTS {
        let (name, key) = &keys[k % signers];
        let mut h = Holdings::default();
        h.add(laptop.id(), 1, confirmed_to, Some(&chain.0));
        for (j, o) in others.iter().enumerate() {
            h.add(o, 1, 1000 + j as u64, Some(&[j as u8; 32]));
        }
        let r = ferry::receipt::sign(key, Timestamp(t0 + k as i64 * 1000), &h);
        if k < signers {
            store.keep(&r, &trust).expect("keep");
        }
        std::fs::write(stick.join(r.file_name(Some(name))), &r.bytes).expect("write");
    }
    (to.to_path_buf(), NodeId::of(&keys[0].1.verifying_key()))
}
