//! Writing a file so that a crash, a full disk or a kill leaves either the old file or the new
//! one, never a mix: a temporary file in the same directory, synced, renamed, directory synced.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use super::{process_ended, untouched_for};

/// Marks a temporary name as this program's, so that a user's `.notes.2024-05.tmp` is never
/// taken for one.
const TEMPORARY_TAG: &str = ".vggtiny-";

/// A temporary name beside `name` that no other process or write uses:
/// `.NAME.vggtiny-PID-N.tmp`.
fn temporary_name(name: &str) -> String {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    format!(".{name}{TEMPORARY_TAG}{}-{n}.tmp", std::process::id())
}

/// Which temporary files `remove_temporaries` removes. Other files ending in `.tmp` are the
/// user's and always stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// Those of writers that ended, or of this process (a restarted container reuses pids),
    /// in a directory this process holds the lock of: a writer still running there writes
    /// without the lock, and its file stays for it to finish.
    OfEndedWriters,
    /// Those of ended writers untouched for `ABANDONED_AFTER`, in a directory others may
    /// write too: a writer in another pid namespace reads as ended, but its file keeps
    /// growing.
    Abandoned,
}

/// How long a temporary file of a writer that reads as ended must be untouched to be removed
/// from a shared directory.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// Removes temporary files in `dir` that no write will finish (a killed process leaves its
/// temporary file; one of 200 MB is worth removing). Best effort.
pub fn remove_temporaries(dir: &Path, which: Leftovers) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temporary_owner) else {
            continue;
        };
        let ended = process_ended(pid);
        let remove = match which {
            Leftovers::OfEndedWriters => ended || pid == std::process::id() as i32,
            Leftovers::Abandoned => ended && untouched_for(&entry.path(), ABANDONED_AFTER),
        };
        if remove {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The pid in a temporary name `.NAME.vggtiny-PID-N.tmp`.
fn temporary_owner(name: &str) -> Option<i32> {
    let stem = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, tag) = stem.rsplit_once(TEMPORARY_TAG)?;
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
            .and_then(|f| f.sync_all())
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
    fn the_temporary_file_sits_beside_its_target() {
        // beside it: a rename within one directory, never across file systems, and the
        // directory synced after it is the target's
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.safetensors");
        write_atomic(&target, |tmp| {
            assert_eq!(tmp.parent(), Some(dir.path()), "{}", tmp.display());
            fs::write(tmp, b"x")?;
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"x");
    }

    #[test]
    fn temporaries_of_ended_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let own = temporary_name("model.safetensors");
        assert_eq!(temporary_owner(&own), Some(std::process::id() as i32));
        // pid 2^22 + 1 is beyond Linux's pid_max: no such process; pid 1 always runs
        let ended = ".model.safetensors.vggtiny-4194305-0.tmp";
        let live = ".model.safetensors.vggtiny-1-0.tmp";
        for file in [own.as_str(), ended, live, "model.safetensors", ".lock"] {
            fs::write(dir.path().join(file), b"x").unwrap();
        }
        // a user's own files that end in .tmp, whatever their names look like
        let users = [".userdata.tmp", ".meta.json.tmp", ".notes.2024-05.tmp"];
        for file in users {
            fs::write(dir.path().join(file), b"x").unwrap();
        }
        let exists = |name: &str| dir.path().join(name).exists();

        // in a shared directory, only once untouched for a while
        remove_temporaries(dir.path(), Leftovers::Abandoned);
        assert!(exists(ended), "a fresh file may be another pid namespace's");
        let long_ago = std::time::SystemTime::now() - 2 * ABANDONED_AFTER;
        let file = File::options()
            .write(true)
            .open(dir.path().join(ended))
            .unwrap();
        file.set_modified(long_ago).unwrap();
        remove_temporaries(dir.path(), Leftovers::Abandoned);
        assert!(!exists(ended));
        assert!(exists(&own) && exists(live));

        remove_temporaries(dir.path(), Leftovers::OfEndedWriters);
        assert!(!exists(&own), "this process's own (a reused pid)");
        assert!(exists(live), "a live writer's");
        for kept in users.into_iter().chain(["model.safetensors", ".lock"]) {
            assert!(exists(kept), "{kept}");
        }
    }
}
