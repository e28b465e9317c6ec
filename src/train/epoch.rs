//! One epoch of training: its batches, assembled ahead by a background thread, each a forward
//! pass, a loss and an optimizer step; logging at log intervals, and mid-epoch checkpoints when
//! they are due or a signal asks the run to stop.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::keys::Stream;
use super::log::Position;
use super::signals::interrupted;
use super::Trainer;
use crate::data::loader::{batches_per_epoch, Batch, Planned};
use crate::eval::topk_correct;
use crate::run_dir::metrics::BatchRecord;

impl Trainer<'_> {
    /// Trains the current epoch from the batch the run stands at, in `order`, up to its end or
    /// to `--max-steps`. Returns whether the epoch is complete.
    pub(super) fn train_one_epoch(&mut self, order: &[usize]) -> Result<bool> {
        let plan = self.plan(order);
        let done = (self.state.batch * self.cfg.batch_size) as u64;
        let label = format!("{} epoch {}", self.cfg.stage.name(), self.state.epoch);
        self.log
            .start_epoch(label, order.len() as u64, done, self.state.step);
        let device = self.loader.device();
        let mut loss_sum = Tensor::full([], self.state.loss_sum, (Kind::Double, device));
        std::thread::scope(|scope| -> Result<()> {
            for batch in self.loader.prefetch(scope, plan, self.cfg.augment) {
                self.train_batch(&batch?, &mut loss_sum)?;
                self.checkpoint_mid_epoch(&loss_sum)?;
            }
            Ok(())
        })?;
        self.log.finish_epoch();
        self.policy.check()?;
        self.state.loss_sum = loss_sum.double_value(&[]);
        Ok(self.state.batch >= self.per_epoch())
    }

    fn per_epoch(&self) -> usize {
        batches_per_epoch(self.split.train.len(), self.cfg.batch_size)
    }

    /// The batches left to train this epoch, each with the key of its augmentation draws.
    fn plan(&self, order: &[usize]) -> Vec<Planned> {
        let max_steps = self.cfg.max_steps.unwrap_or(u64::MAX);
        let remaining = self.per_epoch().saturating_sub(self.state.batch);
        let allowed = (max_steps - self.state.step)
            .try_into()
            .unwrap_or(usize::MAX);
        let epoch = self.state.epoch;
        order
            .chunks(self.cfg.batch_size)
            .enumerate()
            .skip(self.state.batch)
            .take(remaining.min(allowed))
            .map(|(b, indices)| Planned {
                indices: indices.to_vec(),
                key: self.keys.epoch(epoch, Stream::Augment, b as u64),
            })
            .collect()
    }

    /// One optimizer step on `batch`, its loss added to `loss_sum` on the device.
    fn train_batch(&mut self, batch: &Batch, loss_sum: &mut Tensor) -> Result<()> {
        let (epoch, step) = (self.state.epoch, self.state.step);
        let (lr, beta1) = self
            .cfg
            .schedule
            .at(self.cfg.sched_step.position(step, epoch));
        // Dropout draws keyed by the step, so a resumed run draws what this one would.
        let dropout_key = self
            .keys
            .epoch(epoch, Stream::Dropout, self.state.batch as u64);
        tch::manual_seed(dropout_key as i64);
        // A batch that may be skipped must not leave its BatchNorm statistics behind.
        let model = &self.learner.model;
        let statistics = (self.cfg.max_nan_skips > 0).then(|| model.batch_norm_statistics());
        let (loss, logits) = self.learner.forward_loss(batch);
        if self.policy.admit(&loss, step, &mut self.state.nan_skips)? {
            self.learner.optimize(&loss, (lr, beta1));
            *loss_sum += loss.detach().to_kind(Kind::Double) * batch.len as f64;
            self.state.seen += batch.len;
        } else if let Some(statistics) = statistics {
            self.learner.model.set_batch_norm_statistics(&statistics);
        }
        self.state.last_lr = lr;
        self.log.advance(batch.len as u64);
        if step.is_multiple_of(self.cfg.log_interval) {
            self.log_step(&loss, &logits, batch, (lr, beta1))?;
        }
        self.state.batch += 1;
        self.state.step += 1;
        Ok(())
    }

    /// The loop's host reads, at log intervals only: the non-finite check, the loss, and the
    /// mini-batch accuracy at prediction intervals.
    fn log_step(
        &mut self,
        loss: &Tensor,
        logits: &Tensor,
        batch: &Batch,
        (lr, beta1): (f64, f64),
    ) -> Result<()> {
        self.policy.check()?;
        let step = self.state.step;
        let acc = step.is_multiple_of(self.cfg.pred_interval).then(|| {
            let correct = topk_correct(&logits.detach(), &batch.labels, 1).int64_value(&[]);
            correct as f64 / batch.len as f64
        });
        let record = BatchRecord {
            stage: self.cfg.stage.name().to_string(),
            epoch: self.state.epoch,
            step,
            lr,
            beta1,
            loss: loss.double_value(&[]),
            acc,
        };
        let epochs_steps = self.per_epoch() as u64 * u64::from(self.cfg.epochs);
        let at = Position {
            batch: self.state.batch,
            batches: self.per_epoch(),
            batch_size: self.cfg.batch_size,
            images: self.split.train.len(),
            stage_steps: epochs_steps.min(self.cfg.max_steps.unwrap_or(u64::MAX)),
        };
        self.log.step(&record, at)
    }

    /// A checkpoint inside the epoch when `--checkpoint-every` says so or a signal asks the run
    /// to stop (which it then does).
    fn checkpoint_mid_epoch(&mut self, loss_sum: &Tensor) -> Result<()> {
        let due = self
            .cfg
            .checkpoint_every
            .is_some_and(|n| self.state.step.is_multiple_of(n));
        let signal = self.signals.caught();
        let action = mid_epoch(due, signal, self.state.batch, self.per_epoch());
        if action == MidEpoch::Go {
            return Ok(());
        }
        self.policy.check()?;
        self.state.loss_sum = loss_sum.double_value(&[]);
        self.saver.save(&self.learner, &mut self.state, &self.log)?;
        match action {
            MidEpoch::SaveAndStop(signal) => {
                let (epoch, step) = (self.state.epoch, self.state.step);
                Err(interrupted(signal, epoch, step, &self.cfg.out))
            }
            _ => Ok(()),
        }
    }
}

/// What the end of a step inside an epoch calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MidEpoch {
    Go,
    Save,
    /// Save, then stop for this signal.
    SaveAndStop(i32),
}

/// After `batch` of `per_epoch` batches: a due checkpoint is saved, a signal saves and stops.
/// After the epoch's last batch both wait for the epoch's end, which saves the epoch with its
/// scores and then answers the signal.
fn mid_epoch(due: bool, signal: Option<i32>, batch: usize, per_epoch: usize) -> MidEpoch {
    match signal {
        _ if batch >= per_epoch => MidEpoch::Go,
        Some(signal) => MidEpoch::SaveAndStop(signal),
        None if due => MidEpoch::Save,
        None => MidEpoch::Go,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_in_the_last_batch_is_left_to_the_epoch_end() {
        assert_eq!(mid_epoch(false, None, 3, 10), MidEpoch::Go);
        assert_eq!(mid_epoch(true, None, 3, 10), MidEpoch::Save);
        assert_eq!(mid_epoch(true, Some(2), 3, 10), MidEpoch::SaveAndStop(2));
        assert_eq!(mid_epoch(false, Some(15), 9, 10), MidEpoch::SaveAndStop(15));
        // the epoch's last batch: its end saves, then stops
        assert_eq!(mid_epoch(false, Some(2), 10, 10), MidEpoch::Go);
        assert_eq!(mid_epoch(true, None, 10, 10), MidEpoch::Go);
    }
}
