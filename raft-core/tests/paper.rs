//! One test per rule of the Raft paper, sections 5.1 to 5.4, told as short stories on the
//! simulated network of `raft_core::testing`.

use bytes::Bytes;
use raft_core::testing::{Cluster, GROUP_ID, message};
use raft_core::{Config, Entry, EntryKind, HardState, InitialState, MessageBody, Node, Role};

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
