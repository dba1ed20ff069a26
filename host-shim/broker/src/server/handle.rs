//! The handle on a running broker and its management API: requests to the
//! router task, each answered on its own oneshot channel; restarts go to
//! the supervisor task (see `restart`).

use super::restart::RestartRequest;
use super::start::StartError;
use crate::retained::{RetainedEntry, RetainedPage, RetainedStoreError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::sync::{mpsc, oneshot, watch};

/// Capacity of the management request channel: requests are rare, and a
/// caller beyond this waits its turn.
const ADMIN_CAPACITY: usize = 16;

/// The largest page [`BrokerAdmin::retained_list`] returns: the router
/// builds a page while every connection waits, so a page stays small.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A running broker. Dropping it shuts the broker down without waiting;
/// [`BrokerHandle::shutdown`] waits until every connection is closed.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    /// The TLS listener's address, when there is one.
    tls_addr: Option<SocketAddr>,
    /// Never sent on: dropping it is the shutdown signal.
    shutdown: watch::Sender<()>,
    /// Returns `None` once every task has dropped its `done` sender.
    done: mpsc::Receiver<()>,
    /// Management requests to the router.
    admin: BrokerAdmin,
    /// Restart requests to the supervisor.
    restarts: mpsc::Sender<RestartRequest>,
}

impl BrokerHandle {
    /// The address the broker listens on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients connect to, such as `mqtt://127.0.0.1:1883`. A broker
    /// listening on every address (`0.0.0.0`, `::`) gives the loopback one.
    pub fn url(&self) -> String {
        format!("mqtt://{}", reachable(self.local_addr))
    }

    /// The address of the TLS listener (the real port when 0 was asked),
    /// when `tls` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The URL of the TLS listener, such as `mqtts://127.0.0.1:8883`, when
    /// `tls` is configured; the loopback one for a broker listening on
    /// every address.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_addr
            .map(|addr| format!("mqtts://{}", reachable(addr)))
    }

    /// A cloneable handle to the management API, for tasks that outlive a
    /// borrow of this handle (such as the [admin endpoint](crate::admin)).
    /// It stops working, with [`AdminError::Closed`], when the broker shuts
    /// down.
    pub fn admin(&self) -> BrokerAdmin {
        self.admin.clone()
    }

    /// A page of the retained messages whose topic matches `filter`; see
    /// [`BrokerAdmin::retained_list`].
    ///
    /// # Errors
    ///
    /// See [`BrokerAdmin::retained_list`].
    pub async fn retained_list(
        &self,
        filter: &str,
        page_size: usize,
        cursor: Option<String>,
    ) -> Result<RetainedPage, AdminError> {
        self.admin.retained_list(filter, page_size, cursor).await
    }

    /// The retained message of `topic`; see [`BrokerAdmin::retained_get`].
    ///
    /// # Errors
    ///
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_get(&self, topic: &str) -> Result<Option<RetainedEntry>, AdminError> {
        self.admin.retained_get(topic).await
    }

    /// Deletes the retained message of `topic`; see
    /// [`BrokerAdmin::retained_delete`].
    ///
    /// # Errors
    ///
    /// See [`BrokerAdmin::retained_delete`].
    pub async fn retained_delete(&self, topic: &str) -> Result<bool, AdminError> {
        self.admin.retained_delete(topic).await
    }

    /// The number of retained messages; see [`BrokerAdmin::retained_count`].
    ///
    /// # Errors
    ///
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_count(&self) -> Result<usize, AdminError> {
        self.admin.retained_count().await
    }

    /// Closes every client connection without DISCONNECT, as a network
    /// failure would: what is queued for each is written first. Sessions
    /// are kept or end, and wills are sent, as for any connection lost.
    /// Returns how many connections were closed.
    ///
    /// # Errors
    ///
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn drop_connections(&self) -> Result<usize, AdminError> {
        self.admin.drop_connections().await
    }

    /// Restarts the broker, as `faults.restart_every_ms` does: every
    /// connection is dropped without DISCONNECT (and no will is sent), the
    /// state is rebuilt from what storage keeps, as at start (with memory
    /// storage nothing: no sessions, no retained messages), and the broker
    /// serves again on the same addresses. Returns once it does. The handle
    /// and every [`BrokerAdmin`] keep working.
    ///
    /// # Errors
    ///
    /// [`RestartError::Closed`] when the broker has shut down,
    /// [`RestartError::Start`] when it cannot start again (its retained
    /// store cannot be opened, for example); it is then down for good.
    pub async fn restart(&self) -> Result<(), RestartError> {
        let (reply, outcome) = oneshot::channel();
        self.restarts
            .send(reply)
            .await
            .map_err(|_| RestartError::Closed)?;
        outcome.await.map_err(|_| RestartError::Closed)?
    }

    /// The handle of a broker whose tasks were just spawned.
    pub(super) fn new(
        local_addr: SocketAddr,
        tls_addr: Option<SocketAddr>,
        shutdown: watch::Sender<()>,
        done: mpsc::Receiver<()>,
        admin: BrokerAdmin,
        restarts: mpsc::Sender<RestartRequest>,
    ) -> Self {
        BrokerHandle {
            local_addr,
            tls_addr,
            shutdown,
            done,
            admin,
            restarts,
        }
    }

    /// Disconnects every client (5.0: reason 0x8B), stops listening, and
    /// waits until all connection tasks have ended.
    pub async fn shutdown(self) {
        let BrokerHandle {
            shutdown, mut done, ..
        } = self;
        drop(shutdown);
        // Nothing is ever sent: this returns `None` when the last task ends.
        let _ = done.recv().await;
    }
}

/// `addr`, or the loopback address of its family for an unspecified one
/// (`0.0.0.0`, `::`), which clients cannot connect to.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

/// Why [`BrokerHandle::restart`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// The broker has shut down.
    #[error("the broker has shut down")]
    Closed,
    /// The broker stopped and could not start again; it is down.
    #[error("the broker could not start again")]
    Start(#[source] StartError),
}

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The broker has shut down.
    #[error("the broker has shut down")]
    Closed,
    /// The topic filter is not valid (or is a shared subscription's).
    #[error("{0}")]
    InvalidFilter(String),
    /// The change is made in memory, but could not be written to disk; the
    /// write is tried again at the next commit.
    #[error("done in memory but not yet on disk")]
    Store(#[source] RetainedStoreError),
}

/// The management API of a running broker: list, get, delete and count
/// retained messages. Cheap to clone; every call is one request to the
/// router task, answered between two batches of client traffic.
#[derive(Debug, Clone)]
pub struct BrokerAdmin {
    requests: mpsc::Sender<AdminRequest>,
}

impl BrokerAdmin {
    /// A management API and the receiving end of its requests, for the
    /// router.
    pub(super) fn channel() -> (BrokerAdmin, mpsc::Receiver<AdminRequest>) {
        let (requests, receiver) = mpsc::channel(ADMIN_CAPACITY);
        (BrokerAdmin { requests }, receiver)
    }

    /// A page of the retained messages whose topic matches `filter` (`#`
    /// for all), in topic order, without payloads: at most `page_size`
    /// entries (at least 1, at most [`MAX_PAGE_SIZE`]), starting after the
    /// topic `cursor`, the previous page's
    /// [`next_cursor`](RetainedPage::next_cursor). Expired messages are
    /// never listed.
    ///
    /// # Errors
    ///
    /// [`AdminError::InvalidFilter`] for a filter that is not a valid topic
    /// filter, [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_list(
        &self,
        filter: &str,
        page_size: usize,
        cursor: Option<String>,
    ) -> Result<RetainedPage, AdminError> {
        let filter = filter.to_owned();
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        self.ask(|reply| AdminRequest::List {
            filter,
            page_size,
            cursor,
            reply,
        })
        .await?
    }

    /// The retained message of `topic` with its payload, or `None` when
    /// there is none (or it has expired).
    ///
    /// # Errors
    ///
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_get(&self, topic: &str) -> Result<Option<RetainedEntry>, AdminError> {
        let topic = topic.to_owned();
        self.ask(|reply| AdminRequest::Get { topic, reply }).await
    }

    /// Deletes the retained message of `topic`, as an empty retained
    /// PUBLISH would; true if there was one. With disk storage the delete
    /// is written before the answer. Subscribers whose retained delivery
    /// has not reached the topic yet will not get it.
    ///
    /// # Errors
    ///
    /// [`AdminError::Store`] when the delete could not be written to disk
    /// (the message is gone from memory and the write is tried again),
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_delete(&self, topic: &str) -> Result<bool, AdminError> {
        let topic = topic.to_owned();
        self.ask(|reply| AdminRequest::Delete { topic, reply })
            .await?
    }

    /// The number of retained messages stored and not expired.
    ///
    /// # Errors
    ///
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_count(&self) -> Result<usize, AdminError> {
        self.ask(|reply| AdminRequest::Count { reply }).await
    }

    /// Closes every client connection without DISCONNECT; see
    /// [`BrokerHandle::drop_connections`].
    pub(super) async fn drop_connections(&self) -> Result<usize, AdminError> {
        self.ask(|reply| AdminRequest::DropConnections { reply })
            .await
    }

    /// Resolves when the broker has shut down: no request can succeed any
    /// more.
    pub async fn closed(&self) {
        self.requests.closed().await;
    }

    /// Sends the request `make` builds around a reply channel, and waits
    /// for the answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> AdminRequest,
    ) -> Result<T, AdminError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| AdminError::Closed)?;
        // A dropped reply means the router stopped before it answered.
        answer.await.map_err(|_| AdminError::Closed)
    }
}

/// A management request, with the channel for its answer.
#[derive(Debug)]
pub(super) enum AdminRequest {
    List {
        filter: String,
        page_size: usize,
        cursor: Option<String>,
        reply: oneshot::Sender<Result<RetainedPage, AdminError>>,
    },
    Get {
        topic: String,
        reply: oneshot::Sender<Option<RetainedEntry>>,
    },
    Delete {
        topic: String,
        reply: oneshot::Sender<Result<bool, AdminError>>,
    },
    Count {
        reply: oneshot::Sender<usize>,
    },
    DropConnections {
        reply: oneshot::Sender<usize>,
    },
}
