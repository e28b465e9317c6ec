//! Everyday use: early stopping and the best model, predict, test-time augmentation, the
//! report (its PNG decoded and looked into), shell completions.

use std::path::Path;

use crate::common::*;
use serde_json::Value;

#[test]
fn early_stopping_keeps_the_best_model_and_which_selects_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 8);
    let run = dir.path().join("run");
    // Holdout top-1 moves in steps of 1/6 at most, so a min-delta of 0.9 can never be beaten:
    // the run stops after PATIENCE epochs past the first.
    let out = train_random(
        &data,
        &run,
        "--epochs 6 --batch-size 6 --holdout 0.25 --early-stop 2 --min-delta 0.9",
    );
    assert!(out.contains("Early stop"), "{out}");
    let m = meta_json(&run);
    assert_eq!(m["epochs"].as_array().unwrap().len(), 3);
    assert_eq!(m["best"]["epoch"], 1);
    assert_best_is_epoch(&data, &run, 1);
    let ft = dir.path().join("ft");
    ok(&words(&format!(
        "finetune --data {} --from {} --which best --out {} --max-steps 1 --batch-size 6",
        s(&data),
        s(&run),
        s(&ft)
    )));
    assert_eq!(meta_json(&ft)["config"]["which"], "best");
}

/// An improvement moves the best model: epoch 1 at a learning rate of 1e-7 stays near chance,
/// epoch 2 at 3e-4 learns (the schedule steps per epoch), epoch 3 at 1e-7 gains nothing, and
/// with a patience of 1 the run stops there, epoch 2's model kept as the best.
#[test]
fn early_stopping_after_an_improvement_keeps_the_improved_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 8);
    let run = dir.path().join("run");
    let out = train_random(
        &data,
        &run,
        "--epochs 6 --batch-size 6 --holdout 0.25 --lr 1e-7 --max-lr 3e-4 --step-size-up 1 \
         --sched-step epoch --early-stop 1 --min-delta 0.05 --precise-bn 3 --device cpu",
    );
    assert!(out.contains("Early stop"), "{out}");
    let m = meta_json(&run);
    let epochs = m["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3, "{out}");
    let top1 = |e: usize| epochs[e]["holdout_top1"].as_f64().unwrap();
    assert!(top1(1) > top1(0) + 0.05, "epoch 2 improves: {out}");
    assert_eq!(m["best"]["epoch"], 2);
    assert_best_is_epoch(&data, &run, 2);
}

/// best.safetensors of `run` is the model of `epoch` (`--which best` scores that epoch's
/// logged holdout numbers), not the last one.
fn assert_best_is_epoch(data: &Path, run: &Path, epoch: usize) {
    let scored = eval_json(data, run, "--which best");
    assert_scores_match_epoch(&scored, &meta_json(run)["epochs"][epoch - 1]);
    let best = tensors(&run.join("best.safetensors"));
    let last = tensors(&run.join("model.safetensors"));
    assert!(!best["vgg16.classifier.8.weight"].equal(&last["vgg16.classifier.8.weight"]));
}

#[test]
fn predict_names_the_top5_for_images_of_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 6, 6);
    let run = dir.path().join("run");
    train_random(&data, &run, "--max-steps 1 --batch-size 6 --holdout 0.25");
    // a 128x96 grayscale PNG and a val JPEG
    let png = dir.path().join("odd.png");
    let gray: Vec<u8> = (0..128 * 96).map(|i| (i % 256) as u8).collect();
    image::GrayImage::from_raw(128, 96, gray)
        .unwrap()
        .save(&png)
        .unwrap();
    let jpeg = data.join("val/images/val_0.JPEG");
    let out = ok(&[
        "predict",
        s(&png),
        s(&jpeg),
        "--checkpoint",
        s(&run),
        "--json",
    ]);
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["version"], 1);
    let predictions = report["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2);
    for p in predictions {
        let top5 = p["top5"].as_array().unwrap();
        assert_eq!(top5.len(), 5);
        let probs: Vec<f64> = top5.iter().map(|g| g["prob"].as_f64().unwrap()).collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
        assert!(probs.iter().sum::<f64>() <= 1.0 + 1e-6);
        assert!(top5[0]["wnid"].as_str().unwrap().starts_with("n9"));
        assert!(top5[0]["name"]
            .as_str()
            .unwrap()
            .starts_with("synthetic class"));
    }
    let text = ok(&["predict", s(&jpeg), "--checkpoint", s(&run)]);
    assert!(
        text.lines().nth(1).unwrap().trim_start().starts_with("1. "),
        "{text}"
    );
}

#[test]
fn test_time_augmentation_scores_more_views() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 8);
    let run = dir.path().join("run");
    train_random(&data, &run, "--max-steps 2 --batch-size 6 --holdout 0.25");
    let plain = eval_json(&data, &run, "--split val");
    let flip = eval_json(&data, &run, "--split val --tta flip");
    let crops = eval_json(&data, &run, "--split val --tta 10crop");
    assert_eq!(plain["tta"], "none");
    assert_eq!(crops["tta"], "10crop");
    for r in [&flip, &crops] {
        assert_eq!(r["samples"], plain["samples"]);
        // averaged probabilities are a different model of the data: the loss moves
        assert_ne!(r["loss"], plain["loss"]);
        assert!(r["loss"].as_f64().unwrap().is_finite());
    }
}

#[test]
fn report_draws_every_run_and_tables_the_last_per_class() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 4, 10);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // two runs that differ, so that neither curve hides the other
    for (run, lr) in [(&a, "1e-4 --max-lr 6e-4"), (&b, "1e-3 --max-lr 3e-3")] {
        let flags = format!("--epochs 2 --batch-size 6 --holdout 0.3 --log-interval 1 --lr {lr}");
        train_random(&data, run, &flags);
    }
    let png = dir.path().join("report.png");
    let out = ok(&["report", s(&a), s(&b), "--out", s(&png)]);
    assert!(out.contains("Per-class accuracy"), "{out}");
    assert!(
        out.contains("synthetic class 3"),
        "names from words.txt: {out}"
    );
    assert!(out.contains("Most confused"), "{out}");
    let rows = out
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|w| w.starts_with("n9"))
        })
        .count();
    assert_eq!(rows, 4, "{out}");

    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (1600, 1000));
    // Each of the four chart areas (the quadrants below the 70-pixel header) holds both runs'
    // colours (blue, red).
    for (qx, qy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let (x0, y0) = (qx * 800, 70 + qy * 465);
        let colours = |target: [u8; 3]| {
            (x0..x0 + 800)
                .flat_map(|x| (y0..y0 + 465).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0 == target)
                .count()
        };
        assert!(colours([31, 119, 180]) > 50, "chart {qx},{qy} lacks run a");
        assert!(colours([214, 39, 40]) > 50, "chart {qx},{qy} lacks run b");
    }
}

#[test]
fn completions_for_each_shell_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&["completions", shell]);
        for sub in [
            "train-base",
            "finetune",
            "eval",
            "report",
            "predict",
            "download",
            "soak",
        ] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
}

#[test]
fn help_shows_defaults_and_what_each_flag_means() {
    let help = ok(&["train-base", "--help"]);
    for needle in [
        "[default: 1e-4]",
        "[default: 6e-4]",
        "[default: 1404]",
        "CyclicLR",
        "--resume",
        "--early-stop",
    ] {
        assert!(help.contains(needle), "train-base --help lacks {needle}");
    }
    // every command that runs on a device names the flag the out-of-memory hint suggests
    for command in [
        "train-base",
        "finetune",
        "eval",
        "predict",
        "report",
        "bench",
        "soak",
    ] {
        let help = ok(&[command, "--help"]);
        assert!(
            help.contains("--batch-size"),
            "{command} --help lacks --batch-size"
        );
    }
    let help = ok(&["finetune", "--help"]);
    for needle in [
        "[default: 1e-5]",
        "[default: 6e-5]",
        "[default: 1200]",
        "--which",
    ] {
        assert!(help.contains(needle), "finetune --help lacks {needle}");
    }
    let help = ok(&["soak", "--help"]);
    assert!(help.contains("the recipe's 22 275"), "{help}");
    let max_growth = help.split("--max-growth <MIB>").nth(1).unwrap_or_default();
    let max_growth = max_growth.split("\n      --").next().unwrap_or_default();
    assert!(max_growth.contains("[default: 2]"), "{help}");
    // and the overview lists every command
    let help = ok(&["--help"]);
    for command in [
        "train-base",
        "finetune",
        "eval",
        "synth",
        "report",
        "predict",
        "download",
        "bench",
        "soak",
        "completions",
    ] {
        assert!(
            help.contains(&format!("\n  {command} ")),
            "--help lacks {command}"
        );
    }
}
