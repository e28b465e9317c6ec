//! What a run stands on: weight files in libtorch's `.ot` format, the libtorch CUDA library
//! linked into the binary, the image cache (a cached run trains as a decoded one), bf16
//! compute on the CPU, and every figure of `bench --json`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::Value;
use tch::{Device, Tensor};
use vggtiny::model::Vgg16;

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
    // device memory and GPU idle time are CUDA figures: present, and null on the CPU
    for key in [
        "peak_device_mb",
        "train_base_gpu_between_steps",
        "finetune_gpu_between_steps",
        "train_base_peak_allocated_mb",
        "train_base_peak_reserved_mb",
        "finetune_peak_allocated_mb",
        "finetune_peak_reserved_mb",
    ] {
        assert!(
            report.get(key).is_some_and(|v| v.is_null()),
            "{key} in {report}"
        );
    }
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
