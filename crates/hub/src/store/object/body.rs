//! Reading an object: a ranged GET streamed as it arrives. Sequential reads (a download, a zip)
//! continue one GET; a read elsewhere starts another.

use crate::pg::block;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::{GetOptions, GetRange, ObjectStore as _};
use std::io;
use std::sync::{Arc, Mutex};

/// An object being read.
pub struct ObjectBody {
    s3: Arc<object_store::aws::AmazonS3>,
    /// The object's key (made a path only when read: a download from the hot cache never is).
    key: Arc<str>,
    pub size: u64,
    cursor: Mutex<Option<Cursor>>,
    /// A GET opened ahead (see [`ObjectBody::prepare`]): its range and its bytes.
    prepared: Mutex<Option<Prepared>>,
}

struct Prepared {
    start: u64,
    end: u64,
    stream: BoxStream<'static, io::Result<Bytes>>,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish()
    }
}

/// A GET in progress: where its next byte is, and what has arrived but not been read.
struct Cursor {
    pos: u64,
    left: Bytes,
    stream: BoxStream<'static, io::Result<Bytes>>,
}

fn store_err(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(
            io::ErrorKind::NotFound,
            "the object is missing from the store",
        ),
        e => io::Error::other(format!("object store: {e}")),
    }
}

impl ObjectBody {
    pub fn new(s3: Arc<object_store::aws::AmazonS3>, key: Arc<str>, size: u64) -> Self {
        Self {
            s3,
            key,
            size,
            cursor: Mutex::new(None),
            prepared: Mutex::new(None),
        }
    }

    /// Opens the GET of `start..end` now, so a store that cannot be reached is an answer the
    /// client can be given, before anything of the file is sent.
    pub async fn prepare(&self, start: u64, end: u64) -> io::Result<()> {
        let stream = self.get(start, end).await?;
        *self.prepared.lock().expect("object body poisoned") =
            Some(Prepared { start, end, stream });
        Ok(())
    }

    /// The GET [`ObjectBody::prepare`]d for `start..end`, if that is the one prepared.
    pub fn take_prepared(
        &self,
        start: u64,
        end: u64,
    ) -> Option<BoxStream<'static, io::Result<Bytes>>> {
        let mut prepared = self.prepared.lock().expect("object body poisoned");
        match prepared.take() {
            Some(p) if (p.start, p.end) == (start, end) => Some(p.stream),
            other => {
                *prepared = other;
                None
            }
        }
    }

    /// The bytes `start..end`, as they arrive (from the GET prepared for them, if any).
    pub async fn stream(
        &self,
        start: u64,
        end: u64,
    ) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        let prepared = self.prepared.lock().expect("object body poisoned").take();
        match prepared {
            Some(p) if (p.start, p.end) == (start, end) => Ok(p.stream),
            _ => self.get(start, end).await,
        }
    }

    async fn get(&self, start: u64, end: u64) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        let got = self
            .s3
            .get_opts(
                &object_store::path::Path::from(&*self.key),
                GetOptions {
                    range: Some(GetRange::Bounded(start..end)),
                    ..Default::default()
                },
            )
            .await
            .map_err(store_err)?;
        Ok(got.into_stream().map(|r| r.map_err(store_err)).boxed())
    }

    /// Reads at `pos`, as `pread` does (0 at the end). Blocking.
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        if pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let mut held = self.cursor.lock().expect("object cursor poisoned");
        if held.as_ref().is_none_or(|c| c.pos != pos) {
            let stream = block(self.stream(pos, self.size))?;
            *held = Some(Cursor {
                pos,
                left: Bytes::new(),
                stream,
            });
        }
        let c = held.as_mut().expect("just set");
        if c.left.is_empty() {
            c.left = match block(c.stream.next()) {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    *held = None;
                    return Err(e);
                }
                None => return Ok(0),
            };
        }
        let n = c.left.len().min(buf.len());
        buf[..n].copy_from_slice(&c.left.split_to(n));
        c.pos += n as u64;
        Ok(n)
    }

    /// Fills `buf` from `pos`, or fails if the object ends first. Blocking.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, pos)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object is shorter than recorded",
                ));
            }
            buf = &mut buf[n..];
            pos += n as u64;
        }
        Ok(())
    }
}
