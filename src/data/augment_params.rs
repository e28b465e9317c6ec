//! The per-sample random parameters of the recipe's transforms: their distributions
//! (`RandomResizedCrop`'s offsets, `RandomHorizontalFlip`, `ColorJitter`'s factors and order),
//! drawn for a batch, and packed into the one host matrix the loader copies to the device,
//! where `augment` reads them as tensors.

use rand::Rng;
use tch::{Device, Kind, Tensor};

/// Share of the image's area the random crop keeps.
const CROP_AREA: f64 = 0.875;

/// The crop side on images of `side`: `round(sqrt(0.875 * side * side))`, 60 for the recipe's
/// 64, so that offsets run over 0..=4 there.
pub fn crop_side(side: i64) -> i64 {
    (CROP_AREA * (side * side) as f64).sqrt().round() as i64
}

/// The largest crop offset on images of `side`.
pub fn max_offset(side: i64) -> i64 {
    side - crop_side(side)
}

/// `ColorJitter`'s ranges: the saturation factor, the hue shift (a fraction of a turn).
pub const SATURATION: (f64, f64) = (0.5, 2.0);
pub const HUE: (f64, f64) = (-0.05, 0.05);

/// Declares the per-sample parameters of the recipe's transforms, one line each: name, type
/// (`i64`, `bool` or `f64`) and how one sample's value is drawn from `rng`, in draw order.
/// Everything that carries them follows from the list: the struct (also the JSON of `inspect
/// augment`), drawing a batch's, selecting rows, packing them into the one host matrix the
/// loader copies to the device, and the device tensors `augment` reads. A new augmentation
/// adds its line here and its op in `augment`.
macro_rules! augment_params {
    ($($name:ident: $ty:ty = |$rng:ident, $max_offset:ident| $draw:expr,)+) => {
        /// Per-sample random parameters of one batch.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct AugmentParams {
            $(pub $name: Vec<$ty>,)+
        }

        /// A batch's drawn parameters as tensors on the device that augments it: int64 for
        /// offsets and switches, float32 for factors. Each op reads the ones it needs.
        pub struct ParamTensors {
            $(pub $name: Tensor,)+
        }

        /// Rows of `AugmentParams::pack`'s matrix: the gather index, then one per parameter.
        pub const PACKED_ROWS: usize = 1 + [$(stringify!($name)),+].len();

        impl AugmentParams {
            /// Draws parameters for `n` samples of images of `side` with the recipe's
            /// distributions.
            pub fn sample(n: usize, side: i64, rng: &mut impl Rng) -> AugmentParams {
                let mut p = AugmentParams {
                    $($name: Vec::with_capacity(n),)+
                };
                for _ in 0..n {
                    $(p.$name.push({
                        let $rng = &mut *rng;
                        #[allow(unused_variables)]
                        let $max_offset = max_offset(side);
                        $draw
                    });)+
                }
                p
            }

            /// The same parameters for the samples `rows`, in that order.
            pub fn select(&self, rows: &[usize]) -> AugmentParams {
                AugmentParams {
                    $($name: rows.iter().map(|&i| self.$name[i]).collect(),)+
                }
            }

            /// The rows `rows` to gather and these parameters as one host matrix (f64,
            /// `PACKED_ROWS` x n), so that one copy brings a batch's to the device; f64 holds
            /// every index exactly.
            pub fn pack(&self, rows: &[usize]) -> Vec<f64> {
                let mut m = Vec::with_capacity(PACKED_ROWS * rows.len());
                m.extend(rows.iter().map(|&r| r as f64));
                $(m.extend(self.$name.iter().map(|&v| Packed::packed(v)));)+
                m
            }
        }

        impl ParamTensors {
            /// Splits a packed matrix (see `AugmentParams::pack`), already on the device, into
            /// the gather index and the parameters.
            pub fn unpack(packed: &Tensor) -> (Tensor, ParamTensors) {
                let mut row = 0;
                let mut next = |kind: Kind| {
                    row += 1;
                    packed.get(row).to_kind(kind)
                };
                let params = ParamTensors {
                    $($name: next(<$ty as Packed>::KIND),)+
                };
                (packed.get(0).to_kind(Kind::Int64), params)
            }
        }
    };
}

augment_params! {
    top: i64 = |rng, max_offset| rng.gen_range(0..=max_offset),
    left: i64 = |rng, max_offset| rng.gen_range(0..=max_offset),
    flip: bool = |rng, max_offset| rng.gen_bool(0.5),
    saturation: f64 = |rng, max_offset| rng.gen_range(SATURATION.0..SATURATION.1),
    hue: f64 = |rng, max_offset| rng.gen_range(HUE.0..HUE.1),
    // ColorJitter applies its ops in a random order: saturation before hue, or after.
    saturation_first: bool = |rng, max_offset| rng.gen_bool(0.5),
}

/// A parameter's value in the packed matrix, and its tensor type on the device.
trait Packed: Copy {
    const KIND: Kind;
    fn packed(self) -> f64;
}

impl Packed for i64 {
    const KIND: Kind = Kind::Int64;
    fn packed(self) -> f64 {
        self as f64
    }
}

impl Packed for bool {
    const KIND: Kind = Kind::Int64;
    fn packed(self) -> f64 {
        f64::from(u8::from(self))
    }
}

impl Packed for f64 {
    const KIND: Kind = Kind::Float;
    fn packed(self) -> f64 {
        self
    }
}

impl AugmentParams {
    pub fn len(&self) -> usize {
        self.top.len()
    }

    pub fn is_empty(&self) -> bool {
        self.top.is_empty()
    }

    /// Sample positions ordered so that each order of the colour ops forms one run, which lets
    /// `augment` work on slices instead of gathered copies.
    pub fn grouped_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|&i| !self.saturation_first[i]);
        order
    }
}

impl ParamTensors {
    /// The parameters of `p` on `device`, copied there directly (diagnostics and tests; the
    /// loader copies them with its batch).
    pub fn new(p: &AugmentParams, device: Device) -> ParamTensors {
        let rows: Vec<usize> = (0..p.len()).collect();
        let packed = Tensor::from_slice(&p.pack(&rows)).view([PACKED_ROWS as i64, -1]);
        ParamTensors::unpack(&packed.to_device(device)).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn packed_parameters_unpack_on_the_device() {
        let p = AugmentParams::sample(5, 64, &mut ChaCha8Rng::seed_from_u64(4));
        let rows = [7usize, 100_000, 3, 0, 42];
        let packed = Tensor::from_slice(&p.pack(&rows)).view([PACKED_ROWS as i64, -1]);
        let (index, t) = ParamTensors::unpack(&packed);
        assert_eq!(
            Vec::<i64>::try_from(&index).unwrap(),
            vec![7, 100_000, 3, 0, 42]
        );
        assert_eq!(Vec::<i64>::try_from(&t.top).unwrap(), p.top);
        let flip: Vec<i64> = p.flip.iter().map(|&f| i64::from(f)).collect();
        assert_eq!(Vec::<i64>::try_from(&t.flip).unwrap(), flip);
        assert_eq!(Vec::<i64>::try_from(&t.left).unwrap(), p.left);
        let sat: Vec<f32> = p.saturation.iter().map(|&v| v as f32).collect();
        assert_eq!(Vec::<f32>::try_from(&t.saturation).unwrap(), sat);
        assert_eq!(t.hue.kind(), Kind::Float);
    }

    #[test]
    fn sampled_params_stay_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = AugmentParams::sample(500, 64, &mut rng);
        assert!(p.top.iter().chain(&p.left).all(|&o| (0..=4).contains(&o)));
        assert!((0..=4).all(|o| p.top.contains(&o)));
        assert!(p.saturation.iter().all(|&s| (0.5..2.0).contains(&s)));
        assert!(p.hue.iter().all(|&h| (-0.05..0.05).contains(&h)));
        let flips = p.flip.iter().filter(|&&f| f).count();
        assert!((200..300).contains(&flips), "{flips}");
    }
}
