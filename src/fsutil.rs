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

/// How long a `.ferry-*.tmp` file must have been left untouched before a
/// later run takes it for the left-over of a killed one and removes it. A
/// live writer touches its temp file far more often than this.
pub const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Removes the `.ferry-*.tmp` files directly in `dir` not modified for
/// `older_than` (left by a killed run: they never get a final name). Returns
/// what was removed; a folder that does not exist holds none.
pub fn remove_stale_temps(dir: &Path, older_than: std::time::Duration) -> io::Result<Vec<std::path::PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    let now = std::time::SystemTime::now();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".ferry-") && name.ends_with(".tmp")) {
            continue;
        }
        let meta = entry.metadata()?;
        let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
        if meta.is_file() && age >= older_than {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed.push(entry.path()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_ferry_temp_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [".ferry-old.tmp", "keep.tmp", ".ferry-keep.tar", "ferry-x.tar"] {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        assert!(remove_stale_temps(dir.path(), STALE_TEMP).expect("scan").is_empty(), "fresh files stay");
        let removed = remove_stale_temps(dir.path(), std::time::Duration::ZERO).expect("scan");
        assert_eq!(removed, vec![dir.path().join(".ferry-old.tmp")]);
        assert!(dir.path().join("keep.tmp").exists() && dir.path().join(".ferry-keep.tar").exists());
        assert!(remove_stale_temps(&dir.path().join("missing"), STALE_TEMP).expect("none").is_empty());
    }
}
