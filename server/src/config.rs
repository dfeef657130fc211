//! The configuration of one server and of the cluster it belongs to, and the default layouts.

use crate::shard::{ShardMap, ShardSpec};
use client::ServerId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The smallest cluster `demo` lays out.
pub const SERVERS_MIN: usize = 3;
/// The largest cluster `demo` lays out.
pub const SERVERS_MAX: usize = 12;

/// Where one server of the cluster listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAddresses {
    /// The server's id (1 and up).
    pub id: ServerId,
    /// The server-to-server (Raft and forwarding) address.
    pub peer: SocketAddr,
    /// The native client protocol's address.
    pub client: SocketAddr,
    /// The HTTP API's address, if it serves one.
    pub http: Option<SocketAddr>,
}

/// Timing of the node loop and of Raft, in milliseconds and ticks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// Length of one Raft tick.
    pub tick_ms: u64,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: u32,
    /// Ticks without a leader before a follower campaigns (randomized up to twice that).
    pub election_ticks: u32,
    /// How long the router keeps retrying one request before it answers `unavailable`.
    pub request_timeout_ms: u64,
    /// How long one forwarded attempt may take before the router tries again.
    pub forward_timeout_ms: u64,
    /// How often a leader checks whether its shard's preferred leader should lead instead.
    pub balance_interval_ms: u64,
    /// Serve linearizable reads from the leader's lease (no round trip while a quorum
    /// acknowledged a heartbeat recently) instead of a ReadIndex round each time. It rests on
    /// the servers' clocks running at the same rate (raft-core's `ReadMode::LeaseBased`); the
    /// node loop takes the ticks missed in a stall before serving anything. Every server of
    /// the cluster must use the same setting (change it with a restart of the whole
    /// cluster): a follower on ReadIndex reads stops honouring a leader whose connection
    /// broke, which a leader serving reads from its lease relies on it not doing.
    pub lease_reads: bool,
}

impl Default for Timing {
    /// 50 ms ticks, heartbeats every 100 ms, elections after 1 s to 2 s of silence; requests
    /// retried for 10 s; leaders balanced every 2 s.
    fn default() -> Timing {
        Timing {
            tick_ms: 50,
            heartbeat_ticks: 2,
            election_ticks: 20,
            request_timeout_ms: 10_000,
            forward_timeout_ms: 2_000,
            balance_interval_ms: 2_000,
            lease_reads: false,
        }
    }
}

/// The largest `append_bytes_max` accepted: the bytes a leader keeps in flight to one follower
/// (raft-core's `inflight_bytes_max`, 32 MiB by default) hold at least two appends.
pub const APPEND_BYTES_MAX_LIMIT: u64 = 16 * 1024 * 1024;

/// Limits that bound memory and work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Applied entries after which a shard replica snapshots its state and compacts its log.
    /// 100,000 by default, as etcd's `--snapshot-count`: a snapshot serializes the whole state
    /// in the node loop and writes it with the next persist, a pause that grows with the
    /// state, so under a heavy write load fewer are better (the log they compact is kept in
    /// memory meanwhile: about 100,000 × the entry size per shard).
    pub snapshot_entries: u64,
    /// Requests waiting for the node loop before new ones are refused as `unavailable`.
    pub node_queue_capacity: usize,
    /// Requests in flight on one client connection.
    pub requests_per_connection_max: usize,
    /// Client connections served at once by the native port.
    pub client_connections_max: usize,
    /// The largest payload of one Raft append message (etcd's `MaxSizePerMsg`); at least one
    /// entry is always sent. Small values pace a lagging follower's catch-up.
    pub append_bytes_max: u64,
    /// The WebSocket gateway's limits.
    pub gateway: GatewayLimits,
}

/// Limits and timers of the WebSocket gateway (see `docs/websocket.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayLimits {
    /// Applied entries with changes kept per shard for resuming subscribers.
    pub history_entries: usize,
    /// Bytes of keys and values kept per shard for resuming subscribers.
    pub history_bytes: usize,
    /// Frames waiting to be written to one connection; a connection whose queue would grow
    /// beyond is dropped as a slow consumer.
    pub queue_frames: usize,
    /// Channels one connection may subscribe to.
    pub subscriptions_per_connection_max: usize,
    /// Requests in flight on one connection.
    pub requests_per_connection_max: usize,
    /// WebSocket connections served at once.
    pub connections_max: usize,
    /// How often the server pings a connection.
    pub ping_interval_ms: u64,
    /// A connection from which nothing (not even a pong) arrives for this long is closed.
    pub idle_timeout_ms: u64,
    /// A connection whose queued frames cannot be written for this long is dropped as slow.
    pub write_timeout_ms: u64,
}

impl Default for GatewayLimits {
    fn default() -> GatewayLimits {
        GatewayLimits {
            history_entries: 4096,
            history_bytes: 16 * 1024 * 1024,
            queue_frames: 4096,
            subscriptions_per_connection_max: 256,
            requests_per_connection_max: 64,
            connections_max: 16_384,
            ping_interval_ms: 15_000,
            idle_timeout_ms: 45_000,
            write_timeout_ms: 10_000,
        }
    }
}

/// A token that may read and write only the keys under its prefixes (over the WebSocket
/// gateway); operator tokens may touch every key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedToken {
    /// The token (at least 16 characters).
    pub token: String,
    /// The key prefixes it grants (`""`: every key).
    pub prefixes: Vec<String>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            snapshot_entries: 100_000,
            node_queue_capacity: 16_384,
            requests_per_connection_max: 1024,
            client_connections_max: 1024,
            append_bytes_max: 1024 * 1024,
            gateway: GatewayLimits::default(),
        }
    }
}

/// Everything one server needs to run: who it is, where its data lives, the cluster's servers
/// and shard map, and the secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// This server's id; must be one of `servers`.
    pub server_id: ServerId,
    /// Identifies the cluster; servers of other clusters are refused at the handshake.
    pub cluster_id: u64,
    /// The secret every server of the cluster shares (at least 16 bytes).
    pub cluster_secret: String,
    /// Operator tokens accepted by the key-value API (HTTP `Authorization: Bearer`, native
    /// hello).
    pub operator_tokens: Vec<String>,
    /// Tokens that reach only some keys (the WebSocket gateway's; see [`ScopedToken`]).
    #[serde(default)]
    pub tokens: Vec<ScopedToken>,
    /// The directory of this server's WAL, snapshots and identity file.
    pub data_dir: PathBuf,
    /// Every server of the cluster.
    pub servers: Vec<ServerAddresses>,
    /// The shards: key ranges covering the whole key space, in key order.
    pub shards: Vec<ShardSpec>,
    /// Timing.
    #[serde(default)]
    pub timing: Timing,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
}

/// A configuration that contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl ServerConfig {
    /// This server's addresses.
    ///
    /// # Panics
    /// If the configuration was not validated (the server is not listed).
    pub fn me(&self) -> &ServerAddresses {
        self.server(self.server_id)
            .expect("a validated configuration lists its own server")
    }

    /// One server's addresses.
    pub fn server(&self, id: ServerId) -> Option<&ServerAddresses> {
        self.servers.iter().find(|server| server.id == id)
    }

    /// The shard map.
    ///
    /// # Errors
    /// If the ranges do not cover the key space exactly once.
    pub fn shard_map(&self) -> Result<ShardMap, ConfigError> {
        ShardMap::new(self.shards.clone()).map_err(ConfigError)
    }

    /// Checks the relations between the settings.
    ///
    /// # Errors
    /// The first relation that does not hold.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |reason: String| Err(ConfigError(reason));
        if self.server(self.server_id).is_none() {
            return fail(format!("server {} is not in `servers`", self.server_id));
        }
        let mut ids: Vec<ServerId> = self.servers.iter().map(|server| server.id).collect();
        ids.sort_unstable();
        if ids.contains(&0) || ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return fail("server ids must be distinct and not 0".to_owned());
        }
        if self.cluster_secret.len() < net::CLUSTER_SECRET_BYTES_MIN {
            return fail(format!(
                "cluster_secret must have at least {} bytes",
                net::CLUSTER_SECRET_BYTES_MIN
            ));
        }
        if self.operator_tokens.iter().any(|token| token.len() < 16)
            || self.tokens.iter().any(|scoped| scoped.token.len() < 16)
        {
            return fail("tokens must have at least 16 characters".to_owned());
        }
        let map = self.shard_map()?;
        for shard in map.shards() {
            for member in shard.voters.iter().chain(&shard.learners) {
                if !ids.contains(member) {
                    return fail(format!(
                        "shard {} names unknown server {member}",
                        shard.name
                    ));
                }
            }
        }
        let timing = &self.timing;
        if timing.tick_ms == 0
            || timing.heartbeat_ticks == 0
            || timing.election_ticks <= timing.heartbeat_ticks
        {
            return fail(
                "timing: need tick_ms > 0 and election_ticks > heartbeat_ticks > 0".into(),
            );
        }
        if self.limits.snapshot_entries == 0 || self.limits.node_queue_capacity == 0 {
            return fail("limits must be positive".to_owned());
        }
        if !(1..=APPEND_BYTES_MAX_LIMIT).contains(&self.limits.append_bytes_max) {
            return fail(format!(
                "limits: append_bytes_max must be between 1 and {APPEND_BYTES_MAX_LIMIT}"
            ));
        }
        let gateway = &self.limits.gateway;
        if gateway.history_entries == 0
            || gateway.queue_frames == 0
            || gateway.connections_max == 0
            || gateway.requests_per_connection_max == 0
            || gateway.ping_interval_ms == 0
            || gateway.idle_timeout_ms <= gateway.ping_interval_ms
        {
            return fail(
                "limits.gateway: need positive sizes and idle_timeout_ms > ping_interval_ms"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// The voters and learners of the four default shards laid over `servers` servers (ids
/// `1..=servers`): shard `k` has three consecutive voters starting at server `1 + k·n/4`, the
/// first of them its preferred leader, and every other server as a learner, so each server
/// holds a copy of every shard. With 4 servers the preferred leaders are one per server; with
/// 12 the voters are the seed's node1..node12 tables.
///
/// # Panics
/// If `servers` is outside `SERVERS_MIN..=SERVERS_MAX`.
pub fn default_shards(servers: usize) -> Vec<ShardSpec> {
    assert!((SERVERS_MIN..=SERVERS_MAX).contains(&servers));
    let names = [
        ("events-a-m", "", "ev/nz/"),
        ("events-n-z", "ev/nz/", "gr/"),
        ("groups", "gr/", "us/"),
        ("users", "us/", ""),
    ];
    names
        .iter()
        .enumerate()
        .map(|(k, (name, start, end))| {
            let first = k * servers / 4;
            let voters: Vec<ServerId> = (0..3)
                .map(|offset| ((first + offset) % servers) as ServerId + 1)
                .collect();
            let learners = (1..=servers as ServerId)
                .filter(|id| !voters.contains(id))
                .collect();
            ShardSpec {
                id: k as u64 + 1,
                name: (*name).to_owned(),
                start: (*start).to_owned(),
                end: (*end).to_owned(),
                voters,
                learners,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_servers() -> ServerConfig {
        let address = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        ServerConfig {
            server_id: 1,
            cluster_id: 1,
            cluster_secret: "a cluster secret of enough bytes".into(),
            operator_tokens: Vec::new(),
            tokens: Vec::new(),
            data_dir: "/data".into(),
            servers: (1..=3)
                .map(|id| ServerAddresses {
                    id,
                    http: None,
                    client: address(7000 + id as u16),
                    peer: address(8000 + id as u16),
                })
                .collect(),
            shards: default_shards(3),
            timing: Timing::default(),
            limits: Limits::default(),
        }
    }

    #[test]
    fn the_append_size_is_bounded_and_reaches_raft() {
        let mut config = three_servers();
        assert!(config.validate().is_ok());
        for refused in [0, APPEND_BYTES_MAX_LIMIT + 1] {
            config.limits.append_bytes_max = refused;
            assert!(config.validate().is_err(), "{refused} accepted");
        }
        config.limits.append_bytes_max = 1;
        assert!(config.validate().is_ok());
        assert_eq!(crate::raft_config(&config, 1).append_size_bytes_max, 1);
        assert!(crate::raft_config(&config, 1).validate().is_ok());
    }

    #[test]
    fn four_servers_hold_every_shard_with_one_preferred_leader_each() {
        let shards = default_shards(4);
        let leaders: Vec<ServerId> = shards.iter().map(|shard| shard.voters[0]).collect();
        assert_eq!(leaders, [1, 2, 3, 4]);
        for shard in &shards {
            assert_eq!(shard.voters.len(), 3);
            assert_eq!(shard.learners.len(), 1);
        }
    }

    #[test]
    fn twelve_servers_give_one_replica_per_server_as_the_seed_tables() {
        let shards = default_shards(12);
        let voters: Vec<Vec<ServerId>> = shards.iter().map(|s| s.voters.clone()).collect();
        assert_eq!(
            voters,
            [
                vec![1, 2, 3],
                vec![4, 5, 6],
                vec![7, 8, 9],
                vec![10, 11, 12]
            ]
        );
    }

    #[test]
    fn three_servers_keep_three_voters_per_shard() {
        for shard in default_shards(3) {
            let mut voters = shard.voters.clone();
            voters.sort_unstable();
            assert_eq!(voters, [1, 2, 3]);
            assert!(shard.learners.is_empty());
        }
    }
}
