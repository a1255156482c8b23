//! What this node sent: one row per bundle `bundle create` wrote, in the
//! node's state store (`sent` in `state.sqlite3`): the origin's seq range,
//! the chain hash at its last seq and the stamped time of that entry (so a
//! resend can start right after it once the entries before are pruned),
//! when, and the file.

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::chain::ChainHash;
use crate::journal::Timestamp;
use crate::keys::NodeId;
use crate::state::{State, StateError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sent (
    origin      TEXT NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    chain_after BLOB NOT NULL,
    ts_after    REAL,
    at          INTEGER NOT NULL,
    file        TEXT NOT NULL,
    PRIMARY KEY (origin, last_seq, at, first_seq)
) WITHOUT ROWID;
";

/// One bundle sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sent {
    pub first_seq: u64,
    pub last_seq: u64,
    #[serde(skip)]
    pub chain_after: ChainHash,
    /// The stamped time (a Julian day number) of entry `last_seq`, for
    /// captured journals.
    #[serde(skip)]
    pub ts_after: Option<f64>,
    pub at: Timestamp,
    pub file: String,
}

fn conn(state: &State) -> Result<&Connection, StateError> {
    let c = state.connection();
    c.execute_batch(SCHEMA).map_err(state.err())?;
    Ok(c)
}

/// Records a bundle sent of `origin`'s entries.
pub fn record(state: &State, origin: &NodeId, s: &Sent) -> Result<(), StateError> {
    conn(state)?
        .execute(
            "INSERT OR REPLACE INTO sent (origin, first_seq, last_seq, chain_after, ts_after, at, file)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                origin.as_str(),
                s.first_seq as i64,
                s.last_seq as i64,
                &s.chain_after.0[..],
                s.ts_after,
                s.at.0,
                s.file
            ],
        )
        .map(drop)
        .map_err(state.err())
}

/// Every bundle sent of `origin`'s entries, by first seq then time.
pub fn all(state: &State, origin: &NodeId) -> Result<Vec<Sent>, StateError> {
    let c = conn(state)?;
    let mut st = c
        .prepare(
            "SELECT first_seq, last_seq, chain_after, ts_after, at, file FROM sent WHERE origin = ?1
             ORDER BY first_seq, at",
        )
        .map_err(state.err())?;
    let rows = st
        .query_map([origin.as_str()], |r| {
            let chain: Vec<u8> = r.get(2)?;
            Ok(Sent {
                first_seq: r.get::<_, i64>(0)? as u64,
                last_seq: r.get::<_, i64>(1)? as u64,
                chain_after: ChainHash::from_slice(&chain).unwrap_or(ChainHash::GENESIS),
                ts_after: r.get(3)?,
                at: Timestamp(r.get(4)?),
                file: r.get(5)?,
            })
        })
        .map_err(state.err())?;
    rows.collect::<Result<Vec<_>, _>>().map_err(state.err())
}

/// Forgets the bundles sent whose files were pruned (the rows stay for
/// their chain hashes; only the file name is cleared).
pub fn clear_file(state: &State, origin: &NodeId, file: &str) -> Result<(), StateError> {
    conn(state)?
        .execute("UPDATE sent SET file = '' WHERE origin = ?1 AND file = ?2", params![origin.as_str(), file])
        .map(drop)
        .map_err(state.err())
}

/// A relay's sent log: what it carried onward, per origin (its relay
/// ledger's completed rows: each segment passed on, the chain hash at its
/// end, when it was last passed on and the bundle it left in), by first seq.
/// This node's own entries are not here: they are in [`all`].
pub fn carried(
    node: &crate::node::Node,
) -> Result<std::collections::BTreeMap<NodeId, Vec<Sent>>, crate::relay::RelayError> {
    let mut by_origin: std::collections::BTreeMap<NodeId, Vec<Sent>> = std::collections::BTreeMap::new();
    for c in crate::relay::ledger::Ledger::open(node)?.all()? {
        if &c.origin == node.id() {
            continue;
        }
        let (Some(chain_after), Some(file)) = (c.chain_after(), c.output.clone()) else { continue };
        by_origin.entry(c.origin.clone()).or_default().push(Sent {
            first_seq: c.first_seq,
            last_seq: c.last_seq,
            chain_after,
            ts_after: None,
            at: c.carried_at,
            file,
        });
    }
    for v in by_origin.values_mut() {
        v.sort_by_key(|s| (s.first_seq, s.at.0));
    }
    Ok(by_origin)
}
