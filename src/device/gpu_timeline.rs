//! How long the GPU sat idle between training steps, on the GPU's own clock: a CUDA event
//! recorded where each step's work begins and one where it ends, on the stream libtorch
//! launches on (the legacy default stream), read once the GPU has run them all. The host's
//! wait for a batch says when the host was late; this says whether the GPU noticed.
//!
//! tch does not expose CUDA events; the CUDA runtime that libtorch loaded does.

use std::ffi::c_void;

use tch::Device;

use super::loaded_symbol;

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
        // device libtorch runs this thread's work on).
        let selected = unsafe { (api.set_device)(n as i32) } == 0;
        selected.then_some(GpuTimeline {
            api,
            marks: Vec::new(),
            failed: false,
        })
    }

    /// Marks the point the GPU's queued work has reached: a step's beginning, or its end.
    pub fn mark(&mut self) {
        let mut event: Event = std::ptr::null_mut();
        // SAFETY: creates an event into `event` and records it on the legacy default stream
        // (a null stream); an event is destroyed only in `drop`.
        unsafe {
            if (self.api.create)(&mut event) != 0 {
                self.failed = true;
                return;
            }
            self.marks.push(event);
            self.failed |= (self.api.record)(event, std::ptr::null_mut()) != 0;
        }
    }

    /// The share of the time from the first step's beginning to the last one's end in which
    /// the GPU ran none of the steps' work: each end to the next beginning. To be read once
    /// the device has synchronized; `None` for fewer than two steps or after a failed call.
    pub fn idle_share(&self) -> Option<f64> {
        let n = self.marks.len();
        if self.failed || n < 4 || !n.is_multiple_of(2) {
            return None;
        }
        let ms = |from: Event, to: Event| {
            let mut ms = 0f32;
            // SAFETY: both events were recorded and have completed (the device synchronized).
            let ok = unsafe { (self.api.elapsed_ms)(&mut ms, from, to) } == 0;
            ok.then_some(f64::from(ms))
        };
        let total = ms(self.marks[0], self.marks[n - 1])?;
        let gaps = self.marks[1..n - 1]
            .chunks(2)
            .map(|pair| ms(pair[0], pair[1]))
            .sum::<Option<f64>>()?;
        idle_share(gaps, total)
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

/// `gaps` over `total` milliseconds, kept within [0, 1] (the events' clock resolves half a
/// microsecond); `None` for an empty span.
fn idle_share(gaps: f64, total: f64) -> Option<f64> {
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
    fn idle_is_the_gaps_share_of_the_span() {
        assert_eq!(idle_share(25.0, 100.0), Some(0.25));
        assert_eq!(idle_share(0.0, 100.0), Some(0.0));
        assert_eq!(idle_share(100.0005, 100.0), Some(1.0));
        assert_eq!(idle_share(0.0, 0.0), None);
    }
}
