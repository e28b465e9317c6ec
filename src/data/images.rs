//! A list of samples as a decoded set: decoded (or mapped from the cache), without the images
//! that cannot be decoded when asked, with a word on stderr of where the pixels came from.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use super::cache::{self, Origin};
use super::image_set::ImageSet;
use super::scan::Sample;

/// Decoded images and the samples they are, row for row.
pub struct Decoded {
    pub set: ImageSet,
    /// The samples of `set`: those asked for, without `skipped`.
    pub samples: Vec<Sample>,
    /// Paths left out because they could not be decoded (`skip_bad`).
    pub skipped: Vec<PathBuf>,
}

/// Decodes `samples` at `side` through the cache in `cache_dir` (none: no cache file), saying
/// on stderr where the pixels came from. Undecodable images are an error listing them all, unless
/// `skip_bad`: then they are left out and named.
pub fn decode_samples(
    samples: Vec<Sample>,
    side: usize,
    cache_dir: Option<&Path>,
    skip_bad: bool,
) -> Result<Decoded> {
    let started = Instant::now();
    let (set, report) = cache::decode_or_map(&samples, side, cache_dir, skip_bad)?;
    let how = match report.origin {
        Origin::Cache => "mapped from the cache",
        Origin::Decoded => "decoded",
        Origin::Rebuilt => "decoded again",
    };
    eprintln!(
        "{} images {how} in {:.2}s",
        samples.len(),
        started.elapsed().as_secs_f64()
    );
    if report.resized > 0 {
        eprintln!(
            "note: {} images were not {side}x{side}: resized (shorter side to {side}, aspect \
             ratio kept) and centre-cropped",
            report.resized
        );
    }
    let skipped: Vec<PathBuf> = report
        .skipped
        .iter()
        .map(|&i| samples[i].path.clone())
        .collect();
    for path in &skipped {
        eprintln!("warning: skipping undecodable image {}", path.display());
    }
    // by index: the rows of `set` are exactly the samples not skipped
    let samples = samples
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !report.skipped.contains(i))
        .map(|(_, s)| s)
        .collect();
    Ok(Decoded {
        set,
        samples,
        skipped,
    })
}
