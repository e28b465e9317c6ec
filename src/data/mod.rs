//! Everything between image files on disk and normalised batches on the training device.

pub mod augment;
pub mod augment_params;
pub mod cache;
pub mod decode;
pub mod decode_list;
pub mod decode_progress;
pub mod draw_key;
pub mod image_set;
pub mod load;
pub mod loader;
pub mod resize;
pub mod scan;
pub mod split;
pub mod synth;
pub mod synth_photos;

use anyhow::Result;

use crate::bail_input;

/// Fails unless `found` (the classes of `--data`) are exactly `expected` (those a checkpoint was
/// trained on), naming the first difference.
pub fn ensure_same_classes(expected: &[String], found: &[String], checkpoint: &str) -> Result<()> {
    if let Some(i) = (0..expected.len().min(found.len())).find(|&i| expected[i] != found[i]) {
        bail_input!(
            "class {i} of {checkpoint} is {}, but the --data tree has {} there",
            expected[i],
            found[i]
        );
    }
    if expected.len() != found.len() {
        bail_input!(
            "{checkpoint} was trained on {} classes, but the --data tree has {}",
            expected.len(),
            found.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_mismatch_names_the_first_difference() {
        let a: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let b: Vec<String> = ["n1", "n4", "n3"].map(String::from).to_vec();
        assert!(ensure_same_classes(&a, &a, "run").is_ok());
        let err = ensure_same_classes(&a, &b, "run").unwrap_err().to_string();
        assert!(err.contains("class 1") && err.contains("n4"), "{err}");
        let err = ensure_same_classes(&a, &a[..2], "run")
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 classes"), "{err}");
    }
}
