//! Errors, one variant per decision the caller has to make.

use crate::message::NodeId;
use thiserror::Error;

/// A configuration whose settings contradict each other.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("invalid raft configuration: {reason}")]
pub struct ConfigError {
    /// Which relation does not hold.
    pub reason: &'static str,
}

/// Why a node could not be created from its recovered state.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum InitError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The recovered state contradicts itself (entries not contiguous, commit beyond the log,
    /// an empty membership, ...). The replica must not start from it.
    #[error("inconsistent recovered state: {reason}")]
    Inconsistent {
        /// What is inconsistent.
        reason: &'static str,
    },
}

/// Why a proposal was refused. Nothing was appended.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; retry at `leader_hint` if known (0 if not).
    #[error("not the leader (leader hint: {leader_hint})")]
    NotLeader {
        /// The leader this node believes in, or 0.
        leader_hint: NodeId,
    },
    /// Leadership is being transferred; retry shortly, probably at the new leader.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// Too many bytes are proposed but not yet committed; back off and retry.
    #[error("too many uncommitted bytes ({uncommitted_bytes} + {entry_bytes} > {limit_bytes})")]
    UncommittedLimit {
        /// Bytes already uncommitted.
        uncommitted_bytes: u64,
        /// Bytes of the refused entry.
        entry_bytes: u64,
        /// The configured limit.
        limit_bytes: u64,
    },
    /// The entry is larger than `entry_size_bytes_max`; it will never be accepted.
    #[error("entry of {entry_bytes} bytes exceeds the limit of {limit_bytes}")]
    EntryTooLarge {
        /// Size of the refused entry.
        entry_bytes: u64,
        /// The configured limit.
        limit_bytes: u64,
    },
    /// A membership change is already in the log and not yet committed; retry once it is
    /// (applying it is not awaited).
    #[error("a membership change is already in progress")]
    ConfChangeInProgress,
    /// The leader has not yet committed an entry of its own term; retry shortly.
    #[error("the leader has not committed in its term yet")]
    NotCommittedInTerm,
    /// The membership change makes no sense for the current membership.
    #[error("invalid membership change: {reason}")]
    InvalidConfChange {
        /// Why.
        reason: &'static str,
    },
}

/// Why a read request was refused. Retry elsewhere or later.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    /// No leader is known to forward the read to.
    #[error("no leader known")]
    NoLeader,
}

/// Why a leadership transfer was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can transfer leadership.
    #[error("not the leader (leader hint: {leader_hint})")]
    NotLeader {
        /// The leader this node believes in, or 0.
        leader_hint: NodeId,
    },
    /// The target is not a voter of the group.
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
}

/// Why a compaction was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CompactError {
    /// Snapshots are taken at the applied index, which is elsewhere.
    #[error("snapshot index {requested} is not the applied index {applied}")]
    NotApplied {
        /// The index asked for.
        requested: u64,
        /// The applied index.
        applied: u64,
    },
    /// The log is already compacted to that index or beyond.
    #[error("already compacted to {0}")]
    AlreadyCompacted(u64),
}

/// Why an incoming message was dropped. The message was counted; the node is unaffected.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StepError {
    /// The message belongs to another group.
    #[error("message for group {0}")]
    WrongGroup(u64),
    /// The message is addressed to another node, or claims to come from this one.
    #[error("message misaddressed (from {from} to {to})")]
    Misaddressed {
        /// The sender field.
        from: NodeId,
        /// The receiver field.
        to: NodeId,
    },
    /// The message contradicts itself or the protocol.
    #[error("malformed {kind} message: {reason}")]
    Malformed {
        /// The message kind.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The message is an answer from a node this leader does not track.
    #[error("answer from non-member {0}")]
    NonMember(NodeId),
}
