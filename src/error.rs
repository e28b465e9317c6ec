//! How failures map to exit codes: input and usage errors exit 2, everything else 1.

use std::fmt;

/// Marks an error as caused by the user's input (flags, files, data), not by the program.
/// `main` turns it into exit code 2; the message itself says what to fix.
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Builds an `anyhow::Error` marked as an input error.
pub fn input_error(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(msg.into()))
}

/// Returns early with an input error, like `anyhow::bail!`.
#[macro_export]
macro_rules! bail_input {
    ($($arg:tt)*) => {
        return Err($crate::error::input_error(format!($($arg)*)))
    };
}

/// A run stopped by a signal after saving a checkpoint: exits 128 + the signal number.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: i32,
    /// What was saved and how to resume.
    pub message: String,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}

/// The process exit code for an error chain.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if let Some(stop) = err.downcast_ref::<Interrupted>() {
        128 + stop.signal
    } else if err.chain().any(|cause| cause.is::<InputError>()) {
        2
    } else {
        1
    }
}

/// Turns a caught panic (libtorch errors arrive as panics with a C++ backtrace) into an error
/// with the first line of its message, and a hint where the cause is known.
pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> anyhow::Error {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown failure");
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(text);
    // tch wraps libtorch errors as `Torch("message\nException raised from ...")`.
    let first = first.trim_start_matches("called `Result::unwrap()` on an `Err` value: ");
    if text.contains("out of memory") {
        anyhow::anyhow!("the device ran out of memory ({first}); try a smaller --batch-size")
    } else {
        anyhow::anyhow!("internal failure: {first}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn input_errors_exit_2_even_under_context() {
        let err = Err::<(), _>(input_error("bad flag"))
            .context("while starting")
            .unwrap_err();
        assert_eq!(exit_code(&err), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("disk on fire")), 1);
    }

    #[test]
    fn panics_become_one_line_errors() {
        let oom = from_panic(Box::new(
            "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried\nException raised from x\")".to_string(),
        ));
        assert!(oom.to_string().contains("--batch-size"), "{oom}");
        assert!(!oom.to_string().contains("Exception raised"), "{oom}");
        let other = from_panic(Box::new("shape mismatch"));
        assert_eq!(other.to_string(), "internal failure: shape mismatch");
    }
}
