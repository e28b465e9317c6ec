//! vggtiny: Tiny ImageNet classification by VGG16 transfer learning, in two stages.
//!
//! The modules form layers; each imports only from the layers below it:
//!
//! 1. `cli`: the clap root; `commands`: one file per subcommand, its flags and its output.
//! 2. What the commands do: `train` (the one loop of both stages), `eval` (scores, test-time
//!    augmentation, predictions for image files), `report` (curves and per-class tables),
//!    `throughput` (each part of the pipeline timed, memory peaks: `bench`'s work), `soak` (both
//!    stages at the recipe's length, memory watched), `fetch` (the dataset downloaded and
//!    unpacked: `download`'s work).
//! 3. The domain, each importing only those after it: `run_dir` (a run on disk: meta.json,
//!    checkpoint, metrics log and its named scalars, the model to load), `config` (a stage's
//!    validated configuration: its recipe, where its weights come from, this session's
//!    settings), `recipe` (every hyper-parameter: default, flag, comparison on `--resume`),
//!    `data` (image folders to batches), `model` (VGG16, mixed precision), `optim` (Adam,
//!    CyclicLR, loss scaling), `device` (`--device` and what it opens).
//! 4. `io` (atomic files, checksummed safetensors, JSON floats, TensorBoard files, paths)
//!    and `error` (exit codes).

pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod fetch;
pub mod io;
pub mod model;
pub mod optim;
pub mod recipe;
pub mod report;
pub mod run_dir;
pub mod soak;
#[cfg(test)]
mod test_generator;
pub mod throughput;
pub mod train;
