//! `gateway-client`: a Rust client of the Agenda WebSocket gateway (`/v1/ws`, protocol in
//! `docs/websocket.md`).
//!
//! # What it promises
//!
//! - **Subscriptions survive disconnections.** The client remembers, per channel, the last
//!   position it delivered for each shard; when its connection drops it reconnects (to the
//!   next server when one is down, with exponential backoff) and subscribes again from those
//!   positions, so the server sends exactly what was missed, or a `resync`.
//! - **It adds nothing and hides nothing.** Changes are delivered in the order the server
//!   sent them, without deduplication of its own: what the tests check is the server's word.
//! - **Requests** (`get`, `list`, `put`, `delete`, `cas`) travel on the same socket and are
//!   answered by id; a write's reply carries its position, the one its notification carries.
//!   A request in flight when the connection drops fails with [`GatewayError::Disconnected`]
//!   (a write's outcome is then unknown).
//!
//! Built outside the simulator only (tungstenite drives real sockets).
//!
//! # Example
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), gateway_client::GatewayError> {
//! use gateway_client::{Event, GatewayClient, GatewayConfig};
//! let servers = vec!["ws://127.0.0.1:8081/v1/ws".to_owned()];
//! let mut client = GatewayClient::connect(GatewayConfig::new(servers, "a token"));
//! client.subscribe("kv:us/", None).await?;
//! let position = client.put("us/alice", "Alice").await?;
//! while let Some(event) = client.next_event().await {
//!     if let Event::Change(change) = event {
//!         println!("{} = {:?} at {:?}", change.key, change.value, change.position);
//!         if change.position == position {
//!             break;
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![cfg(not(madsim))]

mod driver;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where a change sits: (shard, log index), the same on every server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The shard.
    pub shard: u64,
    /// The log index of the entry that made the change.
    pub index: u64,
}

/// A channel's place in each shard it covers: the last index delivered.
pub type Positions = BTreeMap<u64, u64>;

/// One key's change, as the server published it once committed and applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The channel it arrived on.
    pub channel: String,
    /// Its position.
    pub position: Position,
    /// The key.
    pub key: String,
    /// The new value, or `None` when the key was deleted.
    pub value: Option<String>,
}

/// What the client tells its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A committed change.
    Change(Change),
    /// Changes of `channel` were missed and are gone from the server's history: refetch the
    /// channel's keys, then go on (later changes follow `at`).
    Resync {
        /// The channel.
        channel: String,
        /// The positions after which changes follow.
        at: Positions,
    },
    /// Connected (again) to a server, authenticated, and subscriptions sent again.
    Connected {
        /// The server's URL.
        server: String,
    },
    /// The connection ended; the client reconnects by itself.
    Disconnected {
        /// The server's URL.
        server: String,
        /// Why (the server's close reason, such as `slow_consumer`, or the error).
        reason: String,
    },
    /// The server refused something that was not a request (a subscription made again
    /// after a reconnection, say).
    Error {
        /// The error code.
        code: String,
        /// The explanation.
        message: String,
    },
}

/// What went wrong with a request or a subscription.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The server refused it, with its error code.
    #[error("{code}: {message}")]
    Server {
        /// The error code (`forbidden`, `unknown_channel`, `unavailable`, ...).
        code: String,
        /// The explanation.
        message: String,
    },
    /// The connection dropped before the answer came: a write's outcome is unknown.
    #[error("the connection dropped before the answer")]
    Disconnected,
    /// No answer within the request timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// The client was shut down.
    #[error("the client is closed")]
    Closed,
    /// The server answered something this client does not understand.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// How to reach the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The servers' WebSocket URLs (`ws://host:port/v1/ws`), tried in turn.
    pub servers: Vec<String>,
    /// The token to authenticate with.
    pub token: String,
    /// The first wait before reconnecting; doubled after each failure.
    pub backoff_min: Duration,
    /// The longest wait before reconnecting.
    pub backoff_max: Duration,
    /// How long a connection and its authentication may take.
    pub connect_timeout: Duration,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
    /// A connection from which nothing arrives for this long (the server pings more often)
    /// is given up and another one made.
    pub idle_timeout: Duration,
    /// Events buffered for the user; beyond, the client stops reading its socket (and a
    /// server may drop it as a slow consumer).
    pub events_capacity: usize,
}

impl GatewayConfig {
    /// Defaults: backoff from 50 ms to 2 s, 5 s to connect, 15 s per request, 60 s idle,
    /// 4096 buffered events.
    pub fn new(servers: Vec<String>, token: impl Into<String>) -> GatewayConfig {
        GatewayConfig {
            servers,
            token: token.into(),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            events_capacity: 4096,
        }
    }
}

/// What the user asks of the connection's driver task.
#[derive(Debug)]
enum Command {
    Subscribe {
        channel: String,
        from: Option<Positions>,
        reply: oneshot::Sender<Result<Positions, GatewayError>>,
    },
    Unsubscribe {
        channel: String,
    },
    Request {
        call: Value,
        reply: oneshot::Sender<Result<Value, GatewayError>>,
    },
}

/// A client of the gateway: one connection at a time, made again when it drops.
#[derive(Debug)]
pub struct GatewayClient {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    positions: Arc<Mutex<BTreeMap<String, Positions>>>,
    request_timeout: Duration,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for GatewayClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl GatewayClient {
    /// Starts the client; it connects in the background (see [`Event::Connected`]).
    pub fn connect(config: GatewayConfig) -> GatewayClient {
        let (commands, command_receiver) = mpsc::channel(64);
        let (event_sender, events) = mpsc::channel(config.events_capacity.max(1));
        let positions = Arc::new(Mutex::new(BTreeMap::new()));
        let request_timeout = config.request_timeout;
        let driver = driver::Driver::new(config, command_receiver, event_sender, positions.clone());
        GatewayClient {
            commands,
            events,
            positions,
            request_timeout,
            driver: tokio::spawn(driver.run()),
        }
    }

    /// The next event; `None` once the client is closed.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The last positions delivered on `channel` (what a resumed subscription starts from).
    pub fn positions(&self, channel: &str) -> Option<Positions> {
        let positions = self.positions.lock().expect("positions lock");
        positions.get(channel).cloned()
    }

    /// Subscribes to `channel`, from `from` (positions seen earlier, say by another client)
    /// or from now; answers the positions after which its changes follow. The subscription
    /// is made again on every new connection, from the last positions delivered.
    ///
    /// # Errors
    /// The server's refusal (`forbidden`, `unknown_channel`, ...), or no answer in time.
    pub async fn subscribe(
        &self,
        channel: &str,
        from: Option<Positions>,
    ) -> Result<Positions, GatewayError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscribe {
            channel: channel.to_owned(),
            from,
            reply,
        };
        self.ask(command, answer).await
    }

    /// Ends a subscription (here and on every later connection).
    ///
    /// # Errors
    /// [`GatewayError::Closed`] if the client stopped.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), GatewayError> {
        let command = Command::Unsubscribe {
            channel: channel.to_owned(),
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| GatewayError::Closed)
    }

    /// Sends a request (`{"method": ..., ...}`, see `docs/websocket.md`) and answers the
    /// reply's fields.
    ///
    /// # Errors
    /// The server's error, a dropped connection, or no answer in time.
    pub async fn request(&self, call: Value) -> Result<Value, GatewayError> {
        let (reply, answer) = oneshot::channel();
        self.ask(Command::Request { call, reply }, answer).await
    }

    async fn ask<T>(
        &self,
        command: Command,
        answer: oneshot::Receiver<Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| GatewayError::Closed)?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(GatewayError::Disconnected),
            Err(_) => Err(GatewayError::Timeout),
        }
    }

    /// Writes `value` at `key`; answers the write's position.
    ///
    /// # Errors
    /// As [`GatewayClient::request`].
    pub async fn put(&self, key: &str, value: &str) -> Result<Position, GatewayError> {
        let reply = self
            .request(json!({"method": "put", "key": key, "value": value}))
            .await?;
        position(&reply)
    }

    /// Deletes `key`; answers the write's position.
    ///
    /// # Errors
    /// As [`GatewayClient::request`].
    pub async fn delete(&self, key: &str) -> Result<Position, GatewayError> {
        let reply = self
            .request(json!({"method": "delete", "key": key}))
            .await?;
        position(&reply)
    }

    /// Reads `key` (linearizable).
    ///
    /// # Errors
    /// As [`GatewayClient::request`].
    pub async fn get(&self, key: &str) -> Result<Option<String>, GatewayError> {
        let reply = self.request(json!({"method": "get", "key": key})).await?;
        match &reply["value"] {
            Value::Null => Ok(None),
            Value::String(value) => Ok(Some(value.clone())),
            _ => Err(GatewayError::Unexpected(reply.to_string())),
        }
    }
}

/// The `position` of a write's reply.
fn position(reply: &Value) -> Result<Position, GatewayError> {
    serde_json::from_value(reply["position"].clone())
        .map_err(|_| GatewayError::Unexpected(reply.to_string()))
}
