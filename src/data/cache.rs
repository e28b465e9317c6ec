//! The cache file of a decoded image list, so that later runs memory-map it instead of
//! decoding again, and the side its images are stored at.
//!
//! A cache file is named by a digest of the image list (paths, sizes, modification times) and
//! the stored side, so a changed dataset never finds a stale file. Its header carries that
//! digest, the side, the image count and a CRC-32 of the pixels; a file that fails any check is
//! rebuilt, never trusted.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use memmap2::Mmap;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::decode::{image_dimensions, max_pixels, SIDE};
use super::decode_list::{chunk_images, decode_chunks, image_bytes, Outcome};
use super::image_set::{labels_of, ImageSet};
use super::scan::Sample;
use crate::io::atomic_file::{remove_temporaries, write_atomic, Leftovers};
use crate::io::hex;

const MAGIC: &[u8; 8] = b"VGGTINYC";
/// Bumped whenever decoding changes what pixels a file gives (2: other sizes keep their aspect
/// ratio, resized and centre-cropped).
const FORMAT_VERSION: u32 = 2;
const HEADER_BYTES: usize = 64;

/// The side to store the images of `samples` at for a network input of `image_size`: 64 (the
/// recipe's), or more up to `image_size`, but no more than the largest shorter side among the
/// images, read from their headers (a larger copy would add memory, not detail). Tiny ImageNet
/// stays at 64 whatever the input size.
pub fn stored_side(image_size: u32, samples: &[Sample]) -> usize {
    let image_size = image_size as usize;
    if image_size <= SIDE {
        return SIDE;
    }
    let largest = samples
        .par_iter()
        .filter_map(|s| image_dimensions(&s.path).ok())
        .map(|(w, h)| w.min(h) as usize)
        .max()
        .unwrap_or(SIDE);
    largest.clamp(SIDE, image_size)
}

/// Digest of the image list stored at `side`: each path with its size and modification time.
pub(super) fn list_digest(samples: &[Sample], side: usize) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT_VERSION.to_le_bytes());
    hasher.update((side as u64).to_le_bytes());
    // the cache records which images failed, and a larger pixel cap lets some through
    hasher.update(max_pixels().to_le_bytes());
    for sample in samples {
        // A file that cannot be read (a dangling link, a link loop) hashes as such: decoding
        // reports it with the undecodable images, which --skip-bad-images leaves out.
        let (len, mtime) = fs::metadata(&sample.path).map_or((u64::MAX, 0), |meta| {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            (meta.len(), mtime)
        });
        hasher.update(sample.path.as_os_str().as_bytes());
        hasher.update([0]);
        hasher.update(len.to_le_bytes());
        hasher.update(mtime.to_le_bytes());
    }
    hasher.finalize().into()
}

/// The cache file of an image list with digest `digest`.
pub(super) fn cache_path(dir: &Path, digest: &[u8; 32]) -> PathBuf {
    dir.join(format!("images-{}.u8", &hex(digest)[..32]))
}

fn header(
    count: usize,
    side: usize,
    bad: usize,
    digest: &[u8; 32],
    crc: u32,
) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(side as u32).to_le_bytes());
    h[16..24].copy_from_slice(&(count as u64).to_le_bytes());
    h[24..56].copy_from_slice(digest);
    h[56..60].copy_from_slice(&crc.to_le_bytes());
    h[60..64].copy_from_slice(&(bad as u32).to_le_bytes());
    h
}

/// Maps `path` and checks it holds `count` images at `side` of the list with `digest`, intact.
/// Returns the mapping and the indices of the images that could not be decoded (stored as
/// zeros).
pub(super) fn open_valid(
    path: &Path,
    count: usize,
    side: usize,
    digest: &[u8; 32],
) -> Result<(Mmap, Vec<usize>)> {
    let file = File::open(path)?;
    // SAFETY: cache files are only ever replaced by rename, never written in place.
    let map = unsafe { Mmap::map(&file)? };
    anyhow::ensure!(map.len() >= HEADER_BYTES, "shorter than its header");
    let crc = u32::from_le_bytes(map[56..60].try_into()?);
    let bad = u32::from_le_bytes(map[60..64].try_into()?) as usize;
    let payload = count * image_bytes(side);
    let expected = HEADER_BYTES + payload + bad * 8;
    anyhow::ensure!(
        map.len() == expected,
        "size {} instead of {expected}",
        map.len()
    );
    anyhow::ensure!(
        map[..HEADER_BYTES] == header(count, side, bad, digest, crc),
        "header does not match"
    );
    anyhow::ensure!(
        crc32fast::hash(&map[HEADER_BYTES..]) == crc,
        "checksum does not match"
    );
    let bad = map[HEADER_BYTES + payload..]
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8-byte chunk")) as usize)
        .collect::<Vec<_>>();
    anyhow::ensure!(
        bad.iter().all(|&i| i < count),
        "bad-image index out of range"
    );
    Ok((map, bad))
}

/// The images of a valid cache file's mapping, as a set that keeps the mapping alive.
pub(super) fn mapped(map: Mmap, samples: &[Sample], side: usize) -> ImageSet {
    let map = Arc::new(map);
    let side = side as i64;
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
    ImageSet::mapped(images, labels_of(samples), map)
}

/// Decodes `samples` at `side` into the cache file `path` (list digest `digest`): pixels
/// written as each chunk is decoded, then the undecodable images' indices, then the header
/// with the checksum over both. Nothing is renamed into place unless all of it was written.
pub(super) fn decode_to_cache(
    samples: &[Sample],
    side: usize,
    path: &Path,
    digest: &[u8; 32],
) -> Result<Outcome> {
    let dir = path.parent().context("cache path has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    remove_temporaries(dir, Leftovers::Abandoned);
    let mut outcome = None;
    write_atomic(path, |tmp| {
        let mut f = std::io::BufWriter::new(File::create(tmp)?);
        f.write_all(&[0; HEADER_BYTES])?;
        let mut crc = crc32fast::Hasher::new();
        let decoded = decode_chunks(
            samples,
            (side, chunk_images(side, samples.len())),
            |pixels| {
                crc.update(pixels);
                Ok(f.write_all(pixels)?)
            },
        )?;
        let bad_bytes: Vec<u8> = decoded
            .failures
            .iter()
            .flat_map(|(i, _)| (*i as u64).to_le_bytes())
            .collect();
        crc.update(&bad_bytes);
        f.write_all(&bad_bytes)?;
        let bad = decoded.failures.len();
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&header(samples.len(), side, bad, digest, crc.finalize()))?;
        f.flush()?;
        outcome = Some(decoded);
        Ok(())
    })?;
    outcome.context("the cache writer returned no outcome")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load::{decode_or_map, PixelsFrom};
    use crate::data::scan::scan_image_folder;
    use crate::data::synth::{example_samples, SynthSpec};

    #[test]
    fn the_stored_side_follows_the_input_size_up_to_the_largest_shorter_side() {
        let (dir, tiny) = example_samples();
        assert_eq!(stored_side(224, &tiny), 64, "64x64 images stay 64x64");
        let root = dir.path().join("photos");
        let spec = SynthSpec {
            classes: 2,
            per_class: 6,
            val_per_class: 0,
            seed: 1,
        };
        crate::data::synth_photos::write_photo_tree(&root, &spec).unwrap();
        let photos = scan_image_folder(&root.join("train")).unwrap().samples;
        // their largest shorter side: 120 (160x120)
        let sides = [32, 64, 96, 224].map(|size| stored_side(size, &photos));
        assert_eq!(sides, [64, 64, 96, 120]);
        // another side is another cache file, of images that size
        let cache = dir.path().join("cache");
        decode_or_map(&photos, 64, Some(&cache), false).unwrap();
        let (set, report) = decode_or_map(&photos, 96, Some(&cache), false).unwrap();
        assert_eq!(report.pixels_from, PixelsFrom::Decoded);
        assert_eq!(set.images.size(), vec![12, 96, 96, 3]);
        let (_, report) = decode_or_map(&photos, 96, Some(&cache), false).unwrap();
        assert_eq!(report.pixels_from, PixelsFrom::Cache);
    }

    #[test]
    fn a_changed_file_gets_a_new_cache_file() {
        let (dir, samples) = example_samples();
        let cache = dir.path().join("cache");
        decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        let before = list_digest(&samples, 64);
        // Rewrite one image with other content: size or mtime moves, so does the digest.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let other = fs::read(&samples[1].path).unwrap();
        fs::write(&samples[0].path, other).unwrap();
        let after = list_digest(&samples, 64);
        assert_ne!(before, after);
        let (set, report) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        assert_eq!(report.pixels_from, PixelsFrom::Decoded);
        assert!(set.images.get(0).equal(&set.images.get(1)));
    }

    #[test]
    fn corrupt_and_truncated_cache_files_are_rebuilt() {
        let (dir, samples) = example_samples();
        let cache = dir.path().join("cache");
        let (good, _) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        // a copy: the set maps the file this test then overwrites in place
        let good = good.images.copy();
        let path = cache_path(&cache, &list_digest(&samples, 64));

        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 1000] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (set, report) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        assert_eq!(report.pixels_from, PixelsFrom::Rebuilt);
        assert!(set.images.equal(&good));
        assert_eq!(
            decode_or_map(&samples, 64, Some(&cache), false)
                .unwrap()
                .1
                .pixels_from,
            PixelsFrom::Cache
        );

        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let (set, report) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        assert_eq!(report.pixels_from, PixelsFrom::Rebuilt);
        assert!(set.images.equal(&good));
    }
}
