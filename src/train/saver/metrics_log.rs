//! The run's metric files: every logged step and every epoch to `metrics.jsonl` (flushed line
//! by line, so that a checkpoint can record how much of it belongs to it) and, when asked, to
//! TensorBoard event files, each of the record's scalars under its name.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};

use anyhow::{Context, Result};

use crate::config::TrainConfig;
use crate::io::tensorboard::EventWriter;
use crate::run_dir::metrics::{BatchRecord, EpochRecord, Event, Scalar};
use crate::run_dir::METRICS_FILE;

pub struct MetricsLog {
    out: BufWriter<File>,
    tensorboard: Option<EventWriter>,
}

impl MetricsLog {
    /// Appends to the run's `metrics.jsonl` (and to new TensorBoard event files).
    pub fn open(cfg: &TrainConfig) -> Result<MetricsLog> {
        let path = cfg.session.out.join(METRICS_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let tensorboard = cfg.session.tensorboard.as_deref();
        Ok(MetricsLog {
            out: BufWriter::new(file),
            tensorboard: tensorboard.map(EventWriter::create).transpose()?,
        })
    }

    /// Bytes written to `metrics.jsonl` so far (everything is flushed line by line).
    pub fn bytes_written(&self) -> Result<u64> {
        Ok(self.out.get_ref().metadata()?.len())
    }

    /// A logged optimizer step.
    pub fn batch(&mut self, record: &BatchRecord) -> Result<()> {
        self.write(&Event::Batch(record.clone()))?;
        self.scalars("train", record.step, &record.scalars())
    }

    /// A finished epoch.
    pub fn epoch(&mut self, record: &EpochRecord) -> Result<()> {
        self.write(&Event::Epoch(record.clone()))?;
        self.scalars("epoch", u64::from(record.epoch), &record.scalars())
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.out.flush().context("cannot write metrics.jsonl")
    }

    /// Each scalar that has a value as the TensorBoard tag `prefix/NAME`.
    fn scalars(&mut self, prefix: &str, step: u64, scalars: &[Scalar]) -> Result<()> {
        let Some(tb) = &mut self.tensorboard else {
            return Ok(());
        };
        for scalar in scalars {
            if let Some(value) = scalar.value {
                tb.scalar(&format!("{prefix}/{}", scalar.name), step as i64, value)?;
            }
        }
        tb.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Init;
    use crate::model::Stage;
    use crate::run_dir::metrics::read_events;

    #[test]
    fn steps_and_epochs_are_tagged_lines_and_tensorboard_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TrainConfig::example(Stage::Base, Init::RandomInit);
        cfg.session.out = dir.path().to_path_buf();
        cfg.session.tensorboard = Some(dir.path().join("tb"));
        let mut log = MetricsLog::open(&cfg).unwrap();
        let record = BatchRecord {
            acc: None,
            ..BatchRecord::example(0)
        };
        log.batch(&record).unwrap();
        let first = log.bytes_written().unwrap();
        log.epoch(&EpochRecord::example(1.25)).unwrap();
        assert!(log.bytes_written().unwrap() > first);
        let events = read_events(&dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(
            events,
            vec![
                Event::Batch(record),
                Event::Epoch(EpochRecord::example(1.25))
            ]
        );
        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert!(text.starts_with("{\"event\":\"batch\""), "{text}");
        assert!(
            !text.contains("\"acc\""),
            "no accuracy at this step: {text}"
        );
        let tb: Vec<_> = std::fs::read_dir(dir.path().join("tb")).unwrap().collect();
        assert_eq!(tb.len(), 1);
    }
}
