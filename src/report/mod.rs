//! `vggtiny report`'s content: the training curves of one or more runs overlaid in one PNG,
//! and a model's accuracy per class with the class pairs it confuses most.

pub mod charts;
pub mod per_class;

use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::style::RGBColor;

use crate::data::loader::batches_per_epoch;
use crate::run_dir::config::Init;
use crate::run_dir::meta::{load_meta, Meta};
use crate::run_dir::metrics::{read_events, BatchRecord, EpochRecord, Event};
use crate::run_dir::{ModelChoice, META_FILE, METRICS_FILE};
use charts::{Chart, Page, Series, XAxis, PALETTE};

/// A run's name in legends: its folder name, with the parent's when that alone is ambiguous.
fn label(run: &Path, all: &[PathBuf]) -> String {
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

fn chart(title: &str, x: XAxis, y_label: &str) -> Chart {
    Chart {
        title: title.into(),
        x,
        y_label: y_label.into(),
        log_y: false,
        series: Vec::new(),
    }
}

/// The four charts: training loss and learning rate (log axis) per logged step, holdout loss
/// and holdout top-1 (solid) / top-5 (dashed) in percent per epoch.
fn empty_charts() -> [Chart; 4] {
    [
        chart("Training loss (logged steps)", XAxis::Step, "loss"),
        chart("Holdout loss per epoch", XAxis::Epoch, "mean NLL"),
        chart(
            "Holdout accuracy (solid top-1, dashed top-5)",
            XAxis::Epoch,
            "accuracy (%)",
        ),
        Chart {
            log_y: true,
            ..chart("Learning rate (log scale)", XAxis::Step, "lr")
        },
    ]
}

/// Where a run starts on the charts' axes: (steps, epochs) before its first.
type Offset = (f64, f64);

/// Optimizer steps and epochs of a run up to the model a later stage took from it: its last
/// epoch, or its best one (`which`), from its `meta.json`.
fn length(meta: &Meta, which: ModelChoice) -> Offset {
    let [train, _] = meta.split.lengths();
    let per_epoch = batches_per_epoch(train, meta.config.recipe.batch_size);
    let epochs = match (which, meta.best) {
        (ModelChoice::Best, Some(best)) => best.epoch as usize,
        _ => meta.epochs.len(),
    };
    ((per_epoch * epochs) as f64, epochs as f64)
}

/// The same path, resolved where it exists (runs are named relative to different folders).
fn same_place(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    canonical(a) == canonical(b)
}

/// Where each run starts: a run that began from an earlier run of the list (`finetune --from`
/// it, a third stage from the second) continues where that one ended, so that the stages of
/// one training read as one run; any other run starts at 0.
fn offsets(runs: &[PathBuf], metas: &[Option<Meta>]) -> Vec<Offset> {
    let mut out: Vec<Offset> = Vec::with_capacity(runs.len());
    for meta in metas {
        let from = meta.as_ref().and_then(|m| match &m.config.origin.init {
            Init::From(path) => Some((path, m.config.recipe.which)),
            _ => None,
        });
        let which = from.map_or(ModelChoice::Last, |(_, which)| which);
        let earlier = from.and_then(|(path, _)| {
            let model_file = path.is_file() || path.extension().is_some_and(|e| e == "safetensors");
            let dir = if model_file {
                path.parent()?
            } else {
                path.as_path()
            };
            (0..out.len()).find(|&j| same_place(dir, &runs[j]))
        });
        let start = match earlier.and_then(|j| Some((out[j], metas[j].as_ref()?))) {
            Some(((steps, epochs), before)) => {
                let (s, e) = length(before, which);
                (steps + s, epochs + e)
            }
            None => (0.0, 0.0),
        };
        out.push(start);
    }
    out
}

/// Adds one run's lines, in `color`, to the charts, shifted by `at`.
fn add_run(charts: &mut [Chart; 4], events: &[Event], color: RGBColor, at: Offset) {
    let batches = || {
        events.iter().filter_map(|e| match e {
            Event::Batch(b) => Some(b),
            Event::Epoch(_) => None,
        })
    };
    let epochs = || {
        events.iter().filter_map(|e| match e {
            Event::Epoch(r) => Some(r),
            Event::Batch(_) => None,
        })
    };
    let line = |points: Vec<(f64, f64)>, dashed| Series {
        color,
        points,
        dashed,
    };
    let [loss, holdout, accuracy, lr] = charts;
    let (steps, first_epoch) = at;
    let per_step =
        |get: fn(&BatchRecord) -> f64| batches().map(|b| (steps + b.step as f64, get(b))).collect();
    loss.series.push(line(per_step(|b| b.loss), false));
    lr.series.push(line(per_step(|b| b.lr), false));
    let per_epoch = |get: fn(&EpochRecord) -> f64| {
        epochs()
            .map(|r| (first_epoch + f64::from(r.epoch), get(r)))
            .collect()
    };
    holdout
        .series
        .push(line(per_epoch(|r| r.holdout_loss), false));
    accuracy
        .series
        .push(line(per_epoch(|r| 100.0 * r.holdout_top1), false));
    let top5: Vec<(f64, f64)> = epochs()
        .filter_map(|r| Some((first_epoch + f64::from(r.epoch), 100.0 * r.holdout_top5?)))
        .collect();
    if !top5.is_empty() {
        accuracy.series.push(line(top5, true));
    }
}

/// Draws the training curves of `runs`, overlaid, into the PNG `out`.
pub fn draw_curves(runs: &[PathBuf], out: &Path) -> Result<()> {
    let mut charts = empty_charts();
    let mut legend = Vec::new();
    let metas: Vec<Option<Meta>> = runs
        .iter()
        .map(|run| load_meta(&run.join(META_FILE)).ok())
        .collect();
    for ((i, run), at) in runs.iter().enumerate().zip(offsets(runs, &metas)) {
        let metrics = run.join(METRICS_FILE);
        if !metrics.exists() {
            // the curves are the log's; the rest of the report needs only the model
            eprintln!(
                "warning: {} is missing: no curves for that run",
                metrics.display()
            );
            continue;
        }
        let events = read_events(&metrics)?;
        let color = PALETTE[i % PALETTE.len()];
        add_run(&mut charts, &events, color, at);
        legend.push((label(run, runs), color));
    }
    let footer = runs
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join("  ");
    let page = Page {
        title: "vggtiny report",
        legend: &legend,
        charts: &charts,
        footer: &format!("runs: {footer}"),
    };
    charts::save_png(&page, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(init: Init, epochs: usize) -> Option<Meta> {
        use crate::data::split::SplitSpec;
        use crate::model::Stage;
        use crate::run_dir::config::TrainConfig;
        let mut config = TrainConfig::example(Stage::Base, init);
        config.recipe.batch_size = 10;
        let mut meta = Meta::new(Stage::Base, vec![], SplitSpec::new(1, 0.5, 200), config);
        meta.epochs = (0..epochs).map(|_| EpochRecord::example(1.0)).collect();
        Some(meta)
    }

    #[test]
    fn stages_started_from_earlier_runs_continue_them() {
        let runs = [
            PathBuf::from("r/base"),
            PathBuf::from("r/ft"),
            PathBuf::from("r/third"),
            PathBuf::from("other"),
        ];
        let mut base = meta(Init::RandomInit, 10);
        if let Some(m) = base.as_mut() {
            m.best = Some(crate::run_dir::meta::Best {
                epoch: 4,
                top1: 0.5,
            });
        }
        let mut from_best = meta(Init::From(PathBuf::from("r/base")), 1);
        if let Some(m) = from_best.as_mut() {
            m.config.recipe.which = ModelChoice::Best;
        }
        let metas = [
            base,
            meta(Init::From(PathBuf::from("r/base")), 5),
            meta(Init::From(PathBuf::from("r/ft/best.safetensors")), 3),
            meta(Init::From(PathBuf::from("elsewhere")), 2),
            from_best,
        ];
        // 100 training images in batches of 10: 10 steps an epoch
        assert_eq!(
            offsets(&runs, &metas),
            vec![
                (0.0, 0.0),
                (100.0, 10.0),
                (150.0, 15.0),
                (0.0, 0.0),
                (40.0, 4.0)
            ]
        );
    }

    /// Accuracy is charted in percent, as everything else prints it, and learning rates on a
    /// log axis.
    #[test]
    fn accuracy_is_in_percent_and_the_learning_rate_on_a_log_axis() {
        let mut charts = empty_charts();
        let epoch = Event::Epoch(EpochRecord::example(1.0));
        add_run(&mut charts, &[epoch], PALETTE[0], (0.0, 0.0));
        let [_, _, accuracy, lr] = &charts;
        assert_eq!(accuracy.series[0].points, [(1.0, 50.0)]);
        assert_eq!(accuracy.series[1].points, [(1.0, 100.0)]);
        assert!(accuracy.y_label.contains('%') && lr.log_y);
    }

    #[test]
    fn legend_labels_tell_runs_apart() {
        let runs = [
            PathBuf::from("a/base"),
            PathBuf::from("b/base"),
            PathBuf::from("c/ft"),
        ];
        assert_eq!(label(&runs[0], &runs), "a/base");
        assert_eq!(label(&runs[2], &runs), "ft");
    }
}
