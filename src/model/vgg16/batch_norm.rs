//! The head's BatchNorm running statistics: copied aside and put back (a training forward
//! updates them before its loss is known), and recalibrated over batches passed as at eval time.

use tch::Tensor;

use super::{BatchNorm, Mode, Vgg16};

impl BatchNorm {
    /// The statistics a training forward updates: running mean, running variance, count.
    fn statistics(&self) -> [usize; 3] {
        [
            self.running_mean,
            self.running_var,
            self.num_batches_tracked,
        ]
    }
}

impl Vgg16 {
    /// Precise BatchNorm: replaces the head's running statistics by their exact average over
    /// `batches` (normalised images) passed as at eval time, without dropout. The recipe's head
    /// normalises activations that dropout rescales in training only, so the running statistics
    /// it learns do not match what the layers see at eval time.
    pub fn recalibrate_batch_norm(&mut self, batches: impl Iterator<Item = Tensor>) {
        tch::no_grad(|| {
            for bn in &self.head.bn {
                let _ = self.tensors[bn.running_mean].tensor.shallow_clone().zero_();
                let _ = self.tensors[bn.running_var]
                    .tensor
                    .shallow_clone()
                    .fill_(1.0);
            }
            for (k, x) in batches.enumerate() {
                // Momentum 1/k turns the running update into a cumulative average.
                let momentum = 1.0 / (k + 1) as f64;
                let _ = self.classifier(&self.features(&x), Mode::Calibrate { momentum });
            }
        });
    }

    /// Copies of the head's BatchNorm statistics (running mean, running variance, batch
    /// count of both layers): a training forward updates them before its loss is known.
    pub fn batch_norm_statistics(&self) -> Vec<Tensor> {
        self.head
            .bn
            .iter()
            .flat_map(|bn| bn.statistics().map(|i| self.t(i).copy()))
            .collect()
    }

    /// Puts back what `batch_norm_statistics` copied.
    pub fn set_batch_norm_statistics(&mut self, saved: &[Tensor]) {
        let indices: Vec<usize> = self.head.bn.iter().flat_map(|bn| bn.statistics()).collect();
        tch::no_grad(|| {
            for (i, src) in indices.into_iter().zip(saved) {
                self.tensors[i].tensor.copy_(src);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn recalibration_averages_batch_statistics_without_dropout() {
        let _generator = crate::test_generator::lock();
        let mut model = Vgg16::new(4, Device::Cpu);
        let a = Tensor::randn([6, 3, 64, 64], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([6, 3, 64, 64], (Kind::Float, Device::Cpu)) * 2.0 + 1.0;
        model.recalibrate_batch_norm([a.shallow_clone(), b.shallow_clone()].into_iter());
        // Input of the first BatchNorm: Linear then ReLU on the pooled features.
        let (w, bias) = model.head.fc[0];
        let pre = |x: &Tensor| {
            model
                .features(x)
                .adaptive_avg_pool2d([7, 7])
                .flatten(1, -1)
                .linear(model.t(w), Some(model.t(bias)))
                .relu()
        };
        let (pa, pb) = (pre(&a), pre(&b));
        let mean = (pa.mean_dim(0, false, Kind::Float) + pb.mean_dim(0, false, Kind::Float)) / 2.0;
        let var = (pa.var_dim(0, true, false) + pb.var_dim(0, true, false)) / 2.0;
        let bn = model.head.bn[0];
        assert!(model.t(bn.running_mean).allclose(&mean, 1e-4, 1e-5, false));
        assert!(model.t(bn.running_var).allclose(&var, 1e-4, 1e-5, false));
        // the batch counter is a training statistic and stays untouched
        assert_eq!(model.t(bn.num_batches_tracked).int64_value(&[]), 0);
    }

    #[test]
    fn batch_norm_statistics_are_put_back() {
        let _generator = crate::test_generator::lock();
        let mut model = Vgg16::new(4, Device::Cpu);
        let saved = model.batch_norm_statistics();
        assert_eq!(saved.len(), 6);
        let x = Tensor::full([3, 3, 64, 64], f64::NAN, (Kind::Float, Device::Cpu));
        let _ = model.forward_train(&x);
        let var = |m: &Vgg16| m.t(m.head.bn[0].running_var).shallow_clone();
        assert!(
            var(&model).isnan().any().int64_value(&[]) == 1,
            "a NaN batch spoils them"
        );
        model.set_batch_norm_statistics(&saved);
        assert!(var(&model).equal(&saved[1]));
        assert_eq!(
            model
                .t(model.head.bn[1].num_batches_tracked)
                .int64_value(&[]),
            0
        );
    }
}
