//! Stories that pin rules no other test checked: each was found by mutation testing (a mutant of
//! the rule's code that every other test let through; see `raft-core/MUTANTS.md`) and names the
//! rule it pins. They are grouped by the source file whose mutants they kill.

use bytes::Bytes;
use raft_core::testing::Cluster;
use raft_core::{ConfChange, ProgressState, Role};

fn data(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
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
