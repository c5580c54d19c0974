//! Formatting for people and for machines: sizes, times, hashes, JSON rows, error lines.

use serde::Serialize;

/// An error and its causes on one line.
/// What a person at the command line (or in the shell) can do about a hub's refusal, told by
/// its code: the hub says what happened, each face says what to type.
pub fn explain(e: &anyhow::Error, has_token: bool) -> String {
    let line = one_line(e);
    let hint = hint(hub_code(e), has_token);
    format!("{line}{hint}")
}

/// The advice that goes after a refusal with `code`.
pub fn hint(code: Option<troca_proto::ErrorCode>, has_token: bool) -> &'static str {
    match code {
        Some(troca_proto::ErrorCode::AlreadyExists) => "; use --force to replace it",
        Some(troca_proto::ErrorCode::Unauthorized) => {
            "; give it with --token-file PATH or TROCA_TOKEN"
        }
        Some(troca_proto::ErrorCode::Forbidden | troca_proto::ErrorCode::Quota) if !has_token => {
            " (a token is given with --token-file PATH or TROCA_TOKEN)"
        }
        _ => "",
    }
}

/// The code of the hub's refusal somewhere in `e`'s chain, if it is one.
pub fn hub_code(e: &anyhow::Error) -> Option<troca_proto::ErrorCode> {
    e.chain().find_map(|cause| match cause.downcast_ref() {
        Some(troca_net::ClientError::Hub { code, .. }) => Some(*code),
        _ => None,
    })
}

pub fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    safe(&s.replace('\n', " ")).into_owned()
}

/// `s` as it may be shown on a terminal: control characters (a terminal's escape sequences) and
/// bidirectional overrides written as `\u{…}`. Everything the CLI prints that came from the
/// network (names, addresses, messages) goes through this.
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || troca_proto::name::is_bidi_control(c);
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` as one word a POSIX shell reads back as `s`: as it is when it holds only characters no
/// shell treats specially, else in single quotes.
pub fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_alphanumeric() || "-_.,:/@%+=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub use troca_proto::hex;

/// A short local time for listings.
pub fn local_time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// A local time with seconds and milliseconds, for the history.
pub fn local_time_precise(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_default()
}

/// `3d 4h 5m 6s`, leaving out leading zero units.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// `1 file`, `3 files`: a count and its noun, singular for one.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Sizes in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn size(bytes: u64) -> String {
    troca_proto::json::human_size(bytes)
}

/// Prints a JSON value on stdout.
pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_word_reads_back_as_itself() {
        for s in [
            "ana",
            "ana@lab",
            "",
            "ana maria",
            "it's",
            "$HOME",
            "a;b",
            "`x`",
            "*",
        ] {
            let word = shell_word(s);
            let back = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {word}")])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(back.stdout).unwrap(), s, "{word}");
        }
        assert_eq!(shell_word("ana@lab"), "ana@lab");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn durations_leave_out_leading_zero_units() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3 * 86400 + 3661), "3d 1h 1m 1s");
    }
}
