//! Makes the binary find libtorch, and CUDA, at run time.
//!
//! torch-sys links libtorch, but the linker's default `--as-needed` drops `libtorch_cuda.so`
//! because no symbol of it is referenced directly; the CUDA backend then never registers and
//! `tch::Cuda::is_available()` is false even on a GPU machine. Link it explicitly, and record an
//! rpath so the binary runs without `LD_LIBRARY_PATH`.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB not set: no rpath to libtorch recorded");
        return;
    };
    let lib = Path::new(&lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
