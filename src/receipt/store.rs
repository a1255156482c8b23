//! The receipts a node holds: the newest verified receipt of every signer,
//! kept in the node's state store (`HOME/state.sqlite3`) with an index of
//! what each says, so that `status`, `bundle create` and `prune` read one
//! origin's confirmed ranges with one query instead of every receipt file.
//!
//! Three tables, written together in one transaction (so the index can never
//! disagree with the receipts it indexes):
//!
//! - `receipts_held`: per signer, the receipt's time, the short hash its file
//!   name carries, and its exact bytes (the body and signature line, as left
//!   on sticks for the way back);
//! - `receipts_ranges`: per origin and signer, the ranges held with the chain
//!   hash at each end (what `status` and `bundle create` need);
//! - `receipts_seen`: the short hashes of receipt files read from sticks
//!   before that changed nothing (older than the one held), so that a stick
//!   that comes back with the same receipts is not read again.
//!
//! A receipt older than the one held from the same signer changes nothing
//! (a replayed receipt cannot take back or add to what a newer one says),
//! and one dated more than a day ahead of this computer's clock is refused
//! (a signer whose clock is wrong would otherwise shadow its later receipts).
//!
//! Trust is applied when reading, not only when taking in: a signer revoked
//! or removed from the trust store since its receipt was taken in counts for
//! nothing ([`Store::get`], [`Store::all`], [`Store::summaries`]), so a
//! revocation can never leave a prune standing on that signer's word.
//!
//! Homes made by an earlier ferry kept the receipts as
//! `HOME/receipts/<node id>.json`; [`Store::open`] moves them into the state
//! store (and removes the folder) the first time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{files_in, read_file, ReceiptError, SignedReceipt, Summary};
use crate::journal::Timestamp;
use crate::keys::{NodeId, TrustStore};
use crate::state::{State, StateError};

/// How far ahead of this computer's clock a receipt may be dated: one day.
const AHEAD: i64 = 86_400_000_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS receipts_held (
    node  TEXT PRIMARY KEY,
    at    INTEGER NOT NULL,
    hash  TEXT NOT NULL,
    bytes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_held_heads ON receipts_held (node, at, hash);
CREATE TABLE IF NOT EXISTS receipts_ranges (
    origin TEXT NOT NULL,
    node   TEXT NOT NULL,
    first  INTEGER NOT NULL,
    last   INTEGER NOT NULL,
    chain  TEXT NOT NULL,
    PRIMARY KEY (origin, node, first)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_ranges_node ON receipts_ranges (node);
CREATE TABLE IF NOT EXISTS receipts_seen (
    hash TEXT PRIMARY KEY
) WITHOUT ROWID;
";

/// The receipts held in a node home.
pub struct Store {
    state: State,
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

/// The short hash of a receipt file's bytes, as its file name carries it
/// (12 hex of SHA-256).
pub fn short_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..12].to_owned()
}

/// The short hash a receipt file's name carries (`…-<12 hex>.json`), if any.
fn name_hash(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?.strip_suffix(".json")?;
    let h = name.get(name.len().checked_sub(13)?..)?.strip_prefix('-')?;
    h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')).then_some(h)
}

/// Whether `node` is trusted (in any role) and not revoked.
fn trusted_set(trust: &TrustStore) -> HashSet<&NodeId> {
    trust.keys.iter().filter(|k| k.revoked.is_none()).map(|k| &k.node).collect()
}

impl Store {
    /// The store of the node home `home`: its state store, with the tables
    /// made when missing and receipts an earlier ferry kept as files moved in.
    pub fn open(home: &Path) -> Result<Store, ReceiptError> {
        let state = State::open(&home.join("state.sqlite3"))?;
        state.connection().execute_batch(SCHEMA).map_err(state.err())?;
        let store = Store { state };
        store.move_in_files(&home.join("receipts"))?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> ReceiptError + '_ {
        let e = self.state.err();
        move |source| ReceiptError::State(e(source))
    }

    /// Receipts an earlier ferry kept as `HOME/receipts/<node id>.json`.
    fn move_in_files(&self, dir: &Path) -> Result<(), ReceiptError> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
        let io = |source| ReceiptError::Io { path: dir.to_path_buf(), source };
        let mut found = Vec::new();
        for e in entries {
            let e = e.map_err(io)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(node) = name.strip_suffix(".json").and_then(|n| NodeId::try_from(n.to_owned()).ok()) else {
                continue;
            };
            let bytes = std::fs::read(e.path()).map_err(io)?;
            // Checked in full (R1–R4) when taken in; only what still parses comes along.
            if let Ok((receipt, _, _)) = super::parse(&bytes) {
                if receipt.node == node {
                    found.push(SignedReceipt { receipt, bytes });
                }
            }
        }
        self.keep_all(&found, &[])?;
        std::fs::remove_dir_all(dir).map_err(io)?;
        Ok(())
    }

    /// The time and short hash of every held receipt, by signer.
    fn heads(&self) -> Result<HashMap<NodeId, (Timestamp, String)>, ReceiptError> {
        let c = self.state.connection();
        let mut st = c
            .prepare_cached("SELECT node, at, hash FROM receipts_held INDEXED BY receipts_held_heads")
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
            .map_err(self.err())?;
        let mut m = HashMap::new();
        for row in rows {
            let (node, at, hash) = row.map_err(self.err())?;
            if let Ok(node) = NodeId::try_from(node) {
                m.insert(node, (Timestamp(at), hash));
            }
        }
        Ok(m)
    }

    /// The held receipt of `node`, if any and its signer is still trusted
    /// and not revoked. Its signature was verified when it was taken in (the
    /// state store is this node's own, like its trust store); here it is
    /// parsed again (R1–R4).
    pub fn get(&self, node: &NodeId, trust: &TrustStore) -> Result<Option<SignedReceipt>, ReceiptError> {
        if !trusted_set(trust).contains(node) {
            return Ok(None);
        }
        let bytes: Option<Vec<u8>> = self
            .state
            .connection()
            .query_row("SELECT bytes FROM receipts_held WHERE node = ?1", [node.as_str()], |r| r.get(0))
            .optional()
            .map_err(self.err())?;
        Ok(bytes.and_then(|b| parsed(b).filter(|r| &r.receipt.node == node)))
    }

    /// Every held receipt whose signer is still trusted (and not revoked), by signer.
    pub fn all(&self, trust: &TrustStore) -> Result<Vec<SignedReceipt>, ReceiptError> {
        let trusted = trusted_set(trust);
        let c = self.state.connection();
        let mut st = c.prepare("SELECT node, bytes FROM receipts_held ORDER BY node").map_err(self.err())?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))).map_err(self.err())?;
        let mut v = Vec::new();
        for row in rows {
            let (node, bytes) = row.map_err(self.err())?;
            let Ok(node) = NodeId::try_from(node) else { continue };
            if trusted.contains(&node) {
                if let Some(r) = parsed(bytes).filter(|r| r.receipt.node == node) {
                    v.push(r);
                }
            }
        }
        Ok(v)
    }

    /// For each held receipt whose signer is still trusted (and not
    /// revoked), what it says of `origin`, by signer: read from the index,
    /// one query, whatever the number of receipts or of other origins.
    pub fn summaries(&self, trust: &TrustStore, origin: &NodeId) -> Result<Vec<Summary>, ReceiptError> {
        let trusted = trusted_set(trust);
        let mut by_node: std::collections::BTreeMap<NodeId, Summary> = std::collections::BTreeMap::new();
        for (node, (at, _)) in self.heads()? {
            if trusted.contains(&node) {
                by_node.insert(node.clone(), Summary { node, at, ranges: Vec::new() });
            }
        }
        let c = self.state.connection();
        let mut st = c
            .prepare_cached(
                "SELECT node, first, last, chain FROM receipts_ranges WHERE origin = ?1 ORDER BY node, first",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([origin.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
            })
            .map_err(self.err())?;
        for row in rows {
            let (node, first, last, chain) = row.map_err(self.err())?;
            let Ok(node) = NodeId::try_from(node) else { continue };
            if let Some(s) = by_node.get_mut(&node) {
                s.ranges.push(super::HeldRange { first: first as u64, last: last as u64, chain });
            }
        }
        Ok(by_node.into_values().collect())
    }

    /// Keeps `r` if it is newer than the receipt held from its signer.
    /// Returns whether it was kept. The caller verified it.
    pub fn keep(&self, r: &SignedReceipt, _trust: &TrustStore) -> Result<bool, ReceiptError> {
        Ok(self.keep_all(std::slice::from_ref(r), &[])? == 1)
    }

    /// Keeps each of `receipts` that is newer than the one held from its
    /// signer, and remembers the short hashes `seen` (receipt files read
    /// that changed nothing), in one transaction; returns how many were kept.
    fn keep_all(&self, receipts: &[SignedReceipt], seen: &[String]) -> Result<usize, ReceiptError> {
        if receipts.is_empty() && seen.is_empty() {
            return Ok(0);
        }
        let c = self.state.connection();
        let err = self.err();
        let tx = c.unchecked_transaction().map_err(&err)?;
        let mut kept = 0;
        for r in receipts {
            let node = r.receipt.node.as_str();
            let held: Option<i64> = tx
                .query_row("SELECT at FROM receipts_held WHERE node = ?1", [node], |x| x.get(0))
                .optional()
                .map_err(&err)?;
            if held.is_some_and(|at| at >= r.receipt.at.0) {
                continue;
            }
            tx.execute(
                "INSERT OR REPLACE INTO receipts_held (node, at, hash, bytes) VALUES (?1, ?2, ?3, ?4)",
                params![node, r.receipt.at.0, short_hash(&r.bytes), &r.bytes],
            )
            .map_err(&err)?;
            tx.execute("DELETE FROM receipts_ranges WHERE node = ?1", [node]).map_err(&err)?;
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO receipts_ranges (origin, node, first, last, chain) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(&err)?;
            for o in &r.receipt.origins {
                for g in &o.ranges {
                    ins.execute(params![o.origin.as_str(), node, g.first as i64, g.last as i64, g.chain])
                        .map_err(&err)?;
                }
            }
            kept += 1;
        }
        {
            let mut st = tx.prepare_cached("INSERT OR IGNORE INTO receipts_seen (hash) VALUES (?1)").map_err(&err)?;
            for h in seen {
                st.execute([h]).map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        Ok(kept)
    }

    fn seen(&self) -> Result<HashSet<String>, ReceiptError> {
        let c = self.state.connection();
        let mut st = c.prepare_cached("SELECT hash FROM receipts_seen").map_err(self.err())?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(self.err())?;
        rows.collect::<Result<HashSet<_>, _>>().map_err(self.err())
    }

    /// Takes in the receipt files found directly in `folders`: each is
    /// verified against `trust` and kept when newer than what is held from
    /// its signer. `me`'s own receipts are known already.
    ///
    /// A file whose name carries the hash of a receipt held, or of one read
    /// before that changed nothing, is not read at all: a stick comes back
    /// with the same receipts trip after trip. Of the others only the first
    /// bytes (signer and time) are read, and only each signer's newest is
    /// read whole and verified. (A file given such a name by someone else is
    /// skipped too, or remembered under a name that is not its content's:
    /// either can only leave something unconfirmed, never confirm it, and
    /// whoever can do that to a stick can as well delete the file.)
    pub fn take_in(&self, folders: &[PathBuf], trust: &TrustStore, me: &NodeId) -> Result<TakeIn, ReceiptError> {
        let mut t = TakeIn::default();
        let now = Timestamp::now();
        let mut seen_paths = HashSet::new();
        let held = self.heads()?;
        let held_hashes: HashSet<&str> = held.values().map(|(_, h)| h.as_str()).collect();
        let seen = self.seen()?;
        let mut newly_seen: Vec<String> = Vec::new();
        // A receipt that is not newer than the one held from its signer
        // changes nothing, whatever it holds: it is not even verified (a
        // stick may carry many old ones). Of the newer ones, each signer's
        // newest is verified first; the next newest only if it fails.
        let mut newer: Vec<(NodeId, Timestamp, PathBuf, String)> = Vec::new();
        let mut unreadable: Vec<PathBuf> = Vec::new();
        for folder in folders {
            let canonical = folder.canonicalize().unwrap_or_else(|_| folder.clone());
            for f in files_in(folder) {
                let hash = name_hash(&f).map(str::to_owned);
                if hash.as_deref().is_some_and(|h| held_hashes.contains(h) || seen.contains(h)) {
                    t.known += 1;
                    continue;
                }
                let same = f.file_name().map_or_else(|| f.clone(), |n| canonical.join(n));
                if !seen_paths.insert(same) {
                    continue;
                }
                // The signer and time are at the start of a receipt in
                // canonical form: only those bytes are read here.
                match read_head(&f) {
                    Some((node, at)) => {
                        let known = &node == me || held.get(&node).is_some_and(|(h_at, _)| *h_at >= at);
                        if known {
                            t.known += 1;
                            newly_seen.extend(hash);
                        } else {
                            newer.push((node, at, f, hash.unwrap_or_default()));
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
        let mut keep: Vec<SignedReceipt> = Vec::new();
        for (node, at, f, hash) in newer {
            if done.as_ref() == Some(&node) {
                // Older than the newest of its signer just taken in.
                t.known += 1;
                if !hash.is_empty() {
                    newly_seen.push(hash);
                }
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
                    t.taken.push((node.clone(), at, f));
                    keep.push(r);
                    done = Some(node);
                }
                Ok(_) => t.known += 1,
                Err(e) => t.refused.push((f, crate::verify::error_chain(&e))),
            }
        }
        self.keep_all(&keep, &newly_seen)?;
        Ok(t)
    }
}

impl From<StateError> for ReceiptError {
    fn from(e: StateError) -> ReceiptError {
        ReceiptError::State(e)
    }
}

/// The signer and time of a receipt file: from its first bytes when it is
/// in canonical form, else from its whole body.
fn read_head(path: &Path) -> Option<(NodeId, Timestamp)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut prefix = [0u8; super::QUICK_HEAD];
    let mut n = 0;
    while n < prefix.len() {
        match f.read(&mut prefix[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    if let Some(h) = super::quick_head(&prefix[..n]) {
        return Some(h);
    }
    let mut bytes = prefix[..n].to_vec();
    f.take(super::MAX_RECEIPT).read_to_end(&mut bytes).ok()?;
    super::head(&bytes)
}

/// A held receipt's bytes, parsed (R1–R4).
fn parsed(bytes: Vec<u8>) -> Option<SignedReceipt> {
    let (receipt, _, _) = super::parse(&bytes).ok()?;
    Some(SignedReceipt { receipt, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Role;
    use crate::receipt::{sign, Holdings};

    fn setup() -> (tempfile::TempDir, TrustStore, ed25519_dalek::SigningKey, NodeId) {
        let dir = tempfile::tempdir().expect("tmp");
        let key = crate::keys::generate().expect("key");
        let mut trust = TrustStore::default();
        trust.add("central", &key.verifying_key(), &[Role::Archive]).expect("add");
        let origin = NodeId::try_from("00112233445566aa".to_owned()).expect("id");
        (dir, trust, key, origin)
    }

    fn holding(origin: &NodeId, last: u64) -> Holdings {
        let mut h = Holdings::default();
        h.add(origin, 1, last, Some(&[last as u8; 32]));
        h
    }

    #[test]
    fn the_index_says_what_the_newest_receipt_says_and_a_revoked_signer_counts_for_nothing() {
        let (dir, mut trust, key, origin) = setup();
        let store = Store::open(dir.path()).expect("open");
        let old = sign(&key, Timestamp(1_000), &holding(&origin, 5));
        let new = sign(&key, Timestamp(2_000), &holding(&origin, 9));
        assert!(store.keep(&new, &trust).expect("keep"));
        assert!(!store.keep(&old, &trust).expect("keep"), "an older receipt changes nothing");
        let s = store.summaries(&trust, &origin).expect("summaries");
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].ranges[0].first, s[0].ranges[0].last), (1, 9));
        assert!(store.get(&s[0].node, &trust).expect("get").is_some());
        trust.revoke("central").expect("revoke");
        assert!(store.summaries(&trust, &origin).expect("summaries").is_empty(), "revoked: its receipt says nothing");
        assert!(store.get(&s[0].node, &trust).expect("get").is_none());
        assert!(store.all(&trust).expect("all").is_empty());
    }

    #[test]
    fn receipts_an_earlier_ferry_kept_as_files_are_moved_in() {
        let (dir, trust, key, origin) = setup();
        let r = sign(&key, Timestamp(1_000), &holding(&origin, 7));
        let old = dir.path().join("receipts");
        std::fs::create_dir_all(&old).expect("mkdir");
        std::fs::write(old.join(format!("{}.json", r.receipt.node)), &r.bytes).expect("write");
        let store = Store::open(dir.path()).expect("open");
        assert!(!old.exists(), "the folder is gone once moved in");
        assert_eq!(store.get(&r.receipt.node, &trust).expect("get").map(|g| g.bytes), Some(r.bytes));
    }

    #[test]
    fn a_stick_file_already_seen_is_not_read_again() {
        let (dir, trust, key, origin) = setup();
        std::fs::create_dir_all(dir.path().join("home")).expect("mkdir");
        let store = Store::open(&dir.path().join("home")).expect("open");
        let stick = dir.path().join("stick");
        std::fs::create_dir_all(&stick).expect("mkdir");
        let new = sign(&key, Timestamp(2_000), &holding(&origin, 9));
        let old = sign(&key, Timestamp(1_000), &holding(&origin, 5));
        for r in [&new, &old] {
            std::fs::write(stick.join(r.file_name(Some("central"))), &r.bytes).expect("write");
        }
        let me = NodeId::try_from("ffeeddccbbaa0011".to_owned()).expect("id");
        let t = store.take_in(std::slice::from_ref(&stick), &trust, &me).expect("take in");
        assert_eq!((t.taken.len(), t.known), (1, 1));
        // Both are known by name now: unreadable files under those names are not even opened.
        for r in [&new, &old] {
            std::fs::write(stick.join(r.file_name(Some("central"))), b"garbage").expect("write");
        }
        let t = store.take_in(std::slice::from_ref(&stick), &trust, &me).expect("take in");
        assert_eq!((t.taken.len(), t.known, t.refused.len()), (0, 2, 0));
    }
}
