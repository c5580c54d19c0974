//! Primitive encoders and a bounds-checked reader shared by every message codec.
//!
//! Integers are big-endian. A string is a `u16` byte length followed by UTF-8. An optional value
//! is a `u8` tag (0 absent, 1 present) followed by the value. A boolean is one byte, 0 or 1; any
//! other value is an error, so every message has exactly one encoding.

use crate::{Hash, HASH_LEN};

/// Why a frame could not be decoded. An *incomplete* frame is not an error: decoders return
/// `Ok(None)` for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes exceeds the limit of {1} bytes")]
    FrameTooLarge(usize, usize),
    #[error("empty frame")]
    EmptyFrame,
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("message truncated")]
    Truncated,
    #[error("{0} trailing bytes after message")]
    TrailingBytes(usize),
    #[error("string is not valid UTF-8")]
    BadUtf8,
    #[error("invalid value {value} for {field}")]
    BadValue { field: &'static str, value: u64 },
    #[error("{field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

/// Appends primitives to a byte buffer.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_i64(&mut self, v: i64);
    fn put_bool(&mut self, v: bool);
    fn put_str(&mut self, s: &str);
    fn put_hash(&mut self, h: &Hash);
    fn put_opt_str(&mut self, s: Option<&str>);
    fn put_opt_hash(&mut self, h: Option<&Hash>);
    fn put_opt_u64(&mut self, v: Option<u64>);
    /// A `u32` length, then the bytes.
    fn put_bytes(&mut self, b: &[u8]);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_bool(&mut self, v: bool) {
        self.push(u8::from(v));
    }
    /// Strings longer than `u16::MAX` bytes cannot be encoded; callers keep every string within
    /// its documented limit, which are all far smaller, so this truncates at a character boundary
    /// rather than corrupting the frame.
    fn put_str(&mut self, s: &str) {
        let s = truncate_utf8(s, u16::MAX as usize);
        self.put_u16(s.len() as u16);
        self.extend_from_slice(s.as_bytes());
    }
    fn put_hash(&mut self, h: &Hash) {
        self.extend_from_slice(h);
    }
    fn put_opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.put_u8(0),
            Some(s) => {
                self.put_u8(1);
                self.put_str(s);
            }
        }
    }
    fn put_bytes(&mut self, b: &[u8]) {
        self.put_u32(b.len() as u32);
        self.extend_from_slice(b);
    }

    fn put_opt_hash(&mut self, h: Option<&Hash>) {
        match h {
            None => self.put_u8(0),
            Some(h) => {
                self.put_u8(1);
                self.put_hash(h);
            }
        }
    }

    fn put_opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.put_u8(0),
            Some(v) => {
                self.put_u8(1);
                self.put_u64(v);
            }
        }
    }
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads primitives from a message payload, failing with [`DecodeError::Truncated`] rather than
/// panicking when the payload is short.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::BadValue {
                field,
                value: v.into(),
            }),
        }
    }
    pub(crate) fn magic(&mut self) -> Result<[u8; 4], DecodeError> {
        self.array()
    }
    pub(crate) fn str(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8)
    }
    /// A `u32` length, then that many bytes (which the frame itself bounds).
    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
    /// Exactly `n` bytes (a length the message fixed).
    pub(crate) fn exactly(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.take(n)
    }
    pub(crate) fn hash_prefix16(&mut self) -> Result<[u8; 16], DecodeError> {
        self.array::<16>()
    }
    pub(crate) fn hash(&mut self) -> Result<Hash, DecodeError> {
        self.array::<HASH_LEN>()
    }
    fn tag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        self.bool(field)
    }
    pub(crate) fn opt_str(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<Option<String>, DecodeError> {
        if self.tag(field)? {
            self.str(field, max).map(Some)
        } else {
            Ok(None)
        }
    }
    pub(crate) fn opt_hash(&mut self, field: &'static str) -> Result<Option<Hash>, DecodeError> {
        if self.tag(field)? {
            self.hash().map(Some)
        } else {
            Ok(None)
        }
    }
    pub(crate) fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        if self.tag(field)? {
            self.u64().map(Some)
        } else {
            Ok(None)
        }
    }
    /// Fails unless the whole payload was consumed, so each message has exactly one encoding.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}
