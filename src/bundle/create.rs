//! `ferry bundle create`: pack a node's entries not yet bundled into one
//! signed bundle.
//!
//! The node home remembers, per origin, the last bundled seq and the chain
//! hash there (`checkpoints` in the state store). Entries before the start
//! are read only to extend the chain hash; a journal whose chain disagrees
//! with a recorded checkpoint was rewritten, and is refused.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::writer::{copy_file, write_bundle_named, SegmentBuilder};
use super::BundleError;
use crate::chain::ChainHash;
use crate::journal::{Entry, EntryHead, Journal, JournalError};
use crate::keys::NodeId;
use crate::node::{Node, NodeError};
use crate::progress::Progress;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("failed to write the bundle")]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot encrypt to {name}")]
    Recipient {
        name: String,
        #[source]
        source: crate::keys::KeyError,
    },
    #[error("the journal starts at seq {first}, but this node has no chain hash for seq {}: give the journal from seq 1", first - 1)]
    NoCheckpoint { first: u64 },
    #[error("journal entry {seq} differs from what this node bundled before: the journal was rewritten or restored from an old copy. Restore the journal that was bundled, or start a new node (`ferry node init` in a new home)")]
    Rewritten { seq: u64 },
    #[error("--since {since} is before the journal's first seq {first}")]
    SinceTooEarly { since: u64, first: u64 },
    #[error("--out {} is a file; give the folder the bundle goes into (a USB stick, an outbox)", .0.display())]
    OutIsAFile(PathBuf),
    #[error("failed to create the folder {}", path.display())]
    OutDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `bundle create` should do.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub out_dir: PathBuf,
    /// Bundle from this seq (sending again); default: after the watermark.
    pub since: Option<u64>,
}

/// What `bundle create` did. `file` is `None` when there was nothing new.
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    pub file: Option<PathBuf>,
    pub origin: NodeId,
    pub entries: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The names of the nodes the bundle is encrypted to (empty: plain).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encrypted_to: Vec<String>,
}

/// Bundles entries from journal files at `journal_path`.
pub fn create_from_journal(
    node: &Node,
    journal_path: &Path,
    opts: &CreateOptions,
    progress: &mut dyn Progress,
) -> Result<CreateReport, CreateError> {
    let journal = Journal::open(journal_path)?;
    let mut state = node.state()?;
    let first = journal.first_seq();
    let chain = if first == 1 {
        ChainHash::GENESIS
    } else {
        state.checkpoint(node.id().as_str(), first - 1)?.ok_or(CreateError::NoCheckpoint { first })?
    };
    let watermark = state.watermark(node.id().as_str())?;
    progress.start("bundling", Some(journal.total_bytes()));
    let mut packer = Packer::new(node, opts, first, chain, watermark)?;
    journal.scan(Some(&mut state), |head, bytes| {
        progress.advance(bytes.len() as u64 + 1);
        packer.push(head, bytes)
    })?;
    let (report, chain_after) = packer.finish(None)?;
    progress.finish();
    // Only once the bundle is durable: a crash before this re-bundles the
    // same entries next time, which every hop drops as a duplicate.
    if let (Some(first_seq), Some(seq), Some(file)) = (report.first_seq, report.last_seq, &report.file) {
        let sent = crate::receipt::sent::Sent {
            first_seq,
            last_seq: seq,
            chain_after,
            ts_after: None,
            at: crate::journal::Timestamp::now(),
            file: file.display().to_string(),
        };
        crate::receipt::sent::record(&state, node.id(), &sent)?;
    }
    if let Some(seq) = report.last_seq {
        crate::crashpoint::hit("bundle durable, watermark not yet recorded");
        state.record_checkpoint(node.id().as_str(), seq, &chain_after)?;
    }
    Ok(report)
}

/// The packing loop shared by every journal source. Entries arrive in seq
/// order from `first`, with `chain` the chain hash before `first`. Entries
/// before the start (`--since`, else after the watermark) only extend the
/// chain; the chain at the watermark must match the record.
pub struct Packer<'a> {
    node: &'a Node,
    out_dir: PathBuf,
    start: u64,
    expected: u64,
    chain: ChainHash,
    watermark: Option<(u64, ChainHash)>,
    builder: Option<SegmentBuilder>,
    bytes_in: u64,
    /// The nodes the bundle is encrypted to (none: plain).
    recipients: Vec<(NodeId, crate::crypt::Recipient)>,
}

/// The nodes a bundle made by `node` is encrypted to: its `encrypt_to`
/// setting (plus `--encrypt-to` for this run, [`Node::encrypt_also`]),
/// looked up in its trust store.
pub fn recipients(node: &Node) -> Result<Vec<(NodeId, crate::crypt::Recipient)>, CreateError> {
    if node.info.encrypt_to.is_empty() {
        return Ok(Vec::new());
    }
    let trust = node.trust()?;
    node.info
        .encrypt_to
        .iter()
        .map(|name| trust.recipient(name).map_err(|source| CreateError::Recipient { name: name.clone(), source }))
        .collect()
}

impl<'a> Packer<'a> {
    pub fn new(
        node: &'a Node,
        opts: &CreateOptions,
        first: u64,
        chain: ChainHash,
        watermark: Option<(u64, ChainHash)>,
    ) -> Result<Self, CreateError> {
        let start = match (opts.since, watermark) {
            (Some(since), _) if since < first => return Err(CreateError::SinceTooEarly { since, first }),
            (Some(since), _) => since,
            (None, Some((seq, _))) => seq + 1,
            (None, None) => first,
        };
        if let Some((seq, recorded)) = watermark {
            if seq + 1 == first && recorded != chain {
                return Err(CreateError::Rewritten { seq });
            }
        }
        if opts.out_dir.is_file() {
            return Err(CreateError::OutIsAFile(opts.out_dir.clone()));
        }
        std::fs::create_dir_all(&opts.out_dir)
            .map_err(|source| CreateError::OutDir { path: opts.out_dir.clone(), source })?;
        // Left-overs of a killed run never get a final name; a writer still
        // at work touches its temp file far more often than STALE_TEMP.
        let _ = crate::fsutil::remove_stale_temps(&opts.out_dir, crate::fsutil::STALE_TEMP);
        let recipients = recipients(node)?;
        Ok(Packer {
            node,
            out_dir: opts.out_dir.clone(),
            start,
            expected: first,
            chain,
            watermark,
            builder: None,
            bytes_in: 0,
            recipients,
        })
    }

    /// Takes the next entry (its head and exact line bytes).
    pub fn push(&mut self, head: &EntryHead<'_>, bytes: &[u8]) -> Result<(), CreateError> {
        if head.seq != self.expected {
            return Err(CreateError::Bundle(BundleError::SeqGap { expected: self.expected, found: head.seq }));
        }
        self.expected += 1;
        if head.seq < self.start {
            self.chain = self.chain.next(bytes);
            if self.watermark.is_some_and(|(seq, recorded)| seq == head.seq && recorded != self.chain) {
                return Err(CreateError::Rewritten { seq: head.seq });
            }
            return Ok(());
        }
        let b = match &mut self.builder {
            Some(b) => b,
            None => self.builder.insert(
                SegmentBuilder::new_encrypted(
                    self.node.id().clone(),
                    self.chain,
                    &self.out_dir,
                    self.recipients.clone(),
                )
                .map_err(BundleError::Io)?,
            ),
        };
        self.bytes_in += bytes.len() as u64 + 1;
        b.push_head(head, bytes)?;
        Ok(())
    }

    /// Writes the bundle (if anything was new). Returns the report and the
    /// chain hash after the last entry seen.
    pub fn finish(self, schema: Option<String>) -> Result<(CreateReport, ChainHash), CreateError> {
        let node = self.node;
        let Some(builder) = self.builder else {
            let report = CreateReport {
                file: None,
                origin: node.id().clone(),
                entries: 0,
                first_seq: None,
                last_seq: None,
                bytes_in: 0,
                bytes_out: 0,
                encrypted_to: Vec::new(),
            };
            return Ok((report, self.chain));
        };
        let built = builder.finish(schema, node.signing_key())?;
        let d = built.descriptor.clone();
        let chain_after = d.chain_after().ok_or_else(|| BundleError::Malformed("bad chain_after".into()))?;
        let written = write_bundle_named(
            &self.out_dir,
            vec![built.record],
            std::slice::from_ref(&d),
            node.signing_key(),
            Some(&node.info.name),
            |_, w| copy_file(&built.file, w),
        )?;
        let report = CreateReport {
            file: Some(written.path),
            origin: d.origin,
            entries: d.count,
            first_seq: Some(d.first_seq),
            last_seq: Some(d.last_seq),
            bytes_in: self.bytes_in,
            bytes_out: written.bytes,
            encrypted_to: if self.recipients.is_empty() { Vec::new() } else { node.info.encrypt_to.clone() },
        };
        Ok((report, chain_after))
    }
}

/// [`Packer`] over an iterator of parsed entries and their line bytes.
#[allow(clippy::too_many_arguments)]
pub fn pack<I>(
    node: &Node,
    opts: &CreateOptions,
    first: u64,
    chain: ChainHash,
    watermark: Option<(u64, ChainHash)>,
    schema: Option<String>,
    lines: I,
    progress: &mut dyn Progress,
) -> Result<(CreateReport, ChainHash), CreateError>
where
    I: Iterator<Item = Result<(Entry, Vec<u8>), CreateError>>,
{
    let mut packer = Packer::new(node, opts, first, chain, watermark)?;
    for item in lines {
        let (entry, bytes) = item?;
        progress.advance(bytes.len() as u64 + 1);
        packer.push(&entry.head(), &bytes)?;
    }
    packer.finish(schema)
}
