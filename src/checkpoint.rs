//! A run directory on disk: `model.safetensors` (the original program's `state_dict()`),
//! `meta.json` (classes, split, configuration, per-epoch metrics) and `metrics.jsonl`.
//! Every file is written to a temporary name in the same directory, synced, then renamed, so a
//! crash leaves either the old file or the new one.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::atomic_file::{write_atomic, write_bytes_atomic};
use crate::bail_input;
use crate::config::TrainConfig;
use crate::data::split::SplitSpec;
use crate::error::input_error;
use crate::metrics::EpochRecord;
use crate::model::Stage;

pub const MODEL_FILE: &str = "model.safetensors";
pub const META_FILE: &str = "meta.json";
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What `meta.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub tool: String,
    pub version: String,
    pub stage: Stage,
    /// Class names (wnids) in label order.
    pub classes: Vec<String>,
    pub split: SplitSpec,
    pub config: TrainConfig,
    pub epochs: Vec<EpochRecord>,
}

impl Meta {
    pub fn new(stage: Stage, classes: Vec<String>, split: SplitSpec, config: TrainConfig) -> Meta {
        Meta {
            tool: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            stage,
            classes,
            split,
            config,
            epochs: Vec::new(),
        }
    }
}

/// Saves named tensors as safetensors, atomically. Tensors are copied to the CPU first.
pub fn save_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(n, t)| (n.as_str(), t.to_device(tch::Device::Cpu).contiguous()))
        .collect();
    write_atomic(path, |tmp| {
        Tensor::write_safetensors(&cpu, tmp).map_err(anyhow::Error::from)
    })
}

/// Reads named tensors from a `.safetensors` or `.ot` file (by extension; anything else is
/// read as safetensors). Errors name the file.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail_input!("{}: no such file", path.display());
    }
    let result = match path.extension().and_then(|e| e.to_str()) {
        Some("ot") => Tensor::load_multi(path),
        _ => Tensor::read_safetensors(path),
    };
    result.map_err(|e| {
        input_error(format!(
            "{}: not a readable weights file: {e}",
            path.display()
        ))
    })
}

pub fn save_meta(dir: &Path, meta: &Meta) -> Result<()> {
    let json = serde_json::to_vec_pretty(meta)?;
    write_bytes_atomic(&dir.join(META_FILE), &json)
}

pub fn load_meta(path: &Path) -> Result<Meta> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| input_error(format!("{}: not a vggtiny meta.json: {e}", path.display())))
}

/// A model to start from or to evaluate: a run directory, or a bare weights file with the
/// `meta.json` beside it when there is one.
pub struct Source {
    pub model: PathBuf,
    pub meta: Option<Meta>,
}

impl Source {
    pub fn resolve(path: &Path) -> Result<Source> {
        let (model, meta_path) = if path.is_dir() {
            let model = path.join(MODEL_FILE);
            if !model.is_file() {
                bail_input!(
                    "{}: no {MODEL_FILE} in this directory; is it a finished run?",
                    path.display()
                );
            }
            (model, path.join(META_FILE))
        } else if path.is_file() {
            let dir = path.parent().unwrap_or(Path::new("."));
            (path.to_path_buf(), dir.join(META_FILE))
        } else {
            bail_input!("{}: no such run directory or model file", path.display());
        };
        let meta = if meta_path.is_file() {
            Some(load_meta(&meta_path)?)
        } else {
            None
        };
        Ok(Source { model, meta })
    }
}

/// Makes sure `dir` exists and holds no model, unless `force`.
pub fn prepare_run_dir(dir: &Path, force: bool) -> Result<()> {
    if dir.join(MODEL_FILE).exists() && !force {
        bail_input!(
            "{} already holds a model; pass --force to overwrite it, or choose another --out",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let metrics = dir.join(METRICS_FILE);
    if metrics.exists() {
        fs::remove_file(&metrics)
            .with_context(|| format!("cannot remove {}", metrics.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_refuses_to_overwrite_a_model() {
        let dir = tempfile::tempdir().unwrap();
        prepare_run_dir(dir.path(), false).unwrap();
        fs::write(dir.path().join(MODEL_FILE), b"x").unwrap();
        let err = prepare_run_dir(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        prepare_run_dir(dir.path(), true).unwrap();
    }

    #[test]
    fn safetensors_round_trip_and_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        let n = Tensor::from(3i64);
        save_tensors(&path, &[("a".into(), t.shallow_clone()), ("n".into(), n)]).unwrap();
        let back = read_tensors(&path).unwrap();
        let a = back.iter().find(|(k, _)| k == "a").unwrap();
        assert_eq!(a.1, t);
        fs::write(&path, b"garbage").unwrap();
        let err = read_tensors(&path).unwrap_err().to_string();
        assert!(err.contains("m.safetensors"), "{err}");
    }
}
