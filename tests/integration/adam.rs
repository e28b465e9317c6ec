//! vggtiny's Adam against PyTorch's own (`reference/adam_steps.py`, run by the python that
//! `VGGTINY_PYTHON` names): the same parameters and gradients, several steps with the learning
//! rate and beta1 moving as CyclicLR moves them, the same values bit for bit. Here on the CPU
//! (PyTorch's single-tensor Adam); `cuda::cuda_adam_steps_equal_pytorchs_foreach_adam` runs it
//! on a GPU (its foreach Adam).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use tch::{Device, Kind, Tensor};
use vggtiny::model::vgg16::channels_last;
use vggtiny::optim::adam::Adam;

/// The parameters' shapes: a convolution's weight (channels-last, as vggtiny keeps them), a
/// bias, a linear layer's weight, a single value.
const SHAPES: [&[i64]; 4] = [&[64, 3, 3, 3], &[64], &[200, 512], &[1]];
const LRS: [f64; 5] = [1e-3, 1.5e-3, 2e-3, 2.5e-3, 3e-3];
const BETA1S: [f64; 5] = [0.95, 0.925, 0.9, 0.875, 0.85];

/// Starting values and each step's gradients, on the CPU: most gradients near 1e-3, a tenth
/// near 1e-9 (where Adam turns any rounding difference into a full-size step).
fn case() -> (Vec<Tensor>, Vec<Vec<Tensor>>) {
    let cpu = (Kind::Float, Device::Cpu);
    tch::manual_seed(11);
    let starts = SHAPES.iter().map(|s| Tensor::randn(*s, cpu)).collect();
    let grads = LRS
        .iter()
        .map(|_| {
            SHAPES
                .iter()
                .map(|s| {
                    let tiny = Tensor::rand(*s, cpu).lt(0.1);
                    let g = Tensor::randn(*s, cpu) * 1e-3;
                    g.where_self(&tiny.logical_not(), &(&g * 1e-6))
                })
                .collect()
        })
        .collect();
    (starts, grads)
}

fn write_case(file: &Path, starts: &[Tensor], grads: &[Vec<Tensor>]) {
    let mut named: Vec<(String, Tensor)> = starts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("param.{i}"), t.shallow_clone()))
        .collect();
    for (step, step_grads) in grads.iter().enumerate() {
        for (i, g) in step_grads.iter().enumerate() {
            named.push((format!("grad.{step}.{i}"), g.shallow_clone()));
        }
    }
    named.push(("lr".into(), Tensor::from_slice(&LRS)));
    named.push(("beta1".into(), Tensor::from_slice(&BETA1S)));
    Tensor::write_safetensors(&named, file).unwrap();
}

/// PyTorch's parameters after the case's steps on `device` ("cpu", "cuda").
fn pytorchs_steps(
    dir: &Path,
    starts: &[Tensor],
    grads: &[Vec<Tensor>],
    device: &str,
) -> Vec<Tensor> {
    let python = std::env::var_os("VGGTINY_PYTHON")
        .expect("VGGTINY_PYTHON must name a python with torch and safetensors (scripts/test and scripts/gpu-check set it)");
    let (case_file, out_file) = (dir.join("case.safetensors"), dir.join("torch.safetensors"));
    write_case(&case_file, starts, grads);
    let out = Command::new(&python)
        .arg("-c")
        .arg(include_str!("../../reference/adam_steps.py"))
        .args([&case_file, &out_file])
        .arg(device)
        .output()
        .expect("run VGGTINY_PYTHON");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stepped: HashMap<String, Tensor> = Tensor::read_safetensors(&out_file)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(stepped.len(), starts.len(), "{:?}", stepped.keys());
    (0..starts.len())
        .map(|i| {
            let name = format!("param.{i}");
            stepped
                .remove(&name)
                .unwrap_or_else(|| panic!("PyTorch's output lacks {name}"))
        })
        .collect()
}

/// vggtiny's parameters after the case's steps on `device`.
fn vggtinys_steps(starts: &[Tensor], grads: &[Vec<Tensor>], device: Device) -> Vec<Tensor> {
    let params: Vec<Tensor> = starts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let t = if i == 0 { channels_last(t) } else { t.copy() };
            t.to_device(device).set_requires_grad(true)
        })
        .collect();
    let named = params
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("param.{i}"), p.shallow_clone()))
        .collect();
    let mut adam = Adam::new(named);
    for (step, step_grads) in grads.iter().enumerate() {
        adam.zero_grad();
        tch::no_grad(|| {
            for (p, g) in params.iter().zip(step_grads) {
                p.grad().copy_(&g.to_device(device));
            }
        });
        adam.step(LRS[step], BETA1S[step]);
    }
    params
        .iter()
        .map(|p| p.detach().to_device(Device::Cpu))
        .collect()
}

/// How many representable floats lie between `a` and `b`.
fn ulps(a: f32, b: f32) -> u64 {
    let ordered = |x: f32| {
        let bits = x.to_bits();
        let magnitude = i64::from(bits & 0x7fff_ffff);
        if bits >> 31 == 1 {
            -magnitude
        } else {
            magnitude
        }
    };
    ordered(a).abs_diff(ordered(b))
}

/// The case stepped by vggtiny and by PyTorch on `device`: equal bit for bit (+0 and -0
/// apart). Prints the largest difference in ulps, which `scripts/gpu-check` reports.
pub fn adam_steps_equal_pytorchs(device: Device, torch_device: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (starts, grads) = case();
    let want = pytorchs_steps(dir.path(), &starts, &grads, torch_device);
    let got = vggtinys_steps(&starts, &grads, device);
    let (mut worst, mut values, mut moved, mut differing) = (0, 0, 0, 0);
    for ((w, g), start) in want.iter().zip(&got).zip(&starts) {
        assert_eq!(w.size(), g.size());
        let w = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap();
        let g = Vec::<f32>::try_from(g.contiguous().flatten(0, -1)).unwrap();
        let s = Vec::<f32>::try_from(start.flatten(0, -1)).unwrap();
        worst = w
            .iter()
            .zip(&g)
            .map(|(a, b)| ulps(*a, *b))
            .fold(worst, u64::max);
        moved += w.iter().zip(&s).filter(|(a, b)| a != b).count();
        differing += w
            .iter()
            .zip(&g)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        values += w.len();
    }
    println!("adam on {torch_device}: max ulp difference {worst} over {values} values");
    assert!(
        moved > values / 2,
        "the steps moved {moved} of {values} values"
    );
    assert_eq!(
        differing, 0,
        "{differing} values differ from PyTorch's on {torch_device}, by up to {worst} ulp"
    );
}

#[test]
fn ulps_count_the_floats_between() {
    assert_eq!(ulps(1.0, 1.0), 0);
    assert_eq!(ulps(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3);
    assert_eq!(ulps(0.0, -0.0), 0);
    let tiny = f32::from_bits(1);
    assert_eq!(ulps(tiny, -tiny), 2);
}

#[test]
#[ignore = "needs a python with torch (VGGTINY_PYTHON): scripts/test runs it"]
fn torch_adam_steps_equal_pytorchs_single_tensor_adam() {
    adam_steps_equal_pytorchs(Device::Cpu, "cpu");
}
