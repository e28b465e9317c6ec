//! `vggtiny train-base` and `vggtiny finetune`: their flags (the recipe's, from `recipe`, and
//! this session's) turned into a validated `TrainConfig` after the files it depends on (the run
//! a stage starts from, the run it resumes, the weights) are read, then one call of the
//! training loop.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use tch::Device;

use super::flags::{open_run, CacheFlags, DeviceFlag};
use crate::bail_input;
use crate::config::{Init, Origin, Session, TrainConfig};
use crate::data::scan::DataRoot;
use crate::device;
use crate::io::paths::{default_weights_path, resolved};
use crate::model::{ModelChoice, Stage};
use crate::recipe::{self, Recipe, RecipeFlags};
use crate::run_dir::checkpoint::CHECKPOINT_FILE;
use crate::run_dir::meta::{load_meta, Meta};
use crate::run_dir::{self, META_FILE};
use crate::train::{self, Begin, StartWeights};

/// This invocation's flags: a resumed run takes them from its command line.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Tiny ImageNet root (with train/ and val/), or a class-folder tree
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Passes over the training split
    #[arg(long, value_name = "N")]
    pub epochs: Option<u32>,
    #[command(flatten)]
    pub device: DeviceFlag,
    #[command(flatten)]
    pub cache: CacheFlags,
    /// Log the loss every N optimizer steps
    #[arg(long, default_value_t = recipe::LOG_INTERVAL, value_name = "N")]
    pub log_interval: u64,
    /// Also log mini-batch accuracy every N optimizer steps
    #[arg(long, default_value_t = recipe::PRED_INTERVAL, value_name = "N")]
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
    pub recipe: RecipeFlags,
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
}

#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub recipe: RecipeFlags,
    /// Stage-1 run directory (or model .safetensors) to start from
    #[arg(long, default_value = "runs/base", value_name = "RUN")]
    pub from: PathBuf,
    /// Which model of the --from run: the last epoch's or the best holdout top-1's
    #[arg(long, value_enum)]
    pub which: Option<ModelChoice>,
    /// Run directory to write
    #[arg(long, default_value = "runs/finetune", value_name = "DIR")]
    pub out: PathBuf,
}

impl SessionArgs {
    fn session(self, out: PathBuf, stage: Stage) -> Session {
        Session {
            epochs: self.epochs.unwrap_or(recipe::epochs(stage)),
            cache_dir: self.cache.dir(),
            data: self.data,
            out,
            device: self.device.device,
            deterministic: self.deterministic,
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
    let config = TrainConfig {
        recipe: args.recipe.over(Recipe::of(Stage::Base)),
        origin: Origin {
            init,
            skip_bad_images: args.session.skip_bad_images,
        },
        session: args.session.session(args.out, Stage::Base),
    };
    train_stage(config, |init| StartWeights::open(init, ModelChoice::Last))
}

/// Stage 2 takes the split and input size of the run it starts from unless told otherwise.
pub fn run_finetune(args: FinetuneArgs) -> Result<()> {
    let mut stage = Recipe::of(Stage::Finetune);
    stage.which = args.which.unwrap_or(stage.which);
    let (inherited, opened) = if args.session.resume {
        // A resumed run has them recorded itself; its --from run may be gone by now.
        (load_meta(&args.out.join(META_FILE)).ok(), None)
    } else {
        let made_by = "vggtiny train-base --data DIR";
        let run = open_run(&args.from, stage.which, "--from", made_by)?;
        (run.meta.clone(), Some(run))
    };
    let which = stage.which;
    let inherited = inherited.map(|meta| meta.config.recipe);
    if let Some(run) = &inherited {
        stage = stage.inheriting(run);
    }
    let recipe = args.recipe.over(stage);
    if let Some(run) = &inherited {
        say_what_differs_from(run, &recipe, &args.from);
    }
    let config = TrainConfig {
        recipe,
        origin: Origin {
            init: Init::From(args.from),
            skip_bad_images: args.session.skip_bad_images,
        },
        session: args.session.session(args.out, Stage::Finetune),
    };
    // the --from run opened above, not twice
    train_stage(config, |init| match opened {
        Some(run) => Ok(StartWeights::Run(run)),
        None => StartWeights::open(init, which),
    })
}

/// Stage 2 may take another split or input size than the run `from` it starts from, whose
/// recipe is `run`: a split other than stage 1's is warned of, another size (training at one
/// size and testing at another is a known technique) said.
fn say_what_differs_from(run: &Recipe, recipe: &Recipe, from: &Path) {
    let from = from.display();
    let (seed, holdout) = (recipe.seed, recipe.holdout);
    if (seed, holdout) != (run.seed, run.holdout) {
        eprintln!(
            "warning: split (seed {seed}, holdout {holdout}) differs from the one of {from} \
             (seed {}, holdout {}); the holdout will contain images stage 1 trained on",
            run.seed, run.holdout
        );
    }
    let (before, size) = (run.image_size, recipe.image_size);
    if before != size {
        eprintln!("note: {from} trained at {before}x{before}; this stage trains at {size}x{size}");
    }
}

/// Validates the configuration (on `--resume`, the run's own, compared with it), opens the
/// device and trains the stage; a new one from the starting weights `weights` opens for the
/// configuration's `init`.
fn train_stage(
    requested: TrainConfig,
    weights: impl FnOnce(&Init) -> Result<StartWeights>,
) -> Result<()> {
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
    let (config, begin) = if requested.session.resume {
        let meta_path = requested.session.out.join(META_FILE);
        let recorded = recorded_meta(&requested.session.out)?;
        let config = requested.resumed(&recorded.config, &meta_path)?;
        (config, Begin::Resume(recorded))
    } else {
        let begin = Begin::New(weights(&requested.origin.init)?);
        (requested, begin)
    };
    let device = device_for(&config)?;
    train::run(&config, begin, device, &mut |_| {}).map(drop)
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
    let device = device::open(config.session.device)?;
    config.recipe.amp.check_device(device)?;
    if device != Device::Cpu {
        device::set_deterministic(config.session.deterministic)?;
    }
    Ok(device)
}
