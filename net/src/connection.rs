//! One authenticated TCP connection: establishing it, and the task that reads it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::codec::{FRAME_HEADER_BYTES, FrameDecoder, FrameError, Payload, decode_payload};
use crate::config::{FaultConfig, TransportConfig};
use crate::handshake::{
    HANDSHAKE_FRAME_BYTES_MAX, HandshakeFailure, HandshakeSettings, Role, handshake,
};
use crate::metrics::{Counters, add};
use crate::random::{self, SeededRng};
use crate::timer::Deadline;
use crate::{Incoming, Message, ServerId};

/// Bytes the reader asks the socket for at least, per read, once the peer is authenticated.
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Bytes the reader asks the socket for at most, per read, before the peer is authenticated:
/// one handshake frame. A silent or slow stranger costs this much buffer, not a read chunk.
const HANDSHAKE_READ_BYTES: usize = HANDSHAKE_FRAME_BYTES_MAX + FRAME_HEADER_BYTES;
/// At most one warning about refused handshakes (and shed connections) per this interval; the
/// others go to the debug level. The counters carry the totals.
const WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// What every task of one transport shares.
pub(crate) struct Context<M> {
    pub(crate) config: TransportConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) incoming: mpsc::Sender<Incoming<M>>,
    /// Cancelled when the transport stops (by `shutdown` or when the last handle is dropped).
    pub(crate) shutdown: CancellationToken,
    /// Keeps a flood of strangers from flooding the log.
    pub(crate) warnings: WarningLimiter,
}

/// Lets one warning through per [`WARNING_INTERVAL`] and counts the ones held back.
#[derive(Debug, Default)]
pub(crate) struct WarningLimiter {
    state: Mutex<WarningState>,
}

#[derive(Debug, Default)]
struct WarningState {
    last: Option<Instant>,
    held_back: u64,
}

impl WarningLimiter {
    /// `Some(warnings held back since the last one)` if a warning may be logged now.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.last {
            Some(last) if now.duration_since(last) < WARNING_INTERVAL => {
                state.held_back += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.held_back))
            }
        }
    }
}

impl<M: Message> Context<M> {
    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.config.handshake_timeout_ms)
    }

    pub(crate) fn record_handshake_failure(&self, reason: HandshakeFailure, address: SocketAddr) {
        add(&self.counters.handshake_failures[reason.index()], 1);
        match self.warnings.admit() {
            Some(held_back) => tracing::warn!(
                server = self.config.server_id,
                %address,
                %reason,
                held_back,
                "handshake refused; connection closed (held_back: similar warnings not logged \
                 in the last second; see the metrics)"
            ),
            None => tracing::debug!(
                server = self.config.server_id,
                %address,
                %reason,
                "handshake refused; connection closed"
            ),
        }
    }

    /// Hands an event to the node loop, waiting while its channel is full. False when the
    /// transport is stopping or the node loop is gone.
    pub(crate) async fn deliver(&self, event: Incoming<M>) -> bool {
        let event = match self.incoming.try_send(event) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        let shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            _ = stopped(&shutdown) => false,
            sent = self.incoming.send(event) => sent.is_ok(),
        }
    }
}

/// Resolves once the transport is told to stop.
///
/// A `CancellationToken` (tokio's `Notify` inside) rather than a `watch` channel: `watch` spreads
/// its waiters over slots picked by tokio's own random generator, which madsim does not seed, so
/// the order in which tasks wake at shutdown would differ from run to run of one seed.
pub(crate) async fn stopped(shutdown: &CancellationToken) {
    shutdown.cancelled().await;
}

/// Reads frames from one half of a connection, keeping the bytes that arrived past the last
/// complete frame.
///
/// It starts in handshake mode (frames of at most [`HANDSHAKE_FRAME_BYTES_MAX`], reads of at most
/// one such frame) and switches to 64 KiB reads when [`FrameReader::authenticated`] is called.
pub(crate) struct FrameReader<R> {
    source: R,
    buffer: BytesMut,
    decoder: FrameDecoder,
    read_bytes: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader in handshake mode.
    pub(crate) fn new(source: R) -> Self {
        FrameReader {
            source,
            buffer: BytesMut::new(),
            decoder: FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX),
            read_bytes: HANDSHAKE_READ_BYTES,
        }
    }

    /// The peer is authenticated: accept frames up to `frame_size_bytes_max`, read in chunks.
    pub(crate) fn authenticated(&mut self, frame_size_bytes_max: usize) {
        self.decoder.set_frame_size_bytes_max(frame_size_bytes_max);
        self.read_bytes = READ_CHUNK_BYTES;
    }

    /// Lets go of a large buffer, left behind by a large frame, keeping the bytes not yet decoded.
    /// Call it after such a frame: the allocation that held the frame would otherwise stay with
    /// the connection, since later reads reuse it.
    pub(crate) fn release_large_buffer(&mut self) {
        let mut fresh = BytesMut::with_capacity(self.buffer.len().max(READ_CHUNK_BYTES));
        fresh.extend_from_slice(&self.buffer);
        self.buffer = fresh;
    }

    /// The next frame already in the buffer, without reading the socket.
    pub(crate) fn buffered_frame(&mut self) -> Result<Option<BytesMut>, FrameError> {
        self.decoder.decode(&mut self.buffer)
    }

    /// Reads more bytes from the socket; `Ok(0)` is the end of the stream.
    pub(crate) async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buffer.capacity() - self.buffer.len() < self.read_bytes {
            self.buffer.reserve(self.read_bytes);
        }
        if self.read_bytes == READ_CHUNK_BYTES {
            self.source.read_buf(&mut self.buffer).await
        } else {
            // `take` keeps a handshake-mode read within one handshake frame even when the buffer
            // happens to have more room.
            let limit = self.read_bytes as u64;
            (&mut self.source)
                .take(limit)
                .read_buf(&mut self.buffer)
                .await
        }
    }

    /// The next frame, reading the socket as needed; `Ok(None)` at the end of the stream.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<BytesMut>, FrameError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// An authenticated connection, owned by the task that writes to its peer. Its reader starts
/// when that task calls [`Connection::start_reader`], after telling the node loop that the peer
/// is up, so that no message from a connection precedes its `PeerUp`. Dropping it stops the
/// reader, which closes the socket.
pub(crate) struct Connection<M> {
    pub(crate) peer: ServerId,
    /// The largest frame the writer sends: the smaller of this server's and the peer's limits.
    pub(crate) frame_size_bytes_max: usize,
    pub(crate) writer: WriteHalf<TcpStream>,
    /// Resolves when the reader has stopped (end of stream, error, malformed frame).
    pub(crate) reader_done: oneshot::Receiver<()>,
    _stop_reader: oneshot::Sender<()>,
    unstarted_reader: Option<(ReadLoop<M>, oneshot::Receiver<()>, oneshot::Sender<()>)>,
}

impl<M: Message> Connection<M> {
    /// Spawns the reader task; later calls do nothing.
    pub(crate) fn start_reader(&mut self) {
        if let Some((read_loop, stop, done)) = self.unstarted_reader.take() {
            tokio::spawn(read_loop.run(stop, done));
        }
    }
}

/// Whether the id a peer claims may talk to this server in this role.
fn check_peer(
    config: &TransportConfig,
    role: Role,
    expected: Option<ServerId>,
    claimed: ServerId,
) -> Result<(), HandshakeFailure> {
    if claimed == config.server_id || !config.peers.contains_key(&claimed) {
        return Err(HandshakeFailure::UnknownServer);
    }
    match role {
        Role::Dialer if expected != Some(claimed) => Err(HandshakeFailure::UnexpectedServer),
        // One connection per pair: only the lower id dials.
        Role::Acceptor if claimed > config.server_id => Err(HandshakeFailure::WrongDirection),
        _ => Ok(()),
    }
}

/// Runs the handshake on `stream` and, if the peer is accepted, returns the connection with its
/// reader ready to start.
pub(crate) async fn establish<M: Message>(
    context: &Arc<Context<M>>,
    stream: TcpStream,
    role: Role,
    expected: Option<ServerId>,
) -> Result<Connection<M>, HandshakeFailure> {
    // Raft messages are latency-sensitive and the writer already batches, so Nagle only hurts.
    // A failure here changes performance, not correctness.
    let _ = stream.set_nodelay(true);
    let (read_half, mut writer) = tokio::io::split(stream);
    let mut reader = FrameReader::new(read_half);
    let config = &context.config;
    let settings = HandshakeSettings {
        server_id: config.server_id,
        cluster_id: config.cluster_id,
        cluster_secret: &config.cluster_secret,
        // The config check keeps it within u32.
        frame_size_bytes_max: u32::try_from(config.frame_size_bytes_max).unwrap_or(u32::MAX),
        role,
        nonce: random::nonce()?,
    };
    let remote = handshake(&mut reader, &mut writer, &settings, |claimed| {
        check_peer(config, role, expected, claimed)
    })
    .await?;
    let peer = remote.server_id;
    reader.authenticated(config.frame_size_bytes_max);
    // The peer's limit may be below this server's (while a new limit is rolled out, say); frames
    // it would refuse are dropped here instead. A limit below the minimum is not believed.
    let frame_size_bytes_max = config
        .frame_size_bytes_max
        .min((remote.frame_size_bytes_max as usize).max(crate::config::FRAME_SIZE_BYTES_MIN));
    let (done_sender, reader_done) = oneshot::channel();
    let (stop_reader, stop_receiver) = oneshot::channel();
    let connection_number = context
        .counters
        .connections_established
        .load(std::sync::atomic::Ordering::Relaxed);
    let faults = FaultInjector::new(context.config.faults, peer, connection_number);
    let read_loop = ReadLoop {
        context: context.clone(),
        peer,
        reader,
        faults,
    };
    add(&context.counters.connections_established, 1);
    tracing::info!(
        server = config.server_id,
        peer,
        ?role,
        "connection established"
    );
    Ok(Connection {
        peer,
        frame_size_bytes_max,
        writer,
        reader_done,
        _stop_reader: stop_reader,
        unstarted_reader: Some((read_loop, stop_receiver, done_sender)),
    })
}

/// Connects to `address` and runs the handshake as the dialer.
pub(crate) async fn dial<M: Message>(
    context: &Arc<Context<M>>,
    address: SocketAddr,
    peer: ServerId,
) -> Result<Connection<M>, DialError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(DialError::Connect)?;
    establish(context, stream, Role::Dialer, Some(peer))
        .await
        .map_err(DialError::Handshake)
}

/// Why a dial failed.
#[derive(Debug)]
pub(crate) enum DialError {
    Connect(std::io::Error),
    Handshake(HandshakeFailure),
}

/// The task that reads one connection and hands its messages to the node loop.
struct ReadLoop<M> {
    context: Arc<Context<M>>,
    peer: ServerId,
    reader: FrameReader<ReadHalf<TcpStream>>,
    faults: FaultInjector,
}

impl<M: Message> ReadLoop<M> {
    /// Runs until the stream ends, a frame is bad, the connection is dropped by its writer or
    /// the transport stops. `_done` is dropped on return, which tells the writer.
    async fn run(mut self, mut stop: oneshot::Receiver<()>, _done: oneshot::Sender<()>) {
        let shutdown = self.context.shutdown.clone();
        let mut stopping = std::pin::pin!(shutdown.cancelled());
        let read_timeout = Duration::from_millis(self.context.config.read_timeout_ms);
        let mut silence = Deadline::new(Instant::now() + read_timeout);
        loop {
            // Everything already buffered is handled before the socket is read again.
            loop {
                match self.reader.buffered_frame() {
                    Ok(Some(payload)) => {
                        if !self.handle_frame(payload).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => return self.frame_error(error),
                }
            }
            // Only time spent waiting for the socket counts: while the node loop is slow to take
            // messages, the peer is not to blame.
            silence.set(Instant::now() + read_timeout);
            let filled = tokio::select! {
                biased;
                () = &mut stopping => return,
                _ = &mut stop => return,
                filled = self.reader.fill() => Some(filled),
                () = silence.reached() => None,
            };
            match filled {
                Some(Ok(0)) => return self.closed("the peer closed the connection"),
                Some(Ok(_)) => {}
                Some(Err(error)) => return self.closed(&error.to_string()),
                None => {
                    add(&self.context.counters.read_timeouts, 1);
                    tracing::warn!(
                        peer = self.peer,
                        read_timeout_ms = self.context.config.read_timeout_ms,
                        "nothing read from the peer, not even a ping; connection closed"
                    );
                    return;
                }
            }
        }
    }

    /// Decodes one payload and delivers it (with faults applied). False ends the connection.
    async fn handle_frame(&mut self, payload: BytesMut) -> bool {
        if payload.len() > READ_CHUNK_BYTES {
            self.reader.release_large_buffer();
        }
        let counters = &self.context.counters;
        let message: M = match decode_payload(&payload) {
            Ok(Payload::Message(message)) => message,
            Ok(Payload::Ping) => {
                add(&counters.pings_received, 1);
                return true;
            }
            Err(error) => {
                add(&counters.frames_malformed, 1);
                tracing::warn!(peer = self.peer, %error, "malformed frame; connection closed");
                return false;
            }
        };
        add(&counters.frames_received, 1);
        add(
            &counters.bytes_received,
            (payload.len() + FRAME_HEADER_BYTES) as u64,
        );
        match self.faults.decide() {
            FaultDecision::Deliver => self.deliver(message).await,
            FaultDecision::Drop => {
                add(&counters.faults_dropped, 1);
                true
            }
            FaultDecision::Duplicate => {
                add(&counters.faults_duplicated, 1);
                // Decoding again gives the copy without asking messages to be `Clone`.
                let copy: M = match decode_payload(&payload) {
                    Ok(Payload::Message(copy)) => copy,
                    Ok(Payload::Ping) | Err(_) => return false,
                };
                self.deliver(message).await && self.deliver(copy).await
            }
            FaultDecision::Delay(delay) => {
                add(&counters.faults_delayed, 1);
                let context = self.context.clone();
                let event = Incoming::Message {
                    from: self.peer,
                    message,
                };
                tokio::spawn(deliver_later(context, delay, event));
                true
            }
        }
    }

    // `&mut self`, not `&self`: a shared borrow held across the await would require the reader
    // to be `Sync`, and madsim's simulated socket is not.
    async fn deliver(&mut self, message: M) -> bool {
        let event = Incoming::Message {
            from: self.peer,
            message,
        };
        self.context.deliver(event).await
    }

    fn frame_error(&self, error: FrameError) {
        if let FrameError::TooLarge { .. } = error {
            add(&self.context.counters.frames_oversized, 1);
            tracing::warn!(peer = self.peer, %error, "oversized frame; connection closed");
        } else {
            self.closed(&error.to_string());
        }
    }

    fn closed(&self, reason: &str) {
        tracing::info!(peer = self.peer, reason, "connection closed");
    }
}

async fn deliver_later<M: Message>(context: Arc<Context<M>>, delay: Duration, event: Incoming<M>) {
    let shutdown = context.shutdown.clone();
    tokio::select! {
        biased;
        _ = stopped(&shutdown) => {}
        _ = tokio::time::sleep(delay) => {
            context.deliver(event).await;
        }
    }
}

/// What the fault hooks do with one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultDecision {
    Deliver,
    Drop,
    Duplicate,
    Delay(Duration),
}

/// Draws fault decisions for one connection from a seeded generator.
#[derive(Debug, Clone)]
pub(crate) struct FaultInjector {
    config: FaultConfig,
    rng: SeededRng,
}

impl FaultInjector {
    /// One stream of decisions per (seed, peer, connection), so that each replays on its own.
    pub(crate) fn new(config: FaultConfig, peer: ServerId, connection_number: u64) -> Self {
        let stream = peer.rotate_left(32) ^ connection_number;
        FaultInjector {
            config,
            rng: SeededRng::new(config.seed ^ SeededRng::new(stream).next_u64()),
        }
    }

    pub(crate) fn decide(&mut self) -> FaultDecision {
        if !self.config.is_active() {
            return FaultDecision::Deliver;
        }
        let draw = self.rng.up_to(999_999);
        let drop_below = u64::from(self.config.drop_per_million);
        let duplicate_below = drop_below + u64::from(self.config.duplicate_per_million);
        let delay_below = duplicate_below + u64::from(self.config.delay_per_million);
        if draw < drop_below {
            FaultDecision::Drop
        } else if draw < duplicate_below {
            FaultDecision::Duplicate
        } else if draw < delay_below {
            let span = self.config.delay_ms_max - self.config.delay_ms_min;
            let delay_ms = self.config.delay_ms_min + self.rng.up_to(span);
            FaultDecision::Delay(Duration::from_millis(delay_ms))
        } else {
            FaultDecision::Deliver
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_when_switched_off() {
        let mut injector = FaultInjector::new(FaultConfig::default(), 2, 0);
        assert!((0..1000).all(|_| injector.decide() == FaultDecision::Deliver));
    }

    #[test]
    fn fault_rates_follow_the_config_and_replay() {
        let config = FaultConfig {
            seed: 11,
            drop_per_million: 250_000,
            duplicate_per_million: 250_000,
            delay_per_million: 250_000,
            delay_ms_min: 5,
            delay_ms_max: 9,
        };
        let decisions = |connection| {
            let mut injector = FaultInjector::new(config, 3, connection);
            (0..4000).map(|_| injector.decide()).collect::<Vec<_>>()
        };
        let first = decisions(0);
        assert_eq!(first, decisions(0));
        assert_ne!(first, decisions(1));
        let count = |wanted: fn(&FaultDecision) -> bool| first.iter().filter(|d| wanted(d)).count();
        for kind_count in [
            count(|d| *d == FaultDecision::Drop),
            count(|d| *d == FaultDecision::Duplicate),
            count(|d| matches!(d, FaultDecision::Delay(_))),
            count(|d| *d == FaultDecision::Deliver),
        ] {
            assert!((800..1200).contains(&kind_count), "{kind_count}");
        }
        assert!(first.iter().all(|d| match d {
            FaultDecision::Delay(delay) => (5..=9).contains(&delay.as_millis()),
            _ => true,
        }));
    }

    #[test]
    fn the_lower_id_dials() {
        let peers = [
            (1, "127.0.0.1:1".parse().unwrap()),
            (3, "127.0.0.1:3".parse().unwrap()),
        ];
        let config = TransportConfig::new(2, 0, [0; 16], peers.into_iter().collect());
        let accept = |claimed| check_peer(&config, Role::Acceptor, None, claimed);
        assert_eq!(accept(1), Ok(()));
        assert_eq!(accept(3), Err(HandshakeFailure::WrongDirection));
        assert_eq!(accept(2), Err(HandshakeFailure::UnknownServer));
        assert_eq!(accept(9), Err(HandshakeFailure::UnknownServer));
        let dial = |claimed| check_peer(&config, Role::Dialer, Some(3), claimed);
        assert_eq!(dial(3), Ok(()));
        assert_eq!(dial(1), Err(HandshakeFailure::UnexpectedServer));
    }
}
