//! The CUDA paths, on a machine with a GPU: the set in device memory and the pinned-host
//! fallback, the prefetch thread, augmentation and eval against the CPU, fp16 loss scaling,
//! checkpoints moving between CPU and GPU, predict and test-time augmentation, the same
//! initial weights on every device, an exact resume in deterministic mode, and Adam's steps
//! equal to PyTorch's on the GPU.
//!
//! Every test here is `#[ignore]`d: cargo counts it as ignored on a machine without a GPU.
//! `scripts/gpu-check` (and `scripts/test` where a GPU is usable) runs them with
//! `--ignored cuda_`.

use std::path::Path;

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use vggtiny::data::image_set::ImageSet;
use vggtiny::data::loader::{Batch, Loader, PlannedBatch};
use vggtiny::device::allocator::{allocator_memory, restart_peaks};
use vggtiny::device::gpu_timeline::GpuTimeline;
use vggtiny::model::Vgg16;
use vggtiny::optim::loss_scaler::LossScaler;

use crate::common::*;
use crate::reliability;

fn require_gpu() {
    assert!(
        tch::Cuda::is_available(),
        "no usable CUDA device: run the cuda_* tests on a GPU machine"
    );
}

/// The logged losses of a run, in order.
fn losses(run: &Path) -> Vec<f64> {
    json_lines(&run.join("metrics.jsonl"))
        .iter()
        .filter(|e| e["event"] == "batch")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_set_in_device_memory_and_the_pinned_host_fallback_train_alike() {
    require_gpu();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 12);
    let flags = "--device cuda --deterministic --batch-size 8 --holdout 0.25 --max-steps 4 \
                 --log-interval 1";
    let on_device = dir.path().join("device");
    let out = vggtiny(&train_args(&data, &on_device, flags));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("host memory"), "{stderr}");
    // the holdout eval's batch, sized from the device's free memory, is said
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("holdout eval in batches of 64 images at 64x64"),
        "{stdout}"
    );
    let host = dir.path().join("host");
    let out = command()
        .args(train_args(&data, &host, flags))
        .env("VGGTINY_HOST_SET", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stay in host memory"), "{stderr}");
    // pinning with a device argument is deprecated in libtorch; vggtiny must not call it so
    let deprecated_pinning = stderr
        .lines()
        .any(|l| l.contains("pin_memory") && l.to_lowercase().contains("deprecated"));
    assert!(!deprecated_pinning, "{stderr}");
    let (a, b) = (losses(&on_device), losses(&host));
    assert_eq!((a.len(), b.len()), (4, 4));
    for (x, y) in a.iter().zip(&b) {
        assert!(close(*x, *y, 1e-5), "{a:?} vs {b:?}");
    }
}

fn numbered_set(n: i64) -> ImageSet {
    let images = Tensor::randint(256, [n, 64, 64, 3], (Kind::Uint8, Device::Cpu));
    ImageSet::from_tensors(images, Tensor::arange(n, (Kind::Int64, Device::Cpu)))
}

fn prefetched(loader: &Loader, plan: Vec<PlannedBatch>) -> Vec<Batch> {
    std::thread::scope(|scope| {
        loader
            .prefetch(scope, plan, true)
            .map(|b| b.unwrap())
            .collect()
    })
}

/// Batches made by the prefetch thread on the GPU (set in device memory, and set in host
/// memory with pinned non-blocking copies) equal the CPU's: same rows, and augmentation with
/// the same parameters to 1e-5.
#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_prefetched_augmented_batches_equal_the_cpu_batches() {
    require_gpu();
    let set = numbered_set(40);
    let plan = || -> Vec<PlannedBatch> {
        (0..4)
            .map(|b| PlannedBatch {
                indices: (0..10).map(|i| (b * 7 + i * 3) % 40).collect(),
                key: 100 + b as u64,
            })
            .collect()
    };
    let cpu = prefetched(&Loader::new(&set, Device::Cpu), plan());
    let gpu = Device::Cuda(0);
    let on_device = set
        .to_device(Device::Cpu)
        .unwrap()
        .for_training_on(gpu)
        .unwrap();
    assert_eq!(on_device.images.device(), gpu);
    for (name, held) in [("device", &on_device), ("host", &set)] {
        let batches = prefetched(&Loader::new(held, gpu), plan());
        assert_eq!((cpu.len(), batches.len()), (4, 4), "{name}");
        for (c, g) in cpu.iter().zip(&batches) {
            assert_eq!(g.images.device(), gpu);
            assert!(g.labels.to_device(Device::Cpu).equal(&c.labels), "{name}");
            let diff = (g.images.to_device(Device::Cpu) - &c.images).abs().max();
            // normalised values: 1e-5 of a pixel in [0, 1] is 1e-5 / 0.225 here
            assert!(diff.double_value(&[]) < 1e-5 / 0.224, "{name}: {diff}");
        }
    }
}

/// vggtiny's output with TF32 off: libtorch runs fp32 convolutions on tensor cores in TF32 by
/// default, which moves losses by far more than the CPU comparisons allow.
fn ok_fp32(args: &[&str]) -> String {
    succeeds(command().args(args).env("NVIDIA_TF32_OVERRIDE", "0"))
}

fn eval_on(data: &Path, run: &Path, device: &str, flags: &str) -> Value {
    let mut args = vec!["eval", "--json", "--data", s(data), "--checkpoint", s(run)];
    args.extend(["--device", device]);
    args.extend(flags.split_whitespace());
    serde_json::from_str(ok_fp32(&args).trim()).unwrap()
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_eval_and_test_time_augmentation_count_what_the_cpu_counts() {
    require_gpu();
    let dir = tempfile::tempdir().unwrap();
    // 6 classes: with fewer there is no top-5 to compare
    let data = dataset(dir.path(), 6, 8);
    let run = dir.path().join("run");
    train_random(
        &data,
        &run,
        "--device cpu --batch-size 8 --holdout 0.25 --epochs 2",
    );
    for flags in ["", "--split val", "--tta flip", "--split val --tta 10crop"] {
        let cpu = eval_on(&data, &run, "cpu", flags);
        let gpu = eval_on(&data, &run, "cuda", flags);
        assert_eq!(cpu["samples"], gpu["samples"]);
        let count =
            |r: &Value, k: &str| (r[k].as_f64().unwrap() * r["samples"].as_f64().unwrap()).round();
        assert_eq!(
            count(&cpu, "top1"),
            count(&gpu, "top1"),
            "{flags}: {cpu} {gpu}"
        );
        assert_eq!(
            count(&cpu, "top5"),
            count(&gpu, "top5"),
            "{flags}: {cpu} {gpu}"
        );
        let (a, b) = (cpu["loss"].as_f64().unwrap(), gpu["loss"].as_f64().unwrap());
        assert!(close(a, b, 1e-4), "{flags}: {a} {b}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_predict_names_what_the_cpu_names() {
    require_gpu();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 6, 6);
    let run = dir.path().join("run");
    train_random(
        &data,
        &run,
        "--device cpu --max-steps 2 --batch-size 6 --holdout 0.25",
    );
    let images: Vec<String> = (0..5)
        .map(|i| s(&data.join(format!("val/images/val_{i}.JPEG"))).to_string())
        .collect();
    let predict = |device: &str| -> Value {
        let mut args = vec![
            "predict",
            "--json",
            "--checkpoint",
            s(&run),
            "--device",
            device,
        ];
        args.extend(["--batch-size", "2"]);
        args.extend(images.iter().map(String::as_str));
        serde_json::from_str(ok_fp32(&args).trim()).unwrap()
    };
    let (cpu, gpu) = (predict("cpu"), predict("cuda"));
    let (cpu, gpu) = (
        cpu["predictions"].as_array().unwrap(),
        gpu["predictions"].as_array().unwrap(),
    );
    assert_eq!((cpu.len(), gpu.len()), (5, 5));
    for (c, g) in cpu.iter().zip(gpu) {
        assert_eq!(c["top5"][0]["wnid"], g["top5"][0]["wnid"]);
        let (a, b) = (
            c["top5"][0]["prob"].as_f64().unwrap(),
            g["top5"][0]["prob"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "{a} {b}");
    }
}

/// fp16 gradients that overflow for real: the step is skipped and the scale halves; clean
/// steps let it grow again.
#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_fp16_loss_scaler_backs_off_on_overflow_and_grows_again() {
    require_gpu();
    let gpu = Device::Cuda(0);
    let mut scaler = LossScaler::new(gpu, 65536.0, 2);
    let step = |scaler: &mut LossScaler, x: f64| {
        let w = Tensor::ones([4], (Kind::Float, gpu)).set_requires_grad(true);
        let input = Tensor::full([4], x, (Kind::Half, gpu));
        let loss = (w.to_kind(Kind::Half) * input).sum(Kind::Float);
        scaler.scaled(&loss).backward();
        scaler.unscale(&w.grad())
    };
    // d loss / d w = 60000, times 65536: beyond fp16's 65504
    assert!(
        !step(&mut scaler, 60000.0),
        "an overflow must skip the step"
    );
    assert_eq!(scaler.scale(), 32768.0);
    assert!(step(&mut scaler, 1.0));
    assert!(step(&mut scaler, 1.0));
    assert_eq!(scaler.scale(), 65536.0, "doubled after 2 clean steps");
}

/// A checkpoint written on the GPU resumes on the CPU, and the reverse.
#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_checkpoints_resume_across_cpu_and_gpu() {
    require_gpu();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 12);
    let flags = "--batch-size 8 --holdout 0.25 --epochs 2 --log-interval 1";
    for (first, then) in [("cuda", "cpu"), ("cpu", "cuda")] {
        let run = dir.path().join(format!("{first}-{then}"));
        train_random(
            &data,
            &run,
            &format!("{flags} --device {first} --max-steps 3"),
        );
        let mut args = train_args(&data, &run, flags);
        args.extend(["--device", then, "--resume"]);
        ok(&args);
        let meta: Value = meta_json(&run);
        assert_eq!(
            meta["epochs"].as_array().unwrap().len(),
            2,
            "{first} -> {then}"
        );
        assert!(losses(&run).iter().all(|l| l.is_finite()));
    }
}

/// vggtiny draws the same starting weights from one seed on the GPU as on the CPU: vggtiny
/// against itself (the parity suite's test_init holds the CPU's to PyTorch's initialisation).
#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_initial_weights_equal_vggtinys_cpu_ones() {
    require_gpu();
    tch::manual_seed(7);
    let cpu = Vgg16::new(10, Device::Cpu);
    tch::manual_seed(7);
    let gpu = Vgg16::new(10, Device::Cuda(0));
    let (cpu, gpu) = (cpu.state(), gpu.state());
    assert_eq!(cpu.len(), gpu.len());
    for ((name, a), (_, b)) in cpu.into_iter().zip(gpu) {
        assert_eq!(b.device(), Device::Cuda(0));
        assert!(a.equal(&b.to_device(Device::Cpu)), "{name}");
    }
}

/// In deterministic mode, a run stopped by SIGINT and resumed ends where the uninterrupted run
/// ends, bit for bit (weights, Adam's moments, fp16's loss scale and growth tracker), on the
/// GPU as on the CPU; `amp` adds `--amp`.
fn sigint_then_resume_is_exact(amp: &str) {
    require_gpu();
    // Batches of 2, 20 steps an epoch: a GPU step takes milliseconds, and the signal must
    // still land inside the first epoch.
    let flags = format!(
        "--batch-size 2 --holdout 0.2 --epochs 2 --log-interval 1 --device cuda \
         --deterministic {amp}"
    );
    let dir = tempfile::tempdir().unwrap();
    let reference = reliability::reference_run(dir.path(), &flags);
    reliability::signals::stop_and_resume_equals_uninterrupted(
        &reference,
        (&flags, 40),
        libc::SIGINT,
        130,
    );
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_sigint_then_resume_is_exact_in_deterministic_mode() {
    sigint_then_resume_is_exact("");
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_fp16_sigint_then_resume_is_exact_loss_scale_included() {
    sigint_then_resume_is_exact("--amp fp16");
}

/// bf16 trains where the GPU has bf16 tensor cores (compute capability 8.0 and up); where it
/// has none it is refused in one line naming the GPU and --amp fp16.
#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_bf16_follows_the_gpus_capability() {
    require_gpu();
    let (name, (major, _)) =
        vggtiny::device::cuda_capability(0).expect("the CUDA runtime gives the capability");
    assert!(
        !name.starts_with("cuda:"),
        "the driver names the GPU: {name}"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 12);
    let flags = "--device cuda --amp bf16 --batch-size 8 --holdout 0.25 --max-steps 1";
    let run = dir.path().join("run");
    let args = train_args(&data, &run, flags);
    if major >= 8 {
        ok(&args);
    } else {
        let err = fails(&args, 2);
        assert!(err.contains(&name) && err.contains("--amp fp16"), "{err}");
    }
}

/// Adam on the GPU against PyTorch's default there, the foreach Adam, from the same parameters
/// and gradients: bit for bit (the python is `VGGTINY_PYTHON`, which scripts/gpu-check sets).
#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_adam_steps_equal_pytorchs_foreach_adam() {
    require_gpu();
    crate::adam::adam_steps_equal_pytorchs(Device::Cuda(0), "cuda");
}

/// bench on the GPU gives each stage's share of GPU time between steps, from CUDA events.
#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_bench_measures_the_gpu_time_between_steps_and_each_stages_memory() {
    require_gpu();
    let out = ok(&words(
        "bench --images 64 --batch-size 8 --steps 3 --device cuda --only train-base,finetune \
         --json",
    ));
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    for key in ["train_base_gpu_between_steps", "finetune_gpu_between_steps"] {
        let share = report[key].as_f64();
        assert!(
            share.is_some_and(|v| (0.0..=1.0).contains(&v)),
            "{key} in {report}"
        );
    }
    // The model is 27.9 M weights (106 MiB in fp32); Adam keeps five flat buffers the size of
    // the trained ones (gradients, two moments, two for its arithmetic): about 360 MiB in
    // stage 1 (13.2 M trained) and 640 MiB in stage 2 (all), before activations
    let mb = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {report}"))
    };
    // (cuDNN's benchmark mode adds trial workspaces of its choosing to both: lower bounds only)
    for (stage, at_least) in [("train_base", 300.0), ("finetune", 550.0)] {
        let (allocated, reserved) = (
            mb(&format!("{stage}_peak_allocated_mb")),
            mb(&format!("{stage}_peak_reserved_mb")),
        );
        assert!(
            allocated > at_least && reserved >= allocated,
            "{stage} in {report}"
        );
    }
}

/// The allocator's figures follow a tensor's life: allocated while it lives, its block kept
/// reserved after it is dropped until the cache is emptied, the peaks started again on request.
#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_allocator_figures_follow_a_tensors_life() {
    require_gpu();
    let device = Device::Cuda(0);
    let _ = Tensor::zeros([1], (Kind::Float, device));
    assert!(
        restart_peaks(device),
        "the allocator once CUDA is initialized"
    );
    let before = allocator_memory(device).expect("the allocator's figures");
    let block = Tensor::zeros([64, 1024, 1024], (Kind::Float, device)); // 256 MiB
    let living = allocator_memory(device).unwrap();
    assert!(
        living.allocated - before.allocated >= 256.0,
        "{before:?} {living:?}"
    );
    assert!(living.reserved >= living.allocated, "{living:?}");
    drop(block);
    let dropped = allocator_memory(device).unwrap();
    assert!(dropped.allocated < living.allocated - 255.0, "{dropped:?}");
    assert!(
        dropped.reserved >= living.allocated,
        "kept in the cache: {dropped:?}"
    );
    assert!(dropped.peak_allocated >= living.allocated, "{dropped:?}");
    assert!(restart_peaks(device));
    let restarted = allocator_memory(device).unwrap();
    assert!(
        restarted.peak_allocated < living.allocated - 255.0,
        "{restarted:?}"
    );
    assert!(
        restarted.reserved < dropped.reserved - 255.0,
        "cache emptied: {restarted:?}"
    );
}

/// The timeline's marks run in order with the GPU's work: steps queued back to back leave
/// the GPU no time between them, however fast the host queues the marks; a host that waits
/// 50 ms between two steps, the GPU done, leaves it idle that long.
#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check runs it"]
fn cuda_gpu_timeline_follows_the_gpus_work() {
    require_gpu();
    let device = Device::Cuda(0);
    let a = Tensor::randn([4096, 4096], (Kind::Float, device));
    let work = || {
        for _ in 0..10 {
            let _ = a.matmul(&a);
        }
    };
    let share = |host_wait: bool| {
        let mut timeline = GpuTimeline::new(device).expect("the CUDA runtime's events");
        for step in 0..2 {
            if step == 1 && host_wait {
                tch::Cuda::synchronize(0);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            timeline.mark();
            work();
            timeline.mark();
        }
        tch::Cuda::synchronize(0);
        timeline.share_between_steps().expect("a share")
    };
    let (back_to_back, waited) = (share(false), share(true));
    assert!(back_to_back < 0.05, "back to back: {back_to_back}");
    assert!(waited > 0.2, "after a 50 ms wait: {waited}");
}
