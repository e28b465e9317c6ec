//! A decoded set: the uint8 pixels of a list of samples and their labels, in host memory (read
//! from a mapped cache file or decoded) or on the training device.

use std::sync::Arc;

use anyhow::Result;
use memmap2::Mmap;
use tch::{Device, Tensor};

use super::scan::Sample;
use crate::device;

/// Decoded images and their labels, row i = sample i of the list they came from.
pub struct ImageSet {
    /// uint8, N x H x W x 3 (HWC per image, as decoded).
    pub images: Tensor,
    /// int64, N.
    pub labels: Tensor,
    /// The mapped cache file `images` points into, when it came from one.
    _mapping: Option<Arc<Mmap>>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.images.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images and labels in memory (no cache file behind them).
    pub fn from_tensors(images: Tensor, labels: Tensor) -> ImageSet {
        ImageSet {
            images,
            labels,
            _mapping: None,
        }
    }

    /// Images that point into `mapping`, which the set keeps alive.
    pub(super) fn mapped(images: Tensor, labels: Tensor, mapping: Arc<Mmap>) -> ImageSet {
        ImageSet {
            images,
            labels,
            _mapping: Some(mapping),
        }
    }

    /// The set without the rows `rows` (a copy, made only when there are any).
    pub(super) fn without(self, rows: &[usize]) -> ImageSet {
        if rows.is_empty() {
            return self;
        }
        let keep: Vec<i64> = (0..self.len())
            .filter(|i| !rows.contains(i))
            .map(|i| i as i64)
            .collect();
        let keep = Tensor::from_slice(&keep);
        ImageSet::from_tensors(
            self.images.index_select(0, &keep),
            self.labels.index_select(0, &keep),
        )
    }

    /// Bytes of pixels and labels.
    pub fn bytes(&self) -> usize {
        self.images.numel() + self.labels.numel() * 8
    }

    /// A copy of the whole set on `device`.
    pub fn to_device(&self, device: Device) -> Result<ImageSet> {
        Ok(ImageSet::from_tensors(
            self.images.f_to_device(device)?,
            self.labels.f_to_device(device)?,
        ))
    }

    /// The set where training (or scoring) reads its batches from on `device`: on a GPU,
    /// device memory when the whole uint8 set fits there with room to train (batches are then
    /// gathered there); otherwise host memory, from which batches travel through pinned memory. Only
    /// running out of memory falls back; any other failure is an error.
    /// `VGGTINY_HOST_SET=1` forces the host path (tests of the fallback on a GPU machine).
    pub fn for_training_on(self, device: Device) -> Result<ImageSet> {
        let Device::Cuda(n) = device else {
            return Ok(self);
        };
        let set_mb = self.bytes() as f64 / (1024.0 * 1024.0);
        let forced = std::env::var_os("VGGTINY_HOST_SET").is_some_and(|v| v == "1");
        let free_mb = device::cuda_memory_mb(n).map_or(0.0, |m| m.free);
        if forced || !fits_on_device(set_mb, free_mb) {
            eprintln!(
                "note: the decoded images ({set_mb:.0} MiB) stay in host memory ({free_mb:.0} \
                 MiB free on cuda:{n}); batches are copied in"
            );
            return Ok(self);
        }
        match self.to_device(device) {
            Ok(on_device) => Ok(on_device),
            Err(e) if format!("{e:#}").contains("out of memory") => {
                eprintln!("note: the decoded images do not fit on cuda:{n}; batches are copied in");
                Ok(self)
            }
            Err(e) => Err(e.context(format!("cannot copy the decoded images to cuda:{n}"))),
        }
    }
}

/// The labels of `samples` as an int64 tensor, row i = sample i.
pub(super) fn labels_of(samples: &[Sample]) -> Tensor {
    let labels: Vec<i64> = samples.iter().map(|s| s.label as i64).collect();
    Tensor::from_slice(&labels)
}

/// Device memory a training run keeps free beside the set: activations, weights, optimizer
/// state and cuDNN workspaces of VGG16 at the recipe's batch sizes fit in far less.
const TRAINING_HEADROOM_MB: f64 = 6144.0;

/// Whether a set of `set_mb` may move to a device with `free_mb` free: it must leave the
/// training headroom, and take at most half of what is free.
fn fits_on_device(set_mb: f64, free_mb: f64) -> bool {
    set_mb + TRAINING_HEADROOM_MB <= free_mb && set_mb <= free_mb / 2.0
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
        let images = Tensor::zeros([2, 64, 64, 3], (tch::Kind::Uint8, Device::Cpu));
        let set = ImageSet::from_tensors(images, Tensor::from_slice(&[0i64, 1]));
        let placed = set.for_training_on(Device::Cpu).unwrap();
        assert_eq!(placed.images.device(), Device::Cpu);
    }
}
