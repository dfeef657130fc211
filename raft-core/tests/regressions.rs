//! Regression tests from an adversarial review of raft-core: each story reproduces a bug that
//! was found and fixed (the comments describe the bug as it was).

use bytes::Bytes;
use raft_core::testing::{Cluster, GROUP_ID, acknowledge, drain, leader_of_three, message};
use raft_core::{
    ConfChange, ConfState, Config, INDEX_AND_TERM_MAX, InitialState, MessageBody, Node, ReadMode,
    Role, Snapshot, SnapshotMeta,
};

fn data(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

// ---- Finding 1: the answer to a stale-term Append/Heartbeat acknowledges the whole log ----

/// Node 2 holds an uncommitted entry of term 3 at index 6 that nobody else has; node 1 leads
/// term 4 with a different entry (its no-op) at index 6, committed with node 3. A delayed
/// heartbeat that node 1 sent back when it led term 2 reaches node 2, now at term 4. Node 2
/// answers `AppendResponse { index: last_index, reject: false }` in term 4 (node.rs:1083-1091),
/// which leader 1 takes as a genuine acknowledgement: match_index(2) = 6, although node 2's
/// entry 6 differs from the leader's. The next heartbeat carries commit 6 to node 2, which
/// then commits and applies its own, different entry 6.
/// Builds the scenario above up to the delivery of the stale heartbeat's answer.
fn stale_term_answer_scenario() -> Cluster {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1)); // term 2
    let term_of_1 = cluster.node(1).term();
    assert_eq!(term_of_1, 2);
    // A heartbeat node 1 sends in term 2; this copy will be delivered late.
    let stale_heartbeat = message(
        1,
        2,
        term_of_1,
        MessageBody::Heartbeat {
            commit: 0,
            read_sequence: 0,
            sent_at_tick: 0,
        },
    );

    // Term 3: node 2 leads (leadership transfer), its no-op 5 reaches everyone.
    cluster.node_mut(1).transfer_leader(2).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(2).role(), Role::Leader);
    assert_eq!(cluster.node(2).term(), 3);
    assert_eq!(cluster.node(3).commit_index(), 5);

    // Node 2 is cut off and appends an entry of term 3 at index 6 that nobody else gets.
    cluster.isolate(2);
    cluster.propose(2, data("divergent")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(2).last_index(), 6);

    // Term 4: node 1 leads with node 3's vote; its no-op at index 6 commits.
    for _ in 0..10 {
        cluster.tick(3);
    }
    assert!(cluster.elect(1));
    assert_eq!(cluster.node(1).term(), 4);
    assert_eq!(cluster.node(1).commit_index(), 6);
    assert_eq!(cluster.node(1).term_at(6), Some(4));

    // Node 2 learns term 4 without receiving node 1's appends: its own term-3 heartbeat to
    // node 3 is answered in term 4.
    cluster.heal();
    cluster.cut(1, 2);
    cluster.tick(2);
    cluster.tick(2);
    cluster.stabilize();
    assert_eq!(cluster.node(2).term(), 4);
    assert_eq!(cluster.node(2).role(), Role::Follower);
    assert_eq!(cluster.node(2).term_at(6), Some(3), "still divergent");

    // The old heartbeat arrives; node 2's answer reaches leader 1.
    cluster.heal();
    cluster.inject(stale_heartbeat);
    cluster.stabilize();
    cluster
}

#[test]
fn stale_term_answer_does_not_acknowledge_a_divergent_log() {
    let cluster = stale_term_answer_scenario();
    let match_of_2 = cluster.node(1).progress(2).unwrap().match_index;
    assert!(
        match_of_2 < 6,
        "leader 1 believes node 2 matches its log up to {match_of_2}, but node 2's entry 6 is of term 3"
    );
}

/// The consequence: the next heartbeat carries `commit = min(commit, match) = 6` to node 2,
/// which commits and applies its own entry 6 ("divergent", term 3) where nodes 1 and 3
/// applied leader 1's no-op (term 4). The harness panics with "applied a different entry".
/// Node 2 is also stuck: its rejections of later appends look stale to the leader
/// (`rejected_index <= match_index`, progress.rs:193).
#[test]
fn stale_term_answer_does_not_make_a_follower_apply_a_divergent_entry() {
    let mut cluster = stale_term_answer_scenario();
    cluster.tick_all(4);
    cluster.stabilize();
    cluster.propose(1, data("after")).unwrap();
    cluster.tick_all(4);
    cluster.stabilize();
    assert_eq!(cluster.state(2), cluster.state(1));
}

// ---- Finding 2: lease reads are served past the end of the lease ----

/// With `ReadMode::LeaseBased`, the lease is "I am still leader", and a leader only steps down
/// at the check-quorum tick after a full election timeout without a quorum. Acknowledgements
/// counted at check N keep it leading until check N+1, up to two election timeouts after the
/// followers last heard from it, while the followers may elect a new leader one election
/// timeout after. Here node 1 is cut off right after its election; nodes 2 and 3 elect a
/// leader and commit a write while node 1 still leads and serves a stale lease read.
#[test]
fn lease_read_is_not_served_by_a_leader_whose_lease_has_expired() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], |config| {
        config.read_mode = ReadMode::LeaseBased;
    });
    assert!(cluster.elect(1));
    cluster.isolate(1);
    let mut new_leader = None;
    for _ in 0..19 {
        cluster.tick_all(1);
        new_leader = cluster.leader_among(&[2, 3]);
        if new_leader.is_some() {
            break;
        }
    }
    let new_leader = new_leader.expect("2 or 3 leads within 19 ticks");
    cluster.stabilize();
    cluster.propose(new_leader, data("new")).unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.state(new_leader),
        [data("new")],
        "the write completed"
    );
    assert_eq!(
        cluster.node(1).role(),
        Role::Leader,
        "node 1 still believes it leads"
    );
    // The harness panics here: the read misses the completed write.
    cluster.read(1);
    cluster.stabilize();
}

/// A leader that has sent `TimeoutNow` keeps serving lease reads although the target may
/// already have been elected (a transfer election ignores stickiness, so there is no lease
/// protection at all).
#[test]
fn lease_read_is_not_served_during_a_leadership_transfer() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], |config| {
        config.read_mode = ReadMode::LeaseBased;
    });
    assert!(cluster.elect(1));
    cluster.node_mut(1).transfer_leader(2).unwrap();
    // TimeoutNow goes out; then node 1 is cut off from the others.
    cluster.process(1);
    cluster.deliver_round();
    cluster.isolate(1);
    cluster.stabilize();
    assert_eq!(cluster.node(2).role(), Role::Leader);
    cluster.propose(2, data("new")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(1).role(), Role::Leader);
    cluster.read(1);
    cluster.stabilize();
}

// ---- Finding 3: panics reachable from hostile input ----

/// `AppendResponse { reject: true, hint_term: 0, reject_hint: huge }` to a leader that
/// replicates to the sender: `Progress::reject` (progress.rs:197) sets next_index beyond the
/// log, `send_append` finds no term there and calls `send_snapshot`, which hits
/// `unreachable!` when no snapshot exists (node.rs:1491).
#[test]
fn hostile_reject_hint_beyond_the_log_does_not_panic_the_leader() {
    let mut leader = leader_of_three(|_| {});
    let term = leader.term();
    let noop = leader.last_index();
    leader.step(message(2, 1, term, acknowledge(noop))).unwrap();
    drain(&mut leader);
    let index = leader.propose(data("x")).unwrap();
    drain(&mut leader);
    let hostile = MessageBody::AppendResponse {
        index,
        reject: true,
        reject_hint: 1_000,
        hint_term: 0,
    };
    let _ = leader.step(message(2, 1, term, hostile));
    drain(&mut leader);
}

/// Same message in probe state with `reject_hint: u64::MAX`: `probe_from + 1` overflows
/// (progress.rs:203; panics in debug builds, wraps in release).
#[test]
fn hostile_reject_hint_u64_max_does_not_overflow() {
    let mut leader = leader_of_three(|_| {});
    let term = leader.term();
    drain(&mut leader);
    let next = leader.progress(2).unwrap().next_index;
    let hostile = MessageBody::AppendResponse {
        index: next - 1,
        reject: true,
        reject_hint: u64::MAX,
        hint_term: 0,
    };
    let _ = leader.step(message(2, 1, term, hostile));
    drain(&mut leader);
}

/// An `InstallSnapshot` whose index is `u64::MAX` passes `validate` and is installed; the
/// next `ready()` computes `stable_index + 1` (log.rs:228) and panics (overflow in debug,
/// out-of-range slice in release).
#[test]
fn hostile_snapshot_at_u64_max_does_not_panic_the_follower() {
    let mut follower = Node::new(
        Config::new(2, GROUP_ID),
        InitialState::bootstrap(&[1, 2, 3]),
    )
    .unwrap();
    drain(&mut follower);
    let term = follower.term();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: u64::MAX,
            term,
            conf_state: ConfState::with_voters(&[1, 2, 3]),
        },
        data: Bytes::new(),
    };
    let _ = follower.step(message(
        1,
        2,
        term,
        MessageBody::InstallSnapshot { snapshot },
    ));
    drain(&mut follower);
}

/// A message of term `u64::MAX` pins the node at that term; its next election does not raise
/// the term (`saturating_add`, node.rs:1600) but overwrites the vote it already cast in that
/// term: two votes in one term.
#[test]
fn a_node_never_votes_twice_in_one_term_even_at_u64_max() {
    let mut config = Config::new(2, GROUP_ID);
    config.pre_vote = false;
    let mut node = Node::new(config, InitialState::bootstrap(&[1, 2, 3])).unwrap();
    drain(&mut node);
    let request = MessageBody::RequestVote {
        pre_vote: false,
        last_index: 100,
        last_term: 1,
        transfer: false,
    };
    // Terms that high are refused outright now...
    let absurd = node.step(message(3, 2, u64::MAX, request.clone()));
    assert!(absurd.is_err());
    assert_eq!(node.term(), 1);
    // ... and a node at the highest accepted term never campaigns (it would vote twice).
    node.step(message(3, 2, INDEX_AND_TERM_MAX, request))
        .unwrap();
    drain(&mut node);
    assert_eq!((node.term(), node.vote()), (INDEX_AND_TERM_MAX, 3));
    for _ in 0..40 {
        node.tick();
    }
    assert!(
        node.term() == INDEX_AND_TERM_MAX && node.vote() == 3,
        "voted for 3 and then for itself in term {}",
        node.term()
    );
}

// ---- Finding 4: a leader that removes itself could leave the group unable to elect ----

/// Membership changes used to take effect when applied, and a leader stepped down as soon as it
/// applied its own removal. In group {1, 2}, when the one append telling node 2 that the removal
/// committed was lost, node 2 (still counting {1, 2}) needed node 1's vote, and node 1 (no
/// longer a voter, with a longer log) refused it and never campaigned: no leader ever again.
/// Changes now take effect when appended (Raft thesis, 4.1): node 2 holds the removal, so it
/// counts only itself.
#[test]
fn a_group_survives_its_leader_removing_itself_when_the_hand_over_is_lost() {
    let mut cluster = Cluster::new(&[1, 2]);
    assert!(cluster.elect(1));
    cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::RemoveNode(1))
        .unwrap();
    cluster.process(1); // the removal goes to node 2
    cluster.deliver_round();
    cluster.process(2); // node 2 persists and acknowledges
    cluster.deliver_round(); // the removal commits on node 1, which hands over and steps down
    cluster.process(1);
    assert_ne!(cluster.node(1).role(), Role::Leader);
    // Everything node 1 sent on its way out (the commit index, TimeoutNow) is lost.
    while !cluster.in_transit().is_empty() {
        cluster.drop_one(0);
    }
    for _ in 0..100 {
        cluster.tick_all(1);
    }
    assert_eq!(cluster.node(2).role(), Role::Leader);
    assert_eq!(cluster.node(2).membership().voters, [2]);
}

/// The other half: the leader that removed itself crashes before the removal reaches anyone.
/// After a restart its log holds the removal (so it is not a voter of its newest membership)
/// and is longer than node 2's (so it refuses node 2's vote requests), while node 2 still
/// needs its vote under {1, 2}. Node 1 may campaign while the removal is uncommitted; it wins
/// under {2} with node 2's vote, commits the removal, and hands over.
#[test]
fn a_leader_that_crashed_before_its_removal_spread_still_lets_the_group_elect() {
    let mut cluster = Cluster::new(&[1, 2]);
    assert!(cluster.elect(1));
    cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::RemoveNode(1))
        .unwrap();
    cluster.process(1);
    while !cluster.in_transit().is_empty() {
        cluster.drop_one(0);
    }
    cluster.crash(1);
    cluster.restart(1);
    assert!(!cluster.node(1).membership().is_voter(1));
    for _ in 0..200 {
        cluster.tick_all(1);
        if cluster.leader() == Some(2) && cluster.node(2).membership().voters == [2] {
            break;
        }
    }
    assert_eq!(cluster.leader(), Some(2));
    assert_eq!(cluster.node(2).membership().voters, [2]);
    cluster.propose(2, data("after")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.state(2).last(), Some(&data("after")));
}

// ---- Finding 6: a node that cannot campaign stays sticky to a dead leader ----

/// `tick_election` resets `election_elapsed_ticks` whenever the timer fires, even for a node
/// that is not promotable (node.rs:629), and leaves `leader_id` set. Leader stickiness
/// (node.rs:1046-1048) is `leader_id != 0 && elapsed < election_timeout`, so such a node keeps
/// ignoring vote requests for `election_timeout` ticks out of every randomized timeout,
/// forever (always, when the randomized timeout equals the election timeout). That matters
/// when its view of the membership is stale: here node 3 still believes it is a learner while
/// the group has made it a voter, and a candidate needs its vote (the random exploration hit
/// this: a stuck group whose only possible voter ignored the candidate).
/// etcd resets the timer only for promotable nodes.
#[test]
fn a_node_that_cannot_campaign_stops_honouring_a_dead_leader() {
    let initial = InitialState {
        bootstrap: ConfState {
            voters: vec![1, 2],
            learners: vec![3],
        },
        ..InitialState::default()
    };
    let mut node = Node::new(Config::new(3, GROUP_ID), initial).unwrap();
    drain(&mut node);
    let term = node.term() + 1;
    node.step(message(
        1,
        3,
        term,
        MessageBody::Heartbeat {
            commit: 0,
            read_sequence: 0,
            sent_at_tick: 0,
        },
    ))
    .unwrap();
    drain(&mut node);
    // The leader dies: ten election timeouts pass without a word from it.
    for _ in 0..100 {
        node.tick();
    }
    let mut ignored = 0;
    for _ in 0..40 {
        node.tick();
        let before = node.metrics().votes_ignored_by_stickiness;
        let last_index = node.last_index() + 10;
        let _ = node.step(message(
            2,
            3,
            node.term() + 1,
            MessageBody::RequestVote {
                pre_vote: true,
                last_index,
                last_term: node.term(),
                transfer: false,
            },
        ));
        drain(&mut node);
        ignored += node.metrics().votes_ignored_by_stickiness - before;
    }
    assert_eq!(
        ignored, 0,
        "pre-votes ignored for a leader unheard of for over 100 ticks"
    );
}

// ---- Finding 5: transfer_leader postpones check-quorum indefinitely ----

/// `transfer_leader` resets `election_elapsed_ticks` (node.rs:871), which is also the
/// check-quorum clock. A balancer that retries a transfer more often than once per election
/// timeout keeps an isolated leader leading for ever (and, with lease reads, serving stale
/// reads for ever).
#[test]
fn an_isolated_leader_steps_down_even_if_transfers_are_retried() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.isolate(1);
    for _ in 0..20 {
        cluster.tick_all(5);
        if cluster.node(1).role() == Role::Leader {
            let _ = cluster.node_mut(1).transfer_leader(2);
        }
    }
    assert_ne!(
        cluster.node(1).role(),
        Role::Leader,
        "isolated for 100 ticks (10 election timeouts) and still leading"
    );
}

// ---- Found by the property tests: messages sent under a term not yet durable ----

/// A single voter wins its election at once. Its appends used to go out before its new term
/// was durable: after a crash it came back in the older term, won the same term again and sent
/// a different entry under the same index and term (log matching broken on its learner). Now
/// no message leaves before the term and vote it carries are durable.
#[test]
fn a_leader_elected_at_once_sends_nothing_before_its_term_is_durable() {
    let mut config = Config::new(1, GROUP_ID);
    config.pre_vote = false;
    let initial = InitialState {
        bootstrap: ConfState {
            voters: vec![1],
            learners: vec![2],
        },
        ..InitialState::default()
    };
    let mut node = Node::new(config, initial).unwrap();
    let bootstrap = node.ready();
    node.advance(bootstrap.number);
    while node.role() != Role::Leader {
        node.tick();
    }
    node.propose(data("x")).unwrap();
    let ready = node.ready();
    assert_eq!(ready.hard_state.unwrap().term, node.term());
    assert!(ready.messages.is_empty(), "the new term is not durable yet");
    assert!(
        ready
            .persisted_messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::Append { .. }))
    );
    node.advance(ready.number);
    let acknowledged = MessageBody::AppendResponse {
        index: node.last_index(),
        reject: false,
        reject_hint: 0,
        hint_term: 0,
    };
    node.step(message(2, 1, node.term(), acknowledged)).unwrap();
    node.propose(data("y")).unwrap();
    let ready = node.ready();
    assert!(
        ready
            .messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::Append { .. })),
        "once the term is durable, appends go out before the entries are"
    );
}

/// Found by the property tests with membership changes: node 1, removed and re-added while it
/// was away, campaigned under its stale view {1, 3}, so it never wrote to node 4, the only
/// voter that could lead {1, 4}. Node 4's vote requests arrived at a lower term and were
/// ignored, and both terms grew at the same pace forever. A stale vote request is now refused
/// in the receiver's term, which the candidate adopts.
#[test]
fn a_stale_vote_request_is_refused_in_the_newer_term() {
    let mut config = Config::new(1, GROUP_ID);
    config.pre_vote = false;
    let mut node = Node::new(config, InitialState::bootstrap(&[1, 2, 3])).unwrap();
    drain(&mut node);
    let higher = MessageBody::Heartbeat {
        commit: 0,
        read_sequence: 0,
        sent_at_tick: 0,
    };
    node.step(message(2, 1, 9, higher)).unwrap();
    drain(&mut node);
    let stale_request = MessageBody::RequestVote {
        pre_vote: false,
        last_index: 50,
        last_term: 5,
        transfer: false,
    };
    node.step(message(4, 1, 5, stale_request)).unwrap();
    let answers = drain(&mut node);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].to, 4);
    assert_eq!(answers[0].term, 9, "the candidate learns the newer term");
    assert!(matches!(
        answers[0].body,
        MessageBody::VoteResponse { granted: false, .. }
    ));
}

/// Found by the property tests with membership changes: without pre-vote and check-quorum, a
/// stale append was ignored silently (as etcd does, relying on candidates' higher-term vote
/// requests to reach the stale leader). A leader outside the others' view of the membership
/// never received those requests and led its stale term forever. Stale appends and heartbeats
/// are now always answered in the newer term.
#[test]
fn a_stale_leader_hears_of_the_newer_term_even_without_check_quorum() {
    let mut config = Config::new(2, GROUP_ID);
    config.pre_vote = false;
    config.check_quorum = false;
    let mut node = Node::new(config, InitialState::bootstrap(&[1, 2, 3])).unwrap();
    drain(&mut node);
    let heartbeat = |sent_at_tick| MessageBody::Heartbeat {
        commit: 0,
        read_sequence: 0,
        sent_at_tick,
    };
    node.step(message(3, 2, 9, heartbeat(0))).unwrap();
    drain(&mut node);
    node.step(message(4, 2, 3, heartbeat(1))).unwrap();
    let answers = drain(&mut node);
    assert_eq!(answers.len(), 1);
    assert_eq!((answers[0].to, answers[0].term), (4, 9));
    assert!(matches!(
        answers[0].body,
        MessageBody::AppendResponse { index: 0, .. }
    ));
}

// ---- Second review: a lease read survived a follower's restart ----

/// Leader 1 holds a lease acknowledged by node 2; node 3 lost contact with 1 and keeps
/// pre-voting, refused by node 2's stickiness. Then {1} is cut from {2, 3} and node 2 crashes
/// and restarts. A restarted node knew no leader, so stickiness no longer held it back: it voted
/// for node 3 at once, and node 3 committed a write while node 1's lease, counted from node 2's
/// acknowledgement, still held: node 1 served a read that missed the write (the harness checks
/// every read). A restarted node with lease reads now honours a possible lease for one election
/// timeout. Every node ticks at the same rate: the documented clock assumption holds.
#[test]
fn a_lease_read_is_not_stale_after_a_follower_restarts() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], |config| {
        config.read_mode = ReadMode::LeaseBased;
    });
    assert!(cluster.elect(1));
    cluster.propose(1, data("a")).unwrap();
    cluster.stabilize();
    cluster.cut(1, 3);
    cluster.tick_all(25);
    assert_eq!(cluster.node(1).role(), Role::Leader);
    cluster.partition(&[1]);
    cluster.crash(2);
    cluster.restart(2);
    for _ in 0..40 {
        cluster.tick_all(1);
        if let Some(new_leader) = cluster.leader_among(&[2, 3]) {
            cluster.stabilize();
            if cluster.propose(new_leader, data("b")).is_ok() {
                cluster.stabilize();
                break;
            }
        }
    }
    // Whether node 1 still leads or has stepped down, a read there never misses "b".
    if cluster.node(1).role() == Role::Leader {
        cluster.read(1);
        cluster.tick_all(3);
        cluster.stabilize();
    }
    assert!(
        cluster.leader_among(&[2, 3]).is_some(),
        "the majority side elects"
    );
}

// ---- Found by the cluster simulation (seed 7099): a lost snapshot and an idle leader ----

/// The leader compacted its log and sent follower 3 a snapshot, which the runtime reported
/// delivered (it had queued it) but the network lost. Follower 3 then answered heartbeats,
/// and the leader, seeing it behind, called `send_append(.., false)`: with nothing new after
/// the snapshot to send, it sent nothing. With no new proposals the follower stayed behind
/// for good. Now the heartbeat answer of a follower that is behind always gets an append, empty
/// if need be, whose rejection leads the leader to the snapshot again.
/// The `prev_index` of the newest append `leader` sent to `to` among `sent`.
fn prev_index_sent_to(sent: &[raft_core::Message], to: u64) -> Option<u64> {
    sent.iter().rev().find_map(|m| match m.body {
        MessageBody::Append { prev_index, .. } if m.to == to => Some(prev_index),
        _ => None,
    })
}

fn rejection_of(prev_index: u64) -> MessageBody {
    MessageBody::AppendResponse {
        index: prev_index,
        reject: true,
        reject_hint: 0,
        hint_term: 0,
    }
}

#[test]
fn an_idle_leader_probes_a_follower_whose_snapshot_was_lost() {
    let mut leader = leader_of_three(|_| {});
    let term = leader.term();
    for text in ["a", "b", "c"] {
        leader.propose(data(text)).unwrap();
    }
    let last = leader.last_index();
    drain(&mut leader);
    leader.step(message(2, 1, term, acknowledge(last))).unwrap();
    drain(&mut leader);
    assert_eq!(leader.commit_index(), last);
    let applied = leader.applied_index();
    leader.compact(applied, data("state")).unwrap();
    let heartbeat_answer = MessageBody::HeartbeatResponse {
        read_sequence: 0,
        sent_at_tick: 0,
    };
    // Follower 3, which has nothing, is heard from: the leader sends it the snapshot.
    leader
        .step(message(3, 1, term, heartbeat_answer.clone()))
        .unwrap();
    let sent = drain(&mut leader);
    let is_snapshot_to_3 =
        |m: &raft_core::Message| m.to == 3 && matches!(m.body, MessageBody::InstallSnapshot { .. });
    assert!(sent.iter().any(is_snapshot_to_3), "{sent:?}");
    // The runtime queued it and reports it delivered; the network loses it.
    leader.report_snapshot(3, true);

    // Follower 3 answers a heartbeat: the leader probes it, even with no new entry.
    leader.step(message(3, 1, term, heartbeat_answer)).unwrap();
    let sent = drain(&mut leader);
    let probe = prev_index_sent_to(&sent, 3).expect("the leader probes the follower");
    // The follower rejects the probe: the snapshot goes again.
    leader
        .step(message(3, 1, term, rejection_of(probe)))
        .unwrap();
    let sent = drain(&mut leader);
    assert!(sent.iter().any(is_snapshot_to_3), "{sent:?}");
}
