//! The model's tensors under their `state_dict()` names (`vgg16.` and torchvision's): all of
//! them or those that train, listed for saving and for the optimizer, and a weights file's
//! loaded into them, checked before anything is copied.

use std::collections::HashMap;

use anyhow::Result;
use tch::Tensor;

use super::{ModelTensor, Vgg16};
use crate::bail_input;

/// Prefix of every tensor name: the original program wraps the VGG16 as attribute `vgg16`.
pub const PREFIX: &str = "vgg16.";

/// Which part of a weights file to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightScope {
    /// `features.*` only (ImageNet weights: their classifier is not ours).
    Features,
    /// Every tensor, and nothing else.
    All,
}

impl Vgg16 {
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
    use tch::{Device, Kind};

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
