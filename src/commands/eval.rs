//! `vggtiny eval`: top-1/top-5 and mean loss of a model on its run's holdout (its recorded
//! split) or on the official val set.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::flags::{DeviceFlag, ImageFlags, ModelFlags, ScoreBatch};
use super::print_json;
use crate::data::scan::DataRoot;
use crate::eval::scoring::{prepare, EvalSplit, ScoringData};
use crate::eval::tta::Tta;
use crate::eval::{evaluate, top5_text, Scores};
use crate::recipe::{self, validate_holdout};

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Tiny ImageNet root (with train/ and val/), or a class-folder tree
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    #[command(flatten)]
    pub model: ModelFlags,
    /// Which images to score
    #[arg(long, value_enum, default_value_t = EvalSplit::Holdout)]
    pub split: EvalSplit,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Test-time augmentation: average the class probabilities over views of each image
    #[arg(long, value_enum, default_value_t = Tta::None)]
    pub tta: Tta,
    /// Split seed for a checkpoint without meta.json
    #[arg(long, default_value_t = recipe::SEED, allow_negative_numbers = true)]
    pub seed: i64,
    /// Holdout fraction for a checkpoint without meta.json
    #[arg(long, default_value_t = recipe::HOLDOUT, value_name = "FRACTION")]
    pub holdout: f64,
    #[command(flatten)]
    pub batch: ScoreBatch,
    #[command(flatten)]
    pub device: DeviceFlag,
    #[command(flatten)]
    pub images: ImageFlags,
}

/// What `--json` prints (after `version`).
#[derive(Serialize)]
struct Report<'a> {
    split: &'a str,
    tta: Tta,
    #[serde(flatten)]
    scores: Scores,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    validate_holdout(args.holdout)?;
    let device = args.device.open()?;
    let saved = args.model.open()?;
    let root = DataRoot::locate(&args.data)?;
    let cache_dir = args.images.cache.dir();
    let data = ScoringData {
        root: &root,
        split: args.split,
        fallback_split: (args.seed, args.holdout),
        cache_dir: cache_dir.as_deref(),
        skip_bad_images: args.images.skip_bad_images,
    };
    let scoring = prepare(&saved, &data, device)?;
    let loader = scoring.loader(device);
    let indices: Vec<usize> = (0..scoring.samples.len()).collect();
    let scores = evaluate(&scoring.model, &loader, &indices, args.batch.size, args.tta);
    scores.ensure_finite(&saved.name())?;
    print(args, scores)
}

fn print(args: &EvalArgs, scores: Scores) -> Result<()> {
    let split = args.split.name();
    if args.json {
        return print_json(&Report {
            split,
            tta: args.tta,
            scores,
        });
    }
    let tta = match args.tta {
        Tta::None => String::new(),
        other => format!(", test-time augmentation {}", other.name()),
    };
    println!(
        "{split}: {} images{tta}, mean loss {:.4}",
        scores.samples, scores.loss
    );
    println!(
        "Top-1 acc: {:.2}% / Top-5 acc: {}",
        100.0 * scores.top1,
        top5_text(scores.top5)
    );
    Ok(())
}
