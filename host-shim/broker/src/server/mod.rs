//! The tokio shell around the core: sockets, tasks, channels and shutdown.
//!
//! # Layout
//!
//! - `start`: [`start()`] checks the configuration, binds, opens the retained
//!   and session stores and spawns the tasks.
//! - `restart`: the supervisor task, which runs one instance of the broker
//!   at a time on the same listening sockets and restarts it.
//! - `handle`: [`BrokerHandle`] and the management API ([`BrokerAdmin`],
//!   [`AdminError`]) with its requests to the router.
//! - `accept`: the accept loop, on the plain and the TLS listener.
//! - `tls`: the TLS listener's configuration, handshake (with a deadline)
//!   and client identity.
//! - `transport`: a connection's stream, plain or TLS, and its halves.
//! - `router`: the router task, which owns the core and reads every
//!   connection, and the events and messages it exchanges with connection
//!   tasks.
//! - `reader`: the read side of a connection, as the router waits on it.
//! - `connection`: one task per connection: the write loop (encode).
//! - `budget`: a connection's outbound byte budget, shared by the router
//!   and the writer.
//! - `faults`: the faults the router injects (`faults`), logged and
//!   counted.
//!
//! # Tasks and channels
//!
//! - The **accept loop** holds a [`Semaphore`](tokio::sync::Semaphore)
//!   permit per connection (at most `max_connections`), and spawns one
//!   **connection task** per socket.
//! - The connection task splits the socket. It hands the read half to the
//!   **router task**, which owns the `Broker` core, with an `Opened` event,
//!   and keeps the write half.
//! - **Reading in arrival order.** The router waits on every connection's
//!   read half at once and is handed them in the order their sockets became
//!   readable (see `reader`); it reads and decodes each in that order and
//!   feeds the packets straight to the core. So packets from different
//!   connections reach the core in the order their bytes reached the
//!   broker, as closely as the kernel lets a reader see it, under load as
//!   when idle: a SUBSCRIBE that arrived before a PUBLISH on another
//!   connection is in force for that PUBLISH. Per-connection reader tasks
//!   could not promise that: two sockets readable together were read in
//!   whatever order the scheduler ran their tasks (tokio's LIFO slot runs
//!   the last woken first), and then raced into a shared channel.
//! - **Flow control.** The router reads a socket only when it has handled
//!   what it read before, one read per socket per turn. When it falls
//!   behind, bytes wait in the kernel and TCP pushes back on the
//!   publishers: that, and the acknowledgements the core holds back while
//!   a subscriber's queue is full (`queue_full`), is the only flow control
//!   a 3.1.1 client gets.
//! - The router carries out the core's actions by writing to each
//!   connection's *unbounded* outbound channel, so the router never waits on
//!   a slow subscriber. QoS 1 and 2 traffic is bounded there by the core's
//!   in-flight window; live QoS 0 is bounded by counting what is queued and
//!   dropping (counted, logged) beyond `max_queued_messages` or
//!   `max_outbound_bytes`. Every queue is bounded in bytes too (see
//!   `budget`): over `max_outbound_bytes` the router stops reading the
//!   client's socket, so a client that sends requests and never reads the
//!   replies cannot grow it, and closes the connection if it stays over
//!   for `slow_client_timeout`. Retained
//!   QoS 0 messages for a new subscription are paced by the core instead
//!   (a bounded number not yet written per connection) and never dropped:
//!   the writer reports how many it wrote (`Written` events), which lets
//!   the core send more.
//! - Shutdown is a [`watch`](tokio::sync::watch) channel whose sender the
//!   [`BrokerHandle`] owns: dropping it, by [`BrokerHandle::shutdown`] or by
//!   dropping the handle, makes the supervisor (see **Restarts**) stop the
//!   running instance: the accept loop stops and the router disconnects
//!   everyone; the router then keeps reading (and discarding)
//!   what clients still send while the writers flush, for a few seconds at
//!   most. Every task holds a clone of a `done` sender it never uses;
//!   `shutdown` waits until the last one is dropped, that is until every
//!   task has ended.
//! - **Group commit.** The core does no I/O: start-up opens the stores'
//!   files (one when `retain.storage` and `sessions.storage` name the same)
//!   and hands their retained messages and sessions to the core, and the
//!   router owns the files. The router handles a batch of packets (up to
//!   `EVENT_BATCH`), takes that batch's retained and session changes from
//!   the core, writes each store's in one transaction, and only then
//!   carries out the batch's actions. So a PUBACK or PUBREC for a retained
//!   PUBLISH, or for one queued for a persistent session, leaves only once
//!   the message is durable, and one fsync serves many publishers. When a
//!   write fails, the connections whose acknowledgements in the batch wait
//!   for it (those that sent a retained QoS 1 or 2 PUBLISH, and those the
//!   core names for session changes) are closed without their
//!   acknowledgement: the clients resend, and the write is tried again.
//! - **Management.** [`BrokerAdmin`] (from [`BrokerHandle::admin`]) sends
//!   requests to the router on their own small channel, each with a oneshot
//!   reply, so listing or deleting retained messages takes no lock on the
//!   publish path and sees the store exactly as subscribers do.
//! - **Restarts.** The **supervisor task** holds the handle's end of the
//!   shutdown signal and the running instance: its router, accept loop and
//!   connection tasks, which watch the instance's own signal. A restart
//!   tells them the instance is restarting: the router closes every
//!   connection without DISCONNECT and hands back the management requests
//!   and the fault injector, the accept loop hands back the listening
//!   sockets, and the supervisor starts the next instance through
//!   start-up's own path, which opens and loads the stores again.

mod accept;
mod budget;
mod connection;
mod faults;
mod handle;
mod reader;
mod restart;
mod router;
mod start;
mod tls;
mod transport;

#[cfg(test)]
mod tests;

pub use handle::{AdminError, BrokerAdmin, BrokerHandle, RestartError, MAX_PAGE_SIZE};
pub use start::{start, StartError};
pub use tls::TlsSetupError;
