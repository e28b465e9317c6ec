use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use vggtiny::error::OutOfMemory;

fn main() {
    // Die quietly on a closed pipe (`vggtiny inspect ... | head`), as Unix tools do, instead of
    // failing a print.
    // SAFETY: restoring a default signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Every training step allocates and frees the same activation buffers, tens of MiB each.
    // glibc serves blocks that large with fresh mmaps, so each step page-faults all of them
    // in again (20 % of a CPU stage-1 step); keep them in the heap for reuse instead.
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    // Before any other thread starts, so that libtorch's worker threads inherit it.
    vggtiny::device::flush_denormals();
    let cli = vggtiny::cli::parse();
    let smaller_batch = cli.batch_size().map(|n| (n / 2).max(1));
    // libtorch reports failures (CUDA out of memory, bad shapes) as panics carrying a C++
    // backtrace; they become one error message here instead of reaching the user raw.
    panic::set_hook(Box::new(|_| {}));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| vggtiny::cli::run(cli)));
    let err = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(err)) => err,
        Err(payload) => vggtiny::error::from_panic(payload),
    };
    // Writes that fail (a terminal gone after SIGHUP) must not cost the exit code.
    let mut stderr = std::io::stderr();
    if let Some(oom) = OutOfMemory::find(&err, smaller_batch) {
        let _ = writeln!(stderr, "error: {oom}");
    } else if err.is::<vggtiny::error::Interrupted>() {
        let _ = writeln!(stderr, "{err}");
    } else {
        let _ = writeln!(stderr, "error: {err}");
        for cause in err.chain().skip(1) {
            let _ = writeln!(stderr, "  caused by: {cause}");
        }
    }
    std::process::exit(vggtiny::error::exit_code(&err));
}
