//! Durable file writes: temp file in the destination folder, fsync, rename,
//! fsync the folder. Readers skip `*.tmp`, so a half-written file never shows
//! under a final name.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// A temp file next to `dir`'s final files, named `.ferry-XXXX.tmp`.
pub fn temp_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new().prefix(".ferry-").suffix(".tmp").tempfile_in(dir)
}

/// Makes a completed temp file durable and gives it its final name. Refuses
/// to replace an existing file (returns `AlreadyExists`).
pub fn persist_new(tmp: tempfile::NamedTempFile, dest: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(dest).map_err(|e| e.error)?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Atomically replaces `dest` with `bytes`.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = temp_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Creates `dest` with `bytes`, readable only by its owner on Unix; fails if
/// it exists (secrets are never overwritten).
pub fn create_private(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(dest)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Flushes a directory entry to disk (a no-op where the OS has no such call).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
