//! Stopping a training run cleanly on SIGINT, SIGTERM or SIGHUP (a closed terminal or SSH
//! session): the loop finishes its step, writes a checkpoint and exits 130, 143 or 129. A
//! second signal exits at once; every file is written atomically, so that leaves the last
//! complete checkpoint in place.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;

use crate::error::Interrupted;

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
            let code = 128 + signal;
            // Registered first, so it sees the flag as the previous signal left it.
            flag::register_conditional_shutdown(signal, code, Arc::clone(seen))?;
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
    let mut args: Vec<String> = std::env::args()
        .filter(|a| a != "--force" && a != "--resume")
        .collect();
    args.push("--resume".into());
    args.iter()
        .map(|a| shell_quoted(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `arg` as a POSIX shell reads it back: as it is when that is safe, else in single quotes.
fn shell_quoted(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_only_where_the_shell_needs_it() {
        assert_eq!(shell_quoted("--out"), "--out");
        assert_eq!(shell_quoted("runs/base-1"), "runs/base-1");
        assert_eq!(shell_quoted("my runs/a"), "'my runs/a'");
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
        assert_eq!(shell_quoted(""), "''");
    }
}
