//! The oracle: what a target must hold after applying a set of entries,
//! computed straight from the rules of `docs/APPLY.md` with plain maps, no
//! ledger, no SQL, no arrival order. `tests/apply_props.rs` compares real
//! `bundle apply` runs with it.
//!
//! 1. Entries are deduplicated by (origin, seq); entries dated more than a
//!    day ahead of now wait (they are left out).
//! 2. Per row key, with versions ordered by (timestamp, origin id, seq):
//!    the row is present iff its newest insert is newer than its newest
//!    delete; each column holds the value of the newest insert or update
//!    newer than that delete, else the column's default.
//! 3. A present row stands in its table iff its parents stand and no row
//!    that stands has the same value of a unique column with an older claim
//!    (the version of that column's value, or the row's insert). Tables are
//!    taken parents first, rows in claim order; the rest are held.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use ferry::journal::{Entry, Op};
use ferry::value::Value;

/// A version: (timestamp, origin node id, seq).
pub type Ver = (i64, String, u64);

/// One table of the schema, as the oracle needs it.
pub struct Table {
    pub name: &'static str,
    pub key: &'static [&'static str],
    /// Non-key columns with their defaults.
    pub columns: &'static [(&'static str, Value)],
    /// A column with a UNIQUE constraint.
    pub unique: Option<&'static str>,
    /// (columns, parent table): the parent's key.
    pub parents: &'static [(&'static [&'static str], &'static str)],
}

/// Rows by key (the key values as a JSON array), each its column values by name.
pub type Rows = BTreeMap<String, BTreeMap<String, Value>>;

/// A key as [`Rows`] holds it.
pub fn key_of(vals: &[Value]) -> String {
    serde_json::to_string(vals).expect("key json")
}

/// What stands in each table (held rows left out).
pub fn expected(schema: &[Table], entries: &[(String, Entry)], now: i64) -> BTreeMap<&'static str, Rows> {
    // 1. Each (origin, seq) once; nothing dated more than a day ahead.
    let mut seen = BTreeSet::new();
    let mut writes: Vec<(Ver, &Entry)> = Vec::new();
    for (origin, e) in entries {
        if seen.insert((origin.clone(), e.seq)) && e.ts.0 <= now + 24 * 3600 * 1_000_000 {
            writes.push(((e.ts.0, origin.clone(), e.seq), e));
        }
    }
    writes.sort_by(|a, b| a.0.cmp(&b.0));

    // 2. Per key: newest insert, newest delete, and every column write.
    #[derive(Default)]
    struct Key {
        ins: Option<Ver>,
        del: Option<Ver>,
        cols: BTreeMap<String, Vec<(Ver, Value)>>,
    }
    let mut keys: BTreeMap<(&str, String), Key> = BTreeMap::new();
    for (v, e) in &writes {
        let t = schema.iter().find(|t| t.name == e.table).expect("table in schema");
        let key: Vec<Value> = t.key.iter().map(|k| e.pk.get(k).cloned().expect("key value")).collect();
        let k = keys.entry((t.name, key_of(&key))).or_default();
        match e.op {
            Op::Insert => k.ins = Some(v.clone()),
            Op::Delete => k.del = Some(v.clone()),
            Op::Update => {}
        }
        for (c, val) in e.fields.iter().flat_map(|f| f.0.iter()) {
            if !t.key.contains(&c.as_str()) {
                k.cols.entry(c.clone()).or_default().push((v.clone(), val.clone()));
            }
        }
    }
    let after = |v: &Ver, del: &Option<Ver>| del.as_ref().is_none_or(|d| v > d);
    // Present rows, with each column's value and version (None: the default).
    #[allow(clippy::type_complexity)]
    let mut present: BTreeMap<&str, Vec<(String, BTreeMap<String, (Value, Option<Ver>)>, Ver)>> = BTreeMap::new();
    for ((table, key), k) in &keys {
        let Some(ins) = k.ins.as_ref().filter(|i| after(i, &k.del)) else { continue };
        let t = schema.iter().find(|t| t.name == *table).expect("table");
        let mut row = BTreeMap::new();
        for (c, default) in t.columns {
            let newest =
                k.cols.get(*c).and_then(|ws| ws.iter().filter(|(v, _)| after(v, &k.del)).max_by(|a, b| a.0.cmp(&b.0)));
            row.insert(
                (*c).to_owned(),
                match newest {
                    Some((v, val)) => (val.clone(), Some(v.clone())),
                    None => (default.clone(), None),
                },
            );
        }
        present.entry(table).or_default().push((key.clone(), row, ins.clone()));
    }

    // 3. What stands: parents first (the schema lists them first), rows by claim.
    let mut out: BTreeMap<&'static str, Rows> = BTreeMap::new();
    for t in schema {
        let mut rows = present.remove(t.name).unwrap_or_default();
        let claim = |row: &BTreeMap<String, (Value, Option<Ver>)>, ins: &Ver| -> Ver {
            t.unique.and_then(|c| row[c].1.clone()).unwrap_or_else(|| ins.clone())
        };
        rows.sort_by_key(|a| claim(&a.1, &a.2));
        let mut stands: Rows = BTreeMap::new();
        for (key, row, _) in rows {
            let key_vals: Vec<Value> = serde_json::from_str(&key).expect("key");
            let value_of = |c: &str| -> Value {
                match t.key.iter().position(|k| *k == c) {
                    Some(i) => key_vals[i].clone(),
                    None => row[c].0.clone(),
                }
            };
            let parents_stand = t.parents.iter().all(|(cols, parent)| {
                let vals: Vec<Value> = cols.iter().map(|c| value_of(c)).collect();
                vals.contains(&Value::Null) || out.get(parent).is_some_and(|p| p.contains_key(&key_of(&vals)))
            });
            let clashes = t.unique.is_some_and(|c| {
                let v = value_of(c);
                v != Value::Null && stands.values().any(|r| r.get(c) == Some(&v))
            });
            if parents_stand && !clashes {
                stands.insert(key, row.into_iter().map(|(c, (v, _))| (c, v)).collect());
            }
        }
        out.insert(t.name, stands);
    }
    out
}
