//! The command line: the root of the clap definition, and running one parsed command line.

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::{soak, Command};
use crate::data::decode::{set_max_pixels, DEFAULT_MAX_PIXELS};
use crate::model::Stage;
use crate::recipe;

#[derive(Debug, Parser)]
#[command(
    name = "vggtiny",
    version,
    about = "Tiny ImageNet classifier by VGG16 transfer learning: train-base, finetune, eval",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: TopLevel,
    /// Refuse to decode images of more pixels than this (what PIL refuses as a decompression
    /// bomb)
    #[arg(long, global = true, default_value_t = DEFAULT_MAX_PIXELS, value_name = "N")]
    pub max_image_pixels: u64,
}

/// The subcommands: those that do the work, and `completions`, which needs the whole command
/// line's definition and so is answered here.
#[derive(Debug, Subcommand)]
// One value per process: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum TopLevel {
    #[command(flatten)]
    Run(Command),
    /// Print a shell completion script (bash, zsh, fish, ...)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The whole command line's definition: the derived one, with the recipe's numbers in the
/// help of the commands that take them as defaults.
pub fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("train-base", |c| recipe::with_defaults(c, Stage::Base))
        .mut_subcommand("finetune", |c| recipe::with_defaults(c, Stage::Finetune))
        .mut_subcommand("soak", soak::with_recipe_length)
}

/// The process's command line, parsed; a usage error exits with clap's message and code 2.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command()).exit())
}

/// Runs one command line.
pub fn run(cli: Cli) -> Result<()> {
    set_max_pixels(cli.max_image_pixels);
    match cli.command {
        TopLevel::Completions { shell } => {
            let mut command = command();
            clap_complete::generate(shell, &mut command, "vggtiny", &mut std::io::stdout());
            Ok(())
        }
        TopLevel::Run(command) => command.run(),
    }
}

impl Cli {
    /// The command's `--batch-size`, for advice when a device runs out of memory.
    pub fn batch_size(&self) -> Option<usize> {
        match &self.command {
            TopLevel::Run(command) => command.batch_size(),
            TopLevel::Completions { .. } => None,
        }
    }
}
