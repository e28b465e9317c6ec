//! `vggtiny predict`: the five most likely classes of image files, as text or JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use serde::Serialize;

use super::flags::{DeviceFlag, ModelFlags, ScoreBatch};
use super::print_json;
use crate::bail_input;
use crate::data::scan::{find_classes, shown_class, DataRoot};
use crate::eval::predict::{Classifier, Prediction};
use crate::eval::tta::Tta;

#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Image files (any size or format; resized to 64x64)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelFlags,
    /// Dataset root whose classes a bare model file (no meta.json) was trained on
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Test-time augmentation: average the class probabilities over views of each image
    #[arg(long, value_enum, default_value_t = Tta::None)]
    pub tta: Tta,
    #[command(flatten)]
    pub batch: ScoreBatch,
    /// Print one JSON object (version, predictions) instead of text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceFlag,
}

pub fn run(args: &PredictArgs) -> Result<()> {
    let device = args.device.open()?;
    let saved = args.model.open()?;
    let (classes, names) = match (&saved.meta, &args.data) {
        (Some(meta), _) => (meta.classes.clone(), meta.class_names.clone()),
        (None, Some(data)) => {
            let root = DataRoot::locate(data)?;
            let classes = find_classes(&root.train)?;
            let names = root.class_names(&classes)?;
            (classes, names)
        }
        (None, None) => bail_input!(
            "{} has no meta.json beside it: pass --data DIR so that its classes are known",
            saved.name()
        ),
    };
    let model = saved.load_model(classes.len(), device)?;
    let name = saved.name();
    let classifier = Classifier {
        source: &name,
        model: &model,
        image_size: saved.image_size(),
        stored_side: saved.stored_side(),
        classes: &classes,
        names: &names,
    };
    let predictions = classifier.predict(&args.images, args.tta, args.batch.size)?;
    print(&predictions, args.json)
}

/// What `--json` prints (after `version`).
#[derive(Serialize)]
struct Report<'a> {
    predictions: &'a [Prediction],
}

fn print(predictions: &[Prediction], json: bool) -> Result<()> {
    if json {
        return print_json(&Report { predictions });
    }
    for p in predictions {
        println!("{}", p.image.display());
        for (rank, g) in p.top5.iter().enumerate() {
            println!(
                "  {}. {:.4}  {}",
                rank + 1,
                g.prob,
                shown_class(&g.wnid, &g.name)
            );
        }
    }
    Ok(())
}
