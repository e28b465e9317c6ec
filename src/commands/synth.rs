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

/// Bounds that keep a mistyped size from filling the disk: ImageNet's 1000 classes, and 20
/// times Tiny ImageNet's 500 training images per class.
const MAX_CLASSES: i64 = 1000;
const MAX_PER_CLASS: i64 = 10_000;

#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Directory to create
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Layout and formats of the dataset
    #[arg(long, value_enum, default_value_t = Layout::TinyImagenet)]
    pub layout: Layout,
    /// Number of classes, at most 1000
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=MAX_CLASSES))]
    pub classes: u16,
    /// Training images per class, at most 10 000
    #[arg(long, default_value_t = 60, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=MAX_PER_CLASS))]
    pub per_class: u16,
    /// Validation images per class, at most 10 000
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u16).range(0..=MAX_PER_CLASS))]
    pub val_per_class: u16,
    /// Seed of the generator
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: &SynthArgs) -> Result<()> {
    let spec = SynthSpec {
        classes: args.classes.into(),
        per_class: args.per_class.into(),
        val_per_class: args.val_per_class.into(),
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
