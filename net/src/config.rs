//! What a transport is told at start.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use crate::ServerId;

/// The settings of one server's transport. Build it with [`TransportConfig::new`] and change the
/// public fields that need other values; [`TransportConfig::validate`] runs at start.
#[derive(Clone)]
pub struct TransportConfig {
    /// This server's id.
    pub server_id: ServerId,
    /// Every server of one cluster has the same cluster id; others are refused.
    pub cluster_id: u64,
    /// The key of the handshake's HMAC, shared by every server of the cluster (at least
    /// [`CLUSTER_SECRET_BYTES_MIN`] bytes).
    pub cluster_secret: Vec<u8>,
    /// The other servers and where they listen. This server's own id must not be in it.
    pub peers: BTreeMap<ServerId, SocketAddr>,
    /// Messages waiting to be written to one peer; beyond that, sends are dropped and counted.
    pub queue_capacity_per_peer: usize,
    /// Events waiting for the node loop; when it is full, readers wait (TCP then slows the peer).
    pub incoming_capacity: usize,
    /// The largest frame payload sent or accepted once a peer is authenticated.
    pub frame_size_bytes_max: usize,
    /// First delay before dialing a peer again.
    pub backoff_initial_ms: u64,
    /// The delay between dials doubles up to this.
    pub backoff_max_ms: u64,
    /// Time allowed to connect and finish the handshake (two round trips). Also how long an
    /// unauthenticated stranger may hold one of the pending-handshake slots.
    pub handshake_timeout_ms: u64,
    /// Connections accepted but not yet through the handshake; past this, a new connection is
    /// closed at once and counted in [`crate::Metrics::handshakes_shed`].
    pub pending_handshakes_max: usize,
    /// Of those, how many may come from one IP address, so that one stranger cannot take every
    /// slot and lock the real peers out.
    pub pending_handshakes_per_address_max: usize,
    /// Time allowed for a write to make progress. A peer that stops reading (hung, or gone
    /// without closing its socket) stalls the write once the socket buffers are full; when no
    /// byte has been written for this long the connection is closed and the peer reported down.
    /// A slow peer that keeps reading is never cut off, however large the message.
    pub write_timeout_ms: u64,
    /// A writer that has written nothing for this long sends a ping frame, so that the peer's
    /// reader hears from a live server even when there is nothing to say.
    pub ping_interval_ms: u64,
    /// A connection from which nothing at all (message or ping) has been read for this long is
    /// closed and the peer reported down: it is hung, or gone without closing its socket. Must
    /// exceed `ping_interval_ms` (of every server: use the same values cluster-wide); three
    /// intervals tolerate two lost or late pings.
    pub read_timeout_ms: u64,
    /// Seed of the reconnection jitter; `None` draws one (from madsim's RNG under the simulator).
    pub jitter_seed: Option<u64>,
    /// Faults injected on receive, for the simulator; all off by default.
    pub faults: FaultConfig,
}

/// The smallest accepted cluster secret.
pub const CLUSTER_SECRET_BYTES_MIN: usize = 16;
/// The smallest accepted `frame_size_bytes_max`; smaller would not even fit small Raft messages.
pub const FRAME_SIZE_BYTES_MIN: usize = 1024;

impl TransportConfig {
    /// A configuration with the defaults: 4096 queued messages per peer, 4096 incoming events,
    /// 16 MiB frames, backoff from 50 ms to 2 s, a 1 s handshake, at most 128 pending handshakes
    /// (16 per address), 10 s without write progress, a ping after 1 s idle, 3 s without
    /// reading anything, no faults.
    pub fn new(
        server_id: ServerId,
        cluster_id: u64,
        cluster_secret: impl Into<Vec<u8>>,
        peers: BTreeMap<ServerId, SocketAddr>,
    ) -> Self {
        TransportConfig {
            server_id,
            cluster_id,
            cluster_secret: cluster_secret.into(),
            peers,
            queue_capacity_per_peer: 4096,
            incoming_capacity: 4096,
            frame_size_bytes_max: 16 * 1024 * 1024,
            backoff_initial_ms: 50,
            backoff_max_ms: 2000,
            handshake_timeout_ms: 1000,
            pending_handshakes_max: 128,
            pending_handshakes_per_address_max: 16,
            write_timeout_ms: 10_000,
            ping_interval_ms: 1000,
            read_timeout_ms: 3000,
            jitter_seed: None,
            faults: FaultConfig::default(),
        }
    }

    /// Checks the relations between the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.peers.contains_key(&self.server_id) {
            return Err(ConfigError::SelfInPeers(self.server_id));
        }
        if self.cluster_secret.len() < CLUSTER_SECRET_BYTES_MIN {
            return Err(ConfigError::SecretTooShort);
        }
        if self.queue_capacity_per_peer == 0
            || self.incoming_capacity == 0
            || self.pending_handshakes_max == 0
            || self.pending_handshakes_per_address_max == 0
        {
            return Err(ConfigError::ZeroCapacity);
        }
        if self.frame_size_bytes_max < FRAME_SIZE_BYTES_MIN
            || self.frame_size_bytes_max > u32::MAX as usize
        {
            return Err(ConfigError::FrameSize(self.frame_size_bytes_max));
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Err(ConfigError::Backoff);
        }
        if self.handshake_timeout_ms == 0
            || self.write_timeout_ms == 0
            || self.ping_interval_ms == 0
            || self.read_timeout_ms <= self.ping_interval_ms
        {
            return Err(ConfigError::Timeout);
        }
        self.faults.validate()
    }
}

impl fmt::Debug for TransportConfig {
    // The secret stays out of logs.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TransportConfig")
            .field("server_id", &self.server_id)
            .field("cluster_id", &self.cluster_id)
            .field("cluster_secret", &"<redacted>")
            .field("peers", &self.peers)
            .field("queue_capacity_per_peer", &self.queue_capacity_per_peer)
            .field("incoming_capacity", &self.incoming_capacity)
            .field("frame_size_bytes_max", &self.frame_size_bytes_max)
            .field("backoff_initial_ms", &self.backoff_initial_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .field("pending_handshakes_max", &self.pending_handshakes_max)
            .field(
                "pending_handshakes_per_address_max",
                &self.pending_handshakes_per_address_max,
            )
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("ping_interval_ms", &self.ping_interval_ms)
            .field("read_timeout_ms", &self.read_timeout_ms)
            .field("jitter_seed", &self.jitter_seed)
            .field("faults", &self.faults)
            .finish()
    }
}

/// Faults that the transport injects into received messages, because madsim's TCP never loses,
/// repeats or delays data by itself. Decisions come from a generator seeded by `seed`, one stream
/// per connection, so a simulation replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultConfig {
    /// Seed of the fault decisions.
    pub seed: u64,
    /// Chance, per million received messages, that a message is dropped.
    pub drop_per_million: u32,
    /// Chance, per million, that a message is delivered twice.
    pub duplicate_per_million: u32,
    /// Chance, per million, that a message is held back (and so may overtake or be overtaken).
    pub delay_per_million: u32,
    /// Shortest hold-back of a delayed message.
    pub delay_ms_min: u64,
    /// Longest hold-back of a delayed message.
    pub delay_ms_max: u64,
}

impl FaultConfig {
    /// Whether any fault is switched on.
    pub fn is_active(&self) -> bool {
        self.drop_per_million > 0 || self.duplicate_per_million > 0 || self.delay_per_million > 0
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let total = u64::from(self.drop_per_million)
            + u64::from(self.duplicate_per_million)
            + u64::from(self.delay_per_million);
        if total > 1_000_000 || self.delay_ms_min > self.delay_ms_max {
            return Err(ConfigError::Faults);
        }
        Ok(())
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The peer list names this server itself.
    #[error("the peer list contains this server's own id {0}")]
    SelfInPeers(ServerId),
    /// The cluster secret is shorter than [`CLUSTER_SECRET_BYTES_MIN`].
    #[error("the cluster secret is shorter than {CLUSTER_SECRET_BYTES_MIN} bytes")]
    SecretTooShort,
    /// A queue capacity or a pending-handshake limit is zero.
    #[error("queue capacities and pending-handshake limits must be at least 1")]
    ZeroCapacity,
    /// The maximum frame size is outside [`FRAME_SIZE_BYTES_MIN`]..=`u32::MAX`.
    #[error("frame_size_bytes_max {0} is outside {FRAME_SIZE_BYTES_MIN}..=4294967295")]
    FrameSize(usize),
    /// The backoff is zero or its maximum is below its initial value.
    #[error("the backoff needs 0 < backoff_initial_ms <= backoff_max_ms")]
    Backoff,
    /// A timeout or the ping interval is zero, or the read timeout does not exceed the ping
    /// interval.
    #[error(
        "handshake_timeout_ms, write_timeout_ms and ping_interval_ms must be positive, and \
         read_timeout_ms must exceed ping_interval_ms"
    )]
    Timeout,
    /// The fault chances add up to more than a million per million, or the delay range is empty.
    #[error("fault chances exceed one million per million or the delay range is reversed")]
    Faults,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        let peers = BTreeMap::from([(2, "127.0.0.1:1".parse().unwrap())]);
        TransportConfig::new(1, 7, *b"0123456789abcdef", peers)
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn broken_settings_are_named() {
        type Breakage = fn(&mut TransportConfig);
        let cases: Vec<(Breakage, ConfigError)> = vec![
            (|c| c.server_id = 2, ConfigError::SelfInPeers(2)),
            (
                |c| c.cluster_secret.truncate(15),
                ConfigError::SecretTooShort,
            ),
            (|c| c.queue_capacity_per_peer = 0, ConfigError::ZeroCapacity),
            (|c| c.frame_size_bytes_max = 10, ConfigError::FrameSize(10)),
            (|c| c.backoff_max_ms = 1, ConfigError::Backoff),
            (|c| c.handshake_timeout_ms = 0, ConfigError::Timeout),
            (|c| c.write_timeout_ms = 0, ConfigError::Timeout),
            (|c| c.ping_interval_ms = 0, ConfigError::Timeout),
            (|c| c.read_timeout_ms = 1000, ConfigError::Timeout),
            (|c| c.pending_handshakes_max = 0, ConfigError::ZeroCapacity),
            (
                |c| c.pending_handshakes_per_address_max = 0,
                ConfigError::ZeroCapacity,
            ),
            (
                |c| c.faults.drop_per_million = 2_000_000,
                ConfigError::Faults,
            ),
        ];
        for (break_it, expected) in cases {
            let mut broken = config();
            break_it(&mut broken);
            assert_eq!(broken.validate(), Err(expected));
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let printed = format!("{:?}", config());
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
    }
}
