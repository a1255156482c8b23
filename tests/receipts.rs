//! Closing the loop, played with the commands each role types: receipts
//! travel back from the central server through the community server and the
//! middleman to the laptop, which then knows what arrived, sends again what
//! did not (a stick lost between two hops) and prunes only what the archive
//! confirmed. Forged, replayed and foreign receipts never cause a prune; a
//! receipt that disagrees with the laptop's journal is a fork alarm.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

const SCHEMA: &str =
    "CREATE TABLE village (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, population INTEGER);";

struct Said {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Said {
    fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    fn ok(self) -> Said {
        assert_eq!(self.code, 0, "{}", self.text());
        self
    }
    fn code(self, code: i32) -> Said {
        assert_eq!(self.code, code, "{}", self.text());
        self
    }
    fn says(&self, words: &str) -> &Said {
        assert!(self.text().contains(words), "expected {words:?} in:\n{}", self.text());
        self
    }
    fn never_says(&self, words: &str) -> &Said {
        assert!(!self.text().contains(words), "did not expect {words:?} in:\n{}", self.text());
        self
    }
}

struct Road {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Road {
    /// field-1 → driver → clinic (community server) → central, every key
    /// exchanged as `key export` prints it; on the laptop, the middleman and
    /// the community server, central is trusted as the archive.
    fn new() -> Road {
        let tmp = tempfile::tempdir().expect("tmp");
        let r = Road { dir: tmp.path().to_path_buf(), _tmp: tmp };
        r.ferry("central", "node init --name central --kind server --id-block 2000").ok();
        r.ferry("clinic", "node init --name clinic --kind server --id-block 1000").ok();
        r.ferry("driver", "node init --name driver --kind relay").ok();
        r.ferry("field-1", "node init --name field-1 --kind field --id-block 1").ok();
        for (sender, receivers) in [
            ("field-1", &["driver", "clinic", "central"][..]),
            ("driver", &["clinic", "central", "field-1"][..]),
            ("clinic", &["central", "driver", "field-1"][..]),
        ] {
            for receiver in receivers {
                r.introduce(sender, receiver);
            }
        }
        let said = r.ferry("central", "key export").ok();
        let archive_line = said
            .stderr
            .split('`')
            .find(|p| p.contains("--role archive"))
            .unwrap_or_else(|| panic!("the archive line: {}", said.text()))
            .to_owned();
        for node in ["field-1", "driver", "clinic"] {
            r.type_line(node, &archive_line).ok();
        }
        for node in ["central", "clinic", "field-1"] {
            Connection::open(r.db(node)).expect("create").execute_batch(SCHEMA).expect("schema");
        }
        r.ferry("field-1", "track field-1/app.sqlite3").ok();
        for stick in ["stick", "town", "to-central"] {
            std::fs::create_dir_all(r.dir.join(stick)).expect("mkdir");
        }
        r
    }

    fn ferry(&self, node: &str, args: &str) -> Said {
        let o = assert_cmd::Command::cargo_bin("ferry")
            .expect("bin")
            .env_remove("FERRY_HOME")
            .env_remove("FERRY_OVERDUE_DAYS")
            .current_dir(&self.dir)
            .args(["--home", node])
            .args(args.split_whitespace())
            .output()
            .expect("run ferry");
        Said {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn type_line(&self, node: &str, line: &str) -> Said {
        let line = line.trim().strip_prefix("ferry ").unwrap_or_else(|| panic!("not a ferry command: {line}"));
        self.ferry(node, line)
    }

    fn introduce(&self, sender: &str, receiver: &str) {
        let line = self.ferry(sender, "key export").ok().stdout;
        self.type_line(receiver, &line).ok();
    }

    fn db(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("app.sqlite3")
    }

    fn villages(&self, node: &str, names: &[&str]) {
        let c = Connection::open(self.db(node)).expect("open");
        for n in names {
            c.execute("INSERT INTO village (name, population) VALUES (?1, 1)", [n]).expect("insert");
        }
    }

    /// The laptop writes its bundle to the stick (taking in what came back on it).
    fn laptop_sends(&self, extra: &str) -> Said {
        self.ferry("field-1", &format!("bundle create --db field-1/app.sqlite3 --out stick {extra}")).ok()
    }
    fn driver_relays(&self) -> Said {
        self.ferry("driver", "bundle relay --from stick --out town").ok()
    }
    fn clinic_relays(&self) -> Said {
        self.ferry("clinic", "bundle relay --from town --out to-central --apply clinic/app.sqlite3").ok()
    }
    fn central_applies(&self) -> Said {
        self.ferry("central", "bundle apply --db central/app.sqlite3 to-central").ok()
    }
    /// The way back: each hop's own command again, as the sticks return.
    fn way_back(&self) {
        self.clinic_relays();
        self.driver_relays();
    }

    fn journal(&self) -> (i64, i64, i64) {
        Connection::open(self.db("field-1"))
            .expect("open")
            .query_row("SELECT count(*), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM _ferry_journal", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("journal")
    }

    fn receipts_in(&self, folder: &str) -> Vec<PathBuf> {
        ferry::receipt::files_in(&self.dir.join(folder))
    }
}

fn names(db: &Path) -> Vec<String> {
    let c = Connection::open(db).expect("open");
    let mut st = c.prepare("SELECT name FROM village ORDER BY id").expect("select");
    let r = st.query_map([], |r| r.get(0)).expect("query");
    r.collect::<Result<_, _>>().expect("rows")
}

#[test]
fn receipts_come_back_down_the_road_and_prune_removes_only_what_central_confirmed() {
    let r = Road::new();
    r.villages("field-1", &["Lwanda", "Kadenge", "Siaya"]);
    r.laptop_sends("");
    r.driver_relays().says("left 1 receipt for the way back");
    assert_eq!(r.receipts_in("stick").len(), 1, "the driver's receipt waits on the laptop's stick");
    r.clinic_relays();
    r.central_applies().says("signed a receipt");
    assert_eq!(r.receipts_in("to-central").len(), 1, "central's receipt goes back on its stick");

    // Before the way back, the laptop knows only what the driver carried.
    r.villages("field-1", &["Ugunja"]);
    r.laptop_sends("").says("took in driver's receipt");
    r.ferry("field-1", "status --db field-1/app.sqlite3")
        .ok()
        .says("driver: confirmed entries 1–3")
        .says("central (archive): no receipt yet");
    // Nothing is confirmed by central: nothing goes.
    r.ferry("field-1", "prune --db field-1/app.sqlite3").ok().says("kept every journal row");
    assert_eq!(r.journal().0, 4);

    // The sticks come back: each hop runs its own command again.
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    r.way_back();
    r.laptop_sends("").says("took in central's receipt").says("took in clinic's receipt");
    let status = r.ferry("field-1", "status --db field-1/app.sqlite3").ok();
    status.says("central (archive): confirmed entries 1–4").says("clinic: confirmed entries 1–4");
    // Entry 5 is written after the last stick went: sent, not confirmed.
    r.villages("field-1", &["Bondo"]);
    r.laptop_sends("");
    r.ferry("field-1", "status --db field-1/app.sqlite3").ok().says("not confirmed yet: entry 5, sent");

    let dry = r.ferry("field-1", "prune --db field-1/app.sqlite3 --dry-run").ok();
    dry.says("would remove 4 rows");
    assert_eq!(r.journal().0, 5, "a dry run removes nothing");
    r.ferry("field-1", "prune --db field-1/app.sqlite3").ok().says("removed 4 rows");
    assert_eq!(r.journal(), (1, 5, 5), "only the confirmed entries 1–4 went; entry 5 waits");
    r.ferry("field-1", "prune --db field-1/app.sqlite3").ok().says("central has not confirmed entry 5");

    // After the prune the laptop goes on sending, and central gets everything.
    r.villages("field-1", &["Usenge"]);
    r.laptop_sends("").says("(entry 6,").never_says("sending again");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    assert_eq!(names(&r.db("central")), names(&r.db("field-1")));
    // The driver prunes its own bundles the same way: its output on the town stick and
    // quarantined copies go once central confirmed every part of them (entries 1–4 here),
    // and the one holding entries 5–6, not confirmed yet, stays in both places.
    let tars = |folder: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(folder)
            .expect("folder")
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tar"))
            .collect();
        v.sort();
        v
    };
    let quarantine = r.dir.join("driver/quarantine");
    std::fs::create_dir_all(&quarantine).expect("mkdir");
    let before = tars(&r.dir.join("town"));
    for f in &before {
        std::fs::copy(r.dir.join("town").join(f), quarantine.join(f)).expect("copy");
    }
    r.ferry("driver", "prune").ok().says("every part confirmed by central");
    let after = tars(&r.dir.join("town"));
    assert!(!after.is_empty() && after.len() < before.len(), "{before:?} -> {after:?}");
    assert_eq!(tars(&quarantine), after, "the quarantine keeps exactly what the town stick keeps");
    r.ferry("central", "status --db central/app.sqlite3 --check").ok().says("every origin was heard from");
    r.ferry("central", "status --db central/app.sqlite3 --check --overdue-days 0")
        .code(1)
        .says("nothing arrived from field-1");
}

#[test]
fn a_stick_lost_between_two_hops_is_sent_again_and_central_converges() {
    let r = Road::new();
    r.villages("field-1", &["Lwanda", "Kadenge"]);
    r.laptop_sends("");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();

    // Entries 3–4 reach the driver, and the stick to town is lost.
    r.villages("field-1", &["Siaya", "Ugunja"]);
    r.laptop_sends("");
    r.driver_relays();
    for f in std::fs::read_dir(r.dir.join("town")).expect("town") {
        let f = f.expect("entry").path();
        if f.extension().is_some_and(|x| x == "tar") {
            std::fs::remove_file(f).expect("lose the stick");
        }
    }
    // Entries 5–6 go all the way; the receipts come back.
    r.villages("field-1", &["Bondo", "Usenge"]);
    r.laptop_sends("");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    r.way_back();
    r.laptop_sends("");
    let status = r.ferry("field-1", "status --db field-1/app.sqlite3 --check").code(0);
    status.says("central (archive): confirmed entries 1–2, entries 5–6").says("not confirmed yet: entries 3–4");
    // Overdue after 0 days: flagged, with the command that fixes it.
    r.ferry("field-1", "status --db field-1/app.sqlite3 --check --overdue-days 0")
        .code(1)
        .says("OVERDUE  entries 3–4")
        .says("ferry bundle create --db field-1/app.sqlite3");
    // Central does not hold them, and prune keeps them (and what follows).
    assert_eq!(
        names(&r.db("central")),
        vec!["Lwanda", "Kadenge", "Bondo", "Usenge"].into_iter().map(String::from).collect::<Vec<_>>()
    );
    r.ferry("field-1", "prune --db field-1/app.sqlite3").ok().says("removed 2 rows");
    assert_eq!(r.journal(), (4, 3, 6));

    // Not yet 14 days: the next bundle has nothing to send again.
    r.laptop_sends("").never_says("sending again");
    // --unconfirmed sends them at once (the journal was pruned before them).
    r.laptop_sends("--unconfirmed").says("sending again from entry 3");
    // The driver carried entries 3–6 before; central never confirmed 3–4, so it passes them on again,
    // and reading the same stick again still writes nothing.
    r.driver_relays().says("passed on again 1 part carried before");
    r.driver_relays().says("nothing new to pass on");
    r.clinic_relays();
    r.central_applies();
    assert_eq!(names(&r.db("central")), names(&r.db("field-1")), "central converged, nothing lost");
    r.way_back();
    r.laptop_sends("");
    r.ferry("field-1", "status --db field-1/app.sqlite3 --check --overdue-days 0")
        .ok()
        .says("central (archive): confirmed entries 1–6");
    r.ferry("field-1", "prune --db field-1/app.sqlite3").ok().says("removed 4 rows");
    assert_eq!(r.journal().0, 0);
}

#[test]
fn overdue_entries_are_sent_again_by_the_next_bundle() {
    let r = Road::new();
    r.villages("field-1", &["Lwanda"]);
    r.laptop_sends("");
    // The stick never leaves; with a resend age of 0 days the next bundle sends entry 1 again.
    r.laptop_sends("--overdue-days 0").says("sending again from entry 1");
}

/// Everything the laptop's journal holds before the prune, to compare after.
fn journal_rows(r: &Road) -> i64 {
    r.journal().0
}

#[test]
fn forged_replayed_foreign_and_non_archive_receipts_never_prune() {
    let r = Road::new();
    r.villages("field-1", &["Lwanda", "Kadenge"]);
    r.laptop_sends("");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    let central_receipt = r.receipts_in("to-central").pop().expect("central's receipt");
    let bytes = std::fs::read(&central_receipt).expect("read");

    // Forged: central's receipt with a range changed after signing.
    let forged = String::from_utf8(bytes.clone()).expect("text").replacen("\"first\":1", "\"first\":2", 1);
    assert_ne!(forged.as_bytes(), &bytes[..]);
    std::fs::write(r.dir.join("stick").join("ferry-receipt-central-20260101-000000000000.json"), forged).expect("w");
    r.laptop_sends("").says("REFUSED  receipt").says("bad signature");
    r.ferry("field-1", "prune --db field-1/app.sqlite3").ok().says("kept every journal row");
    assert_eq!(journal_rows(&r), 2);

    // Foreign: a receipt of another central nobody here trusts, holding the same entries.
    r.ferry("elsewhere", "node init --name central --kind server --id-block 3000").ok();
    r.introduce("field-1", "elsewhere");
    Connection::open(r.dir.join("elsewhere/app.sqlite3")).expect("db").execute_batch(SCHEMA).expect("schema");
    r.ferry("elsewhere", "bundle apply --db elsewhere/app.sqlite3 stick").ok();
    r.laptop_sends("").says("REFUSED  receipt").says("unknown signer");
    r.ferry("field-1", "prune --db field-1/app.sqlite3").ok().says("kept every journal row");
    assert_eq!(journal_rows(&r), 2);

    // Not the archive: the clinic's genuine receipt confirms entries 1–2, and still nothing goes
    // (central's receipt is held back this time).
    let held_back = r.dir.join("central-receipt.json");
    std::fs::rename(&central_receipt, &held_back).expect("hold back");
    r.clinic_relays();
    r.driver_relays();
    r.laptop_sends("").says("took in clinic's receipt");
    r.ferry("field-1", "status --db field-1/app.sqlite3").ok().says("clinic: confirmed entries 1–2");
    r.ferry("field-1", "prune --db field-1/app.sqlite3").ok().says("has not confirmed entry 1");
    assert_eq!(journal_rows(&r), 2);

    // Replayed: another laptop's copy of central's genuine receipt says nothing about this laptop.
    // (central's receipt holds only field-1; a field-2 taking it in confirms nothing of its own.)
    r.ferry("field-2", "node init --name field-2 --kind field --id-block 2").ok();
    r.introduce("central", "field-2");
    Connection::open(r.db("field-2")).expect("db").execute_batch(SCHEMA).expect("schema");
    r.ferry("field-2", "track field-2/app.sqlite3").ok();
    let c = Connection::open(r.db("field-2")).expect("open");
    c.execute("INSERT INTO village (name) VALUES ('Mbita')", []).expect("insert");
    std::fs::create_dir_all(r.dir.join("stick-2")).expect("mkdir");
    std::fs::copy(&held_back, r.dir.join("stick-2").join(central_receipt.file_name().expect("name"))).expect("cp");
    let archive = r.ferry("central", "key export").ok().stdout.replace("--role origin --role relay", "--role archive");
    r.type_line("field-2", &archive).ok();
    r.ferry("field-2", "bundle create --db field-2/app.sqlite3 --out stick-2").ok().says("took in central's receipt");
    r.ferry("field-2", "prune --db field-2/app.sqlite3").ok().says("kept every journal row");

    // Central's receipt arrives after all: entries 1–2 are confirmed.
    std::fs::rename(&held_back, &central_receipt).expect("restore");
    r.way_back();
    r.laptop_sends("").says("took in central's receipt");
    r.ferry("field-1", "status --db field-1/app.sqlite3").ok().says("central (archive): confirmed entries 1–2");
    // A newer round confirms entry 3; then the old receipt is replayed: it changes nothing.
    r.villages("field-1", &["Siaya"]);
    r.laptop_sends("");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    r.way_back();
    r.laptop_sends("").says("took in central's receipt");
    r.ferry("field-1", "status --db field-1/app.sqlite3").ok().says("central (archive): confirmed entries 1–3");
    std::fs::write(r.dir.join("stick").join("ferry-receipt-central-old.json"), &bytes).expect("replay");
    r.laptop_sends("").never_says("took in central's receipt");
    r.ferry("field-1", "status --db field-1/app.sqlite3").ok().says("central (archive): confirmed entries 1–3");
    r.ferry("field-1", "prune --db field-1/app.sqlite3").ok().says("removed 3 rows");
}

#[test]
fn a_receipt_that_disagrees_with_the_journal_is_a_fork_alarm_never_a_prune() {
    let r = Road::new();
    r.villages("field-1", &["Lwanda", "Kadenge"]);
    r.laptop_sends("");
    // Central signs, with its own key, a receipt for field-1's entries 1–2
    // whose chain hash is not the laptop's: it holds other entries under
    // field-1's name (a copied laptop sent first).
    let central = ferry::node::Node::open(&r.dir.join("central")).expect("central");
    let laptop = ferry::node::Node::open(&r.dir.join("field-1")).expect("laptop");
    let mut h = ferry::receipt::Holdings::default();
    h.add(laptop.id(), 1, 2, Some(&[7u8; 32]));
    let signed = ferry::receipt::sign(central.signing_key(), ferry::journal::Timestamp::now(), &h);
    std::fs::write(r.dir.join("stick").join(signed.file_name(Some("central"))), &signed.bytes).expect("write");
    r.laptop_sends("").says("took in central's receipt");
    r.ferry("field-1", "status --db field-1/app.sqlite3 --check").code(1).says("FORK").says("ferry node reissue");
    r.ferry("field-1", "prune --db field-1/app.sqlite3").code(1).says("a fork");
    assert_eq!(journal_rows(&r), 2, "nothing pruned");
}

#[test]
fn a_revoked_archive_confirms_nothing_any_more_and_nothing_is_pruned_on_its_word() {
    let r = Road::new();
    r.villages("field-1", &["Lwanda", "Kadenge"]);
    r.laptop_sends("");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    r.way_back();
    r.laptop_sends("").says("took in central's receipt");
    r.ferry("field-1", "status --db field-1/app.sqlite3").ok().says("central (archive): confirmed entries 1–2");
    // Central's key is revoked here (stolen, say): what it signed stops counting at once.
    r.ferry("field-1", "trust revoke central").ok();
    r.ferry("field-1", "status --db field-1/app.sqlite3").ok().never_says("central (archive): confirmed");
    r.ferry("field-1", "prune --db field-1/app.sqlite3").code(2).says("no computer is trusted as the archive");
    assert_eq!(journal_rows(&r), 2, "nothing pruned on a revoked signer's word");
}

/// `ferry status --json` of a node: the relay ledger and the receipts.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeStatus {
    #[allow(dead_code)]
    node: String,
    name: String,
    #[allow(dead_code)]
    origins: Vec<serde_json::Value>,
    receipts: NodeReceipts,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeReceipts {
    sent: Option<ferry::receipt::confirm::Report>,
    carried: Vec<ferry::receipt::confirm::Report>,
}

#[test]
fn status_json_carries_the_receipts() {
    let r = Road::new();
    r.villages("field-1", &["Lwanda", "Kadenge"]);
    r.laptop_sends("");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    r.way_back();
    r.laptop_sends("");
    // The laptop: `status --db --json` has, per receiving node, what it confirmed and what waits.
    r.villages("field-1", &["Siaya"]);
    r.laptop_sends("");
    let said = r.ferry("field-1", "status --db field-1/app.sqlite3 --json").ok();
    let s: ferry::apply::status::DbStatus = serde_json::from_str(&said.stdout).expect("documented shape");
    let rep = s.receipts.expect("a tracked database of this node has receipts");
    assert_eq!(rep.name.as_deref(), Some("field-1"));
    let central = rep.receivers.iter().find(|x| x.name.as_deref() == Some("central")).expect("central");
    assert!(central.archive);
    assert_eq!(central.confirmed, vec![(1, 2)]);
    assert_eq!((central.pending[0].first_seq, central.pending[0].last_seq), (3, 3));
    assert!(rep.overdue.is_empty());
    // Without --db, the laptop's own entries are under receipts.sent.
    let said = r.ferry("field-1", "status --json --overdue-days 0").ok();
    let n: NodeStatus = serde_json::from_str(&said.stdout).expect("documented shape");
    assert_eq!(n.name, "field-1");
    let sent = n.receipts.sent.expect("the laptop sent");
    assert_eq!(sent.overdue.len(), 1, "entry 3, with a resend age of 0 days");
    assert!(n.receipts.carried.is_empty());
    // The middleman: what it carried onward, per origin.
    let said = r.ferry("driver", "status --json").ok();
    let n: NodeStatus = serde_json::from_str(&said.stdout).expect("documented shape");
    assert!(n.receipts.sent.is_none(), "the driver sends nothing of its own");
    assert_eq!(n.receipts.carried.len(), 1);
    let c = &n.receipts.carried[0];
    assert_eq!(c.name.as_deref(), Some("field-1"));
    assert!(c.receivers.iter().all(|x| x.name.as_deref() != Some("driver")), "its own receipt is not a receiver");
    let central = c.receivers.iter().find(|x| x.archive).expect("central");
    assert_eq!(central.confirmed, vec![(1, 2)]);
}

#[test]
fn a_middleman_knows_what_it_carried_onward_and_flags_what_central_never_confirmed() {
    let r = Road::new();
    r.villages("field-1", &["Lwanda", "Kadenge"]);
    r.laptop_sends("");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    // Entries 3–4 reach the driver, and the stick to town is lost.
    r.villages("field-1", &["Siaya", "Ugunja"]);
    r.laptop_sends("");
    r.driver_relays();
    for f in std::fs::read_dir(r.dir.join("town")).expect("town") {
        let f = f.expect("entry").path();
        if f.extension().is_some_and(|x| x == "tar") {
            std::fs::remove_file(f).expect("lose the stick");
        }
    }
    r.villages("field-1", &["Bondo"]);
    r.laptop_sends("");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    r.clinic_relays();
    r.driver_relays();
    // The driver's status: per origin carried, what came back confirmed.
    r.ferry("driver", "status")
        .ok()
        .says("receipts for field-1's entries carried onward")
        .says("central (archive): confirmed entries 1–2, entry 5")
        .says("not confirmed yet: entries 3–4, passed on");
    // Not 14 days yet: the check is quiet.
    r.ferry("driver", "status --check").ok().says("check: ok, nothing of field-1's passed on more than 14 days ago");
    // After the resend age, the lost part is flagged with what to do, and the exit status says so.
    r.ferry("driver", "status --check --overdue-days 0")
        .code(1)
        .says("OVERDUE  field-1's entries 3–4 were passed on from here")
        .says("Ask whether that stick reached central")
        .says("ferry bundle create");
    let said = r.ferry("driver", "status --check --json --overdue-days 0").code(1);
    let v: serde_json::Value = serde_json::from_str(&said.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["overdue_carried"][0]["name"], "field-1");
    assert_eq!(v["overdue_carried"][0]["overdue"][0]["first_seq"], 3);
    // The laptop sends them again; the driver passes them on; once central confirms, the driver's check is clean.
    r.laptop_sends("--unconfirmed");
    r.driver_relays();
    r.clinic_relays();
    r.central_applies();
    r.clinic_relays();
    r.driver_relays();
    r.ferry("driver", "status --check --overdue-days 0").ok().says("central (archive): confirmed entries 1–5");
}
