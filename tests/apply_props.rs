//! Convergence, against an oracle: random histories from three origins over
//! four tables (integer, TEXT and composite keys, a UNIQUE column, foreign
//! keys with and without ON DELETE CASCADE), with key changes, colliding
//! timestamps, clocks put back and a clock far in the future, cut into
//! random bundles, applied in random orders with random duplicates in one to
//! three runs, to a target that is itself tracked and edits and deletes rows
//! between runs. Every target must hold what the oracle (`tests/oracle/`,
//! written from `docs/APPLY.md`) says for the entries it received,
//! re-applying must change nothing, and every entry must be accounted for
//! exactly once.

mod apply_support;
mod oracle;
mod server_support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use apply_support::*;
use ferry::apply::{apply, ApplyOptions};
use ferry::journal::{Entry, Op, Row};
use ferry::keys::TrustStore;
use ferry::node::Node;
use ferry::progress::Silent;
use ferry::value::Value;
use oracle::Table;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rusqlite::Connection;

const SCHEMA: &str = "
CREATE TABLE site (id INTEGER PRIMARY KEY, name TEXT, code TEXT UNIQUE);
CREATE TABLE tag (code TEXT PRIMARY KEY, label TEXT, weight INTEGER DEFAULT 1);
CREATE TABLE visit (site_id INTEGER NOT NULL REFERENCES site(id) ON DELETE CASCADE, day INTEGER NOT NULL,
                    note TEXT, PRIMARY KEY (site_id, day)) WITHOUT ROWID;
CREATE TABLE sample (id INTEGER PRIMARY KEY, site_id INTEGER REFERENCES site(id), tag TEXT REFERENCES tag(code),
                     v INTEGER);";

/// The same schema for the oracle, parents first.
const TABLES: [Table; 4] = [
    Table {
        name: "site",
        key: &["id"],
        columns: &[("name", Value::Null), ("code", Value::Null)],
        unique: Some("code"),
        parents: &[],
    },
    Table {
        name: "tag",
        key: &["code"],
        columns: &[("label", Value::Null), ("weight", Value::Integer(1))],
        unique: None,
        parents: &[],
    },
    Table {
        name: "visit",
        key: &["site_id", "day"],
        columns: &[("note", Value::Null)],
        unique: None,
        parents: &[(&["site_id"], "site")],
    },
    Table {
        name: "sample",
        key: &["id"],
        columns: &[("site_id", Value::Null), ("tag", Value::Null), ("v", Value::Null)],
        unique: None,
        parents: &[(&["site_id"], "site"), (&["tag"], "tag")],
    },
];

struct Fixture {
    _dir: tempfile::TempDir,
    nodes: Vec<Arc<Node>>,
    server: Node,
    trust: TrustStore,
}

/// Three origins and a server (id block 1000) that tracks its target, made
/// once for the whole test binary.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        let origins: Vec<Origin> = ["o1", "o2", "o3"].iter().map(|n| Origin::new(dir.path(), n)).collect();
        let trust = trust(&origins.iter().collect::<Vec<_>>());
        let server = Node::init(&dir.path().join("server"), "server", Some(1000)).expect("server");
        Fixture { nodes: origins.into_iter().map(|o| o.node).collect(), trust, server, _dir: dir }
    })
}

/// How an entry's clock moves from the previous one's.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Forward(i64),
    /// The same microsecond as the previous entry (of this or any origin).
    Same,
    /// Put back: stamped before the entry ahead of it.
    Back(i64),
    /// Far in the future (year 9999): such an entry must wait, not win.
    Future,
}

#[derive(Debug, Clone)]
enum G {
    /// An insert that may leave `code` out (journals from files do), so a
    /// late delete can find columns written before it.
    InsSite(i64, u8, Option<Option<u8>>),
    UpdSite(i64, Option<u8>, Option<Option<u8>>),
    DelSite(i64),
    InsTag(u8, u8),
    UpdTag(u8, Option<u8>, Option<i64>),
    RenameTag(u8, u8),
    DelTag(u8),
    InsVisit(i64, i64, u8),
    UpdVisit(i64, i64, u8),
    DelVisit(i64, i64),
    InsSample(i64, Option<i64>, Option<u8>, i64),
    UpdSample(i64, Option<Option<i64>>, Option<i64>),
    DelSample(i64),
}

fn op() -> impl Strategy<Value = G> {
    let site = 1i64..5;
    let small = 0u8..3;
    prop_oneof![
        3 => (site.clone(), small.clone(), proptest::option::of(proptest::option::of(small.clone())))
            .prop_map(|(i, n, c)| G::InsSite(i, n, c)),
        2 => (site.clone(), proptest::option::of(small.clone()), proptest::option::of(proptest::option::of(small.clone())))
            .prop_map(|(i, n, c)| G::UpdSite(i, if n.is_none() && c.is_none() { Some(0) } else { n }, c)),
        1 => site.clone().prop_map(G::DelSite),
        2 => (small.clone(), small.clone()).prop_map(|(c, l)| G::InsTag(c, l)),
        1 => (small.clone(), proptest::option::of(small.clone()), proptest::option::of(0i64..3))
            .prop_map(|(c, l, w)| G::UpdTag(c, if l.is_none() && w.is_none() { Some(1) } else { l }, w)),
        1 => (small.clone(), 0u8..5).prop_map(|(a, b)| G::RenameTag(a, b)),
        1 => small.clone().prop_map(G::DelTag),
        2 => (site.clone(), 1i64..3, small.clone()).prop_map(|(s, d, n)| G::InsVisit(s, d, n)),
        1 => (site.clone(), 1i64..3, small.clone()).prop_map(|(s, d, n)| G::UpdVisit(s, d, n)),
        1 => (site.clone(), 1i64..3).prop_map(|(s, d)| G::DelVisit(s, d)),
        2 => (1i64..4, proptest::option::of(site.clone()), proptest::option::of(small.clone()), 0i64..9)
            .prop_map(|(i, s, t, v)| G::InsSample(i, s, t, v)),
        1 => (1i64..4, proptest::option::of(proptest::option::of(site.clone())), proptest::option::of(0i64..9))
            .prop_map(|(i, s, v)| G::UpdSample(i, s, if s.is_none() && v.is_none() { Some(1) } else { v })),
        1 => (1i64..4).prop_map(G::DelSample),
    ]
}

fn clock() -> impl Strategy<Value = Clock> {
    prop_oneof![8 => (1i64..4).prop_map(Clock::Forward), 3 => Just(Clock::Same), 1 => (1i64..6).prop_map(Clock::Back), 1 => Just(Clock::Future)]
}

/// One origin's history.
fn history() -> impl Strategy<Value = Vec<(Clock, G)>> {
    proptest::collection::vec((clock(), op()), 0..12)
}

/// A local edit the tracked target's own app makes between runs.
#[derive(Debug, Clone)]
enum Local {
    RenameSite(i64),
    NewSite(i64),
    DropSample(i64),
    DropVisits(i64),
    Weigh(u8),
    NewTag,
}

fn local() -> impl Strategy<Value = Local> {
    prop_oneof![
        (1i64..5).prop_map(Local::RenameSite),
        (1i64..3).prop_map(Local::NewSite),
        (1i64..4).prop_map(Local::DropSample),
        (1i64..5).prop_map(Local::DropVisits),
        (0u8..3).prop_map(Local::Weigh),
        Just(Local::NewTag),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    histories: Vec<Vec<(Clock, G)>>,
    /// Per origin, cut points into segments; per bundle, how many segments.
    cut_seed: u64,
    order_seeds: Vec<u64>,
    locals: Vec<Local>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(history(), 3),
        any::<u64>(),
        proptest::collection::vec(any::<u64>(), 2),
        proptest::collection::vec(local(), 0..4),
    )
        .prop_map(|(histories, cut_seed, order_seeds, locals)| Case { histories, cut_seed, order_seeds, locals })
}

/// A small deterministic generator for cuts and shuffles (seeded by proptest).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn r(cols: &[(&str, Value)]) -> Row {
    row(cols)
}
fn i(n: i64) -> Value {
    Value::Integer(n)
}
fn t(prefix: &str, n: u8) -> Value {
    Value::Text(format!("{prefix}{n}"))
}

/// What an origin knows of its own rows: what a key change and a cascade need.
#[derive(Default)]
struct Model {
    tags: HashMap<u8, (Value, Value)>,
    visits: Vec<(i64, i64)>,
}

/// Journals an origin's history the way capture would (a key change as a
/// delete and an insert of the whole row; a site's delete cascading to its
/// visits).
fn write_history(o: &mut Origin, h: &[(Clock, G)]) {
    let mut ts: i64 = 1_000;
    let mut m = Model::default();
    for (clock, g) in h {
        ts = match clock {
            Clock::Forward(n) => ts + n,
            Clock::Same => ts,
            Clock::Back(n) => ts - n,
            Clock::Future => 253_402_300_000_000_000,
        };
        // After a far-future entry the laptop's clock is right again.
        let at = ts;
        if matches!(clock, Clock::Future) {
            ts = 1_000 + o.lines.len() as i64;
        }
        match g.clone() {
            G::InsSite(id, n, c) => {
                let mut f = vec![("name", t("n", n))];
                if let Some(c) = c {
                    f.push(("code", c.map_or(Value::Null, |c| t("C", c))));
                }
                o.push(at, Op::Insert, "site", r(&[("id", i(id))]), Some(r(&f)));
            }
            G::UpdSite(id, n, c) => {
                let mut f = Vec::new();
                if let Some(n) = n {
                    f.push(("name", t("n", n)));
                }
                if let Some(c) = c {
                    f.push(("code", c.map_or(Value::Null, |c| t("C", c))));
                }
                o.push(at, Op::Update, "site", r(&[("id", i(id))]), Some(r(&f)));
            }
            G::DelSite(id) => {
                for (s, d) in m.visits.clone().into_iter().filter(|(s, _)| *s == id) {
                    o.push(at, Op::Delete, "visit", r(&[("site_id", i(s)), ("day", i(d))]), None);
                    m.visits.retain(|v| *v != (s, d));
                }
                o.push(at, Op::Delete, "site", r(&[("id", i(id))]), None);
            }
            G::InsTag(c, l) => {
                o.push(
                    at,
                    Op::Insert,
                    "tag",
                    r(&[("code", t("t", c))]),
                    Some(r(&[("label", t("L", l)), ("weight", i(1))])),
                );
                m.tags.insert(c, (t("L", l), i(1)));
            }
            G::UpdTag(c, l, w) => {
                let mut f = Vec::new();
                if let Some(l) = l {
                    f.push(("label", t("L", l)));
                }
                if let Some(w) = w {
                    f.push(("weight", i(w)));
                }
                o.push(at, Op::Update, "tag", r(&[("code", t("t", c))]), Some(r(&f)));
                if let Some(row) = m.tags.get_mut(&c) {
                    if let Some(l) = l {
                        row.0 = t("L", l);
                    }
                    if let Some(w) = w {
                        row.1 = i(w);
                    }
                }
            }
            G::RenameTag(from, to) => {
                // Only a tag this origin has can be renamed, to a code it has not.
                let Some(row) = m.tags.get(&from).cloned().filter(|_| from != to && !m.tags.contains_key(&to)) else {
                    continue;
                };
                o.push(at, Op::Delete, "tag", r(&[("code", t("t", from))]), None);
                o.push(
                    at,
                    Op::Insert,
                    "tag",
                    r(&[("code", t("t", to))]),
                    Some(r(&[("label", row.0.clone()), ("weight", row.1.clone())])),
                );
                m.tags.remove(&from);
                m.tags.insert(to, row);
            }
            G::DelTag(c) => {
                o.push(at, Op::Delete, "tag", r(&[("code", t("t", c))]), None);
                m.tags.remove(&c);
            }
            G::InsVisit(s, d, n) => {
                o.push(
                    at,
                    Op::Insert,
                    "visit",
                    r(&[("site_id", i(s)), ("day", i(d))]),
                    Some(r(&[("note", t("v", n))])),
                );
                if !m.visits.contains(&(s, d)) {
                    m.visits.push((s, d));
                }
            }
            G::UpdVisit(s, d, n) => {
                o.push(
                    at,
                    Op::Update,
                    "visit",
                    r(&[("site_id", i(s)), ("day", i(d))]),
                    Some(r(&[("note", t("v", n))])),
                );
            }
            G::DelVisit(s, d) => {
                o.push(at, Op::Delete, "visit", r(&[("site_id", i(s)), ("day", i(d))]), None);
                m.visits.retain(|v| *v != (s, d));
            }
            G::InsSample(id, s, tg, v) => {
                o.push(
                    at,
                    Op::Insert,
                    "sample",
                    r(&[("id", i(id))]),
                    Some(r(&[
                        ("site_id", s.map_or(Value::Null, i)),
                        ("tag", tg.map_or(Value::Null, |c| t("t", c))),
                        ("v", i(v)),
                    ])),
                );
            }
            G::UpdSample(id, s, v) => {
                let mut f = Vec::new();
                if let Some(s) = s {
                    f.push(("site_id", s.map_or(Value::Null, i)));
                }
                if let Some(v) = v {
                    f.push(("v", i(v)));
                }
                o.push(at, Op::Update, "sample", r(&[("id", i(id))]), Some(r(&f)));
            }
            G::DelSample(id) => {
                o.push(at, Op::Delete, "sample", r(&[("id", i(id))]), None);
            }
        }
    }
}

/// A scratch folder in memory where there is one (no fsync cost), else the usual temp folder.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("tmp")
}

/// The local edit, made by the target's app (foreign keys enforced, as
/// Django does); one the database refuses changes nothing.
fn edit(db: &Path, l: &Local, n: usize) {
    let c = Connection::open(db).expect("open");
    c.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
    let sql = match l {
        Local::RenameSite(id) => format!("UPDATE site SET name = 'local{n}' WHERE id = {id}"),
        Local::NewSite(k) => format!("INSERT OR IGNORE INTO site (id, name) VALUES ({}, 'mine')", (1000i64 << 32) + k),
        Local::DropSample(id) => format!("DELETE FROM sample WHERE id = {id}"),
        Local::DropVisits(s) => format!("DELETE FROM visit WHERE site_id = {s}"),
        Local::Weigh(c) => format!("UPDATE tag SET weight = weight + 10 WHERE code = 't{c}'"),
        Local::NewTag => "INSERT OR IGNORE INTO tag (code, label) VALUES ('tl', 'local')".into(),
    };
    let _ = c.execute_batch(&sql);
}

/// Every row of every table, by key.
fn dump(db: &Path) -> BTreeMap<&'static str, oracle::Rows> {
    let c = Connection::open(db).expect("open");
    let mut out = BTreeMap::new();
    for t in &TABLES {
        let cols: Vec<&str> = t.key.iter().copied().chain(t.columns.iter().map(|(c, _)| *c)).collect();
        let sql = format!("SELECT {} FROM {}", cols.join(", "), t.name);
        let mut stmt = c.prepare(&sql).expect("select");
        let mut rows = stmt.query([]).expect("rows");
        let mut table = oracle::Rows::new();
        while let Some(row) = rows.next().expect("row") {
            let v = |i: usize| Value::from(row.get::<_, rusqlite::types::Value>(i).expect("value"));
            let key: Vec<Value> = (0..t.key.len()).map(v).collect();
            let vals = t.columns.iter().enumerate().map(|(j, (c, _))| ((*c).to_owned(), v(t.key.len() + j))).collect();
            table.insert(oracle::key_of(&key), vals);
        }
        out.insert(t.name, table);
    }
    out
}

/// The target's own captured edits, as entries.
fn local_entries(db: &Path) -> Vec<Entry> {
    let c = Connection::open(db).expect("open");
    let last: i64 = c.query_row("SELECT coalesce(max(seq), 0) FROM _ferry_journal", [], |r| r.get(0)).expect("last");
    let rows = ferry::capture::JournalRows::new(&c, "target", 1, last as u64).expect("journal");
    rows.map(|r| r.expect("entry").0).collect()
}

/// Every entry is accounted for: per origin, received = the outcomes, and
/// the parked and quarantined counts match what the ledger keeps.
fn accounted(db: &Path, received: &HashMap<String, u64>) -> Result<(), TestCaseError> {
    let c = Connection::open(db).expect("open");
    let s = ferry::apply::status::read_status(&c, "t").expect("status");
    prop_assert!(s.outcomes.adds_up(), "{:?}", s.outcomes);
    for o in &s.origins {
        prop_assert!(o.outcomes.adds_up(), "{}: {:?}", o.origin, o.outcomes);
        prop_assert_eq!(
            o.outcomes.received,
            received.get(&o.origin).copied().unwrap_or(0),
            "received from {}",
            o.origin
        );
        let n = |sql: &str| c.query_row(sql, [&o.origin], |r| r.get::<_, i64>(0)).expect(sql) as u64;
        let parked = n("SELECT count(*) FROM _ferry_parked WHERE origin = ?1 AND counted = 1")
            + n("SELECT count(*) FROM _ferry_waiting WHERE origin = ?1");
        prop_assert_eq!(o.outcomes.parked, parked, "parked of {}", o.origin);
        let quarantined = n("SELECT count(*) FROM _ferry_quarantine WHERE origin = ?1")
            + n("SELECT count(*) FROM _ferry_held WHERE origin = ?1 AND seq IS NOT NULL")
            + n("SELECT coalesce(sum(entries), 0) FROM _ferry_forks WHERE origin = ?1");
        prop_assert_eq!(o.outcomes.quarantined, quarantined, "quarantined of {}", o.origin);
    }
    Ok(())
}

/// The bundles of a case (file, origin, entries) and every entry in them.
#[allow(clippy::type_complexity)]
fn bundles_of(c: &Case, dir: &Path) -> (Vec<(PathBuf, String, u64)>, Vec<(String, Entry)>) {
    let f = fixture();
    let mut rng = Rng(c.cut_seed | 1);
    let mut bundles: Vec<(PathBuf, String, u64)> = Vec::new();
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for (node, h) in f.nodes.iter().zip(&c.histories) {
        let mut o = Origin::with_node(node.clone());
        write_history(&mut o, h);
        let n = o.lines.len() as u64;
        entries.extend(o.lines.iter().map(|l| (o.id(), Entry::parse(l).expect("entry"))));
        // Random segments, then random groups of consecutive segments per bundle.
        let mut segments = Vec::new();
        let mut first = 1;
        while first <= n {
            let last = (first + rng.below(4)).min(n);
            segments.push((first, last));
            first = last + 1;
        }
        let mut k = 0;
        while k < segments.len() {
            let take = (1 + rng.below(2) as usize).min(segments.len() - k);
            let count: u64 = segments[k..k + take].iter().map(|(a, b)| b - a + 1).sum();
            bundles.push((o.bundle(dir, &segments[k..k + take], None), o.id(), count));
            k += take;
        }
    }
    (bundles, entries)
}

fn check(c: &Case) -> Result<(), TestCaseError> {
    let f = fixture();
    let dir = scratch();
    let (bundles, entries) = bundles_of(c, dir.path());
    let opts = ApplyOptions::default();
    let now = ferry::journal::Timestamp::now().0;
    for (k, seed) in c.order_seeds.iter().enumerate() {
        let mut rng = Rng(*seed | 1);
        let mut order = bundles.clone();
        for _ in 0..rng.below(3) {
            if !bundles.is_empty() {
                order.push(bundles[rng.below(bundles.len() as u64) as usize].clone());
            }
        }
        for j in (1..order.len()).rev() {
            order.swap(j, rng.below(j as u64 + 1) as usize);
        }
        let db = target(dir.path(), &format!("order{k}.sqlite3"), SCHEMA);
        ferry::capture::track(&f.server, &db, &Default::default()).expect("track the target");
        // Split the arrivals into 1 to 3 apply runs, the target's app editing between them.
        let runs = 1 + rng.below(3) as usize;
        let per = order.len().div_ceil(runs).max(1);
        let mut received: HashMap<String, u64> = HashMap::new();
        for (run, chunk) in order.chunks(per).enumerate() {
            for (n, l) in c.locals.iter().enumerate().filter(|(n, _)| n % runs == run) {
                edit(&db, l, n);
            }
            let files: Vec<PathBuf> = chunk.iter().map(|b| b.0.clone()).collect();
            let r = apply(&db, &files, &f.trust, &opts, &mut Silent).expect("apply");
            prop_assert_eq!(r.refused, 0, "{:?}", r);
            for b in chunk {
                *received.entry(b.1.clone()).or_default() += b.2;
            }
        }
        // The target's own edits count too, once folded in by a run.
        let local = local_entries(&db);
        let folded = apply(&db, &[], &f.trust, &opts, &mut Silent).expect("fold the last local edits");
        prop_assert_eq!(folded.refused, 0);
        received.insert(f.server.id().to_string(), local.len() as u64);
        let mut all = entries.clone();
        all.extend(local.into_iter().map(|e| (f.server.id().to_string(), e)));
        let want = oracle::expected(&TABLES, &all, now);
        let got = dump(&db);
        prop_assert_eq!(&got, &want, "order {}: {:?}", k, order.iter().map(|b| b.0.file_name()).collect::<Vec<_>>());
        accounted(&db, &received)?;

        // Re-applying everything changes nothing.
        let files: Vec<PathBuf> = bundles.iter().map(|b| b.0.clone()).collect();
        let again = apply(&db, &files, &f.trust, &opts, &mut Silent).expect("apply again");
        prop_assert_eq!(again.totals.applied + again.totals.parked + again.totals.superseded, 0, "{:?}", again.totals);
        prop_assert_eq!(dump(&db), want, "re-applying changed the database");
        for b in &bundles {
            *received.entry(b.1.clone()).or_default() += b.2;
        }
        accounted(&db, &received)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // FERRY_PROPTEST_CASES=5000 for a longer search.
        cases: std::env::var("FERRY_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(300),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/apply_oracle.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_arrival_order_gives_what_the_oracle_says(c in case()) {
        check(&c)?;
    }
}

/// The schema on PostgreSQL as Django makes it there: foreign keys
/// deferrable, without cascades in the database (Django cascades in Python,
/// and the origins journal what their cascades did).
const PG_SCHEMA: &str = "
CREATE TABLE site (id bigint PRIMARY KEY, name text, code text UNIQUE);
CREATE TABLE tag (code text PRIMARY KEY, label text, weight bigint DEFAULT 1);
CREATE TABLE visit (site_id bigint NOT NULL REFERENCES site(id) DEFERRABLE INITIALLY DEFERRED, day bigint NOT NULL,
                    note text, PRIMARY KEY (site_id, day));
CREATE TABLE sample (id bigint PRIMARY KEY, site_id bigint REFERENCES site(id) DEFERRABLE INITIALLY DEFERRED,
                     tag text REFERENCES tag(code) DEFERRABLE INITIALLY DEFERRED, v bigint);";

/// Every row of every table of a PostgreSQL target, by key, as [`dump`] reads SQLite.
fn pg_dump(db: &server_support::PgDb) -> BTreeMap<&'static str, oracle::Rows> {
    let url = server_support::with_db(&server_support::pg_admin(), &db.name);
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let ints = ["id", "weight", "site_id", "day", "v"];
    let mut out = BTreeMap::new();
    for t in &TABLES {
        let cols: Vec<&str> = t.key.iter().copied().chain(t.columns.iter().map(|(c, _)| *c)).collect();
        let sql = format!(
            "SELECT {} FROM {}",
            cols.iter().map(|c| format!("{c}::text")).collect::<Vec<_>>().join(", "),
            t.name
        );
        let mut table = oracle::Rows::new();
        for row in c.query(&sql, &[]).expect("select") {
            let v = |i: usize| match row.get::<_, Option<String>>(i) {
                None => Value::Null,
                Some(s) if ints.contains(&cols[i]) => Value::Integer(s.parse().expect("integer")),
                Some(s) => Value::Text(s),
            };
            let key: Vec<Value> = (0..t.key.len()).map(v).collect();
            let vals = t.columns.iter().enumerate().map(|(j, (c, _))| ((*c).to_owned(), v(t.key.len() + j))).collect();
            table.insert(oracle::key_of(&key), vals);
        }
        out.insert(t.name, table);
    }
    out
}

/// The same random histories, cut into the same bundles and applied in the
/// same order and runs, give the same database on SQLite and PostgreSQL:
/// what the oracle says; re-applying changes nothing; every entry is
/// accounted for.
fn check_engines(c: &Case) -> Result<(), TestCaseError> {
    let f = fixture();
    let dir = scratch();
    let (bundles, entries) = bundles_of(c, dir.path());
    let opts = ApplyOptions::default();
    let now = ferry::journal::Timestamp::now().0;
    let mut rng = Rng(c.order_seeds[0] | 1);
    let mut order = bundles.clone();
    for _ in 0..rng.below(3) {
        if !bundles.is_empty() {
            order.push(bundles[rng.below(bundles.len() as u64) as usize].clone());
        }
    }
    for j in (1..order.len()).rev() {
        order.swap(j, rng.below(j as u64 + 1) as usize);
    }
    let lite = target(dir.path(), "lite.sqlite3", SCHEMA);
    let pg = server_support::PgDb::new(PG_SCHEMA);
    let url = server_support::pg_url(&pg.name);
    let ferry::target::Target::Server(server) = ferry::target::Target::parse(url.as_ref()).expect("url") else {
        panic!("{url} names no server");
    };
    let runs = 1 + rng.below(3) as usize;
    let per = order.len().div_ceil(runs).max(1);
    let mut received: HashMap<String, u64> = HashMap::new();
    for chunk in order.chunks(per) {
        let files: Vec<PathBuf> = chunk.iter().map(|b| b.0.clone()).collect();
        let a = apply(&lite, &files, &f.trust, &opts, &mut Silent).expect("apply to SQLite");
        let b = ferry::apply::apply_server(&server, &files, &f.trust, &opts, &mut Silent).expect("apply to PostgreSQL");
        prop_assert_eq!(a.refused + b.refused, 0, "{:?} {:?}", a, b);
        prop_assert_eq!(a.totals, b.totals, "the same outcomes on both engines");
        for b in chunk {
            *received.entry(b.1.clone()).or_default() += b.2;
        }
    }
    let want = oracle::expected(&TABLES, &entries, now);
    prop_assert_eq!(&dump(&lite), &want, "SQLite");
    prop_assert_eq!(&pg_dump(&pg), &want, "PostgreSQL");
    let s = ferry::apply::status::db_status(Path::new(&url)).expect("status");
    prop_assert!(s.outcomes.adds_up(), "{:?}", s.outcomes);
    for o in &s.origins {
        prop_assert_eq!(
            o.outcomes.received,
            received.get(&o.origin).copied().unwrap_or(0),
            "received from {}",
            o.origin
        );
    }
    let files: Vec<PathBuf> = bundles.iter().map(|b| b.0.clone()).collect();
    let again = ferry::apply::apply_server(&server, &files, &f.trust, &opts, &mut Silent).expect("apply again");
    prop_assert_eq!(again.totals.applied + again.totals.parked + again.totals.superseded, 0, "{:?}", again.totals);
    prop_assert_eq!(pg_dump(&pg), want, "re-applying changed the PostgreSQL database");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Each case makes a PostgreSQL database; FERRY_PROPTEST_SERVER_CASES=500 for a longer search.
        cases: std::env::var("FERRY_PROPTEST_SERVER_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/apply_engines.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn sqlite_and_postgres_converge_to_what_the_oracle_says(c in case()) {
        check_engines(&c)?;
    }
}
