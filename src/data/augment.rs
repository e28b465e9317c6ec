//! The recipe's transforms as batched tensor ops, run on whatever device holds the batch:
//! `RandomResizedCrop(64, scale=(0.875, 0.875), ratio=(1, 1))` (on images stored larger than
//! 64, the same share of their area), `RandomHorizontalFlip()`,
//! `ColorJitter(saturation=(0.5, 2), hue=(-0.05, 0.05))`, then `Normalize(mean, std)`.
//! Each op follows torchvision's functional op on float tensors (`resized_crop`, `hflip`,
//! `adjust_saturation`, `adjust_hue`), with the parameters drawn per sample (`augment_params`).

use tch::{Device, Kind, Tensor};

use super::augment_params::{crop_side, max_offset, AugmentParams, ParamTensors};

/// ImageNet channel statistics of `Normalize`.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// uint8 NHWC images to contiguous float NCHW in [0, 1], as `ToDtype(float32, scale=True)`.
pub fn to_float(images: &Tensor) -> Tensor {
    images
        .permute([0, 3, 1, 2])
        .contiguous()
        .to_kind(Kind::Float)
        .g_mul_scalar_(1.0 / 255.0)
}

/// The transforms' constant tensors on one device, made once: a tensor built from host values
/// per batch would be a blocking copy, a wait for the device, in every batch.
pub struct Constants {
    mean: Tensor,
    std: Tensor,
    /// Per channel (r, g, b) of the hue trapezoids: F = clamp(base + slope * |6h - center|).
    hue_center: Tensor,
    hue_base: Tensor,
    hue_slope: Tensor,
}

impl Constants {
    pub fn on(device: Device) -> Constants {
        let per_channel = |v: [f32; 3]| Tensor::from_slice(&v).to_device(device).view([1, 3, 1, 1]);
        Constants {
            mean: per_channel(MEAN),
            std: per_channel(STD),
            // F_r = clamp(|6h - 3| - 1), F_g = clamp(2 - |6h - 2|), F_b = clamp(2 - |6h - 4|).
            hue_center: per_channel([3.0, 2.0, 4.0]),
            hue_base: per_channel([-1.0, 2.0, 2.0]),
            hue_slope: per_channel([1.0, -1.0, -1.0]),
        }
    }
}

/// `Normalize(MEAN, STD)` on float NCHW, with torchvision's arithmetic (subtract, then
/// divide), written with channels-last strides: the layout the model's convolutions run in.
pub fn normalize_channels_last(x: &Tensor, c: &Constants) -> Tensor {
    let size = x.size();
    let (ch, h, w) = (size[1], size[2], size[3]);
    let out = Tensor::empty_strided(&size, [h * w * ch, 1, w * ch, ch], (x.kind(), x.device()));
    let mut out = x.sub_out(&out, &c.mean);
    let _ = out.g_div_(&c.std);
    out
}

/// `side` x `side` images from float NCHW ones, as torchvision's `Resize` with antialiasing
/// does on float tensors: enlarging, its filter is plain bilinear interpolation (the plain
/// kernel is 3x faster and equal to 1e-7); shrinking, the antialiased kernel.
pub fn resize(x: &Tensor, side: i64) -> Tensor {
    let size = x.size();
    if size[2] == side && size[3] == side {
        return x.shallow_clone();
    }
    if side >= size[2] && side >= size[3] {
        x.upsample_bilinear2d([side, side], false, None, None)
    } else {
        x.internal_upsample_bilinear2d_aa([side, side], false, None, None)
    }
}

/// Applies crop+resize to `side` x `side`, flip and colour jitter to uint8 NHWC `images` (on
/// the device of `t` and `c`) and returns float NCHW in [0, 1], not yet normalised. `p` says
/// which samples take which order of the colour ops.
pub fn augment(
    images: &Tensor,
    p: &AugmentParams,
    t: &ParamTensors,
    c: &Constants,
    side: i64,
) -> Tensor {
    let crops = crop_flip(images, t);
    // The pixels stay in 0..255: the resize is linear and both colour ops are
    // scale-equivariant, so ToDtype's 1/255 rides on the saturation factors instead of a pass
    // of its own.
    let x = resize(&crops.to_kind(Kind::Float), side);
    color_jitter(&x, p, t, c, 1.0 / 255.0)
}

/// Per-sample square crops (`crop_side`) at (top, left) of uint8 NHWC images, mirrored where
/// `flip` says, as uint8 NCHW: one indexing op into the view of every window of the batch and
/// of its mirror image. Flipping before the resize equals flipping after it: the resize's
/// sampling grid is mirror-symmetric. Cropping a mirror image at `max_offset - left` mirrors
/// the crop at left.
fn crop_flip(images: &Tensor, t: &ParamTensors) -> Tensor {
    let n = t.flip.size()[0];
    let side = images.size()[1];
    let crop = crop_side(side);
    let left = (t.left.neg() + max_offset(side)).where_self(&t.flip.to_kind(Kind::Bool), &t.left);
    let both = Tensor::stack(&[images.shallow_clone(), images.flip([2])], 0);
    let windows = both.unfold(2, crop, 1).unfold(3, crop, 1); // mirror, N, top, left, C, H, W
    let rows = Tensor::arange(n, (Kind::Int64, images.device()));
    let index = |t: &Tensor| Some(t.shallow_clone());
    // Contiguous NCHW: the indexing result keeps the windows' strides, which would send the
    // resize to its channels-last kernel, slow for three channels.
    windows
        .index(&[index(&t.flip), Some(rows), index(&t.top), Some(left)])
        .contiguous()
}

/// Per-sample factors, shaped to broadcast over CHW.
fn column(v: &Tensor) -> Tensor {
    v.view([-1, 1, 1, 1])
}

/// `adjust_saturation` of `x * scale`, written into `out`.
fn saturate_into(x: &Tensor, factor: &Tensor, scale: f64, out: &Tensor) {
    let c = x.unbind(1);
    let gray = (&c[0] * 0.2989 + &c[1] * 0.587 + &c[2] * 0.114).unsqueeze(1);
    let keep: Tensor = (1.0 - factor) * scale;
    let blend = (gray * keep).addcmul(x, &(factor * scale));
    let _ = blend.clamp_out(out, 0.0, 1.0);
}

/// `adjust_hue` written into `out`, in closed form rather than through a full HSV round trip:
/// with M = max(r, g, b) and m = min(r, g, b) (which the rotation keeps), each output channel
/// is m + (M - m) * F_c(6h'), F_c the trapezoid of torchvision's sector table
/// (`_hsv_to_rgb`). Same values as torchvision's to 1e-6, in half the passes over memory.
/// Scale-equivariant: `x * k` gives `out * k`.
fn rotate_hue_into(x: &Tensor, shift: &Tensor, c: &Constants, out: &Tensor) {
    let ch = x.unbind(1);
    let (r, g, b) = (&ch[0], &ch[1], &ch[2]);
    let max = r.maximum(g).maximum(b);
    let min = r.minimum(g).minimum(b);
    let range = &max - &min;
    // torchvision's hue sectors: red is the maximum, else green, else blue.
    let is_r = max.eq_tensor(r);
    let is_g = max.eq_tensor(g).logical_and_(&is_r.logical_not());
    let is_b = is_r.logical_or(&is_g).logical_not_();
    let numerator = (g - b) * &is_r + (b - r) * &is_g + (r - g) * &is_b;
    let sector_start = is_g * 2.0 + is_b * 4.0;
    // A gray pixel has range 0 and no hue; any finite value will do, the range zeroes it.
    let h6 = numerator / range.clamp_min(1e-12) + sector_start + shift.view([-1, 1, 1]) * 6.0;
    let h6 = h6.remainder(6.0).unsqueeze(1);
    let mut distance = h6 - &c.hue_center;
    let _ = distance.abs_();
    let mut wave = c.hue_base.addcmul(&distance, &c.hue_slope);
    let _ = wave.clamp_(0.0, 1.0);
    let _ = min
        .unsqueeze(1)
        .addcmul_out(out, &range.unsqueeze(1), &wave);
}

/// `ColorJitter` with saturation and hue only, on `x * scale`, each sample's two ops in its own
/// order. Samples of one order run together, each group's last op writing straight into its
/// rows of the output: as slices when the batch lists the groups contiguously (the loader draws
/// its batches so), through gathered copies otherwise.
fn color_jitter(
    x: &Tensor,
    p: &AugmentParams,
    t: &ParamTensors,
    c: &Constants,
    scale: f64,
) -> Tensor {
    let out = x.empty_like();
    for saturation_first in [true, false] {
        let members: Vec<usize> = (0..p.len())
            .filter(|&i| p.saturation_first[i] == saturation_first)
            .collect();
        let Some(&first) = members.first() else {
            continue;
        };
        let contiguous = members.windows(2).all(|w| w[1] == w[0] + 1);
        // Only a batch that is not grouped needs an index tensor, a copy to the device.
        let rows = (!contiguous).then(|| {
            let rows: Vec<i64> = members.iter().map(|&i| i as i64).collect();
            Tensor::from_slice(&rows).to_device(x.device())
        });
        let pick = |v: &Tensor| match &rows {
            None => v.narrow(0, first as i64, members.len() as i64),
            Some(rows) => v.index_select(0, rows),
        };
        let (part, target) = (pick(x), pick(&out));
        let (sat, hue) = (column(&pick(&t.saturation)), column(&pick(&t.hue)));
        if saturation_first {
            let saturated = part.empty_like();
            saturate_into(&part, &sat, scale, &saturated);
            rotate_hue_into(&saturated, &hue, c, &target);
        } else {
            let rotated = part.empty_like();
            rotate_hue_into(&part, &hue, c, &rotated);
            saturate_into(&rotated, &sat, scale, &target);
        }
        if let Some(rows) = &rows {
            let _ = out.shallow_clone().index_copy_(0, rows, &target);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The recipe's 64 pixels take no resize at all (the very tensor comes back, so its values
    /// are the recipe's bit for bit); any other size is resampled, enlarged or shrunk.
    #[test]
    fn only_another_size_than_the_images_goes_through_a_resize() {
        let _generator = crate::test_generator::lock();
        let x = Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let same = resize(&x, 64);
        assert_eq!(same.data_ptr(), x.data_ptr(), "64 pixels were resampled");
        for side in [48, 96, 224] {
            let other = resize(&x, side);
            assert_eq!(other.size(), vec![2, 3, side, side]);
            assert_ne!(other.data_ptr(), x.data_ptr());
        }
    }
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

    /// `adjust_saturation`: blend with the grayscale image (torchvision's weights), clamp to [0, 1].
    fn adjust_saturation(x: &Tensor, factor: &Tensor) -> Tensor {
        let out = x.empty_like();
        saturate_into(x, &column(factor), 1.0, &out);
        out
    }

    /// `adjust_hue`: rotate the HSV hue by `shift` (fraction of a turn, one per sample) keeping
    /// saturation and value.
    fn adjust_hue(x: &Tensor, shift: &Tensor, c: &Constants) -> Tensor {
        let out = x.empty_like();
        rotate_hue_into(x, &column(shift), c, &out);
        out
    }

    fn full(n: i64, v: f64) -> Tensor {
        Tensor::full([n], v, (Kind::Float, Device::Cpu))
    }

    fn augment_on_cpu(x: &Tensor, p: &AugmentParams) -> Tensor {
        let c = Constants::on(Device::Cpu);
        augment(x, p, &ParamTensors::new(p, Device::Cpu), &c, 64)
    }

    #[test]
    fn neutral_colour_params_change_nothing() {
        let _generator = crate::test_generator::lock();
        let x = to_float(&images(3));
        let c = Constants::on(Device::Cpu);
        let d = (adjust_saturation(&x, &full(3, 1.0)) - &x)
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-6, "{d}");
        let d = (adjust_hue(&x, &full(3, 0.0), &c) - &x)
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn hue_half_turn_twice_is_identity_and_gray_is_fixed() {
        let _generator = crate::test_generator::lock();
        let x = to_float(&images(2));
        let c = Constants::on(Device::Cpu);
        let half = full(2, 0.5);
        let back = adjust_hue(&adjust_hue(&x, &half, &c), &half, &c);
        assert!((back - &x).abs().max().double_value(&[]) < 1e-5);
        // saturation 0 gives the grayscale image in all three channels
        let zero = full(2, 0.0);
        let g = adjust_saturation(&x, &zero);
        let c = g.unbind(1);
        assert!((&c[0] - &c[1]).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn crop_offsets_and_flip_select_the_right_pixels() {
        let _generator = crate::test_generator::lock();
        let x = images(2);
        let mut p = identity(2);
        p.top = vec![0, 4];
        p.left = vec![4, 0];
        p.flip = vec![false, true];
        let out = augment_on_cpu(&x, &p);
        assert_eq!(out.size(), vec![2, 3, 64, 64]);
        // A 60->64 resize keeps the corner pixels' values at the corners (up to rounding).
        let f = to_float(&x);
        let corner = |t: &Tensor, n: i64, y: i64, xx: i64| t.double_value(&[n, 0, y, xx]);
        assert!((corner(&out, 0, 0, 0) - corner(&f, 0, 0, 4)).abs() < 1e-6);
        // second sample flipped: its top-left shows the crop's top-right, pixel (4, 59)
        assert!((corner(&out, 1, 0, 0) - corner(&f, 1, 4, 59)).abs() < 1e-6);
    }

    /// A batch listing its colour-op groups contiguously (as the loader draws them) and one
    /// that does not are augmented alike, sample for sample.
    #[test]
    fn grouped_and_interleaved_batches_agree() {
        let _generator = crate::test_generator::lock();
        let x = images(6);
        let p = AugmentParams::sample(6, 64, &mut ChaCha8Rng::seed_from_u64(3));
        let order = p.grouped_order();
        let grouped = augment_on_cpu(
            &x.index_select(
                0,
                &Tensor::from_slice(&order.iter().map(|&i| i as i64).collect::<Vec<_>>()),
            ),
            &p.select(&order),
        );
        let interleaved = augment_on_cpu(&x, &p);
        for (pos, &i) in order.iter().enumerate() {
            let d = (grouped.get(pos as i64) - interleaved.get(i as i64))
                .abs()
                .max()
                .double_value(&[]);
            assert!(d < 1e-6, "sample {i}: {d}");
        }
    }
}
