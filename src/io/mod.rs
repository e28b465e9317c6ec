//! Small helpers for files and the process, with no knowledge of training: atomic writes,
//! checksummed safetensors, floats in JSON, TensorBoard event files, default paths, memory,
//! progress bars, temporary directories, hexadecimal digests.

pub mod atomic_file;
pub mod json_float;
pub mod memory;
pub mod paths;
pub mod progress_bar;
pub mod safetensors;
pub mod scratch;
pub mod tensorboard;

/// Bytes as lowercase hexadecimal, as digests are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
