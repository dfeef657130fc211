//! The node loop: one task per server that drives every local replica. It is the only place
//! that touches the clock, the disk and the peer sockets.
//!
//! Each turn of the loop:
//!
//! 1. takes what arrived (peer messages, client requests, the tick) and hands it to the Raft
//!    nodes and state machines;
//! 2. when no persist is in flight, gathers every replica's `Ready`, sends its `messages` at
//!    once, and writes all their snapshots, entries and hard states to the one WAL with one
//!    fsync (group commit), off the loop;
//! 3. when that fsync returns: sends the `persisted_messages`, applies committed entries,
//!    answers waiting clients and confirmed reads, and advances every node.
//!
//! While a persist is in flight the loop keeps taking proposals and messages, which the next
//! batch carries: the busier the server, the more entries share one fsync.

pub(crate) mod disk;
mod replica;

use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::peer::{PeerMessage, SNAPSHOT_CHUNK_BYTES, SnapshotChunk};
use crate::shard::ShardMap;
use client::{
    ClusterStatus, ErrorCode, ErrorResponse, Request, Response, ServerId, ShardId, ShardStatus,
};
use disk::{Disk, GroupWrite, PersistBatch, SnapshotSave};
use net::timer::Deadline;
use net::{Incoming, TransportHandle};
use raft_core::{Message, MessageBody, Node, Ready, Role};
use replica::Replica;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::FileSystem;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the service asks of the node loop.
#[derive(Debug)]
pub(crate) enum NodeRequest {
    /// Run a request on the local replica of `shard`.
    Execute {
        shard: ShardId,
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// The status of every local replica.
    LocalStatus {
        digests: bool,
        reply: oneshot::Sender<ClusterStatus>,
    },
}

/// What the node loop shares with the service and the gateway: leader hints, the forwards
/// waiting for a reply, and where applied changes are published.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The leader each local replica knows of, by shard (0: none known).
    pub leaders: Mutex<BTreeMap<ShardId, ServerId>>,
    /// Forwarded requests waiting for their reply, by forward id.
    pub forwards: Mutex<HashMap<u64, Forwarded>>,
    /// Receives progress reports (the simulator's checkers), if anyone listens.
    pub observer: Option<Arc<dyn Observer>>,
    /// See [`crate::StartOptions::clock_drift_ppm`].
    pub clock_drift_ppm: i32,
    /// See [`crate::StartOptions::wall_clock`].
    pub wall_clock: crate::WallClock,
    /// Where applied changes are published for subscribers.
    pub gateway: Gateway,
    /// Wake the work that a shard's leader does on some keys (the agenda's outbox delivery,
    /// its reminders).
    pub watches: Vec<Arc<Watch>>,
}

/// Key prefixes whose changes wake a task on the server that leads their shard: when a replica
/// this server leads applies a change under one of them, or becomes leader while its state holds
/// keys under one of them (so that a new leader resumes work its predecessor left). The node loop
/// knows nothing of what the keys mean.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// The prefixes watched.
    pub prefixes: Vec<bytes::Bytes>,
    /// Notified (one permit, so a wake-up is never lost while the task is busy).
    pub notify: tokio::sync::Notify,
}

impl Watch {
    fn touches(&self, changes: &[kv::Change]) -> bool {
        changes.iter().any(|change| {
            self.prefixes
                .iter()
                .any(|prefix| change.key.starts_with(prefix))
        })
    }

    fn holds_keys(&self, machine: &kv::StateMachine) -> bool {
        self.prefixes.iter().any(|prefix| {
            let end = crate::auth::prefix_end(prefix);
            !machine.scan(prefix, &end, 1).0.is_empty()
        })
    }
}

/// A forwarded request waiting for its reply.
#[derive(Debug)]
pub(crate) struct Forwarded {
    /// The server it was sent to: only that server's reply is taken.
    pub target: ServerId,
    pub reply: oneshot::Sender<Response>,
}

type PersistOutcome<F> = (Disk<F>, PersistBatch, Result<(), storage::Error>, Duration);
type PersistFuture<F> = Pin<Box<dyn Future<Output = PersistOutcome<F>> + Send>>;

/// How often a replica that applied anything since its last snapshot takes one, whatever its
/// traffic (the WAL's segments are shared by every group: a quiet group would pin them).
const QUIET_SNAPSHOT_INTERVAL_MS: u64 = 60_000;

/// The largest snapshot this server accepts from a leader: what the snapshot store takes,
/// less room for the membership stored beside the state.
const SNAPSHOT_RECEIVED_BYTES_MAX: u64 = storage::SNAPSHOT_BYTES_MAX - 1024 * 1024;

/// A Ready whose writes are being persisted, with the term its role change belongs to.
#[derive(Debug)]
struct Held {
    shard: ShardId,
    ready: Ready,
    term: u64,
    /// Where the replica's log ends once this Ready's entries (or snapshot) are durable.
    durable_last: Option<u64>,
}

/// A snapshot being received in chunks from one leader.
#[derive(Debug)]
struct Assembly {
    from: ServerId,
    term: u64,
    meta: raft_core::SnapshotMeta,
    total_bytes: u64,
    data: Vec<u8>,
}

/// `tick` stretched (positive) or shortened (negative) by `drift_ppm` parts per million.
fn drifted(tick: Duration, drift_ppm: i32) -> Duration {
    let micros = tick.as_micros() as i64;
    let drifted = micros + micros * i64::from(drift_ppm) / 1_000_000;
    Duration::from_micros(drifted.max(1) as u64)
}

/// The node loop's state.
pub(crate) struct NodeLoop<F: FileSystem> {
    server_id: ServerId,
    config: Arc<ServerConfig>,
    shard_map: ShardMap,
    replicas: BTreeMap<ShardId, Replica>,
    /// `None` while a persist is in flight (the disk travels with it).
    disk: Option<Disk<F>>,
    /// The Readys whose writes are being persisted.
    held: Vec<Held>,
    /// Snapshots taken since the last persist, to make durable with the next one.
    snapshots_taken: Vec<SnapshotSave>,
    transport: TransportHandle<PeerMessage>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// At most one snapshot being received per group.
    assemblies: HashMap<ShardId, Assembly>,
    peers_down: BTreeSet<ServerId>,
    ticks: u64,
    balance_interval_ticks: u64,
    /// Ticks between snapshots of replicas with little traffic.
    quiet_snapshot_ticks: u64,
    tick: Duration,
    next_tick: Instant,
    /// The most missed ticks taken at once after a stall.
    catch_up_ticks_max: u32,
    next_read_id: u64,
    observer: Option<Arc<dyn Observer>>,
    /// Where applied changes are published for subscribers.
    gateway: Gateway,
}

/// How the loop ended.
pub(crate) type LoopResult = Result<(), String>;

impl<F: FileSystem + Clone + Send + 'static> NodeLoop<F>
where
    F::File: Send,
{
    /// Builds the loop from the recovered replicas.
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        shard_map: ShardMap,
        replicas: Vec<(crate::shard::ShardSpec, Node, kv::StateMachine)>,
        disk: Disk<F>,
        transport: TransportHandle<PeerMessage>,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> NodeLoop<F> {
        let observer = shared.observer.clone();
        let gateway = shared.gateway.clone();
        let replicas = replicas
            .into_iter()
            .map(|(spec, node, machine)| {
                if let Some(observer) = &observer {
                    observer.replica_started(
                        config.server_id,
                        spec.id,
                        node.term(),
                        node.vote(),
                        node.last_index(),
                    );
                }
                gateway.open_shard(spec.id, machine.applied_index());
                let replica = Replica::new(spec, node, machine, metrics.clone(), observer.clone());
                (replica.spec.id, replica)
            })
            .collect();
        let timing = &config.timing;
        let balance_interval_ticks = (timing.balance_interval_ms / timing.tick_ms).max(1);
        let tick = drifted(
            Duration::from_millis(timing.tick_ms),
            shared.clock_drift_ppm,
        );
        NodeLoop {
            server_id: config.server_id,
            config: config.clone(),
            shard_map,
            replicas,
            disk: Some(disk),
            held: Vec::new(),
            snapshots_taken: Vec::new(),
            transport,
            shared,
            metrics,
            assemblies: HashMap::new(),
            peers_down: BTreeSet::new(),
            ticks: 0,
            balance_interval_ticks,
            quiet_snapshot_ticks: (QUIET_SNAPSHOT_INTERVAL_MS / timing.tick_ms).max(1),
            tick,
            next_tick: Instant::now(),
            catch_up_ticks_max: 4 * timing.election_ticks,
            next_read_id: 1,
            observer,
            gateway,
        }
    }

    /// Runs until `shutdown` is cancelled (after the persist in flight, if any, is durable) or
    /// the disk fails (then nothing more may be acknowledged: the error ends the loop).
    pub(crate) async fn run(
        mut self,
        mut requests: mpsc::Receiver<NodeRequest>,
        mut incoming: mpsc::Receiver<Incoming<PeerMessage>>,
        shutdown: CancellationToken,
    ) -> LoopResult {
        self.next_tick = Instant::now() + self.tick;
        let mut persisting: Option<PersistFuture<F>> = None;
        self.publish_status();
        let mut stopping = std::pin::pin!(shutdown.cancelled());
        let mut tick_due = Deadline::new(self.next_tick);
        loop {
            if persisting.is_none() {
                persisting = self.drive()?;
            }
            tick_due.set(self.next_tick);
            tokio::select! {
                biased;
                () = &mut stopping => {
                    if let Some(persist) = persisting.take() {
                        let (_, _, result, _) = persist.await;
                        result.map_err(|error| error.to_string())?;
                    }
                    return Ok(());
                }
                outcome = async { persisting.as_mut().expect("guarded").await }, if persisting.is_some() => {
                    persisting = None;
                    self.persisted(outcome)?;
                }
                event = incoming.recv() => {
                    let Some(event) = event else { return Err("the transport stopped".into()) };
                    self.on_incoming(event);
                    self.drain(&mut incoming, &mut requests);
                }
                request = requests.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    self.on_request(request);
                    self.drain(&mut incoming, &mut requests);
                }
                () = tick_due.reached() => {}
            }
            // Ticks are taken here, whatever woke the loop, so a busy loop still keeps time.
            self.catch_up_ticks();
        }
    }

    /// Takes the ticks that are due. After a stall (a paused process, a long pause of the
    /// machine) the missed ticks are all taken, up to four election timeouts' worth, before
    /// any input is handled: a leader's lease then expires as it should instead of outliving
    /// the pause, and a lease read after the pause goes through a ReadIndex round.
    fn catch_up_ticks(&mut self) {
        let now = Instant::now();
        let mut taken = 0;
        while now >= self.next_tick && taken < self.catch_up_ticks_max {
            self.on_tick();
            self.next_tick += self.tick;
            taken += 1;
        }
        if now >= self.next_tick {
            self.next_tick = now + self.tick;
        }
    }

    // ---- inputs ---------------------------------------------------------------------------

    /// Takes what else is waiting on both channels, a bounded number of each, so that
    /// neither starves the other (the `select!` is biased for determinism) and the next
    /// batch carries as much as possible.
    fn drain(
        &mut self,
        incoming: &mut mpsc::Receiver<Incoming<PeerMessage>>,
        requests: &mut mpsc::Receiver<NodeRequest>,
    ) {
        for _ in 0..1024 {
            match incoming.try_recv() {
                Ok(event) => self.on_incoming(event),
                Err(_) => break,
            }
        }
        for _ in 0..1024 {
            match requests.try_recv() {
                Ok(request) => self.on_request(request),
                Err(_) => break,
            }
        }
        let depth = requests.len() as u64;
        self.metrics
            .gauges
            .node_queue_depth
            .store(depth, Ordering::Relaxed);
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        for replica in self.replicas.values_mut() {
            if replica.failed.is_none() {
                replica.node.tick();
            }
        }
        if self.ticks.is_multiple_of(self.balance_interval_ticks) {
            self.balance_leaders();
        }
        if self.ticks.is_multiple_of(self.quiet_snapshot_ticks) {
            self.snapshot_quiet_replicas();
        }
        self.publish_gauges();
    }

    /// Every replica that applied anything since its last snapshot takes one, so that a
    /// shard with little traffic does not keep old WAL segments alive for every shard.
    fn snapshot_quiet_replicas(&mut self) {
        let every_entries = self.config.limits.snapshot_entries;
        for (shard, replica) in &mut self.replicas {
            if let Some(snapshot) = replica.maybe_snapshot(every_entries, true) {
                self.snapshots_taken.push(SnapshotSave {
                    group: *shard,
                    index: snapshot.meta.index,
                    term: snapshot.meta.term,
                    conf_state: snapshot.meta.conf_state,
                    data: snapshot.data,
                    installed: false,
                });
            }
        }
    }

    fn on_request(&mut self, request: NodeRequest) {
        self.catch_up_ticks();
        match request {
            NodeRequest::Execute {
                shard,
                request,
                reply,
            } => match self.replicas.get_mut(&shard) {
                Some(replica) => replica.handle(request, reply, &self.shared.wall_clock),
                None => {
                    let _ = reply.send(Response::Error(ErrorResponse::new(
                        ErrorCode::Unavailable,
                        format!(
                            "server {} hosts no replica of shard {shard}",
                            self.server_id
                        ),
                    )));
                }
            },
            NodeRequest::LocalStatus { digests, reply } => {
                let _ = reply.send(self.local_status(digests));
            }
        }
    }

    fn on_incoming(&mut self, event: Incoming<PeerMessage>) {
        self.catch_up_ticks();
        match event {
            Incoming::Message { from, message } => self.on_peer_message(from, message),
            Incoming::PeerUp(peer) => {
                self.peers_down.remove(&peer);
            }
            Incoming::PeerDown(peer) => {
                self.peers_down.insert(peer);
                for replica in self.replicas.values_mut() {
                    replica.node.report_unreachable(peer);
                }
            }
        }
    }

    fn on_peer_message(&mut self, from: ServerId, message: PeerMessage) {
        match message {
            PeerMessage::Raft(message) => {
                if message.from != from
                    || matches!(message.body, MessageBody::InstallSnapshot { .. })
                    || !fits_the_wal(&message)
                {
                    Metrics::add(&self.metrics.counters.peer_messages_refused, 1);
                    return;
                }
                self.step(message);
            }
            PeerMessage::SnapshotChunk(chunk) => {
                if chunk.from != from {
                    Metrics::add(&self.metrics.counters.peer_messages_refused, 1);
                    return;
                }
                if let Some(message) = self.assemble(chunk) {
                    self.step(message);
                }
            }
            PeerMessage::Forward { id, shard, request } => {
                self.on_forward(from, id, shard, request);
            }
            PeerMessage::ForwardReply { id, response } => {
                let mut forwards = self.shared.forwards.lock().expect("forwards lock");
                if forwards
                    .get(&id)
                    .is_some_and(|waiting| waiting.target == from)
                {
                    let waiting = forwards.remove(&id).expect("present");
                    let _ = waiting.reply.send(response);
                } else {
                    Metrics::add(&self.metrics.counters.peer_messages_refused, 1);
                }
            }
        }
    }

    /// Runs a request another server's router sent here, and sends the answer back.
    fn on_forward(&mut self, from: ServerId, id: u64, shard: Option<ShardId>, request: Request) {
        let (reply, answer) = oneshot::channel();
        match (shard, request) {
            (None, Request::LocalStatus { digests }) => {
                let _ = reply.send(Response::Status(self.local_status(digests)));
            }
            (Some(shard), request) => self.on_request(NodeRequest::Execute {
                shard,
                request,
                reply,
            }),
            (None, other) => {
                let _ = reply.send(Response::Error(ErrorResponse::new(
                    ErrorCode::BadRequest,
                    format!("{} cannot be forwarded without a shard", other.name()),
                )));
            }
        }
        let transport = self.transport.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let response = answer.await.unwrap_or_else(|_| {
                Response::Error(ErrorResponse::new(
                    ErrorCode::Unavailable,
                    "the server is stopping",
                ))
            });
            if transport
                .send(from, PeerMessage::ForwardReply { id, response })
                .is_err()
            {
                Metrics::add(&metrics.counters.peer_messages_dropped, 1);
            }
        });
    }

    fn step(&mut self, message: Message) {
        let group = message.group_id;
        if !self.replicas.contains_key(&group) && !self.create_joining_replica(&message) {
            Metrics::add(&self.metrics.counters.peer_messages_refused, 1);
            return;
        }
        let replica = self.replicas.get_mut(&group).expect("present or created");
        if replica.failed.is_some() {
            return;
        }
        // A replica that joined empty knows no membership yet: it must not vote (it might be
        // a voter that lost its data, whose vote could elect a leader missing committed
        // entries) until the log or a snapshot tells it who is in the group.
        let votes = matches!(message.body, MessageBody::RequestVote { .. });
        if votes && replica.node.membership().voters.is_empty() {
            Metrics::add(&self.metrics.counters.peer_messages_refused, 1);
            return;
        }
        if replica.node.step(message).is_err() {
            Metrics::add(&self.metrics.counters.raft_step_errors, 1);
        }
    }

    /// A leader reaches out to this server for a shard it hosts no replica of: the server was
    /// added to the shard (as a learner) and starts an empty replica that the leader fills by
    /// snapshot or log. Only a leader's append, heartbeat or snapshot creates one, never a vote
    /// request.
    fn create_joining_replica(&mut self, message: &Message) -> bool {
        let from_leader = matches!(
            message.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        );
        let Some(spec) = self.shard_map.get(message.group_id) else {
            return false;
        };
        if !from_leader || message.to != self.server_id {
            return false;
        }
        let raft_config = crate::server::raft_config(&self.config, spec.id);
        let Ok(node) = Node::new(raft_config, raft_core::InitialState::default()) else {
            return false;
        };
        tracing::info!(
            shard = spec.id,
            leader = message.from,
            "joining shard as a new replica"
        );
        if let Some(observer) = &self.observer {
            observer.replica_created(self.server_id, spec.id);
        }
        let machine = kv::StateMachine::new(kv::Limits::default());
        self.gateway.open_shard(spec.id, machine.applied_index());
        let replica = Replica::new(
            spec.clone(),
            node,
            machine,
            self.metrics.clone(),
            self.observer.clone(),
        );
        self.replicas.insert(spec.id, replica);
        true
    }

    /// Adds a chunk to the snapshot being received for its group. Only chunks addressed to
    /// this server, for a shard of the map, from the sender of the transfer in progress, in
    /// order, are taken; a new transfer (offset 0) replaces the old one. A complete snapshot is
    /// checked (its indexes fit the WAL, its state decodes and is applied to its index) before
    /// Raft sees it: a bad one is dropped here, never made durable.
    fn assemble(&mut self, chunk: SnapshotChunk) -> Option<Message> {
        let group = chunk.group_id;
        let drop_chunk = |metrics: &Metrics| {
            Metrics::add(&metrics.counters.snapshot_chunks_dropped, 1);
            None
        };
        if chunk.to != self.server_id || self.shard_map.get(group).is_none() {
            return drop_chunk(&self.metrics);
        }
        if chunk.offset == 0 {
            if chunk.total_bytes > SNAPSHOT_RECEIVED_BYTES_MAX
                || chunk.meta.index >= storage::INDEX_LIMIT - 1
            {
                return drop_chunk(&self.metrics);
            }
            let assembly = Assembly {
                from: chunk.from,
                term: chunk.term,
                meta: chunk.meta.clone(),
                total_bytes: chunk.total_bytes,
                data: Vec::new(),
            };
            self.assemblies.insert(group, assembly);
        }
        let Some(assembly) = self.assemblies.get_mut(&group) else {
            return drop_chunk(&self.metrics);
        };
        let fits = assembly.from == chunk.from
            && assembly.term == chunk.term
            && assembly.meta == chunk.meta
            && assembly.total_bytes == chunk.total_bytes
            && assembly.data.len() as u64 == chunk.offset
            && chunk.offset + chunk.data.len() as u64 <= chunk.total_bytes;
        if !fits {
            self.assemblies.remove(&group);
            return drop_chunk(&self.metrics);
        }
        // The buffer grows with what arrived, never ahead of it.
        assembly.data.extend_from_slice(&chunk.data);
        if (assembly.data.len() as u64) < assembly.total_bytes {
            return None;
        }
        let assembly = self.assemblies.remove(&group).expect("present");
        let data = bytes::Bytes::from(assembly.data);
        match kv::StateMachine::restore(kv::Limits::default(), &data) {
            Ok(machine) if machine.applied_index() == assembly.meta.index => {}
            _ => {
                tracing::warn!(
                    group,
                    from = chunk.from,
                    "dropping a snapshot whose state does not decode or does not match its index"
                );
                return drop_chunk(&self.metrics);
            }
        }
        Some(Message {
            group_id: group,
            from: chunk.from,
            to: chunk.to,
            term: assembly.term,
            body: MessageBody::InstallSnapshot {
                snapshot: raft_core::Snapshot {
                    meta: assembly.meta,
                    data,
                },
            },
        })
    }

    // ---- outputs --------------------------------------------------------------------------

    /// Gathers every replica's Ready. Returns the persist to wait for, if there is anything to
    /// make durable; otherwise handles the Readys at once.
    fn drive(&mut self) -> Result<Option<PersistFuture<F>>, String> {
        loop {
            self.start_read_rounds();
            let snapshots = std::mem::take(&mut self.snapshots_taken);
            let mut batch = PersistBatch {
                must_sync: !snapshots.is_empty(),
                snapshots,
                groups: Vec::new(),
            };
            let mut held = Vec::new();
            let shards: Vec<ShardId> = self.replicas.keys().copied().collect();
            for shard in shards {
                let replica = self.replicas.get_mut(&shard).expect("listed");
                if replica.failed.is_some() || !replica.node.has_ready() {
                    continue;
                }
                let mut ready = replica.node.ready();
                // The term the Ready's role belongs to: the node may move on while the batch
                // is being persisted.
                let term = replica.node.term();
                if let Some(hard_state) = ready.hard_state {
                    if let Some(observer) = &self.observer {
                        observer.commit_reported(
                            self.server_id,
                            shard,
                            hard_state.term,
                            replica.is_leader() && hard_state.term == term,
                            hard_state.commit,
                            replica.node.term_at(hard_state.commit),
                        );
                    }
                    let term_vote = (hard_state.term, hard_state.vote);
                    batch.must_sync |= term_vote != replica.durable_term_vote;
                    replica.durable_term_vote = term_vote;
                }
                let messages = std::mem::take(&mut ready.messages);
                self.send_messages(shard, messages);
                #[cfg(madsim)]
                if crate::planted::planted(crate::planted::Bug::AckBeforeFsync) {
                    let early = std::mem::take(&mut ready.persisted_messages);
                    self.send_messages(shard, early);
                }
                if let Some(snapshot) = &ready.snapshot {
                    batch.snapshots.push(SnapshotSave {
                        group: shard,
                        index: snapshot.meta.index,
                        term: snapshot.meta.term,
                        conf_state: snapshot.meta.conf_state.clone(),
                        data: snapshot.data.clone(),
                        installed: true,
                    });
                }
                batch.must_sync |= ready.snapshot.is_some() || !ready.entries.is_empty();
                let durable_last = ready
                    .entries
                    .last()
                    .map(|entry| entry.index)
                    .or(ready.snapshot.as_ref().map(|snapshot| snapshot.meta.index));
                if ready.hard_state.is_some() || !ready.entries.is_empty() {
                    batch.groups.push(GroupWrite {
                        group: shard,
                        entries: std::mem::take(&mut ready.entries),
                        hard_state: ready.hard_state,
                    });
                }
                held.push(Held {
                    shard,
                    ready,
                    term,
                    durable_last,
                });
            }
            if batch.must_sync {
                self.held = held;
                let disk = self.disk.take().expect("no persist in flight");
                return Ok(Some(persist(disk, batch)));
            }
            if !batch.is_empty() {
                let disk = self.disk.as_mut().expect("no persist in flight");
                if let Err(error) = disk.write(&batch) {
                    tracing::error!(%error, "the WAL failed; stopping: nothing more can be acknowledged");
                    return Err(format!("the WAL failed: {error}"));
                }
            }
            if held.is_empty() {
                return Ok(None);
            }
            self.after_persist(held);
        }
    }

    fn persisted(&mut self, outcome: PersistOutcome<F>) -> LoopResult {
        let (disk, batch, result, elapsed) = outcome;
        if let Err(error) = result {
            tracing::error!(%error, "the WAL failed; stopping: nothing more can be acknowledged");
            return Err(format!("the WAL failed: {error}"));
        }
        self.disk = Some(disk);
        let entries = batch.entries();
        let counters = &self.metrics.counters;
        Metrics::add(&counters.fsyncs, 1);
        Metrics::add(&counters.entries_persisted, entries);
        self.metrics.persist_latency.observe(elapsed);
        self.metrics
            .entries_per_fsync_max
            .fetch_max(entries, Ordering::Relaxed);
        let held = std::mem::take(&mut self.held);
        self.after_persist(held);
        Ok(())
    }

    /// Steps 2 to 5 of each Ready, once its writes are durable.
    fn after_persist(&mut self, held: Vec<Held>) {
        let limits = kv::Limits::default();
        let every_entries = self.config.limits.snapshot_entries;
        for Held {
            shard,
            mut ready,
            term,
            durable_last,
        } in held
        {
            if let (Some(observer), Some(last)) = (&self.observer, durable_last) {
                observer.log_durable(self.server_id, shard, last);
            }
            let persisted = std::mem::take(&mut ready.persisted_messages);
            self.send_messages(shard, persisted);
            let replica = self.replicas.get_mut(&shard).expect("held replicas stay");
            if let Some(snapshot) = &ready.snapshot {
                replica.install_snapshot(snapshot, limits);
                if replica.machine.applied_index() == snapshot.meta.index {
                    self.gateway.snapshot_installed(shard, snapshot.meta.index);
                }
            }
            let mut changed: Vec<(u64, Vec<kv::Change>)> = Vec::new();
            for entry in &ready.committed_entries {
                if let Some(applied) = replica.apply(entry)
                    && !applied.changes.is_empty()
                {
                    if let Some(observer) = &self.observer {
                        observer.changes_applied(
                            self.server_id,
                            shard,
                            applied.index,
                            &applied.changes,
                        );
                    }
                    changed.push((applied.index, applied.changes));
                }
            }
            // A leader that applied a change a task watches (an outbox record, an alert) wakes
            // it. The Ready that makes this replica leader applies before its soft state
            // reaches the leader map; the soft state's own check wakes the watcher then.
            let touched: Vec<&Arc<Watch>> = self
                .shared
                .watches
                .iter()
                .filter(|watch| changed.iter().any(|(_, changes)| watch.touches(changes)))
                .collect();
            if !touched.is_empty()
                && self
                    .shared
                    .leaders
                    .lock()
                    .expect("leaders lock")
                    .get(&shard)
                    == Some(&self.server_id)
            {
                for watch in touched {
                    watch.notify.notify_one();
                }
            }
            // Published once applied (never earlier): the gateway queues them for its
            // dispatcher and returns at once.
            if !ready.committed_entries.is_empty() {
                let applied = replica.machine.applied_index();
                self.gateway.publish(shard, changed, applied);
            }
            for read in &ready.read_states {
                replica.read_confirmed(read.request_id, read.index);
            }
            if let Some(soft) = ready.soft_state {
                self.on_soft_state(shard, soft, term);
            }
            let replica = self.replicas.get_mut(&shard).expect("held replicas stay");
            replica.node.advance(ready.number);
            replica.serve_confirmed_reads();
            replica.propose_waiting_writes(&self.shared.wall_clock);
            if let Some(snapshot) = replica.maybe_snapshot(every_entries, false) {
                self.snapshots_taken.push(SnapshotSave {
                    group: shard,
                    index: snapshot.meta.index,
                    term: snapshot.meta.term,
                    conf_state: snapshot.meta.conf_state,
                    data: snapshot.data,
                    installed: false,
                });
            }
        }
    }

    fn on_soft_state(&mut self, shard: ShardId, soft: raft_core::SoftState, term: u64) {
        // The leader map first: what a notified task (the outbox delivery) asks of the service
        // must already say who leads.
        let previous = self
            .shared
            .leaders
            .lock()
            .expect("leaders lock")
            .insert(shard, soft.leader_id);
        if previous != Some(soft.leader_id) {
            Metrics::add(&self.metrics.counters.leader_changes, 1);
        }
        let ticks = self.ticks;
        let replica = self.replicas.get_mut(&shard).expect("present");
        let was_leader = replica.leader_since_tick.is_some();
        if soft.role == Role::Leader && !was_leader {
            replica.leader_since_tick = Some(ticks);
            replica.next_balance_tick = 0;
            if let Some(observer) = &self.observer {
                observer.leader_elected(self.server_id, shard, term);
            }
            Metrics::add(&self.metrics.counters.elections_won, 1);
            tracing::info!(shard, term, "leading");
            for watch in &self.shared.watches {
                if watch.holds_keys(&replica.machine) {
                    watch.notify.notify_one();
                }
            }
        } else if soft.role != Role::Leader && was_leader {
            replica.leader_since_tick = None;
            replica.lost_leadership();
        }
    }

    fn start_read_rounds(&mut self) {
        for replica in self.replicas.values_mut() {
            if replica.is_leader() {
                replica.start_read_round(self.next_read_id);
                self.next_read_id += 1;
            }
        }
    }

    fn send_messages(&mut self, shard: ShardId, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            if let MessageBody::InstallSnapshot { snapshot } = message.body {
                let delivered =
                    self.send_snapshot(message.group_id, message.from, to, message.term, snapshot);
                if let Some(replica) = self.replicas.get_mut(&shard) {
                    replica.node.report_snapshot(to, delivered);
                }
                continue;
            }
            if let (
                Some(observer),
                MessageBody::VoteResponse {
                    pre_vote: false,
                    granted: true,
                },
            ) = (&self.observer, &message.body)
            {
                observer.vote_granted(self.server_id, shard, message.term, to);
            }
            if self.transport.send(to, PeerMessage::Raft(message)).is_err() {
                Metrics::add(&self.metrics.counters.peer_messages_dropped, 1);
            }
        }
    }

    /// Sends a snapshot as chunks; says whether every chunk was queued.
    fn send_snapshot(
        &self,
        group_id: u64,
        from: u64,
        to: u64,
        term: u64,
        snapshot: raft_core::Snapshot,
    ) -> bool {
        Metrics::add(&self.metrics.counters.snapshots_sent, 1);
        let total_bytes = snapshot.data.len() as u64;
        let mut offset = 0usize;
        loop {
            let end = (offset + SNAPSHOT_CHUNK_BYTES).min(snapshot.data.len());
            let chunk = SnapshotChunk {
                group_id,
                from,
                to,
                term,
                meta: snapshot.meta.clone(),
                total_bytes,
                offset: offset as u64,
                data: snapshot.data.slice(offset..end),
            };
            if self
                .transport
                .send(to, PeerMessage::SnapshotChunk(chunk))
                .is_err()
            {
                Metrics::add(&self.metrics.counters.peer_messages_dropped, 1);
                return false;
            }
            offset = end;
            if offset >= snapshot.data.len() {
                return true;
            }
        }
    }

    // ---- leader balance and status ----------------------------------------------------------

    /// Hands each shard's leadership to its preferred leader (the first voter in the
    /// configuration) when that server is up, caught up, and this one has led for a while: after
    /// start, and again once a failover has settled, leaders end up one per server.
    fn balance_leaders(&mut self) {
        let settle_ticks = self.balance_interval_ticks;
        for replica in self.replicas.values_mut() {
            let preferred = replica.spec.preferred_leader();
            let Some(since) = replica.leader_since_tick else {
                continue;
            };
            let node = &replica.node;
            let ready_to_hand_over = preferred != self.server_id
                && self.ticks >= since + settle_ticks
                && self.ticks >= replica.next_balance_tick
                && node.transfer_target().is_none()
                && node.membership().is_voter(preferred)
                && !self.peers_down.contains(&preferred)
                && node
                    .progress(preferred)
                    .is_some_and(|progress| progress.match_index == node.last_index());
            if ready_to_hand_over && replica.node.transfer_leader(preferred).is_ok() {
                // If this leader still leads later, the transfer did not take: wait longer
                // before the next try, so that a preferred server that cannot take over does
                // not keep refusing this shard's writes.
                replica.next_balance_tick = self.ticks + 10 * settle_ticks;
                tracing::info!(
                    shard = replica.spec.id,
                    to = preferred,
                    "handing leadership to the preferred leader"
                );
                Metrics::add(&self.metrics.counters.leadership_transfers, 1);
            }
        }
    }

    fn local_status(&self, digests: bool) -> ClusterStatus {
        let shards = self
            .shard_map
            .shards()
            .iter()
            .filter_map(|spec| {
                let replica = self.replicas.get(&spec.id)?;
                let status = replica.status(digests);
                let leads = status.role == client::ReplicaRole::Leader;
                Some(ShardStatus {
                    shard: spec.id,
                    name: spec.name.clone(),
                    start: bytes::Bytes::from(spec.start.clone()),
                    end: bytes::Bytes::from(spec.end.clone()),
                    leader_id: if leads { self.server_id } else { 0 },
                    term: if leads { status.term } else { 0 },
                    replicas: vec![status],
                })
            })
            .collect();
        ClusterStatus {
            shards,
            unreachable: Vec::new(),
        }
    }

    fn publish_status(&self) {
        let mut leaders = self.shared.leaders.lock().expect("leaders lock");
        for (shard, replica) in &self.replicas {
            leaders.insert(*shard, replica.node.leader_id());
        }
    }

    fn publish_gauges(&self) {
        let gauges = &self.metrics.gauges;
        let sum =
            |count: fn(&Replica) -> usize| self.replicas.values().map(count).sum::<usize>() as u64;
        gauges
            .pending_proposals
            .store(sum(Replica::pending_count), Ordering::Relaxed);
        gauges
            .pending_reads
            .store(sum(Replica::reads_count), Ordering::Relaxed);
        gauges.leaders.store(
            sum(|replica| usize::from(replica.is_leader())),
            Ordering::Relaxed,
        );
        gauges.entries_in_memory.store(
            sum(|replica| replica.node.entries_in_memory()),
            Ordering::Relaxed,
        );
    }
}

/// Whether every index a message names can be stored: raft-core accepts indexes up to 2^62,
/// the WAL only below that.
fn fits_the_wal(message: &Message) -> bool {
    let limit = storage::INDEX_LIMIT - 1;
    match &message.body {
        MessageBody::Append {
            prev_index,
            entries,
            ..
        } => prev_index.saturating_add(entries.len() as u64) < limit,
        MessageBody::InstallSnapshot { snapshot } => snapshot.meta.index < limit,
        _ => true,
    }
}

/// Writes a batch and syncs, off the node loop: on a blocking thread in production; under the
/// simulator, where OS threads are not allowed, in the loop's task with seeded simulated disk
/// time between the write and the fsync.
fn persist<F>(mut disk: Disk<F>, batch: PersistBatch) -> PersistFuture<F>
where
    F: FileSystem + Clone + Send + 'static,
    F::File: Send,
{
    #[cfg(not(madsim))]
    {
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let result = disk.persist(&batch);
                (disk, batch, result, started.elapsed())
            });
            task.await.expect("the persist task does not panic")
        })
    }
    #[cfg(madsim)]
    {
        // The simulated disk takes time: the write and the fsync each take a seeded few
        // milliseconds, during which the loop goes on stepping messages and taking proposals
        // (as in production) and a crash can land between the write and its fsync.
        Box::pin(async move {
            let started = Instant::now();
            let pause = || Duration::from_micros(madsim::rand::random::<u64>() % 3_000);
            let mut result = disk.write(&batch);
            if result.is_ok() {
                tokio::time::sleep(pause()).await;
                result = disk.sync_wal();
                tokio::time::sleep(pause()).await;
            }
            (disk, batch, result, started.elapsed())
        })
    }
}

#[cfg(test)]
mod drift_tests {
    use super::drifted;
    use std::time::Duration;

    #[test]
    fn a_drifted_tick_is_stretched_or_shortened_by_its_parts_per_million() {
        let tick = Duration::from_millis(10);
        assert_eq!(drifted(tick, 0), tick);
        assert_eq!(drifted(tick, 25_000), Duration::from_micros(10_250));
        assert_eq!(drifted(tick, -25_000), Duration::from_micros(9_750));
        assert_eq!(
            drifted(tick, -2_000_000),
            Duration::from_micros(1),
            "never zero"
        );
    }
}
