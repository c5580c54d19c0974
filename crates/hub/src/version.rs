//! A stored file's version: plain values the store gives and the caches and records keep, so
//! neither needs the other to name one.

/// One version of a stored file: what the caches key on, with the name. A file changed in
/// place has another size or modification time, so whatever was remembered of it misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub size: u64,
    pub modified_ns: i64,
}

/// A file's versions either side of a change of its time, read from the very file changed (so
/// what was known of the one is known of the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retimed {
    pub before: Version,
    pub after: Version,
}
