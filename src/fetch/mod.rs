//! The Tiny ImageNet zip fetched (resumable, MD5-checked) and unpacked safely: the work of
//! `vggtiny download`. The download grows `.NAME.part` and becomes `NAME` only once its MD5
//! matches (one that does not is kept: the MD5 given may be the mistake); unpacking is
//! `unpack`'s.

mod unpack;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use crate::bail_input;
use crate::io::hex;
use unpack::extract;

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
        verify_md5(&archive, &expected).map_err(|e| {
            e.context(format!(
                "if --md5 is right, {} is damaged or incomplete: delete it and run again",
                archive.display()
            ))
        })?;
    } else {
        fetch(url, &part, timeout)?;
        verify_md5(&part, &expected).map_err(|e| {
            e.context(format!(
                "if --md5 is mistyped, run again with the right one (what came down is kept, \
                 and nothing is fetched again); if it is right, the download is damaged: \
                 delete {} and run again",
                part.display()
            ))
        })?;
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
        Err(e) if is_transient(&e) => {
            return Err(e).with_context(|| {
                format!("cannot download {url}; run the same command again to resume")
            })
        }
        Err(e) => return Err(e).with_context(|| format!("cannot download {url}")),
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

/// Whether `error` may pass by itself (the network, the server's load), so that running again
/// is the advice; a redirect loop or a bad URL stays as it is.
fn is_transient(error: &ureq::Error) -> bool {
    use ureq::Error::*;
    matches!(
        error,
        Io(_) | Timeout(_) | HostNotFound | ConnectionFailed | BodyStalled
    )
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
