//! Human class names: the first name of each wnid in a root's `words.txt`, and a class as
//! printed (its folder name, and its human name where it has one).

use std::collections::HashMap;
use std::fs;

use anyhow::{Context, Result};

use super::root::DataRoot;

impl DataRoot {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
