//! Role changes (follower, pre-candidate, candidate, leader) and membership bookkeeping.

use super::*;

impl Node {
    pub(super) fn become_follower(&mut self, term: u64, leader_id: NodeId) {
        if term != self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.role = Role::Follower;
        self.leader_id = leader_id;
        self.reset_role_state();
    }

    pub(super) fn reset_role_state(&mut self) {
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
    pub(super) fn start_election(&mut self, transfer: bool) {
        debug_assert!(self.may_campaign());
        if self.config.pre_vote && !transfer {
            self.start_pre_vote();
        } else {
            self.start_election_for_real(transfer);
        }
    }

    pub(super) fn start_pre_vote(&mut self) {
        self.role = Role::PreCandidate;
        self.leader_id = NO_NODE;
        self.reset_role_state();
        self.votes.insert(self.config.id, true);
        self.request_votes(true, false);
        self.tally_votes();
    }

    pub(super) fn start_election_for_real(&mut self, transfer: bool) {
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

    pub(super) fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
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

    pub(super) fn become_leader(&mut self) {
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

    pub(super) fn add_progress(&mut self, id: NodeId, next_index: u64) {
        let progress = Progress::new(
            next_index,
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        self.progress.entry(id).or_insert(progress);
    }

    /// Recomputes the membership from the base and every change in the log (after a
    /// truncation, a snapshot, or appended changes).
    pub(super) fn recompute_membership(&mut self) {
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
    pub(super) fn membership_at(&self, index: u64) -> ConfState {
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

    pub(super) fn is_conf_change_at(&self, index: u64) -> bool {
        self.log
            .entry(index)
            .is_some_and(|entry| entry.kind == EntryKind::ConfChange)
    }

    /// Brings a leader's bookkeeping in line with a new membership.
    pub(super) fn on_membership_changed(&mut self) {
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
    pub(super) fn step_down_if_removed(&mut self) {
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

    pub(super) fn send_timeout_now(&mut self, target: NodeId) {
        self.lease_revoked = true;
        self.send(target, MessageBody::TimeoutNow);
    }
}
