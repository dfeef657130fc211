//! Random sequences of appends, truncations, compactions, hard states, syncs and crashes for several groups:
//! after every crash, recovery must give back exactly the state after some prefix of the operations that is at
//! least as long as the last successful sync. So every synced record is there, in order, and nothing that was
//! never written.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use storage::{Crash, Entry, Error, FaultError, FaultOperation, HardState, MemFs, Wal, WalConfig};

const GROUPS: u64 = 3;

#[derive(Debug, Clone)]
enum Operation {
    /// Appends `count` entries starting `back` entries before the end (0: right after it).
    Append {
        group: u64,
        back: u64,
        count: u64,
        term: u64,
        payload_bytes: usize,
    },
    Truncate {
        group: u64,
        back: u64,
    },
    /// Compacts `forward` entries (past the end of the log when large).
    Compact {
        group: u64,
        forward: u64,
    },
    HardState {
        group: u64,
        term: u64,
    },
    Sync,
    /// A sync whose fdatasync fails with EIO, followed by a crash and recovery.
    FailingSync {
        crash: Crash,
    },
    Crash(Crash),
}

fn crash() -> impl Strategy<Value = Crash> {
    prop_oneof![
        Just(Crash::LoseUnsynced),
        any::<u64>().prop_map(|seed| Crash::Tear { seed }),
        any::<u64>().prop_map(|seed| Crash::TearZeroFill { seed }),
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    let group = 1..=GROUPS;
    prop_oneof![
        8 => (group.clone(), prop_oneof![4 => Just(0u64), 1 => 0..6u64], 1..5u64, 1..4u64, 0..300usize).prop_map(
            |(group, back, count, term, payload_bytes)| Operation::Append { group, back, count, term, payload_bytes }
        ),
        1 => (group.clone(), 0..5u64).prop_map(|(group, back)| Operation::Truncate { group, back }),
        2 => (group.clone(), 0..12u64).prop_map(|(group, forward)| Operation::Compact { group, forward }),
        2 => (group, 1..100u64).prop_map(|(group, term)| Operation::HardState { group, term }),
        3 => Just(Operation::Sync),
        1 => crash().prop_map(|crash| Operation::FailingSync { crash }),
        1 => crash().prop_map(Operation::Crash),
    ]
}

/// What a group's log should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupModel {
    index_first: u64,
    index_last: u64,
    hard_state: HardState,
    entries: BTreeMap<u64, Entry>,
}

impl Default for GroupModel {
    fn default() -> Self {
        GroupModel {
            index_first: 1,
            index_last: 0,
            hard_state: HardState::default(),
            entries: BTreeMap::new(),
        }
    }
}

type Model = BTreeMap<u64, GroupModel>;

fn payload(group: u64, index: u64, term: u64, payload_bytes: usize) -> Bytes {
    let seed = (group * 31 + index * 7 + term) as u8;
    Bytes::from(
        (0..payload_bytes)
            .map(|position| seed.wrapping_add(position as u8))
            .collect::<Vec<u8>>(),
    )
}

/// What the WAL holds, read back entirely, in the model's shape.
fn observe(wal: &Wal<MemFs>) -> Model {
    (1..=GROUPS)
        .map(|group| {
            let (index_first, index_last) = (wal.index_first(group), wal.index_last(group));
            let entries = wal
                .entries(group, index_first..index_last + 1, u64::MAX)
                .unwrap();
            assert_eq!(
                entries.len() as u64,
                index_last + 1 - index_first,
                "a read returns the whole range"
            );
            let entries = entries
                .into_iter()
                .map(|entry| (entry.index, entry))
                .collect();
            (
                group,
                GroupModel {
                    index_first,
                    index_last,
                    hard_state: wal.hard_state(group),
                    entries,
                },
            )
        })
        .collect()
}

fn config() -> WalConfig {
    // Small segments and write buffers, so that rotation, flushing and deletion all happen often.
    WalConfig {
        segment_size_bytes_max: 2048,
        write_buffer_bytes_max: 512,
        ..WalConfig::new("/wal")
    }
}

/// Applies one write to both the WAL and the model.
fn apply(wal: &mut Wal<MemFs>, model: &mut Model, operation: &Operation) {
    let log = model
        .get_mut(&group_of(operation))
        .expect("every group is in the model");
    match *operation {
        Operation::Append {
            group,
            back,
            count,
            term,
            payload_bytes,
        } => {
            let index_start = (log.index_last + 1)
                .saturating_sub(back)
                .max(log.index_first);
            let entries: Vec<Entry> = (index_start..index_start + count)
                .map(|index| Entry {
                    index,
                    term,
                    payload: payload(group, index, term, payload_bytes),
                })
                .collect();
            wal.append(group, &entries).unwrap();
            log.entries.retain(|index, _| *index < index_start);
            log.entries
                .extend(entries.into_iter().map(|entry| (entry.index, entry)));
            log.index_last = index_start + count - 1;
        }
        Operation::Truncate { group, back } => {
            let index_last_kept = log.index_last.saturating_sub(back).max(log.index_first - 1);
            wal.truncate(group, index_last_kept).unwrap();
            log.entries.retain(|index, _| *index <= index_last_kept);
            log.index_last = log.index_last.min(index_last_kept);
        }
        Operation::Compact { group, forward } => {
            let index_first_kept = log.index_first + forward;
            wal.compact(group, index_first_kept).unwrap();
            log.entries.retain(|index, _| *index >= index_first_kept);
            log.index_first = index_first_kept;
            log.index_last = log.index_last.max(index_first_kept - 1);
        }
        Operation::HardState { group, term } => {
            let hard_state = HardState {
                term,
                vote: group,
                commit: log.index_last,
            };
            wal.set_hard_state(group, hard_state).unwrap();
            log.hard_state = hard_state;
        }
        Operation::Sync | Operation::FailingSync { .. } | Operation::Crash(_) => {
            unreachable!("not a write")
        }
    }
}

fn group_of(operation: &Operation) -> u64 {
    match *operation {
        Operation::Append { group, .. }
        | Operation::Truncate { group, .. }
        | Operation::Compact { group, .. }
        | Operation::HardState { group, .. } => group,
        _ => 1,
    }
}

/// Crashes, recovers, and checks that the recovered state is one of `candidates` (the states since the last
/// successful sync, oldest first). Returns the recovered WAL and state.
fn crash_and_recover(fs: &MemFs, crash: Crash, candidates: &[Model]) -> (Wal<MemFs>, Model) {
    fs.crash(crash);
    let wal =
        Wal::open(fs.clone(), config()).unwrap_or_else(|error| panic!("recovery failed: {error}"));
    let recovered = observe(&wal);
    assert!(
        candidates.contains(&recovered),
        "recovered state is not a prefix of the writes at or after the last sync\nrecovered: {recovered:#?}\nsynced: {:#?}",
        candidates[0]
    );
    (wal, recovered)
}

fn run(operations: &[Operation]) {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config()).unwrap();
    let mut model: Model = (1..=GROUPS)
        .map(|group| (group, GroupModel::default()))
        .collect();
    // The states since the last successful sync, oldest first: recovery must land on one of them.
    let mut candidates = vec![model.clone()];
    for operation in operations {
        match operation {
            Operation::Sync => {
                wal.sync().unwrap();
                candidates = vec![model.clone()];
            }
            Operation::FailingSync { crash } => {
                fs.fail_nth(FaultOperation::Sync, 0, FaultError::Io);
                match wal.sync() {
                    // Nothing was written since the last sync, so no fdatasync was issued to fail.
                    Ok(()) => {
                        fs.clear_faults();
                        assert!(candidates.iter().all(|candidate| *candidate == model));
                        continue;
                    }
                    Err(Error::Io { .. }) => assert!(matches!(wal.sync(), Err(Error::Poisoned))),
                    Err(error) => panic!("unexpected error {error}"),
                }
                drop(wal);
                (wal, model) = crash_and_recover(&fs, *crash, &candidates);
                candidates = vec![model.clone()];
            }
            Operation::Crash(crash) => {
                drop(wal);
                (wal, model) = crash_and_recover(&fs, *crash, &candidates);
                candidates = vec![model.clone()];
            }
            write => {
                apply(&mut wal, &mut model, write);
                assert_eq!(observe(&wal), model, "reads see every write at once");
                candidates.push(model.clone());
            }
        }
    }
    drop(wal);
    crash_and_recover(
        &fs,
        Crash::Tear {
            seed: operations.len() as u64,
        },
        &candidates,
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_every_synced_write_and_invents_nothing(
        operations in proptest::collection::vec(operation(), 1..120)
    ) {
        run(&operations);
    }
}
