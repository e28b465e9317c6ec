//! Throughput of each part of the pipeline on this machine (cold decode, augmented batch
//! assembly, stage-1 and stage-2 training steps, eval), peak memory, and how long a warm start
//! takes, on a given image tree or on synthetic data written for the purpose.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tch::{Device, Kind};

use crate::data::cache::stored_side;
use crate::data::image_set::ImageSet;
use crate::data::load::decode_or_map;
use crate::data::loader::{Loader, PlannedBatch};
use crate::data::scan::{scan_image_folder, DataRoot, Sample};
use crate::data::synth::{write_dataset, SynthSpec};
use crate::device::allocator::{allocator_memory, restart_peaks};
use crate::device::gpu_timeline::GpuTimeline;
use crate::device::{self, device_used_mb, synchronize};
use crate::eval::eval_batch_size;
use crate::io::memory::host_memory_mb;
use crate::io::scratch::Scratch;
use crate::model::{Amp, Stage, Vgg16};
use crate::recipe::Recipe;
use crate::train::step::Learner;

/// A part of the pipeline `bench` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Cold JPEG decode, and a warm start from the cache
    Decode,
    /// Augmented, normalised training batches from the decoded set
    Augment,
    /// Stage-1 training steps (frozen features)
    TrainBase,
    /// Stage-2 training steps (everything trained)
    Finetune,
    /// Eval-mode forward passes
    Eval,
}

/// What to measure.
pub struct Plan<'a> {
    /// Image tree to measure on; `None` writes a synthetic one.
    pub data: Option<&'a Path>,
    pub images: usize,
    pub batch_size: usize,
    /// Timed optimizer steps per training stage.
    pub steps: usize,
    pub amp: Amp,
    /// Side of the images the network sees.
    pub image_size: u32,
    /// Workloads to measure; empty measures all.
    pub only: &'a [Workload],
    pub device: Device,
}

impl Plan<'_> {
    fn wants(&self, w: Workload) -> bool {
        self.only.is_empty() || self.only.contains(&w)
    }

    /// Batches of `set` on the plan's device, at its image size.
    fn loader<'s>(&self, set: &'s ImageSet) -> Loader<'s> {
        Loader::new(set, self.device).with_image_size(self.image_size)
    }
}

/// The rows of batch `b` of `batch` images, cycling through a set of `n`.
fn cyclic_rows(b: usize, batch: usize, n: usize) -> Vec<usize> {
    (0..batch).map(|i| (b * batch + i) % n).collect()
}

/// Results, in the JSON shape `--json` prints. Absent workloads are null.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub device: String,
    pub amp: Amp,
    pub image_size: u32,
    pub images: usize,
    pub batch_size: usize,
    pub decode_images_per_sec: Option<f64>,
    /// Seconds a repeat run takes from scanning the tree to its first batch, cache warm.
    pub warm_start_seconds: Option<f64>,
    pub augment_images_per_sec: Option<f64>,
    /// Stage 1's figures, as `train_base_images_per_sec` and so on.
    #[serde(flatten, with = "train_base_fields")]
    pub train_base: StageFigures,
    #[serde(flatten, with = "finetune_fields")]
    pub finetune: StageFigures,
    pub eval_images_per_sec: Option<f64>,
    pub peak_host_mb: f64,
    /// How far the used memory of the run's CUDA device rose over its start: the allocator's
    /// reservation, the CUDA context's and libraries' memory (device-wide figures; CUDA only).
    pub peak_device_mb: Option<f64>,
}

serde_with::with_prefix!(train_base_fields "train_base_");
serde_with::with_prefix!(finetune_fields "finetune_");

/// What `bench` measures of one training stage; null where the stage is not measured, and the
/// CUDA figures on the CPU.
#[derive(Debug, Default, Serialize)]
pub struct StageFigures {
    pub images_per_sec: Option<f64>,
    /// Share of the step time the training thread waited for its next batch.
    pub data_wait: Option<f64>,
    /// Share of the GPU's time, first timed step's beginning to last one's end, between one
    /// step's work and the next: idle, or the loader's batch work (`device::gpu_timeline`).
    pub gpu_between_steps: Option<f64>,
    /// Peak MiB of the stage's tensors (the images the loader keeps on the device included),
    /// and of what libtorch's CUDA allocator took from the device for them, its cache
    /// included: the stage's own, its cache emptied first (`device::allocator`).
    pub peak_allocated_mb: Option<f64>,
    pub peak_reserved_mb: Option<f64>,
    /// Milliseconds of one optimizer (Adam) step alone, and the tensor operations it issues.
    pub optimizer_ms: Option<f64>,
    pub optimizer_ops: Option<u64>,
}

/// The highest reading of the CUDA device's used memory, for `peak_device_mb`: read before
/// each stage empties the allocator's cache (which gives memory back) and at the end.
struct DeviceHigh {
    device: Device,
    start: Option<f64>,
    high: Option<f64>,
}

impl DeviceHigh {
    fn new(device: Device) -> DeviceHigh {
        let start = device_used_mb(device);
        DeviceHigh {
            device,
            start,
            high: start,
        }
    }

    fn read(&mut self) {
        self.note(device_used_mb(self.device));
    }

    fn note(&mut self, reading: Option<f64>) {
        if let Some(now) = reading {
            self.high = Some(self.high.map_or(now, |high| high.max(now)));
        }
    }

    /// Empties the allocator's cache and starts its peaks again, so that the next stage's
    /// are its own; reads the device first.
    fn fresh_stage(&mut self) {
        self.read();
        restart_peaks(self.device);
    }

    /// MiB the device's used memory rose to over its start, read once more now.
    fn growth(mut self) -> Option<f64> {
        self.read();
        self.rise()
    }

    fn rise(&self) -> Option<f64> {
        self.high
            .zip(self.start)
            .map(|(high, start)| (high - start).max(0.0))
    }
}

/// The class-folder tree to measure on: `data`'s, or a synthetic one of `n` images.
fn tree(data: Option<&Path>, n: usize, scratch: &Scratch) -> Result<PathBuf> {
    Ok(match data {
        Some(dir) => DataRoot::locate(dir)?.train,
        None => {
            let classes = 10;
            let spec = SynthSpec {
                classes,
                per_class: n.div_ceil(classes),
                val_per_class: 0,
                seed: 0,
            };
            let dir = scratch.path().join("data");
            write_dataset(&dir, &spec)?;
            dir.join("train")
        }
    })
}

/// The first `n` images of the tree.
fn samples(tree: &Path, n: usize) -> Result<Vec<Sample>> {
    let mut list = scan_image_folder(tree)?.samples;
    list.truncate(n);
    Ok(list)
}

/// Measures what `plan` asks for.
pub fn run(plan: &Plan) -> Result<Report> {
    let device = plan.device;
    let mut device_high = DeviceHigh::new(device);
    let scratch = Scratch::new("bench")?;
    let tree = tree(plan.data, plan.images, &scratch)?;
    let list = samples(&tree, plan.images)?;
    let mut report = Report {
        device: device::describe(device),
        amp: plan.amp,
        image_size: plan.image_size,
        images: list.len(),
        batch_size: plan.batch_size,
        ..Report::default()
    };
    let side = stored_side(plan.image_size, &list);
    let started = Instant::now();
    let (decoded, _) = decode_or_map(&list, side, None, false)?;
    if plan.wants(Workload::Decode) {
        report.decode_images_per_sec = Some(list.len() as f64 / started.elapsed().as_secs_f64());
        report.warm_start_seconds = Some(warm_start(&tree, side, plan, &scratch)?);
    }
    let set = decoded.for_training_on(device)?;
    if plan.wants(Workload::Augment) {
        report.augment_images_per_sec = Some(augment_throughput(&set, plan));
    }
    if plan.wants(Workload::TrainBase) {
        device_high.fresh_stage();
        report.train_base = train_throughput(&set, plan, Stage::Base)?;
    }
    if plan.wants(Workload::Finetune) {
        device_high.fresh_stage();
        report.finetune = train_throughput(&set, plan, Stage::Finetune)?;
    }
    if plan.wants(Workload::Eval) {
        report.eval_images_per_sec = Some(eval_throughput(&set, plan));
    }
    report.peak_host_mb = host_memory_mb("VmHWM:");
    report.peak_device_mb = device_high.growth();
    Ok(report)
}

/// A repeat run's start: scan, find and map the cache (images stored at `side`), build the
/// model, first batch.
fn warm_start(tree: &Path, side: usize, plan: &Plan, scratch: &Scratch) -> Result<f64> {
    let cache_dir = scratch.path().join("cache");
    decode_or_map(&samples(tree, plan.images)?, side, Some(&cache_dir), false)?;
    let started = Instant::now();
    let warm_list = samples(tree, plan.images)?;
    let (warm, _) = decode_or_map(&warm_list, side, Some(&cache_dir), false)?;
    let warm = warm.for_training_on(plan.device)?;
    let _model = Vgg16::new(200, plan.device);
    let first: Vec<usize> = (0..plan.batch_size).collect();
    let _ = plan.loader(&warm).train_batch(&first, 0, true);
    synchronize(plan.device);
    Ok(started.elapsed().as_secs_f64())
}

/// Augmented batches per second, about 16 384 images' worth.
fn augment_throughput(set: &ImageSet, plan: &Plan) -> f64 {
    let loader = plan.loader(set);
    let (n, batch) = (set.len(), plan.batch_size);
    let batches = (16384 / batch).max(4);
    let rows = |b: usize| cyclic_rows(b, batch, n);
    let _ = loader.train_batch(&rows(0), 0, true);
    synchronize(plan.device);
    let started = Instant::now();
    for b in 0..batches {
        let _ = loader.train_batch(&rows(b), b as u64, true);
    }
    synchronize(plan.device);
    (batches * batch) as f64 / started.elapsed().as_secs_f64()
}

/// Trains `plan.steps` timed steps (after two warm-up steps) of `stage`, then times Adam's
/// update alone over the same number of steps. The allocator's peaks are read at the end: the
/// stage's own where the caller restarted them (`DeviceHigh::fresh_stage`).
fn train_throughput(set: &ImageSet, plan: &Plan, stage: Stage) -> Result<StageFigures> {
    let (device, batch_size) = (plan.device, plan.batch_size);
    let classes = (set.labels.max().int64_value(&[]) + 1).max(200) as usize;
    tch::manual_seed(0);
    let recipe = Recipe {
        amp: plan.amp,
        image_size: plan.image_size,
        ..Recipe::of(stage)
    };
    let mut learner = Learner::new(classes, &recipe, device);
    let n = set.len();
    let warmup = 2;
    let batches: Vec<PlannedBatch> = (0..warmup + plan.steps)
        .map(|b| PlannedBatch {
            indices: cyclic_rows(b, batch_size, n),
            key: b as u64,
        })
        .collect();
    let loader = plan.loader(set);
    let (mut waited, mut timed_start) = (0.0, Instant::now());
    let mut timeline = GpuTimeline::new(device);
    std::thread::scope(|scope| -> Result<()> {
        let mut stream = loader.prefetch(scope, batches, true);
        for step in 0..warmup + plan.steps {
            if step == warmup {
                synchronize(device);
                (waited, timed_start) = (0.0, Instant::now());
            }
            let wait = Instant::now();
            let Some(batch) = stream.next() else {
                break;
            };
            let batch = batch?;
            waited += wait.elapsed().as_secs_f64();
            let mut timed = timeline.as_mut().filter(|_| step >= warmup);
            if let Some(t) = &mut timed {
                t.mark();
            }
            let forward = learner.forward(&batch);
            learner.apply(&forward, recipe.schedule.at(step as u64, 1));
            if let Some(t) = timed {
                t.mark();
            }
        }
        Ok(())
    })?;
    synchronize(device);
    let seconds = timed_start.elapsed().as_secs_f64();
    let rates = recipe.schedule.at(0, 1);
    let started = Instant::now();
    for _ in 0..plan.steps {
        learner.adam.step(rates.lr, rates.beta1);
    }
    synchronize(device);
    let optimizer_ms = 1e3 * started.elapsed().as_secs_f64() / plan.steps as f64;
    let allocator = allocator_memory(device);
    Ok(StageFigures {
        images_per_sec: Some((plan.steps * batch_size) as f64 / seconds),
        data_wait: Some(waited / seconds),
        gpu_between_steps: timeline.and_then(|t| t.share_between_steps()),
        peak_allocated_mb: allocator.map(|m| m.peak_allocated),
        peak_reserved_mb: allocator.map(|m| m.peak_reserved),
        optimizer_ms: Some(optimizer_ms),
        optimizer_ops: Some(learner.adam.ops_per_step()),
    })
}

/// Eval-mode forward passes per second over the whole set.
fn eval_throughput(set: &ImageSet, plan: &Plan) -> f64 {
    let device = plan.device;
    let loader = plan.loader(set);
    tch::manual_seed(0);
    let mut model = Vgg16::new(200, device);
    model.set_compute_kind(plan.amp.compute_kind());
    let n = set.len();
    let eval_batch = eval_batch_size(device, plan.batch_size, plan.image_size);
    let rows: Vec<usize> = (0..n).collect();
    let _ = model.forward_eval(&loader.eval_batch(&rows[..eval_batch.min(n)]).images);
    synchronize(device);
    let started = Instant::now();
    for chunk in rows.chunks(eval_batch) {
        let logits = model.forward_eval(&loader.eval_batch(chunk).images);
        let _ = logits.argmax(1, false).to_kind(Kind::Int64);
    }
    synchronize(device);
    n as f64 / started.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_peak_is_the_highest_reading_over_the_start() {
        let mut high = DeviceHigh {
            device: Device::Cpu,
            start: Some(100.0),
            high: Some(100.0),
        };
        // a stage's reservation, then its cache given back before the next stage
        for reading in [Some(300.0), Some(150.0), None, Some(250.0)] {
            high.note(reading);
        }
        assert_eq!(high.rise(), Some(200.0));
        let cpu = DeviceHigh::new(Device::Cpu);
        assert_eq!((cpu.start, cpu.growth()), (None, None));
    }
}
