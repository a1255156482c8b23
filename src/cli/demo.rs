//! `ferry demo`: the whole story on built-in fixtures, in a temporary folder.
//!
//! Three field laptops (id blocks 1–3) change a tracked app database and
//! bundle it; a middleman relays two sticks; the community server (block
//! 1000, which has its own edit) applies everything and passes it on in one
//! command; the central server (block 2000) applies and shows its status.
//! Then the way back: central's receipt travels down through the community
//! server and the middleman (their same commands, run again) to each
//! laptop's next bundle; each laptop shows what arrived and prunes, and the
//! demo checks that only the entries central confirmed were pruned.
//! Every step is a real `ferry` command line, printed before it runs (in this
//! process, from the demo's folder, so a person can `cd` there and repeat
//! it). The central database must then equal
//! `fixtures/demo/expected-central.json`, row for row, and the community
//! server's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use ferry::node::Node;
use ferry::value::Value;

use super::output::out;
use super::{Outcome, Ui};

const SCHEMA: &str = include_str!("../../fixtures/demo/schema.sql");
const FIELD_SQL: [&str; 3] = [
    include_str!("../../fixtures/demo/field-1.sql"),
    include_str!("../../fixtures/demo/field-2.sql"),
    include_str!("../../fixtures/demo/field-3.sql"),
];
const COMMUNITY_SQL: &str = include_str!("../../fixtures/demo/community.sql");
const EXPECTED: &str = include_str!("../../fixtures/demo/expected-central.json");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work in this folder and keep it (default: a temporary folder, removed after).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints `$ ferry ARGS` and runs it in this process.
fn ferry(ui: &Ui, args: &[&str]) -> anyhow::Result<Outcome> {
    let words: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
    out(format!("$ ferry {}", words.join(" ")))?;
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    super::run_line(&args, ui).with_context(|| format!("ferry {}", words.join(" ")))
}

/// A word as a POSIX shell reads it back.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The app on `who` writes: each statement its own transaction, as the
/// app's requests are.
fn app_writes(who: &str, db: &Path, sql: &str, script: &str) -> anyhow::Result<()> {
    let stmts = statements(sql);
    out(format!(
        "# the app on {who} saves {} ({script})",
        super::apply::plural(stmts.len() as u64, "change", "changes")
    ))?;
    let conn = rusqlite::Connection::open(db)?;
    for stmt in stmts {
        conn.execute_batch(&stmt).with_context(|| format!("{who}: {stmt}"))?;
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    Ok(())
}

pub fn run(a: DemoArgs, ui: &Ui) -> anyhow::Result<Outcome> {
    let tmp;
    let root: PathBuf = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let back = std::env::current_dir()?;
    std::env::set_current_dir(&root)?;
    let result = story(ui);
    std::env::set_current_dir(back)?;
    let (community_db, central_db) = result?;
    let got = dump(&root.join(central_db))?;
    let expected: BTreeMap<String, Vec<Vec<serde_json::Value>>> = serde_json::from_str(EXPECTED)?;
    if got != expected {
        out(format!("central database:\n{}", serde_json::to_string_pretty(&got)?))?;
        anyhow::bail!("the central database differs from fixtures/demo/expected-central.json");
    }
    if dump(&root.join(community_db))? != got {
        anyhow::bail!("the community and central databases differ");
    }
    out("9. central equals the expected state (fixtures/demo/expected-central.json), and equals the community server")?;
    Ok(Outcome::Ok)
}

/// The demo's steps, run from its folder; the community and central databases.
fn story(ui: &Ui) -> anyhow::Result<(&'static str, &'static str)> {
    let quiet = Ui::new(true, ui.verbose);
    out(format!("ferry demo in {} (cd there to repeat any command below)", std::env::current_dir()?.display()))?;
    out("1. Six computers, each its own node: three field laptops, a middleman, a community and a central server")?;
    let laptops = ["field-1", "field-2", "field-3"];
    for (i, name) in laptops.iter().enumerate() {
        ferry(
            ui,
            &["--home", name, "node", "init", "--name", name, "--kind", "field", "--id-block", &(i + 1).to_string()],
        )?;
    }
    ferry(ui, &["--home", "middleman", "node", "init", "--name", "middleman", "--kind", "relay"])?;
    ferry(
        ui,
        &["--home", "community", "node", "init", "--name", "community", "--kind", "server", "--id-block", "1000"],
    )?;
    ferry(ui, &["--home", "central", "node", "init", "--name", "central", "--kind", "server", "--id-block", "2000"])?;

    out("2. Keys: each node prints its line with `ferry --home NAME key export`; the receivers run it")?;
    let line = |name: &str| -> anyhow::Result<Vec<String>> {
        let n = Node::open(Path::new(name))?;
        let mut words = vec!["trust".to_owned(), "add".into(), n.info.name.clone(), n.info.public_key.clone()];
        // The encryption key too, as `key export` prints it.
        words.extend(n.encryption_key().map(|k| k.to_string()));
        for r in n.info.roles() {
            words.push("--role".into());
            words.push(r.to_string());
        }
        Ok(words)
    };
    let trust = |receiver: &str, giver: &str| -> anyhow::Result<()> {
        let mut args = vec!["--home".to_owned(), receiver.to_owned()];
        args.extend(line(giver)?);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ferry(&quiet, &args).map(drop)
    };
    for receiver in ["middleman", "community", "central"] {
        for laptop in laptops {
            trust(receiver, laptop)?;
        }
    }
    trust("community", "middleman")?;
    trust("central", "middleman")?;
    trust("central", "community")?;
    // Receipts come back down: each computer trusts those above it, and
    // central as the archive (what its receipts confirm may be pruned).
    for laptop in laptops {
        trust(laptop, "middleman")?;
        trust(laptop, "community")?;
    }
    trust("middleman", "community")?;
    let archive = |receiver: &str| -> anyhow::Result<()> {
        let n = Node::open(Path::new("central"))?;
        let enc = n.encryption_key().map(|k| k.to_string()).unwrap_or_default();
        let mut args = vec!["--home", receiver, "trust", "add", &n.info.name, &n.info.public_key];
        if !enc.is_empty() {
            args.push(&enc);
        }
        args.extend(["--role", "archive"]);
        ferry(&quiet, &args).map(drop)
    };
    for receiver in ["field-1", "field-2", "field-3", "middleman", "community"] {
        archive(receiver)?;
    }
    // Participants' data travels encrypted: only the servers that apply it
    // can read it; the middleman carries it without any key.
    out("   participants' data travels encrypted: each laptop encrypts to the servers that apply it")?;
    for laptop in laptops {
        ferry(&quiet, &["--home", laptop, "node", "encrypt-to", "central", "community"])?;
    }

    let schema = |db: &str| -> anyhow::Result<()> {
        std::fs::create_dir_all(Path::new(db).parent().unwrap_or(Path::new(".")))?;
        rusqlite::Connection::open(db)?.execute_batch(SCHEMA)?;
        Ok(())
    };
    for (i, name) in laptops.iter().enumerate() {
        out(format!("3. {name}: the app's database is tracked, the app writes, the laptop bundles onto its stick"))?;
        let db = format!("{name}/app.sqlite3");
        schema(&db)?;
        ferry(&quiet, &["--home", name, "track", &db])?;
        app_writes(name, Path::new(&db), FIELD_SQL[i], &format!("fixtures/demo/{name}.sql"))?;
        ferry(ui, &["--home", name, "bundle", "create", "--db", &db, "--out", &format!("sticks/{name}")])?;
    }

    out("4. middleman: collects the sticks of field-1 and field-2, checks them, passes them on in one bundle")?;
    ferry(
        ui,
        &[
            "--home",
            "middleman",
            "bundle",
            "relay",
            "--from",
            "sticks/field-1",
            "sticks/field-2",
            "--out",
            "sticks/middleman-to-community",
        ],
    )?;

    out("5. community: its own app edits; then one command applies the middleman's bundle, field-3's stick and")?;
    out("   field-1's stick (a second route: its entries are applied once), bundles the edit and passes all on")?;
    let community_db = "community/app.sqlite3";
    schema(community_db)?;
    ferry(&quiet, &["--home", "community", "track", community_db])?;
    app_writes("community", Path::new(community_db), COMMUNITY_SQL, "fixtures/demo/community.sql")?;
    // The community server's one command, run again when the sticks come back.
    let community_hop = [
        "--home",
        "community",
        "bundle",
        "relay",
        "--from",
        "sticks/middleman-to-community",
        "sticks/field-3",
        "sticks/field-1",
        "--out",
        "sticks/community-to-central",
        "--apply",
        community_db,
    ];
    ferry(ui, &community_hop)?;

    out("6. central: applies what the community server passed on, and shows what it holds")?;
    let central_db = "central/app.sqlite3";
    schema(central_db)?;
    ferry(ui, &["--home", "central", "bundle", "apply", "--db", central_db, "sticks/community-to-central"])?;
    ferry(ui, &["--home", "central", "status", "--db", central_db])?;

    out("7. The way back: central's receipt (left on its stick) travels down with the same commands, run again")?;
    out("   as the sticks return: the community server, then the middleman, then each laptop's next bundle")?;
    let mut sent_before = Vec::new();
    for name in laptops {
        let db = format!("{name}/app.sqlite3");
        sent_before.push(ferry::capture::watermark(&ferry::capture::open_db(Path::new(&db))?)?.0);
    }
    ferry(ui, &community_hop)?;
    ferry(
        ui,
        &[
            "--home",
            "middleman",
            "bundle",
            "relay",
            "--from",
            "sticks/field-1",
            "sticks/field-2",
            "--out",
            "sticks/middleman-to-community",
        ],
    )?;
    for (i, name) in laptops.iter().enumerate() {
        let db = format!("{name}/app.sqlite3");
        app_writes(
            name,
            Path::new(&db),
            &format!(
                "INSERT INTO survey_household (village_id, head, members) VALUES ('ndh', 'Round two {}', 3)",
                i + 1
            ),
            "one more household, after the stick came back",
        )?;
        ferry(ui, &["--home", name, "bundle", "create", "--db", &db, "--out", &format!("sticks/{name}")])?;
        ferry(ui, &["--home", name, "status", "--db", &db])?;
        ferry(ui, &["--home", name, "prune", "--db", &db])?;
        // Only what central confirmed went: everything sent before the
        // stick came back; the new household's entry stays until it is
        // confirmed in turn.
        let conn = ferry::capture::open_db(Path::new(&db))?;
        let (rows, first): (i64, i64) =
            conn.query_row("SELECT count(*), COALESCE(MIN(seq), 0) FROM _ferry_journal", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let (sent, _) = ferry::capture::watermark(&conn)?;
        if first as u64 != sent_before[i] + 1 || rows as u64 != sent - sent_before[i] {
            anyhow::bail!(
                "{name}: after prune the journal holds {rows} rows from entry {first}; expected only the entries after {}",
                sent_before[i]
            );
        }
    }
    out("8. each laptop's journal now holds only the entries central has not confirmed yet")?;
    Ok((community_db, central_db))
}

/// The statements of a fixture script (one per `;`, comment lines dropped).
fn statements(sql: &str) -> Vec<String> {
    let code: String = sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    code.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Every app table's rows, in primary-key order, as JSON values.
fn dump(db: &Path) -> anyhow::Result<BTreeMap<String, Vec<Vec<serde_json::Value>>>> {
    let conn = rusqlite::Connection::open(db)?;
    let mut out = BTreeMap::new();
    for t in ferry::schema::tables(&conn)? {
        let order: Vec<String> = t.pk_columns().iter().map(|c| ferry::schema::quote(&c.name)).collect();
        let sql = format!("SELECT * FROM {} ORDER BY {}", ferry::schema::quote(&t.name), order.join(", "));
        let mut stmt = conn.prepare(&sql)?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n).map(|i| r.get::<_, rusqlite::types::Value>(i).map(Value::from)).collect::<Result<Vec<_>, _>>()
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let rows = rows
            .iter()
            .map(|r| r.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>())
            .collect::<Result<_, _>>()?;
        out.insert(t.name, rows);
    }
    Ok(out)
}
