//! A run's files damaged outside vggtiny: model files and checkpoints truncated, flipped or
//! from another run or architecture, a metrics log that lost lines, a meta.json with a damaged
//! value. Disks, copies and hand edits do this; each must be named as what it is, change no
//! file, and where the run can go on (a lost log), let it.

use std::path::Path;

use crate::common::*;

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
