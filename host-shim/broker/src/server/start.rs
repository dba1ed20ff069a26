//! Start-up: the configuration checked, the socket bound, the retained
//! and session stores opened, and the tasks spawned. A restart starts the
//! next instance of the broker through the same [`Base::launch`].

use super::accept::{Acceptor, Listeners};
use super::faults::Faults;
use super::handle::{BrokerAdmin, BrokerHandle};
use super::reader::ReadLimits;
use super::restart::{Handback, Instance, Phase, Supervisor, RESTART_CAPACITY};
use super::router::{Router, EVENT_CAPACITY};
use super::tls::{TlsListener, TlsSetupError};
use crate::auth::Auth;
use crate::config::{self, BrokerConfig, ConfigError, RetainStorage};
use crate::core::Broker;
use crate::memory::MemoryGauge;
use crate::retained::{DiskStore, RetainedStoreError};
use crate::session::{SessionStore, SessionStoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening socket could not be bound. The I/O error is the
    /// [`source`](std::error::Error::source), not part of the message.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid broker configuration: {0}")]
    Config(String),
    /// The retained message store (`retain.storage`) cannot be opened.
    #[error("cannot open the retained message store")]
    RetainedStore(#[source] RetainedStoreError),
    /// The session store (`sessions.storage`) cannot be opened.
    #[error("cannot open the session store")]
    SessionStore(#[source] SessionStoreError),
    /// The TLS listener's files (`tls`) cannot be read or used.
    #[error("cannot set up the TLS listener: {0}")]
    Tls(#[from] TlsSetupError),
}

impl From<ConfigError> for StartError {
    fn from(error: ConfigError) -> Self {
        StartError::Config(error.to_string())
    }
}

/// Starts a broker on the current tokio runtime.
///
/// The accounts of `password_file` are read before the broker starts, next
/// to the inline `users`.
///
/// # Errors
///
/// [`StartError::Bind`] when the address cannot be bound,
/// [`StartError::Config`] when the configuration is invalid or the password
/// file cannot be read, [`StartError::RetainedStore`] when the retained
/// message store's file cannot be opened or read,
/// [`StartError::SessionStore`] when the session store's cannot,
/// [`StartError::Tls`] when
/// a file of `tls` cannot be read or used.
///
/// # Example
///
/// ```no_run
/// # async fn example() -> Result<(), mqtt_broker::StartError> {
/// use mqtt_broker::{start, BrokerConfig};
///
/// let broker = start(BrokerConfig::ephemeral()).await?;
/// println!("connect to {}", broker.url());
/// broker.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, StartError> {
    config::check(&config)?;
    let auth = Auth::load(&config)?;
    auth.warn_at_start(&config);

    // The files first: a broken certificate is reported before any port
    // is taken.
    let tls = config.tls.as_ref().map(TlsListener::new).transpose()?;

    let (listener, local_addr) = bind(&config.host, config.port).await?;
    let (tls, tls_addr) = match (tls, &config.tls) {
        (Some(tls), Some(tls_config)) => {
            let (listener, addr) = bind(&config.host, tls_config.port).await?;
            (Some((listener, tls)), Some(addr))
        }
        _ => (None, None),
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let (done_tx, done_rx) = mpsc::channel(1);
    let (admin, admin_rx) = BrokerAdmin::channel();
    let (restarts_tx, restarts_rx) = mpsc::channel(RESTART_CAPACITY);

    let listeners = Listeners {
        plain: listener,
        tls,
        next_conn: 1,
    };
    let first = Handback {
        admin: admin_rx,
        faults: Faults::new(&config.faults),
        next_assigned_id: 1,
    };
    let base = Base {
        config,
        auth,
        done: done_tx,
    };
    let instance = base.launch(listeners, first)?;
    let supervisor = Supervisor {
        base,
        instance,
        shutdown: shutdown_rx,
        requests: restarts_rx,
    };
    tokio::spawn(supervisor.run());

    Ok(BrokerHandle::new(
        local_addr,
        tls_addr,
        shutdown_tx,
        done_rx,
        admin,
        restarts_tx,
    ))
}

/// What start-up prepares once for every instance of the broker: the
/// checked configuration, the accounts, and the `done` sender every task
/// holds a clone of (see [`BrokerHandle::shutdown`]).
pub(super) struct Base {
    pub(super) config: BrokerConfig,
    auth: Auth,
    done: mpsc::Sender<()>,
}

impl Base {
    /// Starts an instance of the broker on `listeners`, going on from what
    /// the previous one handed back: opens and loads what storage keeps,
    /// builds the core, and spawns the router and the accept loop. Start-up
    /// and every restart go through here, so a restart rebuilds what a
    /// start builds.
    ///
    /// # Errors
    ///
    /// [`StartError::RetainedStore`] when the retained message store's file
    /// cannot be opened or read, [`StartError::SessionStore`] when the
    /// session store's cannot.
    pub(super) fn launch(
        &self,
        listeners: Listeners,
        handback: Handback,
    ) -> Result<Instance, StartError> {
        let config = &self.config;
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);

        // A store that cannot be opened is a start error, never a silent
        // fall back to memory that would lose what the user stored.
        let (disk, loaded) = match &config.retain.storage {
            RetainStorage::Memory => (None, Vec::new()),
            RetainStorage::Disk(path) => {
                let (disk, loaded) = DiskStore::open(path).map_err(StartError::RetainedStore)?;
                (Some(disk), loaded)
            }
        };
        let (sessions, stored) = match &config.sessions.storage {
            RetainStorage::Memory => (None, Vec::new()),
            RetainStorage::Disk(path) => {
                let shared = disk.as_ref().map(DiskStore::file).filter(|f| f.is_at(path));
                let opened = match shared {
                    // One file for both, as Mosquitto keeps one persistence
                    // file (and redb opens a file once).
                    Some(file) => SessionStore::load(file.clone()),
                    None => SessionStore::open(path),
                };
                let (store, stored) = opened.map_err(StartError::SessionStore)?;
                (Some(store), stored)
            }
        };
        let router = Router::new(
            config.max_queued_messages,
            config.max_outbound_bytes,
            Duration::from_secs(u64::from(config.slow_client_timeout)),
            disk,
            sessions,
            handback.faults,
        );
        let gauge = MemoryGauge::default();
        let accept = Acceptor {
            listener: listeners.plain,
            gauge: gauge.clone(),
            tls: listeners.tls,
            limit: Arc::new(Semaphore::new(config.max_connections)),
            limits: ReadLimits {
                max_packet_size: config.max_packet_size,
                packet_timeout: (config.packet_timeout > 0)
                    .then(|| Duration::from_secs(u64::from(config.packet_timeout))),
            },
            outbound_limit: config.max_outbound_bytes,
            events: events_tx,
            shutdown: phase_rx.clone(),
            done: self.done.clone(),
            next_conn: listeners.next_conn,
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let core = Broker::new(config.clone(), loaded, now, wall)
            .with_auth(self.auth.clone())
            .with_gauge(gauge)
            .with_next_assigned_id(handback.next_assigned_id)
            .with_sessions(stored, now, wall);
        let (handback_tx, handed_back) = oneshot::channel();
        tokio::spawn(router.run(
            core,
            events_rx,
            handback.admin,
            phase_rx,
            self.done.clone(),
            handback_tx,
        ));
        let accept = tokio::spawn(accept.run());
        Ok(Instance {
            phase: phase_tx,
            handback: handed_back,
            accept,
        })
    }
}

/// A listening socket on `host:port`, and the address it got.
async fn bind(host: &str, port: u16) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind {
        addr: display_addr(host, port),
        source,
    };
    let listener = TcpListener::bind((host, port)).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// `host:port`, with brackets around an IPv6 host.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
