//! `metrics.jsonl`: one JSON object a line, a `batch` event every logged optimizer step and an
//! `epoch` event after each epoch. The records, reading them back, and cutting the file back to
//! a checkpoint's position.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::input_error;
use crate::io::shell_quoted;

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

/// Every event of a `metrics.jsonl`, in order; errors name the file and line, and how to keep
/// the lines before it.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                let file = shell_quoted(&path.display().to_string());
                let before = if n == 1 { "line" } else { "lines" };
                input_error(format!(
                    "{} line {}: not a metrics event: {e}; to keep the {n} {before} before it: \
                     head -n {n} {file} > {file}.good && mv {file}.good {file}",
                    path.display(),
                    n + 1,
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
    /// The log held every byte the checkpoint counted, each line readable; what came after is
    /// cut.
    Intact,
    /// The log was shorter (or missing) or held an unreadable line: the `kept` bytes of lines
    /// before it are kept and the rest is lost.
    Lost { kept: u64 },
}

/// Cuts `metrics.jsonl` back to the `len` bytes a checkpoint counted. A log that lost lines
/// is never padded, and one with a damaged line (a flipped byte) is cut before it: it keeps
/// its lines up to the first that is not complete and readable.
pub fn rewind(path: &Path, len: u64) -> Result<Rewound> {
    let have = fs::read(path).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(Vec::new()),
        _ => Err(e),
    });
    let have = have.with_context(|| format!("cannot read {}", path.display()))?;
    let counted = &have[..have.len().min(usize::try_from(len).unwrap_or(usize::MAX))];
    let readable = readable_len(counted);
    let rewound = if readable == len {
        Rewound::Intact
    } else {
        Rewound::Lost { kept: readable }
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.set_len(readable)
        .with_context(|| format!("cannot truncate {}", path.display()))?;
    Ok(rewound)
}

/// The length of the complete, readable lines `log` starts with.
fn readable_len(log: &[u8]) -> u64 {
    let mut len = 0;
    for line in log.split_inclusive(|&b| b == b'\n') {
        let readable = line.ends_with(b"\n") && serde_json::from_slice::<Event>(line).is_ok();
        if !readable {
            break;
        }
        len += line.len();
    }
    len as u64
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
        assert!(
            err.contains("keep the 0 lines before it: head -n 0"),
            "{err}"
        );
    }

    #[test]
    fn a_record_with_a_nan_loss_round_trips() {
        let record = Event::Epoch(EpochRecord::example(f64::NAN));
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains("\"holdout_loss\":\"NaN\""), "{line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Event::Epoch(r) if r.holdout_loss.is_nan()));
    }

    #[test]
    fn rewinding_keeps_the_readable_lines_the_checkpoint_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let line = |loss: f64| {
            let record = Event::Epoch(EpochRecord::example(loss));
            serde_json::to_string(&record).unwrap() + "\n"
        };
        let (a, b, c) = (line(1.0), line(2.0), line(3.0));
        let counted = (a.len() + b.len()) as u64;
        fs::write(&path, format!("{a}{b}{c}")).unwrap();
        assert_eq!(rewind(&path, counted).unwrap(), Rewound::Intact);
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{a}{b}"));

        let damaged = b.replacen("epoch", "epoxh", 1);
        fs::write(&path, format!("{a}{damaged}")).unwrap();
        let kept = a.len() as u64;
        assert_eq!(rewind(&path, counted).unwrap(), Rewound::Lost { kept });
        assert_eq!(fs::read_to_string(&path).unwrap(), a);

        fs::write(&path, format!("{a}{}", &b[..5])).unwrap();
        assert_eq!(rewind(&path, counted).unwrap(), Rewound::Lost { kept });
        fs::remove_file(&path).unwrap();
        assert_eq!(rewind(&path, counted).unwrap(), Rewound::Lost { kept: 0 });
    }
}
