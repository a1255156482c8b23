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
pub use writer::{write_bundle, write_bundle_named, BuiltSegment, SegmentBuilder, Written};

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
    #[error(
        "{member} is encrypted to {}, and this node holds none of their keys: only they can read its entries \
         (a middleman passes it on as it is, with `ferry bundle relay`)",
        recipients.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    NotARecipient { member: String, recipients: Vec<crate::keys::NodeId> },
    #[error("I/O error")]
    Io(#[source] std::io::Error),
}

/// A path given to look for bundles in could not be read.
#[derive(Debug, thiserror::Error)]
#[error("failed to read {}", path.display())]
pub struct FindError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// What [`scan_bundles`] found.
#[derive(Debug, Default)]
pub struct Found {
    /// Bundle files, in a stable order.
    pub files: Vec<std::path::PathBuf>,
    /// Sub-folders that could not be read (such as `lost+found`), with why;
    /// the rest of the tree was still searched.
    pub unreadable: Vec<(std::path::PathBuf, String)>,
}

/// The bundle files at `paths`: files as given, folders walked recursively
/// for `*.tar` (skipping hidden files and `*.tmp`), in a stable order. A
/// given path that is missing or unreadable is an error naming it; an
/// unreadable folder below it is listed in [`Found::unreadable`] and skipped.
pub fn scan_bundles(paths: &[std::path::PathBuf]) -> Result<Found, FindError> {
    let mut found = Found::default();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| FindError { path: p.clone(), source })?;
        if !meta.is_dir() {
            found.files.push(p.clone());
            continue;
        }
        let walk = walkdir::WalkDir::new(p).sort_by_file_name().into_iter();
        let visible = walk.filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for item in visible {
            let item = match item {
                Ok(item) => item,
                Err(e) if e.depth() == 0 => {
                    return Err(FindError { path: p.clone(), source: std::io::Error::from(e) });
                }
                Err(e) => {
                    let path = e.path().unwrap_or(p).to_path_buf();
                    let why = e.io_error().map_or_else(|| e.to_string(), ToString::to_string);
                    found.unreadable.push((path, why));
                    continue;
                }
            };
            let name = item.file_name().to_string_lossy();
            if item.file_type().is_file() && name.ends_with(".tar") {
                found.files.push(item.into_path());
            }
        }
    }
    Ok(found)
}

/// [`scan_bundles`] that also fails on an unreadable sub-folder, naming it.
pub fn find_bundles(paths: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>, FindError> {
    let found = scan_bundles(paths)?;
    match found.unreadable.into_iter().next() {
        Some((path, why)) => Err(FindError { path, source: std::io::Error::other(why) }),
        None => Ok(found.files),
    }
}
