//! The length-prefixed TCP transport between Agenda servers.
//!
//! One TCP connection per pair of servers carries the messages of every Raft group. The crate is
//! generic over the message type (anything serde can encode; the server sends raft-core's
//! messages, each carrying its group id) and knows no Raft rule.
//!
//! # What it promises
//!
//! - **One connection per pair.** Of two servers, the one with the lower id dials; the other only
//!   accepts from lower ids. A peer that dials again replaces its older connection.
//! - **Frames.** A 4-byte big-endian length, then a kind byte and one postcard-encoded message, or
//!   a ping (layout in [`codec::FrameDecoder`]). A length over `frame_size_bytes_max` is refused
//!   before anything is allocated; before authentication the limit is 64 bytes, and the reader
//!   reads at most one such frame at a time. Each side announces its limit in the handshake and
//!   never sends a peer a frame larger than the peer's.
//! - **Authenticated peers.** A handshake checks protocol version, cluster id and server ids and
//!   proves knowledge of the cluster secret with HMAC-SHA256 over fresh nonces
//!   ([`handshake`] documents the records and the limits: nothing is encrypted yet). The acceptor
//!   sends nothing before the dialer speaks, and reveals its id only to a dialer that has proven
//!   the secret. Each refusal is counted by reason and logged (at most one warning a second).
//! - **Sending never waits.** [`TransportHandle::send`] puts the message in the peer's bounded
//!   queue or drops and counts it ([`SendError`]); Raft recovers from loss. The peer's writer
//!   drains everything queued into one write.
//! - **Reachability is reported.** [`Incoming::PeerDown`] when a connection ends or a dial fails,
//!   [`Incoming::PeerUp`] when one is (re)established; dialing retries with exponential backoff
//!   and jitter, so a restarted peer is reconnected by itself.
//! - **A hung peer is noticed.** An idle writer sends a ping every `ping_interval_ms` (1 s); a
//!   connection from which nothing has been read for `read_timeout_ms` (3 s) is closed and the
//!   peer reported down, whatever the traffic. A write that makes no progress for
//!   `write_timeout_ms` (10 s) closes the connection too; a slow peer that keeps reading is never
//!   cut off. Messages lost with a failed write are counted.
//! - **Bad bytes cost one connection.** A malformed or oversized frame closes that connection and
//!   is counted; the process and the other connections carry on. Nothing from the network panics.
//! - **Bounded everywhere.** Queues to peers, the channel to the node loop, frames, write batches
//!   and pending handshakes (128, of which 16 from one address; beyond, a new connection is closed
//!   at once, and a handshake gets 1 s) all have limits. After a large message, buffers go back
//!   to their usual size. When the node loop is slow, readers wait and TCP slows the peer.
//! - **Runs under madsim unchanged.** No OS threads, no files, `biased;` in every `select!`;
//!   nonces come from madsim's seeded RNG in simulation builds. Because simulated TCP never loses
//!   data, [`FaultConfig`] can drop, duplicate or delay received messages, from a seed.
//!
//! # Example
//!
//! Two servers on loopback; server 1 sends a message to server 2.
//!
//! ```
//! use std::collections::BTreeMap;
//! use net::{Incoming, Transport, TransportConfig};
//! use tokio::net::TcpListener;
//!
//! #[tokio::main]
//! async fn main() {
//!     let listener_1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
//!     let listener_2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
//!     let address_1 = listener_1.local_addr().unwrap();
//!     let address_2 = listener_2.local_addr().unwrap();
//!     let secret = *b"a secret of at least 16 bytes";
//!     let config_1 = TransportConfig::new(1, 7, secret, BTreeMap::from([(2, address_2)]));
//!     let config_2 = TransportConfig::new(2, 7, secret, BTreeMap::from([(1, address_1)]));
//!     let (server_1, _events_1) = Transport::start::<String>(config_1, listener_1).unwrap();
//!     let (_server_2, mut events_2) = Transport::start::<String>(config_2, listener_2).unwrap();
//!
//!     server_1.send(2, "hello".to_string()).unwrap();
//!     loop {
//!         match events_2.recv().await.unwrap() {
//!             Incoming::Message { from, message } => {
//!                 assert_eq!((from, message.as_str()), (1, "hello"));
//!                 break;
//!             }
//!             Incoming::PeerUp(_) | Incoming::PeerDown(_) => {}
//!         }
//!     }
//!     server_1.shutdown();
//! }
//! ```

pub mod codec;
mod config;
mod connection;
pub mod handshake;
mod metrics;
mod random;
pub mod timer;
mod transport;

pub use config::{
    CLUSTER_SECRET_BYTES_MIN, ConfigError, FRAME_SIZE_BYTES_MIN, FaultConfig, TransportConfig,
};
pub use handshake::HandshakeFailure;
pub use metrics::Metrics;
pub use transport::{SendError, Transport, TransportHandle};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The `bytes` crate, re-exported because frame payloads are its `BytesMut`.
pub use bytes;

/// Identifies a server of the cluster.
pub type ServerId = u64;

/// What a transport can carry: anything serde can encode and decode that may cross tasks.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}

impl<M: Serialize + DeserializeOwned + Send + 'static> Message for M {}

/// What the transport hands to the node loop, in the order it happened for each peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<M> {
    /// A message from an authenticated peer.
    Message {
        /// The server that sent it.
        from: ServerId,
        /// The message.
        message: M,
    },
    /// A connection to this peer was established (Raft may treat it as reachable again).
    PeerUp(ServerId),
    /// The connection to this peer ended or could not be established (Raft may mark it
    /// unreachable). Reported once per change.
    PeerDown(ServerId),
}
