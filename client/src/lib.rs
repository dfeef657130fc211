//! `client`: the native protocol of an Agenda cluster and a Rust client for it.
//!
//! Any server of the cluster accepts any request and routes it to the shard's leader, so a
//! client needs only a list of servers. This crate holds the protocol types ([`protocol`]) and
//! [`Client`], which the simulator, the benchmark and the CLI use.
//!
//! # What it promises
//!
//! - **Exactly-once writes.** Every write carries the client's id and a sequence number; a
//!   write whose outcome is unknown (a connection lost, a leader lost, a timeout) is sent again
//!   with the same id and number, to the same or another server, and the cluster applies it
//!   once and answers with the first application's result.
//! - **Failover.** A server that cannot be reached, or that answers `unavailable`, is left for
//!   the next one, with exponential backoff, until the request's deadline.
//! - **Pipelining.** Requests from many tasks share one connection per server; answers come
//!   back by request id, in any order.
//! - **Runs under madsim.** Sockets and timers come from tokio (madsim's under the simulator)
//!   and the client id from madsim's seeded generator there, so a simulation replays.
//!
//! # Example
//!
//! ```no_run
//! use client::{Client, ClientConfig};
//!
//! # async fn example() -> Result<(), client::ClientError> {
//! let config = ClientConfig::new(
//!     vec![(1, "127.0.0.1:7081".parse().unwrap()), (2, "127.0.0.1:7082".parse().unwrap())],
//!     "operator-token",
//! );
//! let client = Client::new(config);
//! client.put("us/alice", "Alice").await?;
//! let value = client.get("us/alice").await?;
//! assert_eq!(value.unwrap().value.as_ref(), b"Alice");
//! # Ok(())
//! # }
//! ```

pub mod protocol;

mod connection;
pub mod window;

pub use kv;
pub use protocol::{
    ClusterStatus, Consistency, ErrorCode, ErrorResponse, MembershipChange, ReplicaRole,
    ReplicaStatus, Request, Response, ServerId, ShardId, ShardStatus,
};

use bytes::Bytes;
use connection::Connection;
use kv::{Command, OpResult, Txn, Versioned, Write, WriteResult};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a request failed for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with an error that retrying will not fix.
    #[error("{0}")]
    Server(ErrorResponse),
    /// No server answered in time (the write may or may not have been applied; retrying it
    /// with a new client is not exactly-once).
    #[error("no server answered within {0:?}")]
    Timeout(Duration),
    /// The server answered something that does not fit the request.
    #[error("unexpected answer to {request}: {response}")]
    Unexpected {
        /// The request's name.
        request: &'static str,
        /// The answer, as debug text.
        response: String,
    },
}

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The servers of the cluster: id and client address.
    pub servers: Vec<(ServerId, SocketAddr)>,
    /// The operator token sent in the hello.
    pub token: String,
    /// How long one request may take, retries included.
    pub request_timeout: Duration,
    /// How long one attempt at one server may take before the next is tried.
    pub attempt_timeout: Duration,
    /// The first pause between attempts; it doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// The longest pause between attempts.
    pub backoff_max: Duration,
    /// The client's id for exactly-once writes; `None` draws a random one.
    pub client_id: Option<u64>,
}

impl ClientConfig {
    /// A configuration with the defaults: 30 s per request, 5 s per attempt, backoff from
    /// 20 ms to 500 ms, a random client id.
    pub fn new(servers: Vec<(ServerId, SocketAddr)>, token: impl Into<String>) -> ClientConfig {
        ClientConfig {
            servers,
            token: token.into(),
            request_timeout: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            client_id: None,
        }
    }
}

/// The answer to a write: where it was applied and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The shard that applied it.
    pub shard: ShardId,
    /// Its log index.
    pub index: u64,
    /// What it did.
    pub result: WriteResult,
}

/// A client of the cluster. Cheap to clone; clones share connections and the client id.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    client_id: u64,
    state: Mutex<State>,
    seqs: window::SeqWindow,
}

#[derive(Debug)]
struct State {
    /// The server tried first (the last one that answered).
    preferred: usize,
    connections: HashMap<ServerId, Connection>,
}

impl Client {
    /// A client of the cluster; connections are opened on first use.
    ///
    /// # Panics
    /// If `config.servers` is empty.
    pub fn new(config: ClientConfig) -> Client {
        assert!(
            !config.servers.is_empty(),
            "a client needs at least one server"
        );
        let client_id = config.client_id.unwrap_or_else(random_client_id);
        Client {
            inner: Arc::new(Inner {
                config,
                client_id,
                state: Mutex::new(State {
                    preferred: 0,
                    connections: HashMap::new(),
                }),
                seqs: window::SeqWindow::default(),
            }),
        }
    }

    /// This client's id for exactly-once writes.
    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    /// Reads a key, linearizably.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Versioned>, ClientError> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// Reads a key with the given consistency.
    pub async fn get_with(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<Versioned>, ClientError> {
        let request = Request::Get {
            key: key.into(),
            consistency,
        };
        match self.request(request).await? {
            Response::Value(value) => Ok(value),
            other => Err(unexpected("get", &other)),
        }
    }

    /// Reads the keys in `[start, end)` (an empty `end`: no end), at most `limit`; the flag
    /// says whether more remain.
    pub async fn scan(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<(Vec<(Bytes, Versioned)>, bool), ClientError> {
        let request = Request::Scan {
            start: start.into(),
            end: end.into(),
            limit,
            consistency,
        };
        match self.request(request).await? {
            Response::Scan { entries, more } => Ok((entries, more)),
            other => Err(unexpected("scan", &other)),
        }
    }

    /// Writes a key.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<Written, ClientError> {
        self.write(Write::Put {
            key: key.into(),
            value: value.into(),
        })
        .await
    }

    /// Deletes a key.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Written, ClientError> {
        self.write(Write::Delete { key: key.into() }).await
    }

    /// Runs a transaction; answers whether the compares held and the results of the branch
    /// that ran.
    pub async fn txn(&self, txn: Txn) -> Result<(bool, Vec<OpResult>), ClientError> {
        let written = self.write(Write::Txn(txn)).await?;
        match written.result {
            WriteResult::Txn { succeeded, results } => Ok((succeeded, results)),
            other => Err(ClientError::Unexpected {
                request: "txn",
                response: format!("{other:?}"),
            }),
        }
    }

    /// Submits any write, exactly once.
    ///
    /// The writes of one client in flight span at most [`WRITES_IN_FLIGHT_MAX`] sequence
    /// numbers: a new write waits while the oldest unacknowledged one is that far behind. (The
    /// cluster keeps the answers of a client's writes from its oldest unacknowledged one on,
    /// at most 1024 per shard; one slow write followed by more than that many quick ones
    /// would lose its answer, and its retry could not be answered.) The client does not know
    /// the shard map, so one window covers every shard: a write stuck on a shard without a
    /// leader holds back this client's writes to the other shards too once 511 more went
    /// through, until it ends (at the request timeout at the latest). Use one client per
    /// shard where that matters.
    pub async fn write(&self, write: Write) -> Result<Written, ClientError> {
        // Outstanding however this future ends (answered, or dropped by a caller's timeout):
        // a late copy of a dropped write is then refused by the cluster as forgotten rather
        // than pinning the session's answers.
        let seq = self.inner.seqs.next().await;
        self.write_seq(seq.seq, seq.first_unacked_seq, write).await
    }

    async fn write_seq(
        &self,
        seq: u64,
        first_unacked_seq: u64,
        write: Write,
    ) -> Result<Written, ClientError> {
        let command = Command {
            client_id: self.inner.client_id,
            seq,
            first_unacked_seq,
            timestamp_ms: wall_clock_ms(),
            write,
        };
        match self.request(Request::Write(command)).await? {
            Response::Written {
                shard,
                index,
                result,
            } => Ok(Written {
                shard,
                index,
                result,
            }),
            other => Err(unexpected("write", &other)),
        }
    }

    /// The status of the whole cluster.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.cluster_status_with(false).await
    }

    /// The status of the whole cluster, with every replica's state digest if `digests` (each
    /// server reads all its state to compute them).
    pub async fn cluster_status_with(&self, digests: bool) -> Result<ClusterStatus, ClientError> {
        match self.request(Request::ClusterStatus { digests }).await? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected("cluster_status", &other)),
        }
    }

    /// Sends a request, retrying at the next server on `unavailable`, `not_leader` and lost
    /// connections, with backoff, until the request's deadline. Other errors are returned at
    /// once.
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let config = &self.inner.config;
        let deadline = tokio::time::Instant::now() + config.request_timeout;
        let mut backoff = config.backoff_initial;
        let mut hint: Option<ServerId> = None;
        loop {
            let server = self.pick_server(hint.take());
            let attempt = self.attempt(server, request.clone());
            let outcome = tokio::time::timeout(config.attempt_timeout, attempt).await;
            match outcome {
                Ok(Ok(Response::Error(error))) if retryable(error.code) => {
                    hint = error.leader_hint;
                    if error.code != ErrorCode::NotLeader {
                        self.skip_server(server);
                    }
                }
                Ok(Ok(response)) => {
                    self.prefer(server);
                    return match response {
                        Response::Error(error) => Err(ClientError::Server(error)),
                        response => Ok(response),
                    };
                }
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(ClientError::Server(ErrorResponse::new(
                        ErrorCode::Unauthorized,
                        error.to_string(),
                    )));
                }
                Ok(Err(_)) => {
                    // The connection failed: the next attempt opens a new one.
                    self.drop_connection(server);
                    self.skip_server(server);
                }
                Err(_) => {
                    // Slow, not broken: the connection stays for other calls.
                    self.skip_server(server);
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout(config.request_timeout));
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(config.backoff_max);
        }
    }

    async fn attempt(&self, server: usize, request: Request) -> std::io::Result<Response> {
        let connection = self.connection(server).await?;
        connection.call(request).await
    }

    async fn connection(&self, server: usize) -> std::io::Result<Connection> {
        let (id, address) = self.inner.config.servers[server];
        if let Some(connection) = self
            .inner
            .state
            .lock()
            .expect("client state lock")
            .connections
            .get(&id)
            .filter(|connection| connection.is_open())
        {
            return Ok(connection.clone());
        }
        let connection = Connection::open(address, &self.inner.config.token).await?;
        let mut state = self.inner.state.lock().expect("client state lock");
        // Another call may have connected meanwhile: keep one connection per server (the
        // spare one closes when dropped).
        match state.connections.get(&id) {
            Some(existing) if existing.is_open() => Ok(existing.clone()),
            _ => {
                state.connections.insert(id, connection.clone());
                Ok(connection)
            }
        }
    }

    fn pick_server(&self, hint: Option<ServerId>) -> usize {
        let servers = &self.inner.config.servers;
        if let Some(position) = hint.and_then(|id| servers.iter().position(|(s, _)| *s == id)) {
            return position;
        }
        self.inner
            .state
            .lock()
            .expect("client state lock")
            .preferred
            % servers.len()
    }

    fn prefer(&self, server: usize) {
        self.inner
            .state
            .lock()
            .expect("client state lock")
            .preferred = server;
    }

    fn skip_server(&self, server: usize) {
        let mut state = self.inner.state.lock().expect("client state lock");
        if state.preferred == server {
            state.preferred = (server + 1) % self.inner.config.servers.len();
        }
    }

    fn drop_connection(&self, server: usize) {
        let id = self.inner.config.servers[server].0;
        self.inner
            .state
            .lock()
            .expect("client state lock")
            .connections
            .remove(&id);
    }
}

/// The widest span of sequence numbers a client's writes in flight may cover (so also the
/// most writes in flight at once): [`window::WINDOW`].
pub const WRITES_IN_FLIGHT_MAX: usize = window::WINDOW as usize;

fn retryable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::NotLeader | ErrorCode::Unavailable)
}

fn unexpected(request: &'static str, response: &Response) -> ClientError {
    match response {
        Response::Error(error) => ClientError::Server(error.clone()),
        other => ClientError::Unexpected {
            request,
            response: format!("{other:?}"),
        },
    }
}

/// Milliseconds since the Unix epoch (simulated under madsim). Only session expiry uses it.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(not(madsim))]
fn random_client_id() -> u64 {
    // A failed random source is rare enough; the time keeps ids of such clients apart.
    getrandom::u64().unwrap_or_else(|_| wall_clock_ms() ^ 0x9e37_79b9_7f4a_7c15) | 1
}

#[cfg(madsim)]
fn random_client_id() -> u64 {
    madsim::rand::random::<u64>() | 1
}
