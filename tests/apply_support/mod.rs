//! Helpers for the apply tests: origins with real node keys that write
//! journals and cut them into signed bundles through the library.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry::bundle::writer::copy_file;
use ferry::bundle::{write_bundle, SegmentBuilder};
use ferry::chain::ChainHash;
use ferry::journal::{Entry, Op, Row, Timestamp};
use ferry::keys::{Role, TrustStore};
use ferry::node::Node;
use ferry::value::Value;

/// An origin: a real node and the journal it has written so far.
pub struct Origin {
    pub node: Arc<Node>,
    pub lines: Vec<Vec<u8>>,
}

impl Origin {
    pub fn new(dir: &Path, name: &str) -> Origin {
        let node = Node::init(&dir.join(name), name, None).expect("node init");
        Origin { node: Arc::new(node), lines: Vec::new() }
    }

    /// A fresh journal for an existing node (cheap: no key generation).
    pub fn with_node(node: Arc<Node>) -> Origin {
        Origin { node, lines: Vec::new() }
    }

    pub fn id(&self) -> String {
        self.node.id().to_string()
    }

    /// Appends an entry and returns its seq.
    pub fn push(&mut self, ts: i64, op: Op, table: &str, pk: Row, fields: Option<Row>) -> u64 {
        let seq = self.lines.len() as u64 + 1;
        let e = Entry { seq, ts: Timestamp(ts), op, table: table.to_owned(), pk, fields };
        self.lines.push(e.to_line());
        seq
    }

    pub fn insert(&mut self, ts: i64, id: i64, fields: &[(&str, Value)]) -> u64 {
        self.push(ts, Op::Insert, "t", id_row(id), Some(row(fields)))
    }
    pub fn update(&mut self, ts: i64, id: i64, fields: &[(&str, Value)]) -> u64 {
        self.push(ts, Op::Update, "t", id_row(id), Some(row(fields)))
    }
    pub fn delete(&mut self, ts: i64, id: i64) -> u64 {
        self.push(ts, Op::Delete, "t", id_row(id), None)
    }

    pub fn chain_at(&self, seq: u64) -> ChainHash {
        self.lines[..seq as usize].iter().fold(ChainHash::GENESIS, |h, l| h.next(l))
    }

    /// A bundle holding segments `ranges` (each `first..=last`) of this journal.
    pub fn bundle(&self, out: &Path, ranges: &[(u64, u64)], schema: Option<&str>) -> PathBuf {
        let mut built = Vec::new();
        for &(first, last) in ranges {
            let mut b = SegmentBuilder::new(self.node.id().clone(), self.chain_at(first - 1), out).expect("builder");
            for seq in first..=last {
                let line = &self.lines[seq as usize - 1];
                let e = Entry::parse(line).expect("entry");
                b.push(&e, line).expect("push");
            }
            built.push(b.finish(schema.map(str::to_owned), self.node.signing_key()).expect("finish"));
        }
        let descriptors: Vec<_> = built.iter().map(|b| b.descriptor.clone()).collect();
        let records: Vec<_> = built.iter().map(|b| b.record.clone()).collect();
        let w = write_bundle(out, records, &descriptors, self.node.signing_key(), |i, w| copy_file(&built[i].file, w))
            .expect("write bundle");
        w.path
    }
}

pub fn id_row(id: i64) -> Row {
    Row(vec![("id".into(), Value::Integer(id))])
}

pub fn row(fields: &[(&str, Value)]) -> Row {
    Row(fields.iter().map(|(c, v)| ((*c).to_owned(), v.clone())).collect())
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// A trust store that accepts every origin as an origin.
pub fn trust(origins: &[&Origin]) -> TrustStore {
    let mut t = TrustStore::default();
    for o in origins {
        t.add(&o.node.info.name, &o.node.signing_key().verifying_key(), &[Role::Origin]).expect("trust");
    }
    t
}

/// A target database with the test schema.
pub fn target(dir: &Path, name: &str, ddl: &str) -> PathBuf {
    let p = dir.join(name);
    let c = rusqlite::Connection::open(&p).expect("open");
    c.execute_batch(ddl).expect("ddl");
    p
}

pub const SIMPLE: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER DEFAULT 7);";

/// Every user table's rows, in key order, as text.
pub fn dump(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).expect("open");
    let mut out = String::new();
    for t in ferry::schema::tables(&c).expect("tables") {
        out.push_str(&format!("table {}\n", t.name));
        let sql = format!("SELECT * FROM {} ORDER BY rowid", ferry::schema::quote(&t.name));
        let mut stmt = c.prepare(&sql).expect("prepare");
        let n = stmt.column_count();
        let mut rows = stmt.query([]).expect("query");
        while let Some(r) = rows.next().expect("row") {
            let vals: Vec<Value> =
                (0..n).map(|i| Value::from(r.get::<_, rusqlite::types::Value>(i).expect("value"))).collect();
            out.push_str(&serde_json::to_string(&vals).expect("json"));
            out.push('\n');
        }
    }
    out
}

pub fn count(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open");
    c.query_row(sql, [], |r| r.get(0)).expect("count")
}
