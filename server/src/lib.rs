//! `server`: an Agenda server — the node loop that drives every local Raft group with one WAL
//! and one transport, the transactional key-value state machine per shard, the router, and the
//! client doors (the native protocol and HTTP).
//!
//! # What it promises
//!
//! - **Nothing acknowledged is lost.** A write is answered only after its entry is committed
//!   (durable on a quorum, fsynced) and applied; a server whose disk fails stops acknowledging.
//! - **Group commit.** One node loop per server persists every group's entries and hard states
//!   with one fsync, off the loop, while it keeps taking input for the next batch.
//! - **Any server serves any request.** The router sends it to the shard's leader, here or over
//!   the transport, and retries through failovers until its deadline.
//! - **Exactly-once writes.** Every write carries a client id and sequence number, and the state
//!   machine answers a retry with the first application's result.
//! - **Runs under madsim.** The node loop, router, state machine, storage (through its
//!   `FileSystem` seam) and transport build and run with `--cfg madsim`; only the HTTP adapter
//!   stays outside the simulation.
//! - **Refuses to start blank.** A data directory that was lost, belongs to another server or
//!   holds a corrupt WAL stops the server with a clear message instead of rejoining empty.
//!
//! # Example
//!
//! A one-server cluster on an in-memory disk, written to and read through its service:
//!
//! ```
//! use server::{ServerConfig, ServerAddresses, ShardSpec, StartOptions};
//! use storage::MemFs;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = ServerConfig {
//!     server_id: 1,
//!     cluster_id: 7,
//!     cluster_secret: "a secret of at least 16 bytes".into(),
//!     operator_tokens: vec!["operator-token-0123456789".into()],
//!     tokens: vec![],
//!     data_dir: "/data/1".into(),
//!     servers: vec![ServerAddresses {
//!         id: 1,
//!         peer: "127.0.0.1:0".parse().unwrap(),
//!         client: "127.0.0.1:0".parse().unwrap(),
//!         http: None,
//!     }],
//!     shards: vec![ShardSpec {
//!         id: 1,
//!         name: "everything".into(),
//!         start: String::new(),
//!         end: String::new(),
//!         voters: vec![1],
//!         learners: vec![],
//!     }],
//!     timing: Default::default(),
//!     limits: Default::default(),
//! };
//! let server = server::start(config, MemFs::new(), StartOptions::init()).await.unwrap();
//! let service = server.service().clone();
//! let put = kv::Write::Put { key: "us/alice".into(), value: "Alice".into() };
//! let answer = service.write(put, None).await;
//! assert!(matches!(answer, client::Response::Written { shard: 1, .. }), "{answer:?}");
//! let read = client::Request::Get { key: "us/alice".into(), consistency: Default::default() };
//! match service.execute(read).await {
//!     client::Response::Value(Some(value)) => assert_eq!(&value.value[..], b"Alice"),
//!     other => panic!("{other:?}"),
//! }
//! server.stop().await.unwrap();
//! # }
//! ```

pub mod agenda;
pub mod api;
pub mod auth;
pub mod config;
pub mod gateway;
pub mod metrics;
mod node;
pub mod observe;
pub mod peer;
#[cfg(madsim)]
pub mod planted;
pub mod probe;
mod server;
pub mod service;
pub mod shard;

pub use config::{
    GatewayLimits, Limits, ScopedToken, ServerAddresses, ServerConfig, Timing, default_shards,
};
pub use node::disk::StartError;
pub use server::{
    Error, Listeners, ServerHandle, StartOptions, WallClock, raft_config, start, start_on,
};
pub use service::Service;
pub use shard::{ShardMap, ShardSpec};
