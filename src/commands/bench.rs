//! `vggtiny bench`: the pipeline's throughput and memory on this machine, as a table or JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use tch::Device;

use super::flags::DeviceFlag;
use super::print_json;
use crate::bail_input;
use crate::model::Amp;
use crate::recipe::{self, validate_image_size};
use crate::throughput::{self, Plan, Report, StageFigures, Workload};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Tiny ImageNet root or class-folder tree [default: synthetic images written to a temp dir]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// How many images (the first ones of the training tree)
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub images: usize,
    /// Images per training batch
    #[arg(long, default_value_t = recipe::BATCH_SIZE, value_name = "N")]
    pub batch_size: usize,
    /// Timed optimizer steps per training stage (after two warm-up steps)
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Mixed precision of the training and eval workloads
    #[arg(long, value_enum, default_value_t = Amp::Off)]
    pub amp: Amp,
    /// Side of the images the network sees; the default is the recipe's
    #[arg(long, default_value_t = recipe::IMAGE_SIZE, value_name = "N")]
    pub image_size: u32,
    /// Measure only these workloads (comma separated) [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Workload>,
    #[command(flatten)]
    pub device: DeviceFlag,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.images < args.batch_size || args.batch_size < 2 {
        bail_input!("--images must be at least --batch-size, and --batch-size at least 2");
    }
    validate_image_size(args.image_size)?;
    let device = args.device.open()?;
    args.amp.check_device(device)?;
    if device != Device::Cpu {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let report = throughput::run(&Plan {
        data: args.data.as_deref(),
        images: args.images,
        batch_size: args.batch_size,
        steps: args.steps as usize,
        amp: args.amp,
        image_size: args.image_size,
        only: &args.only,
        device,
    })?;
    if args.json {
        print_json(&report)?;
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "vggtiny bench on {} ({} images at {}x{}, batch {})",
        r.device, r.images, r.image_size, r.image_size, r.batch_size
    );
    let stages = [("stage-1", &r.train_base), ("stage-2", &r.finetune)];
    print_rate("cold decode", r.decode_images_per_sec, "");
    print_rate("augmented batches", r.augment_images_per_sec, "");
    for (name, s) in stages {
        print_rate(&format!("{name} training"), s.images_per_sec, &waits(s));
    }
    print_rate("eval", r.eval_images_per_sec, "");
    for (name, s) in stages {
        if let (Some(ms), Some(ops)) = (s.optimizer_ms, s.optimizer_ops) {
            let name = format!("{name} Adam step");
            println!("  {name:<20} {ms:>10.2} ms  ({ops} tensor operations)");
        }
    }
    if let Some(s) = r.warm_start_seconds {
        println!("  {:<20} {:>10.3} s", "warm start", s);
    }
    println!("  {:<20} {:>10.0} MiB", "peak host memory", r.peak_host_mb);
    for (name, s) in stages {
        if let (Some(tensors), Some(reserved)) = (s.peak_allocated_mb, s.peak_reserved_mb) {
            let name = format!("{name} tensors");
            println!(
                "  {name:<20} {tensors:>10.0} MiB at peak  ({reserved:.0} MiB reserved by \
                 libtorch's allocator)"
            );
        }
    }
    if let Some(mb) = r.peak_device_mb {
        println!("  {:<20} {:>10.0} MiB", "peak device memory", mb);
    }
}

/// A workload's line, when it was measured.
fn print_rate(name: &str, images_per_sec: Option<f64>, note: &str) {
    if let Some(ips) = images_per_sec {
        println!("  {name:<20} {ips:>10.1} images/s{note}");
    }
}

/// How long a training stage waited for data, and on CUDA the GPU between its steps.
fn waits(s: &StageFigures) -> String {
    s.data_wait.map_or(String::new(), |w| {
        let between = s.gpu_between_steps.map_or(String::new(), |b| {
            format!(", GPU between steps {:.1}%", 100.0 * b)
        });
        format!("  (waiting for data {:.1}%{between})", 100.0 * w)
    })
}
