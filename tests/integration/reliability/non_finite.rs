//! Losses and statistics that stop being finite: BatchNorm over a batch of one image, a run
//! whose recorded metrics are NaN, and a loss that turns NaN mid-run (stopping the run, or
//! skipped up to `--max-nan-skips`). A NaN spreads through every weight after it, so the run
//! must stop at its step with the last good checkpoint kept, and its files stay readable.

use crate::common::*;
use serde_json::Value;
use vggtiny::run_dir::checkpoint::{load_checkpoint, Saved};

/// `--precise-bn` over an epoch whose last batch holds one image: BatchNorm cannot take the
/// variance of one sample, and the model used to become NaN ("Holdout: Average loss: NaN").
#[test]
fn precise_bn_skips_a_batch_of_one_image() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    // 16 images, 4 held out: 12 to train in batches of 11, the second of them one image.
    train_random(
        &data,
        &run,
        "--batch-size 11 --holdout 0.25 --epochs 1 --precise-bn 4",
    );
    let meta: Value = meta_json(&run);
    let loss = &meta["epochs"][0]["holdout_loss"];
    assert!(loss.as_f64().is_some_and(f64::is_finite), "{loss}");
    for (name, t) in tensors(&run.join("model.safetensors")) {
        if name.contains("running_") {
            assert!(t.isfinite().all().int64_value(&[]) == 1, "{name}");
        }
    }
}

/// A run whose metrics went NaN stays readable: meta.json and metrics.jsonl as vggtiny now
/// writes them ("NaN") and as it wrote them before (null) are read by report, eval and resume.
#[test]
fn a_run_with_nan_metrics_can_be_reported_evaluated_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --max-steps 3 --log-interval 1";
    train_random(&data, &run, flags);
    // The NaN as the writer now stores it in meta.json, and as it used to in the log.
    let meta_path = run.join("meta.json");
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["epochs"][0]["holdout_loss"] = Value::from("NaN");
    std::fs::write(&meta_path, serde_json::to_string_pretty(&meta).unwrap()).unwrap();
    // In the log, in place and padded to the same length: a checkpoint records the log's
    // length, and resuming cuts it back there.
    let log_path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&log_path).unwrap();
    let key = "\"holdout_loss\":";
    let at = text.find(key).expect("an epoch record") + key.len();
    let end = at + text[at..].find(',').unwrap();
    let patched = format!(
        "{}{:<width$}{}",
        &text[..at],
        "null",
        &text[end..],
        width = end - at
    );
    std::fs::write(&log_path, patched).unwrap();
    let png = dir.path().join("report.png");
    ok(&["report", s(&run), "--out", s(&png)]);
    let scores = eval_json(&data, &run, "");
    assert!(
        scores["loss"].as_f64().is_some_and(f64::is_finite),
        "{scores}"
    );
    let args = resume_args(
        &data,
        &run,
        "--batch-size 4 --holdout 0.25 --epochs 2 --log-interval 1",
    );
    ok(&args);
}

/// A learning rate that explodes after step 0 (1e-4 + 1e30 * step / 8) makes step 2's loss
/// NaN: the run stops (exit 1) naming the step, its learning rate and the last finite loss, the
/// checkpoint taken before that step kept. With `--max-nan-skips 1` one such batch is skipped
/// and the next ends the run (an epoch that ends first ends it on its NaN holdout loss, which
/// `safeguards` tests).
#[test]
fn a_non_finite_loss_stops_the_run_at_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    // 12 training images in batches of 4: 3 steps an epoch
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --lr 1e-4 --max-lr 1e30 \
                 --step-size-up 8 --checkpoint-every 1 --log-interval 1";
    let run = dir.path().join("run");
    let err = fails(&train_args(&data, &run, flags), 1);
    let logged = json_lines(&run.join("metrics.jsonl"));
    let last = logged.last().unwrap();
    assert_eq!(
        (&last["event"], &last["step"]),
        (&"batch".into(), &1.into())
    );
    let said = format!(
        "the loss stopped being finite at step 2 (lr 2.500e29; last finite loss {:.4})",
        last["loss"].as_f64().unwrap()
    );
    assert!(err.contains(&said), "no '{said}' in: {err}");
    let (_, Saved { state, .. }) = load_checkpoint(&run).unwrap();
    assert_eq!(state.step, 2, "the checkpoint after the last finite step");

    // 24 training images: step 3 comes before the epoch's end (whose holdout would be NaN)
    let larger = dataset(&dir.path().join("larger"), 2, 16);
    let skipping = dir.path().join("skipping");
    let err = fails(
        &train_args(&larger, &skipping, &format!("{flags} --max-nan-skips 1")),
        1,
    );
    for needle in [
        "non-finite loss at step 2; batch skipped (1 of at most 1)",
        "more than --max-nan-skips 1 non-finite batches",
        "stopped being finite at step 3 (lr 3.750e29",
    ] {
        assert!(err.contains(needle), "no '{needle}' in: {err}");
    }

    // stepped per epoch, the first epoch runs at the base rate, and the report says so
    let per_epoch = dir.path().join("per-epoch");
    let flags = "--batch-size 4 --holdout 0.25 --lr 1e20 --max-lr 1e30 --step-size-up 2 \
                 --sched-step epoch";
    let err = fails(&train_args(&data, &per_epoch, flags), 1);
    assert!(err.contains("(lr 1.000e20;"), "{err}");
}
