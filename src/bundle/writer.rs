//! Writing bundles: compressing segments and laying out the archive
//! atomically (temp file in the destination, fsync, rename, fsync folder).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::format::*;
use super::io::{CountingWriter, HashingWriter};
use super::BundleError;
use crate::chain::ChainHash;
use crate::fsutil;
use crate::journal::{Entry, EntryHead, Timestamp};
use crate::keys::{self, NodeId};

/// Builds one segment: entries go in, a compressed temp file and a signed
/// descriptor come out.
///
/// Three threads share the work, so that bundling keeps up with zstd on two
/// cores: the caller's (checking entries, counting, batching lines), zstd's
/// worker (compression), and a hashing thread (the entry bytes' SHA-256 and
/// the chain hash over every line). Lines travel in batches of about 1 MiB.
pub struct SegmentBuilder {
    origin: NodeId,
    chain_before: ChainHash,
    summary: Summary,
    plain_len: u64,
    /// Lines not yet handed on: their bytes, each followed by `\n`, and lengths.
    batch: Batch,
    hasher: Hasher,
    encoder: zstd::stream::write::Encoder<'static, Out>,
    /// The nodes the segment is encrypted to (none: plain), ascending.
    recipients: Vec<(NodeId, crate::crypt::Recipient)>,
}

type Member = HashingWriter<BufWriter<tempfile::NamedTempFile>>;

/// Where the zstd frame goes: straight into the member file, or through age
/// encryption (so no plaintext ever touches the disk, not even compressed).
enum Out {
    Plain(Member),
    Sealed(age::stream::StreamWriter<Member>),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Plain(w) => w.write(buf),
            Out::Sealed(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Plain(w) => w.flush(),
            Out::Sealed(w) => w.flush(),
        }
    }
}

impl Out {
    fn finish(self) -> io::Result<Member> {
        match self {
            Out::Plain(w) => Ok(w),
            Out::Sealed(w) => w.finish(),
        }
    }
}

/// Lines on their way to the hashing thread.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lens: Vec<u32>,
}

/// Bytes of lines that make a batch.
const BATCH_BYTES: usize = 1 << 20;

enum ToHasher {
    Lines(Batch),
    /// Reply with the chain hash after every line sent so far.
    Chain,
}

/// The hashing thread of a [`SegmentBuilder`].
struct Hasher {
    tx: Option<std::sync::mpsc::SyncSender<ToHasher>>,
    spare: std::sync::mpsc::Receiver<Batch>,
    chain: std::sync::mpsc::Receiver<ChainHash>,
    thread: Option<std::thread::JoinHandle<(ChainHash, Sha256)>>,
}

impl Hasher {
    fn start(chain_before: ChainHash) -> io::Result<Hasher> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<ToHasher>(2);
        let (spare_tx, spare) = std::sync::mpsc::channel::<Batch>();
        let (chain_tx, chain) = std::sync::mpsc::channel::<ChainHash>();
        let thread = std::thread::Builder::new().name("ferry-hash".into()).spawn(move || {
            let (mut chain, mut plain) = (chain_before, Sha256::new());
            for msg in rx {
                match msg {
                    ToHasher::Lines(mut b) => {
                        plain.update(&b.bytes);
                        let mut at = 0;
                        for &len in &b.lens {
                            chain = chain.next(&b.bytes[at..at + len as usize]);
                            at += len as usize + 1;
                        }
                        b.bytes.clear();
                        b.lens.clear();
                        let _ = spare_tx.send(b);
                    }
                    ToHasher::Chain => {
                        let _ = chain_tx.send(chain);
                    }
                }
            }
            (chain, plain)
        })?;
        Ok(Hasher { tx: Some(tx), spare, chain, thread: Some(thread) })
    }

    fn send(&self, msg: ToHasher) -> io::Result<()> {
        let gone = || io::Error::other("the hashing thread stopped");
        self.tx.as_ref().ok_or_else(gone)?.send(msg).map_err(|_| gone())
    }

    /// The chain hash and entry-bytes hash once every batch is hashed.
    fn finish(mut self) -> io::Result<(ChainHash, Sha256)> {
        drop(self.tx.take());
        let thread = self.thread.take().ok_or_else(|| io::Error::other("the hashing thread is gone"))?;
        thread.join().map_err(|_| io::Error::other("the hashing thread panicked"))
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A finished segment: its manifest record, parsed descriptor, and the
/// compressed bytes in a temp file.
pub struct BuiltSegment {
    pub descriptor: SegmentDescriptor,
    pub record: ManifestSegment,
    pub file: tempfile::NamedTempFile,
}

impl SegmentBuilder {
    /// A builder whose compressed output goes to a temp file in `tmp_dir`.
    pub fn new(origin: NodeId, chain_before: ChainHash, tmp_dir: &Path) -> io::Result<Self> {
        SegmentBuilder::new_encrypted(origin, chain_before, tmp_dir, Vec::new())
    }

    /// A builder whose segment is encrypted to `recipients` (their node ids
    /// and encryption keys; none: a plain segment). The temp file only ever
    /// holds encrypted bytes.
    pub fn new_encrypted(
        origin: NodeId,
        chain_before: ChainHash,
        tmp_dir: &Path,
        mut recipients: Vec<(NodeId, crate::crypt::Recipient)>,
    ) -> io::Result<Self> {
        recipients.sort_by(|a, b| a.0.cmp(&b.0));
        recipients.dedup_by(|a, b| a.0 == b.0);
        if recipients.len() > MAX_RECIPIENTS {
            return Err(io::Error::other(format!("at most {MAX_RECIPIENTS} recipients per bundle")));
        }
        let tmp = fsutil::temp_in(tmp_dir)?;
        let member = HashingWriter::new(BufWriter::with_capacity(256 << 10, tmp));
        let out = if recipients.is_empty() {
            Out::Plain(member)
        } else {
            let keys: Vec<crate::crypt::Recipient> = recipients.iter().map(|(_, r)| r.clone()).collect();
            Out::Sealed(crate::crypt::seal_stream(&keys, member)?)
        };
        let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
        encoder.include_checksum(true)?;
        encoder.window_log(WINDOW_LOG)?;
        // One worker thread: compression overlaps with parsing and hashing.
        encoder.multithread(1)?;
        Ok(SegmentBuilder {
            origin,
            chain_before,
            summary: Summary::new(chain_before),
            plain_len: 0,
            batch: Batch { bytes: Vec::with_capacity(BATCH_BYTES + 4096), lens: Vec::with_capacity(8192) },
            hasher: Hasher::start(chain_before)?,
            encoder,
            recipients,
        })
    }

    /// Appends an entry whose exact line bytes are `bytes` (no newline).
    /// Fails with the expected seq when `entry` does not follow the last one.
    pub fn push(&mut self, entry: &Entry, bytes: &[u8]) -> Result<(), BundleError> {
        self.push_head(&entry.head(), bytes)
    }

    /// Appends an entry known by its head (see [`Entry::parse_head`]).
    pub fn push_head(&mut self, entry: &EntryHead<'_>, bytes: &[u8]) -> Result<(), BundleError> {
        self.summary.push_head(entry).map_err(|expected| BundleError::SeqGap { expected, found: entry.seq })?;
        self.plain_len += bytes.len() as u64 + 1;
        let len = u32::try_from(bytes.len()).map_err(|_| BundleError::Malformed("an entry line over 4 GiB".into()))?;
        self.batch.bytes.extend_from_slice(bytes);
        self.batch.bytes.push(b'\n');
        self.batch.lens.push(len);
        if self.batch.bytes.len() >= BATCH_BYTES {
            self.hand_on().map_err(BundleError::Io)?;
        }
        Ok(())
    }

    /// Compresses the batch, then passes it to the hashing thread.
    fn hand_on(&mut self) -> io::Result<()> {
        if self.batch.lens.is_empty() {
            return Ok(());
        }
        self.encoder.write_all(&self.batch.bytes)?;
        let next = self.hasher.spare.try_recv().unwrap_or_else(|_| Batch {
            bytes: Vec::with_capacity(BATCH_BYTES + 4096),
            lens: Vec::with_capacity(8192),
        });
        let full = std::mem::replace(&mut self.batch, next);
        self.hasher.send(ToHasher::Lines(full))
    }

    pub fn len(&self) -> u64 {
        self.summary.count
    }

    pub fn is_empty(&self) -> bool {
        self.summary.count == 0
    }

    /// Uncompressed bytes so far.
    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// The chain hash after the last entry pushed (waits for the hashing
    /// thread to catch up).
    pub fn chain(&mut self) -> ChainHash {
        let asked = self.hand_on().and_then(|()| self.hasher.send(ToHasher::Chain));
        match asked.ok().and_then(|()| self.hasher.chain.recv().ok()) {
            Some(chain) => chain,
            // Only when the hashing thread is gone, which `finish` reports.
            None => ChainHash::GENESIS,
        }
    }

    /// Finishes compression and signs the descriptor with `key` (the origin's).
    pub fn finish(mut self, schema: Option<String>, key: &SigningKey) -> Result<BuiltSegment, BundleError> {
        let first_seq = self.summary.first_seq.ok_or_else(|| BundleError::Malformed("an empty segment".into()))?;
        self.hand_on().map_err(BundleError::Io)?;
        let (chain_after, plain) = self.hasher.finish().map_err(BundleError::Io)?;
        let out = self.encoder.finish().and_then(Out::finish).map_err(BundleError::Io)?;
        let zstd_len = out.count;
        let zstd_sha256 = hex::encode(out.hasher.finalize());
        let file = out.inner.into_inner().map_err(|e| BundleError::Io(e.into_error()))?;
        let s = self.summary;
        let descriptor = SegmentDescriptor {
            origin: self.origin,
            first_seq,
            last_seq: s.last_seq,
            count: s.count,
            ts_min: s.ts_min,
            ts_max: s.ts_max,
            chain_before: self.chain_before.to_hex(),
            chain_after: chain_after.to_hex(),
            schema,
            tables: s.tables,
            entries_len: self.plain_len,
            entries_sha256: hex::encode(plain.finalize()),
            zstd_len,
            zstd_sha256,
            encryption: None,
        };
        let mut descriptor = descriptor;
        if !self.recipients.is_empty() {
            let private =
                serde_json::to_vec(&descriptor.private_fields()).map_err(|e| BundleError::Malformed(e.to_string()))?;
            let keys: Vec<crate::crypt::Recipient> = self.recipients.iter().map(|(_, r)| r.clone()).collect();
            let sealed = crate::crypt::seal_bytes(&keys, &private).map_err(BundleError::Io)?;
            descriptor.encryption = Some(Encryption {
                recipients: self.recipients.iter().map(|(n, _)| n.clone()).collect(),
                sealed: base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sealed),
                opened: true,
            });
        }
        let raw = descriptor.to_json().map_err(|e| BundleError::Malformed(e.to_string()))?;
        let signature = keys::sign(key, SEGMENT_PREFIX, raw.as_bytes());
        let record = ManifestSegment {
            descriptor: RawValue::from_string(raw).map_err(|e| BundleError::Malformed(e.to_string()))?,
            signature: keys::encode_signature(&signature),
            hops: Vec::new(),
        };
        Ok(BuiltSegment { descriptor, record, file })
    }
}

/// A bundle that was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    /// A bundle with the same content already had this name: nothing new was written.
    pub existed: bool,
}

/// Writes a bundle of `segments` into `out_dir`, sealed by `sealer`.
///
/// `copy(i, w)` must write exactly the compressed bytes of segment `i`
/// (`descriptors[i].zstd_len` of them); the bundle appears under its final
/// name only once complete and durable.
pub fn write_bundle(
    out_dir: &Path,
    segments: Vec<ManifestSegment>,
    descriptors: &[SegmentDescriptor],
    sealer: &SigningKey,
    copy: impl FnMut(usize, &mut dyn Write) -> io::Result<()>,
) -> Result<Written, BundleError> {
    write_bundle_named(out_dir, segments, descriptors, sealer, None, copy)
}

/// [`write_bundle`], naming the file after the sealing node (`sealer_name`).
pub fn write_bundle_named(
    out_dir: &Path,
    segments: Vec<ManifestSegment>,
    descriptors: &[SegmentDescriptor],
    sealer: &SigningKey,
    sealer_name: Option<&str>,
    mut copy: impl FnMut(usize, &mut dyn Write) -> io::Result<()>,
) -> Result<Written, BundleError> {
    let sealed_at = Timestamp::now();
    // Plain bundles stay version 1, which older ferry versions read.
    let version = if descriptors.iter().any(SegmentDescriptor::is_encrypted) { FORMAT_VERSION } else { PLAIN_VERSION };
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version,
        sealed_by: NodeId::of(&sealer.verifying_key()),
        sealed_at,
        segments,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let seal = keys::encode_signature(&keys::sign(sealer, MANIFEST_PREFIX, &manifest_bytes));
    let name = bundle_file_name(&manifest_bytes, sealed_at, sealer_name);
    let dest = out_dir.join(&name);

    std::fs::create_dir_all(out_dir).map_err(BundleError::Io)?;
    let tmp = fsutil::temp_in(out_dir).map_err(BundleError::Io)?;
    let mut w = CountingWriter { inner: BufWriter::with_capacity(256 << 10, tmp), count: 0 };
    let io_err = BundleError::Io;
    write_member(&mut w, MANIFEST_MEMBER, &manifest_bytes).map_err(io_err)?;
    write_member(&mut w, SIGNATURE_MEMBER, seal.as_bytes()).map_err(io_err)?;
    for (i, d) in descriptors.iter().enumerate() {
        w.write_all(&tar_header(&d.member_name(), d.zstd_len).map_err(io_err)?).map_err(io_err)?;
        let before = w.count;
        copy(i, &mut w).map_err(io_err)?;
        if w.count - before != d.zstd_len {
            return Err(BundleError::LengthMismatch {
                member: d.member_name(),
                declared: d.zstd_len,
                actual: w.count - before,
            });
        }
        w.write_all(&[0u8; BLOCK][..padding(d.zstd_len)]).map_err(io_err)?;
    }
    w.write_all(&[0u8; 2 * BLOCK]).map_err(io_err)?;
    let bytes = w.count;
    let tmp = w.inner.into_inner().map_err(|e| BundleError::Io(e.into_error()))?;
    crate::crashpoint::hit("bundle written to temp file");
    match fsutil::persist_new(tmp, &dest) {
        Ok(()) => Ok(Written { path: dest, bytes, existed: false }),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Written { path: dest, bytes, existed: true }),
        Err(e) => Err(BundleError::Io(e)),
    }
}

fn write_member<W: Write>(w: &mut W, name: &str, data: &[u8]) -> io::Result<()> {
    w.write_all(&tar_header(name, data.len() as u64)?)?;
    w.write_all(data)?;
    w.write_all(&[0u8; BLOCK][..padding(data.len() as u64)])
}

/// Copies a built segment's compressed bytes (for [`write_bundle`]'s `copy`).
pub fn copy_file(file: &tempfile::NamedTempFile, w: &mut dyn Write) -> io::Result<()> {
    let mut f: File = file.reopen()?;
    io::copy(&mut f, w).map(drop)
}
