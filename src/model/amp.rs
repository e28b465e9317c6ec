//! Mixed precision: the type the model computes in. libtorch's autocast as tch exposes it is
//! CUDA-only and fp16-only, so the model casts instead: convolutions and linear layers run in
//! the low-precision type on low-precision copies of the fp32 master weights (autograd carries
//! the gradients back to fp32); BatchNorm, the loss and the optimizer stay fp32. fp16 needs
//! dynamic loss scaling (`optim::loss_scaler`); bf16 has fp32's range and needs none.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::bail_input;
use crate::device;

/// `--amp`: the type the model computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Amp {
    /// fp32 throughout, as the recipe
    #[default]
    Off,
    /// float16 compute with dynamic loss scaling (CUDA)
    Fp16,
    /// bfloat16 compute
    Bf16,
}

impl Amp {
    /// The compute type of convolutions and linear layers; `None` for fp32.
    pub fn compute_kind(self) -> Option<Kind> {
        match self {
            Amp::Off => None,
            Amp::Fp16 => Some(Kind::Half),
            Amp::Bf16 => Some(Kind::BFloat16),
        }
    }

    /// fp16 runs on CUDA only (its loss scaling and half-precision kernels are GPU paths);
    /// bf16 on CUDA needs a GPU with bf16 tensor cores.
    pub fn check_device(self, device: Device) -> Result<()> {
        match (self, device) {
            (Amp::Fp16, Device::Cpu) => {
                bail_input!("--amp fp16 needs a CUDA device; on the CPU use --amp bf16 or off")
            }
            (Amp::Bf16, Device::Cuda(n)) => match device::cuda_capability(n) {
                Some((name, capability)) => bf16_on(&name, capability),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// bf16 on the GPU `name` of compute `capability`: GPUs before compute capability 8.0 (a T4,
/// a V100) have no bf16 tensor cores, where bf16 fails or runs far slower than fp16.
fn bf16_on(name: &str, (major, minor): (i32, i32)) -> Result<()> {
    if major < 8 {
        bail_input!(
            "--amp bf16: {name} (compute capability {major}.{minor}) has no bf16 tensor cores, \
             so bf16 would fail or crawl there; use --amp fp16 on this GPU"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_kinds() {
        assert_eq!(Amp::Off.compute_kind(), None);
        assert_eq!(Amp::Fp16.compute_kind(), Some(Kind::Half));
        assert_eq!(Amp::Bf16.compute_kind(), Some(Kind::BFloat16));
    }

    #[test]
    fn bf16_needs_a_gpu_with_bf16_tensor_cores() {
        let err = bf16_on("Tesla T4", (7, 5)).unwrap_err().to_string();
        assert!(
            err.contains("Tesla T4 (compute capability 7.5)") && err.contains("--amp fp16"),
            "{err}"
        );
        assert!(bf16_on("NVIDIA A100-SXM4-40GB", (8, 0)).is_ok());
        assert!(bf16_on("NVIDIA H200", (9, 0)).is_ok());
    }

    #[test]
    fn fp16_needs_cuda() {
        assert!(Amp::Fp16.check_device(Device::Cpu).is_err());
        assert!(Amp::Bf16.check_device(Device::Cpu).is_ok());
        assert!(Amp::Fp16.check_device(Device::Cuda(0)).is_ok());
    }
}
