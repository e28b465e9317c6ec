//! `vggtiny download`: Tiny ImageNet fetched (resumable, MD5-checked) and unpacked.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::download::{fetch_dataset, DEFAULT_MD5, DEFAULT_URL};

#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// Folder to put the zip and the unpacked dataset in
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Where to download from (a mirror, say)
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// Expected MD5 of the zip
    #[arg(long, default_value = DEFAULT_MD5)]
    pub md5: String,
}

pub fn run(args: &DownloadArgs) -> Result<()> {
    let dataset = fetch_dataset(&args.url, &args.md5, &args.to)?;
    println!("dataset ready in {}", dataset.display());
    Ok(())
}
