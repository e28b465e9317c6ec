//! VGG16 with the recipe's replaced classifier: the architecture as data plus one loop, tensors
//! named as in the original program's `state_dict()` (torchvision names under `vgg16.`).
//! `weights` lists and loads the tensors under those names; `batch_norm` keeps the head's
//! BatchNorm statistics aside and recalibrates them.

mod batch_norm;
pub mod weights;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// torchvision's VGG16 "D" configuration: conv3x3 output channels, `None` for a 2x2 max-pool.
const FEATURES: [Option<i64>; 18] = [
    Some(64),
    Some(64),
    None,
    Some(128),
    Some(128),
    None,
    Some(256),
    Some(256),
    Some(256),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
];
/// `AdaptiveAvgPool2d((7, 7))` output, flattened: the head's input width.
const POOLED: i64 = 512 * 7 * 7;
/// Width of the new head's hidden layers.
const HIDDEN: i64 = 512;
const DROPOUT: f64 = 0.5;
const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;

/// Which parameters train: the head only (stage 1), or everything (stage 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Base,
    Finetune,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Base => "base",
            Stage::Finetune => "finetune",
        }
    }
}

/// A tensor of the model under its name (without the `vgg16.` prefix).
struct ModelTensor {
    name: String,
    tensor: Tensor,
    /// Parameters train; buffers (BatchNorm running statistics) do not.
    parameter: bool,
}

enum Layer {
    /// Indices into `Vgg16::tensors` of weight and bias.
    Conv(usize, usize),
    MaxPool,
}

/// `Linear` weight/bias and `BatchNorm1d` indices into `Vgg16::tensors`.
struct Head {
    fc: [(usize, usize); 3],
    bn: [BatchNorm; 2],
}

/// Indices into `Vgg16::tensors` of a `BatchNorm1d`'s tensors.
#[derive(Debug, Clone, Copy)]
struct BatchNorm {
    weight: usize,
    bias: usize,
    running_mean: usize,
    running_var: usize,
    num_batches_tracked: usize,
}

pub struct Vgg16 {
    tensors: Vec<ModelTensor>,
    features: Vec<Layer>,
    head: Head,
    dropout: f64,
    /// Type of convolutions and linear layers under mixed precision; `None` computes in fp32.
    compute: Option<Kind>,
    /// Under mixed precision, copies in the compute type of the parameters that do not train,
    /// made once (`refresh_casts`) instead of at every forward; indexed like `tensors`.
    casts: Vec<Option<Tensor>>,
}

/// How the head runs: training (batch statistics, running update, dropout), eval (running
/// statistics), or BatchNorm recalibration (batch statistics, running update, no dropout).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Train,
    Eval,
    Calibrate { momentum: f64 },
}

/// The same values with channels-last (NHWC) strides, the layout oneDNN and cuDNN run
/// convolutions fastest in (30 % faster for stage 1 on a 2-core CPU, in PyTorch as here).
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// The model's tensors as they are created, in `state_dict()` order, on the CPU.
#[derive(Default)]
struct Builder {
    tensors: Vec<ModelTensor>,
}

impl Builder {
    /// Adds a tensor; returns its index.
    fn add(&mut self, name: String, tensor: Tensor, parameter: bool) -> usize {
        self.tensors.push(ModelTensor {
            name,
            tensor,
            parameter,
        });
        self.tensors.len() - 1
    }

    /// The convolutional trunk of `FEATURES`, weights kaiming-normal (fan-out), biases zero.
    fn features(&mut self) -> Vec<Layer> {
        let opts = (Kind::Float, Device::Cpu);
        let mut layers = Vec::new();
        let (mut in_ch, mut index) = (3, 0);
        for layer in FEATURES {
            let Some(out_ch) = layer else {
                layers.push(Layer::MaxPool);
                index += 1;
                continue;
            };
            let std = (2.0 / (out_ch * 9) as f64).sqrt();
            let w = channels_last(&Tensor::empty([out_ch, in_ch, 3, 3], opts).normal_(0.0, std));
            let w = self.add(format!("features.{index}.weight"), w, true);
            let bias = Tensor::zeros([out_ch], opts);
            let b = self.add(format!("features.{index}.bias"), bias, true);
            layers.push(Layer::Conv(w, b));
            in_ch = out_ch;
            index += 2; // conv, relu
        }
        layers
    }

    /// `Linear` at classifier `index`: kaiming-uniform weight, zero bias.
    fn linear(&mut self, index: usize, fan_in: i64, out: i64) -> (usize, usize) {
        let opts = (Kind::Float, Device::Cpu);
        let bound = (6.0 / fan_in as f64).sqrt();
        let w = Tensor::empty([out, fan_in], opts).uniform_(-bound, bound);
        let w = self.add(format!("classifier.{index}.weight"), w, true);
        let b = self.add(
            format!("classifier.{index}.bias"),
            Tensor::zeros([out], opts),
            true,
        );
        (w, b)
    }

    /// `BatchNorm1d(HIDDEN)` at classifier `index`: weight 1, bias 0, fresh statistics.
    fn batch_norm(&mut self, index: usize) -> BatchNorm {
        let opts = (Kind::Float, Device::Cpu);
        let name = |field: &str| format!("classifier.{index}.{field}");
        BatchNorm {
            weight: self.add(name("weight"), Tensor::ones([HIDDEN], opts), true),
            bias: self.add(name("bias"), Tensor::zeros([HIDDEN], opts), true),
            running_mean: self.add(name("running_mean"), Tensor::zeros([HIDDEN], opts), false),
            running_var: self.add(name("running_var"), Tensor::ones([HIDDEN], opts), false),
            num_batches_tracked: self.add(
                name("num_batches_tracked"),
                Tensor::zeros([], (Kind::Int64, Device::Cpu)),
                false,
            ),
        }
    }
}

impl Vgg16 {
    /// A fresh model on `device`: features initialised as torchvision does (kaiming-normal,
    /// fan-out), the head as the recipe says (kaiming-uniform linear weights, zero biases,
    /// BatchNorm 1/0). Draws from libtorch's CPU generator and then moves, as PyTorch programs
    /// build a model and call `.to(device)`: the same seed gives the same weights on any device.
    pub fn new(num_classes: i64, device: Device) -> Vgg16 {
        let mut b = Builder::default();
        let features = b.features();
        let fc = [
            b.linear(0, POOLED, HIDDEN),
            b.linear(4, HIDDEN, HIDDEN),
            b.linear(8, HIDDEN, num_classes),
        ];
        let bn = [b.batch_norm(2), b.batch_norm(6)];
        let mut tensors = b.tensors;
        for named in &mut tensors {
            named.tensor = named.tensor.to_device(device);
        }
        Vgg16 {
            casts: tensors.iter().map(|_| None).collect(),
            tensors,
            features,
            head: Head { fc, bn },
            dropout: DROPOUT,
            compute: None,
        }
    }

    /// Mixed precision: convolutions and linear layers compute in `kind` on cast copies of the
    /// fp32 weights; `None` for fp32 throughout.
    pub fn set_compute_kind(&mut self, kind: Option<Kind>) {
        self.compute = kind;
        self.refresh_casts();
    }

    /// Remakes the compute-type copies of the parameters that do not train, after their
    /// values, the compute type or the trained set changed.
    fn refresh_casts(&mut self) {
        let compute = self.compute;
        self.casts = self
            .tensors
            .iter()
            .map(|n| match compute {
                Some(kind) if n.parameter && !n.tensor.requires_grad() => {
                    Some(tch::no_grad(|| n.tensor.to_kind(kind)))
                }
                _ => None,
            })
            .collect();
    }

    /// `t` in the compute type (itself in fp32 mode).
    fn compute(&self, t: &Tensor) -> Tensor {
        match self.compute {
            Some(kind) => t.to_kind(kind),
            None => t.shallow_clone(),
        }
    }

    /// Parameter `i` in the compute type: its copy made once if it does not train.
    fn weight(&self, i: usize) -> Tensor {
        match &self.casts[i] {
            Some(cast) => cast.shallow_clone(),
            None => self.compute(self.t(i)),
        }
    }

    /// Diagnostics: trains without dropout when `on` is false.
    pub fn set_dropout(&mut self, on: bool) {
        self.dropout = if on { DROPOUT } else { 0.0 };
    }

    /// The device the model's tensors are on.
    pub fn device(&self) -> Device {
        self.tensors[0].tensor.device()
    }

    fn t(&self, i: usize) -> &Tensor {
        &self.tensors[i].tensor
    }

    /// The convolutional trunk: (N, 3, H, W) -> (N, 512, H/32, W/32).
    pub fn features(&self, x: &Tensor) -> Tensor {
        let mut x = self.compute(x);
        for layer in &self.features {
            x = match *layer {
                Layer::Conv(w, b) => {
                    let (w, b) = (self.weight(w), self.weight(b));
                    x.conv2d(&w, Some(&b), [1, 1], [1, 1], [1, 1], 1).relu_()
                }
                Layer::MaxPool => x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            };
        }
        x
    }

    /// Pool, flatten and the new head: Linear-ReLU-BN-Dropout twice, then Linear; logits out.
    fn classifier(&self, features: &Tensor, mode: Mode) -> Tensor {
        let (batch_stats, momentum, dropout) = match mode {
            Mode::Train => (true, BN_MOMENTUM, self.dropout),
            Mode::Eval => (false, BN_MOMENTUM, 0.0),
            Mode::Calibrate { momentum } => (true, momentum, 0.0),
        };
        let linear = |x: &Tensor, (w, b): (usize, usize)| {
            self.compute(x)
                .linear(&self.weight(w), Some(&self.weight(b)))
        };
        let mut x = features.adaptive_avg_pool2d([7, 7]).flatten(1, -1);
        for (&fc, bn) in self.head.fc.iter().zip(&self.head.bn) {
            // BatchNorm runs in fp32 whatever the compute type, as under autocast.
            x = linear(&x, fc)
                .relu()
                .to_kind(Kind::Float)
                .batch_norm(
                    Some(self.t(bn.weight)),
                    Some(self.t(bn.bias)),
                    Some(self.t(bn.running_mean)),
                    Some(self.t(bn.running_var)),
                    batch_stats,
                    momentum,
                    BN_EPS,
                    true,
                )
                .dropout(dropout, mode == Mode::Train);
        }
        linear(&x, self.head.fc[2]).to_kind(Kind::Float)
    }

    /// Training-mode forward: batch statistics, running-statistics update, dropout.
    pub fn forward_train(&mut self, x: &Tensor) -> Tensor {
        let logits = self.classifier(&self.features(x), Mode::Train);
        for bn in &self.head.bn {
            // PyTorch counts batches even when a fixed momentum makes the count unused.
            let count = &self.tensors[bn.num_batches_tracked].tensor;
            let _ = count.shallow_clone().g_add_scalar_(1);
        }
        logits
    }

    /// Inference-mode forward: running statistics, no dropout, no autograd graph.
    pub fn forward_eval(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.classifier(&self.features(x), Mode::Eval))
    }

    /// Sets which parameters require gradients: the head in stage 1, everything in stage 2.
    pub fn set_stage(&mut self, stage: Stage) {
        for named in &self.tensors {
            let trains = named.parameter
                && (stage == Stage::Finetune || named.name.starts_with("classifier."));
            // In place: handles given out earlier see the change.
            let _ = named.tensor.set_requires_grad(trains);
        }
        self.refresh_casts();
    }
}

#[cfg(test)]
mod tests {
    use super::weights::WeightScope;
    use super::*;

    #[test]
    fn forward_shapes_and_stage_freezing() {
        let _generator = crate::test_generator::lock();
        let mut model = Vgg16::new(7, Device::Cpu);
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(model.features(&x).size(), vec![2, 512, 2, 2]);
        model.set_stage(Stage::Base);
        assert_eq!(model.trainable().len(), 10);
        assert!(model
            .trainable()
            .iter()
            .all(|(n, _)| n.starts_with("vgg16.classifier.")));
        let logits = model.forward_train(&x);
        assert_eq!(logits.size(), vec![2, 7]);
        logits.sum(Kind::Float).backward();
        for (name, t) in model.state() {
            let has_grad = t.grad().defined();
            assert_eq!(
                has_grad,
                name.starts_with("vgg16.classifier.")
                    && t.is_floating_point()
                    && !name.contains("running_"),
                "{name}"
            );
        }
        let count = |m: &Vgg16| {
            m.state()
                .into_iter()
                .find(|(n, _)| n == "vgg16.classifier.2.num_batches_tracked")
                .unwrap()
                .1
                .int64_value(&[])
        };
        assert_eq!(count(&model), 1);
        model.set_stage(Stage::Finetune);
        assert_eq!(model.trainable().len(), 26 + 10);
    }

    #[test]
    fn bf16_compute_stays_close_to_fp32_and_trains_fp32_weights() {
        let _generator = crate::test_generator::lock();
        let mut model = Vgg16::new(5, Device::Cpu);
        let x = Tensor::randn([3, 3, 64, 64], (Kind::Float, Device::Cpu));
        let fp32 = model.forward_eval(&x);
        model.set_compute_kind(Some(Kind::BFloat16));
        let bf16 = model.forward_eval(&x);
        assert_eq!(bf16.kind(), Kind::Float);
        let rel = ((&bf16 - &fp32).norm().double_value(&[])) / fp32.norm().double_value(&[]);
        // bf16 keeps 8 significant bits: a result equal to fp32's was not computed in bf16
        assert!(rel > 1e-4 && rel < 0.05, "relative difference {rel}");
        model.set_stage(Stage::Finetune);
        model.forward_train(&x).sum(Kind::Float).backward();
        for (name, t) in model.trainable() {
            assert_eq!(t.kind(), Kind::Float, "{name}");
            assert_eq!(t.grad().kind(), Kind::Float, "{name}");
        }
    }

    #[test]
    fn mixed_precision_computes_with_the_weights_loaded_last() {
        let _generator = crate::test_generator::lock();
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let bf16_model = |stage| {
            let mut m = Vgg16::new(5, Device::Cpu);
            m.set_stage(stage);
            m.set_compute_kind(Some(Kind::BFloat16));
            m
        };
        let (mut a, b) = (bf16_model(Stage::Base), bf16_model(Stage::Base));
        let _ = a.forward_eval(&x);
        a.load_weights(b.state(), WeightScope::All, "b").unwrap();
        assert!(
            a.forward_eval(&x).equal(&b.forward_eval(&x)),
            "stale copies after a load"
        );
        // Stage 2 trains the features: their copies must follow the updates.
        a.set_stage(Stage::Finetune);
        let before = a.forward_eval(&x);
        tch::no_grad(|| {
            let _ = a.tensors[0].tensor.shallow_clone().g_add_scalar_(0.5);
        });
        assert!(
            !a.forward_eval(&x).equal(&before),
            "stale copies of trained weights"
        );
    }
}
