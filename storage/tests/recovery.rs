//! The recovery decision table of `Wal::open`, one damaged log per row, each with its expected outcome.

#[path = "support/altered_fs.rs"]
mod altered_fs;

use std::path::{Path, PathBuf};

use altered_fs::{AlteredFs, Length};

use bytes::Bytes;
use storage::{
    Crash, Entry, Error, FaultError, FaultOperation, HardState, MemFs, Record,
    SEGMENT_HEADER_BYTES, SegmentHeader, TornTail, TornTailKind, Wal, WalConfig, decode, encode,
    recycled_file_name, segment_file_name,
};

const DIR: &str = "/wal";
const GROUP: u64 = 1;
const ENTRIES: u64 = 40;

fn config() -> WalConfig {
    WalConfig {
        segment_size_bytes_max: 2048,
        segments_recycled_max: 8,
        ..WalConfig::new(DIR)
    }
}

/// A group whose entries fill segments that are then compacted away, so that their files are recycled.
const FILLER: u64 = 9;

fn payload(index: u64) -> Bytes {
    Bytes::from(vec![index as u8; 100])
}

/// A log with one hard state and entries 1..=40 of one group, one record per entry, over several segments.
fn build() -> MemFs {
    build_into(MemFs::new())
}

fn build_into(fs: MemFs) -> MemFs {
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

/// Fills segments of 8 KiB with entries of [`FILLER`] and compacts them away, leaving at least four free files.
fn free_filler_segments(fs: &MemFs) {
    let mut wal = Wal::open(
        fs.clone(),
        WalConfig {
            segment_size_bytes_max: 8192,
            ..config()
        },
    )
    .unwrap();
    for index in 1..=300 {
        wal.append(
            FILLER,
            &[Entry {
                index,
                term: 1,
                payload: payload(index + 7),
            }],
        )
        .unwrap();
    }
    wal.sync().unwrap();
    wal.compact(FILLER, 301).unwrap();
    wal.sync().unwrap();
    assert!(
        wal.segments_recycled() >= 4,
        "the filler's segments are free"
    );
    drop(wal);
}

/// The log of [`build`], written over recycled files: a first run with larger segments fills five files with
/// entries of another group and compacts them away (they become free files of about 8 KiB); the second run
/// (the usual 2 KiB limit) writes the log of [`build`] into those files, so that every segment it writes,
/// the last one included, has stale bytes of an earlier life after its records (after its seal if not last).
fn build_recycled() -> MemFs {
    let fs = MemFs::new();
    free_filler_segments(&fs);
    let fs_log = build_into(fs);
    let number = last(&fs_log);
    let bytes = fs_log.read_file(&segment(number)).unwrap();
    let (offset, length) = *records(&fs_log, number).last().unwrap();
    assert!(
        bytes.len() as u64 > offset + length,
        "stale bytes follow the last segment's records"
    );
    let first = segments(&fs_log)[0];
    let (offset, length) = *records(&fs_log, first).last().unwrap();
    assert!(
        fs_log.read_file(&segment(first)).unwrap().len() as u64 > offset + length,
        "stale bytes follow an earlier segment's seal"
    );
    fs_log
}

/// Rewrites the `position`-th record of a segment as a record of the life of segment `number_stale` (valid
/// checksum): a record of another life.
fn make_stale(fs: &MemFs, number: u64, position: usize, number_stale: u64) -> u64 {
    let (offset, length) = records(fs, number)[position];
    let mut bytes = fs.read_file(&segment(number)).unwrap();
    let range = offset as usize..(offset + length) as usize;
    let mut stale = Vec::new();
    let (record, _) = decode(&bytes[range.clone()], life(fs, number)).unwrap();
    encode(&record, life(fs, number_stale), &mut stale).unwrap();
    bytes[range].copy_from_slice(&stale);
    fs.write_file(&segment(number), &bytes);
    offset
}

fn segment(number: u64) -> PathBuf {
    Path::new(DIR).join(segment_file_name(number))
}

/// The life id in a segment's header.
fn life(fs: &MemFs, number: u64) -> u64 {
    SegmentHeader::read(&fs.read_file(&segment(number)).unwrap())
        .expect("an intact header")
        .life
}

/// The segment numbers in the directory, oldest first.
fn segments(fs: &MemFs) -> Vec<u64> {
    (1..100)
        .filter(|number| fs.read_file(&segment(*number)).is_some())
        .collect()
}

/// `(offset, length)` of every record of a segment, its seal (if any) included, up to the end of the file or the
/// first byte that is not a record of this segment (stale bytes of a recycled file).
fn records(fs: &MemFs, number: u64) -> Vec<(u64, u64)> {
    let bytes = fs.read_file(&segment(number)).unwrap();
    let life = life(fs, number);
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    let mut found = Vec::new();
    while offset < bytes.len() {
        let Ok((record, length)) = decode(&bytes[offset..], life) else {
            break;
        };
        found.push((offset as u64, length as u64));
        offset += length;
        if record == Record::Seal {
            break;
        }
    }
    found
}

/// The records of a segment without its seal.
fn live_records(fs: &MemFs, number: u64) -> Vec<(u64, u64)> {
    let mut found = records(fs, number);
    let bytes = fs.read_file(&segment(number)).unwrap();
    if let Some(&(offset, _)) = found.last()
        && decode(&bytes[offset as usize..], life(fs, number))
            .unwrap()
            .0
            == Record::Seal
    {
        found.pop();
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

/// Seals the last segment, as a rotation does before the next segment exists.
fn seal_last(fs: &MemFs) -> u64 {
    let number = last(fs);
    let mut seal = Vec::new();
    encode(&Record::Seal, life(fs, number), &mut seal).unwrap();
    append_bytes(fs, &segment(number), &seal);
    number + 1
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
    UnsupportedVersion(u32),
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
                let (offset, _) = *live_records(fs, 1).last().unwrap();
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
                header.extend_from_slice(&[7; 21]);
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
                let number = seal_last(fs);
                fs.write_file(
                    &segment(number),
                    &SegmentHeader {
                        number,
                        recycled_bytes: 0,
                        life: 0x1234,
                    }
                    .encode()[..10],
                );
            },
            expected: Expected::Torn {
                kind: TornTailKind::SegmentHeader,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "header of the last segment torn after the magic number, zero-filled (version reads 0)",
            damage: |fs| {
                let number = seal_last(fs);
                let mut bytes = SegmentHeader {
                    number,
                    recycled_bytes: 0,
                    life: 0x1234,
                }
                .encode()[..10]
                    .to_vec();
                bytes.resize(SEGMENT_HEADER_BYTES as usize + 64, 0);
                fs.write_file(&segment(number), &bytes);
            },
            expected: Expected::Torn {
                kind: TornTailKind::SegmentHeader,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "header of the last segment torn inside the magic number, zero-filled",
            damage: |fs| {
                let number = seal_last(fs);
                let mut bytes = SegmentHeader {
                    number,
                    recycled_bytes: 0,
                    life: 0x1234,
                }
                .encode()[..5]
                    .to_vec();
                bytes.resize(SEGMENT_HEADER_BYTES as usize, 0);
                fs.write_file(&segment(number), &bytes);
            },
            expected: Expected::Torn {
                kind: TornTailKind::SegmentHeader,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "last segment with a header and no checkpoint",
            damage: |fs| {
                let number = seal_last(fs);
                fs.write_file(
                    &segment(number),
                    &SegmentHeader {
                        number,
                        recycled_bytes: 0,
                        life: 0x1234,
                    }
                    .encode(),
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
                    &SegmentHeader {
                        number: 7,
                        recycled_bytes: 0,
                        life: 0x1234,
                    }
                    .encode()[..10],
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
            damage: |fs| fs.flip_bit(&segment(1), 8, 2),
            expected: Expected::UnsupportedVersion(7),
        },
        Case {
            name: "version 2 (segment numbers in the records, no life id)",
            damage: |fs| fs.flip_bit(&segment(1), 8, 0),
            expected: Expected::UnsupportedVersion(2),
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
            damage: |fs| {
                fs.write_file(
                    &segment(1),
                    &SegmentHeader {
                        number: 9,
                        recycled_bytes: 0,
                        life: 0x1234,
                    }
                    .encode(),
                )
            },
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
        Case {
            name: "a free file left under its recycled name is never replayed",
            damage: |fs| {
                let bytes = fs.read_file(&segment(last(fs))).unwrap();
                fs.write_file(&Path::new(DIR).join(recycled_file_name(99)), &bytes);
            },
            expected: Expected::Clean,
        },
        Case {
            name: "a segment that is not the last ends without its seal",
            damage: |fs| {
                let (offset, _) = *records(fs, 1).last().unwrap();
                truncate_file(fs, &segment(1), offset);
            },
            expected: Expected::Corruption {
                segment: Some(1),
                offset: None,
            },
        },
        Case {
            name: "last segment's header names an older segment (a free file renamed, its new header lost)",
            damage: |fs| {
                let bytes = fs.read_file(&segment(1)).unwrap();
                let number = seal_last(fs);
                fs.write_file(&segment(number), &bytes);
            },
            expected: Expected::Torn {
                kind: TornTailKind::SegmentHeader,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "bad header checksum in the last segment, which holds records of its own",
            damage: |fs| fs.flip_bit(&segment(last(fs)), 25, 3),
            expected: Expected::Corruption {
                segment: None,
                offset: Some(0),
            },
        },
        Case {
            name: "length field damaged in the middle of the last segment: the record runs past the end",
            damage: |fs| {
                // One flipped bit (bit 16 of the length) of a synced record; synced records follow it.
                let (offset, _) = records(fs, last(fs))[2];
                fs.flip_bit(&segment(last(fs)), offset + 2, 0);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
        Case {
            name: "length field damaged in the middle of the last segment: the record ends at the end of the file",
            damage: |fs| {
                let path = segment(last(fs));
                let (offset, _) = records(fs, last(fs))[2];
                let mut bytes = fs.read_file(&path).unwrap();
                let payload_bytes = (bytes.len() as u64 - offset - 25) as u32;
                bytes[offset as usize..offset as usize + 4]
                    .copy_from_slice(&payload_bytes.to_le_bytes());
                fs.write_file(&path, &bytes);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
        Case {
            name: "a record running past the end, then look-alike records of this life beyond the search budget",
            damage: |fs| {
                let number = last(fs);
                let mut look_alike = [0u8; 25];
                look_alike[0..4].copy_from_slice(&(64u32 * 1024).to_le_bytes());
                look_alike[8..16].copy_from_slice(&life(fs, number).to_le_bytes());
                look_alike[16] = 2;
                let mut tail = look_alike.to_vec();
                tail[0..4].copy_from_slice(&(1u32 << 25).to_le_bytes());
                while tail.len() < 256 * 1024 {
                    tail.extend_from_slice(&look_alike);
                }
                append_bytes(fs, &segment(number), &tail);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
        Case {
            name: "a checkpoint naming another segment",
            damage: |fs| {
                let number = last(fs);
                let path = segment(number);
                let (offset, length) = records(fs, number)[0];
                let mut bytes = fs.read_file(&path).unwrap();
                let range = offset as usize..(offset + length) as usize;
                let Record::Checkpoint { groups, .. } =
                    decode(&bytes[range.clone()], life(fs, number)).unwrap().0
                else {
                    panic!("a segment starts with a checkpoint")
                };
                let mut forged = Vec::new();
                let checkpoint = Record::Checkpoint {
                    segment: number + 1,
                    groups,
                };
                encode(&checkpoint, life(fs, number), &mut forged).unwrap();
                bytes[range].copy_from_slice(&forged);
                fs.write_file(&path, &bytes);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: Some(SEGMENT_HEADER_BYTES),
            },
        },
        Case {
            name: "bad header checksum and a damaged checkpoint in the last segment, records of the header's life after them",
            damage: |fs| {
                let path = segment(last(fs));
                fs.flip_bit(&path, 25, 3);
                fs.flip_bit(&path, SEGMENT_HEADER_BYTES + 30, 1);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: Some(0),
            },
        },
        Case {
            name: "last segment's new header torn over an older life's (a free file renamed, a crash mid-header)",
            damage: |fs| {
                let mut bytes = fs.read_file(&segment(1)).unwrap();
                let number = seal_last(fs);
                let new = SegmentHeader {
                    number,
                    recycled_bytes: bytes.len() as u64,
                    life: 0x0bad_cafe,
                }
                .encode();
                // The crash cut the header write after 20 bytes: the old life id and checkpoint remain.
                bytes[..20].copy_from_slice(&new[..20]);
                fs.write_file(&segment(number), &bytes);
            },
            expected: Expected::Torn {
                kind: TornTailKind::SegmentHeader,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "a free file with the largest sequence number",
            damage: |fs| {
                fs.write_file(
                    &Path::new(DIR).join(recycled_file_name(u64::MAX)),
                    b"not a segment",
                )
            },
            expected: Expected::Clean,
        },
        Case {
            name: "a record of another segment outside the stale zone",
            damage: |fs| {
                let number = last(fs);
                make_stale(fs, number, 1, number - 1);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
    ]
}

/// The rows of the table that need recycled files, over the log of [`build_recycled`].
fn recycled_cases() -> Vec<Case> {
    vec![
        Case {
            name: "recycled last segment: stale records of an earlier life after the live ones",
            damage: |_| {},
            expected: Expected::Torn {
                kind: TornTailKind::Stale,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "recycled last segment: a stale record in the middle, live records after it",
            damage: |fs| {
                let number = last(fs);
                make_stale(fs, number, 2, number - 1);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
        Case {
            name: "recycled last segment: bad checksum in the middle",
            damage: |fs| {
                let (offset, _) = records(fs, last(fs))[1];
                fs.flip_bit(&segment(last(fs)), offset + 40, 1);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
        Case {
            name: "recycled last segment: length field damaged in the middle",
            damage: |fs| {
                let (offset, _) = records(fs, last(fs))[1];
                fs.flip_bit(&segment(last(fs)), offset + 1, 4);
            },
            expected: Expected::Corruption {
                segment: None,
                offset: None,
            },
        },
        Case {
            name: "recycled last segment: bad checksum in the last record, stale bytes after it",
            damage: |fs| {
                let (offset, _) = *records(fs, last(fs)).last().unwrap();
                fs.flip_bit(&segment(last(fs)), offset + 40, 1);
            },
            expected: Expected::Torn {
                kind: TornTailKind::Stale,
                index_last: ENTRIES - 1,
            },
        },
        Case {
            name: "recycled earlier segment: bytes after its seal in the stale zone are ignored",
            damage: |fs| {
                // Turn the earlier life's bytes after the seal into something that is not a record at all.
                let first = segments(fs)[0];
                let (offset, length) = *records(fs, first).last().unwrap();
                fs.flip_bit(&segment(first), offset + length + 3, 5);
            },
            expected: Expected::Torn {
                kind: TornTailKind::Stale,
                index_last: ENTRIES,
            },
        },
        Case {
            name: "recycled earlier segment: a record torn off its seal",
            damage: |fs| {
                let first = segments(fs)[0];
                let (offset, _) = *records(fs, first).last().unwrap();
                fs.flip_bit(&segment(first), offset + 20, 5);
            },
            expected: Expected::Corruption {
                segment: Some(6),
                offset: None,
            },
        },
        Case {
            name: "a copy of the last segment left under a recycled name is never replayed",
            damage: |fs| {
                let bytes = fs.read_file(&segment(last(fs))).unwrap();
                fs.write_file(&Path::new(DIR).join(recycled_file_name(99)), &bytes);
            },
            expected: Expected::Torn {
                kind: TornTailKind::Stale,
                index_last: ENTRIES,
            },
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
    run_over(build(), case);
}

fn run_over(fs: MemFs, case: &Case) {
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
            // The repair is durable: a crash now and a second recovery find a clean log, except that the
            // segment the first recovery started in a recycled file ends with that file's stale bytes.
            drop(wal);
            fs.crash(Crash::LoseUnsynced);
            let wal = Wal::open(fs.clone(), config()).unwrap();
            if let Some(torn) = &wal.recovery_report().torn_tail {
                assert_eq!(torn.kind, TornTailKind::Stale);
                assert!(torn.file > segment(last_before), "{torn:?}");
            }
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
                reason,
            }),
        ) => {
            println!("  corruption at {found}: {reason}");
            assert_eq!(file, segment(number.unwrap_or(last_before)));
            if let Some(offset) = offset {
                assert_eq!(found, *offset);
            }
        }
        (
            Expected::UnsupportedVersion(expected),
            Err(Error::UnsupportedVersion {
                file,
                version,
                version_supported: 3,
            }),
        ) if version == *expected => {
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
fn recovery_decision_table_over_recycled_files() {
    for case in recycled_cases() {
        println!("case: {}", case.name);
        run_over(build_recycled(), &case);
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

/// The free files (`recycle-<n>.wal`) in the directory.
fn free_files(fs: &MemFs) -> usize {
    use storage::FileSystem;
    fs.list(Path::new(DIR))
        .unwrap()
        .iter()
        .filter(|name| name.starts_with("recycle-"))
        .count()
}

/// Rule: opening keeps at most `segments_recycled_max` free files for reuse (the segment it starts may take one
/// of them) and deletes the others.
#[test]
fn opening_keeps_free_files_up_to_the_limit_and_deletes_the_others() {
    let fs = MemFs::new();
    free_filler_segments(&fs);
    // One live entry in the segment the next opening starts, so that the opening under test drops no segment
    // (a dropped segment would be recycled within the limit too).
    let mut wal = Wal::open(fs.clone(), config()).unwrap();
    wal.append(
        GROUP,
        &[Entry {
            index: 1,
            term: 1,
            payload: payload(1),
        }],
    )
    .unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert!(free_files(&fs) >= 3);
    let wal = Wal::open(
        fs.clone(),
        WalConfig {
            segments_recycled_max: 2,
            ..config()
        },
    )
    .unwrap();
    assert_eq!(wal.segments_recycled() + wal.segments_reused() as usize, 2);
    assert_eq!(free_files(&fs), wal.segments_recycled());
}

/// Rule: the recovery report counts every segment and every record replayed (checkpoints and seals included),
/// and the bytes of those records and of the segments' headers.
#[test]
fn the_recovery_report_counts_every_segment_record_and_byte_replayed() {
    let fs = build();
    let numbers = segments(&fs);
    let records_replayed: usize = numbers
        .iter()
        .map(|number| records(&fs, *number).len())
        .sum();
    let bytes_replayed: u64 = numbers
        .iter()
        .map(|number| {
            let (offset, length) = *records(&fs, *number).last().unwrap();
            offset + length
        })
        .sum();
    let wal = Wal::open(fs.clone(), config()).unwrap();
    let report = wal.recovery_report();
    assert_eq!(report.segments_replayed, numbers.len() as u64);
    assert_eq!(report.records_replayed, records_replayed as u64);
    assert_eq!(report.bytes_replayed, bytes_replayed);
    assert_eq!(report.torn_tail, None);
}

/// Rule: a torn tail is reported with where the valid bytes end and how many bytes were cut after them, and
/// the bytes replayed stop where the tail starts.
#[test]
fn a_torn_tail_is_reported_with_its_offset_and_the_bytes_cut() {
    let fs = build();
    let number = last(&fs);
    let length = fs.read_file(&segment(number)).unwrap().len() as u64;
    let bytes_before: u64 = segments(&fs)
        .iter()
        .map(|number| fs.read_file(&segment(*number)).unwrap().len() as u64)
        .sum();
    append_bytes(&fs, &segment(number), &next_record()[..10]);
    let wal = Wal::open(fs.clone(), config()).unwrap();
    let report = wal.recovery_report();
    let torn = report.torn_tail.as_ref().expect("a torn tail");
    assert_eq!(torn.file, segment(number));
    assert_eq!((torn.offset, torn.bytes_discarded), (length, 10));
    assert_eq!(torn.kind, TornTailKind::RecordHeader);
    assert_eq!(report.bytes_replayed, bytes_before);
}

/// Opens the log of `fs`, which must fail with corruption: the file, the offset and the reason.
fn corruption(fs: &MemFs) -> (PathBuf, u64, String) {
    match Wal::open(fs.clone(), config()) {
        Err(Error::Corruption {
            file,
            offset,
            reason,
        }) => (file, offset, reason),
        Err(error) => panic!("expected corruption, got {error}"),
        Ok(_) => panic!("expected corruption, recovery succeeded"),
    }
}

/// Rule: a last segment that holds nothing but a header of a newer format version is refused as unsupported;
/// only a header that is a zero-filled prefix of the magic number is taken for a crash's torn header.
#[test]
fn a_last_segment_of_only_a_newer_versions_header_is_unsupported_not_torn() {
    let fs = build();
    let number = seal_last(&fs);
    let mut header = SegmentHeader {
        number,
        recycled_bytes: 0,
        life: 0x0102_0304_0506_0708,
    }
    .encode();
    header[8..12].copy_from_slice(&4u32.to_le_bytes());
    fs.write_file(&segment(number), &header);
    match Wal::open(fs.clone(), config()) {
        Err(Error::UnsupportedVersion {
            file,
            version: 4,
            version_supported: 3,
        }) => assert_eq!(file, segment(number)),
        Err(error) => panic!("expected an unsupported version, got {error}"),
        Ok(wal) => panic!(
            "expected an unsupported version, got {:?}",
            wal.recovery_report()
        ),
    }
}

/// Rule: a header that names a later segment than its file's name is corruption, even in the last segment
/// (no recycled file can carry a later number); only an older number can be a renamed free file.
#[test]
fn a_last_segment_whose_header_names_a_later_segment_is_corruption() {
    let fs = build();
    let number = last(&fs);
    let path = segment(number);
    let mut bytes = fs.read_file(&path).unwrap();
    let header = SegmentHeader::read(&bytes).unwrap();
    let later = SegmentHeader {
        number: number + 1,
        ..header
    };
    bytes[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&later.encode());
    fs.write_file(&path, &bytes);
    let (file, offset, reason) = corruption(&fs);
    assert_eq!((file, offset), (path, 0));
    assert_eq!(reason, format!("header says segment {}", number + 1));
}

/// Rule: a segment starts with its checkpoint and holds no other: a second checkpoint after the records, or a
/// first record that is not a checkpoint, is corruption at that record, even in the last segment.
#[test]
fn a_segment_starts_with_its_checkpoint_and_holds_no_other() {
    let fs = build();
    let number = last(&fs);
    let path = segment(number);
    let (offset, length) = records(&fs, number)[0];
    let range = offset as usize..(offset + length) as usize;
    let bytes = fs.read_file(&path).unwrap();
    let checkpoint = bytes[range.clone()].to_vec();
    append_bytes(&fs, &path, &checkpoint);
    let (file, found, reason) = corruption(&fs);
    assert_eq!((file, found), (path.clone(), bytes.len() as u64));
    assert_eq!(reason, "a checkpoint after the first record");

    let fs = build();
    let mut bytes = fs.read_file(&path).unwrap();
    bytes.drain(range);
    fs.write_file(&path, &bytes);
    let (file, found, reason) = corruption(&fs);
    assert_eq!((file, found), (path, offset));
    assert_eq!(reason, "the segment does not start with a checkpoint");
}

/// Rule: a record that breaks the log rules (here a gap: one append cut out of the middle) is corruption at
/// that record, even in the last segment, not a shorter log.
#[test]
fn a_gap_between_appends_is_corruption_even_in_the_last_segment() {
    let fs = build();
    let number = last(&fs);
    let path = segment(number);
    let found = records(&fs, number);
    assert!(found.len() >= 3);
    let (offset, length) = found[1];
    let mut bytes = fs.read_file(&path).unwrap();
    bytes.drain(offset as usize..(offset + length) as usize);
    fs.write_file(&path, &bytes);
    let (file, at, reason) = corruption(&fs);
    assert_eq!((file, at), (path, offset));
    assert!(reason.contains("breaks the log rules"), "{reason}");
}

/// Rule: the corruption found when damage is followed by a record of this life says what the damage looked
/// like: a stale or damaged record in the stale zone, a record running past the end of the file elsewhere.
#[test]
fn damage_followed_by_a_record_of_this_life_is_reported_as_what_it_looked_like() {
    let fs = build();
    let number = last(&fs);
    let (offset, _) = records(&fs, number)[2];
    fs.flip_bit(&segment(number), offset + 2, 0);
    let (_, _, reason) = corruption(&fs);
    assert!(
        reason
            .starts_with("a record running past the end of the file, followed by an intact record"),
        "{reason}"
    );

    let fs = build_recycled();
    let number = last(&fs);
    make_stale(&fs, number, 2, number - 1);
    let (_, _, reason) = corruption(&fs);
    assert!(
        reason.starts_with("a stale or damaged record, followed by an intact record"),
        "{reason}"
    );
}

/// Opens the log of `fs`, which must succeed after cutting a torn tail: the log and the tail.
fn open_torn(fs: &MemFs) -> (Wal<MemFs>, TornTail) {
    let wal = Wal::open(fs.clone(), config()).unwrap();
    let torn = wal
        .recovery_report()
        .torn_tail
        .clone()
        .expect("a torn tail");
    (wal, torn)
}

/// Rule: a last segment whose intact header names an older segment (a free file renamed, its new header never
/// written) is a torn tail unless the checkpoint of this segment follows the header: records of the older life
/// further on are no evidence that this segment's life reached the disk.
#[test]
fn a_renamed_older_segment_with_a_damaged_checkpoint_is_a_torn_tail() {
    let fs = build();
    let older = last(&fs);
    let number = seal_last(&fs);
    let path = segment(number);
    fs.write_file(&path, &fs.read_file(&segment(older)).unwrap());
    let (offset, length) = records(&fs, older)[0];
    fs.flip_bit(&path, offset + length - 2, 0);
    let (wal, torn) = open_torn(&fs);
    assert_eq!((torn.file, torn.kind), (path, TornTailKind::SegmentHeader));
    check_entries(&wal, ENTRIES);
}

/// Rule: the stale zone of a recycled file ends before its recycled bytes' end: a tail torn exactly there is a
/// crash's tail of this life (here a short record header), not a stale one.
#[test]
fn a_tail_torn_exactly_where_the_recycled_bytes_end_is_outside_the_stale_zone() {
    let fs = build();
    let number = last(&fs);
    let path = segment(number);
    let mut bytes = fs.read_file(&path).unwrap();
    let end = bytes.len() as u64;
    let header = SegmentHeader {
        recycled_bytes: end,
        ..SegmentHeader::read(&bytes).unwrap()
    };
    bytes[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&header.encode());
    fs.write_file(&path, &bytes);
    append_bytes(&fs, &path, &next_record()[..10]);
    let (wal, torn) = open_torn(&fs);
    assert_eq!(
        (torn.file, torn.offset, torn.kind),
        (path, end, TornTailKind::RecordHeader)
    );
    check_entries(&wal, ENTRIES);
}

/// Rule: a free file's name has a sequence number of exactly 20 digits, like a segment's; a file named
/// `recycle-<short number>.wal` (copied in by hand, or by another tool) is not a free file: opening leaves it alone
/// and never reuses it.
#[test]
fn only_names_with_a_twenty_digit_number_are_free_files() {
    let fs = build();
    let foreign = ["recycle-7.wal", "recycle-1234.wal"];
    for name in foreign {
        fs.write_file(&Path::new(DIR).join(name), b"not a free file of this log");
    }
    let wal = Wal::open(fs.clone(), config()).unwrap();
    assert_eq!((wal.segments_recycled(), wal.segments_reused()), (0, 0));
    check_entries(&wal, ENTRIES);
    for name in foreign {
        assert_eq!(
            fs.read_file(&Path::new(DIR).join(name)).as_deref(),
            Some(&b"not a free file of this log"[..])
        );
    }
}

// Segments larger than the 4 MiB through which opening reads a file (`WindowReader` in `src/segment.rs`).

/// The read window of opening, in bytes.
const WINDOW_BYTES: u64 = 4 << 20;

/// A log of one segment of 150 entries of 64 KiB, one record each (about 9.6 MiB, over three read windows),
/// synced, with the segment's number.
fn big_log() -> (MemFs, u64) {
    log_of(big_entries())
}

fn big_entries() -> Vec<Entry> {
    entries_of(&[64 << 10; 150])
}

/// Entries 1, 2, … of group 1 with payloads of these sizes.
fn entries_of(sizes: &[usize]) -> Vec<Entry> {
    (1..)
        .zip(sizes)
        .map(|(index, &bytes)| Entry {
            index,
            term: 1,
            payload: Bytes::from(vec![index as u8; bytes]),
        })
        .collect()
}

/// A log of one segment holding these entries, one record each, synced, with the segment's number.
fn log_of(entries: Vec<Entry>) -> (MemFs, u64) {
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), WalConfig::new(DIR)).unwrap();
    for entry in entries {
        wal.append(GROUP, &[entry]).unwrap();
    }
    wal.sync().unwrap();
    let number = *wal.segment_numbers().last().unwrap();
    (fs, number)
}

/// Rule: a segment larger than the read window is replayed whole, reading it 4 MiB at a time (few system calls).
#[test]
fn a_segment_larger_than_the_read_window_is_replayed_whole_in_few_reads() {
    let (fs, number) = big_log();
    let file_bytes = fs.read_file(&segment(number)).unwrap().len() as u64;
    assert!(file_bytes > 2 * WINDOW_BYTES, "{file_bytes}");
    let reads = fs.operation_count(FaultOperation::Read);
    let wal = Wal::open(fs.clone(), WalConfig::new(DIR)).unwrap();
    // At most two reads per window (a window that ends inside a record is read again from the record's start):
    // 6 here, where a reader with a 1 MiB window would need 10 or more.
    let windows = file_bytes.div_ceil(WINDOW_BYTES);
    let reads = fs.operation_count(FaultOperation::Read) - reads;
    assert!(reads <= 2 * windows, "{reads} reads for {windows} windows");
    let report = wal.recovery_report();
    assert_eq!(report.bytes_replayed, file_bytes);
    assert_eq!(report.torn_tail, None);
    assert_eq!(wal.entries(GROUP, 1..151, u64::MAX).unwrap(), big_entries());
}

/// Rule: damage is found wherever it is in a segment, past the first read window too: a record whose checksum
/// fails with intact records after it is corruption, reported at its offset.
#[test]
fn a_damaged_record_past_the_first_read_window_is_corruption_at_its_offset() {
    let (fs, number) = big_log();
    let (offset, _) = *records(&fs, number)
        .iter()
        .find(|(offset, _)| *offset > WINDOW_BYTES + (WINDOW_BYTES >> 1))
        .unwrap();
    fs.flip_bit(&segment(number), offset + 1000, 0);
    let (file, at, reason) = match Wal::open(fs.clone(), WalConfig::new(DIR)) {
        Err(Error::Corruption {
            file,
            offset,
            reason,
        }) => (file, offset, reason),
        outcome => panic!("expected corruption, got {:?}", outcome.map(|_| ())),
    };
    assert_eq!((file, at), (segment(number), offset));
    assert!(reason.ends_with("with more records after it"), "{reason}");
}

/// Rule: zeros after the last record (space a crash left allocated but unwritten) are a torn tail however long
/// they are, over several read windows; one nonzero byte at their end makes them damage, not a tail.
#[test]
fn a_zero_filled_tail_longer_than_the_read_window_is_torn() {
    let (fs, number) = big_log();
    let length = fs.read_file(&segment(number)).unwrap().len() as u64;
    let zeros = 2 * WINDOW_BYTES + 100;
    append_bytes(&fs, &segment(number), &vec![0; zeros as usize]);
    let wal = Wal::open(fs.clone(), WalConfig::new(DIR)).unwrap();
    let torn = wal
        .recovery_report()
        .torn_tail
        .clone()
        .expect("a torn tail");
    assert_eq!(
        (torn.offset, torn.bytes_discarded, torn.kind),
        (length, zeros, TornTailKind::ZeroFilled)
    );
    assert_eq!(wal.entries(GROUP, 1..151, u64::MAX).unwrap(), big_entries());
    drop(wal);

    let (fs, number) = big_log();
    let mut tail = vec![0; zeros as usize];
    *tail.last_mut().unwrap() = 1;
    append_bytes(&fs, &segment(number), &tail);
    match Wal::open(fs.clone(), WalConfig::new(DIR)) {
        Err(Error::Corruption { offset, reason, .. }) => {
            assert_eq!(offset, length);
            assert!(reason.ends_with("with more records after it"), "{reason}");
        }
        outcome => panic!("expected corruption, got {:?}", outcome.map(|_| ())),
    }
}

/// Rule: the search for a record of this life after damage covers every byte offset, across read windows: a
/// damaged length field with an intact record more than 4 MiB further, or starting at the last offset of the
/// search's first window, is corruption, not a tail to cut.
#[test]
fn a_search_for_a_later_record_crosses_read_windows() {
    // The bytes a record adds to an entry's payload of about a window (fewer for a small payload).
    let overhead = {
        let probe = (WINDOW_BYTES - 1000) as usize;
        let (fs, number) = log_of(entries_of(&[probe]));
        records(&fs, number)[1].1 - probe as u64
    };
    let far = 5 << 20;
    // A record of exactly one window: the search starts one byte into it, so the next record starts at the
    // last offset of the search's first window.
    let edge = (WINDOW_BYTES - overhead) as usize;
    for (payload_bytes, distance) in [(far, None), (edge, Some(WINDOW_BYTES))] {
        let (fs, number) = log_of(entries_of(&[100, payload_bytes, 100]));
        let records = records(&fs, number);
        let ((big, _), (next, _)) = (records[2], records[3]);
        match distance {
            Some(distance) => assert_eq!(next - big, distance),
            None => assert!(next - big > WINDOW_BYTES),
        }
        // 32 MiB more in the length field: the record now runs past the end of the file (within the record
        // limit).
        fs.flip_bit(&segment(number), big + 3, 1);
        match Wal::open(fs.clone(), WalConfig::new(DIR)) {
            Err(Error::Corruption { offset, reason, .. }) => {
                assert_eq!(offset, big);
                assert!(
                    reason.starts_with(&format!(
                        "a record running past the end of the file, followed by an intact record of this segment at byte {next}"
                    )),
                    "{reason}"
                );
            }
            outcome => panic!("expected corruption, got {:?}", outcome.map(|_| ())),
        }
    }
}

/// Rule: the search after damage considers the file's last possible offset too: a damaged length field whose
/// only later record is the segment's seal (a header-only record that ends the file) is corruption, with the
/// seal as its evidence.
#[test]
fn a_seal_that_ends_the_file_is_found_by_the_search_after_damage() {
    let fs = build();
    // A last segment sealed, as a rotation leaves it before the next segment exists.
    seal_last(&fs);
    let number = last(&fs);
    let records = records(&fs, number);
    let (seal, seal_bytes) = *records.last().unwrap();
    let file_bytes = fs.read_file(&segment(number)).unwrap().len() as u64;
    assert_eq!((seal_bytes, seal + seal_bytes), (25, file_bytes));
    let (damaged, _) = records[records.len() - 2];
    // 32 MiB more in the length field: the record now runs past the end of the file.
    fs.flip_bit(&segment(number), damaged + 3, 1);
    let (file, offset, reason) = corruption(&fs);
    assert_eq!((file, offset), (segment(number), damaged));
    assert!(
        reason.contains(&format!(
            "followed by an intact record of this segment at byte {seal}"
        )),
        "{reason}"
    );
}

/// Rule: the segment reader trusts the bytes a read returns, not the length asked before it: a last segment
/// that shrinks while it is opened (its reads end before its reported length) is not taken for a log with a
/// zero-filled torn tail to cut; the opening stops with `Corruption` where its bytes end, since something
/// other than this WAL is changing its files.
#[test]
fn a_segment_that_shrinks_while_it_is_opened_is_corruption_where_its_bytes_end() {
    let fs = build();
    let number = last(&fs);
    let (offset, length) = *records(&fs, number).last().unwrap();
    assert_eq!(
        fs.read_file(&segment(number)).unwrap().len() as u64,
        offset + length,
        "the last segment ends with its last record"
    );
    // As a file looks that shrinks between its length and a read (another process truncating it).
    let shrinking = AlteredFs::new(fs.clone()).reporting(segment(number), Length::Longer(4096));
    match Wal::open(shrinking, config()) {
        Err(Error::Corruption {
            file,
            offset: at,
            reason,
        }) => {
            assert_eq!((file, at), (segment(number), offset + length));
            assert_eq!(reason, "the file shrank during recovery");
        }
        outcome => panic!("expected corruption, got {:?}", outcome.map(|_| ())),
    }
    // Nothing was cut: every record is still there for an opening that sees the file as it is.
    let wal = Wal::open(fs.clone(), config()).unwrap();
    assert_eq!(wal.recovery_report().torn_tail, None);
    assert_eq!(
        wal.entries(GROUP, 1..ENTRIES + 1, u64::MAX).unwrap().len() as u64,
        ENTRIES
    );
}

/// Rule: a free file is reused only for a segment numbered after the one its header names (free files come
/// only from older segments); one whose header names the very segment about to start is deleted instead.
#[test]
fn a_free_file_naming_the_segment_about_to_start_is_deleted_not_reused() {
    let fs = build();
    // The opening starts the segment after the last one: a free file claims to be that segment already.
    let next = last(&fs) + 1;
    let mut bytes = SegmentHeader {
        number: next,
        recycled_bytes: 0,
        life: 77,
    }
    .encode()
    .to_vec();
    bytes.extend_from_slice(&[0; 512]);
    fs.write_file(&Path::new(DIR).join(recycled_file_name(1)), &bytes);
    assert_eq!(free_files(&fs), 1);
    let wal = Wal::open(fs.clone(), config()).unwrap();
    assert_eq!(wal.segments_reused(), 0);
    assert_eq!(free_files(&fs), 0, "deleted");
    assert_eq!(wal.index_last(GROUP), ENTRIES);
    assert_ne!(life(&fs, next), 77);
}

/// Rule: a segment's life id is drawn again while it is 0 or the life its recycled file had before, so
/// that no stale record of the file's previous life can pass for one of the new life.
#[test]
fn a_segment_never_takes_the_previous_life_of_its_recycled_file_nor_zero() {
    let fs = MemFs::new();
    free_filler_segments(&fs);
    let free: Vec<String> = {
        use storage::FileSystem;
        let mut names = fs.list(Path::new(DIR)).unwrap();
        names.retain(|name| name.starts_with("recycle-"));
        names
    };
    // The opening starts its segment in the oldest free file, whose header holds its previous life.
    let oldest = fs.read_file(&Path::new(DIR).join(&free[0])).unwrap();
    let previous = SegmentHeader::read(&oldest).expect("a header").life;
    let scripted = AlteredFs::new(fs.clone()).scripted([previous, 0, 4242]);
    let wal = Wal::open(scripted, config()).unwrap();
    assert_eq!(wal.segments_reused(), 1);
    let started = *wal.segment_numbers().last().unwrap();
    assert_eq!(life(&fs, started), 4242);
}

/// The first entry index of an append record of segment `number` at `offset`.
fn append_index(fs: &MemFs, number: u64, (offset, length): (u64, u64)) -> u64 {
    let bytes = fs.read_file(&segment(number)).unwrap();
    match decode(
        &bytes[offset as usize..(offset + length) as usize],
        life(fs, number),
    ) {
        Ok((Record::Append { index_first, .. }, _)) => index_first,
        other => panic!("not an append: {:?}", other.map(|(record, _)| record)),
    }
}

/// Rule: an entry read back from the disk comes from the record the index placed it in: an intact record of
/// this life found there that holds other entries (the file changed under the log) is corruption, not data.
#[test]
fn a_record_read_back_that_is_not_the_expected_append_is_corruption() {
    use storage::{File, FileSystem};
    let fs = build();
    let number = last(&fs);
    let wal = Wal::open(fs.clone(), config()).unwrap();
    let appends = &records(&fs, number)[1..3];
    let (first, second) = (appends[0], appends[1]);
    assert_eq!(first.1, second.1, "two records of the same length");
    let index = append_index(&fs, number, first);
    assert_eq!(append_index(&fs, number, second), index + 1);
    // The second record's bytes in place of the first, through the file the log has open.
    let bytes = fs.read_file(&segment(number)).unwrap();
    let copy = &bytes[second.0 as usize..(second.0 + second.1) as usize];
    fs.open(&segment(number))
        .unwrap()
        .write_at(first.0, copy)
        .unwrap();
    match wal.entries(GROUP, index..index + 1, u64::MAX) {
        Err(Error::Corruption { offset, reason, .. }) => {
            assert_eq!(offset, first.0);
            assert!(reason.contains("not the expected append"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Rule: a record cut short on the disk under an open log (the file shrank) is corruption when read back,
/// with that reason, not a record decoded from bytes that are not there.
#[test]
fn a_record_cut_short_under_the_log_is_corruption_when_read_back() {
    use storage::{File, FileSystem};
    let fs = build();
    let number = last(&fs);
    let wal = Wal::open(fs.clone(), config()).unwrap();
    let (offset, length) = records(&fs, number)[1];
    let index = append_index(&fs, number, (offset, length));
    fs.open(&segment(number))
        .unwrap()
        .set_len(offset + length / 2)
        .unwrap();
    match wal.entries(GROUP, index..index + 1, u64::MAX) {
        Err(Error::Corruption {
            offset: at, reason, ..
        }) => {
            assert_eq!(at, offset);
            assert_eq!(reason, "the file ends inside a record");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Rule: the record read back must hold every entry the index placed in it: an append of this life with the
/// right first index but fewer entries (the file changed under the log) is corruption, not a short read.
#[test]
fn a_record_read_back_with_fewer_entries_than_its_span_is_corruption() {
    use storage::{EntryRef, File, FileSystem};
    let fs = MemFs::new();
    let mut wal = Wal::open(fs.clone(), config()).unwrap();
    let three: Vec<Entry> = (1..=3)
        .map(|index| Entry {
            index,
            term: 1,
            payload: payload(index),
        })
        .collect();
    wal.append(GROUP, &three).unwrap();
    wal.sync().unwrap();
    let number = last(&fs);
    let (offset, _) = records(&fs, number)[1];
    assert_eq!(append_index(&fs, number, records(&fs, number)[1]), 1);
    // The same append with its last entry missing, written over it: shorter, so it ends inside the old one.
    let two: Vec<EntryRef<'_>> = three[..2]
        .iter()
        .map(|entry| EntryRef {
            term: entry.term,
            payload: &entry.payload,
        })
        .collect();
    let mut bytes = Vec::new();
    let shorter = Record::Append {
        group: GROUP,
        index_first: 1,
        entries: two,
    };
    encode(&shorter, life(&fs, number), &mut bytes).unwrap();
    fs.open(&segment(number))
        .unwrap()
        .write_at(offset, &bytes)
        .unwrap();
    match wal.entries(GROUP, 1..4, u64::MAX) {
        Err(Error::Corruption {
            offset: at, reason, ..
        }) => {
            assert_eq!(at, offset);
            assert!(reason.contains("not the expected append"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}
