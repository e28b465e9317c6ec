//! The validated configuration of a training stage, in three parts: the `Recipe` (what is fixed
//! for a run and compared on `--resume`), the `Origin` (where its weights came from) and the
//! `Session` (this invocation's settings). `meta.json` records all three as one `config`
//! object. Checks are pure: the command that builds a configuration reads whatever files it
//! needs (the run it starts from, the run it resumes) before.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::ModelChoice;
use crate::bail_input;
use crate::model::{Amp, Stage};
use crate::optim::schedule::{CyclicLr, LearningRate, SchedStep, Schedule};

/// The recipe's numbers that are not a stage's own (those are in `StageRecipe`).
pub mod defaults {
    use super::{LearningRate, StageRecipe};

    pub const SEED: i64 = 42;
    pub const HOLDOUT: f64 = 0.05;
    pub const BATCH_SIZE: usize = 64;
    /// The side of Tiny ImageNet's images, which the recipe feeds the network as they are.
    pub const IMAGE_SIZE: u32 = 64;
    /// The recipe logs the loss every 100 steps and the mini-batch accuracy every 300.
    pub const LOG_INTERVAL: u64 = 100;
    pub const PRED_INTERVAL: u64 = 300;

    /// Stage 1: 10 epochs of the head on frozen features.
    pub const BASE: StageRecipe = StageRecipe {
        epochs: 10,
        lr: LearningRate(1e-4),
        max_lr: LearningRate(6e-4),
        step_size_up: 1404,
    };
    /// Stage 2: 5 epochs of everything.
    pub const FINETUNE: StageRecipe = StageRecipe {
        epochs: 5,
        lr: LearningRate(1e-5),
        max_lr: LearningRate(6e-5),
        step_size_up: 1200,
    };
}

/// A stage's own numbers in the recipe.
pub struct StageRecipe {
    pub epochs: u32,
    pub lr: LearningRate,
    pub max_lr: LearningRate,
    pub step_size_up: u64,
}

/// What is fixed for a run: `--resume` continues with it and refuses a command line that
/// differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub stage: Stage,
    pub batch_size: usize,
    #[serde(flatten)]
    pub schedule: Schedule,
    pub seed: i64,
    pub holdout: f64,
    #[serde(default = "on")]
    pub augment: bool,
    #[serde(default = "on")]
    pub dropout: bool,
    #[serde(default = "on")]
    pub shuffle: bool,
    #[serde(default)]
    pub amp: Amp,
    /// Side of the images the network sees (`--image-size`).
    #[serde(default = "recipe_image_size")]
    pub image_size: u32,
    /// Label smoothing of the training loss (`--label-smoothing`); 0 is the recipe's NLL.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Batches of PreciseBN recalibration after each epoch; 0 = off.
    #[serde(default)]
    pub precise_bn: usize,
    /// Which model of an `Init::From` run the stage started from.
    #[serde(default)]
    pub which: ModelChoice,
}

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

/// How a run began: recorded, not compared on `--resume`, since a resumed run needs its
/// starting weights no more and its split already left out the images it could not decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub init: Init,
    #[serde(default)]
    pub skip_bad_images: bool,
}

/// One invocation's settings: a resumed run takes them from its command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub data: PathBuf,
    pub out: PathBuf,
    /// As requested (`auto`, `cpu`, `cuda`, `cuda:N`); the run resolves it at start.
    pub device: String,
    /// Deterministic GPU kernels.
    #[serde(default)]
    pub deterministic: bool,
    /// Length of the stage: a resumed run may be extended.
    pub epochs: u32,
    pub log_interval: u64,
    pub pred_interval: u64,
    /// Directory of the decoded-image cache; `None` decodes without one.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    #[serde(default)]
    pub max_nan_skips: u64,
    #[serde(default)]
    pub early_stop: Option<u32>,
    #[serde(default)]
    pub min_delta: f64,
    #[serde(default)]
    pub tensorboard: Option<PathBuf>,
    #[serde(skip)]
    pub force: bool,
    #[serde(skip)]
    pub resume: bool,
    /// No training log on the console (the soak reports instead); the run's files are
    /// written as always.
    #[serde(skip)]
    pub quiet: bool,
}

/// Everything one training stage needs, validated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    #[serde(flatten)]
    pub recipe: Recipe,
    #[serde(flatten)]
    pub origin: Origin,
    #[serde(flatten)]
    pub session: Session,
}

/// Serde default of switches that older meta.json files do not record.
fn on() -> bool {
    true
}

/// The recipe's input side, for runs recorded before `--image-size` existed.
fn recipe_image_size() -> u32 {
    defaults::IMAGE_SIZE
}

impl TrainConfig {
    /// Checks ranges and combinations of settings.
    pub fn validate(&self) -> Result<()> {
        self.recipe.validate()?;
        let s = &self.session;
        // counts must be at least 1 where given
        let counts = [
            ("--epochs", Some(u64::from(s.epochs))),
            ("--max-steps", s.max_steps),
            ("--checkpoint-every", s.checkpoint_every),
            ("--early-stop", s.early_stop.map(u64::from)),
            ("--log-interval", Some(s.log_interval)),
            ("--pred-interval", Some(s.pred_interval)),
        ];
        if let Some((flag, _)) = counts.iter().find(|(_, count)| *count == Some(0)) {
            bail_input!("{flag} must be at least 1");
        }
        if !(s.min_delta >= 0.0 && s.min_delta < 1.0) {
            bail_input!("--min-delta must be in [0, 1), got {}", s.min_delta);
        }
        Ok(())
    }

    /// The configuration a resumed run continues with: `recorded`'s recipe and origin, this
    /// command line's session. A recipe flag that differs from the recording is an error
    /// naming it with both values.
    pub fn resumed(self, recorded: &TrainConfig) -> Result<TrainConfig> {
        let (now, then) = (&self.recipe, &recorded.recipe);
        if now.stage != then.stage {
            let command = match then.stage {
                Stage::Base => "train-base",
                Stage::Finetune => "finetune",
            };
            bail_input!(
                "--resume: {} records a {} run; resume it with `vggtiny {command} ... --resume`",
                self.session.out.join(super::META_FILE).display(),
                then.stage.name()
            );
        }
        let differing: Vec<String> = now
            .differences(then)
            .iter()
            .map(Difference::against_the_run)
            .collect();
        if !differing.is_empty() {
            bail_input!(
                "--resume: {}; resume with the run's own flags (its config is in {}), or start a \
                 new run elsewhere",
                differing.join("; "),
                self.session.out.join(super::META_FILE).display()
            );
        }
        Ok(TrainConfig {
            recipe: recorded.recipe.clone(),
            origin: recorded.origin.clone(),
            session: Session {
                resume: true,
                ..self.session
            },
        })
    }
}

impl Recipe {
    /// The recipe's own settings for `stage` (stage 2 starting from stage 1's last model).
    pub fn of(stage: Stage) -> Recipe {
        let own = match stage {
            Stage::Base => &defaults::BASE,
            Stage::Finetune => &defaults::FINETUNE,
        };
        Recipe {
            stage,
            batch_size: defaults::BATCH_SIZE,
            schedule: Schedule {
                cyclic: CyclicLr::triangular2(own.lr.0, own.max_lr.0, own.step_size_up),
                step: SchedStep::Batch,
            },
            seed: defaults::SEED,
            holdout: defaults::HOLDOUT,
            augment: true,
            dropout: true,
            shuffle: true,
            amp: Amp::Off,
            image_size: defaults::IMAGE_SIZE,
            label_smoothing: 0.0,
            precise_bn: 0,
            which: ModelChoice::Last,
        }
    }

    fn validate(&self) -> Result<()> {
        // BatchNorm needs more than one sample per training batch.
        if self.batch_size < 2 {
            bail_input!("--batch-size must be at least 2 (BatchNorm needs a batch)");
        }
        validate_holdout(self.holdout)?;
        self.schedule.validate()?;
        validate_image_size(self.image_size)?;
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail_input!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            );
        }
        Ok(())
    }

    /// The flags whose values differ from `recorded`'s: each flag with this recipe's value and
    /// the recorded one, as the command line shows them.
    pub fn differences(&self, recorded: &Recipe) -> Vec<Difference> {
        let mut out = Vec::new();
        let mut check = |flag: &str, now: &dyn Shown, then: &dyn Shown| {
            let (now, then) = (now.shown(), then.shown());
            if now != then {
                out.push(Difference {
                    flag: flag.to_string(),
                    now,
                    then,
                });
            }
        };
        // Every field by name: a new one that is not compared below does not compile.
        let Recipe {
            stage: _,
            batch_size,
            schedule,
            seed,
            holdout,
            augment,
            dropout,
            shuffle,
            amp,
            image_size,
            label_smoothing,
            precise_bn,
            which,
        } = self;
        let b = recorded;
        check("--batch-size", batch_size, &b.batch_size);
        let (s, t) = (&schedule.cyclic, &b.schedule.cyclic);
        check("--lr", &s.base_lr, &t.base_lr);
        check("--max-lr", &s.max_lr, &t.max_lr);
        check("--step-size-up", &s.step_size_up, &t.step_size_up);
        check("--sched-step", &schedule.step, &b.schedule.step);
        check("--seed", seed, &b.seed);
        check("--holdout", holdout, &b.holdout);
        check("--amp", amp, &b.amp);
        check("--image-size", image_size, &b.image_size);
        check("--label-smoothing", label_smoothing, &b.label_smoothing);
        check("--precise-bn", precise_bn, &b.precise_bn);
        check("--which", which, &b.which);
        for (name, now, then) in [
            ("augment", *augment, b.augment),
            ("dropout", *dropout, b.dropout),
            ("shuffle", *shuffle, b.shuffle),
        ] {
            let given = |on: bool| if on { "not given" } else { "given" }.to_string();
            if now != then {
                out.push(Difference {
                    flag: format!("--no-{name}"),
                    now: given(now),
                    then: given(then),
                });
            }
        }
        out
    }
}

/// A recipe flag whose value differs between two recipes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub flag: String,
    pub now: String,
    pub then: String,
}

impl Difference {
    /// `--lr 0.01 (the run has 0.0001)`, or for a switch `--no-augment given (the run was
    /// started with it not given)`.
    fn against_the_run(&self) -> String {
        let (flag, now, then) = (&self.flag, &self.now, &self.then);
        if flag.starts_with("--no-") {
            format!("{flag} {now} (the run was started with it {then})")
        } else {
            format!("{flag} {now} (the run has {then})")
        }
    }
}

/// A recipe value as a command line shows it: numbers as Rust prints them, names as the flags
/// take them.
trait Shown {
    fn shown(&self) -> String;
}

impl<T: Serialize> Shown for T {
    fn shown(&self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => name,
            Ok(value) => value.to_string(),
            Err(_) => String::new(),
        }
    }
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
    /// A valid configuration with the recipe's settings for `stage`, writing to `runs/example`.
    pub fn example(stage: Stage, init: Init) -> TrainConfig {
        TrainConfig {
            recipe: Recipe::of(stage),
            origin: Origin {
                init,
                skip_bad_images: false,
            },
            session: Session {
                data: PathBuf::from("data"),
                out: PathBuf::from("runs/example"),
                device: "auto".into(),
                deterministic: false,
                epochs: 10,
                log_interval: defaults::LOG_INTERVAL,
                pred_interval: defaults::PRED_INTERVAL,
                cache_dir: None,
                max_steps: None,
                checkpoint_every: None,
                max_nan_skips: 0,
                early_stop: None,
                min_delta: 0.0,
                tensorboard: None,
                force: false,
                resume: false,
                quiet: false,
            },
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
        requested.recipe.schedule.cyclic.base_lr = 0.01;
        requested.recipe.augment = false;
        requested.session.out = PathBuf::from("./runs/example/");
        requested.session.epochs = 20;
        let err = requested
            .clone()
            .resumed(&recorded)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--lr 0.01 (the run has 0.0001)"), "{err}");
        assert!(
            err.contains("--no-augment given (the run was started with it not given)"),
            "{err}"
        );
        for unchanged in ["--schedule", "--out", "--epochs", "--max-lr", "--step-size"] {
            assert!(!err.contains(unchanged), "{unchanged} in {err}");
        }
        requested.recipe.schedule.step = SchedStep::Epoch;
        let err = requested
            .clone()
            .resumed(&recorded)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--sched-step epoch (the run has batch)"),
            "{err}"
        );
        requested.recipe.schedule.step = SchedStep::Batch;
        let mut other_stage = requested.clone();
        other_stage.recipe.stage = Stage::Finetune;
        let err = other_stage.resumed(&recorded).unwrap_err().to_string();
        assert!(
            err.contains("records a base run") && err.contains("train-base"),
            "{err}"
        );
        requested.recipe.schedule.cyclic.base_lr = recorded.recipe.schedule.cyclic.base_lr;
        requested.recipe.augment = true;
        requested.origin.init = Init::Weights(PathBuf::from("elsewhere.safetensors"));
        let config = requested.resumed(&recorded).unwrap();
        assert_eq!(config.session.epochs, 20);
        assert_eq!(config.session.out, PathBuf::from("./runs/example/"));
        assert_eq!(config.origin.init, Init::RandomInit, "the recorded origin");
        assert!(config.session.resume);
    }

    /// meta.json keeps one flat `config` object with the keys it always had.
    #[test]
    fn the_recorded_config_keeps_its_keys() {
        let config = TrainConfig::example(Stage::Base, Init::RandomInit);
        let json = serde_json::to_value(&config).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "stage",
            "data",
            "out",
            "init",
            "epochs",
            "batch_size",
            "schedule",
            "sched_step",
            "seed",
            "holdout",
            "device",
            "cache_dir",
            "log_interval",
            "pred_interval",
            "augment",
            "dropout",
            "shuffle",
            "amp",
            "image_size",
            "label_smoothing",
            "precise_bn",
            "max_steps",
            "checkpoint_every",
            "tensorboard",
            "early_stop",
            "min_delta",
            "which",
            "max_nan_skips",
            "skip_bad_images",
            "deterministic",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert_eq!(keys.len(), 30, "{keys:?}");
        assert_eq!(json["schedule"]["step_size_up"], 1404);
        let back: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back.recipe, config.recipe);
    }

    /// Each setting is accepted at its bound and refused, by its flag, past it.
    #[test]
    fn validation_takes_each_bound_and_names_the_flag_past_it() {
        type Edit = fn(&mut TrainConfig);
        let fine: [Edit; 11] = [
            |c| c.recipe.batch_size = 2,
            |c| c.recipe.image_size = 32,
            |c| c.recipe.image_size = 1024,
            |c| c.session.epochs = 1,
            |c| c.session.max_steps = Some(1),
            |c| c.session.checkpoint_every = Some(1),
            |c| c.session.early_stop = Some(1),
            |c| c.session.min_delta = 0.999,
            |c| c.session.log_interval = 1,
            |c| c.session.pred_interval = 1,
            |c| c.recipe.label_smoothing = 0.999,
        ];
        let refused: [(Edit, &str); 14] = [
            (|c| c.recipe.batch_size = 1, "--batch-size"),
            (|c| c.recipe.image_size = 31, "--image-size"),
            (|c| c.recipe.image_size = 1025, "--image-size"),
            (|c| c.session.epochs = 0, "--epochs"),
            (|c| c.session.max_steps = Some(0), "--max-steps"),
            (
                |c| c.session.checkpoint_every = Some(0),
                "--checkpoint-every",
            ),
            (|c| c.session.early_stop = Some(0), "--early-stop"),
            (|c| c.session.min_delta = -0.1, "--min-delta"),
            (|c| c.session.min_delta = 1.0, "--min-delta"),
            (|c| c.session.min_delta = f64::NAN, "--min-delta"),
            (|c| c.session.log_interval = 0, "--log-interval"),
            (|c| c.session.pred_interval = 0, "--pred-interval"),
            (|c| c.recipe.label_smoothing = 1.0, "--label-smoothing"),
            (|c| c.recipe.holdout = 1.0, "--holdout"),
        ];
        let with = |edit: Edit| {
            let mut config = TrainConfig::example(Stage::Base, Init::RandomInit);
            edit(&mut config);
            config.validate()
        };
        for (i, edit) in fine.into_iter().enumerate() {
            assert!(with(edit).is_ok(), "case {i}: {:?}", with(edit));
        }
        for (edit, flag) in refused {
            let err = with(edit).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{flag} must be")), "{flag}: {err}");
        }
    }

    /// A meta.json from before --no-augment, --no-dropout, --no-shuffle and --image-size reads
    /// as the recipe: each on, and 64.
    #[test]
    fn settings_an_old_run_did_not_record_read_as_the_recipe() {
        let config = TrainConfig::example(Stage::Base, Init::RandomInit);
        let mut json = serde_json::to_value(&config).unwrap();
        for key in ["augment", "dropout", "shuffle", "image_size"] {
            json.as_object_mut().unwrap().remove(key).unwrap();
        }
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert!(old.recipe.augment && old.recipe.dropout && old.recipe.shuffle);
        assert_eq!(old.recipe.image_size, 64);
    }

    #[test]
    fn holdout_bounds() {
        assert!(validate_holdout(0.05).is_ok());
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(validate_holdout(bad).is_err());
        }
    }
}
