//! The peers' side of the tracker protocol: a cookie, then requests with retries (UDP loses
//! packets), long lists sent and read in pages.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use troca_proto::key::HubKey;
use troca_proto::tracker::{
    listed_len, Answer, Datagram, FileInfo, Listed, Request, Secret, UpdateMode, MAX_DATAGRAM,
};
use troca_proto::Hash;

/// What went wrong talking to a tracker.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("tracker {0} did not answer (is \"troca tracker\" running there?)")]
    NoAnswer(SocketAddr),
    #[error("tracker refused: {message} (code {code})")]
    Refused { code: u16, message: String },
    #[error("unexpected answer from the tracker")]
    Unexpected,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A client of one tracker.
#[derive(Debug)]
pub struct TrackerClient {
    socket: UdpSocket,
    tracker: SocketAddr,
    cookie: u64,
    txn: u32,
    /// How long to wait for each answer, and how many times to ask.
    pub timeout: Duration,
    pub tries: u32,
}

/// Bytes of a request besides its files (header, port, secret, key, count, mode).
const REQUEST_OVERHEAD: usize = 4 + 1 + 4 + 8 + 2 + 16 + 33 + 2 + 1;

impl TrackerClient {
    /// Binds a local UDP socket for talking to `tracker`.
    pub async fn new(tracker: SocketAddr) -> Result<Self, TrackerError> {
        let local: SocketAddr = if tracker.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        };
        Self::bound(tracker, local).await
    }

    /// Talks to `tracker` from the local address `local` (a host with several addresses).
    pub async fn bound(tracker: SocketAddr, local: SocketAddr) -> Result<Self, TrackerError> {
        Ok(Self {
            socket: UdpSocket::bind(local).await?,
            tracker,
            cookie: 0,
            txn: 0,
            timeout: Duration::from_millis(800),
            tries: 4,
        })
    }

    async fn ask(&mut self, body: Request) -> Result<Answer, TrackerError> {
        for attempt in 0..2 {
            if self.cookie == 0 && !matches!(body, Request::Connect) {
                match self.exchange(Request::Connect).await? {
                    Answer::Cookie(c) => self.cookie = c,
                    _ => return Err(TrackerError::Unexpected),
                }
            }
            match self.exchange(body.clone()).await? {
                // A stale cookie: get a fresh one and ask again, once.
                Answer::Error { code, .. }
                    if code == troca_proto::tracker::codes::BAD_COOKIE && attempt == 0 =>
                {
                    self.cookie = 0;
                }
                Answer::Error { code, message } => {
                    return Err(TrackerError::Refused { code, message })
                }
                a => return Ok(a),
            }
        }
        Err(TrackerError::Unexpected)
    }

    async fn exchange(&mut self, body: Request) -> Result<Answer, TrackerError> {
        self.txn = self.txn.wrapping_add(1);
        let txn = self.txn;
        let mut out = Vec::with_capacity(MAX_DATAGRAM);
        Datagram {
            txn,
            cookie: self.cookie,
            body,
        }
        .encode(&mut out);
        let mut buf = vec![0u8; 2048];
        for _ in 0..self.tries {
            self.socket.send_to(&out, self.tracker).await?;
            let deadline = tokio::time::Instant::now() + self.timeout;
            loop {
                let r = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await;
                let Ok(r) = r else { break };
                let (n, from) = r?;
                if from != self.tracker {
                    continue;
                }
                match Datagram::<Answer>::decode(&buf[..n]) {
                    Ok(d) if d.txn == txn => return Ok(d.body),
                    _ => continue, // a late answer to an earlier try, or garbage
                }
            }
        }
        Err(TrackerError::NoAnswer(self.tracker))
    }

    /// Registers as serving `files` on TCP `port` (with TLS under `key`, or in plaintext), in
    /// as many datagrams as needed.
    pub async fn register(
        &mut self,
        port: u16,
        secret: Secret,
        key: Option<HubKey>,
        files: &[FileInfo],
    ) -> Result<(), TrackerError> {
        let mut pages = pages(files).into_iter();
        let first = pages.next().unwrap_or_default();
        self.expect_ok(Request::Register {
            port,
            secret,
            key,
            files: first,
        })
        .await?;
        for page in pages {
            self.expect_ok(Request::Update {
                secret,
                mode: UpdateMode::Add,
                files: page,
            })
            .await?;
        }
        Ok(())
    }

    /// Changes the registered list.
    pub async fn update(
        &mut self,
        secret: Secret,
        mode: UpdateMode,
        files: &[FileInfo],
    ) -> Result<(), TrackerError> {
        let all = pages(files);
        for (i, page) in all.into_iter().enumerate() {
            // A long replacement: the first page replaces, the rest add.
            let mode = if mode == UpdateMode::Replace && i > 0 {
                UpdateMode::Add
            } else {
                mode
            };
            self.expect_ok(Request::Update {
                secret,
                mode,
                files: page,
            })
            .await?;
        }
        Ok(())
    }

    /// Leaves the swarm.
    pub async fn end(&mut self, secret: Secret) -> Result<(), TrackerError> {
        self.expect_ok(Request::End { secret }).await
    }

    /// Every file matching `filter` (name substring) or `id`, with its peers, all pages.
    pub async fn list(
        &mut self,
        filter: &str,
        id: Option<Hash>,
    ) -> Result<Vec<Listed>, TrackerError> {
        self.list_pages(filter, id, false).await
    }

    /// The files named `name` or `…/name` (answered from the tracker's index of names, however
    /// many files it knows).
    pub async fn list_named(&mut self, name: &str) -> Result<Vec<Listed>, TrackerError> {
        self.list_pages(name, None, true).await
    }

    async fn list_pages(
        &mut self,
        filter: &str,
        id: Option<Hash>,
        whole_name: bool,
    ) -> Result<Vec<Listed>, TrackerError> {
        let mut all: Vec<Listed> = Vec::new();
        let mut cursor = 0;
        loop {
            let req = Request::List {
                filter: filter.to_owned(),
                id,
                cursor,
                whole_name,
            };
            match self.ask(req).await? {
                Answer::Page { files, next } => {
                    // A page may start with a file the previous one ended with.
                    for f in files {
                        let key = (f.file.id, f.file.size);
                        if !all
                            .iter()
                            .rev()
                            .take(64)
                            .any(|l| (l.file.id, l.file.size) == key)
                        {
                            all.push(f);
                        }
                    }
                    match next {
                        Some(n) if n > cursor => cursor = n,
                        _ => return Ok(all),
                    }
                }
                _ => return Err(TrackerError::Unexpected),
            }
        }
    }

    async fn expect_ok(&mut self, req: Request) -> Result<(), TrackerError> {
        match self.ask(req).await? {
            Answer::Ok => Ok(()),
            _ => Err(TrackerError::Unexpected),
        }
    }
}

/// Splits a file list into groups that each fit in one request datagram.
fn pages(files: &[FileInfo]) -> Vec<Vec<FileInfo>> {
    let mut out = vec![Vec::new()];
    let mut used = REQUEST_OVERHEAD;
    for f in files {
        let len = listed_len(&Listed {
            file: f.clone(),
            peers: Vec::new(),
        });
        if used + len > MAX_DATAGRAM && !out.last().expect("one page").is_empty() {
            out.push(Vec::new());
            used = REQUEST_OVERHEAD;
        }
        used += len;
        out.last_mut().expect("one page").push(f.clone());
    }
    out
}
