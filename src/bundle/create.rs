//! `ferry bundle create`: pack a node's entries not yet bundled into one
//! signed bundle.
//!
//! The node home remembers, per origin, the last bundled seq and the chain
//! hash there (`checkpoints` in the state store). Entries before the start
//! are read only to extend the chain hash; a journal whose chain disagrees
//! with a recorded checkpoint was rewritten, and is refused.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::writer::{copy_file, write_bundle, SegmentBuilder};
use super::BundleError;
use crate::chain::ChainHash;
use crate::journal::{Entry, Journal, JournalError};
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
    #[error("the journal starts at seq {first}, but this node has no chain hash for seq {}: give the journal from seq 1", first - 1)]
    NoCheckpoint { first: u64 },
    #[error("journal entry {seq} differs from what this node bundled before: the journal was rewritten or restored from an old copy. Restore the journal that was bundled, or start a new node (`ferry node init` in a new home)")]
    Rewritten { seq: u64 },
    #[error("--since {since} is before the journal's first seq {first}")]
    SinceTooEarly { since: u64, first: u64 },
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
    let lines = journal.read(Some(&mut state))?.map(|r| r.map(|l| (l.entry, l.bytes)).map_err(CreateError::from));
    let (report, chain_after) = pack(node, opts, first, chain, watermark, None, lines, progress)?;
    progress.finish();
    // Only once the bundle is durable: a crash before this re-bundles the
    // same entries next time, which every hop drops as a duplicate.
    if let Some(seq) = report.last_seq {
        crate::crashpoint::hit("bundle durable, watermark not yet recorded");
        state.record_checkpoint(node.id().as_str(), seq, &chain_after)?;
    }
    Ok(report)
}

/// The packing loop shared by every journal source: `lines` yields entries
/// from seq `first` on, with `chain` the chain hash before `first`.
/// Entries before the start (`--since`, else after the watermark) only
/// extend the chain; the chain at the watermark must match the record.
/// Returns the report and the chain hash after the last entry read.
#[allow(clippy::too_many_arguments)]
pub fn pack<I>(
    node: &Node,
    opts: &CreateOptions,
    first: u64,
    mut chain: ChainHash,
    watermark: Option<(u64, ChainHash)>,
    schema: Option<String>,
    lines: I,
    progress: &mut dyn Progress,
) -> Result<(CreateReport, ChainHash), CreateError>
where
    I: Iterator<Item = Result<(Entry, Vec<u8>), CreateError>>,
{
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
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| CreateError::Bundle(BundleError::Io(e)))?;
    let mut builder: Option<SegmentBuilder> = None;
    let mut bytes_in = 0u64;
    for (expected, item) in (first..).zip(lines) {
        let (entry, bytes) = item?;
        if entry.seq != expected {
            return Err(CreateError::Bundle(BundleError::SeqGap { expected, found: entry.seq }));
        }
        progress.advance(bytes.len() as u64 + 1);
        if entry.seq < start {
            chain = chain.next(&bytes);
            if watermark.is_some_and(|(seq, recorded)| seq == entry.seq && recorded != chain) {
                return Err(CreateError::Rewritten { seq: entry.seq });
            }
            continue;
        }
        let b = match &mut builder {
            Some(b) => b,
            None => {
                builder.insert(SegmentBuilder::new(node.id().clone(), chain, &opts.out_dir).map_err(BundleError::Io)?)
            }
        };
        bytes_in += bytes.len() as u64 + 1;
        b.push(&entry, &bytes)?;
    }
    let Some(builder) = builder else {
        let report = CreateReport {
            file: None,
            origin: node.id().clone(),
            entries: 0,
            first_seq: None,
            last_seq: None,
            bytes_in: 0,
            bytes_out: 0,
        };
        return Ok((report, chain));
    };
    let chain_after = builder.chain();
    let built = builder.finish(schema, node.signing_key())?;
    let d = built.descriptor.clone();
    let written =
        write_bundle(&opts.out_dir, vec![built.record], std::slice::from_ref(&d), node.signing_key(), |_, w| {
            copy_file(&built.file, w)
        })?;
    let report = CreateReport {
        file: Some(written.path),
        origin: d.origin,
        entries: d.count,
        first_seq: Some(d.first_seq),
        last_seq: Some(d.last_seq),
        bytes_in,
        bytes_out: written.bytes,
    };
    Ok((report, chain_after))
}
