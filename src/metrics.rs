//! What a run measures: top-k counts, the per-batch and per-epoch records, and the
//! `metrics.jsonl` log they are appended to.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::tensorboard::EventWriter;

/// Per-row count of targets among the `k` largest logits, summed: a 0-dim int64 tensor on the
/// logits' device (no host synchronisation).
pub fn topk_correct(logits: &Tensor, targets: &Tensor, k: i64) -> Tensor {
    let k = k.min(logits.size()[1]);
    let (_, top) = logits.topk(k, 1, true, true);
    top.eq_tensor(&targets.unsqueeze(1))
        .any_dim(1, false)
        .sum(Kind::Int64)
}

/// A memory figure of this process from /proc/self/status (`VmRSS:` now, `VmHWM:` peak), in
/// MiB; 0 where the file is not there.
pub fn host_memory_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Record of one logged optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub stage: String,
    pub epoch: u32,
    /// Optimizer steps from 0 within the stage.
    pub step: u64,
    pub lr: f64,
    pub beta1: f64,
    pub loss: f64,
    /// Mini-batch accuracy, at prediction intervals only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acc: Option<f64>,
}

/// Record of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub stage: String,
    pub epoch: u32,
    /// True mean NLL over the epoch's training samples.
    pub train_loss: f64,
    pub holdout_loss: f64,
    pub holdout_top1: f64,
    pub holdout_top5: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
    /// Resident host memory at the end of the epoch, MiB.
    #[serde(default)]
    pub host_mb: f64,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event<'a> {
    Batch(&'a BatchRecord),
    Epoch(&'a EpochRecord),
}

/// Appends one JSON object per line to `metrics.jsonl`, flushed line by line, and the same
/// scalars to a TensorBoard event file when asked.
pub struct MetricsLog {
    out: BufWriter<File>,
    tensorboard: Option<EventWriter>,
}

impl MetricsLog {
    pub fn append(path: &Path, tensorboard: Option<&Path>) -> Result<MetricsLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsLog {
            out: BufWriter::new(file),
            tensorboard: tensorboard.map(EventWriter::create).transpose()?,
        })
    }

    fn scalars(&mut self, step: u64, values: &[(&str, Option<f64>)]) -> Result<()> {
        if let Some(tb) = &mut self.tensorboard {
            for (tag, value) in values {
                if let Some(value) = value {
                    tb.scalar(tag, step as i64, *value)?;
                }
            }
            tb.flush()?;
        }
        Ok(())
    }

    fn write(&mut self, event: Event) -> Result<()> {
        serde_json::to_writer(&mut self.out, &event)?;
        self.out.write_all(b"\n")?;
        self.out.flush().context("cannot write metrics.jsonl")
    }

    /// Bytes written to the log so far (everything is flushed line by line).
    pub fn bytes_written(&self) -> Result<u64> {
        Ok(self.out.get_ref().metadata()?.len())
    }

    pub fn batch(&mut self, record: &BatchRecord) -> Result<()> {
        self.write(Event::Batch(record))?;
        self.scalars(
            record.step,
            &[
                ("train/loss", Some(record.loss)),
                ("train/batch_acc", record.acc),
                ("train/lr", Some(record.lr)),
                ("train/beta1", Some(record.beta1)),
            ],
        )
    }

    pub fn epoch(&mut self, record: &EpochRecord) -> Result<()> {
        self.write(Event::Epoch(record))?;
        self.scalars(
            u64::from(record.epoch),
            &[
                ("epoch/train_loss", Some(record.train_loss)),
                ("epoch/holdout_loss", Some(record.holdout_loss)),
                ("epoch/holdout_top1", Some(record.holdout_top1)),
                ("epoch/holdout_top5", Some(record.holdout_top5)),
                ("epoch/lr", Some(record.lr)),
                ("epoch/images_per_sec", Some(record.images_per_sec)),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_counts_hits() {
        let logits = Tensor::from_slice(&[
            0.1f32, 0.5, 0.2, 0.9, 0.0, 0.3, // row 0: order 3,1,5,2,0,4
            0.9, 0.1, 0.2, 0.3, 0.4, 0.5, // row 1: order 0,5,4,3,2,1
        ])
        .view([2, 6]);
        let targets = Tensor::from_slice(&[1i64, 1]);
        assert_eq!(topk_correct(&logits, &targets, 1).int64_value(&[]), 0);
        assert_eq!(topk_correct(&logits, &targets, 2).int64_value(&[]), 1);
        assert_eq!(topk_correct(&logits, &targets, 5).int64_value(&[]), 1);
        assert_eq!(topk_correct(&logits, &targets, 6).int64_value(&[]), 2);
        // k larger than the class count means every class
        assert_eq!(topk_correct(&logits, &targets, 50).int64_value(&[]), 2);
    }

    #[test]
    fn log_lines_are_tagged_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::append(&path, None).unwrap();
        log.batch(&BatchRecord {
            stage: "base".into(),
            epoch: 1,
            step: 0,
            lr: 1e-4,
            beta1: 0.9,
            loss: 2.5,
            acc: None,
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["event"], "batch");
        assert_eq!(v["lr"], 1e-4);
        assert!(v.get("acc").is_none());
    }

    #[test]
    fn host_memory_is_read() {
        let rss = host_memory_mb("VmRSS:");
        assert!(rss > 1.0 && rss <= host_memory_mb("VmHWM:"), "{rss}");
    }
}
