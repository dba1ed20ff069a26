//! A connection's byte stream, plain TCP or TLS, split into the read half
//! the router waits on and the write half the writer writes to.
//!
//! The router waits for a read half to become readable before it reads
//! (see `reader`). A TCP half reports its socket's read readiness through
//! an epoll registration of its own, for reading alone; a TLS half
//! has no readiness of its own (decrypted bytes may already be buffered,
//! or the socket's bytes may be only part of a record), so it reads ahead
//! instead: [`ReadHalf::poll_read_ready`] reads up to one chunk of
//! plaintext and keeps it for the next read.

use bytes::{Buf, BytesMut};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// How much plaintext a TLS read half reads ahead, at most.
const READ_AHEAD: usize = 4096;

/// A connection's byte stream.
pub(super) enum Transport {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP, past its handshake.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// Disables Nagle's algorithm: MQTT packets are small and waited for.
    pub(super) fn set_nodelay(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(stream) => stream.set_nodelay(true),
            Transport::Tls(stream) => stream.get_ref().0.set_nodelay(true),
        }
    }

    /// The read and the write half.
    pub(super) fn split(self) -> io::Result<(ReadHalf, WriteHalf)> {
        match self {
            Transport::Tcp(stream) => {
                let (rd, wr) = stream.into_split();
                Ok((ReadHalf::Tcp(TcpRead::new(rd)?), WriteHalf::Tcp(wr)))
            }
            Transport::Tls(stream) => {
                let (rd, wr) = tokio::io::split(*stream);
                let rd = TlsRead {
                    half: rd,
                    ahead: BytesMut::new(),
                    end: None,
                };
                Ok((ReadHalf::Tls(rd), WriteHalf::Tls(wr)))
            }
        }
    }
}

/// Reads a TCP socket through a descriptor of its own, registered for read
/// readiness alone. Tokio registers a stream for reading and writing, and
/// with edge-triggered epoll an entry joins the kernel's ready list at its
/// first event of any kind: a write-space event (the client acknowledging
/// what the broker sent) would put a socket ahead of others whose bytes
/// came before its own. Reported for reading alone, sockets come in the
/// order their bytes came.
pub(super) struct TcpRead {
    fd: AsyncFd<std::net::TcpStream>,
    /// The stream's own read half, kept so the socket stays whole until
    /// both halves go.
    _half: OwnedReadHalf,
}

impl TcpRead {
    fn new(half: OwnedReadHalf) -> io::Result<TcpRead> {
        // The duplicate shares the socket and its non-blocking mode.
        let own = std::net::TcpStream::from(half.as_ref().as_fd().try_clone_to_owned()?);
        // SAFETY: `own` owns its descriptor and keeps it open, unchanged,
        // for as long as the `AsyncFd` lives (it drops with it).
        let fd = unsafe { AsyncFd::register_with_interest(own, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(TcpRead { fd, _half: half })
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The readiness stays set: the read clears it.
        self.fd.poll_read_ready(cx).map_ok(|_| ())
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let wanted = unfilled.len();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    if n > 0 && n < wanted {
                        // Drained: the next turn comes from the kernel.
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not ready after all: `try_io` cleared the readiness.
                Err(_would_block) => continue,
            }
        }
    }
}

/// The read half of a [`Transport`].
pub(super) enum ReadHalf {
    Tcp(TcpRead),
    Tls(TlsRead),
}

/// The read half of a TLS stream, with what it read ahead.
pub(super) struct TlsRead {
    half: tokio::io::ReadHalf<TlsStream<TcpStream>>,
    /// Plaintext read by `poll_read_ready` and not read yet.
    ahead: BytesMut,
    /// How the stream ended, once a read-ahead met its end: `Ok` for the
    /// end of the stream, else the error.
    end: Option<io::Result<()>>,
}

impl ReadHalf {
    /// Ready when a read will not wait; registers the context's waker
    /// otherwise. An error is left to the read to report.
    pub(super) fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ReadHalf::Tcp(read) => read.poll_read_ready(cx),
            ReadHalf::Tls(tls) => tls.poll_read_ahead(cx),
        }
    }
}

impl TlsRead {
    fn poll_read_ahead(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ahead.is_empty() || self.end.is_some() {
            return Poll::Ready(Ok(()));
        }
        let mut chunk = [0u8; READ_AHEAD];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.half).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => self.end = Some(Ok(())),
            Poll::Ready(Ok(())) => self.ahead.extend_from_slice(buf.filled()),
            Poll::Ready(Err(e)) => self.end = Some(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(read) => read.poll_read(cx, buf),
            ReadHalf::Tls(tls) => {
                if !tls.ahead.is_empty() {
                    let n = tls.ahead.len().min(buf.remaining());
                    buf.put_slice(&tls.ahead[..n]);
                    tls.ahead.advance(n);
                    return Poll::Ready(Ok(()));
                }
                match tls.end.take() {
                    // The end of the stream stays the end.
                    Some(Ok(())) => {
                        tls.end = Some(Ok(()));
                        Poll::Ready(Ok(()))
                    }
                    Some(Err(e)) => Poll::Ready(Err(e)),
                    None => Pin::new(&mut tls.half).poll_read(cx, buf),
                }
            }
        }
    }
}

/// The write half of a [`Transport`]. A TLS half may keep bytes in its
/// session until flushed: the writer flushes after each batch.
pub(super) enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(half) => Pin::new(half).poll_write(cx, buf),
            WriteHalf::Tls(half) => Pin::new(half).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(half) => Pin::new(half).poll_flush(cx),
            WriteHalf::Tls(half) => Pin::new(half).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(half) => Pin::new(half).poll_shutdown(cx),
            WriteHalf::Tls(half) => Pin::new(half).poll_shutdown(cx),
        }
    }
}
