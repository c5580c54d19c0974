//! A folder sent or fetched whole, made to hold what its source holds: the folders a `put`
//! finds empty are made on the hub, and with `--delete` what the source lacks is deleted on
//! the other side (as `rsync --delete` and `rclone sync` do), on the hub or here.
//!
//! Which names go is decided without I/O ([`extra`]): a name goes when a folder on its way
//! is missing from the source (the topmost such folder goes whole, with one request), or
//! when it is a file the source lacks. Names the source left out on purpose (links, special
//! files) are never deleted. Nothing is deleted after a failure: a file that could not be
//! read or sent would otherwise look missing from the source.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

/// What the source holds, by the other side's names (`top/sub/a.txt`, folders without `/`).
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    pub files: HashSet<String>,
    pub folders: HashSet<String>,
    /// Names left out of the transfer on purpose: neither they nor what is beneath them go.
    pub kept: HashSet<String>,
}

impl Wanted {
    /// Each folder on the way to each file and folder, down to `top`'s own.
    pub fn with_ancestors(mut self) -> Self {
        let names = self.files.iter().chain(&self.folders);
        let ancestors: Vec<String> = names
            .flat_map(|n| folders_above(n))
            .map(str::to_owned)
            .collect();
        self.folders.extend(ancestors);
        self
    }
}

/// The folders `name` is in, nearest first: `a/b/c` gives `a/b`, then `a`.
fn folders_above(name: &str) -> impl Iterator<Item = &str> {
    name.rmatch_indices('/').map(move |(i, _)| &name[..i])
}

/// What to delete: whole folders (with everything in them), then single files.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Extra {
    pub folders: Vec<String>,
    pub files: Vec<String>,
}

/// What of `present` (names below `place`, which ends in `/`; an empty folder as `NAME/`)
/// the source does not hold: each missing folder once (the topmost), each missing file
/// whose folders the source holds. `place` itself is never deleted.
pub(crate) fn extra<'a>(
    place: &str,
    present: impl IntoIterator<Item = &'a str>,
    wanted: &Wanted,
) -> Extra {
    let mut folders = BTreeSet::new();
    let mut files = Vec::new();
    for name in present {
        let Some(rel) = name.strip_prefix(place) else {
            continue;
        };
        let mut gone = None;
        for (i, _) in rel.match_indices('/') {
            let folder = &name[..place.len() + i];
            if wanted.kept.contains(folder) {
                break;
            }
            if !wanted.folders.contains(folder) {
                gone = Some(folder);
                break;
            }
        }
        match gone {
            Some(folder) => {
                folders.insert(folder.to_owned());
            }
            None if name.ends_with('/') || rel.is_empty() => {}
            None => {
                let kept = wanted.kept.contains(name) || under_kept(name, &wanted.kept);
                if !kept && !wanted.files.contains(name) {
                    files.push(name.to_owned());
                }
            }
        }
    }
    Extra {
        folders: folders.into_iter().collect(),
        files,
    }
}

fn under_kept(name: &str, kept: &HashSet<String>) -> bool {
    folders_above(name).any(|f| kept.contains(f))
}

/// The folders of `dirs` (a `put`'s local folders, by their names on the hub) that no file
/// of `files` and no other folder is in: to be made on the hub, where an empty folder would
/// otherwise not appear.
pub(crate) fn empty_folders<'a>(
    dirs: &'a [String],
    files: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let mut holding = HashSet::new();
    let names = files.into_iter().chain(dirs.iter().map(String::as_str));
    for name in names {
        // Once a folder is known to hold something, so are those above it.
        for folder in folders_above(name) {
            if !holding.insert(folder) {
                break;
            }
        }
    }
    dirs.iter()
        .map(String::as_str)
        .filter(|d| !holding.contains(d))
        .collect()
}

/// `path`'s path from `dir` (which holds it), as a hub names it (`sub/a.txt`); `None` when
/// a part is not UTF-8.
pub(crate) fn name_below(dir: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(dir).expect("below the folder walked");
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|parts| parts.join("/"))
}

/// A local entry below a downloaded folder that the hub does not hold.
#[derive(Debug)]
pub(crate) struct LocalExtra {
    pub path: std::path::PathBuf,
    pub folder: bool,
}

/// What is below local folder `dir` (the download of hub folder `name`, a name without `/`)
/// that `wanted` does not hold: folders (the topmost only) and everything else (files,
/// links, special files), never following a link. A name that is not UTF-8 cannot be on the
/// hub, so it goes.
pub(crate) fn extra_here(dir: &Path, name: &str, wanted: &Wanted) -> Vec<LocalExtra> {
    let mut out = Vec::new();
    let mut walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walker.next() {
        let Ok(entry) = entry else { continue };
        let remote = name_below(dir, entry.path()).map(|rel| format!("{name}/{rel}"));
        let folder = entry.file_type().is_dir();
        let wanted = match (&remote, folder) {
            (Some(r), true) => wanted.folders.contains(r),
            (Some(r), false) => wanted.files.contains(r),
            (None, _) => false,
        };
        if wanted {
            continue;
        }
        if folder {
            walker.skip_current_dir();
        }
        out.push(LocalExtra {
            path: entry.into_path(),
            folder,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn wanted(files: &[&str], folders: &[&str], kept: &[&str]) -> Wanted {
        Wanted {
            files: set(files),
            folders: set(folders),
            kept: set(kept),
        }
        .with_ancestors()
    }

    #[test]
    fn a_missing_folder_goes_whole_and_a_missing_file_alone() {
        let w = wanted(&["t/p/a.txt", "t/p/keep/b.txt"], &["t/p/empty"], &[]);
        let present = [
            "t/p/a.txt",
            "t/p/old.txt",
            "t/p/keep/b.txt",
            "t/p/keep/c.txt",
            "t/p/gone/x/1.txt",
            "t/p/gone/2.txt",
            "t/p/gone-empty/",
            "t/p/empty/",
            "t/other.txt",
        ];
        assert_eq!(
            extra("t/p/", present, &w),
            Extra {
                folders: vec!["t/p/gone".into(), "t/p/gone-empty".into()],
                files: vec!["t/p/old.txt".into(), "t/p/keep/c.txt".into()],
            }
        );
    }

    #[test]
    fn what_was_left_out_on_purpose_stays() {
        let w = wanted(&["p/a.txt"], &[], &["p/link", "p/fifo"]);
        let present = [
            "p/a.txt",
            "p/link",
            "p/link/inside.txt",
            "p/fifo",
            "p/b.txt",
        ];
        assert_eq!(
            extra("p/", present, &w),
            Extra {
                folders: vec![],
                files: vec!["p/b.txt".into()],
            }
        );
    }

    #[test]
    fn a_source_holding_everything_deletes_nothing() {
        let w = wanted(&["p/a", "p/s/b"], &["p/e"], &[]);
        assert_eq!(extra("p/", ["p/a", "p/s/b", "p/e/"], &w), Extra::default());
    }

    #[test]
    fn only_folders_holding_nothing_are_made() {
        let dirs: Vec<String> = ["p", "p/a", "p/a/b", "p/c", "p/d", "p/d/e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(empty_folders(&dirs, ["p/c/x.txt"]), ["p/a/b", "p/d/e"]);
        assert_eq!(empty_folders(&dirs[..1], []), ["p"]);
    }

    /// A file tree of a few short names, as paths below `p/`.
    fn tree() -> impl proptest::strategy::Strategy<Value = BTreeSet<String>> {
        let part = proptest::sample::select(vec!["a", "b", "c"]);
        let path = proptest::collection::vec(part, 1..4).prop_map(|parts| parts.join("/"));
        proptest::collection::btree_set(path, 0..12)
            .prop_map(|paths| paths.into_iter().map(|p| format!("p/{p}")).collect())
    }

    /// A tree as a store holds it: a name may not be both a file and a folder.
    fn consistent(files: BTreeSet<String>) -> BTreeSet<String> {
        let folders: HashSet<String> = Wanted {
            files: files.iter().cloned().collect(),
            ..Wanted::default()
        }
        .with_ancestors()
        .folders;
        files.into_iter().filter(|f| !folders.contains(f)).collect()
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the two trees, deleting what [`extra`] says leaves the other side
        /// holding only files the source holds, and every such file it held.
        #[test]
        fn deleting_the_extra_leaves_exactly_what_the_source_holds(
            source in tree().prop_map(consistent),
            other in tree().prop_map(consistent),
        ) {
            let wanted = Wanted {
                files: source.iter().cloned().collect(),
                ..Wanted::default()
            }
            .with_ancestors();
            let gone = extra("p/", other.iter().map(String::as_str), &wanted);
            let left: BTreeSet<&String> = other
                .iter()
                .filter(|f| !gone.files.contains(f))
                .filter(|f| !gone.folders.iter().any(|d| f.starts_with(&format!("{d}/"))))
                .collect();
            for f in &left {
                prop_assert!(source.contains(*f), "{f} left, not in the source");
            }
            for f in other.iter().filter(|f| source.contains(*f)) {
                prop_assert!(left.contains(f), "{f} deleted, yet in the source");
            }
        }
    }

    #[test]
    fn local_extras_are_found_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        for d in ["s", "gone/deep", "keep"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["a", "s/b", "s/old", "gone/deep/x", "keep/y"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), "p").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("s/link")).unwrap();
        let w = wanted(&["p/a", "p/s/b", "p/keep/y"], &[], &[]);
        let found: Vec<(String, bool)> = extra_here(&root, "p", &w)
            .into_iter()
            .map(|e| {
                let rel = e.path.strip_prefix(&root).unwrap().display().to_string();
                (rel, e.folder)
            })
            .collect();
        assert_eq!(
            found,
            [
                ("gone".to_owned(), true),
                ("s/link".to_owned(), false),
                ("s/old".to_owned(), false),
            ]
        );
    }
}
