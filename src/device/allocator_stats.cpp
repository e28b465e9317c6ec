// The CUDA caching allocator's byte counts, which tch has no binding for. Read through c10's
// device-generic allocator interface (the one torch.accelerator.memory_stats uses), so that
// no CUDA header is needed to build it: compiled by build.rs against the headers of the
// libtorch the crate links, as torch-sys compiles its own wrapper.
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

namespace {

// The CUDA allocator once CUDA is initialized in this process; nullptr before. Where
// libtorch was built without CUDA, c10 has no such allocator and throws.
c10::DeviceAllocator* cuda_allocator() {
  auto* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
  return allocator->initialized() ? allocator : nullptr;
}

}  // namespace

extern "C" {

// Writes, for CUDA device `device`, the bytes held by tensors now and at their peak, then the
// bytes the allocator holds from the device (tensors and its cache) now and at their peak,
// over all its pools. Returns 0, or 1 where there is no initialized CUDA allocator or it
// refuses the device.
int vggtiny_cuda_allocator_bytes(int8_t device, int64_t* out) noexcept {
  try {
    auto* allocator = cuda_allocator();
    if (allocator == nullptr) {
      return 1;
    }
    const auto stats = allocator->getDeviceStats(device);
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    out[0] = stats.allocated_bytes[all].current;
    out[1] = stats.allocated_bytes[all].peak;
    out[2] = stats.reserved_bytes[all].current;
    out[3] = stats.reserved_bytes[all].peak;
    return 0;
  } catch (...) {
    return 1;
  }
}

// Returns the allocator's cached blocks to the device, then starts its peaks again from the
// current counts of device `device`. Returns 0, or 1 as above.
int vggtiny_cuda_allocator_restart(int8_t device) noexcept {
  try {
    auto* allocator = cuda_allocator();
    if (allocator == nullptr) {
      return 1;
    }
    allocator->emptyCache();
    allocator->resetPeakStats(device);
    return 0;
  } catch (...) {
    return 1;
  }
}

}  // extern "C"
