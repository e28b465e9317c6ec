//! `vggtiny train-base` and `vggtiny finetune`: their flags, in a recipe group and a session
//! group, turned into a validated `TrainConfig` after the files it depends on (the run a stage
//! starts from, the run it resumes, the weights) are read, then one call of the training loop.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use tch::Device;

use super::flags::{open_run, CacheFlags, DeviceFlag};
use crate::bail_input;
use crate::data::scan::DataRoot;
use crate::data::split::SplitSpec;
use crate::device;
use crate::io::paths::{default_weights_path, resolved};
use crate::model::{Amp, Stage};
use crate::optim::schedule::{CyclicLr, LearningRate, SchedStep, Schedule};
use crate::run_dir::checkpoint::CHECKPOINT_FILE;
use crate::run_dir::config::{defaults, Init, Origin, Recipe, Session, TrainConfig};
use crate::run_dir::meta::{load_meta, Meta};
use crate::run_dir::{self, ModelChoice, META_FILE};
use crate::train;

/// The recipe's flags both stages share: what `--resume` compares with the run's own.
#[derive(Debug, Clone, Args)]
pub struct RecipeArgs {
    /// Images per optimizer step
    #[arg(long, default_value_t = defaults::BATCH_SIZE, value_name = "N")]
    pub batch_size: usize,
    /// When the CyclicLR schedule advances
    #[arg(long, value_enum, default_value_t = SchedStep::Batch)]
    pub sched_step: SchedStep,
    /// Seed of the train/holdout split and of every random draw [default: 42; finetune: the --from run's]
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<i64>,
    /// Holdout fraction of the split [default: 0.05; finetune: the --from run's]
    #[arg(long, value_name = "FRACTION")]
    pub holdout: Option<f64>,
    /// Mixed precision: fp16 (CUDA, with loss scaling) or bf16; off computes in fp32 as the recipe
    #[arg(long, value_enum, default_value_t = Amp::Off)]
    pub amp: Amp,
    /// Side the images are resized to before the network (the crop in training, the whole
    /// image in eval) [default: 64, the recipe; finetune: the --from run's]
    #[arg(long, value_name = "N")]
    pub image_size: Option<u32>,
    /// Label smoothing of the training loss, as PyTorch's cross_entropy(label_smoothing=EPS);
    /// holdout and val losses stay the plain NLL
    #[arg(long, default_value_t = 0.0, value_name = "EPS")]
    pub label_smoothing: f64,
    /// After each epoch, recompute the head's BatchNorm statistics over N training batches as
    /// eval sees them (no augmentation, no dropout); 0 keeps the recipe's running statistics
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub precise_bn: usize,
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

/// This invocation's flags: a resumed run takes them from its command line.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Tiny ImageNet root (with train/ and val/), or a class-folder tree
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    #[command(flatten)]
    pub device: DeviceFlag,
    #[command(flatten)]
    pub cache: CacheFlags,
    /// Log the loss every N optimizer steps
    #[arg(long, default_value_t = defaults::LOG_INTERVAL, value_name = "N")]
    pub log_interval: u64,
    /// Also log mini-batch accuracy every N optimizer steps
    #[arg(long, default_value_t = defaults::PRED_INTERVAL, value_name = "N")]
    pub pred_interval: u64,
    /// Continue the stopped run in --out from its last checkpoint: same split, schedule
    /// position, optimizer state and random draws
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Also write a resumable checkpoint every N optimizer steps [default: after each epoch only]
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Skip up to N batches whose loss is not finite (checked every step); with 0 a non-finite
    /// loss stops the run at the next log interval, keeping the last good checkpoint
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_nan_skips: u64,
    /// Train without the images that cannot be decoded (listed in meta.json) instead of stopping
    #[arg(long)]
    pub skip_bad_images: bool,
    /// Also write the logged scalars as TensorBoard event files in DIR
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
    /// Stop when the holdout top-1 has not improved by more than --min-delta for PATIENCE epochs
    #[arg(long, value_name = "PATIENCE")]
    pub early_stop: Option<u32>,
    /// Smallest holdout top-1 gain (a fraction, e.g. 0.001) that counts as an improvement
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub min_delta: f64,
    /// Stop after N optimizer steps (quick trials, smoke tests)
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// Deterministic GPU kernels (no cuDNN benchmark mode), so that a run, or a resumed run,
    /// repeats bit for bit on a GPU (stage 1: stage 2's pooling backward has no deterministic
    /// CUDA kernel); slower. The CPU is deterministic either way
    #[arg(long)]
    pub deterministic: bool,
    /// Overwrite a run directory that already holds a model
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TrainBaseArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// ImageNet VGG16 weights (.safetensors or .ot, torchvision names) [default: ~/.cache/vggtiny/vgg16-imagenet.safetensors]
    #[arg(long, value_name = "FILE", conflicts_with = "random_init")]
    pub weights: Option<PathBuf>,
    /// Start from randomly initialised features instead of ImageNet weights
    #[arg(long)]
    pub random_init: bool,
    /// Diagnostics: start from every tensor of this model file, head included
    #[arg(long, hide = true, value_name = "FILE", conflicts_with_all = ["weights", "random_init"])]
    pub init: Option<PathBuf>,
    /// Run directory to write
    #[arg(long, default_value = "runs/base", value_name = "DIR")]
    pub out: PathBuf,
    /// Passes over the training split
    #[arg(long, default_value_t = defaults::BASE.epochs)]
    pub epochs: u32,
    /// CyclicLR base learning rate (Adam's lr)
    #[arg(long, default_value_t = defaults::BASE.lr)]
    pub lr: LearningRate,
    /// CyclicLR peak learning rate
    #[arg(long, default_value_t = defaults::BASE.max_lr)]
    pub max_lr: LearningRate,
    /// CyclicLR half cycle, in scheduler steps
    #[arg(long, default_value_t = defaults::BASE.step_size_up, value_name = "STEPS")]
    pub step_size_up: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// Stage-1 run directory (or model .safetensors) to start from
    #[arg(long, default_value = "runs/base", value_name = "RUN")]
    pub from: PathBuf,
    /// Which model of the --from run: the last epoch's or the best holdout top-1's
    #[arg(long, value_enum, default_value_t = ModelChoice::Last)]
    pub which: ModelChoice,
    /// Run directory to write
    #[arg(long, default_value = "runs/finetune", value_name = "DIR")]
    pub out: PathBuf,
    /// Passes over the training split
    #[arg(long, default_value_t = defaults::FINETUNE.epochs)]
    pub epochs: u32,
    /// CyclicLR base learning rate (Adam's lr)
    #[arg(long, default_value_t = defaults::FINETUNE.lr)]
    pub lr: LearningRate,
    /// CyclicLR peak learning rate
    #[arg(long, default_value_t = defaults::FINETUNE.max_lr)]
    pub max_lr: LearningRate,
    /// CyclicLR half cycle, in scheduler steps
    #[arg(long, default_value_t = defaults::FINETUNE.step_size_up, value_name = "STEPS")]
    pub step_size_up: u64,
}

impl RecipeArgs {
    /// The recipe of `stage` with `cyclic`, the split and input size its command resolved
    /// (stage 2 inherits them), and the model `which` it starts from.
    fn recipe(&self, stage: Stage, cyclic: CyclicLr, resolved: Resolved) -> Recipe {
        Recipe {
            stage,
            batch_size: self.batch_size,
            schedule: Schedule {
                cyclic,
                step: self.sched_step,
            },
            seed: resolved.seed,
            holdout: resolved.holdout,
            augment: !self.no_augment,
            dropout: !self.no_dropout,
            shuffle: !self.no_shuffle,
            amp: self.amp,
            image_size: resolved.image_size,
            label_smoothing: self.label_smoothing,
            precise_bn: self.precise_bn,
            which: resolved.which,
        }
    }
}

/// The recipe values a stage's command resolves: its own flags, or for stage 2 the run it
/// starts from.
struct Resolved {
    seed: i64,
    holdout: f64,
    image_size: u32,
    which: ModelChoice,
}

impl SessionArgs {
    fn session(self, out: PathBuf, epochs: u32) -> Session {
        Session {
            cache_dir: self.cache.dir(),
            data: self.data,
            out,
            device: self.device.device,
            deterministic: self.deterministic,
            epochs,
            log_interval: self.log_interval,
            pred_interval: self.pred_interval,
            max_steps: self.max_steps,
            checkpoint_every: self.checkpoint_every,
            max_nan_skips: self.max_nan_skips,
            early_stop: self.early_stop,
            min_delta: self.min_delta,
            tensorboard: self.tensorboard,
            force: self.force,
            resume: self.resume,
            quiet: false,
        }
    }
}

pub fn run_base(args: TrainBaseArgs) -> Result<()> {
    let init = if let Some(path) = args.init {
        Init::From(path)
    } else if args.random_init {
        Init::RandomInit
    } else {
        let path = args.weights.unwrap_or_else(default_weights_path);
        // A resumed run has its weights in its checkpoint.
        if !path.is_file() && !args.session.resume {
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
    let r = &args.recipe;
    let resolved = Resolved {
        seed: r.seed.unwrap_or(defaults::SEED),
        holdout: r.holdout.unwrap_or(defaults::HOLDOUT),
        image_size: r.image_size.unwrap_or(defaults::IMAGE_SIZE),
        which: ModelChoice::Last,
    };
    let cyclic = CyclicLr::triangular2(args.lr.0, args.max_lr.0, args.step_size_up);
    let config = TrainConfig {
        recipe: r.recipe(Stage::Base, cyclic, resolved),
        origin: Origin {
            init,
            skip_bad_images: args.session.skip_bad_images,
        },
        session: args.session.session(args.out, args.epochs),
    };
    train_stage(config)
}

/// Stage 2 takes the split and input size of the run it starts from unless told otherwise.
pub fn run_finetune(args: FinetuneArgs) -> Result<()> {
    let from = args.from.display().to_string();
    let inherited = if args.session.resume {
        // A resumed run has them recorded itself; its --from run may be gone by now.
        load_meta(&args.out.join(META_FILE)).ok()
    } else {
        let made_by = "vggtiny train-base --data DIR";
        open_run(&args.from, args.which, "--from", made_by)?.meta
    };
    let recorded = inherited.as_ref().map(|m| &m.split);
    let (seed, holdout) = finetune_split(&args.recipe, recorded, &from);
    let inherited_size = inherited.as_ref().map(|m| m.config.recipe.image_size);
    let resolved = Resolved {
        seed,
        holdout,
        image_size: finetune_image_size(args.recipe.image_size, inherited_size, &from),
        which: args.which,
    };
    let cyclic = CyclicLr::triangular2(args.lr.0, args.max_lr.0, args.step_size_up);
    let config = TrainConfig {
        recipe: args.recipe.recipe(Stage::Finetune, cyclic, resolved),
        origin: Origin {
            init: Init::From(args.from),
            skip_bad_images: args.session.skip_bad_images,
        },
        session: args.session.session(args.out, args.epochs),
    };
    train_stage(config)
}

/// The split of stage 2: the flags' where given, else the one `recorded` by the stage-1 run
/// `from`, else the defaults. A split other than stage 1's is allowed with a warning.
fn finetune_split(r: &RecipeArgs, recorded: Option<&SplitSpec>, from: &str) -> (i64, f64) {
    let seed = r
        .seed
        .or(recorded.map(|s| s.seed))
        .unwrap_or(defaults::SEED);
    let holdout = r
        .holdout
        .or(recorded.map(|s| s.fractions[1]))
        .unwrap_or(defaults::HOLDOUT);
    if let Some(split) = recorded {
        if seed != split.seed || holdout != split.fractions[1] {
            eprintln!(
                "warning: split (seed {seed}, holdout {holdout}) differs from the one of {from} \
                 (seed {}, holdout {}); the holdout will contain images stage 1 trained on",
                split.seed, split.fractions[1]
            );
        }
    }
    (seed, holdout)
}

/// The input size of stage 2: the flag's where given, else the one of the run it starts from.
/// Another size than that run's is allowed (training at one size and testing at another is a
/// known technique) and said.
fn finetune_image_size(flag: Option<u32>, inherited: Option<u32>, from: &str) -> u32 {
    let size = flag.or(inherited).unwrap_or(defaults::IMAGE_SIZE);
    if let Some(before) = inherited.filter(|&before| before != size) {
        eprintln!("note: {from} trained at {before}x{before}; this stage trains at {size}x{size}");
    }
    size
}

/// Validates the configuration (on `--resume`, the run's own, compared with it), opens the
/// device and trains the stage.
fn train_stage(requested: TrainConfig) -> Result<()> {
    // The dataset's errors (a zip, val/, the folder above) before anything else is read.
    let root = DataRoot::locate(&requested.session.data)?;
    let session = &requested.session;
    for (flag, dir) in [
        ("--out", Some(&session.out)),
        ("--tensorboard", session.tensorboard.as_ref()),
    ] {
        if let Some(file) = dir.filter(|d| d.exists() && !d.is_dir()) {
            bail_input!(
                "{flag} {}: a file is there; name a directory",
                file.display()
            );
        }
    }
    let out = resolved(&session.out);
    if let Some(tree) = [Some(&root.train), root.val.as_ref()]
        .into_iter()
        .flatten()
        .find(|tree| out.starts_with(resolved(tree)))
    {
        bail_input!(
            "--out {} is inside {}, which the run reads: it would become part of the dataset \
             (a class folder of its own); choose an --out outside it",
            session.out.display(),
            tree.display()
        );
    }
    requested.validate()?;
    if !session.resume {
        refuse_a_source_the_run_replaces(&requested)?;
    }
    let (config, recorded) = if requested.session.resume {
        let recorded = recorded_meta(&requested.session.out)?;
        (requested.resumed(&recorded.config)?, Some(recorded))
    } else {
        (requested, None)
    };
    let device = device_for(&config)?;
    train::run(&config, recorded, device, &mut |_| {}).map(drop)
}

/// Refuses starting weights that are `--out` itself or one of the files a fresh run there
/// replaces (`--force` would remove the model it starts from).
fn refuse_a_source_the_run_replaces(config: &TrainConfig) -> Result<()> {
    let (flag, path) = match &config.origin.init {
        Init::Weights(path) => ("--weights", path),
        Init::From(path) => ("--from", path),
        Init::RandomInit => return Ok(()),
    };
    let out = &config.session.out;
    if path.exists() && run_dir::would_clear(out, path) {
        bail_input!(
            "{flag} {} is the run in --out {} or one of its files, which the new run \
             replaces; choose another --out",
            path.display(),
            out.display()
        );
    }
    Ok(())
}

/// The meta.json of the run in `out`, for `--resume`.
fn recorded_meta(out: &Path) -> Result<Meta> {
    let meta_path = out.join(META_FILE);
    if !meta_path.is_file() {
        if out.join(CHECKPOINT_FILE).is_file() {
            bail_input!(
                "--resume: {} has a checkpoint but no {META_FILE}, which holds the run's \
                 settings, so it cannot be resumed; start it over with --force",
                out.display()
            );
        }
        bail_input!(
            "--resume: {} holds no run to resume (no {META_FILE})",
            out.display()
        );
    }
    load_meta(&meta_path)
}

/// The device of a training run, with its CUDA settings applied.
fn device_for(config: &TrainConfig) -> Result<Device> {
    let device = DeviceFlag {
        device: config.session.device.clone(),
    }
    .open()?;
    config.recipe.amp.check_device(device)?;
    if device != Device::Cpu {
        device::set_deterministic(config.session.deterministic)?;
    }
    Ok(device)
}
