//! A stage's data: the training tree scanned, decoded and split into training and holdout
//! samples exactly as `random_split` splits them.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::bail_input;
use crate::config::TrainConfig;
use crate::data::cache::stored_side;
use crate::data::ensure_same_classes;
use crate::data::image_set::ImageSet;
use crate::data::load;
use crate::data::scan::{scan_image_folder, DataRoot};
use crate::data::split::{population_digest, relative_to, Split, SplitSpec};
use crate::run_dir::meta::Meta;

/// The training tree, decoded and split.
pub struct TrainData {
    pub classes: Vec<String>,
    pub class_names: Vec<String>,
    pub spec: SplitSpec,
    pub split: Split,
    pub set: ImageSet,
    /// The side the images are stored at.
    pub stored_side: usize,
    pub skipped: Vec<PathBuf>,
}

/// A run this one must agree with: the run a stage starts from (same classes) or the run being
/// resumed (same classes and the same dataset). `name` names it in messages.
pub struct ExpectedRun<'a> {
    pub meta: &'a Meta,
    pub name: String,
    pub same_dataset: bool,
}

/// Refuses a stage that splits as the run it starts from did (`recorded`) but over other
/// images: the same seed over a changed dataset gives another holdout, which would hold
/// images the run it starts from trained on. (Another split, asked for, is only warned of.)
fn ensure_same_population(
    recorded: &SplitSpec,
    now: &SplitSpec,
    run: &str,
    tree: &Path,
) -> Result<()> {
    let same_split = recorded.seed == now.seed && recorded.fractions == now.fractions;
    let changed = recorded.dataset_size != now.dataset_size
        || matches!((&recorded.digest, &now.digest), (Some(a), Some(b)) if a != b);
    if same_split && changed {
        let how = match (recorded.dataset_size, now.dataset_size) {
            (then, now) if then != now => format!("{then} images then, {now} now"),
            _ => "as many images, but renamed or replaced".to_string(),
        };
        bail_input!(
            "{} is not the dataset {run} trained on ({how}): its split would put images \
             {run} trained on into this stage's holdout. Train this stage on the data {run} \
             trained on, or train stage 1 on this data",
            tree.display()
        );
    }
    Ok(())
}

impl TrainData {
    /// Scans, decodes and splits the data of `cfg`.
    pub fn read(cfg: &TrainConfig, expected: Option<ExpectedRun>) -> Result<TrainData> {
        let root = DataRoot::locate(&cfg.session.data)?;
        let list = scan_image_folder(&root.train)?;
        if list.classes.len() < 2 {
            bail_input!(
                "{} has {} class folder(s); a classifier needs at least 2",
                root.train.display(),
                list.classes.len()
            );
        }
        if let Some(e) = &expected {
            ensure_same_classes(&e.meta.classes, &list.classes, &e.name)?;
        }
        let stored_side = match &expected {
            Some(e) if e.same_dataset => e.meta.stored_side,
            _ => stored_side(cfg.recipe.image_size, &list.samples),
        };
        let decoded = load::decode_samples(
            list.samples,
            stored_side,
            cfg.session.cache_dir.as_deref(),
            cfg.origin.skip_bad_images,
        )?;
        let size = decoded.samples.len();
        let digest = population_digest(&decoded.samples, &root.train);
        let spec = SplitSpec {
            digest: Some(digest.clone()),
            ..SplitSpec::new(cfg.recipe.seed, cfg.recipe.holdout, size)
        };
        if let Some(e) = expected.as_ref().filter(|e| !e.same_dataset) {
            ensure_same_population(&e.meta.split, &spec, &e.name, &root.train)?;
        }
        let split = match expected.filter(|e| e.same_dataset) {
            // a resumed run's split, recovered as eval recovers it
            Some(e) => e.meta.split.recover(size, &digest, &e.name, &root.train)?,
            // drawn first from a freshly seeded generator, exactly as random_split does
            None => spec.split(),
        };
        if split.holdout.is_empty() || split.train.len() < 2 {
            bail_input!(
                "a holdout of {} over {size} images leaves {} to train on and {} to hold out; \
                 both must be non-empty (at least 2 to train)",
                cfg.recipe.holdout,
                split.train.len(),
                split.holdout.len()
            );
        }
        if !cfg.session.quiet {
            eprintln!(
                "data: {} classes, {} training and {} holdout images from {}",
                list.classes.len(),
                split.train.len(),
                split.holdout.len(),
                root.train.display()
            );
        }
        Ok(TrainData {
            class_names: root.class_names(&list.classes)?,
            classes: list.classes,
            spec,
            split,
            set: decoded.set,
            stored_side,
            skipped: relative_to(&decoded.skipped, &root.train),
        })
    }

    /// The `meta.json` of a run on this data with configuration `cfg`, before any epoch.
    pub fn meta(&self, cfg: &TrainConfig) -> Meta {
        let mut meta = Meta::new(self.classes.clone(), self.spec.clone(), cfg.clone());
        meta.skipped = self.skipped.clone();
        meta.class_names = self.class_names.clone();
        meta.stored_side = self.stored_side;
        meta
    }
}
