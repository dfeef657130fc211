//! One local replica of one shard: its Raft node, its state machine, and the requests waiting
//! on it. No I/O here: the node loop hands in requests and Readys and sends what comes out.

use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::shard::ShardSpec;
use bytes::Bytes;
use client::{
    ErrorCode, ErrorResponse, MembershipChange, ReplicaRole, ReplicaStatus, Request, Response,
};
use kv::{Applied, StateMachine};
use raft_core::{ConfChange, Entry, EntryKind, Node, ProposeError, Role, Snapshot, TransferError};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Writes that may wait for a new leader to apply into its term; beyond, they are refused as
/// unavailable (retry-safe).
const WRITES_WAITING_MAX: usize = 4096;

/// A request waiting for its entry to be applied.
#[derive(Debug)]
struct Pending {
    /// The term the entry was proposed in: if another entry is applied at its index, the
    /// proposal was lost.
    term: u64,
    membership: bool,
    reply: oneshot::Sender<Response>,
}

/// A linearizable read waiting for its ReadIndex round and for the apply to catch up.
#[derive(Debug)]
pub(crate) struct PendingRead {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
    /// When the read reached the node loop (for the observer's read rule).
    pub arrived: tokio::time::Instant,
}

/// One replica hosted by this server.
#[derive(Debug)]
pub(crate) struct Replica {
    pub spec: ShardSpec,
    pub node: Node,
    pub machine: StateMachine,
    /// Why the replica stopped, if it did (it then refuses every request and message).
    pub failed: Option<String>,
    /// The index of the newest snapshot taken or installed.
    pub snapshot_index: u64,
    /// The tick at which this replica last became leader.
    pub leader_since_tick: Option<u64>,
    /// The term and vote last handed to the WAL: a Ready that changes them must be synced.
    pub durable_term_vote: (u64, u64),
    /// The time stamped on the writes proposed here.
    clock: ShardClock,
    /// Writes that reached this leader before it applied into its term, in arrival order.
    writes_waiting: Vec<(kv::Command, oneshot::Sender<Response>)>,
    /// Not before this tick does the leader try again to hand its leadership to the preferred
    /// leader (a transfer that did not take backs off).
    pub next_balance_tick: u64,
    pending: BTreeMap<u64, Pending>,
    reads_queued: Vec<PendingRead>,
    reads_in_flight: BTreeMap<u64, Vec<PendingRead>>,
    /// Reads confirmed at an index, waiting for the apply to reach it.
    reads_confirmed: Vec<(u64, Vec<PendingRead>)>,
    metrics: Arc<Metrics>,
    observer: Option<Arc<dyn Observer>>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorResponse::new(code, message))
}

fn not_leader(node: &Node) -> Response {
    let hint = node.leader_id();
    Response::Error(ErrorResponse {
        code: ErrorCode::NotLeader,
        message: format!(
            "server {} does not lead shard {}",
            node.id(),
            node.group_id()
        ),
        leader_hint: (hint != raft_core::NO_NODE).then_some(hint),
    })
}

impl Replica {
    pub(crate) fn new(
        spec: ShardSpec,
        node: Node,
        machine: StateMachine,
        metrics: Arc<Metrics>,
        observer: Option<Arc<dyn Observer>>,
    ) -> Replica {
        let snapshot_index = node.snapshot().map_or(0, |snapshot| snapshot.meta.index);
        let durable_term_vote = (node.term(), node.vote());
        Replica {
            spec,
            node,
            machine,
            failed: None,
            snapshot_index,
            leader_since_tick: None,
            durable_term_vote,
            clock: ShardClock::default(),
            writes_waiting: Vec::new(),
            next_balance_tick: 0,
            pending: BTreeMap::new(),
            reads_queued: Vec::new(),
            reads_in_flight: BTreeMap::new(),
            reads_confirmed: Vec::new(),
            metrics,
            observer,
        }
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.node.role() == Role::Leader
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len() + self.writes_waiting.len()
    }

    pub(crate) fn reads_count(&self) -> usize {
        self.reads_queued.len()
            + self.reads_in_flight.values().map(Vec::len).sum::<usize>()
            + self
                .reads_confirmed
                .iter()
                .map(|(_, reads)| reads.len())
                .sum::<usize>()
    }

    /// Takes one request for this shard. Answers at once, or keeps the reply until the entry
    /// is applied or the read confirmed.
    ///
    /// A write is stamped with the shard's clock (see [`ShardClock`]), so that the state
    /// machine's session expiry follows the leaders' clocks, not the clients'.
    pub(crate) fn handle(
        &mut self,
        request: Request,
        reply: oneshot::Sender<Response>,
        wall_clock: &crate::WallClock,
    ) {
        if let Some(reason) = &self.failed {
            let _ = reply.send(error(
                ErrorCode::Unavailable,
                format!("replica of shard {} stopped: {reason}", self.spec.id),
            ));
            return;
        }
        match request {
            Request::Get {
                consistency: client::Consistency::Stale,
                ..
            }
            | Request::Scan {
                consistency: client::Consistency::Stale,
                ..
            } => {
                Metrics::add(&self.metrics.counters.reads_stale, 1);
                let _ = reply.send(self.read(&request));
            }
            Request::Get { .. } | Request::Scan { .. } => {
                if !self.is_leader() {
                    let _ = reply.send(not_leader(&self.node));
                    return;
                }
                self.reads_queued.push(PendingRead {
                    request,
                    reply,
                    arrived: tokio::time::Instant::now(),
                });
            }
            Request::Write(command) => {
                if !self.spec.holds_write(&command.write) {
                    let _ = reply.send(error(
                        ErrorCode::CrossShard,
                        format!("the write reaches outside shard {}", self.spec.name),
                    ));
                    return;
                }
                if !self.is_leader() {
                    let _ = reply.send(not_leader(&self.node));
                    return;
                }
                if !self.applied_into_term() {
                    // A new leader stamps writes only once its state holds every stamp of the
                    // terms before (see `ShardClock`): until then they wait here.
                    if self.writes_waiting.len() >= WRITES_WAITING_MAX {
                        let _ = reply.send(error(
                            ErrorCode::Unavailable,
                            "the new leader is still applying the entries of earlier terms",
                        ));
                        return;
                    }
                    self.writes_waiting.push((command, reply));
                    return;
                }
                self.propose_write(command, reply, wall_clock);
            }
            Request::ChangeMembership { change, .. } => {
                if self.is_leader() && self.membership_holds(change) {
                    // Already so (a retry of a change whose answer was lost): done.
                    let _ = reply.send(Response::Done);
                    return;
                }
                let change = match change {
                    MembershipChange::AddLearner(id) => ConfChange::AddLearner(id),
                    MembershipChange::AddVoter(id) => ConfChange::AddVoter(id),
                    MembershipChange::Remove(id) => ConfChange::RemoveNode(id),
                };
                let result = self.node.propose_conf_change(change);
                self.after_proposal(result, true, reply);
            }
            Request::TransferLeader { to, .. } => {
                let response = match self.node.transfer_leader(to) {
                    Ok(()) => Response::Done,
                    Err(TransferError::NotLeader { .. }) => not_leader(&self.node),
                    Err(other) => error(ErrorCode::BadRequest, other.to_string()),
                };
                let _ = reply.send(response);
            }
            other => {
                let _ = reply.send(error(
                    ErrorCode::BadRequest,
                    format!("{} is not a shard request", other.name()),
                ));
            }
        }
    }

    fn membership_holds(&self, change: MembershipChange) -> bool {
        let membership = self.node.membership();
        match change {
            MembershipChange::AddLearner(id) => membership.is_learner(id),
            MembershipChange::AddVoter(id) => membership.is_voter(id),
            MembershipChange::Remove(id) => !membership.contains(id),
        }
    }

    /// Whether this leader has applied an entry of its own term (its first one, the no-op,
    /// comes after every entry of earlier terms): its state then holds every earlier stamp.
    fn applied_into_term(&self) -> bool {
        self.node.term_at(self.machine.applied_index()) == Some(self.node.term())
    }

    /// Stamps a write with the shard's clock and proposes it.
    fn propose_write(
        &mut self,
        mut command: kv::Command,
        reply: oneshot::Sender<Response>,
        wall_clock: &crate::WallClock,
    ) {
        let (stamp_ms, from_wall_clock) = self.clock.stamp(
            self.node.term(),
            self.machine.clock_ms(),
            tokio::time::Instant::now(),
            || wall_clock.now_ms(),
        );
        if let Some(observer) = &self.observer {
            let term = self.node.term();
            observer.write_stamped(
                self.node.id(),
                self.spec.id,
                term,
                stamp_ms,
                from_wall_clock,
            );
        }
        command.timestamp_ms = stamp_ms;
        let result = self.node.propose(command.encode());
        self.after_proposal(result, false, reply);
    }

    /// Proposes the writes that waited for this leader to apply into its term, once it has.
    pub(crate) fn propose_waiting_writes(&mut self, wall_clock: &crate::WallClock) {
        if self.writes_waiting.is_empty() || !self.is_leader() || !self.applied_into_term() {
            return;
        }
        for (command, reply) in std::mem::take(&mut self.writes_waiting) {
            self.propose_write(command, reply, wall_clock);
        }
    }

    fn after_proposal(
        &mut self,
        result: Result<u64, ProposeError>,
        membership: bool,
        reply: oneshot::Sender<Response>,
    ) {
        match result {
            Ok(index) => {
                Metrics::add(&self.metrics.counters.proposals, 1);
                let term = self.node.term();
                if let Some(old) = self.pending.insert(
                    index,
                    Pending {
                        term,
                        membership,
                        reply,
                    },
                ) {
                    // An older proposal at this index was overwritten by a new leader's log.
                    let _ = old.reply.send(lost());
                }
            }
            Err(refusal) => {
                Metrics::add(&self.metrics.counters.proposals_refused, 1);
                let response = match refusal {
                    ProposeError::NotLeader { .. } => not_leader(&self.node),
                    ProposeError::EntryTooLarge { .. } | ProposeError::InvalidConfChange { .. } => {
                        error(ErrorCode::BadRequest, refusal.to_string())
                    }
                    ProposeError::TransferInProgress
                    | ProposeError::UncommittedLimit { .. }
                    | ProposeError::ConfChangeInProgress
                    | ProposeError::NotCommittedInTerm => {
                        error(ErrorCode::Unavailable, refusal.to_string())
                    }
                };
                let _ = reply.send(response);
            }
        }
    }

    /// Serves a read from the local state machine.
    fn read(&self, request: &Request) -> Response {
        match request {
            Request::Get { key, .. } => Response::Value(self.machine.get(key).cloned()),
            Request::Scan {
                start, end, limit, ..
            } => {
                let limit = (*limit).min(client::protocol::SCAN_LIMIT_MAX) as usize;
                let (mut entries, mut more) = self.machine.scan(start, end, limit);
                let mut bytes = 0usize;
                let within_budget = entries
                    .iter()
                    .take_while(|(key, versioned)| {
                        let fits = bytes < client::protocol::SCAN_BYTES_MAX;
                        bytes += key.len() + versioned.value.len();
                        fits
                    })
                    .count();
                if within_budget < entries.len() {
                    entries.truncate(within_budget);
                    more = true;
                }
                Response::Scan { entries, more }
            }
            other => error(
                ErrorCode::BadRequest,
                format!("{} is not a read", other.name()),
            ),
        }
    }

    /// Starts a ReadIndex round for the reads queued since the last one.
    pub(crate) fn start_read_round(&mut self, request_id: u64) {
        if self.reads_queued.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.reads_queued);
        match self.node.read_index(request_id) {
            Ok(()) => {
                Metrics::add(&self.metrics.counters.read_rounds, 1);
                self.reads_in_flight.insert(request_id, reads);
            }
            Err(_) => {
                for read in reads {
                    let _ = read.reply.send(not_leader(&self.node));
                }
            }
        }
    }

    /// A read round was confirmed: its reads may be served once `index` is applied.
    pub(crate) fn read_confirmed(&mut self, request_id: u64, index: u64) {
        if let Some(reads) = self.reads_in_flight.remove(&request_id) {
            self.reads_confirmed.push((index, reads));
        }
    }

    /// Serves the confirmed reads whose index is applied.
    pub(crate) fn serve_confirmed_reads(&mut self) {
        let applied = self.machine.applied_index();
        let mut index = 0;
        while index < self.reads_confirmed.len() {
            if self.reads_confirmed[index].0 <= applied {
                let (_, reads) = self.reads_confirmed.swap_remove(index);
                for read in reads {
                    Metrics::add(&self.metrics.counters.reads_linearizable, 1);
                    if let Some(observer) = &self.observer {
                        observer.read_served(self.node.id(), self.spec.id, read.arrived, applied);
                    }
                    let _ = read.reply.send(self.read(&read.request));
                }
            } else {
                index += 1;
            }
        }
    }

    /// Installs a snapshot received from the leader.
    pub(crate) fn install_snapshot(&mut self, snapshot: &Snapshot, limits: kv::Limits) {
        match StateMachine::restore(limits, &snapshot.data) {
            Ok(machine) if machine.applied_index() == snapshot.meta.index => {
                self.machine = machine;
                self.snapshot_index = snapshot.meta.index;
                Metrics::add(&self.metrics.counters.snapshots_installed, 1);
                if let Some(observer) = &self.observer {
                    observer.snapshot_installed(self.node.id(), self.spec.id, snapshot.meta.index);
                }
            }
            Ok(machine) => self.fail(format!(
                "a snapshot at index {} holds a state applied to {}",
                snapshot.meta.index,
                machine.applied_index()
            )),
            Err(decode) => self.fail(format!(
                "a snapshot from the leader does not decode: {decode}"
            )),
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ = pending.reply.send(lost());
        }
    }

    pub(crate) fn fail(&mut self, reason: String) {
        tracing::error!(shard = self.spec.id, %reason, "replica stopped");
        Metrics::add(&self.metrics.counters.replicas_failed, 1);
        self.failed = Some(reason);
        // Nothing waiting here will be answered by this replica any more.
        self.lost_leadership();
    }

    /// Applies one committed entry and answers its proposer, if it waits here. Returns what
    /// the state machine did (for notifications), if the entry carried a command.
    pub(crate) fn apply(&mut self, entry: &Entry) -> Option<Applied> {
        if self.failed.is_some() || entry.index <= self.machine.applied_index() {
            return None;
        }
        Metrics::add(&self.metrics.counters.entries_applied, 1);
        if let Some(observer) = &self.observer {
            let fingerprint = crate::observe::fingerprint(entry.kind, &entry.data);
            observer.entry_applied(
                self.node.id(),
                self.spec.id,
                entry.index,
                entry.term,
                fingerprint,
            );
        }
        let applied = match entry.kind {
            EntryKind::Normal if !entry.data.is_empty() => {
                let applied = self.machine.apply(entry.index, &entry.data);
                if let Some(observer) = &self.observer
                    && !applied.duplicate
                    && applied.result.is_ok()
                    && let Ok(command) = kv::Command::decode(&entry.data)
                    && command.client_id != 0
                {
                    observer.write_took_effect(
                        self.node.id(),
                        self.spec.id,
                        entry.index,
                        command.client_id,
                        command.seq,
                    );
                }
                if applied.duplicate {
                    Metrics::add(&self.metrics.counters.duplicates_answered, 1);
                } else {
                    Metrics::add(&self.metrics.counters.writes_applied, 1);
                }
                Some(applied)
            }
            EntryKind::Normal | EntryKind::ConfChange => {
                self.machine.skip(entry.index);
                None
            }
        };
        // Proposals at earlier indexes whose entries were replaced are answered as lost.
        while let Some(first) = self.pending.first_entry() {
            if *first.key() >= entry.index {
                break;
            }
            let _ = first.remove().reply.send(lost());
        }
        if let Some(pending) = self.pending.remove(&entry.index) {
            let response = if pending.term != entry.term {
                lost()
            } else if pending.membership {
                Response::Done
            } else {
                match &applied {
                    Some(Applied {
                        result: Ok(result),
                        first_applied_index,
                        ..
                    }) => Response::Written {
                        shard: self.spec.id,
                        index: *first_applied_index,
                        result: result.clone(),
                    },
                    Some(Applied {
                        result: Err(apply_error),
                        ..
                    }) => Response::Error(apply_error.clone().into()),
                    None => lost(),
                }
            };
            let _ = pending.reply.send(response);
        }
        applied
    }

    /// The role changed: a replica that no longer leads answers everything waiting on it.
    pub(crate) fn lost_leadership(&mut self) {
        for (_, reply) in std::mem::take(&mut self.writes_waiting) {
            let _ = reply.send(not_leader(&self.node));
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ = pending.reply.send(lost());
        }
        let reads = std::mem::take(&mut self.reads_queued)
            .into_iter()
            .chain(
                std::mem::take(&mut self.reads_in_flight)
                    .into_values()
                    .flatten(),
            )
            .chain(
                std::mem::take(&mut self.reads_confirmed)
                    .into_iter()
                    .flat_map(|(_, reads)| reads),
            );
        for read in reads {
            let _ = read.reply.send(not_leader(&self.node));
        }
    }

    /// This replica's status; `digest`: with the state digest (which reads the whole state).
    pub(crate) fn status(&self, digest: bool) -> ReplicaStatus {
        let membership = self.node.membership();
        let role = match self.node.role() {
            Role::Leader => ReplicaRole::Leader,
            Role::Candidate | Role::PreCandidate => ReplicaRole::Candidate,
            Role::Follower if membership.is_learner(self.node.id()) => ReplicaRole::Learner,
            Role::Follower => ReplicaRole::Follower,
        };
        ReplicaStatus {
            server_id: self.node.id(),
            role,
            term: self.node.term(),
            leader_id: self.node.leader_id(),
            commit_index: self.node.commit_index(),
            applied_index: self.machine.applied_index(),
            first_index: self.node.first_index(),
            last_index: self.node.last_index(),
            voters: membership.voters.clone(),
            learners: membership.learners.clone(),
            state_digest: if digest { self.machine.digest() } else { 0 },
            keys: self.machine.len() as u64,
        }
    }

    /// Takes a snapshot and compacts the in-memory log if enough entries were applied since
    /// the last one; returns the snapshot to make durable.
    ///
    /// With `quiet`, any replica that applied anything since its last snapshot takes one: a
    /// shard with little traffic would otherwise keep old WAL segments alive for every shard.
    pub(crate) fn maybe_snapshot(&mut self, every_entries: u64, quiet: bool) -> Option<Snapshot> {
        let applied = self.machine.applied_index();
        let due = applied >= self.snapshot_index + every_entries
            || (quiet && applied > self.snapshot_index);
        if self.failed.is_some() || !due || self.node.applied_index() != applied {
            return None;
        }
        let data: Bytes = self.machine.snapshot();
        if data.len() as u64 > storage::SNAPSHOT_BYTES_MAX - 1024 * 1024 {
            // The snapshot store would refuse it; the log keeps growing instead, and the
            // operator sees why.
            tracing::error!(
                shard = self.spec.id,
                bytes = data.len(),
                "the state is too large to snapshot"
            );
            return None;
        }
        if self.node.compact(applied, data).is_err() {
            return None;
        }
        self.snapshot_index = applied;
        Metrics::add(&self.metrics.counters.snapshots_taken, 1);
        self.node.snapshot().cloned()
    }
}

/// The clock a leader stamps on the writes it proposes; the state machine's session expiry
/// runs on the stamps. Within one term it continues from the newest stamp the leader knows
/// (its own, or the applied state's: the leader stamps only once it has applied into its term,
/// so its state holds every stamp of the terms before) and advances with this server's
/// monotonic clock. So no step of any server's wall clock can expire a session early and let
/// a retry apply twice (etcd's leases restart their countdown on a new leader for the same
/// reason). Time between terms does not count: sessions live longer, never shorter. The wall
/// clock is read only for the first stamp of a shard that has none, so that stamps read as
/// Unix time.
#[derive(Debug, Default)]
pub(crate) struct ShardClock {
    /// The last stamp given.
    stamp_ms: u64,
    /// The term it was given in, and when (this server's monotonic clock).
    given: Option<(u64, tokio::time::Instant)>,
}

impl ShardClock {
    /// The stamp for a write proposed `now` by the leader of `term`, given the applied
    /// state's clock, and whether it was read from the wall clock.
    fn stamp(
        &mut self,
        term: u64,
        applied_ms: u64,
        now: tokio::time::Instant,
        wall_clock_ms: impl FnOnce() -> u64,
    ) -> (u64, bool) {
        let base = self.stamp_ms.max(applied_ms);
        #[cfg(madsim)]
        if crate::planted::planted(crate::planted::Bug::WallClockStamps) {
            self.stamp_ms = base.max(wall_clock_ms());
            return (self.stamp_ms, false);
        }
        let (stamp_ms, from_wall_clock) = match self.given {
            Some((given_term, at)) if given_term == term => (
                base.saturating_add(now.saturating_duration_since(at).as_millis() as u64),
                false,
            ),
            _ if base == 0 => (wall_clock_ms(), true),
            _ => (base, false),
        };
        self.stamp_ms = stamp_ms;
        self.given = Some((term, now));
        (stamp_ms, from_wall_clock)
    }
}

fn lost() -> Response {
    error(
        ErrorCode::Unavailable,
        "leadership changed before the write's outcome was known; retrying it with the same client id and sequence is safe",
    )
}

#[cfg(test)]
mod tests {
    use super::ShardClock;
    use std::time::Duration;
    use tokio::time::Instant;

    const HOUR_MS: u64 = 3_600_000;

    #[test]
    fn a_shard_clock_moves_with_the_monotonic_clock_not_the_wall_clock() {
        let start = Instant::now();
        let mut clock = ShardClock::default();
        assert_eq!(clock.stamp(2, 0, start, || 1_000_000), (1_000_000, true));
        // The wall clock jumps two hours ahead: it is not read again.
        let later = start + Duration::from_millis(250);
        assert_eq!(
            clock.stamp(2, 1_000_000, later, || 1_000_000 + 2 * HOUR_MS),
            (1_000_250, false)
        );
        // Nor does a jump back move the stamps back.
        assert_eq!(clock.stamp(2, 1_000_250, later, || 0), (1_000_250, false));
    }

    #[test]
    fn a_new_term_continues_from_the_newest_stamp_without_the_time_between() {
        let start = Instant::now();
        let mut clock = ShardClock::default();
        clock.stamp(2, 0, start, || 5_000);
        // Another leader stamped up to 9,000 in term 3; an hour later this replica leads term
        // 4: it starts from what it applied, and counts nothing of the hour.
        let much_later = start + Duration::from_millis(HOUR_MS);
        assert_eq!(clock.stamp(4, 9_000, much_later, || 0), (9_000, false));
        assert_eq!(
            clock.stamp(4, 9_000, much_later + Duration::from_millis(10), || 0),
            (9_010, false)
        );
    }

    #[test]
    fn a_shard_with_stamps_never_reads_the_wall_clock_again() {
        let start = Instant::now();
        let mut clock = ShardClock::default();
        // A replica that never stamped leads a shard whose state holds stamps: it continues
        // from them, whatever its wall clock says.
        assert_eq!(
            clock.stamp(7, 42_000, start, || 42_000 + 2 * HOUR_MS),
            (42_000, false)
        );
    }
}
