//! `vggtiny report RUN...`: the runs' training curves in one PNG, then the accuracy per class
//! of the last run's model and the class pairs it confuses most.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::flags::{open_run, DeviceFlag, ImageFlags, ScoreBatch};
use crate::bail_input;
use crate::data::scan::DataRoot;
use crate::eval::predicted_classes;
use crate::eval::scoring::{prepare, EvalSplit, ScoringData};
use crate::recipe;
use crate::report::draw_curves;
use crate::report::per_class::{self, Confusion};

use crate::model::ModelChoice;

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Run directories, overlaid in the plots; the last one is also scored per class
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The PNG to write
    #[arg(long, default_value = "report.png", value_name = "FILE")]
    pub out: PathBuf,
    /// Dataset to score the last run on [default: the one it trained on]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Which images to score per class
    #[arg(long, value_enum, default_value_t = EvalSplit::Holdout)]
    pub split: EvalSplit,
    /// Which model of the last run: the last epoch's or the best holdout top-1's
    #[arg(long, value_enum, default_value_t = ModelChoice::Last)]
    pub which: ModelChoice,
    #[command(flatten)]
    pub batch: ScoreBatch,
    #[command(flatten)]
    pub device: DeviceFlag,
    #[command(flatten)]
    pub images: ImageFlags,
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let out = &args.out;
    let png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if out.is_dir() || !png {
        bail_input!("--out {}: name the .png file to write", out.display());
    }
    let last = args.runs.last().context("no run given")?;
    // Checked before drawing: a run without the model to score writes nothing.
    let saved = open_run(last, args.which, "RUN", "vggtiny train-base --data DIR")?;
    let Some(meta) = &saved.meta else {
        bail_input!(
            "{}: no meta.json; is it a vggtiny run directory?",
            last.display()
        );
    };
    draw_curves(&args.runs, &args.out)?;
    println!("wrote {}", args.out.display());

    let device = args.device.open()?;
    let data_dir = args
        .data
        .clone()
        .unwrap_or_else(|| meta.config.session.data.clone());
    let root = DataRoot::locate(&data_dir)?;
    let cache_dir = args.images.cache.dir();
    let data = ScoringData {
        root: &root,
        split: args.split,
        fallback_split: (recipe::SEED, recipe::HOLDOUT),
        cache_dir: cache_dir.as_deref(),
        skip_bad_images: args.images.skip_bad_images,
    };
    let scoring = prepare(&saved, &data, device)?;
    let loader = scoring.loader(device);
    let indices: Vec<usize> = (0..scoring.samples.len()).collect();
    let guesses = predicted_classes(
        &scoring.model,
        &loader,
        &indices,
        args.batch.size,
        &saved.name(),
    )?;
    let pairs = scoring.samples.iter().zip(&guesses);
    let confusion = Confusion::new(
        scoring.classes.len(),
        pairs.map(|(s, &g)| (s.label, g as usize)),
    );
    let names = if meta.class_names.len() == scoring.classes.len() {
        meta.class_names.clone()
    } else {
        root.class_names(&scoring.classes)?
    };
    println!(
        "\nPer-class accuracy of {} on the {} ({} images), best first:",
        saved.name(),
        args.split.name(),
        scoring.samples.len()
    );
    per_class::print(&confusion, &scoring.classes, &names);
    Ok(())
}
