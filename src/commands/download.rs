//! `vggtiny download`: Tiny ImageNet fetched (resumable, MD5-checked) and unpacked.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::fetch::{fetch_dataset, DEFAULT_MD5, DEFAULT_URL};

/// A day: longer deadlines overflow the HTTP client's clock arithmetic, and no read is worth
/// waiting for that long.
const MAX_TIMEOUT_S: u64 = 86_400;

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
    /// Give up when connecting, or any read, takes longer than this (a stalled server), at
    /// most a day; the next run resumes where it stopped
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_S))]
    pub timeout: u64,
}

pub fn run(args: &DownloadArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let dataset = fetch_dataset(&args.url, &args.md5, &args.to, timeout)?;
    println!("dataset ready in {}", dataset.display());
    Ok(())
}
