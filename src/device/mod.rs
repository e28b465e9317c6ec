//! The device a command runs on: choosing it from `--device`, naming it, waiting for it, how
//! much of its memory this process holds (`allocator`: how much of it tensors hold), and
//! (`gpu_timeline`) how long a GPU sat idle.

use std::ffi::c_void;
use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::bail_input;

pub mod allocator;
pub mod gpu_timeline;

/// Bytes in a MiB, the unit of every memory figure here.
const MIB: f64 = 1024.0 * 1024.0;

/// CUDA devices libtorch can use (0 without a GPU or without CUDA support in the build).
fn cuda_count() -> i64 {
    if tch::Cuda::is_available() {
        tch::Cuda::device_count()
    } else {
        0
    }
}

/// What `--device` asks for, parsed where the command line is read and opened once, by
/// `open`. `meta.json` records it as it was written (`auto`, `cpu`, `cuda`, `cuda:N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DeviceChoice {
    /// The first CUDA device when one is usable, else the CPU.
    Auto,
    Cpu,
    /// A CUDA device: `cuda` (`None`, the first) or `cuda:N`.
    Cuda(Option<usize>),
}

impl DeviceChoice {
    /// The choice that names `device`.
    pub fn of(device: Device) -> DeviceChoice {
        match device {
            Device::Cuda(n) => DeviceChoice::Cuda(Some(n)),
            _ => DeviceChoice::Cpu,
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<DeviceChoice, String> {
        match text {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(None)),
            _ => match text.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(Some(n))),
                _ => Err(format!("{text:?}: expected auto, cpu, cuda or cuda:N")),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(None) => write!(f, "cuda"),
            DeviceChoice::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<DeviceChoice> for String {
    fn from(choice: DeviceChoice) -> String {
        choice.to_string()
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;

    fn try_from(text: String) -> Result<DeviceChoice, String> {
        text.parse()
    }
}

/// The device `choice` names, said on stderr (with why there is no GPU when `auto` finds
/// none). An explicit CUDA request without a usable GPU is an error, never a silent CPU run.
pub fn open(choice: DeviceChoice) -> anyhow::Result<Device> {
    let device = resolve(choice)?;
    eprintln!("device: {}", describe(device));
    if device == Device::Cpu && choice == DeviceChoice::Auto {
        if let Some(why) = why_no_gpu() {
            eprintln!("note: {why}");
        }
    }
    Ok(device)
}

fn resolve(choice: DeviceChoice) -> anyhow::Result<Device> {
    let n = match choice {
        DeviceChoice::Cpu => return Ok(Device::Cpu),
        DeviceChoice::Auto if cuda_count() > 0 => return Ok(Device::Cuda(0)),
        DeviceChoice::Auto => return Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => n.unwrap_or(0),
    };
    let count = cuda_count();
    if count == 0 {
        let why = why_no_gpu().unwrap_or_else(|| "this machine has no NVIDIA GPU".into());
        bail_input!("--device {choice}: no usable CUDA device: {why}");
    }
    if n as i64 >= count {
        bail_input!("--device {choice}: only {count} CUDA device(s) present");
    }
    Ok(Device::Cuda(n))
}

/// What the NVIDIA driver says of the machine: its version (from the loaded kernel module)
/// and the newest CUDA version it supports (from `libcuda`); `None` without an NVIDIA driver.
fn nvidia_driver() -> Option<(String, Option<i32>)> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    let version = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        .unwrap_or("unknown")
        .to_string();
    type DriverGetVersion = unsafe extern "C" fn(*mut i32) -> i32;
    let cuda = driver_symbol(c"cuDriverGetVersion").and_then(|sym| {
        let mut v = 0;
        // SAFETY: `cuDriverGetVersion(int*)` as declared in cuda.h; it needs no
        // initialisation.
        let got = unsafe { std::mem::transmute::<*mut c_void, DriverGetVersion>(sym)(&mut v) };
        (got == 0).then_some(v)
    });
    Some((version, cuda))
}

/// The CUDA runtime's own account of why it sees no device, as `cudaGetErrorString` words
/// it; `None` when the runtime is not loaded (a libtorch built without CUDA).
fn cuda_runtime_error() -> Option<String> {
    type GetDeviceCount = unsafe extern "C" fn(*mut i32) -> i32;
    type GetErrorString = unsafe extern "C" fn(i32) -> *const libc::c_char;
    // SAFETY: symbols of the CUDA runtime libtorch loaded, called as cuda_runtime_api.h
    // declares them; the error string is a static C string.
    unsafe {
        let count = libc::dlsym(libc::RTLD_DEFAULT, c"cudaGetDeviceCount".as_ptr());
        let words = libc::dlsym(libc::RTLD_DEFAULT, c"cudaGetErrorString".as_ptr());
        if count.is_null() || words.is_null() {
            return None;
        }
        let mut n = 0;
        let code = std::mem::transmute::<*mut c_void, GetDeviceCount>(count)(&mut n);
        let text = std::mem::transmute::<*mut c_void, GetErrorString>(words)(code);
        (code != 0 && !text.is_null()).then(|| {
            std::ffi::CStr::from_ptr(text)
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// Why there is no usable GPU although the machine has an NVIDIA driver; `None` on a machine
/// without one.
pub fn why_no_gpu() -> Option<String> {
    let (driver, driver_cuda) = nvidia_driver()?;
    Some(explain_unusable_gpu(
        &driver,
        driver_cuda,
        libtorch_version().as_deref(),
        cuda_runtime_error().as_deref(),
    ))
}

/// The sentence `why_no_gpu` prints: what the driver supports, what libtorch was built for,
/// what the runtime said, and what to do.
pub fn explain_unusable_gpu(
    driver: &str,
    driver_cuda: Option<i32>,
    libtorch: Option<&str>,
    runtime_error: Option<&str>,
) -> String {
    let supports = driver_cuda.map_or(String::new(), |v| {
        format!(" (supports CUDA up to {}.{})", v / 1000, v % 1000 / 10)
    });
    let libtorch = libtorch.unwrap_or("this libtorch");
    let fix = match driver_cuda.map(|v| v / 1000) {
        // CUDA's minor-version compatibility: a CUDA 12 driver runs any CUDA 12.x build.
        Some(12) => "install torch's CUDA 12 wheel: \
                     TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 scripts/build"
            .to_string(),
        Some(major) if major < 12 => format!(
            "this driver runs CUDA {major} at most, and torch 2.11 has no wheel that old: \
             update the NVIDIA driver (R525 or newer for CUDA 12, R580 for CUDA 13)"
        ),
        _ => "install a torch wheel built for this driver's CUDA (TORCH_INDEX_URL=... \
              scripts/build; the README's GPU section shows how)"
            .to_string(),
    };
    match runtime_error {
        None => format!(
            "an NVIDIA GPU is present (driver {driver}{supports}) but {libtorch} was built \
             without CUDA; {fix}"
        ),
        Some(error) => format!(
            "an NVIDIA GPU is present (driver {driver}{supports}) but {libtorch} cannot use \
             it: {error}; {fix}"
        ),
    }
}

/// Human name of a device for start-up lines and reports.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        other => format!("{other:?}"),
    }
}

/// Waits until every queued kernel on `device` has run (a no-op on the CPU).
pub fn synchronize(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// Free and total memory of a CUDA device, MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CudaMemory {
    pub free: f64,
    pub total: f64,
}

impl CudaMemory {
    pub fn used(&self) -> f64 {
        self.total - self.free
    }
}

/// Free and total memory of CUDA device `n` as the CUDA runtime that libtorch loaded reports
/// them (device-wide: other processes count too); `None` when that runtime is not loaded.
/// libtorch's caching allocator keeps what it once reserved, so the growth of `used` over a
/// workload is about the workload's peak reservation, plus what CUDA's libraries set up for
/// it (`allocator` splits the reservation from the tensors). Selects device `n` for the
/// calling thread's later CUDA runtime calls (the runtime answers for the current device only).
pub fn cuda_memory_mb(n: usize) -> Option<CudaMemory> {
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    let (set, get) = (
        loaded_symbol(c"cudaSetDevice")?,
        loaded_symbol(c"cudaMemGetInfo")?,
    );
    // SAFETY: calls the loaded CUDA runtime's functions as cuda_runtime_api.h declares them.
    // cudaSetDevice only selects the device this thread's later runtime calls refer to.
    unsafe {
        let set = std::mem::transmute::<*mut c_void, SetDevice>(set);
        let get = std::mem::transmute::<*mut c_void, MemGetInfo>(get);
        if !runtime_succeeded(set(n as i32)) {
            return None;
        }
        let (mut free, mut total) = (0usize, 0usize);
        runtime_succeeded(get(&mut free, &mut total)).then(|| CudaMemory {
            free: free as f64 / MIB,
            total: total as f64 / MIB,
        })
    }
}

/// The name and compute capability (major, minor) of CUDA device `n`, as the CUDA runtime
/// that libtorch loaded and the driver report them; `None` where the runtime does not answer.
pub fn cuda_capability(n: usize) -> Option<(String, (i32, i32))> {
    type Attribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
    // cudaDevAttrComputeCapabilityMajor and ...Minor (driver_types.h)
    const MAJOR: i32 = 75;
    const MINOR: i32 = 76;
    let attribute = loaded_symbol(c"cudaDeviceGetAttribute")?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: cudaDeviceGetAttribute(int*, cudaDeviceAttr, int) as cuda_runtime_api.h declares
    // it, writing into the two ints.
    let answered = unsafe {
        let attribute = std::mem::transmute::<*mut c_void, Attribute>(attribute);
        runtime_succeeded(attribute(&mut major, MAJOR, n as i32))
            && runtime_succeeded(attribute(&mut minor, MINOR, n as i32))
    };
    if !answered {
        return None;
    }
    let name = driver_device_name(n).unwrap_or_else(|| format!("cuda:{n}"));
    Some((name, (major, minor)))
}

/// The driver's name of CUDA device `n` ("Tesla T4"); `None` without the driver's answer.
fn driver_device_name(n: usize) -> Option<String> {
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Get = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type Name = unsafe extern "C" fn(*mut libc::c_char, i32, i32) -> i32;
    let (init, get, get_name) = (
        driver_symbol(c"cuInit")?,
        driver_symbol(c"cuDeviceGet")?,
        driver_symbol(c"cuDeviceGetName")?,
    );
    let mut name = [0 as libc::c_char; 257];
    // SAFETY: cuInit, cuDeviceGet and cuDeviceGetName as cuda.h declares them; the driver
    // names a device by the handle cuDeviceGet gives for its ordinal. The zeroed buffer is
    // longer than the length passed, so it ends in a NUL whatever the driver writes.
    unsafe {
        let mut handle = 0;
        let named = std::mem::transmute::<*mut c_void, Init>(init)(0) == 0
            && std::mem::transmute::<*mut c_void, Get>(get)(&mut handle, n as i32) == 0
            && std::mem::transmute::<*mut c_void, Name>(get_name)(name.as_mut_ptr(), 256, handle)
                == 0;
        let name = std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy();
        (named && !name.is_empty()).then(|| name.into_owned())
    }
}

/// Memory in use on `device`, MiB (device-wide, as `cuda_memory_mb`); `None` on the CPU.
pub fn device_used_mb(device: Device) -> Option<f64> {
    match device {
        Device::Cuda(n) => cuda_memory_mb(n).map(|m| m.used()),
        _ => None,
    }
}

/// The version of the libtorch this process loaded, as its Python package or its zip names it
/// (`2.11.0+cu130`): read beside the loaded `libtorch_cpu.so`, from `torch/version.py` or a
/// standalone libtorch's `build-version`.
pub fn libtorch_version() -> Option<String> {
    let symbol = loaded_symbol(c"_ZN2at13globalContextEv")?;
    // SAFETY: dladdr only reads the loader's tables for an address inside a loaded library.
    let library = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(symbol, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(info.dli_fname)
            .to_string_lossy()
            .into_owned()
    };
    let package = std::path::Path::new(&library).parent()?.parent()?;
    if let Ok(text) = std::fs::read_to_string(package.join("version.py")) {
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        return Some(line.split(['\'', '"']).nth(1)?.to_string());
    }
    let text = std::fs::read_to_string(package.join("build-version")).ok()?;
    Some(text.trim().to_string())
}

/// libtorch's global context (`at::globalContext()`), for its switches that tch has no
/// binding for; `None` when libtorch is not loaded as expected.
fn global_context() -> Option<*mut c_void> {
    type GlobalContext = unsafe extern "C" fn() -> *mut c_void;
    // SAFETY: `at::globalContext()` takes nothing and returns a reference (a pointer in the
    // Itanium C++ ABI) to a static object that lives as long as the process.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"_ZN2at13globalContextEv".as_ptr());
        (!sym.is_null()).then(|| std::mem::transmute::<*mut c_void, GlobalContext>(sym)())
    }
}

/// A symbol of the libraries loaded (libtorch and the CUDA runtime it loaded: a member
/// function of `at::Context` by its mangled name, a runtime function); `None` where none has it.
fn loaded_symbol(name: &std::ffi::CStr) -> Option<*mut c_void> {
    // SAFETY: a symbol lookup in the loaded libraries.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!sym.is_null()).then_some(sym)
}

/// Whether a CUDA runtime call returned success (`code` 0). Where not, clears the calling
/// thread's last runtime error, which libtorch's next kernel launch check would otherwise
/// raise as an error of its own.
fn runtime_succeeded(code: i32) -> bool {
    type GetLastError = unsafe extern "C" fn() -> i32;
    if code != 0 {
        if let Some(get) = loaded_symbol(c"cudaGetLastError") {
            // SAFETY: cudaGetLastError() reads and resets the calling thread's last error.
            unsafe { std::mem::transmute::<*mut c_void, GetLastError>(get)() };
        }
    }
    code == 0
}

/// A symbol of the NVIDIA driver's library; `None` without a driver.
fn driver_symbol(name: &std::ffi::CStr) -> Option<*mut c_void> {
    // SAFETY: opens the driver's library (a second open only counts a reference; it stays
    // loaded) and looks the symbol up in it.
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY);
        if lib.is_null() {
            return None;
        }
        let sym = libc::dlsym(lib, name.as_ptr());
        (!sym.is_null()).then_some(sym)
    }
}

/// Subnormal floats computed and read as zero on the CPU (the x86 FTZ and DAZ modes, through
/// libtorch's `at::Context::setFlushDenormal`, PyTorch's `torch.set_flush_denormal(True)`).
/// Adam's first moments of parameters whose gradients stay near zero decay into the subnormal
/// range, where every operation on them takes a slow path: in the soak, with a third of them
/// subnormal, a stage-2 step slowed from 201 to 279 ms over 7 425 steps, and resumed there with
/// this mode its next epoch took 49 s instead of 72 s, every weight the same bit for bit (only
/// subnormal moments and BatchNorm statistics became 0). Per thread: set before any other
/// thread starts, which all inherit it. Returns whether the CPU supports it (x86 with SSE3, as
/// in PyTorch; elsewhere it stays off).
pub fn flush_denormals() -> bool {
    type SetFlag = unsafe extern "C" fn(bool) -> bool;
    let Some(set) = loaded_symbol(c"_ZN2at7Context16setFlushDenormalEb") else {
        return false;
    };
    // SAFETY: the symbol is `static bool at::Context::setFlushDenormal(bool)`; it sets this
    // thread's floating-point control register only.
    unsafe { std::mem::transmute::<*mut c_void, SetFlag>(set)(true) }
}

/// Deterministic mode, for runs that must repeat bit for bit on a GPU: cuDNN uses fixed,
/// deterministic algorithms instead of timing candidates in each process (benchmark mode), and
/// cuBLAS a fixed workspace. Off: cuDNN benchmark mode, the fastest choice. libtorch's global
/// "deterministic algorithms" switch is left alone: it would fail (or, told to warn, warn on
/// every call of) the one op without a deterministic CUDA kernel here, the backward of the
/// adaptive average pooling, which only stage 2 runs, and fill every fresh tensor with NaN
/// first. tch binds only benchmark mode, so the cuDNN switch is called as the `at::Context`
/// member function it is (`this` first, as the Itanium C++ ABI passes it).
pub fn set_deterministic(on: bool) -> Result<()> {
    type SetFlag = unsafe extern "C" fn(*mut c_void, bool);
    if on {
        // Read by cuBLAS when it creates its handle, at the first matrix product on a GPU.
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    let (Some(context), Some(cudnn)) = (
        global_context(),
        loaded_symbol(c"_ZN2at7Context21setDeterministicCuDNNEb"),
    ) else {
        anyhow::bail!("deterministic mode: libtorch's context switches were not found");
    };
    // SAFETY: the symbol is `void at::Context::setDeterministicCuDNN(bool)`, called on the
    // global context.
    unsafe { std::mem::transmute::<*mut c_void, SetFlag>(cudnn)(context, on) };
    tch::Cuda::cudnn_set_benchmark(!on);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    /// Whether cuDNN is told to use deterministic algorithms, read back from libtorch.
    fn deterministic() -> Option<bool> {
        type GetFlag = unsafe extern "C" fn(*mut c_void) -> bool;
        let context = global_context()?;
        let get = loaded_symbol(c"_ZNK2at7Context18deterministicCuDNNEv")?;
        // SAFETY: `bool at::Context::deterministicCuDNN() const` on the global context.
        Some(unsafe { std::mem::transmute::<*mut c_void, GetFlag>(get)(context) })
    }

    #[test]
    fn device_specs() {
        let choice = |text: &str| text.parse::<DeviceChoice>();
        for text in ["auto", "cpu", "cuda", "cuda:1"] {
            assert_eq!(choice(text).unwrap().to_string(), text);
            let json = serde_json::to_string(&choice(text).unwrap()).unwrap();
            assert_eq!(json, format!("\"{text}\""));
        }
        for bad in ["gpu", "cuda:x", "cuda:"] {
            let err = choice(bad).unwrap_err();
            assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
        }
        assert_eq!(resolve(DeviceChoice::Cpu).unwrap(), Device::Cpu);
        if tch::Cuda::is_available() {
            assert_eq!(resolve(DeviceChoice::Auto).unwrap(), Device::Cuda(0));
            assert!(resolve(DeviceChoice::Cuda(Some(999))).is_err());
        } else {
            assert_eq!(resolve(DeviceChoice::Auto).unwrap(), Device::Cpu);
            let err = resolve(DeviceChoice::Cuda(None)).unwrap_err().to_string();
            assert!(err.contains("--device cuda: no usable CUDA"), "{err}");
        }
    }

    #[test]
    fn an_unusable_gpu_is_explained_with_the_fix() {
        let old = explain_unusable_gpu(
            "535.104.05",
            Some(12020),
            Some("2.11.0+cu130"),
            Some("CUDA driver version is insufficient for CUDA runtime version"),
        );
        for needle in [
            "driver 535.104.05",
            "CUDA up to 12.2",
            "2.11.0+cu130 cannot use it",
            "insufficient",
            "TORCH_INDEX_URL=",
        ] {
            assert!(old.contains(needle), "{needle} not in {old}");
        }
        let cpu_wheel = explain_unusable_gpu("550.54", None, Some("2.11.0+cpu"), None);
        assert!(cpu_wheel.contains("built without CUDA"), "{cpu_wheel}");
        let ancient = explain_unusable_gpu("470.1", Some(11040), Some("2.11.0+cu130"), Some("x"));
        assert!(ancient.contains("update the NVIDIA driver"), "{ancient}");
        // this machine: no NVIDIA driver, nothing to explain
        if !std::path::Path::new("/proc/driver/nvidia/version").exists() {
            assert_eq!(why_no_gpu(), None);
        }
    }

    #[test]
    fn the_loaded_libtorch_names_its_version() {
        let version = libtorch_version().expect("a version beside the loaded libtorch");
        assert!(version.starts_with("2."), "{version}");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn subnormals_flush_to_zero_once_asked() {
        let tiny = || Tensor::from_slice(&[1e-30f32]) * 1e-10;
        // Its own thread: the mode is per thread, and the other tests' must stay as they are.
        let (before, after) = std::thread::spawn(move || {
            let before = tiny().double_value(&[0]);
            assert!(flush_denormals(), "x86-64 CPUs support it");
            (before, tiny().double_value(&[0]))
        })
        .join()
        .unwrap();
        assert!(before > 0.0 && before < 1.2e-38, "{before}");
        assert_eq!(after, 0.0);
    }

    #[test]
    fn deterministic_mode_reaches_libtorch() {
        set_deterministic(true).unwrap();
        assert_eq!(deterministic(), Some(true));
        set_deterministic(false).unwrap();
        assert_eq!(deterministic(), Some(false));
    }
}
