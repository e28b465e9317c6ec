//! Stopping a training run cleanly on SIGINT, SIGTERM or SIGHUP (a closed terminal or SSH
//! session): the loop finishes its step, writes a checkpoint and exits 130, 143 or 129. A
//! second signal exits at once; every file is written atomically, so that leaves the last
//! complete checkpoint in place.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;

use crate::error::Interrupted;
use crate::io::shell_quoted;

pub struct StopSignals {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
}

impl StopSignals {
    pub fn install() -> Result<StopSignals> {
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        let hangup = Arc::new(AtomicBool::new(false));
        for (signal, seen) in [
            (SIGINT, &interrupt),
            (SIGTERM, &terminate),
            (SIGHUP, &hangup),
        ] {
            // A signal the run was started to ignore (`nohup`, a background job's SIGINT)
            // stays ignored.
            if ignored(signal) {
                continue;
            }
            // Registered first, so it sees the flag as the previous signal left it.
            exit_on_second(signal, Arc::clone(seen))?;
            flag::register(signal, Arc::clone(seen))?;
        }
        Ok(StopSignals {
            interrupt,
            terminate,
            hangup,
        })
    }

    /// The signal asking the run to stop, if one came.
    pub fn caught(&self) -> Option<i32> {
        if self.interrupt.load(Ordering::SeqCst) {
            Some(SIGINT)
        } else if self.terminate.load(Ordering::SeqCst) {
            Some(SIGTERM)
        } else if self.hangup.load(Ordering::SeqCst) {
            Some(SIGHUP)
        } else {
            None
        }
    }
}

/// Whether `signal` is ignored in this process, as `nohup` leaves SIGHUP.
fn ignored(signal: i32) -> bool {
    // SAFETY: queries the current action only (a null new action changes nothing).
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}

/// A second `signal` (its flag `seen` already set by the first) ends the process at once, with
/// a line that says so: the run resumes from its last complete checkpoint (temporary files of
/// the interrupted save are removed by the next run in the directory).
fn exit_on_second(signal: i32, seen: Arc<AtomicBool>) -> Result<()> {
    const LINE: &[u8] = b"stopped at once by a second signal; --resume continues from the last \
        complete checkpoint\n";
    let action = move || {
        if seen.load(Ordering::SeqCst) {
            // SAFETY: write(2) and _exit(2) are async-signal-safe; LINE is static.
            unsafe {
                libc::write(2, LINE.as_ptr().cast(), LINE.len());
                libc::_exit(128 + signal);
            }
        }
    };
    // SAFETY: the action only reads an atomic and calls async-signal-safe functions.
    unsafe { signal_hook::low_level::register(signal, action) }?;
    Ok(())
}

/// The error a run stopped by `signal` ends with: what was saved in `out`, and the command
/// that resumes it.
pub fn interrupted(signal: i32, epoch: u32, step: u64, out: &Path) -> anyhow::Error {
    anyhow::Error::new(Interrupted {
        signal,
        message: format!(
            "interrupted at epoch {epoch}, step {step}: checkpoint saved in {}\nresume with: {}",
            out.display(),
            resume_command()
        ),
    })
}

/// The command that resumes this run: the current one, with --resume.
fn resume_command() -> String {
    // args_os: an argument that is not UTF-8 must not cost the message.
    resume_command_of(std::env::args_os())
}

/// `args` with --resume in place of --force (which would start the run afresh) and of any
/// --resume already there, quoted for a shell.
fn resume_command_of(args: impl IntoIterator<Item = OsString>) -> String {
    let mut args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| a != "--force" && a != "--resume")
        .collect();
    args.push("--resume".into());
    args.iter()
        .map(|a| shell_quoted(a))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_command_drops_force_and_resumes_once() {
        let args = [
            "vggtiny",
            "train-base",
            "--force",
            "--out",
            "my runs/a",
            "--resume",
        ];
        assert_eq!(
            resume_command_of(args.map(OsString::from)),
            "vggtiny train-base --out 'my runs/a' --resume"
        );
    }
}
