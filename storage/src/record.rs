//! The record codec: how one WAL record is laid out in bytes, encoded and checked.

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};

use crate::GroupId;
use crate::error::{Error, Result};

/// The largest record, header included, in bytes. A length field above it is rejected before anything is
/// allocated, so hostile bytes cannot make recovery allocate more than this.
pub const RECORD_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Every entry index is below this limit (2^62), so that index arithmetic never overflows, even on hostile bytes.
pub const INDEX_LIMIT: u64 = 1 << 62;

/// The size of a record header in bytes.
pub const RECORD_HEADER_BYTES: u64 = 25;

const _: () = assert!(RECORD_HEADER_BYTES < RECORD_BYTES_MAX);
// The length field is a u32, so the limit must fit in it.
const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as u64);

/// One log entry of one group: an index, a term and opaque bytes. The storage crate gives them no meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The position of the entry in its group's log; the first entry of a log has index 1.
    pub index: u64,
    /// The term of the entry, stored and returned as is.
    pub term: u64,
    /// The entry's bytes.
    pub payload: Bytes,
}

/// The state a Raft group must persist besides its log: term, vote and commit index, as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The current term.
    pub term: u64,
    /// The server voted for in this term; 0 means none.
    pub vote: u64,
    /// The highest index known to be committed.
    pub commit: u64,
}

/// The state of one group written at the start of every segment, so that older segments can be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCheckpoint {
    /// The group.
    pub group: GroupId,
    /// Its latest hard state.
    pub hard_state: HardState,
    /// The first index still in its log (everything before was compacted).
    pub index_first: u64,
    /// The last index of its log; `index_first - 1` when the log is empty.
    pub index_last: u64,
}

/// An entry as it sits in a record: a term and a payload borrowed from the record's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRef<'a> {
    /// The entry's term.
    pub term: u64,
    /// The entry's bytes.
    #[serde(borrow, serialize_with = "serialize_bytes")]
    pub payload: &'a [u8],
}

/// One record of the write-ahead log, borrowing its payloads from the bytes it was decoded from.
///
/// Every record is framed the same way; the layout, in bytes, little endian:
///
/// ```text
///  0        4        8                16     17               25                      25 + length
///  +--------+--------+----------------+------+----------------+-----------------------+
///  | length | crc32  | life id        | type | group id       | payload (postcard)    |
///  | u32    | u32    | u64            | u8   | u64            | `length` bytes        |
///  +--------+--------+----------------+------+----------------+-----------------------+
/// ```
///
/// - `length` counts the payload only, and the whole record (header included) is at most [`RECORD_BYTES_MAX`].
/// - `crc32` (IEEE, crc32fast) covers the length field, then every byte from the life id to the end of
///   the payload, so a flipped length is caught as surely as a flipped payload byte.
/// - `life id` is the random 64-bit id of the segment life the record was written to, the one in the segment's
///   header (see [`crate::SegmentHeader`]). Segment files are recycled (see [`crate::Wal`]): a file keeps the
///   bytes of its earlier lives after the records of its current one, client payloads included. Those bytes
///   carry another life's id (or, if a client forged records inside a payload, a guess) under a valid checksum,
///   so they never pass for records of the current life: the id is drawn at random when the life starts, after
///   the payloads were written, so no client can predict it. A scan for "a valid record of this life" filters
///   candidates on these 8 bytes. (Format version 2 stored the segment number here, which a client could
///   predict; see [`crate::SEGMENT_VERSION`].)
/// - `type` is 1 checkpoint, 2 append, 3 hard state, 4 truncate, 5 compact, 6 seal; 0 is never written, so a
///   zero-filled tail never decodes as a record.
/// - `group id` is 0 for a checkpoint and a seal, which cover every group.
/// - The payload is the postcard encoding of the variant's fields, listed with each variant below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// Every group's state when a segment starts (payload: the segment number, then the list of
    /// [`GroupCheckpoint`], sorted by group). The segment number repeats the header's, so that recovery can tell
    /// this life's checkpoint from an earlier life's when the header is damaged.
    Checkpoint {
        /// The number of the segment it starts.
        segment: u64,
        /// Every group's state.
        groups: Vec<GroupCheckpoint>,
    },
    /// Entries `index_first..` of a group (payload: `index_first`, then the list of `(term, payload)`).
    /// An append also removes every entry of the group from `index_first` on: a conflicting suffix is replaced
    /// by the append itself, with no separate truncate record.
    Append {
        /// The group.
        group: GroupId,
        /// The index of the first entry.
        index_first: u64,
        /// The entries, at least one.
        entries: Vec<EntryRef<'a>>,
    },
    /// A group's new hard state (payload: term, vote, commit).
    HardState {
        /// The group.
        group: GroupId,
        /// The state.
        hard_state: HardState,
    },
    /// Removes a group's entries after `index_last_kept` (payload: that index).
    Truncate {
        /// The group.
        group: GroupId,
        /// The last index that stays.
        index_last_kept: u64,
    },
    /// Removes a group's entries before `index_first_kept`, after a snapshot (payload: that index).
    Compact {
        /// The group.
        group: GroupId,
        /// The first index that stays.
        index_first_kept: u64,
    },
    /// The end of a segment (empty payload): written and synced when the segment is closed, before the next
    /// one exists. Every segment but the last ends with one; the bytes after it, if any, are stale bytes of an
    /// earlier life of a recycled file and are never read.
    Seal,
}

/// Why bytes did not decode as a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end before the record does: fewer than a header, or fewer than the length field says.
    #[error("incomplete record: {bytes_needed} bytes needed, {bytes_available} available")]
    Incomplete {
        /// The bytes the record needs (header, or header and payload).
        bytes_needed: u64,
        /// The bytes there were.
        bytes_available: u64,
    },
    /// The length field is larger than [`RECORD_BYTES_MAX`] allows.
    #[error("length field {bytes} exceeds the record limit")]
    TooLarge {
        /// The record size the length field implies, header included.
        bytes: u64,
    },
    /// The checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// The checksum matches, but the record belongs to another segment life: in a recycled file, a stale record
    /// of one of its earlier lives (or bytes of an old payload that happen to, or were made to, look like one).
    #[error("record of life {life:#018x}, not of this one")]
    OtherLife {
        /// The life id in the record.
        life: u64,
    },
    /// The checksum matches but the type byte is unknown.
    #[error("unknown record type {0}")]
    UnknownType(u8),
    /// The checksum matches but the payload is not a valid encoding of its type.
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
}

const TYPE_CHECKPOINT: u8 = 1;
const TYPE_APPEND: u8 = 2;
const TYPE_HARD_STATE: u8 = 3;
const TYPE_TRUNCATE: u8 = 4;
const TYPE_COMPACT: u8 = 5;
const TYPE_SEAL: u8 = 6;

fn serialize_bytes<S: Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

#[derive(Deserialize, Serialize)]
struct AppendBody<'a> {
    index_first: u64,
    #[serde(borrow)]
    entries: Vec<EntryRef<'a>>,
}

/// Appends an encoded record to `out`, returning its length in bytes. On error `out` is left unchanged.
fn encode_body<T: Serialize + ?Sized>(
    record_type: u8,
    group: GroupId,
    life: u64,
    body: &T,
    out: &mut Vec<u8>,
) -> Result<u64> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES as usize]);
    let encoded = postcard::to_extend(body, std::mem::take(out));
    // Encoding into a vector fails only when memory runs out, which aborts anyway; keep the contract simple.
    *out = encoded.expect("postcard encodes into a vector without error");
    finish_record(record_type, group, life, start, out)
}

/// Fills in the header of the record that starts at `out[start]` (its payload already follows a zeroed
/// header): length, life id, type, group, then the checksum, computed once over the finished record. If the
/// record is too large, truncates `out` back to `start` and fails.
fn finish_record(
    record_type: u8,
    group: GroupId,
    life: u64,
    start: usize,
    out: &mut Vec<u8>,
) -> Result<u64> {
    let record_bytes = (out.len() - start) as u64;
    if record_bytes > RECORD_BYTES_MAX {
        out.truncate(start);
        return Err(Error::RecordTooLarge {
            bytes: record_bytes,
            bytes_max: RECORD_BYTES_MAX,
        });
    }
    let payload_bytes =
        u32::try_from(record_bytes - RECORD_HEADER_BYTES).expect("checked against the limit");
    let record = &mut out[start..];
    record[0..4].copy_from_slice(&payload_bytes.to_le_bytes());
    record[8..16].copy_from_slice(&life.to_le_bytes());
    record[16] = record_type;
    record[17..25].copy_from_slice(&group.to_le_bytes());
    let crc = checksum(record);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(record_bytes)
}

/// The longest postcard varint of a `u64`: 7 bits per byte.
const VARINT_BYTES_MAX: usize = 10;

/// Appends `value` as postcard encodes an integer: LEB128, low 7 bits first, the high bit set on every byte
/// but the last.
fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    let mut bytes = [0u8; VARINT_BYTES_MAX];
    let mut length = 0;
    while value >= 0x80 {
        bytes[length] = (value as u8) | 0x80;
        value >>= 7;
        length += 1;
    }
    bytes[length] = value as u8;
    out.extend_from_slice(&bytes[..=length]);
}

/// Checks (in debug builds) that the record just appended to `out` decodes: a value checked before it is
/// written is checked again the way it will be read.
fn debug_check_decodes(out: &[u8], life: u64, record_bytes: u64) {
    if cfg!(debug_assertions) {
        let start = out.len() - record_bytes as usize;
        assert!(
            matches!(decode(&out[start..], life), Ok((_, length)) if length as u64 == record_bytes)
        );
    }
}

/// The checksum of a whole record: the length field, then everything after the checksum field.
fn checksum(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[0..4]);
    hasher.update(&record[8..]);
    hasher.finalize()
}

/// Appends an append record for `entries` (consecutive indexes, at least one) of segment life `life` to `out`;
/// returns its length.
///
/// This is the hot path of the WAL, so it writes the payload by hand instead of through serde: one capacity
/// check for the whole record, each payload copied once (straight from the caller's entry into `out`), the
/// checksum computed once, no allocation once `out` has grown to its working size. The bytes are exactly
/// postcard's encoding of the append body (`index_first`, then the `(term, payload)` list), as a unit test
/// checks against the generic path, so the decoder is the generic one.
pub(crate) fn encode_append(
    group: GroupId,
    entries: &[Entry],
    life: u64,
    out: &mut Vec<u8>,
) -> Result<u64> {
    assert!(
        !entries.is_empty(),
        "an append record holds at least one entry"
    );
    let start = out.len();
    let bytes_max = RECORD_HEADER_BYTES as usize
        + 2 * VARINT_BYTES_MAX
        + entries
            .iter()
            .map(|entry| 2 * VARINT_BYTES_MAX + entry.payload.len())
            .sum::<usize>();
    out.reserve(bytes_max);
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES as usize]);
    push_varint(out, entries[0].index);
    push_varint(out, entries.len() as u64);
    for entry in entries {
        push_varint(out, entry.term);
        push_varint(out, entry.payload.len() as u64);
        out.extend_from_slice(&entry.payload);
    }
    let record_bytes = finish_record(TYPE_APPEND, group, life, start, out)?;
    debug_check_decodes(out, life, record_bytes);
    Ok(record_bytes)
}

/// Appends the encoding of `record`, as a record of the segment life `life` (the life id in its segment's
/// header), to `out` and returns the record's length in bytes.
///
/// # Errors
/// [`Error::RecordTooLarge`] if the record would exceed [`RECORD_BYTES_MAX`]; `out` is then unchanged.
pub fn encode(record: &Record<'_>, life: u64, out: &mut Vec<u8>) -> Result<u64> {
    let record_bytes = encode_unchecked(record, life, out)?;
    debug_check_decodes(out, life, record_bytes);
    Ok(record_bytes)
}

fn encode_unchecked(record: &Record<'_>, life: u64, out: &mut Vec<u8>) -> Result<u64> {
    match record {
        Record::Checkpoint { segment, groups } => {
            encode_body(TYPE_CHECKPOINT, 0, life, &(segment, groups), out)
        }
        Record::Append {
            group,
            index_first,
            entries,
        } => {
            let body = AppendBody {
                index_first: *index_first,
                entries: entries.clone(),
            };
            encode_body(TYPE_APPEND, *group, life, &body, out)
        }
        Record::HardState { group, hard_state } => {
            encode_body(TYPE_HARD_STATE, *group, life, hard_state, out)
        }
        Record::Truncate {
            group,
            index_last_kept,
        } => encode_body(TYPE_TRUNCATE, *group, life, index_last_kept, out),
        Record::Compact {
            group,
            index_first_kept,
        } => encode_body(TYPE_COMPACT, *group, life, index_first_kept, out),
        Record::Seal => encode_body(TYPE_SEAL, 0, life, &(), out),
    }
}

/// The total length, header included, of the record whose header starts `bytes`, checked against the limit.
/// `Ok(None)` if `bytes` is shorter than a header.
pub(crate) fn record_length(bytes: &[u8]) -> Result<Option<u64>, DecodeError> {
    let Some(length_field) = bytes.get(0..4) else {
        return Ok(None);
    };
    if (bytes.len() as u64) < RECORD_HEADER_BYTES {
        return Ok(None);
    }
    let payload_bytes = u32::from_le_bytes(length_field.try_into().expect("four bytes"));
    let record_bytes = RECORD_HEADER_BYTES + u64::from(payload_bytes);
    if record_bytes > RECORD_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            bytes: record_bytes,
        });
    }
    Ok(Some(record_bytes))
}

/// Decodes the record of segment life `life` at the start of `bytes`, returning it and its length in bytes.
///
/// Every field is checked; nothing in `bytes` can make this panic or allocate more than the record limit.
///
/// # Errors
/// A [`DecodeError`] saying what was wrong; [`DecodeError::OtherLife`] for an intact record written to another
/// segment life (checked after the checksum, before the type and payload).
pub fn decode(bytes: &[u8], life: u64) -> Result<(Record<'_>, usize), DecodeError> {
    let bytes_available = bytes.len() as u64;
    let record_bytes = record_length(bytes)?.ok_or(DecodeError::Incomplete {
        bytes_needed: RECORD_HEADER_BYTES,
        bytes_available,
    })?;
    if bytes_available < record_bytes {
        return Err(DecodeError::Incomplete {
            bytes_needed: record_bytes,
            bytes_available,
        });
    }
    let record_bytes =
        usize::try_from(record_bytes).expect("below the limit, which fits in memory");
    let record = &bytes[..record_bytes];
    let stored = u32::from_le_bytes(record[4..8].try_into().expect("four bytes"));
    let computed = checksum(record);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let record_life = life_of(record).expect("a whole header");
    if record_life != life {
        return Err(DecodeError::OtherLife { life: record_life });
    }
    let group = u64::from_le_bytes(record[17..25].try_into().expect("eight bytes"));
    let payload = &record[RECORD_HEADER_BYTES as usize..];
    let decoded = decode_payload(record[16], group, payload)?;
    Ok((decoded, record_bytes))
}

/// The life id field of the record header at the start of `bytes` (unchecked), if there are enough bytes.
pub(crate) fn life_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?))
}

/// Whether the record header at the start of `header` could start an intact record of life `life`, judged by
/// its fields alone (no checksum): the life id, a known type, group 0 for a checkpoint and a seal, an empty
/// payload for a seal, a length within the limit. The cheap filter before [`is_record_of`] when searching.
pub(crate) fn is_plausible_header_of(header: &[u8], life: u64) -> bool {
    if header.len() < RECORD_HEADER_BYTES as usize || life_of(header) != Some(life) {
        return false;
    }
    let Ok(Some(record_bytes)) = record_length(header) else {
        return false;
    };
    let group_zero = header[17..25] == [0; 8];
    match header[16] {
        TYPE_CHECKPOINT => group_zero,
        TYPE_SEAL => group_zero && record_bytes == RECORD_HEADER_BYTES,
        TYPE_APPEND | TYPE_HARD_STATE | TYPE_TRUNCATE | TYPE_COMPACT => true,
        _ => false,
    }
}

/// Whether `bytes` start with an intact record of life `life` (length within the limit and the bytes, checksum
/// right, life id equal), whatever its payload: the evidence recovery looks for after a damaged or stale
/// record, to tell a tail left by a crash from damage in the middle of the segment.
pub(crate) fn is_record_of(bytes: &[u8], life: u64) -> bool {
    let Ok(Some(record_bytes)) = record_length(bytes) else {
        return false;
    };
    let Some(record) = bytes.get(..record_bytes as usize) else {
        return false;
    };
    life_of(record) == Some(life)
        && u32::from_le_bytes(record[4..8].try_into().expect("four bytes")) == checksum(record)
}

/// Rewrites the life id of the encoded record `record` (and its checksum): for a record encoded for the active
/// segment that goes to the next one instead, because it did not fit.
pub(crate) fn set_life(record: &mut [u8], life: u64) {
    record[8..16].copy_from_slice(&life.to_le_bytes());
    let crc = checksum(record);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a payload with postcard, requiring that it is consumed exactly.
fn take_all<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(payload).map_err(|_| DecodeError::Malformed("bad postcard"))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after the payload"));
    }
    Ok(value)
}

fn decode_payload(
    record_type: u8,
    group: GroupId,
    payload: &[u8],
) -> Result<Record<'_>, DecodeError> {
    match record_type {
        TYPE_CHECKPOINT => {
            if group != 0 {
                return Err(DecodeError::Malformed("a checkpoint has group id 0"));
            }
            let (segment, groups): (u64, Vec<GroupCheckpoint>) = take_all(payload)?;
            check_checkpoint(&groups)?;
            Ok(Record::Checkpoint { segment, groups })
        }
        TYPE_APPEND => {
            let body: AppendBody<'_> = take_all(payload)?;
            if body.entries.is_empty() {
                return Err(DecodeError::Malformed("an append holds no entry"));
            }
            let index_last = body.index_first.checked_add(body.entries.len() as u64 - 1);
            if body.index_first == 0
                || index_last.is_none_or(|index_last| index_last >= INDEX_LIMIT)
            {
                return Err(DecodeError::Malformed("append indexes out of range"));
            }
            Ok(Record::Append {
                group,
                index_first: body.index_first,
                entries: body.entries,
            })
        }
        TYPE_HARD_STATE => Ok(Record::HardState {
            group,
            hard_state: take_all(payload)?,
        }),
        TYPE_TRUNCATE => Ok(Record::Truncate {
            group,
            index_last_kept: take_all(payload)?,
        }),
        TYPE_COMPACT => {
            let index_first_kept: u64 = take_all(payload)?;
            if index_first_kept == 0 || index_first_kept >= INDEX_LIMIT {
                return Err(DecodeError::Malformed("compaction index out of range"));
            }
            Ok(Record::Compact {
                group,
                index_first_kept,
            })
        }
        TYPE_SEAL => {
            take_all::<()>(payload)?;
            if group != 0 {
                return Err(DecodeError::Malformed("a seal names a group"));
            }
            Ok(Record::Seal)
        }
        unknown => Err(DecodeError::UnknownType(unknown)),
    }
}

fn check_checkpoint(groups: &[GroupCheckpoint]) -> Result<(), DecodeError> {
    for pair in groups.windows(2) {
        if pair[0].group >= pair[1].group {
            return Err(DecodeError::Malformed("checkpoint groups are not sorted"));
        }
    }
    for group in groups {
        let in_range = group.index_first >= 1
            && group.index_first < INDEX_LIMIT
            && group.index_last < INDEX_LIMIT;
        if !in_range || group.index_last + 1 < group.index_first {
            return Err(DecodeError::Malformed(
                "checkpoint log bounds are inconsistent",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: &Record<'_>) {
        let mut bytes = Vec::new();
        let length = encode(record, 3, &mut bytes).unwrap();
        assert_eq!(length, bytes.len() as u64);
        let (decoded, decoded_length) = decode(&bytes, 3).unwrap();
        assert_eq!(
            decode(&bytes, 4).unwrap_err(),
            DecodeError::OtherLife { life: 3 }
        );
        assert!(is_record_of(&bytes, 3) && !is_record_of(&bytes, 4));
        assert!(is_plausible_header_of(&bytes, 3) && !is_plausible_header_of(&bytes, 4));
        assert_eq!(&decoded, record);
        assert_eq!(decoded_length, bytes.len());
    }

    #[test]
    fn every_record_type_round_trips() {
        let hard_state = HardState {
            term: 3,
            vote: 2,
            commit: 9,
        };
        round_trip(&Record::Checkpoint {
            segment: 1,
            groups: vec![],
        });
        round_trip(&Record::Checkpoint {
            segment: u64::MAX,
            groups: vec![
                GroupCheckpoint {
                    group: 1,
                    hard_state,
                    index_first: 1,
                    index_last: 0,
                },
                GroupCheckpoint {
                    group: 7,
                    hard_state,
                    index_first: 5,
                    index_last: 90,
                },
            ],
        });
        let entries = vec![
            EntryRef {
                term: 1,
                payload: b"a",
            },
            EntryRef {
                term: 2,
                payload: b"",
            },
        ];
        round_trip(&Record::Append {
            group: 4,
            index_first: 10,
            entries,
        });
        round_trip(&Record::HardState {
            group: u64::MAX,
            hard_state,
        });
        round_trip(&Record::Truncate {
            group: 1,
            index_last_kept: 0,
        });
        round_trip(&Record::Compact {
            group: 1,
            index_first_kept: 77,
        });
        round_trip(&Record::Seal);
    }

    /// The hand-written append encoding must be byte for byte postcard's, varints of every length included.
    #[test]
    fn the_append_fast_path_matches_the_generic_encoding() {
        // (group, first index, (term, payload length) of each entry)
        type Case = (GroupId, u64, Vec<(u64, usize)>);
        let cases: Vec<Case> = vec![
            (3, 5, vec![(2, 5), (2, 5)]),
            (0, 1, vec![(0, 0)]),
            (
                u64::MAX,
                127,
                vec![(127, 127), (128, 128), (u64::MAX, 16_383)],
            ),
            (
                9,
                INDEX_LIMIT - 2,
                vec![(1 << 35, 16_384), (1 << 63, 70_000)],
            ),
            (1, 1, (0..300).map(|term| (term, 100)).collect()),
        ];
        for (group, index_first, shape) in cases {
            let entries: Vec<Entry> = shape
                .iter()
                .zip(index_first..)
                .map(|(&(term, length), index)| Entry {
                    index,
                    term,
                    payload: Bytes::from(vec![index as u8; length]),
                })
                .collect();
            let mut fast = vec![0xee; 3];
            let length = encode_append(group, &entries, 17, &mut fast).unwrap();
            assert_eq!(length as usize, fast.len() - 3);
            let references = entries
                .iter()
                .map(|entry| EntryRef {
                    term: entry.term,
                    payload: &entry.payload,
                })
                .collect();
            let mut generic = vec![0xee; 3];
            encode(
                &Record::Append {
                    group,
                    index_first,
                    entries: references,
                },
                17,
                &mut generic,
            )
            .unwrap();
            assert_eq!(fast, generic);
        }
    }

    /// Rule: a record of exactly [`RECORD_BYTES_MAX`] bytes, header included, is written and read back; one
    /// byte more is refused when encoding (and `out` left as it was) and when decoding.
    #[test]
    fn the_record_limit_is_inclusive() {
        let append = |payload_bytes: u64| {
            let payload = vec![7; usize::try_from(payload_bytes).unwrap()];
            let mut out = b"kept".to_vec();
            let result = encode_append(
                1,
                &[Entry {
                    index: 1,
                    term: 1,
                    payload: Bytes::from(payload),
                }],
                9,
                &mut out,
            );
            (result, out)
        };
        // The header and the varints around the payload take the same bytes for every size near the limit.
        let near = RECORD_BYTES_MAX - 64;
        let overhead = append(near).0.unwrap() - near;
        let (result, out) = append(RECORD_BYTES_MAX - overhead);
        assert_eq!(result.unwrap(), RECORD_BYTES_MAX);
        let (decoded, length) = decode(&out[4..], 9).unwrap();
        assert_eq!(length as u64, RECORD_BYTES_MAX);
        assert!(matches!(decoded, Record::Append { index_first: 1, .. }));
        let (result, out) = append(RECORD_BYTES_MAX - overhead + 1);
        assert!(matches!(
            result,
            Err(Error::RecordTooLarge { bytes, .. }) if bytes == RECORD_BYTES_MAX + 1
        ));
        assert_eq!(out, b"kept");
        let mut header = vec![0; RECORD_HEADER_BYTES as usize];
        let payload_bytes = u32::try_from(RECORD_BYTES_MAX - RECORD_HEADER_BYTES + 1).unwrap();
        header[..4].copy_from_slice(&payload_bytes.to_le_bytes());
        assert_eq!(
            decode(&header, 9),
            Err(DecodeError::TooLarge {
                bytes: RECORD_BYTES_MAX + 1
            })
        );
    }

    /// Rule: the search's cheap filter takes a header for a record of this life only if it has the fields
    /// this crate writes: the life id, a known type, group 0 for a checkpoint and a seal, and no payload for a
    /// seal; each wrong field alone rules it out.
    #[test]
    fn a_plausible_header_has_every_field_this_crate_writes() {
        let header = |record_type: u8, group: u64, payload_bytes: u32| {
            let mut header = vec![0; RECORD_HEADER_BYTES as usize];
            header[..4].copy_from_slice(&payload_bytes.to_le_bytes());
            header[8..16].copy_from_slice(&9u64.to_le_bytes());
            header[16] = record_type;
            header[17..25].copy_from_slice(&group.to_le_bytes());
            header
        };
        assert!(is_plausible_header_of(&header(TYPE_SEAL, 0, 0), 9));
        assert!(!is_plausible_header_of(&header(TYPE_SEAL, 0, 0), 8));
        assert!(!is_plausible_header_of(&header(TYPE_SEAL, 5, 0), 9));
        assert!(!is_plausible_header_of(&header(TYPE_SEAL, 0, 1), 9));
        assert!(is_plausible_header_of(&header(TYPE_CHECKPOINT, 0, 40), 9));
        assert!(!is_plausible_header_of(&header(TYPE_CHECKPOINT, 5, 40), 9));
        for record_type in [TYPE_APPEND, TYPE_HARD_STATE, TYPE_TRUNCATE, TYPE_COMPACT] {
            assert!(is_plausible_header_of(&header(record_type, 5, 40), 9));
        }
        assert!(!is_plausible_header_of(&header(0, 5, 40), 9));
        assert!(!is_plausible_header_of(&header(7, 5, 40), 9));
        assert!(!is_plausible_header_of(&header(TYPE_SEAL, 0, 0)[..24], 9));
        assert!(!is_plausible_header_of(
            &header(TYPE_APPEND, 5, u32::MAX),
            9
        ));
    }

    #[test]
    fn a_huge_length_field_is_rejected_before_reading_further() {
        let mut bytes = vec![0xff; 4];
        bytes.extend_from_slice(&[0; 21]);
        assert_eq!(
            decode(&bytes, 0),
            Err(DecodeError::TooLarge {
                bytes: RECORD_HEADER_BYTES + u64::from(u32::MAX)
            })
        );
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut bytes = Vec::new();
        encode(
            &Record::Truncate {
                group: 9,
                index_last_kept: 300,
            },
            5,
            &mut bytes,
        )
        .unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&flipped, 5).is_err(),
                "bit {bit} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn zeros_and_short_buffers_do_not_decode() {
        assert!(matches!(
            decode(&[0; 64], 0),
            Err(DecodeError::Checksum { .. })
        ));
        assert!(matches!(
            decode(&[1, 2, 3], 0),
            Err(DecodeError::Incomplete { .. })
        ));
        assert!(matches!(
            decode(&[], 0),
            Err(DecodeError::Incomplete { .. })
        ));
    }

    #[test]
    fn an_empty_append_is_malformed_even_with_a_valid_checksum() {
        let mut bytes = Vec::new();
        encode_body(
            TYPE_APPEND,
            1,
            1,
            &AppendBody {
                index_first: 1,
                entries: vec![],
            },
            &mut bytes,
        )
        .unwrap();
        assert_eq!(
            decode(&bytes, 1),
            Err(DecodeError::Malformed("an append holds no entry"))
        );
    }

    /// Decodes a record of type `record_type` whose payload is `body`, written with a valid checksum.
    fn decode_forged<T: Serialize>(
        record_type: u8,
        group: GroupId,
        body: &T,
    ) -> Result<(), DecodeError> {
        let mut bytes = Vec::new();
        encode_body(record_type, group, 1, body, &mut bytes).unwrap();
        decode(&bytes, 1).map(|_| ())
    }

    /// Rule: every index a record carries lies in `1..INDEX_LIMIT`: an append's first and last index, a
    /// compaction's first kept index; each bound alone refuses the record, however intact its checksum.
    #[test]
    fn record_indexes_out_of_range_are_malformed_one_bound_at_a_time() {
        let entry = EntryRef {
            term: 1,
            payload: b"x",
        };
        let append = |index_first: u64, count: usize| {
            decode_forged(
                TYPE_APPEND,
                1,
                &AppendBody {
                    index_first,
                    entries: vec![entry; count],
                },
            )
        };
        let out_of_range = Err(DecodeError::Malformed("append indexes out of range"));
        assert_eq!(append(0, 1), out_of_range);
        assert_eq!(append(INDEX_LIMIT - 1, 2), out_of_range);
        assert_eq!(append(INDEX_LIMIT - 1, 1), Ok(()));
        assert_eq!(append(1, 2), Ok(()));
        let compact = |index_first_kept: u64| decode_forged(TYPE_COMPACT, 1, &index_first_kept);
        let out_of_range = Err(DecodeError::Malformed("compaction index out of range"));
        assert_eq!(compact(0), out_of_range);
        assert_eq!(compact(INDEX_LIMIT), out_of_range);
        assert_eq!(compact(1), Ok(()));
        assert_eq!(compact(INDEX_LIMIT - 1), Ok(()));
    }

    /// Rule: a checkpoint lists each group once, sorted, with bounds `1 <= index_first <= index_last + 1`
    /// below `INDEX_LIMIT`; any other list is malformed.
    #[test]
    fn a_checkpoint_with_unsorted_groups_or_inconsistent_bounds_is_malformed() {
        let group = |group: u64, index_first: u64, index_last: u64| GroupCheckpoint {
            group,
            hard_state: HardState::default(),
            index_first,
            index_last,
        };
        let checkpoint =
            |groups: Vec<GroupCheckpoint>| decode_forged(TYPE_CHECKPOINT, 0, &(7u64, groups));
        assert_eq!(checkpoint(vec![group(1, 1, 0), group(2, 5, 9)]), Ok(()));
        let unsorted = Err(DecodeError::Malformed("checkpoint groups are not sorted"));
        assert_eq!(checkpoint(vec![group(2, 1, 0), group(1, 1, 0)]), unsorted);
        assert_eq!(checkpoint(vec![group(1, 1, 0), group(1, 1, 0)]), unsorted);
        let inconsistent = Err(DecodeError::Malformed(
            "checkpoint log bounds are inconsistent",
        ));
        for bad in [
            group(1, 0, 0),
            group(1, INDEX_LIMIT, 0),
            group(1, INDEX_LIMIT, INDEX_LIMIT - 1),
            group(1, 1, INDEX_LIMIT),
            group(1, 5, 3),
        ] {
            assert_eq!(checkpoint(vec![bad]), inconsistent, "{bad:?}");
        }
    }
}
