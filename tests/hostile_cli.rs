//! Hostile input and plain mistakes at the command line (issue 15): what a
//! stick, a typo or a killed run can do to `relay`, `verify`, `inspect`,
//! `apply`, `create` and `trust`, and the messages people get.

mod common;
mod relay_common;

use std::path::Path;

use common::*;
use relay_common::*;

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_revoked_origin_costs_only_its_own_segments() {
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 3, &stick);
    w.bundle(&w.field2, 4, &stick);
    // The middleman carries both origins in one bundle.
    let to_town = w.path("to-town");
    let (code, _) = relay(&w.middleman, &[&stick], &to_town, &[]);
    assert_eq!(code, 0);
    assert_eq!(tars(&to_town).len(), 1, "one bundle holds both origins");
    // The community server has revoked field-2 (a stolen laptop).
    ferry(&w.community).args(["trust", "revoke", "field-2"]).assert().success();
    let o = ferry(&w.community).args(["bundle", "verify"]).arg(&to_town).output().expect("verify");
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("revoked signer field-2"), "{text}");
    let out = w.path("out");
    let (code, r) = relay(&w.community, &[&to_town], &out, &[]);
    assert_eq!(code, 1, "a refused segment is a negative verdict: {r}");
    assert_eq!(count(&r, "segments_refused"), 1);
    assert_eq!(count(&r, "rejected"), 0, "the bundle itself is sound");
    assert_eq!(count(&r, "segments_written"), 1, "field-1's entries go on: {r}");
    assert_eq!(r["refused_segments"][0]["segment"].as_str().map(|s| s.starts_with(&node_id(&w.field2))), Some(true));
    assert!(r["refused_segments"][0]["quarantined"].is_string(), "{r}");
    let set = segment_set(&out);
    assert_eq!(set.iter().map(|s| s.0.clone()).collect::<Vec<_>>(), vec![node_id(&w.field1)]);
}

#[test]
fn a_huge_sparse_file_named_like_a_bundle_is_not_copied_whole() {
    let w = World::new();
    let stick = w.path("stick");
    let fake = stick.join("ferry-20260101-000000000000.tar");
    std::fs::create_dir_all(&stick).expect("mkdir");
    let f = std::fs::File::create(&fake).expect("create");
    f.set_len(4 << 30).expect("sparse 4 GiB");
    let out = w.path("out");
    let (code, r) = relay(&w.middleman, &[&stick], &out, &["--move"]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(count(&r, "rejected"), 1);
    assert_eq!(r["rejected"][0]["whole"], false, "{r}");
    let q = Path::new(r["rejected"][0]["quarantined"].as_str().expect("quarantined"));
    let kept = std::fs::metadata(q).expect("copy").len();
    assert!(kept <= 2 << 20, "quarantine kept {kept} bytes");
    let reason = std::fs::read_to_string(format!("{}.reason.txt", q.display())).expect("reason");
    assert!(reason.contains("only the first"), "{reason}");
    assert!(fake.exists(), "a file copied only in part is never removed by --move");
}

#[test]
fn a_users_own_tar_starting_with_manifest_json_is_left_alone() {
    let w = World::new();
    let stick = w.path("stick");
    std::fs::create_dir_all(&stick).expect("mkdir");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    let text = b"{\"name\": \"my web app\", \"icons\": []}";
    h.set_size(text.len() as u64);
    h.set_cksum();
    b.append_data(&mut h, "manifest.json", &text[..]).expect("tar");
    let own = stick.join("webapp-backup.tar");
    std::fs::write(&own, b.into_inner().expect("tar")).expect("write");
    let (code, r) = relay(&w.middleman, &[&stick], &w.path("out"), &["--move"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(count(&r, "foreign"), 1);
    assert_eq!(count(&r, "rejected"), 0);
    assert!(own.exists(), "someone's own archive was removed");
}

/// Gives `path` and everything under it to user and group 65534 (nobody).
#[cfg(unix)]
fn give_to_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown");
    if path.is_dir() {
        for e in std::fs::read_dir(path).expect("read_dir") {
            give_to_nobody(&e.expect("entry").path());
        }
    }
}

#[cfg(unix)]
#[test]
fn one_unreadable_folder_does_not_block_the_stick() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 3, &stick);
    let locked = stick.join("lost+found");
    std::fs::create_dir_all(&locked).expect("mkdir");
    std::fs::write(locked.join("ferry-20260101-000000000000.tar"), "hidden").expect("write");
    let out = w.path("out");
    let mut cmd = ferry(&w.middleman);
    // Permissions do not stop root: run the relay as nobody then.
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    if root {
        std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        give_to_nobody(w.dir.path());
        cmd = std::process::Command::new("setpriv").into();
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(assert_cmd::cargo::cargo_bin("ferry"))
            .env_remove("FERRY_HOME")
            .arg("--home")
            .arg(&w.middleman);
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let o =
        cmd.args(["bundle", "relay", "--json", "--from"]).arg(&stick).arg("--out").arg(&out).output().expect("relay");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
    assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(count(&r, "segments_written"), 1);
    assert!(r["warnings"].to_string().contains("lost+found"), "{r}");
}

#[test]
fn temp_files_left_by_a_killed_run_are_cleaned_up() {
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 3, &stick);
    let out = w.path("out");
    let quarantine = w.middleman.join("quarantine");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::create_dir_all(&quarantine).expect("mkdir");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(24 * 3600);
    let leftovers = [out.join(".ferry-AbCd12.tmp"), quarantine.join(".ferry-XyZ789.tmp")];
    for p in &leftovers {
        std::fs::write(p, vec![0u8; 1000]).expect("write");
        std::fs::File::options().write(true).open(p).expect("open").set_modified(old).expect("mtime");
    }
    let fresh = out.join(".ferry-busy01.tmp");
    std::fs::write(&fresh, "another relay is writing this").expect("write");
    let (code, r) = relay(&w.middleman, &[&stick], &out, &[]);
    assert_eq!(code, 0, "{r}");
    for p in &leftovers {
        assert!(!p.exists(), "{} was left", p.display());
    }
    assert!(fresh.exists(), "a temp file in use was removed");
}

#[test]
fn two_relays_sharing_a_home_say_so() {
    let w = World::new();
    let stick = w.path("stick");
    w.bundle(&w.field1, 3, &stick);
    let node = ferry::node::Node::open(&w.middleman).expect("open");
    let _held = node.lock("ferry bundle relay").expect("lock");
    let o = ferry(&w.middleman)
        .args(["bundle", "relay", "--from"])
        .arg(&stick)
        .arg("--out")
        .arg(w.path("out"))
        .output()
        .expect("relay");
    assert_eq!(o.status.code(), Some(2));
    let e = stderr_of(&o);
    assert!(e.contains("another ferry bundle relay is using the node home"), "{e}");
}

#[cfg(unix)]
#[test]
fn a_relay_that_fills_its_disk_lists_the_bundles_it_finished() {
    let w = World::new();
    let stick = w.path("stick");
    // field-1's small journal is older (January 1st) than field-2's big one,
    // so it is written first; field-2's does not fit under the file size limit.
    let j1 = w.path("journals/small.jsonl");
    noisy_journal(&j1, 5, 40, 0);
    create_bundle(&w.field1, &j1, &stick).expect("bundle");
    let j2 = w.path("journals/big.jsonl");
    noisy_journal(&j2, 2000, 400, 1);
    create_bundle(&w.field2, &j2, &stick).expect("bundle");
    let out = w.path("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    // RLIMIT_FSIZE as a stand-in for a full disk: writes past 300 KiB fail
    // with "File too large" (the signal that would kill is ignored).
    let ferry_bin = assert_cmd::cargo::cargo_bin("ferry");
    let script = "trap '' XFSZ; ulimit -f 300; exec \"$0\" \"$@\"";
    let o = std::process::Command::new("sh")
        .args(["-c", script])
        .arg(&ferry_bin)
        .arg("--home")
        .arg(&w.middleman)
        .args(["bundle", "relay", "--max-size", "64K", "--from"])
        .arg(&stick)
        .arg("--out")
        .arg(&out)
        .env_remove("FERRY_HOME")
        .output()
        .expect("relay");
    assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let written = tars(&out);
    assert!(!written.is_empty(), "nothing was finished: {}", stderr_of(&o));
    for f in &written {
        assert!(stdout.contains(&f.display().to_string()), "{} not listed in: {stdout}", f.display());
    }
    let e = stderr_of(&o);
    assert!(e.contains("stopped part way") && e.contains("File too large"), "{e}");
    assert_eq!(e.lines().filter(|l| l.starts_with("error:")).count(), 1, "{e}");
}

#[test]
fn missing_paths_exit_2_and_are_named() {
    let w = World::new();
    let missing = w.dir.path().join("no-such-stick");
    let db = w.path("central.sqlite3");
    rusqlite::Connection::open(&db)
        .expect("db")
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .expect("ddl");
    let runs: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["bundle".into(), "verify".into(), missing.clone().into()],
        vec!["bundle".into(), "inspect".into(), missing.clone().into()],
        vec!["bundle".into(), "inspect".into(), "--entries".into(), missing.clone().into()],
        vec!["bundle".into(), "apply".into(), "--db".into(), db.clone().into(), missing.clone().into()],
    ];
    for args in runs {
        let o = ferry(&w.central).args(&args).output().expect("run");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr_of(&o));
        let e = stderr_of(&o);
        assert!(e.contains("no-such-stick"), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{args:?}: one line: {e}");
    }
}

#[test]
fn a_file_given_as_home_or_out_is_named_in_words() {
    let w = World::new();
    let file = w.path("notes.txt");
    std::fs::write(&file, "shopping list").expect("write");
    let o = ferry(&file).args(["node", "show"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_of(&o).contains("is a file, not a folder"), "{}", stderr_of(&o));
    let j = w.path("j.jsonl");
    simple_journal(&j, 2);
    let o =
        ferry(&w.field1).args(["bundle", "create", "--journal"]).arg(&j).arg("--out").arg(&file).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_of(&o).contains("--out") && stderr_of(&o).contains("is a file"), "{}", stderr_of(&o));
    let o =
        ferry(&w.middleman).args(["bundle", "relay", "--from"]).arg(&j).arg("--out").arg(&file).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_of(&o).contains("--out") && stderr_of(&o).contains("is a file"), "{}", stderr_of(&o));
}

#[test]
fn errors_are_one_line_and_verbose_shows_the_chain() {
    let w = World::new();
    let file = w.path("notes.txt");
    std::fs::write(&file, "x").expect("write");
    let j = w.path("j.jsonl");
    simple_journal(&j, 2);
    // A folder under a file cannot be made: the I/O error has a cause chain.
    let out = file.join("sub");
    let o =
        ferry(&w.field1).args(["bundle", "create", "--journal"]).arg(&j).arg("--out").arg(&out).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    let e = stderr_of(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("error: failed to create the folder") && e.contains("sub"), "{e}");
    let o = ferry(&w.field1)
        .args(["--verbose", "bundle", "create", "--journal"])
        .arg(&j)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert!(stderr_of(&o).contains("caused by:"), "{}", stderr_of(&o));
}

#[test]
fn trust_add_refuses_names_with_control_characters() {
    let w = World::new();
    let stranger = init_node(w.dir.path(), "stranger", None);
    let key = public_key(&stranger);
    let o = ferry(&w.central).args(["trust", "add", "evil\u{1b}[2Jname", &key]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_of(&o).contains("control characters"), "{}", stderr_of(&o));
    assert!(!stderr_of(&o).contains('\u{1b}'), "the name is printed escaped");
}

#[test]
fn inspect_entries_checks_each_line_before_printing_it() {
    let w = World::new();
    let j = w.path("j.jsonl");
    std::fs::write(
        &j,
        "{\"seq\":1,\"ts\":\"2026-01-01T00:00:00.000000Z\",\"op\":\"insert\",\"table\":\"t\",\"pk\":{\"id\":1},\"fields\":{\"v\":\"a\u{9b}31m\"}}\n",
    )
    .expect("write");
    let b = create_bundle(&w.field1, &j, &w.path("out")).expect("bundle");
    // Piped: the exact bytes the origin wrote (C1 controls are legal in JSON strings).
    let o = ferry(&w.central).args(["bundle", "inspect", "--entries"]).arg(&b).output().expect("run");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains('\u{9b}'));
    // A segment whose line is not an entry (signed by its origin, unverified
    // here) stops before the line is printed.
    let node = ferry::node::Node::open(&w.field1).expect("open");
    let dir = tempfile::tempdir().expect("tmp");
    let mut seg = ferry::bundle::SegmentBuilder::new(node.id().clone(), ferry::chain::ChainHash::GENESIS, dir.path())
        .expect("builder");
    let entry = ferry::journal::Entry::parse(
        br#"{"seq":1,"ts":"2026-01-01T00:00:00.000000Z","op":"delete","table":"t","pk":{"id":1}}"#,
    )
    .expect("entry");
    seg.push(&entry, b"\x1b[2J\x1b]0;owned\x07 not an entry").expect("push");
    let built = seg.finish(None, node.signing_key()).expect("finish");
    let d = built.descriptor.clone();
    let garbage = ferry::bundle::write_bundle(dir.path(), vec![built.record], &[d], node.signing_key(), |_, out| {
        ferry::bundle::writer::copy_file(&built.file, out)
    })
    .expect("write")
    .path;
    let o = ferry(&w.central).args(["bundle", "inspect", "--entries"]).arg(&garbage).output().expect("run");
    assert!(stderr_of(&o).contains("is not a valid entry"), "{}", stderr_of(&o));
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty(), "an unchecked line was printed: {:?}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn a_time_outside_years_0000_to_9999_is_refused_at_create() {
    let w = World::new();
    let j = w.path("j.jsonl");
    // Valid RFC 3339, but in UTC it is year 10000: no ferry could read the
    // descriptor's ts_max back, so the signed bundle would be a permanent gap.
    std::fs::write(
        &j,
        "{\"seq\":1,\"ts\":\"9999-12-31T23:30:00-01:00\",\"op\":\"delete\",\"table\":\"t\",\"pk\":{\"id\":1}}\n",
    )
    .expect("write");
    let out = w.path("out");
    let o =
        ferry(&w.field1).args(["bundle", "create", "--journal"]).arg(&j).arg("--out").arg(&out).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).contains("j.jsonl:1") && stderr_of(&o).contains("outside years 0000 to 9999"),
        "{}",
        stderr_of(&o)
    );
    assert!(tars(&out).is_empty());
}
