//! Resuming and restarting a run directory: a resume at an epoch boundary and one of stage 2
//! under early stopping end bit for bit as the uninterrupted run, other flags or a missing run
//! are refused, `--force` leaves nothing of the old run, and stage 2 resumes after its --from
//! run is gone. A resume that quietly differed from the uninterrupted run would go unnoticed,
//! so it must continue exactly or refuse.

use std::path::Path;

use super::{assert_same_run, assert_same_tensors, reference_run, resume, RUN_STEPS};
use crate::common::*;
use vggtiny::run_dir::checkpoint::{load_checkpoint, Saved};

#[test]
fn resume_at_an_epoch_boundary_without_augmentation_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let flags = "--batch-size 8 --holdout 0.2 --epochs 2 --no-augment --log-interval 1";
    let reference = reference_run(dir.path(), flags);
    let data = dir.path().join("data");
    let run = dir.path().join("first-epoch");
    train_random(&data, &run, &format!("{flags} --max-steps 5"));
    let state = resume(&data, &run, flags, RUN_STEPS);
    assert_eq!((state.epoch, state.batch), (2, 0));
    assert_same_run(&reference, &run);
}

/// Stage 2 under early stopping, stopped inside its third epoch and resumed, ends as the
/// uninterrupted run: the same weights, log, best epoch and best.safetensors. With
/// `--min-delta 0.99` an epoch after the first improves on it only by going from 0 to 100 %
/// holdout top-1, which this seeded run does not (asserted), so `--early-stop 2` ends the run
/// after epoch 3 of 5; a resumed run stops there too only if it kept both the best epoch and
/// the count of epochs since.
#[test]
fn finetune_under_early_stopping_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 5);
    let base = dir.path().join("base");
    // 10 images, 2 held out: 8 to train in batches of 4, 2 steps an epoch
    train_random(&data, &base, "--batch-size 4 --holdout 0.2 --max-steps 1");
    let finetune = |out: &Path, extra: &str| {
        ok(&words(&format!(
            "finetune --data {} --from {} --out {} --batch-size 4 --epochs 5 --early-stop 2 \
             --min-delta 0.99 --log-interval 1 --device cpu {extra}",
            s(&data),
            s(&base),
            s(out)
        )))
    };
    let reference = dir.path().join("reference");
    finetune(&reference, "");
    let meta = meta_json(&reference);
    assert_eq!(meta["best"]["epoch"], 1, "{}", meta["epochs"]);
    assert_eq!(meta["epochs"].as_array().map(Vec::len), Some(3));
    let stopped = dir.path().join("stopped");
    finetune(&stopped, "--max-steps 5");
    let (_, Saved { state, .. }) = load_checkpoint(&stopped).unwrap();
    assert_eq!((state.epoch, state.batch), (3, 1), "{state:?}");
    finetune(&stopped, "--resume");
    assert_same_run(&reference, &stopped);
    assert_eq!(meta_json(&stopped)["best"], meta_json(&reference)["best"]);
    assert_same_tensors(&reference, &stopped, "best.safetensors");
}

#[test]
fn resume_refuses_other_flags_and_a_missing_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    ok(&train_args(
        &data,
        &run,
        "--batch-size 4 --holdout 0.25 --max-steps 1",
    ));
    let mut args = train_args(
        &data,
        &run,
        "--batch-size 4 --holdout 0.25 --lr 2e-4 --resume",
    );
    let err = fails(&args, 2);
    // exactly the flag that differs, with both values
    assert!(err.contains("--lr 0.0002 (the run has 0.0001)"), "{err}");
    for unchanged in ["--schedule", "--batch-size", "--holdout", "--out", "--data"] {
        assert!(!err.contains(unchanged), "{unchanged} in {err}");
    }
    let nothing = dir.path().join("nothing");
    args = train_args(&data, &nothing, "--resume");
    let err = fails(&args, 2);
    assert!(err.contains("no run to resume"), "{err}");
    // a finished run is not trained again
    let err = fails(&train_args(&data, &run, "--batch-size 4 --holdout 0.25"), 2);
    assert!(err.contains("--resume") && err.contains("--force"), "{err}");
    // a run killed before its first checkpoint holds only its meta.json (and log): resume
    // says so, a plain rerun starts it again
    for file in [
        "checkpoint.safetensors",
        "model.safetensors",
        "best.safetensors",
    ] {
        let _ = std::fs::remove_file(run.join(file));
    }
    let flags = "--batch-size 4 --holdout 0.25 --max-steps 1";
    let err = fails(&train_args(&data, &run, &format!("{flags} --resume")), 2);
    assert!(err.contains("before its first checkpoint"), "{err}");
    ok(&train_args(&data, &run, flags));
}

/// `--force` over a finished run leaves none of its files: a new run stopped inside its first
/// epoch has no best model, and `--which best` says so instead of scoring the old one.
#[test]
fn force_leaves_nothing_of_the_old_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25";
    train_random(&data, &run, &format!("{flags} --epochs 1"));
    assert!(run.join("best.safetensors").is_file());
    train_random(
        &data,
        &run,
        &format!("{flags} --max-steps 2 --force --seed 7"),
    );
    assert!(!run.join("best.safetensors").exists());
    assert_eq!(meta_json(&run)["split"]["seed"], 7);
    let args = [
        "eval",
        "--data",
        s(&data),
        "--checkpoint",
        s(&run),
        "--which",
        "best",
    ];
    let err = fails(&args, 2);
    assert!(err.contains("best.safetensors"), "{err}");
}

/// A stopped stage 2 resumes after its --from run is gone: it continues from its own
/// checkpoint with the split and size it recorded.
#[test]
fn finetune_resumes_without_its_from_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let (base, ft) = (dir.path().join("base"), dir.path().join("ft"));
    train_random(
        &data,
        &base,
        "--batch-size 4 --holdout 0.25 --max-steps 1 --seed 7",
    );
    let finetune = |extra: &str| {
        format!(
            "finetune --data {} --from {} --out {} --batch-size 4 --epochs 2 {extra}",
            s(&data),
            s(&base),
            s(&ft)
        )
    };
    ok(&words(&finetune("--max-steps 2")));
    std::fs::remove_dir_all(&base).unwrap();
    ok(&words(&finetune("--resume")));
    let meta = meta_json(&ft);
    assert_eq!(meta["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(meta["split"]["seed"], 7, "stage 1's split, as recorded");
}
