//! A field study played through, as its data manager and driver would run
//! it: three laptops, a driver's middleman laptop, a community server and a
//! central server, over three rounds, every step a `ferry` command typed in
//! the study's folder (`--home NAME`, as README and `ferry demo` show).
//!
//! The mistakes people make are made on purpose: two laptops given the same
//! id block, a wrong trust role, data entered before `ferry track`, `untrack`
//! with entries not yet sent, a migration run without `ferry track`, a
//! server that applies a stick without passing it on. Each mistake's
//! message must name its fix; the test then runs that fix, and at the end
//! the central server must hold every write made anywhere.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

const SCHEMA: &str = "
CREATE TABLE village (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, population INTEGER);
CREATE TABLE household (id INTEGER PRIMARY KEY AUTOINCREMENT,
    village_id INTEGER NOT NULL REFERENCES village (id), head TEXT NOT NULL);";

/// Django's way of adding a column on SQLite: a new table, the rows copied,
/// the old table dropped, the new one renamed (capture's triggers go with
/// the old table).
const MIGRATION: &str = "
CREATE TABLE new_household (id INTEGER PRIMARY KEY AUTOINCREMENT,
    village_id INTEGER NOT NULL REFERENCES village (id), head TEXT NOT NULL, phone TEXT);
INSERT INTO new_household (id, village_id, head) SELECT id, village_id, head FROM household;
DROP TABLE household;
ALTER TABLE new_household RENAME TO household;";

/// What one `ferry` command printed.
struct Said {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Said {
    fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    /// Exit 0, else the test fails showing what was printed.
    fn ok(self) -> Said {
        assert_eq!(self.code, 0, "{}", self.text());
        self
    }
    fn says(&self, words: &str) -> &Said {
        assert!(self.text().contains(words), "expected {words:?} in:\n{}", self.text());
        self
    }
}

struct Study {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Study {
    fn new() -> Study {
        let tmp = tempfile::tempdir().expect("tmp");
        Study { dir: tmp.path().to_path_buf(), _tmp: tmp }
    }

    /// `ferry --home NODE ARGS…` in the study's folder (args split on spaces,
    /// as a person types them; no path here has one).
    fn ferry(&self, node: &str, args: &str) -> Said {
        let o = assert_cmd::Command::cargo_bin("ferry")
            .expect("bin")
            .env_remove("FERRY_HOME")
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

    /// Runs, on `node`, a command line exactly as ferry printed it
    /// (`ferry trust add …`).
    fn type_line(&self, node: &str, line: &str) -> Said {
        let line = line.trim().strip_prefix("ferry ").unwrap_or_else(|| panic!("not a ferry command: {line}"));
        self.ferry(node, line)
    }

    fn db(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("app.sqlite3")
    }

    /// The app on `node` saves: each statement its own transaction.
    fn app(&self, node: &str, sql: &str) {
        let c = Connection::open(self.db(node)).expect("open app db");
        c.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            c.execute_batch(stmt).unwrap_or_else(|e| panic!("{node}: {stmt}: {e}"));
        }
    }

    fn new_app_db(&self, node: &str) {
        Connection::open(self.db(node)).expect("create").execute_batch(SCHEMA).expect("schema");
    }

    /// `receiver` trusts `sender` with the line `sender`'s `key export` prints.
    fn introduce(&self, sender: &str, receiver: &str) {
        let line = self.ferry(sender, "key export").ok().stdout;
        self.type_line(receiver, &line).ok();
    }

    /// The bundles in a folder, for `bundle apply`/`relay`.
    fn folder(&self, name: &str) -> String {
        std::fs::create_dir_all(self.dir.join(name)).expect("mkdir");
        name.to_owned()
    }
}

/// Every row of the app's tables in `db`, as (table, id, values) text.
fn rows(db: &Path) -> Vec<String> {
    let c = Connection::open(db).expect("open");
    let mut out = Vec::new();
    for (t, cols) in [("village", "name, population"), ("household", "village_id, head")] {
        let mut st = c.prepare(&format!("SELECT id, {cols} FROM {t}")).expect("select");
        let mut r = st.query([]).expect("query");
        while let Some(row) = r.next().expect("row") {
            let vals: Vec<String> =
                (0..3).map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).expect("value"))).collect();
            out.push(format!("{t} {}", vals.join(" ")));
        }
    }
    out.sort();
    out
}

fn phones(db: &Path) -> Vec<(i64, Option<String>)> {
    let c = Connection::open(db).expect("open");
    let mut st = c.prepare("SELECT id, phone FROM household WHERE phone IS NOT NULL ORDER BY id").expect("select");
    let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query");
    r.collect::<Result<_, _>>().expect("rows")
}

#[test]
fn a_field_study_with_every_mistake_ends_with_every_write_at_central() {
    let s = Study::new();

    // ---- Setup. field-2 is given block 1 by mistake (README's example).
    s.ferry("central", "node init --name central --kind server --id-block 2000").ok();
    s.ferry("community", "node init --name community --kind server --id-block 1000").ok();
    s.ferry("driver", "node init --name driver --kind relay").ok();
    s.ferry("field-1", "node init --name field-1 --kind field --id-block 1").ok();
    s.ferry("field-2", "node init --name field-2 --kind field --id-block 1").ok();
    s.ferry("field-3", "node init --name field-3 --kind field --id-block 3").ok();
    for laptop in ["field-1", "field-2", "field-3"] {
        for receiver in ["driver", "community", "central"] {
            s.introduce(laptop, receiver);
        }
    }
    s.introduce("driver", "community");
    s.introduce("driver", "central");
    // Mistake: the community server is trusted at central only as a relay,
    // typed by hand instead of the line its `key export` prints.
    let community_key = s.ferry("community", "key export").ok().stdout;
    assert!(
        community_key.contains("--role origin --role relay"),
        "a server's export names both roles: {community_key}"
    );
    let by_hand = community_key.replace("--role origin --role relay", "--role relay");
    s.type_line("central", &by_hand).ok();

    for node in ["central", "community", "field-1", "field-2", "field-3"] {
        s.new_app_db(node);
    }
    s.ferry("community", "track community/app.sqlite3").ok();

    // ---- Round 1.
    // Mistake: field-3 enters data before ferry tracks its database.
    s.app("field-3", "INSERT INTO village (name, population) VALUES ('Kisumu Ndogo', 310)");
    s.app("field-3", "INSERT INTO household (village_id, head) VALUES (1, 'Atieno')");
    let tracked = s.ferry("field-3", "track field-3/app.sqlite3").ok();
    tracked.says("from before tracking will not reach the servers");
    let fix = tracked
        .stderr
        .split('`')
        .find(|part| part.contains("--include-existing=village"))
        .unwrap_or_else(|| panic!("a command to send them: {}", tracked.text()))
        .to_owned();
    // Both tables' rows go: the household refers to the village.
    let fix = fix.replace("--include-existing=village", "--include-existing");
    s.type_line("field-3", &fix).ok().says("journalled 1 row");

    s.ferry("field-1", "track field-1/app.sqlite3").ok();
    s.ferry("field-2", "track field-2/app.sqlite3").ok();
    let f1 = (1u64 << 32) + 1;
    s.app(
        "field-1",
        &format!(
            "INSERT INTO village (name, population) VALUES ('Lwanda', 120);
             INSERT INTO household (village_id, head) VALUES ({f1}, 'Odhiambo');
             UPDATE village SET population = 125 WHERE id = {f1}"
        ),
    );
    s.ferry("field-1", &format!("bundle create --db field-1/app.sqlite3 --out {}", s.folder("stick-1"))).ok();
    // field-2 (same block) numbers its first village like field-1's.
    s.app("field-2", "INSERT INTO village (name, population) VALUES ('Siaya', 540)");
    s.app("field-2", &format!("INSERT INTO household (village_id, head) VALUES ({f1}, 'Wanjiru')"));
    s.ferry("field-2", &format!("bundle create --db field-2/app.sqlite3 --out {}", s.folder("stick-2"))).ok();
    s.ferry("field-3", &format!("bundle create --db field-3/app.sqlite3 --out {}", s.folder("stick-3"))).ok();

    // The driver collects field-1 and field-2; field-3 rides to the clinic itself.
    s.ferry("driver", &format!("bundle relay --from stick-1 stick-2 --out {}", s.folder("to-community"))).ok();
    s.app("community", "INSERT INTO village (name, population) VALUES ('Bondo', 800)");
    let hop = s.ferry(
        "community",
        &format!(
            "bundle relay --from to-community stick-3 --out {} --apply community/app.sqlite3",
            s.folder("to-central")
        ),
    );
    // The shared id block is caught before field-1's rows are overwritten,
    // naming both laptops and the fix; the rest applies and travels on.
    assert_eq!(hop.code, 1, "a refused part is a negative verdict: {}", hop.text());
    hop.says("field-1 and field-2 both number their rows in id block 1").says("ferry node reissue");
    assert_eq!(
        rows(&s.db("community")).iter().filter(|r| r.contains("Lwanda") || r.contains("Siaya")).count(),
        1,
        "only one of the two villages numbered alike is there"
    );
    assert!(rows(&s.db("community")).iter().any(|r| r.contains("Lwanda")), "field-1's row was not overwritten");

    let landed = s.ferry("central", "bundle apply --db central/app.sqlite3 to-central");
    assert_eq!(landed.code, 1, "{}", landed.text());
    // Mistake: the wrong role refuses the community's own part, with the
    // exact fix; the laptops' parts apply all the same.
    landed.says("signed as origin, but this node trusts it only as relay");
    let role_fix = landed
        .text()
        .split('`')
        .find(|p| p.starts_with("ferry trust add community"))
        .unwrap_or_else(|| panic!("the fix for the role: {}", landed.text()))
        .to_owned();
    assert!(rows(&s.db("central")).iter().any(|r| r.contains("Lwanda")), "field-1's part applied");
    assert!(rows(&s.db("central")).iter().any(|r| r.contains("Kisumu Ndogo")), "field-3's part applied");
    assert!(!rows(&s.db("central")).iter().any(|r| r.contains("Bondo")), "the community's part waits for trust");
    s.type_line("central", &role_fix).ok();
    // (field-2's part stays refused until its own fix below.)
    s.ferry("central", "bundle apply --db central/app.sqlite3 to-central").says("field-2's entries 1–2");
    assert!(rows(&s.db("central")).iter().any(|r| r.contains("Bondo")), "after the fix, the community's edit applies");

    // The fix for the shared block, as the message says: field-2 gets a new
    // name and block, its rows new ids, and every receiver trusts its key.
    s.ferry("field-2", "node reissue field-2/app.sqlite3 --name field-2b --id-block 2 --from 1").ok();
    for receiver in ["driver", "community", "central"] {
        s.introduce("field-2", receiver);
    }
    s.ferry("field-2", "bundle create --db field-2/app.sqlite3 --out stick-2").ok();

    // ---- Round 2.
    // Mistake: untrack with entries not yet sent is refused, naming the fix.
    s.app("field-1", &format!("INSERT INTO household (village_id, head) VALUES ({f1}, 'Akinyi')"));
    let untrack = s.ferry("field-1", "untrack field-1/app.sqlite3");
    assert_eq!(untrack.code, 2, "{}", untrack.text());
    untrack.says("1 entry not yet bundled").says("ferry bundle create --db field-1/app.sqlite3 --out DIR");
    // Mistake: a migration without `ferry track`; the app keeps writing.
    s.app("field-1", MIGRATION);
    s.app("field-1", &format!("INSERT INTO household (village_id, head, phone) VALUES ({f1}, 'Otieno', '0722')"));
    s.app("field-1", &format!("UPDATE household SET phone = '0733' WHERE head = 'Odhiambo' AND village_id = {f1}"));
    // `ferry track --status` says capture is out of date, naming the columns
    // and the fix; bundling refreshes it itself and finds what was typed
    // meanwhile, so the driver does not leave empty-handed.
    let status = s.ferry("field-1", "track --status field-1/app.sqlite3");
    assert_eq!(status.code, 1, "{}", status.text());
    status.says("columns added: phone").says("ferry track field-1/app.sqlite3");
    s.ferry("field-1", "bundle create --db field-1/app.sqlite3 --out stick-1")
        .ok()
        .says("columns added: phone")
        .says("found and journalled 1 inserted, 1 changed");
    // field-3 and field-2b keep working.
    s.app("field-3", "UPDATE village SET population = 320 WHERE name = 'Kisumu Ndogo'");
    s.ferry("field-3", "bundle create --db field-3/app.sqlite3 --out stick-3").ok();
    s.app("field-2", "INSERT INTO village (name, population) VALUES ('Ugunja', 95)");
    s.ferry("field-2", "bundle create --db field-2/app.sqlite3 --out stick-2").ok();

    s.ferry("driver", "bundle relay --from stick-1 stick-2 --out to-community").ok();
    // Mistake: the community server applies the driver's folder without
    // passing it on; status names what stops there and the fix.
    s.ferry("community", "bundle apply --db community/app.sqlite3 to-community");
    let status = s.ferry("community", "status --db community/app.sqlite3");
    status.says("NOT PASSED ON: field-2b's").says("ferry bundle relay --apply community/app.sqlite3");
    // Entries that need the new column wait in quarantine, named, until the
    // server is migrated too.
    let listed = s.ferry("community", "status --db community/app.sqlite3 --list").ok();
    listed.says("phone");
    s.app("community", MIGRATION);
    s.ferry("community", "track community/app.sqlite3").ok();
    s.ferry("community", "bundle apply --db community/app.sqlite3 --retry-quarantined").ok();
    assert_eq!(phones(&s.db("community")).len(), 2, "both phone numbers arrived at the community server");
    // The old field-2 part still in the driver's folder is refused again,
    // but as the known refusal it is, not as a new alarm.
    s.ferry("community", "bundle relay --from to-community stick-3 --out to-central --apply community/app.sqlite3")
        .ok()
        .says("field-2's entries 1–2 still, as first reported on");
    let status = s.ferry("community", "status --db community/app.sqlite3").ok();
    assert!(!status.text().contains("NOT PASSED ON"), "{}", status.text());

    // Central is migrated late: the phone numbers wait, then arrive.
    s.ferry("central", "bundle apply --db central/app.sqlite3 to-central");
    s.app("central", MIGRATION);
    s.ferry("central", "bundle apply --db central/app.sqlite3 --retry-quarantined").ok();

    // ---- Round 3: ordinary work after every mistake was fixed.
    s.app("field-1", "INSERT INTO village (name, population) VALUES ('Usenge', 60)");
    s.app("field-3", "DELETE FROM household WHERE head = 'Atieno'");
    s.app("community", "UPDATE village SET population = 810 WHERE name = 'Bondo'");
    for (laptop, stick) in [("field-1", "stick-1"), ("field-2", "stick-2"), ("field-3", "stick-3")] {
        let r = s.ferry(laptop, &format!("bundle create --db {laptop}/app.sqlite3 --out {stick}"));
        assert_eq!(r.code, 0, "{}", r.text());
    }
    s.ferry("driver", "bundle relay --from stick-1 stick-2 --out to-community").ok();
    s.ferry("community", "bundle relay --from to-community stick-3 --out to-central --apply community/app.sqlite3")
        .ok();
    s.ferry("central", "bundle apply --db central/app.sqlite3 to-central").ok();

    // ---- Central holds every write: each laptop's rows and the community's
    // own, with their latest values, and nothing waits or is set aside.
    let central = rows(&s.db("central"));
    for node in ["field-1", "field-2", "field-3", "community"] {
        for row in rows(&s.db(node)) {
            assert!(central.contains(&row), "{node}'s {row} is not at central: {central:#?}");
        }
    }
    let expected: std::collections::BTreeSet<String> =
        ["field-1", "field-2", "field-3", "community"].iter().flat_map(|n| rows(&s.db(n))).collect();
    assert_eq!(central.len(), expected.len(), "no other rows: {central:#?}");
    assert_eq!(phones(&s.db("central")), phones(&s.db("field-1")), "the phone numbers entered after the migration");
    let status = s.ferry("central", "status --db central/app.sqlite3 --json").ok();
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    for counter in ["parked", "quarantined", "held", "forks"] {
        assert_eq!(v[counter], 0, "{counter}: {}", status.stdout);
    }
    let names: Vec<&str> =
        v["origins"].as_array().expect("origins").iter().filter_map(|o| o["name"].as_str()).collect();
    for name in ["field-1", "field-2b", "field-3", "community"] {
        assert!(names.contains(&name), "central names {name}: {names:?}");
    }
}
