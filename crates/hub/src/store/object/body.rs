//! Reading an object: a ranged GET streamed as it arrives. Sequential reads (a download, a zip)
//! continue one GET; a read elsewhere starts another. A download to a plain connection may
//! instead take the GET's socket itself ([`RawGet`]), to pass the bytes on with `splice`.

use crate::pg::block;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::signer::Signer as _;
use object_store::{GetOptions, GetRange, ObjectStore as _};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// An object being read.
pub struct ObjectBody {
    s3: Arc<object_store::aws::AmazonS3>,
    /// The object's key (made a path only when read: a download from the hot cache never is).
    key: Arc<str>,
    pub size: u64,
    cursor: Mutex<Option<Cursor>>,
    /// A GET opened ahead (see [`ObjectBody::prepare`]): its range and its bytes.
    prepared: Mutex<Option<Box<Prepared>>>,
}

struct Prepared {
    start: u64,
    end: u64,
    opened: Opened,
}

/// How a prepared GET's bytes will be read.
enum Opened {
    /// Through the S3 client, as a stream of buffers.
    Stream(BoxStream<'static, io::Result<Bytes>>),
    /// Straight from the socket.
    Raw(RawGet),
}

/// A ranged GET on a connection of its own whose body is still in the socket, so it can be sent
/// on with `splice` without passing through the hub's memory (the S3 client would read every
/// byte into a buffer first). Made from a presigned URL, for a store reached over plain HTTP
/// (over HTTPS the hub must decrypt the bytes anyway, so the S3 client is used).
#[derive(Debug)]
pub struct RawGet {
    pub tcp: TcpStream,
    /// Body bytes that arrived together with the response's head.
    pub early: Vec<u8>,
}

/// How long a presigned URL stays valid: it is used at once.
const PRESIGNED_FOR: Duration = Duration::from_secs(300);
/// The most a response's head may take before its body, and how long it may take to come.
const HEAD_LIMIT: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// client can be given, before anything of the file is sent. `raw`: the bytes will go to a
    /// plain socket, so take the GET's own socket if the store allows ([`ObjectBody::take_raw`]).
    pub async fn prepare(&self, start: u64, end: u64, raw: bool) -> io::Result<()> {
        let got = if raw {
            self.open_raw(start, end).await
        } else {
            None
        };
        let opened = match got {
            Some(got) => Opened::Raw(got),
            None => Opened::Stream(self.get(start, end).await?),
        };
        *self.prepared.lock().expect("object body poisoned") =
            Some(Box::new(Prepared { start, end, opened }));
        Ok(())
    }

    /// What was [`ObjectBody::prepare`]d for `start..end`, if that is the range prepared.
    fn take(&self, start: u64, end: u64) -> Option<Opened> {
        let mut prepared = self.prepared.lock().expect("object body poisoned");
        match prepared.take() {
            Some(p) if (p.start, p.end) == (start, end) => Some(p.opened),
            other => {
                *prepared = other;
                None
            }
        }
    }

    /// The GET [`ObjectBody::prepare`]d for `start..end` as a stream, if that is the one
    /// prepared.
    pub fn take_prepared(
        &self,
        start: u64,
        end: u64,
    ) -> Option<BoxStream<'static, io::Result<Bytes>>> {
        match self.take(start, end)? {
            Opened::Stream(stream) => Some(stream),
            Opened::Raw(_) => None,
        }
    }

    /// The GET of `start..end` prepared with its own socket, if it was.
    pub fn take_raw(&self, start: u64, end: u64) -> Option<RawGet> {
        match self.take(start, end)? {
            Opened::Raw(raw) => Some(raw),
            Opened::Stream(_) => None,
        }
    }

    /// The bytes `start..end`, as they arrive (from the GET prepared for them, if any).
    pub async fn stream(
        &self,
        start: u64,
        end: u64,
    ) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        match self.take_prepared(start, end) {
            Some(stream) => Ok(stream),
            None => self.get(start, end).await,
        }
    }

    /// A ranged GET of `start..end` on a connection of its own, its head read and checked.
    /// `None` when the store is not reached over plain HTTP or answers anything but the range
    /// asked for: the S3 client then makes the request again, with its retries and its errors.
    async fn open_raw(&self, start: u64, end: u64) -> Option<RawGet> {
        let path = object_store::path::Path::from(&*self.key);
        let url = self
            .s3
            .signed_url(http::Method::GET, &path, PRESIGNED_FOR)
            .await
            .ok()?;
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let request = format!(
            "GET {}?{} HTTP/1.1\r\nHost: {authority}\r\nRange: bytes={start}-{}\r\n\
             Connection: close\r\n\r\n",
            url.path(),
            url.query().unwrap_or_default(),
            end - 1,
        );
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let opened = tokio::time::timeout(HEAD_TIMEOUT, async {
            let mut tcp = TcpStream::connect((bare_host, port)).await?;
            tcp.set_nodelay(true)?;
            tcp.write_all(request.as_bytes()).await?;
            let early = read_range_head(&mut tcp, end - start).await?;
            Ok::<_, io::Error>(RawGet { tcp, early })
        })
        .await;
        match opened {
            Ok(Ok(raw)) => Some(raw),
            Ok(Err(e)) => {
                tracing::debug!(
                    "a direct GET of {} failed ({e}); using the S3 client",
                    self.key
                );
                None
            }
            Err(_) => None,
        }
    }

    /// The bytes `start..end` through the S3 client, a GET at a time: a read that fails part
    /// way (the store silent for `--store-timeout`, a connection it closed while a slow reader
    /// took the bytes) goes on with a new GET of the rest, up to [`REOPENS`] times in a row
    /// without a byte between. The S3 client retries a broken body itself only within its
    /// first seconds. The object never changes (its key is its hash).
    async fn get(&self, start: u64, end: u64) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        let first = open_range(&self.s3, &self.key, start, end).await?;
        let rest = Rest {
            s3: Arc::clone(&self.s3),
            key: Arc::clone(&self.key),
            pos: start,
            end,
            stream: first,
            failed: 0,
        };
        Ok(futures_util::stream::unfold(Some(rest), |rest| async move {
            let mut rest = rest?;
            let item = rest.next().await?;
            let more = item.is_ok().then_some(rest);
            Some((item, more))
        })
        .boxed())
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

/// How many times in a row a read of an object may fail and be taken up again.
const REOPENS: u32 = 3;

/// A ranged GET of `start..end` through the S3 client.
async fn open_range(
    s3: &object_store::aws::AmazonS3,
    key: &str,
    start: u64,
    end: u64,
) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
    let got = s3
        .get_opts(
            &object_store::path::Path::from(key),
            GetOptions {
                range: Some(GetRange::Bounded(start..end)),
                ..Default::default()
            },
        )
        .await
        .map_err(store_err)?;
    Ok(got.into_stream().map(|r| r.map_err(store_err)).boxed())
}

/// What is left of a read through the S3 client: where it is and the GET it reads from.
struct Rest {
    s3: Arc<object_store::aws::AmazonS3>,
    key: Arc<str>,
    pos: u64,
    end: u64,
    stream: BoxStream<'static, io::Result<Bytes>>,
    /// Failures since the last byte.
    failed: u32,
}

impl Rest {
    /// The next bytes, opening a GET of the rest after a failure; `None` at the end.
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            match self.stream.next().await? {
                Ok(bytes) => {
                    self.pos += bytes.len() as u64;
                    self.failed = 0;
                    return Some(Ok(bytes));
                }
                Err(e) if self.failed >= REOPENS || self.pos >= self.end => return Some(Err(e)),
                Err(e) => {
                    self.failed += 1;
                    tracing::debug!(
                        "reading {} stopped at {} ({e}); reading on",
                        self.key,
                        self.pos
                    );
                    match open_range(&self.s3, &self.key, self.pos, self.end).await {
                        Ok(stream) => self.stream = stream,
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }
}

/// Reads the head of the answer to a ranged GET of `len` bytes; returns the body bytes that
/// came with it. Anything but `206 Partial Content` with that length is an error.
async fn read_range_head(tcp: &mut TcpStream, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        if buf.len() >= HEAD_LIMIT {
            return Err(io::Error::other("the response's head is too long"));
        }
        buf.reserve(4096);
        if tcp.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut head = httparse::Response::new(&mut headers);
        let parsed = head.parse(&buf).map_err(io::Error::other)?;
        let httparse::Status::Complete(head_len) = parsed else {
            continue;
        };
        if head.code != Some(206) {
            return Err(io::Error::other(format!("status {:?}", head.code)));
        }
        let header = |name: &str| {
            head.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        if header("transfer-encoding").is_some() {
            return Err(io::Error::other("a body in chunks"));
        }
        if header("content-length").and_then(|v| v.trim().parse::<u64>().ok()) != Some(len) {
            return Err(io::Error::other("not the length asked for"));
        }
        let mut early = buf.split_off(head_len);
        early.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        return Ok(early);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head `answer` (sent in pieces of `piece` bytes) read as the answer to a GET of `len`.
    async fn head_of(answer: Vec<u8>, piece: usize, len: u64) -> io::Result<Vec<u8>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for chunk in answer.chunks(piece) {
                s.write_all(chunk).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let got = read_range_head(&mut tcp, len).await;
        server.await.unwrap();
        got
    }

    fn answer(head: &str, body: &[u8]) -> Vec<u8> {
        let mut a = head.replace('\n', "\r\n").into_bytes();
        a.extend_from_slice(body);
        a
    }

    /// A 206 with the length asked for: the body bytes that came with the head are handed back,
    /// however the head was split.
    #[tokio::test]
    async fn a_partial_content_head_gives_back_the_early_body() {
        let ok = answer(
            "HTTP/1.1 206 Partial Content\nContent-Range: bytes 5-14/100\nContent-Length: 10\n\n",
            b"0123456789",
        );
        for piece in [1, 7, 4096] {
            let early = head_of(ok.clone(), piece, 10).await.unwrap();
            assert!(b"0123456789".starts_with(&early), "{early:?}");
        }
        assert_eq!(head_of(ok, 4096, 10).await.unwrap(), b"0123456789");
    }

    /// Anything else is refused (so the S3 client makes the request instead): another status,
    /// another length, a chunked body, a head that never ends, a connection closed early.
    #[tokio::test]
    async fn any_other_answer_is_refused() {
        let refused = [
            answer("HTTP/1.1 200 OK\nContent-Length: 10\n\n", b"0123456789"),
            answer("HTTP/1.1 403 Forbidden\nContent-Length: 0\n\n", b""),
            answer(
                "HTTP/1.1 206 Partial Content\nContent-Length: 9\n\n",
                b"012345678",
            ),
            answer(
                "HTTP/1.1 206 Partial Content\nTransfer-Encoding: chunked\nContent-Length: 10\n\n",
                b"",
            ),
            answer("HTTP/1.1 206 Partial Content\nContent-Length: 10\n", b""),
            [
                b"HTTP/1.1 206 Partial Content\r\n".to_vec(),
                vec![b'x'; 20_000],
            ]
            .concat(),
            b"not http at all\r\n\r\n".to_vec(),
        ];
        for a in refused {
            let shown = String::from_utf8_lossy(&a[..a.len().min(60)]).into_owned();
            assert!(head_of(a, 4096, 10).await.is_err(), "accepted: {shown}");
        }
    }
}
