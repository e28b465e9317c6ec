//! What happens when the loss stops being finite: by default the run stops with the step, the
//! learning rate and the last finite loss, found at the next log interval or checkpoint (no
//! step waits for the device to report its loss); with `--max-nan-skips N` every loss is
//! checked and up to N such batches are skipped.

use std::path::PathBuf;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::eval::Scores;
use crate::optim::schedule::Schedule;
use crate::run_dir::checkpoint::CHECKPOINT_FILE;

/// Tracks non-finite losses on the device, without a host read per step: the first step whose
/// loss was not finite, and the last finite loss.
struct FiniteWatch {
    first_bad: Tensor,
    last_finite: Tensor,
}

impl FiniteWatch {
    fn new(device: Device) -> FiniteWatch {
        FiniteWatch {
            first_bad: Tensor::full([], -1, (Kind::Int64, device)),
            last_finite: Tensor::full([], f64::NAN, (Kind::Double, device)),
        }
    }

    /// Records `loss` of `step`. Only its value is kept: a loss still attached to its
    /// autograd graph would chain every step's graph to the next, none ever freed.
    fn record(&mut self, loss: &Tensor, step: u64) {
        let loss = loss.detach();
        let finite = loss.isfinite();
        let loss = loss.to_kind(Kind::Double);
        self.last_finite = loss.where_self(&finite, &self.last_finite);
        let here = Tensor::full([], step as i64, (Kind::Int64, loss.device()));
        let first = self.first_bad.lt(0).logical_and(&finite.logical_not());
        self.first_bad = here.where_self(&first, &self.first_bad);
    }

    /// Host read: the step of the first non-finite loss, if any, and the last finite loss.
    fn check(&self) -> Option<(u64, f64)> {
        let first = self.first_bad.int64_value(&[]);
        (first >= 0).then(|| (first as u64, self.last_finite.double_value(&[])))
    }
}

/// The policy for non-finite losses of one run.
pub struct NonFinitePolicy {
    max_skips: u64,
    watch: FiniteWatch,
    schedule: Schedule,
    out: PathBuf,
}

impl NonFinitePolicy {
    pub fn new(cfg: &TrainConfig, device: Device) -> NonFinitePolicy {
        NonFinitePolicy {
            max_skips: cfg.session.max_nan_skips,
            watch: FiniteWatch::new(device),
            schedule: cfg.recipe.schedule,
            out: cfg.session.out.clone(),
        }
    }

    /// Whether the optimizer may step on `loss` of step `step` in `epoch`. With skips allowed,
    /// the loss is read now: a non-finite one is counted in `skipped` and refused, and one
    /// more than allowed is an error. Otherwise it is only recorded for `check`.
    pub fn admit(
        &mut self,
        loss: &Tensor,
        step: u64,
        epoch: u32,
        skipped: &mut u64,
    ) -> Result<bool> {
        if self.max_skips > 0 && loss.isfinite().int64_value(&[]) == 0 {
            *skipped += 1;
            eprintln!(
                "warning: non-finite loss at step {step}; batch skipped ({skipped} of at most {})",
                self.max_skips
            );
            if *skipped > self.max_skips {
                return Err(self.error(step, epoch, None).context(format!(
                    "more than --max-nan-skips {} non-finite batches",
                    self.max_skips
                )));
            }
            return Ok(false);
        }
        self.watch.record(loss, step);
        Ok(true)
    }

    /// Host read: an error when a loss recorded since the start was not finite. Called at
    /// least once an epoch, in `epoch`, so the bad step is of this epoch.
    pub fn check(&self, epoch: u32) -> Result<()> {
        match self.watch.check() {
            Some((step, last_finite)) => Err(self.error(step, epoch, Some(last_finite))),
            None => Ok(()),
        }
    }

    /// An error when `epoch`'s holdout `scores` are not finite: batches skipped as
    /// non-finite can leave a model whose every output is NaN, which must not end the run as
    /// a success, nor become its best or last model. `checkpointed` says whether this model
    /// was just checkpointed (a stage that `--max-steps` ends inside an epoch).
    pub fn check_holdout(&self, epoch: u32, scores: &Scores, checkpointed: bool) -> Result<()> {
        if scores.loss.is_finite() {
            return Ok(());
        }
        let kept = if checkpointed {
            format!(
                "the checkpoint in {} holds this model, so train the stage again",
                self.out.display()
            )
        } else {
            self.kept()
        };
        anyhow::bail!(
            "epoch {epoch}: the holdout loss is {}: the model's outputs are not finite \
             numbers, so it is not saved as the run's model; {kept}. Lower --lr/--max-lr",
            scores.loss
        )
    }

    fn error(&self, step: u64, epoch: u32, last_finite: Option<f64>) -> anyhow::Error {
        let lr = self.schedule.at(step, epoch).lr;
        let last = last_finite.map_or(String::new(), |l| format!("; last finite loss {l:.4}"));
        anyhow::anyhow!(
            "the loss stopped being finite at step {step} (lr {lr:.3e}{last}); {}. Lower \
             --lr/--max-lr, or pass --max-nan-skips N to skip such batches",
            self.kept()
        )
    }

    /// What is left of the run to go back to.
    fn kept(&self) -> String {
        if self.out.join(CHECKPOINT_FILE).is_file() {
            format!(
                "the last good checkpoint in {} is untouched",
                self.out.display()
            )
        } else {
            "no checkpoint was written yet".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Init;
    use crate::model::Stage;

    #[test]
    fn finite_watch_reports_the_first_bad_step_and_last_good_loss() {
        let mut watch = FiniteWatch::new(Device::Cpu);
        watch.record(&Tensor::from(2.5f32), 0);
        assert_eq!(watch.check(), None);
        watch.record(&Tensor::from(f32::NAN), 1);
        watch.record(&Tensor::from(f32::INFINITY), 2);
        assert_eq!(watch.check(), Some((1, 2.5)));
    }

    #[test]
    fn the_watch_keeps_values_not_the_graph_behind_them() {
        let weight = Tensor::from(1.5f32).set_requires_grad(true);
        let loss = &weight * 2.0;
        let mut watch = FiniteWatch::new(Device::Cpu);
        watch.record(&loss, 0);
        assert!(!watch.last_finite.requires_grad());
        assert_eq!(watch.check(), None);
    }

    #[test]
    fn by_default_a_nan_is_admitted_then_reported() {
        let cfg = TrainConfig::example(Stage::Base, Init::RandomInit);
        let mut policy = NonFinitePolicy::new(&cfg, Device::Cpu);
        let mut skipped = 0;
        assert!(policy
            .admit(&Tensor::from(1.5f32), 0, 1, &mut skipped)
            .unwrap());
        assert!(policy
            .admit(&Tensor::from(f32::NAN), 1, 1, &mut skipped)
            .unwrap());
        let err = policy.check(1).unwrap_err().to_string();
        assert!(err.contains("step 1") && err.contains("1.5000"), "{err}");
        assert_eq!(skipped, 0);
    }

    #[test]
    fn with_skips_nan_batches_are_refused_until_too_many() {
        let mut cfg = TrainConfig::example(Stage::Base, Init::RandomInit);
        cfg.session.max_nan_skips = 2;
        let mut policy = NonFinitePolicy::new(&cfg, Device::Cpu);
        let mut skipped = 0;
        let nan = Tensor::from(f32::NAN);
        assert!(!policy.admit(&nan, 3, 1, &mut skipped).unwrap());
        assert!(policy
            .admit(&Tensor::from(1.0f32), 4, 1, &mut skipped)
            .unwrap());
        assert!(!policy.admit(&nan, 5, 1, &mut skipped).unwrap());
        assert_eq!(skipped, 2);
        let err = format!("{:#}", policy.admit(&nan, 6, 1, &mut skipped).unwrap_err());
        assert!(err.contains("--max-nan-skips 2"), "{err}");
        assert!(!err.contains("last finite loss"), "{err}");
        assert!(policy.check(1).is_ok(), "skipped losses are never recorded");
    }

    /// A holdout loss that is not finite ends the run, saying which model holds what: the
    /// checkpoint just written, the last good one, or none.
    #[test]
    fn a_non_finite_holdout_says_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TrainConfig::example(Stage::Base, Init::RandomInit);
        cfg.session.out = dir.path().to_path_buf();
        let policy = NonFinitePolicy::new(&cfg, Device::Cpu);
        assert!(policy
            .check_holdout(2, &Scores::example(1.25), false)
            .is_ok());
        let err = |checkpointed| {
            let err = policy
                .check_holdout(2, &Scores::example(f64::NAN), checkpointed)
                .unwrap_err();
            err.to_string()
        };
        assert!(
            err(false).starts_with("epoch 2: the holdout loss is NaN"),
            "{}",
            err(false)
        );
        assert!(
            err(false).contains("no checkpoint was written yet"),
            "{}",
            err(false)
        );
        std::fs::write(dir.path().join(CHECKPOINT_FILE), b"x").unwrap();
        let shown = dir.path().display();
        let untouched = format!("the last good checkpoint in {shown} is untouched");
        assert!(err(false).contains(&untouched), "{}", err(false));
        let again = format!("the checkpoint in {shown} holds this model, so train the stage again");
        assert!(err(true).contains(&again), "{}", err(true));
    }

    /// With the schedule stepping per epoch, the report names the epoch's learning rate.
    #[test]
    fn the_reported_learning_rate_is_the_one_the_step_used() {
        let mut cfg = TrainConfig::example(Stage::Base, Init::RandomInit);
        cfg.recipe.schedule.step = crate::optim::schedule::SchedStep::Epoch;
        cfg.recipe.schedule.cyclic = crate::optim::schedule::CyclicLr::triangular2(1e20, 1e30, 2);
        let mut policy = NonFinitePolicy::new(&cfg, Device::Cpu);
        assert!(policy.admit(&Tensor::from(f32::NAN), 7, 1, &mut 0).unwrap());
        let err = policy.check(1).unwrap_err().to_string();
        assert!(err.contains("at step 7 (lr 1.000e20;"), "{err}");
    }
}
