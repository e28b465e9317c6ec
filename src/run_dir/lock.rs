//! One writer per run directory: a training run holds an advisory lock on `.lock` in its
//! directory for as long as it runs (the kernel drops it when the process ends, however it
//! ends), and a second run into the same directory is refused with the holder's pid.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};

use crate::bail_input;

const LOCK_FILE: &str = ".lock";

/// The lock of a run directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `dir` (created if need be) without waiting: another process holding
    /// it is an error naming its pid.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if matches!(err.raw_os_error(), Some(libc::ENOLCK | libc::EOPNOTSUPP)) {
                // Some network file systems keep no locks: train anyway, unguarded.
                eprintln!(
                    "warning: {} cannot be locked here ({err}); make sure no other run writes it",
                    dir.display()
                );
                return Ok(RunLock { _file: file });
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
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(RunLock { _file: file })
    }
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
}
