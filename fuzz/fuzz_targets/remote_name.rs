//! Feeds arbitrary strings to the name check: an accepted name never climbs out of the share.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troca_proto::RemoteName;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(name) = RemoteName::parse(s) {
        assert!(!name.as_str().starts_with('/'));
        assert!(name.components().all(|c| !c.is_empty() && c != ".." && c != "."));
        assert!(!name.as_str().contains('\\'));
        assert!(!name.as_str().chars().any(char::is_control));
    }
});
