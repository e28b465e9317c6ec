//! What a run must never do, whatever it is given: delete a run before checking every input,
//! score a model on another split than its own, call a model of NaN outputs a success, or read
//! images from outside the dataset's class folders or write a run into the dataset.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;

const FLAGS: &str = "--batch-size 4 --holdout 0.25 --epochs 1";

/// Every file of run directory `run` but its lock (which each try rewrites with its pid).
fn files(run: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with(".lock"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    let copied = Command::new("cp").arg("-r").arg(from).arg(to).status();
    assert!(
        copied.is_ok_and(|s| s.success()),
        "cp -r {}",
        from.display()
    );
}

/// `finetune` from `from` on `data` into `out`, plus space-separated `flags`.
fn finetune_args<'a>(
    data: &'a Path,
    from: &'a Path,
    out: &'a Path,
    flags: &'a str,
) -> Vec<&'a str> {
    let mut args = vec![
        "finetune",
        "--data",
        s(data),
        "--from",
        s(from),
        "--out",
        s(out),
    ];
    args.extend(flags.split_whitespace());
    args
}

/// `--force` removes the old run only once every input of the new one is checked, and a
/// refused run removes nothing, not even a user's file that ends in `.tmp`.
#[test]
fn a_forced_run_that_fails_its_checks_leaves_the_old_run_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    train_random(&data, &run, FLAGS);
    std::fs::write(run.join(".userdata.tmp"), "keep").unwrap();
    let before = files(&run);
    assert!(
        before.contains_key("best.safetensors") && before.len() == 6,
        "{:?}",
        before.keys()
    );

    let err = fails(&train_args(&data, &run, FLAGS), 2);
    assert!(err.contains("already holds a run"), "{err}");
    assert_eq!(files(&run), before, "a refused run changed the directory");
    // a run kept as its best model alone (the checkpoint deleted for room) is a run too
    let kept = dir.path().join("kept");
    copy_dir(&run, &kept);
    for file in ["model.safetensors", "checkpoint.safetensors"] {
        std::fs::remove_file(kept.join(file)).unwrap();
    }
    let err = fails(&train_args(&data, &kept, FLAGS), 2);
    assert!(err.contains("--force"), "{err}");
    assert!(kept.join("best.safetensors").is_file());

    let bad = dataset(&dir.path().join("bad"), 2, 8);
    std::fs::write(
        bad.join("train/n90000000/images/broken.JPEG"),
        b"not a jpeg",
    )
    .unwrap();
    let three = dataset(&dir.path().join("three"), 3, 8);
    let forced = format!("{FLAGS} --force");
    let (model, best) = (run.join("model.safetensors"), run.join("best.safetensors"));
    let base_weights = ["--weights", s(&model)];
    let mut from_own_model = train_args(&data, &run, &forced);
    from_own_model.retain(|a| *a != "--random-init");
    from_own_model.extend(base_weights);
    let copy = dir.path().join("copy");
    copy_dir(&run, &copy);
    let copied = files(&copy);
    let tries: [(Vec<&str>, &str); 6] = [
        (
            train_args(&data, &run, "--holdout 0.99 --force"),
            "both must be non-empty",
        ),
        (train_args(&bad, &run, &forced), "broken.JPEG"),
        (finetune_args(&three, &run, &copy, &forced), "class"),
        (from_own_model, "which the new run replaces"),
        (
            finetune_args(&data, &best, &run, &forced),
            "which the new run replaces",
        ),
        (
            finetune_args(&data, &run, &run, &forced),
            "which the new run replaces",
        ),
    ];
    for (args, said) in tries {
        let err = fails(&args, 2);
        assert!(err.contains(said), "{args:?}: no '{said}' in {err}");
        assert_eq!(files(&run), before, "{args:?} changed the old run");
    }
    assert_eq!(files(&copy), copied, "a class mismatch changed the old run");

    // a forced run that starts replaces the run's files (its log too: one epoch, not two)
    // and leaves the user's
    train_random(&data, &run, &format!("{forced} --seed 3"));
    let after = files(&run);
    assert_eq!(after[".userdata.tmp"], b"keep");
    let epochs = json_lines(&run.join("metrics.jsonl"))
        .iter()
        .filter(|e| e["event"] == "epoch")
        .count();
    assert_eq!(epochs, 1, "the old run's log kept");
    assert_eq!(meta_json(&run)["split"]["seed"], 3);
    assert!(
        after["model.safetensors"] != before["model.safetensors"],
        "the old model is still there"
    );
}

/// finetune on a dataset that changed since stage 1 is refused (its split would move stage
/// 1's training images into the holdout), and a run directory whose meta.json is missing or
/// another run's is refused by eval and finetune instead of scored on a default split.
#[test]
fn a_model_is_scored_and_continued_only_on_its_own_split() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let base = dir.path().join("base");
    train_random(&data, &base, &format!("{FLAGS} --seed 7"));

    let grown = dir.path().join("grown");
    copy_dir(&data, &grown);
    let class = grown.join("train/n90000000/images");
    std::fs::copy(class.join("n90000000_0.JPEG"), class.join("extra.JPEG")).unwrap();
    let ft = dir.path().join("ft");
    let err = fails(&finetune_args(&grown, &base, &ft, "--max-steps 1"), 2);
    assert!(
        err.contains("is not the dataset") && err.contains("16 images then, 17 now"),
        "{err}"
    );
    assert!(!ft.join("meta.json").exists());

    let bare = dir.path().join("bare");
    copy_dir(&base, &bare);
    std::fs::remove_file(bare.join("meta.json")).unwrap();
    let other = dir.path().join("other");
    copy_dir(&base, &other);
    let mut meta = meta_json(&other);
    meta["config"]["seed"] = 42.into();
    meta["split"]["seed"] = 42.into();
    std::fs::write(other.join("meta.json"), meta.to_string()).unwrap();
    for (run, said) in [
        (&bare, "no meta.json"),
        (&other, "not the meta.json of the run"),
    ] {
        let eval = ["eval", "--data", s(&data), "--checkpoint", s(run)];
        let err = fails(&eval, 2);
        assert!(err.contains(said) && err.contains("seed 7"), "{err}");
        let err = fails(&finetune_args(&data, run, &ft, "--max-steps 1"), 2);
        assert!(err.contains(said), "{err}");
    }
    // a run directory holds its meta.json, checkpoint or not
    let models_only = dir.path().join("models-only");
    copy_dir(&bare, &models_only);
    std::fs::remove_file(models_only.join("checkpoint.safetensors")).unwrap();
    let eval = ["eval", "--data", s(&data), "--checkpoint", s(&models_only)];
    let err = fails(&eval, 2);
    assert!(err.contains("no meta.json in this directory"), "{err}");
    // the model alone, copied out of its run, is a bare model file again
    let alone = dir.path().join("alone.safetensors");
    std::fs::copy(bare.join("model.safetensors"), &alone).unwrap();
    let scored = eval_json(&data, &alone, "--holdout 0.25 --seed 7");
    assert_eq!(scored, eval_json(&data, &base, ""));
}

/// Training whose batches all go non-finite (skipped) ends in an error, not "Finished", and
/// saves no model; a model of NaN weights is refused by eval, predict and report.
#[test]
fn a_model_of_non_finite_outputs_is_an_error_wherever_it_is_scored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let broken = dir.path().join("broken");
    let flags = format!("{FLAGS} --lr 1e37 --max-lr 1e38 --max-nan-skips 1000");
    let err = fails(&train_args(&data, &broken, &flags), 1);
    assert!(
        err.contains("epoch 1: the holdout loss is") && !err.contains("Finished"),
        "{err}"
    );
    for file in ["model.safetensors", "best.safetensors"] {
        assert!(!broken.join(file).exists(), "{file} saved");
    }
    // ended by --max-steps inside the epoch: checkpointed, but not saved as the model
    let stopped = dir.path().join("stopped");
    let err = fails(
        &train_args(&data, &stopped, &format!("{flags} --max-steps 2")),
        1,
    );
    assert!(err.contains("the checkpoint in"), "{err}");
    assert!(!stopped.join("model.safetensors").exists(), "model saved");

    let run = dir.path().join("run");
    train_random(&data, &run, FLAGS);
    let model = run.join("model.safetensors");
    let mut weights = tensors(&model);
    for t in weights.values_mut() {
        if t.dim() > 1 {
            *t = t.full_like(f64::NAN);
        }
    }
    let named: Vec<(String, tch::Tensor)> = weights.into_iter().collect();
    vggtiny::io::safetensors::save_tensors(&model, &named).unwrap();
    let image = data.join("val/images/val_0.JPEG");
    let png = dir.path().join("report.png");
    for args in [
        vec!["eval", "--data", s(&data), "--checkpoint", s(&run)],
        vec!["predict", s(&image), "--checkpoint", s(&run)],
        vec!["report", s(&run), "--data", s(&data), "--out", s(&png)],
    ] {
        let err = fails(&args, 1);
        assert!(
            err.contains("outputs are not finite numbers"),
            "{args:?}: {err}"
        );
    }
}

/// A run's `--out` inside its `--data` is refused before anything is created there; the val/
/// folder of a class-folder dataset is not a training set; a link in a class folder to the
/// folder above or to another class is not followed.
#[test]
fn the_dataset_stays_as_it_is_and_its_classes_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let inside = data.join("train/myrun");
    let err = fails(&train_args(&data, &inside, FLAGS), 2);
    assert!(err.contains("which the run reads"), "{err}");
    assert!(!inside.exists());
    // beside train/ and val/ is outside what the run reads
    train_random(
        &data,
        &data.join("runs/beside"),
        "--batch-size 4 --holdout 0.25 --max-steps 1",
    );

    let photos = dir.path().join("photos");
    let synth = [
        "synth",
        "--layout",
        "folders",
        "--out",
        s(&photos),
        "--classes",
        "2",
        "--per-class",
        "4",
        "--val-per-class",
        "2",
    ];
    ok(&synth);
    // named as it is, or through a link of another name
    let link = dir.path().join("images");
    std::os::unix::fs::symlink(photos.join("val"), &link).unwrap();
    for val in [photos.join("val"), link] {
        let err = fails(&train_args(&val, &dir.path().join("v"), FLAGS), 2);
        assert!(
            err.contains(&format!(
                "--data {}",
                photos.canonicalize().unwrap().display()
            )),
            "{err}"
        );
    }

    let class = data.join("train/n90000000");
    std::os::unix::fs::symlink("..", class.join("loop")).unwrap();
    let run = dir.path().join("linked");
    let out = vggtiny(&train_args(
        &data,
        &run,
        "--batch-size 4 --holdout 0.25 --max-steps 1",
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("outside its class folder"), "{stderr}");
    assert_eq!(
        meta_json(&run)["split"]["dataset_size"],
        16,
        "images counted twice"
    );
}

/// A resumed run remembers its best epoch: at a learning rate of 1e-12 and `--min-delta 0.99`
/// no later epoch beats the first (that needs a gain of more than 99 points), so the first
/// stays the best across a resume.
#[test]
fn a_resumed_run_keeps_its_best_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    // 12 training images in batches of 4: 3 steps an epoch
    let flags = "--batch-size 4 --holdout 0.25 --epochs 3 --min-delta 0.99 --lr 1e-12 \
                 --max-lr 1e-12";
    train_random(&data, &run, &format!("{flags} --max-steps 3"));
    let first = std::fs::read(run.join("best.safetensors")).unwrap();
    ok(&resume_args(&data, &run, flags));
    let meta = meta_json(&run);
    assert_eq!(meta["epochs"].as_array().map(Vec::len), Some(3));
    assert_eq!(meta["best"]["epoch"], 1, "{}", meta["best"]);
    assert!(std::fs::read(run.join("best.safetensors")).unwrap() == first);
}

/// `--resume` checks the best model file: a damaged one is rebuilt when the checkpoint holds
/// the best epoch's model, and otherwise said lost, the best then chosen again, so that
/// `eval --which best` works when the run ends. A run without its checkpoint is told to start
/// over with `--force`, which then does.
#[test]
fn a_resumed_run_rebuilds_or_replaces_a_damaged_best_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    // 12 training images in batches of 4: 3 steps an epoch
    let flags = "--batch-size 4 --holdout 0.25 --epochs 3";
    train_random(&data, &run, &format!("{flags} --max-steps 3"));
    let best = run.join("best.safetensors");
    let intact = std::fs::read(&best).unwrap();
    let mut flipped = intact.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(&best, flipped).unwrap();
    let out = vggtiny(&resume_args(&data, &run, &format!("{flags} --max-steps 4")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("rebuilt it"),
        "{stderr}"
    );
    assert!(
        std::fs::read(&best).unwrap() == intact,
        "not the best epoch's model"
    );

    std::fs::remove_file(&best).unwrap();
    let out = vggtiny(&resume_args(&data, &run, flags));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot be rebuilt"), "{stderr}");
    let best_epoch = &meta_json(&run)["best"]["epoch"];
    assert!(best_epoch == 2 || best_epoch == 3, "best {best_epoch}");
    eval_json(&data, &run, "--which best");

    // without its checkpoint the run cannot resume, and the advice given works
    std::fs::remove_file(run.join("checkpoint.safetensors")).unwrap();
    let err = fails(&resume_args(&data, &run, flags), 2);
    assert!(err.contains("start it over with --force instead"), "{err}");
    train_random(&data, &run, &format!("{flags} --max-steps 1 --force"));
}

/// A link to nowhere, a link to itself and a val_annotations.txt line naming a missing file
/// are images that cannot be read: named with the way on without `--skip-bad-images`, left
/// out and recorded with it.
#[test]
fn unreadable_files_are_bad_images_that_can_be_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let class = data.join("train/n90000000/images");
    std::os::unix::fs::symlink("/nonexistent.JPEG", class.join("dangling.JPEG")).unwrap();
    std::os::unix::fs::symlink("looping.JPEG", class.join("looping.JPEG")).unwrap();
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --max-steps 1";
    let err = fails(&train_args(&data, &run, flags), 2);
    assert!(
        err.contains("2 image(s) could not be decoded")
            && err.contains("dangling.JPEG")
            && err.contains("looping.JPEG")
            && err.contains("--skip-bad-images"),
        "{err}"
    );
    train_random(&data, &run, &format!("{flags} --skip-bad-images"));
    let skipped = &meta_json(&run)["skipped"];
    assert_eq!(skipped.as_array().map(Vec::len), Some(2), "{skipped}");

    let annotations = data.join("val/val_annotations.txt");
    let mut lines = std::fs::read_to_string(&annotations).unwrap();
    lines.push_str("missing.JPEG\tn90000000\t0\t0\t63\t63\n");
    std::fs::write(&annotations, lines).unwrap();
    let val = [
        "eval",
        "--data",
        s(&data),
        "--checkpoint",
        s(&run),
        "--split",
        "val",
    ];
    let err = fails(&val, 2);
    assert!(err.contains("missing.JPEG"), "{err}");
    let mut skipping = val.to_vec();
    skipping.push("--skip-bad-images");
    let out = ok(&skipping);
    assert!(out.contains("val: 6 images"), "{out}");
}

/// Sizes at the edges: a class without holdout images has no accuracy in report (not 0.0 %),
/// a run without its metrics.jsonl still gets its per-class table, and `bench --steps 0` and a
/// synth of 10^10 images are refused as flags.
#[test]
fn edge_sizes_get_plain_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 4);
    let run = dir.path().join("run");
    // one holdout image: two of the three classes have none
    train_random(&data, &run, "--batch-size 4 --holdout 0.1 --epochs 1");
    std::fs::remove_file(run.join("metrics.jsonl")).unwrap();
    let png = dir.path().join("report.png");
    let out = vggtiny(&["report", s(&run), "--out", s(&png)]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("metrics.jsonl is missing"), "{stderr}");
    let empty: Vec<&str> = stdout.lines().filter(|l| l.contains(" 0/0 ")).collect();
    assert_eq!(empty.len(), 2, "{stdout}");
    assert!(empty.iter().all(|l| l.ends_with("n/a")), "{stdout}");
    assert!(stdout.contains("2 classes have no images"), "{stdout}");

    let err = fails(&["bench", "--steps", "0"], 2);
    assert!(err.contains("--steps"), "{err}");
    let huge = dir.path().join("huge");
    let err = fails(&["synth", "--out", s(&huge), "--per-class", "100000"], 2);
    assert!(err.contains("--per-class"), "{err}");
    assert!(!huge.exists());
}
