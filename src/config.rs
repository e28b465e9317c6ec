//! Validated settings built from the command line: defaults resolved, ranges checked, the
//! device chosen. A `TrainConfig` is also what `meta.json` records of a run.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::amp::Amp;
use crate::bail_input;
use crate::checkpoint::{Source, Which};
use crate::cli::{CommonArgs, FinetuneArgs, SchedStep, TrainBaseArgs};
use crate::model::Stage;
use crate::optim::CyclicLr;

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
    #[serde(skip)]
    pub force: bool,
    #[serde(skip)]
    pub resume: bool,
}

/// Serde default of switches that older meta.json files do not record.
fn on() -> bool {
    true
}

/// The settings in which the two stages differ.
struct StageSettings {
    stage: Stage,
    which: Which,
    out: PathBuf,
    init: Init,
    epochs: u32,
    schedule: CyclicLr,
    seed: i64,
    holdout: f64,
}

/// The cache file `train-base` reads ImageNet weights from when `--weights` is not given.
pub fn default_weights_path() -> PathBuf {
    cache_dir().join("vgg16-imagenet.safetensors")
}

/// `$XDG_CACHE_HOME/vggtiny`, else `~/.cache/vggtiny`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("vggtiny")
}

impl TrainConfig {
    pub fn base(args: TrainBaseArgs) -> Result<TrainConfig> {
        let init = if let Some(path) = args.init {
            Init::From(path)
        } else if args.random_init {
            Init::RandomInit
        } else {
            let path = args.weights.unwrap_or_else(default_weights_path);
            // A resumed run has its weights in its checkpoint.
            if !path.is_file() && !args.common.resume {
                bail_input!(
                    "no ImageNet VGG16 weights at {}\n\
                     Get them with `scripts/fetch-weights`, or convert a downloaded \
                     vgg16-397923af.pth with `scripts/convert-weights FILE.pth`, or pass \
                     --weights FILE, or train from scratch with --random-init.",
                    path.display()
                );
            }
            Init::Weights(path)
        };
        let c = args.common;
        let stage = StageSettings {
            stage: Stage::Base,
            which: Which::Last,
            seed: c.seed.unwrap_or(DEFAULT_SEED),
            holdout: c.holdout.unwrap_or(DEFAULT_HOLDOUT),
            out: args.out,
            init,
            epochs: args.epochs,
            schedule: CyclicLr::triangular2(args.lr, args.max_lr, args.step_size_up),
        };
        TrainConfig::build(c, stage)
    }

    /// Stage 2 takes the split of the run it starts from unless told otherwise.
    pub fn finetune(args: FinetuneArgs) -> Result<TrainConfig> {
        let source = Source::resolve(&args.from, args.which)?;
        let split = source.meta.as_ref().map(|m| &m.split);
        let c = args.common;
        let seed = c.seed.or(split.map(|s| s.seed)).unwrap_or(DEFAULT_SEED);
        let holdout = c
            .holdout
            .or(split.map(|s| s.fractions[1]))
            .unwrap_or(DEFAULT_HOLDOUT);
        if let Some(split) = split {
            if seed != split.seed || holdout != split.fractions[1] {
                eprintln!(
                    "warning: split (seed {seed}, holdout {holdout}) differs from the one of {} \
                     (seed {}, holdout {}); the holdout will contain images stage 1 trained on",
                    args.from.display(),
                    split.seed,
                    split.fractions[1]
                );
            }
        }
        let stage = StageSettings {
            stage: Stage::Finetune,
            which: args.which,
            seed,
            holdout,
            out: args.out,
            init: Init::From(args.from),
            epochs: args.epochs,
            schedule: CyclicLr::triangular2(args.lr, args.max_lr, args.step_size_up),
        };
        TrainConfig::build(c, stage)
    }

    fn build(c: CommonArgs, s: StageSettings) -> Result<TrainConfig> {
        let config = TrainConfig {
            stage: s.stage,
            data: c.data,
            out: s.out,
            init: s.init,
            epochs: s.epochs,
            batch_size: c.batch_size,
            schedule: s.schedule,
            sched_step: c.sched_step,
            seed: s.seed,
            holdout: s.holdout,
            device: c.device,
            cache_dir: c.cache.dir(),
            log_interval: c.log_interval,
            pred_interval: c.pred_interval,
            augment: !c.no_augment,
            dropout: !c.no_dropout,
            shuffle: !c.no_shuffle,
            precise_bn: c.precise_bn,
            amp: c.amp,
            max_steps: c.max_steps,
            checkpoint_every: c.checkpoint_every,
            early_stop: c.early_stop,
            tensorboard: c.tensorboard,
            min_delta: c.min_delta,
            which: s.which,
            max_nan_skips: c.max_nan_skips,
            skip_bad_images: c.skip_bad_images,
            force: c.force,
            resume: c.resume,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if !self.data.is_dir() {
            bail_input!("--data {}: no such directory", self.data.display());
        }
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
        if self.log_interval < 1 || self.pred_interval < 1 {
            bail_input!("--log-interval and --pred-interval must be at least 1");
        }
        let device = resolve_device(&self.device)?;
        if self.amp == Amp::Fp16 && device == Device::Cpu {
            bail_input!("--amp fp16 needs a CUDA device; on the CPU use --amp bf16 or off");
        }
        Ok(())
    }
}

/// The configuration a resumed run continues with: the one it recorded, but for the settings
/// that may change between sessions (device, length, logging, checkpoints, cache), taken from
/// this command line. Any other flag that differs from the recording is an error naming it.
pub fn resumed(requested: &TrainConfig, recorded: &TrainConfig) -> Result<TrainConfig> {
    const FROM_COMMAND_LINE: [&str; 11] = [
        "device",
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
    let (serde_json::Value::Object(requested_fields), serde_json::Value::Object(mut fields)) = (
        serde_json::to_value(requested)?,
        serde_json::to_value(recorded)?,
    ) else {
        anyhow::bail!("configuration is not a JSON object");
    };
    let differing: Vec<String> = requested_fields
        .iter()
        .filter(|(k, v)| {
            let k = k.as_str();
            !FROM_COMMAND_LINE.contains(&k)
                && !KEPT_AS_RECORDED.contains(&k)
                && fields.get(k) != Some(*v)
        })
        .map(|(k, _)| format!("--{}", k.replace('_', "-")))
        .collect();
    if !differing.is_empty() {
        bail_input!(
            "--resume: {} differ(s) from the run being resumed; resume with its original flags \
             (see config in {}/meta.json)",
            differing.join(", "),
            recorded.out.display()
        );
    }
    for key in FROM_COMMAND_LINE {
        if let Some(value) = requested_fields.get(key) {
            fields.insert(key.to_string(), value.clone());
        }
    }
    let mut config: TrainConfig = serde_json::from_value(serde_json::Value::Object(fields))?;
    config.resume = true;
    Ok(config)
}

pub fn validate_holdout(holdout: f64) -> Result<()> {
    if !(holdout > 0.0 && holdout < 1.0) {
        bail_input!("--holdout must be strictly between 0 and 1, got {holdout}");
    }
    Ok(())
}

/// `auto` picks the first CUDA device when one is usable; an explicit CUDA request without a
/// usable GPU is an error, never a silent CPU run.
pub fn resolve_device(spec: &str) -> Result<Device> {
    let cuda_count = || {
        if tch::Cuda::is_available() {
            tch::Cuda::device_count()
        } else {
            0
        }
    };
    let device = match spec {
        "auto" => {
            if cuda_count() > 0 {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }
        }
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match spec.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::Cuda(n),
            _ => bail_input!("--device {spec:?}: expected auto, cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(n) = device {
        let count = cuda_count();
        if count == 0 {
            bail_input!("--device {spec}: no usable CUDA device (this build or machine has none)");
        }
        if n as i64 >= count {
            bail_input!("--device {spec}: only {count} CUDA device(s) present");
        }
    }
    Ok(device)
}

/// Human name of a device for the start-up line.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs() {
        assert_eq!(resolve_device("cpu").unwrap(), Device::Cpu);
        assert!(resolve_device("gpu").is_err());
        assert!(resolve_device("cuda:x").is_err());
        if !tch::Cuda::is_available() {
            assert_eq!(resolve_device("auto").unwrap(), Device::Cpu);
            let err = resolve_device("cuda").unwrap_err().to_string();
            assert!(err.contains("no usable CUDA"), "{err}");
        }
    }

    #[test]
    fn holdout_bounds() {
        assert!(validate_holdout(0.05).is_ok());
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(validate_holdout(bad).is_err());
        }
    }
}
