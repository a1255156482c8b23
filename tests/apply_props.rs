//! Convergence, as a property: random histories from several origins, cut
//! into random bundles, applied in random orders with random duplicates and
//! in random runs, always give the same database as applying everything
//! once in journal order. Re-applying changes nothing.

mod apply_support;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use apply_support::*;
use ferry::apply::{apply, ApplyOptions};
use ferry::keys::TrustStore;
use ferry::node::Node;
use ferry::progress::Silent;
use ferry::value::Value;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

struct Fixture {
    _dir: tempfile::TempDir,
    nodes: Vec<Arc<Node>>,
    trust: TrustStore,
}

/// Three real origins, made once for the whole test binary.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        let origins: Vec<Origin> = ["o1", "o2", "o3"].iter().map(|n| Origin::new(dir.path(), n)).collect();
        let trust = trust(&origins.iter().collect::<Vec<_>>());
        Fixture { nodes: origins.into_iter().map(|o| o.node).collect(), trust, _dir: dir }
    })
}

#[derive(Debug, Clone)]
enum Op {
    Insert { key: i64, a: i64, b: Option<i64> },
    Update { key: i64, a: Option<i64>, b: Option<i64> },
    Delete { key: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    // Mostly a few keys (so histories collide), sometimes keys on both sides
    // of a row-ledger group boundary (32).
    let key = prop_oneof![4 => 1i64..5, 1 => 30i64..34];
    prop_oneof![
        4 => (key.clone(), 0i64..100, proptest::option::of(0i64..100)).prop_map(|(key, a, b)| Op::Insert { key, a, b }),
        4 => (key.clone(), proptest::option::of(0i64..100), proptest::option::of(0i64..100))
            .prop_map(|(key, a, b)| Op::Update { key, a: a.or(if b.is_none() { Some(0) } else { None }), b }),
        2 => key.prop_map(|key| Op::Delete { key }),
    ]
}

/// One origin's history: (timestamp, op); timestamps collide on purpose.
fn history() -> impl Strategy<Value = Vec<(i64, Op)>> {
    proptest::collection::vec((0i64..25, op()), 0..10)
}

#[derive(Debug, Clone)]
struct Case {
    histories: Vec<Vec<(i64, Op)>>,
    /// Per origin, cut points into segments; per bundle, how many segments.
    cut_seed: u64,
    order_seeds: Vec<u64>,
}

fn case() -> impl Strategy<Value = Case> {
    (proptest::collection::vec(history(), 3), any::<u64>(), proptest::collection::vec(any::<u64>(), 3))
        .prop_map(|(histories, cut_seed, order_seeds)| Case { histories, cut_seed, order_seeds })
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

fn write_history(o: &mut Origin, h: &[(i64, Op)]) {
    for (ts, op) in h {
        match *op {
            Op::Insert { key, a, b } => {
                let mut f = vec![("a", Value::Integer(a))];
                if let Some(b) = b {
                    f.push(("b", Value::Integer(b)));
                }
                o.insert(*ts, key, &f)
            }
            Op::Update { key, a, b } => {
                let mut f = Vec::new();
                if let Some(a) = a {
                    f.push(("a", Value::Integer(a)));
                }
                if let Some(b) = b {
                    f.push(("b", Value::Integer(b)));
                }
                o.update(*ts, key, &f)
            }
            Op::Delete { key } => o.delete(*ts, key),
        };
    }
}

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER DEFAULT 7);";

/// A scratch folder in memory where there is one (no fsync cost), else the usual temp folder.
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("tmp")
}

fn check(c: &Case) -> Result<(), TestCaseError> {
    let f = fixture();
    let dir = scratch();
    let mut rng = Rng(c.cut_seed | 1);
    let mut bundles: Vec<PathBuf> = Vec::new();
    for (node, h) in f.nodes.iter().zip(&c.histories) {
        if h.is_empty() {
            continue;
        }
        let mut o = Origin::with_node(node.clone());
        write_history(&mut o, h);
        let n = o.lines.len() as u64;
        // Random segments, then random groups of consecutive segments per bundle.
        let mut segments = Vec::new();
        let mut first = 1;
        while first <= n {
            let last = (first + rng.below(4)).min(n);
            segments.push((first, last));
            first = last + 1;
        }
        let mut i = 0;
        while i < segments.len() {
            let take = (1 + rng.below(2) as usize).min(segments.len() - i);
            bundles.push(o.bundle(dir.path(), &segments[i..i + take], None));
            i += take;
        }
    }
    let opts = ApplyOptions::default();
    let reference = target(dir.path(), "reference.sqlite3", SCHEMA);
    let r = apply(&reference, &bundles, &f.trust, &opts, &mut Silent).expect("apply");
    prop_assert_eq!(r.refused, 0);
    let expected = dump(&reference);
    let again = apply(&reference, &bundles, &f.trust, &opts, &mut Silent).expect("apply");
    prop_assert_eq!(again.totals.applied, 0);
    prop_assert_eq!(dump(&reference), expected.clone(), "re-applying changed the database");
    for (k, seed) in c.order_seeds.iter().enumerate() {
        let mut rng = Rng(*seed | 1);
        let mut order: Vec<PathBuf> = bundles.clone();
        for _ in 0..rng.below(3) {
            if !bundles.is_empty() {
                order.push(bundles[rng.below(bundles.len() as u64) as usize].clone());
            }
        }
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let db = target(dir.path(), &format!("order{k}.sqlite3"), SCHEMA);
        // Split the arrivals into 1 to 3 apply runs.
        let runs = 1 + rng.below(3) as usize;
        let per = order.len().div_ceil(runs).max(1);
        for chunk in order.chunks(per) {
            apply(&db, chunk, &f.trust, &opts, &mut Silent).expect("apply");
        }
        prop_assert_eq!(dump(&db), expected.clone(), "order {:?}", order);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 500,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/apply_props.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_arrival_order_with_duplicates_gives_the_same_database(c in case()) {
        check(&c)?;
    }
}
