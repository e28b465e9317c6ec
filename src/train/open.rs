//! Opening a run: a fresh one in an empty (or forced) directory from its starting weights, or
//! a stopped one from its checkpoint with the configuration it recorded.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use tch::Tensor;

use super::data::ExpectedRun;
use super::saver::CheckpointSaver;
use super::step::Learner;
use crate::bail_input;
use crate::io::atomic_file::{remove_temporaries, Leftovers};
use crate::io::safetensors::{read_tensors, Named};
use crate::model::WeightScope;
use crate::run_dir::checkpoint::{load_checkpoint, TrainState, CHECKPOINT_FILE};
use crate::run_dir::config::{Init, TrainConfig};
use crate::run_dir::meta::Meta;
use crate::run_dir::metrics::{read_epochs, rewind, EpochRecord, Rewound};
use crate::run_dir::source::Source;
use crate::run_dir::{check_free, clear_old_run, METRICS_FILE, MODEL_FILE};

/// Weights a fresh stage starts from: the tensors, which part of them to load, the file's
/// name, and the `meta.json` of the run they come from, if any.
pub struct Weights {
    named: Named,
    part: WeightScope,
    source: String,
    meta: Option<Meta>,
}

/// How a run begins.
pub enum Start {
    /// A new run, from `Weights` or (`None`) from the random initialisation alone.
    Fresh(Option<Weights>),
    /// A stopped run, from its checkpoint and the `meta.json` it wrote.
    Resumed {
        tensors: HashMap<String, Tensor>,
        state: TrainState,
        meta: Meta,
    },
}

/// Opens the run `cfg` describes in the directory whose lock this process holds: with
/// `recorded`, the meta.json of the run it resumes (its configuration already the recorded
/// one), from its checkpoint; without, a new one, which reads its starting weights first, so
/// that a bad file fails before any decoding. Nothing is removed from a directory that is
/// refused; a forced run's old files go in `load_into`, once every input is checked.
pub fn open(cfg: &TrainConfig, recorded: Option<Meta>) -> Result<Start> {
    let out = &cfg.session.out;
    if recorded.is_none() {
        check_free(out, cfg.session.force)?;
    }
    remove_temporaries(out, Leftovers::OfEndedWriters);
    let Some(meta) = recorded else {
        return Ok(Start::Fresh(read_weights(&cfg.origin.init, cfg)?));
    };
    if !out.join(CHECKPOINT_FILE).is_file() {
        if out.join(MODEL_FILE).is_file() {
            bail_input!(
                "--resume: {} holds a model but no {CHECKPOINT_FILE}, the point a run resumes \
                 from; start it over with --force instead of --resume",
                out.display()
            );
        }
        bail_input!(
            "--resume: {} stopped before its first checkpoint, so there is nothing to resume; \
             run the same command without --resume to start it again",
            out.display()
        );
    }
    let (tensors, state) = load_checkpoint(out)?;
    if state.stage != cfg.recipe.stage {
        bail_input!(
            "--resume: {} holds a checkpoint of a {} run",
            out.join(CHECKPOINT_FILE).display(),
            state.stage.name()
        );
    }
    let differing: Vec<String> = state
        .recipe
        .as_ref()
        .map(|recipe| recipe.differences(&cfg.recipe))
        .unwrap_or_default()
        .iter()
        .map(|d| format!("{} {} where meta.json has {}", d.flag, d.now, d.then))
        .collect();
    if !differing.is_empty() {
        bail_input!(
            "--resume: {} was written by another run than {}'s meta.json describes ({}); \
             put back the run's own checkpoint, or start over with --force",
            out.join(CHECKPOINT_FILE).display(),
            out.display(),
            differing.join("; ")
        );
    }
    if let Some(max) = cfg.session.max_steps.filter(|&max| state.step >= max) {
        bail_input!(
            "--resume: {} already took {} steps, and --max-steps {max} allows no more; raise \
             or drop --max-steps",
            out.display(),
            state.step
        );
    }
    Ok(Start::Resumed {
        tensors,
        state,
        meta,
    })
}

fn read_weights(init: &Init, cfg: &TrainConfig) -> Result<Option<Weights>> {
    Ok(match init {
        Init::RandomInit => None,
        Init::Weights(path) => Some(Weights {
            named: read_tensors(path)?,
            part: WeightScope::Features,
            source: path.display().to_string(),
            meta: None,
        }),
        Init::From(path) => {
            let source = Source::resolve(path, cfg.recipe.which)?;
            Some(Weights {
                named: source.model_tensors()?,
                part: WeightScope::All,
                source: source.name(),
                meta: source.meta,
            })
        }
    })
}

impl Start {
    /// The run this one's data must agree with: the one being resumed, or the one it starts
    /// from.
    pub fn expected(&self, cfg: &TrainConfig) -> Option<ExpectedRun<'_>> {
        match self {
            Start::Resumed { meta, .. } => Some(ExpectedRun {
                meta,
                name: cfg.session.out.display().to_string(),
                same_dataset: true,
            }),
            Start::Fresh(Some(Weights {
                meta: Some(meta),
                source,
                ..
            })) => Some(ExpectedRun {
                meta,
                name: source.clone(),
                same_dataset: false,
            }),
            Start::Fresh(_) => None,
        }
    }

    /// Puts the starting weights into `learner`: for a resumed run also its optimizer state,
    /// its epochs so far (from the log, cut back to the checkpoint) and its best model; a
    /// fresh run writes its meta.json now. Returns where the run stands.
    pub fn load_into(
        self,
        learner: &mut Learner,
        saver: &mut CheckpointSaver,
        cfg: &TrainConfig,
    ) -> Result<TrainState> {
        match self {
            Start::Fresh(weights) => {
                if let Some(w) = weights {
                    learner.model.load_weights(w.named, w.part, &w.source)?;
                }
                // Every input is checked and read by now: an old run's files may go.
                clear_old_run(&cfg.session.out)?;
                // meta.json (the recipe) goes to disk before the first checkpoint, so that a
                // run killed between the two can still be resumed.
                saver.save_meta()?;
                Ok(TrainState {
                    recipe: Some(cfg.recipe.clone()),
                    ..TrainState::new(cfg.recipe.stage)
                })
            }
            Start::Resumed {
                tensors,
                mut state,
                meta,
            } => {
                // a checkpoint of an earlier version records its recipe from now on
                state.recipe.get_or_insert_with(|| cfg.recipe.clone());
                let source = cfg.session.out.display().to_string();
                learner.restore(tensors, state.adam_steps, &source)?;
                let epochs = resumed_epochs(&cfg.session.out.join(METRICS_FILE), &state, meta)?;
                saver.restore_epochs(epochs, state.best);
                saver.check_best(&mut state, &learner.model)?;
                eprintln!(
                    "resuming {source} at epoch {}, batch {} (step {})",
                    state.epoch, state.batch, state.step
                );
                Ok(state)
            }
        }
    }
}

/// The epochs a resumed run has completed: from its log, cut back to what the checkpoint
/// counted; from meta.json when the log lost lines or holds a damaged one (the rest stays
/// lost, and the log goes on from its last readable line).
fn resumed_epochs(metrics: &Path, state: &TrainState, meta: Meta) -> Result<Vec<EpochRecord>> {
    match rewind(metrics, state.metrics_len)? {
        Rewound::Intact => read_epochs(metrics),
        Rewound::Lost { kept } => {
            eprintln!(
                "warning: {}: {kept} of the {} bytes its checkpoint counted are complete, \
                 readable lines; the lost lines stay lost, the log goes on after the last good \
                 one, and the epochs so far are taken from meta.json",
                metrics.display(),
                state.metrics_len
            );
            Ok(meta
                .epochs
                .into_iter()
                .filter(|e| e.epoch < state.epoch)
                .collect())
        }
    }
}
