//! [`Node`]: one replica of one Raft group, as a state machine that a runtime drives.

use crate::config::{Config, ReadMode};
use crate::error::{CompactError, InitError, ProposeError, ReadError, StepError, TransferError};
use crate::log::{RaftLog, shrink_if_sparse};
use crate::message::{
    ConfChange, ConfState, Entry, EntryKind, GroupId, HardState, INDEX_AND_TERM_MAX, Message,
    MessageBody, NO_NODE, NodeId, ReadState, Snapshot,
};
use crate::progress::{Progress, ProgressState};
use crate::rng::Rng;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks for pre-votes without raising its term.
    PreCandidate,
    /// Campaigns for leadership in its current term.
    Candidate,
    /// Leads the group in its current term.
    Leader,
}

/// State that changes often and is not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this node knows of, or [`NO_NODE`].
    pub leader_id: NodeId,
    /// This node's role.
    pub role: Role,
}

/// What a node recovers from storage when it starts.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    /// The durable term, vote and commit index.
    pub hard_state: HardState,
    /// The newest durable snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The durable entries after the snapshot, consecutive.
    pub entries: Vec<Entry>,
    /// The membership the group was created with, used when there is no snapshot.
    ///
    /// A brand-new node (no snapshot, no entries, default hard state) writes it into its log as
    /// committed membership-change entries at indexes `1..=n` (term 1), handed out in the
    /// first Ready to persist and apply, so that a node joining later learns the initial
    /// membership from the log. Empty for a node that joins an existing group.
    pub bootstrap: ConfState,
}

impl InitialState {
    /// The state of a brand new node of a group created with `voters`.
    pub fn bootstrap(voters: &[NodeId]) -> InitialState {
        InitialState {
            bootstrap: ConfState::with_voters(voters),
            ..InitialState::default()
        }
    }
}

/// Counters of what the node has seen; never reset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Messages passed to [`Node::step`].
    pub messages_received: u64,
    /// Messages dropped because they belong to another group.
    pub messages_wrong_group: u64,
    /// Messages dropped because they were addressed to another node or came from this one.
    pub messages_misaddressed: u64,
    /// Messages dropped because they contradict themselves or the protocol.
    pub messages_malformed: u64,
    /// Answers dropped because they came from a node the leader does not track.
    pub messages_from_non_members: u64,
    /// Messages of an older term (answered or dropped).
    pub messages_stale_term: u64,
    /// Vote requests ignored because a live leader was heard recently.
    pub votes_ignored_by_stickiness: u64,
    /// Proposals refused.
    pub proposals_refused: u64,
    /// Elections (not pre-votes) this node started.
    pub elections_started: u64,
    /// Times this node became leader.
    pub leaderships_won: u64,
    /// Times a leader stepped down because it lost contact with a quorum.
    pub check_quorum_step_downs: u64,
    /// Snapshots sent to followers.
    pub snapshots_sent: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Snapshots ignored because they were older than the commit index.
    pub snapshots_stale: u64,
    /// Leadership transfers abandoned after an election timeout.
    pub transfers_aborted: u64,
    /// Reads released (as a leader, for itself or a follower).
    pub reads_released: u64,
    /// Times a follower stopped honouring its leader because the connection to it broke
    /// (see [`Node::report_unreachable`]).
    pub leaders_given_up_on_disconnect: u64,
}

/// Everything the runtime must do after the node's state changed. Handle it in this order:
///
/// 1. persist `snapshot` (if any), then `entries` (the first may replace a suffix of the
///    durable log: truncate from its index), then `hard_state` (if any), durably;
/// 2. send `messages` (these may also go before step 1) and then `persisted_messages`;
/// 3. install `snapshot` into the application state, then apply `committed_entries` in order;
/// 4. serve `read_states` once the applied index reaches each one's index;
/// 5. call [`Node::advance`] with `number`.
#[derive(Debug, Default)]
#[must_use = "a Ready must be handled and then passed to Node::advance"]
pub struct Ready {
    /// Identifies this Ready for [`Node::advance`].
    pub number: u64,
    /// The new role and leader, if either changed.
    pub soft_state: Option<SoftState>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: persist it and install it.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the durable log.
    pub entries: Vec<Entry>,
    /// Messages that may be sent at once, even before this Ready is persisted.
    pub messages: Vec<Message>,
    /// Messages that may be sent only once this Ready is durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order. Membership changes among them
    /// ([`EntryKind::ConfChange`]) are already in effect in the node (from the moment they
    /// were appended); the application may record them.
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads that may be served once their index is applied.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// Whether there is anything to persist (and so an fsync to make before
    /// `persisted_messages` are sent).
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

/// What a handed-out Ready promised, to be confirmed by `advance`.
#[derive(Debug)]
struct InFlight {
    number: u64,
    /// The last entry handed out for persistence (the snapshot's position if it carried a
    /// snapshot and no entries).
    persisted_to: Option<(u64, u64)>,
    /// The last committed entry handed out for applying.
    applied_to: u64,
}

/// A read waiting for its confirmation round.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    request_id: u64,
    /// Who asked: this node or a follower that forwarded the request.
    from: NodeId,
    index: u64,
    /// Released once a quorum acknowledged a heartbeat carrying this sequence.
    sequence: u64,
}

/// One replica of one Raft group.
///
/// The methods come in four kinds:
/// * **inputs** (`step`, `tick`, `propose`, `propose_conf_change`, `read_index`,
///   `transfer_leader`, `report_unreachable`, `report_snapshot`, `compact`) change the state;
/// * **outputs**: [`Node::has_ready`] tells whether there is work, [`Node::ready`] hands it
///   out as a [`Ready`];
/// * **[`Node::advance`]** confirms that a Ready was handled;
/// * **getters** (`id`, `term`, `role`, `leader_id`, `commit_index`, ...) only read.
///
/// Call inputs as events happen, then `ready`, handle it (see [`Ready`]), and `advance`, before
/// asking for the next Ready. Inputs may be called between `ready` and `advance`.
#[derive(Debug)]
pub struct Node {
    config: Config,
    rng: Rng,
    term: u64,
    vote: NodeId,
    leader_id: NodeId,
    role: Role,
    log: RaftLog,
    membership: ConfState,
    /// The newest snapshot (taken here or received), sent to followers that need it.
    snapshot: Option<Snapshot>,
    /// A received snapshot not yet handed out for installation.
    snapshot_to_install: Option<Snapshot>,
    /// The leader's view of every member (including itself). Empty unless leading.
    progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current (pre-)election.
    votes: BTreeMap<NodeId, bool>,
    election_elapsed_ticks: u32,
    heartbeat_elapsed_ticks: u32,
    randomized_election_timeout_ticks: u32,
    /// A leadership transfer in progress: the target and the ticks since it started. It is
    /// abandoned after an election timeout.
    transfer: Option<(NodeId, u32)>,
    /// Ticks since this node started; the leader's clock for leases.
    ticks: u64,
    /// Until `ticks` reaches this, a restarted node with lease reads treats the leader it may
    /// have acknowledged before the restart as alive (see `step_higher_term`).
    lease_honoured_until_tick: u64,
    /// Whether this leader sent `TimeoutNow` in its term: the target campaigns regardless of
    /// leader stickiness, so lease reads are no longer safe in this term.
    lease_revoked: bool,
    /// The membership as of the start of the in-memory log (the snapshot's, or the one the
    /// group was created with). `membership` is this plus every change in the log.
    base_membership: ConfState,
    /// Whether this node was a voter just before the newest membership change in the log.
    /// While that change is uncommitted, such a node may still campaign (see `may_campaign`).
    voter_before_pending_change: bool,
    /// Index of the newest membership change in the log (0 if none since the base).
    pending_conf_index: u64,
    uncommitted_bytes: u64,
    /// Appends to broadcast at the next `ready` (proposals since the last one are batched).
    broadcast_pending: bool,
    /// Reads that wait for the leader's first commit in its term.
    reads_waiting_for_commit: Vec<(u64, NodeId)>,
    reads_pending: VecDeque<PendingRead>,
    read_sequence: u64,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
    ready_number: u64,
    in_flight: Option<InFlight>,
    metrics: Metrics,
}

// ---- construction and getters -------------------------------------------------------------

/// The log entries that record a new group's initial membership.
fn bootstrap_entries(membership: &ConfState) -> Vec<Entry> {
    let voters = membership.voters.iter().map(|id| ConfChange::AddVoter(*id));
    let learners = membership
        .learners
        .iter()
        .map(|id| ConfChange::AddLearner(*id));
    voters
        .chain(learners)
        .zip(1..)
        .map(|(change, index)| Entry {
            index,
            term: 1,
            kind: EntryKind::ConfChange,
            data: change.encode(),
        })
        .collect()
}

impl Node {
    /// Creates a node from its configuration and the state recovered from storage.
    pub fn new(config: Config, initial: InitialState) -> Result<Node, InitError> {
        config.validate()?;
        let inconsistent = |reason| Err(InitError::Inconsistent { reason });
        let (snapshot_index, snapshot_term, membership) = match &initial.snapshot {
            Some(snapshot) => {
                if !snapshot.meta.conf_state.is_valid() {
                    return inconsistent("snapshot membership is invalid");
                }
                let meta = &snapshot.meta;
                (meta.index, meta.term, meta.conf_state.clone())
            }
            None => (0, 0, initial.bootstrap.clone()),
        };
        if !membership.voters.is_empty() && !membership.is_valid() {
            return inconsistent("membership is invalid");
        }
        let contiguous = initial
            .entries
            .iter()
            .enumerate()
            .all(|(position, entry)| entry.index == snapshot_index + 1 + position as u64);
        if !contiguous {
            return inconsistent("entries do not follow the snapshot contiguously");
        }
        let terms_ordered = initial
            .entries
            .windows(2)
            .all(|pair| pair[0].term <= pair[1].term)
            && initial
                .entries
                .first()
                .is_none_or(|entry| entry.term >= snapshot_term);
        if !terms_ordered {
            return inconsistent("entry terms decrease");
        }
        let fresh = initial.snapshot.is_none()
            && initial.entries.is_empty()
            && initial.hard_state == HardState::default();
        let mut hard_state = initial.hard_state;
        let mut log = if fresh && !membership.voters.is_empty() {
            let entries = bootstrap_entries(&membership);
            hard_state.term = 1;
            hard_state.commit = entries.len() as u64;
            RaftLog::bootstrap(entries)
        } else {
            RaftLog::recovered(snapshot_index, snapshot_term, initial.entries)
        };
        if hard_state.commit > log.last_index() {
            return inconsistent("commit index beyond the last entry");
        }
        if log.last_term() > hard_state.term {
            return inconsistent("an entry's term exceeds the durable term");
        }
        log.commit = hard_state.commit.max(snapshot_index);
        let seed = config.seed;
        let mut node = Node {
            rng: Rng::new(seed),
            term: hard_state.term,
            vote: hard_state.vote,
            leader_id: NO_NODE,
            role: Role::Follower,
            log,
            membership: membership.clone(),
            snapshot: initial.snapshot,
            snapshot_to_install: None,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: config.election_timeout_ticks,
            transfer: None,
            ticks: 0,
            // A node that restarts may have acknowledged a leader's heartbeat just before it
            // went down; that leader's lease counts on this node not voting for anyone else for
            // an election timeout, a promise kept in memory only. It is kept again after the
            // restart. A brand-new node acknowledged nothing.
            lease_honoured_until_tick: if !fresh && config.read_mode == ReadMode::LeaseBased {
                u64::from(config.election_timeout_ticks)
            } else {
                0
            },
            lease_revoked: false,
            base_membership: membership,
            voter_before_pending_change: false,
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            broadcast_pending: false,
            reads_waiting_for_commit: Vec::new(),
            reads_pending: VecDeque::new(),
            read_sequence: 0,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            last_hard_state: initial.hard_state,
            last_soft_state: SoftState {
                leader_id: NO_NODE,
                role: Role::Follower,
            },
            ready_number: 0,
            in_flight: None,
            metrics: Metrics::default(),
            config,
        };
        node.reset_randomized_election_timeout();
        node.recompute_membership();
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The group this node belongs to.
    pub fn group_id(&self) -> GroupId {
        self.config.group_id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The vote cast in the current term, or [`NO_NODE`].
    pub fn vote(&self) -> NodeId {
        self.vote
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node knows of, or [`NO_NODE`].
    pub fn leader_id(&self) -> NodeId {
        self.leader_id
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> u64 {
        self.log.commit
    }

    /// The highest index applied (handed out and confirmed by `advance`).
    pub fn applied_index(&self) -> u64 {
        self.log.applied
    }

    /// The index of the last entry in the log.
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// The term of the entry at `index`, if it is in the log (or is the snapshot's last).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }

    /// The entry at `index`, if it is still in memory.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The first index still in the log (after the last compaction).
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    /// The index up to which this node's log is durable (the "stable" index): recovered at
    /// start, or handed out in a Ready that [`Node::advance`] confirmed. It lags
    /// [`Node::last_index`] while entries wait to be persisted. When a snapshot from the leader
    /// replaces the log, it stays at most at the previous commit index until the Ready carrying
    /// the snapshot is advanced, then is the snapshot's index.
    pub fn persisted_index(&self) -> u64 {
        self.log.stable_index()
    }

    /// The index of the membership change that is in the log but not yet committed, if any.
    /// While there is one, [`Node::propose_conf_change`] refuses another
    /// ([`ProposeError::ConfChangeInProgress`]). The change is already in effect
    /// ([`Node::membership`] includes it); a truncation of the log may still revert it.
    pub fn pending_conf_change_index(&self) -> Option<u64> {
        (self.pending_conf_index > self.log.commit).then_some(self.pending_conf_index)
    }

    /// The current membership: the newest in the log, committed or not (Raft thesis, 4.1).
    pub fn membership(&self) -> &ConfState {
        &self.membership
    }

    /// The newest snapshot, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The leader's view of `peer`; `None` unless leading and `peer` is a member.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }

    /// The target of a leadership transfer in progress.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|(target, _)| target)
    }

    /// Counters of what this node has seen.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The number of elements the node's internal buffers can hold without reallocating;
    /// shows that buffers shrink back after a burst.
    pub fn buffer_capacity(&self) -> usize {
        let inflights: usize = self
            .progress
            .values()
            .map(|progress| progress.inflights.capacity())
            .sum();
        self.log.capacity()
            + inflights
            + self.reads_pending.capacity()
            + self.messages.capacity()
            + self.persisted_messages.capacity()
            + self.read_states.capacity()
    }

    /// The number of entries held in memory.
    pub fn entries_in_memory(&self) -> usize {
        self.log.entry_count()
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.leader_id,
            role: self.role,
        }
    }

    fn quorum_size(&self) -> usize {
        self.membership.quorum()
    }

    fn is_promotable(&self) -> bool {
        self.membership.is_voter(self.config.id)
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.commit) == Some(self.term)
    }
}

// ---- outputs ------------------------------------------------------------------------------

impl Node {
    /// Whether [`Node::ready`] has anything to hand out. Cheap; allocates nothing.
    pub fn has_ready(&self) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        self.broadcast_pending
            || self.soft_state() != self.last_soft_state
            || self.hard_state() != self.last_hard_state
            || self.snapshot_to_install.is_some()
            || self.log.last_index() > self.log.stable_index()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || self.log.has_next_committed()
            || !self.read_states.is_empty()
    }

    /// Hands out the work to do. See [`Ready`] for the order in which to handle it.
    ///
    /// # Panics
    /// If the previous Ready has not been passed to [`Node::advance`] yet.
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.in_flight.is_none(),
            "Node::ready called before Node::advance"
        );
        self.flush_broadcast();
        self.ready_number += 1;
        let hard_state = self.hard_state();
        let soft_state = self.soft_state();
        let entries = self.log.unstable_entries();
        let snapshot = self.snapshot_to_install.take();
        let persisted_to = entries
            .last()
            .map(|entry| (entry.index, entry.term))
            .or_else(|| snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)));
        let committed_entries = self.log.next_committed(self.config.uncommitted_bytes_max);
        let applied_to = committed_entries
            .last()
            .map_or(self.log.applied, |entry| entry.index);
        if self.role == Role::Leader {
            let applied_bytes: u64 = committed_entries.iter().map(Entry::size_bytes).sum();
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(applied_bytes);
        }
        let mut messages = std::mem::take(&mut self.messages);
        let mut persisted_messages = std::mem::take(&mut self.persisted_messages);
        let term_or_vote_changed = (hard_state.term, hard_state.vote)
            != (self.last_hard_state.term, self.last_hard_state.vote);
        if term_or_vote_changed && !messages.is_empty() {
            // Every message carries the sender's term: none may leave before that term (and
            // the vote cast in it) is durable. Otherwise a leader elected at once (a single
            // voter) could crash, come back in the older term, win the same term again, and
            // send different entries under the same index and term.
            messages.append(&mut persisted_messages);
            persisted_messages = messages;
            messages = Vec::new();
        }
        let ready = Ready {
            number: self.ready_number,
            soft_state: (soft_state != self.last_soft_state).then_some(soft_state),
            hard_state: (hard_state != self.last_hard_state).then_some(hard_state),
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
        };
        self.last_hard_state = hard_state;
        self.last_soft_state = soft_state;
        self.in_flight = Some(InFlight {
            number: self.ready_number,
            persisted_to,
            applied_to,
        });
        ready
    }

    /// Confirms that the Ready numbered `number` was handled: its entries and hard state are
    /// durable, its messages sent and its committed entries applied.
    ///
    /// # Panics
    /// If `number` is not the Ready handed out last.
    pub fn advance(&mut self, number: u64) {
        let in_flight = self
            .in_flight
            .take()
            .expect("Node::advance without a Ready");
        assert_eq!(
            in_flight.number, number,
            "advance of a Ready not handed out last"
        );
        if let Some((index, term)) = in_flight.persisted_to {
            self.log.stable_to(index, term);
        }
        self.log.applied_to(in_flight.applied_to);
        if self.role == Role::Leader {
            let stable_index = self.log.stable_index();
            if let Some(own) = self.progress.get_mut(&self.config.id) {
                own.acknowledge(stable_index);
            }
            if self.maybe_commit() {
                self.broadcast_pending = true;
            }
            self.release_confirmed_reads();
        }
    }

    fn flush_broadcast(&mut self) {
        if std::mem::take(&mut self.broadcast_pending) && self.role == Role::Leader {
            self.broadcast_append();
        }
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        debug_assert_ne!(to, self.config.id);
        let message = Message {
            group_id: self.config.group_id,
            from: self.config.id,
            to,
            term: self.term,
            body,
        };
        if message.body.needs_persistence() {
            self.persisted_messages.push(message);
        } else {
            self.messages.push(message);
        }
    }
}

mod messages;
mod requests;
mod roles;
mod time;

#[cfg(test)]
mod tests {
    use super::{InitialState, Node};
    use crate::config::Config;

    /// Rule: the buffer capacity a node reports counts every buffer it holds, each once: its
    /// log, the windows of appends in flight, the pending reads, both message queues and the
    /// read states.
    #[test]
    fn buffer_capacity_is_the_sum_of_every_buffers_capacity() {
        let mut node = Node::new(Config::new(1, 1), InitialState::bootstrap(&[1, 2, 3]))
            .expect("a valid node");
        node.reads_pending.reserve_exact(3);
        node.messages.reserve_exact(5);
        node.persisted_messages.reserve_exact(7);
        node.read_states.reserve_exact(11);
        let inflights: usize = node
            .progress
            .values()
            .map(|progress| progress.inflights.capacity())
            .sum();
        let queues = [
            node.reads_pending.capacity(),
            node.messages.capacity(),
            node.persisted_messages.capacity(),
            node.read_states.capacity(),
        ];
        assert!(queues.iter().all(|&capacity| capacity > 1), "{queues:?}");
        let total = node.log.capacity() + inflights + queues.iter().sum::<usize>();
        assert_eq!(node.buffer_capacity(), total);
    }
}
