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
/// The newest bundle format version this ferry writes and reads: version 2
/// adds encrypted segments (`docs/FORMAT.md`, "Encrypted segments").
pub const FORMAT_VERSION: u32 = 2;
/// The version of a bundle without encrypted segments: ferry writes it for
/// plain bundles, so that older ferry versions keep reading them.
pub const PLAIN_VERSION: u32 = 1;
/// At most this many recipients per encrypted segment.
pub const MAX_RECIPIENTS: usize = 64;
/// The longest `sealed` text of an encrypted descriptor.
pub const MAX_SEALED: usize = 64 << 10;

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

/// The largest seq: seqs are stored as SQLite integers (signed 64-bit).
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// The largest member a canonical ustar header can describe: 11 octal digits.
pub const MAX_MEMBER: u64 = 0o77_777_777_777;

/// The longest zstd frame header: magic (4), frame header descriptor (1),
/// window descriptor (1), dictionary id (4), frame content size (8).
pub const MAX_FRAME_HEADER: usize = 18;

/// What the header of a segment member's zstd frame says (RFC 8878, 3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Header length in bytes (6 to 14 for the frames ferry accepts).
    pub len: usize,
    /// The window the decoder needs, in bytes.
    pub window_size: u64,
    /// The declared decompressed size, when the frame declares it.
    pub content_size: Option<u64>,
}

/// Checks the zstd frame header at the start of a segment member, as
/// `docs/FORMAT.md` requires of readers: a zstd frame (not a skippable
/// frame), the reserved bit clear, no dictionary, the content checksum
/// present, a window of at most 2^[`WINDOW_LOG_MAX`] bytes (for a
/// single-segment frame the window is its content size), and a declared
/// content size, if any, equal to `entries_len`. `b` holds the member's first
/// bytes (up to [`MAX_FRAME_HEADER`] of them).
pub fn check_frame_header(b: &[u8], entries_len: u64) -> Result<FrameHeader, String> {
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let short = || format!("the member holds {} bytes, too few for a zstd frame header", b.len());
    let magic: [u8; 4] = b.get(..4).and_then(|m| m.try_into().ok()).ok_or_else(short)?;
    if magic[1..] == [0x2a, 0x4d, 0x18] && magic[0] & 0xf0 == 0x50 {
        return Err("the member starts with a skippable zstd frame (not allowed)".into());
    }
    if magic != MAGIC {
        return Err("the member does not start with a zstd frame".into());
    }
    let fhd = *b.get(4).ok_or_else(short)?;
    let fcs_flag = fhd >> 6;
    let single_segment = fhd & 0x20 != 0;
    if fhd & 0x08 != 0 {
        return Err("the zstd frame header sets its reserved bit".into());
    }
    if fhd & 0x03 != 0 {
        return Err("the zstd frame names a dictionary (not allowed)".into());
    }
    if fhd & 0x04 == 0 {
        return Err("the zstd frame has no content checksum (required)".into());
    }
    let mut at = 5;
    let mut window_size = None;
    if !single_segment {
        let wd = *b.get(at).ok_or_else(short)?;
        at += 1;
        let log = 10 + u32::from(wd >> 3);
        let base = 1u64 << log;
        window_size = Some(base + (base / 8) * u64::from(wd & 7));
    }
    let fcs_len = match (fcs_flag, single_segment) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let field = b.get(at..at + fcs_len).ok_or_else(short)?;
    at += fcs_len;
    let content_size = (fcs_len > 0).then(|| {
        let mut v = [0u8; 8];
        v[..fcs_len].copy_from_slice(field);
        let n = u64::from_le_bytes(v);
        if fcs_len == 2 {
            n + 256
        } else {
            n
        }
    });
    let window_size = window_size.or(content_size).unwrap_or(0);
    if window_size > 1 << WINDOW_LOG_MAX {
        return Err(format!(
            "the zstd frame needs a window of {window_size} bytes, more than the {} allowed",
            1u64 << WINDOW_LOG_MAX
        ));
    }
    if let Some(n) = content_size.filter(|&n| n != entries_len) {
        return Err(format!("the zstd frame declares {n} bytes of content, the descriptor {entries_len}"));
    }
    Ok(FrameHeader { len: at, window_size, content_size })
}

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
        self.insert.saturating_add(self.update).saturating_add(self.delete)
    }
}

/// What an origin signs about one segment. Its JSON bytes travel verbatim.
///
/// A plain descriptor is this struct's JSON. An encrypted one (format
/// version 2, [`SealedDescriptor`]) shows only origin, seqs, times, chain
/// hashes, recipients and the member's size and hash; `schema`, `tables`,
/// `entries_len` and `entries_sha256` travel encrypted in its `sealed` field
/// and are filled in here once a recipient opened it
/// ([`crate::bundle::BundleReader::open_sealed`]).
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
    /// The member's length (for an encrypted segment: of the age file).
    pub zstd_len: u64,
    /// The member's SHA-256 (for an encrypted segment: of the age file).
    pub zstd_sha256: String,
    /// Set for an encrypted segment (never part of a plain descriptor's JSON).
    #[serde(skip)]
    pub encryption: Option<Encryption>,
}

/// How a segment is encrypted.
#[derive(Debug, Clone, PartialEq)]
pub struct Encryption {
    /// The nodes it is encrypted to, ascending.
    pub recipients: Vec<NodeId>,
    /// The encrypted private fields, as in the descriptor (base64url).
    pub sealed: String,
    /// Whether the private fields were opened and filled in.
    pub opened: bool,
}

/// The JSON form of an encrypted segment's descriptor (`docs/FORMAT.md` X1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedDescriptor {
    pub origin: NodeId,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    pub ts_min: Timestamp,
    pub ts_max: Timestamp,
    pub chain_before: String,
    pub chain_after: String,
    pub recipients: Vec<NodeId>,
    /// base64url (no padding) of an age file holding [`PrivateFields`].
    pub sealed: String,
    pub member_len: u64,
    pub member_sha256: String,
}

/// What an encrypted segment's `sealed` field holds (X3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateFields {
    pub schema: Option<String>,
    pub tables: BTreeMap<String, OpCounts>,
    pub entries_len: u64,
    pub entries_sha256: String,
}

impl SegmentDescriptor {
    /// The tar member name of this segment (`.age` after an encrypted one's).
    pub fn member_name(&self) -> String {
        let age = if self.encryption.is_some() { ".age" } else { "" };
        format!("{}.{}-{}.jsonl.zst{age}", self.origin, self.first_seq, self.last_seq)
    }

    /// Whether the segment is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// Whether its entries can be read here: plain, or encrypted and opened.
    pub fn is_readable(&self) -> bool {
        !matches!(&self.encryption, Some(e) if !e.opened)
    }

    /// The descriptor's JSON: plain, or the encrypted form.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match &self.encryption {
            None => serde_json::to_string(self),
            Some(e) => serde_json::to_string(&SealedDescriptor {
                origin: self.origin.clone(),
                first_seq: self.first_seq,
                last_seq: self.last_seq,
                count: self.count,
                ts_min: self.ts_min,
                ts_max: self.ts_max,
                chain_before: self.chain_before.clone(),
                chain_after: self.chain_after.clone(),
                recipients: e.recipients.clone(),
                sealed: e.sealed.clone(),
                member_len: self.zstd_len,
                member_sha256: self.zstd_sha256.clone(),
            }),
        }
    }

    /// The private fields an encrypted descriptor seals.
    pub fn private_fields(&self) -> PrivateFields {
        PrivateFields {
            schema: self.schema.clone(),
            tables: self.tables.clone(),
            entries_len: self.entries_len,
            entries_sha256: self.entries_sha256.clone(),
        }
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
        self.push_head(entry)?;
        self.chain = self.chain.next(bytes);
        Ok(())
    }

    /// [`Summary::push`] without the chain hash (whoever calls this keeps
    /// the chain elsewhere; `chain` stays as it was).
    pub fn push_head(&mut self, entry: &EntryHead<'_>) -> Result<(), u64> {
        if self.first_seq.is_some() && entry.seq != self.last_seq + 1 {
            return Err(self.last_seq + 1);
        }
        self.first_seq.get_or_insert(entry.seq);
        self.last_seq = entry.seq;
        self.count += 1;
        self.ts_min = self.ts_min.min(entry.ts);
        self.ts_max = self.ts_max.max(entry.ts);
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

/// The canonical ustar header of a member (`docs/FORMAT.md`, "Tar headers").
pub fn tar_header(name: &str, size: u64) -> io::Result<[u8; BLOCK]> {
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

/// The bundle's file name: `ferry-<name>-YYYYMMDD-<12 hex of
/// SHA-256(manifest.json)>.tar`, where `<name>` is the sealing node's name
/// in lowercase ASCII letters, digits and dashes (at most 24; left out when
/// nothing remains): short, valid on FAT32/exFAT/NTFS, says whose it is,
/// unique by content.
pub fn bundle_file_name(manifest_bytes: &[u8], sealed_at: Timestamp, sealer_name: Option<&str>) -> String {
    let day = sealed_at.to_rfc3339().get(..10).unwrap_or("00000000").replace('-', "");
    let hash = &hex::encode(Sha256::digest(manifest_bytes))[..12];
    match sealer_name.map(file_name_part).filter(|n| !n.is_empty()) {
        Some(name) => format!("ferry-{name}-{day}-{hash}.tar"),
        None => format!("ferry-{day}-{hash}.tar"),
    }
}

/// A node name as part of a file name: lowercase ASCII letters and digits,
/// anything else a dash, no dash twice or at the ends, at most 24 characters.
pub(crate) fn file_name_part(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 24 {
            break;
        }
    }
    out.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_file_names_say_whose_they_are_in_safe_letters() {
        let t = Timestamp(1_790_000_000_000_000);
        assert!(bundle_file_name(b"m", t, Some("field-1")).starts_with("ferry-field-1-2026"));
        assert!(bundle_file_name(b"m", t, Some("Clinic Kisumu / Ward 3")).starts_with("ferry-clinic-kisumu-ward-3-"));
        assert!(bundle_file_name(b"m", t, Some("表")).starts_with("ferry-2026"), "nothing left: no name part");
        let long = bundle_file_name(b"m", t, Some(&"x".repeat(80)));
        assert!(long.len() <= "ferry-".len() + 24 + "-20260922-123456789abc.tar".len(), "{long}");
    }

    #[test]
    fn tar_header_is_standard_ustar() {
        let h = tar_header("manifest.json", 10).expect("header");
        let parsed = tar::Header::from_byte_slice(&h);
        assert_eq!(parsed.size().expect("size"), 10);
        assert_eq!(&*parsed.path_bytes(), b"manifest.json");
        assert_eq!(&h[257..263], b"ustar\0");
    }

    #[test]
    fn frame_headers_ferry_writes_pass() {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).expect("encoder");
        enc.include_checksum(true).expect("checksum");
        enc.window_log(WINDOW_LOG).expect("window");
        std::io::Write::write_all(&mut enc, &[b'x'; 5000]).expect("write");
        let frame = enc.finish().expect("finish");
        let h = check_frame_header(&frame[..MAX_FRAME_HEADER.min(frame.len())], 5000).expect("ferry's own frame");
        assert!(h.window_size <= 1 << WINDOW_LOG_MAX);
        // The bulk API declares the content size (a single-segment frame).
        let mut c = zstd::bulk::Compressor::new(3).expect("compressor");
        c.include_checksum(true).expect("checksum");
        let frame = c.compress(&[b'y'; 300]).expect("compress");
        let h = check_frame_header(&frame[..MAX_FRAME_HEADER], 300).expect("single segment");
        assert_eq!(h.content_size, Some(300));
        assert!(check_frame_header(&frame[..MAX_FRAME_HEADER], 301).is_err());
    }

    #[test]
    fn frame_headers_that_break_the_rules_are_refused() {
        let magic = [0x28, 0xb5, 0x2f, 0xfd];
        let with = |rest: &[u8]| [&magic[..], rest].concat();
        for (bytes, why) in [
            (vec![0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0], "skippable"),
            (vec![1, 2, 3, 4, 5, 6], "does not start"),
            (with(&[0x04]), "too few"),
            (with(&[0x00, 0x58]), "checksum"),
            (with(&[0x0c, 0x58]), "reserved"),
            (with(&[0x05, 0x58, 1]), "dictionary"),
            // Window descriptor 0x68: 2^(10+13) = 8 MiB, the limit; 0x69 is 9 MiB.
            (with(&[0x04, 0x69]), "window"),
            // Window 2^30, but a declared content size of 300 bytes.
            (with(&[0x44, 0xa0, 44, 0]), "window"),
            // Single segment: the window is the 16 MiB content size.
            (with(&[0xa4, 0, 0, 0, 1]), "window"),
        ] {
            let e = check_frame_header(&bytes, 300).expect_err(why);
            assert!(e.contains(why), "{why}: {e}");
        }
        assert_eq!(check_frame_header(&with(&[0x04, 0x68]), 300).map(|h| h.window_size), Ok(8 << 20));
    }

    #[test]
    fn padding_fills_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }
}
