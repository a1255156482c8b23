//! `ferry bundle relay`: pass bundles on toward the next hop (the middleman
//! laptop, the community server). See `docs/RELAY.md`.
//!
//! A run has four steps:
//!
//! 1. **Read and verify** every input bundle: form, seal, origin signatures,
//!    hops (against this node's trust store) and the hash of every segment's
//!    compressed bytes. A bundle that fails is rejected as a whole: copied to
//!    `HOME/quarantine/` with a reason file. Foreign files are skipped.
//! 2. **Classify** every segment against what is known about its origin (the
//!    ledger of what this relay carried before, and the segments accepted
//!    earlier in this run, in order of their bundles' seal time): a duplicate
//!    (dropped, counted), a fork (same origin and seq, different content:
//!    reported, its bundle quarantined), or new (forwarded). Segments are not
//!    decompressed, except to settle an overlap whose chain hashes cannot be
//!    compared from the descriptors ([`compare`]).
//! 3. **Write** the new segments, ordered by time, into bundles of at most
//!    `max_size` bytes: each segment's descriptor and origin signature byte
//!    for byte, its hop list extended by this relay's hop signature, sealed
//!    by this relay. Ledger rows are recorded as pending before each bundle
//!    is written and completed once it is durable.
//! 4. With `--move`, remove the inputs, only once everything is durable.

mod compare;
pub mod ledger;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bundle::format::{hop_message, padding, tar_header, BLOCK, HOP_PREFIX};
use crate::bundle::{write_bundle_named, BundleError, BundleReader, Hop, ManifestSegment, SegmentDescriptor};
use crate::chain::ChainHash;
use crate::crashpoint::hit;
use crate::fsutil;
use crate::journal::Timestamp;
use crate::keys::{self, NodeId, TrustStore};
use crate::node::{Node, NodeError};
use crate::progress::Progress;
use crate::state::StateError;
use crate::verify::{check_signatures_each, error_chain, VerifyError};

use compare::SegmentRef;
use ledger::{Carried, Ledger};

pub use ledger::{ledger_status, LedgerStatus, OriginStatus};

/// The default `--max-size`: 1 MiB below 4 GiB, the FAT32 file size limit.
pub const DEFAULT_MAX_SIZE: u64 = (4 << 30) - (1 << 20);
/// The smallest `--max-size` accepted.
pub const MIN_MAX_SIZE: u64 = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("failed to use the relay ledger in {path}")]
    Ledger {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the relay ledger is corrupt: {0}")]
    LedgerCorrupt(String),
    #[error(transparent)]
    Walk(#[from] crate::bundle::FindError),
    #[error("failed to write a bundle into {}", dir.display())]
    Write {
        dir: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("failed to copy {} into the quarantine folder {}", path.display(), dir.display())]
    Quarantine {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to remove the input {} (--move)", path.display())]
    Move {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--max-size {0} is too small: at least {MIN_MAX_SIZE} bytes")]
    MaxSizeTooSmall(u64),
    #[error("--out {} is a file; give the folder the bundles for the next hop go into", .0.display())]
    OutIsAFile(PathBuf),
    /// The run stopped part way (a full disk, a pulled stick): `done` says
    /// what it finished (bundles written and recorded), `source` why it stopped.
    #[error("the relay stopped before it finished")]
    Incomplete {
        done: Box<RelayReport>,
        #[source]
        source: Box<RelayError>,
    },
}

/// What `ferry bundle relay` should do.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Input folders or bundle files (USB mounts, inboxes).
    pub inputs: Vec<PathBuf>,
    /// Where the bundles for the next hop go.
    pub out_dir: PathBuf,
    /// Remove each input once its content is durably relayed, quarantined or
    /// known to be carried already.
    pub move_inputs: bool,
    /// No output bundle exceeds this many bytes (a single larger segment,
    /// which cannot be split, gets a bundle of its own and a warning).
    pub max_size: u64,
}

/// Why a segment was dropped as a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateRoute {
    /// Its bundle is a copy of another input bundle.
    SameBundle,
    /// Another input bundle of this run holds it too.
    OtherBundle,
    /// This relay carried it in an earlier run (the ledger).
    AlreadyCarried,
}

/// Counts of every outcome.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Input files that are ferry bundles.
    pub bundles_read: u64,
    /// Files skipped: not ferry bundles.
    pub foreign: u64,
    pub segments_read: u64,
    pub bundles_verified: u64,
    pub segments_verified: u64,
    /// Duplicate segments dropped (all routes).
    pub duplicates: u64,
    pub duplicate_same_bundle: u64,
    pub duplicate_other_bundle: u64,
    pub duplicate_already_carried: u64,
    /// Segments that fork an origin's journal (quarantined).
    pub forks: u64,
    /// Segments refused because their origin or a relay that carried them is
    /// unknown, revoked or not trusted in that role (the rest of their bundle
    /// is forwarded; the bundle is quarantined for the record).
    pub segments_refused: u64,
    /// Bundles rejected (failed verification; quarantined).
    pub rejected: u64,
    /// Input files copied into quarantine (rejected or holding a fork).
    pub quarantined: u64,
    pub bundles_written: u64,
    pub segments_written: u64,
    pub entries_written: u64,
    pub bytes_written: u64,
    /// Inputs removed (`--move`).
    pub moved: u64,
    /// Ledger rows completed from bundles an interrupted run had written.
    pub recovered: u64,
    /// Segments carried before and passed on again: their origin sent them
    /// again because the archive never confirmed them (see `docs/RELAY.md`).
    pub sent_again: u64,
}

/// A fork: two segments claim the same origin and seq with different content.
#[derive(Debug, Clone, Serialize)]
pub struct ForkReport {
    pub origin: NodeId,
    /// The newcomer (quarantined).
    pub segment: String,
    pub file: PathBuf,
    /// The earlier segment it contradicts, and where that came from.
    pub conflicts_with: String,
    pub conflicts_with_source: String,
    /// The first seq known to differ, when found.
    pub seq: Option<u64>,
    pub quarantined: Option<PathBuf>,
    pub recovery: String,
}

/// A segment refused on its own (see [`Counts::segments_refused`]).
#[derive(Debug, Clone, Serialize)]
pub struct SegmentRefusal {
    pub file: PathBuf,
    pub segment: String,
    pub reason: String,
    pub quarantined: Option<PathBuf>,
}

/// A rejected input bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub file: PathBuf,
    pub reason: String,
    pub quarantined: Option<PathBuf>,
    /// Whether the quarantine copy is the whole file. A file longer than the
    /// bundle it claims to be (or than any unsigned bundle start) is copied
    /// only in part, and is never removed by `--move`.
    pub whole: bool,
}

/// A bundle written for the next hop.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenBundle {
    pub file: PathBuf,
    pub bytes: u64,
    pub segments: u64,
    pub entries: u64,
}

/// What `ferry bundle relay` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayReport {
    pub counts: Counts,
    pub written: Vec<WrittenBundle>,
    pub forks: Vec<ForkReport>,
    pub rejected: Vec<Rejection>,
    pub refused_segments: Vec<SegmentRefusal>,
    /// Files skipped as not ferry bundles.
    pub foreign: Vec<PathBuf>,
    pub moved: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

impl RelayReport {
    /// Whether anything was rejected, refused or forked (exit status 1).
    pub fn negative(&self) -> bool {
        self.counts.rejected > 0 || self.counts.forks > 0 || self.counts.segments_refused > 0
    }
}

/// What became of a segment.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Pending,
    Duplicate(DuplicateRoute),
    Fork,
    Forward,
    /// A signer is not trusted for its part; never forwarded.
    Refused,
}

/// One verified segment of an input.
struct Candidate {
    record: ManifestSegment,
    descriptor: SegmentDescriptor,
    descriptor_sha256: String,
    /// Offset of the compressed bytes in the input file.
    offset: u64,
    fate: Fate,
    /// Why the segment is refused ([`Fate::Refused`]).
    refused: Option<String>,
}

/// One verified input bundle.
struct Input {
    path: PathBuf,
    source: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    sealed_at: Timestamp,
    manifest_sha256: [u8; 32],
    segments: Vec<Candidate>,
    /// Why it is quarantined, when it holds a fork or a refused segment.
    quarantine_reason: Option<String>,
    quarantined: Option<PathBuf>,
}

/// A range of an origin's journal known before the current candidate.
enum Known {
    Ledger(Box<Carried>),
    /// A segment accepted earlier in this run: (input index, segment index).
    InRun(usize, usize),
}

/// Relays the bundles under `opts.inputs` into `opts.out_dir` as `node`.
/// Holds the node home's lock for the whole run (two relays sharing a home
/// would complete or forget each other's ledger rows).
pub fn relay(node: &Node, opts: &RelayOptions, progress: &mut dyn Progress) -> Result<RelayReport, RelayError> {
    if opts.max_size < MIN_MAX_SIZE {
        return Err(RelayError::MaxSizeTooSmall(opts.max_size));
    }
    if opts.out_dir.is_file() {
        return Err(RelayError::OutIsAFile(opts.out_dir.clone()));
    }
    let _lock = node.lock("ferry bundle relay")?;
    let trust = node.trust()?;
    let mut ledger = Ledger::open(node)?;
    let mut report = RelayReport::default();
    report.counts.recovered = ledger.recover(&opts.out_dir, node.id())?;
    hit("relay: ledger recovered");
    clean_temps(node, opts, &mut report);

    // 1. Read and verify.
    let files = input_files(node, opts, &mut report)?;
    let total: u64 = files.iter().filter_map(|(p, _)| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    progress.start("verifying", Some(total));
    let mut inputs: Vec<Input> = Vec::new();
    for (path, source) in files {
        match read_input(&path, &source, &trust, progress) {
            Ok(input) => {
                report.counts.bundles_read += 1;
                report.counts.bundles_verified += 1;
                report.counts.segments_read += input.segments.len() as u64;
                let refused = input.segments.iter().filter(|c| c.fate == Fate::Refused).count() as u64;
                report.counts.segments_verified += input.segments.len() as u64 - refused;
                report.counts.segments_refused += refused;
                inputs.push(input);
            }
            Err(ReadError::Foreign) => {
                report.counts.foreign += 1;
                report.foreign.push(path);
            }
            Err(ReadError::Rejected { reason, segments, keep }) => {
                report.counts.bundles_read += 1;
                report.counts.segments_read += segments;
                report.counts.rejected += 1;
                let q = match quarantine_at_most(&node.home, &path, &format!("rejected: {reason}\n"), keep) {
                    Ok(q) => {
                        report.counts.quarantined += 1;
                        Some(q)
                    }
                    Err(e) => {
                        // Left where it is (never removed by --move): it is not lost.
                        report.warnings.push(error_chain(&e));
                        None
                    }
                };
                let (quarantined, whole) = match q {
                    Some(q) => (Some(q.path), !q.partial),
                    None => (None, false),
                };
                if !whole && quarantined.is_some() {
                    report.warnings.push(format!(
                        "{} holds more than a bundle could; only its start was kept in quarantine, and it stays where it is",
                        path.display()
                    ));
                }
                report.rejected.push(Rejection { file: path, reason, quarantined, whole });
            }
        }
    }
    progress.finish();

    // 2. Classify, oldest seal first: the later of two forked segments is the newcomer.
    inputs.sort_by(|a, b| (a.sealed_at, &a.path).cmp(&(b.sealed_at, &b.path)));
    let again = SendAgain::load(node, &trust);
    classify(&mut inputs, &ledger, &again, &mut report)?;
    for input in inputs.iter_mut() {
        if let Some(reason) = &input.quarantine_reason {
            let q = match quarantine(&node.home, &input.path, reason) {
                Ok(q) => q,
                Err(e) => {
                    report.warnings.push(error_chain(&e));
                    continue;
                }
            };
            report.counts.quarantined += 1;
            for f in report.forks.iter_mut().filter(|f| f.file == input.path) {
                f.quarantined = Some(q.clone());
            }
            for r in report.refused_segments.iter_mut().filter(|r| r.file == input.path) {
                r.quarantined = Some(q.clone());
            }
            input.quarantined = Some(q);
        }
    }

    // 3. Write what is new, ordered by time.
    let mut forward: Vec<(usize, usize)> = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        for (j, c) in input.segments.iter().enumerate() {
            if c.fate == Fate::Forward {
                forward.push((i, j));
            }
        }
    }
    forward.sort_by(|&(ai, aj), &(bi, bj)| {
        let (a, b) = (&inputs[ai].segments[aj].descriptor, &inputs[bi].segments[bj].descriptor);
        (a.ts_min, &a.origin, a.first_seq).cmp(&(b.ts_min, &b.origin, b.first_seq))
    });
    let groups = pack(&inputs, &forward, opts.max_size, &mut report);
    let total: u64 = forward.iter().map(|&(i, j)| inputs[i].segments[j].descriptor.zstd_len).sum();
    progress.start("relaying", Some(total));
    for group in groups {
        if let Err(e) = write_group(node, &inputs, &group, opts, &mut ledger, progress, &mut report) {
            progress.finish();
            // What was finished is durable and recorded: say so, then why it stopped.
            return Err(RelayError::Incomplete { done: Box::new(report), source: Box::new(e) });
        }
    }
    progress.finish();

    // 4. --move: everything is durable and recorded by now.
    if opts.move_inputs {
        for input in &inputs {
            // A fork newcomer that could not be quarantined stays where it is.
            if input.quarantine_reason.is_none() || input.quarantined.is_some() {
                remove_input(&input.path, &mut report)?;
            }
        }
        for r in report.rejected.clone() {
            // Only a whole copy lets the input go.
            if r.quarantined.is_some() && r.whole {
                remove_input(&r.file, &mut report)?;
            }
        }
    }
    Ok(report)
}

/// Removes `.ferry-*.tmp` files a killed run left: any in the quarantine
/// folder (only a relay holding this home's lock writes there), and those
/// untouched for [`fsutil::STALE_TEMP`] in the output folder (another
/// writer may share it).
fn clean_temps(node: &Node, opts: &RelayOptions, report: &mut RelayReport) {
    let dirs = [(node.home.join("quarantine"), std::time::Duration::ZERO), (opts.out_dir.clone(), fsutil::STALE_TEMP)];
    for (dir, age) in dirs {
        match fsutil::remove_stale_temps(&dir, age) {
            Ok(removed) => {
                for p in removed {
                    report.warnings.push(format!("removed {}, left by an interrupted run", p.display()));
                }
            }
            Err(e) => report.warnings.push(format!("could not clean up temp files in {}: {e}", dir.display())),
        }
    }
}

fn remove_input(path: &Path, report: &mut RelayReport) -> Result<(), RelayError> {
    hit("relay: before removing an input (--move)");
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(RelayError::Move { path: path.to_path_buf(), source }),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    fsutil::sync_dir(dir).map_err(|source| RelayError::Move { path: path.to_path_buf(), source })?;
    report.counts.moved += 1;
    report.moved.push(path.to_path_buf());
    Ok(())
}

/// The bundle files under the inputs, each with the `--from` folder it was
/// found under; the output folder and the quarantine are never inputs.
fn input_files(
    node: &Node,
    opts: &RelayOptions,
    report: &mut RelayReport,
) -> Result<Vec<(PathBuf, PathBuf)>, RelayError> {
    let excluded: Vec<PathBuf> =
        [opts.out_dir.clone(), node.home.join("quarantine")].iter().filter_map(|p| p.canonicalize().ok()).collect();
    let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for source in &opts.inputs {
        let found = crate::bundle::scan_bundles(std::slice::from_ref(source))?;
        for (path, why) in found.unreadable {
            report.warnings.push(format!("skipped the folder {}, which cannot be read: {why}", path.display()));
        }
        for f in found.files {
            let canon = f.canonicalize().unwrap_or_else(|_| f.clone());
            if excluded.iter().any(|x| canon.starts_with(x)) {
                continue;
            }
            if f.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".tmp")) {
                continue;
            }
            if seen.insert(canon) {
                out.push((f, source.clone()));
            }
        }
    }
    Ok(out)
}

enum ReadError {
    Foreign,
    /// `keep`: how many of the file's bytes to keep in quarantine.
    Rejected {
        reason: String,
        segments: u64,
        keep: u64,
    },
}

/// Bytes of a rejected file kept in quarantine beyond what a trusted seal
/// vouches for (all of it, when the file is not longer than that).
const KEEP_UNSIGNED: u64 = 1 << 20;

/// Reads and verifies one input bundle: seal, signatures, hops, and the
/// hash of every segment's compressed bytes; records where each segment's
/// bytes are. A segment whose signer is not trusted for its part is kept
/// as [`Fate::Refused`]; the rest of its bundle goes on.
fn read_input(path: &Path, source: &Path, trust: &TrustStore, progress: &mut dyn Progress) -> Result<Input, ReadError> {
    if is_foreign(path) {
        return Err(ReadError::Foreign);
    }
    let mut segments_seen = 0u64;
    // Until a trusted seal vouches for the manifest's sizes, a rejected file
    // is kept only up to KEEP_UNSIGNED bytes (a huge, sparse "bundle" must
    // not fill the quarantine).
    let mut keep = KEEP_UNSIGNED;
    let result = (|| -> Result<Input, VerifyError> {
        let meta = std::fs::metadata(path).map_err(BundleError::Io)?;
        let mut reader = BundleReader::open(path)?;
        segments_seen = reader.descriptors().len() as u64;
        let verdicts = check_signatures_each(&reader, trust)?;
        let manifest_len = reader.manifest_bytes().len() as u64;
        let mut offset = BLOCK as u64 + manifest_len + padding(manifest_len) as u64 + 2 * BLOCK as u64;
        let mut segments = Vec::with_capacity(reader.descriptors().len());
        let mut reasons = String::new();
        for ((record, d), verdict) in reader.manifest().segments.iter().zip(reader.descriptors()).zip(verdicts) {
            offset += BLOCK as u64;
            let refused = verdict.err().map(|e| error_chain(&e));
            if let Some(why) = &refused {
                reasons.push_str(&format!("refused {}: {why}\n", d.member_name()));
            }
            segments.push(Candidate {
                record: record.clone(),
                descriptor: d.clone(),
                descriptor_sha256: hex::encode(Sha256::digest(record.descriptor.get().as_bytes())),
                offset,
                fate: if refused.is_some() { Fate::Refused } else { Fate::Pending },
                refused,
            });
            offset = offset.saturating_add(d.zstd_len + padding(d.zstd_len) as u64);
        }
        keep = offset.saturating_add(2 * BLOCK as u64 + KEEP_UNSIGNED);
        let manifest_sha256: [u8; 32] = Sha256::digest(reader.manifest_bytes()).into();
        let sealed_at = reader.manifest().sealed_at;
        while let Some(member) = reader.next_segment()? {
            let n = member.descriptor().zstd_len;
            io::copy(&mut member.compressed(), &mut io::sink()).map_err(crate::bundle::reader::from_io)?;
            progress.advance(n + BLOCK as u64);
        }
        reader.finish()?;
        Ok(Input {
            path: path.to_path_buf(),
            source: source.to_path_buf(),
            len: meta.len(),
            modified: meta.modified().ok(),
            sealed_at,
            manifest_sha256,
            segments,
            quarantine_reason: (!reasons.is_empty()).then_some(reasons),
            quarantined: None,
        })
    })();
    result.map_err(|e| match e {
        VerifyError::Bundle(BundleError::NotABundle(_)) => ReadError::Foreign,
        e => ReadError::Rejected { reason: error_chain(&e), segments: segments_seen, keep },
    })
}

/// A `*.tar` that is not a ferry bundle (someone's own archive on the
/// stick): not named `ferry-*`, and not starting with a `manifest.json`
/// member whose text starts as a ferry manifest does
/// (`{"format":"ferry-bundle"`). Such files are skipped and listed, never
/// quarantined or removed.
fn is_foreign(path: &Path) -> bool {
    if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ferry-")) {
        return false;
    }
    const START: &[u8] = b"{\"format\":\"ferry-bundle\"";
    let mut head = [0u8; BLOCK + START.len()];
    let Ok(mut f) = File::open(path) else { return false };
    if f.read_exact(&mut head).is_err() {
        return true;
    }
    let name = &head[..100];
    let end = name.iter().position(|&b| b == 0).unwrap_or(100);
    &name[..end] != crate::bundle::format::MANIFEST_MEMBER.as_bytes() || &head[BLOCK..] != START
}

/// The ranges known for one origin, findable by seq: a segment is judged
/// only against the ranges that overlap or touch it (any other cannot share
/// a seq or a boundary chain hash with it), so a run of many segments of
/// one origin costs about n log n, not n².
#[derive(Default)]
struct KnownRanges {
    /// In the order they became known (the order of verdicts).
    items: Vec<Known>,
    /// (first seq, last seq, index into `items`), sorted by first seq.
    by_first: Vec<(u64, u64, usize)>,
    /// The greatest last seq among `by_first[..=k]`.
    reach: Vec<u64>,
}

impl KnownRanges {
    fn add(&mut self, inputs: &[Input], k: Known) {
        let (f, l) = known_range(inputs, &k);
        let at = self.by_first.partition_point(|&(kf, _, _)| kf <= f);
        self.by_first.insert(at, (f, l, self.items.len()));
        self.items.push(k);
        self.reach.truncate(at);
        for idx in at..self.by_first.len() {
            let before = idx.checked_sub(1).map_or(0, |b| self.reach[b]);
            self.reach.push(before.max(self.by_first[idx].1));
        }
    }

    /// The known ranges that overlap or touch `first..=last`, in the order
    /// they became known.
    fn near(&self, first: u64, last: u64) -> Vec<&Known> {
        let end = self.by_first.partition_point(|&(kf, _, _)| kf <= last.saturating_add(1));
        let mut found = Vec::new();
        for idx in (0..end).rev() {
            if self.reach[idx].saturating_add(1) < first {
                break;
            }
            let (_, kl, item) = self.by_first[idx];
            if kl.saturating_add(1) >= first {
                found.push(item);
            }
        }
        found.sort_unstable();
        found.into_iter().map(|i| &self.items[i]).collect()
    }
}

/// The verdict on one candidate against one earlier range of its origin.
enum Overlap {
    Consistent,
    Undecided,
    Fork(Option<u64>),
}

/// Decides the fate of every segment (step 2).
/// What the archive (the central server) holds, from its newest receipt
/// here: a segment this relay carried before comes back when its origin
/// sends it again because the archive never confirmed it (a stick lost
/// after this hop). Such a segment, in a bundle this relay has not read
/// before, is passed on again instead of being dropped as carried.
struct SendAgain {
    archive: Option<HashMap<NodeId, Vec<(u64, u64)>>>,
}

impl SendAgain {
    fn load(node: &Node, trust: &TrustStore) -> SendAgain {
        // Without the archive's receipt (none yet, or the store unreadable)
        // nothing is passed on again: the origin's resend still is, by the
        // relay that has not carried it.
        let store = crate::receipt::Store::open(&node.home).ok();
        let archive = trust.archives().first().and_then(|k| store?.get(&k.node, trust).ok().flatten()).map(|r| {
            r.receipt
                .origins
                .iter()
                .map(|o| (o.origin.clone(), o.ranges.iter().map(|g| (g.first, g.last)).collect()))
                .collect()
        });
        SendAgain { archive }
    }

    /// Whether `d`, in the bundle file `input`, is sent again: the archive
    /// has not confirmed all of it, and no segment of its origin this relay
    /// carried came in a file of that name (the same bundle read again).
    fn forward(&self, d: &SegmentDescriptor, input: &Path, carried: &[Carried]) -> bool {
        let Some(archive) = &self.archive else { return false };
        let held = archive.get(&d.origin).is_some_and(|r| crate::receipt::confirm::covered(d.first_seq, d.last_seq, r));
        let name = input.file_name();
        !held && name.is_some() && !carried.iter().any(|c| Path::new(&c.input).file_name() == name)
    }
}

fn classify(
    inputs: &mut [Input],
    ledger: &Ledger,
    again: &SendAgain,
    report: &mut RelayReport,
) -> Result<(), RelayError> {
    let mut known: HashMap<NodeId, KnownRanges> = HashMap::new();
    let mut carried_of: HashMap<NodeId, Vec<Carried>> = HashMap::new();
    for i in 0..inputs.len() {
        for j in 0..inputs[i].segments.len() {
            if let Some(why) = &inputs[i].segments[j].refused {
                report.refused_segments.push(SegmentRefusal {
                    file: inputs[i].path.clone(),
                    segment: inputs[i].segments[j].descriptor.member_name(),
                    reason: why.clone(),
                    quarantined: None,
                });
                continue;
            }
            let origin = inputs[i].segments[j].descriptor.origin.clone();
            if !known.contains_key(&origin) {
                let mut ranges = KnownRanges::default();
                let carried = ledger.carried(&origin)?;
                for c in &carried {
                    ranges.add(inputs, Known::Ledger(Box::new(c.clone())));
                }
                known.insert(origin.clone(), ranges);
                carried_of.insert(origin.clone(), carried);
            }
            let d = &inputs[i].segments[j].descriptor;
            let ranges = known.get(&origin).map(|k| k.near(d.first_seq, d.last_seq)).unwrap_or_default();
            let (mut fate, fork, undecided) = judge(inputs, i, j, &ranges);
            if fate == Fate::Duplicate(DuplicateRoute::AlreadyCarried)
                && again.forward(d, &inputs[i].path, carried_of.get(&origin).map_or(&[], Vec::as_slice))
            {
                fate = Fate::Forward;
                report.counts.sent_again += 1;
            }
            match &fate {
                Fate::Duplicate(route) => {
                    report.counts.duplicates += 1;
                    match route {
                        DuplicateRoute::SameBundle => report.counts.duplicate_same_bundle += 1,
                        DuplicateRoute::OtherBundle => report.counts.duplicate_other_bundle += 1,
                        DuplicateRoute::AlreadyCarried => report.counts.duplicate_already_carried += 1,
                    }
                }
                Fate::Fork => {
                    report.counts.forks += 1;
                    if let Some(f) = fork {
                        let reason = format!(
                            "fork: {} in {} contradicts {} from {}{}.\n{}\n",
                            f.segment,
                            f.file.display(),
                            f.conflicts_with,
                            f.conflicts_with_source,
                            f.seq.map(|s| format!(" (first difference at seq {s})")).unwrap_or_default(),
                            f.recovery
                        );
                        let input = &mut inputs[i];
                        input.quarantine_reason = Some(match input.quarantine_reason.take() {
                            Some(earlier) => earlier + &reason,
                            None => reason,
                        });
                        report.forks.push(f);
                    }
                }
                Fate::Forward => {
                    if undecided {
                        report.warnings.push(undecided_warning(inputs, i, j));
                    }
                    known.entry(origin).or_default().add(inputs, Known::InRun(i, j));
                }
                Fate::Pending | Fate::Refused => {}
            }
            inputs[i].segments[j].fate = fate;
        }
    }
    Ok(())
}

fn undecided_warning(inputs: &[Input], i: usize, j: usize) -> String {
    format!(
        "{} in {} overlaps seqs carried before that could not be compared (their entries are gone); \
         forwarded so that the next hop decides",
        inputs[i].segments[j].descriptor.member_name(),
        inputs[i].path.display()
    )
}

fn known_range(inputs: &[Input], k: &Known) -> (u64, u64) {
    match k {
        Known::Ledger(c) => (c.first_seq, c.last_seq),
        Known::InRun(i, j) => {
            let d = &inputs[*i].segments[*j].descriptor;
            (d.first_seq, d.last_seq)
        }
    }
}

fn known_chains(inputs: &[Input], k: &Known) -> (Option<ChainHash>, Option<ChainHash>) {
    match k {
        Known::Ledger(c) => (c.chain_before(), c.chain_after()),
        Known::InRun(i, j) => {
            let d = &inputs[*i].segments[*j].descriptor;
            (d.chain_before(), d.chain_after())
        }
    }
}

fn known_source(inputs: &[Input], k: &Known) -> (String, String) {
    match k {
        Known::Ledger(c) => (
            format!("{}.{}-{}", c.origin, c.first_seq, c.last_seq),
            format!(
                "{} (carried on {} from {}, passed on in {})",
                c.input,
                c.carried_at,
                c.source,
                c.output.as_deref().unwrap_or("?")
            ),
        ),
        Known::InRun(i, j) => (inputs[*i].segments[*j].descriptor.member_name(), inputs[*i].path.display().to_string()),
    }
}

/// The fate of segment `j` of input `i`, given the ranges of its origin
/// known before it; and whether some overlap could not be compared.
fn judge(inputs: &[Input], i: usize, j: usize, ranges: &[&Known]) -> (Fate, Option<ForkReport>, bool) {
    let c = &inputs[i].segments[j];
    let d = &c.descriptor;
    let (f, l) = (d.first_seq, d.last_seq);
    let points = [(f - 1, d.chain_before()), (l, d.chain_after())];
    let mut covered: Vec<(u64, u64, DuplicateRoute)> = Vec::new();
    let mut chain_cache: Option<BTreeMap<u64, ChainHash>> = None;
    let mut undecided = false;
    for k in ranges {
        let (kf, kl) = known_range(inputs, k);
        let (kcb, kca) = known_chains(inputs, k);
        let kpoints = [(kf - 1, kcb), (kl, kca)];
        // Shared boundary with a different chain hash: the histories differ.
        let mut verdict = None;
        for (p, h) in points {
            for (kp, kh) in kpoints {
                if p == kp && h != kh {
                    verdict = Some(Overlap::Fork(None));
                }
            }
        }
        let overlaps = kf <= l && f <= kl;
        let verdict = match verdict {
            Some(v) => v,
            None if !overlaps => continue,
            // Same end, same chain hash there: the whole history up to it agrees.
            None if kl == l => Overlap::Consistent,
            None => match k {
                Known::InRun(ki, kj) => {
                    let a = SegmentRef { path: &inputs[i].path, index: j, descriptor: d };
                    let kd = &inputs[*ki].segments[*kj].descriptor;
                    let b = SegmentRef { path: &inputs[*ki].path, index: *kj, descriptor: kd };
                    match compare::first_difference(a, b, f.max(kf), l.min(kl)) {
                        Ok(None) => Overlap::Consistent,
                        Ok(Some(seq)) => Overlap::Fork(Some(seq)),
                        Err(_) => Overlap::Undecided,
                    }
                }
                Known::Ledger(_) => {
                    // Compare our chain at the ledger's boundaries inside our range.
                    let inner: Vec<(u64, Option<ChainHash>)> =
                        kpoints.iter().copied().filter(|&(p, _)| p >= f && p < l).collect();
                    if inner.is_empty() {
                        Overlap::Undecided
                    } else {
                        let chains = chain_cache.get_or_insert_with(|| {
                            let all: Vec<u64> = ranges
                                .iter()
                                .flat_map(|k| {
                                    let (kf, kl) = known_range(inputs, k);
                                    [kf - 1, kl]
                                })
                                .filter(|&p| p >= f && p < l)
                                .collect();
                            let s = SegmentRef { path: &inputs[i].path, index: j, descriptor: d };
                            compare::chain_at(s, &all).unwrap_or_default()
                        });
                        let mut v = Overlap::Undecided;
                        for (p, kh) in inner {
                            match chains.get(&p) {
                                Some(h) if Some(*h) != kh => {
                                    v = Overlap::Fork(Some(p));
                                    break;
                                }
                                // Our chain at their end agrees: the overlap agrees.
                                Some(_) if p == kl => v = Overlap::Consistent,
                                _ => {}
                            }
                        }
                        v
                    }
                }
            },
        };
        match verdict {
            Overlap::Fork(mut seq) => {
                if let (None, Known::InRun(ki, kj), true) = (seq, k, overlaps) {
                    // Name the first differing seq (the one extra decompression a fork costs).
                    let a = SegmentRef { path: &inputs[i].path, index: j, descriptor: d };
                    let kd = &inputs[*ki].segments[*kj].descriptor;
                    let b = SegmentRef { path: &inputs[*ki].path, index: *kj, descriptor: kd };
                    seq = compare::first_difference(a, b, f.max(kf), l.min(kl)).ok().flatten();
                }
                let (seg, src) = known_source(inputs, k);
                return (
                    Fate::Fork,
                    Some(ForkReport {
                        origin: d.origin.clone(),
                        segment: d.member_name(),
                        file: inputs[i].path.clone(),
                        conflicts_with: seg,
                        conflicts_with_source: src,
                        seq,
                        quarantined: None,
                        recovery: format!(
                            "Two computers write entries under origin {}'s identity (a copied laptop, or one \
                             restored from an old backup). The newcomer was set aside, nothing was merged or lost. \
                             Carry it on to the server anyway: the server's report prints the one command to run on \
                             the computer that made it (`ferry node reissue …`), which keeps both computers' work.",
                            d.origin
                        ),
                    }),
                    false,
                );
            }
            Overlap::Consistent => {
                let route = match k {
                    Known::Ledger(_) => DuplicateRoute::AlreadyCarried,
                    Known::InRun(ki, _) if inputs[*ki].manifest_sha256 == inputs[i].manifest_sha256 => {
                        DuplicateRoute::SameBundle
                    }
                    Known::InRun(..) => DuplicateRoute::OtherBundle,
                };
                covered.push((kf.max(f), kl.min(l), route));
            }
            Overlap::Undecided => undecided = true,
        }
    }
    // A duplicate when consistent known ranges cover every seq.
    covered.sort_by_key(|&(a, b, _)| (a, b));
    let mut next = f;
    let mut route = DuplicateRoute::AlreadyCarried;
    for &(a, b, r) in &covered {
        if a > next {
            break;
        }
        if b >= next {
            next = b + 1;
        }
        if r != DuplicateRoute::AlreadyCarried {
            route = r;
        }
    }
    if next > l {
        (Fate::Duplicate(route), None, false)
    } else {
        (Fate::Forward, None, undecided)
    }
}

/// Groups the segments to forward into bundles of at most `max_size`
/// bytes. Overlapping segments of one origin go into different bundles (a
/// bundle must not hold both).
fn pack(
    inputs: &[Input],
    forward: &[(usize, usize)],
    max_size: u64,
    report: &mut RelayReport,
) -> Vec<Vec<(usize, usize)>> {
    // Fixed bytes: manifest header and rounding, seal member, end blocks, and
    // the manifest's own fields.
    const FIXED: u64 = 6 * BLOCK as u64 + 256;
    let mut groups: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut current: Vec<(usize, usize)> = Vec::new();
    let mut size = FIXED;
    for &(i, j) in forward {
        let c = &inputs[i].segments[j];
        let d = &c.descriptor;
        // The manifest record as it is, one more hop (164 bytes), a comma.
        let record = serde_json::to_string(&c.record).map(|r| r.len() as u64).unwrap_or(1 << 16) + 200;
        let need = BLOCK as u64 + d.zstd_len + padding(d.zstd_len) as u64 + record;
        let clash = current.iter().any(|&(ci, cj)| {
            let o = &inputs[ci].segments[cj].descriptor;
            o.origin == d.origin
                && ((o.first_seq <= d.last_seq && d.first_seq <= o.last_seq)
                    || (o.last_seq + 1 == d.first_seq && o.chain_after != d.chain_before)
                    || (d.last_seq + 1 == o.first_seq && d.chain_after != o.chain_before))
        });
        if !current.is_empty() && (clash || size + need > max_size) {
            groups.push(std::mem::take(&mut current));
            size = FIXED;
        }
        if FIXED + need > max_size {
            report.warnings.push(format!(
                "{} alone is {} bytes, more than --max-size {max_size}; it was written in a bundle of its own",
                d.member_name(),
                FIXED + need
            ));
        }
        current.push((i, j));
        size += need;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// Writes one output bundle: ledger rows pending, bundle durable, rows completed.
fn write_group(
    node: &Node,
    inputs: &[Input],
    group: &[(usize, usize)],
    opts: &RelayOptions,
    ledger: &mut Ledger,
    progress: &mut dyn Progress,
    report: &mut RelayReport,
) -> Result<(), RelayError> {
    let write_err = |source| RelayError::Write { dir: opts.out_dir.clone(), source };
    let me = node.id();
    let mut records = Vec::with_capacity(group.len());
    let mut descriptors = Vec::with_capacity(group.len());
    let mut rows = Vec::with_capacity(group.len());
    for &(i, j) in group {
        let c = &inputs[i].segments[j];
        let mut record = c.record.clone();
        let origin_sig = keys::decode_signature(&record.signature)
            .ok_or_else(|| write_err(BundleError::Malformed("origin signature is not base64url".into())))?;
        let previous = match record.hops.last() {
            Some(h) => Some(
                keys::decode_signature(&h.signature)
                    .ok_or_else(|| write_err(BundleError::Malformed("hop signature is not base64url".into())))?
                    .to_bytes(),
            ),
            None => None,
        };
        let at = Timestamp::now();
        let msg = hop_message(record.descriptor.get().as_bytes(), &origin_sig.to_bytes(), previous.as_ref(), me, at);
        let sig = keys::sign(node.signing_key(), HOP_PREFIX, &msg);
        record.hops.push(Hop { node: me.clone(), at, signature: keys::encode_signature(&sig) });
        records.push(record);
        descriptors.push(c.descriptor.clone());
        rows.push(Carried::new(&c.descriptor, c.descriptor_sha256.clone(), &inputs[i].path, &inputs[i].source));
    }
    ledger.add_pending(&rows)?;
    hit("relay: ledger rows pending, bundle not yet written");
    let written =
        write_bundle_named(&opts.out_dir, records, &descriptors, node.signing_key(), Some(&node.info.name), |k, w| {
            let (i, j) = group[k];
            let input = &inputs[i];
            copy_segment(input, &input.segments[j], w)?;
            progress.advance(input.segments[j].descriptor.zstd_len);
            Ok(())
        })
        .map_err(write_err)?;
    hit("relay: bundle durable, ledger not yet completed");
    let name = written.path.display().to_string();
    ledger.complete(&rows, &name)?;
    hit("relay: ledger completed");
    report.counts.bundles_written += 1;
    report.counts.segments_written += group.len() as u64;
    let entries: u64 = descriptors.iter().map(|d| d.count).sum();
    report.counts.entries_written += entries;
    report.counts.bytes_written += written.bytes;
    report.written.push(WrittenBundle {
        file: written.path,
        bytes: written.bytes,
        segments: group.len() as u64,
        entries,
    });
    Ok(())
}

/// Copies a verified segment's compressed bytes from its input, refusing
/// an input that changed since it was verified.
fn copy_segment(input: &Input, c: &Candidate, w: &mut dyn Write) -> io::Result<()> {
    let changed = || {
        io::Error::new(io::ErrorKind::InvalidData, format!("{} changed since it was verified", input.path.display()))
    };
    let mut f = File::open(&input.path)?;
    let meta = f.metadata()?;
    if meta.len() != input.len || meta.modified().ok() != input.modified {
        return Err(changed());
    }
    let d = &c.descriptor;
    f.seek(SeekFrom::Start(c.offset - BLOCK as u64))?;
    let mut header = [0u8; BLOCK];
    f.read_exact(&mut header)?;
    if header != tar_header(&d.member_name(), d.zstd_len)? {
        return Err(changed());
    }
    let mut src = BufReader::with_capacity(256 << 10, f).take(d.zstd_len);
    let n = io::copy(&mut src, w)?;
    if n != d.zstd_len {
        return Err(changed());
    }
    Ok(())
}

/// Copies `path` into `HOME/quarantine/` (durably, never overwriting a
/// different file) with a `<name>.reason.txt` beside it.
pub fn quarantine(home: &Path, path: &Path, reason: &str) -> Result<PathBuf, RelayError> {
    quarantine_at_most(home, path, reason, u64::MAX).map(|q| q.path)
}

/// A quarantined copy.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub path: PathBuf,
    /// Only the file's first bytes were kept (see [`quarantine_at_most`]).
    pub partial: bool,
}

/// [`quarantine`] keeping at most the first `keep` bytes of `path`; the
/// reason file says when the copy is partial.
pub fn quarantine_at_most(home: &Path, path: &Path, reason: &str, keep: u64) -> Result<Quarantined, RelayError> {
    let dir = home.join("quarantine");
    let err = |source| RelayError::Quarantine { path: path.to_path_buf(), dir: dir.clone(), source };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let len = std::fs::metadata(path).map_err(err)?.len();
    let partial = len > keep;
    let kept = len.min(keep);
    let reason = if partial {
        format!(
            "{reason}only the first {kept} of its {len} bytes were kept here (the rest cannot belong to a bundle); \
             the file itself was left where it was\n"
        )
    } else {
        reason.to_owned()
    };
    let raw = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle.tar".into());
    let safe: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    let (stem, ext) = match safe.strip_suffix(".tar") {
        Some(s) => (s.to_owned(), ".tar"),
        None => (safe.clone(), ""),
    };
    for n in 1u32..=10_000 {
        let name = if n == 1 { format!("{stem}{ext}") } else { format!("{stem}-{n}{ext}") };
        let dest = dir.join(&name);
        let reason_path = dir.join(format!("{name}.reason.txt"));
        if dest.exists() {
            if same_start(&dest, path, kept).map_err(err)? {
                fsutil::write_atomic(&reason_path, reason.as_bytes()).map_err(err)?;
                return Ok(Quarantined { path: dest, partial });
            }
            continue;
        }
        let mut tmp = fsutil::temp_in(&dir).map_err(err)?;
        let src = File::open(path).map_err(err)?;
        let copied = io::copy(&mut src.take(kept), tmp.as_file_mut()).map_err(err)?;
        if copied != kept {
            return Err(err(io::Error::other(format!("{} changed while it was copied", path.display()))));
        }
        hit("relay: quarantine copy in temp file");
        match fsutil::persist_new(tmp, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(e)),
        }
        hit("relay: quarantined, reason not yet written");
        fsutil::write_atomic(&reason_path, reason.as_bytes()).map_err(err)?;
        return Ok(Quarantined { path: dest, partial });
    }
    Err(err(io::Error::other("too many different quarantined files of this name")))
}

/// Whether `a` holds exactly the first `len` bytes of `b`.
fn same_start(a: &Path, b: &Path, len: u64) -> io::Result<bool> {
    if std::fs::metadata(a)?.len() != len {
        return Ok(false);
    }
    let (mut ra, mut rb) = (BufReader::new(File::open(a)?), BufReader::new(File::open(b)?).take(len));
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = ra.read(&mut ba)?;
        if n == 0 {
            return Ok(rb.read(&mut bb[..1])? == 0);
        }
        rb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried(first: u64, last: u64) -> Known {
        Known::Ledger(Box::new(Carried {
            origin: NodeId::try_from("0123456789abcdef".to_owned()).expect("id"),
            first_seq: first,
            last_seq: last,
            count: last - first + 1,
            chain_before: String::new(),
            chain_after: String::new(),
            ts_min: Timestamp(0),
            ts_max: Timestamp(0),
            tables: BTreeMap::new(),
            zstd_len: 0,
            descriptor_sha256: String::new(),
            input: String::new(),
            source: String::new(),
            output: None,
            carried_at: Timestamp(0),
        }))
    }

    #[test]
    fn known_ranges_find_exactly_what_overlaps_or_touches() {
        let mut rng = fastrand::Rng::with_seed(15);
        for _ in 0..200 {
            let mut ranges = KnownRanges::default();
            let mut plain: Vec<(u64, u64)> = Vec::new();
            for _ in 0..rng.usize(0..40) {
                let f = rng.u64(1..200);
                let span = if rng.bool() { 3 } else { 60 };
                let l = f + rng.u64(0..span);
                ranges.add(&[], carried(f, l));
                plain.push((f, l));
            }
            for _ in 0..20 {
                let f = rng.u64(1..220);
                let l = f + rng.u64(0..30);
                let want: Vec<(u64, u64)> =
                    plain.iter().copied().filter(|&(kf, kl)| kl + 1 >= f && kf <= l + 1).collect();
                let got: Vec<(u64, u64)> = ranges.near(f, l).iter().map(|k| known_range(&[], k)).collect();
                assert_eq!(got, want, "{f}..={l} among {plain:?}");
            }
        }
        // Many sequential segments: each finds only its neighbour.
        let mut seq = KnownRanges::default();
        for k in 0..20_000u64 {
            assert!(seq.near(k * 10 + 1, k * 10 + 10).len() <= 1);
            seq.add(&[], carried(k * 10 + 1, k * 10 + 10));
        }
    }
}
