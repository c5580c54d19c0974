//! Remote names: the only way a path from the outside world reaches a hub.
//!
//! Every face (native protocol, HTTP, shell, JSON mode) turns what it was given into a
//! [`RemoteName`] with [`RemoteName::parse`] and nothing else, so the rules are checked once, the
//! same way everywhere. A valid name is a relative, `/`-separated path whose components are
//! ordinary file names: it cannot climb out of the shared folder or reach the hub's state.
//! (Symbolic links on disk are the hub's concern, checked where the name meets the filesystem.)

use std::fmt;

/// The longest name, in bytes (Linux's `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;
/// The longest single component, in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;
/// The folder inside a share that holds the hub's own state; never listed, never served.
pub const STATE_DIR_NAME: &str = ".troca";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is absolute; give a name relative to the shared folder")]
    Absolute,
    #[error("the name contains a \"..\" or \".\" component")]
    DotComponent,
    #[error("the name contains an empty component (\"//\" or a trailing \"/\")")]
    EmptyComponent,
    #[error("the name contains a backslash")]
    Backslash,
    #[error("the name contains a NUL or control character")]
    ControlChar,
    #[error("the name contains a bidirectional override (U+202A-U+202E, U+2066-U+2069), which can disguise it")]
    BidiControl,
    #[error("a component of the name is {0} bytes, more than the limit of 255")]
    ComponentTooLong(usize),
    #[error("the name is {0} bytes, more than the limit of 4096")]
    TooLong(usize),
    #[error("names under \".troca/\" are reserved for the hub's state")]
    Reserved,
}

/// A validated, relative, `/`-separated name of a file in a share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteName(String);

impl RemoteName {
    /// Checks `name` against the naming rules. Nothing is normalised: a name that would need it
    /// (`a//b`, `./a`, `a/`) is refused, so one file has exactly one name.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(name.len()));
        }
        if name.starts_with('/') {
            return Err(NameError::Absolute);
        }
        if name.contains('\\') {
            return Err(NameError::Backslash);
        }
        check_chars(name)?;
        for (i, component) in name.split('/').enumerate() {
            match component {
                "" => return Err(NameError::EmptyComponent),
                "." | ".." => return Err(NameError::DotComponent),
                STATE_DIR_NAME if i == 0 => return Err(NameError::Reserved),
                c if c.len() > MAX_COMPONENT_LEN => {
                    return Err(NameError::ComponentTooLong(c.len()))
                }
                _ => {}
            }
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last component: the file's own name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

/// Whether `c` changes the direction text is shown in: an invoice named `invoice\u{202e}fdp.exe`
/// shows as `invoiceexe.pdf`.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The characters every name a client gives must avoid: control characters (a terminal's
/// escapes) and bidirectional overrides.
fn check_chars(name: &str) -> Result<(), NameError> {
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlChar);
    }
    if name.chars().any(is_bidi_control) {
        return Err(NameError::BidiControl);
    }
    Ok(())
}

/// The rule for every other name a client gives (the name it shows itself under, a file's name
/// on the tracker): 1 to 255 bytes, none of them control characters or bidirectional overrides.
pub fn check_label(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_COMPONENT_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    check_chars(name)
}

impl fmt::Display for RemoteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RemoteName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bidi_overrides_are_refused_in_names_and_labels() {
        assert_eq!(
            RemoteName::parse("invoice\u{202e}fdp.exe"),
            Err(NameError::BidiControl)
        );
        assert_eq!(check_label("x\u{2066}y"), Err(NameError::BidiControl));
        assert_eq!(check_label("a\u{1b}[2J"), Err(NameError::ControlChar));
        assert_eq!(check_label(""), Err(NameError::Empty));
        assert!(check_label("Ana's laptop").is_ok());
        assert!(
            RemoteName::parse("عربي.txt").is_ok(),
            "right-to-left text itself is fine"
        );
    }

    #[test]
    fn ordinary_names_are_accepted() {
        for ok in [
            "a",
            "a.txt",
            "dir/sub/file.bin",
            "with space.txt",
            "ação.png",
            ".hidden",
            "a..b",
            "x/.troca",
        ] {
            assert_eq!(RemoteName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn each_bad_name_gets_its_reason() {
        let long_component = "x".repeat(256);
        let long_name = vec!["y".repeat(200); 21].join("/");
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("../x", NameError::DotComponent),
            ("a/../../x", NameError::DotComponent),
            ("a/..", NameError::DotComponent),
            ("./a", NameError::DotComponent),
            ("a//b", NameError::EmptyComponent),
            ("a/", NameError::EmptyComponent),
            ("a\\b", NameError::Backslash),
            ("..\\x", NameError::Backslash),
            ("a\0b", NameError::ControlChar),
            ("a\nb", NameError::ControlChar),
            ("a\x1bb", NameError::ControlChar),
            ("a\u{7f}", NameError::ControlChar),
            ("a\u{85}", NameError::ControlChar),
            (&long_component, NameError::ComponentTooLong(256)),
            (&long_name, NameError::TooLong(long_name.len())),
            (".troca", NameError::Reserved),
            (".troca/admin.token", NameError::Reserved),
        ];
        for (name, want) in cases {
            assert_eq!(RemoteName::parse(name).unwrap_err(), *want, "{name:?}");
        }
    }

    #[test]
    fn file_name_is_the_last_component() {
        assert_eq!(RemoteName::parse("a/b/c.txt").unwrap().file_name(), "c.txt");
        assert_eq!(RemoteName::parse("c.txt").unwrap().file_name(), "c.txt");
    }

    proptest! {
        // Whatever string comes in, an accepted name never escapes: no component climbs, none is
        // empty, and it never starts at the root.
        #[test]
        fn accepted_names_cannot_escape(s in "[a-z./\\\\\\x00-\\x1f]{0,24}") {
            if let Ok(n) = RemoteName::parse(&s) {
                prop_assert!(!n.as_str().starts_with('/'));
                prop_assert!(n.components().all(|c| !c.is_empty() && c != ".." && c != "."));
                prop_assert!(!n.as_str().chars().any(|c| c.is_control() || c == '\\'));
            }
        }
    }
}
