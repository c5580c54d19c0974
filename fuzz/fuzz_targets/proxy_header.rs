//! The first bytes of a connection from a trusted proxy, as `troca_net::proxy_header` judges
//! them: nothing may panic; a header found lies within the bytes given, and the header's bytes
//! alone get the same verdict (what follows it never changes whom it names).
#![no_main]

use libfuzzer_sys::fuzz_target;
use troca_net::proxy_header::{classify, Verdict};

fuzz_target!(|bytes: &[u8]| {
    if bytes.is_empty() {
        return;
    }
    let verdict = classify(bytes);
    if let Verdict::Header { len, .. } = verdict {
        assert!(len <= bytes.len());
        assert_eq!(classify(&bytes[..len]), verdict);
    }
});
