//! Writes the seed corpora of the `wal_record` and `wal_recover` fuzz targets.
//!
//! Run from the repository root: `cargo run -p storage --example fuzz_corpus -- fuzz/corpus`.
//! The seeds are real records and real WAL directories written by this crate, some with a torn tail, so that
//! the fuzzer starts from valid structure and mutates from there.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use storage::{
    Crash, Entry, EntryRef, FileSystem, GroupCheckpoint, HardState, MemFs, Record, Wal, WalConfig,
    encode,
};

const DIR: &str = "/wal";

fn record_seeds() -> Vec<Vec<u8>> {
    let hard_state = HardState {
        term: 5,
        vote: 2,
        commit: 40,
    };
    let records = [
        Record::Checkpoint {
            segment: 1,
            groups: vec![
                GroupCheckpoint {
                    group: 1,
                    hard_state,
                    index_first: 1,
                    index_last: 0,
                },
                GroupCheckpoint {
                    group: 4,
                    hard_state,
                    index_first: 30,
                    index_last: 45,
                },
            ],
        },
        Record::Append {
            group: 1,
            index_first: 7,
            entries: vec![
                EntryRef {
                    term: 5,
                    payload: b"create event",
                },
                EntryRef {
                    term: 5,
                    payload: b"",
                },
            ],
        },
        Record::HardState {
            group: 2,
            hard_state,
        },
        Record::Truncate {
            group: 3,
            index_last_kept: 12,
        },
        Record::Compact {
            group: 3,
            index_first_kept: 9,
        },
        Record::Seal,
    ];
    records
        .iter()
        .map(|record| {
            let mut bytes = Vec::new();
            encode(record, 1, &mut bytes).expect("seed records are small");
            bytes
        })
        .collect()
}

/// A WAL directory in the `wal_recover` input format: a flags byte, then each segment as u16 length and bytes
/// (free `recycle-*` files are left out: the format names segments only).
fn directory_seed(fs: &MemFs) -> Vec<u8> {
    let mut seed = vec![0];
    let names = fs.list(Path::new(DIR)).expect("the directory exists");
    for name in names.into_iter().filter(|name| name.starts_with("wal-")) {
        let bytes = fs
            .read_file(&Path::new(DIR).join(name))
            .expect("listed files exist");
        let length = u16::try_from(bytes.len()).expect("seed segments are small");
        seed.extend_from_slice(&length.to_le_bytes());
        seed.extend_from_slice(&bytes);
    }
    seed
}

/// A log of three groups over several small segments, crashed with unsynced bytes at its end.
fn write_log(compact: bool, crash: Crash) -> Vec<u8> {
    let fs = MemFs::new();
    // A write buffer of one byte sends every record to the file at once, so a crash has unsynced bytes to tear.
    let config = WalConfig {
        segment_size_bytes_max: 1024,
        write_buffer_bytes_max: 1,
        ..WalConfig::new(DIR)
    };
    let mut wal = Wal::open(fs.clone(), config).expect("a fresh log opens");
    for index in 1..=30u64 {
        for group in 1..=3u64 {
            let payload = Bytes::from(format!("group {group} entry {index}"));
            wal.append(
                group,
                &[Entry {
                    index,
                    term: 1 + index / 10,
                    payload,
                }],
            )
            .expect("append");
        }
        if index % 7 == 0 {
            let hard_state = HardState {
                term: 1 + index / 10,
                vote: 1,
                commit: index,
            };
            wal.set_hard_state(1, hard_state).expect("hard state");
            wal.sync().expect("sync");
        }
    }
    wal.truncate(2, 25).expect("truncate");
    if compact {
        for group in 1..=3 {
            wal.compact(group, 20).expect("compact");
        }
    }
    wal.sync().expect("sync");
    let unsynced = Entry {
        index: 31,
        term: 4,
        payload: Bytes::from_static(b"unsynced"),
    };
    wal.append(3, &[unsynced]).expect("append");
    drop(wal);
    fs.crash(crash);
    directory_seed(&fs)
}

/// A log whose segments were written over recycled files (stale bytes of earlier lives after their records),
/// crashed with unsynced bytes at its end.
fn write_recycled_log(crash: Crash) -> Vec<u8> {
    let fs = MemFs::new();
    let config = WalConfig {
        segment_size_bytes_max: 1024,
        write_buffer_bytes_max: 1,
        ..WalConfig::new(DIR)
    };
    let mut wal = Wal::open(fs.clone(), config).expect("a fresh log opens");
    for index in 1..=60u64 {
        let group = 1 + index % 2;
        let payload = Bytes::from(format!("group {group} entry {index} with some padding"));
        wal.append(
            group,
            &[Entry {
                index: index.div_ceil(2),
                term: 1,
                payload,
            }],
        )
        .expect("append");
        if index % 10 == 0 {
            // Keep the last few entries of each group: older segments become free and are reused.
            for group in 1..=2 {
                wal.compact(group, (index / 2).saturating_sub(3).max(1))
                    .expect("compact");
            }
            wal.sync().expect("sync");
        }
    }
    assert!(wal.segments_reused() > 0, "segments were recycled");
    drop(wal);
    fs.crash(crash);
    directory_seed(&fs)
}

fn write_seeds(dir: &Path, seeds: &[Vec<u8>]) {
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    for (position, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{position:02}")), seed).expect("write a seed");
    }
}

fn main() {
    let corpus: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_owned())
        .into();
    write_seeds(&corpus.join("wal_record"), &record_seeds());
    let logs = vec![
        write_log(false, Crash::LoseUnsynced),
        write_log(true, Crash::LoseUnsynced),
        write_log(false, Crash::Tear { seed: 3 }),
        write_log(true, Crash::TearZeroFill { seed: 11 }),
        vec![0],
        write_recycled_log(Crash::LoseUnsynced),
        write_recycled_log(Crash::Tear { seed: 5 }),
    ];
    write_seeds(&corpus.join("wal_recover"), &logs);
    println!("seed corpora written under {}", corpus.display());
}
