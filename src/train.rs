//! The training loop shared by both stages. They differ only in their starting weights, what
//! is frozen (`Stage`) and their hyper-parameters (`TrainConfig`).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use crate::amp::{Amp, LossScaler};
use crate::bail_input;
use crate::checkpoint::{
    prepare_run_dir, read_tensors, save_meta, save_tensors, Meta, Source, METRICS_FILE, MODEL_FILE,
};
use crate::cli::SchedStep;
use crate::config::{describe, resolve_device, Init, TrainConfig};
use crate::data::cache::{self, ImageSet, Origin};
use crate::data::ensure_same_classes;
use crate::data::loader::{mix, Batch, Loader, Planned};
use crate::data::scan::{scan_image_folder, DataRoot, Sample};
use crate::data::split::{Split, SplitSpec};
use crate::eval::{eval_batch_size, evaluate, Scores};
use crate::metrics::{host_memory_mb, topk_correct, BatchRecord, EpochRecord, MetricsLog};
use crate::model::{Part, Vgg16};
use crate::optim::Adam;
use crate::progress::Progress;

/// Streams of random draws, each keyed separately so that none shifts another.
#[derive(Clone, Copy)]
enum Stream {
    Init = 1,
    Shuffle = 2,
    Augment = 3,
    Dropout = 4,
}

/// Weights a stage starts from: the tensors, which part of them to load, and their file's name.
struct Start {
    named: Vec<(String, Tensor)>,
    part: Part,
    source: String,
    /// The meta.json of the run they come from, if any.
    meta: Option<Meta>,
}

fn read_start(init: &Init) -> Result<Option<Start>> {
    Ok(match init {
        Init::RandomInit => None,
        Init::Weights(path) => Some(Start {
            named: read_tensors(path)?,
            part: Part::Features,
            source: path.display().to_string(),
            meta: None,
        }),
        Init::From(path) => {
            let source = Source::resolve(path)?;
            Some(Start {
                named: read_tensors(&source.model)?,
                part: Part::All,
                source: source.model.display().to_string(),
                meta: source.meta,
            })
        }
    })
}

/// The training tree, split and decoded.
struct TrainData {
    classes: Vec<String>,
    spec: SplitSpec,
    split: Split,
    set: ImageSet,
}

fn load_data(cfg: &TrainConfig, start: Option<&Start>) -> Result<TrainData> {
    let root = DataRoot::locate(&cfg.data)?;
    let list = scan_image_folder(&root.train)?;
    if list.classes.len() < 2 {
        bail_input!(
            "{} has {} class folder(s); a classifier needs at least 2",
            root.train.display(),
            list.classes.len()
        );
    }
    if let Some(Start {
        meta: Some(meta),
        source,
        ..
    }) = start
    {
        ensure_same_classes(&meta.classes, &list.classes, source)?;
    }
    // The split draws first from a freshly seeded generator, exactly as random_split does.
    let spec = SplitSpec::new(cfg.seed, cfg.holdout, list.samples.len());
    let split = spec.split();
    if split.holdout.is_empty() || split.train.len() < 2 {
        bail_input!(
            "a holdout of {} over {} images leaves {} to train on and {} to hold out; \
             both must be non-empty (at least 2 to train)",
            cfg.holdout,
            list.samples.len(),
            split.train.len(),
            split.holdout.len()
        );
    }
    eprintln!(
        "data: {} classes, {} training and {} holdout images from {}",
        list.classes.len(),
        split.train.len(),
        split.holdout.len(),
        root.train.display()
    );
    let set = load_images(&list.samples, cfg.cache_dir.as_deref())?;
    Ok(TrainData {
        classes: list.classes,
        spec,
        split,
        set,
    })
}

/// Decoded images of `samples`, through the cache, with one line saying where they came from.
pub fn load_images(samples: &[Sample], cache_dir: Option<&Path>) -> Result<ImageSet> {
    let started = Instant::now();
    let (set, report) = cache::load(samples, cache_dir)?;
    let how = match report.origin {
        Origin::Cache => "mapped from the cache",
        Origin::Decoded => "decoded",
        Origin::Rebuilt => "decoded again",
    };
    eprintln!(
        "{} images {how} in {:.2}s",
        samples.len(),
        started.elapsed().as_secs_f64()
    );
    if report.resized > 0 {
        eprintln!(
            "warning: {} images were not 64x64 and were resized",
            report.resized
        );
    }
    Ok(set)
}

/// On a GPU the whole uint8 set moves to device memory once when it fits, so that batches are
/// gathered there; otherwise they travel through pinned host memory.
pub fn place(set: ImageSet, device: Device) -> ImageSet {
    if device == Device::Cpu {
        return set;
    }
    match set.to_device(device) {
        Ok(on_device) => on_device,
        Err(_) => {
            eprintln!("note: the decoded images do not fit on the GPU; batches are copied in");
            set
        }
    }
}

/// One optimizer step: training-mode forward, NLL of the log-softmax, backward, Adam. Under
/// fp16 the backward runs on the scaled loss and a step with overflowed gradients is skipped.
/// Returns the loss and the logits, detached, still on the device.
pub fn train_step(
    model: &mut Vgg16,
    adam: &mut Adam,
    scaler: Option<&mut LossScaler>,
    batch: &Batch,
    (lr, beta1): (f64, f64),
) -> (Tensor, Tensor) {
    let logits = model.forward_train(&batch.images);
    let loss = logits.log_softmax(1, Kind::Float).nll_loss(&batch.labels);
    adam.zero_grad();
    match scaler {
        None => {
            loss.backward();
            adam.step(lr, beta1);
        }
        Some(scaler) => {
            scaler.scaled(&loss).backward();
            if scaler.unscale(adam.params()) {
                adam.step(lr, beta1);
            }
        }
    }
    (loss.detach(), logits.detach())
}

/// Batches of an epoch, minus a last batch of one sample (BatchNorm cannot train on it).
pub fn batches_per_epoch(train_len: usize, batch_size: usize) -> usize {
    train_len.div_ceil(batch_size) - usize::from(train_len % batch_size == 1)
}

/// Trains one stage as `cfg` says and returns the final holdout scores.
pub fn run(cfg: &TrainConfig) -> Result<Scores> {
    let device = resolve_device(&cfg.device)?;
    eprintln!("device: {}", describe(device));
    if device != Device::Cpu {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    prepare_run_dir(&cfg.out, cfg.force)?;

    // Starting weights are read first, so that a bad file fails before any decoding.
    let start = read_start(&cfg.init)?;
    let data = load_data(cfg, start.as_ref())?;
    let set = place(data.set, device);
    let split = &data.split;

    let key = |parts: &[u64]| mix(&[&[cfg.seed as u64, cfg.stage as u64][..], parts].concat());
    tch::manual_seed(key(&[Stream::Init as u64]) as i64);
    let mut model = Vgg16::new(data.classes.len() as i64, device);
    if let Some(start) = start {
        model.load(start.named, start.part, &start.source)?;
    }
    model.set_stage(cfg.stage);
    model.set_dropout(cfg.dropout);
    model.set_compute_kind(cfg.amp.compute_kind());
    let mut adam = Adam::new(model.trainable().into_iter().map(|(_, t)| t).collect());
    let mut scaler = (cfg.amp == Amp::Fp16).then(|| LossScaler::standard(device));

    let mut meta = Meta::new(cfg.stage, data.classes.clone(), data.spec, cfg.clone());
    let mut log = MetricsLog::append(&cfg.out.join(METRICS_FILE))?;
    let loader = Loader::new(&set, device);
    let per_epoch = batches_per_epoch(split.train.len(), cfg.batch_size);
    let stage = cfg.stage.name();

    let max_steps = cfg.max_steps.unwrap_or(u64::MAX);
    let mut step: u64 = 0;
    let mut holdout = None;
    for epoch in 1..=cfg.epochs {
        if step >= max_steps {
            break;
        }
        let epoch_start = Instant::now();
        let epoch_key = |stream: Stream, extra: u64| key(&[epoch as u64, stream as u64, extra]);
        tch::manual_seed(epoch_key(Stream::Dropout, 0) as i64);
        let order = if cfg.shuffle {
            Loader::shuffled(&split.train, epoch_key(Stream::Shuffle, 0))
        } else {
            split.train.clone()
        };
        let batches = per_epoch.min((max_steps - step).try_into().unwrap_or(usize::MAX));
        let plan: Vec<Planned> = order
            .chunks(cfg.batch_size)
            .take(batches)
            .enumerate()
            .map(|(b, indices)| Planned {
                indices: indices.to_vec(),
                key: epoch_key(Stream::Augment, b as u64),
            })
            .collect();
        let progress = Progress::new(order.len() as u64, format!("{stage} epoch {epoch}"));
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut seen = 0usize;
        let mut last_lr = 0.0;

        std::thread::scope(|scope| -> Result<()> {
            for (b, batch) in loader.prefetch(scope, plan, cfg.augment).enumerate() {
                let sched_t = match cfg.sched_step {
                    SchedStep::Batch => step,
                    SchedStep::Epoch => u64::from(epoch - 1),
                };
                let (lr, beta1) = cfg.schedule.at(sched_t);
                let (loss, logits) =
                    train_step(&mut model, &mut adam, scaler.as_mut(), &batch, (lr, beta1));

                loss_sum += loss.to_kind(Kind::Double) * batch.len as f64;
                seen += batch.len;
                last_lr = lr;
                progress.advance(batch.len as u64);
                if step.is_multiple_of(cfg.log_interval) {
                    // The only host synchronisation of the loop, at log intervals.
                    let acc = step.is_multiple_of(cfg.pred_interval).then(|| {
                        topk_correct(&logits, &batch.labels, 1).int64_value(&[]) as f64
                            / batch.len as f64
                    });
                    let record = BatchRecord {
                        stage: stage.to_string(),
                        epoch,
                        step,
                        lr,
                        beta1,
                        loss: loss.double_value(&[]),
                        acc,
                    };
                    log.batch(&record)?;
                    let mut line = format!(
                        "Train Epoch: {epoch} [{}/{} ({:.0}%)]\tLoss: {:.6}",
                        b * cfg.batch_size,
                        order.len(),
                        100.0 * b as f64 / per_epoch as f64,
                        record.loss
                    );
                    if let Some(acc) = acc {
                        line.push_str(&format!("\tBatch acc: {acc:.4}"));
                    }
                    progress.line(&line);
                }
                step += 1;
            }
            Ok(())
        })?;
        progress.finish();
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        if cfg.precise_bn > 0 {
            let batches = order.chunks(cfg.batch_size).take(cfg.precise_bn);
            model.recalibrate_batch_norm(batches.map(|b| loader.eval_batch(b).images));
        }

        let eval_batch = eval_batch_size(device, cfg.batch_size);
        let scores = evaluate(&model, &loader, &split.holdout, eval_batch);
        let record = EpochRecord {
            stage: stage.to_string(),
            epoch,
            train_loss: loss_sum.double_value(&[]) / seen.max(1) as f64,
            holdout_loss: scores.loss,
            holdout_top1: scores.top1,
            holdout_top5: scores.top5,
            lr: last_lr,
            seconds: epoch_start.elapsed().as_secs_f64(),
            images_per_sec: seen as f64 / train_seconds,
            host_mb: host_memory_mb("VmRSS:"),
        };
        println!(
            "Holdout: Average loss: {:.4}, Top-1: {:.2}%, Top-5: {:.2}% ({} images; epoch {:.1}s, {:.0} train images/s)",
            scores.loss,
            100.0 * scores.top1,
            100.0 * scores.top5,
            scores.samples,
            record.seconds,
            record.images_per_sec
        );
        log.epoch(&record)?;
        meta.epochs.push(record);
        save_tensors(&cfg.out.join(MODEL_FILE), &model.state())?;
        save_meta(&cfg.out, &meta)?;
        holdout = Some(scores);
    }
    let scores = holdout.context("no epoch ran")?;
    println!(
        "Finished {stage}: holdout Top-1 acc: {:.4} / Top-5 acc: {:.4}; model in {}",
        scores.top1,
        scores.top5,
        cfg.out.join(MODEL_FILE).display()
    );
    Ok(scores)
}
