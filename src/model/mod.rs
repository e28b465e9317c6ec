//! The network: VGG16 with the recipe's head, which of its parameters train (`Stage`), and the
//! type it computes in (`Amp`).

pub mod amp;
pub mod vgg16;

pub use amp::Amp;
pub use vgg16::weights::WeightScope;
pub use vgg16::{channels_last, Stage, Vgg16};

use serde::{Deserialize, Serialize};

/// Which model of a run directory to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelChoice {
    /// The model of the last epoch (model.safetensors)
    #[default]
    Last,
    /// The model of the epoch with the best holdout top-1 (best.safetensors)
    Best,
}
