//! Inputs from the application: proposals, membership changes, reads, leadership transfer,
//! reports from the transport, compaction.

use super::*;

impl Node {
    /// Proposes application data. On success returns the index the entry will have if it
    /// commits; the application learns the outcome when that index is applied (with this
    /// data, or with another entry if leadership changed and the proposal was lost).
    pub fn propose(&mut self, data: Bytes) -> Result<u64, ProposeError> {
        self.propose_entry(EntryKind::Normal, data)
    }

    /// Proposes a membership change. It takes effect as soon as it is in the log (Raft thesis,
    /// 4.1). Only one may be uncommitted at a time: the next is accepted once the previous one
    /// is committed, whether or not the application has applied it yet (see
    /// [`Node::pending_conf_change_index`]). The leader must also have committed an entry of
    /// its term first (the fix for the single-server change pitfall described by Ongaro).
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

    pub(super) fn check_conf_change(&self, change: ConfChange) -> Result<(), ProposeError> {
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

    pub(super) fn propose_entry(
        &mut self,
        kind: EntryKind,
        data: Bytes,
    ) -> Result<u64, ProposeError> {
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

    pub(super) fn check_proposal(&self, data_bytes: u64) -> Result<(), ProposeError> {
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

    pub(super) fn leader_read(&mut self, request_id: u64, from: NodeId) {
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
    pub(super) fn lease_holds(&self) -> bool {
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
        #[cfg(madsim)]
        if crate::planted::planted(crate::planted::Bug::LeaseAfterExpiry) {
            return lease_start > 0;
        }
        lease_start > 0 && ticks - (lease_start - 1) < lease_ticks
    }

    pub(super) fn release_read(&mut self, request_id: u64, from: NodeId, index: u64) {
        self.metrics.reads_released += 1;
        if from == self.config.id {
            self.read_states.push(ReadState { request_id, index });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { request_id, index });
        }
    }

    /// Releases every pending read whose sequence a quorum has acknowledged.
    pub(super) fn release_confirmed_reads(&mut self) {
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

    /// Tells the node that the connection to `peer` broke (or could not be made).
    ///
    /// On a leader, replication to `peer` falls back to probing, so that lost appends are
    /// detected and resent.
    ///
    /// On a follower of `peer` with pre-vote and check-quorum on (check-quorum is what makes
    /// followers that still hear from the leader refuse a vote) and ReadIndex reads (not
    /// lease-based; every server of the cluster must use the same read mode), the
    /// follower stops honouring that leader at once and campaigns within half an election
    /// timeout, at a random tick (so that two followers that lost the same leader seldom
    /// campaign together), instead of waiting out a full one: when the leader's process died,
    /// the kernel closed its connections, and a new leader is elected in a fraction of the
    /// usual time. The campaign starts with a pre-vote, which every follower that still hears
    /// from a live leader refuses (leader stickiness), so a connection that merely flaps
    /// changes no term and deposes no one. With lease-based reads the follower keeps its
    /// promise not to help elect anyone before its election timeout: a live leader cut off by
    /// the network may still be serving reads from its lease.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if let Some(progress) = self.progress.get_mut(&peer)
            && progress.state == ProgressState::Replicate
        {
            progress.become_probe();
        }
        let gives_up_early = self.role == Role::Follower
            && peer == self.leader_id
            && peer != NO_NODE
            && self.config.pre_vote
            && self.config.check_quorum
            && self.config.read_mode != ReadMode::LeaseBased;
        if gives_up_early {
            self.leader_id = NO_NODE;
            self.metrics.leaders_given_up_on_disconnect += 1;
            let window = u64::from((self.config.election_timeout_ticks / 2).max(1));
            let soon = self.election_elapsed_ticks + 1 + self.rng.below(window) as u32;
            self.randomized_election_timeout_ticks =
                self.randomized_election_timeout_ticks.min(soon);
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
