//! Finding the images, one part per file: `class_folders` reads a class-folder tree exactly as
//! torchvision's `ImageFolder` reads it (and defines `Sample`, one labelled image file); `val`
//! labels the official Tiny ImageNet `val/` set through `val_annotations.txt`; `root` says
//! where the parts of a `--data` directory are; `class_names` gives the classes' human names.
//! The rest of the crate imports them from here.

mod class_folders;
mod class_names;
mod root;
mod val;

pub use class_folders::{find_classes, scan_image_folder, ImageList, Sample, IMAGE_EXTENSIONS};
pub use class_names::{own_name, shown_class};
pub use root::DataRoot;
pub use val::{parse_val_annotations, scan_val};

/// A one-byte file at `path`, its folders made: the trees the tests scan.
#[cfg(test)]
fn touch(path: &std::path::Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"x").unwrap();
}
