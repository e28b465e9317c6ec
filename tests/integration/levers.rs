//! Beyond the recipe: a larger input size, label smoothing, a third stage. Every command that
//! loads a run uses its size, and the holdout loss stays the plain NLL. (That 64 pixels, the
//! recipe's size, takes no resize at all is a unit test of `data::augment::resize`.)

use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// A run at 96x96 with label smoothing: both recorded; finetune inherits the size (or says
/// when told another); eval, eval --tta, predict and report use the run's size; the holdout
/// loss is the plain NLL (eval, which knows no smoothing, reproduces it); resume works.
#[test]
fn a_larger_image_size_and_label_smoothing_carry_through_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 8);
    let base = dir.path().join("base");
    let flags = "--batch-size 6 --holdout 0.25 --epochs 2 --image-size 96 --label-smoothing 0.1";
    train_random(&data, &base, &format!("{flags} --max-steps 4"));
    ok(&resume_args(&data, &base, flags));
    let m = meta_json(&base);
    assert_eq!(m["config"]["image_size"], 96);
    assert_eq!(m["config"]["label_smoothing"], 0.1);
    assert_scores_match_epoch(&eval_json(&data, &base, ""), &m["epochs"][1]);
    let tta = eval_json(&data, &base, "--tta 10crop --split val");
    assert!(tta["loss"].as_f64().unwrap().is_finite());

    let ft = dir.path().join("ft");
    let base_s = s(&base).to_string();
    let out = vggtiny(&words(&format!(
        "finetune --data {} --from {base_s} --out {} --max-steps 1 --batch-size 6",
        s(&data),
        s(&ft)
    )));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(meta_json(&ft)["config"]["image_size"], 96, "inherited");
    let other = dir.path().join("other");
    let out = vggtiny(&words(&format!(
        "finetune --data {} --from {base_s} --out {} --max-steps 1 --batch-size 6 --image-size 64",
        s(&data),
        s(&other)
    )));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("trained at 96x96"), "{stderr}");
    assert_eq!(meta_json(&other)["config"]["image_size"], 64);

    // predict sees what eval sees: the probabilities it gives the val images' true classes
    // (a 3-class model lists every class) make eval's val loss.
    let val_loss = eval_json(&data, &ft, "--split val")["loss"]
        .as_f64()
        .unwrap();
    let predicted_loss = predicted_loss(&ft, &tiny_val(&data));
    assert!(
        (predicted_loss - val_loss).abs() / val_loss < 1e-5,
        "predict {predicted_loss}, eval {val_loss}"
    );
    // report's per-class table counts what eval counts on the holdout
    let png = dir.path().join("report.png");
    let table = ok(&["report", s(&base), s(&ft), "--out", s(&png)]);
    let holdout = eval_json(&data, &ft, "");
    let samples = holdout["samples"].as_f64().unwrap();
    assert_eq!(
        per_class_totals(&table),
        (
            (holdout["top1"].as_f64().unwrap() * samples).round() as usize,
            samples as usize
        ),
        "{table}"
    );
}

/// Users' own class folders (`synth --layout folders`: photos of several sizes and formats, a
/// class-folder val/) train, evaluate on val/, predict and report with nothing beyond --data.
/// At --image-size 96 the photos (largest shorter side 120) are stored at 96, recorded, and
/// eval, predict and report use that side: predict's probabilities make eval's val loss.
#[test]
fn own_class_folders_of_mixed_photos_train_evaluate_predict_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    ok(&words(&format!(
        "synth --layout folders --out {} --classes 3 --per-class 12 --val-per-class 4",
        s(&data)
    )));
    let run = dir.path().join("run");
    train_random(&data, &run, "--epochs 1 --batch-size 8 --image-size 96");
    assert_eq!(meta_json(&run)["stored_side"], 96);
    let val = eval_json(&data, &run, "--split val");
    assert_eq!(val["samples"], 12);
    assert!(val.get("top5").is_some_and(Value::is_null), "{val}");
    let mut labelled = Vec::new();
    for class in ["class00", "class01", "class02"] {
        for file in std::fs::read_dir(data.join("val").join(class)).unwrap() {
            labelled.push((s(&file.unwrap().path()).to_string(), class.to_string()));
        }
    }
    let (predicted, evaluated) = (
        predicted_loss(&run, &labelled),
        val["loss"].as_f64().unwrap(),
    );
    assert!(
        (predicted - evaluated).abs() / evaluated < 1e-5,
        "predict {predicted}, eval {evaluated}"
    );
    // without words.txt, classes are named by their folders
    let one: Value = serde_json::from_str(
        ok(&["predict", "--json", "--checkpoint", s(&run), &labelled[0].0]).trim(),
    )
    .unwrap();
    let guess = &one["predictions"][0]["top5"][0];
    assert_eq!(guess["name"], guess["wnid"], "{one}");
    // and printed once: "1. 0.4123  class01"
    let plain = ok(&["predict", "--checkpoint", s(&run), &labelled[0].0]);
    let guesses: Vec<&str> = plain.lines().filter(|l| l.contains(". 0.")).collect();
    assert_eq!(guesses.len(), 3, "{plain}");
    for line in guesses {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.len() == 3 && fields[2].starts_with("class0"),
            "{plain}"
        );
    }
    let png = dir.path().join("report.png");
    let table = ok(&[
        "report",
        s(&run),
        "--data",
        s(&data),
        "--split",
        "val",
        "--out",
        s(&png),
    ]);
    let samples = 12.0;
    let correct = (val["top1"].as_f64().unwrap() * samples).round() as usize;
    assert_eq!(per_class_totals(&table), (correct, 12), "{table}");
    for class in ["class00", "class01", "class02"] {
        assert!(!table.contains(&format!("{class}  {class}")), "{table}");
        assert!(!table.contains(&format!("{class} {class}")), "{table}");
    }
}

/// The val images of a Tiny ImageNet tree with their classes, from val_annotations.txt.
fn tiny_val(data: &Path) -> Vec<(String, String)> {
    let annotations = std::fs::read_to_string(data.join("val/val_annotations.txt")).unwrap();
    annotations
        .lines()
        .map(|line| {
            let mut fields = line.split('\t');
            let file = data.join("val/images").join(fields.next().unwrap());
            (s(&file).to_string(), fields.next().unwrap().to_string())
        })
        .collect()
}

/// The mean negative log-probability `predict --json` gives the true class of each of the
/// `labelled` images (a model of at most 5 classes lists every class).
fn predicted_loss(run: &Path, labelled: &[(String, String)]) -> f64 {
    let mut args = vec!["predict", "--json", "--checkpoint", s(run)];
    args.extend(labelled.iter().map(|(path, _)| path.as_str()));
    let predicted: Value = serde_json::from_str(ok(&args).trim()).unwrap();
    let predictions = predicted["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), labelled.len());
    let nll: f64 = predictions
        .iter()
        .zip(labelled)
        .map(|(p, (_, wnid))| {
            let guesses = p["top5"].as_array().unwrap();
            let truth = guesses
                .iter()
                .find(|g| g["wnid"] == *wnid)
                .expect("every class");
            -truth["prob"].as_f64().unwrap().ln()
        })
        .sum();
    nll / labelled.len() as f64
}

/// (correct, images) summed over the rows of report's per-class table ("1/3" columns).
fn per_class_totals(table: &str) -> (usize, usize) {
    table
        .lines()
        .skip_while(|l| !l.starts_with("Per-class accuracy"))
        .take_while(|l| !l.starts_with("Most confused"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().find_map(|w| w.split_once('/')))
        .map(|(c, n)| (c.parse::<usize>().unwrap(), n.parse::<usize>().unwrap()))
        .fold((0, 0), |(c, n), (a, b)| (c + a, n + b))
}

/// A third stage is a finetune from a finetune run; the report draws the three as one run.
#[test]
fn a_third_stage_starts_from_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 8);
    let (base, ft, third) = (
        dir.path().join("base"),
        dir.path().join("ft"),
        dir.path().join("third"),
    );
    let flags = "--batch-size 6 --holdout 0.25 --epochs 1 --log-interval 1";
    train_random(&data, &base, flags);
    for (from, out, lr) in [
        (&base, &ft, "1e-5 --max-lr 6e-5"),
        (&ft, &third, "1e-6 --max-lr 6e-6"),
    ] {
        ok(&words(&format!(
            "finetune --data {} --from {} --out {} --lr {lr} {flags}",
            s(&data),
            s(from),
            s(out)
        )));
    }
    let m = meta_json(&third);
    assert_eq!(m["stage"], "finetune");
    assert_eq!(
        m["split"],
        meta_json(&base)["split"],
        "the holdout stays stage 1's"
    );
    assert_eq!(m["config"]["schedule"]["base_lr"], 1e-6);
    let png = dir.path().join("three.png");
    let out = ok(&["report", s(&base), s(&ft), s(&third), "--out", s(&png)]);
    assert!(out.contains("Per-class accuracy"), "{out}");
}
