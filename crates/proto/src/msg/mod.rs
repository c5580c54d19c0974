//! Every message of the protocol, one type each, dispatched through [`Message`].
//!
//! Kinds `0x10`–`0x1f` and `0x90`–`0x9f` are the swarm's peer-to-peer messages ([`Pieces`],
//! [`GetPiece`], [`Holding`] and their answers, and the unasked [`Have`] and [`SlotFree`]); hubs answer them
//! with `BadRequest`.
//!
//! Each type has `encode` (append the payload) and `decode` (read the payload) side by side in
//! its module. Kinds below `0x80` travel from client to hub, kinds from `0x80` up from hub to
//! client. `docs/PROTOCOL.md` gives the byte layout of each.

mod error;
mod folders;
mod get;
mod health;
mod hello;
mod list;
mod put;
#[macro_use]
mod records;
mod remove;
mod share;
mod swarm;

pub use error::Error;
pub use folders::{Copied, Copy, Find, FolderMade, MakeFolder, Move, Moved};
pub use get::{FileEnd, FileHeader, Get};
pub use health::{Health, HealthReport};
pub use hello::{Hello, Welcome};
pub use list::{Entries, Entry, List};
pub use put::{Put, PutDone, PutEnd, PutReady, PutSmall};
pub use records::{
    Activity, CallerRole, ClientEntry, ClientList, History, HistoryEntries, HistoryEntry, QuotaUse,
    Register, Registered, Standing, Status, StatusInfo, Who, MAX_HISTORY_PAGE,
};
pub use remove::{Remove, Removed};
pub use share::{
    Share, ShareEntry, ShareList, Shared, Shares, Unshare, Unshared, UploadBounds, UploadUse,
};
pub use swarm::{
    Bitfield, GetPiece, Have, Holding, PieceData, PieceHashes, Pieces, SlotFree, HASHES_PER_FRAME,
    MAX_BITFIELD_PIECES,
};

use crate::codec::{DecodeError, Put as _, Reader};

/// The longest name accepted on the wire. Twice the naming limit, so an over-long name reaches the
/// hub's name check and gets the precise `InvalidName` error rather than a decoding failure.
pub const MAX_WIRE_NAME: usize = 2 * crate::name::MAX_NAME_LEN;

macro_rules! messages {
    ($($kind:literal => $variant:ident,)*) => {
        /// One protocol message.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Message {
            $($variant($variant),)*
        }

        impl Message {
            /// Every kind byte, in the table's order.
            pub const KINDS: &'static [u8] = &[$($kind,)*];

            /// The kind byte that identifies this message on the wire.
            pub fn kind(&self) -> u8 {
                match self {
                    $(Message::$variant(_) => $kind,)*
                }
            }

            /// A short name for logs and error messages.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Message::$variant(_) => stringify!($variant),)*
                }
            }

            /// Appends the kind byte and the payload.
            pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
                out.put_u8(self.kind());
                match self {
                    $(Message::$variant(m) => m.encode(out),)*
                }
            }

            /// Decodes a kind byte and payload that make up one whole frame body.
            pub(crate) fn decode_body(body: &[u8]) -> Result<Message, DecodeError> {
                let (&kind, payload) = body.split_first().ok_or(DecodeError::EmptyFrame)?;
                let mut r = Reader::new(payload);
                let msg = match kind {
                    $($kind => Message::$variant($variant::decode(&mut r)?),)*
                    other => return Err(DecodeError::UnknownKind(other)),
                };
                r.finish()?;
                Ok(msg)
            }
        }

        $(
            impl From<$variant> for Message {
                fn from(m: $variant) -> Message {
                    Message::$variant(m)
                }
            }
        )*
    };
}

messages! {
    0x01 => Hello,
    0x02 => List,
    0x03 => Get,
    0x04 => Put,
    0x05 => PutEnd,
    0x06 => Remove,
    0x07 => Register,
    0x08 => Who,
    0x09 => History,
    0x0a => Status,
    0x0b => MakeFolder,
    0x0c => Move,
    0x0d => Find,
    0x0e => PutSmall,
    0x0f => Share,
    0x10 => Pieces,
    0x11 => GetPiece,
    0x12 => Holding,
    0x20 => Shares,
    0x21 => Unshare,
    0x22 => Health,
    0x23 => Copy,
    0x81 => Welcome,
    0x82 => Entries,
    0x83 => FileHeader,
    0x84 => FileEnd,
    0x85 => PutReady,
    0x86 => PutDone,
    0x87 => Removed,
    0x88 => Registered,
    0x89 => ClientList,
    0x8a => HistoryEntries,
    0x8b => StatusInfo,
    0x8c => FolderMade,
    0x8d => Moved,
    0x8e => Shared,
    0x8f => ShareList,
    0x90 => PieceHashes,
    0x91 => PieceData,
    0x92 => Bitfield,
    0x93 => Have,
    0x94 => SlotFree,
    0xa0 => Unshared,
    0xa1 => HealthReport,
    0xa2 => Copied,
    0xff => Error,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_frame, encode_frame, MAX_FRAME_LEN};
    use crate::{ErrorCode, Hash};
    use proptest::prelude::*;

    fn hash() -> impl Strategy<Value = Hash> {
        any::<[u8; 32]>()
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!(".{{0,{max}}}"))
            .unwrap()
            .prop_filter("fits the byte limit", move |s| s.len() <= max)
    }

    fn entry() -> impl Strategy<Value = Entry> {
        (
            text(64),
            any::<u64>(),
            any::<i64>(),
            proptest::option::of(hash()),
        )
            .prop_map(|(name, size, modified_ns, blake3)| Entry {
                name,
                size,
                modified_ns,
                blake3,
            })
    }

    fn client_entry() -> impl Strategy<Value = ClientEntry> {
        (
            (text(64), text(40), any::<i64>(), 0u8..3, text(100)),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                text(40),
            ),
        )
            .prop_map(
                |(
                    (name, address, connected_ns, a, target),
                    (done, total, bytes_sent, bytes_received, hub),
                )| {
                    ClientEntry {
                        name,
                        address,
                        connected_ns,
                        activity: [Activity::Idle, Activity::Uploading, Activity::Downloading]
                            [a as usize],
                        target,
                        done,
                        total,
                        bytes_sent,
                        bytes_received,
                        hub,
                    }
                },
            )
    }

    fn history_entry() -> impl Strategy<Value = HistoryEntry> {
        (
            (any::<i64>(), text(64), text(40), text(10), text(100)),
            (
                any::<bool>(),
                text(100),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
            ),
        )
            .prop_map(
                |((time_ns, client, address, op, target), (ok, error, bytes, duration_us, id))| {
                    HistoryEntry {
                        id,
                        time_ns,
                        client,
                        address,
                        op,
                        target,
                        ok,
                        error,
                        bytes,
                        duration_us,
                    }
                },
            )
    }

    fn standing() -> impl Strategy<Value = Standing> {
        (
            0u8..4,
            any::<bool>(),
            proptest::option::of(text(80)),
            proptest::option::of(any::<u64>()),
            proptest::option::of(proptest::array::uniform4(any::<u64>())),
        )
            .prop_map(|(role, may_upload, folder, room, quota)| Standing {
                role: CallerRole::from_u8(role).expect("0..4"),
                may_upload,
                folder,
                room,
                quota: quota.map(|q| QuotaUse {
                    bytes: q[0],
                    files: q[1],
                    used_bytes: q[2],
                    used_files: q[3],
                }),
            })
    }

    fn status_info() -> impl Strategy<Value = StatusInfo> {
        (
            (any::<i64>(), text(40), any::<i32>(), any::<u64>(), text(20)),
            proptest::array::uniform11(any::<u64>()),
            proptest::collection::vec(text(30), 0..5),
            standing(),
        )
            .prop_map(
                |((time_ns, time_zone, utc_offset_s, uptime_s, version), n, hubs, you)| {
                    StatusInfo {
                        time_ns,
                        time_zone,
                        utc_offset_s,
                        uptime_s,
                        version,
                        files: n[0],
                        bytes: n[1],
                        clients: n[2],
                        transfers: n[3],
                        cache_entries: n[4],
                        cache_bytes: n[5],
                        cache_hits: n[6],
                        cache_misses: n[7],
                        cache_evictions: n[8],
                        partials: n[9],
                        partial_bytes: n[10],
                        hubs,
                        you: Box::new(you),
                    }
                },
            )
    }

    fn share_entry() -> impl Strategy<Value = ShareEntry> {
        (
            any::<u64>(),
            text(300),
            any::<i64>(),
            any::<i64>(),
            text(16),
            text(40),
            proptest::option::of(any::<[u64; 4]>()),
            any::<[u64; 2]>(),
        )
            .prop_map(
                |(id, name, created_ns, expires_ns, state, made_by, upload, [most, used])| {
                    ShareEntry {
                        id,
                        name,
                        created_ns,
                        expires_ns,
                        state,
                        made_by,
                        upload: upload.map(|[bytes, files, used_bytes, used_files]| UploadUse {
                            bytes,
                            files,
                            used_bytes,
                            used_files,
                        }),
                        max_downloads: most,
                        downloads: used,
                    }
                },
            )
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (
                any::<u16>(),
                text(255),
                proptest::option::of(text(255)),
                proptest::option::of(text(64))
            )
                .prop_map(|(version, client, token, owner_key)| Hello {
                    magic: crate::MAGIC,
                    version,
                    client,
                    token,
                    owner_key
                }
                .into()),
            text(300).prop_map(|prefix| List { prefix }.into()),
            (text(300), any::<u64>()).prop_map(|(name, offset)| Get { name, offset }.into()),
            (text(300), any::<u64>(), any::<i64>(), any::<bool>()).prop_map(
                |(name, size, source_mtime_ns, force)| Put {
                    name,
                    size,
                    source_mtime_ns,
                    force
                }
                .into()
            ),
            hash().prop_map(|blake3| PutEnd { blake3 }.into()),
            (text(300), any::<bool>())
                .prop_map(|(name, recursive)| Remove { name, recursive }.into()),
            text(300).prop_map(|name| MakeFolder { name }.into()),
            (text(300), text(300), any::<bool>()).prop_map(|(from, to, force)| Move {
                from,
                to,
                force
            }
            .into()),
            (text(300), text(300), any::<bool>()).prop_map(|(from, to, force)| Copy {
                from,
                to,
                force
            }
            .into()),
            (text(300), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
                |(name, files, bytes, done)| Copied {
                    name,
                    files,
                    bytes,
                    done
                }
                .into()
            ),
            text(300).prop_map(|text| Find { text }.into()),
            (
                text(300),
                any::<bool>(),
                hash(),
                any::<i64>(),
                proptest::collection::vec(any::<u8>(), 0..2000)
            )
                .prop_map(|(name, force, blake3, modified_ns, data)| PutSmall {
                    name,
                    force,
                    blake3,
                    modified_ns,
                    data
                }
                .into()),
            any::<bool>().prop_map(|created| FolderMade { created }.into()),
            text(300).prop_map(|name| Moved { name }.into()),
            (
                text(300),
                any::<u64>(),
                proptest::option::of(any::<(u64, u64)>()),
                any::<u64>(),
            )
                .prop_map(|(name, expires_s, upload, max_downloads)| Share {
                    name,
                    expires_s,
                    upload: upload.map(|(bytes, files)| UploadBounds { bytes, files }),
                    max_downloads,
                }
                .into()),
            (any::<u64>(), text(60), text(300), any::<i64>(), text(100)).prop_map(
                |(id, secret, name, expires_ns, web)| Shared {
                    id,
                    secret,
                    name,
                    expires_ns,
                    web
                }
                .into()
            ),
            Just(Shares.into()),
            proptest::collection::vec(share_entry(), 0..20).prop_flat_map(|items| any::<bool>()
                .prop_map(move |last| ShareList {
                    items: items.clone(),
                    last
                }
                .into())),
            any::<u64>().prop_map(|id| Unshare { id }.into()),
            any::<u64>().prop_map(|id| Unshared { id }.into()),
            Just(Health.into()),
            (any::<bool>(), text(60), text(200)).prop_map(|(ok, hub, error)| HealthReport {
                ok,
                hub,
                error
            }
            .into()),
            (any::<u16>(), text(255), any::<u32>()).prop_map(|(version, server, max_frame)| {
                Welcome {
                    version,
                    server,
                    max_frame,
                }
                .into()
            }),
            (
                proptest::collection::vec(entry(), 0..20),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(entries, last, cut)| Entries { entries, last, cut }.into()),
            (any::<u64>(), any::<u64>(), any::<i64>()).prop_map(|(a, b, modified_ns)| {
                // A header never starts past the end of its file.
                FileHeader {
                    size: a.max(b),
                    offset: a.min(b),
                    modified_ns,
                }
                .into()
            }),
            hash().prop_map(|blake3| FileEnd { blake3 }.into()),
            any::<u64>().prop_map(|offset| PutReady { offset }.into()),
            (text(300), any::<u64>(), hash()).prop_map(|(name, size, blake3)| PutDone {
                name,
                size,
                blake3
            }
            .into()),
            any::<u64>().prop_map(|files| Removed { files }.into()),
            text(255).prop_map(|name| Register { name }.into()),
            Just(Registered.into()),
            Just(Who.into()),
            Just(Status.into()),
            (
                any::<u32>(),
                proptest::option::of(text(64)),
                proptest::option::of(text(16)),
                any::<u64>()
            )
                .prop_map(|(limit, client, op, before)| History {
                    limit,
                    client,
                    op,
                    before
                }
                .into()),
            (
                proptest::collection::vec(client_entry(), 0..8),
                any::<bool>()
            )
                .prop_map(|(items, last)| ClientList { items, last }.into()),
            (
                proptest::collection::vec(history_entry(), 0..8),
                any::<bool>(),
                any::<u64>()
            )
                .prop_map(|(items, last, next)| HistoryEntries { items, last, next }.into()),
            status_info().prop_map(Message::from),
            hash().prop_map(|id| Pieces { id }.into()),
            (
                any::<u64>(),
                proptest::collection::vec(hash(), 0..40),
                any::<bool>()
            )
                .prop_map(|(size, hashes, last)| PieceHashes { size, hashes, last }.into()),
            (hash(), any::<u32>()).prop_map(|(id, index)| GetPiece { id, index }.into()),
            (any::<u32>(), any::<u64>()).prop_map(|(index, len)| PieceData { index, len }.into()),
            (hash(), any::<bool>()).prop_map(|(id, sharing)| Holding { id, sharing }.into()),
            (hash(), any::<u32>()).prop_map(|(id, index)| Have { id, index }.into()),
            Just(SlotFree.into()),
            (
                hash(),
                proptest::collection::vec(any::<bool>(), 1..=MAX_BITFIELD_PIECES as usize)
            )
                .prop_map(|(id, held)| Bitfield::of(id, &held).into()),
            (any::<u16>(), text(1024)).prop_map(|(code, message)| Error {
                code: ErrorCode::from_u16(code),
                message
            }
            .into()),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(msg in message()) {
            let mut buf = Vec::new();
            encode_frame(&msg, &mut buf);
            prop_assert!(buf.len() <= MAX_FRAME_LEN + 4);
            let (back, used) = decode_frame(&buf).unwrap().unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes);
        }

        /// Valid frames, mutated: reaches every decoder past the length check. Whatever still
        /// decodes encodes back to what was read.
        #[test]
        fn mutated_frames_are_refused_or_round_trip(msg in message(), m in crate::testkit::mutations()) {
            let mut buf = Vec::new();
            encode_frame(&msg, &mut buf);
            let bytes = crate::testkit::mutate(buf, &m);
            if let Ok(Some((back, used))) = decode_frame(&bytes) {
                let mut again = Vec::new();
                encode_frame(&back, &mut again);
                prop_assert_eq!(&again[..], &bytes[..used]);
            }
        }

        #[test]
        fn a_trailing_byte_is_refused(msg in message()) {
            let mut buf = Vec::new();
            encode_frame(&msg, &mut buf);
            buf.push(0);
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) + 1;
            buf[..4].copy_from_slice(&len.to_be_bytes());
            prop_assert_eq!(decode_frame(&buf), Err(DecodeError::TrailingBytes(1)));
        }
    }

    #[test]
    fn the_fuzz_seed_corpus_holds_a_frame_of_every_kind() {
        // Two of each kind, the first the samples give.
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut seen = std::collections::HashMap::<u8, usize>::new();
        for m in crate::testkit::samples(message(), 2_000) {
            let n = seen.entry(m.kind()).or_default();
            if *n < 2 {
                *n += 1;
                let mut buf = Vec::new();
                encode_frame(&m, &mut buf);
                frames.push(buf);
            }
        }
        let missing: Vec<&u8> = Message::KINDS
            .iter()
            .filter(|k| !seen.contains_key(k))
            .collect();
        assert!(missing.is_empty(), "no sample of kinds {missing:x?}");
        crate::testkit::seed_corpus("frame_decode", &frames, |b| {
            matches!(decode_frame(b), Ok(Some(_)))
        });
    }

    #[test]
    fn a_full_entries_chunk_fits_in_one_frame() {
        let big = Entry {
            name: "n".repeat(MAX_WIRE_NAME),
            size: 1,
            modified_ns: 0,
            blake3: Some([0; 32]),
        };
        let mut chunk = Entries::default();
        while chunk.has_room_for(&big) {
            chunk.entries.push(big.clone());
        }
        assert!(!chunk.entries.is_empty());
        let mut buf = Vec::new();
        encode_frame(&chunk.into(), &mut buf);
        assert!(buf.len() <= MAX_FRAME_LEN + 4);
    }

    #[test]
    fn full_client_and_history_chunks_fit_in_one_frame() {
        let c = ClientEntry {
            name: "n".repeat(255),
            address: "a".repeat(255),
            connected_ns: 0,
            activity: Activity::Uploading,
            target: "t".repeat(MAX_WIRE_NAME),
            done: 0,
            total: 0,
            bytes_sent: 0,
            bytes_received: 0,
            hub: "h".repeat(255),
        };
        let mut chunk = ClientList::default();
        while chunk.has_room_for(&c) {
            chunk.items.push(c.clone());
        }
        let mut buf = Vec::new();
        encode_frame(&chunk.into(), &mut buf);
        assert!(buf.len() <= MAX_FRAME_LEN + 4);
        let h = HistoryEntry {
            id: u64::MAX,
            time_ns: 0,
            client: "c".repeat(255),
            address: "a".repeat(255),
            op: "put".into(),
            target: "t".repeat(MAX_WIRE_NAME),
            ok: false,
            error: "e".repeat(crate::MAX_ERROR_MESSAGE),
            bytes: 0,
            duration_us: 0,
        };
        let mut chunk = HistoryEntries::default();
        while chunk.has_room_for(&h) {
            chunk.items.push(h.clone());
        }
        buf.clear();
        encode_frame(&chunk.into(), &mut buf);
        assert!(buf.len() <= MAX_FRAME_LEN + 4);
    }

    #[test]
    fn booleans_other_than_zero_or_one_are_refused() {
        let mut buf = Vec::new();
        let chunk = HistoryEntries {
            items: Vec::new(),
            last: true,
            next: 0,
        };
        encode_frame(&chunk.into(), &mut buf);
        // The bool comes before the 8 bytes of `next`.
        let at = buf.len() - 9;
        buf[at] = 2;
        assert!(matches!(
            decode_frame(&buf),
            Err(DecodeError::BadValue { field: "last", .. })
        ));
    }

    #[test]
    fn an_entries_flag_unknown_is_refused() {
        let flags = |byte: u8| {
            let mut buf = Vec::new();
            encode_frame(&Entries::default().into(), &mut buf);
            *buf.last_mut().unwrap() = byte;
            decode_frame(&buf).map(|m| m.unwrap().0)
        };
        let both = Entries {
            entries: Vec::new(),
            last: true,
            cut: true,
        };
        assert_eq!(flags(3).unwrap(), Message::Entries(both));
        assert!(matches!(
            flags(4),
            Err(DecodeError::BadValue { field: "flags", .. })
        ));
    }

    #[test]
    fn a_bitfield_is_checked_against_its_count() {
        let held = [true, false, true];
        let b = Bitfield::of([1; 32], &held);
        assert_eq!(b.held(), held);
        let decode = |count: u32, bits: &[u8]| {
            let mut out = Vec::new();
            Bitfield {
                id: [1; 32],
                count,
                bits: bits.to_vec(),
            }
            .encode(&mut out);
            Bitfield::decode(&mut Reader::new(&out))
        };
        assert!(decode(3, &[0b101]).is_ok());
        assert!(decode(3, &[0b1101]).is_err(), "a bit past the last piece");
        assert!(decode(0, &[]).is_err(), "no pieces");
        assert!(
            decode(MAX_BITFIELD_PIECES + 1, &[0; 513]).is_err(),
            "too many"
        );
        assert!(decode(9, &[0]).is_err(), "bits missing");
    }
}
