//! The soak: the real training loop of both stages (holdout eval and checkpoint after every
//! epoch, metrics.jsonl, TensorBoard, the image cache) run for as many optimizer steps as the
//! recipe takes, on a small synthetic set at a small input, while the process is sampled. What a
//! run keeps from step to step or from epoch to epoch shows as a slope after warm-up, which
//! must stay under a bound.

mod probe;
mod stats;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tch::Device;

use crate::config::{Init, Origin, Session, TrainConfig};
use crate::data::loader::batches_per_epoch;
use crate::data::split::SplitSpec;
use crate::data::synth::{write_dataset, SynthSpec};
use crate::device;
use crate::device::DeviceChoice;
use crate::error::Interrupted;
use crate::model::{Amp, Stage};
use crate::recipe::{self, Recipe};
use crate::train::{self, Begin, StartWeights};
use probe::{Probe, StagePlan};
pub use probe::{Sample, StageReport};

/// Images of Tiny ImageNet's training tree, which the recipe splits 95/5.
const TINY_IMAGENET_IMAGES: usize = 100_000;
/// Classes of the soak's synthetic set.
const CLASSES: usize = 10;
/// Samples of the process over the whole soak, about.
const SAMPLES: u64 = 500;

/// Optimizer steps of the whole recipe: 10 + 5 epochs of 1 485 batches of 64 (95 000
/// training images).
pub fn recipe_steps() -> u64 {
    let train = SplitSpec::new(recipe::SEED, recipe::HOLDOUT, TINY_IMAGENET_IMAGES).lengths()[0];
    let epochs = recipe::epochs(Stage::Base) + recipe::epochs(Stage::Finetune);
    u64::from(epochs) * batches_per_epoch(train, recipe::BATCH_SIZE) as u64
}

/// The steps of each stage: as the recipe divides its epochs, 10 to 5.
fn stage_steps(steps: u64) -> [(Stage, u64); 2] {
    let (base, finetune) = (recipe::epochs(Stage::Base), recipe::epochs(Stage::Finetune));
    let first = steps * u64::from(base) / u64::from(base + finetune);
    [(Stage::Base, first), (Stage::Finetune, steps - first)]
}

/// What to soak, validated.
pub struct Plan {
    pub steps: u64,
    /// The synthetic set: images per class, and the optimizer steps its epochs come to.
    pub per_class: usize,
    pub epoch_steps: u64,
    pub batch_size: usize,
    pub image_size: u32,
    pub amp: Amp,
    /// The most MiB per 1 000 steps, after warm-up, that host memory, device memory or a run
    /// directory may grow.
    pub max_growth: f64,
}

/// Each stage holds at least this many epochs, so that warm-up (the first) leaves some over.
pub const MIN_EPOCHS_PER_STAGE: u64 = 2;

/// The fewest steps for epochs of `epoch_steps`: stage 2 (a third) must hold two epochs.
pub fn min_steps(epoch_steps: u64) -> u64 {
    epoch_steps.saturating_mul(3 * MIN_EPOCHS_PER_STAGE)
}

/// The synthetic set whose epochs are the fewest steps of `batch_size` at or above
/// `epoch_steps`, with at least one holdout image: its images per class and the steps of its
/// epochs.
pub fn synthetic_set(epoch_steps: u64, batch_size: usize) -> (usize, u64) {
    let per_epoch = |per_class: usize| {
        let [train, holdout] =
            SplitSpec::new(recipe::SEED, recipe::HOLDOUT, CLASSES * per_class).lengths();
        (holdout > 0).then(|| batches_per_epoch(train, batch_size) as u64)
    };
    (1..)
        .find_map(|n| per_epoch(n).filter(|&e| e >= epoch_steps).map(|e| (n, e)))
        .unwrap_or((1, 1))
}

/// Everything the soak measured, in the shape `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub device: String,
    pub steps: u64,
    /// Optimizer steps per epoch, as the synthetic set came out.
    pub epoch_steps: u64,
    pub batch_size: usize,
    pub image_size: u32,
    pub amp: Amp,
    pub max_growth_mb_per_1k: f64,
    pub seconds: f64,
    pub stages: Vec<StageReport>,
    /// What went past a bound; empty when the soak passed.
    pub failures: Vec<String>,
    pub samples: Vec<Sample>,
}

/// Runs the soak `plan` describes on `device`, the synthetic set, the image cache and both run
/// directories in `out`, reporting its progress on stderr.
pub fn run(plan: &Plan, out: &Path, device: Device) -> Result<Report> {
    let started = Instant::now();
    let data = out.join("data");
    let spec = SynthSpec {
        classes: CLASSES,
        per_class: plan.per_class,
        val_per_class: 0,
        seed: 0,
    };
    write_dataset(&data, &spec)?;
    let epoch_steps = plan.epoch_steps;
    let every = (plan.steps / SAMPLES).max(1);
    let report_every = (plan.steps / 20).clamp(1, 1000);
    let (mut stages, mut samples, mut offset) = (Vec::new(), Vec::new(), 0);
    for (stage, steps) in stage_steps(plan.steps) {
        let cfg = stage_config(plan, (&data, out), (stage, steps), device);
        let stage_plan = StagePlan {
            stage,
            steps,
            warmup: epoch_steps.max(steps / 10),
            offset,
            every,
            report_every,
            soak_steps: plan.steps,
        };
        let mut probe = Probe::new(stage_plan, device, &cfg.session.out, started);
        let weights = StartWeights::open(&cfg.origin.init, cfg.recipe.which)?;
        train::run(&cfg, Begin::New(weights), device, &mut |step| {
            probe.after_step(step)
        })
        .map_err(|e| not_resumable(e, stage))?;
        let (figures, stage_samples) = probe
            .finish()
            .ok_or_else(|| anyhow::anyhow!("soak: stage {} ran no step", stage.name()))?;
        stages.push(figures);
        samples.extend(stage_samples);
        offset += steps;
    }
    Ok(Report {
        device: device::describe(device),
        steps: plan.steps,
        epoch_steps,
        batch_size: plan.batch_size,
        image_size: plan.image_size,
        amp: plan.amp,
        max_growth_mb_per_1k: plan.max_growth,
        seconds: started.elapsed().as_secs_f64(),
        failures: stages
            .iter()
            .flat_map(|s| failures(s, plan.max_growth))
            .collect(),
        stages,
        samples,
    })
}

/// One stage of the soak as a normal run trains it, quiet on the console, on `data` into a
/// run directory in `out`: epochs of the plan's steps, stopped after `steps`; stage 1 from
/// random features, stage 2 from stage 1.
fn stage_config(
    plan: &Plan,
    (data, out): (&Path, &Path),
    (stage, steps): (Stage, u64),
    device: Device,
) -> TrainConfig {
    let run = out.join(stage.name());
    let init = match stage {
        Stage::Base => Init::RandomInit,
        Stage::Finetune => Init::From(out.join(Stage::Base.name())),
    };
    TrainConfig {
        recipe: Recipe {
            batch_size: plan.batch_size,
            amp: plan.amp,
            image_size: plan.image_size,
            ..Recipe::of(stage)
        },
        origin: Origin {
            init,
            skip_bad_images: false,
        },
        session: Session {
            data: data.to_path_buf(),
            device: DeviceChoice::of(device),
            deterministic: false,
            epochs: u32::try_from(steps.div_ceil(plan.epoch_steps)).unwrap_or(u32::MAX),
            log_interval: recipe::LOG_INTERVAL,
            pred_interval: recipe::PRED_INTERVAL,
            cache_dir: Some(out.join("cache")),
            max_steps: Some(steps),
            checkpoint_every: None,
            max_nan_skips: 0,
            early_stop: None,
            min_delta: 0.0,
            tensorboard: Some(run.join("tb")),
            out: run,
            force: false,
            resume: false,
            quiet: true,
        },
    }
}

/// A soak stopped by a signal is run again rather than resumed: the stage's resume line gives
/// way to one that says so.
fn not_resumable(err: anyhow::Error, stage: Stage) -> anyhow::Error {
    match err.downcast::<Interrupted>() {
        Ok(stop) => anyhow::Error::new(Interrupted {
            signal: stop.signal,
            message: format!(
                "soak stopped in stage {}; a soak is not resumed: run it again (with a new or \
                 empty --out)",
                stage.name()
            ),
        }),
        Err(other) => other,
    }
}

/// What in `stage` went past its bound: memory or files growing faster than `max_growth` MiB
/// per 1 000 steps after warm-up, or more files open or threads running in the second half
/// after warm-up than in the first.
fn failures(stage: &StageReport, max_growth: f64) -> Vec<String> {
    let name = stage.stage.name();
    let mut found = Vec::new();
    let series = [
        ("host memory", Some(&stage.host_mb)),
        ("device memory", stage.device_mb.as_ref()),
        ("the device's tensors", stage.device_tensors_mb.as_ref()),
        ("the run directory", Some(&stage.run_dir_mb)),
    ];
    for (what, s) in series {
        match s.map(|s| s.slope_per_1k) {
            None => {}
            Some(None) => found.push(format!(
                "{name}: too few steps after warm-up to measure how {what} grows"
            )),
            Some(Some(slope)) if slope.is_nan() || slope > max_growth => found.push(format!(
                "{name}: {what} grew {slope:.3} MiB per 1000 steps after warm-up, past the \
                 bound of {max_growth}"
            )),
            Some(Some(_)) => {}
        }
    }
    for (what, counts) in [("files open", stage.open_files), ("threads", stage.threads)] {
        if counts.second_half > counts.first_half {
            found.push(format!(
                "{name}: up to {} {what} in the second half after warm-up, {} in the first",
                counts.second_half, counts.first_half
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::stats::{Counts, Series, Tenths};
    use super::*;

    #[test]
    fn the_recipe_is_15_epochs_of_1485_steps() {
        assert_eq!(recipe_steps(), 22_275);
        assert_eq!(
            stage_steps(22_275),
            [(Stage::Base, 14_850), (Stage::Finetune, 7_425)]
        );
        assert_eq!(stage_steps(10), [(Stage::Base, 6), (Stage::Finetune, 4)]);
        assert_eq!(min_steps(20), 120);
        assert_eq!(min_steps(u64::MAX), u64::MAX);
    }

    #[test]
    fn the_synthetic_set_has_a_holdout_and_epochs_of_at_least_the_steps_asked() {
        // 10 classes of 2: 19 training images, 9 batches of 2 (a last batch of 1 is dropped)
        assert_eq!(synthetic_set(1, 2), (2, 9));
        assert_eq!(synthetic_set(275, 2), (58, 275));
        for (steps, batch) in [(25, 2), (100, 16), (3, 64)] {
            let (per_class, epoch) = synthetic_set(steps, batch);
            assert!(epoch >= steps);
            let [_, holdout] = SplitSpec::new(42, 0.05, CLASSES * per_class).lengths();
            assert!(holdout >= 1);
            let (fewer, smaller) = synthetic_set(steps, batch);
            assert!(fewer == per_class && smaller == epoch);
        }
    }

    fn stage(host_slope: Option<f64>, files: (u64, u64)) -> StageReport {
        let series = |slope| Series {
            start: 1.0,
            after_warmup: 2.0,
            end: 2.0,
            peak: 2.0,
            slope_per_1k: slope,
        };
        let counts = |(first_half, second_half)| Counts {
            first_half,
            second_half,
        };
        StageReport {
            stage: Stage::Finetune,
            steps: 100,
            warmup_steps: 10,
            seconds: 1.0,
            host_mb: series(host_slope),
            device_mb: None,
            device_tensors_mb: None,
            run_dir_mb: series(Some(0.0)),
            open_files: counts(files),
            threads: counts((5, 5)),
            ms_per_step: Tenths {
                first_tenth: 1.0,
                last_tenth: 1.0,
            },
        }
    }

    #[test]
    fn growth_past_the_bound_and_leaked_files_fail() {
        assert!(failures(&stage(Some(7.9), (9, 9)), 8.0).is_empty());
        let grew = failures(&stage(Some(8.5), (9, 9)), 8.0);
        assert_eq!(grew.len(), 1);
        let want = "finetune: host memory grew 8.500 MiB";
        assert!(grew[0].contains(want), "{grew:?}");
        assert_eq!(failures(&stage(Some(f64::NAN), (9, 9)), 8.0).len(), 1);
        assert!(failures(&stage(None, (9, 9)), 8.0)[0].contains("too few steps"));
        let leaked = failures(&stage(Some(0.0), (9, 11)), 8.0);
        let want = "finetune: up to 11 files open in the second half after warm-up, 9 in the first";
        assert_eq!(leaked, vec![want]);
    }
}
