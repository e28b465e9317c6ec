//! The command line: the root of the clap definition, and running one parsed command line.

use anyhow::Result;
use clap::{CommandFactory, Parser};

use crate::commands::Command;

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

/// Runs one command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "vggtiny", &mut std::io::stdout());
            Ok(())
        }
        command => command.run(),
    }
}
