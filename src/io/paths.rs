//! Where vggtiny keeps files of its own outside run directories, and paths resolved to be
//! compared.

use std::path::{Path, PathBuf};

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

/// `path` with links and `..` resolved, as far as it exists: a file not there yet keeps its
/// name under its resolved folder.
pub fn resolved(path: &Path) -> PathBuf {
    if let Ok(found) = path.canonicalize() {
        return found;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => resolved(parent).join(name),
        _ => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}
