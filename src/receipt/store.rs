//! The receipts a node holds: the newest verified receipt of every signer,
//! as `HOME/receipts/<node id>.json` (the receipt file's exact bytes).
//!
//! A receipt older than the one held from the same signer changes nothing
//! (a replayed receipt cannot take back or add to what a newer one says),
//! and one dated more than a day ahead of this computer's clock is refused
//! (a signer whose clock is wrong would otherwise shadow its later receipts).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{files_in, read_file, SignedReceipt};
use crate::fsutil;
use crate::journal::Timestamp;
use crate::keys::{NodeId, TrustStore};

/// How far ahead of this computer's clock a receipt may be dated: one day.
const AHEAD: i64 = 86_400_000_000;

/// The receipts held in a node home.
pub struct Store {
    dir: PathBuf,
}

/// What [`Store::take_in`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TakeIn {
    /// Receipts newer than the one held from their signer: (signer, time, file).
    pub taken: Vec<(NodeId, Timestamp, PathBuf)>,
    /// Receipts not newer than what is held (or this node's own): nothing to do.
    pub known: u64,
    /// Receipt files refused, with the reason (forged, unknown or revoked
    /// signer, malformed, dated ahead).
    pub refused: Vec<(PathBuf, String)>,
}

impl Store {
    /// The store of the node home `home` (made when first written).
    pub fn open(home: &Path) -> Store {
        Store { dir: home.join("receipts") }
    }

    fn path_of(&self, node: &NodeId) -> PathBuf {
        self.dir.join(format!("{node}.json"))
    }

    /// The held receipt of `node`, if any. Its signature was verified when
    /// it was taken in (the home is this node's own, like its trust store);
    /// here it is parsed again, and its signer must still be trusted: a
    /// signer revoked since does not count.
    pub fn get(&self, node: &NodeId, trust: &TrustStore) -> Option<SignedReceipt> {
        let p = self.path_of(node);
        if !p.is_file() {
            return None;
        }
        held(&p, trust).filter(|r| &r.receipt.node == node)
    }

    /// Every held receipt whose signer is still trusted, by signer.
    pub fn all(&self, trust: &TrustStore) -> Vec<SignedReceipt> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut v: Vec<SignedReceipt> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let node = NodeId::try_from(name.strip_suffix(".json")?.to_owned()).ok()?;
                held(&e.path(), trust).filter(|r| r.receipt.node == node)
            })
            .collect();
        v.sort_by(|a, b| a.receipt.node.cmp(&b.receipt.node));
        v
    }

    /// For each held receipt whose signer is still trusted (and not
    /// revoked), what it says of `origin` ([`super::summary`]), by signer.
    pub fn summaries(&self, trust: &TrustStore, origin: &NodeId) -> Vec<super::Summary> {
        let trusted: std::collections::HashSet<&NodeId> =
            trust.keys.iter().filter(|k| k.revoked.is_none()).map(|k| &k.node).collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut v: Vec<super::Summary> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let node = NodeId::try_from(name.strip_suffix(".json")?.to_owned()).ok()?;
                if !trusted.contains(&node) {
                    return None;
                }
                let bytes = std::fs::read(e.path()).ok()?;
                super::summary(&bytes, origin).filter(|s| s.node == node)
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    /// The signer and time of every held receipt, with its bytes.
    fn held_heads(&self) -> std::collections::HashMap<NodeId, (Timestamp, Vec<u8>)> {
        let mut m = std::collections::HashMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return m };
        for e in entries.filter_map(Result::ok) {
            let Ok(bytes) = std::fs::read(e.path()) else { continue };
            if let Some((node, at)) = super::head(&bytes) {
                if e.file_name().to_string_lossy() == format!("{node}.json") {
                    m.insert(node, (at, bytes));
                }
            }
        }
        m
    }

    /// Keeps `r` if it is newer than the receipt held from its signer.
    /// Returns whether it was kept.
    pub fn keep(&self, r: &SignedReceipt, trust: &TrustStore) -> std::io::Result<bool> {
        if let Some(held) = self.get(&r.receipt.node, trust) {
            if held.receipt.at >= r.receipt.at {
                return Ok(false);
            }
        }
        std::fs::create_dir_all(&self.dir)?;
        // Atomic (a temp file renamed over the old one), but not synced: a
        // held receipt lost to a crash only means nothing is confirmed until
        // it is taken in again, which errs on the safe side, and a stick
        // brings a thousand receipts cheaply.
        let mut tmp = fsutil::temp_in(&self.dir)?;
        std::io::Write::write_all(&mut tmp, &r.bytes)?;
        tmp.persist(self.path_of(&r.receipt.node)).map_err(|e| e.error)?;
        Ok(true)
    }

    /// Takes in the receipt files found directly in `folders`: each is
    /// verified against `trust` and kept when newer than what is held from
    /// its signer. `me`'s own receipts are known already.
    pub fn take_in(&self, folders: &[PathBuf], trust: &TrustStore, me: &NodeId) -> std::io::Result<TakeIn> {
        let mut t = TakeIn::default();
        let now = Timestamp::now();
        let mut seen = std::collections::HashSet::new();
        let held = self.held_heads();
        // A receipt that is not newer than the one held from its signer
        // changes nothing, whatever it holds: it is not even verified (a
        // stick may carry many old ones). Of the newer ones, each signer's
        // newest is verified first; the next newest only if it fails.
        let mut newer: Vec<(NodeId, Timestamp, PathBuf)> = Vec::new();
        let mut unreadable: Vec<PathBuf> = Vec::new();
        for folder in folders {
            for f in files_in(folder) {
                if !seen.insert(f.canonicalize().unwrap_or_else(|_| f.clone())) {
                    continue;
                }
                match std::fs::read(&f).ok().and_then(|b| super::head(&b).map(|h| (h, b))) {
                    Some(((node, at), bytes)) => {
                        let known = &node == me
                            || held.get(&node).is_some_and(|(h_at, h_bytes)| *h_at >= at || *h_bytes == bytes);
                        if known {
                            t.known += 1;
                        } else {
                            newer.push((node, at, f));
                        }
                    }
                    None => unreadable.push(f),
                }
            }
        }
        for f in unreadable {
            // Not even a signer and a time: verifying says what is wrong.
            match read_file(&f, trust) {
                Ok(_) => t.known += 1,
                Err(e) => t.refused.push((f, crate::verify::error_chain(&e))),
            }
        }
        newer.sort_by(|a, b| (&a.0, b.1, &a.2).cmp(&(&b.0, a.1, &b.2)));
        let mut done: Option<NodeId> = None;
        for (node, at, f) in newer {
            if done.as_ref() == Some(&node) {
                t.known += 1;
                continue;
            }
            if at.0 > now.0.saturating_add(AHEAD) {
                t.refused.push((
                    f,
                    format!(
                        "dated {at}, more than a day ahead of this computer's clock: the clock of {} or of this \
                         computer is wrong",
                        trust.name_of(&node).unwrap_or(node.as_str())
                    ),
                ));
                continue;
            }
            match read_file(&f, trust) {
                Ok(r) if r.receipt.node == node && r.receipt.at == at => {
                    if self.keep(&r, trust)? {
                        t.taken.push((node.clone(), at, f));
                    } else {
                        t.known += 1;
                    }
                    done = Some(node);
                }
                Ok(_) => t.known += 1,
                Err(e) => t.refused.push((f, crate::verify::error_chain(&e))),
            }
        }
        Ok(t)
    }
}

/// A held receipt file: parsed (R1–R4) with its signer still trusted and not
/// revoked.
fn held(path: &Path, trust: &TrustStore) -> Option<SignedReceipt> {
    let bytes = std::fs::read(path).ok()?;
    let (receipt, _, _) = super::parse(&bytes).ok()?;
    trust.keys.iter().find(|k| k.node == receipt.node && k.revoked.is_none())?;
    Some(SignedReceipt { receipt, bytes })
}
