//! The binary end to end, in one test crate (one link against libtorch): each module drives
//! `vggtiny` as a child process on datasets and files it makes for itself.
//!
//! Tests that need what a machine may lack are `#[ignore]`d with the reason, so that cargo
//! counts them as ignored rather than passed, and named for what they need: `mini_*` need the
//! real Tiny ImageNet subset (`TINY_IMAGENET_MINI`), `cuda_*` a CUDA GPU, `torch_*` a python
//! with PyTorch (`VGGTINY_PYTHON`). `scripts/test` runs them with `--ignored` where that is
//! present.

mod common;

mod adam;
mod cuda;
mod download;
mod endurance;
mod everyday;
mod first_day;
mod levers;
mod pipeline;
mod readme;
mod refusals;
mod reliability;
mod safeguards;
mod stages;
