//! `cargo bench --bench bundle [-- --entries N] [--shape synthetic|django]`:
//! `bundle create` and `bundle verify` against the standard tools on the same
//! bytes, in the same run, plus peak memory at N/10 and N entries (it must
//! not grow). Two journal shapes: `synthetic` (`ferry::synth::Synth`, the
//! issue 2 benchmark) and `django` (`ferry::synth::DjangoSynth`: UUID text
//! keys, datetimes, decimals, free-text notes); both by default.
//! `FERRY_BENCH_KEEP=1` keeps the journals and bundles (the folder is printed).
//!
//! Targets (issue 15): create ≥ 75% of `zstd -3 -T1` throughput on both
//! shapes, verify ≥ 80% of `zstd -d | openssl dgst -sha256`, peak RSS
//! < 64 MB and flat. Issue 14: `bundle create --encrypt-to` ≥ 85% of plain
//! `bundle create`, timed in turns with it in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Run {
    secs: f64,
    peak_kb: Option<u64>,
}

/// Runs `cmd` (through `sh -c` when `shell`) under `/usr/bin/time` for peak
/// RSS; best wall time of `reps` runs.
fn measure(program: &str, args: &[&str], reps: usize) -> Run {
    let mut best = Run { secs: f64::MAX, peak_kb: None };
    for _ in 0..reps {
        let rss = tempfile::NamedTempFile::new().expect("tmp");
        let have_time = Path::new("/usr/bin/time").exists();
        let mut c = if have_time {
            let mut c = Command::new("/usr/bin/time");
            c.arg("-f").arg("%M").arg("-o").arg(rss.path()).arg(program);
            c
        } else {
            Command::new(program)
        };
        c.args(args);
        let t = Instant::now();
        let out = c.output().expect("run benchmark command");
        let secs = t.elapsed().as_secs_f64();
        assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        let peak_kb = std::fs::read_to_string(rss.path()).ok().and_then(|s| s.trim().lines().last()?.parse().ok());
        if secs < best.secs {
            best = Run { secs, peak_kb: peak_kb.or(best.peak_kb) };
        }
    }
    best
}

fn mb(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

struct Sizes {
    journal: PathBuf,
    journal_bytes: u64,
    bundle: PathBuf,
    create: Run,
    verify: Run,
    /// The same bundle encrypted to the node itself (issue 14), timed in
    /// turns with the plain runs.
    sealed_create: Run,
    sealed_verify: Run,
}

/// The best of `reps` runs of each of two commands, taken in turns (so that
/// a busy machine slows both alike).
fn measure_pair(a: (&str, &[&str]), b: (&str, &[&str]), reps: usize) -> (Run, Run) {
    let (mut ra, mut rb) = (Run { secs: f64::MAX, peak_kb: None }, Run { secs: f64::MAX, peak_kb: None });
    for _ in 0..reps {
        let x = measure(a.0, a.1, 1);
        if x.secs < ra.secs {
            ra = x;
        }
        let y = measure(b.0, b.1, 1);
        if y.secs < rb.secs {
            rb = y;
        }
    }
    (ra, rb)
}

fn create_and_verify(dir: &Path, shape: &str, entries: u64, reps: usize) -> Sizes {
    let home = dir.join(format!("home-{shape}-{entries}"));
    ferry::node::Node::init(&home, "bench", Some(1)).expect("node");
    let journal = dir.join(format!("journal-{shape}-{entries}.jsonl"));
    let journal_bytes = match shape {
        "django" => ferry::synth::write_django_journal(&journal, 42, entries),
        _ => ferry::synth::write_journal(&journal, 42, 0, entries),
    }
    .expect("journal");
    let out = dir.join(format!("out-{shape}-{entries}"));
    let h = home.to_str().expect("utf8");
    let (j, o) = (journal.to_str().expect("utf8"), out.to_str().expect("utf8"));
    let sealed_out = dir.join(format!("sealed-{shape}-{entries}"));
    let so = sealed_out.to_str().expect("utf8");
    let plain_args = ["--home", h, "--quiet", "bundle", "create", "--since", "1", "--journal", j, "--out", o];
    let sealed_args = [
        "--home",
        h,
        "--quiet",
        "bundle",
        "create",
        "--since",
        "1",
        "--journal",
        j,
        "--out",
        so,
        "--encrypt-to",
        "bench",
    ];
    let (create, sealed_create) = measure_pair((ferry_bin(), &plain_args), (ferry_bin(), &sealed_args), reps);
    let bundle = ferry::bundle::find_bundles(&[out]).expect("find").into_iter().next().expect("a bundle");
    let sealed = ferry::bundle::find_bundles(&[sealed_out]).expect("find").into_iter().next().expect("a bundle");
    let (b, sb) = (bundle.to_str().expect("utf8"), sealed.to_str().expect("utf8"));
    let (verify, sealed_verify) = measure_pair(
        (ferry_bin(), &["--home", h, "--quiet", "bundle", "verify", b]),
        (ferry_bin(), &["--home", h, "--quiet", "bundle", "verify", sb]),
        reps,
    );
    Sizes { journal, journal_bytes, bundle, create, verify, sealed_create, sealed_verify }
}

fn main() {
    let mut entries: u64 = 1_000_000;
    let mut shapes = vec!["synthetic", "django"];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--entries" {
            entries = args.next().and_then(|v| v.parse().ok()).expect("--entries N");
        } else if a == "--shape" {
            let s = args.next().expect("--shape synthetic|django");
            shapes.retain(|x| *x == s);
            assert!(!shapes.is_empty(), "--shape synthetic|django");
        }
    }
    let reps = 3;
    let dir = tempfile::tempdir().expect("tmp");
    for shape in shapes {
        run_shape(dir.path(), shape, entries, reps);
    }
    if std::env::var_os("FERRY_BENCH_KEEP").is_some() {
        println!("kept: {}", dir.keep().display());
    }
}

fn run_shape(dir: &Path, shape: &str, entries: u64, reps: usize) {
    let small = (shape == "synthetic").then(|| create_and_verify(dir, shape, entries / 10, reps));
    let big = create_and_verify(dir, shape, entries, reps);

    let j = big.journal.to_str().expect("utf8");
    let zstd = measure("sh", &["-c", &format!("zstd -3 -T1 -q -c '{j}' > /dev/null")], reps);
    // The same compressed bytes ferry verifies: the segment member of the bundle.
    let seg = dir.join(format!("segment-{shape}.zst"));
    let member = ferry::bundle::BundleReader::open(&big.bundle).expect("open").descriptors()[0].member_name();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("tar -xOf '{}' '{member}' > '{}'", big.bundle.display(), seg.display()))
        .status()
        .expect("tar");
    assert!(status.success());
    let s = seg.to_str().expect("utf8");
    let unzstd = measure("sh", &["-c", &format!("zstd -d -q -c '{s}' | openssl dgst -sha256 > /dev/null")], reps);

    let bundle_bytes = std::fs::metadata(&big.bundle).expect("meta").len();
    let n = big.journal_bytes;
    println!(
        "ferry bundle benchmark, {shape} journal: {entries} entries, {n} bytes of JSON Lines, bundle {bundle_bytes} bytes (best of {reps})"
    );
    println!("{:<44} {:>8} {:>10} {:>10}", "", "seconds", "MB/s", "peak RSS");
    let row = |name: &str, r: &Run| {
        let rss = r.peak_kb.map_or("n/a".into(), |k| format!("{:.1} MB", k as f64 / 1024.0));
        println!("{name:<44} {:>8.2} {:>10.1} {:>10}", r.secs, mb(n, r.secs), rss);
    };
    row("ferry bundle create", &big.create);
    row("ferry bundle create --encrypt-to (itself)", &big.sealed_create);
    row("zstd -3 -T1 (same JSON Lines)", &zstd);
    row("ferry bundle verify", &big.verify);
    row("ferry bundle verify (encrypted, by its recipient)", &big.sealed_verify);
    row("zstd -d | openssl dgst -sha256 (same bytes)", &unzstd);
    println!(
        "encrypted create throughput = {:.0}% of plain create (target >= 85%)",
        100.0 * big.create.secs / big.sealed_create.secs
    );
    println!("encrypted verify throughput = {:.0}% of plain verify", 100.0 * big.verify.secs / big.sealed_verify.secs);
    println!("create throughput = {:.0}% of zstd -3 -T1 (target >= 75%)", 100.0 * zstd.secs / big.create.secs);
    println!(
        "verify throughput = {:.0}% of zstd -d | openssl sha256 (target >= 80%)",
        100.0 * unzstd.secs / big.verify.secs
    );
    let kb = |r: &Run| r.peak_kb.map_or("n/a".into(), |k| format!("{:.1} MB", k as f64 / 1024.0));
    if let Some(small) = small {
        println!(
            "peak RSS create: {} at {} entries, {} at {entries} (target < 64 MB, flat)",
            kb(&small.create),
            entries / 10,
            kb(&big.create)
        );
        println!(
            "peak RSS verify: {} at {} entries, {} at {entries}",
            kb(&small.verify),
            entries / 10,
            kb(&big.verify)
        );
    }
    println!();
}
