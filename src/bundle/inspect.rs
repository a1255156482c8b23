//! `ferry bundle inspect`: what a bundle holds, read from its manifest
//! (signatures are not checked here; that is `bundle verify`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{BundleError, BundleReader, OpCounts};
use crate::journal::Timestamp;
use crate::keys::{NodeId, TrustStore};

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub file: String,
    pub bytes: u64,
    pub format: String,
    pub version: u32,
    pub sealed_by: Carrier,
    pub sealed_at: Timestamp,
    pub entries: u64,
    pub segments: Vec<SegmentView>,
    /// Totals over all segments.
    pub tables: BTreeMap<String, OpCounts>,
}

#[derive(Debug, Serialize)]
pub struct Carrier {
    pub node: NodeId,
    /// The name this node's trust store gives it, if any.
    pub name: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SegmentView {
    pub member: String,
    pub origin: Carrier,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    pub ts_min: Timestamp,
    pub ts_max: Timestamp,
    pub schema: Option<String>,
    pub tables: BTreeMap<String, OpCounts>,
    pub entries_len: u64,
    pub zstd_len: u64,
    pub hops: Vec<HopView>,
    /// The nodes an encrypted segment is encrypted to (empty: plain).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encrypted_to: Vec<Carrier>,
    /// Whether its tables and entries can be read here (plain, or encrypted
    /// to this node); an encrypted segment for others shows no tables.
    pub readable: bool,
}

#[derive(Debug, Serialize)]
pub struct HopView {
    pub node: NodeId,
    pub name: Option<String>,
    pub at: Timestamp,
}

/// Reads a bundle's manifest and summarises it.
pub fn inspect(path: &Path, trust: Option<&TrustStore>) -> Result<Inspection, BundleError> {
    inspect_with(path, trust, &crate::crypt::Keyring::none())
}

/// [`inspect`] that opens the encrypted segments `keyring` can open (their
/// schema and tables are shown then).
pub fn inspect_with(
    path: &Path,
    trust: Option<&TrustStore>,
    keyring: &crate::crypt::Keyring,
) -> Result<Inspection, BundleError> {
    let bytes = std::fs::metadata(path).map_err(BundleError::Io)?.len();
    let mut reader = BundleReader::open(path)?;
    reader.open_sealed(keyring)?;
    let name = |n: &NodeId| trust.and_then(|t| t.name_of(n)).map(str::to_owned);
    let m = reader.manifest();
    let mut tables: BTreeMap<String, OpCounts> = BTreeMap::new();
    let mut segments = Vec::new();
    for (record, d) in m.segments.iter().zip(reader.descriptors()) {
        for (t, c) in &d.tables {
            let e = tables.entry(t.clone()).or_default();
            e.insert += c.insert;
            e.update += c.update;
            e.delete += c.delete;
        }
        segments.push(SegmentView {
            member: d.member_name(),
            origin: Carrier { node: d.origin.clone(), name: name(&d.origin) },
            first_seq: d.first_seq,
            last_seq: d.last_seq,
            count: d.count,
            ts_min: d.ts_min,
            ts_max: d.ts_max,
            schema: d.schema.clone(),
            tables: d.tables.clone(),
            entries_len: d.entries_len,
            zstd_len: d.zstd_len,
            hops: record.hops.iter().map(|h| HopView { node: h.node.clone(), name: name(&h.node), at: h.at }).collect(),
            encrypted_to: d
                .encryption
                .iter()
                .flat_map(|e| &e.recipients)
                .map(|n| Carrier { node: n.clone(), name: name(n) })
                .collect(),
            readable: d.is_readable(),
        });
    }
    Ok(Inspection {
        file: path.display().to_string(),
        bytes,
        format: m.format.clone(),
        version: m.version,
        sealed_by: Carrier { node: m.sealed_by.clone(), name: name(&m.sealed_by) },
        sealed_at: m.sealed_at,
        entries: segments.iter().map(|s| s.count).sum(),
        segments,
        tables,
    })
}
