//! One test per rule of the Raft paper, sections 5.1 to 5.4, told as short stories on the
//! simulated network of `raft_core::testing`.

use bytes::Bytes;
use raft_core::testing::{Cluster, FilterId, GROUP_ID, message};
use raft_core::{
    Config, Entry, EntryKind, HardState, InitialState, Message, MessageBody, Node, Role,
};

fn data(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

/// Plain Raft as in the paper: no pre-vote, no check-quorum.
fn plain(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::new(),
    }
}

fn is_append(message: &Message) -> bool {
    matches!(message.body, MessageBody::Append { .. })
}

/// Ticks `id` alone, settling after each tick, until it leads: it campaigns again each time its
/// election timeout passes without a win.
fn campaign_until_leader(cluster: &mut Cluster, id: u64) {
    for _ in 0..100 {
        if cluster.node(id).role() == Role::Leader {
            return;
        }
        cluster.tick(id);
        cluster.stabilize();
    }
    panic!("node {id} never won an election");
}

/// A lone node restored with the given log and term, in a group of three.
fn node_with_log(id: u64, terms: &[u64], term: u64) -> Node {
    let mut config = Config::new(id, GROUP_ID);
    plain(&mut config);
    let entries = terms
        .iter()
        .enumerate()
        .map(|(position, term)| entry(position as u64 + 1, *term))
        .collect();
    let initial = InitialState {
        hard_state: HardState {
            term,
            vote: 0,
            commit: 0,
        },
        entries,
        ..InitialState::bootstrap(&[1, 2, 3])
    };
    Node::new(config, initial).unwrap()
}

// ---- 5.1: Raft basics ----

#[test]
fn every_node_starts_as_a_follower() {
    let cluster = Cluster::new(&[1, 2, 3]);
    for id in cluster.ids() {
        let node = cluster.node(id);
        assert_eq!(node.role(), Role::Follower);
        assert_eq!(node.leader_id(), 0);
        // The initial membership is in the log: one committed entry per voter, of term 1.
        assert_eq!(
            (node.term(), node.commit_index(), node.last_index()),
            (1, 3, 3)
        );
    }
}

#[test]
fn a_node_that_sees_a_higher_term_adopts_it_and_follows() {
    for start_as in [Role::Follower, Role::Candidate, Role::Leader] {
        let mut cluster = Cluster::with_config(&[1, 2, 3], plain);
        match start_as {
            Role::Leader => assert!(cluster.elect(1)),
            Role::Candidate => {
                cluster.isolate(1);
                while cluster.node(1).role() != Role::Candidate {
                    cluster.tick(1);
                }
            }
            _ => {}
        }
        let term = cluster.node(1).term() + 5;
        let heartbeat = MessageBody::Heartbeat {
            commit: 0,
            read_sequence: 0,
            sent_at_tick: 0,
        };
        cluster
            .node_mut(1)
            .step(message(2, 1, term, heartbeat))
            .unwrap();
        assert_eq!(cluster.node(1).term(), term, "from {start_as:?}");
        assert_eq!(cluster.node(1).role(), Role::Follower, "from {start_as:?}");
        assert_eq!(cluster.node(1).leader_id(), 2);
    }
}

#[test]
fn a_message_of_a_stale_term_is_ignored() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], plain);
    assert!(cluster.elect(2));
    let old_term = cluster.node(2).term();
    cluster.isolate(2);
    assert!(cluster.elect(1));
    cluster.heal();
    cluster.tick_all(2);
    cluster.stabilize();
    let term = cluster.node(2).term();
    assert!(term > old_term);
    let last_index = cluster.node(2).last_index();
    let stale_append = MessageBody::Append {
        prev_index: last_index,
        prev_term: old_term,
        entries: vec![entry(last_index + 1, old_term)],
        commit: 0,
    };
    cluster
        .node_mut(2)
        .step(message(3, 2, old_term, stale_append))
        .unwrap();
    assert_eq!(
        cluster.node(2).last_index(),
        last_index,
        "the stale entry was not appended"
    );
    assert_eq!(cluster.node(2).leader_id(), 1);
    assert_eq!(cluster.node(2).metrics().messages_stale_term, 1);
}

// ---- 5.2: leader election ----

#[test]
fn a_leader_sends_heartbeats_every_interval() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], plain);
    assert!(cluster.elect(1));
    let interval = cluster.node(1).config().heartbeat_interval_ticks;
    for _ in 0..interval {
        cluster.tick(1);
    }
    cluster.process(1);
    let heartbeats = cluster
        .in_transit()
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .map(|m| m.to)
        .collect::<Vec<_>>();
    assert_eq!(heartbeats, [2, 3]);
}

#[test]
fn a_follower_that_hears_nothing_campaigns_in_a_new_term_voting_for_itself() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], plain);
    let timeout = cluster.node(1).config().election_timeout_ticks;
    for _ in 0..timeout * 2 {
        cluster.tick(1);
    }
    assert_eq!(cluster.node(1).role(), Role::Candidate);
    assert_eq!(
        cluster.node(1).term(),
        2,
        "one more than the bootstrap term"
    );
    assert_eq!(cluster.node(1).vote(), 1);
    cluster.process(1);
    let requests: Vec<_> = cluster
        .in_transit()
        .iter()
        .filter(|m| {
            matches!(
                m.body,
                MessageBody::RequestVote {
                    pre_vote: false,
                    ..
                }
            )
        })
        .map(|m| (m.to, m.term))
        .collect();
    assert_eq!(requests, [(2, 2), (3, 2)]);
    assert_eq!(
        cluster.durable(1).hard_state.vote,
        1,
        "own vote persisted before asking"
    );
}

#[test]
fn a_candidate_with_a_majority_of_votes_becomes_leader() {
    let mut cluster = Cluster::with_config(&[1, 2, 3, 4, 5], plain);
    cluster.isolate(4);
    cluster.isolate(5);
    assert!(cluster.elect(1), "three of five votes win");
    assert_eq!(cluster.node(2).leader_id(), 1);
}

#[test]
fn a_candidate_without_a_majority_stays_candidate_and_retries_in_a_higher_term() {
    let mut cluster = Cluster::with_config(&[1, 2, 3, 4, 5], plain);
    cluster.partition(&[1, 2]);
    assert!(!cluster.elect(1));
    assert_eq!(cluster.node(1).role(), Role::Candidate);
    let term = cluster.node(1).term();
    let timeout = cluster.node(1).config().election_timeout_ticks;
    for _ in 0..timeout * 2 {
        cluster.tick(1);
    }
    assert!(
        cluster.node(1).term() > term,
        "a split vote ends with a new election"
    );
}

#[test]
fn a_candidate_that_hears_from_a_leader_of_its_term_steps_down() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], plain);
    cluster.isolate(2);
    while cluster.node(2).role() != Role::Candidate {
        cluster.tick(2);
    }
    let term = cluster.node(2).term();
    let append = MessageBody::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![],
        commit: 0,
    };
    cluster
        .node_mut(2)
        .step(message(3, 2, term, append))
        .unwrap();
    assert_eq!(cluster.node(2).role(), Role::Follower);
    assert_eq!(cluster.node(2).leader_id(), 3);
}

#[test]
fn a_node_grants_at_most_one_vote_per_term_first_come_first_served() {
    let mut node = node_with_log(1, &[1], 1);
    let request = MessageBody::RequestVote {
        pre_vote: false,
        last_index: 1,
        last_term: 1,
        transfer: false,
    };
    node.step(message(2, 1, 2, request.clone())).unwrap();
    node.step(message(3, 1, 2, request.clone())).unwrap();
    node.step(message(2, 1, 2, request)).unwrap();
    let ready = node.ready();
    let answers: Vec<_> = ready
        .persisted_messages
        .iter()
        .map(|m| (m.to, m.body.clone()))
        .collect();
    let vote = |granted| MessageBody::VoteResponse {
        pre_vote: false,
        granted,
    };
    assert_eq!(
        answers,
        [(2, vote(true)), (3, vote(false)), (2, vote(true))]
    );
    assert_eq!(
        ready.hard_state.unwrap().vote,
        2,
        "the vote is persisted with the answers"
    );
    assert!(
        ready.messages.is_empty(),
        "no vote leaves before it is durable"
    );
}

#[test]
fn election_timeouts_are_randomized_between_one_and_two_timeouts() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..50 {
        let mut config = Config::new(1, GROUP_ID);
        plain(&mut config);
        config.seed = seed;
        let timeout = config.election_timeout_ticks;
        let mut node = Node::new(config, InitialState::bootstrap(&[1, 2, 3])).unwrap();
        let mut ticks = 0;
        while node.role() == Role::Follower {
            node.tick();
            ticks += 1;
        }
        assert!((timeout..2 * timeout).contains(&ticks));
        seen.insert(ticks);
    }
    assert!(seen.len() > 3, "timeouts spread: {seen:?}");
}

// ---- 5.3: log replication ----

#[test]
fn an_entry_commits_once_a_majority_holds_it_and_every_node_applies_it() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], plain);
    assert!(cluster.elect(1));
    cluster.isolate(3);
    let index = cluster.propose(1, data("a")).unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.node(1).commit_index(),
        index,
        "leader and node 2 are a majority"
    );
    assert_eq!(cluster.state(1), [data("a")]);
    cluster.heal();
    // The leader notices at its next heartbeats that node 3 acknowledged nothing.
    cluster.tick_all(6);
    cluster.stabilize();
    assert_eq!(
        cluster.state(3),
        [data("a")],
        "the isolated node catches up"
    );
}

#[test]
fn committing_an_entry_commits_every_entry_before_it() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], plain);
    assert!(cluster.elect(1));
    let noop = cluster.node(1).commit_index();
    cluster.isolate(2);
    cluster.isolate(3);
    cluster.propose(1, data("a")).unwrap();
    cluster.propose(1, data("b")).unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.node(1).commit_index(),
        noop,
        "no majority: nothing more committed"
    );
    cluster.heal();
    let last = cluster.propose(1, data("c")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(1).commit_index(), last);
    assert_eq!(cluster.state(2), [data("a"), data("b"), data("c")]);
}

#[test]
fn a_follower_rejects_an_append_whose_previous_entry_does_not_match() {
    let mut node = node_with_log(2, &[1, 1, 2], 3);
    let append = MessageBody::Append {
        prev_index: 3,
        prev_term: 3,
        entries: vec![entry(4, 3)],
        commit: 0,
    };
    node.step(message(1, 2, 3, append)).unwrap();
    assert_eq!(node.last_index(), 3, "nothing appended");
    let ready = node.ready();
    let MessageBody::AppendResponse {
        reject,
        reject_hint,
        hint_term,
        ..
    } = ready.persisted_messages[0].body
    else {
        panic!("expected an append response");
    };
    assert!(reject);
    assert_eq!(
        (reject_hint, hint_term),
        (3, 2),
        "hint: my entry 3 has term 2"
    );
}

#[test]
fn a_follower_replaces_a_conflicting_suffix_with_the_leaders_entries() {
    let mut node = node_with_log(2, &[1, 1, 2, 2], 3);
    let append = MessageBody::Append {
        prev_index: 2,
        prev_term: 1,
        entries: vec![entry(3, 3)],
        commit: 3,
    };
    node.step(message(1, 2, 3, append)).unwrap();
    assert_eq!(node.last_index(), 3);
    assert_eq!(node.term_at(3), Some(3));
    assert_eq!(node.commit_index(), 3);
    let ready = node.ready();
    assert_eq!(
        ready.entries,
        [entry(3, 3)],
        "the runtime truncates from index 3"
    );
}

#[test]
fn a_leader_brings_divergent_follower_logs_back_in_line() {
    // Figure 7 of the paper, in miniature: one follower lacks entries, another has extra
    // uncommitted entries from an old term.
    let mut cluster = Cluster::with_config(&[1, 2, 3], plain);
    assert!(cluster.elect(3));
    cluster.isolate(3);
    cluster.propose(3, data("lost-1")).unwrap();
    cluster.propose(3, data("lost-2")).unwrap();
    cluster.stabilize();
    cluster.heal();
    cluster.isolate(3);
    assert!(cluster.elect(1));
    cluster.isolate(2);
    cluster.propose(1, data("unreplicated")).unwrap();
    cluster.stabilize();
    cluster.heal();
    cluster.isolate(1);
    assert!(cluster.elect(2));
    cluster.heal();
    cluster.propose(2, data("final")).unwrap();
    cluster.tick_all(4);
    cluster.stabilize();
    for id in [1, 2, 3] {
        assert_eq!(cluster.state(id), [data("final")], "node {id}");
        assert_eq!(cluster.node(id).last_index(), cluster.node(2).last_index());
    }
}

// ---- 5.4: safety ----

#[test]
fn a_voter_refuses_a_candidate_whose_log_is_less_up_to_date() {
    let cases = [
        // (voter log terms, candidate last index, candidate last term, granted)
        (vec![1, 2], 2, 1, false),
        (vec![1, 2], 1, 2, false),
        (vec![1, 2], 2, 2, true),
        (vec![1, 2], 1, 3, true),
        (vec![1, 2], 3, 2, true),
    ];
    for (terms, last_index, last_term, expected) in cases {
        let mut node = node_with_log(1, &terms, 2);
        let request = MessageBody::RequestVote {
            pre_vote: false,
            last_index,
            last_term,
            transfer: false,
        };
        node.step(message(2, 1, 3, request)).unwrap();
        let ready = node.ready();
        let granted = matches!(
            ready.persisted_messages[0].body,
            MessageBody::VoteResponse { granted: true, .. }
        );
        assert_eq!(granted, expected, "candidate ({last_index}, {last_term})");
    }
}

#[test]
fn a_leader_never_commits_an_old_term_entry_by_counting_replicas() {
    // Figure 8 (c): node 1 holds an entry of term 2 at index 2 and wins term 4. Even once a
    // majority holds that entry, it is not committed until an entry of term 4 is.
    let mut node = node_with_log(1, &[1, 2], 3);
    while node.role() != Role::Candidate {
        node.tick();
    }
    let granted = MessageBody::VoteResponse {
        pre_vote: false,
        granted: true,
    };
    node.step(message(2, 1, 4, granted)).unwrap();
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(
        node.term_at(3),
        Some(4),
        "the new leader appended its no-op"
    );
    let ready = node.ready();
    node.advance(ready.number);
    let acknowledge = |index| MessageBody::AppendResponse {
        index,
        reject: false,
        reject_hint: 0,
        hint_term: 0,
    };
    node.step(message(2, 1, 4, acknowledge(2))).unwrap();
    node.step(message(3, 1, 4, acknowledge(2))).unwrap();
    assert_eq!(
        node.commit_index(),
        0,
        "index 2 is on all three nodes, but of term 2"
    );
    node.step(message(2, 1, 4, acknowledge(3))).unwrap();
    assert_eq!(
        node.commit_index(),
        3,
        "the term-4 no-op commits, and index 2 with it"
    );
}

/// Figure 8 of the paper on five nodes, built with the harness's filters, up to (c). Every
/// append carries one entry, so that index 6 can travel without index 7. Indexes are those of
/// the figure plus 4: the bootstrap holds indexes 1..=5, and each new leader's first entry is
/// its no-op.
///
/// (a) S1 leads term 2; its entry at index 6 reaches S2 only. (b) S5 wins term 3 with the votes
/// of S3 and S4 and writes its own entry at index 6, which reaches nobody. (c) S1 comes back
/// and wins term 4; it sends index 6 (term 2) to S3 and S4, so that a majority holds it, while
/// its term-4 entry at index 7 stays held on the wire.
///
/// Returns the cluster, index 6, and the hold on S1's appends.
fn figure_8_up_to_c() -> (Cluster, u64, FilterId) {
    let mut cluster = Cluster::with_config(&[1, 2, 3, 4, 5], |config| {
        plain(config);
        config.append_size_bytes_max = 1;
    });

    // (a)
    let only_to_2 = cluster.drop_if(|m| m.from == 1 && m.to != 2 && is_append(m));
    assert!(cluster.elect(1));
    assert_eq!(cluster.node(1).term(), 2);
    let index = cluster.node(1).last_index();
    assert_eq!(index, 6);
    assert_eq!(cluster.node(2).term_at(index), Some(2));
    assert_eq!(cluster.node(3).last_index(), index - 1);
    assert_eq!(cluster.node(1).commit_index(), index - 1);
    cluster.remove_filter(only_to_2);
    cluster.crash(1);

    // (b) S2 refuses its vote: its last entry (term 2) is newer than S5's (term 1).
    let silent_5 = cluster.drop_if(|m| m.from == 5 && is_append(m));
    assert!(cluster.elect(5));
    assert_eq!(cluster.node(5).term(), 3);
    assert_eq!(cluster.node(5).term_at(index), Some(3));
    cluster.remove_filter(silent_5);
    cluster.crash(5);

    // (c) S1 loses term 3 (S3 and S4 voted for S5 in it) and wins term 4.
    cluster.restart(1);
    let appends_of_1 = cluster.hold(|m| m.from == 1 && is_append(m));
    campaign_until_leader(&mut cluster, 1);
    assert_eq!(cluster.node(1).term(), 4);
    assert_eq!(cluster.node(1).term_at(index + 1), Some(4), "its no-op");
    let probes: Vec<u64> = cluster.held().iter().map(|m| m.to).collect();
    assert_eq!(
        probes,
        [2, 3, 4, 5],
        "one probe per follower, each carrying index 7"
    );
    // S3 and S4 lack index 6: they refuse the probe, and S1 sends them index 6 alone.
    assert_eq!(cluster.release(|m| m.to == 3 || m.to == 4), 2);
    cluster.stabilize();
    let carries_index_6 = |m: &Message| match &m.body {
        MessageBody::Append { entries, .. } => entries.iter().all(|e| e.index == 6),
        _ => false,
    };
    let held = cluster.held();
    assert!(
        held.iter()
            .filter(|m| m.to == 3 || m.to == 4)
            .all(|m| carries_index_6(m))
    );
    assert_eq!(cluster.release(|m| m.to == 3 || m.to == 4), 2);
    cluster.stabilize();
    for id in [3, 4] {
        assert_eq!(cluster.node(id).term_at(index), Some(2));
        assert_eq!(cluster.node(id).last_index(), index, "index 7 is held");
        assert_eq!(cluster.node(1).progress(id).unwrap().match_index, index);
    }
    assert_eq!(
        cluster.node(1).commit_index(),
        index - 1,
        "index 6 is on S1, S2, S3 and S4, but of term 2: not committed by counting"
    );
    (cluster, index, appends_of_1)
}

#[test]
fn figure_8_d_an_old_term_entry_on_a_majority_may_still_be_overwritten() {
    let (mut cluster, index, _appends_of_1) = figure_8_up_to_c();
    // (d) S1 crashes before its term-4 entry leaves. S5 comes back and wins term 5 with the
    // votes of S2, S3 and S4: its last entry (term 3) is newer than theirs (term 2).
    assert_eq!(cluster.drop_held(|_| true), 4);
    cluster.crash(1);
    cluster.restart(5);
    campaign_until_leader(&mut cluster, 5);
    assert_eq!(cluster.node(5).term(), 5, "term 4 was S1's");
    // S5 replaces index 6 everywhere with its own entry of term 3, and commits it. That is safe
    // because no leader ever committed the entry of term 2 there (the harness checks after
    // every step that no committed entry is lost).
    for id in [2, 3, 4, 5] {
        assert_eq!(cluster.node(id).term_at(index), Some(3), "node {id}");
    }
    assert_eq!(cluster.committed()[&index].0, 3);
}

#[test]
fn figure_8_e_an_old_term_entry_commits_with_an_entry_of_the_leaders_term() {
    let (mut cluster, index, appends_of_1) = figure_8_up_to_c();
    // (e) S1's term-4 entry reaches S2, S3 and S4 instead: it commits, and index 6 with it.
    cluster.remove_filter(appends_of_1);
    assert_eq!(cluster.release(|_| true), 4);
    cluster.stabilize();
    assert_eq!(cluster.node(1).commit_index(), index + 1);
    // S5 can never win again: S2, S3 and S4 hold a newer last entry (term 4) than S5 (term 3).
    cluster.crash(1);
    cluster.restart(5);
    for _ in 0..100 {
        cluster.tick(5);
        cluster.stabilize();
        assert_ne!(cluster.node(5).role(), Role::Leader);
    }
    assert!(
        cluster.node(5).term() > 5,
        "S5 campaigned in terms in which nobody had voted yet"
    );
    assert!(cluster.elect(2));
    for id in [2, 3, 4, 5] {
        assert_eq!(cluster.node(id).term_at(index), Some(2), "node {id}");
    }
    assert_eq!(cluster.committed()[&index].0, 2);
}

#[test]
fn an_elected_leader_holds_every_committed_entry() {
    let mut cluster = Cluster::with_config(&[1, 2, 3, 4, 5], plain);
    assert!(cluster.elect(1));
    cluster.partition(&[1, 2, 3]);
    cluster.propose(1, data("committed")).unwrap();
    cluster.stabilize();
    cluster.heal();
    // Nodes 4 and 5 lack the entry: neither can win, one of 2 and 3 can.
    cluster.isolate(1);
    assert!(!cluster.elect(4));
    assert!(!cluster.elect(5));
    assert!(cluster.elect(2));
    assert_eq!(cluster.state(2), [data("committed")]);
}
