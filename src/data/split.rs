//! The seeded train/holdout split, index for index the one
//! `torch.utils.data.random_split(ds, [1 - h, h], generator=torch.Generator().manual_seed(seed))`
//! gives.

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::scan::Sample;
use crate::bail_input;
use crate::io::hex;

/// The training tree's `samples` (in scan order) without those a run recorded as left out
/// (undecodable): what its split was drawn over, and what eval recovers the holdout from.
/// Names are compared relative to `tree` (a moved or otherwise spelled dataset matches) and as
/// meta.json records them (a name that is not UTF-8: lossily).
pub fn split_population(samples: Vec<Sample>, left_out: &[PathBuf], tree: &Path) -> Vec<Sample> {
    let name = |p: &Path| relative(p, tree).to_string_lossy().into_owned();
    let left_out: HashSet<String> = left_out.iter().map(|p| name(p)).collect();
    samples
        .into_iter()
        .filter(|s| !left_out.contains(&name(&s.path)))
        .collect()
}

/// `paths` of images under `tree` as a run records them: relative to `tree`, so that they
/// still name the images after the dataset moves.
pub fn relative_to(paths: &[PathBuf], tree: &Path) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|p| relative(p, tree).to_path_buf())
        .collect()
}

/// `path` relative to `tree` when it lies under it (as given), else as it is.
fn relative<'a>(path: &'a Path, tree: &Path) -> &'a Path {
    path.strip_prefix(tree).unwrap_or(path)
}

/// How a dataset was split: enough to recompute the split and to notice a changed dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSpec {
    pub seed: i64,
    /// Fractions `[train, holdout]`, as passed to `random_split`.
    pub fractions: [f64; 2],
    pub dataset_size: usize,
    /// `population_digest` of the images split (absent in runs of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// SHA-256 of the samples' paths relative to `tree` (in order) and their file sizes: the same
/// for the same images wherever the dataset moved, different when one was renamed, added,
/// removed or replaced by a file of another size.
pub fn population_digest(samples: &[Sample], tree: &Path) -> String {
    // The sizes in parallel: a stat per file, slow one by one on a network file system. A
    // file that cannot be read (a dangling link) counts as one of no possible size: the
    // population differs from any it was part of.
    let sizes: Vec<u64> = samples
        .par_iter()
        .map(|s| fs::metadata(&s.path).map_or(u64::MAX, |m| m.len()))
        .collect();
    let mut hasher = Sha256::new();
    for (sample, size) in samples.iter().zip(sizes) {
        hasher.update(relative(&sample.path, tree).as_os_str().as_bytes());
        hasher.update([0]);
        hasher.update(size.to_le_bytes());
    }
    hex(&hasher.finalize())
}

/// Sample indices of both subsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub holdout: Vec<usize>,
}

impl SplitSpec {
    pub fn new(seed: i64, holdout: f64, dataset_size: usize) -> SplitSpec {
        SplitSpec {
            seed,
            fractions: [1.0 - holdout, holdout],
            dataset_size,
            digest: None,
        }
    }

    /// Subset lengths as `random_split` computes them from fractions: floor of each share, then
    /// the remainder handed out one by one, round robin from the first subset.
    pub fn lengths(&self) -> [usize; 2] {
        let n = self.dataset_size;
        let mut lengths = self.fractions.map(|f| (n as f64 * f).floor() as usize);
        let remainder = n - lengths.iter().sum::<usize>();
        for i in 0..remainder {
            lengths[i % 2] += 1;
        }
        lengths
    }

    /// The split a run recorded as this, drawn again over a population of `size` images with
    /// `digest` (`population_digest`; resumed training and eval both recover it here). Fails
    /// unless the recording was over the same images: over a changed dataset the same seed
    /// gives another holdout. `run` and `tree` name the run and the data in the message.
    pub fn recover(&self, size: usize, digest: &str, run: &str, tree: &Path) -> Result<Split> {
        self.check_size(size, run, tree)?;
        if let Some(recorded) = &self.digest {
            if recorded != digest {
                bail_input!(
                    "{run} was split over other images than {} holds now (as many, but renamed, \
                     replaced or resized): its holdout cannot be recovered",
                    tree.display()
                );
            }
        }
        Ok(self.split())
    }

    fn check_size(&self, size: usize, run: &str, tree: &Path) -> Result<()> {
        if self.dataset_size != size {
            bail_input!(
                "{run} was split over {} images, {} now has {}: the dataset changed, so its \
                 holdout cannot be recovered",
                self.dataset_size,
                tree.display(),
                size
            );
        }
        Ok(())
    }

    /// Draws the permutation from libtorch's CPU generator seeded with `seed`, the same
    /// Mersenne Twister `torch.Generator().manual_seed(seed)` starts from. Reseeds the global
    /// generator, so call it before any random draw that must not depend on it.
    pub fn split(&self) -> Split {
        let [train_len, _] = self.lengths();
        tch::manual_seed(self.seed);
        let perm = Tensor::randperm(self.dataset_size as i64, (Kind::Int64, Device::Cpu));
        let perm: Vec<i64> = Vec::<i64>::try_from(&perm).expect("randperm gives int64 on the CPU");
        let perm: Vec<usize> = perm.into_iter().map(|i| i as usize).collect();
        Split {
            train: perm[..train_len].to_vec(),
            holdout: perm[train_len..].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_random_split_rounding() {
        // 95 000 / 5 000 on Tiny ImageNet.
        assert_eq!(SplitSpec::new(42, 0.05, 100_000).lengths(), [95_000, 5_000]);
        // floor(0.95*19)=18, floor(0.05*19)=0, remainder 1 goes to the first subset.
        assert_eq!(SplitSpec::new(42, 0.05, 19).lengths(), [19, 0]);
        // floor(0.95*21)=19, floor(0.05*21)=1, remainder 1 to the first.
        assert_eq!(SplitSpec::new(42, 0.05, 21).lengths(), [20, 1]);
        // floor(0.7*3)=2, floor(0.3*3)=0: remainder 1 to the first.
        assert_eq!(SplitSpec::new(0, 0.3, 3).lengths(), [3, 0]);
        // floor(0.5*5)=2 twice, remainder 1 to the first.
        assert_eq!(SplitSpec::new(0, 0.5, 5).lengths(), [3, 2]);
    }

    #[test]
    fn a_changed_dataset_is_named() {
        let spec = SplitSpec::new(42, 0.05, 100);
        assert!(spec.check_size(100, "run", Path::new("d")).is_ok());
        let err = spec
            .check_size(99, "run", Path::new("d"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("100 images") && err.contains("has 99"),
            "{err}"
        );
    }

    #[test]
    fn holdout_matches_pytorch_for_seed_42() {
        let _generator = crate::test_generator::lock();
        // First holdout indices of random_split(range(1000), [0.95, 0.05], seed 42) in PyTorch.
        let split = SplitSpec::new(42, 0.05, 1000).split();
        assert_eq!(&split.holdout[..5], &[898, 806, 712, 254, 97]);
        assert_eq!(split.train.len(), 950);
        let mut all: Vec<usize> = split.train.iter().chain(&split.holdout).copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }
}
