//! The official val set of a root, labelled with the training classes: Tiny ImageNet's
//! `val/images/` through `val_annotations.txt`, or a class-folder tree.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::Result;

use super::class_folders::{scan_image_folder, Sample};
use crate::bail_input;

/// Each class name's label: its position in `classes`.
fn class_index(classes: &[String]) -> HashMap<&str, usize> {
    classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect()
}

/// Parses `val_annotations.txt` (`file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1` per line) into samples
/// under `images_dir`, labelled by position of the wnid in `classes`. Errors name file and line.
pub fn parse_val_annotations(
    text: &str,
    source: &Path,
    images_dir: &Path,
    classes: &[String],
) -> Result<Vec<Sample>> {
    let index = class_index(classes);
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", source.display(), number + 1);
        let mut fields = line.split('\t');
        let (file, wnid) = match (fields.next(), fields.next()) {
            (Some(file), Some(wnid)) if !file.is_empty() && !wnid.is_empty() => (file, wnid),
            _ => bail_input!("{}: expected `file<TAB>wnid<TAB>...`, found {line:?}", at()),
        };
        if file.contains('/') || file == "." || file == ".." {
            bail_input!("{}: file name {file:?} is not a plain file name", at());
        }
        let Some(&label) = index.get(wnid) else {
            bail_input!(
                "{}: class {wnid:?} is not one of the {} training classes",
                at(),
                classes.len()
            );
        };
        samples.push(Sample {
            path: images_dir.join(file),
            label,
        });
    }
    if samples.is_empty() {
        bail_input!("{}: no annotations", source.display());
    }
    Ok(samples)
}

/// The val set of a root, labelled with the training `classes`: Tiny ImageNet's `val/images/*`
/// with `val/val_annotations.txt`, or, where there is no such file, a class-folder tree read as
/// `ImageFolder` reads it, each folder labelled by its name among the training classes (a
/// training class may be missing from val; a val class training lacks is an error).
pub fn scan_val(val_dir: &Path, classes: &[String]) -> Result<Vec<Sample>> {
    let annotations = val_dir.join("val_annotations.txt");
    if !annotations.exists() && has_subdirectories(val_dir) && !val_dir.join("images").is_dir() {
        return scan_class_folder_val(val_dir, classes);
    }
    let text = fs::read_to_string(&annotations).map_err(|e| {
        crate::error::input_error(format!(
            "cannot read {}: {e} (a val/ folder holds either images/ and that file, or one \
             folder of images per class)",
            annotations.display()
        ))
    })?;
    parse_val_annotations(&text, &annotations, &val_dir.join("images"), classes)
}

fn has_subdirectories(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.path().is_dir()))
        .unwrap_or(false)
}

/// A class-folder val tree, relabelled from its own class order to the training classes'.
fn scan_class_folder_val(val_dir: &Path, classes: &[String]) -> Result<Vec<Sample>> {
    let list = scan_image_folder(val_dir)?;
    let index = class_index(classes);
    let mut labels = Vec::with_capacity(list.classes.len());
    for class in &list.classes {
        match index.get(class.as_str()) {
            Some(&label) => labels.push(label),
            None => bail_input!(
                "{}: class {class:?} is not one of the {} training classes",
                val_dir.join(class).display(),
                classes.len()
            ),
        }
    }
    Ok(list
        .samples
        .into_iter()
        .map(|s| Sample {
            label: labels[s.label],
            ..s
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::scan::touch;

    #[test]
    fn class_folder_val_is_labelled_by_the_training_classes() {
        let dir = tempfile::tempdir().unwrap();
        let val = dir.path().join("val");
        touch(&val.join("c/2.png"));
        touch(&val.join("c/1.jpg"));
        touch(&val.join("a/x/0.JPEG"));
        let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let samples = scan_val(&val, &classes).unwrap();
        let got: Vec<(String, usize)> = samples
            .iter()
            .map(|s| {
                (
                    s.path.strip_prefix(&val).unwrap().display().to_string(),
                    s.label,
                )
            })
            .collect();
        let want = [("a/x/0.JPEG", 0), ("c/1.jpg", 2), ("c/2.png", 2)];
        assert_eq!(got, want.map(|(p, l)| (p.to_string(), l)));
        touch(&val.join("d/0.jpg"));
        let err = scan_val(&val, &classes).unwrap_err().to_string();
        assert!(
            err.contains("val/d") && err.contains("\"d\" is not one of the 3"),
            "{err}"
        );
        // Neither layout: the error names both.
        let empty = dir.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        let err = scan_val(&empty, &classes).unwrap_err().to_string();
        assert!(
            err.contains("val_annotations.txt") && err.contains("per class"),
            "{err}"
        );
    }

    #[test]
    fn val_annotations_errors_name_the_line() {
        let classes = vec!["n1".to_string(), "n2".to_string()];
        let src = Path::new("val_annotations.txt");
        let ok = parse_val_annotations(
            "v_0.JPEG\tn2\t0\t0\t1\t1\nv_1.JPEG\tn1\t0\t0\t1\t1\n",
            src,
            Path::new("img"),
            &classes,
        )
        .unwrap();
        assert_eq!(ok[0].label, 1);
        assert_eq!(ok[1].path, Path::new("img/v_1.JPEG"));
        let err = parse_val_annotations(
            "v_0.JPEG\tn1\nv_1.JPEG\tn9\n",
            src,
            Path::new("img"),
            &classes,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("val_annotations.txt:2"), "{err}");
        let err = parse_val_annotations("garbage\n", src, Path::new("img"), &classes)
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1"), "{err}");
    }

    #[test]
    fn val_annotations_need_a_plain_file_name_and_a_wnid() {
        let classes = vec!["n1".to_string()];
        let parse = |text: &str| {
            parse_val_annotations(text, Path::new("v.txt"), Path::new("img"), &classes)
                .unwrap_err()
                .to_string()
        };
        for line in ["\tn1\t0", "v_0.JPEG\t\t0"] {
            assert!(
                parse(line).contains("expected `file<TAB>wnid<TAB>...`"),
                "{line:?}"
            );
        }
        for file in ["../v_0.JPEG", "sub/v_0.JPEG", ".", ".."] {
            let err = parse(&format!("{file}\tn1\t0"));
            assert!(err.contains("is not a plain file name"), "{file}: {err}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any text, any class list: the parser answers with samples or an error, never a
            /// panic; every sample it returns is well formed.
            #[test]
            fn val_annotations_never_panic(
                text in ".{0,400}",
                lines in proptest::collection::vec(("[a-zA-Z0-9_. /]{0,12}", "n[0-9]{0,3}", "[\\t 0-9a-z-]{0,12}"), 0..8),
                classes in proptest::collection::vec("n[0-9]{0,3}", 0..5),
            ) {
                let structured: String = lines
                    .iter()
                    .map(|(f, w, rest)| format!("{f}\t{w}\t{rest}\n"))
                    .collect();
                for input in [text.as_str(), structured.as_str()] {
                    if let Ok(samples) = parse_val_annotations(input, Path::new("v.txt"), Path::new("img"), &classes) {
                        prop_assert!(!samples.is_empty());
                        for sample in samples {
                            prop_assert!(sample.label < classes.len());
                            prop_assert!(sample.path.starts_with("img"));
                        }
                    }
                }
            }
        }
    }
}
