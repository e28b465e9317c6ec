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

impl BatchRecord {
    /// The step's numbers, by name: what TensorBoard (`train/NAME`) and the report draw.
    pub fn scalars(&self) -> Vec<Scalar> {
        vec![
            Scalar::new("loss", "loss", self.loss, Unit::Loss).drawn_in(&TRAINING_LOSS),
            Scalar::maybe("batch_acc", "batch acc", self.acc, Unit::Percent),
            Scalar::new("lr", "lr", self.lr, Unit::Rate).drawn_in(&LEARNING_RATE),
            Scalar::new("beta1", "beta1", self.beta1, Unit::Plain),
        ]
    }
}

impl EpochRecord {
    /// The epoch's numbers, by name: what TensorBoard (`epoch/NAME`), the console's epoch line
    /// and the report show. A new per-epoch metric is a field above and a line here.
    pub fn scalars(&self) -> Vec<Scalar> {
        vec![
            Scalar::new("train_loss", "train loss", self.train_loss, Unit::Loss),
            Scalar::new(
                "holdout_loss",
                "holdout loss",
                self.holdout_loss,
                Unit::Loss,
            )
            .drawn_in(&HOLDOUT_LOSS),
            Scalar::new("holdout_top1", "top-1", self.holdout_top1, Unit::Percent)
                .drawn_in(&HOLDOUT_ACCURACY),
            Scalar::maybe("holdout_top5", "top-5", self.holdout_top5, Unit::Percent)
                .drawn_in(&HOLDOUT_ACCURACY),
            Scalar::new("lr", "lr", self.lr, Unit::Rate),
            Scalar::new("seconds", "time", self.seconds, Unit::Seconds),
            Scalar::new(
                "images_per_sec",
                "speed",
                self.images_per_sec,
                Unit::PerSecond,
            ),
            Scalar::new("host_mb", "host memory", self.host_mb, Unit::MiB),
        ]
    }
}

/// One named number of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// Its TensorBoard tag after the record's prefix.
    pub name: &'static str,
    /// Its name on the console.
    pub label: &'static str,
    /// `None` where the record has no such number (no top-5 under five classes).
    pub value: Option<f64>,
    pub unit: Unit,
    /// The report's chart it is drawn in, if any.
    pub chart: Option<&'static Panel>,
}

impl Scalar {
    fn new(name: &'static str, label: &'static str, value: f64, unit: Unit) -> Scalar {
        Scalar::maybe(name, label, Some(value), unit)
    }

    fn maybe(name: &'static str, label: &'static str, value: Option<f64>, unit: Unit) -> Scalar {
        Scalar {
            name,
            label,
            value,
            unit,
            chart: None,
        }
    }

    fn drawn_in(self, chart: &'static Panel) -> Scalar {
        Scalar {
            chart: Some(chart),
            ..self
        }
    }

    /// `label value`, as the console shows it.
    pub fn shown(&self) -> String {
        let value = match self.value {
            Some(value) => self.unit.show(value),
            None => "n/a".to_string(),
        };
        format!("{} {value}", self.label)
    }
}

/// What a number measures, which says how it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Loss,
    /// A fraction, shown and drawn in percent.
    Percent,
    /// A learning rate.
    Rate,
    Seconds,
    /// Images per second.
    PerSecond,
    MiB,
    Plain,
}

impl Unit {
    pub fn show(self, value: f64) -> String {
        match self {
            Unit::Loss => format!("{value:.4}"),
            Unit::Percent => format!("{:.2}%", 100.0 * value),
            Unit::Rate => format!("{value:.3e}"),
            Unit::Seconds => format!("{value:.1} s"),
            Unit::PerSecond => format!("{value:.0} images/s"),
            Unit::MiB => format!("{value:.0} MiB"),
            Unit::Plain => format!("{value}"),
        }
    }

    /// The value as the report draws it: fractions in percent.
    pub fn drawn(self, value: f64) -> f64 {
        match self {
            Unit::Percent => 100.0 * value,
            _ => value,
        }
    }
}

/// One chart of the report: the metrics drawn in it share its axes, the first of a run as a
/// solid line, the next dashed.
#[derive(Debug, PartialEq)]
pub struct Panel {
    pub title: &'static str,
    /// Its x axis: the records that feed it, logged steps or epochs.
    pub x: Axis,
    pub y_label: &'static str,
    /// A logarithmic y axis, for values over decades (stage 2's learning rates are a tenth of
    /// stage 1's and would lie flat on a linear axis beside them).
    pub log_y: bool,
}

/// What a chart's x axis counts: optimizer steps, or whole epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Step,
    Epoch,
}

/// The report's charts, in order.
pub static PANELS: [&Panel; 4] = [
    &TRAINING_LOSS,
    &HOLDOUT_LOSS,
    &HOLDOUT_ACCURACY,
    &LEARNING_RATE,
];

static TRAINING_LOSS: Panel = Panel {
    title: "Training loss (logged steps)",
    x: Axis::Step,
    y_label: "loss",
    log_y: false,
};
static HOLDOUT_LOSS: Panel = Panel {
    title: "Holdout loss per epoch",
    x: Axis::Epoch,
    y_label: "mean NLL",
    log_y: false,
};
static HOLDOUT_ACCURACY: Panel = Panel {
    title: "Holdout accuracy (solid top-1, dashed top-5)",
    x: Axis::Epoch,
    y_label: "accuracy (%)",
    log_y: false,
};
static LEARNING_RATE: Panel = Panel {
    title: "Learning rate (log scale)",
    x: Axis::Step,
    y_label: "lr",
    log_y: true,
};

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
impl BatchRecord {
    /// A logged step `step` of epoch 1 with every figure set: loss 2, lr 1e-4, accuracy 0.5.
    pub fn example(step: u64) -> BatchRecord {
        BatchRecord {
            stage: "base".into(),
            epoch: 1,
            step,
            lr: 1e-4,
            beta1: 0.9,
            loss: 2.0,
            acc: Some(0.5),
        }
    }
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
