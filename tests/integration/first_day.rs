//! A user's first day: the mistakes people make on it end in messages that say what to do
//! next, logs read well without a terminal, and what the tool writes says what it ran on.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// A small trained run to point commands at.
fn trained(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dataset(dir, 3, 8);
    let run = dir.join("run");
    train_random(&data, &run, "--batch-size 6 --holdout 0.25 --max-steps 2");
    (data, run)
}

#[test]
fn torchvisions_pth_file_is_recognised_and_the_conversion_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 4);
    let pth = dir.path().join("vgg16-397923af.pth");
    // what torch.save writes since PyTorch 1.6: a zip archive
    std::fs::write(&pth, b"PK\x03\x04 an archive of pickles").unwrap();
    let out = dir.path().join("o");
    let err = fails(
        &[
            "train-base",
            "--data",
            s(&data),
            "--weights",
            s(&pth),
            "--out",
            s(&out),
        ],
        2,
    );
    assert!(
        err.contains("PyTorch file") && err.contains("scripts/convert-weights"),
        "{err}"
    );
}

#[test]
fn data_paths_people_pass_by_mistake_name_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run) = trained(dir.path());
    let eval = |path: &Path| fails(&["eval", "--data", s(path), "--checkpoint", s(&run)], 2);
    let val = eval(&data.join("val"));
    assert!(
        val.contains("val/ folder") && val.contains(&format!("--data {}", s(&data))),
        "{val}"
    );
    let above = eval(dir.path());
    assert!(above.contains(&format!("--data {}", s(&data))), "{above}");
    let zip = dir.path().join("tiny-imagenet-200.zip");
    std::fs::write(&zip, b"PK").unwrap();
    let archive = eval(&zip);
    assert!(archive.contains("unpack it"), "{archive}");
}

#[test]
fn a_missing_run_says_which_command_makes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 4);
    let nowhere = dir.path().join("runs/base");
    let out = dir.path().join("ft");
    let err = fails(
        &[
            "finetune",
            "--data",
            s(&data),
            "--from",
            s(&nowhere),
            "--out",
            s(&out),
        ],
        2,
    );
    assert!(
        err.contains("vggtiny train-base") && err.contains("--from"),
        "{err}"
    );
    let err = fails(
        &["eval", "--data", s(&data), "--checkpoint", s(&nowhere)],
        2,
    );
    assert!(
        err.contains("vggtiny finetune") && err.contains("--checkpoint"),
        "{err}"
    );
    let img = data.join("val/images/val_0.JPEG");
    let err = fails(&["predict", s(&img), "--checkpoint", s(&nowhere)], 2);
    assert!(err.contains("--checkpoint"), "{err}");
}

#[test]
fn eval_accepts_a_runs_resume_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run) = trained(dir.path());
    let from_checkpoint = eval_json(&data, &run.join("checkpoint.safetensors"), "");
    let from_run = eval_json(&data, &run, "");
    assert_eq!(from_checkpoint, from_run);
}

#[test]
fn report_of_a_run_without_a_best_model_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    // --max-steps inside the first epoch: a model, but no finished epoch and no best model
    train_random(&data, &run, "--batch-size 4 --holdout 0.25 --max-steps 1");
    let png = dir.path().join("r.png");
    let err = fails(&["report", s(&run), "--which", "best", "--out", s(&png)], 2);
    assert!(err.contains("best.safetensors"), "{err}");
    assert!(!png.exists(), "the PNG was written before the error");
}

/// Without a terminal (Colab cells, nohup, tee) each logged step says its learning rate,
/// speed, elapsed time and the stage's time left; each epoch its train loss; accuracies are
/// percentages throughout; meta.json names the device and the libtorch.
#[test]
fn logs_read_well_without_a_terminal_and_meta_names_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 8);
    let run = dir.path().join("run");
    let out = train_random(
        &data,
        &run,
        "--batch-size 6 --holdout 0.25 --epochs 2 --log-interval 1 --pred-interval 2",
    );
    let step = out
        .lines()
        .find(|l| l.starts_with("Train Epoch: 1 [0/"))
        .unwrap();
    for needle in [
        "Loss: ",
        "lr 1.000e-4",
        " images/s",
        "elapsed 0:00:",
        "stage ETA ",
    ] {
        assert!(step.contains(needle), "{needle} not in {step}");
    }
    assert!(
        step.contains("Batch acc: ") && step.ends_with('%'),
        "{step}"
    );
    let epoch = out.lines().find(|l| l.starts_with("Epoch 1: ")).unwrap();
    assert!(
        epoch.contains("train loss ") && epoch.contains("top-1 "),
        "{epoch}"
    );
    assert!(epoch.contains("%"), "{epoch}");
    let finished = out
        .lines()
        .find(|l| l.starts_with("Finished base:"))
        .unwrap();
    assert!(
        finished.contains("top-1 ") && finished.contains('%'),
        "{finished}"
    );
    let text = ok(&["eval", "--data", s(&data), "--checkpoint", s(&run)]);
    assert!(text.contains("Top-1 acc: ") && text.contains('%'), "{text}");
    let m = meta_json(&run);
    assert!(
        m["device"].as_str().unwrap().starts_with("cpu"),
        "{}",
        m["device"]
    );
    assert!(
        m["libtorch"].as_str().unwrap().starts_with("2."),
        "{}",
        m["libtorch"]
    );
}

#[test]
fn every_json_output_carries_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run) = trained(dir.path());
    let scores = eval_json(&data, &run, "--tta flip");
    assert_eq!(scores["version"], 1);
    for key in ["split", "tta", "samples", "loss", "top1"] {
        assert!(!scores[key].is_null(), "{key} in {scores}");
    }
    // null with fewer than 5 classes, but there
    assert!(scores.get("top5").is_some(), "top5 in {scores}");
    let img = data.join("val/images/val_0.JPEG");
    let predicted: Value = serde_json::from_str(&ok(&[
        "predict",
        s(&img),
        "--checkpoint",
        s(&run),
        "--json",
    ]))
    .unwrap();
    assert_eq!(predicted["version"], 1);
    let bench: Value = serde_json::from_str(&ok(&words(
        "bench --images 8 --batch-size 4 --steps 1 --only eval --device cpu --json",
    )))
    .unwrap();
    assert_eq!(bench["version"], 1);
    assert_eq!(bench["image_size"], 64);
}

/// The image cache has a folder of its own, so that deleting it spares the weights.
#[test]
fn the_image_cache_lives_apart_from_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 4);
    let cache_home = dir.path().join("home-cache");
    let run = dir.path().join("run");
    let flags = "--batch-size 2 --holdout 0.25 --max-steps 1";
    succeeds(
        command()
            .args(train_args(&data, &run, flags))
            .env("XDG_CACHE_HOME", &cache_home),
    );
    let files: Vec<_> = std::fs::read_dir(cache_home.join("vggtiny/images"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    let top: Vec<String> = std::fs::read_dir(cache_home.join("vggtiny"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, vec!["images".to_string()]);
}
