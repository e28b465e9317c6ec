//! A run directory on disk: `model.safetensors` (the original program's `state_dict()`),
//! `best.safetensors`, `checkpoint.safetensors` (the resume point), `meta.json` and
//! `metrics.jsonl`. Every file is written to a temporary name in the same directory, synced,
//! then renamed, so a crash leaves either the old file or the new one.

pub mod checkpoint;
pub mod lock;
pub mod meta;
pub mod metrics;
pub mod saved_model;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::bail_input;
use crate::io::paths::resolved;
use checkpoint::CHECKPOINT_FILE;

pub const MODEL_FILE: &str = "model.safetensors";
pub const META_FILE: &str = "meta.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The model of the epoch with the best holdout top-1 so far.
pub const BEST_FILE: &str = "best.safetensors";

/// Refuses a fresh run into `dir` when it holds a run, unless `force`. Writes nothing: a
/// forced run's old files go only once every input is checked (`clear_old_run`).
pub fn check_free(dir: &Path, force: bool) -> Result<()> {
    let used = [MODEL_FILE, BEST_FILE, CHECKPOINT_FILE]
        .iter()
        .any(|f| dir.join(f).exists());
    let lacking = [META_FILE, CHECKPOINT_FILE]
        .into_iter()
        .find(|f| !dir.join(f).is_file());
    if let Some(lacking) = lacking.filter(|_| used && !force) {
        bail_input!(
            "{} holds a run's files but no {lacking}, so it cannot be resumed; pass --force \
             to overwrite them, or choose another --out",
            dir.display()
        );
    }
    if used && !force {
        bail_input!(
            "{} already holds a run; pass --resume to continue it, --force to overwrite it, \
             or choose another --out",
            dir.display()
        );
    }
    Ok(())
}

/// The files of an old run in `dir` that a fresh run replaces. Its meta.json is not among
/// them: the fresh run writes its own just after.
const OLD_RUN_FILES: [&str; 4] = [METRICS_FILE, CHECKPOINT_FILE, MODEL_FILE, BEST_FILE];

/// Whether `path` is a run directory's file a fresh run into `dir` would remove, or `dir`
/// itself.
pub fn would_clear(dir: &Path, path: &Path) -> bool {
    let (dir, path) = (resolved(dir), resolved(path));
    path == dir
        || (path.parent() == Some(&dir)
            && OLD_RUN_FILES
                .iter()
                .any(|f| path.file_name() == Some((*f).as_ref())))
}

/// Removes what a forced fresh start leaves of the old run in `dir`, so that nothing of it
/// passes for the new one's. Called once every input of the new run has been checked.
pub fn clear_old_run(dir: &Path) -> Result<()> {
    for stale in OLD_RUN_FILES {
        let path = dir.join(stale);
        if path.exists() {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_used_directory_is_refused_unless_forced_and_checking_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        check_free(dir.path(), false).unwrap();
        fs::write(dir.path().join(MODEL_FILE), b"x").unwrap();
        fs::write(dir.path().join(BEST_FILE), b"x").unwrap();
        let err = check_free(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        check_free(dir.path(), true).unwrap();
        assert!(
            dir.path().join(MODEL_FILE).exists(),
            "checking removed a file"
        );
        fs::write(dir.path().join(METRICS_FILE), b"{}").unwrap();
        fs::write(dir.path().join(META_FILE), b"{}").unwrap();
        clear_old_run(dir.path()).unwrap();
        for gone in [MODEL_FILE, BEST_FILE, METRICS_FILE] {
            assert!(!dir.path().join(gone).exists(), "{gone} left by --force");
        }
        assert!(dir.path().join(META_FILE).exists());
    }

    #[test]
    fn the_files_a_forced_run_replaces_are_known() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        fs::create_dir(&run).unwrap();
        assert!(would_clear(&run, &run));
        assert!(would_clear(&run, &run.join(BEST_FILE)));
        assert!(would_clear(
            &run,
            &run.join("..").join("r").join(MODEL_FILE)
        ));
        assert!(!would_clear(&run, &run.join("vgg16.safetensors")));
        assert!(!would_clear(&run, &dir.path().join(MODEL_FILE)));
    }
}
