//! The recipe: every hyper-parameter of a training stage, in one place each. A setting's
//! field, default, flag (with its help text), how the flag lays over a recipe, and how a
//! resumed run compares it are all in this file, so a new recipe setting is this file plus
//! the code that uses it.
//!
//! A command's recipe is its stage's (`Recipe::of`), for stage 2 with the split and input
//! size of the run it starts from (`inheriting`), under the flags given (`RecipeFlags::over`).
//! `--resume` refuses a command line whose recipe differs from the run's (`differences`).

use anyhow::Result;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::bail_input;
use crate::model::{Amp, ModelChoice, Stage};
use crate::optim::schedule::{CyclicLr, LearningRate, SchedStep, Schedule};

/// The recipe's numbers that are the same for both stages.
pub const SEED: i64 = 42;
pub const HOLDOUT: f64 = 0.05;
pub const BATCH_SIZE: usize = 64;
/// The side of Tiny ImageNet's images, which the recipe feeds the network as they are.
pub const IMAGE_SIZE: u32 = 64;
/// How often, in steps, the recipe logs the loss and the mini-batch accuracy.
pub const LOG_INTERVAL: u64 = 100;
pub const PRED_INTERVAL: u64 = 300;

/// What the two stages of the recipe differ in.
struct StageNumbers {
    epochs: u32,
    lr: f64,
    max_lr: f64,
    step_size_up: u64,
}

const fn numbers(stage: Stage) -> StageNumbers {
    match stage {
        // 10 epochs of the head on frozen features
        Stage::Base => StageNumbers {
            epochs: 10,
            lr: 1e-4,
            max_lr: 6e-4,
            step_size_up: 1404,
        },
        // 5 epochs of everything
        Stage::Finetune => StageNumbers {
            epochs: 5,
            lr: 1e-5,
            max_lr: 6e-5,
            step_size_up: 1200,
        },
    }
}

/// The recipe's length of `stage`. A session setting, not part of `Recipe`: a resumed run may
/// be extended.
pub fn epochs(stage: Stage) -> u32 {
    numbers(stage).epochs
}

/// The flags whose default in stage 2 is the value of the run it starts from (`inheriting`).
const INHERITED: [&str; 3] = ["--seed", "--holdout", "--image-size"];

/// What is fixed for a run: `--resume` continues with it and refuses a command line that
/// differs. `meta.json` and every checkpoint record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub stage: Stage,
    pub batch_size: usize,
    #[serde(flatten)]
    pub schedule: Schedule,
    pub seed: i64,
    pub holdout: f64,
    // Older meta.json files lack the settings added since; they read as the recipe.
    #[serde(default = "on")]
    pub augment: bool,
    #[serde(default = "on")]
    pub dropout: bool,
    #[serde(default = "on")]
    pub shuffle: bool,
    #[serde(default)]
    pub amp: Amp,
    #[serde(default = "recipe_image_size")]
    pub image_size: u32,
    #[serde(default)]
    pub label_smoothing: f64,
    #[serde(default)]
    pub precise_bn: usize,
    #[serde(default)]
    pub which: ModelChoice,
}

fn on() -> bool {
    true
}

fn recipe_image_size() -> u32 {
    IMAGE_SIZE
}

impl Recipe {
    /// The recipe's own settings for `stage` (stage 2 starting from stage 1's last model).
    pub fn of(stage: Stage) -> Recipe {
        let own = numbers(stage);
        Recipe {
            stage,
            batch_size: BATCH_SIZE,
            schedule: Schedule {
                cyclic: CyclicLr::triangular2(own.lr, own.max_lr, own.step_size_up),
                step: SchedStep::Batch,
            },
            seed: SEED,
            holdout: HOLDOUT,
            augment: true,
            dropout: true,
            shuffle: true,
            amp: Amp::Off,
            image_size: IMAGE_SIZE,
            label_smoothing: 0.0,
            precise_bn: 0,
            which: ModelChoice::Last,
        }
    }

    /// This recipe with the split and input size of `from`, the run stage 2 starts from: the
    /// settings `INHERITED` names.
    pub fn inheriting(self, from: &Recipe) -> Recipe {
        Recipe {
            seed: from.seed,
            holdout: from.holdout,
            image_size: from.image_size,
            ..self
        }
    }

    /// Every setting with its flag, as a command line shows it. Every field is named: a new
    /// one that is not listed here does not compile.
    fn settings(&self) -> [Setting; 15] {
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
        let cyclic = &schedule.cyclic;
        [
            Setting::value("--batch-size", batch_size),
            Setting::rate("--lr", cyclic.base_lr),
            Setting::rate("--max-lr", cyclic.max_lr),
            Setting::value("--step-size-up", &cyclic.step_size_up),
            Setting::value("--sched-step", &schedule.step),
            Setting::value("--seed", seed),
            Setting::value("--holdout", holdout),
            Setting::value("--amp", amp),
            Setting::value("--image-size", image_size),
            Setting::value("--label-smoothing", label_smoothing),
            Setting::value("--precise-bn", precise_bn),
            Setting::value("--which", which),
            Setting::switch("--no-augment", !augment),
            Setting::switch("--no-dropout", !dropout),
            Setting::switch("--no-shuffle", !shuffle),
        ]
    }

    /// The flags whose values differ from `recorded`'s: each flag with this recipe's value and
    /// the recorded one.
    pub fn differences(&self, recorded: &Recipe) -> Vec<Difference> {
        self.settings()
            .into_iter()
            .zip(recorded.settings())
            .filter(|(now, then)| now.value != then.value)
            .map(|(now, then)| Difference {
                flag: now.flag.to_string(),
                now: now.value,
                then: then.value,
            })
            .collect()
    }

    pub fn validate(&self) -> Result<()> {
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
}

/// One recipe setting as the command line shows it.
struct Setting {
    flag: &'static str,
    /// As errors show it: numbers as Rust prints them, names as the flag takes them, switches
    /// as "given" or "not given".
    value: String,
    /// As `--help` shows the default: learning rates as `1e-4`; none for switches, which are
    /// off unless given.
    default: Option<String>,
}

impl Setting {
    fn value(flag: &'static str, value: &impl Serialize) -> Setting {
        let value = match serde_json::to_value(value) {
            Ok(serde_json::Value::String(name)) => name,
            Ok(value) => value.to_string(),
            Err(_) => String::new(),
        };
        Setting {
            flag,
            default: Some(value.clone()),
            value,
        }
    }

    fn rate(flag: &'static str, rate: f64) -> Setting {
        Setting {
            default: Some(LearningRate(rate).to_string()),
            ..Setting::value(flag, &rate)
        }
    }

    fn switch(flag: &'static str, given: bool) -> Setting {
        let value = if given { "given" } else { "not given" };
        Setting {
            flag,
            value: value.to_string(),
            default: None,
        }
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
    pub fn against_the_run(&self) -> String {
        let (flag, now, then) = (&self.flag, &self.now, &self.then);
        if flag.starts_with("--no-") {
            format!("{flag} {now} (the run was started with it {then})")
        } else {
            format!("{flag} {now} (the run has {then})")
        }
    }
}

/// The recipe's flags, both stages': each laid over the stage's recipe where given. Their
/// defaults are the recipe's, added to the help by `with_defaults` (stage 2 has its own).
#[derive(Debug, Clone, Default, Args)]
pub struct RecipeFlags {
    /// Images per optimizer step
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// CyclicLR base learning rate (Adam's lr)
    #[arg(long)]
    pub lr: Option<LearningRate>,
    /// CyclicLR peak learning rate
    #[arg(long)]
    pub max_lr: Option<LearningRate>,
    /// CyclicLR half cycle, in scheduler steps
    #[arg(long, value_name = "STEPS")]
    pub step_size_up: Option<u64>,
    /// When the CyclicLR schedule advances
    #[arg(long, value_enum)]
    pub sched_step: Option<SchedStep>,
    /// Seed of the train/holdout split and of every random draw
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<i64>,
    /// Holdout fraction of the split
    #[arg(long, value_name = "FRACTION")]
    pub holdout: Option<f64>,
    /// Mixed precision: fp16 (CUDA, with loss scaling) or bf16; off computes in fp32 as the recipe
    #[arg(long, value_enum)]
    pub amp: Option<Amp>,
    /// Side the images are resized to before the network (the crop in training, the whole
    /// image in eval)
    #[arg(long, value_name = "N")]
    pub image_size: Option<u32>,
    /// Label smoothing of the training loss, as PyTorch's cross_entropy(label_smoothing=EPS);
    /// holdout and val losses stay the plain NLL
    #[arg(long, value_name = "EPS")]
    pub label_smoothing: Option<f64>,
    /// After each epoch, recompute the head's BatchNorm statistics over N training batches as
    /// eval sees them (no augmentation, no dropout); 0 keeps the recipe's running statistics
    #[arg(long, value_name = "N")]
    pub precise_bn: Option<usize>,
    /// Diagnostics: train on un-augmented images
    #[arg(long, hide = true)]
    pub no_augment: bool,
    /// Diagnostics: no dropout in the head
    #[arg(long, hide = true)]
    pub no_dropout: bool,
    /// Diagnostics: visit the training split in split order every epoch
    #[arg(long, hide = true)]
    pub no_shuffle: bool,
}

impl RecipeFlags {
    /// The batch size these flags train `stage` with.
    pub fn batch_size(&self, stage: Stage) -> usize {
        self.over(Recipe::of(stage)).batch_size
    }

    /// `base` with the flags given laid over it.
    pub fn over(&self, base: Recipe) -> Recipe {
        let cyclic = base.schedule.cyclic;
        let cyclic = CyclicLr::triangular2(
            self.lr.map_or(cyclic.base_lr, |lr| lr.0),
            self.max_lr.map_or(cyclic.max_lr, |lr| lr.0),
            self.step_size_up.unwrap_or(cyclic.step_size_up),
        );
        Recipe {
            stage: base.stage,
            batch_size: self.batch_size.unwrap_or(base.batch_size),
            schedule: Schedule {
                cyclic,
                step: self.sched_step.unwrap_or(base.schedule.step),
            },
            seed: self.seed.unwrap_or(base.seed),
            holdout: self.holdout.unwrap_or(base.holdout),
            augment: base.augment && !self.no_augment,
            dropout: base.dropout && !self.no_dropout,
            shuffle: base.shuffle && !self.no_shuffle,
            amp: self.amp.unwrap_or(base.amp),
            image_size: self.image_size.unwrap_or(base.image_size),
            label_smoothing: self.label_smoothing.unwrap_or(base.label_smoothing),
            precise_bn: self.precise_bn.unwrap_or(base.precise_bn),
            which: base.which,
        }
    }
}

/// `command` (a stage's subcommand) with the defaults of `stage`'s recipe at the end of its
/// recipe flags' help, and of `--epochs`; stage 2's inherited ones are the `--from` run's.
pub fn with_defaults(command: clap::Command, stage: Stage) -> clap::Command {
    let epochs = ("--epochs", Some(epochs(stage).to_string()));
    let defaults = Recipe::of(stage).settings().map(|s| {
        let default = match s.default {
            Some(own) if stage == Stage::Finetune && INHERITED.contains(&s.flag) => {
                Some(format!("the --from run's, else {own}"))
            }
            default => default,
        };
        (s.flag, default)
    });
    let defaults = defaults.into_iter().chain([epochs]);
    defaults.fold(command, |command, (flag, default)| {
        let id = flag.trim_start_matches("--").replace('-', "_");
        let has = command.get_arguments().any(|a| a.get_id() == id.as_str());
        match default.filter(|_| has) {
            Some(default) => command.mut_arg(id, |arg| {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            }),
            None => command,
        }
    })
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
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_flag_that_differs_with_both_values() {
        let recorded = Recipe::of(Stage::Base);
        let mut now = recorded.clone();
        now.schedule.cyclic.base_lr = 0.01;
        now.augment = false;
        now.schedule.step = SchedStep::Epoch;
        let shown: Vec<String> = now
            .differences(&recorded)
            .iter()
            .map(Difference::against_the_run)
            .collect();
        assert_eq!(
            shown,
            [
                "--lr 0.01 (the run has 0.0001)",
                "--sched-step epoch (the run has batch)",
                "--no-augment given (the run was started with it not given)",
            ]
        );
        assert!(recorded.differences(&recorded).is_empty());
    }

    /// Flags lay over the recipe they are given for; the others keep its values.
    #[test]
    fn flags_lay_over_the_stage_recipe() {
        let none = RecipeFlags::default();
        assert_eq!(
            none.over(Recipe::of(Stage::Finetune)),
            Recipe::of(Stage::Finetune)
        );
        let flags = RecipeFlags {
            lr: Some(LearningRate(2e-5)),
            seed: Some(7),
            no_shuffle: true,
            ..RecipeFlags::default()
        };
        let recipe = flags.over(Recipe::of(Stage::Finetune));
        let want = Recipe {
            schedule: Schedule {
                cyclic: CyclicLr::triangular2(2e-5, 6e-5, 1200),
                step: SchedStep::Batch,
            },
            seed: 7,
            shuffle: false,
            ..Recipe::of(Stage::Finetune)
        };
        assert_eq!(recipe, want);
        let from = Recipe {
            seed: 9,
            holdout: 0.1,
            image_size: 96,
            batch_size: 32,
            ..Recipe::of(Stage::Base)
        };
        let inherited = Recipe::of(Stage::Finetune).inheriting(&from);
        assert_eq!((inherited.seed, inherited.holdout), (9, 0.1));
        assert_eq!(inherited.image_size, 96);
        assert_eq!(inherited.batch_size, BATCH_SIZE, "the batch is the stage's");
    }

    /// Each stage's help shows its own defaults, typed nowhere but in `numbers`.
    #[test]
    fn help_shows_each_stage_defaults() {
        #[derive(clap::Parser)]
        struct Stage2 {
            #[command(flatten)]
            recipe: RecipeFlags,
            #[arg(long)]
            epochs: Option<u32>,
        }
        let help = |stage| {
            use clap::CommandFactory;
            let mut command = with_defaults(Stage2::command(), stage);
            command.render_help().to_string()
        };
        let base = help(Stage::Base);
        for needle in [
            "[default: 1e-4]",
            "[default: 1404]",
            "[default: 10]",
            "[default: 42]",
        ] {
            assert!(base.contains(needle), "{needle} in {base}");
        }
        let finetune = help(Stage::Finetune);
        for needle in [
            "[default: 6e-5]",
            "[default: 1200]",
            "[default: 5]",
            "[default: batch]",
        ] {
            assert!(finetune.contains(needle), "{needle} in {finetune}");
        }
    }

    /// Stage 2 inherits exactly the settings `INHERITED` names, which its help says.
    #[test]
    fn the_inherited_settings_are_the_ones_named() {
        let base = Recipe::of(Stage::Finetune);
        let other = Recipe {
            stage: Stage::Base,
            batch_size: 7,
            schedule: Schedule {
                cyclic: CyclicLr::triangular2(1.0, 2.0, 3),
                step: SchedStep::Epoch,
            },
            seed: 1,
            holdout: 0.5,
            augment: false,
            dropout: false,
            shuffle: false,
            amp: Amp::Bf16,
            image_size: 32,
            label_smoothing: 0.5,
            precise_bn: 3,
            which: ModelChoice::Best,
        };
        let inherited = base.clone().inheriting(&other);
        let changed: Vec<String> = inherited
            .differences(&base)
            .into_iter()
            .map(|d| d.flag)
            .collect();
        assert_eq!(changed, INHERITED);
        assert!(
            base.differences(&other).len() > INHERITED.len(),
            "other differs in all"
        );
    }

    #[test]
    fn holdout_bounds() {
        assert!(validate_holdout(0.05).is_ok());
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(validate_holdout(bad).is_err());
        }
    }
}
