//! Writing a file so that a crash, a full disk or a kill leaves either the old file or the new
//! one, never a mix: a temporary file in the same directory, synced, renamed, directory synced.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

/// Test hook for file systems that cannot be made full for real: with
/// `VGGTINY_FAULT_DISK_FULL_AFTER=N` set, every atomic write after the first N fails as a full
/// disk would at the sync, once its temporary file is written.
fn injected_disk_full() -> Option<std::io::Error> {
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let limit: usize = std::env::var("VGGTINY_FAULT_DISK_FULL_AFTER")
        .ok()?
        .parse()
        .ok()?;
    (WRITES.fetch_add(1, Ordering::SeqCst) >= limit)
        .then(|| std::io::Error::from_raw_os_error(libc::ENOSPC))
}

/// Writes `path` through a synced temporary file and a rename; `write` fills the temporary path.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)
            .and_then(|f| match injected_disk_full() {
                Some(err) => Err(err),
                None => f.sync_all(),
            })
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        // The rename itself is durable only once the directory is synced.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync directory {}", dir.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Writes bytes atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        let mut f = File::create(tmp)?;
        f.write_all(bytes)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_bytes_atomic(&path, b"one").unwrap();
        write_bytes_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let err = write_atomic(&path, |_| anyhow::bail!("disk full")).unwrap_err();
        assert!(format!("{err:#}").contains("disk full"));
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }
}
