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

    /// Unscales the gradients of `params` in place and updates the scale. Returns whether they
    /// are all finite, i.e. whether the optimizer may step. One host read per step, as
    /// GradScaler's.
    pub fn unscale(&mut self, params: &[Tensor]) -> bool {
        let inv = self.scale.reciprocal();
        let mut found_inf = Tensor::zeros([], (Kind::Float, self.scale.device()));
        tch::no_grad(|| {
            for p in params {
                let mut grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let _ = grad.g_mul_(&inv);
                let bad = grad.isfinite().logical_not().any().to_kind(Kind::Float);
                found_inf = found_inf.maximum(&bad);
            }
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

    fn param_with_grad(grad: &[f32]) -> Tensor {
        let p =
            Tensor::zeros([grad.len() as i64], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&p * Tensor::from_slice(grad)).sum(Kind::Float).backward();
        p
    }

    #[test]
    fn overflow_skips_and_halves_clean_steps_grow() {
        let mut scaler = LossScaler::new(Device::Cpu, 1024.0, 2);
        let good = param_with_grad(&[2048.0, -1024.0]);
        assert!(scaler.unscale(std::slice::from_ref(&good)));
        assert_eq!(
            Vec::<f32>::try_from(&good.grad()).unwrap(),
            vec![2.0, -1.0],
            "gradients divided by the scale"
        );
        assert_eq!(scaler.scale(), 1024.0);
        let good2 = param_with_grad(&[1.0]);
        assert!(scaler.unscale(&[good2]));
        assert_eq!(scaler.scale(), 2048.0, "doubled after 2 clean steps");
        let bad = param_with_grad(&[f32::INFINITY, 1.0]);
        assert!(!scaler.unscale(&[bad]));
        assert_eq!(scaler.scale(), 1024.0, "halved on overflow");
    }
}
