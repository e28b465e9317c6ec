//! Terminal output of a training run: an indicatif bar (ETA, images/s) when stdout is a
//! terminal, plain log lines otherwise.

use std::io::IsTerminal;

use indicatif::ProgressBar;

use crate::io::progress_bar::images_bar;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A progress display over `total` images.
    pub fn new(total: u64, label: String) -> Progress {
        let bar = std::io::stdout()
            .is_terminal()
            .then(|| images_bar(total, &label));
        Progress { bar }
    }

    pub fn advance(&self, images: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(images);
        }
    }

    /// Prints a log line (above the bar when there is one).
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
