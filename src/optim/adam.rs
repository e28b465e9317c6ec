//! Adam, written out so that its state is ours to save and restore, with the arithmetic of
//! PyTorch's default `torch.optim.Adam` on the parameters' device, over flat buffers: the
//! parameters, their gradients and both moments each live in one tensor, every parameter a
//! view into it, so one step is a handful of elementwise operations over all parameters
//! instead of ten per parameter tensor (on a GPU, launches rather than arithmetic bound a
//! per-tensor step).

use std::collections::HashMap;

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::bail_input;

/// Which of PyTorch's Adam implementations a step computes, op for op: the one PyTorch runs
/// by default on the parameters' device. Adam amplifies any rounding difference in a
/// near-zero gradient into a full-size step, so each value must round where PyTorch's does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Arithmetic {
    /// The single-tensor implementation, PyTorch's default on the CPU.
    SingleTensor,
    /// The foreach implementation, PyTorch's default on CUDA. Its kernels compute
    /// `v + (1 - beta2) * (g * g)` and `p + s * (m / d)` with one fused multiply-add each, and
    /// divide by sqrt(bias correction 2) truly, where `div_` by a CPU scalar on CUDA would
    /// multiply by its reciprocal.
    Foreach,
}

impl Arithmetic {
    fn of(device: tch::Device) -> Arithmetic {
        if device.is_cuda() {
            Arithmetic::Foreach
        } else {
            Arithmetic::SingleTensor
        }
    }

    /// Tensor operations one `step` issues, each over the whole flat buffer or a 0-dim one.
    fn ops_per_step(self) -> u64 {
        match self {
            Arithmetic::SingleTensor => 10,
            Arithmetic::Foreach => 11,
        }
    }
}

/// Where a parameter lives in the flat buffers: its offset, size and strides.
struct Slot {
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

impl Slot {
    /// The parameter's view into `flat`.
    fn view(&self, flat: &Tensor) -> Tensor {
        flat.as_strided(&self.size, &self.stride, self.offset)
    }
}

/// Adam (betas (beta1, 0.999), eps 1e-8, no weight decay) over a fixed list of parameters, with
/// the first and second moments held here so a checkpoint can carry them.
pub struct Adam {
    names: Vec<String>,
    slots: Vec<Slot>,
    /// The parameters, one after another; each parameter's data is its view into this.
    params: Tensor,
    /// Their gradients, laid out alike: backward adds into each parameter's existing gradient
    /// in place, and each of those is a view into this.
    grads: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Buffers of the same size for the step's intermediate values, kept rather than
    /// allocated at every step.
    scratch: Tensor,
    denom: Tensor,
    /// 0-dim tensors on the parameters' device holding a step's scalars: 1 - beta2 (both
    /// arithmetics), and for the foreach arithmetic the step's factor and divisor. There a
    /// factor makes `addcmul_` one fused multiply-add (`addcmul_` takes no scalar factor
    /// through tch), and a 0-dim divisor a true division.
    sq_factor: Tensor,
    step_factor: Tensor,
    divisor: Tensor,
    arithmetic: Arithmetic,
    /// Optimizer steps taken (PyTorch keeps one count per parameter; they are all equal).
    steps: u64,
    beta2: f64,
    eps: f64,
}

/// `t`'s strides when they lay its elements out densely, with no gaps (contiguous or
/// channels-last), so that a view into a flat buffer can keep them; else contiguous strides.
fn dense_strides(t: &Tensor) -> Vec<i64> {
    let (size, stride) = (t.size(), t.stride());
    let mut order: Vec<usize> = (0..size.len()).collect();
    order.sort_by_key(|&d| std::cmp::Reverse(stride[d]));
    let mut expected = 1;
    let mut dense = true;
    for &d in order.iter().rev() {
        dense &= size[d] == 1 || stride[d] == expected;
        expected *= size[d];
    }
    if dense {
        return stride;
    }
    let mut contiguous = vec![1; size.len()];
    for d in (0..size.len().saturating_sub(1)).rev() {
        contiguous[d] = contiguous[d + 1] * size[d + 1];
    }
    contiguous
}

impl Adam {
    /// Adam over named parameters (the names key its saved state): moves each parameter's data
    /// into the flat buffer, keeping its values and strides, and gives it a gradient there.
    pub fn new(named: Vec<(String, Tensor)>) -> Adam {
        let (names, mut params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let mut offset = 0;
        let slots: Vec<Slot> = params
            .iter()
            .map(|p| {
                let slot = Slot {
                    offset,
                    size: p.size(),
                    stride: dense_strides(p),
                };
                offset += p.numel() as i64;
                slot
            })
            .collect();
        let options = params
            .first()
            .map_or((Kind::Float, tch::Device::Cpu), |p| (p.kind(), p.device()));
        let flat = Tensor::zeros([offset], options);
        let grads = Tensor::zeros([offset], options);
        tch::no_grad(|| {
            for (p, slot) in params.iter_mut().zip(&slots) {
                let mut view = slot.view(&flat);
                view.copy_(p);
                p.set_data(&view);
            }
        });
        adopt_gradients(&params, &slots, &grads);
        let beta2 = 0.999;
        let scalar = || Tensor::zeros([], options);
        Adam {
            sq_factor: scalar().fill_(1.0 - beta2),
            step_factor: scalar(),
            divisor: scalar(),
            arithmetic: Arithmetic::of(options.1),
            exp_avg: flat.zeros_like(),
            exp_avg_sq: flat.zeros_like(),
            scratch: flat.empty_like(),
            denom: flat.empty_like(),
            names,
            slots,
            params: flat,
            grads,
            steps: 0,
            beta2,
            eps: 1e-8,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Tensor operations one step issues (whatever the number of parameters).
    pub fn ops_per_step(&self) -> u64 {
        self.arithmetic.ops_per_step()
    }

    /// Each parameter's view into `flat`, under `adam.<kind>.<param>`.
    fn views(&self, kind: &str, flat: &Tensor) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.slots)
            .map(|(n, slot)| (format!("adam.{kind}.{n}"), slot.view(flat)))
            .collect()
    }

    /// The moments under `adam.exp_avg.<param>` and `adam.exp_avg_sq.<param>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut all = self.views("exp_avg", &self.exp_avg);
        all.extend(self.views("exp_avg_sq", &self.exp_avg_sq));
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
        for (key, dst) in self.state() {
            match saved.remove(&key) {
                Some(src) if src.size() == dst.size() => staged.push((dst, src)),
                Some(src) => bail_input!(
                    "{source}: {key} has shape {:?}, the parameter {:?}",
                    src.size(),
                    dst.size()
                ),
                None => bail_input!("{source}: optimizer state {key} missing"),
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

    /// All gradients, flat (the fp16 loss scaler unscales and checks them in one go).
    pub fn gradients(&self) -> &Tensor {
        &self.grads
    }

    pub fn zero_grad(&mut self) {
        let _ = self.grads.zero_();
    }

    /// One update with the given learning rate and beta1, as PyTorch's default Adam computes it
    /// on this device.
    pub fn step(&mut self, lr: f64, beta1: f64) {
        self.steps += 1;
        let step = self.steps as f64;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - self.beta2.powf(step);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        tch::no_grad(|| {
            let _ = self.exp_avg.lerp_(&self.grads, 1.0 - beta1);
            let _ = self.exp_avg_sq.g_mul_scalar_(self.beta2);
            match self.arithmetic {
                Arithmetic::SingleTensor => {
                    self.single_tensor_rest(step_size, bias_correction2_sqrt)
                }
                Arithmetic::Foreach => self.foreach_rest(step_size, bias_correction2_sqrt),
            }
        });
    }

    /// The single-tensor step after the moments' decay, op for op.
    fn single_tensor_rest(&mut self, step_size: f64, bias_correction2_sqrt: f64) {
        let (grad, scratch, denom) = (&self.grads, &mut self.scratch, &mut self.denom);
        // addcmul_(grad, grad, value=1-beta2) computes (value * grad) * grad + v.
        // A 0-dim factor: libtorch's scalar `mul.out` is eight times slower here, and the
        // same multiplication.
        let _ = grad.mul_out(scratch, &self.sq_factor);
        let _ = self.exp_avg_sq.addcmul_(scratch, grad);
        let _ = self.exp_avg_sq.sqrt_out(denom);
        let _ = denom.g_div_scalar_(bias_correction2_sqrt);
        let _ = denom.g_add_scalar_(self.eps);
        // addcdiv_(m, denom, value=-step_size) computes (value * m) / denom + p.
        let _ = self.exp_avg.mul_out(scratch, &Tensor::from(-step_size));
        let _ = scratch.g_div_(denom);
        let _ = self.params.g_add_(scratch);
    }

    /// The foreach step after the moments' decay, op for op: `_foreach_addcmul_(v, g, g,
    /// 1-beta2)` is fma(1-beta2, g*g, v), and `_foreach_addcdiv_(p, m, d, -step_size)`
    /// fma(-step_size, m/d, p); `addcmul_` with a factor tensor and no scalar is that fma.
    fn foreach_rest(&mut self, step_size: f64, bias_correction2_sqrt: f64) {
        let (grad, scratch, denom) = (&self.grads, &mut self.scratch, &mut self.denom);
        let _ = grad.mul_out(scratch, grad);
        let _ = self.exp_avg_sq.addcmul_(scratch, &self.sq_factor);
        let _ = self.exp_avg_sq.sqrt_out(denom);
        let _ = self.divisor.fill_(bias_correction2_sqrt);
        let _ = denom.g_div_(&self.divisor);
        let _ = denom.g_add_scalar_(self.eps);
        let _ = self.exp_avg.div_out(scratch, denom);
        let _ = self.step_factor.fill_(-step_size);
        let _ = self.params.addcmul_(scratch, &self.step_factor);
    }
}

/// Gives every parameter a gradient and moves each into its view of `grads`: from then on
/// backward accumulates into the flat buffer (a defined gradient is added to in place), which
/// `zero_grad` clears in one operation.
fn adopt_gradients(params: &[Tensor], slots: &[Slot], grads: &Tensor) {
    let trained: Vec<(&Tensor, &Slot)> = params
        .iter()
        .zip(slots)
        .filter(|(p, _)| p.requires_grad())
        .collect();
    if trained.is_empty() {
        return;
    }
    tch::with_grad(|| {
        let touch: Tensor = trained.iter().map(|(p, _)| p.sum(Kind::Float)).sum();
        (touch * 0.0).backward();
    });
    for (p, slot) in trained {
        p.grad().set_data(&slot.view(grads));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOAT: (Kind, tch::Device) = (Kind::Float, tch::Device::Cpu);

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

    /// Today's flat update against the per-tensor one it replaced (PyTorch's single-tensor
    /// Adam, op for op), over parameters of several shapes and layouts: bit for bit.
    #[test]
    fn flat_steps_equal_per_tensor_steps_bit_for_bit() {
        let _generator = crate::test_generator::lock();
        fn per_tensor_step(p: &mut Tensor, m: &mut Tensor, v: &mut Tensor, t: f64, lr: f64) {
            let (beta1, beta2) = (0.9, 0.999);
            let grad = p.grad();
            tch::no_grad(|| {
                let _ = m.lerp_(&grad, 1.0 - beta1);
                let _ = v.g_mul_scalar_(beta2);
                let _ = v.addcmul_(&(&grad * (1.0 - beta2)), &grad);
                let denom = (v.sqrt() / (1.0 - beta2.powf(t)).sqrt()).g_add_scalar_(1e-8);
                let _ = p.g_add_(&((&*m * -(lr / (1.0 - beta1.powf(t)))) / denom));
            });
        }
        let shapes: [&[i64]; 4] = [&[37, 5, 3, 3], &[37], &[257, 300], &[1]];
        tch::manual_seed(3);
        let mut reference: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, FLOAT)).collect();
        reference[0] = crate::model::vgg16::channels_last(&reference[0]);
        let mut reference: Vec<Tensor> = reference
            .into_iter()
            .map(|p| p.set_requires_grad(true))
            .collect();
        assert_ne!(
            reference[0].stride(),
            vec![45, 9, 3, 1],
            "a channels-last parameter"
        );
        // Copies keep the channels-last layout (zeros_like preserves it).
        let flat_params: Vec<Tensor> = reference
            .iter()
            .map(|p| p.detach().copy().set_requires_grad(true))
            .collect();
        let named = flat_params
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("p{i}"), p.shallow_clone()))
            .collect();
        let mut adam = Adam::new(named);
        let mut m: Vec<Tensor> = reference.iter().map(|p| p.zeros_like()).collect();
        let mut v: Vec<Tensor> = reference.iter().map(|p| p.zeros_like()).collect();
        for step in 1..=5 {
            let weights: Vec<Tensor> = shapes
                .iter()
                .map(|s| Tensor::randn(*s, FLOAT) * 1e-3)
                .collect();
            let loss = |ps: &[Tensor]| -> Tensor {
                ps.iter()
                    .zip(&weights)
                    .map(|(p, w)| (p * p * w).sum(Kind::Float))
                    .sum()
            };
            for p in &mut reference {
                p.zero_grad();
            }
            loss(&reference).backward();
            for ((p, m), v) in reference.iter_mut().zip(&mut m).zip(&mut v) {
                per_tensor_step(p, m, v, step as f64, 1e-2);
            }
            adam.zero_grad();
            loss(&flat_params).backward();
            adam.step(1e-2, 0.9);
        }
        for (i, (want, got)) in reference.iter().zip(&flat_params).enumerate() {
            assert_eq!(got.stride(), want.stride(), "p{i} keeps its layout");
            assert!(got.detach().equal(&want.detach()), "p{i} differs");
        }
    }

    /// The foreach arithmetic (CUDA's) run on the CPU, where no kernel fuses its
    /// multiply-adds: the same steps as the single-tensor arithmetic within rounding, in every
    /// parameter. Whether it rounds as PyTorch's foreach Adam does is for a GPU to tell
    /// (`cuda_adam_steps_equal_pytorchs_foreach_adam`).
    #[test]
    fn foreach_arithmetic_takes_the_single_tensor_steps_within_rounding() {
        let _generator = crate::test_generator::lock();
        tch::manual_seed(5);
        let start = Tensor::randn([4096], FLOAT);
        let run = |arithmetic| {
            let p = start.copy().set_requires_grad(true);
            let mut adam = Adam::new(vec![("p".into(), p.shallow_clone())]);
            adam.arithmetic = arithmetic;
            tch::manual_seed(6);
            for step in 0..5 {
                adam.zero_grad();
                let weights = Tensor::randn([4096], FLOAT) * 1e-3;
                (&p * &p * weights).sum(Kind::Float).backward();
                adam.step(1e-2 * (1.0 + step as f64), 0.9 - 0.01 * step as f64);
            }
            p.detach()
        };
        let (single, foreach) = (run(Arithmetic::SingleTensor), run(Arithmetic::Foreach));
        assert!(!single.equal(&start), "the steps moved the parameters");
        let worst = (&single - &foreach).abs().max().double_value(&[]);
        assert!(
            worst < 1e-5,
            "foreach and single-tensor steps differ by {worst}"
        );
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
        let p = Tensor::zeros([2], FLOAT);
        let mut adam = Adam::new(vec![("w".into(), p)]);
        let err = adam.load_state(&mut HashMap::new(), 1, "ckpt").unwrap_err();
        assert!(err.to_string().contains("adam.exp_avg.w"), "{err}");
    }

    #[test]
    fn dense_layouts_keep_their_strides_and_others_become_contiguous() {
        let t = Tensor::zeros([2, 3, 4, 5], FLOAT);
        assert_eq!(dense_strides(&t), vec![60, 20, 5, 1]);
        let channels_last = crate::model::vgg16::channels_last(&t);
        assert_eq!(dense_strides(&channels_last), vec![60, 1, 15, 3]);
        // a transposed matrix is dense too; a size-1 dimension's stride does not matter
        assert_eq!(
            dense_strides(&Tensor::zeros([3, 4], FLOAT).tr()),
            vec![1, 4]
        );
        let column = Tensor::zeros([4, 1], FLOAT).as_strided([4, 1], [1, 7], None);
        assert_eq!(dense_strides(&column), vec![1, 7]);
        // a view with gaps (the first 2 of every 5 elements) is laid out afresh
        let gappy = t.narrow(3, 0, 2);
        assert_eq!(dense_strides(&gappy), vec![24, 8, 2, 1]);
    }

    #[test]
    fn the_flat_gradients_are_the_parameters_gradients() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let q = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let adam = Adam::new(vec![
            ("p".into(), p.shallow_clone()),
            ("q".into(), q.shallow_clone()),
        ]);
        ((&p * 2.0).sum(Kind::Float) + (&q * &q).sum(Kind::Float)).backward();
        let flat = Vec::<f32>::try_from(adam.gradients()).unwrap();
        assert_eq!(flat, [2.0, 2.0, 6.0]);
    }

    #[test]
    fn a_moment_of_another_shape_is_refused_by_name() {
        let mut adam = Adam::new(vec![("w".into(), Tensor::zeros([2], FLOAT))]);
        let mut saved: HashMap<String, Tensor> = adam
            .state()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        saved.insert("adam.exp_avg.w".into(), Tensor::ones([2], FLOAT));
        saved.insert("adam.exp_avg_sq.w".into(), Tensor::zeros([3], FLOAT));
        let err = adam.load_state(&mut saved, 1, "ckpt").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("adam.exp_avg_sq.w") && text.contains("[3]"),
            "{text}"
        );
        assert_eq!(adam.steps(), 0, "nothing restored");
        let moment = adam.exp_avg.sum(Kind::Float).double_value(&[]);
        assert_eq!(moment, 0.0, "nothing copied");
    }
}
