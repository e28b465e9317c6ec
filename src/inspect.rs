//! `vggtiny inspect` (hidden): vggtiny's own view of a dataset and of decoded pixels, printed
//! or saved so that the parity suite can compare them with torchvision and PIL.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::checkpoint::save_tensors;
use crate::cli::InspectCommand;
use crate::config::validate_holdout;
use crate::data::cache::decode_all;
use crate::data::scan::{scan_image_folder, scan_val, DataRoot, Sample};
use crate::data::split::SplitSpec;

pub fn run(command: &InspectCommand) -> Result<()> {
    match command {
        InspectCommand::Dataset {
            data,
            seed,
            holdout,
        } => dataset(data, *seed, *holdout),
        InspectCommand::Decode { out, images } => {
            let samples: Vec<Sample> = images
                .iter()
                .map(|path| Sample {
                    path: path.clone(),
                    label: 0,
                })
                .collect();
            let (set, _) = decode_all(&samples)?;
            save_tensors(out, &[("images".to_string(), set.images)])
        }
    }
}

fn dataset(data: &Path, seed: i64, holdout: f64) -> Result<()> {
    validate_holdout(holdout)?;
    let root = DataRoot::locate(data)?;
    let list = scan_image_folder(&root.train)?;
    let split = SplitSpec::new(seed, holdout, list.samples.len()).split();
    let pairs = |samples: &[Sample]| -> Vec<serde_json::Value> {
        samples
            .iter()
            .map(|s| json!([s.path.to_string_lossy(), s.label]))
            .collect()
    };
    let val = match &root.val {
        Some(dir) => Some(pairs(&scan_val(dir, &list.classes)?)),
        None => None,
    };
    let view = json!({
        "classes": list.classes,
        "samples": pairs(&list.samples),
        "holdout": split.holdout,
        "val": val,
    });
    println!("{view}");
    Ok(())
}
