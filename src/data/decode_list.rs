//! Decoding a list of image files in parallel, a bounded chunk at a time, into uint8 rows of
//! S x S x 3 (S the stored side), keeping which files failed and why; and the one error that
//! lists those failures.

use std::path::PathBuf;

use anyhow::Result;
use rayon::prelude::*;
use tch::Tensor;

use super::decode::{decode_into, read_image_file};
use super::decode_progress::DecodeProgress;
use super::image_set::{labels_of, ImageSet};
use super::scan::Sample;
use crate::error::input_error;

/// Bytes of one image stored at `side`.
pub(super) fn image_bytes(side: usize) -> usize {
    side * side * 3
}

/// What decoding a list gave besides its pixels.
pub(super) struct Outcome {
    pub resized: usize,
    /// (index, reason) of each sample that could not be read or decoded.
    pub failures: Vec<(usize, String)>,
}

/// Images decoded per pass out of `count`: a fiftieth of them (so progress moves), at least
/// 256 (so every core has work), at most 256 MiB of pixels whatever the size of the set.
pub(super) fn chunk_images(side: usize, count: usize) -> usize {
    let bounded = ((256 << 20) / image_bytes(side)).max(1);
    (count / 50).max(256).min(bounded)
}

/// Decodes `samples` at `side` `chunk` images at a time (in parallel within a chunk), handing
/// each chunk's pixels to `sink` in order, with progress on stderr for a large set.
pub(super) fn decode_chunks(
    samples: &[Sample],
    (side, chunk): (usize, usize),
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Outcome> {
    let mut progress = DecodeProgress::over(samples.len());
    let mut outcome = Outcome {
        resized: 0,
        failures: Vec::new(),
    };
    for (c, part) in samples.chunks(chunk).enumerate() {
        let decoded = decode(part, side);
        outcome.resized += decoded.resized;
        let failures = decoded
            .failures
            .into_iter()
            .map(|(i, e)| (c * chunk + i, e));
        outcome.failures.extend(failures);
        sink(&decoded.pixels)?;
        if let Some(p) = &mut progress {
            p.advance(part.len());
        }
    }
    Ok(outcome)
}

/// Decodes `samples` at `side` into memory.
pub(super) fn decode_in_memory(samples: &[Sample], side: usize) -> Result<(ImageSet, Outcome)> {
    let mut pixels = Vec::with_capacity(samples.len() * image_bytes(side));
    let outcome = decode_chunks(
        samples,
        (side, chunk_images(side, samples.len())),
        |chunk| {
            pixels.extend_from_slice(chunk);
            Ok(())
        },
    )?;
    let images = pixel_tensor(&pixels, samples.len(), side);
    Ok((ImageSet::from_tensors(images, labels_of(samples)), outcome))
}

/// Pixels of every sample, decoded in parallel; rows of files that fail stay zero.
pub(super) struct DecodedPixels {
    pixels: Vec<u8>,
    resized: usize,
    /// (index, reason) of each sample that could not be read or decoded.
    pub failures: Vec<(usize, String)>,
}

pub(super) fn decode(samples: &[Sample], side: usize) -> DecodedPixels {
    let mut pixels = vec![0u8; samples.len() * image_bytes(side)];
    let outcomes: Vec<Result<bool, String>> = pixels
        .par_chunks_mut(image_bytes(side))
        .zip(samples.par_iter())
        .map(|(dst, sample)| {
            let bytes = read_image_file(&sample.path).map_err(|e| format!("{e:#}"))?;
            decode_into(&bytes, dst, side).map_err(|e| format!("{e:#}"))
        })
        .collect();
    let mut resized = 0;
    let mut failures = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(r) => resized += usize::from(r),
            Err(e) => failures.push((i, e)),
        }
    }
    DecodedPixels {
        pixels,
        resized,
        failures,
    }
}

/// `count` decoded images at `side` as a uint8 NHWC tensor.
fn pixel_tensor(pixels: &[u8], count: usize, side: usize) -> Tensor {
    let side = side as i64;
    Tensor::from_slice(pixels).view([count as i64, side, side, 3])
}

/// One input error listing every image that failed (indices into `samples`), with why;
/// `skippable` where `--skip-bad-images` applies.
pub(super) fn bad_images_error(
    samples: &[Sample],
    failures: &[(usize, String)],
    skippable: bool,
) -> anyhow::Error {
    let lines: Vec<String> = failures
        .iter()
        .map(|(i, e)| format!("  {}: {e}", samples[*i].path.display()))
        .collect();
    let shown = lines.len().min(20);
    let mut msg = format!(
        "{} image(s) could not be decoded:\n{}",
        lines.len(),
        lines[..shown].join("\n")
    );
    if lines.len() > shown {
        msg.push_str(&format!("\n  ... and {} more", lines.len() - shown));
    }
    if skippable {
        msg.push_str("\nfix or remove them, or pass --skip-bad-images to go on without them");
    }
    input_error(msg)
}

/// Decodes image files, all or nothing, into uint8 N x `side` x `side` x 3 (any size or
/// format: resized and centre-cropped to the side, converted to RGB).
pub fn decode_files(paths: &[PathBuf], side: usize) -> Result<Tensor> {
    let samples: Vec<Sample> = paths
        .iter()
        .map(|path| Sample {
            path: path.clone(),
            label: 0,
        })
        .collect();
    let decoded = decode(&samples, side);
    if !decoded.failures.is_empty() {
        return Err(bad_images_error(&samples, &decoded.failures, false));
    }
    Ok(pixel_tensor(&decoded.pixels, paths.len(), side))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::example_samples;

    #[test]
    fn chunks_arrive_in_order_with_failures_at_their_place_in_the_list() {
        let (_dir, mut samples) = example_samples();
        let bad = samples[0].path.with_file_name("bad.JPEG");
        std::fs::write(&bad, b"not an image").unwrap();
        samples[7].path = bad;
        let mut sizes = Vec::new();
        let mut pixels = Vec::new();
        let outcome = decode_chunks(&samples, (64, 3), |chunk| {
            sizes.push(chunk.len() / image_bytes(64));
            pixels.extend_from_slice(chunk);
            Ok(())
        })
        .unwrap();
        assert_eq!(sizes, [3, 3, 3, 1]);
        let whole = decode(&samples, 64);
        assert_eq!(pixels, whole.pixels);
        let failed: Vec<usize> = outcome.failures.iter().map(|(i, _)| *i).collect();
        assert_eq!(failed, [7]);
    }
}
