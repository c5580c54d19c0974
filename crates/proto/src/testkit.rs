//! Test helpers shared by the codecs' property tests: mutations of valid encodings (so random
//! input reaches past the length checks and magic numbers into the decoders), and the fuzz
//! targets' committed seed corpus, written from the same generators.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::path::PathBuf;

/// One change to a byte string.
#[derive(Debug, Clone)]
pub enum Mutation {
    Flip { at: usize, bits: u8 },
    Set { at: usize, value: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

/// A few mutations, positions taken modulo the input's length.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        (
            any::<usize>(),
            prop_oneof![Just(0u8), Just(0xff), Just(0x7f), Just(0x80), any::<u8>()]
        )
            .prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ];
    proptest::collection::vec(one, 1..4)
}

/// `bytes` with `changes` applied.
pub fn mutate(mut bytes: Vec<u8>, changes: &[Mutation]) -> Vec<u8> {
    for m in changes {
        let n = bytes.len().max(1);
        match m {
            Mutation::Flip { at, bits } if !bytes.is_empty() => bytes[at % n] ^= bits,
            Mutation::Set { at, value } if !bytes.is_empty() => bytes[at % n] = *value,
            Mutation::Truncate { at } => bytes.truncate(at % n),
            Mutation::Insert { at, bytes: b } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Remove { at, len } if !bytes.is_empty() => {
                let at = at % n;
                let end = (at + len).min(bytes.len());
                bytes.drain(at..end);
            }
            _ => {}
        }
    }
    bytes
}

/// `count` values of `strategy`, the same every run.
pub fn samples<S: Strategy>(strategy: S, count: usize) -> Vec<S::Value> {
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).expect("a value").current())
        .collect()
}

/// The committed seed corpus of fuzz target `target`: with `TROCA_WRITE_FUZZ_SEEDS=1` the
/// `inputs` are written there (one file each); otherwise every committed seed must be accepted by
/// `decodes`, so the corpus stays current with the codecs.
pub fn seed_corpus(target: &str, inputs: &[Vec<u8>], decodes: impl Fn(&[u8]) -> bool) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    if std::env::var_os("TROCA_WRITE_FUZZ_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), input).unwrap();
        }
        return;
    }
    let seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (TROCA_WRITE_FUZZ_SEEDS=1 writes it)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!seeds.is_empty(), "{} is empty", dir.display());
    for path in seeds {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            decodes(&bytes),
            "{} no longer decodes: rewrite the seeds",
            path.display()
        );
    }
}
