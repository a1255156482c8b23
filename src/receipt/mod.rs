//! Receipts: a node's signed statement of which entries it durably holds
//! (see `docs/FORMAT.md`, "Receipts"), and how they travel back down the road.
//!
//! A server writes one after `bundle apply` (what its database's ledger
//! holds), a relay after it has written its output (what its ledger
//! carried). A receipt names its signer, its time, and per origin the seq
//! ranges held, each with the first 8 bytes of the chain hash at the range's
//! end. Receipts are cumulative: a node's newest receipt says everything it
//! holds, so each node keeps only the newest receipt of every signer (in
//! its state store, with an index of what each says: see [`Store`]).
//!
//! Receipts travel in the opposite direction to bundles, in the same
//! folders: a command that reads bundles from a folder (`bundle apply`,
//! `bundle relay --from`) leaves its own receipt and the receipts it holds
//! there, and a command that writes bundles into a folder (`bundle create
//! --out`, `bundle relay --out`) first takes in the receipts it finds there.

pub mod confirm;
pub mod holdings;
pub mod prune;
pub mod sent;
pub mod store;

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsutil;
use crate::journal::Timestamp;
use crate::keys::{self, KeyError, NodeId, TrustStore};

pub use holdings::Holdings;
pub use store::{Store, TakeIn};

/// The `format` field of every receipt.
pub const FORMAT_NAME: &str = "ferry-receipt";
/// The receipt format version this ferry writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Domain-separation prefix of the receipt signature (R5).
pub const RECEIPT_PREFIX: &[u8] = b"ferry-receipt-v1\0";
/// The largest receipt file read (R1): 16 MiB.
pub const MAX_RECEIPT: u64 = 16 << 20;
/// Hex characters of a range's chain hash: its first 8 bytes (R4).
pub const CHAIN_HEX: usize = 16;
/// The largest seq (as in bundles, D2).
const MAX_SEQ: u64 = i64::MAX as u64;

/// Errors about receipts.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("failed to read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a ferry receipt: {0}")]
    NotAReceipt(String),
    #[error("unsupported receipt format version {0} (made by a newer ferry? upgrade ferry to read it)")]
    UnsupportedVersion(u64),
    #[error("malformed receipt: {0}")]
    Malformed(String),
    #[error("receipt signed by {0}: {1}")]
    Signer(String, #[source] KeyError),
    #[error("bad signature: the receipt is not what {0} signed")]
    BadSignature(String),
    #[error(transparent)]
    State(crate::state::StateError),
}

/// One contiguous run of an origin's entries held, with the kept bytes of
/// the chain hash at its last seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldRange {
    pub first: u64,
    pub last: u64,
    /// The first 8 bytes of the chain hash `h(last)`, 16 lowercase hex.
    pub chain: String,
}

/// The ranges of one origin a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOrigin {
    pub origin: NodeId,
    pub ranges: Vec<HeldRange>,
}

/// A receipt's body (the first line of a receipt file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub format: String,
    pub version: u32,
    /// The node that holds the entries and signs.
    pub node: NodeId,
    /// When it signed (its own clock).
    pub at: Timestamp,
    pub origins: Vec<HeldOrigin>,
}

impl Receipt {
    /// The ranges held of `origin` (empty when none).
    pub fn ranges_of(&self, origin: &NodeId) -> &[HeldRange] {
        self.origins
            .binary_search_by(|o| o.origin.cmp(origin))
            .map(|i| self.origins[i].ranges.as_slice())
            .unwrap_or(&[])
    }
}

/// A receipt as read from its file: the parsed body, its exact bytes and
/// the signature text.
#[derive(Debug, Clone)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    /// The exact file bytes (body line and signature line).
    pub bytes: Vec<u8>,
}

impl SignedReceipt {
    /// The file name writers give it (A5's scheme):
    /// `ferry-receipt-<name>-YYYYMMDD-<12 hex of SHA-256(body)>.json`.
    pub fn file_name(&self, signer_name: Option<&str>) -> String {
        let day = self.receipt.at.to_rfc3339().get(..10).unwrap_or("00000000").replace('-', "");
        let hash = &hex::encode(Sha256::digest(&self.bytes))[..12];
        match signer_name.map(crate::bundle::format::file_name_part).filter(|n| !n.is_empty()) {
            Some(name) => format!("ferry-receipt-{name}-{day}-{hash}.json"),
            None => format!("ferry-receipt-{day}-{hash}.json"),
        }
    }
}

/// The kept bytes of a chain hash as a receipt writes them.
/// As a server's ledger keeps them, 8 bytes that are never all zero (all
/// zero means "unknown" there): an all-zero start ends in 01 instead.
pub fn chain_tag(bytes: &[u8]) -> String {
    let mut p = [0u8; CHAIN_HEX / 2];
    let n = bytes.len().min(p.len());
    p[..n].copy_from_slice(&bytes[..n]);
    if p == [0; CHAIN_HEX / 2] {
        p[p.len() - 1] = 1;
    }
    hex::encode(p)
}

/// Signs a receipt for `holdings` as `key`, dated `at`: the file bytes.
pub fn sign(key: &SigningKey, at: Timestamp, holdings: &Holdings) -> SignedReceipt {
    let receipt = Receipt {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        node: NodeId::of(&key.verifying_key()),
        at,
        origins: holdings.to_origins(),
    };
    // Serialising plain strings and integers cannot fail.
    let mut bytes = serde_json::to_vec(&receipt).unwrap_or_default();
    let sig = keys::encode_signature(&keys::sign(key, RECEIPT_PREFIX, &bytes));
    bytes.push(b'\n');
    bytes.extend_from_slice(sig.as_bytes());
    bytes.push(b'\n');
    SignedReceipt { receipt, bytes }
}

/// Parses a receipt file's bytes by rules R1–R4 (no signature check).
pub fn parse(bytes: &[u8]) -> Result<(Receipt, &[u8], &str), ReceiptError> {
    // R1: two lines, each ending in "\n", nothing else.
    if bytes.len() as u64 > MAX_RECEIPT {
        return Err(ReceiptError::Malformed(format!("longer than {MAX_RECEIPT} bytes")));
    }
    let nl = memchr::memchr(b'\n', bytes).ok_or_else(|| ReceiptError::Malformed("no line ending".into()))?;
    let (body, rest) = (&bytes[..nl], &bytes[nl + 1..]);
    // R2: format and version first.
    #[derive(Deserialize)]
    struct Head {
        format: Option<String>,
        version: Option<u64>,
    }
    let head: Head = serde_json::from_slice(body).map_err(|e| ReceiptError::NotAReceipt(format!("line 1: {e}")))?;
    if head.format.as_deref() != Some(FORMAT_NAME) {
        return Err(ReceiptError::NotAReceipt("line 1 does not name the ferry-receipt format".into()));
    }
    match head.version {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) if v > u64::from(FORMAT_VERSION) => return Err(ReceiptError::UnsupportedVersion(v)),
        v => return Err(ReceiptError::Malformed(format!("unknown version {v:?}"))),
    }
    let sig_line = rest
        .strip_suffix(b"\n")
        .ok_or_else(|| ReceiptError::Malformed("the signature line must end with a line ending".into()))?;
    if sig_line.contains(&b'\n') {
        return Err(ReceiptError::Malformed("more than two lines".into()));
    }
    let sig = std::str::from_utf8(sig_line).map_err(|_| ReceiptError::Malformed("signature is not text".into()))?;
    // R3: canonical form.
    let receipt: Receipt = serde_json::from_slice(body).map_err(|e| ReceiptError::Malformed(format!("line 1: {e}")))?;
    if serde_json::to_vec(&receipt).ok().as_deref() != Some(body) {
        return Err(ReceiptError::Malformed("line 1 is not in canonical form".into()));
    }
    check(&receipt)?;
    Ok((receipt, body, sig))
}

/// R4: the content rules.
fn check(r: &Receipt) -> Result<(), ReceiptError> {
    let bad = |m: String| Err(ReceiptError::Malformed(m));
    if r.at.in_range().is_none() {
        return bad("time out of range".into());
    }
    for (i, o) in r.origins.iter().enumerate() {
        if i > 0 && r.origins[i - 1].origin >= o.origin {
            return bad(format!("origins are not in ascending order at {}", o.origin));
        }
        if o.ranges.is_empty() {
            return bad(format!("origin {} has no ranges", o.origin));
        }
        for (j, g) in o.ranges.iter().enumerate() {
            if g.first < 1 || g.first > g.last || g.last > MAX_SEQ {
                return bad(format!(
                    "origin {}: range {}-{} is not 1 ≤ first ≤ last ≤ 2^63 − 1",
                    o.origin, g.first, g.last
                ));
            }
            if j > 0 && o.ranges[j - 1].last.saturating_add(1) >= g.first {
                return bad(format!(
                    "origin {}: ranges must be ascending, apart and merged (range {}-{} overlaps or touches the one before)",
                    o.origin, g.first, g.last
                ));
            }
            if g.chain.len() != CHAIN_HEX || !g.chain.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return bad(format!("origin {}: chain {:?} is not 16 lowercase hex characters", o.origin, g.chain));
            }
        }
    }
    Ok(())
}

/// Parses and verifies a receipt file's bytes against `trust` (R1–R5).
/// The signer must be in the trust store, in any role, and not revoked.
pub fn verify(bytes: &[u8], trust: &TrustStore) -> Result<SignedReceipt, ReceiptError> {
    let (receipt, body, sig) = parse(bytes)?;
    let signer = receipt.node.clone();
    let named = || trust.name_of(&signer).map_or_else(|| signer.to_string(), |n| format!("{n} ({signer})"));
    let k = trust
        .keys
        .iter()
        .find(|k| k.node == signer)
        .ok_or_else(|| ReceiptError::Signer(named(), KeyError::UnknownSigner(signer.clone())))?;
    if let Some(revoked) = k.revoked {
        return Err(ReceiptError::Signer(
            named(),
            KeyError::RevokedSigner { name: k.name.clone(), node: signer.clone(), revoked },
        ));
    }
    let vk = k.verifying_key().map_err(|e| ReceiptError::Signer(named(), e))?;
    if NodeId::of(&vk) != signer {
        return Err(ReceiptError::Signer(named(), KeyError::IdMismatch { name: k.name.clone(), node: signer.clone() }));
    }
    let sig = keys::decode_signature(sig).ok_or_else(|| ReceiptError::BadSignature(named()))?;
    if !keys::verify(&vk, RECEIPT_PREFIX, body, &sig) {
        return Err(ReceiptError::BadSignature(named()));
    }
    Ok(SignedReceipt { receipt, bytes: bytes.to_vec() })
}

/// Reads a receipt file (at most [`MAX_RECEIPT`] bytes) and verifies it.
pub fn read_file(path: &Path, trust: &TrustStore) -> Result<SignedReceipt, ReceiptError> {
    let io = |source| ReceiptError::Io { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_RECEIPT {
        return Err(ReceiptError::Malformed(format!("longer than {MAX_RECEIPT} bytes")));
    }
    verify(&std::fs::read(path).map_err(io)?, trust)
}

/// Whether a file name is a receipt's (`ferry-receipt-*.json`, not hidden,
/// not a temp file).
pub fn is_receipt_name(name: &str) -> bool {
    name.starts_with("ferry-receipt-") && name.ends_with(".json")
}

/// The receipt files directly inside `dir` (or `dir` itself when it is a
/// receipt file), sorted by name. A folder that does not exist holds none.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return if is_receipt_name(&name) { vec![dir.to_path_buf()] } else { Vec::new() };
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| is_receipt_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// What [`leave_in`] did in one folder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Left {
    /// Receipt files written.
    pub written: Vec<PathBuf>,
    /// Older receipts of the same signers removed from the folder.
    pub removed: Vec<PathBuf>,
}

/// Leaves `receipts` in `dir` for the next hop down: each written durably
/// under its own name (an identical file already there is left as it is),
/// and the older receipts of the same signers in that folder removed.
pub fn leave_in(dir: &Path, receipts: &[(SignedReceipt, Option<String>)]) -> std::io::Result<Left> {
    let mut left = Left::default();
    if receipts.is_empty() {
        return Ok(left);
    }
    std::fs::create_dir_all(dir)?;
    // The signer and time of each receipt file already there, read once
    // (not once per receipt left: a server may hold a thousand).
    let existing: Vec<(PathBuf, Option<(NodeId, Timestamp)>)> = files_in(dir)
        .into_iter()
        .map(|f| {
            let h = std::fs::read(&f).ok().and_then(|b| head(&b));
            (f, h)
        })
        .collect();
    let mut newest: std::collections::HashMap<&NodeId, (Timestamp, PathBuf)> = std::collections::HashMap::new();
    for (r, name) in receipts {
        let dest = dir.join(r.file_name(name.as_deref()));
        if !dest.exists() {
            let mut tmp = fsutil::temp_in(dir)?;
            std::io::Write::write_all(&mut tmp, &r.bytes)?;
            match fsutil::persist_new(tmp, &dest) {
                Ok(()) => left.written.push(dest.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        newest.insert(&r.receipt.node, (r.receipt.at, dest));
    }
    // Older receipts of the same signers go. A file is judged by its signer
    // and time without its signature: one that claims to be an older
    // receipt of a signer left here is either that (superseded) or a
    // forgery, and neither is worth keeping.
    for (f, h) in &existing {
        let Some((node, at)) = h else { continue };
        if let Some((new_at, dest)) = newest.get(node) {
            if f != dest && at < new_at {
                match std::fs::remove_file(f) {
                    Ok(()) => left.removed.push(f.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if !left.removed.is_empty() {
        fsutil::sync_dir(dir)?;
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Role;

    fn holdings() -> Holdings {
        let mut h = Holdings::default();
        let o = NodeId::try_from("00112233445566aa".to_owned()).expect("id");
        h.add(&o, 1, 10, Some(&[1; 32]));
        h.add(&o, 21, 30, Some(&[2; 32]));
        h
    }

    #[test]
    fn a_signed_receipt_verifies_and_any_changed_byte_fails() {
        let key = keys::generate().expect("rng");
        let mut trust = TrustStore::default();
        trust.add("central", &key.verifying_key(), &[Role::Origin]).expect("add");
        let r = sign(&key, Timestamp(1_790_000_000_000_000), &holdings());
        let back = verify(&r.bytes, &trust).expect("verifies");
        assert_eq!(back.receipt, r.receipt);
        for i in 0..r.bytes.len() {
            let mut b = r.bytes.clone();
            b[i] ^= 0x01;
            assert!(verify(&b, &trust).is_err(), "byte {i} flipped still verifies");
        }
        let mut longer = r.bytes.clone();
        longer.push(b'\n');
        assert!(verify(&longer, &trust).is_err(), "a third line");
    }

    #[test]
    fn unknown_and_revoked_signers_are_refused() {
        let key = keys::generate().expect("rng");
        let r = sign(&key, Timestamp(1_790_000_000_000_000), &holdings());
        let mut trust = TrustStore::default();
        assert!(matches!(verify(&r.bytes, &trust), Err(ReceiptError::Signer(_, KeyError::UnknownSigner(_)))));
        trust.add("central", &key.verifying_key(), &[Role::Archive]).expect("add");
        trust.revoke("central").expect("revoke");
        assert!(matches!(verify(&r.bytes, &trust), Err(ReceiptError::Signer(_, KeyError::RevokedSigner { .. }))));
    }
}

/// What [`after_hop`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HopReceipts {
    /// This node's receipt, when it holds anything.
    pub own: Option<PathBuf>,
    /// Whether it is a new receipt (not the same holdings as the last one).
    pub new: bool,
    /// Receipt files left in the folders the bundles came from.
    pub written: Vec<PathBuf>,
    /// Older receipts removed from those folders.
    pub removed: Vec<PathBuf>,
    /// Folders the receipts could not be left in (read-only media, full
    /// stick), with why: the hop itself is done; the next run that can write
    /// there leaves them.
    pub warnings: Vec<String>,
}

/// The folders bundles were read from: each folder given, or a file's folder.
pub fn folders_of(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    for p in paths {
        let d = if p.is_file() {
            p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
        } else {
            p.clone()
        };
        if !v.contains(&d) {
            v.push(d);
        }
    }
    v
}

/// After a hop that reads bundles from `folders` (`bundle apply`, `bundle
/// relay --from`): signs this node's receipt for `holdings` (the receipt it
/// holds already when that says the same, so running a hop again writes
/// nothing new), keeps it, and leaves it with every receipt this node holds
/// from others in `folders`, to travel back down.
pub fn after_hop(
    node: &crate::node::Node,
    holdings: &Holdings,
    folders: &[PathBuf],
) -> Result<HopReceipts, ReceiptError> {
    let trust = node.trust().map_err(|e| ReceiptError::Io {
        path: node.home.join("trust.json"),
        source: std::io::Error::other(crate::verify::error_chain(&e)),
    })?;
    let store = Store::open(&node.home)?;
    let mut hop = HopReceipts::default();
    if !holdings.is_empty() {
        let origins = holdings.to_origins();
        let held = store.get(node.id(), &trust)?;
        let own = match held {
            Some(h) if h.receipt.origins == origins => h,
            held => {
                let mut at = Timestamp::now();
                if let Some(h) = held {
                    // Newer than the last one even if the clock went back.
                    at = Timestamp(at.0.max(h.receipt.at.0 + 1));
                }
                let r = sign(node.signing_key(), at, holdings);
                store.keep(&r, &trust)?;
                hop.new = true;
                r
            }
        };
        hop.own = Some(PathBuf::from(own.file_name(Some(&node.info.name))));
    }
    let names: std::collections::HashMap<&NodeId, &str> =
        trust.keys.iter().map(|k| (&k.node, k.name.as_str())).collect();
    let all: Vec<(SignedReceipt, Option<String>)> = store
        .all(&trust)?
        .into_iter()
        .map(|r| {
            let name = names.get(&r.receipt.node).map(|n| (*n).to_owned());
            (r, name)
        })
        .collect();
    for dir in folders {
        match leave_in(dir, &all) {
            Ok(left) => {
                hop.written.extend(left.written);
                hop.removed.extend(left.removed);
            }
            Err(e) => hop.warnings.push(format!(
                "could not leave the receipts in {} ({e}); they go back with the next run that can write there",
                dir.display()
            )),
        }
    }
    Ok(hop)
}

/// What a reader needs of a held receipt for one origin, read without
/// building the other origins' ranges (a held receipt was checked in full,
/// R1–R5, when it was taken in): its signer, time and that origin's ranges.
#[derive(Debug, Clone)]
pub struct Summary {
    pub node: NodeId,
    pub at: Timestamp,
    pub ranges: Vec<HeldRange>,
}

/// [`Summary`] of a receipt file's bytes for `origin` (`None` when the body
/// does not parse).
pub fn summary(bytes: &[u8], origin: &NodeId) -> Option<Summary> {
    #[derive(Deserialize)]
    struct Light<'a> {
        node: NodeId,
        at: Timestamp,
        #[serde(borrow)]
        origins: Vec<LightOrigin<'a>>,
    }
    #[derive(Deserialize)]
    struct LightOrigin<'a> {
        #[serde(borrow)]
        origin: &'a str,
        #[serde(borrow)]
        ranges: &'a serde_json::value::RawValue,
    }
    let body = &bytes[..memchr::memchr(b'\n', bytes)?];
    let l: Light<'_> = serde_json::from_slice(body).ok()?;
    let ranges = match l.origins.iter().find(|o| o.origin == origin.as_str()) {
        Some(o) => serde_json::from_str(o.ranges.get()).ok()?,
        None => Vec::new(),
    };
    Some(Summary { node: l.node, at: l.at, ranges })
}

/// The signer and time of a receipt written in canonical form (R3), from
/// the first bytes of its file: `{"format":"ferry-receipt","version":1,
/// "node":"<16 hex>","at":"<27 characters>"`. `None` when they are not in
/// that form (then [`head`] reads the whole body).
pub fn quick_head(prefix: &[u8]) -> Option<(NodeId, Timestamp)> {
    const START: &[u8] = b"{\"format\":\"ferry-receipt\",\"version\":1,\"node\":\"";
    let rest = prefix.strip_prefix(START)?;
    let node = std::str::from_utf8(rest.get(..16)?).ok()?;
    let rest = rest.get(16..)?.strip_prefix(b"\",\"at\":\"")?;
    let at = std::str::from_utf8(rest.get(..27)?).ok()?;
    if rest.get(27) != Some(&b'"') {
        return None;
    }
    Some((NodeId::try_from(node.to_owned()).ok()?, Timestamp::parse(at).ok()?))
}

/// How many bytes of a receipt file [`quick_head`] needs.
pub const QUICK_HEAD: usize = 128;

/// The signer and time of a receipt file's bytes, read without the rest.
pub fn head(bytes: &[u8]) -> Option<(NodeId, Timestamp)> {
    if let Some(h) = quick_head(bytes) {
        return Some(h);
    }
    #[derive(Deserialize)]
    struct Head {
        node: NodeId,
        at: Timestamp,
    }
    let body = &bytes[..memchr::memchr(b'\n', bytes)?];
    let h: Head = serde_json::from_slice(body).ok()?;
    Some((h.node, h.at))
}
