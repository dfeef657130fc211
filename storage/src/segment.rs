//! Segment files: their names, their header, and a reader that walks them with bounded memory.

use std::io;
use std::path::{Path, PathBuf};

use crate::fs::File;
use crate::record::{self, RECORD_HEADER_BYTES};

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"AGNDWAL\n";

/// The format version this build writes and reads. Version 2 added the segment number to every record, the
/// recycled length to the header and the seal record, for segment recycling; version 1 files are refused.
pub const SEGMENT_VERSION: u32 = 2;

/// The size of a segment header in bytes.
pub const SEGMENT_HEADER_BYTES: u64 = 32;

/// The header at the start of every segment file.
///
/// Layout, in bytes, little endian:
///
/// ```text
///  0                8         12        16                24                32
///  +----------------+---------+---------+-----------------+-----------------+
///  | magic          | version | crc32   | segment number  | recycled bytes  |
///  | "AGNDWAL\n"    | u32     | u32     | u64             | u64             |
///  +----------------+---------+---------+-----------------+-----------------+
/// ```
///
/// The checksum covers every field but itself. The number repeats the one in the file name, so a file copied
/// or renamed by hand is noticed. "Recycled bytes" is the file's length when this segment started in it: 0 for
/// a new file, the old length for a recycled one, whose bytes below that offset may still hold an earlier
/// life (see the recovery table of [`crate::Wal::open`]). Records follow the header back to back, starting
/// with a checkpoint record (see [`crate::Record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number; segments are numbered from 1 without gaps.
    pub number: u64,
    /// The file's length when the segment started in it (0 for a new file): the bytes past the records of
    /// this life and below this offset are stale.
    pub recycled_bytes: u64,
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Magic,
    Version(u32),
    Checksum,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut bytes = [0; SEGMENT_HEADER_BYTES as usize];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.number.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.recycled_bytes.to_le_bytes());
        let crc = header_checksum(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes a header from exactly [`SEGMENT_HEADER_BYTES`] bytes.
    pub(crate) fn decode(bytes: &[u8; SEGMENT_HEADER_BYTES as usize]) -> Result<Self, HeaderError> {
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        // The version is checked before the checksum: a newer format may checksum differently.
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"));
        if version != SEGMENT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("four bytes"));
        if stored != header_checksum(bytes) {
            return Err(HeaderError::Checksum);
        }
        Ok(SegmentHeader {
            number: u64::from_le_bytes(bytes[16..24].try_into().expect("eight bytes")),
            recycled_bytes: u64::from_le_bytes(bytes[24..32].try_into().expect("eight bytes")),
        })
    }
}

fn header_checksum(bytes: &[u8; SEGMENT_HEADER_BYTES as usize]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[0..12]);
    hasher.update(&bytes[16..32]);
    hasher.finalize()
}

/// The file name of segment `number`: zero-padded so that names sort like numbers.
pub fn segment_file_name(number: u64) -> String {
    format!("wal-{number:020}.log")
}

/// The path of segment `number` in `dir`.
pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(segment_file_name(number))
}

/// The segment number in a file name, or `None` if the name is not a segment's.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of the `sequence`-th recycled segment file: a free file kept for reuse, never replayed.
pub fn recycled_file_name(sequence: u64) -> String {
    format!("recycle-{sequence:020}.wal")
}

/// The path of recycled file `sequence` in `dir`.
pub(crate) fn recycled_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(recycled_file_name(sequence))
}

/// The sequence number in a recycled file's name, or `None` if the name is not a recycled file's.
pub(crate) fn parse_recycled_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("recycle-")?.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads a file through a window of bytes, so that walking a segment costs few system calls and bounded memory.
pub(crate) struct WindowReader<'f, F: File> {
    file: &'f F,
    file_bytes: u64,
    window: Vec<u8>,
    window_offset: u64,
}

/// How much a [`WindowReader`] reads at once, unless a record needs more.
const WINDOW_BYTES: u64 = 4 * 1024 * 1024;

impl<'f, F: File> WindowReader<'f, F> {
    pub(crate) fn new(file: &'f F, file_bytes: u64) -> Self {
        WindowReader {
            file,
            file_bytes,
            window: Vec::new(),
            window_offset: 0,
        }
    }

    pub(crate) fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The bytes at `offset..offset + length`, fewer if the file ends first. The caller bounds `length`.
    pub(crate) fn bytes(&mut self, offset: u64, length: u64) -> io::Result<&[u8]> {
        let end = offset.saturating_add(length).min(self.file_bytes);
        let start = offset.min(end);
        let window_end = self.window_offset + self.window.len() as u64;
        if start < self.window_offset || end > window_end {
            self.fill(start, end)?;
        }
        let from = (start - self.window_offset) as usize;
        let to = (end - self.window_offset) as usize;
        Ok(&self.window[from..to])
    }

    fn fill(&mut self, start: u64, end: u64) -> io::Result<()> {
        let read_end = end
            .max(start.saturating_add(WINDOW_BYTES))
            .min(self.file_bytes);
        let read_bytes =
            usize::try_from(read_end - start).expect("bounded by the window or the record limit");
        self.window.resize(read_bytes, 0);
        let read = self.file.read_at(start, &mut self.window)?;
        if read < read_bytes {
            // The file shrank under us; only the bytes actually read count.
            self.window.truncate(read);
            self.file_bytes = start + read as u64;
        }
        self.window_offset = start;
        Ok(())
    }

    /// The offset of the first intact record of segment `segment` (see [`record::is_record_of`]) that starts
    /// after `offset`, if any. Every byte offset is a candidate, since the damage before it says nothing about
    /// where records start; candidates are filtered on the 8 bytes of the segment number first, so the cost is
    /// one comparison per byte plus a checksum per candidate.
    pub(crate) fn find_record_of(&mut self, offset: u64, segment: u64) -> io::Result<Option<u64>> {
        let needle = segment.to_le_bytes();
        let mut position = offset.saturating_add(1);
        while position.saturating_add(RECORD_HEADER_BYTES) <= self.file_bytes {
            let chunk = self.bytes(position, WINDOW_BYTES + RECORD_HEADER_BYTES)?;
            let starts = chunk.len().saturating_sub(RECORD_HEADER_BYTES as usize - 1);
            let candidates: Vec<u64> = (0..starts.min(WINDOW_BYTES as usize))
                .filter(|&start| chunk[start + 8..start + 16] == needle)
                .map(|start| position + start as u64)
                .collect();
            for candidate in candidates {
                let header = self.bytes(candidate, RECORD_HEADER_BYTES)?;
                let Ok(Some(record_bytes)) = record::record_length(header) else {
                    continue;
                };
                if record::is_record_of(self.bytes(candidate, record_bytes)?, segment) {
                    return Ok(Some(candidate));
                }
            }
            position += WINDOW_BYTES;
        }
        Ok(None)
    }

    /// Whether every byte from `offset` to the end of the file is zero.
    pub(crate) fn zeros_from(&mut self, offset: u64) -> io::Result<bool> {
        let mut position = offset;
        while position < self.file_bytes {
            let chunk = self.bytes(position, WINDOW_BYTES)?;
            if chunk.is_empty() {
                break;
            }
            if chunk.iter().any(|&byte| byte != 0) {
                return Ok(false);
            }
            position += chunk.len() as u64;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            number: 42,
            recycled_bytes: 9000,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        let mut bad_magic = bytes;
        bad_magic[0] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad_magic), Err(HeaderError::Magic));
        let mut future = bytes;
        future[8] = 3;
        assert_eq!(SegmentHeader::decode(&future), Err(HeaderError::Version(3)));
        let mut bad_number = bytes;
        bad_number[20] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&bad_number),
            Err(HeaderError::Checksum)
        );
    }

    #[test]
    fn file_names_parse_back() {
        assert_eq!(parse_segment_file_name(&segment_file_name(7)), Some(7));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("wal-7.log"), None);
        assert_eq!(
            parse_segment_file_name("wal-0000000000000000000x.log"),
            None
        );
        assert_eq!(parse_segment_file_name("snapshot"), None);
        assert_eq!(parse_recycled_file_name(&recycled_file_name(3)), Some(3));
        assert_eq!(parse_segment_file_name(&recycled_file_name(3)), None);
        assert_eq!(parse_recycled_file_name(&segment_file_name(3)), None);
    }
}
