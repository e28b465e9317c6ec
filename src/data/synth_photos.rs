//! A synthetic dataset laid out as users' own photos are: `train/<class>/*` and a class-folder
//! `val/<class>/*`, no `words.txt`, images of several sizes and aspect ratios in every format
//! torchvision's `ImageFolder` opens (JPEG baseline, progressive, grayscale and CMYK; PNG RGB,
//! RGBA, gray, gray + alpha, 16-bit RGB and 16-bit gray; GIF; BMP; WebP; TIFF; PPM; PGM), one
//! GIF saved under a `.jpg` name. The classes are learnable as in `synth`.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result};
use image::codecs::pnm::{PnmEncoder, PnmSubtype, SampleEncoding};
use image::{DynamicImage, ExtendedColorType, ImageFormat, RgbImage};
use mozjpeg::ColorSpace;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::draw_key::key_of;
use super::synth::{render, SynthSpec};
use crate::bail_input;

/// Width x height of the images, in turn: square, landscape, portrait, larger and odd sizes.
const SIZES: [(usize, usize); 6] = [
    (64, 64),
    (100, 75),
    (75, 100),
    (160, 120),
    (97, 131),
    (120, 90),
];

/// The encodings written, in turn, each with its file extension.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Jpeg,
    ProgressiveJpeg,
    GrayJpeg,
    CmykJpeg,
    Png,
    RgbaPng,
    GrayPng,
    GrayAlphaPng,
    Png16,
    Gray16Png,
    GifNamedJpg,
    Bmp,
    WebP,
    Tiff,
    Ppm,
    Pgm,
}

const ENCODINGS: [Encoding; 16] = [
    Encoding::Jpeg,
    Encoding::Png,
    Encoding::ProgressiveJpeg,
    Encoding::RgbaPng,
    Encoding::GrayJpeg,
    Encoding::GifNamedJpg,
    Encoding::Bmp,
    Encoding::GrayPng,
    Encoding::WebP,
    Encoding::CmykJpeg,
    Encoding::Tiff,
    Encoding::GrayAlphaPng,
    Encoding::Ppm,
    Encoding::Png16,
    Encoding::Pgm,
    Encoding::Gray16Png,
];

impl Encoding {
    fn extension(self) -> &'static str {
        match self {
            Encoding::Jpeg | Encoding::CmykJpeg | Encoding::GifNamedJpg => "jpg",
            Encoding::ProgressiveJpeg => "jpeg",
            Encoding::GrayJpeg => "JPG",
            Encoding::Png | Encoding::RgbaPng | Encoding::GrayAlphaPng | Encoding::Gray16Png => {
                "png"
            }
            Encoding::GrayPng | Encoding::Png16 => "PNG",
            Encoding::Bmp => "bmp",
            Encoding::WebP => "webp",
            Encoding::Tiff => "tif",
            Encoding::Ppm => "ppm",
            Encoding::Pgm => "pgm",
        }
    }

    /// The file's bytes for RGB `img`.
    fn encode(self, img: RgbImage) -> Result<Vec<u8>> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let dynamic = DynamicImage::ImageRgb8(img);
        let with = |converted: DynamicImage, format| -> Result<Vec<u8>> {
            let mut bytes = Cursor::new(Vec::new());
            converted.write_to(&mut bytes, format)?;
            Ok(bytes.into_inner())
        };
        match self {
            Encoding::Jpeg => with(dynamic, ImageFormat::Jpeg),
            Encoding::GrayJpeg => with(dynamic.grayscale(), ImageFormat::Jpeg),
            Encoding::ProgressiveJpeg => {
                mozjpeg_bytes(ColorSpace::JCS_RGB, dynamic.as_bytes(), w, h)
            }
            Encoding::CmykJpeg => {
                let cmyk: Vec<u8> = dynamic
                    .as_bytes()
                    .chunks(3)
                    .flat_map(|p| {
                        let k = 255 - p[0].max(p[1]).max(p[2]);
                        [255 - p[0] - k, 255 - p[1] - k, 255 - p[2] - k, k]
                    })
                    .collect();
                mozjpeg_bytes(ColorSpace::JCS_CMYK, &cmyk, w, h)
            }
            Encoding::Png => with(dynamic, ImageFormat::Png),
            Encoding::RgbaPng => {
                let mut rgba = dynamic.to_rgba8();
                for (i, p) in rgba.pixels_mut().enumerate() {
                    p.0[3] = (i % 251) as u8;
                }
                with(DynamicImage::ImageRgba8(rgba), ImageFormat::Png)
            }
            Encoding::GrayPng => with(dynamic.grayscale(), ImageFormat::Png),
            Encoding::GrayAlphaPng => with(
                DynamicImage::ImageLumaA8(dynamic.to_luma_alpha8()),
                ImageFormat::Png,
            ),
            Encoding::Png16 => with(
                DynamicImage::ImageRgb16(dynamic.to_rgb16()),
                ImageFormat::Png,
            ),
            Encoding::Gray16Png => {
                // values spread over 0..=511, so that PIL's clipping at 255 shows
                let mut gray = dynamic.to_luma16();
                for p in gray.pixels_mut() {
                    p.0[0] /= 128;
                }
                with(DynamicImage::ImageLuma16(gray), ImageFormat::Png)
            }
            Encoding::GifNamedJpg => with(dynamic, ImageFormat::Gif),
            Encoding::Bmp => with(dynamic, ImageFormat::Bmp),
            Encoding::WebP => with(dynamic, ImageFormat::WebP),
            Encoding::Tiff => with(dynamic, ImageFormat::Tiff),
            Encoding::Ppm => pnm_bytes(&dynamic, SampleEncoding::Binary, false),
            Encoding::Pgm => pnm_bytes(&dynamic.grayscale(), SampleEncoding::Binary, true),
        }
    }
}

/// A binary PPM (P6) or PGM (P5); the `image` crate writes PAM (P7), which PIL does not open.
fn pnm_bytes(img: &DynamicImage, encoding: SampleEncoding, gray: bool) -> Result<Vec<u8>> {
    let (subtype, color) = if gray {
        (PnmSubtype::Graymap(encoding), ExtendedColorType::L8)
    } else {
        (PnmSubtype::Pixmap(encoding), ExtendedColorType::Rgb8)
    };
    let mut bytes = Vec::new();
    PnmEncoder::new(&mut bytes).with_subtype(subtype).encode(
        img.as_bytes(),
        img.width(),
        img.height(),
        color,
    )?;
    Ok(bytes)
}

/// A JPEG through libjpeg (mozjpeg): progressive, and CMYK with an Adobe marker.
fn mozjpeg_bytes(space: ColorSpace, pixels: &[u8], w: usize, h: usize) -> Result<Vec<u8>> {
    let mut compress = mozjpeg::Compress::new(space);
    compress.set_size(w, h);
    compress.set_quality(90.0);
    compress.set_progressive_mode();
    let mut started = compress.start_compress(Vec::new())?;
    started.write_scanlines(pixels)?;
    Ok(started.finish()?)
}

/// The folder name of class `c`: plain words, as users name their classes.
pub fn class_folder(c: usize) -> String {
    format!("class{c:02}")
}

/// Writes image `k` of class `c` into `dir`.
fn write_image(dir: &Path, spec: &SynthSpec, c: usize, k: usize) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(key_of(&[spec.seed, c as u64, k as u64]));
    let (w, h) = SIZES[(3 * c + k) % SIZES.len()];
    let encoding = ENCODINGS[(c + k) % ENCODINGS.len()];
    let pixels = render(c, spec.classes, (w, h), &mut rng);
    let img = RgbImage::from_raw(w as u32, h as u32, pixels).context("rendered image size")?;
    let path = dir.join(format!("{c}_{k:03}.{}", encoding.extension()));
    let bytes = encoding
        .encode(img)
        .with_context(|| format!("cannot encode {} as {encoding:?}", path.display()))?;
    fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `train/<class>/*` and `val/<class>/*` under `out`.
pub fn write_photo_tree(out: &Path, spec: &SynthSpec) -> Result<()> {
    if spec.classes < 2 || spec.per_class < 1 {
        bail_input!("--classes must be at least 2 and --per-class at least 1");
    }
    if out.join("train").exists() {
        bail_input!("{} already holds a train/ folder", out.display());
    }
    (0..spec.classes).into_par_iter().try_for_each(|c| {
        let parts = [
            ("train", 0..spec.per_class),
            ("val", spec.per_class..spec.per_class + spec.val_per_class),
        ];
        for (part, images) in parts {
            if images.is_empty() {
                continue;
            }
            let dir = out.join(part).join(class_folder(c));
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for k in images {
                write_image(&dir, spec, c, k)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::decode_list::decode_files;
    use crate::data::scan::{scan_image_folder, scan_val, DataRoot};

    #[test]
    fn every_encoding_decodes_and_the_tree_scans() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SynthSpec {
            classes: 3,
            per_class: 10,
            val_per_class: 5,
            seed: 2,
        };
        write_photo_tree(dir.path(), &spec).unwrap();
        let root = DataRoot::locate(dir.path()).unwrap();
        let list = scan_image_folder(&root.train).unwrap();
        assert_eq!(list.classes, vec!["class00", "class01", "class02"]);
        assert_eq!(list.samples.len(), 30);
        let val = scan_val(root.val.as_deref().unwrap(), &list.classes).unwrap();
        assert_eq!(val.len(), 15);
        assert_eq!(val[14].label, 2);
        let paths: Vec<_> = list
            .samples
            .iter()
            .chain(&val)
            .map(|s| s.path.clone())
            .collect();
        let gif = paths
            .iter()
            .find(|p| fs::read(p).unwrap().starts_with(b"GIF8"));
        assert!(
            gif.is_some_and(|p| p.extension().unwrap() == "jpg"),
            "a GIF named .jpg"
        );
        let images = decode_files(&paths, 64).unwrap();
        assert_eq!(images.size(), vec![45, 64, 64, 3]);
    }
}
