//! `ferry demo`: the whole story on built-in fixtures, in a temporary folder.
//!
//! Three field laptops (id blocks 1–3) change a tracked app database and
//! bundle it; a middleman relays two sticks; the community server (which has
//! its own edits) applies everything, bundles its edit and relays on; the
//! central server applies and shows its status. The central database must
//! then equal `fixtures/demo/expected-central.json`, row for row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use ferry::apply::{apply, ApplyOptions};
use ferry::bundle::create::CreateOptions;
use ferry::capture::{create_from_db, track, TrackOptions};
use ferry::keys::Role;
use ferry::node::Node;
use ferry::progress::Silent;
use ferry::relay::{relay, RelayOptions, DEFAULT_MAX_SIZE};
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

pub fn run(a: DemoArgs, _ui: &Ui) -> anyhow::Result<Outcome> {
    let tmp;
    let root: &Path = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path()
        }
    };
    out(format!("ferry demo in {}", root.display()))?;
    let node = |name: &str, block: Option<u32>| Node::init(&root.join(name).join("home"), name, block);
    let fields = [node("field-1", Some(1))?, node("field-2", Some(2))?, node("field-3", Some(3))?];
    let middleman = node("middleman", None)?;
    let community = node("community", Some(4))?;
    let central = node("central", None)?;
    out("1. six nodes: three field laptops (id blocks 1-3), a middleman, a community server (block 4), central")?;

    for receiver in [&middleman, &community, &central] {
        let mut trust = receiver.trust()?;
        for f in &fields {
            trust.add(&f.info.name, &f.signing_key().verifying_key(), &[Role::Origin])?;
        }
        if receiver.id() != middleman.id() {
            trust.add("middleman", &middleman.signing_key().verifying_key(), &[Role::Relay])?;
        }
        if receiver.id() == central.id() {
            trust.add("community", &community.signing_key().verifying_key(), &[Role::Origin, Role::Relay])?;
        }
        receiver.save_trust(&trust)?;
    }
    out("2. keys exchanged: `ferry key export` on each, `ferry trust add` on the receivers")?;

    let app_db = |n: &Node| -> anyhow::Result<PathBuf> {
        let db = root.join(&n.info.name).join("app.sqlite3");
        rusqlite::Connection::open(&db)?.execute_batch(SCHEMA)?;
        Ok(db)
    };
    let stick = |name: &str| root.join("sticks").join(name);
    for (i, f) in fields.iter().enumerate() {
        let db = app_db(f)?;
        track(f, &db, &TrackOptions::default())?;
        // Each statement is its own transaction, as the app's requests are.
        let conn = rusqlite::Connection::open(&db)?;
        for stmt in statements(FIELD_SQL[i]) {
            conn.execute_batch(&stmt).with_context(|| format!("{}: {stmt}", f.info.name))?;
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        let r = create_from_db(f, &db, &CreateOptions { out_dir: stick(&f.info.name), since: None }, &mut Silent)?;
        out(format!("3. {}: ferry track, the app writes, bundle create --db → {} entries", f.info.name, r.entries))?;
    }

    let to_community = root.join("sticks").join("middleman-to-community");
    let r = relay(
        &middleman,
        &RelayOptions {
            inputs: vec![stick("field-1"), stick("field-2")],
            out_dir: to_community.clone(),
            move_inputs: false,
            max_size: DEFAULT_MAX_SIZE,
        },
        &mut Silent,
    )?;
    out(format!(
        "4. middleman: bundle relay from the sticks of field-1 and field-2 → {} bundle(s), {} rejected",
        r.written.len(),
        r.counts.rejected
    ))?;

    let community_db = app_db(&community)?;
    track(&community, &community_db, &TrackOptions::default())?;
    // field-1 also handed its stick to the community server directly: a second route.
    let inbox = vec![to_community.clone(), stick("field-3"), stick("field-1")];
    let inbox = ferry::bundle::find_bundles(&inbox)?;
    let r = apply(&community_db, &inbox, &community.trust()?, &ApplyOptions::default(), &mut Silent)?;
    out(format!(
        "5. community: bundle apply (middleman's bundle, field-3's stick, field-1's stick again) → {} applied, {} already applied (duplicates) skipped",
        r.totals.applied, r.totals.skipped
    ))?;
    rusqlite::Connection::open(&community_db)?.execute_batch(COMMUNITY_SQL)?;
    let own = stick("community");
    let r =
        create_from_db(&community, &community_db, &CreateOptions { out_dir: own.clone(), since: None }, &mut Silent)?;
    out(format!(
        "   community: its own edit, bundle create --db → {} entry (applied entries are not echoed)",
        r.entries
    ))?;
    let to_central = root.join("sticks").join("community-to-central");
    let r = relay(
        &community,
        &RelayOptions {
            inputs: vec![to_community, stick("field-3"), own],
            out_dir: to_central.clone(),
            move_inputs: false,
            max_size: DEFAULT_MAX_SIZE,
        },
        &mut Silent,
    )?;
    out(format!("   community: bundle relay → {} bundle(s) for central", r.written.len()))?;

    let central_db = app_db(&central)?;
    let r = apply(
        &central_db,
        &ferry::bundle::find_bundles(&[to_central])?,
        &central.trust()?,
        &ApplyOptions::default(),
        &mut Silent,
    )?;
    out(format!("6. central: bundle apply → {} applied, {} conflicts recorded", r.totals.applied, r.totals.conflicts))?;
    let status = ferry::apply::status::db_status(&central_db)?;
    let trust = central.trust()?;
    for o in &status.origins {
        let name = ferry::keys::NodeId::try_from(o.origin.clone()).ok();
        let name = name.as_ref().and_then(|id| trust.name_of(id)).unwrap_or("?");
        let ranges: Vec<String> = o.applied.iter().map(|(a, b)| format!("{a}..={b}")).collect();
        out(format!(
            "   ferry status --db: {name:<10} seq {} applied, {} missing ranges, {} conflicts, {} forks",
            ranges.join(", "),
            o.missing.len(),
            o.conflicts,
            o.forks
        ))?;
    }

    let got = dump(&central_db)?;
    let expected: BTreeMap<String, Vec<Vec<serde_json::Value>>> = serde_json::from_str(EXPECTED)?;
    if got != expected {
        out(format!("central database:\n{}", serde_json::to_string_pretty(&got)?))?;
        anyhow::bail!("the central database differs from fixtures/demo/expected-central.json");
    }
    if dump(&community_db)? != got {
        anyhow::bail!("the community and central databases differ");
    }
    out("7. central equals the expected state (fixtures/demo/expected-central.json), and equals the community server")?;
    Ok(Outcome::Ok)
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
