//! Zero-copy socket → socket transfer with Linux `splice(2)` through a pipe: the bytes of an
//! object arriving from an object store go on to a client without being copied into this
//! process and out again (what `sendfile` does for a file). Driven by tokio's readiness, so a
//! slow side only makes the transfer wait.

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use std::io;
use std::os::fd::OwnedFd;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The pipe's capacity: how much one `splice` may move. The default (64 KiB) would take four
/// times as many calls; the kernel may grant less (`/proc/sys/fs/pipe-max-size`), which only
/// makes steps smaller.
const PIPE_SIZE: usize = 1024 * 1024;

/// A pipe between two sockets.
#[derive(Debug)]
pub struct Splice {
    read_end: OwnedFd,
    write_end: OwnedFd,
    capacity: usize,
}

impl Splice {
    pub fn new() -> io::Result<Self> {
        let (read_end, write_end) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // Failing leaves the default size: slower, not wrong.
        let capacity = fcntl_setpipe_size(&write_end, PIPE_SIZE).unwrap_or(64 * 1024);
        Ok(Self {
            read_end,
            write_end,
            capacity,
        })
    }

    /// Moves up to `max` bytes from `from` to `to`; returns how many (0: `from` ended). Waits
    /// for `from` to have bytes and for `to` to take them, and sends all it took before it
    /// returns, so each step begins with an empty pipe.
    pub async fn step(&mut self, from: &TcpStream, to: &TcpStream, max: u64) -> io::Result<usize> {
        // Only an empty pipe is filled: with room left in it, a `splice` from the socket can
        // only stop short because the socket is empty, so `EAGAIN` means just that.
        let want = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(self.capacity);
        let taken = from
            .async_io(Interest::READABLE, || {
                Ok(splice(
                    from,
                    None,
                    &self.write_end,
                    None,
                    want,
                    SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                )?)
            })
            .await?;
        let mut held = taken;
        while held > 0 {
            let sent = to
                .async_io(Interest::WRITABLE, || {
                    Ok(splice(
                        &self.read_end,
                        None,
                        to,
                        None,
                        held,
                        SpliceFlags::MOVE | SpliceFlags::NONBLOCK | SpliceFlags::MORE,
                    )?)
                })
                .await?;
            held -= sent;
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// Every byte written into one connection comes out of the other, in order, the count
    /// stops where asked, and the end of the source is seen as 0.
    #[tokio::test]
    async fn splice_moves_every_byte_in_order_and_stops_where_asked() {
        let (mut source, from) = pair().await;
        let (to, mut sink) = pair().await;
        let data: Vec<u8> = (0..3_000_017u32).map(|i| (i * 31 % 253) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(70_001) {
                source.write_all(piece).await.unwrap();
            }
            source.write_all(b"after").await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            sink.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut pipe = Splice::new().unwrap();
        let mut moved = 0u64;
        while moved < data.len() as u64 {
            let n = pipe
                .step(&from, &to, data.len() as u64 - moved)
                .await
                .unwrap();
            assert!(n > 0, "the source ended early");
            moved += n as u64;
        }
        writer.await.unwrap();
        assert_eq!(pipe.step(&from, &to, 5).await.unwrap(), 5);
        drop(to);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), data.len() + 5);
        assert!(got[..data.len()] == data[..]);
        assert_eq!(&got[data.len()..], b"after");
    }

    /// A source that closes reads as 0, not as an error or a wait for ever.
    #[tokio::test]
    async fn a_closed_source_reads_as_zero() {
        let (source, from) = pair().await;
        let (to, _sink) = pair().await;
        drop(source);
        let mut pipe = Splice::new().unwrap();
        assert_eq!(pipe.step(&from, &to, 1 << 20).await.unwrap(), 0);
    }
}
