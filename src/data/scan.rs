//! Finding the images: a class-folder tree read exactly as torchvision's `ImageFolder` reads it,
//! and the official Tiny ImageNet `val/` set labelled through `val_annotations.txt`.

use std::collections::HashMap;
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

/// Where the train tree and the official val set of a `--data` directory are.
#[derive(Debug, Clone)]
pub struct DataRoot {
    pub train: PathBuf,
    /// `val/` of a Tiny ImageNet root; `None` when `--data` is a bare class-folder tree.
    pub val: Option<PathBuf>,
    /// `words.txt` (wnid, tab, human names) of a Tiny ImageNet root, when there is one.
    pub words: Option<PathBuf>,
}

impl DataRoot {
    /// A Tiny ImageNet root has `train/`; any other directory is itself the class-folder tree.
    /// The usual wrong turns (the zip, the `val/` or `train/` folder, the folder above the
    /// dataset) are errors that name the right path.
    pub fn locate(dir: &Path) -> Result<DataRoot> {
        check_not_a_wrong_turn(dir)?;
        let train = dir.join("train");
        if train.is_dir() {
            let val = dir.join("val");
            let words = dir.join("words.txt");
            Ok(DataRoot {
                train,
                val: val.is_dir().then_some(val),
                words: words.is_file().then_some(words),
            })
        } else {
            Ok(DataRoot {
                train: dir.to_path_buf(),
                val: None,
                words: None,
            })
        }
    }

    /// Human names of `classes` from `words.txt` (its first name for each wnid); the class
    /// folder's own name where there is no such file or line (users' own datasets).
    pub fn class_names(&self, classes: &[String]) -> Result<Vec<String>> {
        let mut names = HashMap::new();
        if let Some(path) = &self.words {
            let text = fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            for line in text.lines() {
                if let Some((wnid, rest)) = line.split_once('\t') {
                    let first = rest.split(',').next().unwrap_or("").trim();
                    names.insert(wnid.trim().to_string(), first.to_string());
                }
            }
        }
        Ok(classes
            .iter()
            .map(|c| names.get(c).cloned().unwrap_or_else(|| c.clone()))
            .collect())
    }
}

/// The human name of `class` where it has one besides its folder name, else "" (class
/// folders without a `words.txt` are named by the folder).
pub fn own_name<'a>(class: &str, name: &'a str) -> &'a str {
    if name == class {
        ""
    } else {
        name
    }
}

/// A class as printed: its folder name (a wnid) and its human name, or the folder name once.
pub fn shown_class(class: &str, name: &str) -> String {
    match own_name(class, name) {
        "" => class.to_string(),
        name => format!("{class}  {name}"),
    }
}

/// Errors naming the right `--data` for paths people pass by mistake.
fn check_not_a_wrong_turn(dir: &Path) -> Result<()> {
    let shown = dir.display();
    if dir.is_file()
        && dir
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        bail_input!(
            "--data {shown} is the downloaded archive; unpack it (`vggtiny download --to DIR` \
             does) and pass the folder with train/ and val/"
        );
    }
    if !dir.is_dir() {
        bail_input!("--data {shown}: not a directory");
    }
    if dir.join("val_annotations.txt").is_file() && !dir.join("train").is_dir() {
        let root = dir.parent().unwrap_or(dir);
        bail_input!(
            "--data {shown} is the val/ folder of a Tiny ImageNet root; pass the root, the \
             folder with train/ and val/: --data {}",
            root.display()
        );
    }
    // by the real name: `--data .` from inside val/, or a link to it, is val/ too
    let parent = dir
        .canonicalize()
        .ok()
        .filter(|d| d.ends_with("val"))
        .and_then(|d| d.parent().map(Path::to_path_buf));
    if let Some(root) = parent.filter(|p| p.join("train").is_dir()) {
        bail_input!(
            "--data {shown} is the val/ folder of a dataset with train/ and val/; pass the \
             root: --data {}",
            root.display()
        );
    }
    if !dir.join("train").is_dir() {
        let inner = fs::read_dir(dir)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.join("train").is_dir() && p.join("val").is_dir());
        if let Some(inner) = inner {
            bail_input!(
                "--data {shown} holds a dataset one level down; pass --data {}",
                inner.display()
            );
        }
    }
    Ok(())
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

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

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
    fn wrong_turns_name_the_right_data_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tiny-imagenet-200");
        touch(&root.join("train/n01/images/a.JPEG"));
        touch(&root.join("val/images/val_0.JPEG"));
        fs::write(
            root.join("val/val_annotations.txt"),
            "val_0.JPEG\tn01\t0\t0\t1\t1\n",
        )
        .unwrap();
        let err = |p: &Path| DataRoot::locate(p).unwrap_err().to_string();
        let val = err(&root.join("val"));
        assert!(
            val.contains("val/ folder") && val.contains(&root.display().to_string()),
            "{val}"
        );
        let above = err(dir.path());
        assert!(
            above.contains(&format!("--data {}", root.display())),
            "{above}"
        );
        let zip = dir.path().join("tiny-imagenet-200.zip");
        fs::write(&zip, b"PK").unwrap();
        assert!(err(&zip).contains("unpack it"), "{}", err(&zip));
        assert!(DataRoot::locate(&root).unwrap().val.is_some());
        // the train/ folder itself is a valid class-folder tree
        assert!(DataRoot::locate(&root.join("train")).unwrap().val.is_none());
        // a val/ of class folders beside train/ is not one
        let folders = dir.path().join("photos");
        touch(&folders.join("train/ants/0.jpg"));
        touch(&folders.join("val/ants/1.jpg"));
        let val = err(&folders.join("val"));
        assert!(
            val.contains("val/ folder") && val.contains(&format!("--data {}", folders.display())),
            "{val}"
        );
    }

    #[test]
    fn paths_near_the_wrong_turns_get_their_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        // a plain file is not a directory, and not the archive
        let notes = dir.path().join("notes.txt");
        fs::write(&notes, b"x").unwrap();
        let err = DataRoot::locate(&notes).unwrap_err().to_string();
        assert!(err.ends_with("notes.txt: not a directory"), "{err}");
        // a root that also holds a val_annotations.txt is still a root
        let root = dir.path().join("root");
        touch(&root.join("train/n01/a.JPEG"));
        touch(&root.join("val_annotations.txt"));
        assert_eq!(DataRoot::locate(&root).unwrap().train, root.join("train"));
        // a class folder that holds a train/ folder, without val/, is a class folder
        let photos = dir.path().join("photos");
        touch(&photos.join("ants/train/0.jpg"));
        assert_eq!(DataRoot::locate(&photos).unwrap().train, photos);
    }

    #[test]
    fn class_names_are_the_first_words_or_the_folder_name() {
        let dir = tempfile::tempdir().unwrap();
        let words = dir.path().join("words.txt");
        fs::write(
            &words,
            "n01\tgoldfish, Carassius auratus\nn02 \t great white shark\n",
        )
        .unwrap();
        let root = DataRoot {
            train: dir.path().join("train"),
            val: None,
            words: Some(words),
        };
        let classes = ["n01", "n02", "ants"].map(String::from);
        let names = root.class_names(&classes).unwrap();
        assert_eq!(names, ["goldfish", "great white shark", "ants"]);
        let bare = DataRoot {
            words: None,
            ..root
        };
        assert_eq!(bare.class_names(&classes).unwrap(), classes);
    }

    #[test]
    fn a_class_named_by_its_folder_is_shown_once() {
        assert_eq!(shown_class("n01443537", "goldfish"), "n01443537  goldfish");
        assert_eq!(shown_class("ants", "ants"), "ants");
        assert_eq!(shown_class("ants", ""), "ants");
    }

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
    fn empty_class_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("a/x.jpg"));
        touch(&dir.path().join("b/notes.txt"));
        let err = scan_image_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("classes b"), "{err}");
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
