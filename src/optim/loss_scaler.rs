//! Dynamic loss scaling for fp16 training, built on libtorch's own `_amp_update_scale_`.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

/// Dynamic loss scaling, as `torch.amp.GradScaler` does it: the loss is multiplied by a scale
/// before backward; gradients are divided by it before the step; a step whose gradients
/// overflowed is skipped and the scale halved; after `growth_interval` clean steps it doubles.
pub struct LossScaler {
    scale: Tensor,
    growth_tracker: Tensor,
    growth_interval: i64,
}

impl LossScaler {
    pub fn new(device: Device, init_scale: f64, growth_interval: i64) -> LossScaler {
        LossScaler {
            scale: Tensor::full([], init_scale, (Kind::Float, device)),
            growth_tracker: Tensor::zeros([], (Kind::Int, device)),
            growth_interval,
        }
    }

    /// The recipe-independent defaults of GradScaler: 2^16, doubling every 2000 clean steps.
    pub fn standard(device: Device) -> LossScaler {
        LossScaler::new(device, 65536.0, 2000)
    }

    /// Scale and growth tracker under `amp.scale` and `amp.growth_tracker`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        vec![
            ("amp.scale".into(), self.scale.shallow_clone()),
            (
                "amp.growth_tracker".into(),
                self.growth_tracker.shallow_clone(),
            ),
        ]
    }

    /// Restores what `state` saved, when it is there (a run that had no scaler saved none).
    pub fn load_state(&mut self, saved: &mut HashMap<String, Tensor>) {
        tch::no_grad(|| {
            if let Some(scale) = saved.remove("amp.scale") {
                self.scale.copy_(&scale.to_device(self.scale.device()));
            }
            if let Some(tracker) = saved.remove("amp.growth_tracker") {
                self.growth_tracker
                    .copy_(&tracker.to_device(self.growth_tracker.device()));
            }
        });
    }

    pub fn scale(&self) -> f64 {
        self.scale.double_value(&[])
    }

    pub fn scaled(&self, loss: &Tensor) -> Tensor {
        loss * &self.scale
    }

    /// Unscales the gradients (all of them, in one flat tensor) in place and updates the
    /// scale. Returns whether they are all finite, i.e. whether the optimizer may step. One
    /// host read per step, as GradScaler's.
    pub fn unscale(&mut self, grads: &Tensor) -> bool {
        let found_inf = tch::no_grad(|| {
            let _ = grads.shallow_clone().g_mul_(&self.scale.reciprocal());
            grads.isfinite().logical_not().any().to_kind(Kind::Float)
        });
        let _ = self.scale.internal_amp_update_scale_(
            &self.growth_tracker,
            &found_inf,
            2.0,
            0.5,
            self.growth_interval,
        );
        found_inf.double_value(&[]) == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_skips_and_halves_clean_steps_grow() {
        let mut scaler = LossScaler::new(Device::Cpu, 1024.0, 2);
        let good = Tensor::from_slice(&[2048.0f32, -1024.0]);
        assert!(scaler.unscale(&good));
        assert_eq!(
            Vec::<f32>::try_from(&good).unwrap(),
            vec![2.0, -1.0],
            "gradients divided by the scale"
        );
        assert_eq!(scaler.scale(), 1024.0);
        assert!(scaler.unscale(&Tensor::from_slice(&[1.0f32])));
        assert_eq!(scaler.scale(), 2048.0, "doubled after 2 clean steps");
        assert!(!scaler.unscale(&Tensor::from_slice(&[f32::INFINITY, 1.0])));
        assert_eq!(scaler.scale(), 1024.0, "halved on overflow");
    }

    #[test]
    fn the_scale_multiplies_the_loss_and_both_counters_survive_a_save() {
        let mut scaler = LossScaler::new(Device::Cpu, 1024.0, 2);
        let loss = scaler.scaled(&Tensor::from(3.0f32));
        assert_eq!(loss.double_value(&[]), 3072.0);
        // one clean step: the scale stays, the growth tracker counts 1
        assert!(scaler.unscale(&Tensor::from_slice(&[1.0f32])));
        let mut saved: HashMap<String, Tensor> = scaler
            .state()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let mut restored = LossScaler::standard(Device::Cpu);
        restored.growth_interval = 2;
        restored.load_state(&mut saved);
        assert!(saved.is_empty(), "both taken: {:?}", saved.keys());
        assert_eq!(restored.scale(), 1024.0);
        // the restored tracker makes the next clean step the second: the scale doubles
        assert!(restored.unscale(&Tensor::from_slice(&[1.0f32])));
        assert_eq!(restored.scale(), 2048.0);
    }
}
