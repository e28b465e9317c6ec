//! Scoring a model: mean NLL, top-1 and top-5 over a list of samples, with or without
//! test-time augmentation, and the model and images to score from a run.

pub mod predict;
pub mod scoring;
pub mod tta;

use anyhow::Result;
use serde::Serialize;
use tch::{Device, Kind, Reduction, Tensor};

use crate::data::loader::Loader;
use crate::model::Vgg16;
use tta::{log_probs, Tta};

/// Images per eval forward pass inside a training run: on a GPU a large batch keeps it busy
/// (eight training batches, at most 512, so that a smaller --batch-size also eases an eval that
/// ran out of memory), as many as half its free memory holds at `image_size`; on the CPU,
/// speed does not depend on it and a training-sized batch keeps memory low.
pub fn eval_batch_size(device: Device, train_batch: usize, image_size: u32) -> usize {
    match device {
        Device::Cuda(n) => {
            let free = crate::device::cuda_memory_mb(n).map(|m| m.free);
            gpu_eval_batch(train_batch, image_size, free)
        }
        _ => train_batch,
    }
}

/// The GPU's eval batch with `free_mib` of device memory free (unknown: not limited by it).
/// An image's peak in an eval forward pass is the first block's input and output, 64 channels
/// at full size in fp32: 2 x 64 x side² x 4 bytes (26 MB at 224: 512 images would need 13 GB,
/// more than a 15 GB T4 has beside the model).
fn gpu_eval_batch(train_batch: usize, image_size: u32, free_mib: Option<f64>) -> usize {
    let busy = (8 * train_batch).min(512);
    let per_image_mib = 2.0 * 64.0 * f64::from(image_size).powi(2) * 4.0 / (1024.0 * 1024.0);
    match free_mib {
        Some(free) => busy.min(((free / 2.0) / per_image_mib) as usize).max(1),
        None => busy,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub samples: usize,
    /// Mean NLL per sample.
    #[serde(with = "crate::io::json_float")]
    pub loss: f64,
    pub top1: f64,
    /// `None` (null in JSON) with fewer than 5 classes, where every image would count.
    pub top5: Option<f64>,
}

impl Scores {
    /// Refuses scores of a model whose outputs are not finite numbers (a NaN mean loss): its
    /// accuracy would count NaN rows as guesses. `model` names it.
    pub fn ensure_finite(&self, model: &str) -> Result<()> {
        if !self.loss.is_finite() {
            return Err(not_finite(model, &format!("mean loss {}", self.loss)));
        }
        Ok(())
    }
}

#[cfg(test)]
impl Scores {
    /// Scores of one image with the mean loss `loss`.
    pub fn example(loss: f64) -> Scores {
        Scores {
            samples: 1,
            loss,
            top1: 0.0,
            top5: None,
        }
    }
}

/// The error of a model whose outputs are not finite numbers; `seen` says where it showed.
pub fn not_finite(model: &str, seen: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{model}: the model's outputs are not finite numbers ({seen}), so it cannot be \
         scored or used: its weights broke in training (a learning rate too high?). Train it \
         again, or use an earlier model of its run (--which best)"
    )
}

/// Refuses `log_probs` that are not all finite (or -inf, a probability of 0).
pub fn ensure_finite_outputs(log_probs: &Tensor, model: &str) -> Result<()> {
    let bad = log_probs.isnan().logical_or(&log_probs.isposinf());
    if bad.any().int64_value(&[]) != 0 {
        return Err(not_finite(model, "NaN or infinite log-probabilities"));
    }
    Ok(())
}

/// A top-5 accuracy as a percentage, or why there is none.
pub fn top5_text(top5: Option<f64>) -> String {
    match top5 {
        Some(v) => format!("{:.2}%", 100.0 * v),
        None => "n/a (fewer than 5 classes)".into(),
    }
}

/// Per-row count of targets among the `k` largest logits, summed: a 0-dim int64 tensor on the
/// logits' device (no host synchronisation).
pub fn topk_correct(logits: &Tensor, targets: &Tensor, k: i64) -> Tensor {
    let k = k.min(logits.size()[1]);
    let (_, top) = logits.topk(k, 1, true, true);
    top.eq_tensor(&targets.unsqueeze(1))
        .any_dim(1, false)
        .sum(Kind::Int64)
}

/// Scores `model` on the rows `indices` of the loader's set, in eval mode. Sums stay on the
/// device until the end.
pub fn evaluate(
    model: &Vgg16,
    loader: &Loader,
    indices: &[usize],
    batch_size: usize,
    tta: Tta,
) -> Scores {
    let device = loader.device();
    let mut loss = Tensor::zeros([], (Kind::Double, device));
    let mut top1 = Tensor::zeros([], (Kind::Int64, device));
    let mut top5 = Tensor::zeros([], (Kind::Int64, device));
    let mut classes = 0;
    for chunk in indices.chunks(batch_size) {
        let batch = loader.eval_batch(chunk);
        let log_probs = log_probs(model, &batch.images, tta);
        let nll = log_probs.g_nll_loss::<Tensor>(&batch.labels, None, Reduction::Sum, -100);
        loss += nll.to_kind(Kind::Double);
        top1 += topk_correct(&log_probs, &batch.labels, 1);
        top5 += topk_correct(&log_probs, &batch.labels, 5);
        classes = log_probs.size()[1];
    }
    let n = indices.len().max(1) as f64;
    Scores {
        samples: indices.len(),
        loss: loss.double_value(&[]) / n,
        top1: top1.int64_value(&[]) as f64 / n,
        top5: (classes >= 5).then(|| top5.int64_value(&[]) as f64 / n),
    }
}

/// The predicted class of each row `indices` (argmax of the log-probabilities).
pub fn predicted_classes(
    model: &Vgg16,
    loader: &Loader,
    indices: &[usize],
    batch_size: usize,
    name: &str,
) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(batch_size) {
        let batch = loader.eval_batch(chunk);
        let log_probs = log_probs(model, &batch.images, Tta::None);
        ensure_finite_outputs(&log_probs, name)?;
        let guess = log_probs.argmax(1, false);
        out.extend(Vec::<i64>::try_from(&guess.to_device(Device::Cpu))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image_set::ImageSet;

    /// Seven random images labelled from a fresh 10-class model's own ranking of them: three
    /// with its first choice, two with its third, two with its last; and that ranking. A fresh
    /// model puts one class first for any image, so its last bias is first set to less their
    /// mean logits: then each image's own features decide.
    fn ranked_set(model: &Vgg16) -> (ImageSet, Tensor) {
        let images = Tensor::randint(256, [7, 64, 64, 3], (Kind::Uint8, Device::Cpu));
        let unlabelled = ImageSet::from_tensors(
            images.shallow_clone(),
            Tensor::zeros([7], (Kind::Int64, Device::Cpu)),
        );
        let all: Vec<usize> = (0..7).collect();
        let batch = Loader::new(&unlabelled, Device::Cpu).eval_batch(&all);
        let (_, bias) = model
            .state()
            .into_iter()
            .find(|(name, _)| name == "vgg16.classifier.8.bias")
            .expect("the last layer's bias");
        let mean_logits = model
            .forward_eval(&batch.images)
            .mean_dim(0, false, Kind::Float);
        tch::no_grad(|| bias.shallow_clone().copy_(&-mean_logits));
        let log_probs = log_probs(model, &batch.images, Tta::None);
        let ranking = log_probs.argsort(1, true);
        let rank = Tensor::from_slice(&[0i64, 0, 0, 2, 2, 9, 9]);
        let labels = ranking.gather(1, &rank.unsqueeze(1), false).squeeze_dim(1);
        (ImageSet::from_tensors(images, labels), log_probs)
    }

    #[test]
    fn evaluation_in_uneven_batches_counts_every_image_once() {
        let _generator = crate::test_generator::lock();
        tch::manual_seed(3);
        let model = Vgg16::new(10, Device::Cpu);
        let (set, log_probs) = ranked_set(&model);
        let loader = Loader::new(&set, Device::Cpu);
        // out of order, in batches of 3, 3 and 1
        let order = [6usize, 0, 5, 1, 4, 2, 3];
        let scores = evaluate(&model, &loader, &order, 3, Tta::None);
        let nll = -log_probs
            .gather(1, &set.labels.unsqueeze(1), false)
            .mean(Kind::Double);
        assert_eq!(scores.samples, 7);
        assert!(
            (scores.loss - nll.double_value(&[])).abs() < 1e-5,
            "{scores:?}"
        );
        assert_eq!(scores.top1, 3.0 / 7.0);
        assert_eq!(scores.top5, Some(5.0 / 7.0));
        let first_choices = Vec::<i64>::try_from(log_probs.argmax(1, false)).unwrap();
        let mut distinct = first_choices.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 1,
            "the model tells the images apart: {first_choices:?}"
        );
        let predicted = predicted_classes(&model, &loader, &order, 3, "model").unwrap();
        let want: Vec<i64> = order.iter().map(|&i| first_choices[i]).collect();
        assert_eq!(predicted, want);
    }

    /// Every label counts in the loss: class 100 of Tiny ImageNet's 200 too.
    #[test]
    fn every_class_counts_in_the_loss() {
        let _generator = crate::test_generator::lock();
        let model = Vgg16::new(200, Device::Cpu);
        let images = Tensor::zeros([1, 64, 64, 3], (Kind::Uint8, Device::Cpu));
        let set = ImageSet::from_tensors(images, Tensor::from_slice(&[100i64]));
        let loader = Loader::new(&set, Device::Cpu);
        let scores = evaluate(&model, &loader, &[0], 1, Tta::None);
        let batch = loader.eval_batch(&[0]);
        let want = -log_probs(&model, &batch.images, Tta::None).double_value(&[0, 100]);
        assert!(
            (scores.loss - want).abs() < 1e-5,
            "{} != {want}",
            scores.loss
        );
    }

    #[test]
    fn fewer_than_five_classes_have_no_top5() {
        let _generator = crate::test_generator::lock();
        let model = Vgg16::new(4, Device::Cpu);
        let images = Tensor::zeros([2, 64, 64, 3], (Kind::Uint8, Device::Cpu));
        let set = ImageSet::from_tensors(images, Tensor::from_slice(&[0i64, 3]));
        let scores = evaluate(
            &model,
            &Loader::new(&set, Device::Cpu),
            &[0, 1],
            2,
            Tta::None,
        );
        assert_eq!(scores.top5, None);
        assert_eq!(top5_text(scores.top5), "n/a (fewer than 5 classes)");
        assert_eq!(top5_text(Some(0.76843)), "76.84%");
    }

    #[test]
    fn non_finite_outputs_and_losses_are_refused_by_name() {
        let fine = Tensor::from_slice(&[f32::NEG_INFINITY, -0.5, -1.0]).view([1, 3]);
        assert!(ensure_finite_outputs(&fine, "m").is_ok());
        for bad in [f32::NAN, f32::INFINITY] {
            let outputs = Tensor::from_slice(&[bad, -0.5, -1.0]).view([1, 3]);
            let err = ensure_finite_outputs(&outputs, "runs/x/model.safetensors").unwrap_err();
            assert!(
                err.to_string().starts_with("runs/x/model.safetensors: "),
                "{err}"
            );
        }
        assert!(Scores::example(2.5).ensure_finite("m").is_ok());
        let err = Scores::example(f64::NAN)
            .ensure_finite("best.safetensors")
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "best.safetensors: the model's outputs are not finite numbers (mean loss NaN)"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_gpu_evaluates_eight_training_batches_at_a_time_up_to_512() {
        assert_eq!(eval_batch_size(Device::Cpu, 64, 224), 64);
        assert_eq!(gpu_eval_batch(32, 64, None), 256);
        assert_eq!(gpu_eval_batch(100, 64, Some(100_000.0)), 512);
        // a T4's 15 GB at 224: half its free memory, 26 MB an image
        assert_eq!(gpu_eval_batch(64, 224, Some(14_000.0)), 285);
        assert_eq!(gpu_eval_batch(64, 64, Some(14_000.0)), 512);
        assert_eq!(
            gpu_eval_batch(64, 1024, Some(100.0)),
            1,
            "at least one image"
        );
    }

    #[test]
    fn topk_counts_hits() {
        let logits = Tensor::from_slice(&[
            0.1f32, 0.5, 0.2, 0.9, 0.0, 0.3, // row 0: order 3,1,5,2,0,4
            0.9, 0.1, 0.2, 0.3, 0.4, 0.5, // row 1: order 0,5,4,3,2,1
        ])
        .view([2, 6]);
        let targets = Tensor::from_slice(&[1i64, 1]);
        assert_eq!(topk_correct(&logits, &targets, 1).int64_value(&[]), 0);
        assert_eq!(topk_correct(&logits, &targets, 2).int64_value(&[]), 1);
        assert_eq!(topk_correct(&logits, &targets, 5).int64_value(&[]), 1);
        assert_eq!(topk_correct(&logits, &targets, 6).int64_value(&[]), 2);
        // k larger than the class count means every class
        assert_eq!(topk_correct(&logits, &targets, 50).int64_value(&[]), 2);
    }
}
