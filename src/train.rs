//! The training loop shared by both stages. They differ only in their starting weights, what
//! is frozen (`Stage`) and their hyper-parameters (`TrainConfig`).
//!
//! A run checkpoints after every epoch (and every `--checkpoint-every` steps): model, Adam
//! moments, loss scale and `TrainState`, in one atomically written file. Every random draw is
//! keyed by (seed, stage, epoch, batch), so a run resumed from any checkpoint continues exactly
//! as it would have.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use crate::amp::{Amp, LossScaler};
use crate::bail_input;
use crate::checkpoint::{
    load_checkpoint, load_meta, prepare_run_dir, read_tensors, save_checkpoint, save_meta,
    save_tensors, truncate_metrics, Best, Meta, Source, TrainState, Which, BEST_FILE, META_FILE,
    METRICS_FILE, MODEL_FILE,
};
use crate::cli::SchedStep;
use crate::config::{describe, resolve_device, resumed, Init, TrainConfig};
use crate::data::cache::{self, ImageSet, Origin};
use crate::data::ensure_same_classes;
use crate::data::loader::{mix, Batch, Loader, Planned};
use crate::data::scan::{scan_image_folder, DataRoot, Sample};
use crate::data::split::{Split, SplitSpec};
use crate::error::Interrupted;
use crate::eval::{eval_batch_size, evaluate, Scores, Tta};
use crate::metrics::{host_memory_mb, topk_correct, BatchRecord, EpochRecord, MetricsLog};
use crate::model::{Part, Vgg16};
use crate::optim::Adam;
use crate::progress::Progress;
use crate::signals::StopSignals;

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

fn read_start(init: &Init, which: Which) -> Result<Option<Start>> {
    Ok(match init {
        Init::RandomInit => None,
        Init::Weights(path) => Some(Start {
            named: read_tensors(path)?,
            part: Part::Features,
            source: path.display().to_string(),
            meta: None,
        }),
        Init::From(path) => {
            let source = Source::resolve(path, which)?;
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
    class_names: Vec<String>,
    spec: SplitSpec,
    split: Split,
    set: ImageSet,
    skipped: Vec<std::path::PathBuf>,
}

/// Scans, decodes and splits `cfg.data`. `expected` is a run this one must agree with (the
/// run a stage starts from, or the run being resumed): same classes, and for a resume the same
/// dataset.
fn load_data(cfg: &TrainConfig, expected: Option<(&Meta, &str)>) -> Result<TrainData> {
    let root = DataRoot::locate(&cfg.data)?;
    let list = scan_image_folder(&root.train)?;
    if list.classes.len() < 2 {
        bail_input!(
            "{} has {} class folder(s); a classifier needs at least 2",
            root.train.display(),
            list.classes.len()
        );
    }
    if let Some((meta, source)) = expected {
        ensure_same_classes(&meta.classes, &list.classes, source)?;
    }
    let (set, skipped) = load_images(&list.samples, cfg.cache_dir.as_deref(), cfg.skip_bad_images)?;
    let samples: Vec<&Sample> = list
        .samples
        .iter()
        .filter(|s| !skipped.contains(&s.path))
        .collect();
    // The split draws first from a freshly seeded generator, exactly as random_split does.
    let spec = SplitSpec::new(cfg.seed, cfg.holdout, samples.len());
    if let Some((meta, source)) = expected.filter(|_| cfg.resume) {
        if meta.split != spec {
            bail_input!(
                "{source} was split over {} images, {} now has {}: the dataset changed",
                meta.split.dataset_size,
                root.train.display(),
                samples.len()
            );
        }
    }
    let split = spec.split();
    if split.holdout.is_empty() || split.train.len() < 2 {
        bail_input!(
            "a holdout of {} over {} images leaves {} to train on and {} to hold out; \
             both must be non-empty (at least 2 to train)",
            cfg.holdout,
            samples.len(),
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
    Ok(TrainData {
        class_names: root.class_names(&list.classes)?,
        classes: list.classes,
        spec,
        split,
        set,
        skipped,
    })
}

/// Decoded images of `samples`, through the cache, with one line saying where they came from.
/// Returns the set (without undecodable images when `skip_bad`) and the paths left out.
pub fn load_images(
    samples: &[Sample],
    cache_dir: Option<&Path>,
    skip_bad: bool,
) -> Result<(ImageSet, Vec<std::path::PathBuf>)> {
    let started = Instant::now();
    let (set, report) = cache::load(samples, cache_dir, skip_bad)?;
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
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|&i| samples[i].path.clone())
        .collect();
    for path in &skipped {
        eprintln!("warning: skipping undecodable image {}", path.display());
    }
    Ok((set, skipped))
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

/// Training-mode forward and the NLL of the log-softmax: loss and logits (still attached).
pub fn forward_loss(model: &mut Vgg16, batch: &Batch) -> (Tensor, Tensor) {
    let logits = model.forward_train(&batch.images);
    let loss = logits.log_softmax(1, Kind::Float).nll_loss(&batch.labels);
    (loss, logits)
}

/// Backward and Adam step. Under fp16 the backward runs on the scaled loss and a step with
/// overflowed gradients is skipped.
pub fn optimize(
    adam: &mut Adam,
    scaler: Option<&mut LossScaler>,
    loss: &Tensor,
    (lr, beta1): (f64, f64),
) {
    adam.zero_grad();
    match scaler {
        None => {
            loss.backward();
            adam.step(lr, beta1);
        }
        Some(scaler) => {
            scaler.scaled(loss).backward();
            if scaler.unscale(adam.params()) {
                adam.step(lr, beta1);
            }
        }
    }
}

/// Batches of an epoch, minus a last batch of one sample (BatchNorm cannot train on it).
pub fn batches_per_epoch(train_len: usize, batch_size: usize) -> usize {
    train_len.div_ceil(batch_size) - usize::from(train_len % batch_size == 1)
}

/// Tracks non-finite losses on the device, without a host read per step: the first step whose
/// loss was not finite, and the last finite loss.
struct FiniteWatch {
    first_bad: Tensor,
    last_finite: Tensor,
}

impl FiniteWatch {
    fn new(device: Device) -> FiniteWatch {
        FiniteWatch {
            first_bad: Tensor::full([], -1, (Kind::Int64, device)),
            last_finite: Tensor::full([], f64::NAN, (Kind::Double, device)),
        }
    }

    fn record(&mut self, loss: &Tensor, step: u64) {
        let finite = loss.isfinite();
        let loss = loss.to_kind(Kind::Double);
        self.last_finite = loss.where_self(&finite, &self.last_finite);
        let here = Tensor::full([], step as i64, (Kind::Int64, loss.device()));
        let first = self.first_bad.lt(0).logical_and(&finite.logical_not());
        self.first_bad = here.where_self(&first, &self.first_bad);
    }

    /// Host read: the step of the first non-finite loss, if any, and the last finite loss.
    fn check(&self) -> Option<(u64, f64)> {
        let first = self.first_bad.int64_value(&[]);
        (first >= 0).then(|| (first as u64, self.last_finite.double_value(&[])))
    }
}

fn non_finite_error(cfg: &TrainConfig, step: u64, last_finite: f64) -> anyhow::Error {
    let (lr, _) = cfg.schedule.at(step);
    anyhow::anyhow!(
        "the loss stopped being finite at step {step} (lr {lr:.3e}; last finite loss {last_finite:.4}); \
         the last good checkpoint in {} is untouched. Lower --lr/--max-lr, or pass \
         --max-nan-skips N to skip such batches",
        cfg.out.display()
    )
}

/// The command that resumes this run: the current one, with --resume.
fn resume_command() -> String {
    let mut args: Vec<String> = std::env::args()
        .filter(|a| a != "--force" && a != "--resume")
        .collect();
    args.push("--resume".into());
    args.join(" ")
}

/// Everything a checkpoint holds: model, optimizer moments and loss scale.
fn checkpoint_tensors(
    model: &Vgg16,
    adam: &Adam,
    scaler: Option<&LossScaler>,
) -> Vec<(String, Tensor)> {
    let mut all = model.state();
    all.extend(adam.state());
    if let Some(scaler) = scaler {
        all.extend(scaler.state());
    }
    all
}

/// Trains one stage as `requested` says (or resumes it) and returns the final holdout scores.
pub fn run(requested: &TrainConfig) -> Result<Scores> {
    let device = resolve_device(&requested.device)?;
    eprintln!("device: {}", describe(device));
    if device != Device::Cpu {
        tch::Cuda::cudnn_set_benchmark(true);
    }

    // A resumed run continues with its recorded configuration and its checkpoint; a new one
    // reads its starting weights first, so that a bad file fails before any decoding.
    let (cfg, recorded, resume, start) = if requested.resume {
        let meta_path = requested.out.join(META_FILE);
        if !meta_path.is_file() {
            bail_input!(
                "--resume: {} holds no run to resume (no {META_FILE})",
                requested.out.display()
            );
        }
        let meta = load_meta(&meta_path)?;
        let cfg = resumed(requested, &meta.config)?;
        let checkpoint = load_checkpoint(&cfg.out)?;
        (cfg, Some(meta), Some(checkpoint), None)
    } else {
        prepare_run_dir(&requested.out, requested.force)?;
        let start = read_start(&requested.init, requested.which)?;
        (requested.clone(), None, None, start)
    };
    let cfg = &cfg;
    let expected = match (&recorded, &start) {
        (Some(meta), _) => Some((meta, cfg.out.display().to_string())),
        (
            None,
            Some(Start {
                meta: Some(meta),
                source,
                ..
            }),
        ) => Some((meta, source.clone())),
        _ => None,
    };
    let data = load_data(cfg, expected.as_ref().map(|(m, s)| (*m, s.as_str())))?;
    let set = place(data.set, device);
    let split = &data.split;

    let key = |parts: &[u64]| mix(&[&[cfg.seed as u64, cfg.stage as u64][..], parts].concat());
    tch::manual_seed(key(&[Stream::Init as u64]) as i64);
    let mut model = Vgg16::new(data.classes.len() as i64, device);
    model.set_stage(cfg.stage);
    model.set_dropout(cfg.dropout);
    model.set_compute_kind(cfg.amp.compute_kind());
    let mut adam = Adam::new(model.trainable());
    let mut scaler = (cfg.amp == Amp::Fp16).then(|| LossScaler::standard(device));
    let mut meta = Meta::new(cfg.stage, data.classes.clone(), data.spec, cfg.clone());
    meta.skipped = data.skipped;
    meta.class_names = data.class_names;
    let mut state = TrainState::new(cfg.stage);
    match (resume, start) {
        (Some((mut saved, saved_state)), _) => {
            let source = cfg.out.display().to_string();
            if saved_state.stage != cfg.stage {
                bail_input!(
                    "--resume: {source} holds a {} run",
                    saved_state.stage.name()
                );
            }
            let model_names: Vec<String> = model.state().into_iter().map(|(n, _)| n).collect();
            let model_tensors: Vec<(String, Tensor)> = model_names
                .iter()
                .filter_map(|n| saved.remove_entry(n))
                .collect();
            model.load(model_tensors, Part::All, &source)?;
            adam.load_state(&mut saved, saved_state.adam_steps, &source)?;
            if let Some(scaler) = scaler.as_mut() {
                scaler.load_state(&mut saved);
            }
            truncate_metrics(&cfg.out, saved_state.metrics_len)?;
            meta.epochs = epoch_records(&cfg.out.join(METRICS_FILE))?;
            meta.best = saved_state.best;
            state = saved_state;
            eprintln!(
                "resuming {} at epoch {}, batch {} (step {})",
                cfg.out.display(),
                state.epoch,
                state.batch,
                state.step
            );
        }
        (None, Some(start)) => model.load(start.named, start.part, &start.source)?,
        (None, None) => {}
    }

    let mut log = MetricsLog::append(&cfg.out.join(METRICS_FILE), cfg.tensorboard.as_deref())?;
    let loader = Loader::new(&set, device);
    let per_epoch = batches_per_epoch(split.train.len(), cfg.batch_size);
    let stage = cfg.stage.name();
    let signals = StopSignals::install()?;
    let mut watch = FiniteWatch::new(device);
    let max_steps = cfg.max_steps.unwrap_or(u64::MAX);

    // Saves the checkpoint (the resume point), then the model and meta.json derived from it.
    let save = |model: &Vgg16,
                adam: &Adam,
                scaler: Option<&LossScaler>,
                state: &mut TrainState,
                log: &MetricsLog,
                meta: &Meta|
     -> Result<()> {
        state.adam_steps = adam.steps();
        state.metrics_len = log.bytes_written()?;
        save_checkpoint(&cfg.out, &checkpoint_tensors(model, adam, scaler), state)?;
        save_tensors(&cfg.out.join(MODEL_FILE), &model.state())?;
        save_meta(&cfg.out, meta)
    };
    let interrupted = |signal: i32, state: &TrainState| {
        anyhow::Error::new(Interrupted {
            signal,
            message: format!(
                "interrupted at epoch {}, step {}: checkpoint saved in {}\nresume with: {}",
                state.epoch,
                state.step,
                cfg.out.display(),
                resume_command()
            ),
        })
    };

    let mut holdout = meta.epochs.last().map(|r| Scores {
        samples: split.holdout.len(),
        loss: r.holdout_loss,
        top1: r.holdout_top1,
        top5: r.holdout_top5,
    });
    while state.epoch <= cfg.epochs && state.step < max_steps {
        let epoch = state.epoch;
        let epoch_start = Instant::now();
        let epoch_key = |stream: Stream, extra: u64| key(&[epoch as u64, stream as u64, extra]);
        let order = if cfg.shuffle {
            Loader::shuffled(&split.train, epoch_key(Stream::Shuffle, 0))
        } else {
            split.train.clone()
        };
        let remaining = per_epoch.saturating_sub(state.batch);
        let batches = remaining.min((max_steps - state.step).try_into().unwrap_or(usize::MAX));
        let plan: Vec<Planned> = order
            .chunks(cfg.batch_size)
            .enumerate()
            .skip(state.batch)
            .take(batches)
            .map(|(b, indices)| Planned {
                indices: indices.to_vec(),
                key: epoch_key(Stream::Augment, b as u64),
            })
            .collect();
        let progress = Progress::new(order.len() as u64, format!("{stage} epoch {epoch}"));
        progress.advance((state.batch * cfg.batch_size) as u64);
        let mut loss_sum = Tensor::full([], state.loss_sum, (Kind::Double, device));

        std::thread::scope(|scope| -> Result<()> {
            for batch in loader.prefetch(scope, plan, cfg.augment) {
                let b = state.batch;
                let step = state.step;
                let sched_t = match cfg.sched_step {
                    SchedStep::Batch => step,
                    SchedStep::Epoch => u64::from(epoch - 1),
                };
                let (lr, beta1) = cfg.schedule.at(sched_t);
                // Dropout draws keyed by the step, so a resumed run draws what this one would.
                tch::manual_seed(epoch_key(Stream::Dropout, b as u64) as i64);
                let (loss, logits) = forward_loss(&mut model, &batch);
                let skip = cfg.max_nan_skips > 0 && loss.isfinite().int64_value(&[]) == 0;
                if skip {
                    state.nan_skips += 1;
                    eprintln!(
                        "warning: non-finite loss at step {step}; batch skipped ({} of at most {})",
                        state.nan_skips, cfg.max_nan_skips
                    );
                    if state.nan_skips > cfg.max_nan_skips {
                        return Err(non_finite_error(cfg, step, f64::NAN).context(format!(
                            "more than --max-nan-skips {} non-finite batches",
                            cfg.max_nan_skips
                        )));
                    }
                } else {
                    optimize(&mut adam, scaler.as_mut(), &loss, (lr, beta1));
                    watch.record(&loss, step);
                    loss_sum += loss.detach().to_kind(Kind::Double) * batch.len as f64;
                    state.seen += batch.len;
                }
                state.last_lr = lr;
                progress.advance(batch.len as u64);
                if step.is_multiple_of(cfg.log_interval) {
                    // The loop's host reads, at log intervals only.
                    if let Some((bad, last)) = watch.check() {
                        return Err(non_finite_error(cfg, bad, last));
                    }
                    let acc = step.is_multiple_of(cfg.pred_interval).then(|| {
                        topk_correct(&logits.detach(), &batch.labels, 1).int64_value(&[]) as f64
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
                state.batch += 1;
                state.step += 1;
                let signal = signals.caught();
                let due = cfg
                    .checkpoint_every
                    .is_some_and(|n| state.step.is_multiple_of(n));
                if (due || signal.is_some()) && state.batch < per_epoch {
                    if let Some((bad, last)) = watch.check() {
                        return Err(non_finite_error(cfg, bad, last));
                    }
                    state.loss_sum = loss_sum.double_value(&[]);
                    save(&model, &adam, scaler.as_ref(), &mut state, &log, &meta)?;
                }
                if let Some(signal) = signal {
                    return Err(interrupted(signal, &state));
                }
            }
            Ok(())
        })?;
        progress.finish();
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        if let Some((bad, last)) = watch.check() {
            return Err(non_finite_error(cfg, bad, last));
        }
        let complete = state.batch >= per_epoch;
        if !complete {
            // --max-steps ended the stage inside the epoch: the checkpoint keeps this position
            // (and leaves out the scores below, so that a resumed run logs the epoch once).
            state.loss_sum = loss_sum.double_value(&[]);
            save(&model, &adam, scaler.as_ref(), &mut state, &log, &meta)?;
        }
        if cfg.precise_bn > 0 {
            let batches = order.chunks(cfg.batch_size).take(cfg.precise_bn);
            model.recalibrate_batch_norm(batches.map(|b| loader.eval_batch(b).images));
        }

        let eval_batch = eval_batch_size(device, cfg.batch_size);
        let scores = evaluate(&model, &loader, &split.holdout, eval_batch, Tta::None);
        let record = EpochRecord {
            stage: stage.to_string(),
            epoch,
            train_loss: loss_sum.double_value(&[]) / state.seen.max(1) as f64,
            holdout_loss: scores.loss,
            holdout_top1: scores.top1,
            holdout_top5: scores.top5,
            lr: state.last_lr,
            seconds: epoch_start.elapsed().as_secs_f64(),
            images_per_sec: state.seen as f64 / train_seconds,
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
        holdout = Some(scores);
        if !complete {
            save_tensors(&cfg.out.join(MODEL_FILE), &model.state())?;
            save_meta(&cfg.out, &meta)?;
            break;
        }
        if meta
            .best
            .is_none_or(|b| scores.top1 > b.top1 + cfg.min_delta)
        {
            meta.best = Some(Best {
                epoch,
                top1: scores.top1,
            });
            save_tensors(&cfg.out.join(BEST_FILE), &model.state())?;
        }
        state.best = meta.best;
        state.epoch += 1;
        state.batch = 0;
        state.loss_sum = 0.0;
        state.seen = 0;
        state.finished = state.epoch > cfg.epochs;
        save(&model, &adam, scaler.as_ref(), &mut state, &log, &meta)?;
        if let Some(signal) = signals.caught() {
            return Err(interrupted(signal, &state));
        }
        let best = meta.best.expect("set above");
        if cfg
            .early_stop
            .is_some_and(|patience| epoch - best.epoch >= patience)
        {
            println!(
                "Early stop: no holdout top-1 gain above {} for {} epochs; best {:.4} at epoch {} in {}",
                cfg.min_delta,
                epoch - best.epoch,
                best.top1,
                best.epoch,
                cfg.out.join(BEST_FILE).display()
            );
            break;
        }
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

/// The epoch records of a metrics.jsonl, in order.
fn epoch_records(path: &Path) -> Result<Vec<EpochRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut records = Vec::new();
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: not a JSON line: {line}", path.display()))?;
        if value["event"] == "epoch" {
            records.push(serde_json::from_value(value)?);
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_batch_of_one_is_left_out() {
        assert_eq!(batches_per_epoch(64, 64), 1);
        assert_eq!(batches_per_epoch(65, 64), 1);
        assert_eq!(batches_per_epoch(66, 64), 2);
        assert_eq!(batches_per_epoch(95_000, 64), 1485);
    }

    #[test]
    fn finite_watch_reports_the_first_bad_step_and_last_good_loss() {
        let mut watch = FiniteWatch::new(Device::Cpu);
        watch.record(&Tensor::from(2.5f32), 0);
        assert_eq!(watch.check(), None);
        watch.record(&Tensor::from(f32::NAN), 1);
        watch.record(&Tensor::from(f32::INFINITY), 2);
        assert_eq!(watch.check(), Some((1, 2.5)));
    }

    #[test]
    fn records_are_read_back_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            "{\"event\":\"batch\",\"stage\":\"base\",\"epoch\":1,\"step\":0,\"lr\":0.1,\"beta1\":0.9,\"loss\":1.0}\n\
             {\"event\":\"epoch\",\"stage\":\"base\",\"epoch\":1,\"train_loss\":1.0,\"holdout_loss\":1.0,\
             \"holdout_top1\":0.5,\"holdout_top5\":1.0,\"lr\":0.1,\"seconds\":1.0,\"images_per_sec\":2.0}\n",
        )
        .unwrap();
        let records = epoch_records(&path).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].holdout_top1, 0.5);
    }
}
