//! One native-protocol connection: the handshake, then requests one after another until the
//! client leaves, stalls, breaks the framing, or the hub shuts down.
//!
//! A refused request gets an `Error` and the connection goes on. A malformed frame gets an
//! `Error` and the connection is closed, since the next frame can no longer be found. Raw bytes
//! that cannot be delivered or stored close the connection too: partial uploads stay in the state
//! folder for resume, never under the real name.

use crate::error::HubError;
use crate::sendfile;
use crate::service::{Hub, OpenFile};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use troca_net::connection::FrameError;
use troca_net::durable::WriteBehind;
use troca_net::{transfer_buffer, Connection, CACHE_CHUNK};
use troca_proto::msg::{Entries, FileEnd, FileHeader, Put, PutEnd, PutReady, Removed, Welcome};
use troca_proto::{Message, MAGIC, MAX_FRAME_LEN, PROTOCOL_VERSION};

/// Downloads up to this size whose hash is known go out in a single write with their header and
/// trailer, rather than header, `sendfile`, trailer.
const SMALL_FILE: u64 = 256 * 1024;

/// Why a connection ended early; logged, never sent (the client already got an `Error`, or the
/// connection is unusable).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnEnd {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Hub(#[from] HubError),
}

type Conn = Connection<TcpStream>;

/// Serves one connection to completion.
pub(crate) async fn serve_connection(
    hub: Arc<Hub>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(stream);
    match session(&hub, &mut conn, &shutdown).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended"),
    }
}

async fn session(
    hub: &Arc<Hub>,
    conn: &mut Conn,
    shutdown: &CancellationToken,
) -> Result<(), ConnEnd> {
    let cfg = &hub.config;
    let hello = match tokio::time::timeout(cfg.handshake_timeout, conn.read_message()).await {
        Err(_) => return refuse(conn, HubError::Timeout("no hello received".into())).await,
        Ok(Err(FrameError::Io(e))) => return Err(e.into()),
        Ok(Err(e)) => return refuse(conn, HubError::BadRequest(e.to_string())).await,
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(Message::Hello(h)))) => h,
        Ok(Ok(Some(other))) => {
            return refuse(
                conn,
                HubError::BadRequest(format!("expected Hello, got {}", other.name())),
            )
            .await
        }
    };
    if hello.magic != MAGIC {
        return refuse(
            conn,
            HubError::UnsupportedVersion("not a troca client".into()),
        )
        .await;
    }
    if hello.version != PROTOCOL_VERSION {
        return refuse(
            conn,
            HubError::UnsupportedVersion(format!(
                "protocol version {} is not supported; this hub speaks version {PROTOCOL_VERSION}",
                hello.version
            )),
        )
        .await;
    }
    conn.send(
        &Welcome {
            version: PROTOCOL_VERSION,
            server: format!("troca {}", env!("CARGO_PKG_VERSION")),
            max_frame: MAX_FRAME_LEN as u32,
        }
        .into(),
    )
    .await?;

    loop {
        let next = tokio::select! {
            // An idle connection is simply closed at shutdown; a request in progress finishes.
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(cfg.idle_timeout, conn.read_message()) => r,
        };
        let msg = match next {
            Err(_) => return refuse(conn, HubError::Timeout("idle for too long".into())).await,
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(m))) => m,
            Ok(Err(FrameError::Io(e))) => return Err(e.into()),
            Ok(Err(e)) => return refuse(conn, HubError::BadRequest(e.to_string())).await,
        };
        match msg {
            Message::List(l) => match hub.list(&l.prefix).await {
                Ok(entries) => send_entries(conn, entries).await?,
                Err(e) => conn.send(&e.to_message()).await?,
            },
            Message::Get(g) => match hub.open_file(&g.name, g.offset) {
                Ok(open) => send_file(hub, conn, open).await?,
                Err(e) => conn.send(&e.to_message()).await?,
            },
            Message::Put(p) => receive_file(hub, conn, p).await?,
            Message::Remove(r) => match hub.remove(&r.name).await {
                Ok(()) => conn.send(&Removed.into()).await?,
                Err(e) => conn.send(&e.to_message()).await?,
            },
            other => {
                return refuse(
                    conn,
                    HubError::BadRequest(format!("unexpected {} message", other.name())),
                )
                .await
            }
        }
    }
}

/// Sends an error and closes the connection.
async fn refuse(conn: &mut Conn, err: HubError) -> Result<(), ConnEnd> {
    conn.send(&err.to_message()).await?;
    let _ = conn.shutdown().await;
    Err(err.into())
}

async fn send_entries(conn: &mut Conn, entries: Vec<troca_proto::msg::Entry>) -> io::Result<()> {
    let mut chunk = Entries::default();
    for e in entries {
        if !chunk.has_room_for(&e) {
            conn.queue(&std::mem::take(&mut chunk).into());
        }
        chunk.entries.push(e);
    }
    chunk.last = true;
    conn.queue(&chunk.into());
    conn.flush().await
}

/// Bounds one step of a transfer by the stall timeout.
async fn step<T>(
    stall: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(stall, fut).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} stalled"),
        ))
    })
}

fn short_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file shrank while it was being sent",
    )
}

async fn send_file(hub: &Hub, conn: &mut Conn, open: OpenFile) -> Result<(), ConnEnd> {
    let stall = hub.config.stall_timeout;
    let len = open.size - open.offset;
    conn.queue(
        &FileHeader {
            size: open.size,
            offset: open.offset,
            modified_ns: open.modified_ns,
        }
        .into(),
    );
    if let Some(hash) = open.hash {
        if len <= SMALL_FILE {
            // Header, body and trailer in one write.
            let mut body = vec![0u8; len as usize];
            open.file.read_exact_at(&mut body, open.offset)?;
            conn.queue_raw(&body);
        } else {
            step(stall, "download", conn.flush()).await?;
            let mut pos = open.offset;
            while pos < open.size {
                let n = step(
                    stall,
                    "download",
                    sendfile::send_some(conn.stream(), &open.file, pos, open.size - pos),
                )
                .await?;
                if n == 0 {
                    return Err(short_file().into());
                }
                pos += n as u64;
            }
        }
        conn.queue(&FileEnd { blake3: hash }.into());
        step(stall, "download", conn.flush()).await?;
        return Ok(());
    }

    // The hash is not known yet: compute it from the bytes as they go out (and from the bytes
    // before `offset`, when resuming), then remember it.
    let mut hasher = blake3::Hasher::new();
    let mut buf = transfer_buffer(open.size, CACHE_CHUNK);
    let mut pos = 0;
    while pos < open.size {
        let want = buf.len().min((open.size - pos) as usize);
        let n = open.file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(short_file().into());
        }
        hasher.update(&buf[..n]);
        if pos + n as u64 > open.offset {
            let from = open.offset.saturating_sub(pos) as usize;
            step(stall, "download", conn.write_raw(&buf[from..n])).await?;
        }
        pos += n as u64;
    }
    let hash = *hasher.finalize().as_bytes();
    hub.remember_hash(&open, hash);
    conn.queue(&FileEnd { blake3: hash }.into());
    step(stall, "download", conn.flush()).await?;
    Ok(())
}

async fn receive_file(hub: &Arc<Hub>, conn: &mut Conn, put: Put) -> Result<(), ConnEnd> {
    let stall = hub.config.stall_timeout;
    let mut upload = match hub.begin_upload(&put).await {
        Ok(u) => u,
        Err(e) => {
            conn.send(&e.to_message()).await?;
            return Ok(());
        }
    };
    conn.send(
        &PutReady {
            offset: upload.offset,
        }
        .into(),
    )
    .await?;

    // Read the announced bytes, hash them and write them on, chunk by chunk on this core (the
    // chunk stays in its cache between the three passes). If storing fails (a full disk, say),
    // keep reading and discarding so the connection stays in step, and report it at the end.
    let mut remaining = upload.size - upload.offset;
    let mut buf = transfer_buffer(remaining, CACHE_CHUNK);
    let mut store_err: Option<io::Error> = None;
    let mut written = upload.offset;
    let mut behind = WriteBehind::new(written);
    while remaining > 0 {
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let mut filled = 0;
        while filled < want {
            let n = step(stall, "upload", conn.read_raw(&mut buf[filled..want])).await?;
            if n == 0 {
                // The client left mid-upload: the partial file stays for resume.
                return Err(ConnEnd::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client disconnected mid-upload",
                )));
            }
            filled += n;
        }
        remaining -= filled as u64;
        if store_err.is_none() {
            upload.hasher.update(&buf[..filled]);
            match upload.file.write_all(&buf[..filled]) {
                Ok(()) => {
                    written += filled as u64;
                    behind.wrote(&upload.file, written);
                }
                Err(e) => store_err = Some(e),
            }
        }
    }
    let end = tokio::time::timeout(stall, conn.read_message()).await;
    let theirs = match end {
        Ok(Ok(Some(Message::PutEnd(PutEnd { blake3 })))) => blake3,
        Ok(Ok(Some(other))) => {
            return refuse(
                conn,
                HubError::BadRequest(format!("expected PutEnd, got {}", other.name())),
            )
            .await
        }
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return refuse(conn, HubError::Timeout("upload stalled".into())).await,
    };
    if let Some(e) = store_err {
        let name = upload.name.to_string();
        upload.discard();
        let err = HubError::io(format!("cannot store {name}"), e);
        tracing::warn!(error = %err, "upload failed");
        conn.send(&err.to_message()).await?;
        return Ok(());
    }
    match hub.finish_upload(upload, theirs, put.force).await {
        Ok(done) => conn.send(&done.into()).await?,
        Err(e) => conn.send(&e.to_message()).await?,
    }
    Ok(())
}
