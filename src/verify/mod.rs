//! Verification: is this bundle exactly what trusted nodes signed?
//!
//! Checks, in order: the archive's form ([`crate::bundle::reader`]), the seal
//! over the manifest, every segment's origin signature, every hop of every
//! segment's chain of custody, and (unless only signatures are asked for)
//! every segment's bytes: compressed and entry hashes, lengths, each entry's
//! form, seqs without gaps, the time range, per-table counts and the chain
//! hash from `chain_before` to `chain_after`. Signatures use `verify_strict`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;

use crate::bundle::format::{hop_message, Summary, HOP_PREFIX, MANIFEST_PREFIX, SEGMENT_PREFIX};
use crate::bundle::{BundleError, BundleReader, EntryLines, SegmentDescriptor, SegmentMember};
use crate::chain::ChainHash;
use crate::journal::{Entry, EntryHead, Op, Row, Timestamp, MAX_LINE};
use crate::keys::{self, KeyError, NodeId, Role, TrustStore};
use crate::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{what}: {source}")]
    Signer {
        what: String,
        #[source]
        source: KeyError,
    },
    #[error("bad signature: {what}")]
    BadSignature { what: String },
    #[error("{member}: entry {index}: {message}")]
    Entry { member: String, index: u64, message: String },
    #[error("{member}: {message}")]
    Descriptor { member: String, message: String },
    #[error("{0}")]
    Custody(String),
    #[error("{first}{}", if *more > 0 { format!(" (and {more} more segments refused)") } else { String::new() })]
    Refused { first: Box<VerifyError>, more: usize },
    #[error(
        "{member} is encrypted to {recipients}, not to this node: only {recipients} can read its entries. Apply it \
         there, or pass it on as it is with `ferry bundle relay`"
    )]
    NotARecipient { member: String, recipients: String },
}

/// One hop in a report.
#[derive(Debug, Clone, Serialize)]
pub struct HopReport {
    pub node: NodeId,
    pub name: Option<String>,
    pub at: Timestamp,
}

/// A node and the name the trust store gives it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeName {
    pub node: NodeId,
    pub name: Option<String>,
}

/// One segment in a report.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    pub origin: NodeId,
    pub origin_name: Option<String>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    pub ts_min: Timestamp,
    pub ts_max: Timestamp,
    pub hops: Vec<HopReport>,
    /// The nodes an encrypted segment is encrypted to (empty: plain).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encrypted_to: Vec<NodeName>,
    /// Whether its entries were read and checked here (an encrypted segment
    /// for another node: only its encrypted bytes' hash).
    pub entries_checked: bool,
}

/// The verdict on one bundle file.
#[derive(Debug, Serialize)]
pub struct BundleReport {
    pub file: PathBuf,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub sealed_by: Option<NodeId>,
    pub segments: Vec<SegmentReport>,
}

/// Checks the seal, every origin signature and every hop against `trust`.
/// Needs only the manifest: this is what a relay checks before forwarding.
/// Strict: any segment whose signer is unknown, revoked or in the wrong role
/// fails the whole bundle (see [`check_signatures_each`] for the verdict per
/// segment).
pub fn check_signatures<R: Read>(
    reader: &BundleReader<R>,
    trust: &TrustStore,
) -> Result<Vec<SegmentReport>, VerifyError> {
    check_signatures_each(reader, trust)?.into_iter().collect()
}

/// [`check_signatures`] with a verdict per segment. The outer error fails the
/// whole bundle: an untrusted sealer, a seal, origin or hop signature that
/// does not verify (bytes changed or forged), broken custody or continuity.
/// An inner error refuses one segment only: its origin or one of its hops is
/// unknown, revoked, or not trusted in that role. The seal still vouches for
/// the other segments, so a revoked origin costs only its own entries, not
/// those of every origin relayed beside it.
pub fn check_signatures_each<R: Read>(
    reader: &BundleReader<R>,
    trust: &TrustStore,
) -> Result<Vec<Result<SegmentReport, VerifyError>>, VerifyError> {
    let m = reader.manifest();
    let sealer = trust
        .signer(&m.sealed_by, Role::Origin)
        .or_else(|_| trust.signer(&m.sealed_by, Role::Relay))
        .map_err(|source| VerifyError::Signer {
            what: "the bundle's seal".into(),
            source: relabel(source, trust, &m.sealed_by),
        })?;
    if !keys::verify(&sealer.1, MANIFEST_PREFIX, reader.manifest_bytes(), reader.signature()) {
        return Err(VerifyError::BadSignature { what: format!("the seal of {} over manifest.json", m.sealed_by) });
    }
    let mut out = Vec::with_capacity(m.segments.len());
    for (record, d) in m.segments.iter().zip(reader.descriptors()) {
        let verdict = check_segment_signatures(record, d, trust)?;
        let last_carrier = record.hops.last().map_or(&d.origin, |h| &h.node);
        if *last_carrier != m.sealed_by {
            return Err(VerifyError::Custody(format!(
                "{} was last carried by {last_carrier}, but the bundle is sealed by {}",
                d.member_name(),
                m.sealed_by
            )));
        }
        out.push(verdict);
    }
    check_continuity(reader.descriptors())?;
    Ok(out)
}

/// The signatures of one segment: `Ok(Err(_))` when a signer is not
/// trusted for its part (the segment is refused), `Err(_)` when a signature
/// is bad (the bundle fails).
fn check_segment_signatures(
    record: &crate::bundle::ManifestSegment,
    d: &SegmentDescriptor,
    trust: &TrustStore,
) -> Result<Result<SegmentReport, VerifyError>, VerifyError> {
    let member = d.member_name();
    let origin_key = match trust.signer(&d.origin, Role::Origin) {
        Ok((_, key)) => key,
        Err(source) => return Ok(Err(VerifyError::Signer { what: format!("origin of {member}"), source })),
    };
    let origin_sig = keys::decode_signature(&record.signature)
        .ok_or_else(|| VerifyError::BadSignature { what: format!("origin signature of {member} is not base64url") })?;
    if !keys::verify(&origin_key, SEGMENT_PREFIX, record.descriptor.get().as_bytes(), &origin_sig) {
        return Err(VerifyError::BadSignature { what: format!("origin {} did not sign {member} as it is", d.origin) });
    }
    let mut previous: Option<[u8; 64]> = None;
    let mut hops = Vec::with_capacity(record.hops.len());
    for (i, hop) in record.hops.iter().enumerate() {
        let what = format!("hop {} of {member}", i + 1);
        let hop_key = match trust.signer(&hop.node, Role::Relay) {
            Ok((_, key)) => key,
            Err(source) => return Ok(Err(VerifyError::Signer { what, source })),
        };
        let sig = keys::decode_signature(&hop.signature)
            .ok_or_else(|| VerifyError::BadSignature { what: format!("{what} is not base64url") })?;
        let msg = hop_message(
            record.descriptor.get().as_bytes(),
            &origin_sig.to_bytes(),
            previous.as_ref(),
            &hop.node,
            hop.at,
        );
        if !keys::verify(&hop_key, HOP_PREFIX, &msg, &sig) {
            return Err(VerifyError::BadSignature { what: format!("{what} by {}", hop.node) });
        }
        previous = Some(sig.to_bytes());
        hops.push(HopReport { node: hop.node.clone(), name: trust.name_of(&hop.node).map(str::to_owned), at: hop.at });
    }
    Ok(Ok(SegmentReport {
        origin: d.origin.clone(),
        origin_name: trust.name_of(&d.origin).map(str::to_owned),
        first_seq: d.first_seq,
        last_seq: d.last_seq,
        count: d.count,
        ts_min: d.ts_min,
        ts_max: d.ts_max,
        hops,
        encrypted_to: d
            .encryption
            .iter()
            .flat_map(|e| &e.recipients)
            .map(|n| NodeName { node: n.clone(), name: trust.name_of(n).map(str::to_owned) })
            .collect(),
        entries_checked: d.is_readable(),
    }))
}

/// The names (or node ids) of the nodes `d` is encrypted to.
pub fn recipients_text(d: &SegmentDescriptor, trust: &TrustStore) -> String {
    let names: Vec<String> = d
        .encryption
        .iter()
        .flat_map(|e| &e.recipients)
        .map(|n| trust.name_of(n).map_or_else(|| n.to_string(), |name| format!("{} ({n})", crate::sanitize(name))))
        .collect();
    names.join(", ")
}

/// The decryption point for a bundle that holds encrypted segments. First
/// every segment member's bytes are hashed and compared with their signed
/// hashes, in a pass of their own over the file (so a changed byte of
/// ciphertext is refused before any of it is decrypted); then the sealed
/// fields `keyring` can open are opened. Call after
/// [`check_signatures_each`]; a plain bundle costs nothing.
pub fn open_encrypted<R: Read>(
    reader: &mut BundleReader<R>,
    path: &Path,
    keyring: &crate::crypt::Keyring,
) -> Result<(), VerifyError> {
    if !reader.has_encrypted() {
        return Ok(());
    }
    check_member_hashes(path)?;
    reader.open_sealed(keyring)?;
    Ok(())
}

/// Gives each segment this node cannot read (encrypted to other nodes) a
/// [`VerifyError::NotARecipient`] verdict naming its recipients: what
/// `bundle apply` refuses.
pub fn refuse_closed<R: Read>(
    reader: &BundleReader<R>,
    trust: &TrustStore,
    verdicts: &mut [Result<SegmentReport, VerifyError>],
) {
    for (d, v) in reader.descriptors().iter().zip(verdicts.iter_mut()) {
        if !d.is_readable() && v.is_ok() {
            *v = Err(VerifyError::NotARecipient { member: d.member_name(), recipients: recipients_text(d, trust) });
        }
        if let Ok(s) = v {
            s.entries_checked = d.is_readable();
        }
    }
}

/// Reads every segment member of the bundle at `path` and checks its bytes
/// against the signed length and hash, without decompressing or decrypting.
pub fn check_member_hashes(path: &Path) -> Result<(), VerifyError> {
    let mut reader = BundleReader::open(path)?;
    while let Some(member) = reader.next_segment()? {
        std::io::copy(&mut member.compressed(), &mut std::io::sink()).map_err(crate::bundle::reader::from_io)?;
    }
    reader.finish()?;
    Ok(())
}

/// Reads a segment through without using its entries: every byte is checked
/// (for an encrypted segment this node cannot open: its encrypted bytes'
/// hash only).
pub fn read_through<R: Read + Send>(
    member: SegmentMember<'_, R>,
    progress: &mut dyn Progress,
) -> Result<(), VerifyError> {
    if member.descriptor().is_readable() {
        return check_entries(member, progress, |_, _| Ok(()));
    }
    std::io::copy(&mut member.compressed(), &mut std::io::sink()).map_err(crate::bundle::reader::from_io)?;
    Ok(())
}

/// A revoked or unknown sealer reads better under its own role; keep the
/// error but prefer the revocation over a role mismatch.
fn relabel(e: KeyError, trust: &TrustStore, node: &NodeId) -> KeyError {
    match e {
        KeyError::WrongRole(_) => trust.signer(node, Role::Origin).err().unwrap_or(e),
        other => other,
    }
}

/// Segments of one origin inside a bundle must not overlap, and adjacent
/// ones (one's `last_seq + 1` is the other's `first_seq`) must chain.
/// Sorting makes this O(n log n) in the number of segments.
fn check_continuity(ds: &[SegmentDescriptor]) -> Result<(), VerifyError> {
    let mut order: Vec<&SegmentDescriptor> = ds.iter().collect();
    order.sort_by(|a, b| (&a.origin, a.first_seq).cmp(&(&b.origin, b.first_seq)));
    for pair in order.windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        if lo.origin != hi.origin {
            continue;
        }
        if hi.first_seq <= lo.last_seq {
            return Err(VerifyError::Custody(format!("{} and {} overlap", lo.member_name(), hi.member_name())));
        }
        if lo.last_seq + 1 == hi.first_seq && lo.chain_after != hi.chain_before {
            return Err(VerifyError::Custody(format!(
                "{} does not continue the chain of {} (a forked journal?)",
                hi.member_name(),
                lo.member_name()
            )));
        }
    }
    Ok(())
}

/// Decompresses one segment and checks every entry against its descriptor.
/// Calls `each` with every parsed entry and its bytes (apply uses this).
pub fn check_entries<R: Read + Send>(
    member: SegmentMember<'_, R>,
    progress: &mut dyn Progress,
    mut each: impl FnMut(Entry, &[u8]) -> Result<(), VerifyError>,
) -> Result<(), VerifyError> {
    pipeline(member, progress, &mut |entry, line, _| {
        // A placeholder that allocates nothing takes the entry's place.
        let placeholder =
            Entry { seq: 0, ts: Timestamp(0), op: Op::Insert, table: String::new(), pk: Row::default(), fields: None };
        each(std::mem::replace(entry, placeholder), line)
    })
}

/// [`check_entries`] that also hands over the chain hash up to and including
/// each entry. Reading, hashing, decompressing, checking and parsing all run
/// on a second thread; `each` runs on the caller's thread, in order, on
/// entries that passed every check so far (a later entry or the segment's
/// totals may still fail: the caller keeps its writes revocable until this
/// returns `Ok`). Memory is bounded by a few batches in flight. Entries are
/// lent, not given, so they are freed on the thread that made them.
pub fn check_entries_chained<R: Read + Send>(
    member: SegmentMember<'_, R>,
    progress: &mut dyn Progress,
    mut each: impl FnMut(&Entry, &[u8], &ChainHash) -> Result<(), VerifyError>,
) -> Result<(), VerifyError> {
    pipeline(member, progress, &mut |entry, line, chain| each(entry, line, chain))
}

type EachParsed<'a> = &'a mut dyn FnMut(&mut Entry, &[u8], &ChainHash) -> Result<(), VerifyError>;

/// A segment's descriptor, member name, starting chain hash and entry stream.
fn open_segment<R: Read>(
    member: SegmentMember<'_, R>,
) -> Result<(SegmentDescriptor, String, ChainHash, EntryLines<'_, R>), VerifyError> {
    let d = member.descriptor().clone();
    let name = d.member_name();
    let chain_before = d
        .chain_before()
        .ok_or_else(|| VerifyError::Descriptor { member: name.clone(), message: "bad chain_before".into() })?;
    Ok((d, name, chain_before, member.entries()?))
}

/// The two threads of [`check_entries_chained`].
fn pipeline<R: Read + Send>(
    member: SegmentMember<'_, R>,
    progress: &mut dyn Progress,
    each: EachParsed<'_>,
) -> Result<(), VerifyError> {
    let (d, name, chain_before, mut lines) = open_segment(member)?;
    std::thread::scope(|scope| -> Result<(), VerifyError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Batch>();
        let (d, name) = (&d, &name);
        let producer = scope.spawn(move || -> Result<(), VerifyError> {
            let mut checker = Checker { d, name, summary: Summary::new(chain_before), index: 0, deep: true };
            let mut batch = Batch::default();
            let size = usize::try_from(d.entries_len).unwrap_or(CHUNK).clamp(1, CHUNK);
            let mut buf = vec![0u8; size];
            let mut splitter = LineSplitter::new(name);
            let mut flow = Flow::default();
            let mut spare: Vec<Batch> = Vec::new();
            let mut parse = |line: &[u8], batch: &mut Batch| -> Result<(), VerifyError> {
                checker.index += 1;
                let entry = Entry::parse(line).map_err(|m| checker.err(m))?;
                checker.accept(&entry.head(), line)?;
                let start = batch.bytes.len();
                batch.bytes.extend_from_slice(line);
                batch.items.push((entry, start, batch.bytes.len(), checker.summary.chain));
                batch.advanced += line.len() as u64 + 1;
                Ok(())
            };
            let result = (|| -> Result<(), VerifyError> {
                loop {
                    let used = lines.read_raw(&mut buf)?;
                    if used == 0 {
                        break;
                    }
                    let mut stopped = false;
                    splitter.feed(&buf[..used], |line| {
                        if stopped {
                            return Ok(());
                        }
                        parse(line, &mut batch)?;
                        if batch.items.len() >= BATCH || batch.bytes.len() >= BATCH_BYTES {
                            stopped = !flow.make_room(batch.bytes.len(), &recycle_rx, &mut spare);
                            let mut next = spare.pop().unwrap_or_default();
                            next.items.clear();
                            flow.sent(batch.bytes.len());
                            // A closed channel means the caller stopped.
                            stopped = stopped || tx.send(std::mem::replace(&mut batch, next)).is_err();
                        }
                        Ok(())
                    })?;
                    if stopped {
                        return Ok(());
                    }
                }
                splitter.finish()?;
                Ok(())
            })();
            // Entries before a failure still reach the caller, in order.
            let _ = tx.send(batch);
            result?;
            checker.finish()
        });
        for mut batch in rx {
            for (entry, start, end, chain) in batch.items.iter_mut() {
                each(entry, &batch.bytes[*start..*end], chain)?;
            }
            progress.advance(batch.advanced);
            batch.bytes.clear();
            // A batch that once held a huge line does not keep its memory.
            batch.bytes.shrink_to(2 * BATCH_BYTES);
            batch.advanced = 0;
            let _ = recycle_tx.send(batch);
        }
        producer.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Entries handed from the checking thread to the caller at a time: a batch
/// closes at this many entries or [`BATCH_BYTES`] of entry lines.
const BATCH: usize = 256;
/// Entry-line bytes that close a batch.
const BATCH_BYTES: usize = 1 << 20;
/// Entry-line bytes handed over and not yet given back, beyond which the
/// checking thread waits (a single larger batch goes alone). With
/// [`BATCH_BYTES`] and [`MAX_LINE`] this bounds the entries in memory,
/// whatever the lines' sizes: see `docs/PERFORMANCE.md`, "Memory bounds".
const IN_FLIGHT: usize = 4 << 20;

/// The checking thread's account of the entry bytes the caller holds.
#[derive(Default)]
struct Flow {
    /// Bytes of each batch sent and not yet given back, oldest first.
    out: std::collections::VecDeque<usize>,
    total: usize,
}

impl Flow {
    /// Waits until a batch of `next` bytes may be sent: nothing is out, or
    /// it fits in [`IN_FLIGHT`] with what is. Batches given back go to
    /// `spare`. `false` when the caller has stopped.
    fn make_room(&mut self, next: usize, back: &std::sync::mpsc::Receiver<Batch>, spare: &mut Vec<Batch>) -> bool {
        while let Ok(b) = back.try_recv() {
            self.returned(b, spare);
        }
        while self.total > 0 && self.total + next > IN_FLIGHT {
            match back.recv() {
                Ok(b) => self.returned(b, spare),
                Err(_) => return false,
            }
        }
        true
    }

    fn returned(&mut self, mut b: Batch, spare: &mut Vec<Batch>) {
        if let Some(n) = self.out.pop_front() {
            self.total -= n;
        }
        // Entries are freed here, on the thread that made them.
        b.items.clear();
        spare.push(b);
    }

    fn sent(&mut self, n: usize) {
        self.out.push_back(n);
        self.total += n;
    }
}

/// Parsed entries, their bytes (`start..end` of `bytes`) and chain hashes.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    items: Vec<(Entry, usize, usize, ChainHash)>,
    advanced: u64,
}

/// How far `bundle verify` looks into the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Depth {
    /// Every byte: lengths, both SHA-256 hashes, the chain hash over every
    /// line, the entry count. Proves the entries are exactly what the origin
    /// signed (and ferry validates every entry before it signs).
    #[default]
    Bytes,
    /// Also re-validates every entry against `docs/JOURNAL.md` and the
    /// descriptor's claims: seqs, time range, per-table counts (`--deep`).
    Entries,
}

/// Checks one segment to `depth`, without building entries.
pub fn check_segment<R: Read + Send>(
    member: SegmentMember<'_, R>,
    depth: Depth,
    progress: &mut dyn Progress,
) -> Result<(), VerifyError> {
    walk(member, depth, progress)
}

/// Bytes handed from the decompressing thread to the checking thread at a time.
const CHUNK: usize = 1 << 20;

/// Two threads: one reads, hashes and decompresses (in [`EntryLines`]), the
/// other splits lines, parses them and extends the chain. Memory is bounded
/// by a few chunks in flight.
fn walk<R: Read + Send>(
    member: SegmentMember<'_, R>,
    depth: Depth,
    progress: &mut dyn Progress,
) -> Result<(), VerifyError> {
    let (d, name, chain_before, mut lines) = open_segment(member)?;
    // Three stages, so two cores share the work evenly: decompressing (and
    // hashing the compressed bytes), hashing the entry bytes, and splitting
    // lines with the chain hash over each.
    lines.leave_entries_hash_to_caller();
    let deep = depth == Depth::Entries;
    let mut checker = Checker { d: &d, name: &name, summary: Summary::new(chain_before), index: 0, deep };
    let plain = std::thread::scope(|scope| -> Result<String, VerifyError> {
        // Chunks travel as (buffer, bytes used); buffers come back for reuse,
        // so each is allocated (and zeroed) once, at most a segment's size.
        let size = usize::try_from(d.entries_len).unwrap_or(CHUNK).clamp(1, CHUNK);
        type Chunk = Result<(Vec<u8>, usize), BundleError>;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
        let (hashed_tx, hashed_rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        scope.spawn(move || loop {
            let mut buf = recycle_rx.try_recv().unwrap_or_else(|_| vec![0u8; size]);
            match lines.read_raw(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(Ok((buf, n))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        });
        let hasher = scope.spawn(move || {
            let mut plain = sha2::Sha256::new();
            for chunk in rx {
                if let Ok((buf, used)) = &chunk {
                    plain.update(&buf[..*used]);
                }
                if hashed_tx.send(chunk).is_err() {
                    break;
                }
            }
            hex::encode(plain.finalize())
        });
        let mut splitter = LineSplitter::new(&name);
        for chunk in hashed_rx {
            let (chunk, used) = chunk?;
            splitter.feed(&chunk[..used], |line| {
                progress.advance(line.len() as u64 + 1);
                checker.line(line)
            })?;
            let _ = recycle_tx.send(chunk);
        }
        splitter.finish()?;
        Ok(hasher.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })?;
    if plain != d.entries_sha256 {
        return Err(BundleError::HashMismatch { member: name, what: "entries" }.into());
    }
    checker.finish()
}

/// Splits a stream of chunks into lines (without their `\n`), carrying a
/// line cut by a chunk boundary over to the next chunk; refuses lines longer
/// than [`MAX_LINE`] and a last line without its newline.
struct LineSplitter<'a> {
    member: &'a str,
    carry: Vec<u8>,
}

impl<'a> LineSplitter<'a> {
    fn new(member: &'a str) -> Self {
        LineSplitter { member, carry: Vec::new() }
    }

    fn corrupt(&self, reason: String) -> VerifyError {
        VerifyError::Bundle(BundleError::Corrupt { member: self.member.to_owned(), reason })
    }

    /// Calls `line` for every complete line in `chunk`. Every line is held
    /// to [`MAX_LINE`] bytes (not counting its `\n`), whether or not a chunk
    /// boundary cuts it.
    fn feed(
        &mut self,
        chunk: &[u8],
        mut line: impl FnMut(&[u8]) -> Result<(), VerifyError>,
    ) -> Result<(), VerifyError> {
        let mut rest = chunk;
        if !self.carry.is_empty() {
            let end = memchr::memchr(b'\n', rest);
            let take = end.unwrap_or(rest.len());
            if self.carry.len() + take > MAX_LINE {
                return Err(self.too_long());
            }
            self.carry.extend_from_slice(&rest[..take]);
            match end {
                Some(at) => {
                    line(&self.carry)?;
                    self.carry.clear();
                    rest = &rest[at + 1..];
                }
                None => return Ok(()),
            }
        }
        while let Some(at) = memchr::memchr(b'\n', rest) {
            if at > MAX_LINE {
                return Err(self.too_long());
            }
            line(&rest[..at])?;
            rest = &rest[at + 1..];
        }
        if rest.len() > MAX_LINE {
            return Err(self.too_long());
        }
        self.carry.extend_from_slice(rest);
        Ok(())
    }

    fn too_long(&self) -> VerifyError {
        self.corrupt(format!("an entry line is longer than {MAX_LINE} bytes"))
    }

    /// The stream ended: nothing may be left over.
    fn finish(self) -> Result<(), VerifyError> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt("the last entry line has no newline".into()))
        }
    }
}

/// The checking half of [`walk`] and [`check_entries_chained`].
struct Checker<'a> {
    d: &'a SegmentDescriptor,
    name: &'a str,
    summary: Summary,
    index: u64,
    /// Parse and check every entry, not only its bytes.
    deep: bool,
}

impl Checker<'_> {
    fn err(&self, message: String) -> VerifyError {
        VerifyError::Entry { member: self.name.to_owned(), index: self.index, message }
    }

    fn line(&mut self, line: &[u8]) -> Result<(), VerifyError> {
        self.index += 1;
        if !self.deep {
            self.summary.push_unparsed(line);
            return Ok(());
        }
        let head = Entry::parse_head(line).map_err(|m| self.err(m))?;
        self.accept(&head, line)
    }

    /// Checks the entry numbered `self.index` (already counted), known by its head.
    fn accept(&mut self, head: &EntryHead<'_>, line: &[u8]) -> Result<(), VerifyError> {
        if self.index == 1 && head.seq != self.d.first_seq {
            return Err(self.err(format!("seq {} but the segment starts at {}", head.seq, self.d.first_seq)));
        }
        if let Err(expected) = self.summary.push(head, line) {
            return Err(self.err(format!("seq {} where {expected} was due", head.seq)));
        }
        Ok(())
    }

    fn finish(self) -> Result<(), VerifyError> {
        let (d, summary) = (self.d, &self.summary);
        let mismatch = |message: String| VerifyError::Descriptor { member: self.name.to_owned(), message };
        if !self.deep {
            if summary.count != d.count {
                return Err(mismatch(format!("holds {} entries, descriptor says {}", summary.count, d.count)));
            }
            if summary.chain.to_hex() != d.chain_after {
                return Err(mismatch("chain hash at the last entry differs from chain_after".into()));
            }
            return Ok(());
        }
        if summary.count != d.count || summary.last_seq != d.last_seq {
            return Err(mismatch(format!(
                "holds {} entries up to seq {}, descriptor says {} up to {}",
                summary.count, summary.last_seq, d.count, d.last_seq
            )));
        }
        if summary.ts_min != d.ts_min || summary.ts_max != d.ts_max {
            return Err(mismatch("time range differs from the descriptor".into()));
        }
        if summary.tables != d.tables {
            return Err(mismatch("per-table counts differ from the descriptor".into()));
        }
        if summary.chain.to_hex() != d.chain_after {
            return Err(mismatch("chain hash at the last entry differs from chain_after".into()));
        }
        Ok(())
    }
}

/// Fully verifies one bundle file, entries included ([`Depth::Entries`]).
pub fn verify_file(path: &Path, trust: &TrustStore, progress: &mut dyn Progress) -> BundleReport {
    verify_file_to(path, trust, Depth::Entries, progress)
}

/// Verifies one bundle file to `depth`: what `bundle verify` runs.
pub fn verify_file_to(path: &Path, trust: &TrustStore, depth: Depth, progress: &mut dyn Progress) -> BundleReport {
    verify_file_with(path, trust, &crate::crypt::Keyring::none(), depth, progress)
}

/// [`verify_file_to`] that also opens the encrypted segments `keyring` can
/// open and checks their entries. An encrypted segment for another node is
/// checked as a relay checks it (signatures, length and hash of its
/// encrypted bytes) and reported with `entries_checked: false`.
pub fn verify_file_with(
    path: &Path,
    trust: &TrustStore,
    keyring: &crate::crypt::Keyring,
    depth: Depth,
    progress: &mut dyn Progress,
) -> BundleReport {
    let mut report =
        BundleReport { file: path.to_path_buf(), ok: false, error: None, sealed_by: None, segments: Vec::new() };
    let result = (|| -> Result<(), VerifyError> {
        let mut reader = BundleReader::open(path)?;
        report.sealed_by = Some(reader.manifest().sealed_by.clone());
        let mut refused = Vec::new();
        let mut verdicts = check_signatures_each(&reader, trust)?;
        open_encrypted(&mut reader, path, keyring)?;
        // Not being a recipient is no fault of the bundle's: reported, not refused.
        for (v, d) in verdicts.iter_mut().zip(reader.descriptors()) {
            if let Ok(s) = v {
                s.entries_checked = d.is_readable();
            }
        }
        for verdict in verdicts {
            match verdict {
                Ok(s) => report.segments.push(s),
                Err(e) => refused.push(e),
            }
        }
        while let Some(member) = reader.next_segment()? {
            if member.descriptor().is_readable() {
                check_segment(member, depth, progress)?;
            } else {
                read_through(member, progress)?;
            }
        }
        reader.finish()?;
        match refused.len() {
            0 => Ok(()),
            n => Err(VerifyError::Refused { first: Box::new(refused.swap_remove(0)), more: n - 1 }),
        }
    })();
    match result {
        Ok(()) => report.ok = true,
        Err(e) => report.error = Some(error_chain(&e)),
    }
    report
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line `feed` hands on, or the error.
    fn split(chunks: &[&[u8]]) -> Result<Vec<usize>, String> {
        let mut s = LineSplitter::new("m");
        let mut lens = Vec::new();
        for c in chunks {
            s.feed(c, |l| {
                lens.push(l.len());
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        }
        s.finish().map_err(|e| e.to_string())?;
        Ok(lens)
    }

    #[test]
    fn the_line_limit_holds_across_chunk_boundaries() {
        let full = vec![b'a'; MAX_LINE];
        assert_eq!(split(&[&full[..MAX_LINE - 1], b"a\n"]), Ok(vec![MAX_LINE]));
        assert_eq!(split(&[&full, b"\n"]), Ok(vec![MAX_LINE]));
        for chunks in [vec![&full[..], b"a\n"], vec![&full[..1], &full[..], b"\n"], vec![&full[..], b"a"]] {
            let e = split(&chunks).expect_err("a line over the limit");
            assert!(e.contains("longer than"), "{e}");
        }
        let mut one_chunk = full.clone();
        one_chunk.extend_from_slice(b"a\nb\n");
        assert!(split(&[&one_chunk]).is_err());
    }
}
