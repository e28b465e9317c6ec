//! Decoding a whole image list once, in parallel, into one uint8 tensor (N x 64 x 64 x 3) with
//! its labels, so that training never touches a JPEG again.

use std::fs;

use anyhow::Result;
use rayon::prelude::*;
use tch::{Device, Tensor};

use super::decode::{decode_into, IMAGE_BYTES, SIDE};
use super::scan::Sample;
use crate::error::input_error;

/// Decoded images and their labels, row i = sample i of the list they came from.
pub struct ImageSet {
    /// uint8, N x 64 x 64 x 3 (HWC per image, as decoded).
    pub images: Tensor,
    /// int64, N.
    pub labels: Tensor,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.images.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the images and labels to `device` (the whole set, once).
    pub fn to_device(&self, device: Device) -> ImageSet {
        ImageSet {
            images: self.images.to_device(device),
            labels: self.labels.to_device(device),
        }
    }
}

/// How many images of each kind the decode met.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    pub resized: usize,
}

/// Decodes every sample. Files that cannot be read or decoded are all collected and reported
/// together, with their paths, as one input error.
pub fn decode_all(samples: &[Sample]) -> Result<(ImageSet, DecodeStats)> {
    let mut pixels = vec![0u8; samples.len() * IMAGE_BYTES];
    let outcomes: Vec<Result<bool, String>> = pixels
        .par_chunks_mut(IMAGE_BYTES)
        .zip(samples.par_iter())
        .map(|(dst, sample)| {
            let bytes = fs::read(&sample.path).map_err(|e| e.to_string())?;
            decode_into(&bytes, dst).map_err(|e| format!("{e:#}"))
        })
        .collect();
    let mut failures = Vec::new();
    let mut stats = DecodeStats::default();
    for (sample, outcome) in samples.iter().zip(&outcomes) {
        match outcome {
            Ok(resized) => stats.resized += usize::from(*resized),
            Err(e) => failures.push(format!("  {}: {e}", sample.path.display())),
        }
    }
    if !failures.is_empty() {
        let shown = failures.len().min(20);
        let more = failures.len() - shown;
        let mut msg = format!(
            "{} image(s) could not be decoded:\n{}",
            failures.len(),
            failures[..shown].join("\n")
        );
        if more > 0 {
            msg.push_str(&format!("\n  ... and {more} more"));
        }
        return Err(input_error(msg));
    }
    let n = samples.len() as i64;
    let side = SIDE as i64;
    let images = Tensor::from_slice(&pixels).view([n, side, side, 3]);
    let labels: Vec<i64> = samples.iter().map(|s| s.label as i64).collect();
    Ok((
        ImageSet {
            images,
            labels: Tensor::from_slice(&labels),
        },
        stats,
    ))
}
