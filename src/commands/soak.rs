//! `vggtiny soak`: both training stages run as long as the recipe, on a small synthetic set,
//! while memory, files and time per step are watched; fails when they grow past a bound.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tch::Device;

use super::flags::DeviceFlag;
use super::print_json;
use crate::bail_input;
use crate::device;
use crate::io::scratch::Scratch;
use crate::model::{Amp, Stage};
use crate::recipe::{self, validate_image_size};
use crate::soak::{self, Plan, Report, StageReport};

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Optimizer steps in all, divided between the stages as the recipe divides its epochs
    /// (its length and the default are added by `with_recipe_length`)
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Optimizer steps per epoch, about: how often the holdout eval and the checkpoint run
    #[arg(long, default_value_t = 275, value_name = "N")]
    pub epoch_steps: u64,
    /// Images per training batch
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub batch_size: usize,
    /// Side of the images the network sees (32, the smallest, keeps the soak short)
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub image_size: u32,
    /// Mixed precision, as in training
    #[arg(long, value_enum, default_value_t = Amp::Off)]
    pub amp: Amp,
    /// Fail when host memory, device memory or a run directory grows by more than this many
    /// MiB per 1000 steps after warm-up (open files and threads must not grow at all)
    #[arg(long, default_value_t = 2.0, value_name = "MIB")]
    pub max_growth: f64,
    /// Directory for the synthetic set, the image cache and both runs, kept afterwards; new
    /// or empty [default: a temporary directory, removed at the end]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceFlag,
    /// Print one JSON object (every figure and sample) instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Largest `--steps` (45 recipes): the soak keeps every step's time.
const MAX_STEPS: u64 = 1_000_000;
/// Largest synthetic set, in images.
const MAX_IMAGES: u64 = 1_000_000;

/// `command` (`soak`) with the recipe's length in the help of `--steps`, from the recipe.
pub fn with_recipe_length(command: clap::Command) -> clap::Command {
    let (base, finetune) = (recipe::epochs(Stage::Base), recipe::epochs(Stage::Finetune));
    let steps = soak::recipe_steps();
    // thousands apart, as the README writes them
    let shown = format!("{} {:03}", steps / 1000, steps % 1000);
    command.mut_arg("steps", |arg| {
        arg.help(format!(
            "Optimizer steps in all, divided between the stages as the recipe divides its \
             {base} + {finetune} epochs [default: the recipe's {shown}]"
        ))
    })
}

pub fn run(args: &SoakArgs) -> Result<()> {
    let plan = validate(args)?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    }
    let device = args.device.open()?;
    args.amp.check_device(device)?;
    if device != Device::Cpu {
        device::set_deterministic(false)?;
    }
    let scratch;
    let out = match &args.out {
        Some(dir) => dir.as_path(),
        None => {
            scratch = Scratch::new("soak")?;
            scratch.path()
        }
    };
    let report = soak::run(&plan, out, device)?;
    if args.json {
        print_json(&report)?;
    } else {
        print_table(&report);
    }
    if !report.failures.is_empty() {
        anyhow::bail!("soak failed: {}", report.failures.join("; "));
    }
    Ok(())
}

/// The plan `args` ask for, checked.
fn validate(args: &SoakArgs) -> Result<Plan> {
    let steps = args.steps.unwrap_or_else(soak::recipe_steps);
    if args.batch_size < 2 || args.epoch_steps < 1 {
        bail_input!("--batch-size must be at least 2 and --epoch-steps at least 1");
    }
    let images = args.epoch_steps.saturating_mul(args.batch_size as u64);
    if steps > MAX_STEPS || images > MAX_IMAGES {
        bail_input!(
            "--steps must be at most {MAX_STEPS}, and --epoch-steps times --batch-size (the \
             synthetic set's images) at most {MAX_IMAGES}"
        );
    }
    let (per_class, epoch_steps) = soak::synthetic_set(args.epoch_steps, args.batch_size);
    let least = soak::min_steps(epoch_steps);
    if steps < least {
        bail_input!(
            "--steps {steps}: at least {least} with epochs of {epoch_steps} steps (--epoch-steps \
             {}), so that each stage has {} epochs (the first is warm-up)",
            args.epoch_steps,
            soak::MIN_EPOCHS_PER_STAGE
        );
    }
    if args.max_growth.is_nan() || args.max_growth < 0.0 {
        bail_input!("--max-growth must be at least 0");
    }
    validate_image_size(args.image_size)?;
    if let Some(out) = &args.out {
        if out.exists() && !out.is_dir() {
            bail_input!("--out {}: a file is there; name a directory", out.display());
        }
        if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
            bail_input!(
                "--out {}: not empty; name a new or empty directory",
                out.display()
            );
        }
    }
    Ok(Plan {
        steps,
        per_class,
        epoch_steps,
        batch_size: args.batch_size,
        image_size: args.image_size,
        amp: args.amp,
        max_growth: args.max_growth,
    })
}

fn print_table(r: &Report) {
    println!(
        "vggtiny soak on {}: {} steps ({} per epoch, batch {}, {}x{}) in {:.0} s",
        r.device, r.steps, r.epoch_steps, r.batch_size, r.image_size, r.image_size, r.seconds
    );
    for s in &r.stages {
        print_stage(s);
    }
    let verdict = if r.failures.is_empty() {
        "passed"
    } else {
        "FAILED"
    };
    println!(
        "{verdict}: growth after warm-up bounded by {} MiB per 1000 steps",
        r.max_growth_mb_per_1k
    );
}

fn print_stage(s: &StageReport) {
    println!(
        "  {} ({} steps, the first {} warm-up, {:.0} s)",
        s.stage.name(),
        s.steps,
        s.warmup_steps,
        s.seconds
    );
    let rows = [
        ("host memory", Some(&s.host_mb)),
        ("device memory", s.device_mb.as_ref()),
        ("device tensors", s.device_tensors_mb.as_ref()),
        ("run directory", Some(&s.run_dir_mb)),
    ];
    for (name, series) in rows {
        let Some(v) = series else { continue };
        let slope = v.slope_per_1k.map_or("n/a".into(), |x| format!("{x:+.2}"));
        println!(
            "    {name:<14} {:>8.0} MiB at start, {:>8.0} after warm-up, {:>8.0} at end, \
             {:>8.0} peak; {slope} MiB/1k steps after warm-up",
            v.start, v.after_warmup, v.end, v.peak
        );
    }
    println!(
        "    {:<14} at most {} and {} in the first and second half after warm-up; threads {} \
         and {}",
        "open files",
        s.open_files.first_half,
        s.open_files.second_half,
        s.threads.first_half,
        s.threads.second_half
    );
    println!(
        "    {:<14} {:.1} ms in the first tenth, {:.1} ms in the last (medians)",
        "time per step", s.ms_per_step.first_tenth, s.ms_per_step.last_tenth
    );
}
