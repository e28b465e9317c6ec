//! Memory figures of this process.

/// A memory figure of this process from /proc/self/status (`VmRSS:` now, `VmHWM:` peak), in
/// MiB; 0 where the file is not there.
pub fn host_memory_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
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
}
