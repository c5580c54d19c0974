//! The handshake: the client's `Hello` and the hub's `Welcome`.

use crate::codec::{DecodeError, Put, Reader};
use crate::MAX_SHORT_STR;

/// The first message on every connection, from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Always [`crate::MAGIC`]; anything else is another protocol.
    pub magic: [u8; 4],
    /// The protocol version the client speaks.
    pub version: u16,
    /// A name for the client, shown to others (`user@host` by default). At most 255 bytes.
    pub client: String,
    /// A secret that grants rights beyond the default policy. At most 255 bytes.
    pub token: Option<String>,
    /// A random secret this client keeps for this hub: what it uploads without a token, it may
    /// replace and delete again by presenting the same key. At most 255 bytes.
    pub owner_key: Option<String>,
}

impl Hello {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.magic);
        out.put_u16(self.version);
        out.put_str(crate::codec::truncate_utf8(&self.client, MAX_SHORT_STR));
        out.put_opt_str(self.token.as_deref());
        out.put_opt_str(self.owner_key.as_deref());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            magic: r.magic()?,
            version: r.u16()?,
            client: r.str("client", MAX_SHORT_STR)?,
            token: r.opt_str("token", MAX_SHORT_STR)?,
            owner_key: r.opt_str("owner_key", MAX_SHORT_STR)?,
        })
    }
}

/// The hub's answer to an acceptable `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version the hub will speak on this connection.
    pub version: u16,
    /// The hub's software and version, for display (`troca 0.1.0`).
    pub server: String,
    /// The largest frame the hub accepts.
    pub max_frame: u32,
}

impl Welcome {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.version);
        out.put_str(crate::codec::truncate_utf8(&self.server, MAX_SHORT_STR));
        out.put_u32(self.max_frame);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            version: r.u16()?,
            server: r.str("server", MAX_SHORT_STR)?,
            max_frame: r.u32()?,
        })
    }
}
