//! Benchmark: `ferry bundle relay` over 10 bundles of 100,000 entries each,
//! against `cat FILES | sha256sum` over the same bytes, measured in the same
//! run; and the relay's peak memory (VmHWM) for 1 bundle and for 10.
//!
//! Run with `cargo bench --bench relay`. Each relay runs in a child process
//! (this same binary, re-executed), so its VmHWM is its own.
//! `FERRY_BENCH_ENCRYPT=1`: the bundles are encrypted to a central server
//! whose key the relay does not hold (issue 14: relay throughput unchanged).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry::bundle::create::{create_from_journal, CreateOptions};
use ferry::journal::Timestamp;
use ferry::keys::Role;
use ferry::node::Node;
use ferry::progress::Silent;
use ferry::relay::{relay, RelayOptions, DEFAULT_MAX_SIZE};

const BUNDLES: usize = 10;
const ENTRIES: u64 = 100_000;
const RUNS: usize = 3;

fn main() {
    // Child mode: relay once, print the elapsed time and VmHWM.
    if let (Ok(home), Ok(from), Ok(out)) =
        (std::env::var("RELAY_BENCH_HOME"), std::env::var("RELAY_BENCH_FROM"), std::env::var("RELAY_BENCH_OUT"))
    {
        let node = Node::open(Path::new(&home)).expect("relay node");
        let opts = RelayOptions {
            inputs: from.split(',').map(PathBuf::from).collect(),
            out_dir: PathBuf::from(out),
            move_inputs: false,
            max_size: DEFAULT_MAX_SIZE,
        };
        let t = Instant::now();
        let r = relay(&node, &opts, &mut Silent).expect("relay");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(r.counts.rejected + r.counts.forks, 0);
        println!("{secs} {} {}", vm_hwm_kib(), r.counts.segments_written);
        return;
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    eprintln!("generating {BUNDLES} bundles of {ENTRIES} entries in {} ...", root.display());
    let relay_home = root.join("relay");
    let relay_node = Node::init(&relay_home, "bench-relay", None).expect("relay node");
    let mut trust = relay_node.trust().expect("trust");
    let mut files = Vec::new();
    let encrypt = std::env::var_os("FERRY_BENCH_ENCRYPT").is_some();
    let central = Node::init(&root.join("central"), "central", None).expect("central");
    for k in 0..BUNDLES {
        let home = root.join(format!("origin-{k}"));
        let mut origin = Node::init(&home, &format!("origin-{k}"), Some(k as u32 + 1)).expect("origin");
        if encrypt {
            let mut t = origin.trust().expect("trust");
            t.add("central", &central.signing_key().verifying_key(), &[Role::Relay]).expect("trust central");
            t.set_encryption("central", &central.encryption_key().expect("key")).expect("encryption key");
            origin.save_trust(&t).expect("save");
            origin.encrypt_also(&["central".to_owned()]);
        }
        trust.add(&format!("origin-{k}"), &origin.signing_key().verifying_key(), &[Role::Origin]).expect("trust");
        let journal = root.join(format!("journal-{k}.jsonl"));
        write_journal(&journal, k as u64, ENTRIES);
        let stick = root.join(format!("stick/{k}"));
        let r = create_from_journal(&origin, &journal, &CreateOptions { out_dir: stick, since: None }, &mut Silent)
            .expect("create");
        files.push(r.file.expect("bundle"));
        std::fs::remove_file(&journal).expect("rm journal");
    }
    relay_node.save_trust(&trust).expect("save trust");
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).expect("meta").len()).sum();
    let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    eprintln!("{} bundles, {} bytes ({:.1} MiB)", files.len(), bytes, bytes as f64 / 1048576.0);

    // cat | sha256sum over the same files (page cache warm for both).
    let cat_cmd = format!("cat {} | sha256sum > /dev/null", list.join(" "));
    let mut cat = Vec::new();
    let mut relay_times = Vec::new();
    let mut hwm10 = 0;
    for run in 0..RUNS {
        let t = Instant::now();
        let s = Command::new("sh").arg("-c").arg(&cat_cmd).status().expect("sh");
        assert!(s.success());
        cat.push(t.elapsed());
        let (secs, hwm, written) = child(root, &relay_home, &files, run);
        assert_eq!(written, BUNDLES as u64);
        relay_times.push(Duration::from_secs_f64(secs));
        hwm10 = hwm10.max(hwm);
    }
    let (_, hwm1, _) = child(root, &relay_home, &files[..1], RUNS);
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let mibs = |d: Duration| bytes as f64 / 1048576.0 / d.as_secs_f64();
    let (c, r) = (best(&cat), best(&relay_times));
    let what = if encrypt { "encrypted to a node whose key the relay lacks" } else { "plain" };
    println!("relay benchmark: {BUNDLES} bundles x {ENTRIES} entries ({what}), {bytes} bytes, best of {RUNS}");
    println!("  cat | sha256sum   {:>8.1} ms  {:>8.1} MiB/s", c.as_secs_f64() * 1e3, mibs(c));
    println!("  ferry relay       {:>8.1} ms  {:>8.1} MiB/s", r.as_secs_f64() * 1e3, mibs(r));
    println!("  relay / baseline  {:>8.0} %   (target >= 50 %)", 100.0 * mibs(r) / mibs(c));
    println!("  relay VmHWM       {hwm1} KiB for 1 bundle, {hwm10} KiB for {BUNDLES} bundles");
}

/// Relays `files` with a fresh copy of the relay home, in a child process.
fn child(root: &Path, relay_home: &Path, files: &[PathBuf], run: usize) -> (f64, u64, u64) {
    let home = root.join(format!("relay-run-{run}-{}", files.len()));
    std::fs::create_dir_all(&home).expect("mkdir");
    for name in ["node.json", "secret.key", "trust.json"] {
        std::fs::copy(relay_home.join(name), home.join(name)).expect("copy home");
    }
    let out = root.join(format!("out-{run}-{}", files.len()));
    let from: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let o = Command::new(std::env::current_exe().expect("exe"))
        .env("RELAY_BENCH_HOME", &home)
        .env("RELAY_BENCH_FROM", from.join(","))
        .env("RELAY_BENCH_OUT", &out)
        .output()
        .expect("child");
    assert!(o.status.success(), "child failed: {}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let mut it = text.split_whitespace();
    let secs = it.next().and_then(|s| s.parse().ok()).expect("secs");
    let hwm = it.next().and_then(|s| s.parse().ok()).expect("hwm");
    let written = it.next().and_then(|s| s.parse().ok()).expect("written");
    std::fs::remove_dir_all(&out).ok();
    (secs, hwm, written)
}

/// Peak resident memory of this process (Linux), in KiB; 0 elsewhere.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A journal of `n` household-survey-like entries with varied values.
fn write_journal(path: &Path, origin: u64, n: u64) {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).expect("journal"));
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ origin;
    let base = Timestamp::parse("2026-01-01T00:00:00.000000Z").expect("ts").0;
    for seq in 1..=n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let ts = Timestamp(base + (seq as i64) * 1_000_003 + origin as i64);
        let (op, table) = match x % 10 {
            0..=5 => ("insert", "household"),
            6..=8 => ("update", "household"),
            _ => ("insert", "member"),
        };
        writeln!(
            w,
            "{{\"seq\":{seq},\"ts\":\"{}\",\"op\":\"{op}\",\"table\":\"{table}\",\"pk\":{{\"id\":{}}},\"fields\":{{\"name\":\"hh-{:08x}\",\"members\":{},\"lat\":{:.6},\"note\":\"{:016x}{:016x}\"}}}}",
            ts.to_rfc3339(),
            (origin << 32) + seq,
            x >> 32,
            x % 12,
            -1.0 + (x % 100000) as f64 / 1e5,
            x.rotate_left(17),
            x.rotate_left(41) ^ seq
        )
        .expect("write");
    }
    w.flush().expect("flush");
}
