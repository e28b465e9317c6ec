//! The training loop shared by both stages. They differ only in their starting weights, what
//! is frozen (`Stage`) and their hyper-parameters (`TrainConfig`).
//!
//! `run` reads top to bottom: open the run (fresh or resumed), then for each epoch train one
//! epoch, validate on the holdout, save (checkpoint, model, best model, meta.json), and decide
//! whether to stop early. A run checkpoints after every epoch (and every `--checkpoint-every`
//! steps); every random draw is keyed by (seed, stage, epoch, batch), so a run resumed from
//! any checkpoint continues exactly as it would have.

mod data;
mod early_stop;
mod epoch;
mod keys;
mod log;
mod nonfinite;
mod open;
mod progress;
mod saver;
mod signals;
pub mod step;

use std::time::Instant;

use anyhow::{Context, Result};
use tch::Device;

use crate::data::images::place;
use crate::data::loader::Loader;
use crate::data::split::Split;
use crate::device;
use crate::eval::tta::Tta;
use crate::eval::{eval_batch_size, evaluate, Scores};
use crate::io::memory::host_memory_mb;
use crate::run_dir::checkpoint::TrainState;
use crate::run_dir::config::TrainConfig;
use crate::run_dir::metrics::EpochRecord;
use crate::run_dir::{BEST_FILE, MODEL_FILE};
use data::TrainData;
use early_stop::EarlyStop;
use keys::{Keys, Stream};
use log::RunLog;
use nonfinite::NonFinitePolicy;
use open::{open, Opened};
use saver::CheckpointSaver;
use signals::{interrupted, StopSignals};
use step::Learner;

/// Trains one stage as `requested` says (or resumes it) on `device` and returns the final
/// holdout scores.
pub fn run(requested: &TrainConfig, device: Device) -> Result<Scores> {
    let Opened { config: cfg, start } = open(requested)?;
    let data = TrainData::load(&cfg, start.expected(&cfg))?;
    let mut meta = data.meta(&cfg);
    meta.device = Some(device::describe(device));
    meta.libtorch = device::libtorch_version();
    let mut saver = CheckpointSaver::new(&cfg.out, meta);
    let classes = data.classes.len();
    let set = place(data.set, device)?;
    let keys = Keys::new(cfg.seed, cfg.stage);
    tch::manual_seed(keys.init());
    let mut learner = Learner::new(classes, cfg.stage, cfg.amp, cfg.dropout, device)
        .with_label_smoothing(cfg.label_smoothing);
    let state = start.apply(&mut learner, &mut saver, &cfg)?;
    let mut trainer = Trainer {
        cfg: &cfg,
        loader: Loader::new(&set, device).with_image_size(cfg.image_size),
        split: &data.split,
        keys,
        learner,
        state,
        policy: NonFinitePolicy::new(&cfg, device),
        log: RunLog::open(&cfg)?,
        saver,
        signals: StopSignals::install()?,
        stop: EarlyStop {
            patience: cfg.early_stop,
            min_delta: cfg.min_delta,
        },
    };
    let mut last = trainer.last_scores();
    let max_steps = cfg.max_steps.unwrap_or(u64::MAX);
    while trainer.state.epoch <= cfg.epochs && trainer.state.step < max_steps {
        let (scores, go_on) = trainer.run_epoch()?;
        last = Some(scores);
        if !go_on {
            break;
        }
    }
    let scores = last.context("no epoch ran")?;
    println!(
        "Finished {}: holdout top-1 {:.2}%, top-5 {:.2}%; model in {}",
        cfg.stage.name(),
        100.0 * scores.top1,
        100.0 * scores.top5,
        cfg.out.join(MODEL_FILE).display()
    );
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
    log: RunLog,
    saver: CheckpointSaver,
    signals: StopSignals,
    stop: EarlyStop,
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
            self.saver.save(&self.learner, &mut self.state, &self.log)?;
        }
        self.precise_batch_norm(&order);
        let scores = self.validate();
        let record = self.epoch_record(&scores, started, speed);
        self.log.epoch(&record, scores.samples)?;
        self.saver.push_epoch(record);
        if !complete {
            self.saver.save_model(&self.learner.model)?;
            return Ok((scores, false));
        }
        let go_on = self.finish_epoch(epoch, &scores)?;
        Ok((scores, go_on))
    }

    /// The epoch's sample order: the training split shuffled by the epoch's key.
    fn epoch_order(&self, epoch: u32) -> Vec<usize> {
        if self.cfg.shuffle {
            Loader::shuffled(
                &self.split.train,
                self.keys.epoch(epoch, Stream::Shuffle, 0),
            )
        } else {
            self.split.train.clone()
        }
    }

    /// `--precise-bn N`: the head's BatchNorm statistics recomputed over the epoch's first N
    /// batches as eval sees them. Batches of one image are left out, as in training: their
    /// variance is undefined and would make the statistics NaN.
    fn precise_batch_norm(&mut self, order: &[usize]) {
        if self.cfg.precise_bn == 0 {
            return;
        }
        let batches = precise_bn_batches(order, self.cfg.batch_size, self.cfg.precise_bn);
        let loader = &self.loader;
        let images = batches.into_iter().map(|b| loader.eval_batch(b).images);
        self.learner.model.recalibrate_batch_norm(images);
    }

    fn validate(&self) -> Scores {
        let batch = eval_batch_size(self.loader.device(), self.cfg.batch_size);
        evaluate(
            &self.learner.model,
            &self.loader,
            &self.split.holdout,
            batch,
            Tta::None,
        )
    }

    fn epoch_record(&self, scores: &Scores, started: Instant, speed: f64) -> EpochRecord {
        let state = &self.state;
        EpochRecord {
            stage: self.cfg.stage.name().to_string(),
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

    /// After a complete epoch: the best model, the resume point at the next epoch, a signal
    /// that came meanwhile, and the early-stopping decision. Returns whether to go on.
    fn finish_epoch(&mut self, epoch: u32, scores: &Scores) -> Result<bool> {
        let model = &self.learner.model;
        let best = self
            .saver
            .update_best(epoch, scores.top1, &self.stop, model)?;
        self.state.best = Some(best);
        self.state.next_epoch(self.cfg.epochs);
        self.saver.save(&self.learner, &mut self.state, &self.log)?;
        if let Some(signal) = self.signals.caught() {
            let (epoch, step) = (self.state.epoch, self.state.step);
            return Err(interrupted(signal, epoch, step, &self.cfg.out));
        }
        if self.stop.should_stop(epoch, best) {
            println!(
                "Early stop: no holdout top-1 gain above {:.2} points for {} epochs; best {:.2}% \
                 at epoch {} in {}",
                100.0 * self.cfg.min_delta,
                epoch - best.epoch,
                100.0 * best.top1,
                best.epoch,
                self.cfg.out.join(BEST_FILE).display()
            );
            return Ok(false);
        }
        Ok(true)
    }

    /// The scores of the last epoch a resumed run logged, if any.
    fn last_scores(&self) -> Option<Scores> {
        self.saver.meta().epochs.last().map(|r| Scores {
            samples: self.split.holdout.len(),
            loss: r.holdout_loss,
            top1: r.holdout_top1,
            top5: r.holdout_top5,
        })
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
