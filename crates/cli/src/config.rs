//! `troca serve --config FILE`: the hub's settings from a TOML file, each one a `serve` option
//! by its long name (`listen = "0.0.0.0:13370"`, `read-only = true`, `hide = [".git"]`), and
//! `folder` for the folder to share. The file's settings become options on the command line
//! before clap reads it, so each is checked, described and defaulted in one place (`args.rs`);
//! an option given on the command line (or by its environment variable) wins over the file's.

use clap::parser::ValueSource;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A settings file bigger than this is refused: a hub's settings fit in a few KiB.
const MAX_FILE: u64 = 1 << 20;

/// The setting that names the folder to share (the command line's first operand).
const FOLDER: &str = "folder";

/// Why a settings file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings in {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_FILE} bytes: not a settings file")]
    TooLarge { path: PathBuf },
    /// `at` is the file and line, as `hub.toml:3`.
    #[error("{at}: not valid TOML: {message}")]
    Syntax { at: String, message: String },
    #[error("{at}: `{key}` is not a setting of `troca serve`{hint}")]
    Unknown {
        at: String,
        key: String,
        hint: String,
    },
    #[error("{at}: `{key}`: {message}")]
    Value {
        at: String,
        key: String,
        message: String,
    },
}

/// The command line with the settings of `serve --config FILE` added to it, where the command
/// line does not give them already. Any other command line comes back as it was (and so does
/// one clap refuses: clap then says why, as without a file).
pub fn with_settings(argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let cli = <crate::args::Cli as clap::CommandFactory>::command();
    let Ok(matches) = cli.clone().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some(("serve", given)) = matches.subcommand() else {
        return Ok(argv);
    };
    let Some(path) = given.get_one::<PathBuf>("config") else {
        return Ok(argv);
    };
    let serve = cli.find_subcommand("serve").expect("serve is a command");
    let text = read(path)?;
    let table = parse(path, &text)?;
    let mut added = Vec::new();
    let mut folder = None;
    for (key, value) in table.get_ref() {
        let at = Place {
            path,
            text: &text,
            span: key.span(),
        };
        let arg = setting(serve, &at, key.get_ref())?;
        let source = given.value_source(arg.get_id().as_str());
        // The command line (or an environment variable) wins over the file.
        if matches!(
            source,
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let words = words(arg, value.get_ref())
            .and_then(|words| check(&cli, &words).map(|()| words))
            .map_err(|message| at.value(key.get_ref(), message))?;
        match arg.is_positional() {
            true => folder = words.into_iter().next(),
            false => added.extend(words),
        }
    }
    Ok(insert(argv, added, folder))
}

/// Where in the file a setting is, for its errors.
struct Place<'a> {
    path: &'a Path,
    text: &'a str,
    span: std::ops::Range<usize>,
}

impl Place<'_> {
    /// The file and line, as `hub.toml:3`.
    fn line(&self) -> String {
        let before = self.text.get(..self.span.start).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        format!("{}:{line}", self.path.display())
    }

    fn value(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Value {
            at: self.line(),
            key: key.to_owned(),
            message,
        }
    }
}

/// The file's text, read within `MAX_FILE` bytes.
fn read(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let failed = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(failed)?;
    if text.len() as u64 > MAX_FILE {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

/// The file's settings. (Read as TOML's own tables rather than through serde: the same
/// parser, without serde's code for every type, which the binary's size would carry.)
fn parse<'t>(path: &Path, text: &'t str) -> Result<Spanned<DeTable<'t>>, ConfigError> {
    DeTable::parse(text).map_err(|e| {
        let at = Place {
            path,
            text,
            span: e.span().unwrap_or(0..0),
        };
        ConfigError::Syntax {
            at: at.line(),
            message: e.message().trim_end().to_owned(),
        }
    })
}

/// The option a setting names: `serve`'s own (not the options every command takes, nor
/// `config` itself), by its long name, or the folder.
fn setting<'c>(
    serve: &'c clap::Command,
    at: &Place<'_>,
    key: &str,
) -> Result<&'c clap::Arg, ConfigError> {
    let own = |a: &&clap::Arg| !a.is_global_set() && a.get_id() != "config";
    let found = serve.get_arguments().filter(own).find(|a| match key {
        FOLDER => a.is_positional(),
        _ => a.get_long() == Some(key),
    });
    found.ok_or_else(|| {
        let names = serve
            .get_arguments()
            .filter(own)
            .filter(|a| !a.is_hide_set())
            .filter_map(clap::Arg::get_long)
            .chain([FOLDER]);
        let hint = match nearest(key, names) {
            Some(near) => format!("; did you mean `{near}`?"),
            None => " (a setting is a `troca serve` option without its dashes, or `folder`)".into(),
        };
        ConfigError::Unknown {
            at: at.line(),
            key: key.to_owned(),
            hint,
        }
    })
}

/// The known name most like `key`, if one is like it at all.
fn nearest<'a>(key: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|n| (strsim::jaro_winkler(key, n), n))
        .filter(|(likeness, _)| *likeness > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n)
}

/// The command-line words for one setting: `--name=value` (one per value of a list), `--name`
/// for a switch set to true, nothing for one set to false, or the folder's path alone.
fn words(arg: &clap::Arg, value: &DeValue<'_>) -> Result<Vec<OsString>, String> {
    let switch = !arg.get_action().takes_values();
    let list = matches!(arg.get_action(), clap::ArgAction::Append);
    let word = |text: String| -> OsString {
        // The folder, the one operand, has no long name.
        match arg.get_long() {
            Some(long) => format!("--{long}={text}").into(),
            None => text.into(),
        }
    };
    match value {
        DeValue::Boolean(on) if switch => Ok(match on {
            true => vec![format!("--{}", arg.get_long().unwrap_or_default()).into()],
            false => vec![],
        }),
        _ if switch => Err("a switch: true or false".into()),
        DeValue::Array(items) if list => items
            .iter()
            .map(|v| scalar(v.get_ref()).map(word))
            .collect(),
        DeValue::Array(_) => Err("takes one value, not a list".into()),
        v => Ok(vec![word(scalar(v)?)]),
    }
}

/// A setting's value as the command line spells it: a string or a whole number.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix())
            .map(|n| n.to_string())
            .map_err(|e| format!("{e}")),
        other => Err(format!(
            "a {} is not a value it takes: give a string or a whole number",
            other.type_str()
        )),
    }
}

/// Whether clap takes a setting's words, alone, for `serve`; else clap's reason.
fn check(cli: &clap::Command, words: &[OsString]) -> Result<(), String> {
    let mut argv: Vec<OsString> = vec!["troca".into(), "serve".into()];
    argv.extend(words.iter().cloned());
    match cli.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(e) => {
            // clap's first line says what is wrong; the rest is usage and a hint to --help.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            Err(line.strip_prefix("error: ").unwrap_or(line).to_owned())
        }
    }
}

/// `argv` with the file's options added (self-contained `--name=value` words, so they can go
/// at its end) and its folder after them, all before a `--` that ends the options.
fn insert(
    mut argv: Vec<OsString>,
    added: Vec<OsString>,
    folder: Option<OsString>,
) -> Vec<OsString> {
    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let tail = argv.split_off(at);
    argv.extend(added);
    argv.extend(folder);
    argv.extend(tail);
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn settings(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn with(text: &str, words: &[&str]) -> Result<Vec<String>, ConfigError> {
        let (_dir, path) = settings(text);
        let mut line = argv(words);
        line.insert(2, "--config".into());
        line.insert(3, path.into_os_string());
        with_settings(line).map(|v| {
            v.into_iter()
                .skip(4)
                .map(|w| w.into_string().unwrap())
                .collect()
        })
    }

    #[test]
    fn settings_become_options_and_the_command_line_wins() {
        let text = r#"
            folder = "/srv/share"
            listen = "0.0.0.0:13370"
            http = "0.0.0.0:13380"
            read-only = true
            require-token = false
            hide = [".git", "*.key"]
            max-connections = 100
        "#;
        let added = with(text, &["troca", "serve", "--listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(
            added,
            [
                "--listen",
                "127.0.0.1:0",
                "--hide=.git",
                "--hide=*.key",
                "--http=0.0.0.0:13380",
                "--max-connections=100",
                "--read-only",
                "/srv/share",
            ]
        );
        // A folder given on the command line is the one shared.
        let added = with(text, &["troca", "serve", "mine"]).unwrap();
        assert!(added.contains(&"mine".to_owned()), "{added:?}");
        assert!(!added.contains(&"/srv/share".to_owned()), "{added:?}");
    }

    #[test]
    fn a_wrong_setting_is_named_with_its_file() {
        let e = with("lisen = \"x\"", &["troca", "serve"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("`lisen` is not a setting of `troca serve`; did you mean `listen`?"),
            "{e}"
        );
        let e = with("cache-size = \"lots\"", &["troca", "serve"]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("hub.toml:1: `cache-size`: invalid value 'lots'"),
            "{text}"
        );
        let e = with("read-only = \"yes\"", &["troca", "serve"]).unwrap_err();
        assert!(e.to_string().contains("a switch: true or false"), "{e}");
        let e = with("listen = [\"a\", \"b\"]", &["troca", "serve"]).unwrap_err();
        assert!(e.to_string().contains("not a list"), "{e}");
        let e = with("listen = 1.5", &["troca", "serve"]).unwrap_err();
        assert!(
            e.to_string().contains("a float is not a value it takes"),
            "{e}"
        );
        // Options of every command are not the hub's settings.
        let e = with("json = true", &["troca", "serve"]).unwrap_err();
        assert!(matches!(e, ConfigError::Unknown { .. }), "{e}");
        let e = with("listen = ", &["troca", "serve"]).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
    }

    #[test]
    fn other_command_lines_are_left_alone() {
        let line = argv(&["troca", "ls", "photos/"]);
        assert_eq!(with_settings(line.clone()).unwrap(), line);
        let line = argv(&["troca", "serve", "--no-such-option"]);
        assert_eq!(with_settings(line.clone()).unwrap(), line);
    }
}
