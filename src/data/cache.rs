//! Decoding a whole image list once, in parallel, into one uint8 tensor (N x S x S x 3, S the
//! stored side: 64 for Tiny ImageNet), and keeping it in a cache file so that later runs
//! memory-map it instead of decoding again.
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

use super::decode::{decode_into, image_dimensions, max_pixels, read_image_file, SIDE};
use super::decode_progress::DecodeProgress;
use super::image_set::ImageSet;
use super::scan::Sample;
use crate::error::input_error;
use crate::io::atomic_file::{remove_temporaries, write_atomic, Leftovers};
use crate::io::hex;

const MAGIC: &[u8; 8] = b"VGGTINYC";
/// Bumped whenever decoding changes what pixels a file gives (2: other sizes keep their aspect
/// ratio, resized and centre-cropped).
const FORMAT_VERSION: u32 = 2;
const HEADER_BYTES: usize = 64;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub origin: Origin,
    /// Images that were not of the stored side and were resized and cropped to it.
    pub resized: usize,
    /// Indices (into the list loaded) of images left out because they could not be decoded.
    pub skipped: Vec<usize>,
}

/// Bytes of one image stored at `side`.
fn image_bytes(side: usize) -> usize {
    side * side * 3
}

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
pub fn list_digest(samples: &[Sample], side: usize) -> [u8; 32] {
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
pub fn cache_path(dir: &Path, digest: &[u8; 32]) -> PathBuf {
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
fn open_valid(
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

fn labels_of(samples: &[Sample]) -> Tensor {
    let labels: Vec<i64> = samples.iter().map(|s| s.label as i64).collect();
    Tensor::from_slice(&labels)
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
    let mut origin = Origin::Decoded;
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
                        origin = Origin::Rebuilt;
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
        origin,
        resized: outcome.resized,
        skipped: bad.clone(),
    };
    Ok((without(set, &bad, samples.len()), report))
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
    let set = without(mapped(map, samples, side), &bad, samples.len());
    let report = LoadReport {
        origin: Origin::Cache,
        resized: 0,
        skipped: bad,
    };
    Ok((set, report))
}

/// The set without the rows `bad` (a copy, made only when there are any).
fn without(set: ImageSet, bad: &[usize], count: usize) -> ImageSet {
    if bad.is_empty() {
        return set;
    }
    let keep: Vec<i64> = (0..count)
        .filter(|i| !bad.contains(i))
        .map(|i| i as i64)
        .collect();
    let keep = Tensor::from_slice(&keep);
    ImageSet::from_tensors(
        set.images.index_select(0, &keep),
        set.labels.index_select(0, &keep),
    )
}

/// `count` decoded images at `side` as a uint8 NHWC tensor.
fn pixel_tensor(pixels: &[u8], count: usize, side: usize) -> Tensor {
    let side = side as i64;
    Tensor::from_slice(pixels).view([count as i64, side, side, 3])
}

fn mapped(map: Mmap, samples: &[Sample], side: usize) -> ImageSet {
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
fn decode_to_cache(
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

/// Decodes `samples` at `side` into memory.
fn decode_in_memory(samples: &[Sample], side: usize) -> Result<(ImageSet, Outcome)> {
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

/// What decoding a list gave besides its pixels.
struct Outcome {
    resized: usize,
    /// (index, reason) of each sample that could not be read or decoded.
    failures: Vec<(usize, String)>,
}

/// Images decoded per pass out of `count`: a fiftieth of them (so progress moves), at least
/// 256 (so every core has work), at most 256 MiB of pixels whatever the size of the set.
fn chunk_images(side: usize, count: usize) -> usize {
    let bounded = ((256 << 20) / image_bytes(side)).max(1);
    (count / 50).max(256).min(bounded)
}

/// Decodes `samples` at `side` `chunk` images at a time (in parallel within a chunk), handing
/// each chunk's pixels to `sink` in order, with progress on stderr for a large set.
fn decode_chunks(
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

/// Pixels of every sample, decoded in parallel; rows of files that fail stay zero.
struct Decoded {
    pixels: Vec<u8>,
    resized: usize,
    /// (index, reason) of each sample that could not be read or decoded.
    failures: Vec<(usize, String)>,
}

fn decode(samples: &[Sample], side: usize) -> Decoded {
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
    Decoded {
        pixels,
        resized,
        failures,
    }
}

/// One input error listing every image that failed (indices into `samples`), with why;
/// `skippable` where `--skip-bad-images` applies.
fn bad_images_error(
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
        let (first, report) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        assert_eq!(report.origin, Origin::Decoded);
        let (second, report) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        assert_eq!(report.origin, Origin::Cache);
        let (plain, _) = decode_or_map(&samples, 64, None, false).unwrap();
        assert!(second.images.equal(&plain.images));
        assert!(first.images.equal(&plain.images));
        assert!(second.labels.equal(&plain.labels));
    }

    #[test]
    fn the_stored_side_follows_the_input_size_up_to_the_largest_shorter_side() {
        let (dir, tiny) = fixture();
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
        assert_eq!(report.origin, Origin::Decoded);
        assert_eq!(set.images.size(), vec![12, 96, 96, 3]);
        let (_, report) = decode_or_map(&photos, 96, Some(&cache), false).unwrap();
        assert_eq!(report.origin, Origin::Cache);
    }

    #[test]
    fn chunks_arrive_in_order_with_failures_at_their_place_in_the_list() {
        let (_dir, mut samples) = fixture();
        let bad = samples[0].path.with_file_name("bad.JPEG");
        fs::write(&bad, b"not an image").unwrap();
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

    #[test]
    fn a_changed_file_gets_a_new_cache_file() {
        let (dir, samples) = fixture();
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
        assert_eq!(report.origin, Origin::Decoded);
        assert!(set.images.get(0).equal(&set.images.get(1)));
    }

    #[test]
    fn corrupt_and_truncated_cache_files_are_rebuilt() {
        let (dir, samples) = fixture();
        let cache = dir.path().join("cache");
        let (good, _) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        // a copy: the set maps the file this test then overwrites in place
        let good = good.images.copy();
        let path = cache_path(&cache, &list_digest(&samples, 64));

        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 1000] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (set, report) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        assert_eq!(report.origin, Origin::Rebuilt);
        assert!(set.images.equal(&good));
        assert_eq!(
            decode_or_map(&samples, 64, Some(&cache), false)
                .unwrap()
                .1
                .origin,
            Origin::Cache
        );

        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let (set, report) = decode_or_map(&samples, 64, Some(&cache), false).unwrap();
        assert_eq!(report.origin, Origin::Rebuilt);
        assert!(set.images.equal(&good));
    }

    #[test]
    fn undecodable_images_are_reported_or_skipped_and_remembered() {
        let (dir, samples) = fixture();
        fs::write(&samples[3].path, b"not a jpeg").unwrap();
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
            assert_eq!(report.origin, Origin::Cache);
            assert_eq!(report.skipped, vec![3]);
            assert_eq!(set.len(), samples.len() - 1);
        }
        // the cached failure still stops a strict run, naming the file
        let err = strict_error();
        assert!(err.contains(&bad), "{err}");
    }
}
