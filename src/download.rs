//! `vggtiny download`: fetch the Tiny ImageNet zip (resumable, MD5-checked) and unpack it
//! safely. The download grows `.NAME.part` and becomes `NAME` only once its MD5 matches; the
//! archive unpacks into a temporary folder that is renamed into place only when complete, and
//! no entry may point outside it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use crate::bail_input;
use crate::io::hex;

/// The official Tiny ImageNet archive and its MD5.
pub const DEFAULT_URL: &str = "http://cs231n.stanford.edu/tiny-imagenet-200.zip";
pub const DEFAULT_MD5: &str = "90528d7ca1a48142e341f4ef8d21d0de";

/// Downloads the archive at `url` into the folder `to` (resuming an earlier attempt), checks
/// its MD5 against `md5` and unpacks it there; returns the unpacked dataset folder.
/// A connection or read that takes longer than `timeout` ends the attempt.
pub fn fetch_dataset(url: &str, md5: &str, to: &Path, timeout: Duration) -> Result<PathBuf> {
    let expected = md5.to_lowercase();
    if expected.len() != 32 || !expected.chars().all(|c| c.is_ascii_hexdigit()) {
        bail_input!("--md5 {md5:?}: expected 32 hexadecimal digits");
    }
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && !n.contains('?'))
        .unwrap_or("download.zip");
    let archive = to.join(name);
    let part = to.join(format!(".{name}.part"));

    if archive.is_file() {
        eprintln!("{} is already here; checking it", archive.display());
        verify_md5(&archive, &expected)?;
    } else {
        fetch(url, &part, timeout)?;
        if let Err(e) = verify_md5(&part, &expected) {
            fs::remove_file(&part).ok();
            return Err(e.context(format!(
                "{} removed; run again to download afresh",
                part.display()
            )));
        }
        fs::rename(&part, &archive)?;
    }
    extract(&archive, to)
}

/// Downloads `url` into `part`, continuing where an earlier attempt stopped (HTTP Range).
fn fetch(url: &str, part: &Path, timeout: Duration) -> Result<()> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_resolve(Some(timeout))
        .timeout_connect(Some(timeout))
        .timeout_per_read(Some(timeout))
        .build()
        .into();
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        // Asked for bytes past the end: the earlier attempt already had them all.
        Err(ureq::Error::StatusCode(416)) if have > 0 => return Ok(()),
        Err(ureq::Error::StatusCode(code)) => bail!("cannot download {url}: HTTP status {code}"),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot download {url}; run the same command again to resume")
            })
        }
    };
    let resumed = response.status() == 206;
    if have > 0 && resumed {
        eprintln!("resuming the download at byte {have}");
    }
    let offset = if resumed { have } else { 0 };
    let total = response
        .headers()
        .get("Content-Length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map(|len| len + offset);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(part)
        .with_context(|| format!("cannot write {}", part.display()))?;
    let reader = response.into_body().into_reader();
    let written = copy_body(reader, &mut file, offset, total)?;
    if let Some(total) = total {
        if written < total {
            bail!(
                "download interrupted after {written} of {total} bytes; run the same command again to resume"
            );
        }
    }
    Ok(())
}

/// Appends the body `reader` gives to `file`, which holds `offset` bytes of `total`, with a
/// progress bar; returns the bytes the file holds then.
fn copy_body(
    mut reader: impl Read,
    file: &mut File,
    offset: u64,
    total: Option<u64>,
) -> Result<u64> {
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template("{bytes}/{total_bytes} {bar:30} {bytes_per_sec}, ETA {eta}")
            .expect("static template"),
    );
    bar.set_position(offset);
    let mut buf = vec![0u8; 1 << 16];
    let mut written = offset;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.sync_all().ok();
                return Err(e).context(format!(
                    "download interrupted after {written} bytes; run the same command again to resume"
                ));
            }
        };
        file.write_all(&buf[..n])?;
        written += n as u64;
        bar.set_position(written);
    }
    file.sync_all()?;
    bar.finish_and_clear();
    Ok(written)
}

fn verify_md5(path: &Path, expected: &str) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Md5::new();
    io::copy(&mut file, &mut hasher)?;
    let actual = hex(&hasher.finalize());
    if actual != expected {
        bail!("{}: MD5 {actual}, expected {expected}", path.display());
    }
    Ok(())
}

/// Unpacks `archive` into `to` through a temporary folder; returns the dataset folder.
fn extract(archive: &Path, to: &Path) -> Result<PathBuf> {
    let file = File::open(archive).with_context(|| format!("cannot read {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip archive", archive.display()))?;
    let mut tops = Vec::new();
    for i in 0..zip.len() {
        let entry = zip.by_index(i)?;
        let Some(path) = entry.enclosed_name() else {
            bail!(
                "{}: entry {:?} would land outside the target folder; not unpacking it",
                archive.display(),
                entry.name()
            );
        };
        if let Some(top) = path.components().next() {
            let top = PathBuf::from(top.as_os_str());
            if !tops.contains(&top) {
                tops.push(top);
            }
        }
    }
    if let Some(existing) = tops.iter().find(|t| to.join(t).exists()) {
        eprintln!("{} is already unpacked", to.join(existing).display());
        return Ok(to.join(existing));
    }
    let staging = to.join(format!(".unpacking-{}", std::process::id()));
    let unpacked = (|| -> Result<()> {
        fs::create_dir_all(&staging)?;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i)?;
            let target = staging.join(entry.enclosed_name().expect("checked above"));
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
        // Only complete folders get their final names.
        for top in &tops {
            fs::rename(staging.join(top), to.join(top))?;
        }
        Ok(())
    })();
    fs::remove_dir_all(&staging).ok();
    unpacked.with_context(|| format!("cannot unpack {}", archive.display()))?;
    Ok(to.join(tops.first().cloned().unwrap_or_default()))
}
