//! Unpacking the downloaded zip: through a temporary folder renamed into place only when
//! complete, no entry pointing outside it, and a folder already there taken as unpacked only
//! when it holds every file of the archive.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use zip::ZipArchive;

use crate::io::atomic_file::ABANDONED_AFTER;
use crate::io::{process_ended, untouched_for};

/// The prefix of the temporary folder an archive unpacks into, followed by the pid.
const STAGING: &str = ".unpacking-";

/// Unpacks `archive` into `to` through a temporary folder; returns the dataset folder: the
/// archive's one top-level folder, or `to` itself when its entries have no single one.
pub fn extract(archive: &Path, to: &Path) -> Result<PathBuf> {
    let file = File::open(archive).with_context(|| format!("cannot read {}", archive.display()))?;
    let mut zip = ZipArchive::new(file).with_context(|| {
        format!(
            "{} is not a zip archive, or is damaged; delete it and run again",
            archive.display()
        )
    })?;
    let entries = Entries::list(&mut zip, archive)?;
    let root = match entries.tops.as_slice() {
        [top] if entries.files.iter().all(|(path, _)| path != top) => to.join(top),
        _ => to.to_path_buf(),
    };
    remove_abandoned_staging(to);
    // an empty folder (made by hand, or left by an earlier tool) holds nothing to keep
    for top in &entries.tops {
        fs::remove_dir(to.join(top)).ok();
    }
    if entries.tops.iter().any(|t| to.join(t).exists()) {
        let present = entries.present_in(to);
        if present < entries.files.len() {
            bail!(
                "{} holds {present} of the archive's {} files: an unpacking that stopped, or \
                 another dataset; move it away or remove it, then run again",
                root.display(),
                entries.files.len()
            );
        }
        eprintln!("{} is already unpacked", root.display());
        return Ok(root);
    }
    let staging = to.join(format!("{STAGING}{}", std::process::id()));
    let unpacked = unpack_into(&mut zip, &staging, &entries.tops, to);
    fs::remove_dir_all(&staging).ok();
    unpacked.with_context(|| format!("cannot unpack {}", archive.display()))?;
    Ok(root)
}

/// What an archive holds: its top-level names and its files with their sizes.
struct Entries {
    tops: Vec<PathBuf>,
    files: Vec<(PathBuf, u64)>,
}

impl Entries {
    /// The entries of `zip`; an entry that would land outside the target folder is refused.
    fn list(zip: &mut ZipArchive<File>, archive: &Path) -> Result<Entries> {
        let mut entries = Entries {
            tops: Vec::new(),
            files: Vec::new(),
        };
        for i in 0..zip.len() {
            let entry = zip.by_index_raw(i)?;
            let Some(path) = entry.enclosed_name() else {
                bail!(
                    "{}: entry {:?} would land outside the target folder; not unpacking it",
                    archive.display(),
                    entry.name()
                );
            };
            if let Some(top) = path.components().next() {
                let top = PathBuf::from(top.as_os_str());
                if !entries.tops.contains(&top) {
                    entries.tops.push(top);
                }
            }
            if !entry.is_dir() {
                entries.files.push((path, entry.size()));
            }
        }
        Ok(entries)
    }

    /// How many of the files are in `to` at their size.
    fn present_in(&self, to: &Path) -> usize {
        let present = |(path, size): &&(PathBuf, u64)| {
            fs::metadata(to.join(path)).is_ok_and(|m| m.is_file() && m.len() == *size)
        };
        self.files.iter().filter(present).count()
    }
}

/// Removes the temporary folders of unpackings whose process ended (a kill leaves one, as
/// large as the dataset) and that have been untouched a while (a process in another pid
/// namespace, sharing the folder, reads as ended). Best effort.
fn remove_abandoned_staging(to: &Path) {
    let Ok(listing) = fs::read_dir(to) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING)?.parse().ok());
        if pid.is_some_and(process_ended) && untouched_for(&entry.path(), ABANDONED_AFTER) {
            eprintln!(
                "removing {}, left by an unpacking that was stopped",
                entry.path().display()
            );
            fs::remove_dir_all(entry.path()).ok();
        }
    }
}

/// Unpacks every entry of `zip` into `staging`, then renames the `tops` into `to`: only
/// complete folders get their final names.
fn unpack_into(
    zip: &mut ZipArchive<File>,
    staging: &Path,
    tops: &[PathBuf],
    to: &Path,
) -> Result<()> {
    fs::create_dir_all(staging)?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let target = staging.join(entry.enclosed_name().expect("checked by Entries::list"));
        if entry.is_dir() {
            fs::create_dir_all(&target)?;
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut out = File::create(&target)?;
            io::copy(&mut entry, &mut out)?;
        }
    }
    for top in tops {
        fs::rename(staging.join(top), to.join(top))?;
    }
    Ok(())
}
