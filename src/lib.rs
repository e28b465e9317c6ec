//! vggtiny: Tiny ImageNet classification by VGG16 transfer learning, in two stages.
//!
//! The modules form layers; each imports only from the layers below it:
//!
//! 1. `cli`: the clap root; `commands`: one file per subcommand, its flags and its output.
//! 2. What the commands do: `train` (the one loop of both stages), `eval` (scores, test-time
//!    augmentation, predictions for image files), `report` (curves and per-class tables),
//!    `bench`, `soak` (both stages at the recipe's length, memory watched), `download`.
//! 3. The domain: `run_dir` (a run on disk: configuration, meta.json, checkpoint, metrics
//!    log, the model to load), `data` (image folders to batches), `model` (VGG16, mixed
//!    precision), `optim` (Adam, CyclicLR, loss scaling), `device`.
//! 4. `io` (atomic files, checksummed safetensors, JSON floats, TensorBoard files, paths)
//!    and `error` (exit codes).

pub mod bench;
pub mod cli;
pub mod commands;
pub mod data;
pub mod device;
pub mod download;
pub mod error;
pub mod eval;
pub mod io;
pub mod model;
pub mod optim;
pub mod report;
pub mod run_dir;
pub mod soak;
#[cfg(test)]
mod test_generator;
pub mod train;
