//! The resume point of a run: `checkpoint.safetensors` holds the model, Adam's moments, the
//! fp16 loss scale, and where the run stands (`TrainState`) in its metadata, in one file
//! written atomically, so that it is never torn.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::config::Recipe;
use super::meta::Best;
use crate::bail_input;
use crate::error::input_error;
use crate::io::safetensors::{read_header_metadata, read_safetensors, save_safetensors};
use crate::model::Stage;

/// The checkpoint's file name in a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const STATE_KEY: &str = "vggtiny.state";

/// Where a run stands, saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub stage: Stage,
    /// The epoch in progress (1-based), or the next one at an epoch boundary.
    pub epoch: u32,
    /// Batches of `epoch` already trained.
    pub batch: usize,
    /// Optimizer steps taken in this stage (the scheduler position).
    pub step: u64,
    pub adam_steps: u64,
    /// Sum and count of the per-sample losses of `epoch` so far.
    #[serde(with = "crate::io::json_float")]
    pub loss_sum: f64,
    pub seen: usize,
    #[serde(with = "crate::io::json_float")]
    pub last_lr: f64,
    pub nan_skips: u64,
    pub best: Option<Best>,
    /// Bytes of metrics.jsonl that belong to this state; a resume cuts what came after.
    pub metrics_len: u64,
    /// The recipe of the run that wrote it, so that a checkpoint copied into another run is
    /// told apart (absent in checkpoints of earlier versions).
    #[serde(default)]
    pub recipe: Option<Recipe>,
}

impl TrainState {
    pub fn new(stage: Stage) -> TrainState {
        TrainState {
            stage,
            epoch: 1,
            batch: 0,
            step: 0,
            adam_steps: 0,
            loss_sum: 0.0,
            seen: 0,
            last_lr: 0.0,
            nan_skips: 0,
            best: None,
            metrics_len: 0,
            recipe: None,
        }
    }

    /// Moves to the start of the next epoch.
    pub fn next_epoch(&mut self) {
        self.epoch += 1;
        self.batch = 0;
        self.loss_sum = 0.0;
        self.seen = 0;
    }
}

/// Writes a checkpoint: `tensors` (model, optimizer, scaler) with `state` as metadata.
pub fn save_checkpoint(dir: &Path, tensors: &[(String, Tensor)], state: &TrainState) -> Result<()> {
    let metadata = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(state)?)]);
    save_safetensors(&dir.join(CHECKPOINT_FILE), tensors, Some(metadata))
}

/// Reads a checkpoint written by `save_checkpoint`; errors name the file.
pub fn load_checkpoint(dir: &Path) -> Result<(HashMap<String, Tensor>, TrainState)> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.is_file() {
        bail_input!(
            "{}: no checkpoint to resume from (was the run started with this version?)",
            path.display()
        );
    }
    // A damaged checkpoint cannot be repaired: the run's models stay usable, the run does not.
    let next = "the run cannot resume from it; start it over with --force (which replaces its \
                model files: copy them elsewhere first to keep them)";
    let (tensors, metadata) =
        read_safetensors(&path).map_err(|e| input_error(format!("{e:#}; {next}")))?;
    let state = metadata
        .get(STATE_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| {
            input_error(format!(
                "{}: no training state in it; {next}",
                path.display()
            ))
        })?;
    Ok((tensors.into_iter().collect(), state))
}

/// The recipe the checkpoint in `dir` records, from its header alone; `None` without a
/// checkpoint there or a recipe in it.
pub fn recorded_recipe(dir: &Path) -> Option<Recipe> {
    let metadata = read_header_metadata(&dir.join(CHECKPOINT_FILE)).ok()?;
    let state: TrainState = serde_json::from_str(metadata.get(STATE_KEY)?).ok()?;
    state.recipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_epoch_resets_the_epoch_sums() {
        let mut state = TrainState::new(Stage::Base);
        state.batch = 7;
        state.step = 7;
        state.loss_sum = 3.0;
        state.seen = 28;
        state.next_epoch();
        assert_eq!(
            (state.epoch, state.batch, state.step, state.seen),
            (2, 0, 7, 0)
        );
        assert_eq!(state.loss_sum, 0.0);
    }

    #[test]
    fn state_with_a_non_finite_loss_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = TrainState::new(Stage::Base);
        state.loss_sum = f64::NAN;
        state.best = Some(Best {
            epoch: 1,
            top1: 0.5,
        });
        let t = Tensor::from_slice(&[1.0f32]);
        save_checkpoint(dir.path(), &[("w".into(), t)], &state).unwrap();
        let (tensors, back) = load_checkpoint(dir.path()).unwrap();
        assert!(back.loss_sum.is_nan());
        assert_eq!(back.best, state.best);
        assert!(tensors.contains_key("w"));
    }

    #[test]
    fn the_recipe_is_read_from_the_header_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_recipe(dir.path()), None);
        let recipe = Recipe {
            seed: 7,
            ..Recipe::of(Stage::Base)
        };
        let state = TrainState {
            recipe: Some(recipe.clone()),
            ..TrainState::new(Stage::Base)
        };
        let t = Tensor::zeros([1000], (tch::Kind::Float, tch::Device::Cpu));
        save_checkpoint(dir.path(), &[("w".into(), t)], &state).unwrap();
        assert_eq!(recorded_recipe(dir.path()), Some(recipe));
        // the header alone: the tensors cut off do not matter
        let path = dir.path().join(CHECKPOINT_FILE);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2000]).unwrap();
        assert_eq!(recorded_recipe(dir.path()).map(|r| r.seed), Some(7));
    }
}
