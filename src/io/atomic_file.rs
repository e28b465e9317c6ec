//! Writing a file so that a crash, a full disk or a kill leaves either the old file or the new
//! one, never a mix: a temporary file in the same directory, synced, renamed, directory synced.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, Result};

use super::process_ended;

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

/// A temporary name beside `name` that no other process or write uses: `.NAME.PID-N.tmp`.
fn temporary_name(name: &str) -> String {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{}-{n}.tmp", std::process::id())
}

/// Which temporary files `remove_temporaries` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// Those of writers that no longer run (a directory others may write too).
    OfEndedWriters,
    /// Every one this program names so (a directory this process holds the lock of); other
    /// files ending in `.tmp` are the user's.
    All,
}

/// Removes temporary files in `dir` that no write will finish (a killed process leaves its
/// temporary file; one of 200 MB is worth removing). Best effort.
pub fn remove_temporaries(dir: &Path, which: Leftovers) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name
            .to_str()
            .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        else {
            continue;
        };
        let remove = match (which, temporary_owner(name)) {
            (_, None) => false,
            (Leftovers::All, Some(_)) => true,
            (Leftovers::OfEndedWriters, Some(pid)) => process_ended(pid),
        };
        if remove {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The pid in a temporary name `.NAME.PID-N.tmp`.
fn temporary_owner(name: &str) -> Option<i32> {
    let stem = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, tag) = stem.rsplit_once('.')?;
    let (pid, n) = tag.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
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
    let tmp = dir.join(temporary_name(&name.to_string_lossy()));
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

    #[test]
    fn temporaries_of_ended_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let name = temporary_name("model.safetensors");
        assert_eq!(temporary_owner(&name), Some(std::process::id() as i32));
        // pid 2^22 + 1 is beyond Linux's pid_max: no such process
        let stale = ".model.safetensors.4194305-0.tmp";
        for file in [name.as_str(), stale, "model.safetensors", ".lock"] {
            fs::write(dir.path().join(file), b"x").unwrap();
        }
        // a user's own files that end in .tmp, whatever their names look like
        let users = [".userdata.tmp", ".meta.json.tmp", ".notes.x-1.tmp"];
        for file in users {
            fs::write(dir.path().join(file), b"x").unwrap();
        }
        remove_temporaries(dir.path(), Leftovers::OfEndedWriters);
        assert!(!dir.path().join(stale).exists());
        for kept in [name.as_str(), "model.safetensors", ".lock"] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
        remove_temporaries(dir.path(), Leftovers::All);
        assert!(!dir.path().join(&name).exists(), "{name}");
        for kept in users.into_iter().chain(["model.safetensors"]) {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }
}
