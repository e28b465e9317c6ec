//! One writer per run directory: a training run holds an advisory lock on `.lock` in its
//! directory for as long as it runs (the kernel drops it when the process ends, however it
//! ends), and a second run into the same directory is refused with the holder's pid. The run
//! checks before each write that the lock file is still the one it locked.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bail_input;

const LOCK_FILE: &str = ".lock";

/// The lock of a run directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir` (created if need be) without waiting: another process holding
    /// it is an error naming its pid.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        // A lock file removed or replaced between its opening and its locking is not the
        // directory's lock: open it again.
        for _ in 0..10 {
            let lock = RunLock::try_acquire(dir, &path)?;
            if lock.ensure_held().is_ok() {
                return lock.with_pid();
            }
        }
        anyhow::bail!("cannot lock {}: it keeps being replaced", path.display())
    }

    /// Fails when `.lock` is no longer the file this process locked (removed or replaced by
    /// hand): another run could take a lock of its own and write into the directory too.
    pub fn ensure_held(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let held = self.file.metadata()?;
        let same =
            fs::metadata(&self.path).is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino());
        if !same {
            anyhow::bail!(
                "{} was removed or replaced while this run held it, so another run may write \
                 into {} too; stopped before writing (the last checkpoint there is this run's \
                 unless another run replaced it)",
                self.path.display(),
                self.path.parent().unwrap_or(Path::new(".")).display()
            );
        }
        Ok(())
    }

    fn try_acquire(dir: &Path, path: &Path) -> Result<RunLock> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let lock = |file| RunLock {
            file,
            path: path.to_path_buf(),
        };
        // A few tries: `running_in` holds a shared lock for the moment of its check.
        let mut err = std::io::Error::from_raw_os_error(libc::EWOULDBLOCK);
        for _ in 0..5 {
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(lock(file));
            }
            err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if matches!(err.raw_os_error(), Some(libc::ENOLCK | libc::EOPNOTSUPP)) {
            // Some network file systems keep no locks: train anyway, unguarded.
            eprintln!(
                "warning: {} cannot be locked here ({err}); make sure no other run writes it",
                dir.display()
            );
            return Ok(lock(file));
        }
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        let holder = match holder_pid(&mut file) {
            Some(pid) => format!(" (pid {pid})"),
            None => String::new(),
        };
        bail_input!(
            "{} is in use by another vggtiny run{holder}; wait for it to end, or choose \
             another --out",
            dir.display()
        );
    }

    /// Writes this process's pid into the lock, for a refused run to name.
    fn with_pid(mut self) -> Result<RunLock> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        write!(self.file, "{}", std::process::id())?;
        self.file.flush()?;
        Ok(self)
    }
}

/// Whether another process's run is writing `dir` now (it holds the lock), with the pid it
/// wrote when known; never waits, and takes nothing for longer than a check.
pub fn running_in(dir: &Path) -> Option<Option<u32>> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved. A shared lock
    // is refused while a writer holds its exclusive one, and dropped with the file.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    let busy = std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK);
    // this process's own lock (a stage that reads a model of the run it writes) is no other run
    let pid = (!free && busy).then(|| holder_pid(&mut file))?;
    (pid != Some(std::process::id())).then_some(pid)
}

/// The pid the lock's holder wrote into it. A holder writes it just after taking the lock,
/// so an empty file is read again a few times.
fn holder_pid(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        let pid = std::process::id().to_string();
        assert!(err.contains("in use") && err.contains(&pid), "{err}");
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_removed_or_replaced_lock_file_is_no_longer_held() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        lock.ensure_held().unwrap();
        fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        let err = lock.ensure_held().unwrap_err().to_string();
        assert!(err.contains("removed or replaced"), "{err}");
        // a second run now takes a lock of its own; the first one's stays lost
        let second = RunLock::acquire(dir.path()).unwrap();
        second.ensure_held().unwrap();
        assert!(lock.ensure_held().is_err());
        // held by this process: no other run (the integration tests see another's)
        assert_eq!(running_in(dir.path()), None);
    }

    /// `running_in` reads errno after its flock; a stale EWOULDBLOCK left by an earlier call
    /// must not make a free lock read as held.
    #[test]
    fn a_free_lock_reads_as_free_whatever_errno_held_before() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOCK_FILE), "4242").unwrap();
        // SAFETY: errno is this thread's own variable.
        unsafe { *libc::__errno_location() = libc::EWOULDBLOCK };
        assert_eq!(running_in(dir.path()), None);
    }
}
