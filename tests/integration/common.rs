//! Helpers shared by the integration tests: the binary, its command lines, fixtures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tch::Tensor;
use vggtiny::data::synth::{write_dataset, SynthSpec};

/// The binary (`VGGTINY_BIN` where the tests run away from their build, as on a GPU machine),
/// its image cache kept out of the user's home, on the CPU unless a test names its device (a
/// GPU machine runs these tests too, and the CUDA ones say `--device cuda`). One CPU thread
/// each: the test harness runs one test per core already, and libtorch's threads on top of
/// that only contend (the suite takes 30 % longer on 2 cores).
pub fn command() -> Command {
    let mut cmd = Command::new(bin());
    set_test_env(&mut cmd);
    cmd
}

/// The binary under test.
pub fn bin() -> PathBuf {
    std::env::var_os("VGGTINY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vggtiny")))
}

/// The environment every test run of the binary gets (see `command`).
pub fn set_test_env(cmd: &mut Command) {
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        cmd.env("OMP_NUM_THREADS", "1");
    }
    cmd.env(
        "XDG_CACHE_HOME",
        std::env::temp_dir().join("vggtiny-tests-cache"),
    );
    cmd.env("VGGTINY_DEVICE", "cpu");
}

pub fn vggtiny(args: &[&str]) -> Output {
    command().args(args).output().expect("run vggtiny")
}

pub fn ok(args: &[&str]) -> String {
    let out = vggtiny(args);
    assert!(
        out.status.success(),
        "vggtiny {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with `code`; returns its stderr.
pub fn fails(args: &[&str], code: i32) -> String {
    let out = vggtiny(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "vggtiny {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A command line split at spaces (test paths have none).
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `eval --json` of `checkpoint` on `data`, plus space-separated `flags`.
pub fn eval_json(data: &Path, checkpoint: &Path, flags: &str) -> Value {
    let mut args = vec![
        "eval",
        "--json",
        "--data",
        s(data),
        "--checkpoint",
        s(checkpoint),
    ];
    args.extend(flags.split_whitespace());
    serde_json::from_str(ok(&args).trim()).unwrap()
}

/// The arguments of `train-base --random-init` on `data` into `out`, plus space-separated
/// `flags`.
pub fn train_args<'a>(data: &'a Path, out: &'a Path, flags: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "train-base",
        "--random-init",
        "--data",
        s(data),
        "--out",
        s(out),
    ];
    args.extend(flags.split_whitespace());
    args
}

/// `train_args` resuming the run in `out`.
pub fn resume_args<'a>(data: &'a Path, out: &'a Path, flags: &'a str) -> Vec<&'a str> {
    let mut args = train_args(data, out, flags);
    args.push("--resume");
    args
}

/// Asserts that eval's `scored` are the holdout scores the run logged for `epoch` (a record of
/// meta.json's `epochs`): the same top-1, the mean loss to float rounding.
pub fn assert_scores_match_epoch(scored: &Value, epoch: &Value) {
    assert_eq!(scored["top1"], epoch["holdout_top1"], "{scored} vs {epoch}");
    assert_eq!(scored["top5"], epoch["holdout_top5"], "{scored} vs {epoch}");
    let (got, want) = (
        scored["loss"].as_f64().unwrap(),
        epoch["holdout_loss"].as_f64().unwrap(),
    );
    assert!((got - want).abs() / want < 1e-6, "{scored} vs {epoch}");
}

/// Runs `train-base --random-init` on `data` into `out` with `flags`; returns stdout.
pub fn train_random(data: &Path, out: &Path, flags: &str) -> String {
    ok(&train_args(data, out, flags))
}

/// A synthetic Tiny ImageNet tree: `classes` x `per_class` train images, 3 val images a class.
pub fn dataset(dir: &Path, classes: usize, per_class: usize) -> PathBuf {
    let root = dir.join("data");
    let spec = SynthSpec {
        classes,
        per_class,
        val_per_class: 3,
        seed: 1,
    };
    write_dataset(&root, &spec).unwrap();
    root
}

pub fn tensors(path: &Path) -> HashMap<String, Tensor> {
    vggtiny::io::safetensors::read_tensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

pub fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The real Tiny ImageNet subset of `TINY_IMAGENET_MINI`, for the `mini_*` tests, which are
/// `#[ignore]`d and run with `--ignored` only where it is set.
pub fn mini_subset() -> PathBuf {
    let dir = std::env::var_os("TINY_IMAGENET_MINI")
        .map(PathBuf::from)
        .expect("TINY_IMAGENET_MINI must point at tiny-imagenet-200-mini for this test");
    assert!(dir.join("train").is_dir(), "{}: no train/", dir.display());
    dir
}

/// The `meta.json` of a run directory.
pub fn meta_json(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("meta.json")).unwrap()).unwrap()
}

/// Runs a prepared command that must succeed; returns its stdout.
pub fn succeeds(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run vggtiny");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A directory shared by the tests of this binary (fixtures built once, such as reference
/// runs), removed when the binary exits: statics are never dropped, so an `atexit` hook
/// removes it.
pub fn shared_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    extern "C" fn remove() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir.path());
        }
    }
    DIR.get_or_init(|| {
        // SAFETY: registers a plain function without arguments to run at exit.
        unsafe { libc::atexit(remove) };
        tempfile::tempdir().unwrap()
    })
    .path()
}
