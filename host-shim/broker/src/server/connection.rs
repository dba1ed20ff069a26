//! One connection task: a read loop that decodes packets and sends them to
//! the router, and a write loop that encodes what the router sends back.

use super::router::{Event, Outbound};
use crate::codec::{self, DecodeError, Decoder, Frame};
use crate::core::ConnId;
use bytes::{Bytes, BytesMut};
use mqtt_topic::MqttVersion;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tracing::{debug, warn};

/// How long a new connection may take to send its CONNECT. Short in unit
/// tests so the timeout can be tested in real time (tokio's `test-util`
/// clock is not available).
pub(super) const CONNECT_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(500)
} else {
    Duration::from_secs(10)
};

/// How long a connection waits for the core's close after it reported a
/// malformed packet, should the core not answer.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// After the broker closed a connection, it keeps reading (and discarding)
/// for at most this long, so that unread bytes do not turn the close into a
/// reset, which could destroy the last packets written before the client
/// reads them.
const LINGER: Duration = Duration::from_secs(1);

/// The lingering read also ends when nothing arrives for this long, so a
/// quiet client that does not close does not hold up shutdown.
const LINGER_QUIET: Duration = Duration::from_millis(50);

/// How long connections may take to flush their last packets at shutdown
/// before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Flush the write buffer when it grows beyond this, even if more packets
/// are waiting.
const WRITE_BATCH: usize = 64 * 1024;

/// One connection task: a reader and a writer over one socket.
pub(super) struct Connection {
    pub(super) conn: ConnId,
    pub(super) max_packet_size: u32,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) shutdown: watch::Receiver<()>,
    /// Held, never used: see [`BrokerHandle::shutdown`](super::BrokerHandle::shutdown).
    pub(super) _done: mpsc::Sender<()>,
    /// Held: frees a connection slot when the task ends.
    pub(super) _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Why a reader stopped.
#[derive(Debug)]
enum ReadEnd {
    /// The peer closed, the read failed or no CONNECT came in time.
    Gone,
    /// The bytes could not be decoded; the writer will close.
    Stopped,
    /// The router is gone (shutdown).
    RouterGone,
}

/// Why a writer stopped.
#[derive(Debug, PartialEq, Eq)]
enum WriteEnd {
    /// The broker closed the connection.
    Closed,
    /// The router forgot the connection.
    Forgotten,
    /// Writing failed.
    Failed,
}

impl Connection {
    pub(super) async fn run(mut self, stream: TcpStream) {
        let conn = self.conn;
        if let Err(e) = stream.set_nodelay(true) {
            debug!(conn, "cannot set TCP_NODELAY: {e}");
        }
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = self.serve(stream) => {}
            () = async {
                let _ = shutdown.changed().await;
                sleep(SHUTDOWN_GRACE).await;
            } => debug!(conn, "connection dropped at shutdown before it was flushed"),
        }
    }

    async fn serve(&mut self, stream: TcpStream) {
        let conn = self.conn;
        let (mut rd, wr) = stream.into_split();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let queued_qos0 = Arc::new(AtomicUsize::new(0));
        // Set by the reader before it passes the CONNECT on, so it is known
        // before the core can answer.
        let version = OnceLock::new();
        let opened = Event::Opened {
            conn,
            outbound: out_tx.clone(),
            queued_qos0: queued_qos0.clone(),
        };
        if self.events.send(opened).await.is_err() {
            return;
        }

        let mut closed_sent = false;
        let (read_end, write_end) = {
            let reader = read_loop(
                conn,
                &mut rd,
                self.max_packet_size,
                &self.events,
                out_tx,
                &version,
            );
            let writer = write_loop(conn, wr, out_rx, &version, &queued_qos0);
            tokio::pin!(reader, writer);
            tokio::select! {
                read_end = &mut reader => {
                    let write_end = match read_end {
                        ReadEnd::Gone => {
                            // The router drops our outbound sender on
                            // `Closed`, which ends the writer.
                            closed_sent = true;
                            if self.events.send(Event::Closed { conn }).await.is_err() {
                                return;
                            }
                            writer.await
                        }
                        ReadEnd::Stopped => match timeout(CLOSE_WAIT, &mut writer).await {
                            Ok(end) => end,
                            Err(_) => {
                                debug!(conn, "no close from the broker after a malformed packet");
                                WriteEnd::Failed
                            }
                        },
                        ReadEnd::RouterGone => writer.await,
                    };
                    (Some(read_end), write_end)
                }
                write_end = &mut writer => (None, write_end),
            }
        };
        if !closed_sent {
            let _ = self.events.send(Event::Closed { conn }).await;
        }
        // We closed first: drain what the client still sends, so unread
        // input cannot turn our FIN into a reset.
        if write_end == WriteEnd::Closed && !matches!(read_end, Some(ReadEnd::Gone)) {
            let mut scratch = [0u8; 4096];
            let _ = timeout(LINGER, async {
                while let Ok(Ok(n)) = timeout(LINGER_QUIET, rd.read(&mut scratch)).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        debug!(conn, "connection ended");
    }
}

/// Reads and decodes until the peer closes or the bytes cannot be decoded,
/// and sends each packet to the router.
async fn read_loop(
    conn: ConnId,
    rd: &mut OwnedReadHalf,
    max_packet_size: u32,
    events: &mpsc::Sender<Event>,
    outbound: mpsc::UnboundedSender<Outbound>,
    version: &OnceLock<MqttVersion>,
) -> ReadEnd {
    let mut decoder = Decoder::new(max_packet_size);
    let mut buf = BytesMut::with_capacity(4096);
    let connect_deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if let Frame::Connect { version: v, .. } = &frame {
                        let _ = version.set(*v);
                    }
                    // Waits while the router is behind: backpressure.
                    if events.send(Event::Frame { conn, frame }).await.is_err() {
                        return ReadEnd::RouterGone;
                    }
                }
                Ok(None) => break,
                Err(DecodeError::UnsupportedProtocol { level }) => {
                    // MQTT-3.1.2-2: CONNACK 0x01 and close, the core is
                    // never involved.
                    debug!(conn, level, "unsupported protocol level");
                    let connack = Bytes::copy_from_slice(&codec::unsupported_protocol_connack());
                    let _ = outbound.send(Outbound::Raw(connack));
                    let _ = outbound.send(Outbound::Close);
                    return ReadEnd::Stopped;
                }
                Err(DecodeError::Invalid { reason, detail }) => {
                    debug!(conn, ?reason, "malformed packet: {detail}");
                    if let Some(v) = decoder.version() {
                        let _ = version.set(v);
                    }
                    if events
                        .send(Event::Malformed { conn, reason })
                        .await
                        .is_err()
                    {
                        return ReadEnd::RouterGone;
                    }
                    return ReadEnd::Stopped;
                }
            }
        }

        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let read = if version.get().is_none() {
            match timeout_at(connect_deadline, rd.read_buf(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    debug!(conn, "no CONNECT within {CONNECT_TIMEOUT:?}");
                    return ReadEnd::Gone;
                }
            }
        } else {
            rd.read_buf(&mut buf).await
        };
        match read {
            Ok(0) => {
                if !buf.is_empty() {
                    debug!(conn, "peer closed in the middle of a packet");
                }
                return ReadEnd::Gone;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(conn, "read failed: {e}");
                return ReadEnd::Gone;
            }
        }
    }
}

/// Encodes and writes what the router sends, batching what is already
/// queued into one write, until told to close or forgotten.
async fn write_loop(
    conn: ConnId,
    mut wr: OwnedWriteHalf,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    version: &OnceLock<MqttVersion>,
    queued_qos0: &AtomicUsize,
) -> WriteEnd {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let Some(first) = outbound.recv().await else {
            let _ = wr.shutdown().await;
            return WriteEnd::Forgotten;
        };
        let mut close = false;
        let mut qos0 = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Outbound::Packet(packet) => {
                    if matches!(&packet, Packet::Publish(p) if p.qos == QoS::AtMostOnce) {
                        qos0 += 1;
                    }
                    match version.get() {
                        Some(&v) => {
                            if let Err(e) = codec::encode(v, &packet, &mut buf) {
                                warn!(conn, "cannot encode a packet: {e}");
                            }
                        }
                        None => debug!(conn, "packet before CONNECT not sent"),
                    }
                }
                Outbound::Raw(bytes) => buf.extend_from_slice(&bytes),
                Outbound::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() < WRITE_BATCH {
                next = outbound.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            let written = wr.write_all(&buf).await;
            buf.clear();
            if let Err(e) = written {
                debug!(conn, "write failed: {e}");
                queued_qos0.fetch_sub(qos0, Ordering::AcqRel);
                return WriteEnd::Failed;
            }
        }
        queued_qos0.fetch_sub(qos0, Ordering::AcqRel);
        if close {
            let _ = wr.shutdown().await;
            return WriteEnd::Closed;
        }
    }
}
