//! The look of the progress bar over a long pass over images, shared by a training run's console
//! (`train::console`) and a first decode's progress (`data::decode_progress`): position,
//! images/s and ETA.

use std::fmt;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// A bar over `total` images, headed by `label`.
pub fn images_bar(total: u64, label: &str) -> ProgressBar {
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
    bar.set_message(label.to_string());
    bar
}
