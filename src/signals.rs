//! Stopping a training run cleanly on SIGINT or SIGTERM: the loop finishes its step, writes a
//! checkpoint and exits 130 or 143. A second signal exits at once; every file is written
//! atomically, so that leaves the last complete checkpoint in place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

pub struct StopSignals {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
}

impl StopSignals {
    pub fn install() -> Result<StopSignals> {
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        for (signal, seen, code) in [(SIGINT, &interrupt, 130), (SIGTERM, &terminate, 143)] {
            // Registered first, so it sees the flag as the previous signal left it.
            flag::register_conditional_shutdown(signal, code, Arc::clone(seen))?;
            flag::register(signal, Arc::clone(seen))?;
        }
        Ok(StopSignals {
            interrupt,
            terminate,
        })
    }

    /// The signal asking the run to stop, if one came.
    pub fn caught(&self) -> Option<i32> {
        if self.interrupt.load(Ordering::SeqCst) {
            Some(SIGINT)
        } else if self.terminate.load(Ordering::SeqCst) {
            Some(SIGTERM)
        } else {
            None
        }
    }
}
