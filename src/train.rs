//! The training loop shared by both stages. They differ only in their starting weights, what
//! is frozen (`Stage`) and their hyper-parameters (`TrainConfig`).

use std::time::Instant;

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::bail_input;
use crate::checkpoint::{
    prepare_run_dir, read_tensors, save_meta, save_tensors, Meta, Source, METRICS_FILE, MODEL_FILE,
};
use crate::cli::SchedStep;
use crate::config::{describe, resolve_device, Init, TrainConfig};
use crate::data::cache::decode_all;
use crate::data::ensure_same_classes;
use crate::data::loader::{mix, Loader};
use crate::data::scan::{scan_image_folder, DataRoot};
use crate::data::split::SplitSpec;
use crate::eval::{evaluate, Scores, EVAL_BATCH};
use crate::metrics::{topk_correct, BatchRecord, EpochRecord, MetricsLog};
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

/// Trains one stage as `cfg` says and returns the final holdout scores.
pub fn run(cfg: &TrainConfig) -> Result<Scores> {
    let device = resolve_device(&cfg.device)?;
    eprintln!("device: {}", describe(device));
    prepare_run_dir(&cfg.out, cfg.force)?;

    // Starting weights are read first, so that a bad file fails before any decoding.
    let (start, from_meta) = match &cfg.init {
        Init::RandomInit => (None, None),
        Init::Weights(path) => (
            Some((
                read_tensors(path)?,
                Part::Features,
                path.display().to_string(),
            )),
            None,
        ),
        Init::From(path) => {
            let source = Source::resolve(path)?;
            let named = read_tensors(&source.model)?;
            let name = source.model.display().to_string();
            (Some((named, Part::All, name)), source.meta)
        }
    };

    let root = DataRoot::locate(&cfg.data)?;
    let list = scan_image_folder(&root.train)?;
    if list.classes.len() < 2 {
        bail_input!(
            "{} has {} class folder(s); a classifier needs at least 2",
            root.train.display(),
            list.classes.len()
        );
    }
    if let (Some(meta), Init::From(path)) = (&from_meta, &cfg.init) {
        ensure_same_classes(&meta.classes, &list.classes, &path.display().to_string())?;
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
    let started = Instant::now();
    let (set, stats) = decode_all(&list.samples)?;
    eprintln!(
        "decoded {} images in {:.1}s{}",
        list.samples.len(),
        started.elapsed().as_secs_f64(),
        if stats.resized > 0 {
            format!(
                " (warning: {} were not 64x64 and were resized)",
                stats.resized
            )
        } else {
            String::new()
        }
    );

    let key = |parts: &[u64]| mix(&[&[cfg.seed as u64, cfg.stage as u64][..], parts].concat());
    tch::manual_seed(key(&[Stream::Init as u64]) as i64);
    let mut model = Vgg16::new(list.classes.len() as i64, device);
    if let Some((named, part, name)) = start {
        model.load(named, part, &name)?;
    }
    model.set_stage(cfg.stage);
    model.set_dropout(cfg.dropout);
    let mut adam = Adam::new(model.trainable().into_iter().map(|(_, t)| t).collect());

    let mut meta = Meta::new(cfg.stage, list.classes.clone(), spec, cfg.clone());
    let mut log = MetricsLog::append(&cfg.out.join(METRICS_FILE))?;
    let loader = Loader::new(&set, device);
    // BatchNorm cannot train on a single sample: a last batch of one is left out.
    let batches_per_epoch = split.train.len().div_ceil(cfg.batch_size)
        - usize::from(split.train.len() % cfg.batch_size == 1);
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
        let progress = Progress::new(order.len() as u64, format!("{stage} epoch {epoch}"));
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut seen = 0usize;
        let mut last_lr = 0.0;

        let batches = batches_per_epoch.min((max_steps - step).try_into().unwrap_or(usize::MAX));
        for (b, indices) in order.chunks(cfg.batch_size).take(batches).enumerate() {
            let sched_t = match cfg.sched_step {
                SchedStep::Batch => step,
                SchedStep::Epoch => u64::from(epoch - 1),
            };
            let (lr, beta1) = cfg.schedule.at(sched_t);
            let batch =
                loader.train_batch(indices, epoch_key(Stream::Augment, b as u64), cfg.augment);

            let logits = model.forward_train(&batch.images);
            let loss = logits.log_softmax(1, Kind::Float).nll_loss(&batch.labels);
            adam.zero_grad();
            loss.backward();
            adam.step(lr, beta1);

            loss_sum += loss.detach().to_kind(Kind::Double) * batch.len as f64;
            seen += batch.len;
            last_lr = lr;
            progress.advance(batch.len as u64);
            if step.is_multiple_of(cfg.log_interval) {
                // The only host synchronisation of the loop, at log intervals.
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
                let done = b * cfg.batch_size;
                let mut line = format!(
                    "Train Epoch: {epoch} [{done}/{} ({:.0}%)]\tLoss: {:.6}",
                    order.len(),
                    100.0 * b as f64 / batches_per_epoch as f64,
                    record.loss
                );
                if let Some(acc) = acc {
                    line.push_str(&format!("\tBatch acc: {acc:.4}"));
                }
                progress.line(&line);
            }
            step += 1;
        }
        progress.finish();
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        if cfg.precise_bn > 0 {
            let batches = order.chunks(cfg.batch_size).take(cfg.precise_bn);
            model.recalibrate_batch_norm(batches.map(|b| loader.eval_batch(b).images));
        }

        let scores = evaluate(&model, &loader, &split.holdout, EVAL_BATCH);
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
