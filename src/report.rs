//! `vggtiny report RUN...`: the training curves of one or more runs overlaid in one PNG, and,
//! for the last run, its accuracy per class and the class pairs it confuses most.

use std::path::Path;

use anyhow::{Context, Result};

use crate::checkpoint::{load_meta, Source, META_FILE, METRICS_FILE};
use crate::cli::ReportArgs;
use crate::config::{cache_dir, describe, resolve_device, DEFAULT_HOLDOUT, DEFAULT_SEED};
use crate::data::loader::Loader;
use crate::data::scan::DataRoot;
use crate::eval::{eval_batch_size, predicted_classes, prepare, ScoringData};
use crate::plot::{draw_chart, legend, Canvas, Chart, Rect, Series, BLACK, GRAY, PALETTE};

const WIDTH: usize = 1600;
const HEIGHT: usize = 1000;

fn chart(title: &str, x: &str, y: &str) -> Chart {
    Chart {
        title: title.into(),
        x_label: x.into(),
        y_label: y.into(),
        series: Vec::new(),
    }
}

/// A run's name in legends: its folder name, with the parent's when that alone is ambiguous.
fn label(run: &Path, all: &[std::path::PathBuf]) -> String {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let own = name(run).unwrap_or_else(|| run.display().to_string());
    let clash = all
        .iter()
        .filter(|r| name(r).as_deref() == Some(own.as_str()))
        .count()
        > 1;
    match run.parent().and_then(name) {
        Some(parent) if clash => format!("{parent}/{own}"),
        _ => own,
    }
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let mut loss = chart("Training loss (logged steps)", "step", "loss");
    let mut holdout = chart("Holdout loss per epoch", "epoch", "mean NLL");
    let mut accuracy = chart(
        "Holdout accuracy (solid top-1, dashed top-5)",
        "epoch",
        "accuracy",
    );
    let mut lr = chart("Learning rate", "step", "lr");
    let mut entries = Vec::new();
    for (i, run) in args.runs.iter().enumerate() {
        let path = run.join(METRICS_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not JSON lines", path.display()))?;
        let color = PALETTE[i % PALETTE.len()];
        let name = label(run, &args.runs);
        let pick = |event: &str, x: &str, y: &str| -> Vec<(f64, f64)> {
            events
                .iter()
                .filter(|e| e["event"] == event)
                .filter_map(|e| Some((e[x].as_f64()?, e[y].as_f64()?)))
                .collect()
        };
        let series = |points, dashed| Series {
            label: name.clone(),
            color,
            points,
            dashed,
        };
        loss.series
            .push(series(pick("batch", "step", "loss"), false));
        lr.series.push(series(pick("batch", "step", "lr"), false));
        holdout
            .series
            .push(series(pick("epoch", "epoch", "holdout_loss"), false));
        accuracy
            .series
            .push(series(pick("epoch", "epoch", "holdout_top1"), false));
        accuracy
            .series
            .push(series(pick("epoch", "epoch", "holdout_top5"), true));
        entries.push((name, color, false));
    }

    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    canvas.text(30.0, 18.0, "vggtiny report", BLACK, 3, false);
    legend(&mut canvas, 330.0, 24.0, &entries);
    let top = 70.0;
    let (w, h) = (WIDTH as f64 / 2.0, (HEIGHT as f64 - top) / 2.0);
    for (n, chart) in [&loss, &holdout, &accuracy, &lr].into_iter().enumerate() {
        let area = Rect {
            x: (n % 2) as f64 * w,
            y: top + (n / 2) as f64 * h,
            w,
            h,
        };
        draw_chart(&mut canvas, area, chart);
    }
    canvas.text(
        30.0,
        HEIGHT as f64 - 24.0,
        &format!(
            "runs: {}",
            args.runs
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join("  ")
        ),
        GRAY,
        1,
        false,
    );
    canvas.save_png(&args.out)?;
    println!("wrote {}", args.out.display());

    let last = args.runs.last().context("no run given")?;
    per_class(last, args)
}

/// Accuracy of each class and the most confused pairs, for the model of `run`.
fn per_class(run: &Path, args: &ReportArgs) -> Result<()> {
    let meta = load_meta(&run.join(META_FILE))?;
    let device = resolve_device(&args.device)?;
    eprintln!("device: {}", describe(device));
    let source = Source::resolve(run, args.which)?;
    let data_dir = args
        .data
        .clone()
        .unwrap_or_else(|| meta.config.data.clone());
    let root = DataRoot::locate(&data_dir)?;
    let cache = cache_dir();
    let data = ScoringData {
        root: &root,
        split: args.split,
        seed: DEFAULT_SEED,
        holdout: DEFAULT_HOLDOUT,
        cache_dir: Some(&cache),
        skip_bad_images: true,
    };
    let scoring = prepare(&source, &data, device)?;
    let loader = Loader::new(&scoring.set, device);
    let indices: Vec<usize> = (0..scoring.samples.len()).collect();
    let guesses = predicted_classes(
        &scoring.model,
        &loader,
        &indices,
        eval_batch_size(device, 64),
    )?;
    let classes = &scoring.classes;
    let names = if meta.class_names.len() == classes.len() {
        meta.class_names.clone()
    } else {
        root.class_names(classes)?
    };
    let n = classes.len();
    let mut confusion = vec![vec![0usize; n]; n];
    for (sample, &guess) in scoring.samples.iter().zip(&guesses) {
        confusion[sample.label][guess as usize] += 1;
    }
    let split = args.split.name();
    println!(
        "\nPer-class accuracy of {} on the {split} ({} images), best first:",
        source.model.display(),
        scoring.samples.len()
    );
    println!(
        "{:>4}  {:<10} {:<32} {:>9}  {:>6}",
        "#", "class", "name", "correct", "acc"
    );
    let mut rows: Vec<(usize, usize, usize)> = (0..n)
        .map(|c| (c, confusion[c][c], confusion[c].iter().sum()))
        .collect();
    let acc = |&(_, right, total): &(usize, usize, usize)| right as f64 / total.max(1) as f64;
    rows.sort_by(|a, b| acc(b).total_cmp(&acc(a)).then(a.0.cmp(&b.0)));
    for (rank, row) in rows.iter().enumerate() {
        let (c, right, total) = *row;
        let name: String = names[c].chars().take(32).collect();
        println!(
            "{:>4}  {:<10} {:<32} {:>4}/{:<4}  {:>6.3}",
            rank + 1,
            classes[c],
            name,
            right,
            total,
            acc(row)
        );
    }
    let mut pairs: Vec<(usize, usize, usize)> = (0..n)
        .flat_map(|t| (0..n).map(move |p| (t, p)))
        .filter(|(t, p)| t != p)
        .map(|(t, p)| (t, p, confusion[t][p]))
        .filter(|&(_, _, count)| count > 0)
        .collect();
    pairs.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    println!("\nMost confused (true class -> predicted as):");
    for (t, p, count) in pairs.iter().take(10) {
        let total: usize = confusion[*t].iter().sum();
        println!(
            "  {:>4} ({:>5.1}% of its images)  {} {}  ->  {} {}",
            count,
            100.0 * *count as f64 / total.max(1) as f64,
            classes[*t],
            names[*t],
            classes[*p],
            names[*p]
        );
    }
    if pairs.is_empty() {
        println!("  none: every image was classified correctly");
    }
    Ok(())
}
