//! Both stages end to end, as the command line runs them: train-base from ImageNet-style
//! weights, finetune from it, eval on both splits (names, shapes, the lr schedule and the scores
//! checked against the original program), `--max-steps` and its resume, a bare class-folder
//! tree, and the real Tiny ImageNet subset.

use std::collections::HashMap;

use crate::common::*;
use serde_json::Value;
use tch::{Device, Tensor};
use vggtiny::model::Vgg16;

#[test]
fn train_base_finetune_eval_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 4, 10);
    // ImageNet-style weights file: bare torchvision names, a classifier of another shape.
    let donor = Vgg16::new(1000, Device::Cpu);
    let weights = dir.path().join("imagenet.safetensors");
    let bare: Vec<(String, Tensor)> = donor
        .state()
        .into_iter()
        .map(|(n, t)| (n.trim_start_matches("vgg16.").to_string(), t))
        .collect();
    vggtiny::io::safetensors::save_tensors(&weights, &bare).unwrap();
    let base = dir.path().join("base");
    ok(&words(&format!(
        "train-base --data {} --weights {} --out {} --epochs 2 --batch-size 8 \
         --step-size-up 3 --log-interval 1 --pred-interval 2 --device cpu",
        s(&data),
        s(&weights),
        s(&base)
    )));

    // Outputs: the original program's state_dict names and shapes, frozen features untouched.
    let saved = tensors(&base.join("model.safetensors"));
    let reference: HashMap<String, Tensor> = donor.state().into_iter().collect();
    assert_eq!(saved.len(), reference.len());
    for (name, t) in &reference {
        let got = &saved[name];
        if name.contains(".features.") {
            assert!(got.equal(t), "stage 1 changed frozen {name}");
        } else if !name.contains(".classifier.8.") {
            assert_eq!(got.size(), t.size(), "{name}");
        }
    }
    assert_eq!(saved["vgg16.classifier.8.weight"].size(), vec![4, 512]);
    assert_eq!(
        saved["vgg16.classifier.2.num_batches_tracked"].int64_value(&[]),
        10
    );

    let meta: Value = meta_json(&base);
    assert_eq!(meta["classes"].as_array().unwrap().len(), 4);
    assert_eq!(meta["split"]["seed"], 42);
    assert_eq!(meta["split"]["dataset_size"], 40);
    assert_eq!(meta["config"]["batch_size"], 8);
    assert_eq!(
        meta["config"]["image_size"], 64,
        "the recipe's size by default"
    );
    assert_eq!(meta["config"]["label_smoothing"], 0.0);
    assert_eq!(meta["epochs"].as_array().unwrap().len(), 2);

    // metrics.jsonl: every step logged (interval 1) with the lr and beta1 that PyTorch's
    // CyclicLR(base_lr=1e-4, max_lr=6e-4, step_size_up=3, mode="triangular2") sets, as
    // torch 2.11 printed them.
    let torch_schedule = [
        (0.0001, 0.9),
        (0.00026666666666666673, 0.8666666666666667),
        (0.0004333333333333332, 0.8333333333333334),
        (0.0006, 0.8),
        (0.0004333333333333334, 0.8333333333333334),
        (0.0002666666666666665, 0.8666666666666667),
        (0.0001, 0.9),
        (0.00018333333333333347, 0.8833333333333333),
        (0.0002666666666666665, 0.8666666666666667),
        (0.00034999999999999994, 0.8500000000000001),
    ];
    let events = json_lines(&base.join("metrics.jsonl"));
    let batches: Vec<&Value> = events.iter().filter(|e| e["event"] == "batch").collect();
    assert_eq!(
        batches.len(),
        10,
        "38 training images in batches of 8 over 2 epochs"
    );
    for (i, (e, (lr, beta1))) in batches.iter().zip(torch_schedule).enumerate() {
        assert_eq!(e["step"], i as u64);
        let close = |key: &str, want: f64| {
            let got = e[key].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-15,
                "step {i}: {key} {got}, torch {want}"
            );
        };
        close("lr", lr);
        close("beta1", beta1);
        assert_eq!(e.get("acc").is_some(), i % 2 == 0);
    }
    let epochs: Vec<&Value> = events.iter().filter(|e| e["event"] == "epoch").collect();
    assert_eq!(epochs.len(), 2);
    assert_eq!(epochs[1]["stage"], "base");
    for key in [
        "epoch",
        "train_loss",
        "holdout_loss",
        "holdout_top1",
        "lr",
        "seconds",
        "images_per_sec",
    ] {
        let value = &epochs[1][key];
        assert!(
            value.as_f64().is_some_and(|v| v.is_finite() && v >= 0.0),
            "epoch event lacks a finite {key}: {value}"
        );
    }
    assert!(epochs[1]["holdout_top1"].as_f64().unwrap() <= 1.0);
    // 4 classes: every image would be in the top 5, so there is no top-5 (its key kept).
    let top5 = epochs[1].get("holdout_top5");
    assert!(top5.is_some_and(Value::is_null), "{}", epochs[1]);

    // eval reproduces the last epoch's holdout numbers from the saved run.
    let report = eval_json(&data, &base, "--device cpu");
    assert_eq!(report["split"], "holdout");
    assert_eq!(report["samples"], 2);
    assert_scores_match_epoch(&report, &meta["epochs"][1]);

    // Stage 2 starts from stage 1 and trains everything, features included.
    let ft = dir.path().join("finetune");
    ok(&words(&format!(
        "finetune --data {} --from {} --out {} --epochs 1 --batch-size 8 --device cpu",
        s(&data),
        s(&base),
        s(&ft)
    )));
    let tuned = tensors(&ft.join("model.safetensors"));
    for (name, t) in &saved {
        if name.ends_with(".weight") {
            assert!(!tuned[name].equal(t), "stage 2 left {name} unchanged");
        }
    }
    let ft_meta: Value = meta_json(&ft);
    assert_eq!(ft_meta["stage"], "finetune");
    assert_eq!(ft_meta["split"], meta["split"]);

    let text = ok(&[
        "eval",
        "--data",
        s(&data),
        "--checkpoint",
        s(&ft),
        "--split",
        "val",
    ]);
    let line = text.lines().find(|l| l.starts_with("Top-1 acc: ")).unwrap();
    assert!(
        line.ends_with(" / Top-5 acc: n/a (fewer than 5 classes)"),
        "{text}"
    );
    let val = eval_json(&data, &ft, "--split val");
    assert_eq!(val["samples"], 12);
    assert!(val.get("top5").is_some_and(Value::is_null), "{val}");

    // A bare model file without meta.json beside it takes classes and split from --data.
    let bare_model = dir.path().join("bare.safetensors");
    std::fs::copy(ft.join("model.safetensors"), &bare_model).unwrap();
    let bare = eval_json(&data, &bare_model, "");
    let from_run = eval_json(&data, &ft, "");
    assert_eq!(bare, from_run);

    // A run directory holding a model is not overwritten without --force.
    let err = fails(
        &words(&format!(
            "train-base --random-init --data {} --out {}",
            s(&data),
            s(&base)
        )),
        2,
    );
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn max_steps_stops_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 12);
    let run = dir.path().join("run");
    let flags = "--epochs 5 --batch-size 4 --log-interval 1 --precise-bn 2";
    train_random(&data, &run, &format!("{flags} --max-steps 3"));
    let events = json_lines(&run.join("metrics.jsonl"));
    assert_eq!(events.iter().filter(|e| e["event"] == "batch").count(), 3);
    assert_eq!(events.iter().filter(|e| e["event"] == "epoch").count(), 1);
    let meta: Value = meta_json(&run);
    assert_eq!(meta["config"]["precise_bn"], 2);
    assert_eq!(meta["config"]["max_steps"], 3);
    // a resume that --max-steps leaves no step is refused; a higher one takes the steps left
    let at_limit = format!("{flags} --max-steps 3");
    let err = fails(&resume_args(&data, &run, &at_limit), 2);
    assert!(
        err.contains("already took 3 steps, and --max-steps 3 allows no more"),
        "{err}"
    );
    let past_it = format!("{flags} --max-steps 4");
    let out = vggtiny(&resume_args(&data, &run, &past_it));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("(step 3)"),
        "{stderr}"
    );
    let steps: Vec<Value> = json_lines(&run.join("metrics.jsonl"))
        .into_iter()
        .filter(|e| e["event"] == "batch")
        .map(|e| e["step"].clone())
        .collect();
    assert_eq!(steps, [0, 1, 2, 3]);
}

#[test]
fn bare_class_tree_trains_but_has_no_val() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let tree = data.join("train");
    let run = dir.path().join("run");
    train_random(&tree, &run, "--epochs 1 --batch-size 4 --holdout 0.25");
    let err = fails(
        &[
            "eval",
            "--data",
            s(&tree),
            "--checkpoint",
            s(&run),
            "--split",
            "val",
        ],
        2,
    );
    assert!(err.contains("--split val"), "{err}");
}

/// On real Tiny ImageNet images.
#[test]
#[ignore = "needs the real subset: TINY_IMAGENET_MINI (scripts/test sets it when ../shared/data is there)"]
fn mini_subset_both_stages_and_both_splits() {
    let mini = mini_subset();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let ft = dir.path().join("ft");
    train_random(&mini, &base, "--epochs 1 --max-steps 2");
    ok(&[
        "finetune",
        "--data",
        s(&mini),
        "--from",
        s(&base),
        "--out",
        s(&ft),
        "--epochs",
        "1",
        "--max-steps",
        "2",
    ]);
    let holdout = eval_json(&mini, &ft, "");
    assert_eq!(holdout["samples"], 50, "5% of 1000 images");
    let val = eval_json(&mini, &ft, "--split val");
    assert_eq!(val["samples"], 500);
    for r in [&holdout, &val] {
        let top1 = r["top1"].as_f64().unwrap();
        let top5 = r["top5"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&top1) && top1 <= top5, "{r}");
        assert!(r["loss"].as_f64().unwrap().is_finite());
    }
}
