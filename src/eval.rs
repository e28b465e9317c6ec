//! Scoring a model: mean NLL, top-1 and top-5 over a list of samples, and the `eval` command.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use tch::{Device, Kind, Reduction, Tensor};

use crate::bail_input;
use crate::checkpoint::{read_tensors, Source};
use crate::cli::{EvalArgs, EvalSplit};
use crate::config::{describe, resolve_device, validate_holdout};
use crate::data::cache::ImageSet;
use crate::data::ensure_same_classes;
use crate::data::loader::Loader;
use crate::data::scan::{find_classes, scan_image_folder, scan_val, DataRoot, Sample};
use crate::data::split::SplitSpec;
use crate::metrics::topk_correct;
use crate::model::{channels_last, Part, Vgg16};
use crate::train::{load_images, place};

/// Images per eval forward pass inside a training run: on a GPU a large batch keeps it busy; on
/// the CPU, speed does not depend on it and a training-sized batch keeps memory low.
pub fn eval_batch_size(device: Device, train_batch: usize) -> usize {
    match device {
        Device::Cpu => train_batch,
        _ => 512,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub samples: usize,
    /// Mean NLL per sample.
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
}

/// Test-time augmentation: which views of each image are scored and averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// The image as it is
    None,
    /// The image and its mirror image
    Flip,
    /// Four corner crops and the centre crop at 56x56 resized to 64, and their mirror images
    #[value(name = "10crop")]
    #[serde(rename = "10crop")]
    TenCrop,
}

/// The views `tta` scores of a normalised NCHW batch.
fn views(x: &Tensor, tta: Tta) -> Vec<Tensor> {
    const CROP: i64 = 56;
    const SIDE: i64 = 64;
    match tta {
        Tta::None => vec![x.shallow_clone()],
        Tta::Flip => vec![x.shallow_clone(), x.flip([3])],
        Tta::TenCrop => {
            let far = SIDE - CROP;
            let corners = [(0, 0), (0, far), (far, 0), (far, far), (far / 2, far / 2)];
            let crops: Vec<Tensor> = corners
                .iter()
                .map(|&(top, left)| {
                    // Enlarging, so plain bilinear equals torchvision's antialiased resize.
                    let crop = x.narrow(2, top, CROP).narrow(3, left, CROP).contiguous();
                    channels_last(&crop.upsample_bilinear2d([SIDE, SIDE], false, None, None))
                })
                .collect();
            let mirrors: Vec<Tensor> = crops.iter().map(|c| c.flip([3])).collect();
            crops.into_iter().chain(mirrors).collect()
        }
    }
}

/// Log-probabilities of a normalised batch: of the logits, or of the class probabilities
/// averaged over the test-time views.
pub fn log_probs(model: &Vgg16, images: &Tensor, tta: Tta) -> Tensor {
    if tta == Tta::None {
        return model.forward_eval(images).log_softmax(1, Kind::Float);
    }
    let views = views(images, tta);
    let count = views.len() as f64;
    let sum = views
        .iter()
        .map(|v| model.forward_eval(v).softmax(1, Kind::Float))
        .reduce(|a, b| a + b)
        .expect("at least one view");
    (sum / count).log()
}

/// Scores `model` on the rows `indices` of the loader's set, in eval mode. Sums stay on the
/// device until the end.
pub fn evaluate(
    model: &Vgg16,
    loader: &Loader,
    indices: &[usize],
    batch_size: usize,
    tta: Tta,
) -> Scores {
    let device = loader.device();
    let mut loss = Tensor::zeros([], (Kind::Double, device));
    let mut top1 = Tensor::zeros([], (Kind::Int64, device));
    let mut top5 = Tensor::zeros([], (Kind::Int64, device));
    for chunk in indices.chunks(batch_size) {
        let batch = loader.eval_batch(chunk);
        let log_probs = log_probs(model, &batch.images, tta);
        let nll = log_probs.g_nll_loss::<Tensor>(&batch.labels, None, Reduction::Sum, -100);
        loss += nll.to_kind(Kind::Double);
        top1 += topk_correct(&log_probs, &batch.labels, 1);
        top5 += topk_correct(&log_probs, &batch.labels, 5);
    }
    let n = indices.len().max(1) as f64;
    Scores {
        samples: indices.len(),
        loss: loss.double_value(&[]) / n,
        top1: top1.int64_value(&[]) as f64 / n,
        top5: top5.int64_value(&[]) as f64 / n,
    }
}

#[derive(Serialize)]
struct Report<'a> {
    split: &'a str,
    tta: Tta,
    #[serde(flatten)]
    scores: Scores,
}

/// A model and the labelled images to score it on, decoded and on its device.
pub struct Scoring {
    pub model: Vgg16,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
    pub set: ImageSet,
}

/// Where the images to score come from.
pub struct ScoringData<'a> {
    pub root: &'a DataRoot,
    pub split: EvalSplit,
    /// Split of a checkpoint without meta.json.
    pub seed: i64,
    pub holdout: f64,
    pub cache_dir: Option<&'a Path>,
    pub skip_bad_images: bool,
}

/// The images of `data.split`: the checkpoint's own holdout (its recorded split, over the
/// images it could decode) or the official val set; and their classes.
fn split_samples(source: &Source, data: &ScoringData) -> Result<(Vec<String>, Vec<Sample>)> {
    let checkpoint = source.model.display().to_string();
    let root = data.root;
    Ok(match data.split {
        EvalSplit::Holdout => {
            let mut list = scan_image_folder(&root.train)?;
            let spec = match &source.meta {
                Some(meta) => {
                    ensure_same_classes(&meta.classes, &list.classes, &checkpoint)?;
                    list.samples.retain(|s| !meta.skipped.contains(&s.path));
                    if meta.split.dataset_size != list.samples.len() {
                        bail_input!(
                            "{checkpoint} was split over {} images, {} has {}: the holdout \
                             cannot be recovered from a changed dataset",
                            meta.split.dataset_size,
                            root.train.display(),
                            list.samples.len()
                        );
                    }
                    meta.split.clone()
                }
                None => SplitSpec::new(data.seed, data.holdout, list.samples.len()),
            };
            let holdout = spec.split().holdout;
            let samples = holdout.iter().map(|&i| list.samples[i].clone()).collect();
            (list.classes, samples)
        }
        EvalSplit::Val => {
            let Some(val_dir) = &root.val else {
                bail_input!(
                    "--split val needs a Tiny ImageNet root with val/; {} has none",
                    root.train.display()
                );
            };
            let classes = match &source.meta {
                Some(meta) => meta.classes.clone(),
                None => find_classes(&root.train)?,
            };
            let samples = scan_val(val_dir, &classes)?;
            (classes, samples)
        }
    })
}

/// Loads the model of `source` and the images `data` names, on `device`.
pub fn prepare(source: &Source, data: &ScoringData, device: Device) -> Result<Scoring> {
    let (classes, samples) = split_samples(source, data)?;
    if samples.is_empty() {
        bail_input!("nothing to evaluate: the holdout has 0 images");
    }
    let mut model = Vgg16::new(classes.len() as i64, device);
    let checkpoint = source.model.display().to_string();
    model.load(read_tensors(&source.model)?, Part::All, &checkpoint)?;
    let (set, skipped) = load_images(&samples, data.cache_dir, data.skip_bad_images)?;
    let samples = samples
        .into_iter()
        .filter(|s| !skipped.contains(&s.path))
        .collect();
    Ok(Scoring {
        model,
        classes,
        samples,
        set: place(set, device),
    })
}

/// The predicted class of each row `indices` (argmax of the log-probabilities).
pub fn predicted_classes(
    model: &Vgg16,
    loader: &Loader,
    indices: &[usize],
    batch_size: usize,
) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(batch_size) {
        let batch = loader.eval_batch(chunk);
        let guess = log_probs(model, &batch.images, Tta::None).argmax(1, false);
        out.extend(Vec::<i64>::try_from(&guess.to_device(Device::Cpu))?);
    }
    Ok(out)
}

/// `vggtiny eval`: the checkpoint's holdout (its recorded split) or the official val set.
pub fn run(args: &EvalArgs) -> Result<()> {
    validate_holdout(args.holdout)?;
    if args.batch_size < 1 {
        bail_input!("--batch-size must be at least 1");
    }
    let device = resolve_device(&args.device)?;
    eprintln!("device: {}", describe(device));
    let source = Source::resolve(&args.checkpoint, args.which)?;
    let root = DataRoot::locate(&args.data)?;
    let cache_dir = args.cache.dir();
    let data = ScoringData {
        root: &root,
        split: args.split,
        seed: args.seed,
        holdout: args.holdout,
        cache_dir: cache_dir.as_deref(),
        skip_bad_images: args.skip_bad_images,
    };
    let scoring = prepare(&source, &data, device)?;
    let loader = Loader::new(&scoring.set, device);
    let indices: Vec<usize> = (0..scoring.samples.len()).collect();
    let scores = evaluate(&scoring.model, &loader, &indices, args.batch_size, args.tta);

    let split = args.split.name();
    if args.json {
        let report = Report {
            split,
            tta: args.tta,
            scores,
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let tta = match args.tta {
            Tta::None => String::new(),
            other => format!(
                ", test-time augmentation {}",
                serde_json::to_string(&other)?
            ),
        };
        println!(
            "{split}: {} images{tta}, mean loss {:.4}",
            scores.samples, scores.loss
        );
        println!(
            "Top-1 acc: {:.4} / Top-5 acc: {:.4}",
            scores.top1, scores.top5
        );
    }
    Ok(())
}
