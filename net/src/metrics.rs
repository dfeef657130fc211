//! Counters of what the transport did, read by the node loop or an operator.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::handshake::HandshakeFailure;

/// Live counters, shared by the transport's tasks. Relaxed ordering suffices: each counter is
/// independent and only ever read as a statistic.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_unknown_peer: AtomicU64,
    pub(crate) dropped_unencodable: AtomicU64,
    pub(crate) dropped_expired: AtomicU64,
    pub(crate) frames_oversized: AtomicU64,
    pub(crate) frames_malformed: AtomicU64,
    pub(crate) handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    pub(crate) dials: AtomicU64,
    pub(crate) dial_failures: AtomicU64,
    pub(crate) connections_established: AtomicU64,
    pub(crate) connections_replaced: AtomicU64,
    pub(crate) reconnections: AtomicU64,
    pub(crate) peer_down_events: AtomicU64,
    pub(crate) faults_dropped: AtomicU64,
    pub(crate) faults_duplicated: AtomicU64,
    pub(crate) faults_delayed: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) handshakes_shed: AtomicU64,
    pub(crate) read_timeouts: AtomicU64,
    pub(crate) pings_sent: AtomicU64,
    pub(crate) pings_received: AtomicU64,
    pub(crate) messages_dropped_write_failed: AtomicU64,
}

/// Adds `amount` to a counter.
pub(crate) fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Metrics {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Metrics {
            frames_sent: read(&self.frames_sent),
            bytes_sent: read(&self.bytes_sent),
            writes: read(&self.writes),
            write_timeouts: read(&self.write_timeouts),
            frames_received: read(&self.frames_received),
            bytes_received: read(&self.bytes_received),
            dropped_queue_full: read(&self.dropped_queue_full),
            dropped_unknown_peer: read(&self.dropped_unknown_peer),
            dropped_unencodable: read(&self.dropped_unencodable),
            dropped_expired: read(&self.dropped_expired),
            frames_oversized: read(&self.frames_oversized),
            frames_malformed: read(&self.frames_malformed),
            handshake_failures: self.handshake_failures.each_ref().map(read),
            dials: read(&self.dials),
            dial_failures: read(&self.dial_failures),
            connections_established: read(&self.connections_established),
            connections_replaced: read(&self.connections_replaced),
            reconnections: read(&self.reconnections),
            peer_down_events: read(&self.peer_down_events),
            faults_dropped: read(&self.faults_dropped),
            faults_duplicated: read(&self.faults_duplicated),
            faults_delayed: read(&self.faults_delayed),
            connections_accepted: read(&self.connections_accepted),
            handshakes_shed: read(&self.handshakes_shed),
            read_timeouts: read(&self.read_timeouts),
            pings_sent: read(&self.pings_sent),
            pings_received: read(&self.pings_received),
            messages_dropped_write_failed: read(&self.messages_dropped_write_failed),
        }
    }
}

/// A copy of the transport's counters at one moment; every field counts since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metrics {
    /// Message frames written to sockets.
    pub frames_sent: u64,
    /// Bytes of message frames written, headers included.
    pub bytes_sent: u64,
    /// Socket writes of message frames; `frames_sent / writes` is the batching factor.
    pub writes: u64,
    /// Connections closed because a write made no progress for `write_timeout_ms`.
    pub write_timeouts: u64,
    /// Message frames read from sockets (before injected faults).
    pub frames_received: u64,
    /// Bytes of message frames read, headers included.
    pub bytes_received: u64,
    /// Sends refused because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Sends refused because the destination is not a configured peer.
    pub dropped_unknown_peer: u64,
    /// Messages dropped because they could not be encoded or exceed the maximum frame size.
    pub dropped_unencodable: u64,
    /// Messages sent with a deadline ([`TransportHandle::send_before`]) that were still queued
    /// when it passed, so never written.
    ///
    /// [`TransportHandle::send_before`]: crate::TransportHandle::send_before
    pub dropped_expired: u64,
    /// Connections closed because a frame's length prefix exceeded the maximum.
    pub frames_oversized: u64,
    /// Connections closed because a frame did not decode into a message.
    pub frames_malformed: u64,
    /// Refused handshakes, indexed by [`HandshakeFailure::index`]; see
    /// [`Metrics::handshake_failures_for`].
    pub handshake_failures: [u64; HandshakeFailure::ALL.len()],
    /// Outbound connection attempts (the first dial and every reconnection).
    pub dials: u64,
    /// Dials whose TCP connect failed (the peer is down or unreachable).
    pub dial_failures: u64,
    /// Connections that completed the handshake.
    pub connections_established: u64,
    /// Accepted connections that replaced an older connection from the same peer.
    pub connections_replaced: u64,
    /// Connections established to a peer that had been reported down.
    pub reconnections: u64,
    /// Times a peer was reported unreachable.
    pub peer_down_events: u64,
    /// Received messages dropped by the fault hooks.
    pub faults_dropped: u64,
    /// Received messages delivered twice by the fault hooks.
    pub faults_duplicated: u64,
    /// Received messages held back by the fault hooks.
    pub faults_delayed: u64,
    /// TCP connections accepted by the listener, before any handshake.
    pub connections_accepted: u64,
    /// Accepted connections closed at once because `pending_handshakes_max` handshakes (or
    /// `pending_handshakes_per_address_max` from the same address) were already pending.
    pub handshakes_shed: u64,
    /// Connections closed because nothing (message or ping) was read for `read_timeout_ms`.
    pub read_timeouts: u64,
    /// Ping frames written by idle writers (not in `frames_sent`, `bytes_sent` or `writes`).
    pub pings_sent: u64,
    /// Ping frames read (not in `frames_received` or `bytes_received`).
    pub pings_received: u64,
    /// Messages lost because the write of their batch failed or made no progress for
    /// `write_timeout_ms` (the connection is then closed); a part of such a batch may have
    /// reached the peer.
    pub messages_dropped_write_failed: u64,
}

impl Metrics {
    /// Handshakes refused for `reason`.
    pub fn handshake_failures_for(&self, reason: HandshakeFailure) -> u64 {
        self.handshake_failures[reason.index()]
    }

    /// Handshakes refused for any reason.
    pub fn handshake_failures_total(&self) -> u64 {
        self.handshake_failures.iter().sum()
    }
}
