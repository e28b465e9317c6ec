//! VGG16 with the recipe's replaced classifier: the architecture as data plus one loop, tensors
//! named as in the original program's `state_dict()` (torchvision names under `vgg16.`).

use std::collections::HashMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::bail_input;

/// Prefix of every tensor name: the original program wraps the VGG16 as attribute `vgg16`.
pub const PREFIX: &str = "vgg16.";

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

/// Which part of a weights file to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightScope {
    /// `features.*` only (ImageNet weights: their classifier is not ours).
    Features,
    /// Every tensor, and nothing else.
    All,
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

    /// The parameters that currently require gradients, with their full names, in model order.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        self.tensors
            .iter()
            .filter(|n| n.tensor.requires_grad())
            .map(|n| (format!("{PREFIX}{}", n.name), n.tensor.shallow_clone()))
            .collect()
    }

    /// Every tensor under its `state_dict()` name, in model order (shared storage, no copies).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.tensors
            .iter()
            .map(|n| (format!("{PREFIX}{}", n.name), n.tensor.shallow_clone()))
            .collect()
    }

    /// Copies `part` of named tensors (names with or without the `vgg16.` prefix) into the model.
    /// Every required tensor is checked for presence, shape and kind before anything is copied,
    /// so a failed load leaves the model as it was. `source` names the file in errors.
    pub fn load_weights(
        &mut self,
        named: Vec<(String, Tensor)>,
        part: WeightScope,
        source: &str,
    ) -> Result<()> {
        let mut by_name: HashMap<String, Tensor> = HashMap::new();
        for (name, tensor) in named {
            let bare = name.strip_prefix(PREFIX).unwrap_or(&name).to_string();
            by_name.insert(bare, tensor);
        }
        let wanted = |n: &ModelTensor| part == WeightScope::All || n.name.starts_with("features.");
        let mut staged = Vec::new();
        for (i, n) in self.tensors.iter().enumerate().filter(|(_, n)| wanted(n)) {
            let Some(src) = by_name.remove(&n.name) else {
                bail_input!(
                    "{source}: tensor {PREFIX}{} (or {}) missing; is this a VGG16 checkpoint?",
                    n.name,
                    n.name
                );
            };
            if src.size() != n.tensor.size() {
                bail_input!(
                    "{source}: tensor {} has shape {:?}, the model needs {:?}",
                    n.name,
                    src.size(),
                    n.tensor.size()
                );
            }
            let src_float = src.is_floating_point();
            let dst_float = n.tensor.is_floating_point();
            if src_float != dst_float {
                bail_input!(
                    "{source}: tensor {} has kind {:?}, the model needs {:?}",
                    n.name,
                    src.kind(),
                    n.tensor.kind()
                );
            }
            staged.push((i, src));
        }
        if part == WeightScope::All {
            if let Some(extra) = by_name.keys().min() {
                bail_input!(
                    "{source}: unexpected tensor {extra} ({} unexpected in all); not a checkpoint of this model",
                    by_name.len()
                );
            }
        }
        tch::no_grad(|| {
            for (i, src) in staged {
                let dst = &mut self.tensors[i].tensor;
                dst.copy_(&src.to_kind(dst.kind()).to_device(dst.device()));
            }
        });
        self.refresh_casts();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_shapes_are_the_original_programs() {
        let _generator = crate::test_generator::lock();
        let model = Vgg16::new(200, Device::Cpu);
        let state = model.state();
        let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        let convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];
        for i in convs {
            assert!(names.contains(&format!("vgg16.features.{i}.weight").as_str()));
        }
        assert_eq!(names.len(), convs.len() * 2 + 3 * 2 + 2 * 5);
        let shape = |n: &str| state.iter().find(|(k, _)| k == n).unwrap().1.size();
        assert_eq!(shape("vgg16.features.28.weight"), vec![512, 512, 3, 3]);
        assert_eq!(shape("vgg16.classifier.0.weight"), vec![512, 25088]);
        assert_eq!(shape("vgg16.classifier.8.weight"), vec![200, 512]);
        assert_eq!(
            shape("vgg16.classifier.6.num_batches_tracked"),
            Vec::<i64>::new()
        );
    }

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

    /// The compute-type copies of frozen weights follow what is loaded and what trains.
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

    #[test]
    fn load_checks_everything_before_copying() {
        let _generator = crate::test_generator::lock();
        let mut a = Vgg16::new(5, Device::Cpu);
        let b = Vgg16::new(5, Device::Cpu);
        let mut named = b.state();
        // unprefixed names are accepted
        for (n, _) in named.iter_mut() {
            *n = n.strip_prefix(PREFIX).unwrap().to_string();
        }
        a.load_weights(named, WeightScope::All, "b").unwrap();
        let w = |m: &Vgg16| m.state()[0].1.copy();
        assert_eq!(w(&a), w(&b));

        let c = Vgg16::new(5, Device::Cpu);
        let mut bad = c.state();
        let last = bad.len() - 1;
        bad[last].1 = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let err = a
            .load_weights(bad, WeightScope::All, "c.safetensors")
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.safetensors"), "{err}");
        // nothing copied: a still holds b's weights
        assert_eq!(w(&a), w(&b));

        let other = Vgg16::new(9, Device::Cpu);
        let err = a
            .load_weights(other.state(), WeightScope::All, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("classifier.8.weight"), "{err}");
        // features alone load from a model with another head
        a.load_weights(other.state(), WeightScope::Features, "x")
            .unwrap();
        assert_eq!(w(&a), w(&other));
    }
}
