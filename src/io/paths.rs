//! Where vggtiny keeps files of its own outside run directories.

use std::path::PathBuf;

/// `$XDG_CACHE_HOME/vggtiny`, else `~/.cache/vggtiny`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("vggtiny")
}

/// The file `train-base` reads ImageNet weights from when `--weights` is not given.
pub fn default_weights_path() -> PathBuf {
    cache_dir().join("vgg16-imagenet.safetensors")
}
