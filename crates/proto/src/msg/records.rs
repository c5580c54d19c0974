//! The hub's records: registering a name, who is connected, the request history, the hub's
//! status and time. Lists that may outgrow a frame come in chunks ending with `last` set, like
//! `Entries`.

use super::MAX_WIRE_NAME;
use crate::codec::{DecodeError, Put, Reader};
use crate::frame::MAX_FRAME_LEN;
use crate::MAX_SHORT_STR;

/// Changes the name this connection shows to others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub name: String,
}

impl Register {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(crate::codec::truncate_utf8(&self.name, MAX_SHORT_STR));
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_SHORT_STR)?,
        })
    }
}

/// The new name is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered;

impl Registered {
    pub(crate) fn encode(&self, _out: &mut [u8]) {}

    pub(crate) fn decode(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}

/// Asks who is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who;

impl Who {
    pub(crate) fn encode(&self, _out: &mut [u8]) {}

    pub(crate) fn decode(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}

/// What a connected client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Idle,
    Uploading,
    Downloading,
}

impl Activity {
    pub fn to_u8(self) -> u8 {
        match self {
            Activity::Idle => 0,
            Activity::Uploading => 1,
            Activity::Downloading => 2,
        }
    }

    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(Activity::Idle),
            1 => Ok(Activity::Uploading),
            2 => Ok(Activity::Downloading),
            v => Err(DecodeError::BadValue {
                field: "activity",
                value: v.into(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Idle => "idle",
            Activity::Uploading => "uploading",
            Activity::Downloading => "downloading",
        }
    }
}

/// One connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEntry {
    pub name: String,
    /// `IP:PORT` as the hub sees it.
    pub address: String,
    /// When it connected, ns since the epoch.
    pub connected_ns: i64,
    pub activity: Activity,
    /// The file being moved (empty when idle).
    pub target: String,
    /// Bytes of the current transfer done so far, and its total.
    pub done: u64,
    pub total: u64,
    /// Bytes the hub sent to and received from this client since it connected.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The hub it is connected to, among the hubs sharing one database (empty for a hub on
    /// its own).
    pub hub: String,
}

impl ClientEntry {
    fn encoded_len(&self) -> usize {
        2 + self.name.len()
            + 2
            + self.address.len()
            + 8
            + 1
            + 2
            + self.target.len()
            + 8 * 4
            + 2
            + self.hub.len()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
        out.put_str(&self.address);
        out.put_i64(self.connected_ns);
        out.put_u8(self.activity.to_u8());
        out.put_str(&self.target);
        out.put_u64(self.done);
        out.put_u64(self.total);
        out.put_u64(self.bytes_sent);
        out.put_u64(self.bytes_received);
        out.put_str(&self.hub);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_SHORT_STR)?,
            address: r.str("address", MAX_SHORT_STR)?,
            connected_ns: r.i64()?,
            activity: Activity::from_u8(r.u8()?)?,
            target: r.str("target", MAX_WIRE_NAME)?,
            done: r.u64()?,
            total: r.u64()?,
            bytes_sent: r.u64()?,
            bytes_received: r.u64()?,
            hub: r.str("hub", MAX_SHORT_STR)?,
        })
    }
}

/// The most entries one `History` request returns; older ones are asked for page by page.
pub const MAX_HISTORY_PAGE: u32 = 1_000;

/// Asks for up to `limit` requests (at most [`MAX_HISTORY_PAGE`]) older than `before` (a request
/// id; 0 for the newest), newest first, optionally only one client's (by name) or one
/// operation's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub limit: u32,
    pub client: Option<String>,
    pub op: Option<String>,
    pub before: u64,
}

impl History {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.limit);
        out.put_opt_str(self.client.as_deref());
        out.put_opt_str(self.op.as_deref());
        out.put_u64(self.before);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            limit: r.u32()?,
            client: r.opt_str("client", MAX_SHORT_STR)?,
            op: r.opt_str("op", MAX_SHORT_STR)?,
            before: r.u64()?,
        })
    }
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The request's number: ids grow with time and are never reused.
    pub id: u64,
    /// When it arrived, ns since the epoch.
    pub time_ns: i64,
    pub client: String,
    pub address: String,
    /// `list`, `get`, `put`, `rm`, `who`, `history`, `status`, `register`, `hello`.
    pub op: String,
    pub target: String,
    pub ok: bool,
    /// The error code and message when not ok (empty when ok).
    pub error: String,
    pub bytes: u64,
    pub duration_us: u64,
}

impl HistoryEntry {
    fn encoded_len(&self) -> usize {
        8 + 8
            + 2
            + self.client.len()
            + 2
            + self.address.len()
            + 2
            + self.op.len()
            + 2
            + self.target.len()
            + 1
            + 2
            + self.error.len()
            + 16
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.id);
        out.put_i64(self.time_ns);
        out.put_str(&self.client);
        out.put_str(&self.address);
        out.put_str(&self.op);
        out.put_str(&self.target);
        out.put_bool(self.ok);
        out.put_str(crate::codec::truncate_utf8(
            &self.error,
            crate::MAX_ERROR_MESSAGE,
        ));
        out.put_u64(self.bytes);
        out.put_u64(self.duration_us);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u64()?,
            time_ns: r.i64()?,
            client: r.str("client", MAX_SHORT_STR)?,
            address: r.str("address", MAX_SHORT_STR)?,
            op: r.str("op", MAX_SHORT_STR)?,
            target: r.str("target", MAX_WIRE_NAME)?,
            ok: r.bool("ok")?,
            error: r.str("error", crate::MAX_ERROR_MESSAGE)?,
            bytes: r.u64()?,
            duration_us: r.u64()?,
        })
    }
}

/// Generates a chunked list message: `count: u32`, the items, `last: bool`.
macro_rules! chunked {
    ($(#[$doc:meta])* $name:ident, $item:ident, $min_item:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub items: Vec<$item>,
            pub last: bool,
        }

        impl $name {
            /// Whether `item` still fits in this chunk's frame.
            pub fn has_room_for(&self, item: &$item) -> bool {
                let used: usize = 1 + 4 + 1 + self.items.iter().map($item::encoded_len).sum::<usize>();
                used + item.encoded_len() <= MAX_FRAME_LEN
            }

            pub(crate) fn encode(&self, out: &mut Vec<u8>) {
                out.put_u32(self.items.len() as u32);
                for i in &self.items {
                    i.encode(out);
                }
                out.put_bool(self.last);
            }

            pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let count = r.u32()? as usize;
                if count > MAX_FRAME_LEN / $min_item {
                    return Err(DecodeError::BadValue {
                        field: "count",
                        value: count as u64,
                    });
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push($item::decode(r)?);
                }
                Ok(Self {
                    items,
                    last: r.bool("last")?,
                })
            }
        }
    };
}

chunked!(
    /// One chunk of the answer to `Who`.
    ClientList,
    ClientEntry,
    47
);
/// One chunk of the answer to `History`, newest first. The last chunk carries `next`: the
/// `before` that asks for the following page, or 0 when no older entries are left.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryEntries {
    pub items: Vec<HistoryEntry>,
    pub last: bool,
    pub next: u64,
}

impl HistoryEntries {
    /// Whether `item` still fits in this chunk's frame.
    pub fn has_room_for(&self, item: &HistoryEntry) -> bool {
        let used: usize = 1
            + 4
            + 1
            + 8
            + self
                .items
                .iter()
                .map(HistoryEntry::encoded_len)
                .sum::<usize>();
        used + item.encoded_len() <= MAX_FRAME_LEN
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.items.len() as u32);
        for i in &self.items {
            i.encode(out);
        }
        out.put_bool(self.last);
        out.put_u64(self.next);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u32()? as usize;
        if count > MAX_FRAME_LEN / 43 {
            return Err(DecodeError::BadValue {
                field: "count",
                value: count as u64,
            });
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(HistoryEntry::decode(r)?);
        }
        Ok(Self {
            items,
            last: r.bool("last")?,
            next: r.u64()?,
        })
    }
}

/// Asks for the hub's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status;

impl Status {
    pub(crate) fn encode(&self, _out: &mut [u8]) {}

    pub(crate) fn decode(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}

/// The hub's status: its clock and time zone, and what it holds and does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusInfo {
    /// The hub's current time, ns since the epoch.
    pub time_ns: i64,
    /// The hub's time zone (an IANA name such as `America/Sao_Paulo`, or `UTC`).
    pub time_zone: String,
    /// The zone's offset from UTC now, in seconds.
    pub utc_offset_s: i32,
    pub uptime_s: u64,
    /// The hub's software version.
    pub version: String,
    pub files: u64,
    pub bytes: u64,
    pub clients: u64,
    pub transfers: u64,
    pub cache_entries: u64,
    pub cache_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_evictions: u64,
    /// Interrupted or running uploads the hub holds, and their bytes.
    pub partials: u64,
    pub partial_bytes: u64,
    /// The hubs sharing this hub's database, running now (empty for a hub on its own); at most
    /// [`MAX_HUBS`].
    pub hubs: Vec<String>,
    /// What the asking client may do here (boxed: every `Message` is as large as its largest
    /// kind, and this rare one would otherwise make them all a hundred bytes larger).
    pub you: Box<Standing>,
}

/// What a client may do on a hub, as the hub sees it: its role, where its token reaches, and
/// how much it may still upload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Standing {
    pub role: CallerRole,
    /// Whether it may upload at all (not a read token, not a read-only hub, …).
    pub may_upload: bool,
    /// The folder its token is held to (`None`: the whole share).
    pub folder: Option<String>,
    /// The bytes it may still upload: the disk's room within what its token's quota leaves
    /// (`None` when nothing says, as on an object store without a quota).
    pub room: Option<u64>,
    /// Its token's quota and what the token keeps now (`None`: a token without one, or none).
    pub quota: Option<QuotaUse>,
}

/// A token's quota (0: no bound on that) and what its files keep now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUse {
    pub bytes: u64,
    pub files: u64,
    pub used_bytes: u64,
    pub used_files: u64,
}

/// Who a client is to a hub: no token, or a token of one of the four roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallerRole {
    #[default]
    Anonymous,
    Read,
    Write,
    Admin,
    /// An upload link's token: it uploads new names and reads nothing.
    Upload,
}

impl CallerRole {
    pub fn to_u8(self) -> u8 {
        match self {
            CallerRole::Anonymous => 0,
            CallerRole::Read => 1,
            CallerRole::Write => 2,
            CallerRole::Admin => 3,
            CallerRole::Upload => 4,
        }
    }

    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(CallerRole::Anonymous),
            1 => Ok(CallerRole::Read),
            2 => Ok(CallerRole::Write),
            3 => Ok(CallerRole::Admin),
            4 => Ok(CallerRole::Upload),
            v => Err(DecodeError::BadValue {
                field: "role",
                value: v.into(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallerRole::Anonymous => "anonymous",
            CallerRole::Read => "read",
            CallerRole::Write => "write",
            CallerRole::Admin => "admin",
            CallerRole::Upload => "upload",
        }
    }
}

impl Standing {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.role.to_u8());
        out.put_bool(self.may_upload);
        out.put_opt_str(
            self.folder
                .as_deref()
                .map(|f| crate::codec::truncate_utf8(f, MAX_WIRE_NAME)),
        );
        out.put_opt_u64(self.room);
        match &self.quota {
            None => out.put_u8(0),
            Some(q) => {
                out.put_u8(1);
                for v in [q.bytes, q.files, q.used_bytes, q.used_files] {
                    out.put_u64(v);
                }
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            role: CallerRole::from_u8(r.u8()?)?,
            may_upload: r.bool("may_upload")?,
            folder: r.opt_str("folder", MAX_WIRE_NAME)?,
            room: r.opt_u64("room")?,
            quota: if r.bool("quota")? {
                Some(QuotaUse {
                    bytes: r.u64()?,
                    files: r.u64()?,
                    used_bytes: r.u64()?,
                    used_files: r.u64()?,
                })
            } else {
                None
            },
        })
    }
}

/// The most hubs a `StatusInfo` names.
pub const MAX_HUBS: usize = 64;

impl StatusInfo {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_i64(self.time_ns);
        out.put_str(crate::codec::truncate_utf8(&self.time_zone, MAX_SHORT_STR));
        out.put_u32(self.utc_offset_s as u32);
        out.put_u64(self.uptime_s);
        out.put_str(crate::codec::truncate_utf8(&self.version, MAX_SHORT_STR));
        for v in [
            self.files,
            self.bytes,
            self.clients,
            self.transfers,
            self.cache_entries,
            self.cache_bytes,
            self.cache_hits,
            self.cache_misses,
            self.cache_evictions,
            self.partials,
            self.partial_bytes,
        ] {
            out.put_u64(v);
        }
        let hubs = &self.hubs[..self.hubs.len().min(MAX_HUBS)];
        out.put_u16(hubs.len() as u16);
        for h in hubs {
            out.put_str(crate::codec::truncate_utf8(h, MAX_SHORT_STR));
        }
        self.you.encode(out);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            time_ns: r.i64()?,
            time_zone: r.str("time_zone", MAX_SHORT_STR)?,
            utc_offset_s: r.u32()? as i32,
            uptime_s: r.u64()?,
            version: r.str("version", MAX_SHORT_STR)?,
            files: r.u64()?,
            bytes: r.u64()?,
            clients: r.u64()?,
            transfers: r.u64()?,
            cache_entries: r.u64()?,
            cache_bytes: r.u64()?,
            cache_hits: r.u64()?,
            cache_misses: r.u64()?,
            cache_evictions: r.u64()?,
            partials: r.u64()?,
            partial_bytes: r.u64()?,
            hubs: {
                let n = r.u16()? as usize;
                if n > MAX_HUBS {
                    return Err(DecodeError::BadValue {
                        field: "hub count",
                        value: n as u64,
                    });
                }
                (0..n)
                    .map(|_| r.str("hub", MAX_SHORT_STR))
                    .collect::<Result<_, _>>()?
            },
            you: Box::new(Standing::decode(r)?),
        })
    }
}
