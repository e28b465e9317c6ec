//! `vggtiny inspect` (hidden): vggtiny's own view of a dataset, of decoded pixels, of its
//! augmentation and of its initialisation, printed or saved so that the parity suite can
//! compare them with torchvision, PIL and PyTorch.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tch::{Device, Tensor};

use crate::bail_input;
use crate::data::augment::{augment, resize, to_float, Constants};
use crate::data::augment_params::{AugmentParams, ParamTensors};
use crate::data::decode_list::decode_files;
use crate::data::scan::{scan_image_folder, scan_val, DataRoot, Sample};
use crate::data::split::SplitSpec;
use crate::io::safetensors::{read_tensors, save_tensors};
use crate::model::Vgg16;
use crate::recipe::{self, validate_holdout};

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// JSON: classes, samples (path, label), holdout indices of the split, val samples
    Dataset {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, default_value_t = recipe::SEED)]
        seed: i64,
        #[arg(long, default_value_t = recipe::HOLDOUT)]
        holdout: f64,
    },
    /// JSON: for each `N:SEED:HOLDOUT` case, the holdout indices of the split of N samples
    Split {
        #[arg(required = true, value_name = "N:SEED:HOLDOUT")]
        cases: Vec<String>,
    },
    /// Decode images into a safetensors file holding `images` (uint8, N x SIDE x SIDE x 3)
    Decode {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Side to store them at (other sizes: resized and centre-cropped)
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
        side: u16,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Augment `images` of a safetensors file with the per-sample parameters of a JSON file;
    /// writes `augmented` (float NCHW in [0, 1], before Normalize)
    Augment {
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        params: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Side the crops are resized to (`--image-size`)
        #[arg(long, default_value_t = recipe::IMAGE_SIZE)]
        image_size: u32,
    },
    /// Resize `images` of a safetensors file as eval does at `--image-size`; writes `resized`
    /// (float NCHW in [0, 1], before Normalize)
    Resize {
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[arg(long)]
        image_size: u32,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// JSON: augmentation parameters for N samples, drawn as training draws them
    SampleParams {
        #[arg(long)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// A freshly initialised model's tensors, as safetensors
    Init {
        #[arg(long)]
        classes: i64,
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

pub fn run(command: &InspectCommand) -> Result<()> {
    match command {
        InspectCommand::Dataset {
            data,
            seed,
            holdout,
        } => dataset(data, *seed, *holdout),
        InspectCommand::Split { cases } => {
            let holdouts = cases
                .iter()
                .map(|case| split_case(case).map(|spec| spec.split().holdout))
                .collect::<Result<Vec<_>>>()?;
            println!("{}", serde_json::to_string(&holdouts)?);
            Ok(())
        }
        InspectCommand::Decode { out, side, images } => save_tensors(
            out,
            &[(
                "images".to_string(),
                decode_files(images, usize::from(*side))?,
            )],
        ),
        InspectCommand::Augment {
            input,
            params,
            out,
            image_size,
        } => augment_file(input, params, out, *image_size),
        InspectCommand::Resize {
            input,
            image_size,
            out,
        } => {
            let resized = resize(&to_float(&images_of(input)?), i64::from(*image_size));
            save_tensors(out, &[("resized".to_string(), resized)])
        }
        InspectCommand::SampleParams { n, seed } => {
            let params = AugmentParams::sample(*n, 64, &mut ChaCha8Rng::seed_from_u64(*seed));
            println!("{}", serde_json::to_string(&params)?);
            Ok(())
        }
        InspectCommand::Init { classes, seed, out } => {
            tch::manual_seed(*seed);
            save_tensors(out, &Vgg16::new(*classes, Device::Cpu).state())
        }
    }
}

/// The tensor `images` of a safetensors file.
fn images_of(input: &Path) -> Result<Tensor> {
    let images = read_tensors(input)?
        .into_iter()
        .find(|(name, _)| name == "images")
        .map(|(_, t)| t);
    match images {
        Some(images) => Ok(images),
        None => bail_input!("{}: no tensor named images", input.display()),
    }
}

/// Augments the images of `input` with the parameters of the JSON file `params`.
fn augment_file(input: &Path, params: &Path, out: &Path, image_size: u32) -> Result<()> {
    let images = images_of(input)?;
    let text =
        fs::read_to_string(params).with_context(|| format!("cannot read {}", params.display()))?;
    let params: AugmentParams = serde_json::from_str(&text)
        .with_context(|| format!("{}: not augmentation parameters", params.display()))?;
    if params.len() as i64 != images.size()[0] {
        bail_input!(
            "{} parameter sets for {} images",
            params.len(),
            images.size()[0]
        );
    }
    let device = images.device();
    let tensors = ParamTensors::new(&params, device);
    let side = i64::from(image_size);
    let augmented = augment(&images, &params, &tensors, &Constants::on(device), side);
    save_tensors(out, &[("augmented".to_string(), augmented)])
}

/// `N:SEED:HOLDOUT` as a split.
fn split_case(case: &str) -> Result<SplitSpec> {
    let parts: Vec<&str> = case.split(':').collect();
    let [n, seed, holdout] = parts[..] else {
        bail_input!("inspect split: {case:?} is not N:SEED:HOLDOUT");
    };
    let parsed = (|| -> Option<(usize, i64, f64)> {
        Some((n.parse().ok()?, seed.parse().ok()?, holdout.parse().ok()?))
    })();
    let Some((n, seed, holdout)) = parsed else {
        bail_input!("inspect split: {case:?} is not N:SEED:HOLDOUT");
    };
    validate_holdout(holdout)?;
    Ok(SplitSpec::new(seed, holdout, n))
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
