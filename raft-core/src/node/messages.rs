//! Inputs from other replicas: the term gate, validation of hostile input, and one handler per
//! role.

use super::*;

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
    pub(super) fn validate(&self, message: &Message) -> Result<(), StepError> {
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
    pub(super) fn step_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::RequestVote {
                pre_vote, transfer, ..
            } => {
                let heard_recently = self.leader_id != NO_NODE
                    && self.election_elapsed_ticks < self.config.election_timeout_ticks;
                let restarted_within_lease = self.ticks < self.lease_honoured_until_tick;
                let leader_alive =
                    self.config.check_quorum && (heard_recently || restarted_within_lease);
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
    pub(super) fn step_lower_term(&mut self, message: &Message) {
        self.metrics.messages_stale_term += 1;
        match message.body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                // The answer tells a stale leader about the newer term (Raft paper, Figure 2),
                // so that it steps down. Without it, a leader cut off by a partition could keep
                // followers that only accept pre-votes from electing anyone else, and a leader
                // outside the others' view of the membership would never hear of their terms.
                // It acknowledges nothing (index 0): if its receiver has meanwhile become
                // leader in this newer term, it must not pass for a comparison of the logs.
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
            MessageBody::RequestVote { pre_vote, .. } => {
                // A refusal in our newer term lets the candidate catch up. Without it, a
                // candidate that this node never writes to (it is outside this node's view of
                // the membership) could trail behind in terms forever, each of its elections
                // ignored here as stale.
                self.send(
                    message.from,
                    MessageBody::VoteResponse {
                        pre_vote,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    pub(super) fn handle_vote_request(&mut self, message: Message) {
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

    pub(super) fn step_follower(&mut self, message: Message) {
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

    pub(super) fn heard_from_leader(&mut self, leader_id: NodeId) {
        self.election_elapsed_ticks = 0;
        self.leader_id = leader_id;
        // A timer shortened when the connection to the leader broke ends once a leader is
        // heard again (a normal one is at least an election timeout long).
        if self.randomized_election_timeout_ticks < self.config.election_timeout_ticks {
            self.reset_randomized_election_timeout();
        }
    }

    pub(super) fn handle_append(
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
            // message if it contradicts a committed entry (no correct leader sends that). The
            // snapshot's own position counts: its term is known, only older ones are not.
            let skip = entries
                .iter()
                .take_while(|entry| entry.index <= committed)
                .count();
            let contradicts = entries[..skip].iter().any(|entry| {
                entry.index >= self.log.snapshot_index()
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

    pub(super) fn handle_snapshot(&mut self, leader_id: NodeId, snapshot: Snapshot) {
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

    pub(super) fn step_candidate(&mut self, message: Message) {
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

    pub(super) fn tally_votes(&mut self) {
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

    pub(super) fn step_leader(&mut self, message: Message) -> Result<(), StepError> {
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
                    // Even with nothing new to send: an empty append probes where the
                    // follower's log stands. Otherwise a follower whose snapshot was reported
                    // delivered but lost would never be heard of again by an idle leader.
                    self.send_append(from, true);
                }
                self.release_confirmed_reads();
            }
            MessageBody::ReadIndex { request_id } => self.leader_read(request_id, from),
            _ => {}
        }
        Ok(())
    }

    pub(super) fn progress_mut(&mut self, id: NodeId) -> &mut Progress {
        self.progress
            .get_mut(&id)
            .expect("caller checked membership")
    }

    pub(super) fn handle_append_rejection(
        &mut self,
        from: NodeId,
        index: u64,
        hint: u64,
        hint_term: u64,
    ) {
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

    pub(super) fn handle_append_success(&mut self, from: NodeId, index: u64) {
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
    pub(super) fn maybe_commit(&mut self) -> bool {
        let quorum_index = self.quorum_value(|_, progress| progress.match_index);
        let current_term = self.log.term(quorum_index) == Some(self.term);
        #[cfg(madsim)]
        let current_term =
            current_term || crate::planted::planted(crate::planted::Bug::CommitOldTerm);
        if quorum_index <= self.log.commit || !current_term {
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
    pub(super) fn quorum_value(&self, value: impl Fn(NodeId, &Progress) -> u64) -> u64 {
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
    pub(super) fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
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

    pub(super) fn send_snapshot(&mut self, to: NodeId) {
        // Entries are only compacted behind a snapshot, so one always exists here.
        let Some(snapshot) = self.snapshot.clone() else {
            debug_assert!(false, "compacted entries without a snapshot");
            return;
        };
        self.metrics.snapshots_sent += 1;
        self.progress_mut(to).become_snapshot(snapshot.meta.index);
        self.send(to, MessageBody::InstallSnapshot { snapshot });
    }

    pub(super) fn broadcast_append(&mut self) {
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

    pub(super) fn broadcast_heartbeat(&mut self) {
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
