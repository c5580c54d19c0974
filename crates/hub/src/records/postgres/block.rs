//! How a block of history entries is stored in PostgreSQL: the entries one after another, each
//! `time_ns: i64`, `ok: u8` (0 or 1), `bytes: u64`, `duration_us: u64`, then `client`,
//! `address`, `op`, `target` and `error`, each a `u32` byte length and UTF-8; integers
//! big-endian. Ids are not stored: the block's row says which id its first entry has, and
//! the others follow in order. `pg.rs` writes the same encoding in SQL when it moves a history
//! of one row per request into blocks.

use crate::records::Entry;
use troca_proto::msg::HistoryEntry;

/// Why a stored block could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("it ends inside an entry")]
    Truncated,
    #[error("a text is not UTF-8")]
    BadUtf8,
    #[error("`ok` is {0}, neither 0 nor 1")]
    BadFlag(u8),
    #[error("it holds {found} entries, not {expected}")]
    Count { expected: usize, found: usize },
}

/// Appends one entry. An error message is kept to the length the protocol carries.
pub fn encode(out: &mut Vec<u8>, e: &Entry<'_>) {
    out.extend_from_slice(&e.time_ns.to_be_bytes());
    out.push(u8::from(e.ok));
    out.extend_from_slice(&e.bytes.to_be_bytes());
    out.extend_from_slice(&e.duration_us.to_be_bytes());
    let error = troca_proto::codec::truncate_utf8(
        e.error.unwrap_or_default(),
        troca_proto::MAX_ERROR_MESSAGE,
    );
    for text in [e.client, e.address, e.op, e.target, error] {
        out.extend_from_slice(&(text.len() as u32).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}

/// One stored entry and its id, its texts borrowed from the block: a page keeps few of the
/// entries it looks at, so only those it keeps are copied out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<'a> {
    pub id: u64,
    pub entry: Entry<'a>,
}

impl Stored<'_> {
    pub fn to_entry(self) -> HistoryEntry {
        let e = self.entry;
        HistoryEntry {
            id: self.id,
            time_ns: e.time_ns,
            client: e.client.to_owned(),
            address: e.address.to_owned(),
            op: e.op.to_owned(),
            target: e.target.to_owned(),
            ok: e.ok,
            error: e.error.unwrap_or_default().to_owned(),
            bytes: e.bytes,
            duration_us: e.duration_us,
        }
    }
}

/// The `count` entries of a block whose first entry has id `first`.
pub fn decode(data: &[u8], first: u64, count: usize) -> Result<Vec<Stored<'_>>, BlockError> {
    // Each entry takes at least 45 bytes, so a damaged count cannot make this allocate much.
    let mut entries = Vec::with_capacity(count.min(data.len() / 45));
    let mut r = Reader(data);
    while !r.0.is_empty() {
        entries.push(entry(&mut r, first + entries.len() as u64)?);
    }
    if entries.len() != count {
        return Err(BlockError::Count {
            expected: count,
            found: entries.len(),
        });
    }
    Ok(entries)
}

fn entry<'a>(r: &mut Reader<'a>, id: u64) -> Result<Stored<'a>, BlockError> {
    let time_ns = i64::from_be_bytes(r.array()?);
    let ok = match r.array::<1>()?[0] {
        0 => false,
        1 => true,
        v => return Err(BlockError::BadFlag(v)),
    };
    let bytes = u64::from_be_bytes(r.array()?);
    let duration_us = u64::from_be_bytes(r.array()?);
    let entry = Entry {
        time_ns,
        client: r.text()?,
        address: r.text()?,
        op: r.text()?,
        target: r.text()?,
        ok,
        error: Some(r.text()?).filter(|e| !e.is_empty()),
        bytes,
        duration_us,
    };
    Ok(Stored { id, entry })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BlockError> {
        if self.0.len() < n {
            return Err(BlockError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BlockError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn text(&mut self) -> Result<&'a str, BlockError> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| BlockError::BadUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Owned {
        time_ns: i64,
        ok: bool,
        bytes: u64,
        duration_us: u64,
        texts: [String; 5],
    }

    impl Owned {
        fn entry(&self) -> Entry<'_> {
            Entry {
                time_ns: self.time_ns,
                client: &self.texts[0],
                address: &self.texts[1],
                op: &self.texts[2],
                target: &self.texts[3],
                ok: self.ok,
                error: Some(self.texts[4].as_str()).filter(|e| !e.is_empty()),
                bytes: self.bytes,
                duration_us: self.duration_us,
            }
        }
    }

    fn owned() -> impl Strategy<Value = Owned> {
        let text = || "\\PC{0,24}";
        (
            any::<i64>(),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            [text(), text(), text(), text(), text()],
        )
            .prop_map(|(time_ns, ok, bytes, duration_us, texts)| Owned {
                time_ns,
                ok,
                bytes,
                duration_us,
                texts,
            })
    }

    proptest! {
        #[test]
        fn blocks_come_back_as_written(items in prop::collection::vec(owned(), 0..40), first in 1u64..1 << 40) {
            let mut data = Vec::new();
            for o in &items {
                encode(&mut data, &o.entry());
            }
            let back = decode(&data, first, items.len()).unwrap();
            prop_assert_eq!(back.len(), items.len());
            for (i, (b, o)) in back.iter().zip(&items).enumerate() {
                prop_assert_eq!(b.id, first + i as u64);
                prop_assert_eq!(b.entry, o.entry());
                prop_assert_eq!(b.to_entry().target, o.texts[3].clone());
            }
        }

        /// A damaged block is refused or read as some entries; it never panics, and a count
        /// that does not match is an error.
        #[test]
        fn damaged_blocks_are_refused_not_trusted(
            items in prop::collection::vec(owned(), 1..8),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            claimed in 0usize..1 << 40,
        ) {
            let mut data = Vec::new();
            for o in &items {
                encode(&mut data, &o.entry());
            }
            let mut damaged = data.clone();
            for (at, byte) in &flips {
                damaged[at.index(data.len())] ^= byte | 1;
            }
            let _ = decode(&damaged, 1, items.len());
            let short = &data[..cut.index(data.len())];
            prop_assert!(decode(short, 1, items.len()).is_err());
            if claimed != items.len() {
                let wrong = decode(&data, 1, claimed);
                prop_assert!(matches!(wrong, Err(BlockError::Count { .. })), "{:?}", wrong);
            }
        }
    }

    #[test]
    fn a_long_error_is_kept_to_what_the_protocol_carries() {
        let error = "é".repeat(troca_proto::MAX_ERROR_MESSAGE);
        let e = Entry {
            time_ns: 1,
            client: "c",
            address: "a",
            op: "get",
            target: "t",
            ok: false,
            error: Some(&error),
            bytes: 0,
            duration_us: 2,
        };
        let mut data = Vec::new();
        encode(&mut data, &e);
        let back = decode(&data, 7, 1).unwrap();
        let kept = back[0].entry.error.unwrap();
        assert_eq!(kept.len(), troca_proto::MAX_ERROR_MESSAGE);
        assert!(error.starts_with(kept));
    }
}
