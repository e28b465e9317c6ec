//! The learning-rate schedule: PyTorch's `CyclicLR` in triangular2 mode with beta1 cycling,
//! in PyTorch's arithmetic, and when it advances: one value that answers "the learning rate
//! and beta1 at this step of this epoch" for the training loop, its reports and bench.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::bail_input;

/// A stage's schedule: the cycle and when it advances.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    #[serde(rename = "schedule")]
    pub cyclic: CyclicLr,
    #[serde(rename = "sched_step")]
    pub step: SchedStep,
}

/// What the schedule sets for one optimizer step: Adam's learning rate and beta1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub lr: f64,
    pub beta1: f64,
}

impl Schedule {
    /// The rates of optimizer step `step` (from 0) in `epoch` (from 1).
    pub fn at(&self, step: u64, epoch: u32) -> Rates {
        let (lr, beta1) = self.cyclic.at(self.step.position(step, epoch));
        Rates { lr, beta1 }
    }

    pub fn validate(&self) -> Result<()> {
        let s = &self.cyclic;
        if !(s.base_lr > 0.0 && s.base_lr.is_finite()) {
            bail_input!("--lr must be a positive number, got {}", s.base_lr);
        }
        if !(s.max_lr >= s.base_lr && s.max_lr.is_finite()) {
            bail_input!(
                "--max-lr ({}) must be at least --lr ({})",
                s.max_lr,
                s.base_lr
            );
        }
        if s.step_size_up < 1 {
            bail_input!("--step-size-up must be at least 1");
        }
        Ok(())
    }
}

/// A learning rate as the command line takes and shows it (`1e-4`, `0.0001`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningRate(pub f64);

impl fmt::Display for LearningRate {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:e}", self.0)
    }
}

impl FromStr for LearningRate {
    type Err = std::num::ParseFloatError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(LearningRate)
    }
}

/// When CyclicLR steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedStep {
    /// Once per optimizer step, as CyclicLR is designed to be used
    Batch,
    /// Once per epoch, as the original program did (lr stays near base_lr)
    Epoch,
}

impl SchedStep {
    /// The scheduler position of optimizer step `step` (from 0) in `epoch` (from 1).
    pub fn position(self, step: u64, epoch: u32) -> u64 {
        match self {
            SchedStep::Batch => step,
            SchedStep::Epoch => u64::from(epoch - 1),
        }
    }
}

/// `CyclicLR(mode="triangular2", cycle_momentum=True)` over Adam's beta1: the learning rate
/// rises from `base_lr` to `max_lr` and back in each cycle, the amplitude halving every cycle,
/// while beta1 moves inversely between `max_momentum` and `base_momentum`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CyclicLr {
    pub base_lr: f64,
    pub max_lr: f64,
    pub step_size_up: u64,
    pub step_size_down: u64,
    pub base_momentum: f64,
    pub max_momentum: f64,
}

impl CyclicLr {
    /// The recipe's schedule: equal up and down half cycles, beta1 between 0.8 and 0.9.
    pub fn triangular2(base_lr: f64, max_lr: f64, step_size_up: u64) -> CyclicLr {
        CyclicLr {
            base_lr,
            max_lr,
            step_size_up,
            step_size_down: step_size_up,
            base_momentum: 0.8,
            max_momentum: 0.9,
        }
    }

    /// `(lr, beta1)` after `t` scheduler steps (t = 0 at construction), with the operations in
    /// PyTorch's order so the values are the same doubles.
    pub fn at(&self, t: u64) -> (f64, f64) {
        let total = (self.step_size_up + self.step_size_down) as f64;
        let step_ratio = self.step_size_up as f64 / total;
        let t = t as f64;
        let cycle = (1.0 + t / total).floor();
        let x = 1.0 + t / total - cycle;
        let scale_factor = if x <= step_ratio {
            x / step_ratio
        } else {
            (x - 1.0) / (step_ratio - 1.0)
        };
        let scale = 1.0 / 2f64.powf(cycle - 1.0);
        let lr = self.base_lr + (self.max_lr - self.base_lr) * scale_factor * scale;
        let beta1 =
            self.max_momentum - (self.max_momentum - self.base_momentum) * scale_factor * scale;
        (lr, beta1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyclic_lr_triangular2_shape() {
        let s = CyclicLr::triangular2(1e-4, 6e-4, 4);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
        let (lr, b1) = s.at(0);
        assert!(close(lr, 1e-4) && close(b1, 0.9));
        let (lr, b1) = s.at(4); // top of the first cycle
        assert!(close(lr, 6e-4) && close(b1, 0.8));
        let (lr, _) = s.at(2);
        assert!(close(lr, 3.5e-4));
        let (lr, b1) = s.at(5); // on the way down: three quarters of the amplitude
        assert!(close(lr, 4.75e-4) && close(b1, 0.825), "{lr} {b1}");
        let (lr, b1) = s.at(8); // back to base, cycle 2 starts
        assert!(close(lr, 1e-4) && close(b1, 0.9));
        let (lr, b1) = s.at(12); // second peak: half the amplitude
        assert!(close(lr, 3.5e-4) && close(b1, 0.85));
        let (lr, _) = s.at(20); // third peak: a quarter
        assert!(close(lr, 2.25e-4));
    }

    #[test]
    fn epoch_stepping_holds_the_position_through_an_epoch() {
        assert_eq!(SchedStep::Batch.position(17, 3), 17);
        assert_eq!(SchedStep::Epoch.position(0, 1), 0);
        assert_eq!(SchedStep::Epoch.position(17, 3), 2);
        let per_epoch = Schedule {
            cyclic: CyclicLr::triangular2(1e-4, 6e-4, 4),
            step: SchedStep::Epoch,
        };
        let (lr, beta1) = per_epoch.cyclic.at(2);
        assert_eq!(per_epoch.at(17, 3), Rates { lr, beta1 });
    }

    #[test]
    fn learning_rates_show_as_the_recipe_writes_them() {
        assert_eq!(LearningRate(1e-4).to_string(), "1e-4");
        assert_eq!(LearningRate(6e-5).to_string(), "6e-5");
        assert_eq!(
            "0.0002".parse::<LearningRate>().unwrap(),
            LearningRate(2e-4)
        );
    }

    #[test]
    fn validation_names_the_flag_at_fault() {
        let of = |base_lr: f64, max_lr: f64, step_size_up: u64| {
            let cyclic = CyclicLr::triangular2(base_lr, max_lr, step_size_up);
            let step = SchedStep::Batch;
            Schedule { cyclic, step }.validate()
        };
        assert!(of(1e-4, 6e-4, 1).is_ok());
        assert!(
            of(1e-4, 1e-4, 1).is_ok(),
            "--max-lr equal to --lr: a constant rate"
        );
        let faults = [
            (0.0, 1.0, 1, "--lr"),
            (-1e-4, 1.0, 1, "--lr"),
            (f64::NAN, 1.0, 1, "--lr"),
            (f64::INFINITY, f64::INFINITY, 1, "--lr"),
            (1e-4, 1e-5, 1, "--max-lr"),
            (1e-4, f64::INFINITY, 1, "--max-lr"),
            (1e-4, 6e-4, 0, "--step-size-up"),
        ];
        for (base_lr, max_lr, step_size_up, flag) in faults {
            let err = of(base_lr, max_lr, step_size_up).unwrap_err().to_string();
            assert!(
                err.starts_with(flag),
                "{base_lr} {max_lr} {step_size_up}: {err}"
            );
        }
    }
}
