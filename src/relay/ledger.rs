//! The relay ledger: what this node carried, in its home's `state.sqlite3`.
//!
//! One row per segment passed on: its identity (origin, seq range, chain
//! hashes), what it holds (entry count, per-table counts, time span), where it
//! came from (the bundle file and the `--from` folder, i.e. the stick) and
//! where it went (the bundle written), and when. Rows are written as
//! *pending* before their bundle is written and completed after it is
//! durable, so a relay killed in between can tell, on the next run, which
//! bundles in the output folder it finished ([`Ledger::recover`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::bundle::{BundleReader, OpCounts, SegmentDescriptor};
use crate::chain::ChainHash;
use crate::journal::Timestamp;
use crate::keys::NodeId;
use crate::node::Node;

use super::RelayError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS relay_carried (
    origin            TEXT NOT NULL,
    first_seq         INTEGER NOT NULL,
    last_seq          INTEGER NOT NULL,
    chain_after       TEXT NOT NULL,
    chain_before      TEXT NOT NULL,
    count             INTEGER NOT NULL,
    ts_min            INTEGER NOT NULL,
    ts_max            INTEGER NOT NULL,
    tables            TEXT NOT NULL,
    zstd_len          INTEGER NOT NULL,
    descriptor_sha256 TEXT NOT NULL,
    input             TEXT NOT NULL,
    source            TEXT NOT NULL,
    output            TEXT,
    carried_at        INTEGER NOT NULL,
    PRIMARY KEY (origin, first_seq, last_seq, chain_after)
) WITHOUT ROWID;
";

/// One segment this relay carried (or is carrying, while `output` is `None`).
#[derive(Debug, Clone, Serialize)]
pub struct Carried {
    pub origin: NodeId,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    pub chain_before: String,
    pub chain_after: String,
    pub ts_min: Timestamp,
    pub ts_max: Timestamp,
    pub tables: BTreeMap<String, OpCounts>,
    pub zstd_len: u64,
    pub descriptor_sha256: String,
    /// The bundle file it arrived in.
    pub input: String,
    /// The `--from` folder (the stick) it came from.
    pub source: String,
    /// The bundle file it left in (`None` while pending).
    pub output: Option<String>,
    pub carried_at: Timestamp,
}

impl Carried {
    pub fn new(d: &SegmentDescriptor, descriptor_sha256: String, input: &Path, source: &Path) -> Carried {
        Carried {
            origin: d.origin.clone(),
            first_seq: d.first_seq,
            last_seq: d.last_seq,
            count: d.count,
            chain_before: d.chain_before.clone(),
            chain_after: d.chain_after.clone(),
            ts_min: d.ts_min,
            ts_max: d.ts_max,
            tables: d.tables.clone(),
            zstd_len: d.zstd_len,
            descriptor_sha256,
            // Absolute paths: `--from .` means nothing when reconciling later.
            input: absolute(input),
            source: absolute(source),
            output: None,
            carried_at: Timestamp::now(),
        }
    }

    pub fn chain_before(&self) -> Option<ChainHash> {
        ChainHash::from_hex(&self.chain_before)
    }
    pub fn chain_after(&self) -> Option<ChainHash> {
        ChainHash::from_hex(&self.chain_after)
    }
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

/// The ledger tables in a node's state store.
pub struct Ledger {
    state: crate::state::State,
    path: String,
}

impl Ledger {
    pub fn open(node: &Node) -> Result<Ledger, RelayError> {
        let state = node.state()?;
        let path = node.home.join("state.sqlite3").display().to_string();
        let ledger = Ledger { state, path };
        ledger.conn().execute_batch(SCHEMA).map_err(ledger.err())?;
        Ok(ledger)
    }

    fn conn(&self) -> &Connection {
        self.state.connection()
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> RelayError + '_ {
        move |source| RelayError::Ledger { path: self.path.clone(), source }
    }

    /// Every completed row for `origin`, by seq.
    pub fn carried(&self, origin: &NodeId) -> Result<Vec<Carried>, RelayError> {
        self.select("WHERE origin = ?1 AND output IS NOT NULL", &[&origin.as_str()])
    }

    /// Every completed row, by origin and seq.
    pub fn all(&self) -> Result<Vec<Carried>, RelayError> {
        self.select("WHERE output IS NOT NULL", &[])
    }

    fn select(&self, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Carried>, RelayError> {
        let sql = format!(
            "SELECT origin, first_seq, last_seq, count, chain_before, chain_after, ts_min, ts_max, tables, zstd_len,
                    descriptor_sha256, input, source, output, carried_at
             FROM relay_carried {filter} ORDER BY origin, first_seq, last_seq"
        );
        let mut stmt = self.conn().prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map(args, |r| {
                let origin: String = r.get(0)?;
                let origin = NodeId::try_from(origin)
                    .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))?;
                let tables: String = r.get(8)?;
                Ok((
                    tables,
                    Carried {
                        origin,
                        first_seq: r.get::<_, i64>(1)? as u64,
                        last_seq: r.get::<_, i64>(2)? as u64,
                        count: r.get::<_, i64>(3)? as u64,
                        chain_before: r.get(4)?,
                        chain_after: r.get(5)?,
                        ts_min: Timestamp(r.get(6)?),
                        ts_max: Timestamp(r.get(7)?),
                        tables: BTreeMap::new(),
                        zstd_len: r.get::<_, i64>(9)? as u64,
                        descriptor_sha256: r.get(10)?,
                        input: r.get(11)?,
                        source: r.get(12)?,
                        output: r.get(13)?,
                        carried_at: Timestamp(r.get(14)?),
                    },
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (tables, mut c) = row.map_err(self.err())?;
            c.tables = serde_json::from_str(&tables)
                .map_err(|e| RelayError::LedgerCorrupt(format!("tables of {} seq {}: {e}", c.origin, c.first_seq)))?;
            out.push(c);
        }
        Ok(out)
    }

    /// Records `rows` as pending (about to be written), in one transaction.
    pub fn add_pending(&mut self, rows: &[Carried]) -> Result<(), RelayError> {
        let path = self.path.clone();
        let err = |source| RelayError::Ledger { path: path.clone(), source };
        let tx = self.state.connection().unchecked_transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT OR REPLACE INTO relay_carried (origin, first_seq, last_seq, chain_after, chain_before, count,
                        ts_min, ts_max, tables, zstd_len, descriptor_sha256, input, source, output, carried_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, NULL, ?14)",
                )
                .map_err(err)?;
            for c in rows {
                let tables = serde_json::to_string(&c.tables).unwrap_or_else(|_| "{}".into());
                stmt.execute(params![
                    c.origin.as_str(),
                    c.first_seq as i64,
                    c.last_seq as i64,
                    c.chain_after,
                    c.chain_before,
                    c.count as i64,
                    c.ts_min.0,
                    c.ts_max.0,
                    tables,
                    c.zstd_len as i64,
                    c.descriptor_sha256,
                    c.input,
                    c.source,
                    c.carried_at.0,
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Marks `rows` as carried in `output`, in one transaction.
    pub fn complete(&mut self, rows: &[Carried], output: &str) -> Result<(), RelayError> {
        let path = self.path.clone();
        let err = |source| RelayError::Ledger { path: path.clone(), source };
        let tx = self.state.connection().unchecked_transaction().map_err(err)?;
        for c in rows {
            tx.execute(
                "UPDATE relay_carried SET output = ?5
                 WHERE origin = ?1 AND first_seq = ?2 AND last_seq = ?3 AND chain_after = ?4",
                params![c.origin.as_str(), c.first_seq as i64, c.last_seq as i64, c.chain_after, output],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Settles rows left pending by a relay that was killed: a row whose
    /// segment is in a bundle in `out_dir` sealed by `me` is completed with
    /// that file; any other pending row is forgotten (its segment will be
    /// relayed again). Returns how many rows were completed.
    pub fn recover(&mut self, out_dir: &Path, me: &NodeId) -> Result<u64, RelayError> {
        let pending: u64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM relay_carried WHERE output IS NULL", [], |r| r.get::<_, i64>(0))
            .map_err(self.err())? as u64;
        if pending == 0 {
            return Ok(0);
        }
        let mut found: Vec<(String, u64, u64, String, String)> = Vec::new();
        if out_dir.is_dir() {
            let files = crate::bundle::scan_bundles(&[out_dir.to_path_buf()])?.files;
            for f in files {
                // Anything unreadable here was not written by a finished relay step.
                let Ok(reader) = BundleReader::open(&f) else { continue };
                if reader.manifest().sealed_by != *me {
                    continue;
                }
                let name = f.display().to_string();
                for d in reader.descriptors() {
                    found.push((d.origin.to_string(), d.first_seq, d.last_seq, d.chain_after.clone(), name.clone()));
                }
            }
        }
        let path = self.path.clone();
        let err = |source| RelayError::Ledger { path: path.clone(), source };
        let tx = self.state.connection().unchecked_transaction().map_err(err)?;
        let mut completed = 0;
        for (origin, first, last, chain, file) in &found {
            completed += tx
                .execute(
                    "UPDATE relay_carried SET output = ?5
                     WHERE origin = ?1 AND first_seq = ?2 AND last_seq = ?3 AND chain_after = ?4 AND output IS NULL",
                    params![origin, *first as i64, *last as i64, chain, file],
                )
                .map_err(err)? as u64;
        }
        tx.execute("DELETE FROM relay_carried WHERE output IS NULL", []).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(completed)
    }
}

/// What `ferry status` shows for one origin.
#[derive(Debug, Clone, Serialize)]
pub struct OriginStatus {
    pub origin: NodeId,
    /// The name this node's trust store gives the origin.
    pub name: Option<String>,
    /// Seq ranges carried, merged (`[first, last]` pairs).
    pub ranges: Vec<[u64; 2]>,
    /// Seq ranges missing between the carried ones.
    pub gaps: Vec<[u64; 2]>,
    /// Distinct entries carried (overlaps counted once).
    pub entries: u64,
    pub ts_min: Timestamp,
    pub ts_max: Timestamp,
    /// Per-table counts summed over the carried segments.
    pub tables: BTreeMap<String, OpCounts>,
    /// The `--from` folders (sticks) its segments came from.
    pub sources: Vec<String>,
    /// Every carried segment, by seq.
    pub segments: Vec<Carried>,
}

/// What `ferry status` shows about the relay ledger.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerStatus {
    pub node: NodeId,
    pub name: String,
    pub origins: Vec<OriginStatus>,
}

/// The relay ledger of `node`, per origin, for reconciliation.
pub fn ledger_status(node: &Node) -> Result<LedgerStatus, RelayError> {
    let ledger = Ledger::open(node)?;
    let trust = node.trust()?;
    let mut by_origin: BTreeMap<NodeId, Vec<Carried>> = BTreeMap::new();
    for c in ledger.all()? {
        by_origin.entry(c.origin.clone()).or_default().push(c);
    }
    let mut origins = Vec::new();
    for (origin, segments) in by_origin {
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        let mut tables: BTreeMap<String, OpCounts> = BTreeMap::new();
        let mut sources = BTreeSet::new();
        for c in &segments {
            match ranges.last_mut() {
                Some(r) if c.first_seq <= r[1] + 1 => r[1] = r[1].max(c.last_seq),
                _ => ranges.push([c.first_seq, c.last_seq]),
            }
            for (t, n) in &c.tables {
                let e = tables.entry(t.clone()).or_default();
                e.insert += n.insert;
                e.update += n.update;
                e.delete += n.delete;
            }
            sources.insert(c.source.clone());
        }
        let mut gaps = Vec::new();
        let mut next = 1;
        for r in &ranges {
            if r[0] > next {
                gaps.push([next, r[0] - 1]);
            }
            next = r[1] + 1;
        }
        origins.push(OriginStatus {
            name: trust.name_of(&origin).map(str::to_owned),
            entries: ranges.iter().map(|r| r[1] - r[0] + 1).sum(),
            ts_min: segments.iter().map(|c| c.ts_min).min().unwrap_or(Timestamp(0)),
            ts_max: segments.iter().map(|c| c.ts_max).max().unwrap_or(Timestamp(0)),
            origin,
            ranges,
            gaps,
            tables,
            sources: sources.into_iter().collect(),
            segments,
        });
    }
    Ok(LedgerStatus { node: node.id().clone(), name: node.info.name.clone(), origins })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(origin: &NodeId, first: u64, last: u64, source: &str) -> Carried {
        Carried {
            origin: origin.clone(),
            first_seq: first,
            last_seq: last,
            count: last - first + 1,
            chain_before: "00".repeat(32),
            chain_after: format!("{last:064x}"),
            ts_min: Timestamp(first as i64),
            ts_max: Timestamp(last as i64),
            tables: BTreeMap::from([("t".to_owned(), OpCounts { insert: last - first + 1, update: 0, delete: 0 })]),
            zstd_len: 100,
            descriptor_sha256: "ab".repeat(32),
            input: format!("{source}/b.tar"),
            source: source.to_owned(),
            output: None,
            carried_at: Timestamp(0),
        }
    }

    #[test]
    fn pending_rows_are_invisible_until_completed_and_forgotten_by_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node::init(&dir.path().join("n"), "relay", None).expect("node");
        let origin = node.id().clone();
        let mut ledger = Ledger::open(&node).expect("ledger");
        let done = [row(&origin, 1, 10, "/stick")];
        let lost = [row(&origin, 11, 20, "/stick")];
        ledger.add_pending(&done).expect("pending");
        ledger.add_pending(&lost).expect("pending");
        assert!(ledger.carried(&origin).expect("rows").is_empty(), "pending rows are not carried yet");
        ledger.complete(&done, "out/a.tar").expect("complete");
        // No bundle in the (missing) output folder holds 11..=20: recovery forgets it.
        assert_eq!(ledger.recover(&dir.path().join("nowhere"), &origin).expect("recover"), 0);
        let rows = ledger.carried(&origin).expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].output.as_deref(), Some("out/a.tar"));
        assert_eq!(rows[0].tables, done[0].tables);
    }

    #[test]
    fn status_merges_ranges_and_names_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node::init(&dir.path().join("n"), "relay", None).expect("node");
        let origin = node.id().clone();
        let mut ledger = Ledger::open(&node).expect("ledger");
        let rows = [row(&origin, 1, 10, "/a"), row(&origin, 5, 12, "/b"), row(&origin, 20, 25, "/a")];
        ledger.add_pending(&rows).expect("pending");
        ledger.complete(&rows, "out.tar").expect("complete");
        let s = ledger_status(&node).expect("status");
        let o = &s.origins[0];
        assert_eq!(o.name.as_deref(), Some("relay"));
        assert_eq!(o.ranges, vec![[1, 12], [20, 25]]);
        assert_eq!(o.gaps, vec![[13, 19]]);
        assert_eq!(o.entries, 18, "overlaps are counted once");
        assert_eq!(o.sources, vec!["/a".to_owned(), "/b".to_owned()]);
        assert_eq!(o.segments.len(), 3);
    }
}
