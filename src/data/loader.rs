//! Batches from a decoded image set: shuffled and augmented for training, in order for eval.
//! Every random draw comes from a generator keyed by (seed, stage, epoch, batch), so a run, or a
//! resumed run, sees the same batches.

use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::Scope;

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use super::augment::{augment, normalize_channels_last, resize, to_float, Constants};
use super::augment_params::{AugmentParams, ParamTensors, PACKED_ROWS};
use super::image_set::ImageSet;
use crate::error::{from_panic, OutOfMemory};

/// One batch on the training device: normalised float NCHW images and int64 labels.
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub len: usize,
}

/// Batches of an epoch over `train_len` samples, minus a last batch of one sample
/// (BatchNorm cannot train on it).
pub fn batches_per_epoch(train_len: usize, batch_size: usize) -> usize {
    train_len.div_ceil(batch_size) - usize::from(train_len % batch_size == 1)
}

/// One planned training batch: its rows, and the key of its augmentation draws.
pub struct PlannedBatch {
    pub indices: Vec<usize>,
    pub key: u64,
}

/// Delivers batches of a decoded set on the training device. Holds handles to the set's
/// tensors (so that a background thread can take its own), tied to the set's lifetime.
///
/// No batch waits for the device: what a batch needs from the host (the rows to gather, the
/// drawn parameters) travels as one pinned tensor by one non-blocking copy, and the
/// transforms' constants are on the device from the start.
pub struct Loader<'a> {
    images: Tensor,
    labels: Tensor,
    device: Device,
    constants: Constants,
    /// Side of the delivered images (`--image-size`): the recipe's 64, or larger or smaller;
    /// the images' own side unless told.
    side: i64,
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
            constants: Constants::on(device),
            side: set.images.size()[1],
            _set: PhantomData,
        }
    }

    /// The same loader delivering `side` x `side` images: training crops resized to that
    /// size, evaluation images resized to it.
    pub fn with_image_size(mut self, side: u32) -> Loader<'a> {
        self.side = i64::from(side);
        self
    }

    /// Another loader over the same tensors, for another thread.
    fn handle(&self) -> Loader<'a> {
        Loader {
            images: self.images.shallow_clone(),
            labels: self.labels.shallow_clone(),
            device: self.device,
            constants: Constants::on(self.device),
            side: self.side,
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

    /// A host tensor on the training device: pinned, then copied without waiting (a blocking
    /// copy would wait for every kernel queued before it, the training step's included).
    fn to_training_device(&self, host: Tensor) -> Tensor {
        if self.device == Device::Cpu {
            return host;
        }
        // `_pin_memory`: `pin_memory(device)` warns on every call that its argument is
        // deprecated, and tch always passes one.
        host.internal_pin_memory(self.device)
            .to_device_(self.device, host.kind(), true, false)
    }

    /// The rows `rows` as an index on the device that holds the set.
    fn host_index(rows: &[usize]) -> Tensor {
        let rows: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        Tensor::from_slice(&rows)
    }

    fn set_on_training_device(&self) -> bool {
        self.images.device() == self.device
    }

    /// Gathers the rows `index` (on the device holding the set) there, and brings them to the
    /// training device.
    fn gather(&self, index: &Tensor) -> (Tensor, Tensor) {
        let images = self.images.index_select(0, index);
        let labels = self.labels.index_select(0, index);
        if self.set_on_training_device() {
            return (images, labels);
        }
        (
            self.to_training_device(images),
            self.to_training_device(labels),
        )
    }

    /// A training batch of `indices`, augmented with parameters drawn from `key` unless
    /// `augment_images` is off.
    pub fn train_batch(&self, indices: &[usize], key: u64, augment_images: bool) -> Batch {
        if !augment_images {
            return self.eval_batch(indices);
        }
        let stored = self.images.size()[1];
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        let drawn = AugmentParams::sample(indices.len(), stored, &mut rng);
        // The order of samples within a batch does not matter to training; grouping them by
        // the order of their colour ops does to the speed of augmentation.
        let order = drawn.grouped_order();
        let rows: Vec<usize> = order.iter().map(|&i| indices[i]).collect();
        let drawn = drawn.select(&order);
        let packed = Tensor::from_slice(&drawn.pack(&rows)).view([PACKED_ROWS as i64, -1]);
        let (index, params) = ParamTensors::unpack(&self.to_training_device(packed));
        let index = if self.set_on_training_device() {
            index
        } else {
            Self::host_index(&rows)
        };
        let (images, labels) = self.gather(&index);
        let images = augment(&images, &drawn, &params, &self.constants, self.side);
        Batch {
            images: normalize_channels_last(&images, &self.constants),
            labels,
            len: indices.len(),
        }
    }

    /// An evaluation batch: no augmentation.
    pub fn eval_batch(&self, indices: &[usize]) -> Batch {
        let index = Self::host_index(indices);
        let index = if self.set_on_training_device() {
            self.to_training_device(index)
        } else {
            index
        };
        let (images, labels) = self.gather(&index);
        let images = resize(&to_float(&images), self.side);
        Batch {
            images: normalize_channels_last(&images, &self.constants),
            labels,
            len: indices.len(),
        }
    }

    /// The batches of `plan`, assembled by a thread of `scope` while the consumer computes:
    /// at most two wait ready. A failure there (libtorch reports them as panics: out of
    /// memory, say) arrives as the error of its batch, with its message, and ends the stream.
    pub fn prefetch<'scope>(
        &self,
        scope: &'scope Scope<'scope, '_>,
        plan: Vec<PlannedBatch>,
        augment_images: bool,
    ) -> mpsc::IntoIter<Result<Batch>>
    where
        'a: 'scope,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let loader = self.handle();
        scope.spawn(move || {
            for p in plan {
                let made = panic::catch_unwind(AssertUnwindSafe(|| {
                    loader.train_batch(&p.indices, p.key, augment_images)
                }));
                let failed = made.is_err();
                let batch = made.map_err(assembly_failure);
                // A closed channel means the consumer stopped early: nothing left to do.
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        rx.into_iter()
    }
}

/// The error of a batch whose assembly panicked: running out of memory says so first.
fn assembly_failure(payload: Box<dyn std::any::Any + Send>) -> anyhow::Error {
    match from_panic(payload).downcast() {
        Ok(oom) => anyhow::Error::new(OutOfMemory {
            during: Some("while assembling a batch"),
            ..oom
        }),
        Err(other) => other.context("the batch-assembly thread failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn a_last_batch_of_one_is_left_out() {
        assert_eq!(batches_per_epoch(64, 64), 1);
        assert_eq!(batches_per_epoch(65, 64), 1);
        assert_eq!(batches_per_epoch(66, 64), 2);
        assert_eq!(batches_per_epoch(95_000, 64), 1485);
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

    fn numbered_set(n: i64) -> ImageSet {
        let images = Tensor::arange(n * 64 * 64 * 3, (Kind::Int64, Device::Cpu))
            .remainder(256)
            .to_kind(Kind::Uint8)
            .view([n, 64, 64, 3]);
        ImageSet::from_tensors(images, Tensor::arange(n, (Kind::Int64, Device::Cpu)))
    }

    #[test]
    fn prefetched_batches_equal_batches_made_in_place() {
        let set = numbered_set(6);
        let loader = Loader::new(&set, Device::Cpu);
        let plan = || {
            vec![
                PlannedBatch {
                    indices: vec![5, 0, 3],
                    key: 11,
                },
                PlannedBatch {
                    indices: vec![1, 2],
                    key: 12,
                },
            ]
        };
        let got: Vec<Batch> = std::thread::scope(|scope| {
            loader
                .prefetch(scope, plan(), true)
                .map(|b| b.unwrap())
                .collect()
        });
        assert_eq!(got.len(), 2);
        for (batch, p) in got.iter().zip(plan()) {
            let here = loader.train_batch(&p.indices, p.key, true);
            assert!(batch.images.equal(&here.images));
            assert!(batch.labels.equal(&here.labels));
        }
    }

    #[test]
    fn a_failure_while_assembling_arrives_as_an_error() {
        let set = numbered_set(4);
        let loader = Loader::new(&set, Device::Cpu);
        let plan = vec![
            PlannedBatch {
                indices: vec![0, 1],
                key: 1,
            },
            PlannedBatch {
                indices: vec![2, 99],
                key: 2,
            },
            PlannedBatch {
                indices: vec![3, 0],
                key: 3,
            },
        ];
        let got: Vec<Result<Batch>> =
            std::thread::scope(|scope| loader.prefetch(scope, plan, false).collect());
        assert_eq!(got.len(), 2, "the stream ends at the failure");
        assert!(got[0].is_ok());
        let err = format!("{:#}", got[1].as_ref().err().unwrap());
        assert!(err.contains("batch-assembly thread"), "{err}");
        assert!(
            err.contains("out of range") || err.contains("index"),
            "{err}"
        );
    }

    #[test]
    fn running_out_of_memory_while_assembling_says_so_first() {
        let failed = panic::catch_unwind(|| Tensor::empty([1 << 50], (Kind::Float, Device::Cpu)));
        let err = assembly_failure(failed.unwrap_err());
        let line = err.to_string();
        assert!(line.contains("can't allocate memory"), "{line}");
        assert!(line.contains("while assembling a batch; try"), "{line}");
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
