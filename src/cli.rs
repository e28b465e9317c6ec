//! The command line: the root of the clap definition, and running one parsed command line.

use anyhow::Result;
use clap::{CommandFactory, Parser};

use crate::commands::Command;
use crate::data::decode::{set_max_pixels, DEFAULT_MAX_PIXELS};

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
    /// Refuse to decode images of more pixels than this (what PIL refuses as a decompression
    /// bomb)
    #[arg(long, global = true, default_value_t = DEFAULT_MAX_PIXELS, value_name = "N")]
    pub max_image_pixels: u64,
}

/// Runs one command line.
pub fn run(cli: Cli) -> Result<()> {
    set_max_pixels(cli.max_image_pixels);
    match cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "vggtiny", &mut std::io::stdout());
            Ok(())
        }
        command => command.run(),
    }
}
