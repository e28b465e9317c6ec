//! The run log: every logged step and every epoch goes to `metrics.jsonl` (flushed line by
//! line, so that a checkpoint can record how much of it belongs to it), to TensorBoard event
//! files when asked, and to the console, above a progress bar on a terminal.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::progress::Progress;
use crate::eval::top5_text;
use crate::io::tensorboard::EventWriter;
use crate::run_dir::config::TrainConfig;
use crate::run_dir::metrics::{BatchRecord, EpochRecord, Event};
use crate::run_dir::METRICS_FILE;

/// Where a logged step is within its epoch and its stage.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// Batch index within the epoch, from 0.
    pub batch: usize,
    pub batches: usize,
    pub batch_size: usize,
    /// Training images of an epoch.
    pub images: usize,
    /// Optimizer steps of the whole stage (this session's last step, with `--max-steps`).
    pub stage_steps: u64,
}

/// `h:mm:ss`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Training speed between logged steps, for the rate and the time left.
struct Pace {
    started: Instant,
    /// Steps done at the last logged step (or the epoch's start) and when.
    last: (u64, Instant),
}

impl Pace {
    /// Images per second since the last logged step or the epoch's start, after step `step`
    /// (from 0) trained, and the time the stage's remaining steps take at that rate.
    fn measure(&mut self, step: u64, at: &Position) -> (f64, Duration) {
        let now = Instant::now();
        let done = step + 1;
        let (before, from) = std::mem::replace(&mut self.last, (done, now));
        let seconds = now.duration_since(from).as_secs_f64().max(1e-9);
        let rate = done.saturating_sub(before) as f64 * at.batch_size as f64 / seconds;
        let left = at.stage_steps.saturating_sub(done) as f64 * at.batch_size as f64 / rate;
        (rate, Duration::from_secs_f64(left))
    }
}

pub struct RunLog {
    out: BufWriter<File>,
    tensorboard: Option<EventWriter>,
    progress: Option<Progress>,
    pace: Pace,
    /// No console lines or progress bar (`Session::quiet`); the files are written as always.
    quiet: bool,
}

impl RunLog {
    /// Appends to the run's `metrics.jsonl` (and to new TensorBoard event files).
    pub fn open(cfg: &TrainConfig) -> Result<RunLog> {
        let path = cfg.session.out.join(METRICS_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(RunLog {
            out: BufWriter::new(file),
            tensorboard: cfg
                .session
                .tensorboard
                .as_deref()
                .map(EventWriter::create)
                .transpose()?,
            progress: None,
            quiet: cfg.session.quiet,
            pace: Pace {
                started: Instant::now(),
                last: (0, Instant::now()),
            },
        })
    }

    /// Bytes written to `metrics.jsonl` so far (everything is flushed line by line).
    pub fn bytes_written(&self) -> Result<u64> {
        Ok(self.out.get_ref().metadata()?.len())
    }

    /// Starts the progress display of an epoch of `total` images, `done` of them trained, the
    /// stage being `steps` optimizer steps in.
    pub fn start_epoch(&mut self, label: String, total: u64, done: u64, steps: u64) {
        self.pace.last = (steps, Instant::now());
        if self.quiet {
            return;
        }
        let progress = Progress::new(total, label);
        progress.advance(done);
        self.progress = Some(progress);
    }

    pub fn advance(&self, images: u64) {
        if let Some(progress) = &self.progress {
            progress.advance(images);
        }
    }

    pub fn finish_epoch(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.finish();
        }
    }

    /// A logged optimizer step.
    pub fn step(&mut self, record: &BatchRecord, at: Position) -> Result<()> {
        self.write(&Event::Batch(record.clone()))?;
        self.scalars(
            record.step,
            &[
                ("train/loss", Some(record.loss)),
                ("train/batch_acc", record.acc),
                ("train/lr", Some(record.lr)),
                ("train/beta1", Some(record.beta1)),
            ],
        )?;
        let (rate, left) = self.pace.measure(record.step, &at);
        let mut line = format!(
            "Train Epoch: {} [{}/{} ({:.0}%)]\tLoss: {:.6}\tlr {:.3e}\t{rate:.0} images/s\t\
             elapsed {}, stage ETA {}",
            record.epoch,
            at.batch * at.batch_size,
            at.images,
            100.0 * at.batch as f64 / at.batches as f64,
            record.loss,
            record.lr,
            clock(self.pace.started.elapsed()),
            clock(left)
        );
        if let Some(acc) = record.acc {
            line.push_str(&format!("\tBatch acc: {:.2}%", 100.0 * acc));
        }
        self.line(&line);
        Ok(())
    }

    /// A finished epoch, scored on `samples` holdout images.
    pub fn epoch(&mut self, record: &EpochRecord, samples: usize) -> Result<()> {
        self.write(&Event::Epoch(record.clone()))?;
        self.scalars(
            u64::from(record.epoch),
            &[
                ("epoch/train_loss", Some(record.train_loss)),
                ("epoch/holdout_loss", Some(record.holdout_loss)),
                ("epoch/holdout_top1", Some(record.holdout_top1)),
                ("epoch/holdout_top5", record.holdout_top5),
                ("epoch/lr", Some(record.lr)),
                ("epoch/images_per_sec", Some(record.images_per_sec)),
            ],
        )?;
        self.line(&format!(
            "Epoch {}: train loss {:.4}; holdout loss {:.4}, top-1 {:.2}%, top-5 {} \
             ({samples} images); {:.1} s, {:.0} train images/s, elapsed {}",
            record.epoch,
            record.train_loss,
            record.holdout_loss,
            100.0 * record.holdout_top1,
            top5_text(record.holdout_top5),
            record.seconds,
            record.images_per_sec,
            clock(self.pace.started.elapsed())
        ));
        Ok(())
    }

    /// A console line, above the progress bar when there is one.
    pub(super) fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.progress {
            Some(progress) => progress.line(text),
            // A terminal that went away (SIGHUP) fails writes; the run must still save and stop.
            None => {
                let _ = writeln!(std::io::stdout(), "{text}");
            }
        }
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.out.flush().context("cannot write metrics.jsonl")
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_gives_the_rate_since_the_last_line_and_the_time_left() {
        let at = Position {
            batch: 0,
            batches: 100,
            batch_size: 10,
            images: 1000,
            stage_steps: 300,
        };
        let t0 = Instant::now();
        let mut pace = Pace {
            started: t0,
            last: (100, t0 - Duration::from_secs(10)),
        };
        // steps 100..=199 (100 steps of 10 images) in about 10 s: about 100 images/s; 100
        // steps left: about 10 s
        let (rate, left) = pace.measure(199, &at);
        assert!((rate - 100.0).abs() < 1.0, "{rate}");
        assert!((left.as_secs_f64() - 10.0).abs() < 0.2, "{left:?}");
        assert_eq!(clock(Duration::from_secs(3 * 3600 + 5 * 60 + 7)), "3:05:07");
    }
    use crate::model::Stage;
    use crate::run_dir::config::Init;
    use crate::run_dir::metrics::read_events;

    #[test]
    fn steps_and_epochs_are_tagged_lines_and_tensorboard_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TrainConfig::example(Stage::Base, Init::RandomInit);
        cfg.session.out = dir.path().to_path_buf();
        cfg.session.tensorboard = Some(dir.path().join("tb"));
        let mut log = RunLog::open(&cfg).unwrap();
        let record = BatchRecord {
            stage: "base".into(),
            epoch: 1,
            step: 0,
            lr: 1e-4,
            beta1: 0.9,
            loss: 2.5,
            acc: None,
        };
        let at = Position {
            batch: 0,
            batches: 10,
            batch_size: 4,
            images: 40,
            stage_steps: 20,
        };
        log.step(&record, at).unwrap();
        let first = log.bytes_written().unwrap();
        log.epoch(&EpochRecord::example(1.25), 8).unwrap();
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
