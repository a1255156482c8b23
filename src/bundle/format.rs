//! The bundle byte layout (specified in `docs/FORMAT.md`).
//!
//! A bundle is a POSIX ustar archive with canonical headers (mode 0644, uid and
//! gid 0, mtime 0, no user or group names), members in this order:
//!
//! 1. `manifest.json`: compact JSON, [`Manifest`].
//! 2. `manifest.sig`: 86 base64url characters, the sealer's signature over
//!    `"ferry-manifest-v1\0" || manifest.json`.
//! 3. one member per segment, in manifest order, named
//!    `<origin>.<first_seq>-<last_seq>.jsonl.zst`: a single zstd frame holding
//!    the entry lines, each ending in `\n`.
//!
//! then the two zero blocks that end a tar archive, and nothing more. Every
//! byte is covered: headers and padding must be exactly what ferry writes,
//! the manifest must be in canonical form and is signed, segment bytes are
//! pinned by hashes in signed descriptors.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::chain::ChainHash;
use crate::journal::{EntryHead, Op, Timestamp};
use crate::keys::NodeId;

/// The value of the manifest's `format` field.
pub const FORMAT_NAME: &str = "ferry-bundle";
/// The bundle format version this ferry writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Domain-separation prefixes of every signed message.
pub const SEGMENT_PREFIX: &[u8] = b"ferry-segment-v1\0";
pub const HOP_PREFIX: &[u8] = b"ferry-hop-v1\0";
pub const MANIFEST_PREFIX: &[u8] = b"ferry-manifest-v1\0";

pub const MANIFEST_MEMBER: &str = "manifest.json";
pub const SIGNATURE_MEMBER: &str = "manifest.sig";
/// A manifest larger than this is refused before it is parsed.
pub const MAX_MANIFEST: u64 = 64 << 20;
/// The decoder refuses zstd windows above 2^WINDOW_LOG_MAX bytes (ferry writes 2^21).
pub const WINDOW_LOG_MAX: u32 = 23;
/// The encoder's window (2 MiB) and level.
pub const WINDOW_LOG: u32 = 21;
pub const ZSTD_LEVEL: i32 = 3;
/// A segment may not claim to expand more than this many times its
/// compressed size (bounds the work a small bundle can cause).
pub const MAX_EXPANSION: u64 = 1000;

pub(crate) const BLOCK: usize = 512;

/// Per-table counts of each operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpCounts {
    pub insert: u64,
    pub update: u64,
    pub delete: u64,
}

impl OpCounts {
    pub fn add(&mut self, op: Op) {
        match op {
            Op::Insert => self.insert += 1,
            Op::Update => self.update += 1,
            Op::Delete => self.delete += 1,
        }
    }
    pub fn total(&self) -> u64 {
        self.insert + self.update + self.delete
    }
}

/// What an origin signs about one segment. Its JSON bytes travel verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentDescriptor {
    pub origin: NodeId,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    pub ts_min: Timestamp,
    pub ts_max: Timestamp,
    /// Chain hash before `first_seq` (hex).
    pub chain_before: String,
    /// Chain hash at `last_seq` (hex).
    pub chain_after: String,
    /// Fingerprint of the origin's schema, when known (captured journals).
    pub schema: Option<String>,
    pub tables: BTreeMap<String, OpCounts>,
    pub entries_len: u64,
    pub entries_sha256: String,
    pub zstd_len: u64,
    pub zstd_sha256: String,
}

impl SegmentDescriptor {
    /// The tar member name of this segment.
    pub fn member_name(&self) -> String {
        format!("{}.{}-{}.jsonl.zst", self.origin, self.first_seq, self.last_seq)
    }
    pub fn chain_before(&self) -> Option<ChainHash> {
        ChainHash::from_hex(&self.chain_before)
    }
    pub fn chain_after(&self) -> Option<ChainHash> {
        ChainHash::from_hex(&self.chain_after)
    }
}

/// One relay's signature in a segment's chain of custody.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    pub node: NodeId,
    pub at: Timestamp,
    pub signature: String,
}

/// A segment as listed in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSegment {
    /// The origin's descriptor, byte for byte as the origin wrote it.
    pub descriptor: Box<RawValue>,
    /// The origin's signature over `"ferry-segment-v1\0" || descriptor`.
    pub signature: String,
    /// Relays that carried the segment, oldest first.
    pub hops: Vec<Hop>,
}

/// The first member of every bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub sealed_by: NodeId,
    pub sealed_at: Timestamp,
    pub segments: Vec<ManifestSegment>,
}

/// The message a hop signs: it binds the segment (descriptor and origin
/// signature), every earlier hop (through the previous hop's signature), and
/// the hop's own node and time.
pub fn hop_message(
    descriptor: &[u8],
    origin_sig: &[u8; 64],
    previous: Option<&[u8; 64]>,
    node: &NodeId,
    at: Timestamp,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + 64 + 64 + 16 + 1 + 27);
    m.extend_from_slice(&Sha256::digest(descriptor));
    m.extend_from_slice(origin_sig);
    m.extend_from_slice(previous.unwrap_or(&[0u8; 64]));
    m.extend_from_slice(node.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(at.to_rfc3339().as_bytes());
    m
}

/// Running totals over a segment's entries: what its descriptor must say.
#[derive(Debug, Clone)]
pub struct Summary {
    pub first_seq: Option<u64>,
    pub last_seq: u64,
    pub count: u64,
    pub ts_min: Timestamp,
    pub ts_max: Timestamp,
    pub chain: ChainHash,
    pub tables: BTreeMap<String, OpCounts>,
}

impl Summary {
    pub fn new(chain_before: ChainHash) -> Self {
        Summary {
            first_seq: None,
            last_seq: 0,
            count: 0,
            ts_min: Timestamp(i64::MAX),
            ts_max: Timestamp(i64::MIN),
            chain: chain_before,
            tables: BTreeMap::new(),
        }
    }

    /// Adds the next entry known only by its bytes (counted and chained, not
    /// parsed: seqs, times and tables stay as they were).
    pub fn push_unparsed(&mut self, bytes: &[u8]) {
        self.count += 1;
        self.chain = self.chain.next(bytes);
    }

    /// Adds the next entry. Returns the seq it expected when `entry` breaks
    /// the run (seqs must follow each other without gaps).
    pub fn push(&mut self, entry: &EntryHead<'_>, bytes: &[u8]) -> Result<(), u64> {
        if self.first_seq.is_some() && entry.seq != self.last_seq + 1 {
            return Err(self.last_seq + 1);
        }
        self.first_seq.get_or_insert(entry.seq);
        self.last_seq = entry.seq;
        self.count += 1;
        self.ts_min = self.ts_min.min(entry.ts);
        self.ts_max = self.ts_max.max(entry.ts);
        self.chain = self.chain.next(bytes);
        match self.tables.get_mut(&*entry.table) {
            Some(c) => c.add(entry.op),
            None => {
                let mut c = OpCounts::default();
                c.add(entry.op);
                self.tables.insert(entry.table.clone().into_owned(), c);
            }
        }
        Ok(())
    }
}

/// The canonical ustar header ferry writes for a member.
pub(crate) fn tar_header(name: &str, size: u64) -> io::Result<[u8; BLOCK]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; BLOCK];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// Zero bytes that pad a member of `size` bytes to a whole block.
pub(crate) fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// The bundle's file name: `ferry-YYYYMMDD-<12 hex of SHA-256(manifest.json)>.tar`:
/// short, lowercase ASCII, valid on FAT32/exFAT/NTFS, unique by content.
pub fn bundle_file_name(manifest_bytes: &[u8], sealed_at: Timestamp) -> String {
    let day = sealed_at.to_rfc3339().get(..10).unwrap_or("00000000").replace('-', "");
    format!("ferry-{day}-{}.tar", &hex::encode(Sha256::digest(manifest_bytes))[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_header_is_standard_ustar() {
        let h = tar_header("manifest.json", 10).expect("header");
        let parsed = tar::Header::from_byte_slice(&h);
        assert_eq!(parsed.size().expect("size"), 10);
        assert_eq!(&*parsed.path_bytes(), b"manifest.json");
        assert_eq!(&h[257..263], b"ustar\0");
    }

    #[test]
    fn padding_fills_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }
}
