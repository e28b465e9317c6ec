//! Flag groups several commands share, flattened into each (`#[command(flatten)]`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use tch::Device;

use crate::bail_input;
use crate::device::{self, DeviceChoice};
use crate::io::paths::image_cache_dir;
use crate::model::ModelChoice;
use crate::run_dir::saved_model::SavedModel;

/// `--device`, and opening it.
#[derive(Debug, Clone, Args)]
pub struct DeviceFlag {
    /// auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, env = "VGGTINY_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
}

impl DeviceFlag {
    /// The device to run on, said on stderr.
    pub fn open(&self) -> Result<Device> {
        device::open(self.device)
    }
}

/// Where decoded images are cached.
#[derive(Debug, Clone, Args)]
pub struct CacheFlags {
    /// Where decoded images are cached [default: ~/.cache/vggtiny/images]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Decode the images without reading or writing a cache file
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

impl CacheFlags {
    /// The cache directory to use: none with --no-cache, else --cache-dir or the default.
    pub fn dir(&self) -> Option<PathBuf> {
        (!self.no_cache).then(|| self.cache_dir.clone().unwrap_or_else(image_cache_dir))
    }
}

/// How the commands that score images read them: the cache, and what to do with images that
/// cannot be decoded.
#[derive(Debug, Clone, Args)]
pub struct ImageFlags {
    #[command(flatten)]
    pub cache: CacheFlags,
    /// Score without the images that cannot be decoded instead of stopping
    #[arg(long)]
    pub skip_bad_images: bool,
}

/// `--batch-size` of the commands that only score images.
#[derive(Debug, Clone, Args)]
pub struct ScoreBatch {
    /// Images per forward pass
    #[arg(long = "batch-size", default_value_t = 256, value_name = "N", value_parser = at_least_one)]
    pub size: usize,
}

/// A count that must be positive, as clap checks it.
fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be at least 1".into()),
    }
}

/// A trained model to use: a run directory (its last or best model) or a model file.
#[derive(Debug, Clone, Args)]
pub struct ModelFlags {
    /// Run directory or model .safetensors file
    #[arg(long, default_value = "runs/finetune", value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// Which model of the run: the last epoch's or the best holdout top-1's
    #[arg(long, value_enum, default_value_t = ModelChoice::Last)]
    pub which: ModelChoice,
}

impl ModelFlags {
    /// The model `--checkpoint` and `--which` name.
    pub fn open(&self) -> Result<SavedModel> {
        let made_by = "vggtiny finetune --data DIR";
        open_run(&self.checkpoint, self.which, "--checkpoint", made_by)
    }
}

/// The run (or model file) at `path`, named by `flag`, with its `which` model. Where there is
/// none, the error says which command writes one there (`made_by`) and which flag points
/// elsewhere.
pub fn open_run(path: &Path, which: ModelChoice, flag: &str, made_by: &str) -> Result<SavedModel> {
    if !path.exists() {
        bail_input!(
            "{}: no run here; `{made_by} --out {}` writes one, or point {flag} at another run \
             directory or model file",
            path.display(),
            path.display()
        );
    }
    SavedModel::resolve(path, which)
}
