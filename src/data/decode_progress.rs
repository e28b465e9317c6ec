//! How far a first decode of a large image tree has come, on stderr: a bar with rate and ETA on
//! a terminal, a plain line at every tenth otherwise (a log file, a notebook cell).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::ProgressBar;

use crate::io::progress_bar::images_bar;

/// Below this many images a decode takes seconds and says so once when done.
const SHOWN_FROM: usize = 2000;

pub struct DecodeProgress {
    bar: Option<ProgressBar>,
    total: usize,
    done: usize,
    started: Instant,
    /// The next tenth a plain line is printed at.
    next_tenth: usize,
}

impl DecodeProgress {
    /// Progress over `total` images; `None` for a set too small to need it.
    pub fn over(total: usize) -> Option<DecodeProgress> {
        if total < SHOWN_FROM {
            return None;
        }
        let bar = std::io::stderr()
            .is_terminal()
            .then(|| images_bar(total as u64, "decoding"));
        Some(DecodeProgress {
            bar,
            total,
            done: 0,
            started: Instant::now(),
            next_tenth: 1,
        })
    }

    /// `images` more are decoded.
    pub fn advance(&mut self, images: usize) {
        self.done += images;
        if let Some(bar) = &self.bar {
            bar.inc(images as u64);
            return;
        }
        if self.done * 10 < self.next_tenth * self.total {
            return;
        }
        self.next_tenth = self.done * 10 / self.total + 1;
        eprintln!("{}", self.line());
    }

    /// "decoding: 20000/100000 images (20%), 850 images/s, ETA 1m34s".
    fn line(&self) -> String {
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let left = (self.total - self.done) as f64 / rate.max(1e-9);
        format!(
            "decoding: {}/{} images ({}%), {rate:.0} images/s, ETA {}m{:02}s",
            self.done,
            self.total,
            100 * self.done / self.total,
            left as u64 / 60,
            left as u64 % 60
        )
    }
}

impl Drop for DecodeProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_at_each_tenth_with_rate_and_eta() {
        assert!(DecodeProgress::over(SHOWN_FROM - 1).is_none());
        let mut p = DecodeProgress::over(10_000).unwrap();
        p.bar = None;
        p.advance(999);
        assert_eq!(p.next_tenth, 1, "no line before the first tenth");
        p.advance(1);
        assert_eq!(p.next_tenth, 2);
        p.advance(3500);
        assert_eq!(p.next_tenth, 5, "one line for several tenths at once");
        let line = p.line();
        assert!(
            line.starts_with("decoding: 4500/10000 images (45%), "),
            "{line}"
        );
        assert!(
            line.contains(" images/s, ETA ") && line.ends_with('s'),
            "{line}"
        );
    }
}
