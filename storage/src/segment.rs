//! Segment files: their names, their header, and a reader that walks them with bounded memory.

use std::io;
use std::path::{Path, PathBuf};

use crate::fs::File;

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"AGNDWAL\n";

/// The format version this build writes and reads.
pub const SEGMENT_VERSION: u32 = 1;

/// The size of a segment header in bytes.
pub const SEGMENT_HEADER_BYTES: u64 = 24;

/// The header at the start of every segment file.
///
/// Layout, in bytes, little endian:
///
/// ```text
///  0                8         12        16                      24
///  +----------------+---------+---------+-----------------------+
///  | magic          | version | crc32   | segment number        |
///  | "AGNDWAL\n"    | u32     | u32     | u64                   |
///  +----------------+---------+---------+-----------------------+
/// ```
///
/// The checksum covers the magic, the version and the segment number. The number repeats the one in the file
/// name, so a file copied or renamed by hand is noticed. Records follow the header back to back, starting with
/// a checkpoint record (see [`crate::Record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number; segments are numbered from 1 without gaps.
    pub number: u64,
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
        })
    }
}

fn header_checksum(bytes: &[u8; SEGMENT_HEADER_BYTES as usize]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[0..12]);
    hasher.update(&bytes[16..24]);
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
        let header = SegmentHeader { number: 42 };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        let mut bad_magic = bytes;
        bad_magic[0] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad_magic), Err(HeaderError::Magic));
        let mut future = bytes;
        future[8] = 2;
        assert_eq!(SegmentHeader::decode(&future), Err(HeaderError::Version(2)));
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
    }
}
