//! A model to start from, evaluate or predict with: a run directory (its last or best
//! model) or a bare weights file, with the run's `meta.json` when there is one.

use std::path::{Path, PathBuf};

use anyhow::Result;
use tch::Device;

use super::checkpoint::recorded_recipe;
use super::lock::running_in;
use super::meta::{load_meta, Meta};
use super::{BEST_FILE, META_FILE, MODEL_FILE};
use crate::bail_input;
use crate::data::decode::SIDE;
use crate::io::safetensors::{read_tensors, Named};
use crate::model::{ModelChoice, Vgg16, WeightScope};
use crate::recipe;

/// A model to start from or to evaluate: a run directory, or a bare weights file with the
/// `meta.json` beside it when there is one.
pub struct SavedModel {
    pub model: PathBuf,
    pub meta: Option<Meta>,
}

impl SavedModel {
    /// `path` is a run directory (its last or best model, as `which` says) or a model file.
    pub fn resolve(path: &Path, which: ModelChoice) -> Result<SavedModel> {
        let (model, meta_path) = if path.is_dir() {
            let file = match which {
                ModelChoice::Last => MODEL_FILE,
                ModelChoice::Best => BEST_FILE,
            };
            let model = path.join(file);
            if !model.is_file() {
                bail_input!(
                    "{}: no {file} in this directory; is it a run with a finished epoch?",
                    path.display()
                );
            }
            (model, path.join(META_FILE))
        } else if path.is_file() {
            let dir = path.parent().unwrap_or(Path::new("."));
            (path.to_path_buf(), dir.join(META_FILE))
        } else {
            bail_input!("{}: no such run directory or model file", path.display());
        };
        let meta = if meta_path.is_file() {
            Some(load_meta(&meta_path)?)
        } else {
            None
        };
        let saved = SavedModel { model, meta };
        let dir = meta_path.parent().unwrap_or(Path::new("."));
        saved.check_meta_is_the_runs(dir)?;
        if path.is_dir() && saved.meta.is_none() {
            // a run directory's model is scored on the run's split, which meta.json holds
            bail_input!(
                "{}: no {META_FILE} in this directory, which records the run's split, classes \
                 and image size; put it back, or pass {} itself to use it as a bare model file",
                path.display(),
                saved.model.display()
            );
        }
        if let Some(pid) = running_in(dir) {
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            eprintln!(
                "note: {} is still training{pid}: {} is its model as of now, not its last",
                dir.display(),
                saved.model.display()
            );
        }
        Ok(saved)
    }

    /// Refuses a model whose run directory `dir` holds a checkpoint but not that run's
    /// meta.json: the split it records is what keeps the holdout apart from the images the
    /// model trained on, and a default split over the same images would mix them.
    fn check_meta_is_the_runs(&self, dir: &Path) -> Result<()> {
        let Some(recipe) = recorded_recipe(dir) else {
            return Ok(());
        };
        let Some(meta) = &self.meta else {
            bail_input!(
                "{} holds a run's checkpoint but no {META_FILE}, which records the run's \
                 split (seed {}, holdout {}, says the checkpoint), classes and image size; \
                 without it the holdout would be drawn anew and hold images the model trained \
                 on. Put the run's {META_FILE} back, or copy {} elsewhere to use it as a bare \
                 model file",
                dir.display(),
                recipe.seed,
                recipe.holdout,
                self.model.display()
            );
        };
        let mut differing: Vec<String> = recipe
            .differences(&meta.config.recipe)
            .iter()
            .map(|d| {
                format!(
                    "{} {} in {META_FILE}, {} {} in the checkpoint",
                    d.flag, d.then, d.flag, d.now
                )
            })
            .collect();
        let split = (meta.split.seed, meta.split.fractions[1]);
        if split != (recipe.seed, recipe.holdout) {
            differing.push(format!(
                "a split of seed {}, holdout {} in {META_FILE}, of seed {}, holdout {} in the \
                 checkpoint",
                split.0, split.1, recipe.seed, recipe.holdout
            ));
        }
        let stage = meta.config.recipe.stage;
        if stage != recipe.stage {
            differing.push(format!(
                "a {} run in {META_FILE}, a {} run in the checkpoint",
                stage.name(),
                recipe.stage.name()
            ));
        }
        if !differing.is_empty() {
            bail_input!(
                "{}: not the {META_FILE} of the run whose checkpoint is beside it ({}); put \
                 back the run's own {META_FILE}",
                dir.join(META_FILE).display(),
                differing.join("; ")
            );
        }
        Ok(())
    }
}

impl SavedModel {
    /// The model file as error messages name it.
    pub fn name(&self) -> String {
        self.model.display().to_string()
    }

    /// The side its run trained at (`--image-size`); the recipe's 64 for a bare model file.
    pub fn image_size(&self) -> u32 {
        self.meta
            .as_ref()
            .map_or(recipe::IMAGE_SIZE, |m| m.config.recipe.image_size)
    }

    /// The side its run stored images at; the recipe's 64 for a bare model file.
    pub fn stored_side(&self) -> usize {
        self.meta.as_ref().map_or(SIDE, |m| m.stored_side)
    }

    /// The model's tensors. A run's resume checkpoint (`checkpoint.safetensors`) holds the
    /// model among the optimizer's moments and the loss scale: its model tensors are taken.
    pub fn model_tensors(&self) -> Result<Named> {
        let named = read_tensors(&self.model)?;
        let optimizer = |name: &str| name.starts_with("adam.") || name.starts_with("amp.");
        if named.iter().any(|(name, _)| optimizer(name)) {
            return Ok(named.into_iter().filter(|(n, _)| !optimizer(n)).collect());
        }
        Ok(named)
    }

    /// The model of this saved model with `classes` outputs, on `device`.
    pub fn load_model(&self, classes: usize, device: Device) -> Result<Vgg16> {
        let mut model = Vgg16::new(classes as i64, device);
        model.load_weights(self.model_tensors()?, WeightScope::All, &self.name())?;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use tch::{Kind, Tensor};

    use super::*;
    use crate::io::safetensors::save_tensors;
    use crate::run_dir::checkpoint::CHECKPOINT_FILE;
    use crate::run_dir::meta::save_meta;

    #[test]
    fn a_run_gives_its_recorded_sides_and_a_bare_model_file_the_recipes() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join(MODEL_FILE);
        fs::write(&model, b"weights").unwrap();
        let mut meta = Meta::example(&["a", "b"]);
        meta.config.recipe.image_size = 96;
        meta.stored_side = 96;
        save_meta(dir.path(), &meta).unwrap();
        let run = SavedModel::resolve(dir.path(), ModelChoice::Last).unwrap();
        assert_eq!(run.name(), model.display().to_string());
        assert_eq!((run.image_size(), run.stored_side()), (96, 96));
        let elsewhere = tempfile::tempdir().unwrap();
        let bare = elsewhere.path().join("weights.safetensors");
        fs::copy(&model, &bare).unwrap();
        let bare = SavedModel::resolve(&bare, ModelChoice::Last).unwrap();
        assert_eq!((bare.image_size(), bare.stored_side()), (64, 64));
    }

    #[test]
    fn a_checkpoint_file_gives_its_model_tensors_alone() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = || Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let names = [
            "vgg16.features.0.bias",
            "adam.exp_avg.vgg16.features.0.bias",
            "amp.scale",
        ];
        let named: Vec<(String, Tensor)> = names.iter().map(|n| (n.to_string(), zeros())).collect();
        let checkpoint = dir.path().join(CHECKPOINT_FILE);
        save_tensors(&checkpoint, &named).unwrap();
        let model = dir.path().join("model-only.safetensors");
        save_tensors(&model, &named[..1]).unwrap();
        for path in [checkpoint, model] {
            let tensors = SavedModel::resolve(&path, ModelChoice::Last)
                .unwrap()
                .model_tensors()
                .unwrap();
            let kept: Vec<String> = tensors.into_iter().map(|(n, _)| n).collect();
            assert_eq!(kept, ["vgg16.features.0.bias"], "{}", path.display());
        }
    }
}
