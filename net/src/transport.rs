//! The transport's tasks: one acceptor, one task per peer that owns the peer's queue and writes
//! its connection, and one reader per connection (in [`crate::connection`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::{encode_message, encode_ping};
use crate::config::{ConfigError, TransportConfig};
use crate::connection::{Connection, Context, DialError, WarningLimiter, dial, establish, stopped};
use crate::handshake::{HandshakeFailure, Role};
use crate::metrics::{Counters, Metrics, add};
use crate::random::{self, SeededRng};
use crate::timer::Deadline;
use crate::{Incoming, Message, ServerId};

/// A writer stops draining its queue into one write once the batch reaches this many bytes, so
/// that one busy peer cannot make a write arbitrarily large.
const WRITE_BATCH_BYTES_TARGET: usize = 256 * 1024;
/// A batch buffer grown past this (by a large message) is replaced after its write, so that one
/// snapshot does not pin its size for the life of the connection.
const WRITE_BUFFER_BYTES_KEPT_MAX: usize = 2 * WRITE_BATCH_BYTES_TARGET;
/// Accepted connections waiting for their peer task; a few at most, since only one is in use.
const ACCEPTED_CAPACITY: usize = 2;
/// Pause after a failed `accept` (for example out of file descriptors) before trying again.
const ACCEPT_RETRY_MS: u64 = 50;

/// Starts transports. See the crate documentation for an example.
#[derive(Debug, Clone, Copy)]
pub struct Transport;

impl Transport {
    /// Starts the transport of one server on `listener` and returns the handle to send with and
    /// the channel of [`Incoming`] events for the node loop.
    ///
    /// It spawns its tasks on the current runtime (tokio, or madsim's under the simulator), so it
    /// must be called from inside one. Peers with a higher id than this server are dialed at once;
    /// peers with a lower id are expected to dial in.
    pub fn start<M: Message>(
        config: TransportConfig,
        listener: TcpListener,
    ) -> Result<(TransportHandle<M>, mpsc::Receiver<Incoming<M>>), ConfigError> {
        config.validate()?;
        let local_address = listener.local_addr().ok();
        let (incoming_sender, incoming_receiver) = mpsc::channel(config.incoming_capacity);
        let shutdown = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let jitter_seed = config.jitter_seed.unwrap_or_else(random::seed);
        let context = Arc::new(Context {
            config,
            counters: counters.clone(),
            incoming: incoming_sender,
            shutdown: shutdown.clone(),
            warnings: WarningLimiter::default(),
        });
        let mut queues = HashMap::new();
        let mut routes = HashMap::new();
        for (&peer, &address) in &context.config.peers {
            let (queue_sender, queue) = mpsc::channel(context.config.queue_capacity_per_peer);
            queues.insert(peer, queue_sender);
            let accepted = if peer < context.config.server_id {
                let (route, accepted) = mpsc::channel(ACCEPTED_CAPACITY);
                routes.insert(peer, route);
                Some(accepted)
            } else {
                None
            };
            let task = PeerTask {
                context: context.clone(),
                peer,
                address,
                queue,
                accepted,
                shutdown: context.shutdown.clone(),
                jitter: SeededRng::new(jitter_seed ^ peer),
                consecutive_failures: 0,
                reachable: None,
                buffer: BytesMut::with_capacity(WRITE_BATCH_BYTES_TARGET),
            };
            tokio::spawn(task.run());
        }
        let pending = Arc::new(PendingHandshakes {
            total_max: context.config.pending_handshakes_max,
            per_address_max: context.config.pending_handshakes_per_address_max,
            state: Mutex::default(),
        });
        tokio::spawn(accept_loop(
            context.clone(),
            listener,
            Arc::new(routes),
            pending,
        ));
        let shared = Shared {
            server_id: context.config.server_id,
            local_address,
            queues,
            counters,
            stopping: AtomicBool::new(false),
            shutdown,
        };
        let handle = TransportHandle {
            shared: Arc::new(shared),
        };
        Ok((handle, incoming_receiver))
    }
}

/// Why [`TransportHandle::send`] did not queue a message. Each case is counted; none is fatal,
/// since Raft recovers from lost messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The destination is not a configured peer (or is this server itself).
    #[error("server {0} is not a peer")]
    UnknownPeer(ServerId),
    /// The peer's queue is full (it is slow or unreachable); the message was dropped.
    #[error("the queue to server {0} is full; message dropped")]
    QueueFull(ServerId),
    /// The transport has been shut down.
    #[error("the transport is stopped")]
    Stopped,
}

struct Shared<M> {
    server_id: ServerId,
    local_address: Option<SocketAddr>,
    queues: HashMap<ServerId, mpsc::Sender<Queued<M>>>,
    counters: Arc<Counters>,
    stopping: AtomicBool,
    shutdown: CancellationToken,
}

impl<M> Drop for Shared<M> {
    // The last handle is gone: nobody can send or stop the transport any more, so it stops.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The node loop's side of a transport: send messages, read counters, stop. Cheap to clone; the
/// transport stops when [`TransportHandle::shutdown`] is called or the last clone is dropped.
pub struct TransportHandle<M> {
    shared: Arc<Shared<M>>,
}

impl<M> Clone for TransportHandle<M> {
    fn clone(&self) -> Self {
        TransportHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<M> std::fmt::Debug for TransportHandle<M> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TransportHandle")
            .field("server_id", &self.shared.server_id)
            .field("local_address", &self.shared.local_address)
            .finish_non_exhaustive()
    }
}

/// A message waiting in a peer's queue, with the time after which it is not worth writing.
struct Queued<M> {
    message: M,
    deadline: Option<Instant>,
}

impl<M: Message> TransportHandle<M> {
    /// Queues `message` for server `to`. Never waits: when the queue is full the message is
    /// dropped and counted, and the node loop carries on.
    pub fn send(&self, to: ServerId, message: M) -> Result<(), SendError> {
        self.enqueue(
            to,
            Queued {
                message,
                deadline: None,
            },
        )
    }

    /// As [`send`](Self::send), for a message that is useless after `deadline` (this
    /// server's monotonic clock): if it is still queued then — the peer unreachable, the link
    /// slow — it is dropped unwritten and counted in [`Metrics::dropped_expired`]. Once
    /// written it may still arrive later, by at most what the connection's timeouts allow.
    pub fn send_before(
        &self,
        to: ServerId,
        message: M,
        deadline: Instant,
    ) -> Result<(), SendError> {
        self.enqueue(
            to,
            Queued {
                message,
                deadline: Some(deadline),
            },
        )
    }

    fn enqueue(&self, to: ServerId, message: Queued<M>) -> Result<(), SendError> {
        let shared = &self.shared;
        if shared.stopping.load(Ordering::Relaxed) {
            return Err(SendError::Stopped);
        }
        let Some(queue) = shared.queues.get(&to) else {
            add(&shared.counters.dropped_unknown_peer, 1);
            return Err(SendError::UnknownPeer(to));
        };
        match queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                add(&shared.counters.dropped_queue_full, 1);
                Err(SendError::QueueFull(to))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Stopped),
        }
    }

    /// A copy of the counters.
    pub fn metrics(&self) -> Metrics {
        self.shared.counters.snapshot()
    }

    /// This server's id.
    pub fn server_id(&self) -> ServerId {
        self.shared.server_id
    }

    /// The address the listener is bound to (useful after binding port 0).
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.shared.local_address
    }

    /// Stops every task: the listener and all connections close, queued messages are dropped, and
    /// later sends fail with [`SendError::Stopped`]. Tasks end at their next step, not within this
    /// call.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.shutdown.cancel();
    }
}

/// The handshakes in progress on accepted connections, in all and per source address.
///
/// Each costs a task, a socket and a small buffer until it completes or `handshake_timeout_ms`
/// passes; without a bound, strangers that connect and say nothing (slowloris) would use up the
/// process's file descriptors. The per-address bound keeps one stranger from taking every slot
/// and locking the real peers out; many addresses (a botnet, an IPv6 prefix) still can, for as
/// long as they keep it up, which a firewall is better placed to stop.
struct PendingHandshakes {
    total_max: usize,
    per_address_max: usize,
    state: Mutex<PendingState>,
}

#[derive(Default)]
struct PendingState {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One pending handshake's place; freed when dropped.
struct PendingSlot {
    pending: Arc<PendingHandshakes>,
    address: IpAddr,
}

impl PendingHandshakes {
    fn try_take(self: &Arc<Self>, address: IpAddr) -> Option<PendingSlot> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let from_address = state.per_address.get(&address).copied().unwrap_or(0);
        if state.total >= self.total_max || from_address >= self.per_address_max {
            return None;
        }
        state.total += 1;
        state.per_address.insert(address, from_address + 1);
        Some(PendingSlot {
            pending: self.clone(),
            address,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut state = self
            .pending
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.total -= 1;
        if let Some(count) = state.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                state.per_address.remove(&self.address);
            }
        }
    }
}

/// Accepts connections and runs each handshake in its own task, so that a slow or silent stranger
/// does not hold up the others; past the limits of [`PendingHandshakes`] a new connection is
/// closed at once.
async fn accept_loop<M: Message>(
    context: Arc<Context<M>>,
    listener: TcpListener,
    routes: Arc<HashMap<ServerId, mpsc::Sender<Connection<M>>>>,
    pending: Arc<PendingHandshakes>,
) {
    let shutdown = context.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped(&shutdown) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, address)) => {
                add(&context.counters.connections_accepted, 1);
                let Some(slot) = pending.try_take(address.ip()) else {
                    add(&context.counters.handshakes_shed, 1);
                    if let Some(held_back) = context.warnings.admit() {
                        tracing::warn!(
                            server = context.config.server_id,
                            %address,
                            held_back,
                            "too many pending handshakes; connection closed at once"
                        );
                    }
                    drop(stream);
                    continue;
                };
                tokio::spawn(accept_one(
                    context.clone(),
                    routes.clone(),
                    stream,
                    address,
                    slot,
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    biased;
                    _ = stopped(&shutdown) => return,
                    _ = tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)) => {}
                }
            }
        }
    }
}

async fn accept_one<M: Message>(
    context: Arc<Context<M>>,
    routes: Arc<HashMap<ServerId, mpsc::Sender<Connection<M>>>>,
    stream: TcpStream,
    address: SocketAddr,
    slot: PendingSlot,
) {
    let shutdown = context.shutdown.clone();
    let handshake = tokio::time::timeout(
        context.handshake_timeout(),
        establish(&context, stream, Role::Acceptor, None),
    );
    let result = tokio::select! {
        biased;
        _ = stopped(&shutdown) => return,
        result = handshake => result,
    };
    drop(slot);
    let connection = match result {
        Ok(Ok(connection)) => connection,
        Ok(Err(reason)) => return context.record_handshake_failure(reason, address),
        Err(_elapsed) => {
            return context.record_handshake_failure(HandshakeFailure::Timeout, address);
        }
    };
    // The handshake only accepts configured peers with a lower id, and each has a route.
    let Some(route) = routes.get(&connection.peer) else {
        return;
    };
    tokio::select! {
        biased;
        _ = stopped(&shutdown) => {}
        _ = route.send(connection) => {}
    }
}

/// How a connection's service ended.
enum Outcome<M> {
    /// The transport is stopping.
    Shutdown,
    /// The connection failed or its reader stopped.
    Closed,
    /// The peer dialed again; the newer connection takes over.
    Replaced(Connection<M>),
}

/// Owns the queue to one peer and whichever connection currently reaches it.
struct PeerTask<M> {
    context: Arc<Context<M>>,
    peer: ServerId,
    address: SocketAddr,
    queue: mpsc::Receiver<Queued<M>>,
    /// Connections accepted from this peer, when it is the one that dials (its id is lower).
    accepted: Option<mpsc::Receiver<Connection<M>>>,
    shutdown: CancellationToken,
    jitter: SeededRng,
    /// Failed dials (and short-lived connections) since the last long-lived connection; sets the
    /// backoff before the next dial.
    consecutive_failures: u32,
    /// What the node loop was last told, if anything.
    reachable: Option<bool>,
    /// Frames of the batch being written; kept to reuse its memory.
    buffer: BytesMut,
}

impl<M: Message> PeerTask<M> {
    async fn run(mut self) {
        while let Some(mut connection) = self.next_connection().await {
            let established_at = tokio::time::Instant::now();
            if self.reachable == Some(false) {
                add(&self.context.counters.reconnections, 1);
            }
            self.report(true).await;
            loop {
                connection.start_reader();
                match self.serve(&mut connection).await {
                    Outcome::Shutdown => return,
                    Outcome::Closed => break,
                    Outcome::Replaced(newer) => {
                        add(&self.context.counters.connections_replaced, 1);
                        connection = newer;
                    }
                }
            }
            drop(connection);
            self.note_connection_end(established_at.elapsed());
            self.report(false).await;
        }
    }

    /// A connection that ends soon after it began counts as a failed dial, so that a peer which
    /// accepts and then drops connections is redialed with backoff, not in a tight loop; one that
    /// lived long resets the backoff, so that the first redial after it is immediate.
    fn note_connection_end(&mut self, lifetime: Duration) {
        if lifetime < Duration::from_millis(self.context.config.backoff_max_ms) {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        } else {
            self.consecutive_failures = 0;
        }
    }

    /// The next connection to the peer: dialed (with backoff) or accepted. `None` on shutdown.
    async fn next_connection(&mut self) -> Option<Connection<M>> {
        match self.accepted.as_mut() {
            Some(accepted) => tokio::select! {
                biased;
                _ = stopped(&self.shutdown) => None,
                connection = accepted.recv() => connection,
            },
            None => self.dial_with_backoff().await,
        }
    }

    async fn dial_with_backoff(&mut self) -> Option<Connection<M>> {
        loop {
            if self.consecutive_failures > 0 {
                let delay_ms = backoff_delay_ms(
                    self.consecutive_failures - 1,
                    self.context.config.backoff_initial_ms,
                    self.context.config.backoff_max_ms,
                    &mut self.jitter,
                );
                tokio::select! {
                    biased;
                    _ = stopped(&self.shutdown) => return None,
                    _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                }
            }
            add(&self.context.counters.dials, 1);
            let dialing = tokio::time::timeout(
                self.context.handshake_timeout(),
                dial(&self.context, self.address, self.peer),
            );
            let result = tokio::select! {
                biased;
                _ = stopped(&self.shutdown) => return None,
                result = dialing => result,
            };
            match result {
                Ok(Ok(connection)) => return Some(connection),
                Ok(Err(DialError::Connect(error))) => {
                    add(&self.context.counters.dial_failures, 1);
                    tracing::debug!(peer = self.peer, %error, "dial failed");
                }
                Ok(Err(DialError::Handshake(reason))) => {
                    self.context.record_handshake_failure(reason, self.address);
                }
                Err(_elapsed) => self
                    .context
                    .record_handshake_failure(HandshakeFailure::Timeout, self.address),
            }
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.report(false).await;
        }
    }

    /// Tells the node loop that the peer became reachable or unreachable, once per change.
    async fn report(&mut self, reachable: bool) {
        if self.reachable == Some(reachable) {
            return;
        }
        self.reachable = Some(reachable);
        let event = if reachable {
            Incoming::PeerUp(self.peer)
        } else {
            add(&self.context.counters.peer_down_events, 1);
            tracing::info!(peer = self.peer, "peer unreachable");
            Incoming::PeerDown(self.peer)
        };
        self.context.deliver(event).await;
    }

    /// Writes queued messages to `connection` until it ends, is replaced, or the transport stops;
    /// when there is nothing to write for `ping_interval_ms`, writes a ping.
    async fn serve(&mut self, connection: &mut Connection<M>) -> Outcome<M> {
        let config = &self.context.config;
        let ping_interval = Duration::from_millis(config.ping_interval_ms);
        let write_timeout = Duration::from_millis(config.write_timeout_ms);
        let shutdown = self.shutdown.clone();
        let mut stopping = std::pin::pin!(shutdown.cancelled());
        let mut ping_due = Deadline::new(Instant::now() + ping_interval);
        loop {
            let first = tokio::select! {
                biased;
                () = &mut stopping => return Outcome::Shutdown,
                _ = &mut connection.reader_done => return Outcome::Closed,
                newer = next_accepted(&mut self.accepted) => return match newer {
                    Some(newer) => Outcome::Replaced(newer),
                    None => Outcome::Shutdown,
                },
                message = self.queue.recv() => match message {
                    Some(message) => Some(message),
                    None => return Outcome::Shutdown,
                },
                () = ping_due.reached() => None,
            };
            let frames = match first {
                Some(first) => {
                    let frames = self.encode_batch(first, connection.frame_size_bytes_max);
                    if frames == 0 {
                        continue;
                    }
                    frames
                }
                None => {
                    self.buffer.clear();
                    encode_ping(&mut self.buffer);
                    0
                }
            };
            let writing = write_with_progress(&mut connection.writer, &self.buffer, write_timeout);
            let written = tokio::select! {
                biased;
                () = &mut stopping => return Outcome::Shutdown,
                written = writing => written,
            };
            let batch_bytes = self.buffer.len() as u64;
            if self.buffer.capacity() > WRITE_BUFFER_BYTES_KEPT_MAX {
                self.buffer = BytesMut::with_capacity(WRITE_BATCH_BYTES_TARGET);
            }
            let counters = &self.context.counters;
            match written {
                Ok(()) => {}
                Err(failure) => {
                    add(&counters.messages_dropped_write_failed, frames);
                    match failure {
                        WriteFailure::Io(error) => tracing::info!(
                            peer = self.peer,
                            %error,
                            messages_lost = frames,
                            "write failed; connection closed"
                        ),
                        WriteFailure::Stalled => {
                            add(&counters.write_timeouts, 1);
                            tracing::warn!(
                                peer = self.peer,
                                messages_lost = frames,
                                "write made no progress within write_timeout_ms; \
                                 connection closed"
                            );
                        }
                    }
                    return Outcome::Closed;
                }
            }
            ping_due.set(Instant::now() + ping_interval);
            if frames == 0 {
                add(&counters.pings_sent, 1);
            } else {
                add(&counters.frames_sent, frames);
                add(&counters.bytes_sent, batch_bytes);
                add(&counters.writes, 1);
            }
        }
    }

    /// Encodes `first` and whatever else is queued (up to the batch target) into the buffer, as
    /// frames of at most `frame_size_bytes_max`, leaving out the messages whose deadline has
    /// passed; returns the number of frames.
    fn encode_batch(&mut self, first: Queued<M>, frame_size_bytes_max: usize) -> u64 {
        self.buffer.clear();
        let mut frames = 0;
        let mut next = Some(first);
        let now = Instant::now();
        while let Some(Queued { message, deadline }) = next {
            if deadline.is_some_and(|deadline| deadline <= now) {
                add(&self.context.counters.dropped_expired, 1);
                next = self.queue.try_recv().ok();
                continue;
            }
            match encode_message(&message, frame_size_bytes_max, &mut self.buffer) {
                Ok(()) => frames += 1,
                Err(error) => {
                    add(&self.context.counters.dropped_unencodable, 1);
                    tracing::warn!(peer = self.peer, %error, "message dropped");
                }
            }
            if self.buffer.len() >= WRITE_BATCH_BYTES_TARGET {
                break;
            }
            next = self.queue.try_recv().ok();
        }
        frames
    }
}

async fn next_accepted<M>(
    accepted: &mut Option<mpsc::Receiver<Connection<M>>>,
) -> Option<Connection<M>> {
    match accepted {
        Some(accepted) => accepted.recv().await,
        // The dialing side never receives connections.
        None => std::future::pending().await,
    }
}

/// Why a batch could not be written.
enum WriteFailure {
    Io(std::io::Error),
    /// No byte was accepted for `write_timeout_ms`: the peer stopped reading.
    Stalled,
}

/// Writes `batch` and flushes, failing only when the socket errs or accepts nothing for
/// `timeout`. Each `write` returns as soon as the socket takes some bytes, so the deadline
/// measures a stall, not the size of the batch: a slow peer that keeps reading gets any message.
async fn write_with_progress<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &[u8],
    timeout: Duration,
) -> Result<(), WriteFailure> {
    let mut written = 0;
    while written < batch.len() {
        match tokio::time::timeout(timeout, writer.write(&batch[written..])).await {
            Ok(Ok(0)) => {
                return Err(WriteFailure::Io(std::io::ErrorKind::WriteZero.into()));
            }
            Ok(Ok(count)) => written += count,
            Ok(Err(error)) => return Err(WriteFailure::Io(error)),
            Err(_elapsed) => return Err(WriteFailure::Stalled),
        }
    }
    // madsim's TCP only delivers on flush; for a real socket it is a no-op.
    match tokio::time::timeout(timeout, writer.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(WriteFailure::Io(error)),
        Err(_elapsed) => Err(WriteFailure::Stalled),
    }
}

/// The pause after `attempt + 1` consecutive failures: the delay doubles from
/// `initial_ms` up to `max_ms`, and only its upper half is random ("equal jitter"), so delays
/// still grow while servers restarted together spread out.
pub(crate) fn backoff_delay_ms(
    attempt: u32,
    initial_ms: u64,
    max_ms: u64,
    jitter: &mut SeededRng,
) -> u64 {
    let doubling = 1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX);
    let ceiling_ms = initial_ms.saturating_mul(doubling).min(max_ms);
    let random_half_ms = ceiling_ms / 2;
    ceiling_ms - random_half_ms + jitter.up_to(random_half_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let mut jitter = SeededRng::new(3);
        let expected_ceilings_ms = [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000];
        for (attempt, ceiling_ms) in expected_ceilings_ms.into_iter().enumerate() {
            for _ in 0..50 {
                let delay_ms = backoff_delay_ms(attempt as u32, 50, 2000, &mut jitter);
                assert!(
                    (ceiling_ms / 2..=ceiling_ms).contains(&delay_ms),
                    "attempt {attempt}: {delay_ms}"
                );
            }
        }
        assert!(backoff_delay_ms(u32::MAX, 50, 2000, &mut jitter) <= 2000);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut jitter = SeededRng::new(9);
        let delays: std::collections::BTreeSet<u64> = (0..20)
            .map(|_| backoff_delay_ms(4, 50, 2000, &mut jitter))
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
