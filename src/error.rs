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

/// The device ran out of memory. Shown as one line: libtorch's account of it without the
/// C++ backtrace, where it happened, and a batch size to try.
#[derive(Debug, Clone)]
pub struct OutOfMemory {
    /// libtorch's words, up to how much memory was free.
    pub detail: String,
    /// Where, when not in the training thread ("while assembling a batch").
    pub during: Option<&'static str>,
    /// The batch size to suggest, when the command has one.
    pub suggest_batch: Option<usize>,
}

impl fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let during = self.during.map(|d| format!(" {d}")).unwrap_or_default();
        let hint = match self.suggest_batch {
            Some(n) => format!("try --batch-size {n}"),
            None => {
                "try a smaller --batch-size (a resumed run keeps its own: start a new one)".into()
            }
        };
        write!(f, "{}{during}; {hint}", self.detail.trim_end_matches('.'))
    }
}

impl std::error::Error for OutOfMemory {}

impl OutOfMemory {
    /// The out-of-memory report in a libtorch error text, if it is one.
    fn of(text: &str) -> Option<OutOfMemory> {
        let message = libtorch_message(text);
        if !(message.contains("out of memory") || message.contains("can't allocate memory")) {
            return None;
        }
        // libtorch's failed-check prefix ("[enforce fail at alloc_cpu.cpp:127] err == 0. ")
        // says nothing to a user.
        let message = match message.strip_prefix("[enforce fail at ") {
            Some(rest) => rest.split_once(". ").map_or(rest, |(_, after)| after),
            None => message,
        };
        // The rest (other processes' use, allocator settings, a link) does not fit one line.
        let cut = [
            " Process ",
            " Including non-PyTorch",
            " Of the allocated",
            " If reserved",
        ]
        .iter()
        .filter_map(|marker| message.find(marker))
        .min()
        .unwrap_or(message.len());
        Some(OutOfMemory {
            detail: message[..cut].trim_end().to_string(),
            during: None,
            suggest_batch: None,
        })
    }

    /// `err` as an out-of-memory report with `suggest_batch` to try, when it is one (a report
    /// made here, or a libtorch error returned rather than raised).
    pub fn find(err: &anyhow::Error, suggest_batch: Option<usize>) -> Option<OutOfMemory> {
        err.chain().find_map(|cause| {
            let found = match cause.downcast_ref::<OutOfMemory>() {
                Some(oom) => oom.clone(),
                None => OutOfMemory::of(&cause.to_string())?,
            };
            Some(OutOfMemory {
                suggest_batch,
                ..found
            })
        })
    }
}

/// The first line of libtorch's message in a panic or error text: tch shows it as
/// `Torch("message\nException raised from ...")`, with the backtrace's newlines escaped.
fn libtorch_message(text: &str) -> &str {
    let text = text.trim_start();
    let text = text
        .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
        .unwrap_or(text);
    let text = text.strip_prefix("Torch(\"").unwrap_or(text);
    let end = [text.find('\n'), text.find("\\n")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(text.len());
    text[..end].trim_end_matches("\")").trim()
}

/// Turns a caught panic (libtorch errors arrive as panics with a C++ backtrace) into an error
/// with the first line of its message; an out-of-memory one becomes `OutOfMemory`.
pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> anyhow::Error {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown failure");
    match OutOfMemory::of(text) {
        Some(oom) => anyhow::Error::new(oom),
        None => anyhow::anyhow!("internal failure: {}", libtorch_message(text)),
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

    /// The text a panic carries when tch's `unwrap` meets libtorch error `err`.
    fn unwrap_panic(err: tch::TchError) -> Box<dyn std::any::Any + Send> {
        Box::new(format!(
            "called `Result::unwrap()` on an `Err` value: {err:?}"
        ))
    }

    #[test]
    fn panics_become_one_line_errors() {
        // A real libtorch error: its backtrace is on the same line, its newlines escaped.
        let shape = tch::Tensor::zeros([2], tch::kind::FLOAT_CPU)
            .f_view([3])
            .unwrap_err();
        assert!(format!("{shape:?}").contains("\\n"), "{shape:?}");
        let other = from_panic(unwrap_panic(shape)).to_string();
        assert!(
            other.starts_with("internal failure: shape '[3]' is invalid"),
            "{other}"
        );
        assert!(
            !other.contains("Exception raised") && !other.contains('\\'),
            "{other}"
        );
        let other = from_panic(Box::new("shape mismatch"));
        assert_eq!(other.to_string(), "internal failure: shape mismatch");
    }

    #[test]
    fn out_of_memory_is_one_line_with_a_batch_size_to_try() {
        // A real allocation failure of libtorch's CPU allocator.
        let cpu = tch::Tensor::f_empty([1 << 50], tch::kind::FLOAT_CPU).unwrap_err();
        let oom = from_panic(unwrap_panic(cpu));
        let found = OutOfMemory::find(&oom, Some(32)).expect("an OutOfMemory");
        let line = found.to_string();
        assert!(
            line.starts_with("DefaultCPUAllocator: can't allocate memory"),
            "{line}"
        );
        assert!(
            line.ends_with("; try --batch-size 32") && !line.contains('\n'),
            "{line}"
        );
        // CUDA's report, as libtorch's caching allocator words it, behind a context line.
        let cuda = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of \
            139.81 GiB of which 1.19 GiB is free. Process 4242 has 138.61 GiB memory in use. Of \
            the allocated memory 137.2 GiB is allocated by PyTorch, and 512.00 MiB is reserved by \
            PyTorch but unallocated. If reserved but unallocated memory is large try setting \
            PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.\n\
            Exception raised from malloc at /pytorch/c10/cuda/CUDACachingAllocator.cpp:1340";
        let err = from_panic(unwrap_panic(tch::TchError::Torch(cuda.into()))).context("epoch 3");
        let line = OutOfMemory::find(&err, None).unwrap().to_string();
        assert_eq!(
            line,
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of \
             139.81 GiB of which 1.19 GiB is free; try a smaller --batch-size (a resumed run \
             keeps its own: start a new one)"
        );
        assert!(OutOfMemory::find(&anyhow::anyhow!("disk on fire"), None).is_none());
    }
}
