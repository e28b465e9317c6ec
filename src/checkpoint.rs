//! A run directory on disk: `model.safetensors` (the original program's `state_dict()`),
//! `meta.json` (classes, split, configuration, per-epoch metrics) and `metrics.jsonl`.
//! Every file is written to a temporary name in the same directory, synced, then renamed, so a
//! crash leaves either the old file or the new one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

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
/// The model of the epoch with the best holdout top-1 so far.
pub const BEST_FILE: &str = "best.safetensors";

/// Which model of a run directory to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    /// The model of the last epoch (model.safetensors)
    #[default]
    Last,
    /// The model of the epoch with the best holdout top-1 (best.safetensors)
    Best,
}
/// Everything a run needs to continue: model, optimizer moments, loss scale, and its
/// `TrainState` in the file's metadata. Written whole and atomically, so it is never torn.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const STATE_KEY: &str = "vggtiny.state";

/// The best holdout top-1 so far and the epoch that reached it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: u32,
    pub top1: f64,
}

/// Where a run stands, saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub stage: Stage,
    /// The epoch in progress (1-based), or the next one at an epoch boundary.
    pub epoch: u32,
    /// Batches of `epoch` already trained.
    pub batch: usize,
    /// Optimizer steps taken in this stage (the scheduler position).
    pub step: u64,
    pub adam_steps: u64,
    /// Sum and count of the per-sample losses of `epoch` so far.
    pub loss_sum: f64,
    pub seen: usize,
    pub last_lr: f64,
    pub nan_skips: u64,
    pub best: Option<Best>,
    /// Bytes of metrics.jsonl that belong to this state; a resume cuts what came after.
    pub metrics_len: u64,
    pub finished: bool,
}

impl TrainState {
    pub fn new(stage: Stage) -> TrainState {
        TrainState {
            stage,
            epoch: 1,
            batch: 0,
            step: 0,
            adam_steps: 0,
            loss_sum: 0.0,
            seen: 0,
            last_lr: 0.0,
            nan_skips: 0,
            best: None,
            metrics_len: 0,
            finished: false,
        }
    }
}

/// Writes a checkpoint: `tensors` (model, optimizer, scaler) with `state` as metadata.
pub fn save_checkpoint(dir: &Path, tensors: &[(String, Tensor)], state: &TrainState) -> Result<()> {
    let metadata = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(state)?)]);
    save_safetensors(&dir.join(CHECKPOINT_FILE), tensors, Some(metadata))
}

/// Reads a checkpoint written by `save_checkpoint`; errors name the file.
pub fn load_checkpoint(dir: &Path) -> Result<(HashMap<String, Tensor>, TrainState)> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.is_file() {
        bail_input!(
            "{}: no checkpoint to resume from (was the run started with this version?)",
            path.display()
        );
    }
    let (tensors, metadata) = read_safetensors(&path)?;
    let state = metadata
        .get(STATE_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| input_error(format!("{}: no training state in it", path.display())))?;
    Ok((tensors.into_iter().collect(), state))
}

/// What `meta.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub tool: String,
    pub version: String,
    pub stage: Stage,
    /// Class names (wnids) in label order.
    pub classes: Vec<String>,
    /// Human names of the classes, from words.txt ("" where unknown).
    #[serde(default)]
    pub class_names: Vec<String>,
    pub split: SplitSpec,
    pub config: TrainConfig,
    pub epochs: Vec<EpochRecord>,
    /// Images left out because they could not be decoded (`--skip-bad-images`).
    #[serde(default)]
    pub skipped: Vec<PathBuf>,
    #[serde(default)]
    pub best: Option<Best>,
}

impl Meta {
    pub fn new(stage: Stage, classes: Vec<String>, split: SplitSpec, config: TrainConfig) -> Meta {
        Meta {
            tool: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            stage,
            classes,
            class_names: Vec::new(),
            split,
            config,
            epochs: Vec::new(),
            skipped: Vec::new(),
            best: None,
        }
    }
}

/// A tensor's bytes in the form the safetensors writer takes.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor) -> Result<Bytes> {
    let t = t.to_device(Device::Cpu).contiguous();
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(Bytes {
        dtype: Dtype::try_from(t.kind())?,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Metadata key of the CRC-32 of every tensor's bytes (in name order): safetensors has no
/// checksum of its own, and a flipped bit in the data would load as a silently wrong weight.
const CRC_KEY: &str = "vggtiny.crc32";

fn tensors_crc<'a>(named: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sorted: Vec<_> = named.collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut crc = crc32fast::Hasher::new();
    for (name, data) in sorted {
        crc.update(name.as_bytes());
        crc.update(data);
    }
    format!("{:08x}", crc.finalize())
}

/// Saves named tensors (copied to the CPU) and string metadata as safetensors, atomically,
/// with a checksum of the tensors in the metadata.
pub fn save_safetensors(
    path: &Path,
    named: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = named
        .iter()
        .map(|(n, t)| Ok((n.as_str(), to_bytes(t)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = metadata.unwrap_or_default();
    let crc = tensors_crc(bytes.iter().map(|(n, b)| (*n, b.data.as_slice())));
    metadata.insert(CRC_KEY.to_string(), crc);
    write_atomic(path, |tmp| {
        let views = bytes.iter().map(|(n, b)| (*n, b));
        safetensors::tensor::serialize_to_file(views, &Some(metadata), tmp)?;
        Ok(())
    })
}

/// Saves named tensors as safetensors, atomically.
pub fn save_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    save_safetensors(path, named, None)
}

/// Named tensors, as files hold them.
pub type Named = Vec<(String, Tensor)>;

/// Reads a safetensors file: its tensors and its metadata. Errors name the file.
pub fn read_safetensors(path: &Path) -> Result<(Named, HashMap<String, String>)> {
    let bytes =
        fs::read(path).map_err(|e| input_error(format!("cannot read {}: {e}", path.display())))?;
    let bad = |e: &dyn std::fmt::Display| {
        input_error(format!(
            "{}: not a readable safetensors file: {e}",
            path.display()
        ))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(&e))?;
    if let Some(stored) = metadata.get(CRC_KEY) {
        let views = file.tensors();
        let actual = tensors_crc(views.iter().map(|(n, v)| (n.as_str(), v.data())));
        if *stored != actual {
            return Err(bad(&"checksum mismatch: the file is corrupt"));
        }
    }
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| Ok((name, Tensor::try_from(view).map_err(|e| bad(&e))?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((tensors, metadata))
}

/// Reads named tensors from a `.safetensors` or `.ot` file (by extension; anything else is
/// read as safetensors). Errors name the file.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail_input!("{}: no such file", path.display());
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("ot") => Tensor::load_multi(path).map_err(|e| {
            input_error(format!(
                "{}: not a readable weights file: {e}",
                path.display()
            ))
        }),
        _ => Ok(read_safetensors(path)?.0),
    }
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
    /// `path` is a run directory (its last or best model, as `which` says) or a model file.
    pub fn resolve(path: &Path, which: Which) -> Result<Source> {
        let (model, meta_path) = if path.is_dir() {
            let file = match which {
                Which::Last => MODEL_FILE,
                Which::Best => BEST_FILE,
            };
            let model = path.join(file);
            if !model.is_file() {
                bail_input!(
                    "{}: no {file} in this directory; is it a run with a finished epoch?",
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

/// Cuts `metrics.jsonl` in `dir` back to `len` bytes (what a checkpoint covers).
pub fn truncate_metrics(dir: &Path, len: u64) -> Result<()> {
    let path = dir.join(METRICS_FILE);
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.set_len(len)
        .with_context(|| format!("cannot truncate {}", path.display()))
}

/// Makes sure `dir` exists and holds no model, unless `force`.
pub fn prepare_run_dir(dir: &Path, force: bool) -> Result<()> {
    let used = dir.join(MODEL_FILE).exists() || dir.join(CHECKPOINT_FILE).exists();
    if used && !force {
        bail_input!(
            "{} already holds a run; pass --resume to continue it, --force to overwrite it, \
             or choose another --out",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // A forced fresh start must not leave the old run's log or checkpoint behind.
    for stale in [METRICS_FILE, CHECKPOINT_FILE] {
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

    #[test]
    fn a_flipped_bit_in_tensor_data_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let t = Tensor::arange(1000, (tch::Kind::Float, Device::Cpu));
        save_tensors(&path, &[("w".into(), t)]).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let err = read_tensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("m.safetensors"),
            "{err}"
        );
    }
}
