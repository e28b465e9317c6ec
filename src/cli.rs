//! The command line: what users type. `config.rs` turns it into validated settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::amp::Amp;
use crate::checkpoint::Which;
use crate::eval::Tta;

#[derive(Debug, Parser)]
#[command(
    name = "vggtiny",
    version,
    about = "Tiny ImageNet classifier by VGG16 transfer learning: train-base, finetune, eval",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stage 1: frozen VGG16 features, new BatchNorm/Dropout head, Adam + CyclicLR
    TrainBase(TrainBaseArgs),
    /// Stage 2: everything unfrozen, starting from a stage-1 run
    Finetune(FinetuneArgs),
    /// Top-1/top-5 accuracy and mean loss on the holdout or the official val set
    Eval(EvalArgs),
    /// Write a small learnable synthetic dataset in the Tiny ImageNet layout
    Synth(SynthArgs),
    /// Training curves of runs (report.png), accuracy per class, most confused classes
    Report(ReportArgs),
    /// The five most likely classes of images of any size or format
    Predict(PredictArgs),
    /// Download and unpack Tiny ImageNet (resumable, MD5-checked)
    Download(DownloadArgs),
    /// Measure the pipeline: decode, augmentation, both training stages, eval, memory
    Bench(BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, ...)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Diagnostics for the parity suite: vggtiny's view of a dataset, its decoded pixels
    #[command(hide = true, subcommand)]
    Inspect(InspectCommand),
}

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// JSON: classes, samples (path, label), holdout indices of the split, val samples
    Dataset {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: i64,
        #[arg(long, default_value_t = 0.05)]
        holdout: f64,
    },
    /// Decode images into a safetensors file holding `images` (uint8, N x 64 x 64 x 3)
    Decode {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Augment `images` of a safetensors file with the per-sample parameters of a JSON file;
    /// writes `augmented` (float NCHW in [0, 1], before Normalize)
    Augment {
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        params: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// JSON: augmentation parameters for N samples, drawn as training draws them
    SampleParams {
        #[arg(long)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// A freshly initialised model's tensors, as safetensors
    Init {
        #[arg(long)]
        classes: i64,
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// When CyclicLR steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedStep {
    /// Once per optimizer step, as CyclicLR is designed to be used
    Batch,
    /// Once per epoch, as the original program did (lr stays near base_lr)
    Epoch,
}

/// Where decoded images are cached.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Where decoded images are cached [default: ~/.cache/vggtiny]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Decode the images without reading or writing a cache file
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

impl CacheArgs {
    /// The cache directory to use: none with --no-cache, else --cache-dir or the default.
    pub fn dir(&self) -> Option<PathBuf> {
        (!self.no_cache).then(|| {
            self.cache_dir
                .clone()
                .unwrap_or_else(crate::config::cache_dir)
        })
    }
}

/// Flags shared by both training stages.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Tiny ImageNet root (with train/ and val/), or a class-folder tree
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Images per optimizer step
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch_size: usize,
    /// When the CyclicLR schedule advances
    #[arg(long, value_enum, default_value_t = SchedStep::Batch)]
    pub sched_step: SchedStep,
    /// Seed of the train/holdout split and of every random draw [default: 42; finetune: the --from run's]
    #[arg(long)]
    pub seed: Option<i64>,
    /// Holdout fraction of the split [default: 0.05; finetune: the --from run's]
    #[arg(long, value_name = "FRACTION")]
    pub holdout: Option<f64>,
    /// auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Log the loss every N optimizer steps
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub log_interval: u64,
    /// Also log mini-batch accuracy every N optimizer steps
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub pred_interval: u64,
    /// Mixed precision: fp16 (CUDA, with loss scaling) or bf16; off computes in fp32 as the recipe
    #[arg(long, value_enum, default_value_t = Amp::Off)]
    pub amp: Amp,
    /// After each epoch, recompute the head's BatchNorm statistics over N training batches as
    /// eval sees them (no augmentation, no dropout); 0 keeps the recipe's running statistics
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub precise_bn: usize,
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
    /// Overwrite a run directory that already holds a model
    #[arg(long)]
    pub force: bool,
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

#[derive(Debug, Clone, Args)]
pub struct TrainBaseArgs {
    #[command(flatten)]
    pub common: CommonArgs,
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
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// CyclicLR base learning rate (Adam's lr)
    #[arg(long, default_value = "1e-4")]
    pub lr: f64,
    /// CyclicLR peak learning rate
    #[arg(long, default_value = "6e-4")]
    pub max_lr: f64,
    /// CyclicLR half cycle, in scheduler steps
    #[arg(long, default_value_t = 1404, value_name = "STEPS")]
    pub step_size_up: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Stage-1 run directory (or model .safetensors) to start from
    #[arg(long, default_value = "runs/base", value_name = "RUN")]
    pub from: PathBuf,
    /// Which model of the --from run: the last epoch's or the best holdout top-1's
    #[arg(long, value_enum, default_value_t = Which::Last)]
    pub which: Which,
    /// Run directory to write
    #[arg(long, default_value = "runs/finetune", value_name = "DIR")]
    pub out: PathBuf,
    /// Passes over the training split
    #[arg(long, default_value_t = 5)]
    pub epochs: u32,
    /// CyclicLR base learning rate (Adam's lr)
    #[arg(long, default_value = "1e-5")]
    pub lr: f64,
    /// CyclicLR peak learning rate
    #[arg(long, default_value = "6e-5")]
    pub max_lr: f64,
    /// CyclicLR half cycle, in scheduler steps
    #[arg(long, default_value_t = 1200, value_name = "STEPS")]
    pub step_size_up: u64,
}

/// Which images `eval` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalSplit {
    /// The seeded holdout part of the training tree
    Holdout,
    /// The official val/ set, labelled by val_annotations.txt
    Val,
}

impl EvalSplit {
    pub fn name(self) -> &'static str {
        match self {
            EvalSplit::Holdout => "holdout",
            EvalSplit::Val => "val",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Tiny ImageNet root (with train/ and val/), or a class-folder tree
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Run directory or model .safetensors file
    #[arg(long, default_value = "runs/finetune", value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// Which model of the run: the last epoch's or the best holdout top-1's
    #[arg(long, value_enum, default_value_t = Which::Last)]
    pub which: Which,
    /// Which images to score
    #[arg(long, value_enum, default_value_t = EvalSplit::Holdout)]
    pub split: EvalSplit,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Test-time augmentation: average the class probabilities over views of each image
    #[arg(long, value_enum, default_value_t = Tta::None)]
    pub tta: Tta,
    /// Split seed for a checkpoint without meta.json
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    /// Holdout fraction for a checkpoint without meta.json
    #[arg(long, default_value_t = 0.05, value_name = "FRACTION")]
    pub holdout: f64,
    /// Images per forward pass
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub batch_size: usize,
    /// auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Score without the images that cannot be decoded instead of stopping
    #[arg(long)]
    pub skip_bad_images: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Directory to create (Tiny ImageNet layout)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of classes
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Training images per class
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub per_class: usize,
    /// Validation images per class
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub val_per_class: usize,
    /// Seed of the generator
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Run directories, overlaid in the plots; the last one is also scored per class
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The PNG to write
    #[arg(long, default_value = "report.png", value_name = "FILE")]
    pub out: PathBuf,
    /// Dataset to score the last run on [default: the one it trained on]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Which images to score per class
    #[arg(long, value_enum, default_value_t = EvalSplit::Holdout)]
    pub split: EvalSplit,
    /// Which model of the last run: the last epoch's or the best holdout top-1's
    #[arg(long, value_enum, default_value_t = Which::Last)]
    pub which: Which,
    /// auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// Folder to put the zip and the unpacked dataset in
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Where to download from (a mirror, say)
    #[arg(long, default_value = crate::download::DEFAULT_URL)]
    pub url: String,
    /// Expected MD5 of the zip
    #[arg(long, default_value = crate::download::DEFAULT_MD5)]
    pub md5: String,
}

#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Image files (any size or format; resized to 64x64)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Run directory or model .safetensors file
    #[arg(long, default_value = "runs/finetune", value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// Which model of the run: the last epoch's or the best holdout top-1's
    #[arg(long, value_enum, default_value_t = Which::Last)]
    pub which: Which,
    /// Dataset root whose classes a bare model file (no meta.json) was trained on
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Test-time augmentation: average the class probabilities over views of each image
    #[arg(long, value_enum, default_value_t = Tta::None)]
    pub tta: Tta,
    /// Print one JSON array instead of text
    #[arg(long)]
    pub json: bool,
    /// auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// A part of the pipeline `bench` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Cold JPEG decode, and a warm start from the cache
    Decode,
    /// Augmented, normalised training batches from the decoded set
    Augment,
    /// Stage-1 training steps (frozen features)
    TrainBase,
    /// Stage-2 training steps (everything trained)
    Finetune,
    /// Eval-mode forward passes
    Eval,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Tiny ImageNet root or class-folder tree [default: synthetic images written to a temp dir]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// How many images (the first ones of the training tree)
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub images: usize,
    /// Images per training batch
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch_size: usize,
    /// Timed optimizer steps per training stage (after two warm-up steps)
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub steps: usize,
    /// Mixed precision of the training and eval workloads
    #[arg(long, value_enum, default_value_t = Amp::Off)]
    pub amp: Amp,
    /// Measure only these workloads (comma separated) [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Workload>,
    /// auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}
