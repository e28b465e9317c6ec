//! Test-time augmentation: which views of each image are scored, and how their class
//! probabilities are averaged.

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::model::{channels_last, Vgg16};

/// Which views of each image are scored and averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// The image as it is
    None,
    /// The image and its mirror image
    Flip,
    /// Four corner crops and the centre crop of 7/8 the side (56x56 of 64x64) resized back,
    /// and their mirror images
    #[value(name = "10crop")]
    #[serde(rename = "10crop")]
    TenCrop,
}

impl Tta {
    /// The flag value, as `--tta` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::Flip => "flip",
            Tta::TenCrop => "10crop",
        }
    }
}

/// The views `tta` scores of a normalised NCHW batch of square images.
fn views(x: &Tensor, tta: Tta) -> Vec<Tensor> {
    let side = x.size()[3];
    let crop = (side * 7 + 4) / 8;
    match tta {
        Tta::None => vec![x.shallow_clone()],
        Tta::Flip => vec![x.shallow_clone(), x.flip([3])],
        Tta::TenCrop => {
            let far = side - crop;
            let corners = [(0, 0), (0, far), (far, 0), (far, far), (far / 2, far / 2)];
            let crops: Vec<Tensor> = corners
                .iter()
                .map(|&(top, left)| {
                    // Enlarging, so plain bilinear equals torchvision's antialiased resize.
                    let view = x.narrow(2, top, crop).narrow(3, left, crop).contiguous();
                    channels_last(&view.upsample_bilinear2d([side, side], false, None, None))
                })
                .collect();
            let mirrors: Vec<Tensor> = crops.iter().map(|c| c.flip([3])).collect();
            crops.into_iter().chain(mirrors).collect()
        }
    }
}

/// Log-probabilities of a normalised batch: of the logits, or of the class probabilities
/// averaged over the test-time views.
pub fn log_probs(model: &Vgg16, images: &Tensor, tta: Tta) -> Tensor {
    if tta == Tta::None {
        return model.forward_eval(images).log_softmax(1, Kind::Float);
    }
    let views = views(images, tta);
    let count = views.len() as f64;
    let sum = views
        .iter()
        .map(|v| model.forward_eval(v).softmax(1, Kind::Float))
        .reduce(|a, b| a + b)
        .expect("at least one view");
    (sum / count).log()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn views_per_mode() {
        let _generator = crate::test_generator::lock();
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(views(&x, Tta::None).len(), 1);
        let flip = views(&x, Tta::Flip);
        assert!(flip[1].flip([3]).equal(&x));
        let crops = views(&x, Tta::TenCrop);
        assert_eq!(crops.len(), 10);
        assert!(crops.iter().all(|v| v.size() == vec![2, 3, 64, 64]));
        assert!(crops[5].flip([3]).allclose(&crops[0], 1e-6, 1e-6, false));
    }

    #[test]
    fn each_mode_is_named_as_the_flag_takes_it() {
        for tta in [Tta::None, Tta::Flip, Tta::TenCrop] {
            assert_eq!(
                <Tta as clap::ValueEnum>::from_str(tta.name(), false),
                Ok(tta)
            );
        }
    }

    #[test]
    fn views_are_scored_by_their_mean_probability() {
        let _generator = crate::test_generator::lock();
        tch::manual_seed(5);
        let model = Vgg16::new(10, Device::Cpu);
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let probs = |x: &Tensor| model.forward_eval(x).softmax(1, Kind::Float);
        let plain = log_probs(&model, &x, Tta::None);
        assert!(plain.allclose(&probs(&x).log(), 1e-5, 1e-5, false));
        let mean = (probs(&x) + probs(&x.flip([3]))) / 2.0;
        let flip = log_probs(&model, &x, Tta::Flip);
        assert!(flip.allclose(&mean.log(), 1e-5, 1e-5, false));
        assert!(!flip.allclose(&plain, 1e-5, 1e-5, false));
    }

    #[test]
    fn ten_crop_takes_the_corners_and_centre_of_seven_eighths_and_their_mirrors() {
        let _generator = crate::test_generator::lock();
        let x = Tensor::randn([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let crops = views(&x, Tta::TenCrop);
        // torchvision's TenCrop(56) of a 64x64 image: corners at 0 and 8, centre at 4
        for (i, (top, left)) in [(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)]
            .into_iter()
            .enumerate()
        {
            let crop = x.narrow(2, top, 56).narrow(3, left, 56);
            let want = crop.upsample_bilinear2d([64, 64], false, None, None);
            assert!(crops[i].allclose(&want, 1e-6, 1e-6, false), "crop {i}");
            let mirror = want.flip([3]);
            assert!(
                crops[i + 5].allclose(&mirror, 1e-6, 1e-6, false),
                "mirror {i}"
            );
        }
    }
}
