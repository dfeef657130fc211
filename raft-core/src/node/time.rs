//! Inputs: logical time (ticks), elections started by timeouts, check-quorum, transfers' timers.

use super::*;

impl Node {
    /// Advances logical time by one tick. Allocates nothing unless a timeout fires.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
    }

    pub(super) fn tick_election(&mut self) {
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
    pub(super) fn may_campaign(&self) -> bool {
        let voter_until_committed =
            self.pending_conf_index > self.log.commit && self.voter_before_pending_change;
        (self.is_promotable() || voter_until_committed) && self.term < INDEX_AND_TERM_MAX
    }

    pub(super) fn tick_leader(&mut self) {
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

    pub(super) fn tick_transfer(&mut self) {
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
    pub(super) fn quorum_recently_active(&mut self) -> bool {
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

    pub(super) fn reset_randomized_election_timeout(&mut self) {
        let base = self.config.election_timeout_ticks;
        self.randomized_election_timeout_ticks = base + self.rng.below(u64::from(base)) as u32;
    }
}
