//! Bundles: the files that travel. One bundle holds one or more signed
//! segments (contiguous runs of one origin's journal), possibly from many
//! origins, each with its chain of custody, sealed by whoever wrote the file.
//!
//! - [`format`]: the byte layout and the signed messages (`docs/FORMAT.md`).
//! - [`reader`]: strict, streaming reading.
//! - [`writer`]: compressing segments, writing bundles atomically.
//! - [`create`]: `ferry bundle create`, from a journal.

pub mod create;
pub mod format;
pub mod inspect;
mod io;
pub mod reader;
pub mod writer;

pub use format::{Hop, Manifest, ManifestSegment, OpCounts, SegmentDescriptor};
pub use reader::{BundleReader, EntryLines, SegmentMember};
pub use writer::{write_bundle, BuiltSegment, SegmentBuilder, Written};

/// What can be wrong with a bundle's bytes (trust is [`crate::verify`]'s).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("truncated: the file ends before the bundle does")]
    Truncated,
    #[error("trailing data after the end of the bundle")]
    TrailingData,
    #[error("not a ferry bundle: {0}")]
    NotABundle(String),
    #[error("unsupported bundle format version {0} (made by a newer ferry? upgrade ferry to read it)")]
    UnsupportedVersion(u64),
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error("hash mismatch in {member}: its {what} are not what the signed descriptor says")]
    HashMismatch { member: String, what: &'static str },
    #[error("length mismatch in {member}: descriptor says {declared} bytes, found {actual}")]
    LengthMismatch { member: String, declared: u64, actual: u64 },
    #[error("corrupt segment {member}: {reason}")]
    Corrupt { member: String, reason: String },
    #[error(
        "refusing {member}: it claims to expand {zstd_len} compressed bytes into {entries_len}, beyond the {}x limit",
        format::MAX_EXPANSION
    )]
    TooLarge { member: String, entries_len: u64, zstd_len: u64 },
    #[error("entries out of order: expected seq {expected}, found {found}")]
    SeqGap { expected: u64, found: u64 },
    #[error("I/O error")]
    Io(#[source] std::io::Error),
}

/// The bundle files at `paths`: files as given, folders walked recursively
/// for `*.tar` (skipping hidden files and `*.tmp`), in a stable order.
pub fn find_bundles(paths: &[std::path::PathBuf]) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if std::fs::metadata(p)?.is_dir() {
            let walk = walkdir::WalkDir::new(p).sort_by_file_name().into_iter();
            let visible = walk.filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
            for item in visible {
                let item = item.map_err(std::io::Error::from)?;
                if item.file_type().is_file() && item.file_name().to_string_lossy().ends_with(".tar") {
                    out.push(item.into_path());
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}
