//! Counters and latency histograms of one server, rendered in Prometheus' text format.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, latency: Duration) {
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some(position) = LATENCY_BUCKETS_US.iter().position(|bound| micros <= *bound) {
            self.buckets[position].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let seconds = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}le=\"{seconds}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{}}} {sum}", labels.trim_end_matches(','));
        let _ = writeln!(
            out,
            "{name}_count{{{}}} {count}",
            labels.trim_end_matches(',')
        );
    }
}

macro_rules! counters {
    ($($name:ident: $help:literal,)*) => {
        /// The server's counters. Never reset.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(#[doc = $help] pub $name: AtomicU64,)*
        }

        impl Counters {
            fn render(&self, out: &mut String) {
                $(
                    let _ = writeln!(out, "# HELP agenda_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE agenda_{} counter", stringify!($name));
                    let _ = writeln!(out, "agenda_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
            }
        }
    };
}

counters! {
    proposals: "Writes proposed to a Raft group led here.",
    proposals_refused: "Proposals refused (not leader, limits, transfer in progress).",
    entries_applied: "Committed entries applied to a state machine.",
    writes_applied: "Client writes applied (first time, not duplicates).",
    duplicates_answered: "Retried writes answered from the exactly-once table.",
    fsyncs: "WAL syncs (one per persisted batch, for every group together).",
    entries_persisted: "Log entries written to the WAL.",
    snapshots_taken: "State machine snapshots taken (the log is compacted after each).",
    snapshots_sent: "Snapshots sent to followers (in chunks).",
    snapshots_installed: "Snapshots received and installed.",
    snapshot_chunks_dropped: "Snapshot chunks out of order or from a stale transfer, dropped.",
    leader_changes: "Times a local replica saw its group's leader change.",
    elections_won: "Times a local replica became leader.",
    leadership_transfers: "Leadership transfers started to balance leaders.",
    reads_linearizable: "Linearizable reads served after a ReadIndex round.",
    reads_stale: "Reads served from the local replica without a round.",
    read_rounds: "ReadIndex rounds started (many reads share one).",
    peer_messages_dropped: "Messages to peers dropped (queue full, unknown peer, stopped).",
    peer_messages_refused: "Messages from peers refused (spoofed sender, unknown group, malformed).",
    raft_step_errors: "Raft messages a replica refused (wrong group, malformed, stale).",
    requests_forwarded: "Requests the router forwarded to another server.",
    requests_retried: "Router attempts retried after not-leader or unavailable.",
    requests_failed: "Requests answered with an error.",
    client_connections: "Native client connections accepted.",
    client_frames_malformed: "Native client frames that did not decode (the connection is closed).",
    client_unauthorized: "Native or HTTP requests refused for a missing or wrong token.",
    http_requests: "HTTP requests served.",
    http_bad_requests: "HTTP requests answered with a 4xx status.",
    outbox_deliveries: "Outbox records (invitations, replies) delivered to their destination shard.",
    outbox_deliveries_superseded: "Outbox records found already delivered (a newer copy was there) and removed.",
    outbox_records_corrupt: "Outbox records that did not decode, left in place.",
    outbox_delivery_errors: "Outbox deliveries (or whole passes) that failed on a store error, retried later.",
    reminders_sent: "Reminder alerts sent (committed on the user's alert record, published on their channel).",
    reminders_late: "Reminder alerts sent after their time (no scheduler ran when they were due), within the grace period.",
    reminders_stale: "Reminder alerts dropped: due longer ago than the grace period.",
    reminder_records_removed: "Alert records removed because their event or invitation is gone.",
    reminder_records_corrupt: "Alert records that did not decode, left in place.",
    reminder_errors: "Alert records (or whole scheduler passes) that failed on a store error or contention, retried later.",
    calendar_requests_refused: "Agenda API requests answered with a 4xx status.",
    calendar_requests_failed: "Agenda requests answered with a 5xx (no leader in time, a password check waiting too long for its turn, a corrupt record).",
    replicas_failed: "Replicas stopped because a snapshot or state could not be used.",
    ws_connections: "WebSocket connections accepted.",
    ws_connections_refused: "WebSocket connections refused because the gateway was full.",
    ws_malformed: "WebSocket messages refused as malformed (not JSON, wrong shape, binary, unknown op).",
    ws_oversized: "WebSocket messages refused as too large.",
    ws_unknown_channels: "Subscriptions refused for an unknown channel.",
    ws_forbidden: "Subscriptions and requests refused because the token may not reach the keys.",
    ws_unauthenticated: "WebSocket messages refused because the connection had not authenticated.",
    ws_slow_consumers: "WebSocket connections dropped because they did not keep up with their queue.",
    ws_idle_closed: "WebSocket connections closed after the idle timeout.",
    ws_unauthenticated_closed: "WebSocket connections closed for not authenticating by the first ping, or after three wrong tokens.",
    ws_notifications: "Change frames queued to WebSocket subscribers (replays included).",
    ws_resyncs: "Resync frames sent (what a subscriber missed was no longer in the history).",
    ws_requests: "Requests received over WebSocket connections.",
    ws_requests_refused: "Requests over WebSocket connections refused: too many in flight on the connection, or too many agenda requests running or agenda answers queued on the server.",
}

/// Gauges the node loop refreshes.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Requests waiting in the node loop's queue.
    pub node_queue_depth: AtomicU64,
    /// Proposals waiting for their commit, over every group.
    pub pending_proposals: AtomicU64,
    /// Reads waiting for their ReadIndex round, over every group.
    pub pending_reads: AtomicU64,
    /// Local replicas that lead their group.
    pub leaders: AtomicU64,
    /// Log entries held in memory, over every group.
    pub entries_in_memory: AtomicU64,
    /// Elections (not pre-votes) the local replicas started, since the server started.
    pub elections_started: AtomicU64,
    /// Raft messages the local replicas dropped as malformed, misaddressed, for another group
    /// or from a non-member, since the server started.
    pub raft_messages_dropped: AtomicU64,
    /// WebSocket connections open.
    pub ws_connections_open: AtomicU64,
}

/// Every metric of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Counters.
    pub counters: Counters,
    /// Gauges.
    pub gauges: Gauges,
    /// Latency of requests by kind, as the service saw them (routing and retries included).
    latencies: Mutex<Vec<(&'static str, std::sync::Arc<Histogram>)>>,
    /// Latency of WAL persists (writes and the fsync).
    pub persist_latency: Histogram,
    /// Entries per persisted batch: the sum is `entries_persisted`, the count `fsyncs`.
    pub entries_per_fsync_max: AtomicU64,
}

impl Metrics {
    /// The histogram of one request kind.
    pub fn latency(&self, kind: &'static str) -> std::sync::Arc<Histogram> {
        let mut latencies = self.latencies.lock().expect("metrics lock");
        if let Some((_, histogram)) = latencies.iter().find(|(name, _)| *name == kind) {
            return histogram.clone();
        }
        let histogram = std::sync::Arc::new(Histogram::default());
        latencies.push((kind, histogram.clone()));
        histogram
    }

    /// Adds one to a counter.
    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    /// Renders every metric (and the transport's) in Prometheus' text format.
    pub fn render(&self, transport: &net::Metrics) -> String {
        let mut out = String::new();
        self.counters.render(&mut out);
        let gauges = [
            ("node_queue_depth", &self.gauges.node_queue_depth),
            ("pending_proposals", &self.gauges.pending_proposals),
            ("pending_reads", &self.gauges.pending_reads),
            ("leaders", &self.gauges.leaders),
            ("entries_in_memory", &self.gauges.entries_in_memory),
            ("elections_started", &self.gauges.elections_started),
            ("raft_messages_dropped", &self.gauges.raft_messages_dropped),
            ("ws_connections_open", &self.gauges.ws_connections_open),
            ("entries_per_fsync_max", &self.entries_per_fsync_max),
        ];
        for (name, gauge) in gauges {
            let _ = writeln!(out, "# TYPE agenda_{name} gauge");
            let _ = writeln!(out, "agenda_{name} {}", gauge.load(Ordering::Relaxed));
        }
        if let Some(bytes) = resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP agenda_process_resident_bytes Resident memory of the server process."
            );
            let _ = writeln!(out, "# TYPE agenda_process_resident_bytes gauge");
            let _ = writeln!(out, "agenda_process_resident_bytes {bytes}");
        }
        let fsyncs = self.counters.fsyncs.load(Ordering::Relaxed);
        let entries = self.counters.entries_persisted.load(Ordering::Relaxed);
        let ratio = if fsyncs == 0 {
            0.0
        } else {
            entries as f64 / fsyncs as f64
        };
        let _ = writeln!(
            out,
            "# HELP agenda_entries_per_fsync Log entries per WAL sync, on average."
        );
        let _ = writeln!(out, "# TYPE agenda_entries_per_fsync gauge");
        let _ = writeln!(out, "agenda_entries_per_fsync {ratio}");
        let _ = writeln!(out, "# TYPE agenda_persist_seconds histogram");
        self.persist_latency
            .render(&mut out, "agenda_persist_seconds", "");
        let _ = writeln!(out, "# TYPE agenda_request_seconds histogram");
        for (kind, histogram) in self.latencies.lock().expect("metrics lock").iter() {
            histogram.render(
                &mut out,
                "agenda_request_seconds",
                &format!("kind=\"{kind}\","),
            );
        }
        let transport_counters = [
            ("frames_sent", transport.frames_sent),
            ("frames_received", transport.frames_received),
            ("bytes_sent", transport.bytes_sent),
            ("bytes_received", transport.bytes_received),
            ("dropped_queue_full", transport.dropped_queue_full),
            ("dropped_expired", transport.dropped_expired),
            ("frames_malformed", transport.frames_malformed),
            ("frames_oversized", transport.frames_oversized),
            ("handshake_failures", transport.handshake_failures_total()),
            ("connections_established", transport.connections_established),
            ("peer_down_events", transport.peer_down_events),
        ];
        for (name, value) in transport_counters {
            let _ = writeln!(out, "# TYPE agenda_transport_{name} counter");
            let _ = writeln!(out, "agenda_transport_{name} {value}");
        }
        out
    }
}

/// The process's resident memory (Linux: `VmRSS` of `/proc/self/status`); `None` elsewhere and
/// under the simulator, where the host's figure means nothing.
fn resident_bytes() -> Option<u64> {
    if cfg!(madsim) {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kibibytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kibibytes * 1024)
}
