//! vggtiny: Tiny ImageNet classification by VGG16 transfer learning, in two stages.
//!
//! `cli` parses, `config` validates, `data` turns image folders into batches, `model` is the
//! network, `optim` Adam and CyclicLR, `train` the one loop of both stages, `eval` the scores,
//! `checkpoint` the run directory on disk, `metrics` what gets logged.

pub mod amp;
pub mod atomic_file;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod download;
pub mod error;
pub mod eval;
pub mod font;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
pub mod predict;
pub mod progress;
pub mod report;
pub mod signals;
pub mod tensorboard;
pub mod train;

use anyhow::Result;

use cli::{Cli, Command};
use config::TrainConfig;
use data::synth::{write_dataset, SynthSpec};

/// Runs one command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::TrainBase(args) => train::run(&TrainConfig::base(args)?).map(drop),
        Command::Finetune(args) => train::run(&TrainConfig::finetune(args)?).map(drop),
        Command::Eval(args) => eval::run(&args),
        Command::Inspect(command) => inspect::run(&command),
        Command::Bench(args) => bench::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Download(args) => download::run(&args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "vggtiny", &mut std::io::stdout());
            Ok(())
        }
        Command::Synth(args) => {
            let spec = SynthSpec {
                classes: args.classes,
                per_class: args.per_class,
                val_per_class: args.val_per_class,
                seed: args.seed,
            };
            write_dataset(&args.out, &spec)?;
            println!(
                "wrote {} classes x {} training + {} val images to {}",
                spec.classes,
                spec.per_class,
                spec.val_per_class,
                args.out.display()
            );
            Ok(())
        }
    }
}
