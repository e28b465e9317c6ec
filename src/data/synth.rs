//! A small synthetic dataset in the Tiny ImageNet layout, learnable even by randomly initialised
//! features: each class is a hue plus a stripe orientation and frequency, each image adds a
//! random phase, brightness, colour shift and pixel noise. One image in fifty is grayscale, as
//! in the real data.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::decode::SIDE;
use super::draw_key::key_of;
use crate::bail_input;

pub struct SynthSpec {
    pub classes: usize,
    pub per_class: usize,
    pub val_per_class: usize,
    pub seed: u64,
}

/// The wnid-like name of synthetic class `c`.
pub fn wnid(c: usize) -> String {
    format!("n9{c:07}")
}

/// HSV (all in [0, 1]) to RGB bytes.
fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// One image of class `c` out of `classes`, drawn from `rng`: `width` x `height` RGB bytes
/// (stripes as wide, relative to the image, whatever its size).
pub(super) fn render(
    c: usize,
    classes: usize,
    (width, height): (usize, usize),
    rng: &mut ChaCha8Rng,
) -> Vec<u8> {
    let hue = c as f64 / classes as f64 + rng.gen_range(-0.01..0.01);
    let angle = std::f64::consts::PI * ((c * 7) % classes) as f64 / classes as f64;
    let freq = 2.0 + (c % 3) as f64 * 1.5;
    let phase = rng.gen_range(0.0..std::f64::consts::TAU);
    let brightness = rng.gen_range(0.45..0.6);
    let (ca, sa) = (angle.cos(), angle.sin());
    let mut pixels = Vec::with_capacity(width * height * 3);
    let scale = width.max(height) as f64;
    for y in 0..height {
        for x in 0..width {
            let u = (x as f64 * ca + y as f64 * sa) / scale;
            let stripe = (std::f64::consts::TAU * freq * u + phase).sin();
            let rgb = hsv(hue, 0.85, brightness + 0.25 * stripe);
            for v in rgb {
                let noisy = v * 255.0 + rng.gen_range(-8.0..8.0);
                pixels.push(noisy.clamp(0.0, 255.0) as u8);
            }
        }
    }
    pixels
}

fn write_jpeg(path: &Path, rgb: &[u8], gray: bool) -> Result<()> {
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90);
    let side = SIDE as u32;
    if gray {
        let luma: Vec<u8> = rgb
            .chunks(3)
            .map(|p| (0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64) as u8)
            .collect();
        encoder.encode(&luma, side, side, image::ExtendedColorType::L8)?;
    } else {
        encoder.encode(rgb, side, side, image::ExtendedColorType::Rgb8)?;
    }
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// What one class contributes to the dataset's shared text files.
struct ClassFiles {
    annotations: String,
}

/// Writes class `c`'s training images with their boxes file and its val images; returns its
/// lines of `val_annotations.txt`.
fn write_class(out: &Path, spec: &SynthSpec, c: usize) -> Result<ClassFiles> {
    let id = wnid(c);
    let images = out.join("train").join(&id).join("images");
    fs::create_dir_all(&images).with_context(|| format!("cannot create {}", images.display()))?;
    let (mut boxes, mut annotations) = (String::new(), String::new());
    for k in 0..spec.per_class + spec.val_per_class {
        let mut rng = ChaCha8Rng::seed_from_u64(key_of(&[spec.seed, c as u64, k as u64]));
        let rgb = render(c, spec.classes, (SIDE, SIDE), &mut rng);
        let gray = (c * 31 + k).is_multiple_of(50);
        if k < spec.per_class {
            let name = format!("{id}_{k}.JPEG");
            write_jpeg(&images.join(&name), &rgb, gray)?;
            writeln!(boxes, "{name}\t0\t0\t63\t63")?;
        } else {
            let name = format!("val_{}.JPEG", c * spec.val_per_class + k - spec.per_class);
            write_jpeg(&out.join("val/images").join(&name), &rgb, gray)?;
            writeln!(annotations, "{name}\t{id}\t0\t0\t63\t63")?;
        }
    }
    let boxes_path = out.join("train").join(&id).join(format!("{id}_boxes.txt"));
    fs::write(&boxes_path, boxes)
        .with_context(|| format!("cannot write {}", boxes_path.display()))?;
    Ok(ClassFiles { annotations })
}

/// Writes `wnids.txt`, `words.txt`, `train/<wnid>/images/*.JPEG` with `<wnid>_boxes.txt`, and
/// `val/images/*.JPEG` with `val/val_annotations.txt` under `out`.
pub fn write_dataset(out: &Path, spec: &SynthSpec) -> Result<()> {
    if spec.classes < 2 {
        bail_input!("--classes must be at least 2");
    }
    if spec.per_class < 1 {
        bail_input!("--per-class must be at least 1");
    }
    if out.join("train").exists() {
        bail_input!("{} already holds a train/ folder", out.display());
    }
    let val_images = out.join("val/images");
    fs::create_dir_all(&val_images)
        .with_context(|| format!("cannot create {}", val_images.display()))?;
    // Every image has its own generator, so classes are written in parallel; their text
    // files are joined in class order.
    let classes: Vec<ClassFiles> = (0..spec.classes)
        .into_par_iter()
        .map(|c| write_class(out, spec, c))
        .collect::<Result<_>>()?;
    let mut wnids = String::new();
    let mut words = String::new();
    let mut annotations = String::new();
    for (c, files) in classes.iter().enumerate() {
        writeln!(wnids, "{}", wnid(c))?;
        writeln!(words, "{}\tsynthetic class {c}", wnid(c))?;
        annotations.push_str(&files.annotations);
    }
    fs::write(out.join("wnids.txt"), wnids)?;
    fs::write(out.join("words.txt"), words)?;
    fs::write(out.join("val/val_annotations.txt"), annotations)?;
    Ok(())
}

/// A written tree of 2 classes x 5 images in a temporary folder, its training list scanned: the
/// list the decoding and cache tests load.
#[cfg(test)]
pub fn example_samples() -> (tempfile::TempDir, Vec<super::scan::Sample>) {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        classes: 2,
        per_class: 5,
        val_per_class: 0,
        seed: 3,
    };
    write_dataset(&dir.path().join("data"), &spec).unwrap();
    let list = super::scan::scan_image_folder(&dir.path().join("data/train")).unwrap();
    (dir, list.samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::scan::{scan_image_folder, scan_val, DataRoot};

    #[test]
    fn writes_a_scannable_tiny_imagenet_tree() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SynthSpec {
            classes: 3,
            per_class: 4,
            val_per_class: 2,
            seed: 5,
        };
        write_dataset(dir.path(), &spec).unwrap();
        let root = DataRoot::locate(dir.path()).unwrap();
        let list = scan_image_folder(&root.train).unwrap();
        assert_eq!(list.classes, vec![wnid(0), wnid(1), wnid(2)]);
        assert_eq!(list.samples.len(), 12);
        let val = scan_val(root.val.as_deref().unwrap(), &list.classes).unwrap();
        assert_eq!(val.len(), 6);
        assert_eq!(val[5].label, 2);
        // deterministic: a second dataset with the same seed has the same bytes
        let dir2 = tempfile::tempdir().unwrap();
        write_dataset(dir2.path(), &spec).unwrap();
        let rel = list.samples[7].path.strip_prefix(dir.path()).unwrap();
        assert_eq!(
            fs::read(&list.samples[7].path).unwrap(),
            fs::read(dir2.path().join(rel)).unwrap()
        );
    }
}
