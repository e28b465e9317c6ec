//! Long runs survive what ends them: a killed process, Ctrl-C, SIGTERM, bad images, corrupt
//! model files, a full disk. Real child processes, real files; the fixtures are made here.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use vggtiny::run_dir::checkpoint::{load_checkpoint, TrainState};

/// Flags of the stopped runs and their references: 50 images, 40 of them trained in 5 batches
/// of 8, 2 epochs (10 steps), every step logged.
const RUN: &str = "--batch-size 8 --holdout 0.2 --epochs 2 --log-interval 1 --device cpu";
const RUN_STEPS: u64 = 10;
/// What a stopped run adds: a checkpoint every 4 steps (step 4 is mid-epoch, the epoch's end
/// at 5 saves too). Its reference has none, so a resume that equals the reference also shows
/// that checkpointing changes nothing.
const CHECKPOINTED: &str = "--checkpoint-every 4";

fn run_dataset(dir: &Path) -> PathBuf {
    dataset(dir, 2, 25)
}

/// The uninterrupted run of `flags` on the stopped runs' dataset, in `dir`.
pub fn reference_run(dir: &Path, flags: &str) -> PathBuf {
    let data = run_dataset(dir);
    let out = dir.join("reference");
    train_random(&data, &out, flags);
    out
}

/// The uninterrupted run of `RUN`, trained once for every test of this binary (afresh by the
/// next test if that failed).
fn shared_reference() -> &'static Path {
    static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
    RUN_DIR.get_or_init(|| {
        let dir = shared_dir().join("reliability");
        let _ = std::fs::remove_dir_all(&dir);
        reference_run(&dir, RUN)
    })
}

/// A run as started from a terminal: SIGINT and SIGHUP at their defaults even where the test
/// harness was started with them ignored (a background job, `nohup`), which vggtiny would
/// keep ignoring.
fn spawn(args: &[&str]) -> Child {
    let mut cmd = command();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vggtiny")
}

fn batch_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"event\":\"batch\""))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the run has logged `n` steps.
fn wait_for_steps(run: &Path, n: usize, child: &mut Child) {
    wait_for(child, || batch_lines(run) >= n);
}

/// Waits until the run has written its first checkpoint.
fn wait_for_checkpoint(run: &Path, child: &mut Child) {
    wait_for(child, || run.join("checkpoint.safetensors").exists());
}

fn wait_for(child: &mut Child, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// An uninterrupted reference run and an interrupted one resumed to the end must agree bit for
/// bit: weights, BatchNorm statistics, and the log (every step and epoch exactly once).
fn assert_same_run(reference: &Path, resumed: &Path) {
    assert_same_tensors(reference, resumed, "model.safetensors");
    let steps = |run: &Path| -> Vec<(String, u64)> {
        json_lines(&run.join("metrics.jsonl"))
            .iter()
            .map(|e| {
                let n = e.get("step").or(e.get("epoch")).unwrap().as_u64().unwrap();
                (e["event"].as_str().unwrap().to_string(), n)
            })
            .collect()
    };
    assert_eq!(steps(reference), steps(resumed));
    let losses = |run: &Path| -> Vec<Value> {
        json_lines(&run.join("metrics.jsonl"))
            .into_iter()
            .map(|e| e.get("loss").or(e.get("holdout_loss")).cloned().unwrap())
            .collect()
    };
    assert_eq!(losses(reference), losses(resumed));
}

/// The model file `file` of both runs holds the same tensors, bit for bit.
fn assert_same_tensors(reference: &Path, resumed: &Path, file: &str) {
    let a = tensors(&reference.join(file));
    let b = tensors(&resumed.join(file));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{file}: {name} differs after resume");
    }
}

/// Resumes `out` and checks that it continued from its checkpoint rather than from step 0:
/// the message names the checkpoint's position, and the process trains only the `total` steps'
/// remainder. Returns the state it resumed from.
fn resume(data: &Path, out: &Path, flags: &str, total: u64) -> TrainState {
    let (_, state) = load_checkpoint(out).expect("a checkpoint to resume from");
    assert!(state.step > 0, "nothing to resume: {state:?}");
    let args = resume_args(data, out, flags);
    let output = vggtiny(&args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let said = format!(
        "at epoch {}, batch {} (step {})",
        state.epoch, state.batch, state.step
    );
    assert!(stderr.contains(&said), "no '{said}' in: {stderr}");
    let trained = stdout
        .lines()
        .filter(|l| l.starts_with("Train Epoch:"))
        .count();
    assert_eq!(
        trained as u64,
        total - state.step,
        "steps trained on resume:\n{stdout}"
    );
    state
}

/// SIGKILL right after the first periodic checkpoint (step 2 of the first epoch's 5, with
/// `--checkpoint-every 2`): the process ends without saving anything more, the run resumes
/// from inside the epoch, and ends as the uninterrupted run.
#[test]
fn kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run() {
    use std::os::unix::process::ExitStatusExt;
    let reference = shared_reference();
    let dir = tempfile::tempdir().unwrap();
    let data = run_dataset(dir.path());
    let run = dir.path().join("killed");
    let flags = format!("{RUN} --checkpoint-every 2");
    let mut child = spawn(&train_args(&data, &run, &flags));
    wait_for_checkpoint(&run, &mut child);
    child.kill().unwrap(); // SIGKILL: no chance to save anything
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let state = resume(&data, &run, &flags, RUN_STEPS);
    assert_eq!(state.epoch, 1, "killed in the first epoch: {state:?}");
    assert!(state.batch > 0, "killed mid-epoch: {state:?}");
    assert_same_run(reference, &run);
}

/// Runs `flags` (plus `CHECKPOINTED`) stopped by `sig` mid-epoch (exit `code`) and resumed;
/// it must end as `reference`, the uninterrupted run of `flags`, `total` steps long (the
/// epoch long enough that the third step is not its last).
pub fn stop_and_resume_equals_uninterrupted(
    reference: &Path,
    (flags, total): (&str, u64),
    sig: i32,
    code: i32,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = run_dataset(dir.path());
    let run = dir.path().join("stopped");
    let flags = format!("{flags} {CHECKPOINTED}");
    let mut child = spawn(&train_args(&data, &run, &flags));
    // the third step is under way: the signal stops the run inside the first epoch
    wait_for_steps(&run, 2, &mut child);
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(
        stderr.contains("resume with:") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let state = resume(&data, &run, &flags, total);
    // the signal's own checkpoint, mid-epoch, at the step it stopped after
    assert!(
        stderr.contains(&format!(
            "interrupted at epoch {}, step {}:",
            state.epoch, state.step
        )),
        "{stderr} vs {state:?}"
    );
    assert!(state.batch > 0, "{state:?}");
    assert_same_run(reference, &run);
}

fn stop_with(sig: i32, code: i32) {
    stop_and_resume_equals_uninterrupted(shared_reference(), (RUN, RUN_STEPS), sig, code);
}

#[test]
fn sigint_checkpoints_exits_130_and_resumes_exactly() {
    stop_with(libc::SIGINT, 130);
}

#[test]
fn sigterm_checkpoints_exits_143_and_resumes_exactly() {
    stop_with(libc::SIGTERM, 143);
}

/// A closed terminal or SSH session (SIGHUP) stops the run as SIGTERM does.
#[test]
fn sighup_checkpoints_exits_129_and_resumes_exactly() {
    stop_with(libc::SIGHUP, 129);
}

/// A run started under `nohup` (SIGHUP ignored) keeps that: a hangup does not stop it.
#[test]
fn a_run_under_nohup_ignores_the_hangup() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_dataset(dir.path());
    let run = dir.path().join("run");
    let mut cmd = Command::new("nohup");
    set_test_env(&mut cmd);
    let mut child = cmd
        .arg(bin())
        .args(train_args(&data, &run, RUN))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nohup");
    wait_for_steps(&run, 2, &mut child);
    signal(&child, libc::SIGHUP);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(meta_json(&run)["epochs"].as_array().unwrap().len(), 2);
}

/// The first SIGINT asks for a graceful stop (finish the step, save, say "interrupted",
/// exit); a second one ends the process at once: no report, and the run resumes from its last
/// periodic or epoch checkpoint. SIGINTs go every 20 ms until the process ends, so that two
/// are delivered apart even while a thread sits in a long write (signals of one kind that
/// arrive while one is pending merge into one).
#[test]
fn a_second_sigint_exits_at_once_and_leaves_a_resumable_run() {
    let reference = shared_reference();
    let flags = format!("{RUN} {CHECKPOINTED}");
    let dir = tempfile::tempdir().unwrap();
    let data = run_dataset(dir.path());
    let run = dir.path().join("stopped");
    let mut child = spawn(&train_args(&data, &run, &flags));
    wait_for_checkpoint(&run, &mut child);
    while child.try_wait().unwrap().is_none() {
        signal(&child, libc::SIGINT);
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        !stderr.contains("interrupted at"),
        "a graceful stop: {stderr}"
    );
    assert!(
        stderr.contains("stopped at once by a second signal"),
        "{stderr}"
    );
    resume(&data, &run, &flags, RUN_STEPS);
    assert_same_run(reference, &run);
    assert_no_temporary_files(&run);
}

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
    let (_, state) = load_checkpoint(&stopped).unwrap();
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

fn jpeg(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode(rgb, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn cmyk_jpeg() -> Vec<u8> {
    let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_CMYK);
    comp.set_size(64, 64);
    let mut started = comp.start_compress(Vec::new()).unwrap();
    let pixels: Vec<u8> = (0..64 * 64 * 4).map(|i| (i * 13 % 256) as u8).collect();
    started.write_scanlines(&pixels).unwrap();
    started.finish().unwrap()
}

/// A dataset with every kind of trouble an image folder holds.
fn troubled_dataset(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let data = dataset(dir, 2, 10);
    let class = data.join("train/n90000000/images");
    let gradient: Vec<u8> = (0..128 * 96 * 3).map(|i| (i % 251) as u8).collect();
    let good = jpeg(&gradient[..64 * 64 * 3], 64, 64);
    let bad = vec![
        (
            class.join("truncated.JPEG"),
            good[..good.len() / 2].to_vec(),
        ),
        (class.join("empty.JPEG"), Vec::new()),
        (class.join("text.JPEG"), b"this is not an image".to_vec()),
    ];
    for (path, bytes) in &bad {
        std::fs::write(path, bytes).unwrap();
    }
    let mut png = Vec::new();
    let rgba: Vec<u8> = (0..64 * 64 * 4).map(|i| (i % 256) as u8).collect();
    image::RgbaImage::from_raw(64, 64, rgba)
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(class.join("alpha.png"), png).unwrap();
    std::fs::write(class.join("cmyk.JPEG"), cmyk_jpeg()).unwrap();
    std::fs::write(class.join("large.JPEG"), jpeg(&gradient, 128, 96)).unwrap();
    (data, bad.into_iter().map(|(p, _)| p).collect())
}

#[test]
fn undecodable_images_stop_the_run_or_are_skipped_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (data, bad) = troubled_dataset(dir.path());
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --max-steps 2 --no-cache";
    let err = fails(&train_args(&data, &run, flags), 2);
    assert!(err.contains("3 image(s) could not be decoded"), "{err}");
    for path in &bad {
        assert!(err.contains(s(path)), "{err}");
    }
    for fine in ["alpha.png", "cmyk.JPEG", "large.JPEG"] {
        assert!(!err.contains(fine), "{fine} should decode: {err}");
    }

    let out = vggtiny(&train_args(
        &data,
        &run,
        &format!("{flags} --skip-bad-images"),
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 images were not 64x64: resized (shorter side to 64"),
        "{stderr}"
    );
    let meta: Value = meta_json(&run);
    let skipped: Vec<&str> = meta["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 3);
    assert_eq!(meta["split"]["dataset_size"], 20 + 3);
    // eval recovers the same holdout (5 of the 23 decodable images) without the skipped ones
    let report = eval_json(&data, &run, "--device cpu");
    assert_eq!(report["samples"], 5);
    assert_eq!(report["top1"], meta["epochs"][0]["holdout_top1"]);
}

fn corrupt(src: &Path, dst: &Path, how: &str) {
    let mut bytes = std::fs::read(src).unwrap();
    match how {
        "truncated" => bytes.truncate(bytes.len() / 3),
        "flipped" => {
            let i = bytes.len() - 1000;
            bytes[i] ^= 0x10;
        }
        "header" => bytes[20] = b'!',
        _ => unreachable!(),
    }
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn corrupt_model_files_and_foreign_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 10, 4);
    let run = dir.path().join("run");
    ok(&train_args(
        &data,
        &run,
        "--batch-size 8 --holdout 0.25 --max-steps 1",
    ));
    let model = run.join("model.safetensors");
    for how in ["truncated", "flipped", "header"] {
        let bad = dir.path().join(format!("{how}.safetensors"));
        corrupt(&model, &bad, how);
        let err = fails(&["eval", "--data", s(&data), "--checkpoint", s(&bad)], 2);
        assert!(err.contains(s(&bad)), "{how}: {err}");
        let out = dir.path().join(format!("ft-{how}"));
        let err = fails(
            &[
                "finetune",
                "--data",
                s(&data),
                "--from",
                s(&bad),
                "--out",
                s(&out),
            ],
            2,
        );
        assert!(err.contains(s(&bad)), "{how}: {err}");
    }
    // a corrupt checkpoint is refused on resume, and nothing is written
    let checkpoint = run.join("checkpoint.safetensors");
    corrupt(&checkpoint.clone(), &checkpoint, "flipped");
    let before = std::fs::read(&model).unwrap();
    let args = train_args(
        &data,
        &run,
        "--batch-size 8 --holdout 0.25 --resume --epochs 2",
    );
    let err = fails(&args, 2);
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);

    // a 10-class run on a 12-class dataset
    let other = dir.path().join("twelve");
    std::fs::create_dir_all(&other).unwrap();
    let twelve = dataset(&other, 12, 4);
    let err = fails(&["eval", "--data", s(&twelve), "--checkpoint", s(&run)], 2);
    assert!(
        err.contains("10 classes") && err.contains("has 12"),
        "{err}"
    );
    // weights of another architecture
    let foreign = dir.path().join("foreign.safetensors");
    vggtiny::io::safetensors::save_tensors(
        &foreign,
        &[(
            "conv1.weight".into(),
            tch::Tensor::zeros([64, 3, 7, 7], (tch::Kind::Float, tch::Device::Cpu)),
        )],
    )
    .unwrap();
    let mut args = vec!["train-base", "--data", s(&data), "--weights", s(&foreign)];
    let out = dir.path().join("foreign-run");
    args.extend(["--out", s(&out)]);
    let err = fails(&args, 2);
    assert!(
        err.contains("features.0.weight") && err.contains("foreign.safetensors"),
        "{err}"
    );
}

/// A write torn part way by the kernel: a file-size limit (RLIMIT_FSIZE, as `ulimit -f` sets
/// it) above the model's size and below the checkpoint's lets the second epoch's checkpoint be
/// written only in part before the write fails ("File too large"). The first epoch's
/// checkpoint must stay as it was byte for byte, load, and resume the run to its end; no
/// temporary file may stay.
#[test]
fn a_write_torn_part_way_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    // 12 training images in batches of 4: 3 steps an epoch
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --no-cache";
    train_random(&data, &run, &format!("{flags} --max-steps 3"));
    let checkpoint = run.join("checkpoint.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();
    let model = std::fs::metadata(run.join("model.safetensors"))
        .unwrap()
        .len();
    let limit = (model + before.len() as u64) / 2;
    let mut cmd = command();
    cmd.args(resume_args(&data, &run, flags));
    limit_file_size(&mut cmd, limit);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("checkpoint.safetensors") && stderr.contains("File too large"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Os {"),
        "the OS's words, not a debug form: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_no_temporary_files(&run);
    assert_eq!(meta_json(&run)["epochs"].as_array().map(Vec::len), Some(1));
    assert!(
        std::fs::read(&checkpoint).unwrap() == before,
        "the previous checkpoint changed"
    );
    let (_, state) = load_checkpoint(&run).expect("the first epoch's checkpoint loads");
    assert_eq!((state.epoch, state.batch), (2, 0));
    ok(&resume_args(&data, &run, flags));
    assert_eq!(meta_json(&run)["epochs"].as_array().unwrap().len(), 2);
}

/// Starts `cmd` with files limited to `bytes`: a write beyond it fails with EFBIG, after what
/// fits is written (SIGXFSZ, which would kill the process instead, is ignored).
fn limit_file_size(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec, two plain system calls (on Linux), no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn assert_no_temporary_files(run: &Path) {
    let listing: Vec<String> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        listing.iter().all(|name| !name.ends_with(".tmp")),
        "temporary files left: {listing:?}"
    );
}

/// A real full file system: a tmpfs of 600 MB holds one epoch's files (best model 111 MB,
/// checkpoint 216 MB, model 111 MB) but not a second checkpoint written beside the first.
/// The run must fail with the OS's message, leave no temporary file, and keep the first
/// epoch's checkpoint, model and meta.json.
#[test]
#[ignore = "needs permission to mount a tmpfs (root): scripts/test runs it where mount works"]
fn tmpfs_full_disk_fails_the_save_and_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let mount = dir.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=600m", "tmpfs", s(&mount)])
        .status()
        .is_ok_and(|st| st.success());
    assert!(mounted, "cannot mount a tmpfs at {}", mount.display());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let run = mount.join("run");
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --no-cache";
    let out = vggtiny(&train_args(&data, &run, flags));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        !stderr.contains("Os {"),
        "the OS's words, not a debug form: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_no_temporary_files(&run);
    let (_, state) = load_checkpoint(&run).expect("the first epoch's checkpoint is intact");
    assert_eq!(
        (state.epoch, state.batch),
        (2, 0),
        "resumes at the start of epoch 2"
    );
    // every file of the first epoch was written: the disk filled in the second
    assert_eq!(meta_json(&run)["epochs"].as_array().unwrap().len(), 1);
    assert!(run.join("model.safetensors").is_file());
}

#[test]
fn a_single_class_is_not_a_classification_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 4);
    std::fs::remove_dir_all(data.join("train/n90000001")).unwrap();
    let out = dir.path().join("run");
    let err = fails(&train_args(&data, &out, "--batch-size 2 --holdout 0.25"), 2);
    assert!(err.contains("at least 2"), "{err}");
}

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
    let (_, state) = load_checkpoint(&run).unwrap();
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
        let (_, state) = load_checkpoint(&run).expect("a readable checkpoint");
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

/// A stopped run whose metrics.jsonl lost lines (removed, cut short mid-line, or a byte
/// flipped) still resumes: the log is never padded, what it kept readable stays, and the epochs
/// so far come from meta.json.
#[test]
fn a_lost_or_short_metrics_log_does_not_break_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    // 3 steps an epoch: the stop falls in epoch 2
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --log-interval 1";
    for damage in ["removed", "short", "flipped"] {
        let run = dir.path().join(damage);
        train_random(&data, &run, &format!("{flags} --max-steps 4"));
        let log = run.join("metrics.jsonl");
        if damage == "removed" {
            std::fs::remove_file(&log).unwrap();
        } else if damage == "short" {
            let text = std::fs::read(&log).unwrap();
            std::fs::write(&log, &text[..text.len() / 2 + 3]).unwrap();
        } else {
            // the second line's opening brace: that line and all after it unreadable
            let mut text = std::fs::read(&log).unwrap();
            let second = text.iter().position(|&b| b == b'\n').unwrap() + 1;
            text[second] = b'#';
            std::fs::write(&log, &text).unwrap();
        }
        let args = resume_args(&data, &run, flags);
        let out = vggtiny(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{damage}: {stderr}");
        assert!(stderr.contains("the lost lines stay lost"), "{stderr}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains('\0'), "{damage}: padded");
        let events = json_lines(&log);
        assert!(events
            .iter()
            .any(|e| e["event"] == "epoch" && e["epoch"] == 2));
        let epochs: Vec<u64> = meta_json(&run)["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(epochs, [1, 2], "{damage}: each epoch once, in order");
    }
}

/// A checkpoint is trusted only whole and only in its own run: a flipped digit in its position
/// (metadata) is a corrupt file, and a checkpoint copied in from a run of another recipe is
/// refused with the difference; neither refusal changes a file.
#[test]
fn a_checkpoint_with_a_flipped_position_or_from_another_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --log-interval 1";
    let (run, other) = (dir.path().join("run"), dir.path().join("other"));
    train_random(&data, &run, &format!("{flags} --max-steps 2"));
    train_random(
        &data,
        &other,
        &format!("{flags} --max-steps 2 --image-size 32"),
    );
    let checkpoint = run.join("checkpoint.safetensors");
    let resume = resume_args(&data, &run, flags);

    let bytes = std::fs::read(&checkpoint).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == br#"batch\":2"#)
        .expect("the position in the metadata");
    let mut flipped = bytes.clone();
    flipped[at + 8] = b'3';
    std::fs::write(&checkpoint, &flipped).unwrap();
    let log_before = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let err = fails(&resume, 2);
    assert!(
        err.contains("corrupt") && err.contains("start it over with --force"),
        "{err}"
    );
    // cut short, as a full disk outside vggtiny's own writes would leave it
    std::fs::write(&checkpoint, &bytes[..bytes.len() / 3]).unwrap();
    let err = fails(&resume, 2);
    assert!(err.contains("start it over with --force"), "{err}");
    assert_eq!(
        std::fs::read(run.join("metrics.jsonl")).unwrap(),
        log_before
    );

    std::fs::copy(other.join("checkpoint.safetensors"), &checkpoint).unwrap();
    let err = fails(&resume, 2);
    assert!(
        err.contains("written by another run")
            && err.contains("--image-size 32 where meta.json has 64"),
        "{err}"
    );
    std::fs::write(&checkpoint, &bytes).unwrap();
    ok(&resume);
}

/// `--resume` and eval check that the dataset holds the very images the run was split on:
/// one image replaced by another (the count unchanged) is refused by both, naming the run;
/// the same images in another place resume and score.
#[test]
fn a_replaced_image_is_refused_and_a_moved_dataset_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let moved = dataset(&dir.path().join("elsewhere"), 2, 8);
    // an undecodable image in both, left out and recorded (relative to train/)
    for tree in [&data, &moved] {
        std::fs::write(tree.join("train/n90000000/images/junk.JPEG"), b"junk").unwrap();
    }
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --skip-bad-images";
    train_random(&data, &run, &format!("{flags} --max-steps 2"));
    let image = std::fs::read_dir(data.join("train/n90000001/images"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let gradient: Vec<u8> = (0..64 * 64 * 3).map(|i| (i % 253) as u8).collect();
    std::fs::write(&image, jpeg(&gradient, 64, 64)).unwrap();

    let resume = resume_args(&data, &run, flags);
    let err = fails(&resume, 2);
    assert!(err.contains("split over other images"), "{err}");
    let scored = ["eval", "--data", s(&data), "--checkpoint", s(&run)];
    let err = fails(&scored, 2);
    assert!(err.contains("split over other images"), "{err}");

    let resume = resume_args(&moved, &run, flags);
    ok(&resume);
    eval_json(&moved, &run, "");
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

/// Image files that would hang or exhaust the decoder end in a clear error instead: a named
/// pipe among the images (reading it would wait forever) and an image of more pixels than PIL
/// allows (a 30000x30000 JPEG header: 900 megapixels, 2.7 GB decoded). `--skip-bad-images`
/// leaves them out; `--max-image-pixels` moves the cap, and the image cache follows it.
#[test]
fn a_named_pipe_and_a_decompression_bomb_are_refused_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let class = data.join("train/n90000000/images");
    let pipe = class.join("pipe.JPEG");
    let c_path = std::ffi::CString::new(s(&pipe)).unwrap();
    // SAFETY: creates a FIFO at a path this test owns.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let gradient: Vec<u8> = (0..64 * 64 * 3).map(|i| (i % 251) as u8).collect();
    let mut bomb = jpeg(&gradient, 64, 64);
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]); // 30000 x 30000
    std::fs::write(class.join("bomb.JPEG"), bomb).unwrap();

    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --max-steps 1 --no-cache";
    let started = Instant::now();
    let err = fails(&train_args(&data, &run, flags), 2);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(err.contains("pipe.JPEG: not a regular file"), "{err}");
    assert!(
        err.contains("bomb.JPEG: cannot decode JPEG: 30000x30000 is more than 178956970 pixels"),
        "{err}"
    );
    train_random(&data, &run, &format!("{flags} --skip-bad-images --force"));
    assert_eq!(meta_json(&run)["skipped"].as_array().unwrap().len(), 2);

    // the cap moves both ways, through the image cache too
    let small = dir.path().join("small");
    std::fs::remove_file(&pipe).unwrap();
    std::fs::remove_file(class.join("bomb.JPEG")).unwrap();
    let cached = "--batch-size 4 --holdout 0.25 --max-steps 1";
    let mut args = train_args(&data, &small, cached);
    args.extend(["--max-image-pixels", "4000"]);
    let err = fails(&args, 2);
    assert!(err.contains("64x64 is more than 4000 pixels"), "{err}");
    train_random(&data, &small, cached);
}

/// A meta.json with a value out of range (an `image_size` of 0) is refused where it is read,
/// naming the file and the value (exit 2), by every command that reads it, instead of failing
/// inside libtorch with a C++ backtrace.
#[test]
fn a_damaged_value_in_meta_json_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2";
    train_random(&data, &run, &format!("{flags} --max-steps 1"));
    let path = run.join("meta.json");
    let mut meta = meta_json(&run);
    meta["config"]["image_size"] = 0.into();
    std::fs::write(&path, serde_json::to_string_pretty(&meta).unwrap()).unwrap();
    let image = data.join("val/images/val_0.JPEG");
    let resume = resume_args(&data, &run, flags);
    for args in [
        vec!["eval", "--data", s(&data), "--checkpoint", s(&run)],
        vec!["predict", s(&image), "--checkpoint", s(&run)],
        resume,
    ] {
        let err = fails(&args, 2);
        assert!(
            err.contains("meta.json: a damaged value")
                && err.contains("--image-size")
                && err.contains("put back an intact copy"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("frame #"), "{err}");
    }
    let text = serde_json::to_string_pretty(&meta).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let err = fails(&["eval", "--data", s(&data), "--checkpoint", s(&run)], 2);
    assert!(
        err.contains("not a vggtiny meta.json") && err.contains("put back an intact copy"),
        "{err}"
    );
}

/// An undecodable image whose file name is not UTF-8, left out with `--skip-bad-images`: the
/// run records it (lossily: JSON holds text) and ends normally, and eval and `--resume`
/// recover its split.
#[test]
fn a_skipped_image_with_a_non_utf8_name_is_recorded() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let name = std::ffi::OsStr::from_bytes(b"bad\xff.JPEG");
    std::fs::write(
        data.join("train/n90000000/images").join(name),
        b"not a jpeg",
    )
    .unwrap();
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --skip-bad-images";
    train_random(&data, &run, &format!("{flags} --max-steps 2"));
    let skipped = meta_json(&run)["skipped"].clone();
    assert!(
        skipped[0].as_str().unwrap().ends_with("bad\u{fffd}.JPEG"),
        "{skipped}"
    );
    eval_json(&data, &run, "");
    let resume = resume_args(&data, &run, flags);
    ok(&resume);
}

/// What goes wrong says what happened and what to do: a negative seed is a seed, an `--out`
/// or `--tensorboard` that is a file and a report `--out` that is a directory are input errors
/// (exit 2), a run without meta.json is not offered `--resume`, and a loss that fails before
/// any checkpoint does not speak of one.
#[test]
fn messages_say_what_happened_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --max-steps 1";
    train_random(&data, &run, &format!("{flags} --seed -1"));
    assert_eq!(meta_json(&run)["split"]["seed"], -1);

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = fails(&train_args(&data, &file, flags), 2);
    assert!(err.contains("a file is there"), "{err}");
    let tb_run = dir.path().join("tb-run");
    let mut args = train_args(&data, &tb_run, flags);
    args.extend(["--tensorboard", s(&file)]);
    let err = fails(&args, 2);
    assert!(
        err.contains("--tensorboard") && err.contains("a file is there"),
        "{err}"
    );
    let err = fails(&["report", s(&run), "--out", s(dir.path())], 2);
    assert!(err.contains("name the .png file"), "{err}");

    std::fs::remove_file(run.join("meta.json")).unwrap();
    let resume = resume_args(&data, &run, flags);
    let err = fails(&resume, 2);
    assert!(err.contains("has a checkpoint but no meta.json"), "{err}");
    let err = fails(&train_args(&data, &run, flags), 2);
    assert!(
        err.contains("--force") && !err.contains("--resume"),
        "{err}"
    );

    let base = dir.path().join("base");
    train_random(&data, &base, flags);
    let line = format!(
        "finetune --data {} --from {} --out {} --force",
        s(&data),
        s(&base),
        s(&base)
    );
    let err = fails(&words(&line), 2);
    assert!(err.contains("which the new run replaces"), "{err}");
    assert!(base.join("model.safetensors").is_file());

    let err = fails(
        &train_args(
            &data,
            &dir.path().join("nan"),
            "--batch-size 4 --holdout 0.25 --lr 1e20 --max-lr 1e30",
        ),
        1,
    );
    assert!(err.contains("no checkpoint was written yet"), "{err}");
}
