//! A list of samples as a decoded set on the run's device: decoded (or mapped from the cache),
//! without the images that cannot be decoded when asked, and placed in device memory when it
//! fits there.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use tch::Device;

use super::cache::{self, ImageSet, Origin};
use super::scan::Sample;
use crate::device;

/// Decoded images and the samples they are, row for row.
pub struct Decoded {
    pub set: ImageSet,
    /// The samples of `set`: those asked for, without `skipped`.
    pub samples: Vec<Sample>,
    /// Paths left out because they could not be decoded (`skip_bad`).
    pub skipped: Vec<PathBuf>,
}

/// Decodes `samples` through the cache in `cache_dir` (none: no cache file), saying on stderr
/// where the pixels came from. Undecodable images are an error listing them all, unless
/// `skip_bad`: then they are left out and named.
pub fn load(samples: Vec<Sample>, cache_dir: Option<&Path>, skip_bad: bool) -> Result<Decoded> {
    let started = Instant::now();
    let (set, report) = cache::load(&samples, cache_dir, skip_bad)?;
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
            "warning: {} images were not 64x64 and were resized",
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
    let samples = samples
        .into_iter()
        .filter(|s| !skipped.contains(&s.path))
        .collect();
    Ok(Decoded {
        set,
        samples,
        skipped,
    })
}

/// Device memory a training run keeps free beside the set: activations, weights, optimizer
/// state and cuDNN workspaces of VGG16 at the recipe's batch sizes fit in far less.
const TRAINING_HEADROOM_MB: f64 = 6144.0;

/// Whether a set of `set_mb` may move to a device with `free_mb` free: it must leave the
/// training headroom, and take at most half of what is free.
pub fn fits_on_device(set_mb: f64, free_mb: f64) -> bool {
    set_mb + TRAINING_HEADROOM_MB <= free_mb && set_mb <= free_mb / 2.0
}

/// On a GPU the whole uint8 set moves to device memory once when it fits with room to train,
/// so that batches are gathered there; otherwise batches travel through pinned host memory.
/// Only running out of memory falls back; any other failure is an error.
/// `VGGTINY_HOST_SET=1` forces the host path (tests of the fallback on a GPU machine).
pub fn place(set: ImageSet, device: Device) -> Result<ImageSet> {
    let Device::Cuda(n) = device else {
        return Ok(set);
    };
    let set_mb = set.bytes() as f64 / (1024.0 * 1024.0);
    let forced = std::env::var_os("VGGTINY_HOST_SET").is_some_and(|v| v == "1");
    let free_mb = device::cuda_memory_mb(n).map_or(0.0, |m| m.free);
    if forced || !fits_on_device(set_mb, free_mb) {
        eprintln!(
            "note: the decoded images ({set_mb:.0} MiB) stay in host memory ({free_mb:.0} MiB \
             free on cuda:{n}); batches are copied in"
        );
        return Ok(set);
    }
    match set.to_device(device) {
        Ok(on_device) => Ok(on_device),
        Err(e) if format!("{e:#}").contains("out of memory") => {
            eprintln!("note: the decoded images do not fit on cuda:{n}; batches are copied in");
            Ok(set)
        }
        Err(e) => Err(e.context(format!("cannot copy the decoded images to cuda:{n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_moves_only_with_room_to_train_beside_it() {
        // Tiny ImageNet's 100 000 images are 1 172 MiB.
        assert!(fits_on_device(1172.0, 78_000.0));
        assert!(fits_on_device(1172.0, 8_000.0));
        assert!(!fits_on_device(1172.0, 7_000.0), "no room left to train");
        assert!(!fits_on_device(40_000.0, 78_000.0), "more than half");
        assert!(!fits_on_device(1.0, 0.0));
    }

    #[test]
    fn the_cpu_keeps_the_set_where_it_is() {
        let images = tch::Tensor::zeros([2, 64, 64, 3], (tch::Kind::Uint8, Device::Cpu));
        let set = ImageSet::from_tensors(images, tch::Tensor::from_slice(&[0i64, 1]));
        let placed = place(set, Device::Cpu).unwrap();
        assert_eq!(placed.images.device(), Device::Cpu);
    }
}
