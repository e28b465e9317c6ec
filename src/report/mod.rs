//! `vggtiny report`'s content: the training curves of one or more runs overlaid in one PNG,
//! and a model's accuracy per class with the class pairs it confuses most.

pub mod charts;
pub mod per_class;

use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::style::RGBColor;

use crate::config::Init;
use crate::data::loader::batches_per_epoch;
use crate::model::ModelChoice;
use crate::run_dir::meta::{load_meta, Meta};
use crate::run_dir::metrics::{read_events, Event, Panel, PANELS};
use crate::run_dir::{META_FILE, METRICS_FILE};
use charts::{Chart, Page, Series, PALETTE};

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

/// The report's charts, without lines yet.
fn empty_charts() -> Vec<Chart<'static>> {
    let chart = |panel| Chart {
        panel,
        series: Vec::new(),
    };
    PANELS.iter().copied().map(chart).collect()
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

/// Adds one run's lines, in `color`, to the charts, shifted by `at`: each metric of its
/// records that names a chart, the first of the run in a chart solid, the others dashed.
fn add_run(charts: &mut [Chart], events: &[Event], color: RGBColor, at: Offset) {
    let (steps, first_epoch) = at;
    /// One charted metric's points.
    struct Line {
        panel: &'static Panel,
        name: &'static str,
        points: Vec<(f64, f64)>,
    }
    // in the order the metrics first appear
    let mut lines: Vec<Line> = Vec::new();
    for event in events {
        let (x, scalars) = match event {
            Event::Batch(b) => (steps + b.step as f64, b.scalars()),
            Event::Epoch(r) => (first_epoch + f64::from(r.epoch), r.scalars()),
        };
        for scalar in scalars {
            let (Some(panel), Some(value)) = (scalar.chart, scalar.value) else {
                continue;
            };
            let point = (x, scalar.unit.drawn(value));
            match lines.iter_mut().find(|line| line.name == scalar.name) {
                Some(line) => line.points.push(point),
                None => lines.push(Line {
                    panel,
                    name: scalar.name,
                    points: vec![point],
                }),
            }
        }
    }
    let mut drawn_in: Vec<&Panel> = Vec::new();
    for Line { panel, points, .. } in lines {
        let Some(chart) = charts.iter_mut().find(|c| std::ptr::eq(c.panel, panel)) else {
            continue;
        };
        // the run's first line in a chart is solid (colours repeat after eight runs)
        let dashed = drawn_in.iter().any(|p| std::ptr::eq(*p, panel));
        drawn_in.push(panel);
        chart.series.push(Series {
            color,
            points,
            dashed,
        });
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
    use crate::run_dir::metrics::EpochRecord;

    /// A run of `epochs` epochs of 10 batches (100 training images, batches of 10).
    fn meta(init: Init, epochs: usize) -> Option<Meta> {
        let mut meta = Meta::example(&["a", "b"]);
        meta.split = crate::data::split::SplitSpec::new(1, 0.5, 200);
        meta.config.recipe.batch_size = 10;
        meta.config.origin.init = init;
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

    /// Each charted metric is a line of its run in its chart, shifted to where the run starts:
    /// accuracy in percent, top-1 solid and top-5 dashed, learning rates on a log axis.
    #[test]
    fn each_charted_metric_is_a_line_of_its_run() {
        use crate::run_dir::metrics::BatchRecord;
        let mut charts = empty_charts();
        let batch = Event::Batch(BatchRecord::example(3));
        let epoch = Event::Epoch(EpochRecord::example(1.0));
        add_run(
            &mut charts,
            &[batch, epoch.clone()],
            PALETTE[0],
            (10.0, 1.0),
        );
        // a ninth run has the first one's colour, and its own solid and dashed lines
        add_run(&mut charts, &[epoch], PALETTE[0], (0.0, 0.0));
        let [loss, holdout, accuracy, lr] = &charts[..] else {
            panic!("{} charts", charts.len());
        };
        assert_eq!(loss.series[0].points, [(13.0, 2.0)]);
        assert_eq!(lr.series[0].points, [(13.0, 1e-4)]);
        assert!(lr.panel.log_y);
        assert_eq!(holdout.series.len(), 2, "one line a run");
        let dashed: Vec<bool> = accuracy.series.iter().map(|s| s.dashed).collect();
        assert_eq!(dashed, [false, true, false, true]);
        assert_eq!(accuracy.series[0].points, [(2.0, 50.0)]);
        assert_eq!(accuracy.series[1].points, [(2.0, 100.0)]);
        assert_eq!(accuracy.series[2].points, [(1.0, 50.0)]);
        assert!(accuracy.panel.y_label.contains('%'));
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
