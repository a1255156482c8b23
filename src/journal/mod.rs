//! Journals: a node's append-only, gap-free sequence of change entries.
//!
//! This module reads journal *files* (JSON Lines, see `docs/JOURNAL.md`, and the
//! seed's legacy format, see [`legacy`]) from a file or a directory walked
//! recursively, and checks that seqs run 1, 2, 3 … without gaps across files.
//! Captured journals inside an app database live in [`crate::capture`].

mod entry;
pub mod legacy;

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

pub use entry::{check_name, check_value, Entry, EntryHead, Op, Row, Timestamp, MAX_COLUMNS};

/// Longest accepted entry line, in bytes, not counting its line ending (`\n`,
/// or `\r\n` in journal files); a longer one is malformed, not a reason to
/// run out of memory. The same limit holds in journal files and in bundles.
pub const MAX_LINE: usize = 16 << 20;

/// Where an entry came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Errors while reading journals.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("failed to read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{location}: {message}")]
    Malformed { location: Location, message: String },
    #[error("{location}: expected seq {expected}, found {found} (journals run 1, 2, 3 … without gaps)")]
    Gap { location: Location, expected: u64, found: u64 },
    #[error("no journal files found at {}", .0.display())]
    Empty(PathBuf),
    #[error("{} mixes JSON Lines and legacy journal files; give them separately", .0.display())]
    Mixed(PathBuf),
    #[error("failed to number legacy journal entries")]
    Registry(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl JournalError {
    pub(crate) fn malformed(file: &Path, line: u64, message: impl Into<String>) -> Self {
        JournalError::Malformed { location: Location { file: file.to_path_buf(), line }, message: message.into() }
    }
    fn io(path: &Path, source: io::Error) -> Self {
        JournalError::Io { path: path.to_path_buf(), source }
    }
}

/// One entry read from a journal: the parsed entry, the exact bytes that go
/// into a bundle (the line as the origin wrote it, without its newline), and
/// where it came from.
#[derive(Debug, Clone)]
pub struct JournalLine {
    pub entry: Entry,
    pub bytes: Vec<u8>,
    pub location: Location,
}

/// The kind of a journal file, decided by its first non-blank line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    JsonLines,
    Legacy,
}

#[derive(Debug, Clone)]
struct JournalFile {
    path: PathBuf,
    /// Path relative to the journal root, `/`-separated (stable across machines).
    key: String,
    first_seq: u64,
    len: u64,
}

/// Hands out seqs for legacy entries, which carry none: the same entry (file
/// key, line, content hash) must get the same seq every time. Implemented by
/// the node's state store.
pub trait SeqRegistry {
    fn seq_for(
        &mut self,
        file: &str,
        line: u64,
        hash: &[u8; 32],
    ) -> Result<u64, Box<dyn std::error::Error + Send + Sync>>;
}

/// A set of journal files found at a path, ready to be read in seq order.
#[derive(Debug)]
pub struct Journal {
    root: PathBuf,
    kind: FileKind,
    files: Vec<JournalFile>,
}

impl Journal {
    /// Finds the journal files at `path` (a file, or a directory walked
    /// recursively, skipping hidden files and `*.tmp`), and orders them.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let meta = std::fs::metadata(path).map_err(|e| JournalError::io(path, e))?;
        let candidates: Vec<PathBuf> = if meta.is_dir() {
            let mut v = Vec::new();
            for item in walkdir::WalkDir::new(path).sort_by_file_name() {
                let item = item.map_err(|e| {
                    let p = e.path().unwrap_or(path).to_path_buf();
                    JournalError::io(&p, e.into())
                })?;
                let name = item.file_name().to_string_lossy();
                if item.depth() > 0 && (name.starts_with('.') || name.ends_with(".tmp")) {
                    continue;
                }
                if item.file_type().is_file() {
                    v.push(item.into_path());
                }
            }
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut kind = None;
        let mut files = Vec::new();
        for file in candidates {
            let Some((k, first_seq)) = sniff(&file)? else { continue };
            if *kind.get_or_insert(k) != k {
                return Err(JournalError::Mixed(path.to_path_buf()));
            }
            let len = std::fs::metadata(&file).map_err(|e| JournalError::io(&file, e))?.len();
            let key = file
                .strip_prefix(path)
                .ok()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| Path::new(file.file_name().unwrap_or_default()))
                .to_string_lossy()
                .replace('\\', "/");
            files.push(JournalFile { path: file, key, first_seq, len });
        }
        let kind = kind.ok_or_else(|| JournalError::Empty(path.to_path_buf()))?;
        if kind == FileKind::JsonLines {
            files.sort_by_key(|f| f.first_seq);
        }
        Ok(Journal { root: path.to_path_buf(), kind, files })
    }

    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// Total size of the journal files in bytes (for progress reporting).
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }

    /// The first seq of the journal (legacy journals start at 1).
    pub fn first_seq(&self) -> u64 {
        match self.kind {
            FileKind::JsonLines => self.files.first().map_or(1, |f| f.first_seq),
            FileKind::Legacy => 1,
        }
    }

    /// Calls `f` with every entry (its head and exact line bytes) in seq
    /// order, checking continuity across files. Legacy entries get their
    /// seqs from `registry`; the whole legacy journal is validated before any
    /// seq is handed out, so a malformed file numbers nothing.
    pub fn scan<E: From<JournalError>>(
        &self,
        registry: Option<&mut dyn SeqRegistry>,
        mut f: impl FnMut(&EntryHead<'_>, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.kind {
            FileKind::JsonLines => {
                let mut next_seq: Option<u64> = None;
                let mut buf = Vec::with_capacity(4096);
                for file in &self.files {
                    let r = File::open(&file.path).map_err(|e| JournalError::io(&file.path, e))?;
                    let mut reader = BufReader::with_capacity(256 << 10, r);
                    let mut line_no = 0u64;
                    loop {
                        buf.clear();
                        line_no += 1;
                        let n = read_line_bounded(&mut reader, &mut buf)
                            .map_err(|e| JournalError::malformed(&file.path, line_no, e.to_string()))?;
                        if n == 0 {
                            break;
                        }
                        let line = trim_newline(&buf);
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let head =
                            Entry::parse_head(line).map_err(|m| JournalError::malformed(&file.path, line_no, m))?;
                        if let Some(expected) = next_seq.filter(|&e| e != head.seq) {
                            let location = Location { file: file.path.clone(), line: line_no };
                            return Err(JournalError::Gap { location, expected, found: head.seq }.into());
                        }
                        next_seq = Some(head.seq + 1);
                        f(&head, line)?;
                    }
                }
                Ok(())
            }
            FileKind::Legacy => {
                let registry = registry.ok_or_else(|| {
                    JournalError::Registry("legacy journals need a node home to number entries".into())
                })?;
                let files = self.files.iter().map(|f| (f.path.as_path(), f.key.as_str()));
                for line in legacy::read_all(files, registry)? {
                    f(&line.entry.head(), &line.bytes)?;
                }
                Ok(())
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Decides a file's kind from its first non-blank line, and for JSON Lines
/// reads its first seq. Files that are neither are skipped only when empty.
fn sniff(path: &Path) -> Result<Option<(FileKind, u64)>, JournalError> {
    let file = File::open(path).map_err(|e| JournalError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        line_no += 1;
        let n = read_line_bounded(&mut reader, &mut buf).map_err(|e| JournalError::io(path, e))?;
        if n == 0 {
            return Ok(None);
        }
        let line = trim_newline(&buf);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.first() == Some(&b'{') && line.len() > 1 {
            let entry = Entry::parse(line).map_err(|m| JournalError::malformed(path, line_no, m))?;
            return Ok(Some((FileKind::JsonLines, entry.seq)));
        }
        if legacy::is_mac_line(line) {
            return Ok(Some((FileKind::Legacy, 1)));
        }
        return Err(JournalError::malformed(
            path,
            line_no,
            "not a journal file: expected a JSON object per line, or a legacy journal starting with a MAC address line",
        ));
    }
}

/// Reads one line (up to and including `\n`) into `buf`, refusing lines
/// longer than [`MAX_LINE`] bytes without their `\n` or `\r\n` ending.
pub(crate) fn read_line_bounded<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    // Room for the longest line and a `\r\n`; anything longer cannot fit.
    let n = io::Read::take(&mut *r, MAX_LINE as u64 + 2).read_until(b'\n', buf)?;
    if trim_newline(buf).len() > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line longer than {MAX_LINE} bytes (not counting its line ending)"),
        ));
    }
    Ok(n)
}

pub(crate) fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
