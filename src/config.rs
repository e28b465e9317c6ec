//! The validated configuration of a training stage, in three parts: the `Recipe` (what is fixed
//! for a run and compared on `--resume`, in `recipe`), the `Origin` (where its weights came
//! from) and the `Session` (this invocation's settings). `meta.json` records all three as one
//! `config` object. Checks are pure: the command that builds a configuration reads whatever
//! files it needs (the run it starts from, the run it resumes) before.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::bail_input;
use crate::device::DeviceChoice;
use crate::model::Stage;
use crate::recipe::{Difference, Recipe};

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
    /// As requested; the command opens it once, at start.
    pub device: DeviceChoice,
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

    /// The configuration a resumed run continues with: `recorded`'s recipe and origin (read
    /// from the file `from`), this command line's session. A recipe flag that differs from the
    /// recording is an error naming it with both values.
    pub fn resumed(self, recorded: &TrainConfig, from: &Path) -> Result<TrainConfig> {
        let (now, then) = (&self.recipe, &recorded.recipe);
        if now.stage != then.stage {
            let command = match then.stage {
                Stage::Base => "train-base",
                Stage::Finetune => "finetune",
            };
            bail_input!(
                "--resume: {} records a {} run; resume it with `vggtiny {command} ... --resume`",
                from.display(),
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
                from.display()
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
                device: DeviceChoice::Auto,
                deterministic: false,
                epochs: 10,
                log_interval: crate::recipe::LOG_INTERVAL,
                pred_interval: crate::recipe::PRED_INTERVAL,
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
    use crate::optim::schedule::SchedStep;

    #[test]
    fn resume_names_exactly_the_flags_that_differ_with_both_values() {
        let meta = Path::new("runs/example/meta.json");
        let recorded = TrainConfig::example(Stage::Base, Init::RandomInit);
        let mut requested = recorded.clone();
        requested.recipe.schedule.cyclic.base_lr = 0.01;
        requested.recipe.augment = false;
        requested.session.out = PathBuf::from("./runs/example/");
        requested.session.epochs = 20;
        let err = requested
            .clone()
            .resumed(&recorded, meta)
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
            .resumed(&recorded, meta)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--sched-step epoch (the run has batch)"),
            "{err}"
        );
        requested.recipe.schedule.step = SchedStep::Batch;
        let mut other_stage = requested.clone();
        other_stage.recipe.stage = Stage::Finetune;
        let err = other_stage
            .resumed(&recorded, meta)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("records a base run") && err.contains("train-base"),
            "{err}"
        );
        requested.recipe.schedule.cyclic.base_lr = recorded.recipe.schedule.cyclic.base_lr;
        requested.recipe.augment = true;
        requested.origin.init = Init::Weights(PathBuf::from("elsewhere.safetensors"));
        let config = requested.resumed(&recorded, meta).unwrap();
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
}
