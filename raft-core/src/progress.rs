//! What a leader knows about each follower, and the flow control of appends to it.

use crate::log::shrink_if_sparse;
use std::collections::VecDeque;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches: one append at a time,
    /// waiting for each answer.
    Probe,
    /// The follower's log matches up to `match_index`: appends are streamed optimistically,
    /// bounded by the inflight limits.
    Replicate,
    /// A snapshot ending at `pending_index` is being sent; appends wait for its outcome.
    Snapshot {
        /// The index the snapshot covers.
        pending_index: u64,
    },
}

/// Appends sent to one follower and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Inflights {
    /// Last index and size of each append in flight, oldest first.
    sent: VecDeque<(u64, u64)>,
    bytes: u64,
    messages_max: usize,
    bytes_max: u64,
}

impl Inflights {
    pub(crate) fn new(messages_max: usize, bytes_max: u64) -> Inflights {
        Inflights {
            sent: VecDeque::new(),
            bytes: 0,
            messages_max,
            bytes_max,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.sent.len() >= self.messages_max || self.bytes >= self.bytes_max
    }

    pub(crate) fn add(&mut self, last_index: u64, size_bytes: u64) {
        debug_assert!(self.sent.back().is_none_or(|(last, _)| *last < last_index));
        self.sent.push_back((last_index, size_bytes));
        self.bytes += size_bytes;
    }

    /// Forgets every append whose last index is `≤ index`.
    pub(crate) fn free_to(&mut self, index: u64) {
        while let Some(&(last_index, size_bytes)) = self.sent.front() {
            if last_index > index {
                break;
            }
            self.sent.pop_front();
            self.bytes -= size_bytes;
        }
        shrink_if_sparse(&mut self.sent);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    pub(crate) fn reset(&mut self) {
        self.sent.clear();
        shrink_if_sparse(&mut self.sent);
        self.bytes = 0;
    }

    pub(crate) fn capacity(&self) -> usize {
        self.sent.capacity()
    }
}

/// The leader's view of one member.
#[derive(Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log.
    pub match_index: u64,
    /// The next index to send.
    pub next_index: u64,
    /// How the leader replicates to this member.
    pub state: ProgressState,
    /// In [`ProgressState::Probe`]: an append was sent and its answer has not arrived.
    pub(crate) probe_sent: bool,
    /// Whether the member was heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Highest read sequence this member confirmed.
    pub(crate) read_sequence_acked: u64,
    /// One more than the newest `sent_at_tick` this member echoed (0: none yet).
    pub(crate) lease_tick_acked: u64,
    /// `match_index` at the previous stall check (see [`Progress::check_stalled`]).
    match_index_at_last_check: u64,
    pub(crate) inflights: Inflights,
}

impl Progress {
    /// Appends sent to this member and not yet acknowledged, as counted against
    /// [`Config::inflight_messages_max`](crate::Config::inflight_messages_max). Only appends
    /// sent in [`ProgressState::Replicate`] are counted; the count is 0 in the other states.
    pub fn inflight_count(&self) -> usize {
        self.inflights.sent.len()
    }

    /// Bytes of the entries in those appends, as counted against
    /// [`Config::inflight_bytes_max`](crate::Config::inflight_bytes_max).
    pub fn inflight_bytes(&self) -> u64 {
        self.inflights.bytes
    }

    pub(crate) fn new(next_index: u64, messages_max: usize, bytes_max: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            read_sequence_acked: 0,
            match_index_at_last_check: 0,
            lease_tick_acked: 0,
            inflights: Inflights::new(messages_max, bytes_max),
        }
    }

    /// Whether the leader must wait before sending more appends.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot, the follower holds at least the snapshot's entries.
        let next_index = match self.state {
            ProgressState::Snapshot { pending_index } => {
                (pending_index + 1).max(self.match_index + 1)
            }
            _ => self.match_index + 1,
        };
        self.state = ProgressState::Probe;
        self.next_index = next_index;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_snapshot(&mut self, pending_index: u64) {
        self.state = ProgressState::Snapshot { pending_index };
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Called once per heartbeat interval. A follower being streamed to that acknowledged
    /// nothing since the last check although appends are in flight has probably lost them
    /// (a dropped connection the runtime did not report): fall back to probing, so that the
    /// next heartbeat answer triggers a resend. Returns whether it fell back.
    pub(crate) fn check_stalled(&mut self) -> bool {
        let stalled = self.state == ProgressState::Replicate
            && !self.inflights.is_empty()
            && self.match_index == self.match_index_at_last_check;
        self.match_index_at_last_check = self.match_index;
        if stalled {
            self.become_probe();
        }
        stalled
    }

    /// Records that an append ending at `last_index` (of `size_bytes`) was sent.
    pub(crate) fn sent_append(&mut self, last_index: u64, size_bytes: u64, entry_count: usize) {
        match self.state {
            ProgressState::Replicate if entry_count > 0 => {
                self.next_index = last_index + 1;
                self.inflights.add(last_index, size_bytes);
            }
            ProgressState::Replicate => {}
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => unreachable!("no appends while sending a snapshot"),
        }
    }

    /// Applies an acknowledgement up to `index`. Returns whether it told anything new.
    pub(crate) fn acknowledge(&mut self, index: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        self.inflights.free_to(index);
        updated
    }

    /// Applies a rejection of the append at `rejected_index`; `probe_from` is the highest index
    /// at which the logs may match. Returns false if the rejection is stale.
    pub(crate) fn reject(&mut self, rejected_index: u64, probe_from: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected_index <= self.match_index {
                return false;
            }
            self.become_probe();
            self.next_index = probe_from
                .saturating_add(1)
                .min(rejected_index)
                .max(self.match_index + 1);
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected_index {
            return false;
        }
        self.next_index = probe_from
            .saturating_add(1)
            .min(rejected_index)
            .max(self.match_index + 1);
        self.probe_sent = false;
        true
    }
}
