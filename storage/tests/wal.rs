//! The WAL's operations, failures and space reclamation, one short story per test.

use std::path::Path;

use bytes::Bytes;
use storage::{
    Crash, Entry, Error, FaultError, FaultOperation, HardState, MemFs, StdFs, Wal, WalConfig,
};

const DIR: &str = "/wal";

fn config(segment_size_bytes_max: u64) -> WalConfig {
    WalConfig {
        segment_size_bytes_max,
        ..WalConfig::new(DIR)
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        payload: Bytes::from(format!("entry {index} of term {term}")),
    }
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|index| entry(index, term)).collect()
}

fn reopen(fs: &MemFs, config: WalConfig) -> Wal<MemFs> {
    fs.crash(Crash::LoseUnsynced);
    Wal::open(fs.clone(), config).unwrap()
}

#[test]
fn an_append_inside_the_log_replaces_the_conflicting_suffix() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(4096)).unwrap();
    wal.append(1, &entries(1..=5, 1)).unwrap();
    wal.append(1, &entries(3..=4, 2)).unwrap();
    assert_eq!(wal.index_last(1), 4);
    let expected = [entries(1..=2, 1), entries(3..=4, 2)].concat();
    assert_eq!(wal.entries(1, 1..5, u64::MAX).unwrap(), expected);
    wal.sync().unwrap();
    let wal = reopen(&fs, config(4096));
    assert_eq!(wal.entries(1, 1..5, u64::MAX).unwrap(), expected);
}

#[test]
fn truncate_and_compact_are_recorded_and_replayed() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(4096)).unwrap();
    wal.append(1, &entries(1..=10, 1)).unwrap();
    wal.truncate(1, 7).unwrap();
    wal.compact(1, 4).unwrap();
    wal.append(2, &entries(1..=3, 5)).unwrap();
    wal.compact(2, 20).unwrap();
    wal.sync().unwrap();
    let wal = reopen(&fs, config(4096));
    assert_eq!((wal.index_first(1), wal.index_last(1)), (4, 7));
    assert_eq!(wal.entries(1, 4..8, u64::MAX).unwrap(), entries(4..=7, 1));
    assert_eq!(
        (wal.index_first(2), wal.index_last(2)),
        (20, 19),
        "compacting past the end empties the log"
    );
    assert!(matches!(
        wal.entries(1, 3..5, u64::MAX),
        Err(Error::Compacted { index_first: 4, .. })
    ));
    assert!(matches!(
        wal.entries(1, 5..9, u64::MAX),
        Err(Error::Unavailable { index_last: 7, .. })
    ));
}

#[test]
fn misuse_is_an_error_and_writes_nothing() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(4096)).unwrap();
    wal.append(1, &entries(1..=3, 1)).unwrap();
    assert!(matches!(
        wal.append(1, &entries(5..=6, 1)),
        Err(Error::Gap {
            index: 5,
            index_last: 3,
            ..
        })
    ));
    let broken = vec![entry(4, 1), entry(6, 1)];
    assert!(matches!(
        wal.append(1, &broken),
        Err(Error::NotConsecutive { index: 6, .. })
    ));
    wal.compact(1, 3).unwrap();
    assert!(matches!(
        wal.append(1, &entries(2..=2, 1)),
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(wal.truncate(1, 1), Err(Error::Compacted { .. })));
    assert_eq!((wal.index_first(1), wal.index_last(1)), (3, 3));
    wal.append(1, &entries(4..=4, 1)).unwrap();
}

#[test]
fn reads_stop_at_the_byte_limit_but_return_at_least_one_entry() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(4096)).unwrap();
    let big: Vec<Entry> = (1..=10)
        .map(|index| Entry {
            index,
            term: 1,
            payload: Bytes::from(vec![1; 100]),
        })
        .collect();
    wal.append(1, &big[..5]).unwrap();
    wal.append(1, &big[5..]).unwrap();
    assert_eq!(wal.entries(1, 1..11, 0).unwrap().len(), 1);
    assert_eq!(wal.entries(1, 1..11, 250).unwrap().len(), 2);
    assert_eq!(wal.entries(1, 4..11, 450).unwrap(), big[3..7].to_vec());
    // The limit is inclusive: payloads adding up to exactly the limit are all returned.
    assert_eq!(wal.entries(1, 1..11, 200).unwrap().len(), 2);
    // A range that ends inside one record (entries 1 to 5 were one append) stops there.
    assert_eq!(wal.entries(1, 2..4, u64::MAX).unwrap(), big[1..3].to_vec());
    assert_eq!(wal.term(1, 10).unwrap(), 1);
    // Past the end, the error names the last index asked for and the log's last.
    assert!(matches!(
        wal.entries(1, 1..12, u64::MAX),
        Err(Error::Unavailable {
            group: 1,
            index: 11,
            index_last: 10
        })
    ));
}

#[test]
fn one_sync_makes_every_group_durable_and_unsynced_writes_vanish() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(1 << 20)).unwrap();
    wal.append(1, &entries(1..=3, 1)).unwrap();
    wal.append(2, &entries(1..=2, 1)).unwrap();
    wal.set_hard_state(
        2,
        HardState {
            term: 1,
            vote: 2,
            commit: 2,
        },
    )
    .unwrap();
    let syncs = fs.operation_count(FaultOperation::Sync);
    wal.sync().unwrap();
    assert_eq!(
        fs.operation_count(FaultOperation::Sync),
        syncs + 1,
        "one fdatasync for every group"
    );
    wal.append(1, &entries(4..=9, 1)).unwrap();
    wal.set_hard_state(
        1,
        HardState {
            term: 9,
            vote: 9,
            commit: 9,
        },
    )
    .unwrap();
    drop(wal);
    let wal = reopen(&fs, config(1 << 20));
    assert_eq!(wal.index_last(1), 3);
    assert_eq!(wal.index_last(2), 2);
    assert_eq!(wal.hard_state(1), HardState::default());
    assert_eq!(
        wal.hard_state(2),
        HardState {
            term: 1,
            vote: 2,
            commit: 2
        }
    );
}

#[test]
fn a_failed_fsync_poisons_the_log_and_recovery_keeps_only_what_was_synced() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(1 << 20)).unwrap();
    wal.append(1, &entries(1..=2, 1)).unwrap();
    wal.sync().unwrap();
    wal.append(1, &entries(3..=4, 1)).unwrap();
    fs.fail_nth(FaultOperation::Sync, 0, FaultError::Io);
    assert!(matches!(
        wal.sync(),
        Err(Error::Io {
            operation: "fdatasync",
            ..
        })
    ));
    // The kernel forgot the dirty bytes; a retried fsync would succeed and lie. The log refuses instead.
    assert!(wal.is_poisoned());
    assert!(matches!(wal.sync(), Err(Error::Poisoned)));
    assert!(matches!(
        wal.append(1, &entries(5..=5, 1)),
        Err(Error::Poisoned)
    ));
    assert!(matches!(
        wal.set_hard_state(1, HardState::default()),
        Err(Error::Poisoned)
    ));
    drop(wal);
    let wal = reopen(&fs, config(1 << 20));
    assert_eq!(wal.index_last(1), 2);
}

#[test]
fn a_failed_write_poisons_the_log() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(1 << 20)).unwrap();
    wal.append(1, &entries(1..=2, 1)).unwrap();
    fs.fail_nth(FaultOperation::Write, 0, FaultError::NoSpace);
    match wal.sync() {
        Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(28)),
        other => panic!("expected ENOSPC, got {other:?}"),
    }
    assert!(matches!(
        wal.append(1, &entries(3..=3, 1)),
        Err(Error::Poisoned)
    ));
    drop(wal);
    let wal = reopen(&fs, config(1 << 20));
    assert_eq!(wal.index_last(1), 0);
}

#[test]
fn space_comes_back_after_compaction() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(4096)).unwrap();
    // Group 3 writes its hard state once, in the first segment, and never again: the checkpoints keep it.
    wal.set_hard_state(
        3,
        HardState {
            term: 4,
            vote: 3,
            commit: 0,
        },
    )
    .unwrap();
    for index in 1..=500 {
        wal.append(1, &[entry(index, 1)]).unwrap();
        wal.append(2, &[entry(index, 2)]).unwrap();
    }
    wal.sync().unwrap();
    let bytes_full = fs.dir_bytes(Path::new(DIR));
    let segments_full = wal.segment_numbers().len();
    assert!(
        segments_full > 10,
        "the log rotated: {segments_full} segments"
    );
    wal.compact(1, 490).unwrap();
    wal.sync().unwrap();
    assert_eq!(
        wal.segment_numbers().len(),
        segments_full,
        "group 2 still holds the old segments"
    );
    wal.compact(2, 495).unwrap();
    wal.sync().unwrap();
    let bytes_compacted = fs.dir_bytes(Path::new(DIR));
    assert!(
        wal.segment_numbers().len() <= 2,
        "segments left: {:?}",
        wal.segment_numbers()
    );
    // Segments in use, plus at most the configured number of free files kept for reuse.
    let files_kept = (2 + storage::SEGMENTS_RECYCLED_MAX_DEFAULT) as u64;
    assert_eq!(
        wal.segments_recycled(),
        storage::SEGMENTS_RECYCLED_MAX_DEFAULT
    );
    assert!(
        bytes_compacted < files_kept * (4096 + 200),
        "{bytes_compacted} bytes left of {bytes_full}"
    );

    drop(wal);
    let wal = reopen(&fs, config(4096));
    assert_eq!(
        wal.hard_state(3),
        HardState {
            term: 4,
            vote: 3,
            commit: 0
        }
    );
    assert_eq!(
        wal.entries(1, 490..501, u64::MAX).unwrap(),
        entries(490..=500, 1)
    );
    assert_eq!(
        wal.entries(2, 495..501, u64::MAX).unwrap(),
        entries(495..=500, 2)
    );
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(1024)).unwrap();
    wal.append(1, &entries(1..=1, 1)).unwrap();
    let big = Entry {
        index: 2,
        term: 1,
        payload: Bytes::from(vec![7; 5000]),
    };
    wal.append(1, std::slice::from_ref(&big)).unwrap();
    wal.append(1, &entries(3..=3, 1)).unwrap();
    wal.sync().unwrap();
    let wal = reopen(&fs, config(1024));
    assert_eq!(wal.entries(1, 2..3, u64::MAX).unwrap(), vec![big]);
    assert_eq!(wal.index_last(1), 3);
}

#[test]
fn a_record_above_the_limit_is_refused_without_poisoning() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(4096)).unwrap();
    let huge = Entry {
        index: 1,
        term: 1,
        payload: Bytes::from(vec![0; storage::RECORD_BYTES_MAX as usize]),
    };
    assert!(matches!(
        wal.append(1, &[huge]),
        Err(Error::RecordTooLarge { .. })
    ));
    wal.append(1, &entries(1..=1, 1)).unwrap();
    wal.sync().unwrap();
}

#[test]
fn the_real_file_system_round_trips() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wal-std-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = WalConfig {
        segment_size_bytes_max: 4096,
        ..WalConfig::new(&dir)
    };
    let mut wal = Wal::open(StdFs, config.clone()).unwrap();
    for index in 1..=100 {
        wal.append(1, &[entry(index, 1)]).unwrap();
    }
    wal.set_hard_state(
        1,
        HardState {
            term: 1,
            vote: 1,
            commit: 50,
        },
    )
    .unwrap();
    wal.compact(1, 60).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(StdFs, config).unwrap();
    assert_eq!(
        wal.entries(1, 60..101, u64::MAX).unwrap(),
        entries(60..=100, 1)
    );
    assert_eq!(wal.hard_state(1).commit, 50);
    assert_eq!(wal.recovery_report().torn_tail, None);
    drop(wal);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_sync_at_segment_rotation_poisons_the_log() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(1024)).unwrap();
    fs.fail_nth(FaultOperation::Sync, 0, FaultError::Io);
    let mut index = 1;
    let error = loop {
        match wal.append(1, &[entry(index, 1)]) {
            Ok(()) => index += 1,
            Err(error) => break error,
        }
        assert!(index < 1000, "the segment never rotated");
    };
    assert!(
        matches!(
            error,
            Error::Io {
                operation: "fdatasync",
                ..
            }
        ),
        "{error}"
    );
    assert!(matches!(
        wal.append(1, &[entry(index, 1)]),
        Err(Error::Poisoned)
    ));
    assert!(matches!(wal.sync(), Err(Error::Poisoned)));
    drop(wal);
    let wal = reopen(&fs, config(1024));
    assert_eq!(wal.index_last(1), 0, "nothing was ever synced");
}

/// A log compacted as it goes (as after snapshots): in steady state every new segment is written into a free
/// file, which is renamed, not created, and not truncated; the log reads back after a crash.
fn recycle_steadily<F: storage::FileSystem + Clone>(fs: &F, config: &WalConfig) -> (u64, u64) {
    let mut wal = Wal::open(fs.clone(), config.clone()).unwrap();
    let mut reused_before = 0;
    let mut segment_before = 0;
    for index in 1..=600u64 {
        wal.append(1, &[entry(index, 1)]).unwrap();
        if index % 20 == 0 {
            wal.compact(1, index - 5).unwrap();
            wal.sync().unwrap();
            assert!(wal.segments_recycled() <= config.segments_recycled_max);
        }
        if index == 300 {
            reused_before = wal.segments_reused();
            segment_before = *wal.segment_numbers().last().unwrap();
        }
    }
    wal.sync().unwrap();
    let rotations = *wal.segment_numbers().last().unwrap() - segment_before;
    let reused = wal.segments_reused() - reused_before;
    assert!(rotations > 5, "{rotations} rotations");
    assert_eq!(
        reused, rotations,
        "every rotation in steady state reuses a free file"
    );
    drop(wal);
    let wal = Wal::open(fs.clone(), config.clone()).unwrap();
    assert_eq!(
        wal.entries(1, 595..601, u64::MAX).unwrap(),
        entries(595..=600, 1)
    );
    (rotations, reused)
}

#[test]
fn segments_are_recycled_in_steady_state() {
    let fs = MemFs::new();
    let config = WalConfig {
        segments_recycled_max: 2,
        ..config(1024)
    };
    recycle_steadily(&fs, &config);
    let names = {
        use storage::FileSystem;
        fs.list(Path::new(DIR)).unwrap()
    };
    let free = names
        .iter()
        .filter(|name| name.starts_with("recycle-"))
        .count();
    assert!((1..=2).contains(&free), "{names:?}");
}

#[test]
fn segments_are_recycled_on_the_real_file_system_without_truncation() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wal-recycle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = WalConfig {
        segment_size_bytes_max: 2048,
        segments_recycled_max: 3,
        ..WalConfig::new(&dir)
    };
    recycle_steadily(&StdFs, &config);
    // Every file was written up to about the segment limit at least once and never truncated, so none is
    // much shorter than the limit (the active one included: it was written over a free file).
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let length = entry.metadata().unwrap().len();
        assert!(length > 1500, "{:?} is {length} bytes", entry.file_name());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The bytes of the only segment of a fresh log (limit `limit`) after `payloads` were appended to
/// group 1, one entry each, and synced.
fn segment_bytes_after(limit: u64, payloads: &[usize]) -> u64 {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(limit)).unwrap();
    for (index, bytes) in (1..).zip(payloads) {
        let entry = Entry {
            index,
            term: 1,
            payload: Bytes::from(vec![1; *bytes]),
        };
        wal.append(1, &[entry]).unwrap();
    }
    wal.sync().unwrap();
    assert_eq!(wal.segment_numbers(), [1]);
    let path = Path::new(DIR).join(storage::segment_file_name(1));
    fs.read_file(&path).unwrap().len() as u64
}

/// Rule: the segment size limit is inclusive: a record that ends exactly at the limit stays in the
/// segment, and only the next one starts a new segment.
#[test]
fn a_record_that_ends_exactly_at_the_segment_limit_stays_in_its_segment() {
    let roomy = 1 << 20;
    let (first, second) = (100, 1000);
    let limit = segment_bytes_after(roomy, &[first, second]);
    assert!(limit >= storage::SEGMENT_SIZE_BYTES_MIN);
    assert_eq!(segment_bytes_after(limit, &[first, second]), limit);

    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(limit)).unwrap();
    for (index, bytes) in [(1, first), (2, second)] {
        let entry = Entry {
            index,
            term: 1,
            payload: Bytes::from(vec![1; bytes]),
        };
        wal.append(1, &[entry]).unwrap();
        assert_eq!(wal.segment_numbers(), [1], "entry {index} fits");
    }
    wal.append(1, &entries(3..=3, 1)).unwrap();
    assert_eq!(
        wal.segment_numbers(),
        [1, 2],
        "the next record starts a segment"
    );
}

/// Rule: a record too large for a segment that holds no record yet is written there, not after an
/// empty rotation: the first record of a fresh log never leaves a segment of only a checkpoint.
#[test]
fn a_first_record_larger_than_the_limit_is_written_in_the_segment_it_finds() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(1024)).unwrap();
    let big = Entry {
        index: 1,
        term: 1,
        payload: Bytes::from(vec![7; 5000]),
    };
    wal.append(1, std::slice::from_ref(&big)).unwrap();
    assert_eq!(wal.segment_numbers(), [1]);
    wal.sync().unwrap();
    let wal = reopen(&fs, config(1024));
    assert_eq!(wal.entries(1, 1..2, u64::MAX).unwrap(), vec![big]);
}

/// Rule: `groups` lists every group with a record in the log, in order, also after a reopening.
#[test]
fn the_groups_of_the_log_are_listed_in_order() {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config(4096)).unwrap();
    assert_eq!(wal.groups(), Vec::<u64>::new());
    wal.append(9, &entries(1..=2, 1)).unwrap();
    wal.append(3, &entries(1..=1, 1)).unwrap();
    assert_eq!(wal.groups(), [3, 9]);
    wal.sync().unwrap();
    assert_eq!(reopen(&fs, config(4096)).groups(), [3, 9]);
}
