//! The command line end to end, on datasets and weight files each test makes for itself.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

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

#[test]
fn input_errors_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 4);
    let base = format!(
        "train-base --random-init --data {} --out {}",
        s(&data),
        s(&dir.path().join("o"))
    );
    let cases = [
        (format!("{base} --holdout 1.5"), "--holdout"),
        (format!("{base} --holdout 0.01"), "holdout of 0.01"),
        (format!("{base} --batch-size 1"), "--batch-size"),
        (format!("{base} --epochs 0"), "--epochs"),
        (format!("{base} --lr 0"), "--lr"),
        (format!("{base} --max-lr 1e-6"), "--max-lr"),
        (format!("{base} --max-steps 0"), "--max-steps"),
        (format!("{base} --device tpu"), "--device"),
        (
            format!("{base} --amp fp16 --device cpu"),
            "--amp fp16 needs a CUDA device",
        ),
        (
            "train-base --random-init --data /nonexistent".to_string(),
            "/nonexistent",
        ),
        (
            format!("eval --data {} --checkpoint /nonexistent/run", s(&data)),
            "/nonexistent/run",
        ),
        (
            format!("finetune --data {} --from /nonexistent/run", s(&data)),
            "/nonexistent/run",
        ),
        // clap's own usage errors exit 2 as well
        ("train-base".to_string(), "--data"),
    ];
    for (line, needle) in &cases {
        let err = fails(&words(line), 2);
        assert!(err.contains(needle), "{line}: {err}");
    }
    // VGGTINY_DEVICE stands in for --device (the tests set it to cpu).
    let out = command()
        .args(words(&base))
        .env("VGGTINY_DEVICE", "tpu")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("tpu"), "{err}");
}

/// A CUDA device that is not there is an error, never a silent CPU run: on a machine without a
/// GPU any CUDA device, on a GPU machine one beyond its count.
#[test]
fn an_absent_cuda_device_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 4);
    let out = dir.path().join("o");
    let args = [
        "train-base",
        "--random-init",
        "--data",
        s(&data),
        "--out",
        s(&out),
    ];
    let (device, needle) = if tch::Cuda::is_available() {
        ("cuda:99", "CUDA device(s) present")
    } else {
        ("cuda", "no usable CUDA device")
    };
    let err = fails(&[&args[..], &["--device", device]].concat(), 2);
    assert!(err.contains(needle), "{err}");
    assert!(!out.join("meta.json").exists(), "nothing trained");
}

#[test]
fn missing_default_weights_say_how_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 4);
    let out = command()
        .args([
            "train-base",
            "--data",
            s(&data),
            "--out",
            s(&dir.path().join("o")),
        ])
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "vgg16-imagenet.safetensors",
        "scripts/fetch-weights",
        "--random-init",
    ] {
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn finetune_refuses_a_dataset_with_other_classes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 6);
    let run = dir.path().join("run");
    train_random(
        &data,
        &run,
        "--epochs 1 --batch-size 4 --holdout 0.25 --max-steps 1",
    );
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other = dataset(&other, 4, 6);
    let err = fails(
        &[
            "finetune",
            "--data",
            s(&other),
            "--from",
            s(&run),
            "--out",
            s(&dir.path().join("ft")),
        ],
        2,
    );
    assert!(err.contains("3 classes"), "{err}");
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

#[test]
fn weights_in_ot_format_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 6);
    let donor = Vgg16::new(1000, Device::Cpu);
    let weights = dir.path().join("vgg16.ot");
    Tensor::save_multi(&donor.state(), &weights).unwrap();
    let run = dir.path().join("run");
    ok(&words(&format!(
        "train-base --data {} --weights {} --out {} --max-steps 1 --batch-size 4 --holdout 0.25",
        s(&data),
        s(&weights),
        s(&run)
    )));
    let saved = tensors(&run.join("model.safetensors"));
    let want: HashMap<String, Tensor> = donor.state().into_iter().collect();
    assert!(saved["vgg16.features.28.weight"].equal(&want["vgg16.features.28.weight"]));
}

/// The binary must carry libtorch_cuda.so (build.rs links it past --as-needed) whenever the
/// libtorch it was built against has one; otherwise CUDA is silently unavailable.
#[test]
fn binary_links_libtorch_cuda_when_libtorch_has_it() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_vggtiny"))
        .output()
        .expect("ldd");
    let listing = String::from_utf8_lossy(&out.stdout);
    let torch_lib = listing
        .lines()
        .find(|l| l.contains("libtorch_cpu.so"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|p| Path::new(p).parent().unwrap().to_path_buf())
        .expect("libtorch_cpu.so resolved through the rpath");
    if torch_lib.join("libtorch_cuda.so").exists() {
        assert!(listing.contains("libtorch_cuda.so"), "{listing}");
    }
}

/// A run on images decoded into memory (`--no-cache`), one that decodes them into a new cache
/// file, and one that maps that file train on exactly the same batches.
#[test]
fn cached_and_decoded_runs_train_identically() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let cache = dir.path().join("cache");
    // the default cache of these runs, where an ignored --no-cache would write
    let default_cache = dir.path().join("xdg-cache");
    let run = |name: &str, cache_flag: &str| {
        let out = dir.path().join(name);
        let args = format!(
            "train-base --random-init --data {} --out {} {cache_flag} --batch-size 4 \
             --holdout 0.25 --max-steps 3 --log-interval 1",
            s(&data),
            s(&out),
        );
        let output = command()
            .env("XDG_CACHE_HOME", &default_cache)
            .args(words(&args))
            .output()
            .unwrap();
        assert!(output.status.success());
        let losses: Vec<f64> = json_lines(&out.join("metrics.jsonl"))
            .iter()
            .filter(|e| e["event"] == "batch")
            .map(|e| e["loss"].as_f64().unwrap())
            .collect();
        (String::from_utf8_lossy(&output.stderr).into_owned(), losses)
    };
    let cached = format!("--cache-dir {}", s(&cache));
    let (_, in_memory) = run("a", "--no-cache");
    assert!(!default_cache.exists(), "--no-cache wrote a cache");
    let (first_log, first) = run("b", &cached);
    let (second_log, second) = run("c", &cached);
    assert!(first_log.contains("decoded"), "{first_log}");
    assert!(second_log.contains("mapped from the cache"), "{second_log}");
    assert_eq!(in_memory.len(), 3);
    assert_eq!(first, in_memory);
    assert_eq!(second, in_memory);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
}

#[test]
fn bench_json_has_every_figure() {
    let out = ok(&words(
        "bench --images 16 --batch-size 8 --steps 1 --device cpu --json",
    ));
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(report["device"].as_str().unwrap().starts_with("cpu"));
    for key in [
        "decode_images_per_sec",
        "augment_images_per_sec",
        "train_base_images_per_sec",
        "train_base_data_wait",
        "finetune_images_per_sec",
        "finetune_data_wait",
        "train_base_optimizer_ms",
        "train_base_optimizer_ops",
        "finetune_optimizer_ms",
        "finetune_optimizer_ops",
        "eval_images_per_sec",
        "peak_host_mb",
        "warm_start_seconds",
    ] {
        let value = report[key].as_f64();
        assert!(value.is_some_and(|v| v >= 0.0), "{key} in {report}");
    }
    assert!(report["train_base_images_per_sec"].as_f64().unwrap() > 0.0);
    // device memory is a CUDA figure: present, and null on the CPU
    assert!(
        report.get("peak_device_mb").is_some_and(|v| v.is_null()),
        "{report}"
    );
}

/// `--amp bf16` on the CPU: the forward pass runs in bf16 (the first loss, from the same
/// weights, moves by bf16 rounding, not more), the weights stay fp32.
#[test]
fn bf16_training_computes_in_bf16_and_keeps_fp32_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 6);
    let flags = "--max-steps 2 --batch-size 4 --holdout 0.25 --log-interval 1 --device cpu";
    let first_loss = |run: &Path| {
        let events = json_lines(&run.join("metrics.jsonl"));
        events[0]["loss"].as_f64().unwrap()
    };
    let (fp32, bf16) = (dir.path().join("fp32"), dir.path().join("bf16"));
    train_random(&data, &fp32, flags);
    train_random(&data, &bf16, &format!("{flags} --amp bf16"));
    assert_eq!(meta_json(&bf16)["config"]["amp"], "bf16");
    let (a, b) = (first_loss(&fp32), first_loss(&bf16));
    let rel = (a - b).abs() / a;
    assert!(rel > 1e-5 && rel < 0.05, "fp32 loss {a}, bf16 loss {b}");
    for (name, t) in tensors(&bf16.join("model.safetensors")) {
        if !name.ends_with("num_batches_tracked") {
            assert_eq!(t.kind(), tch::Kind::Float, "{name}");
            assert!(t.isfinite().all().int64_value(&[]) == 1, "{name}");
        }
    }
}
