//! Small helpers for files and the process, with no knowledge of training: atomic writes,
//! checksummed safetensors, floats in JSON, TensorBoard event files, default paths, memory,
//! progress bars, temporary directories, hexadecimal digests, shell words, other processes.

pub mod atomic_file;
pub mod json_float;
pub mod memory;
pub mod paths;
pub mod progress_bar;
pub mod safetensors;
pub mod scratch;
pub mod tensorboard;

/// Bytes as lowercase hexadecimal, as digests are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether process `pid` has ended (signal 0 finds no such process).
pub fn process_ended(pid: i32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    let signalled = unsafe { libc::kill(pid, 0) };
    signalled != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Whether `path` was last modified at least `age` ago.
pub fn untouched_for(path: &std::path::Path, age: std::time::Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e >= age))
}

/// `arg` as a POSIX shell reads it back: as it is when that is safe, else in single quotes.
pub fn shell_quoted(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_only_where_the_shell_needs_it() {
        assert_eq!(shell_quoted("--out"), "--out");
        assert_eq!(shell_quoted("runs/base-1"), "runs/base-1");
        assert_eq!(shell_quoted("my runs/a"), "'my runs/a'");
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
        assert_eq!(shell_quoted(""), "''");
    }
}
