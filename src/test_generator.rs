//! Unit tests run as threads of one process, and libtorch has one global random generator: a
//! test that seeds it and checks what it draws (the split against PyTorch's permutation) gets
//! another permutation when a test on another thread draws in between. Each unit test that
//! seeds or draws from it holds this lock for its whole length.

use std::sync::{Mutex, MutexGuard};

static GENERATOR: Mutex<()> = Mutex::new(());

/// libtorch's generator, to this test alone until the guard drops (a test that panicked
/// while holding it leaves nothing behind that the next one needs).
pub fn lock() -> MutexGuard<'static, ()> {
    GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
