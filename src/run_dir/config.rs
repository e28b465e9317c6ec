//! The validated configuration of a training stage: what `meta.json` records of a run and what
//! `--resume` continues with. Checks are pure: the command that builds a configuration reads
//! whatever files it needs (the run it starts from, the device) before.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Which;
use crate::bail_input;
use crate::model::{Amp, Stage};
use crate::optim::schedule::{CyclicLr, SchedStep};

pub const DEFAULT_SEED: i64 = 42;
pub const DEFAULT_HOLDOUT: f64 = 0.05;

/// Where a stage's starting weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Stage 1 from scratch: torchvision's random initialisation of the features.
    RandomInit,
    /// Stage 1 from ImageNet features in this file.
    Weights(PathBuf),
    /// Every tensor, head included, from this run directory or model file (stage 2 from a
    /// stage-1 run).
    From(PathBuf),
}

/// Everything one training stage needs, validated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub stage: Stage,
    pub data: PathBuf,
    pub out: PathBuf,
    pub init: Init,
    pub epochs: u32,
    pub batch_size: usize,
    pub schedule: CyclicLr,
    pub sched_step: SchedStep,
    pub seed: i64,
    pub holdout: f64,
    /// As requested (`auto`, `cpu`, `cuda`, `cuda:N`); the run resolves it at start.
    pub device: String,
    /// Directory of the decoded-image cache; `None` decodes without one.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    pub log_interval: u64,
    pub pred_interval: u64,
    #[serde(default = "on")]
    pub augment: bool,
    #[serde(default = "on")]
    pub dropout: bool,
    #[serde(default = "on")]
    pub shuffle: bool,
    #[serde(default)]
    pub amp: Amp,
    /// Side of the images the network sees (`--image-size`); the recipe's 64.
    #[serde(default = "recipe_image_size")]
    pub image_size: u32,
    /// Label smoothing of the training loss (`--label-smoothing`); 0 is the recipe's NLL.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Batches of PreciseBN recalibration after each epoch; 0 = off.
    #[serde(default)]
    pub precise_bn: usize,
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    #[serde(default)]
    pub tensorboard: Option<PathBuf>,
    #[serde(default)]
    pub early_stop: Option<u32>,
    #[serde(default)]
    pub min_delta: f64,
    /// Which model of an `Init::From` run to start from.
    #[serde(default)]
    pub which: Which,
    #[serde(default)]
    pub max_nan_skips: u64,
    #[serde(default)]
    pub skip_bad_images: bool,
    /// Deterministic GPU kernels; may change when a run resumes.
    #[serde(default)]
    pub deterministic: bool,
    #[serde(skip)]
    pub force: bool,
    #[serde(skip)]
    pub resume: bool,
}

/// Serde default of switches that older meta.json files do not record.
fn on() -> bool {
    true
}

/// The recipe's input side, for runs recorded before `--image-size` existed.
pub fn recipe_image_size() -> u32 {
    64
}

impl TrainConfig {
    /// Checks ranges and combinations of settings.
    pub fn validate(&self) -> Result<()> {
        if self.epochs < 1 {
            bail_input!("--epochs must be at least 1");
        }
        // BatchNorm needs more than one sample per training batch.
        if self.batch_size < 2 {
            bail_input!("--batch-size must be at least 2 (BatchNorm needs a batch)");
        }
        validate_holdout(self.holdout)?;
        let s = &self.schedule;
        if !(s.base_lr > 0.0 && s.base_lr.is_finite()) {
            bail_input!("--lr must be a positive number, got {}", s.base_lr);
        }
        if !(s.max_lr >= s.base_lr && s.max_lr.is_finite()) {
            bail_input!(
                "--max-lr ({}) must be at least --lr ({})",
                s.max_lr,
                s.base_lr
            );
        }
        if s.step_size_up < 1 {
            bail_input!("--step-size-up must be at least 1");
        }
        if self.max_steps == Some(0) || self.checkpoint_every == Some(0) {
            bail_input!("--max-steps and --checkpoint-every must be at least 1");
        }
        if !(self.min_delta >= 0.0 && self.min_delta < 1.0) || self.early_stop == Some(0) {
            bail_input!("--min-delta must be in [0, 1) and --early-stop at least 1");
        }
        validate_image_size(self.image_size)?;
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail_input!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            );
        }
        if self.log_interval < 1 || self.pred_interval < 1 {
            bail_input!("--log-interval and --pred-interval must be at least 1");
        }
        Ok(())
    }
}

/// The configuration a resumed run continues with: the one it recorded, but for the settings
/// that may change between sessions (device, length, logging, checkpoints, cache, where the
/// data and the run now are), taken from this command line. Any other flag that differs from
/// the recording is an error naming it with both values.
pub fn resumed(requested: &TrainConfig, recorded: &TrainConfig) -> Result<TrainConfig> {
    if requested.stage != recorded.stage {
        let command = match recorded.stage {
            Stage::Base => "train-base",
            Stage::Finetune => "finetune",
        };
        bail_input!(
            "--resume: {} holds a {} run; resume it with `vggtiny {command} ... --resume`",
            requested.out.display(),
            recorded.stage.name()
        );
    }
    const FROM_COMMAND_LINE: [&str; 14] = [
        "data",
        "out",
        "device",
        "deterministic",
        "epochs",
        "log_interval",
        "pred_interval",
        "cache_dir",
        "max_steps",
        "checkpoint_every",
        "max_nan_skips",
        "early_stop",
        "min_delta",
        "tensorboard",
    ];
    // Not compared either: a resumed run needs its starting weights no more, and its split
    // already left out the images it could not decode.
    const KEPT_AS_RECORDED: [&str; 2] = ["init", "skip_bad_images"];
    let (Value::Object(requested_fields), Value::Object(mut fields)) = (
        serde_json::to_value(requested)?,
        serde_json::to_value(recorded)?,
    ) else {
        anyhow::bail!("configuration is not a JSON object");
    };
    let compared = |k: &str| !FROM_COMMAND_LINE.contains(&k) && !KEPT_AS_RECORDED.contains(&k);
    let mut now = Vec::new();
    let mut then = Vec::new();
    for (k, v) in requested_fields.iter().filter(|(k, _)| compared(k)) {
        flatten(k, v, &mut now);
        flatten(k, fields.get(k).unwrap_or(&Value::Null), &mut then);
    }
    let differing: Vec<String> = now
        .iter()
        .zip(&then)
        .filter(|((_, a), (_, b))| a != b)
        .filter_map(|((key, a), (_, b))| flag_change(key, a, b))
        .collect();
    if !differing.is_empty() {
        bail_input!(
            "--resume: {}; resume with the run's own flags (its config is in {}), or start a \
             new run elsewhere",
            differing.join("; "),
            requested.out.join("meta.json").display()
        );
    }
    for key in FROM_COMMAND_LINE {
        if let Some(value) = requested_fields.get(key) {
            fields.insert(key.to_string(), value.clone());
        }
    }
    let mut config: TrainConfig = serde_json::from_value(Value::Object(fields))?;
    config.resume = true;
    Ok(config)
}

/// The leaves of a JSON value under dotted keys (`schedule.base_lr`), in order.
fn flatten(key: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                flatten(&format!("{key}.{k}"), v, out);
            }
        }
        leaf => out.push((key.to_string(), leaf.clone())),
    }
}

/// How a configuration field that differs reads as a flag: `--lr 0.01 (the run has 0.0001)`.
/// `None` for fields that follow from another flag (the schedule's down half and momenta).
fn flag_change(key: &str, now: &Value, then: &Value) -> Option<String> {
    let flag = match key {
        "schedule.base_lr" => "--lr".to_string(),
        "schedule.max_lr" => "--max-lr".to_string(),
        "schedule.step_size_up" => "--step-size-up".to_string(),
        k if k.starts_with("schedule.") => return None,
        "augment" | "dropout" | "shuffle" => {
            let given = |v: &Value| {
                if v == &Value::Bool(false) {
                    "given"
                } else {
                    "not given"
                }
            };
            return Some(format!(
                "--no-{key} {} (the run was started with it {})",
                given(now),
                given(then)
            ));
        }
        k => format!("--{}", k.replace('_', "-")),
    };
    // Strings as a command line shows them, without JSON's quotes.
    let shown = |v: &Value| v.as_str().map_or_else(|| v.to_string(), String::from);
    Some(format!(
        "{flag} {} (the run has {})",
        shown(now),
        shown(then)
    ))
}

/// VGG16 needs at least 32 pixels for its five poolings; beyond 1024 a batch of one image
/// hardly fits a GPU.
pub fn validate_image_size(side: u32) -> Result<()> {
    if !(32..=1024).contains(&side) {
        bail_input!("--image-size must be between 32 and 1024, got {side}");
    }
    Ok(())
}

pub fn validate_holdout(holdout: f64) -> Result<()> {
    if !(holdout > 0.0 && holdout < 1.0) {
        bail_input!("--holdout must be strictly between 0 and 1, got {holdout}");
    }
    Ok(())
}

#[cfg(test)]
impl TrainConfig {
    /// A valid configuration with the recipe's stage-1 settings, writing to `runs/example`.
    pub fn example(stage: Stage, init: Init) -> TrainConfig {
        TrainConfig {
            stage,
            data: PathBuf::from("data"),
            out: PathBuf::from("runs/example"),
            init,
            epochs: 10,
            batch_size: 64,
            schedule: CyclicLr::triangular2(1e-4, 6e-4, 1404),
            sched_step: SchedStep::Batch,
            seed: DEFAULT_SEED,
            holdout: DEFAULT_HOLDOUT,
            device: "auto".into(),
            cache_dir: None,
            log_interval: 100,
            pred_interval: 300,
            augment: true,
            dropout: true,
            shuffle: true,
            amp: Amp::Off,
            image_size: 64,
            label_smoothing: 0.0,
            precise_bn: 0,
            max_steps: None,
            checkpoint_every: None,
            tensorboard: None,
            early_stop: None,
            min_delta: 0.0,
            which: Which::Last,
            max_nan_skips: 0,
            skip_bad_images: false,
            deterministic: false,
            force: false,
            resume: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_names_exactly_the_flags_that_differ_with_both_values() {
        let recorded = TrainConfig::example(Stage::Base, Init::RandomInit);
        let mut requested = recorded.clone();
        requested.schedule.base_lr = 0.01;
        requested.augment = false;
        requested.out = PathBuf::from("./runs/example/");
        requested.epochs = 20;
        let err = resumed(&requested, &recorded).unwrap_err().to_string();
        assert!(err.contains("--lr 0.01 (the run has 0.0001)"), "{err}");
        assert!(
            err.contains("--no-augment given (the run was started with it not given)"),
            "{err}"
        );
        for unchanged in ["--schedule", "--out", "--epochs", "--max-lr", "--step-size"] {
            assert!(!err.contains(unchanged), "{unchanged} in {err}");
        }
        requested.sched_step = SchedStep::Epoch;
        let err = resumed(&requested, &recorded).unwrap_err().to_string();
        assert!(
            err.contains("--sched-step epoch (the run has batch)"),
            "{err}"
        );
        requested.sched_step = SchedStep::Batch;
        let mut other_stage = requested.clone();
        other_stage.stage = Stage::Finetune;
        let err = resumed(&other_stage, &recorded).unwrap_err().to_string();
        assert!(
            err.contains("holds a base run") && err.contains("train-base"),
            "{err}"
        );
        requested.schedule.base_lr = recorded.schedule.base_lr;
        requested.augment = true;
        let config = resumed(&requested, &recorded).unwrap();
        assert_eq!(config.epochs, 20);
        assert_eq!(config.out, PathBuf::from("./runs/example/"));
        assert!(config.resume);
    }

    #[test]
    fn holdout_bounds() {
        assert!(validate_holdout(0.05).is_ok());
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(validate_holdout(bad).is_err());
        }
    }
}
