//! Decoding a whole image list once, in parallel, into one uint8 tensor (N x 64 x 64 x 3), and
//! keeping it in a cache file so that later runs memory-map it instead of decoding again.
//!
//! A cache file is named by a digest of the image list (paths, sizes, modification times), so a
//! changed dataset never finds a stale file. Its header carries that digest, the image count
//! and a CRC-32 of the pixels; a file that fails any check is rebuilt, never trusted.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use memmap2::Mmap;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::decode::{decode_into, IMAGE_BYTES, SIDE};
use super::scan::Sample;
use crate::atomic_file::write_atomic;
use crate::error::input_error;

const MAGIC: &[u8; 8] = b"VGGTINYC";
/// Bumped whenever decoding changes what pixels a file gives.
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;

/// Decoded images and their labels, row i = sample i of the list they came from.
pub struct ImageSet {
    /// uint8, N x 64 x 64 x 3 (HWC per image, as decoded).
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

    /// A copy of the whole set on `device`.
    pub fn to_device(&self, device: Device) -> Result<ImageSet> {
        Ok(ImageSet {
            images: self.images.f_to_device(device)?,
            labels: self.labels.f_to_device(device)?,
            _mapping: None,
        })
    }
}

/// Where the pixels of a load came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Mapped from a valid cache file.
    Cache,
    /// Decoded from the image files (and cached, when a cache directory was given).
    Decoded,
    /// Decoded again because the cache file was corrupt or truncated.
    Rebuilt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    pub origin: Origin,
    /// Images that were not 64x64 and were resized.
    pub resized: usize,
}

/// Digest of the image list: each path with its size and modification time.
pub fn list_digest(samples: &[Sample]) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT_VERSION.to_le_bytes());
    for sample in samples {
        let meta = fs::metadata(&sample.path)
            .map_err(|e| input_error(format!("cannot read {}: {e}", sample.path.display())))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hasher.update(sample.path.as_os_str().as_bytes());
        hasher.update([0]);
        hasher.update(meta.len().to_le_bytes());
        hasher.update(mtime.to_le_bytes());
    }
    Ok(hasher.finalize().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file of an image list with digest `digest`.
pub fn cache_path(dir: &Path, digest: &[u8; 32]) -> PathBuf {
    dir.join(format!("images-{}.u8", &hex(digest)[..32]))
}

fn header(count: usize, digest: &[u8; 32], crc: u32) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SIDE as u32).to_le_bytes());
    h[16..24].copy_from_slice(&(count as u64).to_le_bytes());
    h[24..56].copy_from_slice(digest);
    h[56..60].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Maps `path` and checks it holds `count` images of the list with `digest`, intact.
fn open_valid(path: &Path, count: usize, digest: &[u8; 32]) -> Result<Mmap> {
    let file = File::open(path)?;
    // SAFETY: cache files are only ever replaced by rename, never written in place.
    let map = unsafe { Mmap::map(&file)? };
    anyhow::ensure!(
        map.len() == HEADER_BYTES + count * IMAGE_BYTES,
        "size {} instead of {}",
        map.len(),
        HEADER_BYTES + count * IMAGE_BYTES
    );
    let crc = u32::from_le_bytes(map[56..60].try_into()?);
    anyhow::ensure!(
        map[..HEADER_BYTES] == header(count, digest, crc),
        "header does not match"
    );
    anyhow::ensure!(
        crc32fast::hash(&map[HEADER_BYTES..]) == crc,
        "pixel checksum does not match"
    );
    Ok(map)
}

fn labels_of(samples: &[Sample]) -> Tensor {
    let labels: Vec<i64> = samples.iter().map(|s| s.label as i64).collect();
    Tensor::from_slice(&labels)
}

/// Decoded pixels of `samples`, from the cache in `cache_dir` when a valid file is there,
/// otherwise decoded (and cached there). `None` decodes without any cache file.
pub fn load(samples: &[Sample], cache_dir: Option<&Path>) -> Result<(ImageSet, LoadReport)> {
    let mut origin = Origin::Decoded;
    let target = match cache_dir {
        Some(dir) => {
            let digest = list_digest(samples)?;
            let path = cache_path(dir, &digest);
            if path.exists() {
                match open_valid(&path, samples.len(), &digest) {
                    Ok(map) => return Ok((mapped(map, samples), cache_report())),
                    Err(e) => {
                        eprintln!(
                            "warning: cache file {} is unusable ({e}); rebuilding it",
                            path.display()
                        );
                        origin = Origin::Rebuilt;
                    }
                }
            }
            Some((path, digest))
        }
        None => None,
    };
    let (pixels, resized) = decode_all(samples)?;
    if let Some((path, digest)) = target {
        if let Err(e) = write_cache(&path, &digest, samples.len(), &pixels) {
            eprintln!("warning: cannot write the image cache: {e:#}");
        }
    }
    let n = samples.len() as i64;
    let side = SIDE as i64;
    let images = Tensor::from_slice(&pixels).view([n, side, side, 3]);
    Ok((
        ImageSet::from_tensors(images, labels_of(samples)),
        LoadReport { origin, resized },
    ))
}

fn cache_report() -> LoadReport {
    LoadReport {
        origin: Origin::Cache,
        resized: 0,
    }
}

fn mapped(map: Mmap, samples: &[Sample]) -> ImageSet {
    let map = Arc::new(map);
    let side = SIDE as i64;
    let n = samples.len() as i64;
    let pixels = map[HEADER_BYTES..].as_ptr();
    // SAFETY: the mapping outlives the tensor (ImageSet holds both) and is never written.
    let images = unsafe {
        Tensor::from_blob(
            pixels,
            &[n, side, side, 3],
            &[side * side * 3, side * 3, 3, 1],
            Kind::Uint8,
            Device::Cpu,
        )
    };
    ImageSet {
        images,
        labels: labels_of(samples),
        _mapping: Some(map),
    }
}

fn write_cache(path: &Path, digest: &[u8; 32], count: usize, pixels: &[u8]) -> Result<()> {
    let dir = path.parent().context("cache path has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let crc = crc32fast::hash(pixels);
    write_atomic(path, |tmp| {
        let mut f = std::io::BufWriter::new(File::create(tmp)?);
        f.write_all(&header(count, digest, crc))?;
        f.write_all(pixels)?;
        f.flush()?;
        Ok(())
    })
}

/// Decodes every sample in parallel. Files that cannot be read or decoded are all collected and
/// reported together, with their paths, as one input error. Returns pixels and the resize count.
pub fn decode_all(samples: &[Sample]) -> Result<(Vec<u8>, usize)> {
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
    let mut resized = 0;
    for (sample, outcome) in samples.iter().zip(&outcomes) {
        match outcome {
            Ok(r) => resized += usize::from(*r),
            Err(e) => failures.push(format!("  {}: {e}", sample.path.display())),
        }
    }
    if !failures.is_empty() {
        let shown = failures.len().min(20);
        let mut msg = format!(
            "{} image(s) could not be decoded:\n{}",
            failures.len(),
            failures[..shown].join("\n")
        );
        if failures.len() > shown {
            msg.push_str(&format!("\n  ... and {} more", failures.len() - shown));
        }
        return Err(input_error(msg));
    }
    Ok((pixels, resized))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::scan::scan_image_folder;
    use crate::data::synth::{write_dataset, SynthSpec};

    fn fixture() -> (tempfile::TempDir, Vec<Sample>) {
        let dir = tempfile::tempdir().unwrap();
        let spec = SynthSpec {
            classes: 2,
            per_class: 5,
            val_per_class: 0,
            seed: 3,
        };
        write_dataset(&dir.path().join("data"), &spec).unwrap();
        let list = scan_image_folder(&dir.path().join("data/train")).unwrap();
        (dir, list.samples)
    }

    #[test]
    fn cached_pixels_equal_decoded_pixels() {
        let (dir, samples) = fixture();
        let cache = dir.path().join("cache");
        let (first, report) = load(&samples, Some(&cache)).unwrap();
        assert_eq!(report.origin, Origin::Decoded);
        let (second, report) = load(&samples, Some(&cache)).unwrap();
        assert_eq!(report.origin, Origin::Cache);
        let (plain, _) = load(&samples, None).unwrap();
        assert!(second.images.equal(&plain.images));
        assert!(first.images.equal(&plain.images));
        assert!(second.labels.equal(&plain.labels));
    }

    #[test]
    fn a_changed_file_gets_a_new_cache_file() {
        let (dir, samples) = fixture();
        let cache = dir.path().join("cache");
        load(&samples, Some(&cache)).unwrap();
        let before = list_digest(&samples).unwrap();
        // Rewrite one image with other content: size or mtime moves, so does the digest.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let other = fs::read(&samples[1].path).unwrap();
        fs::write(&samples[0].path, other).unwrap();
        let after = list_digest(&samples).unwrap();
        assert_ne!(before, after);
        let (set, report) = load(&samples, Some(&cache)).unwrap();
        assert_eq!(report.origin, Origin::Decoded);
        assert!(set.images.get(0).equal(&set.images.get(1)));
    }

    #[test]
    fn corrupt_and_truncated_cache_files_are_rebuilt() {
        let (dir, samples) = fixture();
        let cache = dir.path().join("cache");
        let (good, _) = load(&samples, Some(&cache)).unwrap();
        let path = cache_path(&cache, &list_digest(&samples).unwrap());

        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 1000] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (set, report) = load(&samples, Some(&cache)).unwrap();
        assert_eq!(report.origin, Origin::Rebuilt);
        assert!(set.images.equal(&good.images));
        assert_eq!(
            load(&samples, Some(&cache)).unwrap().1.origin,
            Origin::Cache
        );

        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let (set, report) = load(&samples, Some(&cache)).unwrap();
        assert_eq!(report.origin, Origin::Rebuilt);
        assert!(set.images.equal(&good.images));
    }
}
