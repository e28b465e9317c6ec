//! `vggtiny inspect` (hidden): vggtiny's own view of a dataset, of decoded pixels, of its
//! augmentation and of its initialisation, printed or saved so that the parity suite can
//! compare them with torchvision, PIL and PyTorch.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tch::Device;

use crate::bail_input;
use crate::checkpoint::{read_tensors, save_tensors};
use crate::cli::InspectCommand;
use crate::config::validate_holdout;
use crate::data::augment::{augment, AugmentParams};
use crate::data::cache::decode_files;
use crate::data::scan::{scan_image_folder, scan_val, DataRoot, Sample};
use crate::data::split::SplitSpec;
use crate::model::Vgg16;

pub fn run(command: &InspectCommand) -> Result<()> {
    match command {
        InspectCommand::Dataset {
            data,
            seed,
            holdout,
        } => dataset(data, *seed, *holdout),
        InspectCommand::Decode { out, images } => {
            save_tensors(out, &[("images".to_string(), decode_files(images)?)])
        }
        InspectCommand::Augment { input, params, out } => {
            let images = read_tensors(input)?
                .into_iter()
                .find(|(name, _)| name == "images")
                .map(|(_, t)| t);
            let Some(images) = images else {
                bail_input!("{}: no tensor named images", input.display());
            };
            let text = fs::read_to_string(params)
                .with_context(|| format!("cannot read {}", params.display()))?;
            let params: AugmentParams = serde_json::from_str(&text)
                .with_context(|| format!("{}: not augmentation parameters", params.display()))?;
            if params.len() as i64 != images.size()[0] {
                bail_input!(
                    "{} parameter sets for {} images",
                    params.len(),
                    images.size()[0]
                );
            }
            save_tensors(out, &[("augmented".to_string(), augment(&images, &params))])
        }
        InspectCommand::SampleParams { n, seed } => {
            let params = AugmentParams::sample(*n, &mut ChaCha8Rng::seed_from_u64(*seed));
            println!("{}", serde_json::to_string(&params)?);
            Ok(())
        }
        InspectCommand::Init { classes, seed, out } => {
            tch::manual_seed(*seed);
            save_tensors(out, &Vgg16::new(*classes, Device::Cpu).state())
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
