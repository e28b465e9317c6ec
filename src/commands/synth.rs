//! `vggtiny synth`: a small learnable synthetic dataset in the Tiny ImageNet layout.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::data::synth::{write_dataset, SynthSpec};

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

pub fn run(args: &SynthArgs) -> Result<()> {
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
