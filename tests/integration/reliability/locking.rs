//! One writer per run directory: a run's lock file, noted by a command that reads the run
//! while it trains and missed by the run when it goes, and two runs started into one `--out`.
//! Two writers would interleave their checkpoints and logs into a run that is neither's.

use super::{spawn, wait_for};
use crate::common::*;
use vggtiny::run_dir::checkpoint::{load_checkpoint, Saved};

/// A model scored while its run still trains comes with a note saying so. A run whose lock
/// file is removed by hand stops at its next write, saying why, rather than write beside a
/// second run that then takes a lock of its own.
#[test]
fn a_run_in_progress_is_noted_and_stops_when_its_lock_file_goes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --epochs 50 --checkpoint-every 1";
    let mut child = spawn(&train_args(&data, &run, flags));
    wait_for(&mut child, || run.join("model.safetensors").exists());
    let eval = vggtiny(&["eval", "--data", s(&data), "--checkpoint", s(&run)]);
    let stderr = String::from_utf8_lossy(&eval.stderr);
    let said = format!("is still training (pid {})", child.id());
    assert!(stderr.contains(&said), "no '{said}' in {stderr}");
    std::fs::remove_file(run.join(".lock")).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(".lock was removed or replaced"), "{stderr}");
}

/// Two runs started together into one `--out`: one owns the directory, the other is refused
/// (the holder's pid named, or a finished run found), and every file left there is readable
/// and belongs to the winner.
#[test]
fn two_runs_into_one_directory_leave_one_readable_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    for pair in 0..3 {
        let run = dir.path().join(format!("run{pair}"));
        let flags = |seed: u32| {
            format!("--batch-size 4 --holdout 0.25 --epochs 1 --log-interval 1 --seed {seed}")
        };
        let children: Vec<_> = [1, 2]
            .map(|seed| spawn(&train_args(&data, &run, &flags(seed))))
            .into_iter()
            .collect();
        let outcomes: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let winners: Vec<usize> = (0..2).filter(|&i| outcomes[i].status.success()).collect();
        assert_eq!(winners.len(), 1, "pair {pair}: {outcomes:?}");
        let loser = &outcomes[1 - winners[0]];
        let stderr = String::from_utf8_lossy(&loser.stderr);
        assert_eq!(loser.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("in use by another vggtiny run (pid ")
                || stderr.contains("already holds a run"),
            "{stderr}"
        );
        let meta = meta_json(&run);
        assert_eq!(
            meta["split"]["seed"],
            winners[0] as u64 + 1,
            "the winner's run"
        );
        let (_, Saved { state, .. }) = load_checkpoint(&run).expect("a readable checkpoint");
        assert_eq!(state.epoch, 2);
        tensors(&run.join("model.safetensors"));
        tensors(&run.join("best.safetensors"));
        let batches = json_lines(&run.join("metrics.jsonl"))
            .iter()
            .filter(|e| e["event"] == "batch")
            .count();
        assert_eq!(batches, 3, "one run's steps, logged once");
    }
}
