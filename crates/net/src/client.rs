//! The async hub client: one connection, one request at a time, typed answers.
//!
//! Transfers hand out a short-lived [`Download`] or [`Upload`] that borrows the client for the
//! duration of the raw bytes, so the type system stops a second request from being interleaved
//! with a file body.

use crate::connection::Connection;
use crate::error::ClientError;
use crate::stream::Stream;
use std::sync::Arc;
use tokio::net::TcpStream;
use troca_proto::msg::{
    ClientEntry, ClientList, Copied, Copy, Entries, Entry, FileEnd, FileHeader, Find, Get, Health,
    HealthReport, Hello, History, HistoryEntry, List, MakeFolder, Move, Put, PutDone, PutEnd,
    PutReady, Register, Remove, Share, ShareEntry, ShareList, Shared, Shares, Status, StatusInfo,
    Unshare, Welcome, Who,
};
use troca_proto::{Hash, Message, MAGIC, PROTOCOL_VERSION};

/// Who the client says it is.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Shown to others on the hub.
    pub name: String,
    /// A secret granting rights beyond the default policy.
    pub token: Option<String>,
    /// This client's owner key for the hub: what it uploads without a token stays its own.
    pub owner_key: Option<String>,
    /// Which key the hub must show (TLS), or plaintext.
    pub trust: crate::tls::Trust,
    /// Certificate authorities that may vouch for a hub whose key is not pinned (one with a
    /// CA-issued certificate), checked against the host name in the address.
    pub roots: Option<Arc<rustls::RootCertStore>>,
    /// How long to wait for the hub to say anything (an answer, the next bytes of a file)
    /// before giving up; `None`: [`DEFAULT_SILENCE`].
    pub silence: Option<std::time::Duration>,
    /// Bandwidth limits shared by every connection made with these options (`None`: none).
    pub pacer: Option<Arc<crate::pace::Pacer>>,
}

/// How long a client waits by default for a hub that has gone silent mid-answer.
pub const DEFAULT_SILENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// One page of the hub's history, and the `before` that asks for the next (0: no older entries).
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    pub next: u64,
}

/// What a search found, and whether the hub says it may have left names out (it answers at
/// most 5,000, and looks at a bounded number of names).
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub entries: Vec<Entry>,
    pub cut: bool,
}

/// A connection to a hub that has completed the handshake.
#[derive(Debug)]
pub struct HubClient {
    conn: Connection<Stream>,
    welcome: Welcome,
    /// The hub's key, as checked in the TLS handshake (`None` in plaintext).
    hub_key: Option<troca_proto::key::HubKey>,
    silence: std::time::Duration,
}

impl HubClient {
    /// Connects to `addr` (`HOST:PORT`) and says hello.
    pub async fn connect(addr: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let stream = dial(addr).await?;
        Self::over(stream, addr, options).await
    }

    /// Asks the hub at `addr` whether it can serve, without a hello (so without a token): a
    /// health check's one question, after which the hub closes the connection.
    pub async fn health(addr: &str, options: &ClientOptions) -> Result<HealthReport, ClientError> {
        let stream = dial(addr).await?;
        let (stream, _) = secure(stream, addr, options).await?;
        let silence = options.silence.unwrap_or(DEFAULT_SILENCE);
        let mut conn = Connection::new(stream);
        conn.set_write_stall(silence);
        conn.send(&Health.into()).await?;
        match expect(&mut conn, silence).await? {
            Message::HealthReport(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Talks to the hub at `addr` over an already connected socket: TLS as `options.trust`
    /// says, then the handshake.
    pub async fn over(
        stream: TcpStream,
        addr: &str,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let (stream, key) = secure(stream, addr, options).await?;
        let mut client = Self::handshake(stream, options).await?;
        client.hub_key = key;
        Ok(client)
    }

    /// The hub's key as the TLS handshake checked it (`None` over plaintext).
    pub fn hub_key(&self) -> Option<troca_proto::key::HubKey> {
        self.hub_key
    }

    /// Says hello over an already connected stream.
    pub async fn handshake(stream: Stream, options: &ClientOptions) -> Result<Self, ClientError> {
        let silence = options.silence.unwrap_or(DEFAULT_SILENCE);
        let hello = Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: options.name.clone(),
            token: options.token.clone(),
            owner_key: options.owner_key.clone(),
        };
        let (mut conn, welcome) = greet(stream, hello, silence).await?;
        conn.set_pace(options.pacer.as_ref().and_then(|p| p.shared_pace()));
        Ok(Self {
            conn,
            welcome,
            hub_key: None,
            silence,
        })
    }

    /// What the hub said in its handshake.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Lists the files whose names start with `prefix`.
    pub async fn list(&mut self, prefix: &str) -> Result<Vec<Entry>, ClientError> {
        self.conn
            .send(
                &List {
                    prefix: prefix.to_owned(),
                }
                .into(),
            )
            .await?;
        self.read_chunks(|m| match m {
            Message::Entries(Entries { entries, last, .. }) => Ok((entries, last)),
            other => Err(other.name()),
        })
        .await
    }

    /// The hub's entry for each of `names` (`None` where it has no such file), asked for back
    /// to back, a window at a time, rather than one round trip each.
    pub async fn entries_of(
        &mut self,
        names: &[String],
    ) -> Result<Vec<Option<Entry>>, ClientError> {
        const WINDOW: usize = 256;
        let mut out = Vec::with_capacity(names.len());
        for window in names.chunks(WINDOW) {
            for name in window {
                let prefix = name.clone();
                self.conn.queue(&List { prefix }.into());
            }
            self.conn.flush().await?;
            for name in window {
                let entries = self
                    .read_chunks(|m| match m {
                        Message::Entries(Entries { entries, last, .. }) => Ok((entries, last)),
                        other => Err(other.name()),
                    })
                    .await?;
                out.push(entries.into_iter().find(|e| &e.name == name));
            }
        }
        Ok(out)
    }

    /// Queues a request without sending it (for requests sent back to back: see `batch.rs`).
    pub(crate) fn queue(&mut self, msg: &Message) {
        self.conn.queue(msg);
    }

    /// Sends what is queued.
    pub(crate) async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.conn.flush().await?)
    }

    /// The next answer: a message, or the hub's `Error` as [`ClientError::Hub`].
    pub(crate) async fn answer(&mut self) -> Result<Message, ClientError> {
        expect(&mut self.conn, self.silence).await
    }

    /// Reads exactly `dst.len()` raw bytes that follow a frame.
    pub(crate) async fn read_exact_raw(&mut self, dst: &mut [u8]) -> Result<(), ClientError> {
        let mut got = 0;
        while got < dst.len() {
            let n = within(self.silence, self.conn.read_raw(&mut dst[got..])).await?;
            if n == 0 {
                return Err(ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the hub closed the connection mid-file",
                )));
            }
            got += n;
        }
        Ok(())
    }

    /// Reads a list answer split over frames, until the chunk marked `last`. `take` unpacks the
    /// expected message (or names any other, which is a protocol error).
    async fn read_chunks<T>(
        &mut self,
        mut take: impl FnMut(Message) -> Result<(Vec<T>, bool), &'static str>,
    ) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        loop {
            match take(expect(&mut self.conn, self.silence).await?) {
                Ok((items, last)) => {
                    all.extend(items);
                    if last {
                        return Ok(all);
                    }
                }
                Err(other) => {
                    return Err(ClientError::Protocol(format!("unexpected {other} message")))
                }
            }
        }
    }

    /// Changes the name this connection shows to others.
    pub async fn register(&mut self, name: &str) -> Result<(), ClientError> {
        self.conn
            .send(
                &Register {
                    name: name.to_owned(),
                }
                .into(),
            )
            .await?;
        match expect(&mut self.conn, self.silence).await? {
            Message::Registered(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The clients connected to the hub now.
    pub async fn who(&mut self) -> Result<Vec<ClientEntry>, ClientError> {
        self.conn.send(&Who.into()).await?;
        self.read_chunks(|m| match m {
            Message::ClientList(ClientList { items, last }) => Ok((items, last)),
            other => Err(other.name()),
        })
        .await
    }

    /// One page of the requests the hub recorded, newest first: up to `query.limit` (the hub
    /// caps a page at [`troca_proto::msg::MAX_HISTORY_PAGE`]) older than `query.before` (0 for
    /// the newest), optionally of one client or operation.
    pub async fn history(&mut self, query: History) -> Result<HistoryPage, ClientError> {
        self.conn.send(&query.into()).await?;
        let next = std::cell::Cell::new(0);
        let entries = self
            .read_chunks(|m| match m {
                Message::HistoryEntries(h) => {
                    next.set(h.next);
                    Ok((h.items, h.last))
                }
                other => Err(other.name()),
            })
            .await?;
        Ok(HistoryPage {
            entries,
            next: next.get(),
        })
    }

    /// The hub's clock and figures.
    pub async fn status(&mut self) -> Result<StatusInfo, ClientError> {
        self.conn.send(&Status.into()).await?;
        match expect(&mut self.conn, self.silence).await? {
            Message::StatusInfo(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a file, or a folder (an empty one, or with everything in it if `recursive`).
    /// Returns how many files went.
    pub async fn remove(&mut self, name: &str, recursive: bool) -> Result<u64, ClientError> {
        let remove = Remove {
            name: name.to_owned(),
            recursive,
        };
        self.conn.send(&remove.into()).await?;
        match expect(&mut self.conn, self.silence).await? {
            Message::Removed(r) => Ok(r.files),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a folder (and the missing ones on the way); `false` if it was there already.
    pub async fn make_folder(&mut self, name: &str) -> Result<bool, ClientError> {
        let make = MakeFolder {
            name: name.to_owned(),
        };
        self.conn.send(&make.into()).await?;
        match expect(&mut self.conn, self.silence).await? {
            Message::FolderMade(m) => Ok(m.created),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks for a share link as `share` says: a read link, or an upload link into a folder.
    pub async fn share(&mut self, share: Share) -> Result<Shared, ClientError> {
        self.conn.send(&share.into()).await?;
        match expect(&mut self.conn, self.silence).await? {
            Message::Shared(m) => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    /// The share links this client's token made (an admin's: every one), newest first.
    pub async fn shares(&mut self) -> Result<Vec<ShareEntry>, ClientError> {
        self.conn.send(&Shares.into()).await?;
        self.read_chunks(|m| match m {
            Message::ShareList(ShareList { items, last }) => Ok((items, last)),
            other => Err(other.name()),
        })
        .await
    }

    /// Revokes share link `id`.
    pub async fn unshare(&mut self, id: u64) -> Result<(), ClientError> {
        self.conn.send(&Unshare { id }.into()).await?;
        match expect(&mut self.conn, self.silence).await? {
            Message::Unshared(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Moves (renames) a file or folder; returns its new name.
    pub async fn rename(
        &mut self,
        from: &str,
        to: &str,
        force: bool,
    ) -> Result<String, ClientError> {
        let m = Move {
            from: from.to_owned(),
            to: to.to_owned(),
            force,
        };
        self.conn.send(&m.into()).await?;
        match expect(&mut self.conn, self.silence).await? {
            Message::Moved(m) => Ok(m.name),
            other => Err(unexpected(&other)),
        }
    }

    /// Copies a file or a folder within the hub; `progress` hears of each `Copied` frame
    /// that says how far it has come. Returns the last, which says where it went.
    pub async fn copy(
        &mut self,
        from: &str,
        to: &str,
        force: bool,
        mut progress: impl FnMut(&Copied),
    ) -> Result<Copied, ClientError> {
        let m = Copy {
            from: from.to_owned(),
            to: to.to_owned(),
            force,
        };
        self.conn.send(&m.into()).await?;
        loop {
            match expect(&mut self.conn, self.silence).await? {
                Message::Copied(c) if c.done => return Ok(c),
                Message::Copied(c) => progress(&c),
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// The files and folders (`NAME/`) whose names contain `text`, in any case.
    pub async fn find(&mut self, text: &str) -> Result<Found, ClientError> {
        let find = Find {
            text: text.to_owned(),
        };
        self.conn.send(&find.into()).await?;
        let mut cut = false;
        let entries = self
            .read_chunks(|m| match m {
                Message::Entries(e) => {
                    cut = e.cut;
                    Ok((e.entries, e.last))
                }
                other => Err(other.name()),
            })
            .await?;
        Ok(Found { entries, cut })
    }

    /// Starts a download from `offset`. Read the bytes with [`Download::read`] until it returns
    /// 0, then call [`Download::finish`] for the hub's hash of the whole file.
    pub async fn get(&mut self, name: &str, offset: u64) -> Result<Download<'_>, ClientError> {
        self.conn
            .send(
                &Get {
                    name: name.to_owned(),
                    offset,
                }
                .into(),
            )
            .await?;
        let header = match expect(&mut self.conn, self.silence).await? {
            Message::FileHeader(h) => h,
            other => return Err(unexpected(&other)),
        };
        let remaining = header.size - header.offset;
        Ok(Download {
            client: self,
            header,
            remaining,
        })
    }

    /// Announces an upload. The hub answers with the offset to send from (more than 0 when it
    /// holds the start of an interrupted upload of the same file).
    pub async fn put(&mut self, put: Put) -> Result<Upload<'_>, ClientError> {
        let size = put.size;
        self.conn.send(&put.into()).await?;
        let ready = match expect(&mut self.conn, self.silence).await? {
            Message::PutReady(r) if r.offset <= size => r,
            Message::PutReady(r) => {
                return Err(ClientError::Protocol(format!(
                    "hub asked to resume at {} of a {size}-byte file",
                    r.offset
                )))
            }
            other => return Err(unexpected(&other)),
        };
        Ok(Upload {
            client: self,
            remaining: size - ready.offset,
            ready,
        })
    }
}

/// A download in progress.
#[derive(Debug)]
pub struct Download<'a> {
    client: &'a mut HubClient,
    header: FileHeader,
    remaining: u64,
}

impl Download<'_> {
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Reads the next bytes of the file into `buf`; 0 means all have arrived.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = within(
            self.client.silence,
            self.client.conn.read_raw_bulk(&mut buf[..want]),
        )
        .await?;
        if n == 0 {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the hub closed the connection with {} bytes still to send",
                    self.remaining
                ),
            )));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Reads the trailer: the hub's BLAKE3 hash of the whole file.
    pub async fn finish(self) -> Result<Hash, ClientError> {
        if self.remaining != 0 {
            return Err(ClientError::Protocol(
                "download finished before all bytes were read".into(),
            ));
        }
        match expect(&mut self.client.conn, self.client.silence).await? {
            Message::FileEnd(FileEnd { blake3 }) => Ok(blake3),
            other => Err(unexpected(&other)),
        }
    }
}

/// An upload in progress.
#[derive(Debug)]
pub struct Upload<'a> {
    client: &'a mut HubClient,
    ready: PutReady,
    remaining: u64,
}

impl Upload<'_> {
    /// Where the hub wants the bytes to start.
    pub fn offset(&self) -> u64 {
        self.ready.offset
    }

    /// Bytes still to send.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Sends the next bytes of the file.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        if bytes.len() as u64 > self.remaining {
            return Err(ClientError::Protocol(
                "the file grew while it was being sent".into(),
            ));
        }
        self.client.conn.write_raw(bytes).await?;
        self.remaining -= bytes.len() as u64;
        Ok(())
    }

    /// Whether the bytes go to the socket as they are (no TLS), so `send_file` can use
    /// `sendfile`.
    pub fn is_plain(&self) -> bool {
        crate::stream::Socket::plain(self.client.conn.stream()).is_some()
    }

    /// Sends the next `len` bytes of the file from `file` at `offset` with `sendfile`, from the
    /// page cache to the socket without a copy through this process. The caller has read and
    /// hashed the same bytes; should the file change in between, the hub's hash of what it got
    /// differs and the upload fails whole, as it should.
    pub async fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> Result<(), ClientError> {
        self.send_file_seen(file, offset, len, |_| {}).await
    }

    /// Sends the next `len` bytes of the file over TLS, read straight into the records that
    /// carry them and hashed into `hasher` on the way: one read, no copy in between.
    pub async fn send_file_hashed(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        hasher: &mut blake3::Hasher,
    ) -> Result<(), ClientError> {
        self.send_file_seen(file, offset, len, |bytes| {
            hasher.update(bytes);
        })
        .await
    }

    async fn send_file_seen(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        seen: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        if len > self.remaining {
            return Err(ClientError::Protocol(
                "the file grew while it was being sent".into(),
            ));
        }
        // A hub that takes no byte for as long as it may stay silent is given up on.
        let stall = self.client.silence;
        self.client
            .conn
            .send_file_range_seen(file, offset, len, stall, |_| {}, seen)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    ClientError::Protocol("the file shrank while it was being sent".into())
                }
                std::io::ErrorKind::TimedOut => ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the hub took no byte for {} s", stall.as_secs()),
                )),
                _ => ClientError::Io(e),
            })?;
        self.remaining -= len;
        Ok(())
    }

    /// Sends the client's hash of the whole file and waits for the hub to make it durable.
    pub async fn finish(self, blake3: Hash) -> Result<PutDone, ClientError> {
        if self.remaining != 0 {
            return Err(ClientError::Protocol(format!(
                "the file shrank while it was being sent ({} bytes missing)",
                self.remaining
            )));
        }
        self.client.conn.send(&PutEnd { blake3 }.into()).await?;
        match expect(&mut self.client.conn, self.client.silence).await? {
            Message::PutDone(done) => Ok(done),
            other => Err(unexpected(&other)),
        }
    }
}

/// Reads the next message, turning an `Error` from the hub and a closed connection into errors.
/// The TLS handshake, accepting only the `expected` key. Nothing is sent to a hub whose key
/// does not match (the handshake stops before the `Hello`).
async fn tls_handshake(
    addr: &str,
    tcp: TcpStream,
    expected: Option<troca_proto::key::HubKey>,
    roots: Option<Arc<rustls::RootCertStore>>,
) -> Result<(Stream, Option<troca_proto::key::HubKey>), ClientError> {
    let (config, verifier) = crate::tls::client_config(expected, roots)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    // The host name matters only to an authority's certificate; a pinned key is checked as is.
    let host = host_of(addr);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .or_else(|_| rustls::pki_types::ServerName::try_from("troca-hub"))
        .expect("a valid name");
    match crate::sealed::connect(tcp, config, name).await {
        Ok(tls) => {
            let seen = *verifier.seen.lock().expect("seen key poisoned");
            Ok((Stream::Tls(Box::new(tls)), seen))
        }
        Err(e) => {
            let seen = *verifier.seen.lock().expect("seen key poisoned");
            let addr = addr.to_owned();
            Err(match (expected, seen) {
                (None, Some(seen)) => ClientError::UnknownHubKey { addr, seen },
                (Some(expected), Some(seen)) if expected != seen => ClientError::HubKeyMismatch {
                    addr,
                    expected,
                    seen,
                },
                // A hub that refuses at its connection limits answers in plaintext, as does a
                // hub run with --plaintext.
                _ if e.to_string().contains("InvalidContentType") => ClientError::Connect {
                    addr,
                    reason: "the hub answered without TLS: it may be busy (try again shortly), \
                             or run with --plaintext (then say --plaintext too)"
                        .to_owned(),
                },
                _ => ClientError::Connect {
                    addr,
                    reason: format!("TLS handshake failed ({e})"),
                },
            })
        }
    }
}

/// The host in `HOST:PORT` (without the brackets of an IPv6 address).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Waits at most `silence` for `read`: a hub that stops answering is given up on, not waited
/// for for ever.
async fn within<T, E>(
    silence: std::time::Duration,
    read: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ClientError>
where
    ClientError: From<E>,
{
    match tokio::time::timeout(silence, read).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the hub said nothing for {} s", silence.as_secs()),
        ))),
    }
}

async fn expect(
    conn: &mut Connection<Stream>,
    silence: std::time::Duration,
) -> Result<Message, ClientError> {
    match within(silence, conn.read_message()).await? {
        Some(Message::Error(e)) => Err(ClientError::Hub {
            code: e.code,
            message: e.message,
        }),
        Some(msg) => Ok(msg),
        None => Err(ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the hub closed the connection",
        ))),
    }
}

/// The first exchange on every troca connection, to a hub or to a swarm peer: the `Hello`, and
/// the `Welcome` back within `silence`. Returns the connection, ready for requests.
pub async fn greet(
    stream: Stream,
    hello: Hello,
    silence: std::time::Duration,
) -> Result<(Connection<Stream>, Welcome), ClientError> {
    let mut conn = Connection::new(stream);
    conn.set_read_size(64 * 1024);
    conn.set_write_stall(silence);
    conn.send(&hello.into()).await?;
    match expect(&mut conn, silence).await? {
        Message::Welcome(w) => Ok((conn, w)),
        other => Err(unexpected(&other)),
    }
}

/// A TCP connection to `addr`, without Nagle's delay.
async fn dial(addr: &str) -> Result<TcpStream, ClientError> {
    let stream = TcpStream::connect(addr).await.map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused (is \"troca serve\" running?)".to_owned()
            }
            _ => e.to_string(),
        };
        ClientError::Connect {
            addr: addr.to_owned(),
            reason,
        }
    })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// TLS over `stream` as `options.trust` says (none in plaintext), with the hub's key as checked.
async fn secure(
    stream: TcpStream,
    addr: &str,
    options: &ClientOptions,
) -> Result<(Stream, Option<troca_proto::key::HubKey>), ClientError> {
    match options.trust {
        crate::tls::Trust::Plaintext => Ok((Stream::Plain(stream), None)),
        crate::tls::Trust::Key(expected) => {
            tls_handshake(addr, stream, expected, options.roots.clone()).await
        }
    }
}

fn unexpected(msg: &Message) -> ClientError {
    ClientError::Protocol(format!("unexpected {} message", msg.name()))
}
