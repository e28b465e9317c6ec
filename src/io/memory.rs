//! Memory and other resource figures of this process, from /proc (Linux); 0 where it is not
//! there.

/// The number in a line of /proc/self/status (`VmRSS:   1234 kB`, `Threads:  7`).
fn status_field(field: &str) -> Option<f64> {
    field_of(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

fn field_of(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A memory figure of this process from /proc/self/status (`VmRSS:` now, `VmHWM:` peak), in
/// MiB.
pub fn host_memory_mb(field: &str) -> f64 {
    status_field(field).map_or(0.0, |kb| kb / 1024.0)
}

/// Threads of this process.
pub fn threads() -> u64 {
    status_field("Threads:").map_or(0, |n| n as u64)
}

/// File descriptors this process holds open.
pub fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_is_read() {
        // Resident memory and its peak (their order is not checked: other tests' threads free
        // memory in between, and the kernel records the peak lazily).
        for field in ["VmRSS:", "VmHWM:"] {
            let mb = host_memory_mb(field);
            assert!(mb > 1.0 && mb < 1e7, "{field} {mb}");
        }
        assert_eq!(host_memory_mb("NoSuchField:"), 0.0);
    }

    #[test]
    fn threads_and_open_files_are_counted() {
        let status = "Name:\tvggtiny\nVmRSS:\t  2048 kB\nThreads:\t7\n";
        assert_eq!(field_of(status, "VmRSS:"), Some(2048.0));
        assert_eq!(field_of(status, "Threads:"), Some(7.0));
        assert_eq!(field_of(status, "VmHWM:"), None);
        // Other tests run beside this one, so only lower bounds hold: this thread, and
        // standard input, output and error.
        assert!(threads() >= 1);
        assert!(open_files() >= 3);
    }
}
