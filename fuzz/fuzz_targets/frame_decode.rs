//! Feeds arbitrary bytes to the frame decoder: it must never panic, and whatever it accepts must
//! re-encode to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troca_proto::{decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode_frame(rest) {
        let mut again = Vec::new();
        encode_frame(&msg, &mut again);
        let (back, n) = decode_frame(&again).expect("re-encoded frame decodes").expect("complete");
        assert_eq!(n, again.len());
        assert_eq!(back, msg);
        rest = &rest[used..];
    }
});
