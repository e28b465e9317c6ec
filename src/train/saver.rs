//! The checkpoint saver: every file a run directory receives during training. The resume
//! point (`checkpoint.safetensors`) is written first, then the model and `meta.json` derived
//! from it, so a crash between them leaves a run that resumes to the same result.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::log::RunLog;
use super::step::Learner;
use crate::io::safetensors::{read_safetensors, save_tensors};
use crate::model::Vgg16;
use crate::run_dir::checkpoint::{save_checkpoint, TrainState};
use crate::run_dir::lock::RunLock;
use crate::run_dir::meta::{save_meta, Best, Meta};
use crate::run_dir::metrics::EpochRecord;
use crate::run_dir::{BEST_FILE, MODEL_FILE};

pub struct CheckpointSaver {
    dir: PathBuf,
    /// The directory's lock, checked before every write.
    lock: RunLock,
    meta: Meta,
    /// Smallest holdout top-1 gain that makes a new best model.
    min_delta: f64,
}

impl CheckpointSaver {
    /// A saver of the run in `dir`, whose lock is `lock` and `meta.json` is `meta` so far,
    /// that keeps a model as the best when it beats the best so far by more than `min_delta`.
    pub fn new(dir: &Path, lock: RunLock, meta: Meta, min_delta: f64) -> CheckpointSaver {
        CheckpointSaver {
            dir: dir.to_path_buf(),
            lock,
            meta,
            min_delta,
        }
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The resume point: the checkpoint of `learner` at `state` (which learns how much of the
    /// log belongs to it), then the model and `meta.json`.
    pub fn save(&self, learner: &Learner, state: &mut TrainState, log: &RunLog) -> Result<()> {
        self.save_resume_point(learner, state, log)?;
        self.save_model(&learner.model)
    }

    /// The checkpoint alone (a model not yet scored: it becomes the run's model only once its
    /// holdout scores are finite).
    pub fn save_resume_point(
        &self,
        learner: &Learner,
        state: &mut TrainState,
        log: &RunLog,
    ) -> Result<()> {
        self.lock.ensure_held()?;
        state.adam_steps = learner.adam.steps();
        state.metrics_len = log.bytes_written()?;
        save_checkpoint(&self.dir, &learner.checkpoint_tensors(), state)
    }

    /// The model and `meta.json` alone (an epoch scored after its checkpoint was written).
    pub fn save_model(&self, model: &Vgg16) -> Result<()> {
        self.lock.ensure_held()?;
        save_tensors(&self.dir.join(MODEL_FILE), &model.state())?;
        self.save_meta()
    }

    /// `meta.json` alone (a fresh run's, before its first checkpoint).
    pub fn save_meta(&self) -> Result<()> {
        self.lock.ensure_held()?;
        save_meta(&self.dir, &self.meta)
    }

    /// A resumed run's epochs so far and its best model.
    pub fn restore_epochs(&mut self, epochs: Vec<EpochRecord>, best: Option<Best>) {
        self.meta.epochs = epochs;
        self.meta.best = best;
    }

    /// A resumed run's best model file, checked against what its checkpoint `state` counts
    /// on. A missing or damaged one is rebuilt when the checkpoint sits right after the best
    /// epoch (its `model` is that epoch's); otherwise the loss is said and the best is chosen
    /// again from the epochs still to come (early stopping counts from them too).
    pub fn check_best(&mut self, state: &mut TrainState, model: &Vgg16) -> Result<()> {
        let Some(best) = state.best else {
            return Ok(());
        };
        let path = self.dir.join(BEST_FILE);
        let Err(damage) = read_safetensors(&path) else {
            return Ok(());
        };
        if state.batch == 0 && state.epoch == best.epoch + 1 {
            self.lock.ensure_held()?;
            save_tensors(&path, &model.state())?;
            eprintln!(
                "warning: {damage}; rebuilt it from the checkpoint, which holds epoch {}'s model",
                best.epoch
            );
            return Ok(());
        }
        eprintln!(
            "warning: {damage}; the best model (epoch {}, holdout top-1 {:.2} %) cannot be \
             rebuilt from the checkpoint (epoch {}, batch {}), so the best is chosen again from \
             the epochs still to come",
            best.epoch,
            100.0 * best.top1,
            state.epoch,
            state.batch
        );
        state.best = None;
        self.meta.best = None;
        Ok(())
    }

    /// Records a scored epoch in `meta.json` (written by the next save).
    pub fn push_epoch(&mut self, record: EpochRecord) {
        self.meta.epochs.push(record);
    }

    /// The best model so far after `epoch` scored `top1`: when it improves on the best,
    /// `model` is saved as `best.safetensors` and becomes the best.
    pub fn update_best(&mut self, epoch: u32, top1: f64, model: &Vgg16) -> Result<Best> {
        if improves(self.meta.best, top1, self.min_delta) {
            self.meta.best = Some(Best { epoch, top1 });
            self.lock.ensure_held()?;
            save_tensors(&self.dir.join(BEST_FILE), &model.state())?;
        }
        Ok(self.meta.best.unwrap_or(Best { epoch, top1 }))
    }
}

/// Whether `top1` improves on `best` by more than `min_delta` (the first epoch always does; a
/// NaN never does).
fn improves(best: Option<Best>, top1: f64, min_delta: f64) -> bool {
    best.is_none_or(|b| top1 > b.top1 + min_delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::SplitSpec;
    use crate::model::Stage;
    use crate::run_dir::checkpoint::load_checkpoint;
    use crate::run_dir::config::{Init, TrainConfig};
    use crate::run_dir::meta::load_meta;
    use crate::run_dir::META_FILE;
    use tch::Device;

    #[test]
    fn improvement_needs_more_than_min_delta() {
        let best = Some(Best {
            epoch: 1,
            top1: 0.5,
        });
        assert!(improves(None, 0.0, 0.01));
        assert!(!improves(best, 0.51, 0.01));
        assert!(improves(best, 0.5101, 0.01));
        assert!(
            !improves(best, f64::NAN, 0.01),
            "a NaN score is no improvement"
        );
    }

    #[test]
    fn saves_the_resume_point_model_meta_and_the_best_model() {
        let _generator = crate::test_generator::lock();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TrainConfig::example(Stage::Base, Init::RandomInit);
        cfg.session.out = dir.path().to_path_buf();
        let meta = Meta::new(
            Stage::Base,
            vec!["a".into(), "b".into()],
            SplitSpec::new(1, 0.5, 4),
            cfg.clone(),
        );
        let lock = RunLock::acquire(dir.path()).unwrap();
        let mut saver = CheckpointSaver::new(dir.path(), lock, meta, 0.1);
        let learner = Learner::new(2, &cfg.recipe, Device::Cpu);
        let log = RunLog::open(&cfg).unwrap();
        saver.push_epoch(EpochRecord::example(1.0));
        let best = saver.update_best(1, 0.5, &learner.model).unwrap();
        assert_eq!(
            best,
            Best {
                epoch: 1,
                top1: 0.5
            }
        );
        assert!(dir.path().join(BEST_FILE).is_file());
        std::fs::remove_file(dir.path().join(BEST_FILE)).unwrap();
        // not better by more than min_delta: the best stays, nothing written
        let best = saver.update_best(2, 0.55, &learner.model).unwrap();
        assert_eq!(best.epoch, 1);
        assert!(!dir.path().join(BEST_FILE).exists());

        let mut state = TrainState::new(Stage::Base);
        state.epoch = 2;
        saver.save(&learner, &mut state, &log).unwrap();
        let (tensors, saved) = load_checkpoint(dir.path()).unwrap();
        assert_eq!(saved, state);
        assert!(tensors.keys().any(|k| k.starts_with("adam.exp_avg.")));
        assert!(dir.path().join(MODEL_FILE).is_file());
        let meta = load_meta(&dir.path().join(META_FILE)).unwrap();
        assert_eq!(meta.epochs.len(), 1);
        assert_eq!(meta.best.map(|b| b.epoch), Some(1));
    }
}
