//! What updates the model: Adam, the CyclicLR schedule, and fp16 loss scaling.

pub mod adam;
pub mod loss_scaler;
pub mod schedule;
