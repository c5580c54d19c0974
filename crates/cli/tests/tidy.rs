//! Keeps the map true: every file ARCHITECTURE.md names exists in the crate it is listed under,
//! and every module of every crate opens with a `//!` doc saying what it is for.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_says_what_it_is_for() {
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let undocumented: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(undocumented.is_empty(), "no //! doc: {undocumented:#?}");
}

#[test]
fn every_file_the_map_names_exists() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut krate: Option<PathBuf> = None;
    let mut missing = Vec::new();
    for line in map.lines() {
        if let Some(h) = line.strip_prefix("### `") {
            let name = h.split('`').next().unwrap();
            krate = Some(root().join(name));
            assert!(root().join(name).is_dir(), "no folder {name}");
            continue;
        }
        if line.starts_with("## ") {
            krate = None;
        }
        let Some(dir) = &krate else { continue };
        for (i, token) in line.split('`').enumerate() {
            let named = i % 2 == 1
                && (token.ends_with(".rs") || token.ends_with('/'))
                && !token.contains(' ')
                && !token.contains('*')
                && !token.starts_with('/')
                && !token.to_uppercase().starts_with("STATE");
            if !named {
                continue;
            }
            if token.contains(':') {
                continue;
            }
            // A path from the top of the repository, or a file of this crate, or of another one
            // the text refers to.
            if token.starts_with("crates/") || token.starts_with("fuzz/") {
                if !root().join(token).exists() {
                    missing.push(token.to_owned());
                }
                continue;
            }
            let mut all = Vec::new();
            rust_files(dir, &mut all);
            if !all.iter().any(|f| f.ends_with(token)) && token.ends_with(".rs") {
                rust_files(&root().join("crates"), &mut all);
            }
            let found = if token.ends_with('/') {
                dir.join("src").join(token).is_dir()
                    || dir.join(token).is_dir()
                    || all.iter().any(|f| {
                        f.parent()
                            .is_some_and(|p| p.ends_with(token.trim_end_matches('/')))
                    })
            } else {
                all.iter().any(|f| f.ends_with(token))
            };
            if !found {
                missing.push(format!("{}: {token}", dir.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named in ARCHITECTURE.md but missing: {missing:#?}"
    );
}
