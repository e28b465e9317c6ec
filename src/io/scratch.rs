//! A temporary directory of this process, removed when dropped (bench's synthetic data and
//! throwaway cache, a soak's runs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Scratch(PathBuf);

impl Scratch {
    /// `vggtiny-NAME-PID` in the system's temporary directory (`TMPDIR`), empty.
    pub fn new(name: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("vggtiny-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_directory_is_gone_once_dropped() {
        let scratch = Scratch::new("scratch-test").unwrap();
        let dir = scratch.path().to_path_buf();
        std::fs::write(dir.join("file"), b"x").unwrap();
        assert!(dir.is_dir());
        drop(scratch);
        assert!(!dir.exists());
    }
}
