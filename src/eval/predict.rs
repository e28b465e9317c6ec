//! The most likely classes of image files of any size or format, with their probabilities.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::data::augment::{normalize_channels_last, resize, to_float, Constants};
use crate::data::decode_list::decode_files;
use crate::eval::ensure_finite_outputs;
use crate::eval::tta::{log_probs, Tta};
use crate::model::Vgg16;

/// One class guessed for an image.
#[derive(Debug, Serialize)]
pub struct Guess {
    pub wnid: String,
    pub name: String,
    pub prob: f64,
}

/// The best guesses for one image, most likely first.
#[derive(Debug, Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    pub top5: Vec<Guess>,
}

/// A model and the classes it tells apart (wnids and their human names).
pub struct Classifier<'a> {
    pub model: &'a Vgg16,
    /// The side the model sees images at.
    pub image_size: u32,
    /// The side its run stored images at: photos are resized and cropped to it first.
    pub stored_side: usize,
    pub classes: &'a [String],
    pub names: &'a [String],
    /// The model file, as errors name it.
    pub source: &'a str,
}

impl Classifier<'_> {
    /// The five most likely classes of each image, `batch_size` images per forward pass.
    pub fn predict(
        &self,
        images: &[PathBuf],
        tta: Tta,
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        let k = 5.min(self.classes.len());
        let mut out = Vec::with_capacity(images.len());
        for paths in images.chunks(batch_size.max(1)) {
            let probs = self.probabilities(paths, tta)?;
            let (top_p, top_i) = probs.topk(k as i64, 1, true, true);
            let top_p = Vec::<f64>::try_from(&top_p.to_kind(Kind::Double).flatten(0, -1))?;
            let top_i = Vec::<i64>::try_from(&top_i.flatten(0, -1))?;
            for (n, path) in paths.iter().enumerate() {
                let top5 = (0..k)
                    .map(|j| self.guess(top_i[n * k + j] as usize, top_p[n * k + j]))
                    .collect();
                out.push(Prediction {
                    image: path.clone(),
                    top5,
                });
            }
        }
        Ok(out)
    }

    /// Class probabilities of the decoded images, on the host.
    fn probabilities(&self, paths: &[PathBuf], tta: Tta) -> Result<Tensor> {
        let device = self.model.device();
        let x = to_float(&decode_files(paths, self.stored_side)?.to_device(device));
        let x = resize(&x, i64::from(self.image_size));
        let x = normalize_channels_last(&x, &Constants::on(device));
        let log_probs = log_probs(self.model, &x, tta);
        ensure_finite_outputs(&log_probs, self.source)?;
        let probs = log_probs.exp();
        Ok(probs.to_device(Device::Cpu))
    }

    fn guess(&self, class: usize, prob: f64) -> Guess {
        Guess {
            wnid: self.classes[class].clone(),
            name: self.names.get(class).cloned().unwrap_or_default(),
            prob,
        }
    }
}
