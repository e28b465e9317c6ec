//! `vggtiny bench`: throughput of each part of the pipeline on this machine (cold decode,
//! augmented batch assembly, stage-1 and stage-2 training steps, eval), peak memory, and how
//! long a warm start takes. Runs on `--data` or on synthetic data it writes itself.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tch::{Device, Kind};

use crate::amp::{Amp, LossScaler};
use crate::bail_input;
use crate::cli::{BenchArgs, Workload};
use crate::config::{describe, resolve_device};
use crate::data::cache::{self, ImageSet};
use crate::data::loader::{Loader, Planned};
use crate::data::scan::{scan_image_folder, DataRoot, Sample};
use crate::data::synth::{write_dataset, SynthSpec};
use crate::eval::eval_batch_size;
use crate::metrics::host_memory_mb;
use crate::model::{Stage, Vgg16};
use crate::optim::{Adam, CyclicLr};
use crate::train::{forward_loss, optimize, place};

/// Results, in the JSON shape `--json` prints. Absent workloads are null.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub device: String,
    pub amp: Amp,
    pub images: usize,
    pub batch_size: usize,
    pub decode_images_per_sec: Option<f64>,
    /// Seconds a repeat run takes from scanning the tree to its first batch, cache warm.
    pub warm_start_seconds: Option<f64>,
    pub augment_images_per_sec: Option<f64>,
    pub train_base_images_per_sec: Option<f64>,
    /// Share of stage-1 step time the training thread waited for its next batch.
    pub train_base_data_wait: Option<f64>,
    pub finetune_images_per_sec: Option<f64>,
    pub finetune_data_wait: Option<f64>,
    pub eval_images_per_sec: Option<f64>,
    pub peak_host_mb: f64,
    pub peak_device_mb: Option<f64>,
}

/// A temporary directory removed on drop (synthetic data, throwaway cache).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("vggtiny-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Device memory in use (total minus free, as the CUDA runtime already loaded by libtorch
/// reports it), in MiB. The caching allocator keeps what it once reserved, so after a workload
/// this is that workload's peak.
fn device_used_mb(device: Device) -> Option<f64> {
    if device == Device::Cpu {
        return None;
    }
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: looks up a symbol of the already loaded CUDA runtime and calls it as declared in
    // cuda_runtime_api.h; null when the runtime is not loaded.
    unsafe {
        let sym: *mut c_void = libc::dlsym(libc::RTLD_DEFAULT, c"cudaMemGetInfo".as_ptr());
        if sym.is_null() {
            return None;
        }
        let get: MemGetInfo = std::mem::transmute(sym);
        let (mut free, mut total) = (0usize, 0usize);
        (get(&mut free, &mut total) == 0).then(|| (total - free) as f64 / (1024.0 * 1024.0))
    }
}

fn sync(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// The class-folder tree to measure on: `--data`'s, or a synthetic one of `n` images.
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
            let dir = scratch.0.join("data");
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

/// Trains `steps` timed steps (after two warm-up steps) of `stage`; images/s and data wait.
fn train_throughput(
    set: &ImageSet,
    device: Device,
    stage: Stage,
    amp: Amp,
    batch_size: usize,
    steps: usize,
) -> (f64, f64) {
    let classes = (set.labels.max().int64_value(&[]) + 1).max(200);
    tch::manual_seed(0);
    let mut model = Vgg16::new(classes, device);
    model.set_stage(stage);
    model.set_compute_kind(amp.compute_kind());
    let mut adam = Adam::new(model.trainable());
    let mut scaler = (amp == Amp::Fp16).then(|| LossScaler::standard(device));
    let schedule = CyclicLr::triangular2(1e-4, 6e-4, 1404);
    let n = set.len();
    let warmup = 2;
    let plan: Vec<Planned> = (0..warmup + steps)
        .map(|b| Planned {
            indices: (0..batch_size).map(|i| (b * batch_size + i) % n).collect(),
            key: b as u64,
        })
        .collect();
    let loader = Loader::new(set, device);
    let mut waited = 0.0;
    let mut timed_start = Instant::now();
    std::thread::scope(|scope| {
        let mut batches = loader.prefetch(scope, plan, true);
        for step in 0..warmup + steps {
            if step == warmup {
                sync(device);
                timed_start = Instant::now();
                waited = 0.0;
            }
            let wait = Instant::now();
            let Some(batch) = batches.next() else {
                break;
            };
            waited += wait.elapsed().as_secs_f64();
            let (loss, _) = forward_loss(&mut model, &batch);
            optimize(&mut adam, scaler.as_mut(), &loss, schedule.at(step as u64));
        }
    });
    sync(device);
    let seconds = timed_start.elapsed().as_secs_f64();
    ((steps * batch_size) as f64 / seconds, waited / seconds)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.images < args.batch_size || args.batch_size < 2 {
        bail_input!("--images must be at least --batch-size, and --batch-size at least 2");
    }
    let device = resolve_device(&args.device)?;
    if args.amp == Amp::Fp16 && device == Device::Cpu {
        bail_input!("--amp fp16 needs a CUDA device; on the CPU use --amp bf16 or off");
    }
    eprintln!("device: {}", describe(device));
    if device != Device::Cpu {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let scratch = Scratch::new("work")?;
    let tree = tree(args.data.as_deref(), args.images, &scratch)?;
    let list = samples(&tree, args.images)?;
    let wants = |w: Workload| args.only.is_empty() || args.only.contains(&w);
    let mut report = Report {
        device: describe(device),
        amp: args.amp,
        images: list.len(),
        batch_size: args.batch_size,
        ..Report::default()
    };

    let started = Instant::now();
    let (decoded, _) = cache::load(&list, None, false)?;
    if wants(Workload::Decode) {
        report.decode_images_per_sec = Some(list.len() as f64 / started.elapsed().as_secs_f64());
        // A repeat run's start: scan, find and map the cache, build the model, first batch.
        let cache_dir = scratch.0.join("cache");
        cache::load(&list, Some(&cache_dir), false)?;
        let started = Instant::now();
        let warm_list = samples(&tree, args.images)?;
        let (warm, _) = cache::load(&warm_list, Some(&cache_dir), false)?;
        let warm = place(warm, device);
        let _model = Vgg16::new(200, device);
        let first: Vec<usize> = (0..args.batch_size).collect();
        let _ = Loader::new(&warm, device).train_batch(&first, 0, true);
        sync(device);
        report.warm_start_seconds = Some(started.elapsed().as_secs_f64());
    }
    let set = place(decoded, device);
    let loader = Loader::new(&set, device);
    let n = set.len();
    let batch = args.batch_size;

    if wants(Workload::Augment) {
        let batches = (16384 / batch).max(4);
        let rows = |b: usize| (0..batch).map(|i| (b * batch + i) % n).collect::<Vec<_>>();
        let _ = loader.train_batch(&rows(0), 0, true);
        sync(device);
        let started = Instant::now();
        for b in 0..batches {
            let _ = loader.train_batch(&rows(b), b as u64, true);
        }
        sync(device);
        report.augment_images_per_sec =
            Some((batches * batch) as f64 / started.elapsed().as_secs_f64());
    }
    if wants(Workload::TrainBase) {
        let (ips, wait) = train_throughput(&set, device, Stage::Base, args.amp, batch, args.steps);
        report.train_base_images_per_sec = Some(ips);
        report.train_base_data_wait = Some(wait);
    }
    if wants(Workload::Finetune) {
        let (ips, wait) =
            train_throughput(&set, device, Stage::Finetune, args.amp, batch, args.steps);
        report.finetune_images_per_sec = Some(ips);
        report.finetune_data_wait = Some(wait);
    }
    if wants(Workload::Eval) {
        tch::manual_seed(0);
        let mut model = Vgg16::new(200, device);
        model.set_compute_kind(args.amp.compute_kind());
        let eval_batch = eval_batch_size(device, batch);
        let rows: Vec<usize> = (0..n).collect();
        let _ = model.forward_eval(&loader.eval_batch(&rows[..eval_batch.min(n)]).images);
        sync(device);
        let started = Instant::now();
        for chunk in rows.chunks(eval_batch) {
            let logits = model.forward_eval(&loader.eval_batch(chunk).images);
            let _ = logits.argmax(1, false).to_kind(Kind::Int64);
        }
        sync(device);
        report.eval_images_per_sec = Some(n as f64 / started.elapsed().as_secs_f64());
    }
    report.peak_host_mb = host_memory_mb("VmHWM:");
    report.peak_device_mb = device_used_mb(device);

    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "vggtiny bench on {} ({} images, batch {})",
        r.device, r.images, r.batch_size
    );
    let rows = [
        ("cold decode", r.decode_images_per_sec, None),
        ("augmented batches", r.augment_images_per_sec, None),
        (
            "stage-1 training",
            r.train_base_images_per_sec,
            r.train_base_data_wait,
        ),
        (
            "stage-2 training",
            r.finetune_images_per_sec,
            r.finetune_data_wait,
        ),
        ("eval", r.eval_images_per_sec, None),
    ];
    for (name, ips, wait) in rows {
        if let Some(ips) = ips {
            let wait = wait.map_or(String::new(), |w| {
                format!("  (waiting for data {:.1}%)", 100.0 * w)
            });
            println!("  {name:<20} {ips:>10.1} images/s{wait}");
        }
    }
    if let Some(s) = r.warm_start_seconds {
        println!("  {:<20} {:>10.3} s", "warm start", s);
    }
    println!("  {:<20} {:>10.0} MiB", "peak host memory", r.peak_host_mb);
    if let Some(mb) = r.peak_device_mb {
        println!("  {:<20} {:>10.0} MiB", "device memory used", mb);
    }
}
