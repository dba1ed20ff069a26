//! The built-in MQTT 3.1.1 + 5.0 broker.
//!
//! It exists so that every flow can be tried, and every test run, on
//! loopback with nothing installed, so it is strict about the specification
//! rather than lenient. Packet encoding and decoding come from `rumqttc`'s
//! `mqttbytes` modules.
//!
//! # Public surface
//!
//! - Configuration: [`BrokerConfig`] (every key with its default, the
//!   [`Profile`]s, [`BrokerConfig::from_json`]) and [`broker_schema`].
//! - Start-up: [`start`] binds and spawns the broker on the current tokio
//!   runtime, or fails with a [`StartError`].
//! - The handle: [`BrokerHandle`] gives the address, the URLs and graceful
//!   [`shutdown`](BrokerHandle::shutdown); for trying clients against
//!   failures, [`restart`](BrokerHandle::restart) and
//!   [`drop_connections`](BrokerHandle::drop_connections), beside the
//!   faults of [`FaultsConfig`] injected on their own.
//! - Management: [`BrokerAdmin`] (from [`BrokerHandle::admin`]) lists, gets,
//!   deletes and counts retained messages; [`admin`] serves it as an HTTP
//!   JSON API on loopback.
//!
//! # Layout
//!
//! Each module, and each file of a module directory, has one job.
//!
//! - [`config`], the configuration:
//!   - `config/mod.rs`: every key with its default, the profiles, JSON.
//!   - `config/check.rs`: the value ranges checked at start.
//!   - `config/faults.rs`: the `faults` section.
//!   - `config/password.rs`: the `password_file` format.
//!   - `config/acl.rs`: the `acl_file` format.
//! - `auth`: who may connect (accounts and `allow_anonymous`) and where
//!   they may publish and subscribe (the ACL).
//!   - `auth/secret.rs`: one password, kept as a digest and compared in
//!     constant time (`mosquitto_passwd`'s hashes).
//!   - `auth/acl.rs`: ACL rules and what they grant one client.
//! - `codec`: between a connection's bytes and the 5.0 packets the core
//!   works with.
//!   - `codec/mod.rs`: framing (check, parse, advance), the fixed header,
//!     the checks both versions share, and the `encode` entry point.
//!   - `codec/connect.rs`: CONNECT, which fixes the protocol version.
//!   - `codec/v5.rs`, `codec/v311.rs`: each version's packets, both ways.
//! - `core`: the broker as a state machine without I/O. Events go in
//!   through `handle_*`, packets to send and retained and session changes
//!   to write come out of `poll_*`, and time is passed in.
//!   - `core/mod.rs`: the state, the inputs and outputs, the dispatch.
//!   - `core/connect.rs`: CONNECT, authentication, CONNACK, sessions
//!     created or resumed.
//!   - `core/publish.rs`: inbound PUBLISH, the QoS flows, routing and
//!     delivery.
//!   - `core/flow.rs`: publishers' acknowledgements held back while a
//!     subscriber's queue is full (`queue_full`).
//!   - `core/subscribe.rs`: SUBSCRIBE and UNSUBSCRIBE.
//!   - `core/retained.rs`: storing retained messages, and their delivery
//!     to new subscriptions a step at a time, paced by the client's window
//!     (QoS 1 and 2) or by its socket (QoS 0).
//!   - `core/disconnect.rs`: the end of a connection and of its session's
//!     attachment.
//!   - `core/shared.rs`: a shared subscription member's undelivered
//!     messages handed to another member of the group.
//!   - `core/timers.rs`: keep alive, wills, session expiry, retained sweep.
//!   - `core/admin.rs`: retained messages for the management API.
//!   - `core/persist.rs`: sessions on disk: the changes of persistent
//!     sessions recorded for the shell, and the sessions read at start
//!     loaded, parked.
//! - `session`: one client's state: subscriptions, packet identifiers, the
//!   in-flight window and the queue behind it.
//!   - `session/stored.rs`: what of a session is kept on disk: the changes
//!     the core records, the sessions read back.
//!   - `session/disk.rs`: the session store's `redb` tables, read at start
//!     and written by the shell.
//! - `trie`: the subscription trie, shared subscriptions included.
//! - `retained`: the retained message store with wildcard lookup, expiry
//!   and resumable walks in topic order, each costing what it finds, not
//!   what is left; it records changes for the disk but does no I/O.
//!   - `retained/disk.rs`: the `redb` file, read at start and written by
//!     the shell.
//! - `disk`: what the stores on disk share: one database per file (the
//!   retained and the session store may share one), the guard against
//!   redb's panics on damaged files, value checksums, PUBLISH packets as
//!   stored.
//! - `server`: the thin tokio shell.
//!   - `server/start.rs`: [`start`], and the start of each instance of
//!     the broker.
//!   - `server/restart.rs`: the supervisor task, which restarts the broker
//!     on the same listening sockets.
//!   - `server/handle.rs`: [`BrokerHandle`] and [`BrokerAdmin`].
//!   - `server/accept.rs`: the accept loop, on the plain and the TLS
//!     listener.
//!   - `server/tls.rs`: the TLS listener's server configuration from the
//!     `tls` files, the handshake with its deadline, and the client
//!     certificate's identity.
//!   - `server/transport.rs`: a connection's byte stream, plain TCP or
//!     TLS, split into the halves the router and the writer use.
//!   - `server/router.rs`: the router task, which owns the core, the
//!     stores' files and the read side of every connection; it reads the
//!     connections in the order their sockets became readable, and writes
//!     retained and session changes before the acknowledgements that
//!     depend on them (group commit).
//!   - `server/reader.rs`: one connection's read side as the router waits
//!     on it: readiness in arrival order, the CONNECT deadline, the
//!     lingering read after a close.
//!   - `server/connection.rs`: one task per connection, writing.
//!   - `server/faults.rs`: the faults the router injects: acknowledgements
//!     dropped or held back, CONNECTs refused, connections closed; each
//!     logged and counted.
//! - `types`: small types the modules share.
//! - `fuzzing` (feature `fuzzing`): entry points for the fuzz targets in
//!   `fuzz/`: the codec over arbitrary bytes, the core over arbitrary
//!   connection scripts.
//! - `memory`: the gauge of memory held by queued messages, against
//!   `memory_limit`.
//! - `log_limit`: log lines for events clients can cause at will, at most
//!   one per interval.
//! - [`admin`]: the optional admin endpoint, a small HTTP JSON API on
//!   loopback over the management API, for `host-shim retained`.

pub mod admin;
mod auth;
mod codec;
pub mod config;
mod core;
mod disk;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod log_limit;
mod memory;
mod retained;
mod server;
mod session;
mod trie;
mod types;

pub use self::core::Stats;
pub use auth::HashError;
pub use config::{
    broker_schema, AclFileError, BrokerConfig, ConfigError, FaultsConfig, PasswordFileError,
    Profile, QueueFullPolicy, RetainConfig, RetainStorage, SessionsConfig, TlsConfig, User,
};
pub use retained::{RetainedEntry, RetainedInfo, RetainedPage, RetainedStoreError};
pub use server::{
    start, AdminError, BrokerAdmin, BrokerHandle, RestartError, StartError, TlsSetupError,
    MAX_PAGE_SIZE,
};
pub use session::SessionStoreError;
