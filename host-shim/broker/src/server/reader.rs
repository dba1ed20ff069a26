//! The read side of every connection, owned by the router and read in the
//! order the sockets became readable.
//!
//! [`Reads`] holds every connection's read half. Each waits *armed*: its
//! socket's read readiness (and its writer's end, and its CONNECT
//! deadline) are registered with a waker of its own, which, when woken,
//! appends the connection to one queue. Tokio's I/O driver wakes in the
//! order the kernel reported the sockets ready, so the router takes the
//! connections from the queue, reads, decodes and handles their bytes in
//! the order they reached the broker, as closely as epoll lets a reader see
//! it. A SUBSCRIBE that arrived before a PUBLISH on another connection is
//! in force for that PUBLISH.
//!
//! Four details keep that order:
//!
//! - A TCP socket's readiness comes from an epoll entry registered for
//!   reading alone (see `transport::TcpRead`): an entry that also waits for
//!   write space joins the kernel's ready list at its first event of either
//!   kind, so a client's TCP acknowledgement could put its socket ahead of
//!   one whose bytes came first.
//! - A connection is re-armed right after its read, so its next bytes take
//!   their place in the queue when the kernel reports them, never earlier.
//!   (A future re-queued to be polled later would take the place it was
//!   queued at, ahead of sockets that became readable before its bytes
//!   came.)
//! - A read that does not fill the buffer has drained the socket and
//!   clears its readiness, so the next turn comes from the kernel's report.
//! - Reads and registrations are done outside tokio's cooperative budget,
//!   which would fake a "not ready" and send a ready socket to the back.
//!
//! A connection is read once per turn, then waits again at the back, so a
//! busy connection cannot hold back the others.
//!
//! After the broker closes a connection it keeps reading and discarding
//! what the client still sends ([`Reads::linger`]): until the writer has
//! sent its last bytes, then for at most [`LINGER`]. Unread bytes at close
//! would turn the FIN into a reset, which can destroy those last packets
//! before the client reads them.

use super::transport::ReadHalf;
use crate::codec::Decoder;
use crate::core::ConnId;
use bytes::BytesMut;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, StreamExt};
use mqtt_topic::MqttVersion;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::task::{Context, Poll, Wake as WakeFn, Waker};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio::task::coop::unconstrained;
use tokio::time::{sleep_until, timeout, Instant, Sleep};

/// How long a new connection may take to send its CONNECT. Short in unit
/// tests so the timeout can be tested in real time (tokio's `test-util`
/// clock is not available).
pub(super) const CONNECT_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(500)
} else {
    Duration::from_secs(10)
};

/// After the broker closed a connection and its writer finished, the
/// lingering read goes on for at most this long.
const LINGER: Duration = Duration::from_secs(1);

/// The lingering read also ends when nothing arrives for this long, so a
/// quiet client that does not close does not hold up shutdown.
const LINGER_QUIET: Duration = Duration::from_millis(50);

/// Free room below which the read buffer grows before a read.
const READ_RESERVE_BELOW: usize = 1024;

/// How much the read buffer grows by. Consecutive packets share one
/// allocation, which their payloads keep alive until delivered.
const READ_CHUNK: usize = 4096;

/// What bounds one connection's reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadLimits {
    /// Largest packet accepted (`max_packet_size`).
    pub(super) max_packet_size: u32,
    /// How long a started packet may take to arrive (`packet_timeout`);
    /// `None` is no limit.
    pub(super) packet_timeout: Option<Duration>,
}

/// The read side of one connection.
pub(super) struct Reader {
    pub(super) conn: ConnId,
    half: ReadHalf,
    /// Bytes read and not decoded yet.
    pub(super) buf: BytesMut,
    pub(super) decoder: Decoder,
    /// The protocol version, set once the CONNECT is decoded; the writer
    /// encodes with it.
    pub(super) version: Arc<OnceLock<MqttVersion>>,
    /// Until the CONNECT arrives, the time by which it must; the router
    /// clears it when the CONNECT is decoded.
    pub(super) connect_deadline: Option<Instant>,
    /// How long a packet may take to arrive once started (`packet_timeout`).
    packet_timeout: Option<Duration>,
    /// While a packet has started and not finished, the time by which it
    /// must (or the next one must, when packets keep coming).
    packet_deadline: Option<Instant>,
    /// The timer of the earlier deadline, and when it is due.
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
    /// Ends (with an error) when the connection's writer task has ended;
    /// `None` once it has.
    writer_gone: Option<oneshot::Receiver<()>>,
    /// Queues the connection when it is woken; set by [`Reads::arm`].
    notify: Option<Arc<Notify>>,
    waker: Option<Waker>,
    /// The user name the connection's client certificate gives
    /// (`tls.use_identity_as_username`), for its CONNECT.
    pub(super) identity: Option<String>,
    /// Packets decoded so far, the CONNECT included.
    pub(super) packets: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("conn", &self.conn).finish()
    }
}

/// Why a [`Reader`] came out of [`Reads::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// The socket may be readable: [`Reader::read`] will not wait (and
    /// says `WouldBlock` if it was not).
    Readable,
    /// The writer task has ended: it closed the connection, failed to
    /// write, or was stopped at shutdown.
    WriterGone,
    /// No CONNECT within [`CONNECT_TIMEOUT`].
    ConnectTimeout,
    /// A packet started and did not finish within `packet_timeout`.
    PacketTimeout,
    /// The lingering read after a close is over; drop the reader.
    Lingered,
}

/// A connection's waker: appends the connection to the ready queue, once
/// until the router takes it out, and wakes the router.
struct Notify {
    conn: ConnId,
    queued: AtomicBool,
    queue: mpsc::Sender<ConnId>,
    router: Arc<AtomicWaker>,
}

impl WakeFn for Notify {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.enqueue() {
            self.router.wake();
        }
    }
}

impl Notify {
    /// Appends the connection to the queue unless it is there already;
    /// returns whether it did.
    fn enqueue(&self) -> bool {
        if self.queued.swap(true, Ordering::AcqRel) {
            return false;
        }
        // The router gone is the shutdown: nobody is waiting.
        let _ = self.queue.send(self.conn);
        true
    }
}

/// A closed connection's lingering read.
type LingerFuture = Pin<Box<dyn Future<Output = Reader> + Send>>;

/// Every connection's read side: armed readers, handed out in the order
/// they were woken, and lingering ones.
pub(super) struct Reads {
    armed: HashMap<ConnId, Reader>,
    /// Connections woken, in order. A connection is in it at most once
    /// (`Notify::queued`); one no longer armed is skipped.
    woken: mpsc::Receiver<ConnId>,
    queue: mpsc::Sender<ConnId>,
    router: Arc<AtomicWaker>,
    lingering: FuturesUnordered<LingerFuture>,
}

impl Reads {
    pub(super) fn new() -> Self {
        let (queue, woken) = mpsc::channel();
        Reads {
            armed: HashMap::new(),
            woken,
            queue,
            router: Arc::new(AtomicWaker::new()),
            lingering: FuturesUnordered::new(),
        }
    }

    /// Whether no reader is armed or lingering.
    pub(super) fn is_empty(&self) -> bool {
        self.armed.is_empty() && self.lingering.is_empty()
    }

    /// Arms `reader`: registers its socket's read readiness, its writer's
    /// end and its CONNECT deadline with its waker, or queues it at once if
    /// one of them is ready already. Called right after each read, so the
    /// connection's next turn is where the kernel reports its next bytes.
    pub(super) fn arm(&mut self, mut reader: Reader) {
        let notify = reader.notify.get_or_insert_with(|| {
            Arc::new(Notify {
                conn: reader.conn,
                queued: AtomicBool::new(false),
                queue: self.queue.clone(),
                router: self.router.clone(),
            })
        });
        let notify = notify.clone();
        let waker = reader
            .waker
            .get_or_insert_with(|| Waker::from(notify.clone()))
            .clone();
        reader.set_timer();
        let ready = outside_budget(|| {
            let mut cx = Context::from_waker(&waker);
            // An error is the socket's: the read reports it.
            let readable = reader.half.poll_read_ready(&mut cx).is_ready();
            let gone = reader
                .writer_gone
                .as_mut()
                .is_some_and(|gone| Pin::new(gone).poll(&mut cx).is_ready());
            let late = reader
                .timer
                .as_mut()
                .is_some_and(|(_, timer)| timer.as_mut().poll(&mut cx).is_ready());
            readable || gone || late
        });
        if ready.unwrap_or(true) {
            // The router is the caller: it looks at the queue again before
            // it waits, no need to wake it.
            notify.enqueue();
        }
        self.armed.insert(reader.conn, reader);
    }

    /// Reads and discards after the broker closed the connection: until the
    /// writer has finished (or the client closed), then until the client is
    /// quiet for [`LINGER_QUIET`], for at most [`LINGER`]. The reader comes
    /// out of [`Reads::next`] with [`Wake::Lingered`] when done.
    pub(super) fn linger(&mut self, mut reader: Reader) {
        self.lingering.push(Box::pin(async move {
            let mut scratch = [0u8; 4096];
            let half = &mut reader.half;
            let mut open = true;
            if let Some(gone) = reader.writer_gone.take() {
                let drain = async {
                    while let Ok(n) = half.read(&mut scratch).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                tokio::select! {
                    _ = gone => {}
                    () = drain => open = false,
                }
            }
            if open {
                let _ = timeout(LINGER, async {
                    while let Ok(Ok(n)) = timeout(LINGER_QUIET, half.read(&mut scratch)).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            reader
        }));
    }

    /// The next reader that was woken, in the order they were, or whose
    /// lingering read is over; `None` when there is none left.
    pub(super) async fn next(&mut self) -> Option<(Reader, Wake)> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Reader, Wake)>> {
        // Registered before looking, so a wake in between is not lost.
        self.router.register(cx.waker());
        while let Ok(conn) = self.woken.try_recv() {
            let Some(mut reader) = self.armed.remove(&conn) else {
                continue;
            };
            if let Some(notify) = &reader.notify {
                notify.queued.store(false, Ordering::Release);
            }
            let wake = reader.why();
            return Poll::Ready(Some((reader, wake)));
        }
        if !self.lingering.is_empty() {
            if let Poll::Ready(Some(reader)) = self.lingering.poll_next_unpin(cx) {
                return Poll::Ready(Some((reader, Wake::Lingered)));
            }
        }
        if self.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// Runs `f` outside tokio's cooperative budget; `None` cannot happen.
fn outside_budget<T>(f: impl FnOnce() -> T) -> Option<T> {
    let mut f = Some(f);
    unconstrained(poll_fn(move |_| Poll::Ready(f.take().map(|f| f()))))
        .now_or_never()
        .flatten()
}

impl Reader {
    /// The reader of a new connection; `writer_gone` ends when its writer
    /// task does.
    pub(super) fn new(
        conn: ConnId,
        half: ReadHalf,
        limits: ReadLimits,
        version: Arc<OnceLock<MqttVersion>>,
        writer_gone: oneshot::Receiver<()>,
    ) -> Self {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        Reader {
            conn,
            half,
            buf: BytesMut::new(),
            decoder: Decoder::new(limits.max_packet_size),
            version,
            connect_deadline: Some(deadline),
            packet_timeout: limits.packet_timeout,
            packet_deadline: None,
            timer: Some((deadline, Box::pin(sleep_until(deadline)))),
            writer_gone: Some(writer_gone),
            notify: None,
            waker: None,
            identity: None,
            packets: 0,
        }
    }

    /// After the buffered bytes were decoded (`completed` packets of them):
    /// with a packet still unfinished, its deadline is `packet_timeout` from
    /// the last packet completed (so a steady stream never times out), or
    /// from its first bytes.
    pub(super) fn decoded(&mut self, completed: usize) {
        self.packet_deadline = match self.packet_timeout {
            Some(_) if self.buf.is_empty() => None,
            Some(timeout) if completed > 0 || self.packet_deadline.is_none() => {
                Some(Instant::now() + timeout)
            }
            Some(_) => self.packet_deadline,
            None => None,
        };
    }

    /// Points the timer at the earlier deadline, reusing it when it can.
    fn set_timer(&mut self) {
        let due = [self.connect_deadline, self.packet_deadline]
            .into_iter()
            .flatten()
            .min();
        match (due, &mut self.timer) {
            (None, timer) => *timer = None,
            (Some(due), Some((at, timer))) => {
                if *at != due {
                    *at = due;
                    timer.as_mut().reset(due);
                }
            }
            (Some(due), timer) => *timer = Some((due, Box::pin(sleep_until(due)))),
        }
    }

    /// Why the reader was woken: its writer's end first, then its CONNECT
    /// deadline, else its socket.
    fn why(&mut self) -> Wake {
        if let Some(gone) = &mut self.writer_gone {
            if !matches!(gone.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                self.writer_gone = None;
                return Wake::WriterGone;
            }
        }
        let now = Instant::now();
        if self.connect_deadline.is_some_and(|d| now >= d) {
            return Wake::ConnectTimeout;
        }
        if self.packet_deadline.is_some_and(|d| now >= d) {
            return Wake::PacketTimeout;
        }
        Wake::Readable
    }

    /// Reads what the socket has, without waiting, onto the buffer:
    /// `Ok(0)` is the end of the stream, `WouldBlock` a spurious wake-up.
    ///
    /// Through `AsyncRead` rather than `try_read_buf`: a read that does not
    /// fill the buffer has drained the socket and clears its readiness, so
    /// the connection's next turn comes from the kernel's readiness report,
    /// in arrival order with the other sockets; otherwise the next arming
    /// would find the socket still marked ready and queue it at once, ahead
    /// of sockets that became readable before its next bytes came.
    pub(super) fn read(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_RESERVE_BELOW {
            self.buf.reserve(READ_CHUNK);
        }
        let (half, buf) = (&mut self.half, &mut self.buf);
        unconstrained(half.read_buf(buf))
            .now_or_never()
            .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
    }
}
