//! The recovery decision table of `Wal::open`, one damaged log per row, each with its expected outcome.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use storage::{
    Crash, Entry, Error, FaultError, FaultOperation, HardState, MemFs, SEGMENT_HEADER_BYTES,
    TornTailKind, Wal, WalConfig, decode, segment_file_name,
};

const DIR: &str = "/wal";
const GROUP: u64 = 1;
const ENTRIES: u64 = 40;

fn config() -> WalConfig {
    WalConfig {
        segment_size_bytes_max: 2048,
        ..WalConfig::new(DIR)
    }
}

fn payload(index: u64) -> Bytes {
    Bytes::from(vec![index as u8; 100])
}

/// A log with one hard state and entries 1..=40 of one group, one record per entry, over several segments.
fn build() -> MemFs {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config()).unwrap();
    wal.set_hard_state(
        GROUP,
        HardState {
            term: 2,
            vote: 1,
            commit: 30,
        },
    )
    .unwrap();
    for index in 1..=ENTRIES {
        wal.append(
            GROUP,
            &[Entry {
                index,
                term: 2,
                payload: payload(index),
            }],
        )
        .unwrap();
    }
    wal.sync().unwrap();
    fs
}

fn segment(number: u64) -> PathBuf {
    Path::new(DIR).join(segment_file_name(number))
}

/// The segment numbers in the directory, oldest first.
fn segments(fs: &MemFs) -> Vec<u64> {
    (1..100)
        .filter(|number| fs.read_file(&segment(*number)).is_some())
        .collect()
}

/// `(offset, length)` of every record in a segment.
fn records(fs: &MemFs, number: u64) -> Vec<(u64, u64)> {
    let bytes = fs.read_file(&segment(number)).unwrap();
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    let mut found = Vec::new();
    while offset < bytes.len() {
        let (_, length) = decode(&bytes[offset..]).unwrap();
        found.push((offset as u64, length as u64));
        offset += length;
    }
    found
}

fn last(fs: &MemFs) -> u64 {
    *segments(fs).last().unwrap()
}

fn append_bytes(fs: &MemFs, path: &Path, extra: &[u8]) {
    let mut bytes = fs.read_file(path).unwrap();
    bytes.extend_from_slice(extra);
    fs.write_file(path, &bytes);
}

fn truncate_file(fs: &MemFs, path: &Path, length: u64) {
    let bytes = fs.read_file(path).unwrap();
    fs.write_file(path, &bytes[..length as usize]);
}

/// A valid encoded append record for the next entry, as the damage functions need one.
fn next_record() -> Vec<u8> {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config()).unwrap();
    wal.append(
        GROUP,
        &[Entry {
            index: 1,
            term: 2,
            payload: payload(41),
        }],
    )
    .unwrap();
    wal.sync().unwrap();
    let (offset, length) = *records(&fs, 1).last().unwrap();
    fs.read_file(&segment(1)).unwrap()[offset as usize..(offset + length) as usize].to_vec()
}

#[derive(Debug)]
enum Expected {
    /// Recovery succeeds with no torn tail and every entry.
    Clean,
    /// Recovery cuts a torn tail of this kind and keeps entries up to `index_last`.
    Torn {
        kind: TornTailKind,
        index_last: u64,
    },
    /// Recovery fails with corruption in this segment (`None`: the last one) at this offset.
    Corruption {
        segment: Option<u64>,
        offset: Option<u64>,
    },
    UnsupportedVersion,
    Io,
}

struct Case {
    name: &'static str,
    damage: fn(&MemFs),
    expected: Expected,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "torn record header",
            damage: |fs| append_bytes(fs, &segment(last(fs)), &next_record()[..10]),
            expected: Expected::Torn {
                kind: TornTailKind::RecordHeader,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "torn record payload",
            damage: |fs| append_bytes(fs, &segment(last(fs)), &next_record()[..60]),
            expected: Expected::Torn {
                kind: TornTailKind::RecordPayload,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "bad checksum in the last record",
            damage: |fs| {
                let (offset, length) = *records(fs, last(fs)).last().unwrap();
                fs.flip_bit(&segment(last(fs)), offset + length - 5, 2);
            },
            expected: Expected::Torn {
                kind: TornTailKind::Checksum,
                index_last: ENTRIES - 1,
            },
        },
        Case {
            name: "bad checksum in the last record, zeros after it",
            damage: |fs| {
                let (offset, _) = *records(fs, last(fs)).last().unwrap();
                fs.flip_bit(&segment(last(fs)), offset + 20, 0);
                append_bytes(fs, &segment(last(fs)), &[0; 300]);
            },
            expected: Expected::Torn {
                kind: TornTailKind::Checksum,
                index_last: ENTRIES - 1,
            },
        },
        Case {
            name: "bad checksum in the middle of the last segment",
            damage: |fs| {
                let (offset, _) = records(fs, last(fs))[1];
                fs.flip_bit(&segment(last(fs)), offset + 30, 6);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
        Case {
            name: "bad checksum in an earlier segment",
            damage: |fs| {
                let (offset, _) = *records(fs, 1).last().unwrap();
                fs.flip_bit(&segment(1), offset + 30, 6);
            },
            expected: Expected::Corruption {
                segment: Some(1),
                offset: None,
            },
        },
        Case {
            name: "zero-filled tail",
            damage: |fs| append_bytes(fs, &segment(last(fs)), &[0; 5000]),
            expected: Expected::Torn {
                kind: TornTailKind::ZeroFilled,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "zeros then a record in the last segment",
            damage: |fs| {
                append_bytes(fs, &segment(last(fs)), &[0; 40]);
                append_bytes(fs, &segment(last(fs)), &next_record());
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
        Case {
            name: "torn tail in an earlier segment",
            damage: |fs| append_bytes(fs, &segment(1), &next_record()[..10]),
            expected: Expected::Corruption {
                segment: Some(1),
                offset: None,
            },
        },
        Case {
            name: "length field of 4 GiB",
            damage: |fs| {
                let mut header = vec![0xff; 4];
                header.extend_from_slice(&[7; 13]);
                append_bytes(fs, &segment(last(fs)), &header);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
        Case {
            name: "truncated header of the last segment (a crash right after creating it)",
            damage: |fs| {
                let number = last(fs) + 1;
                fs.write_file(
                    &segment(number),
                    &storage::SegmentHeader { number }.encode()[..10],
                );
            },
            expected: Expected::Torn {
                kind: TornTailKind::SegmentHeader,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "last segment with a header and no checkpoint",
            damage: |fs| {
                let number = last(fs) + 1;
                fs.write_file(
                    &segment(number),
                    &storage::SegmentHeader { number }.encode(),
                );
            },
            expected: Expected::Torn {
                kind: TornTailKind::Checkpoint,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "the only segment left lost its header (older ones were deleted relying on it)",
            damage: |fs| {
                for number in segments(fs) {
                    remove(fs, &segment(number));
                }
                fs.write_file(
                    &segment(7),
                    &storage::SegmentHeader { number: 7 }.encode()[..10],
                );
            },
            expected: Expected::Corruption {
                segment: Some(7),
                offset: Some(0),
            },
        },
        Case {
            name: "truncated header of an earlier segment",
            damage: |fs| truncate_file(fs, &segment(1), 10),
            expected: Expected::Corruption {
                segment: Some(1),
                offset: Some(0),
            },
        },
        Case {
            name: "wrong magic",
            damage: |fs| fs.flip_bit(&segment(1), 0, 0),
            expected: Expected::Corruption {
                segment: Some(1),
                offset: Some(0),
            },
        },
        Case {
            name: "wrong magic in the last segment",
            damage: |fs| fs.flip_bit(&segment(last(fs)), 3, 0),
            expected: Expected::Corruption {
                segment: None,
                offset: Some(0),
            },
        },
        Case {
            name: "future version",
            damage: |fs| fs.flip_bit(&segment(1), 8, 1),
            expected: Expected::UnsupportedVersion,
        },
        Case {
            name: "missing middle segment",
            damage: |fs| {
                let middle = segments(fs)[1];
                assert!(middle < last(fs));
                remove(fs, &segment(middle));
            },
            expected: Expected::Corruption {
                segment: Some(2),
                offset: Some(0),
            },
        },
        Case {
            name: "oldest segment deleted while it held live entries",
            damage: |fs| remove(fs, &segment(1)),
            expected: Expected::Corruption {
                segment: Some(2),
                offset: Some(0),
            },
        },
        Case {
            name: "segment header names another segment",
            damage: |fs| fs.write_file(&segment(1), &storage::SegmentHeader { number: 9 }.encode()),
            expected: Expected::Corruption {
                segment: Some(1),
                offset: Some(0),
            },
        },
        Case {
            name: "a file that is not a segment",
            damage: |fs| fs.write_file(&Path::new(DIR).join("notes.txt"), b"hello"),
            expected: Expected::Clean,
        },
        Case {
            name: "a read fails",
            damage: |fs| fs.fail_nth(FaultOperation::Read, 1, FaultError::Io),
            expected: Expected::Io,
        },
        Case {
            name: "no damage",
            damage: |_| {},
            expected: Expected::Clean,
        },
    ]
}

/// Removes a file durably, as an operator's mistake would.
fn remove(fs: &MemFs, path: &Path) {
    use storage::FileSystem;
    fs.remove(path).unwrap();
    fs.sync_dir(Path::new(DIR)).unwrap();
}

fn check_entries(wal: &Wal<MemFs>, index_last: u64) {
    assert_eq!(wal.index_first(GROUP), 1);
    assert_eq!(wal.index_last(GROUP), index_last);
    assert_eq!(
        wal.hard_state(GROUP),
        HardState {
            term: 2,
            vote: 1,
            commit: 30
        }
    );
    let entries = wal.entries(GROUP, 1..index_last + 1, u64::MAX).unwrap();
    let expected: Vec<Entry> = (1..=index_last)
        .map(|index| Entry {
            index,
            term: 2,
            payload: payload(index),
        })
        .collect();
    assert_eq!(entries, expected);
}

fn run(case: &Case) {
    let fs = build();
    assert!(segments(&fs).len() >= 3, "the log spans several segments");
    assert!(
        records(&fs, last(&fs)).len() >= 3,
        "the last segment has several records"
    );
    let last_before = last(&fs);
    (case.damage)(&fs);
    let result = Wal::open(fs.clone(), config());
    match (&case.expected, result) {
        (Expected::Clean, Ok(wal)) => {
            assert_eq!(wal.recovery_report().torn_tail, None);
            check_entries(&wal, ENTRIES);
        }
        (Expected::Torn { kind, index_last }, Ok(wal)) => {
            let torn = wal
                .recovery_report()
                .torn_tail
                .clone()
                .expect("a torn tail is reported");
            assert_eq!(torn.kind, *kind);
            check_entries(&wal, *index_last);
            // The repair is durable: a crash now and a second recovery find a clean log.
            drop(wal);
            fs.crash(Crash::LoseUnsynced);
            let wal = Wal::open(fs.clone(), config()).unwrap();
            assert_eq!(wal.recovery_report().torn_tail, None);
            check_entries(&wal, *index_last);
        }
        (
            Expected::Corruption {
                segment: number,
                offset,
            },
            Err(Error::Corruption {
                file,
                offset: found,
                ..
            }),
        ) => {
            assert_eq!(file, segment(number.unwrap_or(last_before)));
            if let Some(offset) = offset {
                assert_eq!(found, *offset);
            }
        }
        (
            Expected::UnsupportedVersion,
            Err(Error::UnsupportedVersion {
                file, version: 3, ..
            }),
        ) => {
            assert_eq!(file, segment(1));
        }
        (Expected::Io, Err(Error::Io { .. })) => {}
        (expected, outcome) => panic!("expected {expected:?}, got {outcome:?}"),
    }
}

#[test]
fn recovery_decision_table() {
    for case in cases() {
        println!("case: {}", case.name);
        run(&case);
    }
}

#[test]
fn an_empty_directory_is_an_empty_log() {
    let fs = MemFs::new();
    let wal = Wal::open(fs.clone(), config()).unwrap();
    assert_eq!(wal.groups(), Vec::<u64>::new());
    assert_eq!(wal.index_last(GROUP), 0);
    assert_eq!(wal.recovery_report().segments_replayed, 0);
    assert_eq!(wal.recovery_report().torn_tail, None);
}

#[test]
fn a_crash_in_a_torn_first_segment_leaves_an_empty_log() {
    let fs = MemFs::new();
    use storage::FileSystem;
    fs.create_dir_all(Path::new(DIR)).unwrap();
    fs.write_file(&segment(1), &[0; 10]);
    let wal = Wal::open(fs.clone(), config()).unwrap();
    assert_eq!(
        wal.recovery_report()
            .torn_tail
            .as_ref()
            .map(|torn| torn.kind),
        Some(TornTailKind::SegmentHeader)
    );
    assert_eq!(wal.groups(), Vec::<u64>::new());
}
