//! Small helpers for files and the process, with no knowledge of training: atomic writes,
//! checksummed safetensors, floats in JSON, TensorBoard event files, default paths, memory.

pub mod atomic_file;
pub mod json_float;
pub mod memory;
pub mod paths;
pub mod safetensors;
pub mod tensorboard;
