//! A class-folder tree read exactly as torchvision's `ImageFolder` reads it: the classes
//! (sorted sub-folders), the image files of each (a sorted walk, links followed where they stay
//! inside the class), and the labelled list they make.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bail_input;

/// `torchvision.datasets.folder.IMG_EXTENSIONS`, matched case-insensitively at the end of the path.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

/// One labelled image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

/// A labelled image list with its class names (index = label).
#[derive(Debug, Clone)]
pub struct ImageList {
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
}

fn has_image_extension(path: &Path) -> bool {
    let lower = String::from_utf8_lossy(path.as_os_str().as_bytes()).to_lowercase();
    IMAGE_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

/// The class names: sorted names of the sub-directories (symlinks followed), as `find_classes`.
pub fn find_classes(root: &Path) -> Result<Vec<String>> {
    let entries =
        fs::read_dir(root).with_context(|| format!("cannot read directory {}", root.display()))?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read directory {}", root.display()))?;
        if entry.path().is_dir() {
            let name = entry.file_name();
            match name.to_str() {
                Some(name) => classes.push(name.to_string()),
                None => bail_input!(
                    "class folder {} in {} is not valid UTF-8",
                    name.to_string_lossy(),
                    root.display()
                ),
            }
        }
    }
    classes.sort();
    if classes.is_empty() {
        bail_input!("no class folders found in {}", root.display());
    }
    Ok(classes)
}

/// Every directory below the class folder `dir` of the tree `tree` (itself included) with its
/// non-directory entries, in the order `sorted(os.walk(dir, followlinks=True))` gives: by path
/// string, file names sorted within.
///
/// Links are followed as there, except to a folder that holds this class folder (a loop:
/// os.walk would follow it until the path got too long) or into another class of `tree`
/// (whose images would be labelled this class): those are left out with a warning.
fn walk_sorted(dir: &Path, tree: &Path) -> Result<Vec<(PathBuf, Vec<PathBuf>)>> {
    let resolve =
        |p: &Path| fs::canonicalize(p).with_context(|| format!("cannot resolve {}", p.display()));
    let (class, tree) = (resolve(dir)?, resolve(tree)?);
    let mut out = Vec::new();
    // Each pending directory carries the canonical paths of its ancestors: a link back to one
    // of them inside the class is a loop, and stops here.
    let mut pending = vec![(dir.to_path_buf(), Vec::new())];
    while let Some((current, mut ancestors)) = pending.pop() {
        let canonical = resolve(&current)?;
        if ancestors.contains(&canonical) {
            continue;
        }
        let outside = class.starts_with(&canonical) && canonical != class
            || canonical.starts_with(&tree) && !canonical.starts_with(&class);
        if outside {
            eprintln!(
                "warning: {} leads to {}, outside its class folder {}: not followed",
                current.display(),
                canonical.display(),
                dir.display()
            );
            continue;
        }
        ancestors.push(canonical);
        let mut files = Vec::new();
        let entries = fs::read_dir(&current)
            .with_context(|| format!("cannot read directory {}", current.display()))?;
        for entry in entries {
            let entry =
                entry.with_context(|| format!("cannot read directory {}", current.display()))?;
            let path = entry.path();
            if path.is_dir() {
                pending.push((path, ancestors.clone()));
            } else {
                files.push(path);
            }
        }
        files.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        out.push((current, files));
    }
    out.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
    Ok(out)
}

/// Scans a class-folder tree the way `torchvision.datasets.ImageFolder(root)` does: same classes,
/// same labels, same sample order. A class without any image file is an error, as there.
pub fn scan_image_folder(root: &Path) -> Result<ImageList> {
    let classes = find_classes(root)?;
    let mut samples = Vec::new();
    let mut empty = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let before = samples.len();
        for (_, files) in walk_sorted(&root.join(class), root)? {
            samples.extend(
                files
                    .into_iter()
                    .filter(|path| has_image_extension(path))
                    .map(|path| Sample { path, label }),
            );
        }
        if samples.len() == before {
            empty.push(class.as_str());
        }
    }
    if !empty.is_empty() {
        bail_input!(
            "no image files for the classes {} in {} (extensions looked for: {})",
            empty.join(", "),
            root.display(),
            IMAGE_EXTENSIONS.join(" ")
        );
    }
    Ok(ImageList { classes, samples })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::scan::touch;

    #[test]
    fn image_folder_order_classes_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("b/images/b_1.JPEG"));
        touch(&root.join("b/images/b_0.jpeg"));
        touch(&root.join("b/b_boxes.txt"));
        touch(&root.join("b/images-x/z.png"));
        touch(&root.join("b/images/sub/a.Png"));
        touch(&root.join("a/.DS_Store"));
        touch(&root.join("a/x.webp"));
        touch(&root.join("stray.jpg"));
        let list = scan_image_folder(root).unwrap();
        assert_eq!(list.classes, vec!["a", "b"]);
        let names: Vec<String> = list
            .samples
            .iter()
            .map(|s| {
                s.path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        // os.walk roots sorted as strings: "b/images-x" < "b/images" + "/..." because '-' < '/'.
        assert_eq!(
            names,
            vec![
                "a/x.webp",
                "b/images/b_0.jpeg",
                "b/images/b_1.JPEG",
                "b/images-x/z.png",
                "b/images/sub/a.Png"
            ]
        );
        assert_eq!(
            list.samples.iter().map(|s| s.label).collect::<Vec<_>>(),
            vec![0, 1, 1, 1, 1]
        );
    }

    #[test]
    fn links_out_of_a_class_folder_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("train");
        touch(&root.join("a/0.jpg"));
        touch(&root.join("b/1.jpg"));
        let elsewhere = dir.path().join("more");
        touch(&elsewhere.join("2.jpg"));
        let link = |target: &Path, at: &str| std::os::unix::fs::symlink(target, root.join(at));
        link(Path::new(".."), "a/up").unwrap();
        link(&root.join("b"), "a/b").unwrap();
        link(&elsewhere, "a/more").unwrap();
        link(Path::new("."), "a/here").unwrap();
        let list = scan_image_folder(&root).unwrap();
        let names: Vec<_> = list
            .samples
            .iter()
            .map(|s| (s.path.strip_prefix(&root).unwrap().to_path_buf(), s.label))
            .collect();
        // a folder outside the tree is followed, as ImageFolder follows it; a loop and
        // another class are not
        let want = [("a/0.jpg", 0), ("a/more/2.jpg", 0), ("b/1.jpg", 1)];
        assert_eq!(names, want.map(|(p, l)| (PathBuf::from(p), l)));
    }

    #[test]
    fn empty_class_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("a/x.jpg"));
        touch(&dir.path().join("b/notes.txt"));
        let err = scan_image_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("classes b"), "{err}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any tree of oddly named files and folders: the scan finds classes and samples or
            /// says why not, never panics; what it finds exists, is an image by name, and is
            /// labelled with one of its classes.
            #[test]
            fn scanning_arbitrary_trees_never_panics(
                entries in proptest::collection::vec(
                    ("[a-zA-Z0-9 ._\\-é]{1,10}", proptest::option::of("[a-zA-Z0-9 ._\\-é]{1,10}"), "(\\.(jpg|JPEG|png|txt|Tiff|webp))?", any::<bool>()),
                    0..12,
                ),
            ) {
                let dir = tempfile::tempdir().unwrap();
                for (class, sub, ext, is_dir) in &entries {
                    let class_dir = dir.path().join(class);
                    let parent = match sub {
                        Some(sub) => class_dir.join(sub),
                        None => class_dir,
                    };
                    if fs::create_dir_all(&parent).is_err() {
                        continue; // a name taken by a file: the tree is what it is
                    }
                    let leaf = parent.join(format!("f{ext}"));
                    let _ = if *is_dir { fs::create_dir_all(&leaf) } else { fs::write(&leaf, b"x") };
                }
                if let Ok(list) = scan_image_folder(dir.path()) {
                    prop_assert!(!list.classes.is_empty());
                    for sample in &list.samples {
                        prop_assert!(sample.path.is_file());
                        prop_assert!(has_image_extension(&sample.path));
                        prop_assert!(sample.label < list.classes.len());
                    }
                }
            }
        }
    }
}
