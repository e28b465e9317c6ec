//! One optimizer step, in two calls the loop makes: `forward` (the forward pass and its loss)
//! and then, once the loop has admitted the loss, `apply` (backward and the update) or
//! `refuse`. The model with what updates it: Adam and, under fp16, the loss scaler.

use std::collections::HashMap;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::data::loader::Batch;
use crate::io::safetensors::Named;
use crate::model::{Amp, Vgg16, WeightScope};
use crate::optim::adam::Adam;
use crate::optim::loss_scaler::LossScaler;
use crate::optim::schedule::Rates;
use crate::recipe::Recipe;

/// The model being trained and its optimizer state.
pub struct Learner {
    pub model: Vgg16,
    pub adam: Adam,
    pub scaler: Option<LossScaler>,
    label_smoothing: f64,
    /// Whether a step may be refused, so that its BatchNorm statistics must be kept to put
    /// back.
    refusable: bool,
}

/// A batch's forward pass, its update not yet made.
pub struct Forward {
    /// The batch's loss and logits (still attached).
    pub loss: Tensor,
    pub logits: Tensor,
    /// The BatchNorm statistics before the pass, which `refuse` puts back.
    statistics: Option<Vec<Tensor>>,
}

impl Learner {
    /// A fresh model for `recipe` with `classes` outputs on `device`, drawn from libtorch's
    /// generator as it is seeded now, with the parameters of its stage trainable and Adam over
    /// them.
    pub fn new(classes: usize, recipe: &Recipe, device: Device) -> Learner {
        let mut model = Vgg16::new(classes as i64, device);
        model.set_stage(recipe.stage);
        model.set_dropout(recipe.dropout);
        model.set_compute_kind(recipe.amp.compute_kind());
        let adam = Adam::new(model.trainable());
        let scaler = (recipe.amp == Amp::Fp16).then(|| LossScaler::standard(device));
        Learner {
            model,
            adam,
            scaler,
            label_smoothing: recipe.label_smoothing,
            refusable: false,
        }
    }

    /// The same learner, whose steps may (`true`) be refused after their forward pass.
    pub fn with_refusable_steps(mut self, refusable: bool) -> Learner {
        self.refusable = refusable;
        self
    }

    /// The forward pass of a training step on `batch`, and its loss.
    pub fn forward(&mut self, batch: &Batch) -> Forward {
        let statistics = self.refusable.then(|| self.model.batch_norm_statistics());
        let logits = self.model.forward_train(&batch.images);
        let loss = smoothed_nll(&logits, &batch.labels, self.label_smoothing);
        Forward {
            loss,
            logits,
            statistics,
        }
    }

    /// Backward from `forward`'s loss and the Adam step at `rates`. Under fp16 the backward
    /// runs on the scaled loss and a step whose gradients overflowed is skipped.
    pub fn apply(&mut self, forward: &Forward, rates: Rates) {
        self.adam.zero_grad();
        match &mut self.scaler {
            None => {
                forward.loss.backward();
                self.adam.step(rates.lr, rates.beta1);
            }
            Some(scaler) => {
                scaler.scaled(&forward.loss).backward();
                if scaler.unscale(self.adam.gradients()) {
                    self.adam.step(rates.lr, rates.beta1);
                }
            }
        }
    }

    /// Leaves no trace of `forward`: the BatchNorm statistics it moved are put back (a learner
    /// `with_refusable_steps` keeps them).
    pub fn refuse(&mut self, forward: &Forward) {
        if let Some(statistics) = &forward.statistics {
            self.model.set_batch_norm_statistics(statistics);
        }
    }

    /// Everything a checkpoint holds: model, optimizer moments and loss scale.
    pub fn checkpoint_tensors(&self) -> Named {
        let mut all = self.model.state();
        all.extend(self.adam.state());
        if let Some(scaler) = &self.scaler {
            all.extend(scaler.state());
        }
        all
    }

    /// Restores what `checkpoint_tensors` saved, with Adam at `adam_steps`; errors (a tensor
    /// missing or misshapen) name `source`.
    pub fn restore(
        &mut self,
        mut saved: HashMap<String, Tensor>,
        adam_steps: u64,
        source: &str,
    ) -> Result<()> {
        let model_tensors: Named = self
            .model
            .state()
            .into_iter()
            .filter_map(|(name, _)| saved.remove_entry(&name))
            .collect();
        self.model
            .load_weights(model_tensors, WeightScope::All, source)?;
        self.adam.load_state(&mut saved, adam_steps, source)?;
        if let Some(scaler) = &mut self.scaler {
            scaler.load_state(&mut saved);
        }
        Ok(())
    }
}

/// The mean loss of `logits` against `labels`: the NLL of the log-softmax (the recipe's
/// LogSoftmax + NLLLoss) for `eps` 0, else with label smoothing as PyTorch's
/// `F.cross_entropy(logits, labels, label_smoothing=eps)` computes it: (1 - eps) * NLL plus
/// eps / classes times the mean over the batch of minus the summed log-probabilities.
pub fn smoothed_nll(logits: &Tensor, labels: &Tensor, eps: f64) -> Tensor {
    let log_probs = logits.log_softmax(1, Kind::Float);
    let nll = log_probs.nll_loss(labels);
    if eps == 0.0 {
        return nll;
    }
    let classes = logits.size()[1] as f64;
    let smooth = -log_probs
        .sum_dim_intlist(1, false, Kind::Float)
        .mean(Kind::Float);
    nll * (1.0 - eps) + smooth * (eps / classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Stage;

    fn batch(n: i64) -> Batch {
        Batch {
            images: Tensor::randn([n, 3, 64, 64], (Kind::Float, Device::Cpu)),
            labels: Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3),
            len: n as usize,
        }
    }

    #[test]
    fn smoothing_mixes_the_nll_with_the_uniform_target() {
        let logits = Tensor::from_slice(&[2.0f32, 0.5, -1.0, 0.0, 1.0, 3.0]).view([2, 3]);
        let labels = Tensor::from_slice(&[0i64, 2]);
        let plain = smoothed_nll(&logits, &labels, 0.0).double_value(&[]);
        let lp: Vec<f64> = Vec::<f32>::try_from(&logits.log_softmax(1, Kind::Float).flatten(0, -1))
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        assert!((plain - -(lp[0] + lp[5]) / 2.0).abs() < 1e-6);
        let eps = 0.1;
        let uniform = -(lp.iter().sum::<f64>()) / 6.0;
        let want = (1.0 - eps) * plain + eps * uniform;
        let got = smoothed_nll(&logits, &labels, eps).double_value(&[]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    const RATES: Rates = Rates {
        lr: 1e-3,
        beta1: 0.9,
    };

    /// A step on `batch`, taken.
    fn step(learner: &mut Learner, batch: &Batch) -> Forward {
        let forward = learner.forward(batch);
        learner.apply(&forward, RATES);
        forward
    }

    #[test]
    fn a_stage_1_step_moves_the_head_only() {
        let _generator = crate::test_generator::lock();
        tch::manual_seed(0);
        let mut learner = Learner::new(3, &Recipe::of(Stage::Base), Device::Cpu);
        let before: Named = learner
            .model
            .state()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let stepped = step(&mut learner, &batch(4));
        assert_eq!(stepped.logits.size(), vec![4, 3]);
        assert!(stepped.loss.double_value(&[]).is_finite());
        assert_eq!(learner.adam.steps(), 1);
        for ((name, old), (_, new)) in before.iter().zip(learner.model.state()) {
            let moved = !old.equal(&new);
            let trains = name.contains(".classifier.") && !name.contains("running_");
            if name.ends_with(".weight") || name.contains("features.") {
                assert_eq!(moved, trains, "{name}");
            }
        }
    }

    #[test]
    fn a_refused_step_leaves_no_trace() {
        let _generator = crate::test_generator::lock();
        tch::manual_seed(0);
        let mut learner =
            Learner::new(3, &Recipe::of(Stage::Base), Device::Cpu).with_refusable_steps(true);
        let before: Named = learner
            .checkpoint_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let forward = learner.forward(&batch(4));
        learner.refuse(&forward);
        assert_eq!(learner.adam.steps(), 0);
        for ((name, old), (_, new)) in before.iter().zip(learner.checkpoint_tensors()) {
            assert!(old.equal(&new), "{name} changed by a refused step");
        }
    }

    #[test]
    fn restore_takes_back_what_a_checkpoint_holds() {
        let _generator = crate::test_generator::lock();
        tch::manual_seed(0);
        let mut trained = Learner::new(3, &Recipe::of(Stage::Finetune), Device::Cpu);
        step(&mut trained, &batch(4));
        let saved = || -> HashMap<String, Tensor> {
            trained
                .checkpoint_tensors()
                .into_iter()
                .map(|(n, t)| (n, t.copy()))
                .collect()
        };
        tch::manual_seed(1);
        let mut fresh = Learner::new(3, &Recipe::of(Stage::Finetune), Device::Cpu);
        fresh.restore(saved(), 1, "ckpt").unwrap();
        let want = saved();
        for (name, t) in fresh.checkpoint_tensors() {
            assert!(t.equal(&want[&name]), "{name}");
        }
        let mut missing = saved();
        missing.remove("vgg16.features.0.weight");
        let err = fresh.restore(missing, 1, "ckpt").unwrap_err().to_string();
        assert!(err.contains("features.0.weight"), "{err}");
    }
}
