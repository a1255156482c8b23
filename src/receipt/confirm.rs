//! Closing the loop on a sending node: what each receiving node confirmed
//! of this node's entries, what was sent and not confirmed (and since
//! when), forks, and from that what to send again and what may be pruned.
//!
//! Pure: plain data in (the bundles sent, the receipts held, the trust
//! store), answers out; no I/O.
//!
//! A receipt range confirms entries only when the chain hash it gives at its
//! last seq is the one this node's own journal has there (kept for every
//! bundle sent, see [`super::sent`]). A range whose hash differs is a
//! **fork**: the receiving node holds other entries under this node's name
//! (a copied laptop, a restored journal); it confirms nothing and stops any
//! prune. A range ending at a seq this node kept no hash for (not the end
//! of a bundle it sent) cannot be checked and confirms nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sent::Sent;
use super::{chain_tag, Summary};
use crate::chain::ChainHash;
use crate::journal::Timestamp;
use crate::keys::{NodeId, TrustStore};

/// A day in microseconds.
pub const DAY: i64 = 86_400_000_000;
/// Entries unconfirmed by the archive this many days after they were sent
/// are overdue (`status --check`) and sent again (`bundle create`).
pub const DEFAULT_DAYS: u32 = 14;

/// Entries sent and not confirmed by one receiving node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub first_seq: u64,
    pub last_seq: u64,
    /// When the earliest of them was first sent.
    pub first_sent: Timestamp,
    /// When any of them was last sent.
    pub last_sent: Timestamp,
}

/// A receipt range whose chain hash is not this node's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fork {
    pub first_seq: u64,
    pub last_seq: u64,
    /// The chain hash the receipt gives at `last_seq` (16 hex).
    pub theirs: String,
    /// This node's (16 hex).
    pub ours: String,
}

/// What one receiving node confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    pub node: NodeId,
    pub name: Option<String>,
    /// Whether it is the archive (trusted with role archive).
    pub archive: bool,
    /// When its newest receipt was signed (`None`: no receipt yet).
    pub receipt_at: Option<Timestamp>,
    /// Seq ranges confirmed, merged.
    pub confirmed: Vec<(u64, u64)>,
    pub pending: Vec<Pending>,
    pub forks: Vec<Fork>,
    /// Ranges held there that cannot be checked (no hash kept at their end).
    pub unchecked: Vec<(u64, u64)>,
}

/// The whole picture for one origin.
#[derive(Debug, Clone, Serialize)]
pub struct Loop {
    pub origin: NodeId,
    /// Every node that sent a receipt, and the archive(s) even without one.
    pub receivers: Vec<Receiver>,
    /// Whether a node is trusted as the archive.
    pub has_archive: bool,
}

/// What `ferry status --json` says of one origin's entries this node sent
/// (its own) or carried onward (a relay's): per receiving node that sent a
/// receipt (and the archive, even without one), the seq ranges it
/// confirmed, what was sent and not confirmed since when, forks, and the
/// entries the archive has not confirmed `overdue_days` after they were sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub origin: NodeId,
    /// The origin's name (this node's, or its trust store's).
    pub name: Option<String>,
    /// Whether a node is trusted as the archive here.
    pub has_archive: bool,
    pub receivers: Vec<Receiver>,
    /// The age (`--overdue-days`) after which unconfirmed entries are overdue.
    pub overdue_days: u32,
    /// Entries the archive has not confirmed, sent more than `overdue_days` days ago.
    pub overdue: Vec<Pending>,
}

/// This node's chain hashes at the ends of the bundles it sent.
fn own_chains(sent: &[Sent]) -> BTreeMap<u64, ChainHash> {
    sent.iter().map(|s| (s.last_seq, s.chain_after)).collect()
}

/// Merges sorted-or-not ranges into sorted, disjoint, non-touching ones.
pub fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(m) if a <= m.1.saturating_add(1) => m.1 = m.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `a..=b` minus the sorted disjoint `cut` ranges.
fn subtract(a: u64, b: u64, cut: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut lo = a;
    let start = cut.partition_point(|&(_, e)| e < a);
    for &(c, d) in &cut[start..] {
        if c > b {
            break;
        }
        if c > lo {
            out.push((lo, c - 1));
        }
        lo = lo.max(d.saturating_add(1));
        if lo > b {
            return out;
        }
    }
    if lo <= b {
        out.push((lo, b));
    }
    out
}

/// Whether `a..=b` lies inside one of the sorted disjoint ranges.
pub fn covered(a: u64, b: u64, ranges: &[(u64, u64)]) -> bool {
    let i = ranges.partition_point(|&(_, e)| e < a);
    ranges.get(i).is_some_and(|&(c, d)| c <= a && b <= d)
}

impl Loop {
    /// Builds the picture for `origin` from the bundles it sent and the
    /// receipts held (already verified).
    pub fn new(origin: &NodeId, sent: &[Sent], receipts: &[Summary], trust: &TrustStore) -> Loop {
        let chains = own_chains(sent);
        let archives: Vec<NodeId> = trust.archives().into_iter().map(|k| k.node.clone()).collect();
        let names: std::collections::HashMap<&NodeId, &str> =
            trust.keys.iter().map(|k| (&k.node, k.name.as_str())).collect();
        let name_of = |n: &NodeId| names.get(n).map(|s| (*s).to_owned());
        let mut receivers = Vec::new();
        let mut signers: Vec<&NodeId> = Vec::new();
        let mut memo: std::collections::HashMap<Vec<(u64, u64)>, Vec<Pending>> = std::collections::HashMap::new();
        for r in receipts {
            let archive = archives.contains(&r.node);
            // A node on another road (a middleman that never carried this
            // origin) says nothing here; the archive always does.
            if &r.node == origin || (!archive && r.ranges.is_empty()) {
                continue;
            }
            signers.push(&r.node);
            let mut rec = Receiver {
                node: r.node.clone(),
                name: name_of(&r.node),
                archive,
                receipt_at: Some(r.at),
                confirmed: Vec::new(),
                pending: Vec::new(),
                forks: Vec::new(),
                unchecked: Vec::new(),
            };
            let mut ok = Vec::new();
            for g in &r.ranges {
                match chains.get(&g.last) {
                    Some(ours) if chain_tag(&ours.0) == g.chain => ok.push((g.first, g.last)),
                    Some(ours) => rec.forks.push(Fork {
                        first_seq: g.first,
                        last_seq: g.last,
                        theirs: g.chain.clone(),
                        ours: chain_tag(&ours.0),
                    }),
                    None => rec.unchecked.push((g.first, g.last)),
                }
            }
            rec.confirmed = merge(ok);
            // Receiving nodes that confirmed the same ranges have the same
            // pending entries: worked out once.
            rec.pending = memo.entry(rec.confirmed.clone()).or_insert_with(|| pending(sent, &rec.confirmed)).clone();
            receivers.push(rec);
        }
        for a in &archives {
            if a != origin && !signers.contains(&a) {
                receivers.push(Receiver {
                    node: a.clone(),
                    name: name_of(a),
                    archive: true,
                    receipt_at: None,
                    confirmed: Vec::new(),
                    pending: pending(sent, &[]),
                    forks: Vec::new(),
                    unchecked: Vec::new(),
                });
            }
        }
        // The archive last: the journey's end.
        receivers.sort_by(|a, b| (a.archive, &a.name, &a.node).cmp(&(b.archive, &b.name, &b.node)));
        Loop { origin: origin.clone(), receivers, has_archive: !archives.is_empty() }
    }

    /// The JSON report of this picture, with the entries overdue at `now`.
    pub fn report(&self, name: Option<String>, now: Timestamp, days: u32) -> Report {
        Report {
            origin: self.origin.clone(),
            name,
            has_archive: self.has_archive,
            receivers: self.receivers.clone(),
            overdue_days: days,
            overdue: self.overdue(now, days),
        }
    }

    /// The archive's view (the first archive when several are trusted).
    pub fn archive(&self) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.archive)
    }

    /// Whether any receiving node reported a fork.
    pub fn forked(&self) -> bool {
        self.receivers.iter().any(|r| !r.forks.is_empty())
    }

    /// Entries the archive has not confirmed that were first sent more than
    /// `days` days before `now`.
    pub fn overdue(&self, now: Timestamp, days: u32) -> Vec<Pending> {
        let limit = now.0.saturating_sub(i64::from(days) * DAY);
        self.archive()
            .map(|a| a.pending.iter().filter(|p| p.first_sent.0 <= limit).cloned().collect())
            .unwrap_or_default()
    }

    /// Where `bundle create` should start sending again: the first entry
    /// the archive has not confirmed that was last sent more than `days`
    /// days before `now` (any, with `all`), if there is one.
    pub fn resend_from(&self, now: Timestamp, days: u32, all: bool) -> Option<u64> {
        let limit = now.0.saturating_sub(i64::from(days) * DAY);
        let a = self.archive()?;
        a.pending.iter().filter(|p| all || p.last_sent.0 <= limit).map(|p| p.first_seq).min()
    }

    /// The last seq up to which a journal starting at `journal_first` may be
    /// pruned: the end of the archive-confirmed run that starts there.
    /// `None` when nothing may go (no archive, no receipt, a fork reported
    /// by any node, or the first entry not confirmed).
    pub fn prune_to(&self, journal_first: u64) -> Option<u64> {
        if self.forked() {
            return None;
        }
        let a = self.archive()?;
        let i = a.confirmed.partition_point(|&(_, e)| e < journal_first);
        let &(c, d) = a.confirmed.get(i)?;
        (c <= journal_first).then_some(d)
    }
}

/// The sent entries not in `confirmed`, merged, with when they were sent.
fn pending(sent: &[Sent], confirmed: &[(u64, u64)]) -> Vec<Pending> {
    let mut pieces: Vec<Pending> = Vec::new();
    for s in sent {
        for (a, b) in subtract(s.first_seq, s.last_seq, confirmed) {
            pieces.push(Pending { first_seq: a, last_seq: b, first_sent: s.at, last_sent: s.at });
        }
    }
    pieces.sort_by_key(|p| (p.first_seq, p.last_seq));
    let mut out: Vec<Pending> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match out.last_mut() {
            Some(m) if p.first_seq <= m.last_seq.saturating_add(1) => {
                m.last_seq = m.last_seq.max(p.last_seq);
                m.first_sent = m.first_sent.min(p.first_sent);
                m.last_sent = m.last_sent.max(p.last_sent);
            }
            _ => out.push(p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Role;
    use crate::receipt::{sign, Holdings};

    fn chain(n: u64) -> ChainHash {
        ChainHash([n as u8; 32])
    }

    fn sent(first: u64, last: u64, day: i64) -> Sent {
        Sent {
            first_seq: first,
            last_seq: last,
            chain_after: chain(last),
            ts_after: Some(0.0),
            at: Timestamp(day * DAY),
            file: String::new(),
        }
    }

    /// A laptop that sent 1–10 (day 0), 11–20 (day 1), 21–30 (day 2); the
    /// archive holds 1–10 and 21–30 (11–20 lost), a relay holds 1–30.
    fn picture(archive_chain_at_30: ChainHash) -> Loop {
        let me = crate::keys::generate().expect("key");
        let (central, driver) = (crate::keys::generate().expect("key"), crate::keys::generate().expect("key"));
        let mut trust = TrustStore::default();
        trust.add("central", &central.verifying_key(), &[Role::Archive]).expect("add");
        trust.add("driver", &driver.verifying_key(), &[Role::Relay]).expect("add");
        let origin = NodeId::of(&me.verifying_key());
        let mut a = Holdings::default();
        a.add(&origin, 1, 10, Some(&chain(10).0));
        a.add(&origin, 21, 30, Some(&archive_chain_at_30.0));
        let mut d = Holdings::default();
        d.add(&origin, 1, 30, Some(&chain(30).0));
        let receipts: Vec<Summary> = [sign(&central, Timestamp(3 * DAY), &a), sign(&driver, Timestamp(3 * DAY), &d)]
            .iter()
            .map(|r| crate::receipt::summary(&r.bytes, &origin).expect("summary"))
            .collect();
        Loop::new(&origin, &[sent(1, 10, 0), sent(11, 20, 1), sent(21, 30, 2)], &receipts, &trust)
    }

    #[test]
    fn what_the_archive_lost_is_pending_since_it_was_sent_and_sent_again_when_overdue() {
        let l = picture(chain(30));
        let a = l.archive().expect("archive");
        assert_eq!(a.confirmed, vec![(1, 10), (21, 30)]);
        assert_eq!(
            a.pending,
            vec![Pending { first_seq: 11, last_seq: 20, first_sent: Timestamp(DAY), last_sent: Timestamp(DAY) }]
        );
        let driver = l.receivers.iter().find(|r| !r.archive).expect("driver");
        assert_eq!(driver.confirmed, vec![(1, 30)]);
        assert!(driver.pending.is_empty());
        assert!(l.overdue(Timestamp(14 * DAY), 14).is_empty(), "sent on day 1: 13 days old");
        assert_eq!(l.overdue(Timestamp(15 * DAY), 14).len(), 1);
        assert_eq!(l.resend_from(Timestamp(10 * DAY), 14, false), None);
        assert_eq!(l.resend_from(Timestamp(10 * DAY), 14, true), Some(11));
        assert_eq!(l.resend_from(Timestamp(16 * DAY), 14, false), Some(11));
        // Only the confirmed run from the journal's first row may go.
        assert_eq!(l.prune_to(1), Some(10));
        assert_eq!(l.prune_to(11), None, "11–20 are not confirmed");
        assert_eq!(l.prune_to(21), Some(30));
    }

    #[test]
    fn a_chain_hash_that_is_not_ours_is_a_fork_and_stops_every_prune() {
        let l = picture(chain(99));
        let a = l.archive().expect("archive");
        assert_eq!(a.forks.len(), 1);
        assert_eq!((a.forks[0].first_seq, a.forks[0].last_seq), (21, 30));
        assert_eq!(a.confirmed, vec![(1, 10)], "the forked range confirms nothing");
        assert!(l.forked());
        assert_eq!(l.prune_to(1), None);
    }

    #[test]
    fn subtracting_ranges() {
        assert_eq!(subtract(1, 10, &[]), vec![(1, 10)]);
        assert_eq!(subtract(1, 10, &[(1, 10)]), vec![]);
        assert_eq!(subtract(1, 10, &[(3, 4), (8, 20)]), vec![(1, 2), (5, 7)]);
        assert_eq!(subtract(5, 10, &[(1, 2), (4, 6), (12, 13)]), vec![(7, 10)]);
        assert!(covered(3, 5, &[(1, 2), (3, 9)]));
        assert!(!covered(3, 10, &[(1, 2), (3, 9)]));
    }
}
