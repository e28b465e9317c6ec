//! Loading the images of a sample list as a decoded set: mapped from the cache when a valid file
//! is there, otherwise decoded (and cached); undecodable images reported, or left out when
//! asked; and a word on stderr of where the pixels came from.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use memmap2::Mmap;

use super::cache::{cache_path, decode_to_cache, list_digest, mapped, open_valid};
use super::decode_list::{bad_images_error, decode, decode_in_memory};
use super::image_set::ImageSet;
use super::scan::Sample;

/// Where the pixels of a load came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelsFrom {
    /// Mapped from a valid cache file.
    Cache,
    /// Decoded from the image files (and cached, when a cache directory was given).
    Decoded,
    /// Decoded again because the cache file was corrupt or truncated.
    Rebuilt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub pixels_from: PixelsFrom,
    /// Images that were not of the stored side and were resized and cropped to it.
    pub resized: usize,
    /// Indices (into the list loaded) of images left out because they could not be decoded.
    pub skipped: Vec<usize>,
}

/// Decoded pixels of `samples` at `side`, from the cache in `cache_dir` when a valid file is
/// there, otherwise decoded into a new cache file a bounded chunk at a time and mapped from it
/// (memory stays bounded however large the set). `None` decodes into memory without any cache
/// file. Images that cannot be decoded are all reported in one input error, unless `skip_bad`:
/// then the set holds only the good ones and the report lists the others.
pub fn decode_or_map(
    samples: &[Sample],
    side: usize,
    cache_dir: Option<&Path>,
    skip_bad: bool,
) -> Result<(ImageSet, LoadReport)> {
    let mut pixels_from = PixelsFrom::Decoded;
    let (set, outcome) = match cache_dir {
        Some(dir) => {
            let digest = list_digest(samples, side);
            let path = cache_path(dir, &digest);
            if path.exists() {
                match open_valid(&path, samples.len(), side, &digest) {
                    Ok((map, bad)) => return from_cache(map, samples, side, bad, skip_bad),
                    Err(e) => {
                        eprintln!(
                            "warning: cache file {} is unusable ({e}); rebuilding it",
                            path.display()
                        );
                        pixels_from = PixelsFrom::Rebuilt;
                    }
                }
            }
            match decode_to_cache(samples, side, &path, &digest) {
                Ok(outcome) => {
                    let (map, _) = open_valid(&path, samples.len(), side, &digest)
                        .with_context(|| format!("cannot read back {}", path.display()))?;
                    (mapped(map, samples, side), outcome)
                }
                Err(e) => {
                    eprintln!("warning: cannot write the image cache: {e:#}; decoding into memory");
                    decode_in_memory(samples, side)?
                }
            }
        }
        None => decode_in_memory(samples, side)?,
    };
    let bad: Vec<usize> = outcome.failures.iter().map(|(i, _)| *i).collect();
    if !bad.is_empty() && !skip_bad {
        return Err(bad_images_error(samples, &outcome.failures, true));
    }
    let report = LoadReport {
        pixels_from,
        resized: outcome.resized,
        skipped: bad.clone(),
    };
    Ok((set.without(&bad), report))
}

/// The set of a valid cache file, whose undecodable images (`bad`) are left out when
/// `skip_bad`, or asked again for their reasons (the cache keeps which failed, not why).
fn from_cache(
    map: Mmap,
    samples: &[Sample],
    side: usize,
    bad: Vec<usize>,
    skip_bad: bool,
) -> Result<(ImageSet, LoadReport)> {
    if !bad.is_empty() && !skip_bad {
        let failed: Vec<Sample> = bad.iter().map(|&i| samples[i].clone()).collect();
        let messages = decode(&failed, side).failures;
        return Err(bad_images_error(&failed, &messages, true));
    }
    let set = mapped(map, samples, side).without(&bad);
    let report = LoadReport {
        pixels_from: PixelsFrom::Cache,
        resized: 0,
        skipped: bad,
    };
    Ok((set, report))
}

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
    let (set, report) = decode_or_map(&samples, side, cache_dir, skip_bad)?;
    let how = match report.pixels_from {
        PixelsFrom::Cache => "mapped from the cache",
        PixelsFrom::Decoded => "decoded",
        PixelsFrom::Rebuilt => "decoded again",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::example_samples;

    #[test]
    fn cached_pixels_equal_decoded_pixels() {
        let (dir, samples) = example_samples();
        let cache = dir.path().join("cache");
        let (first, report) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        assert_eq!(report.pixels_from, PixelsFrom::Decoded);
        let (second, report) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        assert_eq!(report.pixels_from, PixelsFrom::Cache);
        let (plain, _) = decode_or_map(&samples, 64, None, false).unwrap();
        assert!(second.images.equal(&plain.images));
        assert!(first.images.equal(&plain.images));
        assert!(second.labels.equal(&plain.labels));
    }

    #[test]
    fn undecodable_images_are_reported_or_skipped_and_remembered() {
        let (dir, samples) = example_samples();
        std::fs::write(&samples[3].path, b"not a jpeg").unwrap();
        let cache = dir.path().join("cache");
        let strict_error = || {
            decode_or_map(&samples, 64, Some(&cache), false)
                .err()
                .unwrap()
                .to_string()
        };
        let bad = samples[3].path.display().to_string();
        let err = strict_error();
        assert!(
            err.contains(&bad) && err.contains("--skip-bad-images"),
            "{err}"
        );
        for _ in 0..2 {
            let (set, report) = decode_or_map(&samples, 64, Some(&cache), true).unwrap();
            assert_eq!(report.pixels_from, PixelsFrom::Cache);
            assert_eq!(report.skipped, vec![3]);
            assert_eq!(set.len(), samples.len() - 1);
        }
        // the cached failure still stops a strict run, naming the file
        let err = strict_error();
        assert!(err.contains(&bad), "{err}");
    }
}
