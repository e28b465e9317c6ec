//! The checkpoint saver: the run directory's owner while a stage trains. It opens the run
//! (`open`: its lock, and what it starts from, read and checked), begins it (a fresh one's
//! meta.json, a resumed one's model, log and history), keeps the run's record
//! (the epochs so far and the best model) and writes every file: the metrics log as the loop
//! reports, and at each save the resume point (`checkpoint.safetensors`) first, then the model
//! and `meta.json` derived from it, so a crash between them leaves a run that resumes to the
//! same result.

use std::path::{Path, PathBuf};

use anyhow::Result;

mod metrics_log;
mod open;

use metrics_log::MetricsLog;
use open::StartPoint;
pub use open::{open, Begin, Opened, StartWeights};

use crate::io::safetensors::{read_safetensors, save_tensors};
use crate::model::Vgg16;
use crate::run_dir::checkpoint::{save_checkpoint, Saved, TrainState};
use crate::run_dir::lock::RunLock;
use crate::run_dir::meta::{save_meta, Best, Meta};
use crate::run_dir::metrics::{read_epochs, rewind, BatchRecord, EpochRecord, Rewound};
use crate::run_dir::{clear_old_run, BEST_FILE, METRICS_FILE, MODEL_FILE};
use crate::train::step::Learner;

pub struct CheckpointSaver {
    dir: PathBuf,
    /// The directory's lock, checked before every write.
    lock: RunLock,
    /// The run's record: its configuration, epochs so far and best model.
    meta: Meta,
    log: MetricsLog,
}

impl CheckpointSaver {
    /// Begins the run `meta` describes in the directory `opened`: its starting weights or
    /// checkpoint go into `learner`. A fresh run clears what a forced start leaves of an old
    /// one and writes its meta.json; a resumed run takes back its epochs (from the log, cut
    /// back to the checkpoint) and checks its best model. Returns the saver and where the loop
    /// stands.
    pub fn begin(
        opened: Opened,
        meta: Meta,
        learner: &mut Learner,
    ) -> Result<(CheckpointSaver, TrainState)> {
        let Opened { lock, start } = opened;
        let dir = meta.config.session.out.clone();
        match start {
            StartPoint::Fresh(weights) => {
                if let Some(w) = weights {
                    learner.model.load_weights(w.named, w.part, &w.source)?;
                }
                // Every input is checked and read by now: an old run's files may go.
                clear_old_run(&dir)?;
                let saver = CheckpointSaver::with_log(dir, lock, meta)?;
                // meta.json (the recipe) goes to disk before the first checkpoint, so that a
                // run killed between the two can still be resumed.
                saver.save_meta()?;
                Ok((saver, TrainState::start()))
            }
            StartPoint::Resumed {
                tensors,
                saved,
                meta: recorded,
            } => {
                let source = dir.display().to_string();
                learner.restore(tensors, saved.adam_steps, &source)?;
                let mut meta = meta;
                meta.epochs = resumed_epochs(&dir.join(METRICS_FILE), &saved, recorded)?;
                meta.best = saved.best;
                let state = saved.state;
                eprintln!(
                    "resuming {source} at epoch {}, batch {} (step {})",
                    state.epoch, state.batch, state.step
                );
                let mut saver = CheckpointSaver::with_log(dir, lock, meta)?;
                saver.check_best(&state, &learner.model)?;
                Ok((saver, state))
            }
        }
    }

    /// The saver of the run `meta` describes in `dir`, its metrics log opened for appending
    /// (after a fresh run cleared the old one, or a resumed run cut it back).
    fn with_log(dir: PathBuf, lock: RunLock, meta: Meta) -> Result<CheckpointSaver> {
        let log = MetricsLog::open(&meta.config)?;
        Ok(CheckpointSaver {
            dir,
            lock,
            meta,
            log,
        })
    }

    /// The epochs so far.
    pub fn epochs(&self) -> &[EpochRecord] {
        &self.meta.epochs
    }

    /// The resume point: the checkpoint of `learner` at `state`, then the model and
    /// `meta.json`.
    pub fn save(&self, learner: &Learner, state: &TrainState) -> Result<()> {
        self.save_resume_point(learner, state)?;
        self.save_model(&learner.model)
    }

    /// The checkpoint alone (a model not yet scored: it becomes the run's model only once its
    /// holdout scores are finite), with how much of the log belongs to it.
    pub fn save_resume_point(&self, learner: &Learner, state: &TrainState) -> Result<()> {
        self.lock.ensure_held()?;
        let saved = Saved {
            stage: self.meta.config.recipe.stage,
            state: state.clone(),
            adam_steps: learner.adam.steps(),
            best: self.meta.best,
            metrics_len: self.log.bytes_written()?,
            recipe: Some(self.meta.config.recipe.clone()),
        };
        save_checkpoint(&self.dir, &learner.checkpoint_tensors(), &saved)
    }

    /// The model and `meta.json` alone (an epoch scored after its checkpoint was written).
    pub fn save_model(&self, model: &Vgg16) -> Result<()> {
        self.lock.ensure_held()?;
        save_tensors(&self.dir.join(MODEL_FILE), &model.state())?;
        self.save_meta()
    }

    fn save_meta(&self) -> Result<()> {
        self.lock.ensure_held()?;
        save_meta(&self.dir, &self.meta)
    }

    /// A logged optimizer step, into the metrics log.
    pub fn log_step(&mut self, record: &BatchRecord) -> Result<()> {
        self.log.batch(record)
    }

    /// A scored epoch, into the metrics log and `meta.json` (written by the next save).
    pub fn log_epoch(&mut self, record: EpochRecord) -> Result<()> {
        self.log.epoch(&record)?;
        self.meta.epochs.push(record);
        Ok(())
    }

    /// The best model so far after `epoch` scored `top1`: when it improves on the best by more
    /// than `--min-delta`, `model` is saved as `best.safetensors` and becomes the best.
    pub fn update_best(&mut self, epoch: u32, top1: f64, model: &Vgg16) -> Result<Best> {
        let min_delta = self.meta.config.session.min_delta;
        if improves(self.meta.best, top1, min_delta) {
            self.meta.best = Some(Best { epoch, top1 });
            self.lock.ensure_held()?;
            save_tensors(&self.dir.join(BEST_FILE), &model.state())?;
        }
        Ok(self.meta.best.unwrap_or(Best { epoch, top1 }))
    }

    /// A resumed run's best model file, checked against the checkpoint it resumes from, at
    /// `state`. A missing or damaged one is rebuilt when the checkpoint sits right after the
    /// best epoch (its `model` is that epoch's); otherwise the loss is said and the best is
    /// chosen again from the epochs still to come (early stopping counts from them too).
    fn check_best(&mut self, state: &TrainState, model: &Vgg16) -> Result<()> {
        let Some(best) = self.meta.best else {
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
        self.meta.best = None;
        Ok(())
    }
}

/// Whether `top1` improves on `best` by more than `min_delta` (the first epoch always does; a
/// NaN never does).
fn improves(best: Option<Best>, top1: f64, min_delta: f64) -> bool {
    best.is_none_or(|b| top1 > b.top1 + min_delta)
}

/// The epochs a resumed run has completed: from its log, cut back to what the checkpoint
/// counted; from meta.json when the log lost lines or holds a damaged one (the rest stays
/// lost, and the log goes on from its last readable line).
fn resumed_epochs(metrics: &Path, saved: &Saved, meta: Meta) -> Result<Vec<EpochRecord>> {
    match rewind(metrics, saved.metrics_len)? {
        Rewound::Intact => read_epochs(metrics),
        Rewound::Lost { kept } => {
            eprintln!(
                "warning: {}: {kept} of the {} bytes its checkpoint counted are complete, \
                 readable lines; the lost lines stay lost, the log goes on after the last good \
                 one, and the epochs so far are taken from meta.json",
                metrics.display(),
                saved.metrics_len
            );
            Ok(meta
                .epochs
                .into_iter()
                .filter(|e| e.epoch < saved.state.epoch)
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Init, TrainConfig};
    use crate::data::split::SplitSpec;
    use crate::model::Stage;
    use crate::run_dir::checkpoint::load_checkpoint;
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
        cfg.session.min_delta = 0.1;
        let meta = Meta::new(
            vec!["a".into(), "b".into()],
            SplitSpec::new(1, 0.5, 4),
            cfg.clone(),
        );
        let opened = open(&cfg, Begin::New(StartWeights::Random)).unwrap();
        let mut learner = Learner::new(2, &cfg.recipe, Device::Cpu);
        let (mut saver, mut state) = CheckpointSaver::begin(opened, meta, &mut learner).unwrap();
        assert_eq!(state, TrainState::start());
        assert!(
            dir.path().join(META_FILE).is_file(),
            "a fresh run's meta.json"
        );
        saver.log_epoch(EpochRecord::example(1.0)).unwrap();
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

        state.epoch = 2;
        saver.save(&learner, &state).unwrap();
        let (tensors, saved) = load_checkpoint(dir.path()).unwrap();
        assert_eq!(saved.state, state);
        assert_eq!(saved.best.map(|b| b.epoch), Some(1));
        assert_eq!(saved.recipe, Some(cfg.recipe.clone()));
        let log_len = std::fs::metadata(dir.path().join(METRICS_FILE))
            .unwrap()
            .len();
        assert_eq!(saved.metrics_len, log_len);
        assert!(tensors.keys().any(|k| k.starts_with("adam.exp_avg.")));
        assert!(dir.path().join(MODEL_FILE).is_file());
        let meta = load_meta(&dir.path().join(META_FILE)).unwrap();
        assert_eq!(meta.epochs.len(), 1);
        assert_eq!(meta.best.map(|b| b.epoch), Some(1));
    }
}
