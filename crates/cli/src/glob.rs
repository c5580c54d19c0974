//! Wildcards in the names people type (`photos/*.jpg`, `report-202?.pdf`, `**/*.tmp`),
//! expanded against the hub's names the way a shell expands them against files (as `scp` and
//! `sftp` do for remote names): `*` and `?` stay within a folder, `**` crosses folders, `[…]`
//! is a class, and a backslash makes the next character plain (hub names never hold one).
//! A pattern that matches nothing stands for itself, so a name like `photo [1].jpg` still
//! works. The command line and the shell expand; JSON mode takes names as they are.

use globset::{GlobBuilder, GlobMatcher};
use std::collections::BTreeSet;
use troca_net::{ClientError, HubClient};
use troca_proto::msg::Entry;

/// The characters that make a name a pattern (unless escaped).
const WILD: [char; 3] = ['*', '?', '['];

/// A name with wildcards, ready to match the hub's names.
pub(crate) struct Pattern {
    matcher: GlobMatcher,
    /// What every match starts with: the hub lists only names beneath it.
    prefix: String,
    /// The name as a plain name (escapes removed), for when nothing matches.
    plain: String,
}

impl Pattern {
    /// `name` as a pattern, if it has an unescaped wildcard and is a valid glob.
    pub(crate) fn new(name: &str) -> Option<Self> {
        let first_wild = wild_at(name)?;
        let matcher = GlobBuilder::new(name)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .ok()?
            .compile_matcher();
        Some(Self {
            matcher,
            prefix: unescape(&name[..first_wild]),
            plain: unescape(name),
        })
    }

    /// Whether a hub name (a folder's with or without its `/`) matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name.trim_end_matches('/'))
    }

    /// The hub's listing to match against: every name beneath this.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The names among `entries` (a listing of [`Pattern::prefix`]) that match: files, and
    /// folders (those listed and those on the way to a listed name), none inside a folder
    /// that matches too, in order. When none does, the name itself, as a plain name.
    pub(crate) fn expand(&self, entries: &[Entry]) -> Vec<String> {
        let mut folders = BTreeSet::new();
        let mut names = BTreeSet::new();
        for e in entries {
            let name = e.name.trim_end_matches('/');
            if e.name.ends_with('/') {
                folders.insert(name);
            } else {
                names.insert(name);
            }
            folders.extend(name.match_indices('/').map(|(at, _)| &name[..at]));
        }
        let matched: BTreeSet<&str> = folders.into_iter().filter(|f| self.matches(f)).collect();
        let inside_matched = |name: &str| {
            name.match_indices('/')
                .any(|(at, _)| matched.contains(&name[..at]))
        };
        let mut all: Vec<String> = matched
            .iter()
            .copied()
            .chain(names.into_iter().filter(|n| self.matches(n)))
            .filter(|n| !inside_matched(n))
            .map(str::to_owned)
            .collect();
        all.sort();
        if all.is_empty() {
            all.push(self.plain.clone());
        }
        all
    }

    /// Whether a listed entry is shown by `ls PATTERN`: it matches, or is inside a folder
    /// that does.
    pub(crate) fn shows(&self, name: &str) -> bool {
        let name = name.trim_end_matches('/');
        self.matches(name)
            || name
                .match_indices('/')
                .any(|(at, _)| self.matches(&name[..at]))
    }
}

/// Where the first unescaped wildcard of `name` is, if any.
fn wild_at(name: &str) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in name.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if WILD.contains(&c) => return Some(at),
            _ => {}
        }
    }
    None
}

/// A name typed with escapes, as the hub's plain name (`a\*b` is `a*b`): where wildcards
/// are not expanded (where to move to).
pub(crate) fn plain(name: &str) -> String {
    unescape(name)
}

/// `name` with the escapes of wildcards taken off (`\*` is `*`). Any other backslash stays,
/// for the hub to refuse (a name never holds one): `docs\a.txt` is not `docsa.txt`.
fn unescape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match chars.peek() {
            Some(&next) if c == '\\' && (WILD.contains(&next) || next == ']' || next == '\\') => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// `names` with each pattern replaced by the hub's names it matches (one listing each).
pub(crate) async fn expand(
    client: &mut HubClient,
    names: &[String],
) -> Result<Vec<String>, ClientError> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match Pattern::new(name) {
            Some(p) => out.extend(p.expand(&client.list(p.prefix()).await?)),
            // No wildcard: escapes still make plain characters (`a\*b` is `a*b`).
            None => out.push(unescape(name)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(names: &[&str]) -> Vec<Entry> {
        names
            .iter()
            .map(|n| Entry {
                name: (*n).to_owned(),
                size: 0,
                modified_ns: 0,
                blake3: None,
            })
            .collect()
    }

    fn expand(pattern: &str, names: &[&str]) -> Vec<String> {
        Pattern::new(pattern).unwrap().expand(&listing(names))
    }

    const HUB: &[&str] = &[
        "a.pdf",
        "b.txt",
        "docs/c.pdf",
        "docs/d.txt",
        "docs/old/e.pdf",
        "empty/",
        "photo [1].jpg",
        "photos-2026/f.jpg",
        "what?.txt",
    ];

    #[test]
    fn a_star_stays_within_a_folder_and_two_cross_them() {
        assert_eq!(expand("*.pdf", HUB), ["a.pdf"]);
        assert_eq!(expand("docs/*.pdf", HUB), ["docs/c.pdf"]);
        assert_eq!(
            expand("**/*.pdf", HUB),
            ["a.pdf", "docs/c.pdf", "docs/old/e.pdf"]
        );
        assert_eq!(expand("?.txt", HUB), ["b.txt"]);
        assert_eq!(expand("[ab].*", HUB), ["a.pdf", "b.txt"]);
    }

    #[test]
    fn folders_match_and_what_is_in_a_matched_folder_is_not_named_again() {
        assert_eq!(
            expand("docs/*", HUB),
            ["docs/c.pdf", "docs/d.txt", "docs/old"]
        );
        assert_eq!(expand("e*", HUB), ["empty"]);
        assert_eq!(expand("photos-*", HUB), ["photos-2026"]);
        // Everything: the top-level names only, each folder whole.
        assert_eq!(
            expand("**", HUB),
            [
                "a.pdf",
                "b.txt",
                "docs",
                "empty",
                "photo [1].jpg",
                "photos-2026",
                "what?.txt"
            ]
        );
    }

    #[test]
    fn a_pattern_that_matches_nothing_is_a_plain_name_and_escapes_make_plain_characters() {
        assert_eq!(expand("photo [1].jpg", HUB), ["photo [1].jpg"]);
        assert_eq!(expand("nothing*", HUB), ["nothing*"]);
        assert_eq!(expand(r"what\?*", HUB), ["what?.txt"]);
        assert_eq!(plain(r"what\?.txt"), "what?.txt");
        assert_eq!(
            plain(r"docs\a.txt"),
            r"docs\a.txt",
            "left for the hub to refuse"
        );
        assert!(
            Pattern::new("report.pdf").is_none(),
            "no wildcard, no pattern"
        );
        assert!(Pattern::new(r"a\*b").is_none(), "an escaped one is plain");
    }

    #[test]
    fn the_listing_asked_for_is_what_comes_before_the_first_wildcard() {
        assert_eq!(Pattern::new("docs/c*.pdf").unwrap().prefix(), "docs/c");
        assert_eq!(Pattern::new("*.pdf").unwrap().prefix(), "");
        assert_eq!(Pattern::new(r"a\[b*").unwrap().prefix(), "a[b");
    }

    #[test]
    fn ls_shows_what_matches_and_what_is_inside_matched_folders() {
        let p = Pattern::new("doc*").unwrap();
        assert!(p.shows("docs/old/e.pdf"));
        assert!(!p.shows("a.pdf"));
        let p = Pattern::new("*.txt").unwrap();
        assert!(p.shows("b.txt") && !p.shows("docs/d.txt"));
    }
}
