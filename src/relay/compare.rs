//! Settling overlaps: the one place relaying decompresses segments.
//!
//! Two segments of one origin whose seq ranges overlap but end at different
//! seqs cannot be compared from their descriptors alone (each carries chain
//! hashes only at its own ends). Then the relay reads both entry by entry
//! over the shared range ([`first_difference`]), or, when the earlier one is
//! known only from the ledger, computes the newcomer's chain hash at the
//! ledger's recorded seqs ([`chain_at`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::bundle::{BundleError, BundleReader, EntryLines, SegmentDescriptor};
use crate::chain::ChainHash;

/// Where a segment's bytes are: a bundle file and the segment's index in it.
#[derive(Debug, Clone, Copy)]
pub struct SegmentRef<'a> {
    pub path: &'a Path,
    pub index: usize,
    pub descriptor: &'a SegmentDescriptor,
}

fn missing(path: &Path) -> BundleError {
    BundleError::Malformed(format!("{} no longer holds the segment it held when verified", path.display()))
}

/// Skips `n` lines.
fn skip(lines: &mut EntryLines<'_, BufReader<File>>, n: u64) -> Result<(), BundleError> {
    for _ in 0..n {
        if lines.next_line()?.is_none() {
            return Err(BundleError::Truncated);
        }
    }
    Ok(())
}

/// Compares two segments of one origin entry by entry over seqs `lo..=hi`
/// (which both must hold). Returns the first seq whose entries differ.
pub fn first_difference(a: SegmentRef<'_>, b: SegmentRef<'_>, lo: u64, hi: u64) -> Result<Option<u64>, BundleError> {
    let mut ra = BundleReader::open(a.path)?;
    let mut rb = BundleReader::open(b.path)?;
    for _ in 0..a.index {
        ra.next_segment()?.ok_or_else(|| missing(a.path))?;
    }
    for _ in 0..b.index {
        rb.next_segment()?.ok_or_else(|| missing(b.path))?;
    }
    let mut la = ra.next_segment()?.ok_or_else(|| missing(a.path))?.entries()?;
    let mut lb = rb.next_segment()?.ok_or_else(|| missing(b.path))?.entries()?;
    skip(&mut la, lo - a.descriptor.first_seq)?;
    skip(&mut lb, lo - b.descriptor.first_seq)?;
    let mut line_a = Vec::new();
    for seq in lo..=hi {
        line_a.clear();
        line_a.extend_from_slice(la.next_line()?.ok_or(BundleError::Truncated)?);
        let line_b = lb.next_line()?.ok_or(BundleError::Truncated)?;
        if line_a != line_b {
            return Ok(Some(seq));
        }
    }
    Ok(None)
}

/// The chain hash of segment `s` after each seq in `points` (each within
/// `s`'s range), computed from its entries starting at its `chain_before`.
pub fn chain_at(s: SegmentRef<'_>, points: &[u64]) -> Result<BTreeMap<u64, ChainHash>, BundleError> {
    let mut out = BTreeMap::new();
    let Some(&last) = points.iter().max() else { return Ok(out) };
    let mut chain = s
        .descriptor
        .chain_before()
        .ok_or_else(|| BundleError::Malformed(format!("{}: bad chain_before", s.descriptor.member_name())))?;
    let mut reader = BundleReader::open(s.path)?;
    for _ in 0..s.index {
        reader.next_segment()?.ok_or_else(|| missing(s.path))?;
    }
    let mut lines = reader.next_segment()?.ok_or_else(|| missing(s.path))?.entries()?;
    for seq in s.descriptor.first_seq..=last {
        chain = chain.next(lines.next_line()?.ok_or(BundleError::Truncated)?);
        if points.contains(&seq) {
            out.insert(seq, chain);
        }
    }
    Ok(out)
}
