//! `metrics.jsonl`: one JSON object a line, a `batch` event every logged optimizer step and an
//! `epoch` event after each epoch. The records, reading them back, and cutting the file back to
//! a checkpoint's position.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::input_error;

/// Record of one logged optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub stage: String,
    pub epoch: u32,
    /// Optimizer steps from 0 within the stage.
    pub step: u64,
    #[serde(with = "crate::io::json_float")]
    pub lr: f64,
    #[serde(with = "crate::io::json_float")]
    pub beta1: f64,
    #[serde(with = "crate::io::json_float")]
    pub loss: f64,
    /// Mini-batch accuracy, at prediction intervals only.
    #[serde(
        with = "crate::io::json_float::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub acc: Option<f64>,
}

/// Record of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub stage: String,
    pub epoch: u32,
    /// True mean NLL over the epoch's training samples.
    #[serde(with = "crate::io::json_float")]
    pub train_loss: f64,
    #[serde(with = "crate::io::json_float")]
    pub holdout_loss: f64,
    #[serde(with = "crate::io::json_float")]
    pub holdout_top1: f64,
    /// `None` (null) with fewer than 5 classes.
    #[serde(with = "crate::io::json_float::option")]
    pub holdout_top5: Option<f64>,
    /// Learning rate of the epoch's last step.
    #[serde(with = "crate::io::json_float")]
    pub lr: f64,
    #[serde(with = "crate::io::json_float")]
    pub seconds: f64,
    #[serde(with = "crate::io::json_float")]
    pub images_per_sec: f64,
    /// Resident host memory at the end of the epoch, MiB.
    #[serde(with = "crate::io::json_float", default)]
    pub host_mb: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Batch(BatchRecord),
    Epoch(EpochRecord),
}

/// Every event of a `metrics.jsonl`, in order; errors name the file and line.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                input_error(format!(
                    "{} line {}: not a metrics event: {e}",
                    path.display(),
                    n + 1
                ))
            })
        })
        .collect()
}

/// The epoch records of a `metrics.jsonl`, in order.
pub fn read_epochs(path: &Path) -> Result<Vec<EpochRecord>> {
    Ok(read_events(path)?
        .into_iter()
        .filter_map(|e| match e {
            Event::Epoch(r) => Some(r),
            Event::Batch(_) => None,
        })
        .collect())
}

/// What a resumed run found of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewound {
    /// The log held every byte the checkpoint counted; what came after is cut.
    Intact,
    /// The log was shorter (or missing): its complete lines, `kept` bytes, are kept and the
    /// rest is lost.
    Lost { kept: u64 },
}

/// Cuts `metrics.jsonl` back to the `len` bytes a checkpoint counted. A log that lost lines
/// is never padded: it keeps its complete lines and a partial last line goes.
pub fn rewind(path: &Path, len: u64) -> Result<Rewound> {
    let have = fs::read(path).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(Vec::new()),
        _ => Err(e),
    });
    let have = have.with_context(|| format!("cannot read {}", path.display()))?;
    let (keep, rewound) = if have.len() as u64 >= len {
        (len, Rewound::Intact)
    } else {
        let kept = have.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) as u64;
        (kept, Rewound::Lost { kept })
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.set_len(keep)
        .with_context(|| format!("cannot truncate {}", path.display()))?;
    Ok(rewound)
}

#[cfg(test)]
impl EpochRecord {
    /// An epoch record with every figure set, its holdout loss `holdout_loss`.
    pub fn example(holdout_loss: f64) -> EpochRecord {
        EpochRecord {
            stage: "base".into(),
            epoch: 1,
            train_loss: 1.0,
            holdout_loss,
            holdout_top1: 0.5,
            holdout_top5: Some(1.0),
            lr: 0.1,
            seconds: 1.0,
            images_per_sec: 2.0,
            host_mb: 100.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_back_in_order_with_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        fs::write(
            &path,
            "{\"event\":\"batch\",\"stage\":\"base\",\"epoch\":1,\"step\":0,\"lr\":0.1,\"beta1\":0.9,\"loss\":1.0}\n\
             {\"event\":\"epoch\",\"stage\":\"base\",\"epoch\":1,\"train_loss\":1.0,\"holdout_loss\":null,\
             \"holdout_top1\":0.5,\"holdout_top5\":1.0,\"lr\":0.1,\"seconds\":1.0,\"images_per_sec\":2.0}\n",
        )
        .unwrap();
        let events = read_events(&path).unwrap();
        assert!(matches!(&events[0], Event::Batch(b) if b.loss == 1.0 && b.acc.is_none()));
        let epochs = read_epochs(&path).unwrap();
        assert_eq!(epochs.len(), 1);
        assert_eq!(epochs[0].holdout_top1, 0.5);
        assert!(epochs[0].holdout_loss.is_nan(), "null reads as NaN");
        fs::write(&path, "{\"event\":\"batch\"}\n").unwrap();
        let err = read_events(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_record_with_a_nan_loss_round_trips() {
        let record = Event::Epoch(EpochRecord::example(f64::NAN));
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains("\"holdout_loss\":\"NaN\""), "{line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Event::Epoch(r) if r.holdout_loss.is_nan()));
    }
}
