//! Recovering from a fork: two computers were using one node's identity (a
//! laptop copied with its disk), and a server refused the entries of one of
//! them (`bundle apply` reports the fork and from which entry on the two
//! journals may differ). On the computer whose entries were refused, `ferry
//! node reissue` gives the node a new identity and this module hands the app
//! database over to it without losing anything:
//!
//! 1. Rows this copy inserted from that entry on, in tables with integer
//!    keys inside the old id block, get new ids in the new node's block (the
//!    other copy handed out the same ids), and every column that refers to
//!    them follows: in the app's tables and in the journal.
//! 2. The journal keeps its entries from that entry on, renumbered from 1:
//!    they become the new node's journal, so `bundle create` sends them
//!    again under the new identity. Earlier entries are the same in both
//!    copies, and the other copy sends them.
//! 3. Capture is refreshed for the new node (its id block, its triggers).
//!
//! All in one transaction: a failure leaves the database as it was.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, TransactionBehavior};
use serde::Serialize;

use super::renumber::{integer_key_layouts, Renumber};
use super::track::layouts;
use super::{is_tracked, open_db, sql_err, CaptureError};
use crate::chain::ChainHash;
use crate::node::Node;
use crate::schema;

/// A check that this is the copy whose entries were refused: its chain hash
/// at `seq` starts with `hash` (hex, as the fork report prints it).
#[derive(Debug, Clone)]
pub struct ForkCheck {
    pub seq: u64,
    pub hash: String,
}

/// What `reissue` did.
#[derive(Debug, Clone, Serialize)]
pub struct ReissueReport {
    pub db: String,
    pub old_origin: String,
    pub new_origin: String,
    /// Entries kept and renumbered (the new node's journal: 1 to this).
    pub entries: u64,
    /// Entries dropped: the part both copies share.
    pub dropped: u64,
    /// Rows given new ids, per table.
    pub renumbered: BTreeMap<String, u64>,
}

/// Why a reissue cannot go ahead.
#[derive(Debug, thiserror::Error)]
pub enum ReissueError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(
        "{path} is tracked by node {tracked_by}, not by {expected}: run this with the home of the node that tracked it"
    )]
    OtherOrigin { path: String, tracked_by: String, expected: String },
    #[error("{path} holds entries 1 to {last}; --from {from} is past them")]
    FromPastEnd { path: String, from: u64, last: u64 },
    #[error("entries before {from} were pruned from {path}: they cannot be checked against the fork")]
    Pruned { path: String, from: u64 },
    #[error(
        "this computer's entry {seq} is not the one the server refused: this is most likely the other computer, \
         whose entries the server has. Run the command on the computer that made the refused bundle; nothing \
         was changed here"
    )]
    OtherCopy { seq: u64 },
    #[error("the new id block {new} must be above the old one ({old}): SQLite numbers new rows after the largest id present")]
    BlockNotAbove { old: u32, new: u32 },
}

/// Hands the app database at `db`, tracked by `old_origin`, over to `node`
/// (see the module docs), re-sending its entries from `from` on.
pub fn reissue(
    node: &Node,
    old_origin: &str,
    old_block: Option<u32>,
    db: &Path,
    from: u64,
    fork: Option<&ForkCheck>,
) -> Result<ReissueReport, ReissueError> {
    let p = db.display().to_string();
    let err = sql_err(&p);
    let mut conn = open_db(db)?;
    // Ferry renumbers rows and the columns that refer to them itself.
    conn.execute_batch("PRAGMA foreign_keys = OFF").map_err(&err)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
    if !is_tracked(&tx).map_err(&err)? {
        return Err(CaptureError::NotTracked { path: p }.into());
    }
    let tracked_by: String = tx.query_row("SELECT origin FROM _ferry_control", [], |r| r.get(0)).map_err(&err)?;
    if tracked_by != old_origin {
        return Err(ReissueError::OtherOrigin { path: p, tracked_by, expected: old_origin.to_owned() });
    }
    let (first, last): (i64, i64) = tx
        .query_row("SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM _ferry_journal", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(&err)?;
    let (first, last) = (first.max(0) as u64, last.max(0) as u64);
    let from = from.max(1);
    if from > last + 1 {
        return Err(ReissueError::FromPastEnd { path: p, from, last });
    }
    if let Some(check) = fork {
        if first > 1 {
            return Err(ReissueError::Pruned { path: p, from: check.seq });
        }
        let mut chain = ChainHash::GENESIS;
        for r in super::JournalRows::new(&tx, &p, 1, check.seq)? {
            chain = chain.next(&r?.1);
        }
        let mine = hex::encode(&chain.0[..check.hash.len().min(64) / 2]);
        if !mine.eq_ignore_ascii_case(&check.hash) {
            return Err(ReissueError::OtherCopy { seq: check.seq });
        }
    }
    let new_block = node.info.id_block;
    if let (Some(old), Some(new)) = (old_block, new_block) {
        if new <= old {
            return Err(ReissueError::BlockNotAbove { old, new });
        }
    }
    let all = layouts(&tx, "").map_err(&err)?;
    let tables = schema::tables(&tx).map_err(&err)?;

    // 1. New ids for the rows this copy inserted from `from` on, in its old
    // block, and every column that refers to them, in the tables and the
    // journal (capture is off meanwhile: this is not an edit to send).
    let mut map = Renumber::begin(&tx).map_err(&err)?;
    if let (Some(old), Some(new)) = (old_block, new_block) {
        let (lo, hi) = (i64::from(old) << 32, (i64::from(old) + 1) << 32);
        for t in &tables {
            let Some(tids) = integer_key_layouts(&all, t) else { continue };
            let mut ids: Vec<i64> = Vec::new();
            let mut earlier = std::collections::BTreeSet::new();
            for (tid, pos) in &tids {
                let sql = format!(
                    "SELECT v{pos}, seq >= ?2 FROM _ferry_journal WHERE op = 1 AND tid = ?1 \
                     AND typeof(v{pos}) = 'integer' AND v{pos} >= ?3 AND v{pos} < ?4"
                );
                let mut stmt = tx.prepare(&sql).map_err(&err)?;
                let rows = stmt
                    .query_map(params![tid, from as i64, lo, hi], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?)));
                for r in rows.map_err(&err)? {
                    match r.map_err(&err)? {
                        (id, true) => ids.push(id),
                        // Ids this copy had before the fork are the same in both copies.
                        (id, false) => {
                            earlier.insert(id);
                        }
                    }
                }
            }
            ids.retain(|id| !earlier.contains(id));
            map.renumber(&tx, t, &ids, new).map_err(&err)?;
        }
    }
    tx.execute("UPDATE _ferry_control SET applying = 1 WHERE id = 1", []).map_err(&err)?;
    map.apply(&tx, &tables, &all).map_err(&err)?;
    let renumbered = map.counts();

    // 2. The journal: only the entries from `from` on, numbered from 1.
    // Their times depend on the entries before them (`super::stamp`), which
    // go: each keeps the time it was given, and the floors recorded so far
    // are spent (`track` below records the current one for what follows).
    super::stamp::settle_times(&tx).map_err(&err)?;
    super::track::ensure_control_columns(&tx).map_err(&err)?;
    tx.execute_batch("DELETE FROM _ferry_floors").map_err(&err)?;
    let dropped = tx.execute("DELETE FROM _ferry_journal WHERE seq < ?1", [from as i64]).map_err(&err)? as u64;
    let entries = tx.execute("UPDATE _ferry_journal SET seq = seq - ?1", [(from - 1) as i64]).map_err(&err)? as u64;
    tx.execute(
        "UPDATE _ferry_control SET origin = ?1, bundled_seq = 0, bundled_chain = zeroblob(32), bundled_ts = NULL,
         applying = 0 WHERE id = 1",
        [node.id().as_str()],
    )
    .map_err(&err)?;
    map.end(&tx).map_err(&err)?;
    crate::crashpoint::hit("reissue: renumbered, not yet committed");
    tx.commit().map_err(&err)?;
    drop(conn);

    // 3. Capture for the new node (its id block, current triggers).
    super::track(node, db, &Default::default())?;
    Ok(ReissueReport {
        db: p,
        old_origin: old_origin.to_owned(),
        new_origin: node.id().to_string(),
        entries,
        dropped,
        renumbered,
    })
}
