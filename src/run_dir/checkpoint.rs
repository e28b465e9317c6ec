//! The resume point of a run: `checkpoint.safetensors` holds the model, Adam's moments, the
//! fp16 loss scale, and where the run stands (`TrainState`) in its metadata, in one file
//! written atomically, so that it is never torn.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::meta::Best;
use crate::bail_input;
use crate::error::input_error;
use crate::io::safetensors::{read_header_metadata, read_safetensors, save_safetensors};
use crate::model::Stage;
use crate::recipe::Recipe;

/// The checkpoint's file name in a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const STATE_KEY: &str = "vggtiny.state";

/// Where the training loop stands: its position and the epoch's running sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The epoch in progress (1-based), or the next one at an epoch boundary.
    pub epoch: u32,
    /// Batches of `epoch` already trained.
    pub batch: usize,
    /// Optimizer steps taken in this stage (the scheduler position).
    pub step: u64,
    /// Sum and count of the per-sample losses of `epoch` so far.
    #[serde(with = "crate::io::json_float")]
    pub loss_sum: f64,
    pub seen: usize,
    #[serde(with = "crate::io::json_float")]
    pub last_lr: f64,
    pub nan_skips: u64,
}

impl TrainState {
    /// The start of a stage.
    pub fn start() -> TrainState {
        TrainState {
            epoch: 1,
            batch: 0,
            step: 0,
            loss_sum: 0.0,
            seen: 0,
            last_lr: 0.0,
            nan_skips: 0,
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

/// What a checkpoint records beside its tensors: where the loop stood, and what the saver
/// kept of the run. One flat JSON object, as earlier versions wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The stage of the run that wrote it: every version records it, so that each can tell
    /// a checkpoint of the other stage (this one's recipe says it too).
    pub stage: Stage,
    #[serde(flatten)]
    pub state: TrainState,
    pub adam_steps: u64,
    pub best: Option<Best>,
    /// Bytes of metrics.jsonl that belong to this state; a resume cuts what came after.
    pub metrics_len: u64,
    /// The recipe of the run that wrote it, so that a checkpoint copied into another run is
    /// told apart (absent in checkpoints of earlier versions).
    #[serde(default)]
    pub recipe: Option<Recipe>,
}

/// Writes a checkpoint: `tensors` (model, optimizer, scaler) with `state` as metadata.
pub fn save_checkpoint(dir: &Path, tensors: &[(String, Tensor)], state: &Saved) -> Result<()> {
    let metadata = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(state)?)]);
    save_safetensors(&dir.join(CHECKPOINT_FILE), tensors, Some(metadata))
}

/// Reads a checkpoint written by `save_checkpoint`; errors name the file.
pub fn load_checkpoint(dir: &Path) -> Result<(HashMap<String, Tensor>, Saved)> {
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
    let saved: Saved = serde_json::from_str(metadata.get(STATE_KEY)?).ok()?;
    saved.recipe
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(state: TrainState) -> Saved {
        Saved {
            stage: Stage::Base,
            state,
            adam_steps: 3,
            best: None,
            metrics_len: 0,
            recipe: None,
        }
    }

    #[test]
    fn next_epoch_resets_the_epoch_sums() {
        let mut state = TrainState::start();
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
        let mut state = saved(TrainState::start());
        state.state.loss_sum = f64::NAN;
        state.best = Some(Best {
            epoch: 1,
            top1: 0.5,
        });
        let t = Tensor::from_slice(&[1.0f32]);
        save_checkpoint(dir.path(), &[("w".into(), t)], &state).unwrap();
        let (tensors, back) = load_checkpoint(dir.path()).unwrap();
        assert!(back.state.loss_sum.is_nan());
        assert_eq!(back.best, state.best);
        assert_eq!(back.adam_steps, 3);
        assert!(tensors.contains_key("w"));
    }

    /// A checkpoint of an earlier version, which recorded no recipe, reads; and this version's
    /// keeps the keys the earlier ones require.
    #[test]
    fn an_older_state_reads() {
        let json = r#"{"stage":"base","epoch":2,"batch":3,"step":9,"adam_steps":9,
            "loss_sum":1.5,"seen":12,"last_lr":0.001,"nan_skips":0,"best":null,
            "metrics_len":120}"#;
        let old: Saved = serde_json::from_str(json).unwrap();
        assert_eq!(old.stage, Stage::Base);
        assert_eq!((old.state.epoch, old.state.step, old.adam_steps), (2, 9, 9));
        assert_eq!((old.metrics_len, old.recipe), (120, None));
        let now = serde_json::to_value(saved(TrainState::start())).unwrap();
        let earlier: serde_json::Value = serde_json::from_str(json).unwrap();
        for key in earlier.as_object().unwrap().keys() {
            assert!(now.get(key).is_some(), "{key} missing from {now}");
        }
    }

    #[test]
    fn the_recipe_is_read_from_the_header_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_recipe(dir.path()), None);
        let recipe = Recipe {
            seed: 7,
            ..Recipe::of(Stage::Base)
        };
        let state = Saved {
            recipe: Some(recipe.clone()),
            ..saved(TrainState::start())
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
