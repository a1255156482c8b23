//! Encrypted bundles (issue 14), through the real binary: encryption keys
//! per node, `bundle create --encrypt-to` and `node encrypt-to`, relays that
//! carry encrypted bundles without any key, servers that decrypt, refusals
//! that name the recipients, and what a finder of the stick can read.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use predicates::prelude::*;

/// Words that must never appear outside ferry's encryption: a table name,
/// column names, primary keys and field values of the entries.
const SECRETS: &[&str] = &["participant_health", "diagnosis_code", "pk-7f3a-", "HIV-POSITIVE-", "Achieng-Odhiambo"];

/// A journal of `n` entries about participants' health (seq 1..=n).
fn health_journal(path: &Path, n: u64) {
    health_journal_of(path, n, "");
}

/// [`health_journal`] whose keys carry `tag` (each laptop its own rows).
fn health_journal_of(path: &Path, n: u64, tag: &str) {
    let mut s = String::new();
    for seq in 1..=n {
        s.push_str(&format!(
            "{{\"seq\":{seq},\"ts\":\"2026-01-01T00:{:02}:{:02}.000000Z\",\"op\":\"insert\",\"table\":\"participant_health\",\
             \"pk\":{{\"id\":\"pk-7f3a-{tag}{seq}\"}},\"fields\":{{\"diagnosis_code\":\"HIV-POSITIVE-{seq}\",\"name\":\"Achieng-Odhiambo {seq}\"}}}}\n",
            (seq / 60) % 60,
            seq % 60
        ));
    }
    std::fs::write(path, s).expect("write journal");
}

/// A target database with the journal's table.
fn target(path: &Path) {
    let c = rusqlite::Connection::open(path).expect("db");
    c.execute_batch("CREATE TABLE participant_health (id TEXT PRIMARY KEY, diagnosis_code TEXT, name TEXT);")
        .expect("schema");
}

fn rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).expect("db");
    c.query_row("SELECT count(*) FROM participant_health", [], |r| r.get(0)).expect("count")
}

/// The `ferry trust add …` arguments `ferry key export` prints on `home`.
fn export_args(home: &Path) -> Vec<String> {
    let o = ferry(home).args(["key", "export"]).output().expect("run");
    assert!(o.status.success());
    let line = String::from_utf8(o.stdout).expect("utf8");
    line.split_whitespace().skip(3).map(str::to_owned).collect()
}

/// Runs the export line of `trusted` on `truster`, naming it `name`.
fn trust_exported(truster: &Path, trusted: &Path, name: &str) {
    let args = export_args(trusted);
    ferry(truster).args(["trust", "add", name]).args(&args[1..]).assert().success();
}

/// Removes a node's encryption identity: a relay that holds no key at all.
fn keyless(home: &Path) {
    std::fs::remove_file(home.join("encryption.key")).expect("remove key");
}

fn create(home: &Path, journal: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let o = ferry(home)
        .args(["bundle", "create", "--json", "--journal"])
        .arg(journal)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run");
    assert!(o.status.success(), "create failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    PathBuf::from(v["file"].as_str().expect("a bundle"))
}

fn relay(home: &Path, from: &Path, out: &Path) -> serde_json::Value {
    let o = ferry(home)
        .args(["bundle", "relay", "--json", "--from"])
        .arg(from)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "relay failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("relay json")
}

/// Every file under `dir` (recursively).
fn files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// The bytes of a file and, for every zstd frame that starts anywhere in
/// it, what that frame decompresses to (compression would hide text from a
/// plain byte search).
fn readable(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![bytes.to_vec()];
    for at in memchr::memmem::find_iter(bytes, &[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut plain = Vec::new();
        if let Ok(d) = zstd::stream::read::Decoder::new(&bytes[at..]) {
            let _ = std::io::Read::read_to_end(&mut d.single_frame(), &mut plain);
        }
        out.push(plain);
    }
    out
}

/// The secrets found in the files under `dirs`, with the file.
fn leaks(dirs: &[&Path]) -> Vec<String> {
    let mut found = Vec::new();
    for d in dirs {
        for f in files(d) {
            let bytes = std::fs::read(&f).expect("read");
            for s in SECRETS {
                if readable(&bytes).iter().any(|b| memchr::memmem::find(b, s.as_bytes()).is_some()) {
                    found.push(format!("{s} in {}", f.display()));
                }
            }
        }
    }
    found
}

struct Field {
    dir: tempfile::TempDir,
    field1: PathBuf,
    field2: PathBuf,
    central: PathBuf,
}

/// Two field laptops that know the central server's keys; the central
/// server trusts them.
fn field() -> Field {
    let dir = tempfile::tempdir().expect("tmp");
    let field1 = init_node(dir.path(), "field-1", Some(1));
    let field2 = init_node(dir.path(), "field-2", Some(2));
    let central = init_node(dir.path(), "central", Some(1000));
    for f in [&field1, &field2] {
        trust_exported(f, &central, "central");
        trust(&central, f, f.file_name().expect("name").to_str().expect("utf8"), &["origin"]);
    }
    Field { dir, field1, field2, central }
}

#[test]
fn key_export_prints_both_keys_and_trust_add_takes_both() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = init_node(dir.path(), "central", None);
    ferry(&home).args(["key", "export"]).assert().success().stdout(
        predicate::str::is_match(
            r"^ferry trust add central ferry-ed25519:[A-Za-z0-9_-]{43} age1[0-9a-z]{58} --role origin --role relay\n$",
        )
        .expect("re"),
    );
    let other = init_node(dir.path(), "field-1", Some(1));
    trust_exported(&other, &home, "central");
    let o = ferry(&other).args(["trust", "list", "--json"]).output().expect("run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let central = v.as_array().expect("list").iter().find(|k| k["name"] == "central").expect("central").clone();
    assert!(central["encryption"].as_str().is_some_and(|e| e.starts_with("age1")), "{central}");
    // A key that is not an encryption key is refused, naming what is expected.
    let key = public_key(&home);
    ferry(&other)
        .args(["trust", "add", "central", &key, "ferry-ed25519:abc"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a ferry encryption key"));
    // Encrypting to a node whose encryption key is unknown names the fix.
    trust(&other, &init_node(dir.path(), "clinic", None), "clinic", &["relay"]);
    let j = dir.path().join("j.jsonl");
    health_journal(&j, 3);
    ferry(&other)
        .args(["bundle", "create", "--journal"])
        .arg(&j)
        .arg("--out")
        .arg(dir.path().join("out"))
        .args(["--encrypt-to", "clinic"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no encryption key").and(predicate::str::contains("ferry key export")));
}

#[test]
fn encrypted_and_plain_bundles_cross_three_keyless_relays_and_the_central_server_applies_them() {
    let f = field();
    let d = f.dir.path();
    let relays: Vec<PathBuf> = ["middleman", "community", "driver"].iter().map(|n| init_node(d, n, None)).collect();
    for r in &relays {
        keyless(r);
        trust(r, &f.field1, "field-1", &["origin"]);
        trust(r, &f.field2, "field-2", &["origin"]);
    }
    // Every later hop trusts every earlier carrier.
    let names = ["middleman", "community", "driver"];
    for (i, r) in relays.iter().enumerate() {
        for later in relays[i + 1..].iter().chain([&f.central]) {
            trust(later, r, names[i], &["relay"]);
        }
    }
    // field-1 always encrypts to the central server; field-2 once by flag, once plain.
    ferry(&f.field1).args(["node", "encrypt-to", "central"]).assert().success();
    let stick = d.join("stick-0");
    let (j1, j2) = (d.join("j1.jsonl"), d.join("j2.jsonl"));
    health_journal(&j1, 40);
    health_journal_of(&j2, 25, "b");
    let b1 = create(&f.field1, &j1, &stick, &[]);
    let b2 = create(&f.field2, &j2, &stick, &["--encrypt-to", "central"]);
    let j2b = d.join("j2b.jsonl");
    let mut more = std::fs::read_to_string(&j2).expect("read");
    health_journal_of(&j2b, 30, "b");
    more = std::fs::read_to_string(&j2b).expect("read").lines().skip(25).fold(more, |acc, l| acc + l + "\n");
    std::fs::write(&j2b, more).expect("write");
    ferry(&f.field2).args(["node", "encrypt-to", "--none"]).assert().success();
    let b3 = create(&f.field2, &j2b, &stick, &[]);
    let inspect = |home: &Path, b: &Path| {
        let o = ferry(home).args(["bundle", "inspect", "--json"]).arg(b).output().expect("run");
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    assert_eq!(inspect(&f.central, &b1)["version"], 2);
    assert_eq!(inspect(&f.central, &b2)["version"], 2);
    assert_eq!(inspect(&f.central, &b3)["version"], 1, "a plain bundle stays version 1 for older ferry versions");
    // Three hops, none of which holds a key.
    let mut from = stick;
    for (i, r) in relays.iter().enumerate() {
        let out = d.join(format!("stick-{}", i + 1));
        let report = relay(r, &from, &out);
        assert_eq!(report["counts"]["segments_written"].as_u64(), Some(3), "{report}");
        from = out;
    }
    // The relays did their whole job: the same stick again is all duplicates.
    let again = relay(&relays[2], &d.join("stick-2"), &d.join("stick-x"));
    assert_eq!(again["counts"]["segments_written"].as_u64(), Some(0), "{again}");
    let o = ferry(&f.central).args(["bundle", "verify", "--deep"]).arg(&from).output().expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let db = d.join("central.sqlite3");
    target(&db);
    let o = ferry(&f.central).args(["bundle", "apply", "--db"]).arg(&db).arg(&from).output().expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(rows(&db), 40 + 30);
    let c = rusqlite::Connection::open(&db).expect("db");
    let v: String = c
        .query_row("SELECT diagnosis_code FROM participant_health WHERE id = 'pk-7f3a-17'", [], |r| r.get(0))
        .expect("row");
    assert_eq!(v, "HIV-POSITIVE-17");
}

#[test]
fn no_table_name_key_or_value_is_left_in_the_bundle_on_the_stick_or_in_temporary_folders() {
    let f = field();
    let d = f.dir.path();
    let j = d.join("j.jsonl");
    health_journal(&j, 500);
    let (stick, tmp) = (d.join("stick"), d.join("tmp"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let o = ferry(&f.field1)
        .env("TMPDIR", &tmp)
        .env("TEMP", &tmp)
        .env("TMP", &tmp)
        .args(["bundle", "create", "--journal"])
        .arg(&j)
        .arg("--out")
        .arg(&stick)
        .args(["--encrypt-to", "central"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("encrypted to central"));
    assert_eq!(files(&stick).len(), 1, "only the bundle is left on the stick");
    assert_eq!(leaks(&[&stick, &tmp]), Vec::<String>::new());
    // A keyless relay's output and its temporary files leak nothing either.
    let middleman = init_node(d, "middleman", None);
    keyless(&middleman);
    trust(&middleman, &f.field1, "field-1", &["origin"]);
    let (out, rtmp) = (d.join("stick-2"), d.join("relay-tmp"));
    std::fs::create_dir_all(&rtmp).expect("tmp");
    let o = ferry(&middleman)
        .env("TMPDIR", &rtmp)
        .args(["bundle", "relay", "--from"])
        .arg(&stick)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files(&out).len(), 1);
    assert_eq!(leaks(&[&stick, &out, &rtmp, &middleman]), Vec::<String>::new());
    // The same entries without encryption show every secret: the check can fail.
    let plain = d.join("plain");
    ferry(&f.field2).args(["bundle", "create", "--journal"]).arg(&j).arg("--out").arg(&plain).assert().success();
    let found = leaks(&[&plain]);
    assert_eq!(found.len(), SECRETS.len(), "{found:?}");
    // What a finder learns is only what a relay needs (docs/FORMAT.md).
    let bundle = files(&stick).into_iter().find(|f| f.extension().is_some_and(|x| x == "tar")).expect("bundle");
    let tar = std::fs::read(bundle).expect("read");
    let text = String::from_utf8_lossy(&tar);
    for hidden in ["\"tables\"", "\"schema\"", "\"entries_sha256\"", "\"entries_len\""] {
        assert!(!text.contains(hidden), "{hidden} is readable");
    }
    for shown in ["\"origin\"", "\"first_seq\"", "\"chain_after\"", "\"ts_max\"", "\"recipients\"", "\"member_len\""] {
        assert!(text.contains(shown), "{shown} is missing");
    }
}

#[test]
fn a_server_that_is_not_a_recipient_refuses_naming_the_recipients_and_inspect_shows_whom() {
    let f = field();
    let d = f.dir.path();
    let other = init_node(d, "other-server", Some(2000));
    trust(&other, &f.field1, "field-1", &["origin"]);
    trust(&other, &f.central, "central", &["origin", "relay"]);
    let j = d.join("j.jsonl");
    health_journal(&j, 5);
    let b = create(&f.field1, &j, &d.join("stick"), &["--encrypt-to", "central"]);
    let db = d.join("other.sqlite3");
    target(&db);
    let o = ferry(&other).args(["bundle", "apply", "--db"]).arg(&db).arg(&b).output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(all.contains("encrypted to central (") && all.contains("not to this node"), "{all}");
    assert_eq!(rows(&db), 0);
    // verify --against: the recipient checks every entry against its target; others are told why not.
    let cdb = d.join("central.sqlite3");
    target(&cdb);
    ferry(&f.central).args(["bundle", "verify", "--against"]).arg(&cdb).arg(&b).assert().success();
    ferry(&other)
        .args(["bundle", "verify", "--against"])
        .arg(&db)
        .arg(&b)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("encrypted to central"));
    // inspect shows that it is encrypted and to whom; tables only for a recipient.
    ferry(&other).args(["bundle", "inspect"]).arg(&b).assert().success().stdout(
        predicate::str::contains("encrypted to central").and(predicate::str::contains("participant_health").not()),
    );
    ferry(&f.central)
        .args(["bundle", "inspect"])
        .arg(&b)
        .assert()
        .success()
        .stdout(predicate::str::contains("this node can read it").and(predicate::str::contains("participant_health")));
    // inspect --entries: the entries for a recipient, a clear refusal for others.
    ferry(&f.central)
        .args(["bundle", "inspect", "--entries"])
        .arg(&b)
        .assert()
        .success()
        .stdout(predicate::str::contains("HIV-POSITIVE-3"));
    ferry(&other)
        .args(["bundle", "inspect", "--entries"])
        .arg(&b)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("encrypted to central"));
    // verify on a non-recipient checks what a relay checks and says so.
    ferry(&other)
        .args(["bundle", "verify"])
        .arg(&b)
        .assert()
        .success()
        .stdout(predicate::str::contains("encrypted to central: its encrypted bytes checked"));
}

#[test]
fn a_flipped_byte_of_ciphertext_is_refused_before_any_of_it_is_decrypted() {
    let f = field();
    let d = f.dir.path();
    let j = d.join("j.jsonl");
    // Enough entries for several 64 KiB chunks of ciphertext.
    let mut s = String::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for seq in 1..=6000u64 {
        let noise: String = (0..4)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect();
        s.push_str(&format!(
            "{{\"seq\":{seq},\"ts\":\"2026-01-01T00:00:00.000000Z\",\"op\":\"insert\",\"table\":\"participant_health\",\
             \"pk\":{{\"id\":\"pk-7f3a-{seq}\"}},\"fields\":{{\"diagnosis_code\":\"{noise}{seq}\",\"name\":\"x\"}}}}\n"
        ));
    }
    std::fs::write(&j, s).expect("write");
    let b = create(&f.field1, &j, &d.join("stick"), &["--encrypt-to", "central"]);
    let mut bytes = std::fs::read(&b).expect("read");
    let r = ferry::bundle::BundleReader::open(&b).expect("open");
    let len = r.descriptors()[0].zstd_len as usize;
    assert!(len > 3 * 65_536, "several chunks: {len}");
    drop(r);
    // The member is the last one: flip a byte in its last chunk.
    let member_end = bytes.len() - 1024 - (512 - len % 512) % 512;
    bytes[member_end - 100] ^= 0x01;
    std::fs::write(&b, &bytes).expect("write");
    let db = d.join("central.sqlite3");
    target(&db);
    let o = ferry(&f.central).args(["bundle", "apply", "--db"]).arg(&db).arg(&b).output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // Found by the signed hash of the encrypted bytes, before decryption
    // (age would have named a failed decryption instead).
    assert!(all.contains("hash mismatch") && all.contains(".jsonl.zst.age"), "{all}");
    assert_eq!(rows(&db), 0);
    ferry(&f.central)
        .args(["bundle", "verify"])
        .arg(&b)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("hash mismatch"));
}

#[test]
fn nodes_without_an_encryption_key_keep_working_and_get_one_by_command() {
    let f = field();
    let d = f.dir.path();
    // A central server made by an older ferry: no encryption key anywhere.
    keyless(&f.central);
    let trust_path = f.central.join("trust.json");
    let mut t: serde_json::Value = serde_json::from_slice(&std::fs::read(&trust_path).expect("read")).expect("json");
    for k in t["keys"].as_array_mut().expect("keys") {
        k.as_object_mut().expect("key").remove("encryption");
    }
    std::fs::write(&trust_path, serde_json::to_vec_pretty(&t).expect("json")).expect("write");
    ferry(&f.central)
        .args(["node", "show"])
        .assert()
        .success()
        .stdout(predicate::str::contains("ferry key add-encryption"));
    ferry(&f.central)
        .args(["key", "export"])
        .assert()
        .success()
        .stdout(predicate::str::contains("age1").not())
        .stderr(predicate::str::contains("ferry key add-encryption"));
    // Plain bundles still go both ways.
    let j = d.join("j.jsonl");
    health_journal(&j, 4);
    let plain = create(&f.field1, &j, &d.join("stick"), &[]);
    let db = d.join("central.sqlite3");
    target(&db);
    ferry(&f.central).args(["bundle", "apply", "--db"]).arg(&db).arg(&plain).assert().success();
    assert_eq!(rows(&db), 4);
    // The documented command gives it one; a second run refuses to replace it silently.
    ferry(&f.central).args(["key", "add-encryption"]).assert().success();
    ferry(&f.central).args(["key", "add-encryption"]).assert().code(2).stderr(predicate::str::contains("--replace"));
    trust_exported(&f.field1, &f.central, "central");
    let j2 = d.join("j2.jsonl");
    health_journal(&j2, 8);
    let old_key_bundle = create(&f.field1, &j2, &d.join("stick2"), &["--encrypt-to", "central"]);
    // Rotation: the old key keeps opening bundles still on the road.
    ferry(&f.central).args(["key", "add-encryption", "--replace"]).assert().success();
    assert_eq!(files(&f.central.join("retired-encryption")).len(), 1);
    ferry(&f.central).args(["bundle", "apply", "--db"]).arg(&db).arg(&old_key_bundle).assert().success();
    assert_eq!(rows(&db), 8);
}

#[cfg(unix)]
#[test]
fn secret_key_files_are_owner_only_and_refused_when_others_can_read_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let home = init_node(dir.path(), "central", None);
    for name in ["secret.key", "encryption.key"] {
        let path = home.join(name);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        ferry(&home)
            .args(["node", "show"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(name).and(predicate::str::contains("chmod 600")));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        ferry(&home).args(["node", "show"]).assert().success();
    }
}

#[test]
fn a_community_server_applies_the_parts_encrypted_to_it_and_carries_the_others_on_unread() {
    let f = field();
    let d = f.dir.path();
    let community = init_node(d, "community", Some(1001));
    for laptop in [&f.field1, &f.field2] {
        trust_exported(laptop, &community, "community");
        trust(&community, laptop, laptop.file_name().expect("name").to_str().expect("utf8"), &["origin"]);
    }
    trust(&f.central, &community, "community", &["relay"]);
    trust(&community, &f.central, "central", &["relay"]);
    let stick = d.join("stick");
    let (j1, j2) = (d.join("j1.jsonl"), d.join("j2.jsonl"));
    health_journal_of(&j1, 6, "a");
    health_journal_of(&j2, 9, "b");
    create(&f.field1, &j1, &stick, &["--encrypt-to", "central"]);
    create(&f.field2, &j2, &stick, &["--encrypt-to", "central", "community"]);
    let (cdb, out) = (d.join("community.sqlite3"), d.join("to-central"));
    target(&cdb);
    let o = ferry(&community)
        .args(["bundle", "relay", "--from"])
        .arg(&stick)
        .arg("--out")
        .arg(&out)
        .arg("--apply")
        .arg(&cdb)
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("field-1's entries 1–6: encrypted to central (") && said.contains("passed on unread"),
        "{said}"
    );
    assert_eq!(rows(&cdb), 9, "only field-2's entries were encrypted to the community server");
    let db = d.join("central.sqlite3");
    target(&db);
    let o = ferry(&f.central).args(["bundle", "apply", "--db"]).arg(&db).arg(&out).output().expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(rows(&db), 15);
}

#[test]
fn a_keyless_relay_catches_a_fork_of_encrypted_journals_and_splits_encrypted_bundles() {
    let f = field();
    let d = f.dir.path();
    let middleman = init_node(d, "middleman", None);
    keyless(&middleman);
    trust(&middleman, &f.field1, "field-1", &["origin"]);
    trust(&middleman, &f.field2, "field-2", &["origin"]);
    trust(&f.central, &middleman, "middleman", &["relay"]);
    // A copied laptop: field-1's identity writes two different journals.
    let clone = d.join("field-1-clone");
    std::fs::create_dir_all(&clone).expect("mkdir");
    for name in ["node.json", "secret.key", "encryption.key", "trust.json"] {
        std::fs::copy(f.field1.join(name), clone.join(name)).expect("copy");
    }
    let (j, jc) = (d.join("j.jsonl"), d.join("jc.jsonl"));
    health_journal_of(&j, 1500, "a");
    health_journal_of(&jc, 1500, "c");
    let (s1, s2) = (d.join("stick-1"), d.join("stick-2"));
    create(&f.field1, &j, &s1, &["--encrypt-to", "central"]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    create(&clone, &jc, &s2, &["--encrypt-to", "central"]);
    let j2 = d.join("j2.jsonl");
    health_journal_of(&j2, 1500, "b");
    create(&f.field2, &j2, &s1, &["--encrypt-to", "central"]);
    let out = d.join("out");
    let o = ferry(&middleman)
        .args(["bundle", "relay", "--json", "--max-size", "16K", "--from"])
        .arg(&s1)
        .arg(&s2)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1), "a fork is a negative verdict: {}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r["counts"]["forks"].as_u64(), Some(1), "{r}");
    assert_eq!(r["counts"]["segments_written"].as_u64(), Some(2), "{r}");
    // Split: one part per bundle under the size limit, still encrypted.
    let bundles: Vec<PathBuf> = files(&out).into_iter().filter(|p| p.extension().is_some_and(|x| x == "tar")).collect();
    assert_eq!(bundles.len(), 2, "{bundles:?}");
    for b in &bundles {
        let r = ferry::bundle::BundleReader::open(b).expect("open");
        assert!(r.descriptors().iter().all(|d| d.is_encrypted()));
    }
    let db = d.join("central.sqlite3");
    target(&db);
    ferry(&f.central).args(["bundle", "apply", "--db"]).arg(&db).arg(&out).assert().success();
    assert_eq!(rows(&db), 3000);
}
