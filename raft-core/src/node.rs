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
    /// Committed entries to apply, in order.
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
    /// The last entry handed out for persistence.
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

    /// The current membership (as of the applied index).
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
        let persisted_to = entries.last().map(|entry| (entry.index, entry.term));
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
            snapshot: self.snapshot_to_install.take(),
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

// ---- inputs: time -------------------------------------------------------------------------

impl Node {
    /// Advances logical time by one tick. Allocates nothing unless a timeout fires.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed_ticks = self.election_elapsed_ticks.saturating_add(1);
        // A node that may not campaign lets its timer run on: past the election timeout it
        // stops honouring the leader it last heard from, so leader stickiness never keeps it
        // from voting for a candidate that needs it.
        let timed_out = self.election_elapsed_ticks >= self.randomized_election_timeout_ticks;
        if timed_out && self.may_campaign() {
            self.start_election(false);
        }
    }

    /// Whether this node may start an election now: it is a voter of the newest membership
    /// in its log, or that membership is not committed yet and it was a voter before it; and
    /// its term can still grow. Votes are always counted under the newest membership.
    ///
    /// The second case keeps a group alive when a leader that removed itself crashes before
    /// the removal committed: its log holds the removal, so it refuses to vote for the others
    /// (their logs are behind), and they still need its vote under the older membership. It
    /// can win under the newer one, commit the removal, and hand over.
    fn may_campaign(&self) -> bool {
        let voter_until_committed =
            self.pending_conf_index > self.log.commit && self.voter_before_pending_change;
        (self.is_promotable() || voter_until_committed) && self.term < INDEX_AND_TERM_MAX
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                self.metrics.check_quorum_step_downs += 1;
                self.become_follower(self.term, NO_NODE);
                return;
            }
        }
        self.tick_transfer();
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            for progress in self.progress.values_mut() {
                progress.check_stalled();
            }
            self.broadcast_heartbeat();
        }
    }

    fn tick_transfer(&mut self) {
        let Some((_, elapsed_ticks)) = self.transfer.as_mut() else {
            return;
        };
        *elapsed_ticks += 1;
        if *elapsed_ticks >= self.config.election_timeout_ticks {
            self.transfer = None;
            self.metrics.transfers_aborted += 1;
        }
    }

    /// Whether a quorum of voters was heard from since the last check; resets the marks.
    fn quorum_recently_active(&mut self) -> bool {
        let own_id = self.config.id;
        let mut active = 0;
        for (id, progress) in self.progress.iter_mut() {
            let is_active = *id == own_id || progress.recent_active;
            if is_active && self.membership.is_voter(*id) {
                active += 1;
            }
            progress.recent_active = false;
        }
        active >= self.quorum_size()
    }

    fn reset_randomized_election_timeout(&mut self) {
        let base = self.config.election_timeout_ticks;
        self.randomized_election_timeout_ticks = base + self.rng.below(u64::from(base)) as u32;
    }
}

// ---- inputs: client requests --------------------------------------------------------------

impl Node {
    /// Proposes application data. On success returns the index the entry will have if it
    /// commits; the application learns the outcome when that index is applied (with this
    /// data, or with another entry if leadership changed and the proposal was lost).
    pub fn propose(&mut self, data: Bytes) -> Result<u64, ProposeError> {
        self.propose_entry(EntryKind::Normal, data)
    }

    /// Proposes a membership change. Only one may be in flight: it must be applied before the
    /// next is accepted, and the leader must have committed an entry of its term first (the
    /// fix for the single-server change pitfall described by Ongaro).
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<u64, ProposeError> {
        let result = self.check_conf_change(change);
        if let Err(error) = result {
            self.metrics.proposals_refused += 1;
            return Err(error);
        }
        let index = self.propose_entry(EntryKind::ConfChange, change.encode())?;
        // A change takes effect as soon as it is in the log (Raft thesis, 4.1).
        self.voter_before_pending_change = self.is_promotable();
        crate::membership::apply(&mut self.membership, change);
        self.pending_conf_index = index;
        self.on_membership_changed();
        Ok(index)
    }

    fn check_conf_change(&self, change: ConfChange) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if !self.committed_in_current_term() {
            return Err(ProposeError::NotCommittedInTerm);
        }
        if self.pending_conf_index > self.log.commit {
            return Err(ProposeError::ConfChangeInProgress);
        }
        let invalid = |reason| Err(ProposeError::InvalidConfChange { reason });
        let membership = &self.membership;
        match change {
            ConfChange::AddVoter(id) if membership.is_voter(id) => invalid("already a voter"),
            ConfChange::AddLearner(id) if membership.is_voter(id) => {
                invalid("demoting a voter is not supported")
            }
            ConfChange::AddLearner(id) if membership.is_learner(id) => invalid("already a learner"),
            ConfChange::RemoveNode(id) if !membership.contains(id) => invalid("not a member"),
            ConfChange::RemoveNode(id) if membership.voters == [id] => {
                invalid("cannot remove the last voter")
            }
            _ if change.node_id() == NO_NODE => invalid("node id 0"),
            _ => Ok(()),
        }
    }

    fn propose_entry(&mut self, kind: EntryKind, data: Bytes) -> Result<u64, ProposeError> {
        let refused = self.check_proposal(data.len() as u64);
        if let Err(error) = refused {
            self.metrics.proposals_refused += 1;
            return Err(error);
        }
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            kind,
            data,
        };
        let index = entry.index;
        self.uncommitted_bytes += entry.size_bytes();
        self.log.append(entry);
        self.broadcast_pending = true;
        Ok(index)
    }

    fn check_proposal(&self, data_bytes: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if !self.is_promotable() {
            // A leader that removed itself only waits to hand leadership over.
            return Err(ProposeError::NotLeader {
                leader_hint: NO_NODE,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if data_bytes > self.config.entry_size_bytes_max {
            return Err(ProposeError::EntryTooLarge {
                entry_bytes: data_bytes,
                limit_bytes: self.config.entry_size_bytes_max,
            });
        }
        let entry_bytes = data_bytes + Entry::HEADER_SIZE_BYTES;
        // The first proposal after a burst is always accepted so that a leader can make
        // progress even when one entry is close to the limit.
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + entry_bytes > self.config.uncommitted_bytes_max
        {
            return Err(ProposeError::UncommittedLimit {
                uncommitted_bytes: self.uncommitted_bytes,
                entry_bytes,
                limit_bytes: self.config.uncommitted_bytes_max,
            });
        }
        Ok(())
    }

    /// Requests a linearizable read identified by `request_id`. When it is safe, a
    /// [`ReadState`] with that id comes out in a Ready: serve the read once the applied index
    /// reaches its index. A follower forwards the request to its leader. A request in flight
    /// when leadership changes is dropped: the caller retries after a timeout.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ReadError> {
        match self.role {
            Role::Leader => {
                self.leader_read(request_id, self.config.id);
                Ok(())
            }
            _ if self.leader_id == NO_NODE => Err(ReadError::NoLeader),
            _ => {
                self.send(self.leader_id, MessageBody::ReadIndex { request_id });
                Ok(())
            }
        }
    }

    fn leader_read(&mut self, request_id: u64, from: NodeId) {
        if !self.committed_in_current_term() {
            // The commit index of a new leader may lag behind what the previous leader
            // committed; reads wait until the leader's no-op commits (Raft paper, section 8).
            self.reads_waiting_for_commit.push((request_id, from));
            return;
        }
        let index = self.log.commit;
        let lease_holds = self.config.read_mode == ReadMode::LeaseBased && self.lease_holds();
        if lease_holds || self.membership.voters == [self.config.id] {
            self.release_read(request_id, from, index);
            return;
        }
        self.read_sequence += 1;
        self.reads_pending.push_back(PendingRead {
            request_id,
            from,
            index,
            sequence: self.read_sequence,
        });
        self.broadcast_heartbeat();
    }

    /// Whether no other leader can exist now: a quorum acknowledged a heartbeat sent less than
    /// `election_timeout_ticks - 2` ticks ago, and no leadership transfer was started in this
    /// term (its target campaigns regardless of stickiness). See [`ReadMode::LeaseBased`].
    fn lease_holds(&self) -> bool {
        if self.lease_revoked || self.transfer.is_some() {
            return false;
        }
        let own_id = self.config.id;
        let ticks = self.ticks;
        let lease_start = self.quorum_value(|id, progress| {
            if id == own_id {
                ticks + 1
            } else {
                progress.lease_tick_acked
            }
        });
        let lease_ticks = u64::from(self.config.election_timeout_ticks.saturating_sub(2));
        lease_start > 0 && ticks - (lease_start - 1) < lease_ticks
    }

    fn release_read(&mut self, request_id: u64, from: NodeId, index: u64) {
        self.metrics.reads_released += 1;
        if from == self.config.id {
            self.read_states.push(ReadState { request_id, index });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { request_id, index });
        }
    }

    /// Releases every pending read whose sequence a quorum has acknowledged.
    fn release_confirmed_reads(&mut self) {
        if self.reads_pending.is_empty() {
            return;
        }
        let own_id = self.config.id;
        let read_sequence = self.read_sequence;
        let confirmed = self.quorum_value(|id, progress| {
            if id == own_id {
                read_sequence
            } else {
                progress.read_sequence_acked
            }
        });
        while let Some(read) = self.reads_pending.front().copied() {
            if read.sequence > confirmed {
                break;
            }
            self.reads_pending.pop_front();
            self.release_read(read.request_id, read.from, read.index);
        }
        shrink_if_sparse(&mut self.reads_pending);
    }

    /// Starts transferring leadership to `target`: at once if its log is up to date, after it
    /// catches up otherwise. Proposals are refused meanwhile; the transfer is abandoned after
    /// one election timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if !self.membership.is_voter(target) {
            return Err(TransferError::NotVoter(target));
        }
        if target == self.config.id {
            return Ok(());
        }
        self.transfer = Some((target, 0));
        let up_to_date = self.progress[&target].match_index == self.log.last_index();
        if up_to_date {
            self.send_timeout_now(target);
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    /// Tells the leader that `peer` could not be reached: replication to it falls back to
    /// probing, so that lost appends are detected and resent.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if let Some(progress) = self.progress.get_mut(&peer)
            && progress.state == ProgressState::Replicate
        {
            progress.become_probe();
        }
    }

    /// Tells the leader how sending a snapshot to `peer` ended. On failure the follower goes
    /// back to probing, which sends the snapshot again if it is still needed.
    pub fn report_snapshot(&mut self, peer: NodeId, delivered: bool) {
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        if !matches!(progress.state, ProgressState::Snapshot { .. }) {
            return;
        }
        if delivered {
            progress.become_probe();
            // Wait for the follower's answer (or the next heartbeat's) before appending.
            progress.probe_sent = true;
        } else {
            progress.state = ProgressState::Probe;
            progress.become_probe();
        }
    }

    /// Records that the application took a snapshot (`data`) of its state at the applied
    /// index `index`, and drops the log entries it covers. Followers that need those entries
    /// get the snapshot instead. The application persists the snapshot itself.
    pub fn compact(&mut self, index: u64, data: Bytes) -> Result<(), CompactError> {
        if index != self.log.applied {
            return Err(CompactError::NotApplied {
                requested: index,
                applied: self.log.applied,
            });
        }
        if index <= self.log.snapshot_index() {
            return Err(CompactError::AlreadyCompacted(self.log.snapshot_index()));
        }
        let term = self
            .log
            .term(index)
            .expect("applied entries are in the log");
        let conf_state = self.membership_at(index);
        self.log.compact(index);
        self.base_membership = conf_state.clone();
        self.snapshot = Some(Snapshot {
            meta: crate::message::SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        });
        Ok(())
    }
}

// ---- inputs: messages ---------------------------------------------------------------------

impl Node {
    /// Handles a message from another replica. Hostile or stale input never panics: it is
    /// dropped (with an error saying why) or answered, and counted in [`Node::metrics`].
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        self.metrics.messages_received += 1;
        if let Err(error) = self.validate(&message) {
            match error {
                StepError::WrongGroup(_) => self.metrics.messages_wrong_group += 1,
                StepError::Misaddressed { .. } => self.metrics.messages_misaddressed += 1,
                StepError::Malformed { .. } => self.metrics.messages_malformed += 1,
                StepError::NonMember(_) => self.metrics.messages_from_non_members += 1,
            }
            return Err(error);
        }
        if message.term > self.term && !self.step_higher_term(&message) {
            return Ok(());
        }
        if message.term < self.term {
            self.step_lower_term(&message);
            return Ok(());
        }
        if let MessageBody::RequestVote { .. } = message.body {
            self.handle_vote_request(message);
            return Ok(());
        }
        match self.role {
            Role::Leader => self.step_leader(message),
            Role::PreCandidate | Role::Candidate => {
                self.step_candidate(message);
                Ok(())
            }
            Role::Follower => {
                self.step_follower(message);
                Ok(())
            }
        }
    }

    /// Rejects messages that no correct peer sends.
    fn validate(&self, message: &Message) -> Result<(), StepError> {
        if message.group_id != self.config.group_id {
            return Err(StepError::WrongGroup(message.group_id));
        }
        if message.to != self.config.id || message.from == self.config.id || message.from == NO_NODE
        {
            return Err(StepError::Misaddressed {
                from: message.from,
                to: message.to,
            });
        }
        let kind = message.body.name();
        let malformed = |reason| Err(StepError::Malformed { kind, reason });
        if message.term > INDEX_AND_TERM_MAX || message.body.largest_position() > INDEX_AND_TERM_MAX
        {
            return malformed("index or term out of range");
        }
        match &message.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                ..
            } => {
                let mut previous_term = *prev_term;
                for (expected_index, entry) in (*prev_index + 1..).zip(entries) {
                    if entry.index != expected_index {
                        return malformed("entries not consecutive");
                    }
                    if entry.term < previous_term || entry.term > message.term {
                        return malformed("entry terms out of order");
                    }
                    let undecodable = entry.kind == EntryKind::ConfChange
                        && ConfChange::decode(&entry.data).is_none();
                    if undecodable {
                        return malformed("undecodable membership change");
                    }
                    previous_term = entry.term;
                }
                if *prev_term > message.term {
                    return malformed("previous term beyond the message term");
                }
            }
            MessageBody::InstallSnapshot { snapshot } => {
                let meta = &snapshot.meta;
                if meta.index == 0 || meta.term == 0 || meta.term > message.term {
                    return malformed("snapshot position out of range");
                }
                if !meta.conf_state.is_valid() {
                    return malformed("snapshot membership invalid");
                }
            }
            MessageBody::RequestVote { last_term, .. } if *last_term > message.term => {
                return malformed("last term beyond the campaign term");
            }
            _ => {}
        }
        Ok(())
    }

    /// The gate for messages of a higher term. Returns whether to go on handling the message.
    fn step_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::RequestVote {
                pre_vote, transfer, ..
            } => {
                let leader_alive = self.config.check_quorum
                    && self.leader_id != NO_NODE
                    && self.election_elapsed_ticks < self.config.election_timeout_ticks;
                if leader_alive && !transfer {
                    // Leader stickiness: a live leader is not deposed by a node that merely
                    // lost touch with it.
                    self.metrics.votes_ignored_by_stickiness += 1;
                    return false;
                }
                if !pre_vote {
                    self.become_follower(message.term, NO_NODE);
                }
            }
            // A granted pre-vote carries the term the candidate is about to campaign in.
            MessageBody::VoteResponse {
                pre_vote: true,
                granted: true,
            } => {}
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(message.term, message.from);
            }
            _ => self.become_follower(message.term, NO_NODE),
        }
        true
    }

    /// Messages of a lower term: tell a stale leader or pre-candidate about the newer term.
    fn step_lower_term(&mut self, message: &Message) {
        self.metrics.messages_stale_term += 1;
        match message.body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                // Without this answer a leader cut off by a partition could keep followers
                // that only accept pre-votes from ever electing anyone else. It acknowledges
                // nothing (index 0): if its receiver has meanwhile become leader in this newer
                // term, the answer must not pass for a comparison of the two logs.
                self.send(
                    message.from,
                    MessageBody::AppendResponse {
                        index: 0,
                        reject: false,
                        reject_hint: 0,
                        hint_term: 0,
                    },
                );
            }
            MessageBody::RequestVote { pre_vote: true, .. } => {
                self.send(
                    message.from,
                    MessageBody::VoteResponse {
                        pre_vote: true,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    fn handle_vote_request(&mut self, message: Message) {
        let MessageBody::RequestVote {
            pre_vote,
            last_index,
            last_term,
            ..
        } = message.body
        else {
            unreachable!("only vote requests are passed here");
        };
        let can_vote = self.vote == message.from
            || (self.vote == NO_NODE && self.leader_id == NO_NODE)
            || (pre_vote && message.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if granted && !pre_vote {
            self.vote = message.from;
            self.election_elapsed_ticks = 0;
        }
        let response = Message {
            group_id: self.config.group_id,
            from: self.config.id,
            to: message.from,
            // A granted pre-vote answers in the candidate's future term, so that the
            // candidate counts it; a refusal tells our own term.
            term: if granted && pre_vote {
                message.term
            } else {
                self.term
            },
            body: MessageBody::VoteResponse { pre_vote, granted },
        };
        self.persisted_messages.push(response);
    }

    fn step_follower(&mut self, message: Message) {
        match message.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.heard_from_leader(message.from);
                self.handle_append(message.from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat {
                commit,
                read_sequence,
                sent_at_tick,
            } => {
                self.heard_from_leader(message.from);
                // The leader never sends a commit beyond what it knows this follower holds.
                let commit = commit.min(self.log.last_index());
                self.log.commit_to(commit);
                self.send(
                    message.from,
                    MessageBody::HeartbeatResponse {
                        read_sequence,
                        sent_at_tick,
                    },
                );
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.heard_from_leader(message.from);
                self.handle_snapshot(message.from, snapshot);
            }
            MessageBody::TimeoutNow => {
                if self.is_promotable() && self.may_campaign() {
                    self.start_election(true);
                }
            }
            MessageBody::ReadIndexResponse { request_id, index } => {
                self.read_states.push(ReadState { request_id, index });
            }
            MessageBody::ReadIndex { .. } => {
                // A forwarded read that raced with a leadership change; the sender retries.
            }
            MessageBody::VoteResponse { .. }
            | MessageBody::AppendResponse { .. }
            | MessageBody::HeartbeatResponse { .. } => {}
            MessageBody::RequestVote { .. } => unreachable!("handled before role dispatch"),
        }
    }

    fn heard_from_leader(&mut self, leader_id: NodeId) {
        self.election_elapsed_ticks = 0;
        self.leader_id = leader_id;
    }

    fn handle_append(
        &mut self,
        leader_id: NodeId,
        mut prev_index: u64,
        mut prev_term: u64,
        mut entries: Vec<Entry>,
        commit: u64,
    ) {
        let committed = self.log.commit;
        if prev_index < committed {
            // Entries up to the commit index are known to match; skip them, and drop the
            // message if it contradicts a committed entry (no correct leader sends that).
            let skip = entries
                .iter()
                .take_while(|entry| entry.index <= committed)
                .count();
            let contradicts = entries[..skip].iter().any(|entry| {
                entry.index > self.log.snapshot_index()
                    && !self.log.matches(entry.index, entry.term)
            });
            if contradicts {
                self.metrics.messages_malformed += 1;
                return;
            }
            entries.drain(..skip);
            prev_index = committed;
            prev_term = self
                .log
                .term(committed)
                .expect("the commit index is in the log");
        }
        if !self.log.matches(prev_index, prev_term) {
            let hint_index = self
                .log
                .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
            let hint_term = self.log.term(hint_index).unwrap_or(0);
            self.send(
                leader_id,
                MessageBody::AppendResponse {
                    index: prev_index,
                    reject: true,
                    reject_hint: hint_index,
                    hint_term,
                },
            );
            return;
        }
        let last_new_index = prev_index + entries.len() as u64;
        let carries_membership = entries
            .iter()
            .any(|entry| entry.kind == EntryKind::ConfChange);
        let truncated_from = self.log.merge(entries);
        let lost_membership = truncated_from.is_some_and(|index| index <= self.pending_conf_index);
        if carries_membership || lost_membership {
            self.recompute_membership();
        }
        self.log.commit_to(commit.min(last_new_index));
        self.send(
            leader_id,
            MessageBody::AppendResponse {
                index: last_new_index,
                reject: false,
                reject_hint: 0,
                hint_term: 0,
            },
        );
    }

    fn handle_snapshot(&mut self, leader_id: NodeId, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        let answered_index = if index <= self.log.commit {
            self.metrics.snapshots_stale += 1;
            self.log.commit
        } else if self.log.matches(index, term) {
            // The log already holds the snapshot's last entry: only the commit index moves.
            self.log.commit_to(index);
            index
        } else {
            self.metrics.snapshots_installed += 1;
            self.log.restore(index, term);
            self.base_membership = snapshot.meta.conf_state.clone();
            self.recompute_membership();
            self.snapshot = Some(snapshot.clone());
            self.snapshot_to_install = Some(snapshot);
            index
        };
        self.send(
            leader_id,
            MessageBody::AppendResponse {
                index: answered_index,
                reject: false,
                reject_hint: 0,
                hint_term: 0,
            },
        );
    }

    fn step_candidate(&mut self, message: Message) {
        match message.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // A leader exists in this term: follow it.
                self.become_follower(message.term, message.from);
                self.step_follower(message);
            }
            MessageBody::VoteResponse { pre_vote, granted } => {
                let expected_pre_vote = self.role == Role::PreCandidate;
                if pre_vote == expected_pre_vote && self.membership.is_voter(message.from) {
                    self.votes.entry(message.from).or_insert(granted);
                    self.tally_votes();
                }
            }
            _ => {}
        }
    }

    fn tally_votes(&mut self) {
        // Only voters count: a candidate that is not a voter of its newest membership (see
        // `may_campaign`) does not count itself.
        let membership = &self.membership;
        let (granted, rejected) = self
            .votes
            .iter()
            .filter(|(id, _)| membership.is_voter(**id))
            .fold((0, 0), |(granted, rejected), (_, vote)| {
                if *vote {
                    (granted + 1, rejected)
                } else {
                    (granted, rejected + 1)
                }
            });
        if granted >= self.quorum_size() {
            match self.role {
                Role::PreCandidate => self.start_election_for_real(false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if rejected >= self.quorum_size() {
            self.become_follower(self.term, NO_NODE);
        }
    }

    fn step_leader(&mut self, message: Message) -> Result<(), StepError> {
        let from = message.from;
        if !self.progress.contains_key(&from) {
            if let MessageBody::ReadIndex { .. }
            | MessageBody::AppendResponse { .. }
            | MessageBody::HeartbeatResponse { .. } = message.body
            {
                self.metrics.messages_from_non_members += 1;
                return Err(StepError::NonMember(from));
            }
            return Ok(());
        }
        match message.body {
            MessageBody::AppendResponse {
                index,
                reject,
                reject_hint,
                hint_term,
            } => {
                if index > self.log.last_index() {
                    self.metrics.messages_malformed += 1;
                    return Err(StepError::Malformed {
                        kind: "append_response",
                        reason: "index beyond the leader's log",
                    });
                }
                self.progress_mut(from).recent_active = true;
                if reject {
                    self.handle_append_rejection(from, index, reject_hint, hint_term);
                } else {
                    self.handle_append_success(from, index);
                }
            }
            MessageBody::HeartbeatResponse {
                read_sequence,
                sent_at_tick,
            } => {
                let last_index = self.log.last_index();
                let (ticks, read_sequence_max) = (self.ticks, self.read_sequence);
                let progress = self.progress_mut(from);
                progress.recent_active = true;
                progress.probe_sent = false;
                // Echoes come from the network: never beyond what this leader sent.
                let read_sequence = read_sequence.min(read_sequence_max);
                progress.read_sequence_acked = progress.read_sequence_acked.max(read_sequence);
                let lease_tick = sent_at_tick.min(ticks) + 1;
                progress.lease_tick_acked = progress.lease_tick_acked.max(lease_tick);
                let behind = progress.match_index < last_index;
                if behind {
                    self.send_append(from, false);
                }
                self.release_confirmed_reads();
            }
            MessageBody::ReadIndex { request_id } => self.leader_read(request_id, from),
            _ => {}
        }
        Ok(())
    }

    fn progress_mut(&mut self, id: NodeId) -> &mut Progress {
        self.progress
            .get_mut(&id)
            .expect("caller checked membership")
    }

    fn handle_append_rejection(&mut self, from: NodeId, index: u64, hint: u64, hint_term: u64) {
        // The hint comes from the network: it can never point past the rejected entry or the
        // leader's log.
        let hint = hint.min(index).min(self.log.last_index());
        // Skip back over the whole term that conflicts instead of one entry per round trip.
        let probe_from = if hint_term > 0 {
            self.log.find_conflict_by_term(hint, hint_term)
        } else {
            hint
        };
        if self.progress_mut(from).reject(index, probe_from) {
            self.send_append(from, true);
        }
    }

    fn handle_append_success(&mut self, from: NodeId, index: u64) {
        let progress = self.progress_mut(from);
        if !progress.acknowledge(index) {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot { pending_index } if progress.match_index >= pending_index => {
                progress.become_probe();
                progress.become_replicate();
            }
            _ => {}
        }
        if self.maybe_commit() {
            self.broadcast_pending = true;
        }
        while self.send_append(from, false) {}
        if self.transfer_target() == Some(from) && index == self.log.last_index() {
            self.send_timeout_now(from);
        }
    }

    /// Advances the commit index to what a quorum holds durably, if that entry is of this
    /// leader's term (Raft paper, Figure 8). Returns whether it moved.
    fn maybe_commit(&mut self) -> bool {
        let quorum_index = self.quorum_value(|_, progress| progress.match_index);
        if quorum_index <= self.log.commit || self.log.term(quorum_index) != Some(self.term) {
            return false;
        }
        let first_commit_in_term = !self.committed_in_current_term();
        self.log.commit_to(quorum_index);
        if first_commit_in_term {
            for (request_id, from) in std::mem::take(&mut self.reads_waiting_for_commit) {
                self.leader_read(request_id, from);
            }
        }
        self.step_down_if_removed();
        true
    }

    /// The largest value that a quorum of voters has reached.
    fn quorum_value(&self, value: impl Fn(NodeId, &Progress) -> u64) -> u64 {
        const VOTERS_ON_STACK: usize = 16;
        let mut stack = [0u64; VOTERS_ON_STACK];
        let mut heap = Vec::new();
        let voters = &self.membership.voters;
        let values: &mut [u64] = if voters.len() <= VOTERS_ON_STACK {
            &mut stack[..voters.len()]
        } else {
            heap.resize(voters.len(), 0);
            &mut heap
        };
        for (slot, id) in values.iter_mut().zip(voters) {
            *slot = self
                .progress
                .get(id)
                .map_or(0, |progress| value(*id, progress));
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum_size() - 1).copied().unwrap_or(0)
    }

    /// Sends the next append (or the snapshot) to `to` if its flow control allows. With
    /// `send_if_empty`, an append without entries is sent too (to probe or to carry the
    /// commit index). Returns whether an append with entries went out.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let last_index = self.log.last_index();
        let commit = self.log.commit;
        let size_bytes_max = self.config.append_size_bytes_max;
        let Some(progress) = self.progress.get(&to) else {
            return false;
        };
        if progress.is_paused() {
            return false;
        }
        let prev_index = progress.next_index - 1;
        if prev_index > last_index {
            // Only a forged answer can push next_index past the log; start probing again.
            let progress = self.progress_mut(to);
            progress.become_probe();
            progress.next_index = progress.next_index.min(last_index + 1);
            return false;
        }
        let Some(prev_term) = self.log.term(prev_index) else {
            self.send_snapshot(to);
            return false;
        };
        let entries = if progress.next_index <= last_index {
            self.log
                .slice(progress.next_index, last_index, size_bytes_max)
        } else {
            Vec::new()
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let size_bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let entry_count = entries.len();
        let sent_last_index = prev_index + entry_count as u64;
        self.progress_mut(to)
            .sent_append(sent_last_index, size_bytes, entry_count);
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        entry_count > 0
    }

    fn send_snapshot(&mut self, to: NodeId) {
        // Entries are only compacted behind a snapshot, so one always exists here.
        let Some(snapshot) = self.snapshot.clone() else {
            debug_assert!(false, "compacted entries without a snapshot");
            return;
        };
        self.metrics.snapshots_sent += 1;
        self.progress_mut(to).become_snapshot(snapshot.meta.index);
        self.send(to, MessageBody::InstallSnapshot { snapshot });
    }

    fn broadcast_append(&mut self) {
        let own_id = self.config.id;
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|id| *id != own_id)
            .collect();
        for peer in peers {
            if self.send_append(peer, true) {
                while self.send_append(peer, false) {}
            }
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let own_id = self.config.id;
        let commit = self.log.commit;
        let read_sequence = self.read_sequence;
        let sent_at_tick = self.ticks;
        // Iterating by index keeps this free of allocations on idle leaders.
        let mut cursor = 0;
        while let Some((id, match_index)) = self
            .progress
            .iter()
            .filter(|(id, _)| **id != own_id)
            .nth(cursor)
            .map(|(id, progress)| (*id, progress.match_index))
        {
            cursor += 1;
            self.send(
                id,
                MessageBody::Heartbeat {
                    commit: commit.min(match_index),
                    read_sequence,
                    sent_at_tick,
                },
            );
        }
    }
}

// ---- role changes -------------------------------------------------------------------------

impl Node {
    fn become_follower(&mut self, term: u64, leader_id: NodeId) {
        if term != self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.role = Role::Follower;
        self.leader_id = leader_id;
        self.reset_role_state();
    }

    fn reset_role_state(&mut self) {
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.reset_randomized_election_timeout();
        self.progress.clear();
        self.votes.clear();
        self.transfer = None;
        self.lease_revoked = false;
        self.uncommitted_bytes = 0;
        self.broadcast_pending = false;
        self.reads_waiting_for_commit.clear();
        self.reads_pending.clear();
        shrink_if_sparse(&mut self.reads_pending);
    }

    /// Starts an election: a pre-vote round first if configured, unless this is a transfer.
    fn start_election(&mut self, transfer: bool) {
        debug_assert!(self.may_campaign());
        if self.config.pre_vote && !transfer {
            self.start_pre_vote();
        } else {
            self.start_election_for_real(transfer);
        }
    }

    fn start_pre_vote(&mut self) {
        self.role = Role::PreCandidate;
        self.leader_id = NO_NODE;
        self.reset_role_state();
        self.votes.insert(self.config.id, true);
        self.request_votes(true, false);
        self.tally_votes();
    }

    fn start_election_for_real(&mut self, transfer: bool) {
        self.metrics.elections_started += 1;
        self.term = self.term.saturating_add(1);
        self.vote = self.config.id;
        self.role = Role::Candidate;
        self.leader_id = NO_NODE;
        self.reset_role_state();
        self.votes.insert(self.config.id, true);
        self.request_votes(false, transfer);
        self.tally_votes();
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let own_id = self.config.id;
        let term = if pre_vote {
            self.term.saturating_add(1)
        } else {
            self.term
        };
        let last_index = self.log.last_index();
        let last_term = self.log.last_term();
        for index in 0..self.membership.voters.len() {
            let voter = self.membership.voters[index];
            if voter == own_id {
                continue;
            }
            self.persisted_messages.push(Message {
                group_id: self.config.group_id,
                from: own_id,
                to: voter,
                term,
                body: MessageBody::RequestVote {
                    pre_vote,
                    last_index,
                    last_term,
                    transfer,
                },
            });
        }
    }

    fn become_leader(&mut self) {
        self.metrics.leaderships_won += 1;
        self.role = Role::Leader;
        self.leader_id = self.config.id;
        self.reset_role_state();
        let last_index = self.log.last_index();
        for id in self.membership.members().collect::<Vec<_>>() {
            self.add_progress(id, last_index + 1);
        }
        let stable_index = self.log.stable_index();
        if let Some(own) = self.progress.get_mut(&self.config.id) {
            own.acknowledge(stable_index);
            own.become_replicate();
        }
        // The no-op lets the leader commit, and so learn the commit index, in its own term.
        let noop = Entry {
            index: last_index + 1,
            term: self.term,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        };
        self.log.append(noop);
        self.broadcast_pending = true;
    }

    fn add_progress(&mut self, id: NodeId, next_index: u64) {
        let progress = Progress::new(
            next_index,
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        self.progress.entry(id).or_insert(progress);
    }

    /// Recomputes the membership from the base and every change in the log (after a
    /// truncation, a snapshot, or appended changes).
    fn recompute_membership(&mut self) {
        let last_index = self.log.last_index();
        self.membership = self.membership_at(last_index);
        self.pending_conf_index = (self.log.first_index()..=last_index)
            .rev()
            .find(|index| self.is_conf_change_at(*index))
            .unwrap_or(0);
        self.voter_before_pending_change = match self.pending_conf_index {
            0 => false,
            index => self.membership_at(index - 1).is_voter(self.config.id),
        };
        self.on_membership_changed();
    }

    /// The membership as of `index`: the base plus the changes up to `index`.
    fn membership_at(&self, index: u64) -> ConfState {
        let mut membership = self.base_membership.clone();
        for index in self.log.first_index()..=index {
            let change = self
                .log
                .entry(index)
                .filter(|entry| entry.kind == EntryKind::ConfChange)
                .and_then(|entry| ConfChange::decode(&entry.data));
            if let Some(change) = change {
                crate::membership::apply(&mut membership, change);
            }
        }
        membership
    }

    fn is_conf_change_at(&self, index: u64) -> bool {
        self.log
            .entry(index)
            .is_some_and(|entry| entry.kind == EntryKind::ConfChange)
    }

    /// Brings a leader's bookkeeping in line with a new membership.
    fn on_membership_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let next_index = self.log.last_index() + 1;
        for id in self.membership.members().collect::<Vec<_>>() {
            self.add_progress(id, next_index);
        }
        let membership = &self.membership;
        self.progress.retain(|id, _| membership.contains(*id));
        if self
            .transfer_target()
            .is_some_and(|target| !self.membership.is_voter(target))
        {
            self.transfer = None;
        }
        self.maybe_commit();
        self.broadcast_pending = true;
        self.step_down_if_removed();
    }

    /// A leader that removed itself leads (without counting itself, refusing proposals) until
    /// the removal commits (Raft thesis, 4.2.2), then hands over: it tells the most up-to-date
    /// remaining voter to campaign at once, and steps down.
    fn step_down_if_removed(&mut self) {
        let removal_committed = self.log.commit >= self.pending_conf_index;
        if self.role != Role::Leader || self.is_promotable() || !removal_committed {
            return;
        }
        let own_id = self.config.id;
        let successor = self
            .membership
            .voters
            .iter()
            .copied()
            .filter(|id| *id != own_id)
            .max_by_key(|id| {
                let match_index = self.progress.get(id).map_or(0, |p| p.match_index);
                (match_index, u64::MAX - id)
            });
        // The others learn the commit index from these appends before the leader leaves.
        self.broadcast_append();
        if let Some(successor) = successor {
            self.send_timeout_now(successor);
        }
        self.become_follower(self.term, NO_NODE);
    }

    fn send_timeout_now(&mut self, target: NodeId) {
        self.lease_revoked = true;
        self.send(target, MessageBody::TimeoutNow);
    }
}
