//! What the soak reads from the process while a stage trains: after every optimizer step the
//! step's time, and at sample steps the host and device memory, the open files, the threads
//! and the size of the stage's run directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tch::Device;

use super::stats::{Counts, Series, Tenths};
use crate::device::allocator::allocator_memory;
use crate::device::device_used_mb;
use crate::io::memory::{host_memory_mb, open_files, threads};
use crate::model::Stage;

const MIB: f64 = 1024.0 * 1024.0;

/// The process and the run directory at one step.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub stage: Stage,
    /// Optimizer steps of the stage so far.
    pub step: u64,
    /// Optimizer steps of the whole soak so far.
    pub soak_step: u64,
    /// Since the soak began.
    pub seconds: f64,
    /// Resident host memory, MiB.
    pub host_mb: f64,
    /// Memory in use on the CUDA device (device-wide), MiB; null on the CPU.
    pub device_mb: Option<f64>,
    /// Held by live tensors on the CUDA device (libtorch's allocator), MiB: a tensor kept
    /// across steps shows here before the allocator's cache has to grow; null on the CPU.
    pub device_tensors_mb: Option<f64>,
    /// Bytes in the stage's run directory, MiB.
    pub run_dir_mb: f64,
    pub open_files: u64,
    pub threads: u64,
}

/// One stage's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: Stage,
    pub steps: u64,
    /// Steps left out of the slopes: the first epoch (its holdout eval and first checkpoint
    /// included) or the first tenth of the stage, whichever is longer.
    pub warmup_steps: u64,
    pub seconds: f64,
    pub host_mb: Series,
    pub device_mb: Option<Series>,
    pub device_tensors_mb: Option<Series>,
    pub run_dir_mb: Series,
    pub open_files: Counts,
    pub threads: Counts,
    pub ms_per_step: Tenths,
}

/// What a probe samples: one stage of the soak.
#[derive(Debug, Clone, Copy)]
pub struct StagePlan {
    pub stage: Stage,
    pub steps: u64,
    /// Steps left out of the slopes.
    pub warmup: u64,
    /// Steps of the stages before this one.
    pub offset: u64,
    /// A sample every this many steps (and at the stage's first and last step).
    pub every: u64,
    /// A line on stderr every this many steps (and at the stage's last step).
    pub report_every: u64,
    /// Steps of the whole soak.
    pub soak_steps: u64,
}

/// Samples one stage.
pub struct Probe {
    plan: StagePlan,
    device: Device,
    run_dir: PathBuf,
    soak_started: Instant,
    stage_started: Instant,
    last_step: Option<Instant>,
    step_seconds: Vec<f64>,
    samples: Vec<Sample>,
}

impl Probe {
    /// A probe of the stage `plan` describes, training into `run_dir` on `device`, in a soak
    /// that began at `soak_started`.
    pub fn new(plan: StagePlan, device: Device, run_dir: &Path, soak_started: Instant) -> Probe {
        Probe {
            plan,
            device,
            run_dir: run_dir.to_path_buf(),
            soak_started,
            stage_started: Instant::now(),
            last_step: None,
            // Reserved up front, so that no reallocation of the soak's own bookkeeping shows
            // in the memory it measures (what it fills, 8 bytes a step, still does).
            step_seconds: Vec::with_capacity(plan.steps as usize),
            samples: Vec::with_capacity(
                (plan.steps / plan.every + plan.steps / plan.report_every + 2) as usize,
            ),
        }
    }

    /// After step `step` (counted from 1) of the stage: its time, a sample when due, and a
    /// line on stderr when due.
    pub fn after_step(&mut self, step: u64) {
        let now = Instant::now();
        if let Some(before) = self.last_step.replace(now) {
            self.step_seconds.push((now - before).as_secs_f64());
        }
        let plan = self.plan;
        let report = step.is_multiple_of(plan.report_every) || step == plan.steps;
        if report || step == 1 || step.is_multiple_of(plan.every) {
            self.samples.push(self.sample(step));
        }
        if report {
            self.report();
        }
    }

    fn sample(&self, step: u64) -> Sample {
        Sample {
            stage: self.plan.stage,
            step,
            soak_step: self.plan.offset + step,
            seconds: self.soak_started.elapsed().as_secs_f64(),
            host_mb: host_memory_mb("VmRSS:"),
            device_mb: device_used_mb(self.device),
            device_tensors_mb: allocator_memory(self.device).map(|m| m.allocated),
            run_dir_mb: dir_bytes(&self.run_dir) as f64 / MIB,
            open_files: open_files(),
            threads: threads(),
        }
    }

    /// Where the soak stands, after the last sample, on stderr: the process, the host memory's
    /// slope so far and the time per step since the last report.
    fn report(&self) {
        let Some(s) = self.samples.last() else {
            return;
        };
        let slope = self
            .figures(|s| Some(s.host_mb))
            .and_then(|s| s.slope_per_1k)
            .map_or("warming up".into(), |v| format!("{v:+.1} MiB/1k steps"));
        let recent = &self.step_seconds[self
            .step_seconds
            .len()
            .saturating_sub(self.plan.report_every as usize)..];
        let ms = 1e3 * recent.iter().sum::<f64>() / recent.len().max(1) as f64;
        let device = s
            .device_mb
            .map_or(String::new(), |mb| format!(", device {mb:.0} MiB"));
        eprintln!(
            "soak: step {}/{} ({} {}): host {:.0} MiB ({slope}){device}, run dir {:.0} MiB, \
             {ms:.1} ms/step, {} open files, {} threads, {:.0} s",
            s.soak_step,
            self.plan.soak_steps,
            s.stage.name(),
            s.step,
            s.host_mb,
            s.run_dir_mb,
            s.open_files,
            s.threads,
            s.seconds
        );
    }

    /// The series of `value` over the samples that have it.
    fn figures(&self, value: impl Fn(&Sample) -> Option<f64>) -> Option<Series> {
        let points: Vec<(u64, f64)> = self
            .samples
            .iter()
            .filter_map(|s| Some((s.step, value(s)?)))
            .collect();
        Series::of(&points, self.plan.warmup)
    }

    fn counts(&self, value: impl Fn(&Sample) -> u64) -> Option<Counts> {
        let points: Vec<(u64, u64)> = self.samples.iter().map(|s| (s.step, value(s))).collect();
        Counts::of(&points, self.plan.warmup)
    }

    /// The stage's figures and its samples; `None` when no step ran.
    pub fn finish(self) -> Option<(StageReport, Vec<Sample>)> {
        let report = StageReport {
            stage: self.plan.stage,
            steps: self.plan.steps,
            warmup_steps: self.plan.warmup,
            seconds: self.stage_started.elapsed().as_secs_f64(),
            host_mb: self.figures(|s| Some(s.host_mb))?,
            device_mb: self.figures(|s| s.device_mb),
            device_tensors_mb: self.figures(|s| s.device_tensors_mb),
            run_dir_mb: self.figures(|s| Some(s.run_dir_mb))?,
            open_files: self.counts(|s| s.open_files)?,
            threads: self.counts(|s| s.threads)?,
            ms_per_step: Tenths::of(&self.step_seconds)?,
        };
        Some((report, self.samples))
    }
}

/// Bytes of the files under `dir`, recursively (0 for what cannot be read).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_samples_the_first_every_nth_and_last_step() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tb")).unwrap();
        std::fs::write(dir.path().join("tb/events"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(dir.path().join("model"), vec![0u8; 1 << 20]).unwrap();
        let plan = StagePlan {
            stage: Stage::Base,
            steps: 25,
            warmup: 10,
            offset: 100,
            every: 10,
            report_every: 12,
            soak_steps: 200,
        };
        let mut probe = Probe::new(plan, Device::Cpu, dir.path(), Instant::now());
        (1..=25).for_each(|step| probe.after_step(step));
        let (report, samples) = probe.finish().unwrap();
        let sampled: Vec<u64> = samples.iter().map(|s| s.soak_step).collect();
        assert_eq!(sampled, vec![101, 110, 112, 120, 124, 125]);
        assert!((report.run_dir_mb.end - 2.0).abs() < 1e-9, "{report:?}");
        assert_eq!(report.run_dir_mb.slope_per_1k, Some(0.0));
        assert!(report.host_mb.end > 1.0 && report.open_files.second_half >= 3);
        assert!(report.device_mb.is_none() && samples[0].device_mb.is_none());
        assert!(report.device_tensors_mb.is_none() && samples[0].device_tensors_mb.is_none());
    }
}
