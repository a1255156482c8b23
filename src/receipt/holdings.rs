//! What a node holds, per origin, as merged seq ranges with the chain hash
//! at each range's end: the content of a receipt, gathered from a relay
//! ledger ([`Holdings::from_relay`]) or an apply ledger
//! ([`Holdings::from_target`]).

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::{chain_tag, HeldOrigin, HeldRange};
use crate::keys::NodeId;

/// Seq ranges held per origin. Ranges that overlap or touch merge; the chain
/// hash kept for a merged range is the one at its last seq (a range whose
/// last seq has no known chain hash is left out of receipts: nothing can be
/// checked against it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    origins: BTreeMap<NodeId, Vec<(u64, u64, Option<String>)>>,
}

impl Holdings {
    /// Adds `first..=last` of `origin`, with the chain hash at `last` if known.
    pub fn add(&mut self, origin: &NodeId, first: u64, last: u64, chain_at_last: Option<&[u8]>) {
        if first == 0 || first > last {
            return;
        }
        let v = self.origins.entry(origin.clone()).or_default();
        v.push((first, last, chain_at_last.map(chain_tag)));
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// The merged ranges per origin, sorted, as a receipt lists them.
    pub fn to_origins(&self) -> Vec<HeldOrigin> {
        let mut out = Vec::new();
        for (origin, items) in &self.origins {
            let mut items = items.clone();
            items.sort_by_key(|&(f, l, _)| (f, l));
            let mut merged: Vec<(u64, u64, Option<String>)> = Vec::new();
            for (f, l, c) in items {
                match merged.last_mut() {
                    Some(m) if f <= m.1.saturating_add(1) => {
                        if l > m.1 {
                            m.1 = l;
                            m.2 = c;
                        } else if l == m.1 && m.2.is_none() {
                            m.2 = c;
                        }
                    }
                    _ => merged.push((f, l, c)),
                }
            }
            let ranges: Vec<HeldRange> = merged
                .into_iter()
                .filter_map(|(first, last, chain)| Some(HeldRange { first, last, chain: chain? }))
                .collect();
            if !ranges.is_empty() {
                out.push(HeldOrigin { origin: origin.clone(), ranges });
            }
        }
        out
    }

    /// What a relay carried: the segments its ledger records as written out.
    pub fn from_relay(carried: &[crate::relay::ledger::Carried]) -> Holdings {
        let mut h = Holdings::default();
        for c in carried.iter().filter(|c| c.output.is_some()) {
            let chain = c.chain_after().map(|c| c.0);
            h.add(&c.origin, c.first_seq, c.last_seq, chain.as_ref().map(|c| &c[..]));
        }
        h
    }

    /// What a database bundles were applied to holds: the ranges its apply
    /// ledger records per origin (every entry there ended in a recorded
    /// outcome, committed with the data), with the chain hash it keeps at
    /// each range's end.
    pub fn from_target(conn: &Connection) -> rusqlite::Result<Holdings> {
        let mut h = Holdings::default();
        let has = |t: &str| -> rusqlite::Result<bool> {
            conn.query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1", [t], |r| {
                r.get(0)
            })
        };
        if !(has("_ferry_origins")? && has("_ferry_applied")? && has("_ferry_hashes")?) {
            return Ok(h);
        }
        let mut st = conn.prepare("SELECT id, node FROM _ferry_origins ORDER BY id")?;
        let origins: Vec<(i64, String)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        for (id, node) in origins {
            let (Ok(id), Ok(node)) = (u32::try_from(id), NodeId::try_from(node)) else { continue };
            let mut hashes = crate::apply::ledger::Hashes::new(conn, id);
            for (first, last) in crate::apply::ledger::ranges(conn, id)? {
                let chain = hashes.get(last)?;
                h.add(&node, first, last, chain.as_ref().map(|c| &c[..]));
            }
        }
        Ok(h)
    }

    /// Adds everything `other` holds.
    pub fn extend(&mut self, other: &Holdings) {
        for (o, items) in &other.origins {
            self.origins.entry(o.clone()).or_default().extend(items.iter().cloned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_and_overlapping_ranges_merge_keeping_the_chain_at_the_end() {
        let o = NodeId::try_from("0011223344556677".to_owned()).expect("id");
        let mut h = Holdings::default();
        h.add(&o, 5, 9, Some(&[9; 32]));
        h.add(&o, 1, 4, Some(&[4; 32]));
        h.add(&o, 3, 7, Some(&[7; 32]));
        h.add(&o, 20, 25, None);
        h.add(&o, 12, 15, Some(&[15; 32]));
        let got = h.to_origins();
        assert_eq!(got.len(), 1);
        let r: Vec<(u64, u64, &str)> = got[0].ranges.iter().map(|r| (r.first, r.last, r.chain.as_str())).collect();
        assert_eq!(r, vec![(1, 9, "0909090909090909"), (12, 15, "0f0f0f0f0f0f0f0f")], "20-25 has no chain: left out");
    }
}
