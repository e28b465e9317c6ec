//! One optimizer step: the model with what updates it (Adam and, under fp16, the loss scaler),
//! the forward pass and its loss, backward and the update.

use std::collections::HashMap;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::data::loader::Batch;
use crate::io::safetensors::Named;
use crate::model::{Amp, Vgg16, WeightScope};
use crate::optim::adam::Adam;
use crate::optim::loss_scaler::LossScaler;
use crate::run_dir::config::Recipe;

/// The model being trained and its optimizer state.
pub struct Learner {
    pub model: Vgg16,
    pub adam: Adam,
    pub scaler: Option<LossScaler>,
    label_smoothing: f64,
    /// Whether a step may be refused, so that its BatchNorm statistics must be kept to put
    /// back.
    skippable: bool,
}

/// What one step did.
pub struct Stepped {
    /// The batch's loss and logits (still attached).
    pub loss: Tensor,
    pub logits: Tensor,
    /// Whether the update was made (not refused for its loss).
    pub taken: bool,
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
            skippable: false,
        }
    }

    /// The same learner, allowed (`true`) to refuse steps for their loss.
    pub fn with_skippable_batches(mut self, skippable: bool) -> Learner {
        self.skippable = skippable;
        self
    }

    /// One optimizer step on `batch` at `(lr, beta1)`: the forward pass and its loss, then, if
    /// `admit` accepts the loss, backward and the update. A refused batch leaves no trace, its
    /// BatchNorm statistics included.
    pub fn step(
        &mut self,
        batch: &Batch,
        hyper: (f64, f64),
        admit: impl FnOnce(&Tensor) -> Result<bool>,
    ) -> Result<Stepped> {
        let statistics = self.skippable.then(|| self.model.batch_norm_statistics());
        let logits = self.model.forward_train(&batch.images);
        let loss = smoothed_nll(&logits, &batch.labels, self.label_smoothing);
        let taken = admit(&loss)?;
        if taken {
            self.optimize(&loss, hyper);
        } else if let Some(statistics) = statistics {
            self.model.set_batch_norm_statistics(&statistics);
        }
        Ok(Stepped {
            loss,
            logits,
            taken,
        })
    }

    /// Backward and Adam step with `(lr, beta1)`. Under fp16 the backward runs on the scaled
    /// loss and a step whose gradients overflowed is skipped.
    fn optimize(&mut self, loss: &Tensor, (lr, beta1): (f64, f64)) {
        self.adam.zero_grad();
        match &mut self.scaler {
            None => {
                loss.backward();
                self.adam.step(lr, beta1);
            }
            Some(scaler) => {
                scaler.scaled(loss).backward();
                if scaler.unscale(self.adam.gradients()) {
                    self.adam.step(lr, beta1);
                }
            }
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

    fn take(_: &Tensor) -> Result<bool> {
        Ok(true)
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
        let stepped = learner.step(&batch(4), (1e-3, 0.9), take).unwrap();
        assert_eq!(stepped.logits.size(), vec![4, 3]);
        assert!(stepped.loss.double_value(&[]).is_finite() && stepped.taken);
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
            Learner::new(3, &Recipe::of(Stage::Base), Device::Cpu).with_skippable_batches(true);
        let before: Named = learner
            .checkpoint_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let stepped = learner.step(&batch(4), (1e-3, 0.9), |_| Ok(false)).unwrap();
        assert!(!stepped.taken);
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
        trained.step(&batch(4), (1e-3, 0.9), take).unwrap();
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
