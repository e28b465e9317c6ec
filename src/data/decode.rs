//! Decoding one image file into square RGB bytes, with the pixels PIL's
//! `Image.open(p).convert("RGB")` gives torchvision: JPEGs through libjpeg-turbo's decoder
//! (mozjpeg, same IDCT and upsampling as PIL's), other formats through the `image` crate, each
//! recognised by its content, not its name. Images of another size go through `Resize` +
//! `CenterCrop` (`resize`).

use std::fs;
use std::io::Cursor;
use std::os::raw::c_int;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use image::{DynamicImage, RgbImage};
use mozjpeg::{ColorSpace, Marker};
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, JWRN_JPEG_EOF};

use super::resize::resize_center_crop;

/// The recipe's side, Tiny ImageNet's own: images are stored at least this large.
pub const SIDE: usize = 64;

/// The most pixels an image may have: what PIL refuses as a decompression bomb (a small file
/// that decodes to gigabytes), twice its `Image.MAX_IMAGE_PIXELS` of 89 478 485.
/// `--max-image-pixels` sets it.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;
static MAX_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PIXELS);

/// Sets the pixel cap of every later decode (one value for the whole process, as in PIL).
pub fn set_max_pixels(pixels: u64) {
    MAX_PIXELS.store(pixels, Ordering::Relaxed);
}

/// The pixel cap decodes apply now.
pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(Ordering::Relaxed)
}

fn check_pixels(width: u64, height: u64) -> Result<()> {
    let max = max_pixels();
    if width.saturating_mul(height) > max {
        bail!(
            "{width}x{height} is more than {max} pixels (a decompression bomb?); pass \
             --max-image-pixels to allow it"
        );
    }
    Ok(())
}

/// The bytes of the image file `path`. Anything but a regular file (a pipe, a socket, a
/// device) is refused unread: reading a pipe would wait forever.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    Ok(fs::read(path)?)
}

/// A decoded RGB image, HWC bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Decodes `bytes` to RGB. Grayscale is replicated to three channels, alpha is dropped, CMYK is
/// converted the way PIL converts it.
pub fn decode_rgb(bytes: &[u8]) -> Result<Rgb> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        decode_jpeg(bytes)
    } else {
        let reader = || image::ImageReader::new(Cursor::new(bytes)).with_guessed_format();
        let (width, height) = reader()?.into_dimensions()?;
        check_pixels(u64::from(width), u64::from(height))?;
        // The cap above is the limit; the decoder's own default one would be a second.
        let mut decoder = reader()?;
        decoder.no_limits();
        let rgb = pil_rgb8(decoder.decode()?);
        Ok(Rgb {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            pixels: rgb.into_raw(),
        })
    }
}

/// `img` in 8-bit RGB as PIL's `convert("RGB")` makes it: 16-bit samples keep their high byte
/// (PIL reads 16-bit RGB and gray + alpha PNGs so), except 16-bit grayscale, which PIL opens as
/// mode "I;16" and whose conversion clips each value at 255 instead of scaling it.
fn pil_rgb8(img: DynamicImage) -> RgbImage {
    let high = |v: u16| (v >> 8) as u8;
    let gray = |img: &DynamicImage, value: &dyn Fn(u16) -> u8| {
        let luma = img.to_luma_alpha16();
        let pixels = luma.pixels().flat_map(|p| [value(p.0[0]); 3]).collect();
        RgbImage::from_raw(img.width(), img.height(), pixels).expect("3 bytes a pixel")
    };
    match img {
        DynamicImage::ImageLuma16(_) => gray(&img, &|v| v.min(255) as u8),
        DynamicImage::ImageLumaA16(_) => gray(&img, &high),
        DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_) => {
            let rgb = img.to_rgb16();
            let pixels = rgb.as_raw().iter().map(|&v| high(v)).collect();
            RgbImage::from_raw(img.width(), img.height(), pixels).expect("3 bytes a pixel")
        }
        other => other.to_rgb8(),
    }
}

/// Decodes `bytes` into `dst` (`side` x `side` x 3). Returns whether the image had another
/// size: then it was resized, its shorter side to `side`, and centre-cropped, as torchvision's
/// `Resize(side)` + `CenterCrop(side)` do it on PIL images.
pub fn decode_into(bytes: &[u8], dst: &mut [u8], side: usize) -> Result<bool> {
    let rgb = decode_rgb(bytes)?;
    if rgb.width == side && rgb.height == side {
        dst.copy_from_slice(&rgb.pixels);
        return Ok(false);
    }
    if rgb.width == 0 || rgb.height == 0 {
        bail!("image has no pixels ({}x{})", rgb.width, rgb.height);
    }
    anyhow::ensure!(
        rgb.pixels.len() == rgb.width * rgb.height * 3,
        "decoder returned a short pixel buffer"
    );
    dst.copy_from_slice(&resize_center_crop(
        &rgb.pixels,
        (rgb.width, rgb.height),
        side,
    ));
    Ok(true)
}

/// Width and height of the image file `path`, from its header.
pub fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    Ok(image::ImageReader::open(path)?
        .with_guessed_format()?
        .into_dimensions()?)
}

fn decode_jpeg(bytes: &[u8]) -> Result<Rgb> {
    // libjpeg reports fatal errors through `error_exit`, which unwinds here as a panic payload.
    let decoded = panic::catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Rgb> {
        let decompress = mozjpeg::decompress::DecompressBuilder::new()
            .with_err(error_manager())
            .with_markers(&[Marker::APP(14)])
            .from_mem(bytes)?;
        let (width, height) = decompress.size();
        check_pixels(width as u64, height as u64).map_err(std::io::Error::other)?;
        match decompress.color_space() {
            ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
                // Photoshop-style files (Adobe APP14 marker) store CMYK inverted; PIL reads
                // them as "CMYK;I".
                let inverted = decompress
                    .markers()
                    .any(|m| m.marker == Marker::APP(14) && m.data.starts_with(b"Adobe"));
                let mut started = decompress.to_colorspace(ColorSpace::JCS_CMYK)?;
                let cmyk = started.read_scanlines::<[u8; 4]>()?;
                started.finish()?;
                let pixels = cmyk
                    .iter()
                    .flat_map(|&px| cmyk_to_rgb(if inverted { px.map(|v| 255 - v) } else { px }))
                    .collect();
                Ok(Rgb {
                    width,
                    height,
                    pixels,
                })
            }
            _ => {
                let mut started = decompress.rgb()?;
                let pixels = started.read_scanlines::<u8>()?;
                started.finish()?;
                Ok(Rgb {
                    width,
                    height,
                    pixels,
                })
            }
        }
    }));
    match decoded {
        Ok(Ok(rgb)) if rgb.pixels.len() == rgb.width * rgb.height * 3 => Ok(rgb),
        Ok(Ok(_)) => bail!("JPEG decoder returned a short pixel buffer"),
        Ok(Err(e)) => Err(e).context("cannot decode JPEG"),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown libjpeg failure".to_string());
            bail!("cannot decode JPEG: {msg}")
        }
    }
}

/// PIL's CMYK to RGB conversion: each channel is `(255 - k) * (255 - c) / 255`, rounded.
fn cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let nk = 255 - i32::from(k);
    let channel = |v: u8| {
        let t = i32::from(v) * nk + 128;
        (nk - (((t >> 8) + t) >> 8)).clamp(0, 255) as u8
    };
    [channel(c), channel(m), channel(y)]
}

fn error_manager() -> jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills every field of a zeroed error manager.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

fn message(cinfo: &mut jpeg_common_struct) -> String {
    // SAFETY: cinfo.err is the manager installed above; libjpeg messages fit JMSG_LENGTH_MAX (200).
    unsafe {
        let err = &*cinfo.err;
        let Some(format) = err.format_message else {
            return format!("libjpeg message {}", err.msg_code);
        };
        let format: unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut u8) =
            std::mem::transmute(format);
        let mut buffer = [0u8; 200];
        format(cinfo, buffer.as_mut_ptr());
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    }
}

extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    let msg = message(cinfo);
    // resume_unwind skips the panic hook: nothing is printed, decode_jpeg turns it into an error.
    panic::resume_unwind(Box::new(msg));
}

extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // PIL refuses a JPEG whose data ends early ("image file is truncated"); libjpeg only warns
    // and pads with gray. Other warnings, PIL ignores too.
    // SAFETY: cinfo.err is the manager installed above.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == JWRN_JPEG_EOF as c_int {
        panic::resume_unwind(Box::new("image file is truncated".to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_jpeg(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode(rgb, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn gradient(w: usize, h: usize) -> Vec<u8> {
        (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn decodes_jpeg_and_png_to_rgb64() {
        let jpeg = encode_jpeg(&gradient(64, 64), 64, 64);
        let mut dst = vec![0u8; 64 * 64 * 3];
        assert!(!decode_into(&jpeg, &mut dst, 64).unwrap());
        assert!(dst.iter().any(|&v| v != 0));

        let mut png = Vec::new();
        let rgba: Vec<u8> = (0..64 * 64 * 4).map(|i| (i % 256) as u8).collect();
        image::RgbaImage::from_raw(64, 64, rgba.clone())
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        decode_into(&png, &mut dst, 64).unwrap();
        // alpha dropped, colour kept exactly
        assert_eq!(
            &dst[..6],
            &[rgba[0], rgba[1], rgba[2], rgba[4], rgba[5], rgba[6]]
        );
    }

    #[test]
    fn other_sizes_are_resized_and_cropped() {
        let jpeg = encode_jpeg(&gradient(128, 96), 128, 96);
        let mut dst = vec![0u8; 80 * 80 * 3];
        assert!(decode_into(&jpeg, &mut dst, 80).unwrap());
        let rgb = decode_rgb(&jpeg).unwrap();
        assert_eq!(dst, resize_center_crop(&rgb.pixels, (128, 96), 80));
    }

    #[test]
    fn sixteen_bit_samples_read_as_pil_reads_them() {
        let values: [u16; 4] = [0, 255, 256, 65535];
        let png = |img: DynamicImage| {
            let mut bytes = Vec::new();
            img.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
            decode_rgb(&bytes).unwrap().pixels
        };
        let gray = image::ImageBuffer::from_raw(4, 1, values.to_vec()).unwrap();
        let red = |rgb: Vec<u8>| rgb.chunks(3).map(|p| p[0]).collect::<Vec<u8>>();
        // "I;16": clipped at 255
        assert_eq!(
            red(png(DynamicImage::ImageLuma16(gray))),
            [0, 255, 255, 255]
        );
        let rgb: Vec<u16> = values.iter().flat_map(|&v| [v; 3]).collect();
        let rgb = image::ImageBuffer::from_raw(4, 1, rgb).unwrap();
        // "RGB;16B": the high byte
        assert_eq!(red(png(DynamicImage::ImageRgb16(rgb))), [0, 0, 1, 255]);
    }

    #[test]
    fn truncated_and_garbage_jpegs_are_errors() {
        let jpeg = encode_jpeg(&gradient(64, 64), 64, 64);
        let err = decode_rgb(&jpeg[..jpeg.len() / 2]).unwrap_err();
        assert!(format!("{err:#}").contains("truncated"), "{err:#}");
        let mut garbage = vec![0xFF, 0xD8, 0xFF];
        garbage.extend_from_slice(&[0x12; 100]);
        assert!(decode_rgb(&garbage).is_err());
        assert!(decode_rgb(b"not an image at all").is_err());
        assert!(decode_rgb(b"").is_err());
    }

    #[test]
    fn cmyk_conversion_matches_pil_formula() {
        assert_eq!(cmyk_to_rgb([0, 0, 0, 0]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255, 0]), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb([0, 0, 0, 255]), [0, 0, 0]);
        // nk = 155; 155 - round(100 * 155 / 255) = 155 - 61 = 94
        assert_eq!(cmyk_to_rgb([100, 0, 255, 100]), [94, 155, 0]);
    }
}
