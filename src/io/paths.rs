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

/// Where decoded images are cached by default: a folder of its own, so that deleting it to
/// reclaim space never touches the converted weights beside it.
pub fn image_cache_dir() -> PathBuf {
    cache_dir().join("images")
}

/// The file `train-base` reads ImageNet weights from when `--weights` is not given.
pub fn default_weights_path() -> PathBuf {
    cache_dir().join("vgg16-imagenet.safetensors")
}
