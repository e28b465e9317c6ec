//! A run stopped from outside: SIGKILL, SIGINT, SIGTERM, SIGHUP (a closed terminal), a second
//! SIGINT while the first is handled, and a hangup under `nohup`. A stopped run is only
//! delayed, not lost: it must leave a checkpoint from which it resumes and ends where the
//! uninterrupted run would have, bit for bit (the README's promise for the CPU).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{
    assert_no_temporary_files, assert_same_run, reference_run, resume, run_dataset, spawn,
    wait_for, RUN, RUN_STEPS,
};
use crate::common::*;

/// What a stopped run adds: a checkpoint every 4 steps (step 4 is mid-epoch, the epoch's end
/// at 5 saves too). Its reference has none, so a resume that equals the reference also shows
/// that checkpointing changes nothing.
const CHECKPOINTED: &str = "--checkpoint-every 4";

/// The uninterrupted run of `RUN`, trained once for every test of this binary (afresh by the
/// next test if that failed).
fn shared_reference() -> &'static Path {
    static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
    RUN_DIR.get_or_init(|| {
        let dir = shared_dir().join("reliability");
        let _ = std::fs::remove_dir_all(&dir);
        reference_run(&dir, RUN)
    })
}

fn batch_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"event\":\"batch\""))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the run has logged `n` steps.
fn wait_for_steps(run: &Path, n: usize, child: &mut Child) {
    wait_for(child, || batch_lines(run) >= n);
}

/// Waits until the run has written its first checkpoint.
fn wait_for_checkpoint(run: &Path, child: &mut Child) {
    wait_for(child, || run.join("checkpoint.safetensors").exists());
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// SIGKILL right after the first periodic checkpoint (step 2 of the first epoch's 5, with
/// `--checkpoint-every 2`): the process ends without saving anything more, the run resumes
/// from inside the epoch, and ends as the uninterrupted run.
#[test]
fn kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run() {
    use std::os::unix::process::ExitStatusExt;
    let reference = shared_reference();
    let dir = tempfile::tempdir().unwrap();
    let data = run_dataset(dir.path());
    let run = dir.path().join("killed");
    let flags = format!("{RUN} --checkpoint-every 2");
    let mut child = spawn(&train_args(&data, &run, &flags));
    wait_for_checkpoint(&run, &mut child);
    child.kill().unwrap(); // SIGKILL: no chance to save anything
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let state = resume(&data, &run, &flags, RUN_STEPS);
    assert_eq!(state.epoch, 1, "killed in the first epoch: {state:?}");
    assert!(state.batch > 0, "killed mid-epoch: {state:?}");
    assert_same_run(reference, &run);
}

/// Runs `flags` (plus `CHECKPOINTED`) stopped by `sig` mid-epoch (exit `code`) and resumed;
/// it must end as `reference`, the uninterrupted run of `flags`, `total` steps long (the
/// epoch long enough that the third step is not its last).
pub fn stop_and_resume_equals_uninterrupted(
    reference: &Path,
    (flags, total): (&str, u64),
    sig: i32,
    code: i32,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = run_dataset(dir.path());
    let run = dir.path().join("stopped");
    let flags = format!("{flags} {CHECKPOINTED}");
    let mut child = spawn(&train_args(&data, &run, &flags));
    // the third step is under way: the signal stops the run inside the first epoch
    wait_for_steps(&run, 2, &mut child);
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(
        stderr.contains("resume with:") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let state = resume(&data, &run, &flags, total);
    // the signal's own checkpoint, mid-epoch, at the step it stopped after
    assert!(
        stderr.contains(&format!(
            "interrupted at epoch {}, step {}:",
            state.epoch, state.step
        )),
        "{stderr} vs {state:?}"
    );
    assert!(state.batch > 0, "{state:?}");
    assert_same_run(reference, &run);
}

fn stop_with(sig: i32, code: i32) {
    stop_and_resume_equals_uninterrupted(shared_reference(), (RUN, RUN_STEPS), sig, code);
}

#[test]
fn sigint_checkpoints_exits_130_and_resumes_exactly() {
    stop_with(libc::SIGINT, 130);
}

#[test]
fn sigterm_checkpoints_exits_143_and_resumes_exactly() {
    stop_with(libc::SIGTERM, 143);
}

/// A closed terminal or SSH session (SIGHUP) stops the run as SIGTERM does.
#[test]
fn sighup_checkpoints_exits_129_and_resumes_exactly() {
    stop_with(libc::SIGHUP, 129);
}

/// A run started under `nohup` (SIGHUP ignored) keeps that: a hangup does not stop it.
#[test]
fn a_run_under_nohup_ignores_the_hangup() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_dataset(dir.path());
    let run = dir.path().join("run");
    let mut cmd = Command::new("nohup");
    set_test_env(&mut cmd);
    let mut child = cmd
        .arg(bin())
        .args(train_args(&data, &run, RUN))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nohup");
    wait_for_steps(&run, 2, &mut child);
    signal(&child, libc::SIGHUP);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(meta_json(&run)["epochs"].as_array().unwrap().len(), 2);
}

/// The first SIGINT asks for a graceful stop (finish the step, save, say "interrupted",
/// exit); a second one ends the process at once: no report, and the run resumes from its last
/// periodic or epoch checkpoint. SIGINTs go every 20 ms until the process ends, so that two
/// are delivered apart even while a thread sits in a long write (signals of one kind that
/// arrive while one is pending merge into one).
#[test]
fn a_second_sigint_exits_at_once_and_leaves_a_resumable_run() {
    let reference = shared_reference();
    let flags = format!("{RUN} {CHECKPOINTED}");
    let dir = tempfile::tempdir().unwrap();
    let data = run_dataset(dir.path());
    let run = dir.path().join("stopped");
    let mut child = spawn(&train_args(&data, &run, &flags));
    wait_for_checkpoint(&run, &mut child);
    while child.try_wait().unwrap().is_none() {
        signal(&child, libc::SIGINT);
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        !stderr.contains("interrupted at"),
        "a graceful stop: {stderr}"
    );
    assert!(
        stderr.contains("stopped at once by a second signal"),
        "{stderr}"
    );
    resume(&data, &run, &flags, RUN_STEPS);
    assert_same_run(reference, &run);
    assert_no_temporary_files(&run);
}
