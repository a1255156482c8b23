//! Helpers shared by the integration tests: run the real `ferry` binary
//! against throwaway node homes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// `ferry --home HOME …`, with no inherited FERRY_HOME or CI quirks.
pub fn ferry(home: &Path) -> Command {
    let mut c = Command::cargo_bin("ferry").expect("ferry binary");
    c.env_remove("FERRY_HOME").arg("--home").arg(home);
    c
}

/// Creates a node home `dir/name` and returns its path.
pub fn init_node(dir: &Path, name: &str, id_block: Option<u32>) -> PathBuf {
    let home = dir.join(name);
    let mut c = ferry(&home);
    c.args(["node", "init", "--name", name]);
    if let Some(b) = id_block {
        c.args(["--id-block", &b.to_string()]);
    }
    c.assert().success();
    home
}

/// The public key line of a node (`ferry-ed25519:…`).
pub fn public_key(home: &Path) -> String {
    let out = ferry(home).args(["key", "export", "--json"]).output().expect("run");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["key"].as_str().expect("key").to_owned()
}

/// The node id of a node.
pub fn node_id(home: &Path) -> String {
    let out = ferry(home).args(["node", "show", "--json"]).output().expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["id"].as_str().expect("id").to_owned()
}

/// Makes `truster` trust `trusted` under `name` with `roles` ("origin", "relay").
pub fn trust(truster: &Path, trusted: &Path, name: &str, roles: &[&str]) {
    let key = public_key(trusted);
    let mut c = ferry(truster);
    c.args(["trust", "add", name, &key]);
    for r in roles {
        c.args(["--role", r]);
    }
    c.assert().success();
}

/// Writes a JSON Lines journal of `n` simple entries (seq 1..=n) for table `t`.
pub fn simple_journal(path: &Path, n: u64) {
    let mut s = String::new();
    for seq in 1..=n {
        s.push_str(&format!(
            "{{\"seq\":{seq},\"ts\":\"2026-01-01T00:00:{:02}.{:06}Z\",\"op\":\"insert\",\"table\":\"t\",\"pk\":{{\"id\":{seq}}},\"fields\":{{\"v\":\"row {seq}\"}}}}\n",
            seq % 60,
            seq
        ));
    }
    std::fs::write(path, s).expect("write journal");
}

/// `ferry bundle create --journal J --out OUT --json` for `home`; returns the bundle path.
pub fn create_bundle(home: &Path, journal: &Path, out: &Path) -> Option<PathBuf> {
    create_bundle_from(home, "--journal", journal, out)
}

/// `ferry bundle create --db DB --out OUT --json` for `home`; returns the bundle path.
pub fn create_bundle_db(home: &Path, db: &Path, out: &Path) -> Option<PathBuf> {
    create_bundle_from(home, "--db", db, out)
}

fn create_bundle_from(home: &Path, source_flag: &str, source: &Path, out: &Path) -> Option<PathBuf> {
    let o = ferry(home)
        .args(["bundle", "create", "--json", source_flag])
        .arg(source)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run");
    assert!(o.status.success(), "create failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    v["file"].as_str().map(PathBuf::from)
}
