//! The recipe's transforms as batched tensor ops, run on whatever device holds the batch:
//! `RandomResizedCrop(64, scale=(56/64, 56/64), ratio=(1, 1))`, `RandomHorizontalFlip()`,
//! `ColorJitter(saturation=(0.5, 2), hue=(-0.05, 0.05))`, then `Normalize(mean, std)`.
//! Each op follows torchvision's functional op on float tensors (`resized_crop`, `hflip`,
//! `adjust_saturation`, `adjust_hue`), with the parameters drawn per sample.

use rand::Rng;
use tch::{Device, Kind, Tensor};

use super::decode::SIDE;

/// ImageNet channel statistics of `Normalize`.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The crop side: `round(sqrt(0.875 * 64 * 64))` = 60, so offsets run over 0..=4.
pub const CROP: i64 = 60;
const MAX_OFFSET: i64 = SIDE as i64 - CROP;
pub const SATURATION: (f64, f64) = (0.5, 2.0);
pub const HUE: (f64, f64) = (-0.05, 0.05);

/// Per-sample random parameters of one batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentParams {
    pub top: Vec<i64>,
    pub left: Vec<i64>,
    pub flip: Vec<bool>,
    pub saturation: Vec<f64>,
    pub hue: Vec<f64>,
    /// ColorJitter applies its ops in a random order: saturation before hue, or after.
    pub saturation_first: Vec<bool>,
}

impl AugmentParams {
    /// Draws parameters for `n` samples with the recipe's distributions.
    pub fn sample(n: usize, rng: &mut impl Rng) -> AugmentParams {
        let mut p = AugmentParams {
            top: Vec::with_capacity(n),
            left: Vec::with_capacity(n),
            flip: Vec::with_capacity(n),
            saturation: Vec::with_capacity(n),
            hue: Vec::with_capacity(n),
            saturation_first: Vec::with_capacity(n),
        };
        for _ in 0..n {
            p.top.push(rng.gen_range(0..=MAX_OFFSET));
            p.left.push(rng.gen_range(0..=MAX_OFFSET));
            p.flip.push(rng.gen_bool(0.5));
            p.saturation.push(rng.gen_range(SATURATION.0..SATURATION.1));
            p.hue.push(rng.gen_range(HUE.0..HUE.1));
            p.saturation_first.push(rng.gen_bool(0.5));
        }
        p
    }

    pub fn len(&self) -> usize {
        self.top.len()
    }

    pub fn is_empty(&self) -> bool {
        self.top.is_empty()
    }
}

/// uint8 NHWC images to contiguous float NCHW in [0, 1], as `ToDtype(float32, scale=True)`.
pub fn to_float(images: &Tensor) -> Tensor {
    images
        .permute([0, 3, 1, 2])
        .contiguous()
        .to_kind(Kind::Float)
        .g_mul_scalar_(1.0 / 255.0)
}

/// `Normalize(MEAN, STD)` on float NCHW.
pub fn normalize(x: &Tensor) -> Tensor {
    let stats = |v: [f32; 3]| {
        Tensor::from_slice(&v)
            .view([1, 3, 1, 1])
            .to_device(x.device())
    };
    (x - stats(MEAN)) / stats(STD)
}

/// Applies crop+resize, flip and colour jitter to uint8 NHWC `images` (on any device) and
/// returns float NCHW in [0, 1], not yet normalised.
pub fn augment(images: &Tensor, p: &AugmentParams) -> Tensor {
    let device = images.device();
    let n = p.len() as i64;
    let x = crop_resize(images, &p.top, &p.left);
    let flip = Tensor::from_slice(&p.flip)
        .to_device(device)
        .view([n, 1, 1, 1]);
    let x = x.flip([3]).where_self(&flip, &x);
    color_jitter(&x, p)
}

/// Per-sample `CROP`x`CROP` crops at (top, left), resized back to 64x64 with torchvision's
/// bilinear antialiased resize (`_upsample_bilinear2d_aa`, align_corners=False).
fn crop_resize(images: &Tensor, top: &[i64], left: &[i64]) -> Tensor {
    let device = images.device();
    let n = top.len() as i64;
    let side = SIDE as i64;
    let range = Tensor::arange(CROP, (Kind::Int64, device)).view([1, CROP]);
    let offsets = |v: &[i64]| Tensor::from_slice(v).to_device(device).view([n, 1]);
    let rows = (offsets(top) + &range)
        .view([n, CROP, 1, 1])
        .expand([n, CROP, side, 3], false);
    let cols = (offsets(left) + &range)
        .view([n, 1, CROP, 1])
        .expand([n, CROP, CROP, 3], false);
    let crops = images.gather(1, &rows, false).gather(2, &cols, false);
    to_float(&crops).internal_upsample_bilinear2d_aa([side, side], false, None, None)
}

/// Per-sample column vector of factors, shaped to broadcast over CHW.
fn factors(v: &[f64], device: Device) -> Tensor {
    Tensor::from_slice(v)
        .to_kind(Kind::Float)
        .to_device(device)
        .view([v.len() as i64, 1, 1, 1])
}

/// `adjust_saturation`: blend with the grayscale image, clamp to [0, 1].
pub fn adjust_saturation(x: &Tensor, factor: &Tensor) -> Tensor {
    let gray = grayscale(x);
    let blended: Tensor = x * factor + gray * (1.0 - factor);
    blended.clamp(0.0, 1.0)
}

/// `rgb_to_grayscale` with torchvision's weights.
fn grayscale(x: &Tensor) -> Tensor {
    let c = x.unbind(1);
    (&c[0] * 0.2989 + &c[1] * 0.587 + &c[2] * 0.114).unsqueeze(1)
}

/// `adjust_hue`: to HSV, rotate hue by `shift` (fraction of a turn), back to RGB.
pub fn adjust_hue(x: &Tensor, shift: &Tensor) -> Tensor {
    let hsv = rgb_to_hsv(x).unbind(1);
    let h = (&hsv[0] + shift.view([-1, 1, 1])).remainder(1.0);
    hsv_to_rgb(&h, &hsv[1], &hsv[2])
}

/// torchvision's `_rgb_to_hsv` on NCHW: returns N3HW (h, s, v), h in [0, 1).
fn rgb_to_hsv(x: &Tensor) -> Tensor {
    let c = x.unbind(1);
    let (r, g) = (&c[0], &c[1]);
    let (minc, maxc) = x.aminmax(1, false);
    let eqc = maxc.eq_tensor(&minc);
    let range = &maxc - &minc;
    let ones = maxc.ones_like();
    let s = &range / ones.where_self(&eqc, &maxc);
    let divisor = ones.where_self(&eqc, &range).unsqueeze(1);
    let rgb_c = ((maxc.unsqueeze(1) - x) / divisor).unbind(1);
    let (rc, gc, bc) = (&rgb_c[0], &rgb_c[1], &rgb_c[2]);
    let maxc_neq_r = maxc.not_equal_tensor(r);
    let maxc_eq_g = maxc.eq_tensor(g);
    let hg = (rc + 2.0 - bc) * maxc_eq_g.logical_and(&maxc_neq_r);
    let hr = (bc - gc) * maxc_neq_r.logical_not();
    let hb = (gc + 4.0 - rc) * maxc_neq_r.logical_and(&maxc_eq_g.logical_not());
    let h = ((hr + hg + hb) * (1.0 / 6.0) + 1.0).fmod(1.0);
    Tensor::stack(&[h, s, maxc], 1)
}

/// torchvision's `_hsv_to_rgb`: picks each channel from (v, p, q, t) by the hue sector.
fn hsv_to_rgb(h: &Tensor, s: &Tensor, v: &Tensor) -> Tensor {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = &h6 - &i;
    let i = i.to_kind(Kind::Int64).remainder(6);
    let sxf = s * &f;
    let one_minus_s = 1.0 - s;
    let one_minus_sxf: Tensor = 1.0 - &sxf;
    let q = (one_minus_sxf * v).clamp(0.0, 1.0);
    let t = ((sxf + &one_minus_s) * v).clamp(0.0, 1.0);
    let p = (one_minus_s * v).clamp(0.0, 1.0);
    let vpqt = Tensor::stack(&[v.shallow_clone(), p, q, t], 1);
    // Rows r, g, b; column = hue sector; entry = index into (v, p, q, t).
    let select = Tensor::from_slice(&[0i64, 2, 1, 1, 3, 0, 3, 0, 0, 2, 1, 1, 1, 1, 3, 0, 0, 2])
        .to_device(h.device())
        .view([3, 6]);
    let index = select.index_select(1, &i.flatten(0, -1));
    let (n, hh, ww) = (i.size()[0], i.size()[1], i.size()[2]);
    let index = index.view([3, n, hh, ww]).permute([1, 0, 2, 3]);
    vpqt.gather(1, &index, false)
}

/// `ColorJitter` with saturation and hue only, each sample's two ops in its own order.
fn color_jitter(x: &Tensor, p: &AugmentParams) -> Tensor {
    let device = x.device();
    let mut out = x.empty_like();
    for saturation_first in [true, false] {
        let members: Vec<i64> = (0..p.len())
            .filter(|&i| p.saturation_first[i] == saturation_first)
            .map(|i| i as i64)
            .collect();
        if members.is_empty() {
            continue;
        }
        let pick = |v: &[f64]| members.iter().map(|&i| v[i as usize]).collect::<Vec<_>>();
        let sat = factors(&pick(&p.saturation), device);
        let hue = factors(&pick(&p.hue), device);
        let index = Tensor::from_slice(&members).to_device(device);
        let part = x.index_select(0, &index);
        let part = if saturation_first {
            adjust_hue(&adjust_saturation(&part, &sat), &hue)
        } else {
            adjust_saturation(&adjust_hue(&part, &hue), &sat)
        };
        let _ = out.index_copy_(0, &index, &part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn images(n: i64) -> Tensor {
        Tensor::randint(256, [n, 64, 64, 3], (Kind::Uint8, Device::Cpu))
    }

    fn identity(n: usize) -> AugmentParams {
        AugmentParams {
            top: vec![2; n],
            left: vec![2; n],
            flip: vec![false; n],
            saturation: vec![1.0; n],
            hue: vec![0.0; n],
            saturation_first: vec![true; n],
        }
    }

    #[test]
    fn neutral_colour_params_change_nothing() {
        let x = to_float(&images(3));
        let ones = factors(&[1.0; 3], Device::Cpu);
        let zeros = factors(&[0.0; 3], Device::Cpu);
        let d = (adjust_saturation(&x, &ones) - &x)
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-6, "{d}");
        let d = (adjust_hue(&x, &zeros) - &x).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn hue_half_turn_twice_is_identity_and_gray_is_fixed() {
        let x = to_float(&images(2));
        let half = factors(&[0.5; 2], Device::Cpu);
        let back = adjust_hue(&adjust_hue(&x, &half), &half);
        assert!((back - &x).abs().max().double_value(&[]) < 1e-5);
        // saturation 0 gives the grayscale image in all three channels
        let zero = factors(&[0.0; 2], Device::Cpu);
        let g = adjust_saturation(&x, &zero);
        let c = g.unbind(1);
        assert!((&c[0] - &c[1]).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn crop_offsets_and_flip_select_the_right_pixels() {
        let x = images(2);
        let mut p = identity(2);
        p.top = vec![0, 4];
        p.left = vec![4, 0];
        p.flip = vec![false, true];
        let out = augment(&x, &p);
        assert_eq!(out.size(), vec![2, 3, 64, 64]);
        // A 60->64 resize keeps the corner pixels' values at the corners (up to rounding).
        let f = to_float(&x);
        let corner = |t: &Tensor, n: i64, y: i64, xx: i64| t.double_value(&[n, 0, y, xx]);
        assert!((corner(&out, 0, 0, 0) - corner(&f, 0, 0, 4)).abs() < 1e-6);
        // second sample flipped: its top-left shows the crop's top-right, pixel (4, 59)
        assert!((corner(&out, 1, 0, 0) - corner(&f, 1, 4, 59)).abs() < 1e-6);
    }

    #[test]
    fn sampled_params_stay_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = AugmentParams::sample(500, &mut rng);
        assert!(p.top.iter().chain(&p.left).all(|&o| (0..=4).contains(&o)));
        assert!((0..=4).all(|o| p.top.contains(&o)));
        assert!(p.saturation.iter().all(|&s| (0.5..2.0).contains(&s)));
        assert!(p.hue.iter().all(|&h| (-0.05..0.05).contains(&h)));
        let flips = p.flip.iter().filter(|&&f| f).count();
        assert!((200..300).contains(&flips), "{flips}");
    }
}
