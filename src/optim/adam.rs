//! Adam, written out so that its state is ours to save and restore, with the arithmetic of
//! PyTorch's single-tensor `torch.optim.Adam`.

use std::collections::HashMap;

use anyhow::Result;
use tch::Tensor;

use crate::bail_input;

/// Adam (betas (beta1, 0.999), eps 1e-8, no weight decay) over a fixed list of parameters, with
/// the first and second moments held here so a checkpoint can carry them.
pub struct Adam {
    names: Vec<String>,
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Optimizer steps taken (PyTorch keeps one count per parameter; they are all equal).
    steps: u64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    /// Adam over named parameters (the names key its saved state).
    pub fn new(named: Vec<(String, Tensor)>) -> Adam {
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let zeros = |p: &Tensor| p.zeros_like();
        Adam {
            exp_avg: params.iter().map(zeros).collect(),
            exp_avg_sq: params.iter().map(zeros).collect(),
            names,
            params,
            steps: 0,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The moments under `adam.exp_avg.<param>` and `adam.exp_avg_sq.<param>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let moments = |kind: &str, ts: &[Tensor]| {
            self.names
                .iter()
                .zip(ts)
                .map(|(n, t)| (format!("adam.{kind}.{n}"), t.shallow_clone()))
                .collect::<Vec<_>>()
        };
        let mut all = moments("exp_avg", &self.exp_avg);
        all.extend(moments("exp_avg_sq", &self.exp_avg_sq));
        all
    }

    /// Restores moments saved by `state` and the step count. Every moment must be there with
    /// its parameter's shape; nothing is copied otherwise.
    pub fn load_state(
        &mut self,
        saved: &mut HashMap<String, Tensor>,
        steps: u64,
        source: &str,
    ) -> Result<()> {
        let mut staged = Vec::new();
        for (kind, moments) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)] {
            for (name, dst) in self.names.iter().zip(moments) {
                let key = format!("adam.{kind}.{name}");
                match saved.remove(&key) {
                    Some(src) if src.size() == dst.size() => {
                        staged.push((dst.shallow_clone(), src))
                    }
                    Some(src) => bail_input!(
                        "{source}: {key} has shape {:?}, the parameter {:?}",
                        src.size(),
                        dst.size()
                    ),
                    None => bail_input!("{source}: optimizer state {key} missing"),
                }
            }
        }
        tch::no_grad(|| {
            for (mut dst, src) in staged {
                dst.copy_(&src.to_device(dst.device()).to_kind(dst.kind()));
            }
        });
        self.steps = steps;
        Ok(())
    }

    /// The parameters it updates.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update with the given learning rate and beta1: PyTorch's single-tensor Adam, op for
    /// op, so that both round alike (Adam amplifies any rounding difference in a near-zero
    /// gradient into a full-size step).
    pub fn step(&mut self, lr: f64, beta1: f64) {
        self.steps += 1;
        let step = self.steps as f64;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - self.beta2.powf(step);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        tch::no_grad(|| {
            for ((p, m), v) in self
                .params
                .iter_mut()
                .zip(&mut self.exp_avg)
                .zip(&mut self.exp_avg_sq)
            {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let _ = m.lerp_(&grad, 1.0 - beta1);
                // addcmul_(grad, grad, value=1-beta2) computes (value * grad) * grad + v.
                let _ = v.g_mul_scalar_(self.beta2);
                let _ = v.addcmul_(&(&grad * (1.0 - self.beta2)), &grad);
                let denom = (v.sqrt() / bias_correction2_sqrt).g_add_scalar_(self.eps);
                // addcdiv_(m, denom, value=-step_size) computes (value * m) / denom + p.
                let _ = p.g_add_(&((&*m * -step_size) / denom));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn adam_first_step_moves_each_weight_by_lr() {
        // With bias correction, Adam's first step is lr * sign(grad) (up to eps).
        let p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let mut adam = Adam::new(vec![("p".into(), p.shallow_clone())]);
        let loss = (&p * Tensor::from_slice(&[2.0f32, -0.5, 0.0])).sum(Kind::Float);
        loss.backward();
        adam.step(0.1, 0.9);
        let got = Vec::<f32>::try_from(&p.detach()).unwrap();
        assert!((got[0] - 0.9).abs() < 1e-6, "{got:?}");
        assert!((got[1] - -1.9).abs() < 1e-6, "{got:?}");
        assert_eq!(got[2], 3.0);
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let run = |restore: bool| {
            let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
            let mut adam = Adam::new(vec![("w".into(), p.shallow_clone())]);
            let step = |adam: &mut Adam| {
                adam.zero_grad();
                (&p * &p).sum(Kind::Float).backward();
                adam.step(0.01, 0.9);
            };
            step(&mut adam);
            if restore {
                let mut saved: HashMap<String, Tensor> = adam
                    .state()
                    .into_iter()
                    .map(|(n, t)| (n, t.copy()))
                    .collect();
                let steps = adam.steps();
                adam = Adam::new(vec![("w".into(), p.shallow_clone())]);
                adam.load_state(&mut saved, steps, "test").unwrap();
            }
            step(&mut adam);
            Vec::<f32>::try_from(&p.detach()).unwrap()
        };
        assert_eq!(run(false), run(true));
        let p = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
        let mut adam = Adam::new(vec![("w".into(), p)]);
        let err = adam.load_state(&mut HashMap::new(), 1, "ckpt").unwrap_err();
        assert!(err.to_string().contains("adam.exp_avg.w"), "{err}");
    }
}
