//! What libtorch's CUDA caching allocator holds: the bytes of live tensors, and the bytes it
//! has taken from the device (those tensors plus the blocks it keeps cached for reuse). The
//! device's used memory adds the CUDA context and the libraries' own memory to the second.
//! Read through `allocator_stats.cpp`, built by build.rs.

use tch::Device;

use super::MIB;

extern "C" {
    fn vggtiny_cuda_allocator_bytes(device: i8, out: *mut i64) -> i32;
    fn vggtiny_cuda_allocator_restart(device: i8) -> i32;
}

/// The allocator's figures for one CUDA device, MiB; peaks since the process began or since
/// the last `restart_peaks`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocatorMemory {
    /// Held by tensors.
    pub allocated: f64,
    pub peak_allocated: f64,
    /// Taken from the device: tensors and the allocator's cache.
    pub reserved: f64,
    pub peak_reserved: f64,
}

/// The CUDA device index of `device`; `None` on the CPU.
fn cuda_index(device: Device) -> Option<i8> {
    match device {
        Device::Cuda(n) => i8::try_from(n).ok(),
        _ => None,
    }
}

/// The allocator's figures for `device`; `None` on the CPU and before CUDA is initialized.
pub fn allocator_memory(device: Device) -> Option<AllocatorMemory> {
    let index = cuda_index(device)?;
    let mut bytes = [0i64; 4];
    // SAFETY: the shim writes four int64 values into `bytes` and catches every C++ exception.
    let code = unsafe { vggtiny_cuda_allocator_bytes(index, bytes.as_mut_ptr()) };
    let [allocated, peak_allocated, reserved, peak_reserved] = bytes.map(|b| b as f64 / MIB);
    (code == 0).then_some(AllocatorMemory {
        allocated,
        peak_allocated,
        reserved,
        peak_reserved,
    })
}

/// Returns the allocator's cache to the device and starts its peaks again, so that the next
/// workload's peaks are its own. Whether the allocator did so (not on the CPU, nor before CUDA
/// is initialized).
pub fn restart_peaks(device: Device) -> bool {
    let Some(index) = cuda_index(device) else {
        return false;
    };
    // SAFETY: the shim catches every C++ exception.
    unsafe { vggtiny_cuda_allocator_restart(index) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_figures_without_an_initialized_cuda_allocator() {
        assert_eq!(allocator_memory(Device::Cpu), None);
        assert!(!restart_peaks(Device::Cpu));
        // Reaches the shim: on a machine without a GPU, libtorch's CUDA allocator (where the
        // build has one) is never initialized, and the shim says so instead of throwing.
        if !tch::Cuda::is_available() {
            assert_eq!(allocator_memory(Device::Cuda(0)), None);
            assert!(!restart_peaks(Device::Cuda(0)));
        }
    }
}
