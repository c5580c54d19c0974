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

/// The modules of `crates/hub/src` (top level: a folder is one module) and the others each
/// uses, outside its tests.
fn hub_module_uses() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = root().join("crates/hub/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses: std::collections::BTreeMap<_, std::collections::BTreeSet<_>> = Default::default();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let entry = uses.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                entry.insert(name);
            }
        }
    }
    uses
}

#[test]
fn the_hubs_modules_use_each_other_without_cycles() {
    let uses = hub_module_uses();
    assert!(
        uses.contains_key("service") && uses.contains_key("store"),
        "{uses:?}"
    );
    // Depth-first; a module met again while still on the path closes a cycle.
    fn visit<'a>(
        m: &'a str,
        uses: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("a cycle: {}", [&path[at..], &[m]].concat().join(" -> "));
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for next in uses.get(m).into_iter().flatten() {
            visit(next, uses, path, done);
        }
        path.pop();
    }
    let mut done = Default::default();
    for m in uses.keys() {
        visit(m, &uses, &mut Vec::new(), &mut done);
    }
    // The store and the records stand alone: they know nothing of the service or the faces
    // (`pg` is the database connection both may keep things in; `version` a plain value both
    // name; `hidden` the `--hide` patterns, which a store's listing applies to links).
    for base in ["store", "records", "pg", "version", "hidden"] {
        let theirs = &uses[base];
        assert!(
            theirs.iter().all(|m| m == "error"
                || (m == "pg" && base != "pg")
                || (m == "version" && base != "version")
                || (m == "hidden" && base == "store")),
            "{base} uses {theirs:?}"
        );
    }
}
