//! The network: VGG16 with the recipe's head, which of its parameters train (`Stage`), and the
//! type it computes in (`Amp`).

pub mod amp;
pub mod vgg16;

pub use amp::Amp;
pub use vgg16::{channels_last, Stage, Vgg16, WeightScope};
