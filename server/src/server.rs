//! Starting and stopping one server: recover the disk, start the transport, the node loop and
//! the client ports.

use crate::config::{ConfigError, ServerConfig};
use crate::metrics::Metrics;
use crate::node::disk::{Disk, StartError};
use crate::node::{NodeLoop, Shared};
use crate::peer::PeerMessage;
use crate::service::Service;
use client::ShardId;
use raft_core::{ConfState, InitialState, Node};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use storage::FileSystem;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration contradicts itself.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory cannot be used.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How to start.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Create the data directory (it must not hold a server's data yet) and bootstrap the
    /// shards this server is an initial member of. Without it, the directory must exist.
    pub init: bool,
    /// Faults the transport injects into what it receives (the simulator's message loss,
    /// duplication and delay); none by default.
    pub transport_faults: Option<net::FaultConfig>,
    /// Receives progress reports as they happen (the simulator's checkers); none by default.
    pub observer: Option<Arc<dyn crate::observe::Observer>>,
    /// How much slower (positive) or faster (negative) than the machine's clock this server's
    /// ticks run, in parts per million: the simulator's clock-rate fault. 0 by default (a real
    /// server ticks by its machine's monotonic clock).
    pub clock_drift_ppm: i32,
    /// This server's wall clock: the system clock unless the simulator steps it.
    pub wall_clock: WallClock,
}

/// A server's wall clock: the system clock, plus an offset that the simulator steps to play an
/// operator or NTP setting the clock (clones share the offset, so it outlives a restart of
/// the simulated machine, as a real machine's clock does).
///
/// No decision that safety or liveness rests on reads it: elections, leases and ticks run on
/// the monotonic clock, the shard clock that expires sessions advances with the leader's
/// monotonic clock, and forwards expire by the sender's monotonic clock. It only gives a new
/// shard's first stamp a Unix time, so that a step changes nothing a client can see.
#[derive(Clone, Debug, Default)]
pub struct WallClock {
    offset_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl WallClock {
    /// Milliseconds since the Unix epoch, as this server sees them.
    pub fn now_ms(&self) -> u64 {
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::Relaxed);
        client::wall_clock_ms().saturating_add_signed(offset)
    }

    /// Steps the clock by `by_ms` (negative: back).
    pub fn step(&self, by_ms: i64) {
        self.offset_ms
            .fetch_add(by_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the clock right again (itself a step).
    pub fn reset(&self) {
        self.offset_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

impl StartOptions {
    /// Options for a new server (`--init`).
    pub fn init() -> StartOptions {
        StartOptions {
            init: true,
            ..StartOptions::default()
        }
    }

    /// Options for a server that restarts from its data directory.
    pub fn existing() -> StartOptions {
        StartOptions::default()
    }
}

/// The Raft settings of this server's replica of one shard.
pub fn raft_config(config: &ServerConfig, shard: ShardId) -> raft_core::Config {
    let mut raft = raft_core::Config::new(config.server_id, shard);
    raft.election_timeout_ticks = config.timing.election_ticks;
    raft.heartbeat_interval_ticks = config.timing.heartbeat_ticks;
    raft.seed = config.server_id.rotate_left(17) ^ shard ^ config.cluster_id.rotate_left(41);
    raft.entry_size_bytes_max = 2 * 1024 * 1024;
    raft.append_size_bytes_max = config.limits.append_bytes_max;
    if config.timing.lease_reads {
        raft.read_mode = raft_core::ReadMode::LeaseBased;
    }
    raft
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    service: Service,
    gateway: crate::gateway::Gateway,
    shutdown: CancellationToken,
    node_loop: JoinHandle<Result<(), String>>,
    tasks: Vec<JoinHandle<()>>,
    transport: net::TransportHandle<PeerMessage>,
    client_address: SocketAddr,
    peer_address: SocketAddr,
}

impl ServerHandle {
    /// The service, to run requests in process.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The WebSocket gateway's pub/sub core, to subscribe in process (tests, the simulator).
    pub fn gateway(&self) -> &crate::gateway::Gateway {
        &self.gateway
    }

    /// Where the native client port listens.
    pub fn client_address(&self) -> SocketAddr {
        self.client_address
    }

    /// Where the peer port listens.
    pub fn peer_address(&self) -> SocketAddr {
        self.peer_address
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the node loop ends: `Err` if the disk failed.
    ///
    /// # Errors
    /// The node loop's failure, as a sentence.
    pub async fn wait(self) -> Result<(), String> {
        let result = match self.node_loop.await {
            Ok(result) => result,
            Err(join) => Err(format!("the node loop ended abnormally: {join}")),
        };
        self.shutdown.cancel();
        self.transport.shutdown();
        // The listeners close when their tasks end: wait for them (they stop at the
        // cancellation; HTTP finishes the requests in flight), so that a server started again
        // at once finds its ports free.
        for mut task in self.tasks {
            let stopped = tokio::time::timeout(Duration::from_secs(5), &mut task).await;
            if stopped.is_err() {
                task.abort();
            }
        }
        result
    }

    /// Stops everything at once, like a crash: nothing waits for the disk. (A persist already
    /// on its blocking thread finishes there; under the simulator there is none.)
    pub fn abort(self) {
        self.shutdown.cancel();
        self.node_loop.abort();
        self.transport.shutdown();
        for task in self.tasks {
            task.abort();
        }
    }

    /// Stops the server: the node loop finishes the persist in flight (so everything
    /// acknowledged is synced), listeners close, connections end.
    ///
    /// # Errors
    /// As [`ServerHandle::wait`].
    pub async fn stop(self) -> Result<(), String> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// The sockets a server listens on, bound by the caller (tests bind port 0 and learn the
/// addresses before writing the configuration).
#[derive(Debug)]
pub struct Listeners {
    /// The peer (server-to-server) port.
    pub peer: TcpListener,
    /// The native client port.
    pub client: TcpListener,
    /// The HTTP port, if the server serves HTTP (ignored under the simulator).
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of the configuration's own server.
    ///
    /// # Errors
    /// An address that cannot be bound.
    pub async fn bind(config: &ServerConfig) -> Result<Listeners, Error> {
        let bind = |address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| Error::Listen { address, source })
        };
        let me = config.server(config.server_id).ok_or_else(|| {
            ConfigError(format!("server {} is not in `servers`", config.server_id))
        })?;
        let http = match me.http {
            Some(address) if cfg!(not(madsim)) => Some(bind(address).await?),
            _ => None,
        };
        Ok(Listeners {
            peer: bind(me.peer).await?,
            client: bind(me.client).await?,
            http,
        })
    }
}

/// Starts one server over the file system `fs` (real files in production, `MemFs` under the
/// simulator), binding the addresses of its configuration.
///
/// # Errors
/// A bad configuration, a data directory that cannot be used (see [`StartError`]), or an
/// address that cannot be bound.
pub async fn start<F>(
    config: ServerConfig,
    fs: F,
    options: StartOptions,
) -> Result<ServerHandle, Error>
where
    F: FileSystem + Clone + Send + Sync + 'static,
    F::File: Send,
{
    config.validate()?;
    let listeners = Listeners::bind(&config).await?;
    start_on(config, fs, options, listeners).await
}

/// Starts one server on sockets already bound.
///
/// # Errors
/// As [`start`].
pub async fn start_on<F>(
    config: ServerConfig,
    fs: F,
    options: StartOptions,
    listeners: Listeners,
) -> Result<ServerHandle, Error>
where
    F: FileSystem + Clone + Send + Sync + 'static,
    F::File: Send,
{
    config.validate()?;
    let shard_map = config.shard_map()?;
    let config = Arc::new(config);
    let boot_id = fs.random_u64();
    let mut disk = Disk::open(
        fs,
        &config.data_dir,
        config.server_id,
        config.cluster_id,
        options.init,
    )?;
    let mut replicas = Vec::new();
    for spec in shard_map.shards() {
        let raft = raft_config(&config, spec.id);
        let invalid = |reason: String| StartError::Inconsistent {
            dir: config.data_dir.clone(),
            reason,
        };
        let (initial, state) = match disk.recover(spec.id)? {
            Some(recovered) => (recovered.initial, recovered.state),
            None if !spec.is_initial_member(config.server_id) => continue,
            None if options.init => {
                let mut bootstrap = ConfState::with_voters(&spec.voters);
                bootstrap.learners = spec.learners.clone();
                bootstrap.learners.sort_unstable();
                let initial = InitialState {
                    bootstrap,
                    ..InitialState::default()
                };
                (initial, None)
            }
            None => {
                return Err(invalid(format!(
                    "this server is an initial member of shard {} but its disk holds nothing of it",
                    spec.name
                ))
                .into());
            }
        };
        let snapshot_index = initial.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let machine = match state {
            Some(bytes) => kv::StateMachine::restore(kv::Limits::default(), &bytes)
                .map_err(|error| invalid(format!("shard {}'s snapshot: {error}", spec.name)))?,
            None => kv::StateMachine::new(kv::Limits::default()),
        };
        if machine.applied_index() != snapshot_index {
            return Err(invalid(format!(
                "shard {}'s snapshot at index {snapshot_index} holds a state applied to {}",
                spec.name,
                machine.applied_index()
            ))
            .into());
        }
        let node = Node::new(raft, initial)
            .map_err(|error| invalid(format!("shard {}: {error}", spec.name)))?;
        replicas.push((spec.clone(), node, machine));
    }
    // Recovery's repairs (a WAL brought in line with its snapshots) are durable before
    // anything new is written.
    disk.sync()?;

    let me = config.me().clone();
    let Listeners {
        peer: peer_listener,
        client: client_listener,
        http: http_listener,
    } = listeners;
    let peer_address = peer_listener.local_addr().unwrap_or(me.peer);
    let client_address = client_listener.local_addr().unwrap_or(me.client);

    let peers = config
        .servers
        .iter()
        .filter(|server| server.id != config.server_id)
        .map(|server| (server.id, server.peer))
        .collect();
    let mut transport_config = net::TransportConfig::new(
        config.server_id,
        config.cluster_id,
        config.cluster_secret.as_bytes().to_vec(),
        peers,
    );
    if let Some(faults) = &options.transport_faults {
        transport_config.faults = *faults;
    }
    let (transport, incoming) =
        net::Transport::start::<PeerMessage>(transport_config, peer_listener)
            .map_err(|error| ConfigError(format!("transport: {error}")))?;

    let metrics = Arc::new(Metrics::default());
    let gateway = crate::gateway::Gateway::new(
        config.server_id,
        shard_map.clone(),
        config.limits.gateway.clone(),
        metrics.clone(),
    );
    let outbox_watch = Arc::new(crate::node::Watch {
        prefixes: crate::agenda::outbox_prefixes(),
        notify: Default::default(),
    });
    let alerts_watch = Arc::new(crate::node::Watch {
        prefixes: crate::agenda::alerts_prefixes(),
        notify: Default::default(),
    });
    let shared = Arc::new(Shared {
        leaders: Default::default(),
        forwards: Default::default(),
        observer: options.observer.clone(),
        clock_drift_ppm: options.clock_drift_ppm,
        wall_clock: options.wall_clock.clone(),
        gateway: gateway.clone(),
        watches: vec![outbox_watch.clone(), alerts_watch.clone()],
    });
    let shutdown = CancellationToken::new();
    let (node_sender, node_receiver) = mpsc::channel(config.limits.node_queue_capacity);
    let node_loop = NodeLoop::new(
        config.clone(),
        shard_map.clone(),
        replicas,
        disk,
        transport.clone(),
        shared.clone(),
        metrics.clone(),
    );
    let node_loop = tokio::spawn(node_loop.run(node_receiver, incoming, shutdown.clone()));
    let service = Service::new(
        config.clone(),
        shard_map,
        node_sender,
        transport.clone(),
        shared,
        metrics,
        boot_id,
    );
    if let Some(problem) = crate::agenda::layout_problem(service.shard_map()) {
        tracing::warn!("{problem}");
    }
    let agenda = Arc::new(crate::agenda::ServerAgenda::new(
        crate::agenda::ServiceStore::new(service.clone()),
        crate::agenda::ServerEnv::new(options.wall_clock.clone()),
        agenda::Config::default(),
    ));
    // The agenda's requests over the native port's gateway sessions go through the HTTP
    // handlers, which the simulator's servers do not have.
    #[cfg(not(madsim))]
    let agenda_calls = Some(crate::api::http::agenda_calls(
        &service, &gateway, &agenda, &shutdown,
    ));
    #[cfg(madsim)]
    let agenda_calls = None;
    // Under the simulator nothing more is added to `tasks` (no HTTP).
    #[cfg_attr(madsim, allow(unused_mut))]
    let mut tasks = vec![
        tokio::spawn(crate::api::native::serve(
            client_listener,
            service.clone(),
            gateway.clone(),
            agenda.clone(),
            agenda_calls,
            shutdown.clone(),
        )),
        tokio::spawn(gateway.clone().run_dispatcher(shutdown.clone())),
        tokio::spawn(crate::agenda::run_delivery(
            agenda.clone(),
            service.clone(),
            outbox_watch,
            shutdown.clone(),
        )),
        tokio::spawn(crate::agenda::run_reminders(
            agenda.clone(),
            service.clone(),
            alerts_watch,
            shutdown.clone(),
        )),
    ];
    #[cfg(not(madsim))]
    if let Some(listener) = http_listener {
        tasks.push(tokio::spawn(crate::api::http::serve(
            listener,
            service.clone(),
            gateway.clone(),
            agenda.clone(),
            shutdown.clone(),
        )));
    }
    #[cfg(madsim)]
    drop(http_listener);
    tracing::info!(
        server = config.server_id,
        %peer_address,
        %client_address,
        "server started"
    );
    Ok(ServerHandle {
        service,
        gateway,
        shutdown,
        node_loop,
        tasks,
        transport,
        client_address,
        peer_address,
    })
}
