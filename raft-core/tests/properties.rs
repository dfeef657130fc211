//! Property tests: clusters of 3 and 5 nodes driven by random schedules of ticks, proposals,
//! reads, message drops, reorders and duplicates, partitions, crashes (losing everything not
//! yet persisted) and restarts. The harness checks the invariants after every step: at most
//! one leader per term, log matching, leader completeness, the same entry applied at each
//! index everywhere, commit and applied indexes never going back, and reads observing every
//! write completed before they were requested. After the schedule, a liveness phase heals
//! everything and requires the cluster to commit again.
//!
//! Each case draws its configuration as well as its schedule ([`Settings`]): ReadIndex or lease
//! reads, pre-vote and check-quorum on or off, replication and inflight limits, how often the
//! nodes compact (snapshots), and whether membership changes and transfers happen.
//!
//! What the test command runs, and how long it takes (debug test profile, one core):
//!
//! - the corpus ([`CORPUS`]): schedules that once found bugs, replayed first, as they printed;
//! - fixed seeds: 5,000 cases per shape from a fixed proptest seed, the same every run;
//! - a rotating part: 3,000 cases of any shape from a seed that changes every run and is
//!   printed (`RAFT_PROPERTY_SEED=<seed>` replays it; `RAFT_PROPERTY_CASES` sets the count).
//!
//! The soak, a much larger budget on a fresh seed (README.md gives its time):
//!
//! ```sh
//! RAFT_PROPERTY_CASES=300000 cargo test --release -p raft-core --test properties \
//!     rotating_seed -- --nocapture
//! ```
//!
//! A failing case shrinks to a short, readable list of actions, printed with its shape and
//! settings and the seed that found it; add it to [`CORPUS`]. To follow one step by step, set
//! `DEBUG_SCHEDULE=1`: each action is printed with every node's role, term, commit index, last
//! index and voters before it runs.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestError, TestRng, TestRunner,
};
use raft_core::testing::{Cluster, LinkFaults, NETWORK_SEED_DEFAULT};
use raft_core::{ConfChange, ReadMode};
// A failure prints its settings with `{:?}`, where read modes appear as bare `Safe` and
// `LeaseBased`: in scope by those names, the printed settings paste into [`CORPUS`] as they are.
use raft_core::ReadMode::{LeaseBased, Safe};

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

/// The configuration of one case, drawn with its schedule.
#[derive(Clone, Debug)]
struct Settings {
    /// Message faults on every link.
    faults: LinkFaults,
    /// Small limits split appends, so that followers acknowledge partial logs (as in the
    /// paper's Figure 8).
    append_size_bytes_max: u64,
    inflight_messages_max: usize,
    inflight_bytes_max: u64,
    pre_vote: bool,
    check_quorum: bool,
    /// Lease reads only with check-quorum (`Config::validate` requires it).
    read_mode: ReadMode,
    /// Every running node compacts (takes a snapshot) once it applied this many entries past
    /// its last snapshot; `None`: only the schedule's `Compact` actions compact.
    compact_every_entries: Option<u64>,
    /// Whether the schedule's membership changes and transfers are proposed (otherwise they
    /// are skipped).
    membership_changes: bool,
    /// The simulated network's seed: which messages the faults hit.
    network_seed: u64,
}

impl Settings {
    /// The settings every case had before the configuration was drawn per case: ReadIndex
    /// reads, no automatic compaction, with membership changes, the default network seed. The
    /// corpus's older schedules run with these.
    const fn before_per_case_draws(
        [drop, duplicate, delay]: [u32; 3],
        append_size_bytes_max: u64,
        inflight_messages_max: usize,
        pre_vote: bool,
        check_quorum: bool,
    ) -> Settings {
        Settings {
            faults: LinkFaults {
                drop_per_million: drop,
                duplicate_per_million: duplicate,
                delay_per_million: delay,
            },
            append_size_bytes_max,
            inflight_messages_max,
            inflight_bytes_max: if append_size_bytes_max > 1 << 20 {
                append_size_bytes_max
            } else {
                1 << 20
            },
            pre_vote,
            check_quorum,
            read_mode: Safe,
            compact_every_entries: None,
            membership_changes: true,
            network_seed: NETWORK_SEED_DEFAULT,
        }
    }
}

/// The groups a schedule runs on.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Three voters, ids 1 to 3.
    Three,
    /// Five voters, ids 1 to 5.
    Five,
    /// Three voters and two nodes (4 and 5) outside the group that membership changes may add.
    ThreePlusTwoJoining,
}

impl Shape {
    fn voters(self) -> u64 {
        match self {
            Shape::Three | Shape::ThreePlusTwoJoining => 3,
            Shape::Five => 5,
        }
    }

    fn joining(self) -> u64 {
        match self {
            Shape::Three | Shape::Five => 0,
            Shape::ThreePlusTwoJoining => 2,
        }
    }

    fn nodes(self) -> u64 {
        self.voters() + self.joining()
    }
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

fn settings(membership_changes: impl Strategy<Value = bool>) -> impl Strategy<Value = Settings> {
    let faults =
        (0..150_000u32, 0..80_000u32, 0..150_000u32).prop_map(|(drop, duplicate, delay)| {
            LinkFaults {
                drop_per_million: drop,
                duplicate_per_million: duplicate,
                delay_per_million: delay,
            }
        });
    let limits = (
        prop_oneof![Just(1u64), Just(64), Just(1 << 20)],
        prop_oneof![Just(1usize), Just(2), Just(256)],
        // Inflight bytes as a multiple of the append size: one append, a few, or no limit.
        prop_oneof![Just(1u64), Just(4), Just(1 << 20)],
    );
    let compaction = prop_oneof![
        2 => Just(None),
        1 => Just(Some(1u64)),
        1 => Just(Some(4u64)),
        1 => Just(Some(16u64)),
    ];
    (
        faults,
        limits,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        compaction,
        membership_changes,
        any::<u64>(),
    )
        .prop_map(
            |(
                faults,
                limits,
                pre_vote,
                check_quorum,
                lease,
                compact_every_entries,
                membership,
                network_seed,
            )| {
                let (append_size_bytes_max, inflight_messages_max, inflight_factor) = limits;
                let read_mode = if lease && check_quorum {
                    LeaseBased
                } else {
                    Safe
                };
                Settings {
                    faults,
                    append_size_bytes_max,
                    inflight_messages_max,
                    inflight_bytes_max: (append_size_bytes_max * inflight_factor).min(1 << 30),
                    pre_vote,
                    check_quorum,
                    read_mode,
                    compact_every_entries,
                    membership_changes: membership,
                    network_seed,
                }
            },
        )
}

/// One case: a shape, its settings and its schedule.
fn case(shape: Shape) -> impl Strategy<Value = (Settings, Vec<Action>)> {
    // The groups with joining nodes exist for membership changes; the others draw them.
    let membership_changes = match shape {
        Shape::ThreePlusTwoJoining => Just(true).boxed(),
        Shape::Three | Shape::Five => any::<bool>().boxed(),
    };
    (
        settings(membership_changes),
        proptest::collection::vec(membership_action(shape.nodes()), 1..400),
    )
}

/// What a schedule exercised, so that the fixed seeds can show that they reach every
/// configuration.
#[derive(Clone, Copy, Debug, Default)]
struct Reached {
    reads_served: usize,
    snapshots_taken: bool,
    membership_changed: bool,
}

/// Runs a schedule on `shape`, then its liveness phase; returns what the schedule reached.
fn run(shape: Shape, settings: &Settings, actions: &[Action]) -> Reached {
    let (voters, joining) = (shape.voters(), shape.joining());
    let ids: Vec<u64> = (1..=voters + joining).collect();
    // Short timeouts, so that random schedules elect leaders and commit often.
    let adjust = |config: &mut raft_core::Config| {
        config.election_timeout_ticks = 4;
        config.heartbeat_interval_ticks = 1;
        config.append_size_bytes_max = settings.append_size_bytes_max;
        config.inflight_bytes_max = settings.inflight_bytes_max;
        config.inflight_messages_max = settings.inflight_messages_max;
        config.pre_vote = settings.pre_vote;
        config.check_quorum = settings.check_quorum;
        config.read_mode = settings.read_mode;
    };
    let initial_voters: Vec<u64> = (1..=voters).collect();
    let mut cluster =
        Cluster::with_config(&initial_voters, adjust).with_network_seed(settings.network_seed);
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
            eprintln!("{} | {action:?}", summary(&cluster, &ids));
        }
        let membership = settings.membership_changes;
        match action {
            Action::TickAll(count) => cluster.tick_all(*count),
            // Lease reads assume that every node's clock runs at the same rate (within two
            // ticks per election timeout): one node ticked alone would break the assumption
            // the configuration states, not the protocol.
            Action::Tick(_) if settings.read_mode == ReadMode::LeaseBased => {}
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
            Action::AddVoter(id) if membership => {
                change_membership(&mut cluster, ConfChange::AddVoter(*id));
            }
            Action::AddLearner(id) if membership => {
                change_membership(&mut cluster, ConfChange::AddLearner(*id));
            }
            Action::Remove(id) if membership => {
                change_membership(&mut cluster, ConfChange::RemoveNode(*id));
            }
            Action::Transfer(id) if membership => {
                if let Some(leader) = cluster.leader() {
                    let _ = cluster.node_mut(leader).transfer_leader(*id);
                }
            }
            Action::Propose(_)
            | Action::Read(_)
            | Action::AddVoter(_)
            | Action::AddLearner(_)
            | Action::Remove(_)
            | Action::Transfer(_) => {}
        }
        if let Some(entries) = settings.compact_every_entries {
            compact_every(&mut cluster, &ids, entries);
        }
    }
    let reached = Reached {
        reads_served: ids.iter().map(|id| cluster.served_reads(*id).len()).sum(),
        snapshots_taken: ids.iter().any(|id| cluster.durable(*id).snapshot.is_some()),
        membership_changed: ids.iter().any(|id| {
            cluster.is_up(*id) && cluster.node(*id).membership().voters != initial_voters
        }),
    };
    liveness(&mut cluster, &ids);
    reached
}

/// Every running node that applied `entries` entries past its last snapshot compacts.
fn compact_every(cluster: &mut Cluster, ids: &[u64], entries: u64) {
    for id in ids {
        if cluster.is_up(*id) {
            let node = cluster.node(*id);
            let snapshot_index = node.first_index() - 1;
            if node.applied_index() >= snapshot_index + entries {
                cluster.compact(*id);
            }
        }
    }
}

/// Every running node's role, term, commit index, last index and voters.
fn summary(cluster: &Cluster, ids: &[u64]) -> String {
    let nodes: Vec<String> = ids
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
    nodes.join(" ")
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

/// The fixed part's seed: the same cases on every run of the test command.
const FIXED_SEED: u64 = 1;

/// Cases per shape from [`FIXED_SEED`].
const FIXED_CASES: u32 = 5_000;

/// Cases of the rotating part, unless `RAFT_PROPERTY_CASES` says otherwise.
const ROTATING_CASES: u32 = 3_000;

/// A runner whose cases all come from `seed`: no randomness of its own and no persisted
/// failures (the corpus keeps those, as schedules, so that they survive changes to the
/// strategies).
fn runner(seed: u64, cases: u32) -> TestRunner {
    // Mutation testing sets `RAFT_PROPERTY_SHRINK_ITERS=0`: it needs to know that a case
    // fails, not the shortest one.
    let max_shrink_iters = std::env::var("RAFT_PROPERTY_SHRINK_ITERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2_000);
    let config = ProptestConfig {
        cases,
        max_shrink_iters,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Runs `cases` cases of `shape` drawn from `seed`; a failure panics with the shrunk case, its
/// shape and settings, and the command that replays the seed. Returns what the cases reached.
fn check(shape: Shape, seed: u64, cases: u32) -> Vec<(Settings, Reached)> {
    let reached = std::cell::RefCell::new(Vec::new());
    let result = runner(seed, cases).run(&case(shape), |(settings, actions)| {
        let outcome = run(shape, &settings, &actions);
        reached.borrow_mut().push((settings, outcome));
        Ok(())
    });
    match result {
        Ok(()) => reached.into_inner(),
        Err(TestError::Fail(reason, (settings, actions))) => panic!(
            "{reason}\nshape: Shape::{shape:?}\nsettings: {settings:?}\nactions: {actions:?}\n\
             found by seed {seed} (RAFT_PROPERTY_SEED={seed} cargo test -p raft-core --test \
             properties rotating_seed); add the shape, settings and actions to CORPUS as printed"
        ),
        Err(TestError::Abort(reason)) => panic!("seed {seed}: {reason}"),
    }
}

/// Each configuration knob took each of its values in some case that served reads, took
/// snapshots or changed the membership.
fn assert_every_configuration_reached(reached: &[(Settings, Reached)]) {
    let served = |mode: ReadMode| {
        reached
            .iter()
            .any(|(settings, reached)| settings.read_mode == mode && reached.reads_served > 0)
    };
    assert!(served(ReadMode::Safe), "no ReadIndex read was served");
    assert!(served(ReadMode::LeaseBased), "no lease read was served");
    for pre_vote in [false, true] {
        for check_quorum in [false, true] {
            assert!(
                reached
                    .iter()
                    .any(|(settings, _)| settings.pre_vote == pre_vote
                        && settings.check_quorum == check_quorum),
                "pre-vote {pre_vote} with check-quorum {check_quorum} never drawn"
            );
        }
    }
    assert!(
        reached.iter().any(|(settings, reached)| {
            settings.compact_every_entries == Some(1) && reached.snapshots_taken
        }),
        "no case compacted after every entry"
    );
    assert!(
        reached.iter().any(|(settings, reached)| {
            settings.read_mode == ReadMode::LeaseBased && reached.membership_changed
        }),
        "no case with lease reads changed its membership"
    );
}

#[test]
fn three_nodes_keep_every_invariant() {
    let reached = check(Shape::Three, FIXED_SEED, FIXED_CASES);
    assert_every_configuration_reached(&reached);
}

#[test]
fn five_nodes_keep_every_invariant() {
    let reached = check(Shape::Five, FIXED_SEED, FIXED_CASES);
    assert_every_configuration_reached(&reached);
}

/// Three voters and two nodes outside the group, with random membership changes
/// (additions, learners, removals, including of the leader) and leadership transfers.
#[test]
fn membership_changes_and_transfers_keep_every_invariant() {
    let reached = check(Shape::ThreePlusTwoJoining, FIXED_SEED, FIXED_CASES);
    assert_every_configuration_reached(&reached);
}

/// Cases from a seed that changes on every run (the clock's), printed so that a failure can be
/// replayed: `RAFT_PROPERTY_SEED=<seed>`. Each shape gets a third of the cases.
#[test]
fn rotating_seed() {
    let seed = std::env::var("RAFT_PROPERTY_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_secs()
        });
    let cases = std::env::var("RAFT_PROPERTY_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(ROTATING_CASES);
    println!("rotating property cases: RAFT_PROPERTY_SEED={seed} RAFT_PROPERTY_CASES={cases}");
    for shape in [Shape::Three, Shape::Five, Shape::ThreePlusTwoJoining] {
        check(shape, seed, cases.div_ceil(3));
    }
}

/// A schedule that once found a bug, replayed on every run before the generated cases.
struct CorpusCase {
    shape: Shape,
    /// The settings as a failure prints them (`settings: Settings { .. }`).
    settings: Settings,
    /// The actions as a failure prints them (`{actions:?}` without the brackets).
    actions: &'static str,
}

/// Schedules that found bugs, in the order they were found, with the settings they failed
/// with. The first eight predate the settings drawn per case: [`Settings::before_per_case_draws`]
/// gives them the settings they ran with (the first three ran with pre-vote, check-quorum and
/// unlimited inflight appends). A new failure pastes its printed shape, settings and actions.
const CORPUS: &[CorpusCase] = &[
    CorpusCase {
        shape: Shape::Five,
        settings: Settings::before_per_case_draws([0, 0, 0], 1 << 20, 256, true, true),
        actions: "TickAll(1), TickAll(1), Crash(2), Heal, CrashMidReady(5), Restart(2), TickAll(1), TickAll(1), TickAll(1), TickAll(1), CrashMidReady(3), TickAll(1), TickAll(1), TickAll(1), TickAll(1), Restart(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), Partition([4]), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1)",
    },
    CorpusCase {
        shape: Shape::Three,
        settings: Settings::before_per_case_draws([0, 0, 0], 1 << 20, 256, true, true),
        actions: "TickAll(3), TickAll(3), TickAll(1), Crash(3), TickAll(2), Partition([1]), Restart(3), TickAll(1), TickAll(3), Crash(2), TickAll(2), Heal, TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1)",
    },
    CorpusCase {
        shape: Shape::Five,
        settings: Settings::before_per_case_draws([138375, 5643, 98260], 1 << 20, 256, true, true),
        actions: "CrashMidReady(2), TickAll(3), Tick(3), TickAll(1), TickAll(3), Crash(4), TickAll(3), TickAll(1), TickAll(1), TickAll(3), TickAll(1), ProposeAtLeader, TickAll(2), TickAll(1), ProposeAtLeader, TickAll(2), TickAll(2), TickAll(2), ProposeAtLeader, TickAll(3), TickAll(3), DeliverAll, ProposeAtLeader, TickAll(1), Tick(2), Propose(2), TickAll(1), TickAll(3), Restart(2), Partition([5]), TickAll(2), Crash(3), Restart(3), ProposeAtLeader, TickAll(3), Tick(1), Propose(2), Partition([2]), Tick(2), TickAll(3), TickAll(3), Tick(1), Tick(1), TickAll(2), TickAll(3)",
    },
    CorpusCase {
        shape: Shape::ThreePlusTwoJoining,
        settings: Settings::before_per_case_draws([17340, 19241, 113275], 1, 2, false, true),
        actions: "TickAll(1), TickAll(1), Crash(4), TickAll(3), TickAll(3), TickAll(1), AddVoter(4), TickAll(1), ProposeAtLeader, DeliverAll, TickAll(3), TickAll(3), Remove(4), Propose(2), TickAll(3), TickAll(2), ProposeAtLeader, Remove(2), Tick(2), ProposeAtLeader, ProposeAtLeader, Read(2), TickAll(3), AddLearner(4), ProposeAtLeader, Process(2), Tick(1), Process(1), TickAll(3), TickAll(3), ProposeAtLeader, ProposeAtLeader, TickAll(2), TickAll(1), Remove(1), TickAll(2), TickAll(2), ProposeAtLeader, Partition([3]), TickAll(3)",
    },
    CorpusCase {
        shape: Shape::ThreePlusTwoJoining,
        settings: Settings::before_per_case_draws([37199, 0, 0], 1, 1, false, false),
        actions: "TickAll(3), TickAll(3), Propose(2), Transfer(2), TickAll(3), TickAll(3), Remove(3), TickAll(2), Remove(2), Crash(1), TickAll(1), Crash(2)",
    },
    CorpusCase {
        shape: Shape::ThreePlusTwoJoining,
        settings: Settings::before_per_case_draws([33477, 37199, 37813], 64, 2, true, false),
        actions: "TickAll(1), TickAll(2), TickAll(2), TickAll(1), TickAll(3), Remove(2), TickAll(2), TickAll(1), TickAll(2), TickAll(2), AddLearner(2), TickAll(1), TickAll(1), DeliverAll, Tick(1), TickAll(1), AddLearner(1), TickAll(1), TickAll(2), TickAll(1), Propose(2), TickAll(3), Tick(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), CrashMidReady(4), TickAll(1), TickAll(1), TickAll(3), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), Transfer(3), TickAll(1), TickAll(2), TickAll(3), TickAll(1), TickAll(1), Remove(3), Tick(1), TickAll(2), TickAll(1), ProposeAtLeader, CrashMidReady(1), TickAll(1), TickAll(1), Process(1)",
    },
    CorpusCase {
        shape: Shape::ThreePlusTwoJoining,
        settings: Settings::before_per_case_draws([47778, 48527, 0], 1048576, 1, false, true),
        actions: "TickAll(3), Partition([1, 3]), TickAll(3), Partition([3]), TickAll(1), TickAll(2), TickAll(1), Heal, TickAll(2), TickAll(3), TickAll(3), Remove(2), Restart(1), TickAll(2), Remove(1), TickAll(2), AddVoter(4), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(3), TickAll(3), TickAll(1), TickAll(1), TickAll(2), TickAll(1), TickAll(2), TickAll(1), Remove(3), TickAll(1), TickAll(3), AddVoter(1), TickAll(1)",
    },
    CorpusCase {
        shape: Shape::ThreePlusTwoJoining,
        settings: Settings::before_per_case_draws([1, 0, 46006], 1, 2, false, false),
        actions: "TickAll(3), TickAll(2), TickAll(2), Remove(3), TickAll(1), TickAll(1), Remove(2), TickAll(2), AddVoter(4), Crash(3), Partition([1, 4]), TickAll(1), TickAll(2), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(1), TickAll(2), Remove(1), TickAll(1), TickAll(2), TickAll(1), AddVoter(2)",
    },
];

/// Parses actions as `{:?}` prints them: `TickAll(3), Partition([1, 3]), Heal`.
fn parse_actions(text: &str) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let name_end = rest.find(['(', ',']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        rest = &rest[name_end..];
        let mut numbers = Vec::new();
        if rest.starts_with('(') {
            let close = rest.find(')').expect("an action's arguments end with ')'");
            numbers = rest[1..close]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|number| !number.is_empty())
                .map(|number| number.parse::<u64>().expect("a number"))
                .collect();
            rest = &rest[close + 1..];
        }
        rest = rest.trim_start_matches([',', ' ']);
        let first = || numbers[0];
        let position = || usize::try_from(numbers[0]).expect("a position");
        actions.push(match name {
            "TickAll" => Action::TickAll(u32::try_from(first()).expect("a tick count")),
            "Tick" => Action::Tick(first()),
            "ProposeAtLeader" => Action::ProposeAtLeader,
            "Propose" => Action::Propose(first()),
            "Read" => Action::Read(first()),
            "Process" => Action::Process(first()),
            "DeliverAll" => Action::DeliverAll,
            "DeliverOne" => Action::DeliverOne(position()),
            "DropOne" => Action::DropOne(position()),
            "DuplicateOne" => Action::DuplicateOne(position()),
            "Partition" => Action::Partition(numbers.clone()),
            "Heal" => Action::Heal,
            "Crash" => Action::Crash(first()),
            "CrashMidReady" => Action::CrashMidReady(first()),
            "Restart" => Action::Restart(first()),
            "Compact" => Action::Compact(first()),
            "AddVoter" => Action::AddVoter(first()),
            "AddLearner" => Action::AddLearner(first()),
            "Remove" => Action::Remove(first()),
            "Transfer" => Action::Transfer(first()),
            other => panic!("unknown action {other:?}"),
        });
    }
    actions
}

/// The corpus, replayed first: every schedule that once broke an invariant keeps them all.
#[test]
fn corpus_schedules_keep_every_invariant() {
    for case in CORPUS {
        let actions = parse_actions(case.actions);
        assert!(!actions.is_empty());
        run(case.shape, &case.settings, &actions);
    }
}

#[test]
fn the_corpus_parser_reads_what_a_failure_prints() {
    let actions = vec![
        Action::TickAll(3),
        Action::Partition(vec![1, 3]),
        Action::Heal,
        Action::DeliverOne(7),
        Action::Transfer(2),
    ];
    let printed = format!("{actions:?}");
    let parsed = parse_actions(printed.trim_start_matches('[').trim_end_matches(']'));
    assert_eq!(format!("{parsed:?}"), printed);
}

/// Settings as a failure prints them compile, unchanged, into a [`CorpusCase`]: the value an
/// expression in the printed form builds prints as that expression.
#[test]
fn printed_settings_paste_into_the_corpus_as_they_are() {
    macro_rules! pasted {
        ($settings:expr) => {
            ($settings, stringify!($settings))
        };
    }
    let (settings, source) = pasted!(Settings {
        faults: LinkFaults {
            drop_per_million: 1,
            duplicate_per_million: 0,
            delay_per_million: 46006
        },
        append_size_bytes_max: 64,
        inflight_messages_max: 2,
        inflight_bytes_max: 256,
        pre_vote: true,
        check_quorum: true,
        read_mode: LeaseBased,
        compact_every_entries: Some(4),
        membership_changes: false,
        network_seed: 7
    });
    let without_spaces = |text: &str| text.replace(char::is_whitespace, "");
    assert_eq!(
        without_spaces(&format!("{settings:?}")),
        without_spaces(source)
    );
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
