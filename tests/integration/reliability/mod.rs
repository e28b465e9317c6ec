//! Long runs survive what ends them: a killed process, Ctrl-C, SIGTERM, bad images, corrupt
//! model files, a full disk. Real child processes, real files; the fixtures are made here.
//! One module per failure mode; this one holds what several of them share: the stopped runs'
//! recipe and its uninterrupted reference, vggtiny started as from a terminal, and the checks
//! that a resumed run continued from its checkpoint and ended as the uninterrupted one.

mod damaged_files;
mod full_disk;
mod images;
mod locking;
mod messages;
mod non_finite;
mod resume;
pub mod signals;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use vggtiny::run_dir::checkpoint::{load_checkpoint, Saved, TrainState, CHECKPOINT_FILE};

/// Flags of the stopped runs and their references: 50 images, 40 of them trained in 5 batches
/// of 8, 2 epochs (10 steps), every step logged.
const RUN: &str = "--batch-size 8 --holdout 0.2 --epochs 2 --log-interval 1 --device cpu";
const RUN_STEPS: u64 = 10;

fn run_dataset(dir: &Path) -> PathBuf {
    dataset(dir, 2, 25)
}

/// The uninterrupted run of `flags` on the stopped runs' dataset, in `dir`.
pub fn reference_run(dir: &Path, flags: &str) -> PathBuf {
    let data = run_dataset(dir);
    let out = dir.join("reference");
    train_random(&data, &out, flags);
    out
}

/// A run as started from a terminal: SIGINT and SIGHUP at their defaults even where the test
/// harness was started with them ignored (a background job, `nohup`), which vggtiny would
/// keep ignoring.
fn spawn(args: &[&str]) -> Child {
    let mut cmd = command();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vggtiny")
}

fn wait_for(child: &mut Child, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An uninterrupted reference run and an interrupted one resumed to the end must agree bit for
/// bit: weights, BatchNorm statistics, the last checkpoint's Adam moments and fp16 loss scale,
/// and the log (every step and epoch exactly once).
fn assert_same_run(reference: &Path, resumed: &Path) {
    assert_same_tensors(reference, resumed, "model.safetensors");
    assert_same_tensors(reference, resumed, CHECKPOINT_FILE);
    let steps = |run: &Path| -> Vec<(String, u64)> {
        json_lines(&run.join("metrics.jsonl"))
            .iter()
            .map(|e| {
                let n = e.get("step").or(e.get("epoch")).unwrap().as_u64().unwrap();
                (e["event"].as_str().unwrap().to_string(), n)
            })
            .collect()
    };
    assert_eq!(steps(reference), steps(resumed));
    let losses = |run: &Path| -> Vec<Value> {
        json_lines(&run.join("metrics.jsonl"))
            .into_iter()
            .map(|e| e.get("loss").or(e.get("holdout_loss")).cloned().unwrap())
            .collect()
    };
    assert_eq!(losses(reference), losses(resumed));
}

/// The model file `file` of both runs holds the same tensors, bit for bit.
fn assert_same_tensors(reference: &Path, resumed: &Path, file: &str) {
    let a = tensors(&reference.join(file));
    let b = tensors(&resumed.join(file));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{file}: {name} differs after resume");
    }
}

/// Resumes `out` and checks that it continued from its checkpoint rather than from step 0:
/// the message names the checkpoint's position, and the process trains only the `total` steps'
/// remainder. Returns the state it resumed from.
fn resume(data: &Path, out: &Path, flags: &str, total: u64) -> TrainState {
    let (_, Saved { state, .. }) = load_checkpoint(out).expect("a checkpoint to resume from");
    assert!(state.step > 0, "nothing to resume: {state:?}");
    let args = resume_args(data, out, flags);
    let output = vggtiny(&args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let said = format!(
        "at epoch {}, batch {} (step {})",
        state.epoch, state.batch, state.step
    );
    assert!(stderr.contains(&said), "no '{said}' in: {stderr}");
    let trained = stdout
        .lines()
        .filter(|l| l.starts_with("Train Epoch:"))
        .count();
    assert_eq!(
        trained as u64,
        total - state.step,
        "steps trained on resume:\n{stdout}"
    );
    state
}

fn assert_no_temporary_files(run: &Path) {
    let listing: Vec<String> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        listing.iter().all(|name| !name.ends_with(".tmp")),
        "temporary files left: {listing:?}"
    );
}
