//! Where vggtiny keeps files of its own outside run directories, and paths resolved to be
//! compared.

use std::path::{Component, Path, PathBuf};

/// `$XDG_CACHE_HOME/vggtiny`, else `~/.cache/vggtiny`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("vggtiny")
}

/// Where decoded images are cached by default: a folder of its own, so that deleting it to
/// reclaim space never touches the converted weights beside it.
pub fn image_cache_dir() -> PathBuf {
    cache_dir().join("images")
}

/// The file `train-base` reads ImageNet weights from when `--weights` is not given.
pub fn default_weights_path() -> PathBuf {
    cache_dir().join("vgg16-imagenet.safetensors")
}

/// `path`, absolute, with links resolved as far as it exists and `.`/`..` taken as a new
/// directory's `create_dir_all` takes them (a `..` after a part not there yet removes that
/// part), so that two names of one place compare equal.
pub fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => {
                out.push(other);
                if let Ok(found) = out.canonicalize() {
                    out = found;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_place_resolves_to_one_name_whether_it_exists_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let data = base.join("data");
        std::fs::create_dir_all(data.join("train")).unwrap();
        std::os::unix::fs::symlink(&data, base.join("link")).unwrap();
        let train = data.join("train");
        assert_eq!(resolved(&base.join("link/train")), train);
        assert_eq!(resolved(&base.join("link/./train/")), train);
        assert_eq!(resolved(&base.join("link/train/run")), train.join("run"));
        // a part not there yet, undone by the `..` after it
        let around = base.join("nope/x/../../data/train/run");
        assert_eq!(resolved(&around), train.join("run"));
        assert!(resolved(&around).starts_with(resolved(&data)));
    }
}
