//! Helpers for the relay tests: a field of nodes, sticks, relay runs, and
//! output sets compared by segment content.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::*;

/// Runs `ferry bundle relay --json` and returns (exit code, report).
pub fn relay(home: &Path, from: &[&Path], out: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut c = ferry(home);
    c.args(["bundle", "relay", "--json", "--from"]).args(from).arg("--out").arg(out).args(extra);
    let o = c.output().expect("run relay");
    let code = o.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "relay failed ({code}): {}", String::from_utf8_lossy(&o.stderr));
    (code, serde_json::from_slice(&o.stdout).expect("relay json"))
}

pub fn count(report: &serde_json::Value, name: &str) -> u64 {
    report["counts"][name].as_u64().unwrap_or_else(|| panic!("no count {name} in {report}"))
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// A journal of `n` entries whose values for seqs >= `diverge_at` carry
/// `tag` (so two journals share a prefix and then differ, like a clone).
pub fn journal_with(path: &Path, n: u64, diverge_at: u64, tag: &str) {
    let mut s = String::new();
    for seq in 1..=n {
        let v = if seq >= diverge_at { format!("row {seq} {tag}") } else { format!("row {seq}") };
        s.push_str(&format!(
            "{{\"seq\":{seq},\"ts\":\"2026-01-01T00:{:02}:{:02}.000000Z\",\"op\":\"insert\",\"table\":\"t\",\"pk\":{{\"id\":{seq}}},\"fields\":{{\"v\":\"{v}\"}}}}\n",
            (seq / 60) % 60,
            seq % 60
        ));
    }
    std::fs::write(path, s).expect("write journal");
}

/// A journal of `n` entries with poorly compressible values (`width` hex
/// characters each), for size tests.
pub fn noisy_journal(path: &Path, n: u64, width: usize, seed: u64) {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut s = String::new();
    for seq in 1..=n {
        let mut v = String::with_capacity(width);
        while v.len() < width {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            v.push_str(&format!("{:016x}", x));
        }
        v.truncate(width);
        s.push_str(&format!(
            "{{\"seq\":{seq},\"ts\":\"2026-01-0{}T00:00:{:02}.000000Z\",\"op\":\"insert\",\"table\":\"t\",\"pk\":{{\"id\":{seq}}},\"fields\":{{\"v\":\"{v}\"}}}}\n",
            1 + seed % 9,
            seq % 60
        ));
    }
    std::fs::write(path, s).expect("write journal");
}

/// The `*.tar` files in a folder (not recursive), sorted.
pub fn tars(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("entry").path()).filter(|p| p.extension().is_some_and(|x| x == "tar")).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// One segment as it travels: origin, seq range, chain hash at the end, and
/// the nodes of its hops in order.
pub type SegmentKey = (String, u64, u64, String, Vec<String>);

/// Every segment in the bundles of `dir`, by content (file names and times aside).
pub fn segment_set(dir: &Path) -> BTreeSet<SegmentKey> {
    let mut set = BTreeSet::new();
    for f in tars(dir) {
        let r = ferry::bundle::BundleReader::open(&f).unwrap_or_else(|e| panic!("{} unreadable: {e}", f.display()));
        for (rec, d) in r.manifest().segments.iter().zip(r.descriptors()) {
            let hops = rec.hops.iter().map(|h| h.node.to_string()).collect();
            assert!(
                set.insert((d.origin.to_string(), d.first_seq, d.last_seq, d.chain_after.clone(), hops)),
                "segment {} twice in {}",
                d.member_name(),
                dir.display()
            );
        }
    }
    set
}

/// Flips one byte inside the first segment's compressed bytes.
pub fn tamper_segment(bundle: &Path) {
    let mut bytes = std::fs::read(bundle).expect("read");
    let r = ferry::bundle::BundleReader::open(bundle).expect("open");
    let name = r.descriptors()[0].member_name();
    let at = bytes.windows(name.len()).position(|w| w == name.as_bytes()).expect("member header");
    let data = at + 512 + 20;
    bytes[data] ^= 0x55;
    std::fs::write(bundle, bytes).expect("write");
}

/// A little world: two field laptops, a middleman, a community server and a
/// central server, trusting each other the way the deployment does.
pub struct World {
    pub dir: tempfile::TempDir,
    pub field1: PathBuf,
    pub field2: PathBuf,
    pub middleman: PathBuf,
    pub community: PathBuf,
    pub central: PathBuf,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let field1 = init_node(dir.path(), "field-1", Some(1));
        let field2 = init_node(dir.path(), "field-2", Some(2));
        let middleman = init_node(dir.path(), "middleman", None);
        let community = init_node(dir.path(), "community", None);
        let central = init_node(dir.path(), "central", None);
        for receiver in [&middleman, &community, &central] {
            trust(receiver, &field1, "field-1", &["origin"]);
            trust(receiver, &field2, "field-2", &["origin"]);
        }
        trust(&community, &middleman, "middleman", &["relay"]);
        trust(&central, &middleman, "middleman", &["relay"]);
        trust(&central, &community, "community", &["relay"]);
        World { dir, field1, field2, middleman, community, central }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        p
    }

    /// Writes a simple journal of `n` entries for `home` and bundles it into `out`.
    pub fn bundle(&self, home: &Path, n: u64, out: &Path) -> PathBuf {
        let j = self.path(&format!("journals/{}-{n}.jsonl", home.file_name().expect("name").to_string_lossy()));
        journal_with(&j, n, u64::MAX, "");
        create_bundle(home, &j, out).expect("a bundle")
    }
}
