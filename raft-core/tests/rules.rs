//! Stories that pin rules no other test checked: each was found by mutation testing (a mutant of
//! the rule's code that every other test let through; see `raft-core/MUTANTS.md`) and names the
//! rule it pins. They are grouped by the source file whose mutants they kill.

use bytes::Bytes;
use raft_core::testing::{
    Cluster, GROUP_ID, acknowledge, drain, leader_of_three as lone_leader, message,
};
use raft_core::{
    ConfChange, ConfState, Config, Entry, EntryKind, HardState, INDEX_AND_TERM_MAX, InitialState,
    MessageBody, Node, ProgressState, ProposeError, ReadMode, Ready, Role, Snapshot, SnapshotMeta,
    SoftState, StepError,
};

fn data(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

/// An append of one entry at `(index, term)` after `(prev_index, prev_term)`.
fn one_entry_append(
    (prev_index, prev_term): (u64, u64),
    (index, term): (u64, u64),
    text: &str,
    commit: u64,
) -> MessageBody {
    MessageBody::Append {
        prev_index,
        prev_term,
        entries: vec![Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: data(text),
        }],
        commit,
    }
}

// ---- src/node/roles.rs ----

/// Rule: the metrics count every election a node starts (pre-votes are not elections) and every
/// leadership it wins, including those a transfer starts.
#[test]
fn metrics_count_the_elections_started_and_the_leaderships_won() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let counts = |cluster: &Cluster, id| {
        let metrics = cluster.node(id).metrics();
        (metrics.elections_started, metrics.leaderships_won)
    };
    assert_eq!(counts(&cluster, 1), (1, 1));
    assert_eq!(counts(&cluster, 2), (0, 0));
    cluster.node_mut(1).transfer_leader(2).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(2));
    assert_eq!(counts(&cluster, 2), (1, 1));
    cluster.node_mut(2).transfer_leader(1).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(1));
    assert_eq!(counts(&cluster, 1), (2, 2));
    assert_eq!(counts(&cluster, 3), (0, 0));
}

/// Rule: a member added by a change is replicated to as a new leader treats every follower: probed
/// just past the leader's log (next index = last index + 1, the change included), matching nothing
/// until it answers.
#[test]
fn a_member_added_by_a_change_is_probed_just_past_the_leaders_log() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.add_joining_node(4, |_| {});
    assert!(cluster.elect(1));
    cluster.propose(1, data("before")).unwrap();
    cluster.stabilize();
    let index = cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::AddLearner(4))
        .unwrap();
    assert_eq!(index, cluster.node(1).last_index());
    let progress = cluster.node(1).progress(4).expect("a member now");
    assert_eq!(progress.next_index, index + 1);
    assert_eq!(progress.match_index, 0);
    assert_eq!(progress.state, ProgressState::Probe);
    cluster.stabilize();
    assert_eq!(cluster.node(4).last_index(), index);
    assert_eq!(cluster.node(4).role(), Role::Follower);
}

// ---- src/node/messages.rs ----

/// Rule: every message handed to `step` counts as received, whatever becomes of it, and each
/// refusal counts under its reason.
#[test]
fn every_message_stepped_is_counted_and_each_refusal_under_its_reason() {
    let mut node = lone_leader(|_| {});
    let term = node.term();
    let received_before = node.metrics().messages_received;
    node.step(message(2, 1, term, acknowledge(0))).unwrap();
    node.step(message(2, 7, term, acknowledge(0))).unwrap_err();
    node.step(message(2, 1, u64::MAX, acknowledge(0)))
        .unwrap_err();
    node.step(message(2, 1, term - 1, acknowledge(0))).unwrap();
    let metrics = node.metrics();
    assert_eq!(metrics.messages_received, received_before + 4);
    assert_eq!(metrics.messages_misaddressed, 1);
    assert_eq!(metrics.messages_malformed, 1);
    assert_eq!(metrics.messages_stale_term, 1);
    assert_eq!(metrics.messages_wrong_group, 0);
}

/// Rule: indexes and terms up to 2^62 are well formed; only larger ones are malformed (so that no
/// arithmetic on an accepted one can overflow, and no legitimate one is refused).
#[test]
fn positions_up_to_the_limit_are_accepted_and_beyond_it_malformed() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let term = cluster.node(2).term();
    let read_answer = |index| MessageBody::ReadIndexResponse {
        request_id: 9,
        index,
    };
    let follower = cluster.node_mut(2);
    follower
        .step(message(1, 2, term, read_answer(INDEX_AND_TERM_MAX)))
        .unwrap();
    assert_eq!(follower.metrics().messages_malformed, 0);
    let refused = follower.step(message(1, 2, term, read_answer(INDEX_AND_TERM_MAX + 1)));
    assert!(matches!(refused, Err(StepError::Malformed { .. })));
    assert_eq!(follower.metrics().messages_malformed, 1);
}

/// Rule: a snapshot is malformed if its index is 0, or its term is 0, or its term is beyond the
/// message's: each alone is enough.
#[test]
fn a_snapshot_is_malformed_by_any_one_bad_position() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let term = cluster.node(2).term();
    let snapshot = |index, snapshot_term| MessageBody::InstallSnapshot {
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index,
                term: snapshot_term,
                conf_state: ConfState::with_voters(&[1, 2, 3]),
            },
            data: Bytes::new(),
        },
    };
    let follower = cluster.node_mut(2);
    for (index, snapshot_term) in [(0, term), (5, 0), (5, term + 1)] {
        let refused = follower.step(message(1, 2, term, snapshot(index, snapshot_term)));
        assert!(
            matches!(refused, Err(StepError::Malformed { .. })),
            "index {index}, term {snapshot_term}"
        );
    }
    assert_eq!(follower.metrics().messages_malformed, 3);
    assert_eq!(follower.metrics().snapshots_installed, 0);
}

/// Rule: a pre-vote is granted for a future term only. A pre-candidate one term behind asks in
/// the voter's own term; a voter that already voted or follows a leader in that term refuses,
/// however good the candidate's log.
#[test]
fn a_pre_vote_for_the_voters_own_term_is_refused_once_it_has_a_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let voter = cluster.node(2);
    let (term, last_index) = (voter.term(), voter.last_index());
    assert_eq!(voter.leader_id(), 1);
    let request = MessageBody::RequestVote {
        pre_vote: true,
        last_index: last_index + 10,
        last_term: term,
        transfer: false,
    };
    cluster
        .node_mut(2)
        .step(message(3, 2, term, request))
        .unwrap();
    let ready = cluster.node_mut(2).ready();
    let answers: Vec<&MessageBody> = ready
        .messages
        .iter()
        .chain(&ready.persisted_messages)
        .filter(|sent| sent.to == 3)
        .map(|sent| &sent.body)
        .collect();
    assert_eq!(
        answers,
        vec![&MessageBody::VoteResponse {
            pre_vote: true,
            granted: false
        }]
    );
}

/// Rule: a refused pre-vote is answered in the voter's own term, not in the future term the
/// pre-candidate asked about; otherwise the refusal itself would raise the pre-candidate's term,
/// which pre-voting exists to prevent. (A granted pre-vote answers in the future term.)
#[test]
fn a_refused_pre_vote_is_answered_in_the_voters_own_term() {
    let mut cluster = Cluster::with_config(&[1, 2, 3], |config| config.check_quorum = false);
    assert!(cluster.elect(1));
    let term = cluster.node(2).term();
    let answer_to = |cluster: &mut Cluster, last_index| {
        let request = MessageBody::RequestVote {
            pre_vote: true,
            last_index,
            last_term: if last_index == 0 { 0 } else { term },
            transfer: false,
        };
        let voter = cluster.node_mut(2);
        voter.step(message(3, 2, term + 1, request)).unwrap();
        let ready = voter.ready();
        voter.advance(ready.number);
        let answer = ready
            .messages
            .into_iter()
            .chain(ready.persisted_messages)
            .find(|sent| sent.to == 3)
            .expect("an answer");
        (answer.term, answer.body)
    };
    let granted = |granted| MessageBody::VoteResponse {
        pre_vote: true,
        granted,
    };
    // A log behind the voter's: refused, in the voter's term.
    assert_eq!(answer_to(&mut cluster, 0), (term, granted(false)));
    assert_eq!(cluster.node(2).term(), term);
    // A log as long: granted, in the term asked about.
    let last_index = cluster.node(2).last_index();
    assert_eq!(
        answer_to(&mut cluster, last_index),
        (term + 1, granted(true))
    );
    assert_eq!(cluster.node(2).term(), term, "a pre-vote changes nothing");
}

/// Rule: `TimeoutNow` makes only a voter of the node's newest membership campaign. A leader that
/// removed itself and restarted before the removal spread holds it uncommitted: it ignores
/// `TimeoutNow`, although it may still campaign on its own election timeout (see
/// ARCHITECTURE.md: otherwise its longer log could keep anyone from being elected).
#[test]
fn timeout_now_is_ignored_by_a_node_whose_removal_it_holds() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    // Nothing the leader sends from now on arrives: its removal stays in its own log only.
    cluster.drop_if(|sent| sent.from == 1);
    cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::RemoveNode(1))
        .unwrap();
    cluster.process(1);
    cluster.crash(1);
    cluster.restart(1);
    let removed = cluster.node(1);
    assert!(
        !removed.membership().is_voter(1),
        "the removal is in its log"
    );
    assert!(
        removed.commit_index() < removed.last_index(),
        "not committed"
    );
    let term = removed.term();
    cluster
        .node_mut(1)
        .step(message(2, 1, term, MessageBody::TimeoutNow))
        .unwrap();
    assert_eq!(cluster.node(1).role(), Role::Follower);
    assert_eq!(cluster.node(1).term(), term);
}

/// Rule: an append whose previous entry is the follower's committed one must still match it: a
/// term that differs there is rejected, never taken for a match.
#[test]
fn an_append_whose_previous_entry_contradicts_the_commit_index_is_rejected() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let follower = cluster.node_mut(2);
    let (term, commit, last) = (
        follower.term(),
        follower.commit_index(),
        follower.last_index(),
    );
    assert_eq!(commit, last);
    let committed_term = follower.term_at(commit).unwrap();
    assert!(committed_term >= 1);
    let append = one_entry_append(
        (commit, committed_term - 1),
        (commit + 1, term),
        "forged",
        commit,
    );
    follower.step(message(1, 2, term, append)).unwrap();
    assert_eq!(follower.last_index(), last, "nothing appended");
    let ready = follower.ready();
    let answer = ready
        .messages
        .iter()
        .chain(&ready.persisted_messages)
        .find(|sent| sent.to == 1)
        .expect("an answer");
    assert!(matches!(
        answer.body,
        MessageBody::AppendResponse { reject: true, .. }
    ));
}

/// Rule: an append that contradicts a committed entry (another term at a committed index) comes
/// from no correct leader: it is dropped unanswered and counted as malformed.
#[test]
fn an_append_that_contradicts_a_committed_entry_is_dropped_and_counted() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let follower = cluster.node_mut(2);
    let (term, commit) = (follower.term(), follower.commit_index());
    let prev_term = follower.term_at(commit - 1).unwrap();
    let append = one_entry_append(
        (commit - 1, prev_term),
        (commit, term + 1),
        "contradicts",
        commit,
    );
    follower.step(message(1, 2, term + 1, append)).unwrap();
    assert_eq!(follower.metrics().messages_malformed, 1);
    assert_eq!(
        follower.term_at(commit),
        Some(term),
        "the committed entry stays"
    );
    let ready = follower.ready();
    assert!(
        ready
            .messages
            .iter()
            .chain(&ready.persisted_messages)
            .all(|sent| !matches!(sent.body, MessageBody::AppendResponse { .. })),
        "no answer"
    );
}

/// Rule: the position a follower's snapshot ends at is committed like any other: an append that
/// gives it another term contradicts a committed entry and is dropped as malformed (mutation
/// testing found this index left unchecked; the check now includes it).
#[test]
fn an_append_that_contradicts_the_snapshot_position_is_dropped_and_counted() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster.propose(1, data("a")).unwrap();
    cluster.stabilize();
    cluster.compact(2);
    let follower = cluster.node_mut(2);
    let (term, commit) = (follower.term(), follower.commit_index());
    let snapshot_index = follower.first_index() - 1;
    assert_eq!(snapshot_index, commit, "compacted up to the commit index");
    let snapshot_term = follower.term_at(snapshot_index).unwrap();
    let append = one_entry_append(
        (snapshot_index - 1, snapshot_term),
        (snapshot_index, term + 1),
        "contradicts the snapshot",
        commit,
    );
    follower.step(message(1, 2, term + 1, append)).unwrap();
    assert_eq!(follower.metrics().messages_malformed, 1);
    assert_eq!(follower.term_at(snapshot_index), Some(snapshot_term));
}

/// Rule: a candidate that a majority refused gives up at once and becomes a follower (it does not
/// wait for its election timeout); one refusal out of three is not enough.
#[test]
fn a_candidate_refused_by_a_majority_becomes_a_follower_at_once() {
    let mut config = Config::new(1, GROUP_ID);
    config.pre_vote = false;
    let mut node = Node::new(config, InitialState::bootstrap(&[1, 2, 3])).unwrap();
    while node.role() != Role::Candidate {
        node.tick();
    }
    let term = node.term();
    let refused = MessageBody::VoteResponse {
        pre_vote: false,
        granted: false,
    };
    node.step(message(2, 1, term, refused.clone())).unwrap();
    assert_eq!(node.role(), Role::Candidate, "one refusal of three");
    node.step(message(3, 1, term, refused)).unwrap();
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(node.term(), term, "in the same term");
}

/// Rule: a leader refuses answers from nodes outside its membership, and acknowledgements of
/// entries it never had, each counted under its reason.
#[test]
fn a_leader_refuses_and_counts_answers_from_strangers_and_beyond_its_log() {
    let mut node = lone_leader(|_| {});
    let term = node.term();
    let last_index = node.last_index();
    let stranger = node.step(message(9, 1, term, acknowledge(last_index)));
    assert_eq!(stranger, Err(StepError::NonMember(9)));
    assert_eq!(node.metrics().messages_from_non_members, 1);
    let beyond = node.step(message(2, 1, term, acknowledge(last_index + 1)));
    assert!(matches!(beyond, Err(StepError::Malformed { .. })));
    assert_eq!(node.metrics().messages_malformed, 1);
    assert_eq!(
        node.progress(2).unwrap().match_index,
        0,
        "nothing acknowledged"
    );
}

/// Rule: the lease lasts exactly `election_timeout_ticks - 2` ticks from the sending of the
/// heartbeat a quorum acknowledged: a read at its last tick is served at once, one tick later it
/// needs a confirmation round.
#[test]
fn the_lease_lasts_to_its_last_tick_and_no_further() {
    let mut leader = lone_leader(|config| config.read_mode = ReadMode::LeaseBased);
    let term = leader.term();
    leader
        .step(message(2, 1, term, acknowledge(leader.last_index())))
        .unwrap();
    leader.read_index(1).unwrap();
    let ready = leader.ready();
    let sent_at_tick = ready
        .messages
        .iter()
        .find_map(|sent| match sent.body {
            MessageBody::Heartbeat { sent_at_tick, .. } => Some(sent_at_tick),
            _ => None,
        })
        .expect("a confirmation round");
    assert!(sent_at_tick > 0);
    leader.advance(ready.number);
    let answer = MessageBody::HeartbeatResponse {
        read_sequence: 1,
        sent_at_tick,
    };
    leader.step(message(2, 1, term, answer)).unwrap();
    let served_at_once = |leader: &mut Node, request_id| {
        leader.read_index(request_id).unwrap();
        let ready = leader.ready();
        leader.advance(ready.number);
        ready
            .read_states
            .iter()
            .any(|read| read.request_id == request_id)
    };
    assert!(served_at_once(&mut leader, 2));
    let lease_ticks = leader.config().election_timeout_ticks - 2;
    for _ in 0..lease_ticks - 1 {
        leader.tick();
    }
    assert!(served_at_once(&mut leader, 3), "the lease's last tick");
    leader.tick();
    assert!(!served_at_once(&mut leader, 4), "the lease expired");
}

/// Rule: a heartbeat answer from a follower that holds the whole log sends nothing more; only a
/// follower behind is probed with an append.
#[test]
fn a_heartbeat_answer_probes_only_a_follower_that_is_behind() {
    let mut leader = lone_leader(|_| {});
    let term = leader.term();
    let last_index = leader.last_index();
    leader
        .step(message(2, 1, term, acknowledge(last_index)))
        .unwrap();
    let ready = leader.ready();
    leader.advance(ready.number);
    let answer = MessageBody::HeartbeatResponse {
        read_sequence: 0,
        sent_at_tick: 0,
    };
    let appends_after_answer_from = |leader: &mut Node, from| {
        leader.step(message(from, 1, term, answer.clone())).unwrap();
        let ready = leader.ready();
        leader.advance(ready.number);
        ready
            .messages
            .iter()
            .filter(|sent| matches!(sent.body, MessageBody::Append { .. }))
            .count()
    };
    assert_eq!(appends_after_answer_from(&mut leader, 2), 0, "up to date");
    assert_eq!(
        appends_after_answer_from(&mut leader, 3),
        1,
        "behind: probed"
    );
}

/// Rule (fast backtracking, leader side): a rejection's hint names the follower's last entry of
/// a term no newer than the one probed; the leader steps back to its own last entry of a term
/// no newer than the hint's, skipping the whole conflicting range in one round trip.
#[test]
fn a_new_leader_skips_a_followers_whole_stale_term_in_one_round_trip() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    // Node 1 writes 30 entries nobody else gets, then crashes.
    cluster.isolate(1);
    for write in 0..30 {
        cluster
            .propose(1, data(&format!("doomed-{write}")))
            .unwrap();
    }
    cluster.stabilize();
    cluster.crash(1);
    cluster.heal();
    let mut leader = None;
    for _ in 0..200 {
        cluster.tick_all(1);
        leader = cluster.leader();
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("nodes 2 and 3 elect a leader");
    cluster.stabilize();
    for write in 0..40 {
        cluster
            .propose(leader, data(&format!("kept-{write}")))
            .unwrap();
    }
    cluster.stabilize();
    // Node 1 comes back cut off; a new leader starts with an optimistic guess of its log.
    cluster.restart(1);
    cluster.isolate(1);
    let successor = 5 - leader;
    cluster.node_mut(leader).transfer_leader(successor).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(successor));
    let guess = cluster.node(successor).progress(1).unwrap().next_index;
    assert!(guess > cluster.node(1).last_index() + 1);
    cluster.heal();
    // Only the leader ticks (its heartbeats reach node 1); every message is counted as it goes.
    let mut rejections = 0;
    for _ in 0..100 {
        cluster.tick(successor);
        loop {
            let processed = cluster.process_all();
            let in_transit = cluster.in_transit();
            if !processed && in_transit.is_empty() {
                break;
            }
            rejections += in_transit
                .iter()
                .filter(|sent| {
                    sent.from == 1
                        && matches!(sent.body, MessageBody::AppendResponse { reject: true, .. })
                })
                .count();
            cluster.deliver_round();
        }
        if cluster.node(1).last_index() == cluster.node(successor).last_index() {
            break;
        }
    }
    assert_eq!(
        cluster.node(1).last_index(),
        cluster.node(successor).last_index()
    );
    assert!(
        rejections <= 2,
        "{rejections} rejections for 30 conflicting entries"
    );
}

/// Rule: a leader sending a snapshot waits for the follower to acknowledge the snapshot's index;
/// an older acknowledgement arriving meanwhile (delayed on the way) neither restarts replication
/// nor sends a second snapshot.
#[test]
fn a_snapshot_in_flight_ends_only_with_an_acknowledgement_of_its_index() {
    let mut leader = lone_leader(|_| {});
    let term = leader.term();
    leader.propose(data("a")).unwrap();
    leader.propose(data("b")).unwrap();
    drain(&mut leader);
    let last_index = leader.last_index();
    leader
        .step(message(3, 1, term, acknowledge(last_index)))
        .unwrap();
    drain(&mut leader);
    assert_eq!(leader.applied_index(), last_index);
    leader.compact(last_index, data("state")).unwrap();
    // Node 2 rejects the probe with an empty log: only the snapshot can catch it up.
    let probed = leader.progress(2).unwrap().next_index - 1;
    let rejection = MessageBody::AppendResponse {
        index: probed,
        reject: true,
        reject_hint: 0,
        hint_term: 0,
    };
    leader.step(message(2, 1, term, rejection)).unwrap();
    drain(&mut leader);
    let in_snapshot = ProgressState::Snapshot {
        pending_index: last_index,
    };
    assert_eq!(leader.progress(2).unwrap().state, in_snapshot);
    assert_eq!(leader.metrics().snapshots_sent, 1);
    // A delayed acknowledgement of an old index.
    leader.step(message(2, 1, term, acknowledge(2))).unwrap();
    let sent = drain(&mut leader);
    assert_eq!(leader.progress(2).unwrap().state, in_snapshot);
    assert_eq!(leader.metrics().snapshots_sent, 1);
    assert!(sent.iter().all(|message| message.to != 2));
    // The snapshot's own acknowledgement ends it.
    leader
        .step(message(2, 1, term, acknowledge(last_index)))
        .unwrap();
    assert_eq!(leader.progress(2).unwrap().state, ProgressState::Replicate);
}

/// Rule: the commit index is what a quorum holds, for any number of voters, also beyond the 16
/// whose progress the leader sorts on the stack.
#[test]
fn a_group_of_seventeen_voters_commits_what_nine_hold() {
    let voters: Vec<u64> = (1..=17).collect();
    let mut cluster = Cluster::new(&voters);
    assert!(cluster.elect(1));
    // Eight followers stop answering: nine of seventeen still commit.
    cluster.drop_if(|sent| sent.from >= 10);
    let index = cluster.propose(1, data("x")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(1).commit_index(), index);
    // One more silent follower: eight of seventeen do not.
    cluster.drop_if(|sent| sent.from == 9);
    let unreached = cluster.propose(1, data("y")).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(1).commit_index(), index);
    assert!(unreached > index);
}

/// Rule: a leader that removed itself hands over when the removal commits: it tells the most
/// up-to-date remaining voter (the lowest id among equals) to campaign at once, so the group has
/// a leader again without waiting for an election timeout.
#[test]
fn a_leader_that_removed_itself_hands_over_to_the_most_up_to_date_voter() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    cluster
        .node_mut(1)
        .propose_conf_change(ConfChange::RemoveNode(1))
        .unwrap();
    let mut timeout_now_to = Vec::new();
    for _ in 0..100 {
        let processed = cluster.process_all();
        let in_transit = cluster.in_transit();
        if !processed && in_transit.is_empty() {
            break;
        }
        timeout_now_to.extend(
            in_transit
                .iter()
                .filter(|sent| matches!(sent.body, MessageBody::TimeoutNow))
                .map(|sent| sent.to),
        );
        cluster.deliver_round();
    }
    assert_eq!(timeout_now_to, [2]);
    assert_eq!(cluster.leader(), Some(2), "elected without a single tick");
    assert_eq!(cluster.node(1).role(), Role::Follower);
}

// ---- src/progress.rs ----

/// Rule: a replicating follower counts as stalled only if appends are in flight and none was
/// acknowledged since the last check; an idle follower that holds the whole log stays in
/// Replicate across heartbeat intervals.
#[test]
fn an_idle_follower_that_holds_the_log_is_never_taken_for_stalled() {
    let mut leader = lone_leader(|config| config.check_quorum = false);
    let term = leader.term();
    leader
        .step(message(2, 1, term, acknowledge(leader.last_index())))
        .unwrap();
    drain(&mut leader);
    assert_eq!(leader.progress(2).unwrap().state, ProgressState::Replicate);
    for _ in 0..5 * leader.config().heartbeat_interval_ticks {
        leader.tick();
        drain(&mut leader);
    }
    assert_eq!(leader.progress(2).unwrap().state, ProgressState::Replicate);
}

/// Rule: [`Node::buffer_capacity`] counts the queues of appends in flight: a follower that let
/// hundreds of appends pile up holds memory until it acknowledges them, and gives it back then.
#[test]
fn buffer_capacity_counts_the_appends_in_flight() {
    let mut leader = lone_leader(|config| {
        config.check_quorum = false;
        config.inflight_messages_max = 1024;
    });
    let term = leader.term();
    leader
        .step(message(2, 1, term, acknowledge(leader.last_index())))
        .unwrap();
    drain(&mut leader);
    for write in 0..500 {
        leader.propose(data(&format!("w{write}"))).unwrap();
        drain(&mut leader);
    }
    assert_eq!(leader.progress(2).unwrap().inflight_count(), 500);
    let with_appends_in_flight = leader.buffer_capacity();
    leader
        .step(message(2, 1, term, acknowledge(leader.last_index())))
        .unwrap();
    drain(&mut leader);
    assert_eq!(leader.progress(2).unwrap().inflight_count(), 0);
    let released = with_appends_in_flight - leader.buffer_capacity();
    assert!(released >= 400, "{released} slots released");
}

/// Rule: a rejection never sends the leader back to or below an index the follower already
/// acknowledged, whatever its hint says: the next append starts right after the match.
#[test]
fn a_rejection_never_moves_the_next_index_to_an_acknowledged_entry() {
    let mut leader = lone_leader(|config| config.check_quorum = false);
    let term = leader.term();
    for write in 0..3 {
        leader.propose(data(&format!("w{write}"))).unwrap();
    }
    drain(&mut leader);
    let acknowledged = leader.last_index();
    leader
        .step(message(2, 1, term, acknowledge(acknowledged)))
        .unwrap();
    drain(&mut leader);
    leader.propose(data("more")).unwrap();
    drain(&mut leader);
    let progress = leader.progress(2).unwrap();
    assert_eq!(progress.state, ProgressState::Replicate);
    assert_eq!(progress.match_index, acknowledged);
    let rejection = MessageBody::AppendResponse {
        index: leader.last_index(),
        reject: true,
        reject_hint: 0,
        hint_term: 0,
    };
    leader.step(message(2, 1, term, rejection)).unwrap();
    let progress = leader.progress(2).unwrap();
    assert_eq!(progress.state, ProgressState::Probe);
    assert_eq!(progress.next_index, acknowledged + 1);
}

/// Rule: while probing, only the rejection of the last probe counts (an older one is stale), and
/// even a counted one never moves the next index to or below the match.
#[test]
fn a_probing_leader_heeds_only_the_rejection_of_its_last_probe() {
    let mut leader = lone_leader(|config| config.check_quorum = false);
    let term = leader.term();
    leader.propose(data("w")).unwrap();
    drain(&mut leader);
    let acknowledged = leader.last_index();
    leader
        .step(message(2, 1, term, acknowledge(acknowledged)))
        .unwrap();
    drain(&mut leader);
    leader.report_unreachable(2);
    let probe = leader.progress(2).unwrap();
    assert_eq!(probe.state, ProgressState::Probe);
    assert_eq!(probe.next_index, acknowledged + 1);
    for write in 0..5 {
        leader.propose(data(&format!("later {write}"))).unwrap();
    }
    drain(&mut leader);
    let rejection = |index, reject_hint, hint_term| MessageBody::AppendResponse {
        index,
        reject: true,
        reject_hint,
        hint_term,
    };
    // A rejection of an append sent before the probe (a later index): stale.
    let stale = rejection(acknowledged + 5, acknowledged + 3, term);
    leader.step(message(2, 1, term, stale)).unwrap();
    assert_eq!(leader.progress(2).unwrap().next_index, acknowledged + 1);
    // A rejection of the last probe with a hint below the match: the match holds.
    leader
        .step(message(2, 1, term, rejection(acknowledged, 0, 0)))
        .unwrap();
    assert_eq!(leader.progress(2).unwrap().next_index, acknowledged + 1);
}

// ---- src/log.rs ----

/// Rule: a queue gives its spare capacity back only once it is less than a quarter full (and
/// holds more than 64 slots): a queue that stays dense keeps its capacity, so that a steady
/// stream of appends and acknowledgements does not reallocate it again and again.
#[test]
fn a_queue_gives_back_its_capacity_only_when_less_than_a_quarter_full() {
    let mut leader = lone_leader(|config| {
        config.check_quorum = false;
        config.inflight_messages_max = 1024;
    });
    let term = leader.term();
    leader
        .step(message(2, 1, term, acknowledge(leader.last_index())))
        .unwrap();
    drain(&mut leader);
    let first_sent = leader.last_index() + 1;
    for write in 0..256 {
        leader.propose(data(&format!("w{write}"))).unwrap();
        drain(&mut leader);
    }
    assert_eq!(leader.progress(2).unwrap().inflight_count(), 256);
    let full = leader.buffer_capacity();
    // A quarter full (64 of 256): kept.
    leader
        .step(message(2, 1, term, acknowledge(first_sent + 191)))
        .unwrap();
    drain(&mut leader);
    assert_eq!(leader.progress(2).unwrap().inflight_count(), 64);
    assert_eq!(leader.buffer_capacity(), full, "a quarter full: kept");
    // Less than a quarter full: given back, down to 64 slots.
    leader
        .step(message(2, 1, term, acknowledge(first_sent + 192)))
        .unwrap();
    drain(&mut leader);
    assert_eq!(leader.progress(2).unwrap().inflight_count(), 63);
    let released = full - leader.buffer_capacity();
    assert!(released >= 128, "{released} slots released");
}

/// Rule: [`Node::entries_in_memory`] counts the entries since the last compaction: it grows with
/// every entry appended and drops to those after the compaction point when the log is compacted.
#[test]
fn entries_in_memory_counts_the_entries_after_the_compaction_point() {
    let mut leader = lone_leader(|config| config.check_quorum = false);
    let term = leader.term();
    assert_eq!(leader.entries_in_memory() as u64, leader.last_index());
    for write in 0..3 {
        leader.propose(data(&format!("w{write}"))).unwrap();
    }
    drain(&mut leader);
    let compacted_to = leader.last_index();
    assert_eq!(leader.entries_in_memory() as u64, compacted_to);
    leader
        .step(message(2, 1, term, acknowledge(compacted_to)))
        .unwrap();
    drain(&mut leader);
    assert_eq!(leader.applied_index(), compacted_to);
    leader.propose(data("after")).unwrap();
    leader.propose(data("after, too")).unwrap();
    drain(&mut leader);
    leader.compact(compacted_to, data("state")).unwrap();
    assert_eq!(leader.entries_in_memory(), 2);
}

/// Rule: a Ready hands the application at most `uncommitted_bytes_max` bytes of committed
/// entries (at least one); the rest stay pending, and [`Node::has_ready`] says so until every
/// committed entry was handed out.
#[test]
fn committed_entries_beyond_one_readys_budget_come_out_in_the_next() {
    let mut config = Config::new(2, GROUP_ID);
    config.entry_size_bytes_max = 64;
    config.uncommitted_bytes_max = 64;
    let mut follower = Node::new(config, InitialState::bootstrap(&[1, 2, 3])).unwrap();
    let prev_index = follower.last_index();
    let prev_term = follower.term_at(prev_index).unwrap();
    let entries: Vec<Entry> = (1..=5)
        .map(|offset| Entry {
            index: prev_index + offset,
            term: prev_term + 1,
            kind: EntryKind::Normal,
            data: data(&"x".repeat(30)),
        })
        .collect();
    let last = prev_index + 5;
    let append = MessageBody::Append {
        prev_index,
        prev_term,
        entries,
        commit: last,
    };
    follower.step(message(1, 2, prev_term + 1, append)).unwrap();
    let mut readies_with_committed_entries = 0;
    while follower.has_ready() {
        let ready = follower.ready();
        let bytes: u64 = ready.committed_entries.iter().map(Entry::size_bytes).sum();
        assert!(
            ready.committed_entries.len() == 1 || bytes <= 64,
            "{bytes} bytes"
        );
        if !ready.committed_entries.is_empty() {
            readies_with_committed_entries += 1;
        }
        follower.advance(ready.number);
    }
    assert_eq!(
        follower.applied_index(),
        last,
        "every committed entry handed out"
    );
    assert!(readies_with_committed_entries >= 3);
}

// ---- src/node/requests.rs ----

/// Rule: every refused membership change counts as a refused proposal, once, whatever the
/// reason.
#[test]
fn every_refused_membership_change_is_counted_once() {
    let mut leader = lone_leader(|_| {});
    assert_eq!(
        leader.propose_conf_change(ConfChange::AddLearner(4)),
        Err(ProposeError::NotCommittedInTerm)
    );
    assert_eq!(leader.metrics().proposals_refused, 1);
    let term = leader.term();
    leader
        .step(message(2, 1, term, acknowledge(leader.last_index())))
        .unwrap();
    drain(&mut leader);
    for refused in 2..=3 {
        let already_a_voter = leader.propose_conf_change(ConfChange::AddVoter(2));
        assert!(matches!(
            already_a_voter,
            Err(ProposeError::InvalidConfChange { .. })
        ));
        assert_eq!(leader.metrics().proposals_refused, refused);
    }
}

/// Rule: a membership change that would change nothing (adding a learner twice) or names node 0
/// is refused as invalid, before anything is appended.
#[test]
fn a_membership_change_that_changes_nothing_or_names_node_0_is_refused() {
    let mut leader = lone_leader(|_| {});
    let term = leader.term();
    leader
        .step(message(2, 1, term, acknowledge(leader.last_index())))
        .unwrap();
    drain(&mut leader);
    let index = leader
        .propose_conf_change(ConfChange::AddLearner(4))
        .unwrap();
    drain(&mut leader);
    leader
        .step(message(2, 1, term, acknowledge(index)))
        .unwrap();
    drain(&mut leader);
    assert_eq!(leader.commit_index(), index);
    assert!(leader.membership().is_learner(4));
    let last_index = leader.last_index();
    for change in [
        ConfChange::AddLearner(4),
        ConfChange::AddVoter(0),
        ConfChange::AddLearner(0),
    ] {
        let refused = leader.propose_conf_change(change);
        assert!(
            matches!(refused, Err(ProposeError::InvalidConfChange { .. })),
            "{change:?}: {refused:?}"
        );
    }
    assert_eq!(leader.last_index(), last_index, "nothing appended");
}

/// Rule: the last voter of a group cannot remove itself: the change is refused as invalid (a
/// group without voters could never elect a leader again).
#[test]
fn the_last_voter_cannot_remove_itself() {
    let mut node = Node::new(Config::new(1, GROUP_ID), InitialState::bootstrap(&[1])).unwrap();
    while node.role() != Role::Leader {
        node.tick();
        drain(&mut node);
    }
    drain(&mut node);
    assert_eq!(node.commit_index(), node.last_index());
    let last_index = node.last_index();
    let refused = node.propose_conf_change(ConfChange::RemoveNode(1));
    assert!(
        matches!(refused, Err(ProposeError::InvalidConfChange { .. })),
        "{refused:?}"
    );
    assert_eq!(node.last_index(), last_index, "nothing appended");
    assert_eq!(node.membership().voters, [1]);
}

/// Rule: the entry size limit is inclusive: a payload of exactly `entry_size_bytes_max` bytes is
/// accepted, one more byte is refused.
#[test]
fn the_entry_size_limit_is_inclusive() {
    let mut leader = lone_leader(|config| config.entry_size_bytes_max = 100);
    leader.propose(Bytes::from(vec![0u8; 100])).unwrap();
    let refused = leader.propose(Bytes::from(vec![0u8; 101]));
    assert_eq!(
        refused,
        Err(ProposeError::EntryTooLarge {
            entry_bytes: 101,
            limit_bytes: 100
        })
    );
}

/// Rule: with nothing uncommitted, a proposal is accepted even if it alone exceeds the
/// uncommitted limit (its header counts there, not in the entry size limit), so that a leader
/// always makes progress; the next one waits for the commit.
#[test]
fn the_first_proposal_after_a_burst_is_accepted_whatever_its_size() {
    let mut leader = lone_leader(|config| {
        config.entry_size_bytes_max = 100;
        config.uncommitted_bytes_max = 100;
    });
    leader.propose(Bytes::from(vec![0u8; 100])).unwrap();
    let refused = leader.propose(Bytes::from(vec![0u8; 1]));
    assert!(
        matches!(refused, Err(ProposeError::UncommittedLimit { .. })),
        "{refused:?}"
    );
}

/// A leader whose uncommitted limit holds exactly two entries of 100 bytes (the entry size
/// limit), and the counted size of one such entry.
fn leader_with_room_for_two_entries_of_100_bytes() -> (Node, u64) {
    let entry_bytes = 100 + Entry::HEADER_SIZE_BYTES;
    let leader = lone_leader(|config| {
        config.entry_size_bytes_max = 100;
        config.uncommitted_bytes_max = 2 * entry_bytes;
    });
    (leader, entry_bytes)
}

/// Rule: the uncommitted limit is inclusive: proposals are accepted until their counted bytes
/// (payload and header) reach `uncommitted_bytes_max` exactly; the next byte is refused.
#[test]
fn the_uncommitted_limit_is_inclusive() {
    let (mut leader, entry_bytes) = leader_with_room_for_two_entries_of_100_bytes();
    leader.propose(Bytes::from(vec![0u8; 100])).unwrap();
    leader.propose(Bytes::from(vec![0u8; 100])).unwrap();
    let refused = leader.propose(Bytes::new());
    assert_eq!(
        refused,
        Err(ProposeError::UncommittedLimit {
            uncommitted_bytes: 2 * entry_bytes,
            entry_bytes: Entry::HEADER_SIZE_BYTES,
            limit_bytes: 2 * entry_bytes,
        })
    );
}

/// Answers every heartbeat `leader` sent to node 2 as node 2 would; returns how many.
fn answer_heartbeats_from_2(leader: &mut Node) -> usize {
    let term = leader.term();
    let heartbeats: Vec<MessageBody> = drain(leader)
        .into_iter()
        .filter(|sent| sent.to == 2)
        .filter_map(|sent| match sent.body {
            MessageBody::Heartbeat {
                read_sequence,
                sent_at_tick,
                ..
            } => Some(MessageBody::HeartbeatResponse {
                read_sequence,
                sent_at_tick,
            }),
            _ => None,
        })
        .collect();
    for answer in &heartbeats {
        leader.step(message(2, 1, term, answer.clone())).unwrap();
    }
    heartbeats.len()
}

/// Whether a read asked of `leader` now is served at once (from its lease).
fn read_served_at_once(leader: &mut Node, request_id: u64) -> bool {
    leader.read_index(request_id).unwrap();
    let ready = leader.ready();
    leader.advance(ready.number);
    ready
        .read_states
        .iter()
        .any(|read| read.request_id == request_id)
}

/// Rule: a leadership transfer revokes the lease for the rest of the term, also after the
/// transfer was abandoned: heartbeats acknowledged later confirm reads one by one (ReadIndex),
/// never a lease again, since the target may have campaigned.
#[test]
fn a_transfer_revokes_the_lease_for_the_rest_of_the_term() {
    let mut leader = lone_leader(|config| config.read_mode = ReadMode::LeaseBased);
    let term = leader.term();
    leader
        .step(message(2, 1, term, acknowledge(leader.last_index())))
        .unwrap();
    drain(&mut leader);
    leader.read_index(1).unwrap();
    assert_eq!(answer_heartbeats_from_2(&mut leader), 1);
    assert!(read_served_at_once(&mut leader, 2), "the lease holds");
    leader.transfer_leader(2).unwrap();
    drain(&mut leader);
    // Node 2 never campaigns: the transfer is abandoned after an election timeout.
    for _ in 0..leader.config().election_timeout_ticks {
        leader.tick();
        answer_heartbeats_from_2(&mut leader);
    }
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(leader.transfer_target(), None);
    assert_eq!(leader.metrics().transfers_aborted, 1);
    leader.tick();
    leader.tick();
    assert!(answer_heartbeats_from_2(&mut leader) > 0);
    assert!(
        !read_served_at_once(&mut leader, 3),
        "no lease in this term"
    );
}

/// Rule: the leader counts itself as acknowledging its own lease at the current tick (the tick
/// after the last one that passed), so that even the shortest lease (one tick, with an election
/// timeout of 3) serves a read in the tick a quorum acknowledged the heartbeat.
#[test]
fn the_shortest_lease_serves_reads_in_the_tick_of_its_acknowledgement() {
    let mut leader = lone_leader(|config| {
        config.read_mode = ReadMode::LeaseBased;
        config.election_timeout_ticks = 3;
        config.heartbeat_interval_ticks = 1;
    });
    let term = leader.term();
    leader
        .step(message(2, 1, term, acknowledge(leader.last_index())))
        .unwrap();
    drain(&mut leader);
    leader.read_index(1).unwrap();
    assert_eq!(answer_heartbeats_from_2(&mut leader), 1);
    assert!(read_served_at_once(&mut leader, 2));
    leader.tick();
    assert!(
        !read_served_at_once(&mut leader, 3),
        "one tick later: expired"
    );
}

// ---- src/config.rs ----

/// Rule: `Config::validate` refuses each broken relation between the settings on its own (one
/// setting changed from the defaults), and accepts every bound itself.
#[test]
fn each_relation_between_settings_is_checked_alone_and_its_bound_accepted() {
    type Adjust = fn(&mut Config);
    let refused: [(&str, Adjust); 8] = [
        ("id 0", |config| config.id = 0),
        ("no heartbeat", |config| config.heartbeat_interval_ticks = 0),
        ("election timeout = heartbeat", |config| {
            config.election_timeout_ticks = config.heartbeat_interval_ticks;
        }),
        ("no append in flight", |config| {
            config.inflight_messages_max = 0;
        }),
        ("empty appends", |config| config.append_size_bytes_max = 0),
        ("inflight bytes below one append", |config| {
            config.inflight_bytes_max = config.append_size_bytes_max - 1;
        }),
        ("uncommitted bytes below one entry", |config| {
            config.uncommitted_bytes_max = config.entry_size_bytes_max - 1;
        }),
        ("lease without check-quorum", |config| {
            config.read_mode = ReadMode::LeaseBased;
            config.check_quorum = false;
        }),
    ];
    let accepted: [(&str, Adjust); 6] = [
        ("election timeout = heartbeat + 1", |config| {
            config.election_timeout_ticks = config.heartbeat_interval_ticks + 1;
        }),
        ("one append in flight", |config| {
            config.inflight_messages_max = 1;
        }),
        ("inflight bytes = one append", |config| {
            config.inflight_bytes_max = config.append_size_bytes_max;
        }),
        ("appends of one byte", |config| {
            config.append_size_bytes_max = 1
        }),
        ("uncommitted bytes = one entry", |config| {
            config.uncommitted_bytes_max = config.entry_size_bytes_max;
        }),
        ("lease with check-quorum", |config| {
            config.read_mode = ReadMode::LeaseBased;
        }),
    ];
    for (name, adjust) in refused {
        let mut config = Config::new(1, GROUP_ID);
        adjust(&mut config);
        assert!(config.validate().is_err(), "{name}: accepted");
    }
    for (name, adjust) in accepted {
        let mut config = Config::new(1, GROUP_ID);
        adjust(&mut config);
        assert_eq!(config.validate(), Ok(()), "{name}");
    }
}

// ---- src/message.rs ----

/// Rule: a membership is valid only with at least one voter, both lists sorted and free of
/// duplicates, no node 0, and no node both voter and learner; each flaw alone makes it invalid.
#[test]
fn a_membership_is_invalid_by_any_one_flaw() {
    let membership = |voters: &[u64], learners: &[u64]| ConfState {
        voters: voters.to_vec(),
        learners: learners.to_vec(),
    };
    assert!(membership(&[1, 2, 3], &[4, 5]).is_valid());
    assert!(membership(&[1], &[]).is_valid());
    for (voters, learners) in [
        (&[][..], &[4][..]),
        (&[2, 1], &[]),
        (&[1, 1], &[]),
        (&[1], &[5, 4]),
        (&[1], &[4, 4]),
        (&[0, 1], &[]),
        (&[1], &[0, 4]),
        (&[1, 2], &[2]),
    ] {
        assert!(
            !membership(voters, learners).is_valid(),
            "{voters:?} {learners:?}"
        );
    }
}

/// Rule: a malformed message is refused under its own kind's name, one name for each kind (the
/// name is what the error and the logs tell an operator); pre-votes and their answers are named
/// apart from votes.
#[test]
fn a_malformed_message_is_refused_under_its_kinds_own_name() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    assert!(cluster.elect(1));
    let request_vote = |pre_vote| MessageBody::RequestVote {
        pre_vote,
        last_index: 0,
        last_term: 0,
        transfer: false,
    };
    let vote_response = |pre_vote| MessageBody::VoteResponse {
        pre_vote,
        granted: true,
    };
    let kinds = [
        (request_vote(true), "pre_vote"),
        (request_vote(false), "request_vote"),
        (vote_response(true), "pre_vote_response"),
        (vote_response(false), "vote_response"),
        (
            MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: Vec::new(),
                commit: 0,
            },
            "append",
        ),
        (acknowledge(0), "append_response"),
        (
            MessageBody::Heartbeat {
                commit: 0,
                read_sequence: 0,
                sent_at_tick: 0,
            },
            "heartbeat",
        ),
        (
            MessageBody::HeartbeatResponse {
                read_sequence: 0,
                sent_at_tick: 0,
            },
            "heartbeat_response",
        ),
        (
            MessageBody::InstallSnapshot {
                snapshot: Snapshot::default(),
            },
            "install_snapshot",
        ),
        (MessageBody::TimeoutNow, "timeout_now"),
        (MessageBody::ReadIndex { request_id: 1 }, "read_index"),
        (
            MessageBody::ReadIndexResponse {
                request_id: 1,
                index: 0,
            },
            "read_index_response",
        ),
    ];
    let follower = cluster.node_mut(2);
    for (body, expected) in kinds {
        assert_eq!(body.name(), expected);
        let refused = follower.step(message(1, 2, INDEX_AND_TERM_MAX + 1, body));
        assert_eq!(
            refused,
            Err(StepError::Malformed {
                kind: expected,
                reason: "index or term out of range",
            })
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            format!("malformed {expected} message: index or term out of range")
        );
    }
    assert_eq!(follower.metrics().messages_malformed, 12);
}

// ---- src/node/mod.rs ----

/// Rule: a Ready must be persisted (made durable before its persisted messages leave) when it
/// carries a hard state, a snapshot or entries, any one of them alone; a Ready of messages only
/// (a leader's heartbeats) need not be.
#[test]
fn a_ready_must_be_persisted_for_a_hard_state_a_snapshot_or_entries_each_alone() {
    let mut leader = lone_leader(|_| {});
    assert!(!leader.has_ready());
    leader.propose(data("x")).unwrap();
    let ready = leader.ready();
    assert!(ready.hard_state.is_none());
    assert_eq!(ready.entries.len(), 1);
    assert!(ready.must_persist());
    leader.advance(ready.number);
    drain(&mut leader);
    while !leader.has_ready() {
        leader.tick();
    }
    let heartbeats = leader.ready();
    assert!(!heartbeats.messages.is_empty());
    assert!(heartbeats.hard_state.is_none() && heartbeats.entries.is_empty());
    assert!(heartbeats.soft_state.is_none());
    assert!(!heartbeats.must_persist());
    leader.advance(heartbeats.number);

    let entry = || Entry {
        index: 3,
        term: 2,
        kind: EntryKind::Normal,
        data: data("x"),
    };
    let hard_state = Ready {
        hard_state: Some(HardState {
            term: 2,
            vote: 1,
            commit: 3,
        }),
        ..Ready::default()
    };
    assert!(hard_state.must_persist());
    let snapshot = Ready {
        snapshot: Some(Snapshot::default()),
        ..Ready::default()
    };
    assert!(snapshot.must_persist());
    let entries = Ready {
        entries: vec![entry()],
        ..Ready::default()
    };
    assert!(entries.must_persist());
    let everything_else = Ready {
        number: 1,
        messages: vec![message(1, 2, 2, MessageBody::TimeoutNow)],
        committed_entries: vec![entry()],
        ..Ready::default()
    };
    assert!(!everything_else.must_persist());
}

/// Rule: a node reports the identifier and the group its configuration gave it.
#[test]
fn a_node_reports_the_id_and_group_it_was_configured_with() {
    let node = Node::new(Config::new(7, 42), InitialState::bootstrap(&[7, 8, 9])).unwrap();
    assert_eq!((node.id(), node.group_id()), (7, 42));
    assert_eq!((node.config().id, node.config().group_id), (7, 42));
}

/// Rule: each Ready is numbered one past the one before it, so that [`Node::advance`] can tell
/// the Ready it confirms from an older one; an advance of an older number is refused (panics).
#[test]
fn each_ready_is_numbered_one_past_the_one_before() {
    let mut leader = lone_leader(|_| {});
    let mut numbers = Vec::new();
    for text in ["a", "b", "c"] {
        leader.propose(data(text)).unwrap();
        let ready = leader.ready();
        numbers.push(ready.number);
        leader.advance(ready.number);
    }
    assert!(numbers[0] > 0);
    assert_eq!(numbers, [numbers[0], numbers[0] + 1, numbers[0] + 2]);
    leader.propose(data("d")).unwrap();
    let ready = leader.ready();
    let stale = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        leader.advance(ready.number - 1);
    }));
    assert!(stale.is_err(), "an advance of an older Ready was taken");
}

/// Rule: a leader's uncommitted budget comes back once its entries are handed out to be applied:
/// after the entries that filled it are committed and applied, as many bytes are accepted again.
#[test]
fn a_leaders_uncommitted_budget_comes_back_once_its_entries_are_applied() {
    let (mut leader, _) = leader_with_room_for_two_entries_of_100_bytes();
    for _ in 0..2 {
        let full = || Bytes::from(vec![0u8; 100]);
        leader.propose(full()).unwrap();
        leader.propose(full()).unwrap();
        assert!(matches!(
            leader.propose(Bytes::new()),
            Err(ProposeError::UncommittedLimit { .. })
        ));
        drain(&mut leader);
        let (term, last) = (leader.term(), leader.last_index());
        leader.step(message(2, 1, term, acknowledge(last))).unwrap();
        assert_eq!(leader.commit_index(), last);
        drain(&mut leader);
        assert_eq!(leader.applied_index(), last);
    }
}

/// Rule: a leader that steps down because no quorum answered it has a Ready for its new role
/// alone (no term, no message, no entry changed): the runtime must hear that it lost the
/// leadership, and the Ready carries the soft state because it changed, and only then.
#[test]
fn a_leader_that_steps_down_on_check_quorum_has_a_ready_for_its_new_role_alone() {
    let mut leader = lone_leader(|_| {});
    assert!(leader.config().check_quorum);
    drain(&mut leader);
    let mut ticks = 0;
    while leader.role() == Role::Leader {
        assert!(ticks < 100, "the leader never stepped down");
        leader.tick();
        ticks += 1;
        if leader.role() == Role::Leader {
            for ready_messages in drain(&mut leader) {
                assert!(matches!(ready_messages.body, MessageBody::Heartbeat { .. }));
            }
        }
    }
    assert_eq!(leader.metrics().check_quorum_step_downs, 1);
    assert!(leader.has_ready());
    let ready = leader.ready();
    assert_eq!(
        ready.soft_state,
        Some(SoftState {
            leader_id: 0,
            role: Role::Follower,
        })
    );
    assert!(ready.hard_state.is_none() && ready.entries.is_empty());
    assert!(ready.messages.is_empty() && ready.persisted_messages.is_empty());
    leader.advance(ready.number);
    assert!(!leader.has_ready());
    let unchanged = leader.ready();
    assert_eq!(unchanged.soft_state, None);
    leader.advance(unchanged.number);
}

/// Rule: a node that learns of a higher term from a message it does not answer (a refused vote)
/// has a Ready for the new term alone: the term must be made durable before anything else goes
/// out in it.
#[test]
fn a_node_that_learns_a_higher_term_from_an_answer_has_a_ready_for_the_term_alone() {
    let mut node = Node::new(
        Config::new(2, GROUP_ID),
        InitialState::bootstrap(&[1, 2, 3]),
    )
    .unwrap();
    drain(&mut node);
    assert!(!node.has_ready());
    let refusal = MessageBody::VoteResponse {
        pre_vote: false,
        granted: false,
    };
    node.step(message(3, 2, 5, refusal)).unwrap();
    assert_eq!(
        (node.term(), node.role(), node.leader_id()),
        (5, Role::Follower, 0)
    );
    assert!(node.has_ready());
    let ready = node.ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 5,
            vote: 0,
            commit: node.commit_index(),
        })
    );
    assert_eq!(ready.soft_state, None);
    assert!(ready.messages.is_empty() && ready.persisted_messages.is_empty());
    node.advance(ready.number);
    assert!(!node.has_ready());
}
