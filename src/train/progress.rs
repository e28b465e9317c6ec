//! Terminal output of a training run: an indicatif bar (ETA, images/s) when stdout is a
//! terminal, plain log lines otherwise.

use std::fmt;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A progress display over `total` images.
    pub fn new(total: u64, label: String) -> Progress {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} images, {rate} images/s, ETA {eta}",
                )
                .expect("static template")
                .with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
                    let _ = write!(w, "{:.0}", state.per_sec());
                })
                .progress_chars("=> "),
            );
            bar.set_message(label);
            bar
        });
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
