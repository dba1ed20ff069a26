//! Loading the connector component and running its operations under limits.
//!
//! What the guest returns is converted once, here, to the connector's own
//! types: its errors to [`connector::model::Error`] (whose `Display` names
//! the document and the broker's reason code) and its configuration
//! problems to [`connector::validate::Problem`].

use super::bindings::exports::mqtt_connector::connector::operations::{Metadata, OperationKind};
use super::bindings::mqtt_connector::connector::types::Document;
use super::bindings::{Connector, ConnectorPre};
use super::cache::{CodeCache, CodeOrigin};
use super::capability::{self, MqttCtx, MqttCtxView, MqttView};
use super::policy::Policy;
use connector::model::{Error, ErrorCode};
use connector::validate::Problem;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The connector component built from this workspace, embedded at build time.
pub static EMBEDDED_COMPONENT: &[u8] = include_bytes!(env!("CONNECTOR_WASM"));

/// How often the engine's epoch advances; the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Sandbox limits of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most linear memory one instance may have, in bytes. Default 64 MiB.
    pub memory_bytes: usize,
    /// Most time the guest may compute in one call, not counting the time it
    /// waits on the host (a broker's acknowledgements, a receive timeout).
    /// Default 10 s.
    pub guest_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 * 1024 * 1024,
            guest_time: Duration::from_secs(10),
        }
    }
}

/// Why an operation call failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// The connector reported an error (bad configuration, broker refused).
    #[error("{0}")]
    Connector(Error),
    /// The guest trapped or went over a limit. The instance was discarded;
    /// the next call runs in a fresh one.
    #[error("the connector failed and was restarted: {0}")]
    Trap(String),
}

impl OperationError {
    /// Whether a failed commit only says that some of its documents came
    /// on a connection since lost: those were not committed and the broker
    /// delivers them again; the others were, and the listener goes on.
    pub fn is_redelivery(&self) -> bool {
        matches!(self, OperationError::Connector(e) if e.code == ErrorCode::ConnectionFailed)
    }
}

/// Why the connector component could not be loaded, or a call that is not
/// an operation's ([`Runtime::describe`], [`Runtime::validate`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A component file could not be read or compiled.
    #[error("cannot load component {}: {detail}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong, with its causes.
        detail: String,
    },
    /// The engine could not be made, or the component compiled, linked or
    /// instantiated.
    #[error(transparent)]
    Wasmtime(Box<dyn std::error::Error + Send + Sync>),
    /// The guest trapped.
    #[error("{0}")]
    Trap(String),
}

impl From<wasmtime::Error> for RuntimeError {
    fn from(e: wasmtime::Error) -> Self {
        RuntimeError::Wasmtime(e.into_boxed_dyn_error())
    }
}

/// Store data of one connector instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    mqtt: MqttCtx,
    limits: StoreLimits,
    guest_time: Duration,
    call_started: Instant,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl MqttView for HostState {
    fn mqtt(&mut self) -> MqttCtxView<'_> {
        MqttCtxView {
            ctx: &mut self.mqtt,
            table: &mut self.table,
        }
    }
}

/// The connector component compiled once, ready to instantiate per
/// operation.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    pre: ConnectorPre<HostState>,
    limits: Limits,
    origin: CodeOrigin,
    /// The embedder's policy for every operation; `None`: each operation
    /// gets its connection's ([`Policy::for_connection`]).
    policy: Option<Policy>,
}

impl Runtime {
    /// The embedded connector with `limits`. The component is compiled once
    /// per process and shared by every runtime made this way.
    ///
    /// # Errors
    ///
    /// When the component cannot be compiled or linked.
    pub fn embedded(limits: Limits) -> Result<Self, RuntimeError> {
        Self::embedded_cached(limits, None)
    }

    /// [`Runtime::embedded`], with the compiled code read from `cache` when
    /// it holds it and written to it when not, for the first runtime of the
    /// process; the others share that one's code.
    ///
    /// # Errors
    ///
    /// When the component cannot be compiled or linked; a cache that cannot
    /// be read or written only means compiling.
    pub fn embedded_cached(
        limits: Limits,
        cache: Option<&CodeCache>,
    ) -> Result<Self, RuntimeError> {
        static COMPILED: OnceLock<(Engine, Component, CodeOrigin)> = OnceLock::new();
        let (engine, component, origin) = match COMPILED.get() {
            Some(compiled) => compiled.clone(),
            None => {
                let engine = new_engine()?;
                let (component, origin) = compile(&engine, EMBEDDED_COMPONENT, cache)?;
                COMPILED.get_or_init(|| (engine, component, origin)).clone()
            }
        };
        Self::with_component(engine, component, limits, origin)
    }

    /// A connector component read from `path` (another build of it).
    ///
    /// # Errors
    ///
    /// When the file cannot be read, compiled or linked.
    pub fn from_file(path: &Path, limits: Limits) -> Result<Self, RuntimeError> {
        Self::from_file_cached(path, limits, None)
    }

    /// [`Runtime::from_file`], with the compiled code read from `cache` when
    /// it holds it (for a file of the same bytes) and written to it when not.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, compiled or linked; a cache that cannot
    /// be read or written only means compiling.
    pub fn from_file_cached(
        path: &Path,
        limits: Limits,
        cache: Option<&CodeCache>,
    ) -> Result<Self, RuntimeError> {
        let load_error = |detail: String| RuntimeError::Load {
            path: path.to_owned(),
            detail,
        };
        let wasm = std::fs::read(path).map_err(|e| load_error(e.to_string()))?;
        let engine = new_engine()?;
        let (component, origin) =
            compile(&engine, &wasm, cache).map_err(|e| load_error(format!("{e:#}")))?;
        Self::with_component(engine, component, limits, origin)
    }

    fn with_component(
        engine: Engine,
        component: Component,
        limits: Limits,
        origin: CodeOrigin,
    ) -> Result<Self, RuntimeError> {
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        capability::add_to_linker(&mut linker)?;
        let pre = ConnectorPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Runtime {
            engine,
            pre,
            limits,
            origin,
            policy: None,
        })
    }

    /// The same runtime with `policy` for every operation, instead of each
    /// operation's connection deciding which broker and files its guest may
    /// reach.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// What the guest of an operation opened with `connection` may reach.
    fn policy_for(&self, connection: &str) -> Policy {
        self.policy
            .clone()
            .unwrap_or_else(|| Policy::for_connection(connection))
    }

    /// The limits every instance runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the component's code was compiled or read from a cache.
    pub fn code_origin(&self) -> CodeOrigin {
        self.origin
    }

    async fn instantiate(
        &self,
        log_name: &str,
        policy: Policy,
    ) -> wasmtime::Result<(Store<HostState>, Connector)> {
        let state = HostState {
            // WASI denies network, files and environment by default; the
            // guest reaches brokers only through the MQTT capability.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .table_elements(policy.table_elements_limit())
                .instances(4)
                // A clear trap at the limit, rather than an allocation
                // failure the guest reports as `unreachable`.
                .trap_on_grow_failure(true)
                .build(),
            mqtt: MqttCtx::new().policy(policy).log_name(log_name),
            guest_time: self.limits.guest_time,
            call_started: Instant::now(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|ctx| {
            let data = ctx.data();
            let guest = data
                .call_started
                .elapsed()
                .saturating_sub(data.mqtt.host_time());
            if guest > data.guest_time {
                return Err(wasmtime::Error::msg(format!(
                    "the guest computed for more than {:?} in one call",
                    data.guest_time
                )));
            }
            // Yield so one busy guest never holds a runtime thread.
            Ok(UpdateDeadline::Yield(1))
        });
        begin_call(&mut store);
        let connector = self.pre.instantiate_async(&mut store).await?;
        Ok((store, connector))
    }

    /// The connector's metadata and schemas.
    ///
    /// # Errors
    ///
    /// When the guest traps.
    pub async fn describe(&self) -> Result<Metadata, RuntimeError> {
        let (mut store, connector) = self.instantiate("describe", Policy::closed()).await?;
        begin_call(&mut store);
        connector
            .mqtt_connector_connector_operations()
            .call_describe(&mut store)
            .await
            .map_err(guest_trap)
    }

    /// Every problem of a configuration: `kind` none for a connection
    /// configuration.
    ///
    /// # Errors
    ///
    /// When the guest traps.
    pub async fn validate(
        &self,
        kind: Option<OperationKind>,
        config: &str,
    ) -> Result<Vec<Problem>, RuntimeError> {
        let (mut store, connector) = self.instantiate("validate", Policy::closed()).await?;
        begin_call(&mut store);
        let problems = connector
            .mqtt_connector_connector_operations()
            .call_validate(&mut store, kind, config)
            .await
            .map_err(guest_trap)?;
        Ok(problems.into_iter().map(Into::into).collect())
    }

    /// Opens a Send operation: connects and checks its configuration.
    ///
    /// # Errors
    ///
    /// The connector's error (invalid configuration, connection refused), or
    /// a trap.
    pub async fn open_sender(
        &self,
        connection: &str,
        config: &str,
    ) -> Result<Sender, OperationError> {
        let op = Operation::open(self.clone(), OperationKind::Send, connection, config).await?;
        Ok(Sender { op })
    }

    /// Opens a Listen operation: connects and subscribes.
    ///
    /// # Errors
    ///
    /// The connector's error (invalid configuration, connection refused), or
    /// a trap.
    pub async fn open_listener(
        &self,
        connection: &str,
        config: &str,
    ) -> Result<Listener, OperationError> {
        let op = Operation::open(self.clone(), OperationKind::Listen, connection, config).await?;
        Ok(Listener { op })
    }
}

/// `wasm` compiled for `engine`, through `cache` when there is one.
fn compile(
    engine: &Engine,
    wasm: &[u8],
    cache: Option<&CodeCache>,
) -> wasmtime::Result<(Component, CodeOrigin)> {
    match cache {
        Some(cache) => cache.load(engine, wasm),
        None => Ok((Component::new(engine, wasm)?, CodeOrigin::Compiled)),
    }
}

fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

/// Advances the engine's epoch on a thread of its own for as long as the
/// engine lives.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("connector-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .ok();
}

/// Starts the per-call clock the epoch callback measures guest time with.
fn begin_call(store: &mut Store<HostState>) {
    let data = store.data_mut();
    data.call_started = Instant::now();
    data.mqtt.reset_host_time();
    store.set_epoch_deadline(1);
}

/// A trap in a call without an operation to restart.
fn guest_trap(e: wasmtime::Error) -> RuntimeError {
    RuntimeError::Trap(format!("{e:?}"))
}

fn trap(e: wasmtime::Error) -> OperationError {
    let detail = format!("{e:#}");
    if detail.contains("memory growth failure") || detail.contains("growing memory") {
        return OperationError::Trap(format!(
            "the connector went over its memory limit: {detail}"
        ));
    }
    OperationError::Trap(detail)
}

/// An open operation: its own store and instance, and the guest resource.
/// After a trap the instance is discarded and reopened on the next call.
struct Operation {
    runtime: Runtime,
    kind: OperationKind,
    connection: String,
    config: String,
    live: Option<Live>,
}

struct Live {
    store: Store<HostState>,
    connector: Connector,
    resource: ResourceAny,
}

impl Operation {
    async fn open(
        runtime: Runtime,
        kind: OperationKind,
        connection: &str,
        config: &str,
    ) -> Result<Self, OperationError> {
        let mut op = Operation {
            runtime,
            kind,
            connection: connection.to_owned(),
            config: config.to_owned(),
            live: None,
        };
        op.live().await?;
        Ok(op)
    }

    /// The live instance, opening a fresh one if there is none.
    async fn live(&mut self) -> Result<&mut Live, OperationError> {
        if self.live.is_none() {
            let name = match self.kind {
                OperationKind::Send => "send",
                OperationKind::Listen => "listen",
            };
            let policy = self.runtime.policy_for(&self.connection);
            let (mut store, connector) = self
                .runtime
                .instantiate(name, policy)
                .await
                .map_err(|e| OperationError::Trap(format!("{e:#}")))?;
            begin_call(&mut store);
            let ops = connector.mqtt_connector_connector_operations();
            let opened = match self.kind {
                OperationKind::Send => {
                    ops.sender()
                        .call_open(&mut store, &self.connection, &self.config)
                        .await
                }
                OperationKind::Listen => {
                    ops.listener()
                        .call_open(&mut store, &self.connection, &self.config)
                        .await
                }
            };
            let resource = opened
                .map_err(trap)?
                .map_err(|e| OperationError::Connector(e.into()))?;
            self.live = Some(Live {
                store,
                connector,
                resource,
            });
        }
        Ok(self.live.as_mut().expect("just opened"))
    }

    /// Runs `result` of a guest call: a trap discards the instance.
    fn settle<T>(&mut self, result: wasmtime::Result<T>) -> Result<T, OperationError> {
        result.map_err(|e| {
            tracing::warn!("connector instance discarded after a failure: {e:#}");
            self.live = None;
            trap(e)
        })
    }

    async fn close(&mut self) {
        if let Some(mut live) = self.live.take() {
            begin_call(&mut live.store);
            let ops = live.connector.mqtt_connector_connector_operations();
            let closed = match self.kind {
                OperationKind::Send => {
                    ops.sender()
                        .call_close(&mut live.store, live.resource)
                        .await
                }
                OperationKind::Listen => {
                    ops.listener()
                        .call_close(&mut live.store, live.resource)
                        .await
                }
            };
            if let Err(e) = closed {
                tracing::debug!("closing the operation failed: {e:#}");
            }
            let _ = live.resource.resource_drop_async(&mut live.store).await;
        }
    }
}

/// A Send operation.
pub struct Sender {
    op: Operation,
}

impl Sender {
    /// Sends a batch: one result per document, in order.
    ///
    /// # Errors
    ///
    /// [`OperationError::Trap`] when the guest fails; the batch's outcome is
    /// then unknown and the next call runs in a fresh instance.
    pub async fn send(
        &mut self,
        documents: &[Document],
    ) -> Result<Vec<Result<(), Error>>, OperationError> {
        let live = self.op.live().await?;
        begin_call(&mut live.store);
        let result = live
            .connector
            .mqtt_connector_connector_operations()
            .sender()
            .call_send(&mut live.store, live.resource, documents)
            .await;
        let outcomes = self.op.settle(result)?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.map_err(Into::into))
            .collect())
    }

    /// Disconnects.
    pub async fn close(mut self) {
        self.op.close().await;
    }
}

/// A Listen operation.
pub struct Listener {
    op: Operation,
}

impl Listener {
    /// Waits up to `timeout` for documents and returns at most `max`.
    ///
    /// # Errors
    ///
    /// The connector's error (connection lost for good), or a trap.
    pub async fn next(
        &mut self,
        max: u32,
        timeout: Duration,
    ) -> Result<Vec<Document>, OperationError> {
        let live = self.op.live().await?;
        begin_call(&mut live.store);
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let result = live
            .connector
            .mqtt_connector_connector_operations()
            .listener()
            .call_next(&mut live.store, live.resource, max, timeout_ms)
            .await;
        self.op
            .settle(result)?
            .map_err(|e| OperationError::Connector(e.into()))
    }

    /// Acknowledges documents the pipeline has taken.
    ///
    /// # Errors
    ///
    /// The connector's error, or a trap.
    pub async fn commit(&mut self, ids: &[u64]) -> Result<(), OperationError> {
        let live = self.op.live().await?;
        begin_call(&mut live.store);
        let result = live
            .connector
            .mqtt_connector_connector_operations()
            .listener()
            .call_commit(&mut live.store, live.resource, ids)
            .await;
        self.op
            .settle(result)?
            .map_err(|e| OperationError::Connector(e.into()))
    }

    /// Whether the operation has finished (a retained snapshot went quiet).
    ///
    /// # Errors
    ///
    /// A trap.
    pub async fn done(&mut self) -> Result<bool, OperationError> {
        let live = self.op.live().await?;
        begin_call(&mut live.store);
        let result = live
            .connector
            .mqtt_connector_connector_operations()
            .listener()
            .call_done(&mut live.store, live.resource)
            .await;
        self.op.settle(result)
    }

    /// Unsubscribes if configured to, and disconnects.
    pub async fn close(mut self) {
        self.op.close().await;
    }
}
