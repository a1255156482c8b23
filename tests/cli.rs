//! The command line as a user meets it: node identity, keys, trust, create,
//! verify, inspect, exit codes and error messages.

mod common;

use common::*;
use predicates::prelude::*;

#[test]
fn node_init_show_and_key_export() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = init_node(dir.path(), "field-1", Some(7));
    let out = ferry(&home).args(["node", "show", "--json"]).output().expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["name"], "field-1");
    assert_eq!(v["id_block"], 7);
    assert_eq!(v["id"].as_str().map(str::len), Some(16));
    // The export line is the exact command another node runs, with the
    // roles for the node's kind (a field laptop: origin).
    ferry(&home).args(["key", "export"]).assert().success().stdout(
        predicate::str::is_match(
            r"^ferry trust add field-1 ferry-ed25519:[A-Za-z0-9_-]{43} age1[0-9a-z]{58} --role origin\n$",
        )
        .expect("re"),
    );
}

#[test]
fn node_kinds_decide_blocks_and_exported_roles() {
    let dir = tempfile::tempdir().expect("tmp");
    let init = |name: &str, args: &[&str]| {
        let mut c = ferry(&dir.path().join(name));
        c.args(["node", "init", "--name", name]).args(args);
        c.assert()
    };
    init("f", &["--kind", "field"]).code(2).stderr(predicate::str::contains("needs its own id block"));
    init("f", &["--kind", "field", "--id-block", "1200"]).code(2).stderr(predicate::str::contains("1 to 999"));
    init("s", &["--kind", "server", "--id-block", "3"]).code(2).stderr(predicate::str::contains("from 1000"));
    init("r", &["--kind", "relay", "--id-block", "3"]).code(2).stderr(predicate::str::contains("leave out --id-block"));
    let export = |name: &str| {
        let o = ferry(&dir.path().join(name)).args(["key", "export"]).output().expect("run");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    init("clinic", &["--kind", "server", "--id-block", "1000"]).success();
    assert!(export("clinic").ends_with("--role origin --role relay\n"), "{}", export("clinic"));
    init("driver", &["--kind", "relay"]).success();
    assert!(export("driver").ends_with("--role relay\n"), "{}", export("driver"));
}

#[test]
fn trust_add_again_changes_roles_and_a_wrong_role_refusal_names_the_fix() {
    let dir = tempfile::tempdir().expect("tmp");
    let central = init_node(dir.path(), "central", None);
    let clinic = init_node(dir.path(), "clinic", Some(1000));
    let key = public_key(&clinic);
    ferry(&central).args(["trust", "add", "clinic", &key, "--role", "relay"]).assert().success();
    ferry(&central)
        .args(["trust", "add", "clinic", &key, "--role", "origin", "--role", "relay"])
        .assert()
        .success()
        .stderr(predicate::str::contains("now trusted as origin and relay (was relay)"));
    let other = init_node(dir.path(), "other", None);
    ferry(&central)
        .args(["trust", "add", "clinic", &public_key(&other)])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already used for another key"));
    // A refusal for a wrong role prints the command that changes it.
    let mut t = ferry::keys::TrustStore::default();
    let k = ferry::keys::parse_public_key(&key).expect("key");
    t.add("clinic", &k, &[ferry::keys::Role::Relay]).expect("add");
    let e = t.signer(&ferry::keys::NodeId::of(&k), ferry::keys::Role::Origin).expect_err("wrong role").to_string();
    assert!(e.contains(&format!("ferry trust add clinic {key} --role origin --role relay")), "{e}");
}

#[test]
fn node_init_never_overwrites_an_identity() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = init_node(dir.path(), "n", None);
    let before = std::fs::read(home.join("secret.key")).expect("secret");
    ferry(&home)
        .args(["node", "init", "--name", "other"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("refusing"));
    assert_eq!(std::fs::read(home.join("secret.key")).expect("secret"), before);
}

#[test]
fn ferry_home_env_selects_the_node() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = init_node(dir.path(), "via-env", None);
    let mut c = assert_cmd::Command::cargo_bin("ferry").expect("bin");
    c.env("FERRY_HOME", &home).args(["node", "show"]).assert().success().stdout(predicate::str::contains("via-env"));
}

#[test]
fn missing_node_gets_a_hint() {
    let dir = tempfile::tempdir().expect("tmp");
    ferry(&dir.path().join("none"))
        .args(["node", "show"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("ferry node init"));
}

#[test]
fn trust_add_list_revoke() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", None);
    let b = init_node(dir.path(), "b", None);
    trust(&a, &b, "b", &["origin", "relay"]);
    let out = ferry(&a).args(["trust", "list", "--json"]).output().expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = v.as_array().expect("array").iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(names, ["a", "b"], "a node trusts itself, then b");
    assert_eq!(v[1]["roles"], serde_json::json!(["origin", "relay"]));
    ferry(&a).args(["trust", "revoke", "b"]).assert().success();
    ferry(&a).args(["trust", "list"]).assert().success().stdout(predicate::str::contains("revoked"));
    ferry(&a).args(["trust", "revoke", "nobody"]).assert().code(2);
}

#[test]
fn trust_refuses_weak_and_malformed_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", None);
    // The identity point (small order): y = 1.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    use base64::Engine as _;
    let weak = format!("ferry-ed25519:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(weak));
    ferry(&a).args(["trust", "add", "evil", &weak]).assert().code(2).stderr(predicate::str::contains("weak"));
    ferry(&a)
        .args(["trust", "add", "junk", "ferry-ed25519:nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a ferry public key"));
}

#[test]
fn create_verify_inspect_round_trip_and_nothing_new() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", Some(1));
    let c = init_node(dir.path(), "c", None);
    trust(&c, &a, "a", &["origin"]);
    let journal = dir.path().join("j.jsonl");
    simple_journal(&journal, 25);
    let out = dir.path().join("usb");
    let bundle = create_bundle(&a, &journal, &out).expect("a bundle");
    let name = bundle.file_name().expect("name").to_string_lossy().into_owned();
    assert!(name.starts_with("ferry-") && name.ends_with(".tar") && name == name.to_lowercase(), "{name}");
    assert!(create_bundle(&a, &journal, &out).is_none(), "nothing new means no file");
    ferry(&a)
        .args(["bundle", "create", "--journal"])
        .arg(&journal)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("nothing new"));
    // Appending continues where the last bundle stopped.
    simple_journal(&journal, 30);
    let more = ferry(&a)
        .args(["bundle", "create", "--json", "--journal"])
        .arg(&journal)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&more.stdout).expect("json");
    assert_eq!((v["first_seq"].as_u64(), v["last_seq"].as_u64(), v["entries"].as_u64()), (Some(26), Some(30), Some(5)));
    assert!(v["bytes_in"].as_u64() > Some(0) && v["bytes_out"].as_u64() > Some(0));

    ferry(&c).args(["bundle", "verify"]).arg(&out).assert().success().stdout(predicate::str::contains("ok"));
    let out_json = ferry(&c).args(["bundle", "inspect", "--json"]).arg(&bundle).output().expect("run");
    let i: serde_json::Value = serde_json::from_slice(&out_json.stdout).expect("json");
    assert_eq!(i["segments"][0]["origin"]["name"], "a");
    assert_eq!(i["segments"][0]["first_seq"], 1);
    assert_eq!(i["segments"][0]["last_seq"], 25);
    assert_eq!(i["tables"]["t"]["insert"], 25);
    // The untrusting node (b knows nobody) gets exit 1, the reason in plain
    // words (no "sealer") and the commands that fix it.
    let b = init_node(dir.path(), "b", None);
    ferry(&b)
        .args(["bundle", "verify"])
        .arg(&bundle)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("the bundle's seal: unknown signer"))
        .stdout(predicate::str::contains("`ferry trust add NAME KEY` here"))
        .stdout(predicate::str::contains("sealer").not());
}

#[test]
fn since_sends_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", None);
    let journal = dir.path().join("j.jsonl");
    simple_journal(&journal, 10);
    let out = dir.path().join("o");
    create_bundle(&a, &journal, &out).expect("first");
    let o = ferry(&a)
        .args(["bundle", "create", "--json", "--since", "4", "--journal"])
        .arg(&journal)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!((v["first_seq"].as_u64(), v["last_seq"].as_u64()), (Some(4), Some(10)));
}

#[test]
fn malformed_journal_names_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", None);
    let jdir = dir.path().join("journal");
    std::fs::create_dir_all(&jdir).expect("mkdir");
    let journal = jdir.join("day1.jsonl");
    simple_journal(&journal, 3);
    let mut text = std::fs::read_to_string(&journal).expect("read");
    text.push_str(
        "{\"seq\":4,\"ts\":\"yesterday\",\"op\":\"insert\",\"table\":\"t\",\"pk\":{\"id\":4},\"fields\":{}}\n",
    );
    std::fs::write(&journal, text).expect("write");
    let out = dir.path().join("o");
    ferry(&a)
        .args(["bundle", "create", "--journal"])
        .arg(&jdir)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("day1.jsonl:4").and(predicate::str::contains("RFC 3339")));
    let leftovers: Vec<_> = std::fs::read_dir(&out).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "a failed create left {leftovers:?}");
}

#[test]
fn gaps_between_journal_files_are_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", None);
    let jdir = dir.path().join("journal");
    std::fs::create_dir_all(jdir.join("nested")).expect("mkdir");
    simple_journal(&jdir.join("a.jsonl"), 3);
    std::fs::write(
        jdir.join("nested").join("b.jsonl"),
        "{\"seq\":5,\"ts\":\"2026-01-01T00:00:00.000000Z\",\"op\":\"delete\",\"table\":\"t\",\"pk\":{\"id\":1}}\n",
    )
    .expect("write");
    ferry(&a)
        .args(["bundle", "create", "--journal"])
        .arg(&jdir)
        .arg("--out")
        .arg(dir.path().join("o"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("expected seq 4, found 5").and(predicate::str::contains("b.jsonl:1")));
}

#[test]
fn legacy_journal_from_the_seed_parses_and_numbers_stably() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", None);
    let legacy = dir.path().join("legacy.txt");
    // The seed's own sample line, verbatim, plus an edit and a delete.
    let sample = "['2010-12-1 12:14:00','new','Blog','blog_blog',{title:'Fahhem\\'s Blog',description:'Misc.',date_created:'2010-12-1 12:14:00'}]";
    std::fs::write(
        &legacy,
        format!(
            "00:1a:2b:3c:4d:5e\n{{\n{sample}\n['2010-12-1 12:20:00','edit','Blog','blog_blog',{{id:1,title:'New'}}]\n"
        ),
    )
    .expect("write");
    let out = dir.path().join("o");
    let first = create_bundle(&a, &legacy, &out).expect("bundle");
    let entries = ferry(&a).args(["bundle", "inspect", "--entries"]).arg(&first).output().expect("run");
    let text = String::from_utf8(entries.stdout).expect("utf8");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["fields"]["title"], "Fahhem's Blog");
    assert_eq!(lines[1]["op"], "update");
    // Appending a line: earlier seqs stay, the new line gets the next seq.
    let mut t = std::fs::read_to_string(&legacy).expect("read");
    t.push_str("['2010-12-1 12:30:00','delete','Blog','blog_blog',{id:1}]\n}\n");
    std::fs::write(&legacy, t).expect("write");
    let o = ferry(&a)
        .args(["bundle", "create", "--json", "--journal"])
        .arg(&legacy)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!((v["first_seq"].as_u64(), v["last_seq"].as_u64()), (Some(3), Some(3)));
}

#[test]
fn malformed_legacy_line_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", None);
    let legacy = dir.path().join("legacy.txt");
    std::fs::write(&legacy, "00:1a:2b:3c:4d:5e\n{\n['2010-12-1 12:14:00','frobnicate','B','b',{}]\n}\n")
        .expect("write");
    ferry(&a)
        .args(["bundle", "create", "--journal"])
        .arg(&legacy)
        .arg("--out")
        .arg(dir.path().join("o"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("legacy.txt:3").and(predicate::str::contains("unknown action")));
}

#[test]
fn hostile_inputs_never_panic() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", None);
    let cases: &[&[u8]] = &[
        b"",
        b"\n\n",
        b"{",
        b"{}\n",
        b"\xff\xfe\x00garbage",
        b"{\"seq\":18446744073709551615,\"ts\":\"2026-01-01T00:00:00.000000Z\",\"op\":\"delete\",\"table\":\"t\",\"pk\":{\"id\":1}}\n",
        b"{\"seq\":1,\"ts\":\"9999-99-99T99:99:99.999999Z\",\"op\":\"delete\",\"table\":\"t\",\"pk\":{\"id\":1}}\n",
        b"{\"seq\":1,\"ts\":\"2026-01-01T00:00:00.000000Z\",\"op\":\"insert\",\"table\":\"t\",\"pk\":{\"id\":1e999},\"fields\":{}}\n",
        b"00:11:22:33:44:55\n{\n[1,2,3,4,5,6,7]\n",
        b"00:11:22:33:44:55\n{\n['x','new','a','b',{}]\n",
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let j = dir.path().join(format!("case{i}.jsonl"));
        std::fs::write(&j, bytes).expect("write");
        let o = ferry(&a)
            .args(["bundle", "create", "--journal"])
            .arg(&j)
            .arg("--out")
            .arg(dir.path().join("o"))
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "case {i} panicked: {err}");
        assert!(o.status.code() == Some(2) || o.status.success(), "case {i}: {:?} {err}", o.status);
    }
    for (i, bytes) in cases.iter().enumerate() {
        let f = dir.path().join(format!("case{i}.tar"));
        std::fs::write(&f, bytes).expect("write");
        let o = ferry(&a).args(["bundle", "verify"]).arg(&f).output().expect("run");
        assert_eq!(o.status.code(), Some(1), "verify case {i}");
        let o = ferry(&a).args(["bundle", "inspect"]).arg(&f).output().expect("run");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"), "inspect case {i}");
        assert_eq!(o.status.code(), Some(2), "inspect case {i}");
    }
}

/// A reader that stops early (`ferry … --json | head`) ends ferry quietly
/// with success, for JSON output as for text: no "Broken pipe" error.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_json_output_quietly() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = init_node(dir.path(), "field-1", Some(1));
    let bin = assert_cmd::cargo::cargo_bin("ferry");
    for args in ["node show --json", "node show"] {
        // `head -c 0` exits without reading; ferry writes only after it has.
        let script = format!(
            "(sleep 0.3; '{}' --home '{}' {args}; echo \"exit=$?\" >&2) | head -c 0",
            bin.display(),
            home.display()
        );
        let o = std::process::Command::new("sh").args(["-c", &script]).output().expect("sh");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("exit=0") && !err.contains("Broken pipe"), "{args}: {err}");
    }
}
