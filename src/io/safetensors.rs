//! safetensors files with a checksum: safetensors has none of its own, so every file vggtiny
//! writes carries a CRC-32 of its tensors and of its other metadata (a checkpoint's position is
//! metadata), and a reader refuses a file that does not match it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::Result;
use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Device, Tensor};

use crate::bail_input;
use crate::error::input_error;
use crate::io::atomic_file::write_atomic;

/// A tensor's bytes in the form the safetensors writer takes.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor) -> Result<Bytes> {
    let t = t.to_device(Device::Cpu).contiguous();
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(Bytes {
        dtype: Dtype::try_from(t.kind())?,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Metadata key of the CRC-32 of every tensor's bytes and then every other metadata entry (each
/// in name order): safetensors has no checksum of its own, and a flipped bit would load as a
/// silently wrong weight or training position.
const CRC_KEY: &str = "vggtiny.checksum";
/// The key of files written before the metadata was covered: tensors only.
const TENSORS_ONLY_CRC_KEY: &str = "vggtiny.crc32";

fn checksum<'a>(
    named: impl Iterator<Item = (&'a str, &'a [u8])>,
    metadata: Option<&HashMap<String, String>>,
) -> String {
    let mut sorted: Vec<_> = named.collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut crc = crc32fast::Hasher::new();
    for (name, data) in sorted {
        crc.update(name.as_bytes());
        crc.update(data);
    }
    let mut entries: Vec<_> = metadata
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != CRC_KEY && *k != TENSORS_ONLY_CRC_KEY)
        .collect();
    entries.sort();
    for (key, value) in entries {
        crc.update(key.as_bytes());
        crc.update(&[0]);
        crc.update(value.as_bytes());
        crc.update(&[0]);
    }
    format!("{:08x}", crc.finalize())
}

/// Saves named tensors (copied to the CPU) and string metadata as safetensors, atomically,
/// with a checksum of the tensors in the metadata.
pub fn save_safetensors(
    path: &Path,
    named: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = named
        .iter()
        .map(|(n, t)| Ok((n.as_str(), to_bytes(t)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = metadata.unwrap_or_default();
    let crc = checksum(
        bytes.iter().map(|(n, b)| (*n, b.data.as_slice())),
        Some(&metadata),
    );
    metadata.insert(CRC_KEY.to_string(), crc);
    write_atomic(path, |tmp| {
        let views = bytes.iter().map(|(n, b)| (*n, b));
        safetensors::tensor::serialize_to_file(views, &Some(metadata), tmp).map_err(|e| match e {
            // the OS's own words ("No space left on device"), not the writer's debug form
            safetensors::SafeTensorError::IoError(io) => anyhow::Error::new(io),
            other => anyhow::anyhow!("{other:?}"),
        })
    })
}

/// Saves named tensors as safetensors, atomically.
pub fn save_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    save_safetensors(path, named, None)
}

/// Named tensors, as files hold them.
pub type Named = Vec<(String, Tensor)>;

/// Reads a safetensors file: its tensors and its metadata. Errors name the file.
pub fn read_safetensors(path: &Path) -> Result<(Named, HashMap<String, String>)> {
    let bytes =
        fs::read(path).map_err(|e| input_error(format!("cannot read {}: {e}", path.display())))?;
    let bad = |e: &dyn std::fmt::Display| {
        input_error(format!(
            "{}: not a readable safetensors file: {e}",
            path.display()
        ))
    };
    if is_pytorch_file(&bytes) {
        bail_input!(
            "{} is a PyTorch file (torch.save), not safetensors; convert it first: \
             scripts/convert-weights {}",
            path.display(),
            path.display()
        );
    }
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(&e))?;
    let views = file.tensors();
    let tensors_crc =
        |covered| checksum(views.iter().map(|(n, v)| (n.as_str(), v.data())), covered);
    let intact = match (metadata.get(CRC_KEY), metadata.get(TENSORS_ONLY_CRC_KEY)) {
        (Some(stored), _) => *stored == tensors_crc(Some(&metadata)),
        (None, Some(stored)) => *stored == tensors_crc(None),
        (None, None) => true,
    };
    if !intact {
        return Err(bad(&"checksum mismatch: the file is corrupt"));
    }
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| Ok((name, Tensor::try_from(view).map_err(|e| bad(&e))?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((tensors, metadata))
}

/// The string metadata of a safetensors file, read from its header alone (a checkpoint's
/// position without its 500 MB of tensors); not checked against the file's checksum.
pub fn read_header_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let bad = |what: &str| {
        input_error(format!(
            "{}: not a readable safetensors file: {what}",
            path.display()
        ))
    };
    let mut file = fs::File::open(path)
        .map_err(|e| input_error(format!("cannot read {}: {e}", path.display())))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| bad("no header"))?;
    // safetensors' own limit on a header's size
    let len = u64::from_le_bytes(len).min(100_000_000);
    let mut header = Vec::new();
    file.take(len)
        .read_to_end(&mut header)
        .map_err(|e| input_error(format!("cannot read {}: {e}", path.display())))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| bad("a damaged header"))?;
    Ok(header
        .get("__metadata__")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default())
}

/// Whether `bytes` are what `torch.save` writes: a zip archive (since PyTorch 1.6) or a bare
/// pickle (protocol 2 and later start with 0x80 and the protocol number).
fn is_pytorch_file(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || matches!(bytes, [0x80, 2..=5, ..])
}

/// Reads named tensors from a `.safetensors` or `.ot` file (by extension; anything else is
/// read as safetensors). Errors name the file.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail_input!("{}: no such file", path.display());
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("ot") => Tensor::load_multi(path).map_err(|e| {
            input_error(format!(
                "{}: not a readable weights file: {e}",
                path.display()
            ))
        }),
        _ => Ok(read_safetensors(path)?.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        let n = Tensor::from(3i64);
        save_tensors(&path, &[("a".into(), t.shallow_clone()), ("n".into(), n)]).unwrap();
        let back = read_tensors(&path).unwrap();
        let a = back.iter().find(|(k, _)| k == "a").unwrap();
        assert_eq!(a.1, t);
        fs::write(&path, b"garbage").unwrap();
        let err = read_tensors(&path).unwrap_err().to_string();
        assert!(err.contains("m.safetensors"), "{err}");
    }

    #[test]
    fn an_ot_file_is_read_as_libtorch_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ot");
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        Tensor::save_multi(&[("a", &t)], &path).unwrap();
        let back = read_tensors(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].0.as_str(), &back[0].1), ("a", &t));
    }

    #[test]
    fn a_pytorch_file_is_named_as_such_with_the_conversion_command() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("zip.pth", b"PK\x03\x04archive".to_vec()),
            ("pickle.pth", vec![0x80, 2, b'}', b'q']),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            let err = read_tensors(&path).unwrap_err().to_string();
            assert!(
                err.contains("scripts/convert-weights") && err.contains(name),
                "{err}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_in_tensor_data_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let t = Tensor::arange(1000, (tch::Kind::Float, Device::Cpu));
        save_tensors(&path, &[("w".into(), t)]).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let err = read_tensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("m.safetensors"),
            "{err}"
        );
    }

    /// A checkpoint's position is metadata: a flipped bit there (`"batch":2` -> `3`) is caught
    /// like one in a weight. Files written before the metadata was covered still load.
    #[test]
    fn metadata_is_covered_and_old_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let t = Tensor::arange(10, (tch::Kind::Float, Device::Cpu));
        let meta = HashMap::from([("state".to_string(), r#"{"batch":2}"#.to_string())]);
        save_safetensors(&path, &[("w".into(), t.copy())], Some(meta)).unwrap();
        let bytes = fs::read(&path).unwrap();
        let at = bytes.windows(9).position(|w| w == br#"batch\":2"#).unwrap();
        let mut flipped = bytes.clone();
        flipped[at + 8] = b'3';
        fs::write(&path, &flipped).unwrap();
        let err = read_safetensors(&path).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");

        let old = dir.path().join("old.safetensors");
        let data = to_bytes(&t).unwrap();
        let crc = checksum(std::iter::once(("w", data.data.as_slice())), None);
        let meta = HashMap::from([(TENSORS_ONLY_CRC_KEY.to_string(), crc)]);
        safetensors::tensor::serialize_to_file([("w", &data)], &Some(meta), &old).unwrap();
        let (tensors, _) = read_safetensors(&old).unwrap();
        assert!(tensors[0].1.equal(&t));
    }
}
