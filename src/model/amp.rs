//! Mixed precision: the type the model computes in. libtorch's autocast as tch exposes it is
//! CUDA-only and fp16-only, so the model casts instead: convolutions and linear layers run in
//! the low-precision type on low-precision copies of the fp32 master weights (autograd carries
//! the gradients back to fp32); BatchNorm, the loss and the optimizer stay fp32. fp16 needs
//! dynamic loss scaling (`optim::loss_scaler`); bf16 has fp32's range and needs none.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::bail_input;

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

    /// fp16 runs on CUDA only (its loss scaling and half-precision kernels are GPU paths).
    pub fn check_device(self, device: Device) -> Result<()> {
        if self == Amp::Fp16 && device == Device::Cpu {
            bail_input!("--amp fp16 needs a CUDA device; on the CPU use --amp bf16 or off");
        }
        Ok(())
    }
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
    fn fp16_needs_cuda() {
        assert!(Amp::Fp16.check_device(Device::Cpu).is_err());
        assert!(Amp::Bf16.check_device(Device::Cpu).is_ok());
        assert!(Amp::Fp16.check_device(Device::Cuda(0)).is_ok());
    }
}
