//! How much of the GPU's time between training steps went to no step: a CUDA event recorded
//! where each step's work begins and one where it ends, on the stream libtorch launches on
//! (the legacy default stream), read once the GPU has run them all. The host's wait for a
//! batch says when the host was late; this says what it cost the GPU. Between two steps the
//! GPU is idle or runs the loader's copies and augmentation (one stream holds both), so the
//! figure bounds the idle time from above; a stall inside a step (fp16's overflow check waits
//! for the GPU) counts as step time.
//!
//! tch does not expose CUDA events; the CUDA runtime that libtorch loaded does.

use std::ffi::c_void;

use tch::Device;

use super::{loaded_symbol, runtime_succeeded};

type Event = *mut c_void;
type SetDevice = unsafe extern "C" fn(i32) -> i32;
type Create = unsafe extern "C" fn(*mut Event) -> i32;
type Record = unsafe extern "C" fn(Event, *mut c_void) -> i32;
type ElapsedMs = unsafe extern "C" fn(*mut f32, Event, Event) -> i32;
type Destroy = unsafe extern "C" fn(Event) -> i32;

/// The CUDA runtime's event functions, as cuda_runtime_api.h declares them.
struct EventApi {
    set_device: SetDevice,
    create: Create,
    record: Record,
    elapsed_ms: ElapsedMs,
    destroy: Destroy,
}

impl EventApi {
    /// `None` where the CUDA runtime is not loaded.
    fn loaded() -> Option<EventApi> {
        let (set_device, create, record, elapsed_ms, destroy) = (
            loaded_symbol(c"cudaSetDevice")?,
            loaded_symbol(c"cudaEventCreate")?,
            loaded_symbol(c"cudaEventRecord")?,
            loaded_symbol(c"cudaEventElapsedTime")?,
            loaded_symbol(c"cudaEventDestroy")?,
        );
        // SAFETY: each symbol is the runtime function of that name, whose C signature the
        // field's type repeats.
        unsafe {
            Some(EventApi {
                set_device: std::mem::transmute::<*mut c_void, SetDevice>(set_device),
                create: std::mem::transmute::<*mut c_void, Create>(create),
                record: std::mem::transmute::<*mut c_void, Record>(record),
                elapsed_ms: std::mem::transmute::<*mut c_void, ElapsedMs>(elapsed_ms),
                destroy: std::mem::transmute::<*mut c_void, Destroy>(destroy),
            })
        }
    }
}

/// Events marking, in turn, where each timed step's GPU work begins and where it ends.
pub struct GpuTimeline {
    api: EventApi,
    marks: Vec<Event>,
    /// A CUDA call failed: the figure is not given rather than given wrong.
    failed: bool,
}

impl GpuTimeline {
    /// A timeline on CUDA device `device`; `None` on the CPU and where the CUDA runtime's
    /// event functions are not loaded.
    pub fn new(device: Device) -> Option<GpuTimeline> {
        let Device::Cuda(n) = device else {
            return None;
        };
        let api = EventApi::loaded()?;
        // SAFETY: selects the device whose default stream the events are recorded on (the
        // device libtorch runs this thread's work on; its device guards restore theirs).
        let selected = runtime_succeeded(unsafe { (api.set_device)(n as i32) });
        selected.then_some(GpuTimeline {
            api,
            marks: Vec::new(),
            failed: false,
        })
    }

    /// Marks the point the GPU's queued work has reached: a step's beginning, or its end.
    pub fn mark(&mut self) {
        if self.failed {
            return;
        }
        let mut event: Event = std::ptr::null_mut();
        // SAFETY: creates an event into `event` and records it on the legacy default stream
        // (a null stream); an event is destroyed only in `drop`.
        unsafe {
            if !runtime_succeeded((self.api.create)(&mut event)) {
                self.failed = true;
                return;
            }
            self.marks.push(event);
            self.failed = !runtime_succeeded((self.api.record)(event, std::ptr::null_mut()));
        }
    }

    /// The share of the time from the first step's beginning to the last one's end that lies
    /// between one step's end and the next one's beginning. To be read once the device has
    /// synchronized; `None` for fewer than two steps or after a failed call.
    pub fn share_between_steps(&self) -> Option<f64> {
        if self.failed {
            return None;
        }
        let first = *self.marks.first()?;
        let offsets = self
            .marks
            .iter()
            .map(|&mark| {
                let mut ms = 0f32;
                // SAFETY: both events were recorded and have completed (the device
                // synchronized).
                let code = unsafe { (self.api.elapsed_ms)(&mut ms, first, mark) };
                runtime_succeeded(code).then_some(f64::from(ms))
            })
            .collect::<Option<Vec<f64>>>()?;
        share_between_steps(&offsets)
    }
}

impl Drop for GpuTimeline {
    fn drop(&mut self) {
        for &event in &self.marks {
            // SAFETY: each event was created by `mark` and is destroyed once.
            unsafe {
                (self.api.destroy)(event);
            }
        }
    }
}

/// Of marks at `offsets` milliseconds from the first (each step's beginning, then its end),
/// the share of the whole span that lies between an end and the next beginning, kept within
/// [0, 1] (the events' clock resolves half a microsecond); `None` without two whole steps.
fn share_between_steps(offsets: &[f64]) -> Option<f64> {
    let n = offsets.len();
    if n < 4 || !n.is_multiple_of(2) {
        return None;
    }
    let total = offsets[n - 1];
    let gaps: f64 = offsets[1..n - 1].chunks(2).map(|g| g[1] - g[0]).sum();
    (total > 0.0).then(|| (gaps / total).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_gpu_timeline() {
        assert!(GpuTimeline::new(Device::Cpu).is_none());
    }

    #[test]
    fn the_gaps_between_ends_and_next_beginnings_over_the_span() {
        // steps 0-10, 12-20, 25-30: gaps of 2 and 5 over 30
        let share = share_between_steps(&[0.0, 10.0, 12.0, 20.0, 25.0, 30.0]);
        assert_eq!(share, Some(7.0 / 30.0));
        assert_eq!(share_between_steps(&[0.0, 10.0, 10.0, 20.0]), Some(0.0));
        // the clock's resolution cannot take the share past 1
        assert_eq!(share_between_steps(&[0.0, 0.0, 10.0005, 10.0]), Some(1.0));
        assert_eq!(share_between_steps(&[0.0, 10.0]), None, "one step");
        assert_eq!(
            share_between_steps(&[0.0, 1.0, 2.0]),
            None,
            "a step without its end"
        );
        assert_eq!(share_between_steps(&[0.0; 4]), None, "an empty span");
    }
}
