//! Photos of any size into a square of `side` pixels the way torchvision's ImageNet pipeline
//! does it on PIL images: `Resize(side)` (the shorter side to `side`, the aspect ratio kept)
//! then `CenterCrop(side)`. The resize is Pillow's bilinear resampling (`Image.resize(size,
//! BILINEAR)`, antialiased when shrinking) with its integer arithmetic: weights in 22-bit fixed
//! point, a horizontal pass rounded to 8 bits before the vertical one. Written here because no
//! crate resamples with Pillow's rounding (the `image` crate's triangle filter computes in f32,
//! in another pass order), and the cached pixels are to equal what torchvision hands PyTorch.

/// Fractional bits of Pillow's fixed-point weights for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output pixel's taps: the first input index and the integer weights from there.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// Pillow's bilinear (triangle) filter, support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// The taps of each of `out` pixels resampled from `input` (Pillow's `precompute_coeffs` for
/// the bilinear filter): the filter widens by the scale when shrinking, which antialiases.
fn taps(input: usize, out: usize) -> Vec<Taps> {
    let scale = input as f64 / out as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    (0..out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // C's (int) casts: truncation toward zero, as `as` does.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let raw: Vec<f64> = (first..end)
                .map(|x| triangle((x as f64 - center + 0.5) * (1.0 / filter_scale)))
                .collect();
            let total: f64 = raw.iter().sum();
            let fixed = |w: f64| {
                let w = if total != 0.0 { w / total } else { w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
            };
            Taps {
                first,
                weights: raw.into_iter().map(fixed).collect(),
            }
        })
        .collect()
}

/// A fixed-point sum back to a byte, rounding included (the sum starts at one half).
fn clip8(sum: i32) -> u8 {
    if sum <= 0 {
        0
    } else {
        (sum >> PRECISION_BITS).min(255) as u8
    }
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resamples RGB `pixels` (`width` x `height`, rows of interleaved bytes) to `out_w` x `out_h`.
pub fn resize_bilinear(
    pixels: &[u8],
    (width, height): (usize, usize),
    (out_w, out_h): (usize, usize),
) -> Vec<u8> {
    let mut rows = pixels.to_vec();
    let mut w = width;
    if out_w != width {
        let taps = taps(width, out_w);
        let mut out = vec![0u8; out_w * height * 3];
        for y in 0..height {
            let line = &rows[y * w * 3..(y + 1) * w * 3];
            for (x, t) in taps.iter().enumerate() {
                for c in 0..3 {
                    let sum = t.weights.iter().enumerate().fold(HALF, |acc, (k, &wt)| {
                        acc + i32::from(line[(t.first + k) * 3 + c]) * wt
                    });
                    out[(y * out_w + x) * 3 + c] = clip8(sum);
                }
            }
        }
        rows = out;
        w = out_w;
    }
    if out_h != height {
        let taps = taps(height, out_h);
        let mut out = vec![0u8; w * out_h * 3];
        for (y, t) in taps.iter().enumerate() {
            for i in 0..w * 3 {
                let sum = t.weights.iter().enumerate().fold(HALF, |acc, (k, &wt)| {
                    acc + i32::from(rows[(t.first + k) * w * 3 + i]) * wt
                });
                out[y * w * 3 + i] = clip8(sum);
            }
        }
        rows = out;
    }
    rows
}

/// torchvision's `Resize(side)` then `CenterCrop(side)` of an RGB image: the shorter side
/// scaled to `side` (the longer one to `int(side * long / short)`), then the centred square,
/// its offset `int(round((size - side) / 2))` with Python's rounding (half to even).
pub fn resize_center_crop(pixels: &[u8], (width, height): (usize, usize), side: usize) -> Vec<u8> {
    let (out_w, out_h) = if width <= height {
        (side, side * height / width)
    } else {
        (side * width / height, side)
    };
    let resized = resize_bilinear(pixels, (width, height), (out_w, out_h));
    let offset = |size: usize| ((size - side) as f64 / 2.0).round_ties_even() as usize;
    let (top, left) = (offset(out_h), offset(out_w));
    let mut out = Vec::with_capacity(side * side * 3);
    for y in top..top + side {
        let start = (y * out_w + left) * 3;
        out.extend_from_slice(&resized[start..start + side * 3]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_the_same_size_is_the_identity() {
        for (input, out) in [(500, 64), (64, 224), (375, 64), (7, 3)] {
            for t in taps(input, out) {
                let sum: i32 = t.weights.iter().sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i32);
            }
        }
        let pixels: Vec<u8> = (0..5 * 4 * 3).map(|v| (v * 7 % 256) as u8).collect();
        assert_eq!(resize_bilinear(&pixels, (5, 4), (5, 4)), pixels);
        let t = taps(9, 9);
        assert!(t
            .iter()
            .enumerate()
            .all(|(i, t)| t.first == i && t.weights[0] == 1 << 22));
    }

    #[test]
    fn the_crop_is_centred_with_pythons_rounding() {
        // Columns numbered 0..width: the shorter side is already `side`, so nothing resamples
        // and the crop shows which columns it took.
        let columns = |width: usize| -> Vec<u8> {
            (0..4)
                .flat_map(|_| (0..width).flat_map(|x| [x as u8; 3]))
                .collect()
        };
        let first_column = |out: &[u8]| out[0];
        assert_eq!(first_column(&resize_center_crop(&columns(8), (8, 4), 4)), 2);
        // (9 - 4) / 2 = 2.5 rounds to 2, half to even, as Python's round
        assert_eq!(first_column(&resize_center_crop(&columns(9), (9, 4), 4)), 2);
        assert_eq!(
            first_column(&resize_center_crop(&columns(11), (11, 4), 4)),
            4
        );
        let flat = vec![77u8; 30 * 20 * 3];
        let out = resize_center_crop(&flat, (30, 20), 9);
        assert_eq!(out.len(), 9 * 9 * 3);
        assert!(out.iter().all(|&v| v == 77));
    }
}
