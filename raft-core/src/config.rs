//! The settings of one node.

use crate::error::ConfigError;
use crate::message::{GroupId, NO_NODE, NodeId};

/// How linearizable reads are confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: every read waits for a quorum to confirm the leadership after the request.
    /// Safe whatever the clocks do.
    Safe,
    /// Lease reads: the leader serves a read at once, without a round trip, while it holds a
    /// lease; otherwise the read falls back to ReadIndex.
    ///
    /// A lease lasts `election_timeout_ticks - 2` of the leader's ticks from the sending of the
    /// newest heartbeat a quorum acknowledged. A follower that received that heartbeat votes
    /// for no other candidate until a full election timeout of its own ticks has passed (leader
    /// stickiness, from `check_quorum`); the two ticks absorb where ticks fall relative to
    /// message arrival. A leadership transfer revokes the lease for the rest of the term. A node
    /// that restarts honours a lease it may have acknowledged before: it refuses votes for one
    /// election timeout after it starts.
    ///
    /// Clock assumption: every node's ticks run at the same rate, within that two-tick margin
    /// per election timeout. A leader whose clock stalls (a paused VM, a long GC) or a follower
    /// whose clock runs fast can break it and let a deposed leader serve a stale read.
    /// Requires `check_quorum`.
    LeaseBased,
}

/// The settings of one node of one group.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; never [`NO_NODE`].
    pub id: NodeId,
    /// The group this node belongs to; messages for other groups are dropped.
    pub group_id: GroupId,
    /// Ticks without hearing from a leader before a follower campaigns. The actual timeout is
    /// randomized in `[election_timeout_ticks, 2 * election_timeout_ticks)`.
    pub election_timeout_ticks: u32,
    /// Ticks between a leader's heartbeats. Must be smaller than the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// Seeds the generator that randomizes election timeouts.
    pub seed: u64,
    /// Ask for pre-votes before campaigning, so that a node that was partitioned away does
    /// not disrupt the group with a higher term when it comes back.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and a
    /// follower that heard from a live leader within an election timeout ignores vote requests
    /// (leader stickiness).
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// The largest payload of one append message; at least one entry is always sent.
    pub append_size_bytes_max: u64,
    /// Append messages in flight to one follower before the leader waits for answers.
    pub inflight_messages_max: usize,
    /// Bytes of appends in flight to one follower before the leader waits for answers.
    pub inflight_bytes_max: u64,
    /// Bytes of proposed but uncommitted entries beyond which new proposals are refused.
    pub uncommitted_bytes_max: u64,
    /// The largest entry payload a proposal may carry.
    pub entry_size_bytes_max: u64,
}

impl Config {
    /// A configuration with the defaults used by the server: 10 ticks election timeout,
    /// 2 ticks heartbeat, pre-vote and check-quorum on, ReadIndex reads.
    pub fn new(id: NodeId, group_id: GroupId) -> Config {
        Config {
            id,
            group_id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            seed: id ^ group_id.rotate_left(32),
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            append_size_bytes_max: 1024 * 1024,
            inflight_messages_max: 256,
            inflight_bytes_max: 32 * 1024 * 1024,
            uncommitted_bytes_max: 64 * 1024 * 1024,
            entry_size_bytes_max: 8 * 1024 * 1024,
        }
    }

    /// Checks the relations between the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: &'static str| Err(ConfigError { reason });
        if self.id == NO_NODE {
            return invalid("id must not be 0");
        }
        if self.heartbeat_interval_ticks == 0 {
            return invalid("heartbeat_interval_ticks must be positive");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return invalid("election_timeout_ticks must exceed heartbeat_interval_ticks");
        }
        if self.inflight_messages_max == 0 {
            return invalid("inflight_messages_max must be positive");
        }
        if self.append_size_bytes_max == 0 || self.inflight_bytes_max < self.append_size_bytes_max {
            return invalid("inflight_bytes_max must be at least append_size_bytes_max > 0");
        }
        if self.uncommitted_bytes_max < self.entry_size_bytes_max {
            return invalid("uncommitted_bytes_max must be at least entry_size_bytes_max");
        }
        if self.read_mode == ReadMode::LeaseBased && !self.check_quorum {
            return invalid("lease-based reads require check_quorum");
        }
        Ok(())
    }
}
