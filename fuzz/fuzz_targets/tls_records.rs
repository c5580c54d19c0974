//! TLS records after the handshake, sealed with a fixed key from a plan in the input, then one
//! byte of the stream changed (or none), then opened as `troca_net::sealed` opens them: every
//! record before the change opens to exactly what went in, the changed record never opens, and
//! handshake content (arbitrary bytes here) goes through the post-handshake joiner. Nothing may
//! panic.
//!
//! The input: three bytes of change (a big-endian position, then the bits to flip; no flip
//! means no change), then records, each a kind byte, a big-endian length and the content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls::ConnectionTrafficSecrets;
use troca_net::record::{self, Joiner, Keys, Kind, RecordError};

fn keys(suite: u8) -> Keys {
    let iv = rustls::crypto::cipher::Iv::from([0x5a; 12]);
    let secrets = if suite % 2 == 0 {
        ConnectionTrafficSecrets::Aes256Gcm { key: [7u8; 32].into(), iv }
    } else {
        ConnectionTrafficSecrets::Chacha20Poly1305 { key: [7u8; 32].into(), iv }
    };
    Keys::new(&secrets, 3).expect("a valid suite")
}

struct Plan<'a> {
    records: Vec<(Kind, &'a [u8])>,
    /// Where one byte of the sealed stream is changed, and how.
    change: Option<(usize, u8)>,
    suite: u8,
}

fn plan(data: &[u8]) -> Option<Plan<'_>> {
    let (&[hi, lo, bits], mut rest) = data.split_first_chunk::<3>()?;
    let change = (bits != 0).then(|| (usize::from(u16::from_be_bytes([hi, lo])), bits));
    let mut records = Vec::new();
    let suite = rest.first().copied().unwrap_or(0) >> 7;
    while let Some((&[k, a, b], tail)) = rest.split_first_chunk::<3>() {
        let kind = [Kind::ApplicationData, Kind::Handshake, Kind::Alert][usize::from(k % 3)];
        let len = usize::from(u16::from_be_bytes([a, b]))
            .min(tail.len())
            .min(record::MAX_PLAINTEXT);
        records.push((kind, &tail[..len]));
        rest = &tail[len..];
    }
    Some(Plan { records, change, suite })
}

fuzz_target!(|data: &[u8]| {
    let Some(plan) = plan(data) else { return };
    let mut tx = keys(plan.suite);
    let mut stream = Vec::new();
    let mut starts = Vec::new();
    for (kind, content) in &plan.records {
        starts.push(stream.len());
        let at = stream.len();
        stream.resize(at + content.len() + record::OVERHEAD, 0);
        stream[at + record::HEADER..at + record::HEADER + content.len()].copy_from_slice(content);
        let n = tx.seal(*kind, &mut stream[at..], content.len());
        stream.truncate(at + n);
    }
    // The record the change falls in, if any.
    let changed = plan.change.filter(|&(at, _)| at < stream.len()).map(|(at, bits)| {
        stream[at] ^= bits;
        starts.iter().rposition(|&s| s <= at).expect("the first record starts at 0")
    });
    let mut rx = keys(plan.suite);
    let mut joiner = Joiner::default();
    let mut at = 0;
    for (i, (kind, content)) in plan.records.iter().enumerate() {
        let opened = record::whole(&stream[at..]).and_then(|len| match len {
            Some(len) => rx.open(&mut stream[at..at + len]).map(|o| (o, len)),
            None => Err(RecordError::Authentication),
        });
        if changed == Some(i) {
            assert!(opened.is_err(), "record {i} opened although a byte of it changed");
            return;
        }
        let (opened, len) = opened.expect("an unchanged record opens");
        assert_eq!(opened.kind, *kind);
        assert_eq!(&stream[at + opened.content.start..at + opened.content.end], *content);
        if opened.kind == Kind::Handshake && joiner.push(content).is_ok() {
            while let Ok(Some(_)) = joiner.next_message() {}
        }
        at += len;
    }
    assert_eq!(at, stream.len());
});
