//! The subcommands: each file holds one command's flags (clap) and the code that turns them
//! into a call of the layer below and prints the result, as cargo lays out its commands.

pub mod bench;
pub mod download;
pub mod eval;
pub mod flags;
pub mod inspect;
pub mod predict;
pub mod report;
pub mod soak;
pub mod synth;
pub mod train;

use anyhow::Result;
use clap::Subcommand;

use crate::model::Stage;

/// The version of the `--json` outputs' shape (eval, predict, bench): raised when a field
/// changes meaning or goes away, so that scripts reading them can tell.
pub const JSON_VERSION: u32 = 1;

/// Prints `body` as the one line of JSON that `--json` promises: `version`, then its fields.
fn print_json(body: &impl serde::Serialize) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Versioned<'a, T> {
        version: u32,
        #[serde(flatten)]
        body: &'a T,
    }
    let line = serde_json::to_string(&Versioned {
        version: JSON_VERSION,
        body,
    })?;
    println!("{line}");
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stage 1: frozen VGG16 features, new BatchNorm/Dropout head, Adam + CyclicLR
    TrainBase(train::TrainBaseArgs),
    /// Stage 2: everything unfrozen, starting from a stage-1 run
    Finetune(train::FinetuneArgs),
    /// Top-1/top-5 accuracy and mean loss on the holdout or the official val set
    Eval(eval::EvalArgs),
    /// Write a small learnable synthetic dataset in the Tiny ImageNet layout
    Synth(synth::SynthArgs),
    /// Training curves of runs (report.png), accuracy per class, most confused classes
    Report(report::ReportArgs),
    /// The five most likely classes of images of any size or format
    Predict(predict::PredictArgs),
    /// Download and unpack Tiny ImageNet (resumable, MD5-checked)
    Download(download::DownloadArgs),
    /// Measure the pipeline: decode, augmentation, both training stages, eval, memory
    Bench(bench::BenchArgs),
    /// Both stages as long as the recipe on a small synthetic set, watching memory, files and
    /// time per step; fails when they grow
    Soak(soak::SoakArgs),
    /// Diagnostics for the parity suite: vggtiny's view of a dataset, its decoded pixels
    #[command(hide = true, subcommand)]
    Inspect(inspect::InspectCommand),
}

impl Command {
    pub fn run(self) -> Result<()> {
        match self {
            Command::TrainBase(args) => train::run_base(args),
            Command::Finetune(args) => train::run_finetune(args),
            Command::Eval(args) => eval::run(&args),
            Command::Synth(args) => synth::run(&args),
            Command::Report(args) => report::run(&args),
            Command::Predict(args) => predict::run(&args),
            Command::Download(args) => download::run(&args),
            Command::Bench(args) => bench::run(&args),
            Command::Soak(args) => soak::run(&args),
            Command::Inspect(command) => inspect::run(&command),
        }
    }

    /// The command's `--batch-size`, for advice when a device runs out of memory; none for a
    /// resumed run, which keeps its own.
    pub fn batch_size(&self) -> Option<usize> {
        match self {
            Command::TrainBase(args) if !args.session.resume => {
                Some(args.recipe.batch_size(Stage::Base))
            }
            Command::Finetune(args) if !args.session.resume => {
                Some(args.recipe.batch_size(Stage::Finetune))
            }
            Command::Eval(args) => Some(args.batch.size),
            Command::Report(args) => Some(args.batch.size),
            Command::Predict(args) => Some(args.batch.size),
            Command::Bench(args) => Some(args.batch_size),
            _ => None,
        }
    }
}
