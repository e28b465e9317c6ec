//! The training loop shared by both stages. They differ only in their starting weights, what
//! is frozen (`Stage`) and their hyper-parameters (the `Recipe`).
//!
//! This file reads top to bottom as one loop: `run` opens the run (fresh or resumed); each
//! epoch `run_epoch` trains (`train_one_epoch`: its batches, each `train_batch`: the learner's
//! forward pass, the non-finite policy's word on the loss, the learner's update; logged at
//! intervals and checkpointed when due), validates on the holdout, and `finish_epoch` saves
//! and decides whether to stop early. The loop decides; the learner (`step`) computes; the
//! saver (`saver`) owns the run directory, its files and its record (epochs, best model); the
//! console only shows. Every random draw is keyed by (seed, stage, epoch, batch), so a run
//! resumed from any checkpoint continues exactly as it would have.

mod console;
mod data;
mod early_stop;
mod keys;
mod nonfinite;
mod saver;
mod signals;
pub mod step;

use std::time::Instant;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::data::loader::{batches_per_epoch, Batch, Loader, PlannedBatch};
use crate::data::split::Split;
use crate::device;
use crate::eval::tta::Tta;
use crate::eval::{eval_batch_size, evaluate, top5_text, topk_correct, Scores};
use crate::io::memory::host_memory_mb;
use crate::optim::schedule::Rates;
use crate::run_dir::checkpoint::TrainState;
use crate::run_dir::metrics::{BatchRecord, EpochRecord};
use crate::run_dir::{BEST_FILE, MODEL_FILE};
use console::{Console, Position};
use data::TrainData;
use early_stop::EarlyStop;
use keys::{Keys, Stream};
use nonfinite::NonFinitePolicy;
use saver::CheckpointSaver;
pub use saver::{Begin, StartWeights};
use signals::{interrupted, StopSignals};
use step::{Forward, Learner};

/// Trains one stage as `cfg` says on `device`, from where `begin` says (a new run, or the
/// stopped run in `--out`), and returns the final holdout scores. `after_step` is called after
/// every optimizer step with the steps the stage has taken (the soak samples memory there).
pub fn run(
    cfg: &TrainConfig,
    begin: Begin,
    device: Device,
    after_step: &mut dyn FnMut(u64),
) -> Result<Scores> {
    let opened = saver::open(cfg, begin)?;
    let data = TrainData::read(cfg, opened.expected(cfg))?;
    let mut meta = data.meta(cfg);
    meta.device = Some(device::describe(device));
    meta.libtorch = device::libtorch_version();
    let (recipe, session) = (&cfg.recipe, &cfg.session);
    let set = data.set.for_training_on(device)?;
    let keys = Keys::new(recipe.seed, recipe.stage);
    tch::manual_seed(keys.init());
    let mut learner = Learner::new(data.classes.len(), recipe, device)
        .with_refusable_steps(session.max_nan_skips > 0);
    let (saver, state) = CheckpointSaver::begin(opened, meta, &mut learner)?;
    let mut trainer = Trainer {
        cfg,
        loader: Loader::new(&set, device).with_image_size(recipe.image_size),
        split: &data.split,
        keys,
        learner,
        state,
        policy: NonFinitePolicy::new(cfg, device),
        console: Console::new(session.quiet),
        saver,
        signals: StopSignals::install()?,
        stop: EarlyStop {
            patience: session.early_stop,
        },
        eval_batch: eval_batch_size(device, recipe.batch_size, recipe.image_size),
        after_step,
    };
    if device != Device::Cpu {
        let (batch, side) = (trainer.eval_batch, recipe.image_size);
        // sized from the device's free memory as it is now: said, since it differs by GPU
        trainer.console.line(&format!(
            "holdout eval in batches of {batch} images at {side}x{side}"
        ));
    }
    let mut last = trainer.last_scores();
    let max_steps = session.max_steps.unwrap_or(u64::MAX);
    while trainer.state.epoch <= session.epochs && trainer.state.step < max_steps {
        let (scores, go_on) = trainer.run_epoch()?;
        last = Some(scores);
        if !go_on {
            break;
        }
    }
    let scores = last.context("no epoch ran")?;
    trainer.console.line(&format!(
        "Finished {}: holdout top-1 {:.2}%, top-5 {}; model in {}",
        recipe.stage.name(),
        100.0 * scores.top1,
        top5_text(scores.top5),
        session.out.join(MODEL_FILE).display()
    ));
    Ok(scores)
}

/// Everything one stage's loop works with.
struct Trainer<'a> {
    cfg: &'a TrainConfig,
    loader: Loader<'a>,
    split: &'a Split,
    keys: Keys,
    learner: Learner,
    state: TrainState,
    policy: NonFinitePolicy,
    console: Console,
    saver: CheckpointSaver,
    signals: StopSignals,
    stop: EarlyStop,
    /// Images per holdout forward pass.
    eval_batch: usize,
    after_step: &'a mut dyn FnMut(u64),
}

impl Trainer<'_> {
    /// One epoch (or the rest of it): train, validate, save. Returns its holdout scores and
    /// whether to go on.
    fn run_epoch(&mut self) -> Result<(Scores, bool)> {
        let epoch = self.state.epoch;
        let started = Instant::now();
        let order = self.epoch_order(epoch);
        let seen_before = self.state.seen;
        let complete = self.train_one_epoch(&order)?;
        // This session's speed: a resumed epoch counts only the images trained since.
        let speed = (self.state.seen - seen_before) as f64 / started.elapsed().as_secs_f64();
        if !complete {
            // --max-steps ended the stage inside the epoch: the checkpoint keeps this position
            // (and leaves out the scores below, so that a resumed run logs the epoch once).
            self.saver.save_resume_point(&self.learner, &self.state)?;
        }
        self.precise_batch_norm(&order);
        let scores = self.validate();
        self.policy.check_holdout(epoch, &scores, !complete)?;
        let record = self.epoch_record(&scores, started, speed);
        self.console.epoch(&record, scores.samples);
        self.saver.log_epoch(record)?;
        if !complete {
            self.saver.save_model(&self.learner.model)?;
            return Ok((scores, false));
        }
        let go_on = self.finish_epoch(epoch, &scores)?;
        Ok((scores, go_on))
    }

    /// Trains the current epoch from the batch the run stands at, in `order`, up to its end or
    /// to `--max-steps`. Returns whether the epoch is complete.
    fn train_one_epoch(&mut self, order: &[usize]) -> Result<bool> {
        let plan = self.plan(order);
        let done = (self.state.batch * self.cfg.recipe.batch_size) as u64;
        let label = format!(
            "{} epoch {}",
            self.cfg.recipe.stage.name(),
            self.state.epoch
        );
        self.console
            .start_epoch(label, order.len() as u64, done, self.state.step);
        let device = self.loader.device();
        let mut loss_sum = Tensor::full([], self.state.loss_sum, (Kind::Double, device));
        std::thread::scope(|scope| -> Result<()> {
            let augment = self.cfg.recipe.augment;
            for batch in self.loader.prefetch(scope, plan, augment) {
                self.train_batch(&batch?, &mut loss_sum)?;
                self.checkpoint_mid_epoch(&loss_sum)?;
            }
            Ok(())
        })?;
        self.console.finish_epoch();
        self.policy.check(self.state.epoch)?;
        self.state.loss_sum = loss_sum.double_value(&[]);
        Ok(self.state.batch >= self.per_epoch())
    }

    /// One optimizer step on `batch`, its loss added to `loss_sum` on the device: the forward
    /// pass, the non-finite policy's word on its loss, then the update or its refusal.
    fn train_batch(&mut self, batch: &Batch, loss_sum: &mut Tensor) -> Result<()> {
        let (epoch, step) = (self.state.epoch, self.state.step);
        let rates = self.cfg.recipe.schedule.at(step, epoch);
        // Dropout draws keyed by the step, so a resumed run draws what this one would.
        let dropout_key = self
            .keys
            .epoch(epoch, Stream::Dropout, self.state.batch as u64);
        tch::manual_seed(dropout_key as i64);
        let forward = self.learner.forward(batch);
        let skipped = &mut self.state.nan_skips;
        if self.policy.admit(&forward.loss, step, epoch, skipped)? {
            self.learner.apply(&forward, rates);
            *loss_sum += forward.loss.detach().to_kind(Kind::Double) * batch.len as f64;
            self.state.seen += batch.len;
        } else {
            self.learner.refuse(&forward);
        }
        self.state.last_lr = rates.lr;
        self.console.advance(batch.len as u64);
        if step.is_multiple_of(self.cfg.session.log_interval) {
            self.log_step(&forward, batch, rates)?;
        }
        self.state.batch += 1;
        self.state.step += 1;
        (self.after_step)(self.state.step);
        Ok(())
    }

    /// The loop's host reads, at log intervals only: the non-finite check, the loss, and the
    /// mini-batch accuracy at prediction intervals.
    fn log_step(&mut self, forward: &Forward, batch: &Batch, rates: Rates) -> Result<()> {
        self.policy.check(self.state.epoch)?;
        let (recipe, session) = (&self.cfg.recipe, &self.cfg.session);
        let step = self.state.step;
        let acc = step.is_multiple_of(session.pred_interval).then(|| {
            let correct = topk_correct(&forward.logits.detach(), &batch.labels, 1).int64_value(&[]);
            correct as f64 / batch.len as f64
        });
        let record = BatchRecord {
            stage: recipe.stage.name().to_string(),
            epoch: self.state.epoch,
            step,
            lr: rates.lr,
            beta1: rates.beta1,
            loss: forward.loss.double_value(&[]),
            acc,
        };
        let epochs_steps = self.per_epoch() as u64 * u64::from(session.epochs);
        let at = Position {
            batch: self.state.batch,
            batches: self.per_epoch(),
            batch_size: recipe.batch_size,
            images: self.split.train.len(),
            stage_steps: epochs_steps.min(session.max_steps.unwrap_or(u64::MAX)),
        };
        self.saver.log_step(&record)?;
        self.console.step(&record, at);
        Ok(())
    }

    /// A checkpoint inside the epoch when `--checkpoint-every` says so or a signal asks the run
    /// to stop (which it then does).
    fn checkpoint_mid_epoch(&mut self, loss_sum: &Tensor) -> Result<()> {
        let due = self
            .cfg
            .session
            .checkpoint_every
            .is_some_and(|n| self.state.step.is_multiple_of(n));
        let signal = self.signals.caught();
        let action = mid_epoch(due, signal, self.state.batch, self.per_epoch());
        if action == MidEpoch::Go {
            return Ok(());
        }
        self.policy.check(self.state.epoch)?;
        self.state.loss_sum = loss_sum.double_value(&[]);
        self.saver.save(&self.learner, &self.state)?;
        match action {
            MidEpoch::SaveAndStop(signal) => {
                let (epoch, step) = (self.state.epoch, self.state.step);
                Err(interrupted(signal, epoch, step, &self.cfg.session.out))
            }
            _ => Ok(()),
        }
    }

    /// `--precise-bn N`: the head's BatchNorm statistics recomputed over the epoch's first N
    /// batches as eval sees them. Batches of one image are left out, as in training: their
    /// variance is undefined and would make the statistics NaN.
    fn precise_batch_norm(&mut self, order: &[usize]) {
        let recipe = &self.cfg.recipe;
        if recipe.precise_bn == 0 {
            return;
        }
        let batches = precise_bn_batches(order, recipe.batch_size, recipe.precise_bn);
        let loader = &self.loader;
        let images = batches.into_iter().map(|b| loader.eval_batch(b).images);
        self.learner.model.recalibrate_batch_norm(images);
    }

    fn validate(&self) -> Scores {
        evaluate(
            &self.learner.model,
            &self.loader,
            &self.split.holdout,
            self.eval_batch,
            Tta::None,
        )
    }

    /// After a complete epoch: the best model, the resume point at the next epoch, a signal
    /// that came meanwhile, and the early-stopping decision. Returns whether to go on.
    fn finish_epoch(&mut self, epoch: u32, scores: &Scores) -> Result<bool> {
        let best = self
            .saver
            .update_best(epoch, scores.top1, &self.learner.model)?;
        self.state.next_epoch();
        self.saver.save(&self.learner, &self.state)?;
        if let Some(signal) = self.signals.caught() {
            let (epoch, step) = (self.state.epoch, self.state.step);
            return Err(interrupted(signal, epoch, step, &self.cfg.session.out));
        }
        if self.stop.should_stop(epoch, best) {
            self.console.line(&format!(
                "Early stop: no holdout top-1 gain above {:.2} points for {} epochs; best {:.2}% \
                 at epoch {} in {}",
                100.0 * self.cfg.session.min_delta,
                epoch - best.epoch,
                100.0 * best.top1,
                best.epoch,
                self.cfg.session.out.join(BEST_FILE).display()
            ));
            return Ok(false);
        }
        Ok(true)
    }

    /// The epoch's sample order: the training split shuffled by the epoch's key.
    fn epoch_order(&self, epoch: u32) -> Vec<usize> {
        if self.cfg.recipe.shuffle {
            Loader::shuffled(
                &self.split.train,
                self.keys.epoch(epoch, Stream::Shuffle, 0),
            )
        } else {
            self.split.train.clone()
        }
    }

    /// The batches left to train this epoch, each with the key of its augmentation draws.
    fn plan(&self, order: &[usize]) -> Vec<PlannedBatch> {
        let max_steps = self.cfg.session.max_steps.unwrap_or(u64::MAX);
        let remaining = self.per_epoch().saturating_sub(self.state.batch);
        let allowed = (max_steps - self.state.step)
            .try_into()
            .unwrap_or(usize::MAX);
        let epoch = self.state.epoch;
        order
            .chunks(self.cfg.recipe.batch_size)
            .enumerate()
            .skip(self.state.batch)
            .take(remaining.min(allowed))
            .map(|(b, indices)| PlannedBatch {
                indices: indices.to_vec(),
                key: self.keys.epoch(epoch, Stream::Augment, b as u64),
            })
            .collect()
    }

    fn per_epoch(&self) -> usize {
        batches_per_epoch(self.split.train.len(), self.cfg.recipe.batch_size)
    }

    fn epoch_record(&self, scores: &Scores, started: Instant, speed: f64) -> EpochRecord {
        let state = &self.state;
        EpochRecord {
            stage: self.cfg.recipe.stage.name().to_string(),
            epoch: state.epoch,
            train_loss: state.loss_sum / state.seen.max(1) as f64,
            holdout_loss: scores.loss,
            holdout_top1: scores.top1,
            holdout_top5: scores.top5,
            lr: state.last_lr,
            seconds: started.elapsed().as_secs_f64(),
            images_per_sec: speed,
            host_mb: host_memory_mb("VmRSS:"),
        }
    }

    /// The scores of the last epoch a resumed run logged, if any.
    fn last_scores(&self) -> Option<Scores> {
        self.saver.epochs().last().map(|r| Scores {
            samples: self.split.holdout.len(),
            loss: r.holdout_loss,
            top1: r.holdout_top1,
            top5: r.holdout_top5,
        })
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

/// The batches PreciseBN passes: the first `count` batches of `order`, without batches of one
/// image.
fn precise_bn_batches(order: &[usize], batch_size: usize, count: usize) -> Vec<&[usize]> {
    order
        .chunks(batch_size)
        .take(count)
        .filter(|b| b.len() > 1)
        .collect()
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

    #[test]
    fn precise_bn_leaves_out_a_batch_of_one() {
        let order: Vec<usize> = (0..9).collect();
        assert_eq!(
            precise_bn_batches(&order, 4, 8),
            vec![&order[0..4], &order[4..8]]
        );
        assert_eq!(precise_bn_batches(&order, 4, 1), vec![&order[0..4]]);
        assert_eq!(precise_bn_batches(&order, 5, 8).len(), 2);
    }
}
