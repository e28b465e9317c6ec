//! `meta.json`: what a run is (classes, split, configuration, images left out) and how its
//! epochs went, readable by eval, predict, report and a resumed run.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::metrics::EpochRecord;
use super::META_FILE;
use crate::config::TrainConfig;
use crate::data::decode::SIDE;
use crate::data::split::SplitSpec;
use crate::error::input_error;
use crate::io::atomic_file::write_bytes_atomic;
use crate::model::Stage;
use crate::recipe::validate_holdout;

/// Paths as JSON strings, which hold only text: a file name that is not UTF-8 is written with
/// U+FFFD for its stray bytes, and readers compare names the same lossy way
/// (`data::split::split_population`).
mod lossy_paths {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Ok(names.into_iter().map(PathBuf::from).collect())
    }
}

/// The best holdout top-1 so far and the epoch that reached it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: u32,
    #[serde(with = "crate::io::json_float")]
    pub top1: f64,
}

/// What `meta.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub tool: String,
    pub version: String,
    /// Class names (wnids) in label order.
    pub classes: Vec<String>,
    /// Human names of the classes, from words.txt; a class's folder name where it has none
    /// ("" in runs written before).
    #[serde(default)]
    pub class_names: Vec<String>,
    pub split: SplitSpec,
    /// Side the images are decoded and cached at: the recipe's 64 (Tiny ImageNet), or larger
    /// for larger photos and a larger `--image-size`; eval, predict and report use the same.
    #[serde(default = "recipe_side")]
    pub stored_side: usize,
    pub config: TrainConfig,
    pub epochs: Vec<EpochRecord>,
    /// Images left out because they could not be decoded (`--skip-bad-images`).
    #[serde(default, with = "lossy_paths")]
    pub skipped: Vec<PathBuf>,
    #[serde(default)]
    pub best: Option<Best>,
    /// The device the run trained on (`cuda:0`, `cpu (16 threads)`) and the libtorch it
    /// loaded, as of its last session.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub libtorch: Option<String>,
}

impl Meta {
    pub fn new(classes: Vec<String>, split: SplitSpec, config: TrainConfig) -> Meta {
        Meta {
            tool: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            classes,
            class_names: Vec::new(),
            split,
            stored_side: SIDE,
            config,
            epochs: Vec::new(),
            skipped: Vec::new(),
            best: None,
            device: None,
            libtorch: None,
        }
    }
}

/// What runs written before the stored side was recorded used.
fn recipe_side() -> usize {
    SIDE
}

/// Writes `meta.json` into the run directory `dir`, atomically.
pub fn save_meta(dir: &Path, meta: &Meta) -> Result<()> {
    /// The file keeps the top-level `stage` that scripts read; in memory the stage is the
    /// recipe's alone.
    #[derive(Serialize)]
    struct WithStage<'a> {
        stage: Stage,
        #[serde(flatten)]
        meta: &'a Meta,
    }
    let stage = meta.config.recipe.stage;
    let json = serde_json::to_vec_pretty(&WithStage { stage, meta })?;
    write_bytes_atomic(&dir.join(META_FILE), &json)
}

/// Reads a `meta.json`; errors name the file.
pub fn load_meta(path: &Path) -> Result<Meta> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // vggtiny rewrites meta.json whole at every save: a damaged one is a copy gone wrong or an
    // edit, so the way out is an intact copy, or the model without its run.
    let next = "put back an intact copy, or copy the run's model file elsewhere to use it as a \
                bare model";
    let meta: Meta = serde_json::from_str(&text).map_err(|e| {
        input_error(format!(
            "{}: not a vggtiny meta.json: {e}; {next}",
            path.display()
        ))
    })?;
    meta.check().map_err(|e| {
        input_error(format!(
            "{}: a damaged value: {e:#}; {next}",
            path.display()
        ))
    })?;
    Ok(meta)
}

impl Meta {
    /// The ranges a run's recorded values must be in: a damaged file ends here, in a message
    /// naming the value, rather than deep in libtorch.
    fn check(&self) -> Result<()> {
        self.config.validate()?;
        validate_holdout(self.split.fractions[1])?;
        if self.classes.len() < 2 {
            anyhow::bail!(
                "classes: {} listed, a classifier needs at least 2",
                self.classes.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
impl Meta {
    /// A stage-1 run's meta.json over 10 images of `classes`, with the recipe's settings.
    pub fn example(classes: &[&str]) -> Meta {
        let classes = classes.iter().map(|c| c.to_string()).collect();
        let config = TrainConfig::example(Stage::Base, crate::config::Init::RandomInit);
        Meta::new(classes, SplitSpec::new(42, 0.05, 10), config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run whose holdout loss went NaN stays readable (it used to be written as null).
    #[test]
    fn a_nan_metric_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Meta::example(&["a", "b"]);
        meta.epochs.push(EpochRecord::example(f64::NAN));
        save_meta(dir.path(), &meta).unwrap();
        let back = load_meta(&dir.path().join(META_FILE)).unwrap();
        assert!(back.epochs[0].holdout_loss.is_nan());
        let text = fs::read_to_string(dir.path().join(META_FILE)).unwrap();
        let old = text.replace("\"NaN\"", "null");
        fs::write(dir.path().join(META_FILE), old).unwrap();
        let back = load_meta(&dir.path().join(META_FILE)).unwrap();
        assert!(back.epochs[0].holdout_loss.is_nan());
    }

    /// meta.json names the stage at its top, as it always has.
    #[test]
    fn the_file_names_the_stage() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Meta::example(&["a", "b"]);
        meta.config.recipe.stage = Stage::Finetune;
        save_meta(dir.path(), &meta).unwrap();
        let text = fs::read_to_string(dir.path().join(META_FILE)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["stage"], "finetune");
        let back = load_meta(&dir.path().join(META_FILE)).unwrap();
        assert_eq!(back.config.recipe.stage, Stage::Finetune);
    }

    /// A run written before the stored side was recorded decoded its images at the recipe's 64.
    #[test]
    fn a_meta_json_without_the_stored_side_reads_as_64() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Meta::example(&["a", "b"]);
        meta.stored_side = 96;
        let mut json = serde_json::to_value(&meta).unwrap();
        json.as_object_mut().unwrap().remove("stored_side").unwrap();
        fs::write(dir.path().join(META_FILE), json.to_string()).unwrap();
        assert_eq!(
            load_meta(&dir.path().join(META_FILE)).unwrap().stored_side,
            64
        );
    }

    #[test]
    fn a_meta_json_of_fewer_than_two_classes_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        for (classes, readable) in [
            (&["a"][..], false),
            (&["a", "b"], true),
            (&["a", "b", "c"], true),
        ] {
            save_meta(dir.path(), &Meta::example(classes)).unwrap();
            let read = load_meta(&dir.path().join(META_FILE));
            assert_eq!(read.is_ok(), readable, "{classes:?}");
        }
    }
}
