//! Makes the binary find libtorch, and CUDA, at run time, and builds the C++ shim that reads
//! libtorch's CUDA allocator (`src/device/allocator_stats.cpp`).
//!
//! torch-sys links libtorch, but the linker's default `--as-needed` drops `libtorch_cuda.so`
//! because no symbol of it is referenced directly; the CUDA backend then never registers and
//! `tch::Cuda::is_available()` is false even on a GPU machine. Link it explicitly, and record an
//! rpath so the binary runs without `LD_LIBRARY_PATH`.
use std::path::Path;

const SHIM: &str = "src/device/allocator_stats.cpp";

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed={SHIM}");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("DEP_TCH_LIBTORCH_LIB not set: torch-sys names the libtorch it links on Linux only");
    };
    let lib = Path::new(&lib);
    compile_shim(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// Compiles the shim against the headers beside libtorch's `lib` (a Python package's `torch/`
/// and a standalone libtorch both hold `include/` there) with the flags torch-sys uses. The C++
/// ABI is the new one, the only one PyTorch has shipped since 2.7 (this crate builds on 2.11); a
/// libtorch of the old ABI fails at link time, not at run time: the shim's calls into c10 pass
/// strings.
fn compile_shim(lib: &Path) {
    let include = lib.parent().map(|torch| torch.join("include"));
    let Some(include) =
        include.filter(|dir| dir.join("c10/core/CachingDeviceAllocator.h").is_file())
    else {
        panic!(
            "no c10/core/CachingDeviceAllocator.h under {}/../include",
            lib.display()
        );
    };
    cc::Build::new()
        .cpp(true)
        .pic(true)
        // libtorch's headers as system headers: the shim's own warnings, not theirs
        .flag("-isystem")
        .flag(include.display().to_string())
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file(SHIM)
        .compile("vggtiny_allocator_stats");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=c10");
}
