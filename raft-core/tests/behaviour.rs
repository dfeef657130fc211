//! One story per behaviour the engine promises beyond the paper's core rules: the Ready
//! interface, multi-raft hygiene, pre-vote, check-quorum and stickiness, flow control, reads,
//! snapshots, membership, leadership transfer and hostile input.

use bytes::Bytes;
use raft_core::testing::{
    Cluster, GROUP_ID, LEADER_OF_THREE_TERM as LEADER_TERM, LinkFaults, acknowledge, drain,
    leader_of_three as lone_leader, message,
};
use raft_core::{
    CompactError, ConfChange, ConfState, Config, Entry, EntryKind, InitialState, Message,
    MessageBody, Node, ProgressState, ProposeError, ReadMode, Role, Snapshot, SnapshotMeta,
    StepError, TransferError,
};

fn data(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

/// Ticks every node until some node leads, then settles.
fn settle_leader(cluster: &mut Cluster) -> u64 {
    for _ in 0..200 {
        cluster.tick_all(1);
        if let Some(leader) = cluster.leader() {
            cluster.stabilize();
            return leader;
        }
    }
    panic!("no leader elected");
}

/// Handles Readys and delivers messages until quiet, returning the messages delivered.
fn stabilize_recording(cluster: &mut Cluster) -> Vec<Message> {
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let processed = cluster.process_all();
        let in_transit: Vec<Message> = cluster.in_transit().into_iter().cloned().collect();
        if !processed && in_transit.is_empty() {
            return seen;
        }
        seen.extend(in_transit);
        cluster.deliver_round();
    }
    panic!("did not settle");
}

// ---- 1. the Ready interface ----

#[test]
fn acknowledgements_wait_for_persistence_but_a_leaders_appends_do_not() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let leader = cluster.node_mut(1);
    leader.propose(data("x")).unwrap();
    let ready = leader.ready();
    assert!(!ready.entries.is_empty(), "the leader persists its entry");
    assert!(
        ready
            .messages
            .iter()
            .all(|m| matches!(m.body, MessageBody::Append { .. }))
    );
    assert_eq!(
        ready.messages.len(),
        2,
        "appends may go out while the leader writes"
    );
    let append = ready.messages[0].clone();
    leader.advance(ready.number);

    let follower = cluster.node_mut(append.to);
    follower.step(append).unwrap();
    let ready = follower.ready();
    assert!(!ready.entries.is_empty());
    assert!(ready.messages.is_empty());
    assert!(
        matches!(
            ready.persisted_messages[0].body,
            MessageBody::AppendResponse { reject: false, .. }
        ),
        "the acknowledgement leaves only after the entries are durable"
    );
}

#[test]
#[should_panic(expected = "Node::ready called before Node::advance")]
fn a_ready_must_be_advanced_before_the_next_one() {
    let mut leader = lone_leader(|_| {});
    leader.propose(data("x")).unwrap();
    let _first = leader.ready();
    let _second = leader.ready();
}

#[test]
fn a_leader_counts_itself_only_once_its_own_entries_are_durable() {
    let mut leader = lone_leader(|_| {});
    let noop = leader.last_index();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    let index = leader.propose(data("x")).unwrap();
    let ready = leader.ready();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(index)))
        .unwrap();
    assert_eq!(
        leader.commit_index(),
        noop,
        "node 2 holds it, the leader has not written it"
    );
    leader.advance(ready.number);
    assert_eq!(
        leader.commit_index(),
        index,
        "durable on the leader and node 2: a majority"
    );
}

#[test]
fn the_persisted_index_moves_when_a_ready_is_advanced() {
    let mut leader = lone_leader(|_| {});
    let noop = leader.last_index();
    assert_eq!(leader.persisted_index(), noop);
    let index = leader.propose(data("x")).unwrap();
    assert_eq!(leader.last_index(), index);
    assert_eq!(
        leader.persisted_index(),
        noop,
        "proposed, not yet handed out"
    );
    let ready = leader.ready();
    assert_eq!(
        leader.persisted_index(),
        noop,
        "handed out, not yet durable"
    );
    leader.advance(ready.number);
    assert_eq!(leader.persisted_index(), index);
}

#[test]
fn inputs_may_arrive_between_ready_and_advance() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let ready = cluster.node_mut(1).ready();
    cluster.node_mut(1).propose(data("late")).unwrap();
    cluster.node_mut(1).advance(ready.number);
    cluster.stabilize();
    assert_eq!(cluster.state(3), [data("late")]);
}

// ---- 2. multi-raft ----

#[test]
fn messages_for_another_group_are_dropped_and_counted() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    let term = cluster.node(1).term();
    let mut foreign = message(2, 1, term + 9, MessageBody::TimeoutNow);
    foreign.group_id = GROUP_ID + 1;
    let result = cluster.node_mut(1).step(foreign);
    assert_eq!(result, Err(StepError::WrongGroup(GROUP_ID + 1)));
    assert_eq!(cluster.node(1).metrics().messages_wrong_group, 1);
    assert_eq!(cluster.node(1).term(), term, "nothing else changed");
}

#[test]
fn buffers_shrink_back_after_a_burst() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let idle_capacity = cluster.node(1).buffer_capacity();
    for round in 0..20 {
        for write in 0..500 {
            cluster
                .propose(1, data(&format!("{round}-{write}")))
                .unwrap();
        }
        cluster.stabilize();
    }
    let burst_capacity = cluster.node(1).buffer_capacity();
    for id in [1, 2, 3] {
        cluster.compact(id);
    }
    let after = cluster.node(1).buffer_capacity();
    assert!(
        burst_capacity >= 10_000,
        "the burst grew the log ({burst_capacity})"
    );
    assert!(
        after <= idle_capacity.max(64) * 4,
        "{after} elements kept after compaction"
    );
    assert_eq!(cluster.node(1).entries_in_memory(), 0);
}

// ---- 3. elections ----

#[test]
fn pre_vote_keeps_a_partitioned_node_from_raising_its_term() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let term = cluster.node(1).term();
    cluster.isolate(3);
    cluster.tick_all(100);
    assert_eq!(
        cluster.node(3).term(),
        term,
        "pre-votes never succeed, the term stays"
    );
    assert_eq!(cluster.node(3).role(), Role::PreCandidate);
    cluster.heal();
    cluster.tick_all(10);
    cluster.stabilize();
    assert_eq!(
        cluster.leader(),
        Some(1),
        "the returning node did not disrupt the leader"
    );
    assert_eq!(cluster.node(1).term(), term);
}

#[test]
fn without_pre_vote_a_returning_node_forces_a_new_election() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], |config| {
        config.pre_vote = false;
        config.check_quorum = false;
    });
    assert!(cluster.elect(1));
    let term = cluster.node(1).term();
    cluster.isolate(3);
    cluster.tick_all(100);
    assert!(cluster.node(3).term() > term + 2);
    cluster.heal();
    cluster.tick_all(40);
    assert!(
        cluster.node(1).term() > term,
        "the higher term deposed the leader"
    );
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.isolate(1);
    let timeout = cluster.node(1).config().election_timeout_ticks;
    for _ in 0..timeout * 2 {
        cluster.tick(1);
    }
    assert_eq!(cluster.node(1).role(), Role::Follower);
    assert_eq!(cluster.node(1).metrics().check_quorum_step_downs, 1);
}

#[test]
fn a_follower_that_heard_from_a_live_leader_ignores_vote_requests() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let term = cluster.node(2).term();
    let request = MessageBody::RequestVote {
        pre_vote: false,
        last_index: 100,
        last_term: term + 1,
        transfer: false,
    };
    cluster
        .node_mut(2)
        .step(message(3, 2, term + 1, request))
        .unwrap();
    assert_eq!(
        cluster.node(2).term(),
        term,
        "the disruptive term was not adopted"
    );
    assert_eq!(cluster.node(2).vote(), 1);
    assert_eq!(cluster.node(2).metrics().votes_ignored_by_stickiness, 1);
}

#[test]
fn a_vote_lost_in_a_crash_before_it_was_persisted_was_never_sent() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], |config| config.pre_vote = false);
    cluster.isolate(3);
    while cluster.node(1).role() != Role::Candidate {
        cluster.tick(1);
    }
    cluster.process(1);
    cluster.deliver_round();
    // Node 2 granted its vote in memory; it crashes before persisting it.
    cluster.crash_mid_ready(2);
    assert!(
        !cluster
            .in_transit()
            .iter()
            .any(|m| matches!(m.body, MessageBody::VoteResponse { .. })),
        "no vote left node 2"
    );
    cluster.restart(2);
    assert_eq!(cluster.node(2).vote(), 0);
    assert_eq!(cluster.node(1).role(), Role::Candidate);
}

// ---- 4. replication ----

#[test]
fn fast_backtracking_skips_a_whole_conflicting_term_per_round_trip() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.isolate(1);
    for write in 0..50 {
        cluster
            .propose(1, data(&format!("doomed-{write}")))
            .unwrap();
    }
    cluster.stabilize();
    cluster.crash(1);
    cluster.heal();
    let leader = settle_leader(&mut cluster);
    for write in 0..50 {
        cluster
            .propose(leader, data(&format!("kept-{write}")))
            .unwrap();
    }
    cluster.stabilize();
    cluster.restart(1);
    cluster.tick_all(4);
    let delivered = stabilize_recording(&mut cluster);
    let rejections = delivered
        .iter()
        .filter(|m| {
            m.from == 1 && matches!(m.body, MessageBody::AppendResponse { reject: true, .. })
        })
        .count();
    assert!(
        rejections <= 2,
        "{rejections} rejections for 50 conflicting entries"
    );
    assert_eq!(cluster.state(1).len(), 50);
    assert!(
        cluster
            .state(1)
            .iter()
            .all(|write| write.starts_with(b"kept"))
    );
}

#[test]
fn a_follower_moves_from_probe_to_replicate_once_it_answers() {
    let mut leader = lone_leader(|_| {});
    assert_eq!(leader.progress(2).unwrap().state, ProgressState::Probe);
    let noop = leader.last_index();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    assert_eq!(leader.progress(2).unwrap().state, ProgressState::Replicate);
    leader.report_unreachable(2);
    assert_eq!(leader.progress(2).unwrap().state, ProgressState::Probe);
}

#[test]
fn appends_in_flight_to_one_follower_are_bounded() {
    let mut leader = lone_leader(|config| {
        config.inflight_messages_max = 3;
        config.append_size_bytes_max = 1;
    });
    let noop = leader.last_index();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    for write in 0..20 {
        leader.propose(data(&format!("{write}"))).unwrap();
    }
    let ready = leader.ready();
    let appends_to_2 = ready
        .messages
        .iter()
        .filter(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. }))
        .count();
    assert_eq!(
        appends_to_2, 3,
        "one entry per append, three appends in flight at most"
    );
    leader.advance(ready.number);
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop + 1)))
        .unwrap();
    let ready = leader.ready();
    let more = ready.messages.iter().filter(|m| m.to == 2).count();
    assert_eq!(more, 1, "one acknowledged append frees one slot");
}

#[test]
fn a_leader_shows_each_followers_state_and_appends_in_flight() {
    let mut leader = lone_leader(|config| {
        config.inflight_messages_max = 3;
        config.append_size_bytes_max = 1;
    });
    let probing = leader.progress(2).unwrap();
    assert_eq!(probing.state, ProgressState::Probe);
    assert_eq!(probing.inflight_count(), 0, "a probe is not counted");
    let noop = leader.last_index();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    for write in 0..5 {
        leader.propose(data(&format!("{write}"))).unwrap();
    }
    let ready = leader.ready();
    leader.advance(ready.number);
    let replicating = leader.progress(2).unwrap();
    assert_eq!(replicating.state, ProgressState::Replicate);
    assert_eq!(replicating.inflight_count(), 3, "the limit");
    let entry_bytes = leader.entry(noop + 1).unwrap().size_bytes();
    assert_eq!(replicating.inflight_bytes(), 3 * entry_bytes);
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop + 1)))
        .unwrap();
    assert_eq!(
        leader.progress(2).unwrap().inflight_count(),
        3,
        "the freed slot is taken by the next append at once"
    );
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop + 4)))
        .unwrap();
    let nearly_done = leader.progress(2).unwrap();
    assert_eq!(
        nearly_done.inflight_count(),
        1,
        "the last write is in flight"
    );
    assert_eq!(nearly_done.inflight_bytes(), entry_bytes);
    assert_eq!(
        leader.progress(3).unwrap().state,
        ProgressState::Probe,
        "node 3 never answered"
    );
    leader.report_unreachable(2);
    let probing_again = leader.progress(2).unwrap();
    assert_eq!(probing_again.state, ProgressState::Probe);
    assert_eq!(probing_again.inflight_count(), 0);
    assert_eq!(probing_again.inflight_bytes(), 0);
}

#[test]
fn an_append_respects_the_size_limit_but_carries_at_least_one_entry() {
    let mut leader = lone_leader(|config| config.append_size_bytes_max = 200);
    let noop = leader.last_index();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    leader.propose(Bytes::from(vec![0u8; 1000])).unwrap();
    for _ in 0..10 {
        leader.propose(Bytes::from(vec![0u8; 50])).unwrap();
    }
    let ready = leader.ready();
    let sizes: Vec<usize> = ready
        .messages
        .iter()
        .filter(|m| m.to == 2)
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } => Some(entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes[0], 1, "the oversized entry travels alone");
    assert!(
        sizes[1..].iter().all(|count| *count == 2),
        "two 74-byte entries per 200 bytes: {sizes:?}"
    );
}

#[test]
fn proposals_made_between_two_readys_travel_in_one_append() {
    let mut leader = lone_leader(|_| {});
    let noop = leader.last_index();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    for write in 0..100 {
        leader.propose(data(&format!("{write}"))).unwrap();
    }
    let ready = leader.ready();
    let to_2: Vec<&Message> = ready.messages.iter().filter(|m| m.to == 2).collect();
    assert_eq!(to_2.len(), 1);
    let MessageBody::Append { entries, .. } = &to_2[0].body else {
        panic!("an append");
    };
    assert_eq!(entries.len(), 100);
}

#[test]
fn proposals_beyond_the_uncommitted_limit_are_refused() {
    let mut leader = lone_leader(|config| {
        config.uncommitted_bytes_max = 1_000;
        config.entry_size_bytes_max = 500;
    });
    let mut accepted = 0;
    let refusal = loop {
        match leader.propose(Bytes::from(vec![0u8; 100])) {
            Ok(_) => accepted += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(refusal, ProposeError::UncommittedLimit { .. }));
    assert_eq!(accepted, 8, "8 entries of 124 counted bytes fit in 1000");
    let too_large = leader.propose(Bytes::from(vec![0u8; 600]));
    assert!(matches!(too_large, Err(ProposeError::EntryTooLarge { .. })));
    assert_eq!(leader.metrics().proposals_refused, 2);
}

#[test]
fn a_follower_refuses_proposals_and_names_the_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let refused = cluster.propose(2, data("x"));
    assert_eq!(refused, Err(ProposeError::NotLeader { leader_hint: 1 }));
}

// ---- 5. commit ----

#[test]
fn a_new_leader_appends_an_empty_entry_of_its_term() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(2));
    let node = cluster.node(2);
    let noop = node.entry(node.last_index()).unwrap();
    assert_eq!(noop.term, node.term());
    assert!(noop.data.is_empty());
    assert_eq!(node.commit_index(), noop.index, "the no-op commits at once");
}

// ---- 6. reads ----

#[test]
fn a_read_waits_for_the_new_leaders_first_commit_and_a_quorum_confirmation() {
    let mut leader = lone_leader(|_| {});
    leader.read_index(7).unwrap();
    let noop = leader.last_index();
    let ready = leader.ready();
    assert!(
        ready.read_states.is_empty(),
        "the no-op is not committed yet"
    );
    leader.advance(ready.number);
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    assert_eq!(leader.commit_index(), noop);
    let ready = leader.ready();
    assert!(
        ready.read_states.is_empty(),
        "committed, but leadership not yet confirmed"
    );
    let confirmations: Vec<_> = ready
        .messages
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { read_sequence, .. } => Some((m.to, read_sequence)),
            _ => None,
        })
        .collect();
    assert_eq!(confirmations, [(2, 1), (3, 1)]);
    leader.advance(ready.number);
    let confirmed = MessageBody::HeartbeatResponse {
        read_sequence: 1,
        sent_at_tick: 0,
    };
    leader.step(message(3, 1, LEADER_TERM, confirmed)).unwrap();
    let ready = leader.ready();
    assert_eq!(ready.read_states.len(), 1);
    assert_eq!(ready.read_states[0].request_id, 7);
    assert_eq!(ready.read_states[0].index, noop);
}

#[test]
fn an_old_heartbeat_answer_does_not_confirm_a_newer_read() {
    let mut leader = lone_leader(|_| {});
    let noop = leader.last_index();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    leader.read_index(1).unwrap();
    leader.read_index(2).unwrap();
    let ready = leader.ready();
    leader.advance(ready.number);
    leader
        .step(message(
            2,
            1,
            LEADER_TERM,
            MessageBody::HeartbeatResponse {
                read_sequence: 1,
                sent_at_tick: 0,
            },
        ))
        .unwrap();
    let ready = leader.ready();
    let released: Vec<u64> = ready
        .read_states
        .iter()
        .map(|read| read.request_id)
        .collect();
    assert_eq!(released, [1], "read 2 needs a confirmation of sequence 2");
}

#[test]
fn a_deposed_leader_never_serves_a_stale_read() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.isolate(1);
    let new_leader = {
        cluster.tick_all(40);
        cluster.leader_among(&[2, 3]).expect("2 or 3 leads")
    };
    cluster.propose(new_leader, data("new")).unwrap();
    cluster.stabilize();
    // Node 1 may still believe it leads; a read there must not be served.
    if cluster.node(1).role() == Role::Leader {
        cluster.read(1);
    }
    cluster.stabilize();
    assert!(cluster.served_reads(1).is_empty());
    let request = cluster.read(new_leader).unwrap();
    cluster.tick_all(2);
    cluster.stabilize();
    let served = cluster.served_reads(new_leader);
    assert!(
        served
            .iter()
            .any(|read| read.request_id == request && read.state_length == 1)
    );
}

#[test]
fn a_follower_forwards_a_read_to_the_leader_and_serves_it_after_applying() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.propose(1, data("a")).unwrap();
    cluster.stabilize();
    let request = cluster.read(3).unwrap();
    cluster.stabilize();
    let served = cluster.served_reads(3);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].request_id, request);
    assert_eq!(served[0].state_length, 1, "the read saw the write");
    assert_eq!(cluster.node(1).metrics().reads_released, 1);
}

#[test]
fn a_follower_without_a_leader_refuses_reads() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert_eq!(cluster.read(2), None);
}

#[test]
fn lease_reads_are_served_without_a_confirmation_round() {
    let mut leader = lone_leader(|config| config.read_mode = ReadMode::LeaseBased);
    let noop = leader.last_index();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    // No lease yet: the first read takes the ReadIndex path.
    leader.read_index(4).unwrap();
    let ready = leader.ready();
    assert!(ready.read_states.is_empty());
    let heartbeat_tick = ready
        .messages
        .iter()
        .find_map(|m| match m.body {
            MessageBody::Heartbeat { sent_at_tick, .. } => Some(sent_at_tick),
            _ => None,
        })
        .expect("the read sent a confirmation round");
    leader.advance(ready.number);
    // Node 2 acknowledges that heartbeat: with the leader, a quorum; the lease starts then.
    let answer = MessageBody::HeartbeatResponse {
        read_sequence: 1,
        sent_at_tick: heartbeat_tick,
    };
    leader.step(message(2, 1, LEADER_TERM, answer)).unwrap();
    leader.read_index(5).unwrap();
    let ready = leader.ready();
    let released: Vec<u64> = ready
        .read_states
        .iter()
        .map(|read| read.request_id)
        .collect();
    assert_eq!(released, [4, 5], "read 5 needed no confirmation round");
    leader.advance(ready.number);
    // Once the lease runs out without new acknowledgements, reads need a round again.
    let lease_ticks = leader.config().election_timeout_ticks - 2;
    for _ in 0..lease_ticks {
        leader.tick();
    }
    leader.read_index(6).unwrap();
    let ready = leader.ready();
    assert!(ready.read_states.is_empty(), "the lease expired");
}

#[test]
fn lease_reads_require_check_quorum() {
    let mut config = Config::new(1, GROUP_ID);
    config.read_mode = ReadMode::LeaseBased;
    config.check_quorum = false;
    assert!(config.validate().is_err());
}

// ---- 7. snapshots and compaction ----

#[test]
fn compaction_happens_only_at_the_applied_index() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let applied = cluster.node(1).applied_index();
    let result = cluster.node_mut(1).compact(applied + 1, Bytes::new());
    assert_eq!(
        result,
        Err(CompactError::NotApplied {
            requested: applied + 1,
            applied
        })
    );
    cluster.compact(1);
    assert_eq!(cluster.node(1).first_index(), applied + 1);
    let again = cluster.node_mut(1).compact(applied, Bytes::new());
    assert_eq!(again, Err(CompactError::AlreadyCompacted(applied)));
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.crash(3);
    for write in 0..20 {
        cluster.propose(1, data(&format!("{write}"))).unwrap();
    }
    cluster.stabilize();
    cluster.compact(1);
    cluster.restart(3);
    cluster.tick_all(6);
    cluster.stabilize();
    assert_eq!(cluster.node(1).metrics().snapshots_sent, 1);
    assert_eq!(cluster.node(3).metrics().snapshots_installed, 1);
    assert_eq!(cluster.state(3), cluster.state(1));
    let compacted = cluster.node(1).snapshot().unwrap().meta.index;
    assert_eq!(
        cluster.durable(3).snapshot.as_ref().unwrap().meta.index,
        compacted
    );
    cluster.propose(1, data("after")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.state(3).last(), Some(&data("after")));
}

#[test]
fn a_failed_snapshot_sends_the_follower_back_to_probing_and_is_retried() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.crash(3);
    cluster.propose(1, data("a")).unwrap();
    cluster.stabilize();
    cluster.compact(1);
    cluster.restart(3);
    let snapshot_position = (0..100)
        .find_map(|_| {
            for id in [1, 2, 3] {
                cluster.tick(id);
            }
            cluster.process_all();
            let position = cluster
                .in_transit()
                .iter()
                .position(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }));
            if position.is_none() {
                cluster.deliver_round();
            }
            position
        })
        .expect("the leader sends a snapshot");
    assert!(matches!(
        cluster.node(1).progress(3).unwrap().state,
        ProgressState::Snapshot { .. }
    ));
    cluster.drop_one(snapshot_position);
    assert_eq!(
        cluster.node(1).progress(3).unwrap().state,
        ProgressState::Probe
    );
    cluster.tick_all(6);
    cluster.stabilize();
    assert_eq!(cluster.node(1).metrics().snapshots_sent, 2);
    assert_eq!(cluster.state(3), [data("a")]);
}

#[test]
fn a_received_snapshot_counts_as_persisted_once_its_ready_is_advanced() {
    let mut follower = Node::new(
        Config::new(2, GROUP_ID),
        InitialState::bootstrap(&[1, 2, 3]),
    )
    .unwrap();
    drain(&mut follower);
    let bootstrap = follower.last_index();
    assert_eq!(follower.persisted_index(), bootstrap);
    let install = |index| MessageBody::InstallSnapshot {
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index,
                term: 2,
                conf_state: ConfState::with_voters(&[1, 2, 3]),
            },
            data: Bytes::new(),
        },
    };
    follower.step(message(1, 2, 2, install(10))).unwrap();
    assert_eq!(follower.last_index(), 10);
    assert_eq!(
        follower.persisted_index(),
        bootstrap,
        "the durable log is still the old one"
    );
    let ready = follower.ready();
    assert!(ready.snapshot.is_some());
    // A newer snapshot arrives while the first is being written.
    follower.step(message(1, 2, 2, install(20))).unwrap();
    follower.advance(ready.number);
    assert_eq!(
        follower.persisted_index(),
        bootstrap,
        "the snapshot just written was replaced before it was confirmed"
    );
    let ready = follower.ready();
    assert_eq!(ready.snapshot.as_ref().map(|s| s.meta.index), Some(20));
    follower.advance(ready.number);
    assert_eq!(follower.persisted_index(), 20);
    assert!(!follower.has_ready());
}

#[test]
fn a_snapshot_older_than_the_commit_index_is_ignored() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    for write in 0..5 {
        cluster.propose(1, data(&format!("{write}"))).unwrap();
    }
    cluster.stabilize();
    let term = cluster.node(2).term();
    let stale = Snapshot {
        meta: SnapshotMeta {
            index: 2,
            term,
            conf_state: ConfState::with_voters(&[1, 2, 3]),
        },
        data: Bytes::new(),
    };
    let body = MessageBody::InstallSnapshot { snapshot: stale };
    cluster.node_mut(2).step(message(1, 2, term, body)).unwrap();
    assert_eq!(cluster.node(2).metrics().snapshots_stale, 1);
    assert_eq!(cluster.node(2).first_index(), 1, "the log was not replaced");
    assert_eq!(
        cluster.node(2).commit_index(),
        cluster.node(1).commit_index()
    );
}

// ---- 8. membership ----

#[test]
fn a_learner_receives_the_log_but_never_votes_nor_counts() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.add_joining_node(4, |_| {});
    cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::AddLearner(4))
        .unwrap();
    cluster.stabilize();
    cluster.tick_all(4);
    cluster.stabilize();
    assert!(cluster.node(1).membership().is_learner(4));
    cluster.propose(1, data("x")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.state(4), [data("x")], "the learner applies the log");
    // With two voters down, the leader plus the learner are not a quorum.
    cluster.isolate(2);
    cluster.isolate(3);
    let index = cluster.propose(1, data("y")).unwrap();
    cluster.stabilize();
    assert!(
        cluster.node(1).commit_index() < index,
        "the learner's copy does not count"
    );
    // A learner never campaigns.
    for _ in 0..100 {
        cluster.tick(4);
    }
    assert_eq!(cluster.node(4).role(), Role::Follower);
    assert_eq!(cluster.node(4).metrics().elections_started, 0);
}

#[test]
fn a_voter_is_added_then_another_removed_one_change_at_a_time() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.add_joining_node(4, |_| {});
    cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::AddVoter(4))
        .unwrap();
    let second = cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::RemoveNode(3));
    assert_eq!(second, Err(ProposeError::ConfChangeInProgress));
    cluster.stabilize();
    cluster.tick_all(4);
    cluster.stabilize();
    assert_eq!(cluster.node(1).membership().voters, [1, 2, 3, 4]);
    assert_eq!(cluster.node(4).membership().voters, [1, 2, 3, 4]);
    cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::RemoveNode(3))
        .unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(1).membership().voters, [1, 2, 4]);
    cluster.crash(3);
    cluster.isolate(2);
    let index = cluster.propose(1, data("x")).unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.node(1).commit_index(),
        index,
        "1 and 4 are a majority of 3 voters"
    );
}

#[test]
fn the_next_membership_change_waits_for_the_previous_ones_commit_not_its_application() {
    let mut leader = lone_leader(|_| {});
    let noop = leader.last_index();
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(noop)))
        .unwrap();
    let first = leader
        .propose_conf_change(ConfChange::AddLearner(4))
        .unwrap();
    assert_eq!(leader.pending_conf_change_index(), Some(first));
    assert_eq!(
        leader.propose_conf_change(ConfChange::AddLearner(5)),
        Err(ProposeError::ConfChangeInProgress),
        "the first change is not committed yet"
    );
    let ready = leader.ready();
    leader.advance(ready.number);
    leader
        .step(message(2, 1, LEADER_TERM, acknowledge(first)))
        .unwrap();
    assert_eq!(leader.commit_index(), first);
    assert!(
        leader.applied_index() < first,
        "committed, but not yet handed out for applying"
    );
    assert_eq!(leader.pending_conf_change_index(), None);
    let second = leader.propose_conf_change(ConfChange::AddLearner(5));
    assert_eq!(second, Ok(first + 1));
    assert!(leader.membership().is_learner(5));
}

#[test]
fn a_membership_change_is_pending_on_every_node_until_it_commits() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    assert_eq!(cluster.node(1).pending_conf_change_index(), None);
    cluster.add_joining_node(4, |_| {});
    let index = cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::AddLearner(4))
        .unwrap();
    assert_eq!(cluster.node(1).pending_conf_change_index(), Some(index));
    cluster.process(1);
    cluster.deliver_round();
    assert_eq!(
        cluster.node(2).pending_conf_change_index(),
        Some(index),
        "node 2 holds the change, and does not know it committed"
    );
    cluster.stabilize();
    for id in [1, 2, 3] {
        assert_eq!(cluster.node(id).pending_conf_change_index(), None);
    }
}

#[test]
fn invalid_membership_changes_are_refused() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let node = cluster.node_mut(1);
    assert!(matches!(
        node.propose_conf_change(ConfChange::AddVoter(2)),
        Err(ProposeError::InvalidConfChange { .. })
    ));
    assert!(matches!(
        node.propose_conf_change(ConfChange::AddLearner(3)),
        Err(ProposeError::InvalidConfChange { .. })
    ));
    assert!(matches!(
        node.propose_conf_change(ConfChange::RemoveNode(9)),
        Err(ProposeError::InvalidConfChange { .. })
    ));
}

#[test]
fn a_leader_that_removes_itself_steps_down_and_the_others_elect_a_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::RemoveNode(1))
        .unwrap();
    cluster.stabilize();
    let elections = cluster.node(1).metrics().elections_started;
    assert_eq!(cluster.node(1).role(), Role::Follower);
    assert_eq!(cluster.node(1).membership().voters, [2, 3]);
    let leader = {
        cluster.tick_all(60);
        cluster.leader_among(&[2, 3]).expect("a new leader")
    };
    cluster.propose(leader, data("x")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.state(2).last(), Some(&data("x")));
    for _ in 0..100 {
        cluster.tick(1);
    }
    assert_eq!(
        cluster.node(1).metrics().elections_started,
        elections,
        "a removed node never campaigns"
    );
}

// ---- 9. leadership transfer ----

#[test]
fn leadership_moves_at_once_to_an_up_to_date_follower() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let term = cluster.node(1).term();
    cluster.node_mut(1).transfer_leader(3).unwrap();
    assert_eq!(
        cluster.propose(1, data("x")),
        Err(ProposeError::TransferInProgress)
    );
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(3));
    assert_eq!(cluster.node(3).term(), term + 1);
}

#[test]
fn leadership_moves_to_a_lagging_follower_after_it_catches_up() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.isolate(3);
    for write in 0..10 {
        cluster.propose(1, data(&format!("{write}"))).unwrap();
    }
    cluster.stabilize();
    cluster.heal();
    cluster.node_mut(1).transfer_leader(3).unwrap();
    assert_eq!(cluster.leader(), Some(1), "not at once: node 3 lags");
    cluster.tick_all(4);
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(3));
    assert_eq!(cluster.state(3).len(), 10);
}

#[test]
fn a_transfer_to_an_unreachable_node_is_abandoned_after_an_election_timeout() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.isolate(3);
    cluster.node_mut(1).transfer_leader(3).unwrap();
    let timeout = cluster.node(1).config().election_timeout_ticks;
    cluster.tick_all(timeout);
    assert_eq!(cluster.node(1).transfer_target(), None);
    assert_eq!(cluster.node(1).metrics().transfers_aborted, 1);
    assert_eq!(cluster.leader(), Some(1));
    assert!(cluster.propose(1, data("x")).is_ok());
}

#[test]
fn only_a_leader_transfers_and_only_to_a_voter() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    assert_eq!(
        cluster.node_mut(2).transfer_leader(3),
        Err(TransferError::NotLeader { leader_hint: 1 })
    );
    assert_eq!(
        cluster.node_mut(1).transfer_leader(9),
        Err(TransferError::NotVoter(9))
    );
}

// ---- 10. hostile input ----

#[test]
fn hostile_messages_are_dropped_and_counted_without_panicking() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let term = cluster.node(2).term();
    let entry = |index, term| Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::new(),
    };
    let cases: Vec<(Message, &str)> = vec![
        (message(2, 2, term, MessageBody::TimeoutNow), "from itself"),
        (
            message(3, 9, term, MessageBody::TimeoutNow),
            "to someone else",
        ),
        (message(0, 2, term, MessageBody::TimeoutNow), "from node 0"),
        (
            message(
                1,
                2,
                term,
                MessageBody::Append {
                    prev_index: u64::MAX,
                    prev_term: term,
                    entries: vec![entry(0, term)],
                    commit: u64::MAX,
                },
            ),
            "index overflow",
        ),
        (
            message(
                1,
                2,
                term,
                MessageBody::Append {
                    prev_index: 1,
                    prev_term: 1,
                    entries: vec![entry(5, term)],
                    commit: 0,
                },
            ),
            "gap",
        ),
        (
            message(
                1,
                2,
                term,
                MessageBody::Append {
                    prev_index: 1,
                    prev_term: 1,
                    entries: vec![entry(2, term + 5)],
                    commit: 0,
                },
            ),
            "entry term beyond the message term",
        ),
        (
            message(
                1,
                2,
                term,
                MessageBody::Append {
                    prev_index: 1,
                    prev_term: 1,
                    entries: vec![Entry {
                        kind: EntryKind::ConfChange,
                        ..entry(2, term)
                    }],
                    commit: 0,
                },
            ),
            "undecodable membership change",
        ),
        (
            message(
                1,
                2,
                term,
                MessageBody::InstallSnapshot {
                    snapshot: Snapshot::default(),
                },
            ),
            "empty snapshot",
        ),
        (
            message(
                3,
                2,
                term,
                MessageBody::RequestVote {
                    pre_vote: false,
                    last_index: 1,
                    last_term: term + 1,
                    transfer: false,
                },
            ),
            "last term beyond campaign term",
        ),
    ];
    let count = cases.len() as u64;
    for (hostile, why) in cases {
        assert!(cluster.node_mut(2).step(hostile).is_err(), "{why}");
    }
    let metrics = cluster.node(2).metrics();
    assert_eq!(
        metrics.messages_misaddressed + metrics.messages_malformed,
        count
    );
    // The leader ignores answers from strangers and acknowledgements of entries it never had.
    let stranger = cluster
        .node_mut(1)
        .step(message(9, 1, term, acknowledge(1)));
    assert_eq!(stranger, Err(StepError::NonMember(9)));
    let absurd = cluster
        .node_mut(1)
        .step(message(2, 1, term, acknowledge(u64::MAX)));
    assert!(matches!(absurd, Err(StepError::Malformed { .. })));
    // And the group carries on.
    cluster.propose(1, data("still fine")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.state(2), [data("still fine")]);
}

#[test]
fn duplicated_and_reordered_messages_change_nothing() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.set_faults(LinkFaults {
        duplicate_per_million: 500_000,
        delay_per_million: 500_000,
        ..LinkFaults::default()
    });
    for write in 0..30 {
        cluster.propose(1, data(&format!("{write}"))).unwrap();
        cluster.tick_all(1);
    }
    cluster.set_faults(LinkFaults::default());
    cluster.tick_all(4);
    cluster.stabilize();
    let expected: Vec<Bytes> = (0..30).map(|write| data(&format!("{write}"))).collect();
    for id in [1, 2, 3] {
        assert_eq!(cluster.state(id), expected.as_slice());
    }
}

mod hostile_fuzz {
    use super::*;
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = MessageBody> {
        let small = 0..6u64;
        let entries =
            proptest::collection::vec((0..8u64, 0..6u64, any::<bool>()), 0..4).prop_map(|raw| {
                raw.into_iter()
                    .map(|(index, term, conf)| Entry {
                        index,
                        term,
                        kind: if conf {
                            EntryKind::ConfChange
                        } else {
                            EntryKind::Normal
                        },
                        data: if conf {
                            ConfChange::AddVoter(4).encode()
                        } else {
                            Bytes::new()
                        },
                    })
                    .collect::<Vec<_>>()
            });
        prop_oneof![
            (any::<bool>(), small.clone(), small.clone(), any::<bool>()).prop_map(
                |(pre_vote, last_index, last_term, transfer)| MessageBody::RequestVote {
                    pre_vote,
                    last_index,
                    last_term,
                    transfer
                }
            ),
            (any::<bool>(), any::<bool>())
                .prop_map(|(pre_vote, granted)| MessageBody::VoteResponse { pre_vote, granted }),
            (small.clone(), small.clone(), entries, small.clone()).prop_map(
                |(prev_index, prev_term, entries, commit)| MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit
                }
            ),
            (small.clone(), any::<bool>(), small.clone(), small.clone()).prop_map(
                |(index, reject, reject_hint, hint_term)| MessageBody::AppendResponse {
                    index,
                    reject,
                    reject_hint,
                    hint_term
                }
            ),
            (small.clone(), small.clone()).prop_map(|(commit, read_sequence)| {
                MessageBody::Heartbeat {
                    commit,
                    read_sequence,
                    sent_at_tick: read_sequence,
                }
            }),
            small
                .clone()
                .prop_map(|read_sequence| MessageBody::HeartbeatResponse {
                    read_sequence,
                    sent_at_tick: read_sequence,
                }),
            (small.clone(), small.clone()).prop_map(|(index, term)| MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        conf_state: ConfState::with_voters(&[1, 2, 3]),
                    },
                    data: raft_core::testing::encode_state(&[]),
                }
            }),
            Just(MessageBody::TimeoutNow),
            small
                .clone()
                .prop_map(|request_id| MessageBody::ReadIndex { request_id }),
            (small.clone(), small).prop_map(|(request_id, index)| MessageBody::ReadIndexResponse {
                request_id,
                index
            }),
        ]
    }

    /// Answers to forged senders (ids 0 or 4) go nowhere.
    fn deliver(nodes: &mut [Node], wire: &mut Vec<Message>) {
        for message in wire.drain(..) {
            if (1..=3).contains(&message.to) {
                let _ = nodes[(message.to - 1) as usize].step(message);
            }
        }
    }

    fn hostile_message() -> impl Strategy<Value = Message> {
        (0..5u64, 0..5u64, 0..8u64, body(), 0..3u64).prop_map(|(from, to, term, body, group)| {
            Message {
                group_id: if group == 0 { 2 } else { GROUP_ID },
                from,
                to,
                term,
                body,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Arbitrary messages (forged by a buggy or malicious peer) thrown at every node of a
        /// running group never panic; the harness's invariant checks keep running.
        #[test]
        fn arbitrary_messages_never_panic(messages in proptest::collection::vec(hostile_message(), 1..40)) {
            // Raw nodes, not the checked harness: forged messages may break Raft's safety
            // (Raft does not defend against Byzantine peers), but must never crash a node.
            let mut nodes: Vec<Node> = (1..=3)
                .map(|id| Node::new(Config::new(id, GROUP_ID), InitialState::bootstrap(&[1, 2, 3])).unwrap())
                .collect();
            let mut wire = Vec::new();
            let handle = |nodes: &mut Vec<Node>, wire: &mut Vec<Message>| {
                for node in nodes.iter_mut() {
                    if node.has_ready() {
                        let ready = node.ready();
                        wire.extend(ready.messages);
                        wire.extend(ready.persisted_messages);
                        node.advance(ready.number);
                    }
                }
            };
            for _ in 0..30 {
                nodes[0].tick();
                handle(&mut nodes, &mut wire);
                deliver(&mut nodes, &mut wire);
            }
            for hostile in messages {
                if (1..=3).contains(&hostile.to) {
                    let _ = nodes[(hostile.to - 1) as usize].step(hostile);
                }
                for node in nodes.iter_mut() {
                    node.tick();
                }
                handle(&mut nodes, &mut wire);
                deliver(&mut nodes, &mut wire);
            }
        }
    }
}
