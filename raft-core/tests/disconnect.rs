//! Stories of a follower told that its connection to the leader broke
//! ([`Node::report_unreachable`]): when the leader's process died it is replaced in a fraction
//! of an election timeout; when the connection merely flaps, nothing changes.

use raft_core::testing::Cluster;
use raft_core::{Config, ReadMode, Role};

/// The election timeout of the harness's default configuration, in ticks.
fn election_ticks(cluster: &Cluster) -> u32 {
    cluster.node(1).config().election_timeout_ticks
}

/// Ticks every running node one at a time until a leader other than `old` exists; the ticks
/// it took, or `None` within `limit`.
fn ticks_until_new_leader(cluster: &mut Cluster, old: u64, limit: u32) -> Option<u32> {
    for tick in 1..=limit {
        cluster.tick_all(1);
        cluster.stabilize();
        if cluster.leader().is_some_and(|leader| leader != old) {
            return Some(tick);
        }
    }
    None
}

/// A cluster of three led by node 1, settled.
fn led_by_one(adjust: impl Fn(&mut Config)) -> Cluster {
    let mut cluster = Cluster::with_config(&[1, 2, 3], adjust);
    assert!(cluster.elect(1));
    cluster.stabilize();
    cluster
}

/// Rule: a follower whose connection to its leader broke campaigns within half an election
/// timeout (with a pre-vote), so a dead leader is replaced before any follower's election
/// timer could have fired.
#[test]
fn followers_that_lose_a_dead_leaders_connection_elect_a_new_one_within_half_a_timeout() {
    let mut cluster = led_by_one(|_| {});
    let term = cluster.node(2).term();
    let timeout = election_ticks(&cluster);
    cluster.crash(1);
    for follower in [2, 3] {
        cluster.node_mut(follower).report_unreachable(1);
        assert_eq!(cluster.node(follower).leader_id(), 0, "stops honouring it");
        assert_eq!(
            cluster
                .node(follower)
                .metrics()
                .leaders_given_up_on_disconnect,
            1
        );
    }
    let ticks = ticks_until_new_leader(&mut cluster, 1, timeout).expect("a new leader");
    assert!(
        ticks <= timeout / 2 + 1,
        "elected after {ticks} ticks; a full election timeout is {timeout}"
    );
    assert_eq!(
        cluster.node(2).term(),
        term + 1,
        "one election, no split vote"
    );
}

/// Rule: without the report, the followers wait for their election timeout (the behaviour
/// the report shortens).
#[test]
fn without_the_report_a_dead_leader_is_replaced_only_after_an_election_timeout() {
    let mut cluster = led_by_one(|_| {});
    let timeout = election_ticks(&cluster);
    cluster.crash(1);
    let ticks = ticks_until_new_leader(&mut cluster, 1, 3 * timeout).expect("a new leader");
    assert!(ticks >= timeout, "elected after {ticks} ticks");
}

/// Rule: a follower whose connection to a live leader flaps campaigns (with a pre-vote), but
/// the followers that still hear from the leader refuse it: no term changes, the leader
/// stays, and once the connection is back the follower follows it again with its usual
/// timer.
#[test]
fn a_flapping_connection_to_a_live_leader_deposes_no_one() {
    let mut cluster = led_by_one(|_| {});
    let term = cluster.node(1).term();
    let timeout = election_ticks(&cluster);
    // The leader's messages no longer reach node 2, whose transport reports the break.
    cluster.cut_one_way(1, 2);
    cluster.node_mut(2).report_unreachable(1);
    cluster.tick_all(timeout / 2 + 1);
    cluster.stabilize();
    assert_eq!(cluster.node(2).role(), Role::PreCandidate, "it campaigned");
    assert!(cluster.node(3).metrics().votes_ignored_by_stickiness >= 1);
    cluster.heal();
    cluster.tick_all(2 * timeout);
    cluster.stabilize();
    for id in [1, 2, 3] {
        assert_eq!(cluster.node(id).term(), term, "node {id}'s term");
    }
    assert_eq!(cluster.leader(), Some(1));
    assert_eq!(cluster.node(2).role(), Role::Follower);
    assert_eq!(cluster.node(2).leader_id(), 1);
}

/// Rule: the report about a peer that is not the follower's leader changes nothing, and a
/// leader heard again ends the shortened timer.
#[test]
fn only_the_leaders_connection_counts_and_hearing_it_again_restores_the_timer() {
    let mut cluster = led_by_one(|_| {});
    let timeout = election_ticks(&cluster);
    cluster.node_mut(2).report_unreachable(3);
    assert_eq!(cluster.node(2).leader_id(), 1);
    assert_eq!(cluster.node(2).metrics().leaders_given_up_on_disconnect, 0);
    // The leader's connection breaks and comes back before the shortened timer fires: the
    // next heartbeat restores the usual timer, so the follower then waits a whole timeout.
    cluster.node_mut(2).report_unreachable(1);
    cluster.tick_all(2);
    cluster.stabilize();
    assert_eq!(cluster.node(2).leader_id(), 1, "heard the heartbeat");
    cluster.cut_one_way(1, 2);
    for _ in 0..timeout - 1 {
        cluster.tick(2);
    }
    assert_eq!(
        cluster.node(2).role(),
        Role::Follower,
        "a whole election timeout of silence is waited out again"
    );
}

/// Rule: with lease-based reads a follower keeps its promise not to help elect another
/// leader before its election timeout (a live leader cut off by the network may be serving
/// reads from its lease); without pre-vote, or without check-quorum (whose stickiness makes
/// the followers that still hear the leader refuse), it does not campaign early either.
#[test]
fn with_lease_reads_without_pre_vote_or_without_check_quorum_the_report_changes_nothing() {
    let lease = |config: &mut Config| config.read_mode = ReadMode::LeaseBased;
    let no_pre_vote = |config: &mut Config| config.pre_vote = false;
    let no_check_quorum = |config: &mut Config| config.check_quorum = false;
    for adjust in [
        &lease as &dyn Fn(&mut Config),
        &no_pre_vote,
        &no_check_quorum,
    ] {
        let mut cluster = led_by_one(adjust);
        let timeout = election_ticks(&cluster);
        cluster.crash(1);
        for follower in [2, 3] {
            cluster.node_mut(follower).report_unreachable(1);
            assert_eq!(cluster.node(follower).leader_id(), 1);
            assert_eq!(
                cluster
                    .node(follower)
                    .metrics()
                    .leaders_given_up_on_disconnect,
                0
            );
        }
        let ticks = ticks_until_new_leader(&mut cluster, 1, 3 * timeout).expect("a new leader");
        assert!(ticks >= timeout, "elected after {ticks} ticks");
    }
}

/// Rule: whatever the follower's random draw and however long its timer had already run since
/// the last heartbeat, it campaigns within half an election timeout of the report.
#[test]
fn the_early_campaign_comes_within_half_a_timeout_for_every_draw() {
    let mut latest = 0;
    for seed in 0..32 {
        let mut cluster = led_by_one(|config| config.seed = seed * 7919 + config.id);
        let timeout = election_ticks(&cluster);
        cluster.crash(1);
        // A tick of silence already counted (heartbeats come every two ticks).
        cluster.tick(2);
        cluster.node_mut(2).report_unreachable(1);
        let mut ticks = 0;
        while cluster.node(2).role() == Role::Follower {
            cluster.tick(2);
            ticks += 1;
            assert!(ticks <= timeout, "seed {seed}: no campaign");
        }
        assert!(
            ticks <= timeout / 2,
            "seed {seed}: campaigned after {ticks} ticks"
        );
        latest = latest.max(ticks);
    }
    assert_eq!(latest, 5, "the draws reach the end of the window");
}
