//! Where the parts of a `--data` directory are: a Tiny ImageNet root (train/, val/, words.txt)
//! or a bare class-folder tree; and the paths people pass by mistake, refused with the right one.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::bail_input;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::scan::touch;

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
}
