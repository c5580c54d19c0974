//! Names the hub keeps out of sight and reach (`serve --hide`): a file or folder whose own
//! name, or the name of a folder it is in, matches one of the patterns is listed, found,
//! zipped, read, written, moved and deleted by no client, on any face, admin included. The
//! patterns match one name at a time (`.*`, `*.key`, `node_modules`), never a path, so a
//! folder moved elsewhere keeps what it hides hidden.

use crate::error::HubError;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The patterns of `--hide`, compiled.
#[derive(Debug, Default)]
pub struct Hidden {
    set: Option<GlobSet>,
    patterns: Vec<String>,
}

impl Hidden {
    /// Compiles the patterns: shell wildcards (`*`, `?`, `[…]`) for one name, without `/`.
    pub fn new(patterns: &[String]) -> Result<Self, HubError> {
        if patterns.is_empty() {
            return Ok(Self::default());
        }
        let mut set = GlobSetBuilder::new();
        for p in patterns {
            if p.is_empty() || p.contains('/') {
                return Err(HubError::BadRequest(
                    "a pattern matches one name (a file's or a folder's), so it holds no \"/\" \
                     (e.g. '.*', '*.key' or 'node_modules')"
                        .into(),
                ));
            }
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| HubError::BadRequest(format!("not a pattern: {e}")))?;
            set.add(glob);
        }
        let set = set
            .build()
            .map_err(|e| HubError::BadRequest(format!("not a pattern: {e}")))?;
        Ok(Self {
            set: Some(set),
            patterns: patterns.to_vec(),
        })
    }

    /// Are any names hidden?
    pub fn any(&self) -> bool {
        self.set.is_some()
    }

    /// The pattern that hides `name` (a file, or a folder with or without its `/`): the first
    /// that matches any of its parts.
    pub fn covering(&self, name: &str) -> Option<&str> {
        let set = self.set.as_ref()?;
        name.split('/')
            .filter(|part| !part.is_empty())
            .find_map(|part| set.matches(part).first().copied())
            .map(|i| self.patterns[i].as_str())
    }

    /// Is `name` hidden?
    pub fn covers(&self, name: &str) -> bool {
        self.covering(name).is_some()
    }

    /// The pattern that hides where open file `file` really is, beneath the shared folder's
    /// real path `root` (a name reached through a link may lead into a hidden folder).
    pub fn covering_real(&self, root: &Path, file: &File) -> Option<&str> {
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        self.covering_beneath(root, &real)
    }

    /// The pattern that hides real path `real`, as a name beneath `root` (none outside it).
    pub fn covering_beneath(&self, root: &Path, real: &Path) -> Option<&str> {
        self.covering(real.strip_prefix(root).ok()?.to_str()?)
    }

    /// Refuses `name` if it is hidden: the same answer whether or not it exists.
    pub fn must_not_cover(&self, name: &str) -> Result<(), HubError> {
        match self.covering(name) {
            None => Ok(()),
            Some(pattern) => Err(refusal(name, pattern)),
        }
    }
}

/// The refusal of a hidden name.
pub fn refusal(name: &str, pattern: &str) -> HubError {
    HubError::Hidden(format!(
        "{name:?} is out of reach: this hub hides names like {pattern:?} (nothing is read, \
         listed, uploaded, moved or deleted there, whatever the token)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(patterns: &[&str]) -> Hidden {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Hidden::new(&patterns).unwrap()
    }

    #[test]
    fn a_name_is_hidden_when_it_or_a_folder_it_is_in_matches() {
        let h = hidden(&[".*", "*.key", "node_modules"]);
        for name in [
            ".env",
            ".ssh/",
            ".ssh/id_ed25519",
            "a/b/.git/config",
            "certs/site.key",
            "web/node_modules/x/index.js",
            "web/node_modules",
        ] {
            assert!(h.covers(name), "{name}");
        }
        for name in [
            "env",
            "a.b/c",
            "report.pdf",
            "keys/site.pem",
            "site.keys",
            "my.env",
            "web/node_modules2/x",
            "",
        ] {
            assert!(!h.covers(name), "{name}");
        }
        assert_eq!(h.covering("a/.git/x"), Some(".*"));
        assert_eq!(h.covering("a/b.key"), Some("*.key"));
    }

    #[test]
    fn no_patterns_hide_nothing() {
        let h = hidden(&[]);
        assert!(!h.any());
        assert!(!h.covers(".env"));
        assert!(h.must_not_cover(".env").is_ok());
    }

    #[test]
    fn a_pattern_with_a_slash_or_a_broken_one_is_refused() {
        for bad in ["a/b", "", "[a"] {
            let err = Hidden::new(&[bad.to_owned()]).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("one name") || text.contains("not a pattern"),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn the_refusal_names_the_pattern_whether_or_not_the_name_exists() {
        let h = hidden(&["*.key"]);
        let err = h.must_not_cover("certs/site.key").unwrap_err();
        assert!(matches!(err, HubError::Hidden(_)), "{err:?}");
        assert!(err.to_string().contains("\"*.key\""), "{err}");
    }
}
