//! Command lines refused before anything trains, with exit code 2 and a message that says
//! why: invalid flags and values, a CUDA device that is not there, default weights not yet
//! downloaded, a stage 2 on a dataset of other classes.

use crate::common::*;

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
