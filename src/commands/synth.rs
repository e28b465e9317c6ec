//! `vggtiny synth`: a small learnable synthetic dataset, in the Tiny ImageNet layout or laid
//! out as users' own photos.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::data::synth::{write_dataset, SynthSpec};
use crate::data::synth_photos::write_photo_tree;

/// `--layout`: which kind of dataset to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// 64x64 JPEGs in Tiny ImageNet's tree (wnids, words.txt, val_annotations.txt)
    TinyImagenet,
    /// train/<class>/* and val/<class>/*: mixed sizes and formats (PNG, GIF, BMP, WebP, TIFF,
    /// PPM/PGM, JPEG of every kind, a GIF under a .jpg name), as users' own photos
    Folders,
}

#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Directory to create
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Layout and formats of the dataset
    #[arg(long, value_enum, default_value_t = Layout::TinyImagenet)]
    pub layout: Layout,
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
    match args.layout {
        Layout::TinyImagenet => write_dataset(&args.out, &spec)?,
        Layout::Folders => write_photo_tree(&args.out, &spec)?,
    }
    println!(
        "wrote {} classes x {} training + {} val images to {}",
        spec.classes,
        spec.per_class,
        spec.val_per_class,
        args.out.display()
    );
    Ok(())
}
