//! Batches from a decoded image set: shuffled and augmented for training, in order for eval.
//! Every random draw comes from a generator keyed by (seed, stage, epoch, batch), so a run, or a
//! resumed run, sees the same batches.

use std::marker::PhantomData;
use std::sync::mpsc;
use std::thread::Scope;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use super::augment::{augment, normalize_channels_last, to_float, AugmentParams};
use super::cache::ImageSet;

/// One batch on the training device: normalised float NCHW images and int64 labels.
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub len: usize,
}

/// A 64-bit key from several, with splitmix64 finalisation: stable across platforms and releases.
pub fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9E37_79B9_7F4A_7C15, |acc, &p| {
        let mut z = (acc ^ p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// One planned training batch: its rows, and the key of its augmentation draws.
pub struct Planned {
    pub indices: Vec<usize>,
    pub key: u64,
}

/// Delivers batches of a decoded set on the training device. Holds handles to the set's
/// tensors (so that a background thread can take its own), tied to the set's lifetime.
pub struct Loader<'a> {
    images: Tensor,
    labels: Tensor,
    device: Device,
    // Ties the loader to the set (whose mapping the tensors may point into) without making it
    // depend on the set being shareable between threads.
    _set: PhantomData<fn() -> &'a ImageSet>,
}

impl<'a> Loader<'a> {
    /// Batches of `set` (on the CPU or already on `device`) delivered on `device`.
    pub fn new(set: &'a ImageSet, device: Device) -> Loader<'a> {
        Loader {
            images: set.images.shallow_clone(),
            labels: set.labels.shallow_clone(),
            device,
            _set: PhantomData,
        }
    }

    /// Another loader over the same tensors, for another thread.
    fn handle(&self) -> Loader<'a> {
        Loader {
            images: self.images.shallow_clone(),
            labels: self.labels.shallow_clone(),
            device: self.device,
            _set: PhantomData,
        }
    }

    /// Where batches are delivered.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The epoch's sample order: `indices` shuffled by a generator keyed by `key`.
    pub fn shuffled(indices: &[usize], key: u64) -> Vec<usize> {
        let mut order = indices.to_vec();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(key));
        order
    }

    /// Gathers the rows `indices` on the device holding the set and brings them to the
    /// training device: from host memory through a pinned buffer and an asynchronous copy.
    fn gather(&self, indices: &[usize]) -> (Tensor, Tensor) {
        let index: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let index = Tensor::from_slice(&index).to_device(self.images.device());
        let images = self.images.index_select(0, &index);
        let labels = self.labels.index_select(0, &index);
        if images.device() == self.device {
            return (images, labels);
        }
        let to_device = |t: Tensor| {
            t.pin_memory(self.device)
                .to_device_(self.device, t.kind(), true, false)
        };
        (to_device(images), to_device(labels))
    }

    /// A training batch of `indices`, augmented with parameters drawn from `key` unless
    /// `augment_images` is off.
    pub fn train_batch(&self, indices: &[usize], key: u64, augment_images: bool) -> Batch {
        if !augment_images {
            return self.eval_batch(indices);
        }
        let drawn = AugmentParams::sample(indices.len(), &mut ChaCha8Rng::seed_from_u64(key));
        // The order of samples within a batch does not matter to training; grouping them by
        // the order of their colour ops does to the speed of augmentation.
        let order = drawn.grouped_order();
        let rows: Vec<usize> = order.iter().map(|&i| indices[i]).collect();
        let (images, labels) = self.gather(&rows);
        let images = augment(&images, &drawn.select(&order));
        Batch {
            images: normalize_channels_last(&images),
            labels,
            len: indices.len(),
        }
    }

    /// An evaluation batch: no augmentation.
    pub fn eval_batch(&self, indices: &[usize]) -> Batch {
        let (images, labels) = self.gather(indices);
        Batch {
            images: normalize_channels_last(&to_float(&images)),
            labels,
            len: indices.len(),
        }
    }

    /// The batches of `plan`, assembled by a thread of `scope` while the consumer computes:
    /// at most two wait ready.
    pub fn prefetch<'scope>(
        &self,
        scope: &'scope Scope<'scope, '_>,
        plan: Vec<Planned>,
        augment_images: bool,
    ) -> mpsc::IntoIter<Batch>
    where
        'a: 'scope,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let loader = self.handle();
        scope.spawn(move || {
            for p in plan {
                // A closed channel means the consumer stopped early: nothing left to do.
                if tx
                    .send(loader.train_batch(&p.indices, p.key, augment_images))
                    .is_err()
                {
                    break;
                }
            }
        });
        rx.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn mix_is_stable_and_spreads() {
        assert_eq!(mix(&[1, 2]), mix(&[1, 2]));
        assert_ne!(mix(&[1, 2]), mix(&[2, 1]));
        assert_ne!(mix(&[0]), mix(&[1]));
    }

    #[test]
    fn shuffle_is_a_keyed_permutation() {
        let idx: Vec<usize> = (0..100).collect();
        let a = Loader::shuffled(&idx, 7);
        assert_eq!(a, Loader::shuffled(&idx, 7));
        assert_ne!(a, Loader::shuffled(&idx, 8));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, idx);
    }

    #[test]
    fn eval_batch_gathers_rows_and_normalises() {
        let images = Tensor::arange(4 * 64 * 64 * 3, (Kind::Int64, Device::Cpu))
            .remainder(256)
            .to_kind(Kind::Uint8)
            .view([4, 64, 64, 3]);
        let set = ImageSet::from_tensors(images, Tensor::from_slice(&[0i64, 1, 2, 3]));
        let loader = Loader::new(&set, Device::Cpu);
        let b = loader.eval_batch(&[3, 1]);
        assert_eq!(b.images.size(), vec![2, 3, 64, 64]);
        assert_eq!(Vec::<i64>::try_from(&b.labels).unwrap(), vec![3, 1]);
        let raw = set.images.double_value(&[3, 0, 0, 0]) / 255.0;
        let want = (raw - 0.485) / 0.229;
        assert!((b.images.double_value(&[0, 0, 0, 0]) - want).abs() < 1e-5);
    }
}
