//! What `eval` and `report` score: a run's model and the labelled images of one split, decoded
//! and on the device. The holdout is the run's own, recovered from its recorded split.

use std::path::Path;

use anyhow::Result;
use tch::Device;

use crate::bail_input;
use crate::data::ensure_same_classes;
use crate::data::image_set::ImageSet;
use crate::data::load;
use crate::data::loader::Loader;
use crate::data::scan::{find_classes, scan_image_folder, scan_val, DataRoot, Sample};
use crate::data::split::{population_digest, split_population, SplitSpec};
use crate::model::Vgg16;
use crate::run_dir::saved_model::SavedModel;

/// Which images are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSplit {
    /// The seeded holdout part of the training tree
    Holdout,
    /// The official val/ set, labelled by val_annotations.txt
    Val,
}

impl EvalSplit {
    pub fn name(self) -> &'static str {
        match self {
            EvalSplit::Holdout => "holdout",
            EvalSplit::Val => "val",
        }
    }
}

/// A model and the labelled images to score it on, decoded and on its device.
pub struct Scoring {
    pub model: Vgg16,
    /// The side the model sees images at: its run's `--image-size`, else the recipe's 64.
    pub image_size: u32,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
    pub set: ImageSet,
}

/// Where the images to score come from.
pub struct ScoringData<'a> {
    pub root: &'a DataRoot,
    pub split: EvalSplit,
    /// The split of a model without meta.json.
    pub fallback_split: (i64, f64),
    pub cache_dir: Option<&'a Path>,
    pub skip_bad_images: bool,
}

/// The samples of the holdout of `saved`'s run: its recorded split over the images it could
/// decode, or, for a bare model file, the split `fallback` (seed, fraction) over `--data`.
fn holdout_samples(
    saved: &SavedModel,
    root: &DataRoot,
    fallback: (i64, f64),
) -> Result<(Vec<String>, Vec<Sample>)> {
    let list = scan_image_folder(&root.train)?;
    let (population, split) = match &saved.meta {
        Some(meta) => {
            ensure_same_classes(&meta.classes, &list.classes, &saved.name())?;
            let population = split_population(list.samples, &meta.skipped, &root.train);
            let digest = population_digest(&population, &root.train);
            let (run, tree) = (saved.name(), &root.train);
            let split = meta.split.recover(population.len(), &digest, &run, tree)?;
            (population, split)
        }
        None => {
            let spec = SplitSpec::new(fallback.0, fallback.1, list.samples.len());
            (list.samples, spec.split())
        }
    };
    let samples = split
        .holdout
        .iter()
        .map(|&i| population[i].clone())
        .collect();
    Ok((list.classes, samples))
}

/// The samples of the official val set, labelled with the classes `saved` was trained on.
fn val_samples(saved: &SavedModel, root: &DataRoot) -> Result<(Vec<String>, Vec<Sample>)> {
    let Some(val_dir) = &root.val else {
        bail_input!(
            "--split val needs a root with train/ and val/; {} has no val/",
            root.train.display()
        );
    };
    let classes = match &saved.meta {
        Some(meta) => meta.classes.clone(),
        None => find_classes(&root.train)?,
    };
    let samples = scan_val(val_dir, &classes)?;
    Ok((classes, samples))
}

/// Loads the model of `saved` and the images `data` names, on `device`.
pub fn prepare(saved: &SavedModel, data: &ScoringData, device: Device) -> Result<Scoring> {
    let (classes, samples) = match data.split {
        EvalSplit::Holdout => holdout_samples(saved, data.root, data.fallback_split)?,
        EvalSplit::Val => val_samples(saved, data.root)?,
    };
    if samples.is_empty() {
        bail_input!(
            "nothing to evaluate: the {} has 0 images",
            data.split.name()
        );
    }
    let model = saved.load_model(classes.len(), device)?;
    let decoded = load::decode_samples(
        samples,
        saved.stored_side(),
        data.cache_dir,
        data.skip_bad_images,
    )?;
    Ok(Scoring {
        model,
        image_size: saved.image_size(),
        classes,
        samples: decoded.samples,
        set: decoded.set.for_training_on(device)?,
    })
}

impl Scoring {
    /// Batches of the images to score, at the model's image size.
    pub fn loader(&self, device: Device) -> Loader<'_> {
        Loader::new(&self.set, device).with_image_size(self.image_size)
    }
}
