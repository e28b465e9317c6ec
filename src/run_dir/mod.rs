//! A run directory on disk: `model.safetensors` (the original program's `state_dict()`),
//! `best.safetensors`, `checkpoint.safetensors` (the resume point), `meta.json` and
//! `metrics.jsonl`. Every file is written to a temporary name in the same directory, synced,
//! then renamed, so a crash leaves either the old file or the new one.

pub mod checkpoint;
pub mod config;
pub mod lock;
pub mod meta;
pub mod metrics;
pub mod source;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::bail_input;
use checkpoint::CHECKPOINT_FILE;

pub const MODEL_FILE: &str = "model.safetensors";
pub const META_FILE: &str = "meta.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The model of the epoch with the best holdout top-1 so far.
pub const BEST_FILE: &str = "best.safetensors";

/// Which model of a run directory to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelChoice {
    /// The model of the last epoch (model.safetensors)
    #[default]
    Last,
    /// The model of the epoch with the best holdout top-1 (best.safetensors)
    Best,
}

/// Makes sure `dir` exists and holds no model, unless `force`.
pub fn prepare(dir: &Path, force: bool) -> Result<()> {
    let used = dir.join(MODEL_FILE).exists() || dir.join(CHECKPOINT_FILE).exists();
    if used && !force && !dir.join(META_FILE).is_file() {
        bail_input!(
            "{} holds a run's files but no {META_FILE}, so it cannot be resumed; pass --force \
             to overwrite them, or choose another --out",
            dir.display()
        );
    }
    if used && !force {
        bail_input!(
            "{} already holds a run; pass --resume to continue it, --force to overwrite it, \
             or choose another --out",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // A forced fresh start must leave nothing of the old run that could pass for the new one's:
    // its meta.json is written at the start, before any model.
    for stale in [METRICS_FILE, CHECKPOINT_FILE, MODEL_FILE, BEST_FILE] {
        let path = dir.join(stale);
        if path.exists() {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_refuses_to_overwrite_a_model_and_force_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path(), false).unwrap();
        fs::write(dir.path().join(MODEL_FILE), b"x").unwrap();
        let err = prepare(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        fs::write(dir.path().join(BEST_FILE), b"x").unwrap();
        prepare(dir.path(), true).unwrap();
        for gone in [MODEL_FILE, BEST_FILE] {
            assert!(!dir.path().join(gone).exists(), "{gone} left by --force");
        }
    }
}
