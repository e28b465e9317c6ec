//! Mistakes refused before they cost a run: a dataset of one class, an `--out` or
//! `--tensorboard` that is a file, a report `--out` that is a directory, a run without
//! meta.json, a stage 2 whose --from is its --out, and a loss that fails before any
//! checkpoint. Each message must say what happened and what to do, and offer nothing that
//! would not work.

use crate::common::*;

#[test]
fn a_single_class_is_not_a_classification_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 4);
    std::fs::remove_dir_all(data.join("train/n90000001")).unwrap();
    let out = dir.path().join("run");
    let err = fails(&train_args(&data, &out, "--batch-size 2 --holdout 0.25"), 2);
    assert!(err.contains("at least 2"), "{err}");
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
