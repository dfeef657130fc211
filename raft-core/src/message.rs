//! The values that cross the crate boundary: log entries, hard state, snapshots, membership
//! and the messages that replicas exchange.
//!
//! Everything here is plain data with `serde` derives, so that the transport can encode it and
//! the storage can persist it without knowing any Raft rule.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Identifies one replica (one Raft node) within a group. `0` means "nobody".
pub type NodeId = u64;
/// Identifies one Raft group on a server that hosts many.
pub type GroupId = u64;

/// The node id that means "no node": no vote cast, no leader known.
pub const NO_NODE: NodeId = 0;

/// The largest index or term a message may carry. No real log gets anywhere near it, and
/// refusing anything larger as malformed keeps all index and term arithmetic free of overflow.
pub const INDEX_AND_TERM_MAX: u64 = 1 << 62;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// Opaque application data (empty for the no-op a new leader appends).
    Normal,
    /// An encoded [`ConfChange`]; the node uses it from the moment the entry is in its log.
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// How to interpret `data`.
    pub kind: EntryKind,
    /// The payload; reference-counted so that replication does not copy it.
    pub data: Bytes,
}

impl Entry {
    /// The fixed cost counted for each entry on top of its payload in size limits.
    pub const HEADER_SIZE_BYTES: u64 = 24;

    /// The bytes this entry counts for in size limits.
    pub fn size_bytes(&self) -> u64 {
        Self::HEADER_SIZE_BYTES + self.data.len() as u64
    }
}

/// The state that must be durable before the messages that depend on it are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The node voted for in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    /// The highest index known to be committed.
    pub commit: u64,
}

/// The voters and learners of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    /// Members whose votes and acknowledgements count. Sorted, no duplicates.
    pub voters: Vec<NodeId>,
    /// Members that receive the log but never count toward a quorum. Sorted, no duplicates.
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A configuration of the given voters and no learners.
    pub fn with_voters(voters: &[NodeId]) -> ConfState {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        ConfState {
            voters,
            learners: Vec::new(),
        }
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The number of voters that make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether the lists are sorted, free of duplicates and disjoint, with at least one voter
    /// and no [`NO_NODE`].
    pub fn is_valid(&self) -> bool {
        let sorted = |list: &[NodeId]| list.windows(2).all(|pair| pair[0] < pair[1]);
        !self.voters.is_empty()
            && sorted(&self.voters)
            && sorted(&self.learners)
            && !self.voters.contains(&NO_NODE)
            && !self.learners.contains(&NO_NODE)
            && self.learners.iter().all(|learner| !self.is_voter(*learner))
    }
}

/// Describes the state a snapshot captures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// The membership as of `index`.
    pub conf_state: ConfState,
}

/// An application snapshot plus the log position and membership it corresponds to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Where the snapshot stands in the log.
    pub meta: SnapshotMeta,
    /// The application state, opaque to this crate.
    pub data: Bytes,
}

/// One membership change. Changes are made one server at a time and take effect as soon as
/// the entry that carries them is in the log (Raft thesis, 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// Add a voter, or promote a learner to voter.
    AddVoter(NodeId),
    /// Add a learner. Demoting a voter is refused.
    AddLearner(NodeId),
    /// Remove a voter or a learner.
    RemoveNode(NodeId),
}

impl ConfChange {
    /// The encoded size: one tag byte and a little-endian node id.
    pub const ENCODED_SIZE_BYTES: usize = 9;

    /// Encodes the change as entry data.
    ///
    /// ```text
    /// 0      1                      9
    /// +------+----------------------+
    /// | tag  | node id (u64, LE)    |   tag: 1 = AddVoter, 2 = AddLearner, 3 = RemoveNode
    /// +------+----------------------+
    /// ```
    pub fn encode(&self) -> Bytes {
        let (tag, id) = match *self {
            ConfChange::AddVoter(id) => (1u8, id),
            ConfChange::AddLearner(id) => (2u8, id),
            ConfChange::RemoveNode(id) => (3u8, id),
        };
        let mut buffer = [0u8; Self::ENCODED_SIZE_BYTES];
        buffer[0] = tag;
        buffer[1..].copy_from_slice(&id.to_le_bytes());
        Bytes::copy_from_slice(&buffer)
    }

    /// Decodes entry data written by [`ConfChange::encode`]; `None` if it is not one.
    pub fn decode(data: &[u8]) -> Option<ConfChange> {
        let bytes: [u8; Self::ENCODED_SIZE_BYTES] = data.try_into().ok()?;
        let id = u64::from_le_bytes(bytes[1..].try_into().ok()?);
        if id == NO_NODE {
            return None;
        }
        match bytes[0] {
            1 => Some(ConfChange::AddVoter(id)),
            2 => Some(ConfChange::AddLearner(id)),
            3 => Some(ConfChange::RemoveNode(id)),
            _ => None,
        }
    }

    /// The node the change is about.
    pub fn node_id(&self) -> NodeId {
        match *self {
            ConfChange::AddVoter(id) | ConfChange::AddLearner(id) | ConfChange::RemoveNode(id) => {
                id
            }
        }
    }
}

/// A message between two replicas of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The group this message belongs to; a node drops messages for other groups.
    pub group_id: GroupId,
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term (for a granted pre-vote: the term the candidate would campaign in).
    pub term: u64,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// A candidate asks for a vote (or, with `pre_vote`, asks whether it would get one).
    RequestVote {
        /// A pre-vote: the receiver changes no state.
        pre_vote: bool,
        /// The candidate's last log index.
        last_index: u64,
        /// The term of the candidate's last entry.
        last_term: u64,
        /// The election follows a leadership transfer, so leader stickiness does not apply.
        transfer: bool,
    },
    /// The answer to [`MessageBody::RequestVote`].
    VoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// Whether the vote is granted.
        granted: bool,
    },
    /// The leader replicates entries that follow `(prev_index, prev_term)`.
    Append {
        /// Index of the entry just before `entries`.
        prev_index: u64,
        /// Term of that entry.
        prev_term: u64,
        /// Consecutive entries starting at `prev_index + 1` (possibly none).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: u64,
    },
    /// The answer to [`MessageBody::Append`] and [`MessageBody::InstallSnapshot`].
    AppendResponse {
        /// Accepted: the index up to which the follower's log matches the leader's.
        /// Rejected: the `prev_index` that did not match.
        index: u64,
        /// Whether the append was rejected.
        reject: bool,
        /// When rejected: the largest index at which the follower may match.
        reject_hint: u64,
        /// When rejected: the follower's term at `reject_hint` (0 if unknown).
        hint_term: u64,
    },
    /// The leader asserts its leadership and, with `read_sequence`, confirms reads.
    Heartbeat {
        /// The commit index the follower may adopt (never beyond what it is known to hold).
        commit: u64,
        /// The newest read request this heartbeat confirms.
        read_sequence: u64,
        /// The leader's tick count when it sent the heartbeat; the start of a lease.
        sent_at_tick: u64,
    },
    /// The answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// Echoes the heartbeat's `read_sequence`.
        read_sequence: u64,
        /// Echoes the heartbeat's `sent_at_tick`.
        sent_at_tick: u64,
    },
    /// The leader sends its snapshot to a follower that needs compacted entries.
    InstallSnapshot {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// A leader transferring leadership tells the target to campaign now.
    TimeoutNow,
    /// A follower forwards a linearizable read request to the leader.
    ReadIndex {
        /// The follower's identifier for the request.
        request_id: u64,
    },
    /// The leader answers a forwarded read: it is safe once `index` has been applied.
    ReadIndexResponse {
        /// The follower's identifier for the request.
        request_id: u64,
        /// The read index.
        index: u64,
    },
}

impl MessageBody {
    /// The largest index or term the body mentions (indexes a receiver clamps, such as a
    /// commit index, excepted).
    pub(crate) fn largest_position(&self) -> u64 {
        match self {
            MessageBody::RequestVote {
                last_index,
                last_term,
                ..
            } => (*last_index).max(*last_term),
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                ..
            } => prev_index
                .saturating_add(entries.len() as u64)
                .max(*prev_term),
            MessageBody::AppendResponse {
                index,
                reject_hint,
                hint_term,
                ..
            } => (*index).max(*reject_hint).max(*hint_term),
            MessageBody::InstallSnapshot { snapshot } => {
                snapshot.meta.index.max(snapshot.meta.term)
            }
            MessageBody::ReadIndexResponse { index, .. } => *index,
            MessageBody::VoteResponse { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::TimeoutNow
            | MessageBody::ReadIndex { .. } => 0,
        }
    }

    /// A short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "pre_vote",
            MessageBody::RequestVote { .. } => "request_vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "pre_vote_response",
            MessageBody::VoteResponse { .. } => "vote_response",
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse { .. } => "append_response",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat_response",
            MessageBody::InstallSnapshot { .. } => "install_snapshot",
            MessageBody::TimeoutNow => "timeout_now",
            MessageBody::ReadIndex { .. } => "read_index",
            MessageBody::ReadIndexResponse { .. } => "read_index_response",
        }
    }

    /// Whether the message may only leave after the state changes of the same step are durable:
    /// every answer (a vote, an acknowledgement) and every vote request (the candidate's own
    /// vote for itself must be durable before it asks others).
    pub fn needs_persistence(&self) -> bool {
        matches!(
            self,
            MessageBody::RequestVote { .. }
                | MessageBody::VoteResponse { .. }
                | MessageBody::AppendResponse { .. }
                | MessageBody::HeartbeatResponse { .. }
        )
    }
}

/// A linearizable read that may now be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// The identifier the application gave to [`crate::Node::read_index`].
    pub request_id: u64,
    /// The read is linearizable once the application has applied this index.
    pub index: u64,
}
