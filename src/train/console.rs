//! The training run on the console: a line for each logged step and each epoch, above an
//! indicatif bar (images/s, ETA) when stdout is a terminal, plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::io::progress_bar::images_bar;
use crate::run_dir::metrics::{BatchRecord, EpochRecord};

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

/// The line of a finished epoch: each of its numbers, the holdout's size and the time since
/// the session started.
fn epoch_line(record: &EpochRecord, samples: usize, elapsed: Duration) -> String {
    let numbers: Vec<String> = record.scalars().iter().map(|s| s.shown()).collect();
    format!(
        "Epoch {}: {} ({samples} holdout images); elapsed {}",
        record.epoch,
        numbers.join(", "),
        clock(elapsed)
    )
}

pub struct Console {
    bar: Option<ProgressBar>,
    pace: Pace,
    /// No lines or bar at all (`Session::quiet`: the soak reports instead).
    quiet: bool,
}

impl Console {
    pub fn new(quiet: bool) -> Console {
        Console {
            bar: None,
            pace: Pace {
                started: Instant::now(),
                last: (0, Instant::now()),
            },
            quiet,
        }
    }

    /// Starts the display of an epoch of `total` images, `done` of them trained, the stage
    /// being `steps` optimizer steps in.
    pub fn start_epoch(&mut self, label: String, total: u64, done: u64, steps: u64) {
        self.pace.last = (steps, Instant::now());
        if self.quiet || !std::io::stdout().is_terminal() {
            return;
        }
        let bar = images_bar(total, &label);
        bar.inc(done);
        self.bar = Some(bar);
    }

    pub fn advance(&self, images: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(images);
        }
    }

    pub fn finish_epoch(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// A logged optimizer step, in the original program's words.
    pub fn step(&mut self, record: &BatchRecord, at: Position) {
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
    }

    /// A finished epoch, scored on `samples` holdout images.
    pub fn epoch(&self, record: &EpochRecord, samples: usize) {
        self.line(&epoch_line(record, samples, self.pace.started.elapsed()));
    }

    /// A line, above the bar when there is one.
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            // A terminal that went away (SIGHUP) fails writes; the run must still save and stop.
            None => {
                let _ = writeln!(std::io::stdout(), "{text}");
            }
        }
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

    /// The epoch line shows every number of the record, each as its unit reads.
    #[test]
    fn the_epoch_line_shows_each_number_of_the_record() {
        let mut record = EpochRecord::example(1.25);
        record.holdout_top5 = None;
        let line = epoch_line(&record, 50, Duration::from_secs(75));
        assert_eq!(
            line,
            "Epoch 1: train loss 1.0000, holdout loss 1.2500, top-1 50.00%, top-5 n/a, \
             lr 1.000e-1, time 1.0 s, speed 2 images/s, host memory 100 MiB \
             (50 holdout images); elapsed 0:01:15"
        );
    }
}
