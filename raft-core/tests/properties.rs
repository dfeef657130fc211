//! Property tests: clusters of 3 and 5 nodes driven by random schedules of ticks, proposals,
//! reads, message drops, reorders and duplicates, partitions, crashes (losing everything not
//! yet persisted) and restarts. The harness checks the invariants after every step: at most
//! one leader per term, log matching, leader completeness, the same entry applied at each
//! index everywhere, commit and applied indexes never going back, and reads observing every
//! write completed before they were requested. After the schedule, a liveness phase heals
//! everything and requires the cluster to commit again.
//!
//! A failing schedule shrinks to a short, readable list of actions. To follow one step by step,
//! paste it into a test calling `run` and set `DEBUG_SCHEDULE=1`: each action is printed with
//! every node's role, term, commit index, last index and voters before it runs.

use bytes::Bytes;
use proptest::prelude::*;
use raft_core::ConfChange;
use raft_core::testing::{Cluster, LinkFaults, NETWORK_SEED_DEFAULT};

#[derive(Clone, Debug)]
enum Action {
    /// Ticks on every node, each followed by Readys handled and one round of messages.
    TickAll(u32),
    Tick(u64),
    ProposeAtLeader,
    Propose(u64),
    Read(u64),
    /// Handle one node's Ready.
    Process(u64),
    /// Deliver every message on the wire.
    DeliverAll,
    /// Deliver the message at this position first (reorder).
    DeliverOne(usize),
    DropOne(usize),
    DuplicateOne(usize),
    /// Cut these nodes off from the others.
    Partition(Vec<u64>),
    Heal,
    Crash(u64),
    /// Crash after sending the messages that may precede persistence, before persisting.
    CrashMidReady(u64),
    Restart(u64),
    Compact(u64),
    /// Membership changes at the current leader (only in the membership runs).
    AddVoter(u64),
    AddLearner(u64),
    Remove(u64),
    /// A leadership transfer from the current leader (only in the membership runs).
    Transfer(u64),
}

fn action(nodes: u64) -> impl Strategy<Value = Action> {
    let node = 1..=nodes;
    let ids: Vec<u64> = (1..=nodes).collect();
    prop_oneof![
        10 => (1..4u32).prop_map(Action::TickAll),
        2 => node.clone().prop_map(Action::Tick),
        8 => Just(Action::ProposeAtLeader),
        1 => node.clone().prop_map(Action::Propose),
        2 => node.clone().prop_map(Action::Read),
        2 => node.clone().prop_map(Action::Process),
        5 => Just(Action::DeliverAll),
        2 => (0..8usize).prop_map(Action::DeliverOne),
        2 => (0..8usize).prop_map(Action::DropOne),
        1 => (0..8usize).prop_map(Action::DuplicateOne),
        1 => proptest::sample::subsequence(ids, 1..nodes as usize).prop_map(Action::Partition),
        1 => Just(Action::Heal),
        1 => node.clone().prop_map(Action::Crash),
        1 => node.clone().prop_map(Action::CrashMidReady),
        2 => node.clone().prop_map(Action::Restart),
        1 => node.prop_map(Action::Compact),
    ]
}

/// The knobs a schedule runs with: message faults and replication limits that split appends
/// (so that followers acknowledge partial logs, as in the paper's Figure 8).
#[derive(Clone, Debug)]
struct Settings {
    faults: LinkFaults,
    append_size_bytes_max: u64,
    inflight_messages_max: usize,
    pre_vote: bool,
    check_quorum: bool,
}

/// The actions of [`action`], plus membership changes and leadership transfers.
fn membership_action(nodes: u64) -> impl Strategy<Value = Action> {
    let node = 1..=nodes;
    prop_oneof![
        12 => action(nodes),
        1 => node.clone().prop_map(Action::AddVoter),
        1 => node.clone().prop_map(Action::AddLearner),
        1 => node.clone().prop_map(Action::Remove),
        1 => node.prop_map(Action::Transfer),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    let faults =
        (0..150_000u32, 0..80_000u32, 0..150_000u32).prop_map(|(drop, duplicate, delay)| {
            LinkFaults {
                drop_per_million: drop,
                duplicate_per_million: duplicate,
                delay_per_million: delay,
            }
        });
    (
        faults,
        prop_oneof![Just(1u64), Just(64), Just(1 << 20)],
        prop_oneof![Just(1usize), Just(2), Just(256)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(faults, append_size_bytes_max, inflight_messages_max, pre_vote, check_quorum)| {
                Settings {
                    faults,
                    append_size_bytes_max,
                    inflight_messages_max,
                    pre_vote,
                    check_quorum,
                }
            },
        )
}

/// Runs a schedule on a group of `voters` (ids from 1), plus `joining` nodes that start outside
/// the group and may be added by membership changes.
fn run(voters: u64, joining: u64, settings: &Settings, actions: &[Action]) {
    let ids: Vec<u64> = (1..=voters + joining).collect();
    // Short timeouts, so that random schedules elect leaders and commit often.
    let adjust = |config: &mut raft_core::Config| {
        config.election_timeout_ticks = 4;
        config.heartbeat_interval_ticks = 1;
        config.append_size_bytes_max = settings.append_size_bytes_max;
        config.inflight_bytes_max = settings.append_size_bytes_max.max(1 << 20);
        config.inflight_messages_max = settings.inflight_messages_max;
        config.pre_vote = settings.pre_vote;
        config.check_quorum = settings.check_quorum;
    };
    let initial_voters: Vec<u64> = (1..=voters).collect();
    let mut cluster = Cluster::with_config(&initial_voters, adjust);
    for id in voters + 1..=voters + joining {
        cluster.add_joining_node(id, adjust);
    }
    cluster.set_faults(settings.faults);
    let mut next_write = 0u64;
    let mut write = || {
        next_write += 1;
        Bytes::from(format!("w{next_write}"))
    };
    for action in actions {
        if std::env::var("DEBUG_SCHEDULE").is_ok() {
            let summary: Vec<String> = ids
                .iter()
                .filter(|id| cluster.is_up(**id))
                .map(|id| {
                    let node = cluster.node(*id);
                    format!(
                        "{id}:{:?}/t{}/c{}/l{}/v{:?}",
                        node.role(),
                        node.term(),
                        node.commit_index(),
                        node.last_index(),
                        node.membership().voters
                    )
                })
                .collect();
            eprintln!("{} | {action:?}", summary.join(" "));
        }
        match action {
            Action::TickAll(count) => cluster.tick_all(*count),
            Action::Tick(id) => cluster.tick(*id),
            Action::ProposeAtLeader => {
                if let Some(leader) = cluster.leader() {
                    let _ = cluster.propose(leader, write());
                }
            }
            Action::Propose(id) if cluster.is_up(*id) => {
                let _ = cluster.propose(*id, write());
            }
            Action::Read(id) if cluster.is_up(*id) => {
                cluster.read(*id);
            }
            Action::Process(id) => {
                cluster.process(*id);
            }
            Action::DeliverAll => cluster.deliver_round(),
            Action::DeliverOne(position) => cluster.deliver_one(*position),
            Action::DropOne(position) => cluster.drop_one(*position),
            Action::DuplicateOne(position) => cluster.duplicate_one(*position),
            Action::Partition(side) => cluster.partition(side),
            Action::Heal => cluster.heal(),
            Action::Crash(id) => cluster.crash(*id),
            Action::CrashMidReady(id) => cluster.crash_mid_ready(*id),
            Action::Restart(id) => cluster.restart(*id),
            Action::Compact(id) => cluster.compact(*id),
            Action::AddVoter(id) => change_membership(&mut cluster, ConfChange::AddVoter(*id)),
            Action::AddLearner(id) => {
                change_membership(&mut cluster, ConfChange::AddLearner(*id));
            }
            Action::Remove(id) => change_membership(&mut cluster, ConfChange::RemoveNode(*id)),
            Action::Transfer(id) => {
                if let Some(leader) = cluster.leader() {
                    let _ = cluster.node_mut(leader).transfer_leader(*id);
                }
            }
            Action::Propose(_) | Action::Read(_) => {}
        }
    }
    liveness(&mut cluster, &ids);
}

fn change_membership(cluster: &mut Cluster, change: ConfChange) {
    if let Some(leader) = cluster.leader() {
        let _ = cluster.node_mut(leader).propose_conf_change(change);
    }
}

/// With every fault healed, a leader is elected and a new write reaches every voter.
fn liveness(cluster: &mut Cluster, ids: &[u64]) {
    cluster.set_faults(LinkFaults::default());
    cluster.heal();
    for id in ids {
        cluster.restart(*id);
    }
    let final_write = Bytes::from_static(b"final");
    // A proposal is lost if its leader loses leadership before committing it: like a client,
    // propose again to each new leader.
    let mut proposed_to = None;
    for _ in 0..400 {
        cluster.tick_all(1);
        cluster.stabilize();
        if let Some(leader) = cluster.leader() {
            let term = cluster.node(leader).term();
            if proposed_to != Some((leader, term))
                && cluster.propose(leader, final_write.clone()).is_ok()
            {
                proposed_to = Some((leader, term));
            }
        }
        let Some(leader) = cluster.leader() else {
            continue;
        };
        let voters = cluster.node(leader).membership().voters.clone();
        let everywhere = voters
            .iter()
            .all(|id| cluster.state(*id).last() == Some(&final_write));
        if everywhere {
            return;
        }
    }
    let summary: Vec<String> = ids
        .iter()
        .map(|id| {
            let node = cluster.node(*id);
            format!(
                "{id}: {:?} term {} vote {} leader {} commit {} last {} ({:?})",
                node.role(),
                node.term(),
                node.vote(),
                node.leader_id(),
                node.commit_index(),
                node.last_index(),
                node.metrics()
            )
        })
        .collect();
    panic!(
        "liveness: the healed cluster did not commit a new write everywhere:\n{}",
        summary.join("\n")
    );
}

/// 1,000 cases per cluster size by default; `PROPTEST_CASES` overrides it for longer hunts.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn three_nodes_keep_every_invariant(
        settings in settings(),
        actions in proptest::collection::vec(action(3), 1..400),
    ) {
        run(3, 0, &settings, &actions);
    }

    #[test]
    fn five_nodes_keep_every_invariant(
        settings in settings(),
        actions in proptest::collection::vec(action(5), 1..400),
    ) {
        run(5, 0, &settings, &actions);
    }

    /// Three voters and two nodes outside the group, with random membership changes
    /// (additions, learners, removals, including of the leader) and leadership transfers.
    #[test]
    fn membership_changes_and_transfers_keep_every_invariant(
        settings in settings(),
        actions in proptest::collection::vec(membership_action(5), 1..400),
    ) {
        run(3, 2, &settings, &actions);
    }
}

/// Ticks, proposals at the leader, crashes and restarts over a lossy network.
fn lossy_schedule(cluster: &mut Cluster) {
    cluster.set_faults(LinkFaults {
        drop_per_million: 100_000,
        duplicate_per_million: 50_000,
        delay_per_million: 100_000,
    });
    for round in 0..200u64 {
        cluster.tick_all(1);
        if let Some(leader) = cluster.leader() {
            let _ = cluster.propose(leader, Bytes::from(round.to_string()));
        }
        if round % 37 == 0 {
            cluster.crash(1 + round % 3);
        }
        if round % 37 == 10 {
            cluster.restart(1 + round % 3);
        }
    }
}

/// The transcript of [`lossy_schedule`] on `cluster`.
fn lossy_transcript(mut cluster: Cluster) -> String {
    cluster.record_transcript();
    lossy_schedule(&mut cluster);
    cluster.transcript().to_owned()
}

/// The same configuration, seeds and inputs give byte-identical outputs.
#[test]
fn the_same_inputs_give_byte_identical_outputs() {
    let transcript = || lossy_transcript(Cluster::new(&[1, 2, 3]));
    let first = transcript();
    assert!(first.len() > 10_000, "the schedule did something");
    assert!(first.contains("committed_entries: [Entry"));
    assert_eq!(first, transcript());
}

/// The network's seed decides which messages the faults hit: one schedule, many networks. The
/// default seed is [`NETWORK_SEED_DEFAULT`].
#[test]
fn the_network_seed_chooses_which_messages_the_faults_hit() {
    let seeded = |seed| lossy_transcript(Cluster::new(&[1, 2, 3]).with_network_seed(seed));
    assert_eq!(
        lossy_transcript(Cluster::new(&[1, 2, 3])),
        seeded(NETWORK_SEED_DEFAULT)
    );
    let first = seeded(7);
    assert_eq!(first, seeded(7));
    assert_ne!(first, seeded(8));
    assert_ne!(first, seeded(NETWORK_SEED_DEFAULT));
    assert!(first.contains("committed_entries: [Entry"));
}
