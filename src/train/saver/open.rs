//! Opening a stage's run directory: its lock, and where the stage starts, a fresh run in an
//! empty (or forced) directory from its starting weights, or a stopped one from its checkpoint
//! with the configuration it recorded. Reading and checking only: the saver writes the run
//! directory once the data is read too.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use tch::Tensor;

use crate::bail_input;
use crate::config::{Init, TrainConfig};
use crate::io::atomic_file::{remove_temporaries, Leftovers};
use crate::io::safetensors::{read_tensors, Named};
use crate::model::{ModelChoice, WeightScope};
use crate::run_dir::checkpoint::{load_checkpoint, Saved, CHECKPOINT_FILE};
use crate::run_dir::lock::RunLock;
use crate::run_dir::meta::Meta;
use crate::run_dir::saved_model::SavedModel;
use crate::run_dir::{check_free, MODEL_FILE};
use crate::train::data::ExpectedRun;

/// What a stage begins from, as its command found it: a new run from its starting weights, or
/// `--resume` of the run whose meta.json this is.
pub enum Begin {
    New(StartWeights),
    Resume(Meta),
}

/// The weights a new stage starts from, as its command opened them.
// One value per stage: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum StartWeights {
    /// torchvision's random initialisation alone (`--random-init`).
    Random,
    /// ImageNet features in this file (`--weights`).
    Features(PathBuf),
    /// Every tensor, head included, of an earlier run's model or a model file (`--from`).
    Run(SavedModel),
}

impl StartWeights {
    /// The weights `init` names; a run's, its `which` model.
    pub fn open(init: &Init, which: ModelChoice) -> Result<StartWeights> {
        Ok(match init {
            Init::RandomInit => StartWeights::Random,
            Init::Weights(path) => StartWeights::Features(path.clone()),
            Init::From(path) => StartWeights::Run(SavedModel::resolve(path, which)?),
        })
    }
}

/// Weights a fresh stage starts from: the tensors, which part of them to load, the file's
/// name, and the `meta.json` of the run they come from, if any.
pub(super) struct Weights {
    pub(super) named: Named,
    pub(super) part: WeightScope,
    pub(super) source: String,
    meta: Option<Meta>,
}

/// A run directory opened for a stage: its lock, held to the end by the saver, and where the
/// stage starts.
pub struct Opened {
    pub(super) lock: RunLock,
    pub(super) start: StartPoint,
}

impl Opened {
    /// The run this one's data must agree with: the one being resumed, or the one it starts
    /// from.
    pub fn expected(&self, cfg: &TrainConfig) -> Option<ExpectedRun<'_>> {
        self.start.expected(cfg)
    }
}

/// Where a stage starts, read and checked.
#[allow(clippy::large_enum_variant)] // one value per stage
pub(super) enum StartPoint {
    /// A new run, from `Weights` or (`None`) from the random initialisation alone.
    Fresh(Option<Weights>),
    /// A stopped run, from its checkpoint and the `meta.json` it wrote.
    Resumed {
        tensors: HashMap<String, Tensor>,
        saved: Saved,
        meta: Meta,
    },
}

/// Opens the run directory of `cfg`, taking its lock (one run writes a run directory at a
/// time), and reads where the stage starts: on `Begin::Resume` (its configuration already the
/// recorded one), its checkpoint; else a new run's starting weights, read first, so that a bad
/// file fails before any decoding. Nothing is removed from a directory that is refused; a
/// forced run's old files go once every input is checked (`CheckpointSaver::begin`).
pub fn open(cfg: &TrainConfig, begin: Begin) -> Result<Opened> {
    let lock = RunLock::acquire(&cfg.session.out)?;
    let start = start_point(cfg, begin)?;
    Ok(Opened { lock, start })
}

fn start_point(cfg: &TrainConfig, begin: Begin) -> Result<StartPoint> {
    let out = &cfg.session.out;
    if let Begin::New(_) = begin {
        check_free(out, cfg.session.force)?;
    }
    remove_temporaries(out, Leftovers::OfEndedWriters);
    let meta = match begin {
        Begin::New(weights) => return Ok(StartPoint::Fresh(read_weights(weights)?)),
        Begin::Resume(meta) => meta,
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
    let (tensors, saved) = load_checkpoint(out)?;
    if saved.stage != cfg.recipe.stage {
        bail_input!(
            "--resume: {} holds a checkpoint of a {} run",
            out.join(CHECKPOINT_FILE).display(),
            saved.stage.name()
        );
    }
    let differing: Vec<String> = saved
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
    if let Some(max) = cfg.session.max_steps.filter(|&max| saved.state.step >= max) {
        bail_input!(
            "--resume: {} already took {} steps, and --max-steps {max} allows no more; raise \
             or drop --max-steps",
            out.display(),
            saved.state.step
        );
    }
    Ok(StartPoint::Resumed {
        tensors,
        saved,
        meta,
    })
}

/// The tensors of `weights`; none for the random initialisation.
fn read_weights(weights: StartWeights) -> Result<Option<Weights>> {
    Ok(match weights {
        StartWeights::Random => None,
        StartWeights::Features(path) => Some(Weights {
            named: read_tensors(&path)?,
            part: WeightScope::Features,
            source: path.display().to_string(),
            meta: None,
        }),
        StartWeights::Run(model) => Some(Weights {
            named: model.model_tensors()?,
            part: WeightScope::All,
            source: model.name(),
            meta: model.meta,
        }),
    })
}

impl StartPoint {
    fn expected(&self, cfg: &TrainConfig) -> Option<ExpectedRun<'_>> {
        match self {
            StartPoint::Resumed { meta, .. } => Some(ExpectedRun {
                meta,
                name: cfg.session.out.display().to_string(),
                same_dataset: true,
            }),
            StartPoint::Fresh(Some(Weights {
                meta: Some(meta),
                source,
                ..
            })) => Some(ExpectedRun {
                meta,
                name: source.clone(),
                same_dataset: false,
            }),
            StartPoint::Fresh(_) => None,
        }
    }
}
