//! `ferry prune`: removes what the archive (the central server, trusted
//! with role archive) has confirmed it holds, and nothing else:
//!
//! - journal rows of a captured database, from its first row up to the end
//!   of the archive-confirmed run that starts there (a journal stays one
//!   gap-free run, so a resend can still start after any entry kept);
//! - bundle files this node wrote (its outbox copies, a relay's output) and
//!   files in `HOME/quarantine/`, once every part they hold is confirmed.
//!
//! A range counts as confirmed only when the archive's receipt gives, at the
//! range's last seq, the chain hash this node knows there (from the bundles
//! it sent, or the segments it carried); a part of a file only when this
//! node knows that part's own end hash as the one of its history. A receipt
//! that disagrees is a fork alarm, and nothing of that origin is pruned.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::confirm::{covered, merge, Loop};
use super::{chain_tag, SignedReceipt};
use crate::capture::{is_tracked, open_db, sql_err, CaptureError};
use crate::chain::ChainHash;
use crate::keys::NodeId;
use crate::node::Node;

/// What was pruned from one database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DbPrune {
    pub db: PathBuf,
    /// Journal rows removed (0 when nothing was confirmed beyond what was pruned before).
    pub rows: u64,
    /// The journal now starts after this seq.
    pub pruned_to: Option<u64>,
    /// Why nothing (more) could go, when so.
    pub kept_because: Option<String>,
}

/// Removes the journal rows of `db` the archive confirmed (see the module docs).
pub fn prune_db(node: &Node, db: &Path, l: &Loop, dry_run: bool) -> Result<DbPrune, CaptureError> {
    let p = db.display().to_string();
    let err = sql_err(&p);
    let conn = open_db(db)?;
    if !is_tracked(&conn).map_err(&err)? {
        return Err(CaptureError::NotTracked { path: p });
    }
    let origin: String =
        conn.query_row("SELECT origin FROM _ferry_control WHERE id = 1", [], |r| r.get(0)).map_err(&err)?;
    if origin != node.id().as_str() {
        return Err(CaptureError::OtherOrigin { path: p, tracked_by: origin, this: node.id().to_string() });
    }
    let mut report = DbPrune { db: db.to_path_buf(), ..DbPrune::default() };
    let (min_seq, bundled): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT COALESCE(MIN(seq), 0) FROM _ferry_journal), (SELECT bundled_seq FROM _ferry_control WHERE id = 1)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(&err)?;
    if min_seq == 0 {
        report.kept_because = Some("the journal is empty".into());
        return Ok(report);
    }
    let Some(to) = l.prune_to(min_seq as u64) else {
        report.kept_because = Some(if l.forked() {
            "a receipt disagrees with this journal (a fork): nothing is pruned while that stands".into()
        } else if !l.has_archive {
            "no computer is trusted as the archive".into()
        } else {
            let name = l.archive().and_then(|a| a.name.clone()).unwrap_or_else(|| "the archive".into());
            format!("{name} has not confirmed entry {min_seq}, the journal's first, yet")
        });
        return Ok(report);
    };
    let to = to.min(bundled.max(0) as u64);
    report.pruned_to = Some(to);
    if dry_run {
        report.rows = conn
            .query_row("SELECT count(*) FROM _ferry_journal WHERE seq <= ?1", [to as i64], |r| r.get::<_, i64>(0))
            .map_err(&err)? as u64;
        return Ok(report);
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(&err)?;
    let deleted = conn.execute("DELETE FROM _ferry_journal WHERE seq <= ?1", [to as i64]);
    match deleted {
        Ok(n) => {
            crate::crashpoint::hit("prune: rows deleted, not committed");
            conn.execute_batch("COMMIT").map_err(&err)?;
            report.rows = n as u64;
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(err(e));
        }
    }
    Ok(report)
}

/// Confirmed seq ranges per origin.
pub type Confirmed = HashMap<NodeId, Vec<(u64, u64)>>;

/// The chain hashes a node knows per origin: at the ends of the bundles it
/// sent (its own origin) and of the segments it carried (others').
#[derive(Debug, Default)]
pub struct Known {
    chains: HashMap<NodeId, BTreeMap<u64, ChainHash>>,
}

impl Known {
    /// From the node's sent log and relay ledger.
    pub fn of(node: &Node) -> Result<Known, crate::relay::RelayError> {
        let mut k = Known::default();
        let state = node.state()?;
        for s in super::sent::all(&state, node.id())? {
            k.chains.entry(node.id().clone()).or_default().insert(s.last_seq, s.chain_after);
        }
        for c in crate::relay::ledger::Ledger::open(node)?.all()? {
            if let Some(h) = c.chain_after() {
                k.chains.entry(c.origin.clone()).or_default().insert(c.last_seq, h);
            }
        }
        Ok(k)
    }

    fn at(&self, origin: &NodeId, seq: u64) -> Option<&ChainHash> {
        self.chains.get(origin)?.get(&seq)
    }

    /// Per origin, the archive receipt's ranges confirmed against what this
    /// node knows; origins where a range disagrees (a fork) get none, and
    /// are listed.
    pub fn confirmed(&self, archive: &SignedReceipt) -> (Confirmed, Vec<NodeId>) {
        let mut ok = HashMap::new();
        let mut forked = Vec::new();
        for o in &archive.receipt.origins {
            let mut v = Vec::new();
            let mut fork = false;
            for g in &o.ranges {
                match self.at(&o.origin, g.last) {
                    Some(h) if chain_tag(&h.0) == g.chain => v.push((g.first, g.last)),
                    Some(_) => fork = true,
                    None => {}
                }
            }
            if fork {
                forked.push(o.origin.clone());
            } else {
                ok.insert(o.origin.clone(), merge(v));
            }
        }
        (ok, forked)
    }

    /// Whether a part `origin first..=last` ending in `chain_after` is
    /// confirmed: inside a confirmed range, and its end hash the one this
    /// node knows at `last`.
    pub fn part_confirmed(
        &self,
        confirmed: &Confirmed,
        origin: &NodeId,
        first: u64,
        last: u64,
        chain_after: &ChainHash,
    ) -> bool {
        confirmed.get(origin).is_some_and(|r| covered(first, last, r)) && self.at(origin, last) == Some(chain_after)
    }
}

/// What [`prune_files`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FilesPrune {
    pub removed: Vec<PathBuf>,
    /// Bundle files looked at and kept (some part not confirmed).
    pub kept: u64,
}

/// Removes the bundle files in `candidates` whose every part the archive
/// confirmed (and a quarantined file's reason file with it).
pub fn prune_files(
    known: &Known,
    confirmed: &Confirmed,
    candidates: &[PathBuf],
    dry_run: bool,
) -> std::io::Result<FilesPrune> {
    let mut r = FilesPrune::default();
    let mut seen = std::collections::HashSet::new();
    for f in candidates {
        if !f.is_file() || !seen.insert(f.clone()) {
            continue;
        }
        let Ok(reader) = crate::bundle::BundleReader::open(f) else {
            r.kept += 1;
            continue;
        };
        let all = !reader.descriptors().is_empty()
            && reader.descriptors().iter().all(|d| {
                d.chain_after().is_some_and(|h| known.part_confirmed(confirmed, &d.origin, d.first_seq, d.last_seq, &h))
            });
        drop(reader);
        if !all {
            r.kept += 1;
            continue;
        }
        if !dry_run {
            std::fs::remove_file(f)?;
            let reason = PathBuf::from(format!("{}.reason.txt", f.display()));
            if reason.is_file() {
                std::fs::remove_file(&reason)?;
            }
            if let Some(dir) = f.parent() {
                crate::fsutil::sync_dir(dir)?;
            }
        }
        r.removed.push(f.clone());
    }
    Ok(r)
}

/// The bundle files a prune looks at for `node`: those it wrote (its sent
/// log, its relay outputs), those in its quarantine, and the `*.tar` files
/// directly in `outboxes`.
pub fn candidate_files(node: &Node, outboxes: &[PathBuf]) -> Result<Vec<PathBuf>, crate::relay::RelayError> {
    let mut v = Vec::new();
    let state = node.state()?;
    for s in super::sent::all(&state, node.id())? {
        if !s.file.is_empty() {
            v.push(PathBuf::from(s.file));
        }
    }
    for c in crate::relay::ledger::Ledger::open(node)?.all()? {
        if let Some(o) = c.output {
            v.push(PathBuf::from(o));
        }
    }
    for dir in std::iter::once(node.home.join("quarantine")).chain(outboxes.iter().cloned()) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "tar"))
                .collect();
            files.sort();
            v.extend(files);
        }
    }
    v.sort();
    v.dedup();
    Ok(v)
}
