//! Opening a WAL: replaying every segment, repairing a torn tail, refusing anything else that is wrong.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::GroupId;
use crate::error::{Error, Result};
use crate::fs::{File, FileSystem};
use crate::record::{
    self, DecodeError, GroupCheckpoint, RECORD_BYTES_MAX, RECORD_HEADER_BYTES, Record,
};
use crate::segment::{
    HeaderError, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION, Search, SegmentHeader,
    WindowReader, life_field, parse_recycled_file_name, parse_segment_file_name, recycled_path,
    segment_path,
};
use crate::wal::{GroupLog, Location, SEGMENT_SIZE_BYTES_MIN, Segment, Violation, Wal, WalConfig};

/// What [`Wal::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files replayed.
    pub segments_replayed: u64,
    /// Records replayed, checkpoints included.
    pub records_replayed: u64,
    /// Bytes of valid records and headers replayed.
    pub bytes_replayed: u64,
    /// The torn tail that was cut off the last segment, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// A torn tail found at the end of the last segment and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// Where the valid bytes end; the file was cut there (or removed if no complete checkpoint preceded it; or,
    /// for a stale tail of a recycled file, sealed there and left its length).
    pub offset: u64,
    /// How many bytes were discarded.
    pub bytes_discarded: u64,
    /// What the tail looked like.
    pub kind: TornTailKind,
}

/// The shapes of a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TornTailKind {
    /// The segment header itself is short or zero: the crash came right after the file was created.
    SegmentHeader,
    /// Fewer bytes than a record header remain.
    RecordHeader,
    /// The record's length runs past the end of the file.
    RecordPayload,
    /// The last record's checksum does not match.
    Checksum,
    /// The file ends with zeros where a record should start.
    ZeroFilled,
    /// The segment has a valid header but no complete checkpoint record.
    Checkpoint,
    /// In a recycled file, below its recycled bytes: a stale record of an earlier life, or a record of this
    /// life torn over the stale bytes, with no intact record of this life anywhere after it.
    Stale,
}

/// How the scan of one segment ended.
enum ScanEnd {
    /// Every byte was part of a valid record (and the segment has no seal).
    Clean,
    /// The segment ends with a seal record ending at `end`; any bytes after it are stale and never read.
    Sealed { end: u64 },
    /// The bytes from `offset` on are a torn tail (only ever returned for the last segment).
    Torn { offset: u64, kind: TornTailKind },
}

/// Applies the records of one segment to the groups being rebuilt.
struct Replay<'a> {
    groups: &'a mut BTreeMap<GroupId, GroupLog>,
    path: &'a Path,
    segment: u64,
    is_oldest: bool,
    is_last: bool,
    records: u64,
    /// The "recycled bytes" of the segment header, once it is read.
    recycled_bytes: u64,
    /// The life id of the segment header, once it is read.
    life: u64,
}

impl<F: FileSystem> Wal<F> {
    /// Opens the WAL in `config.dir`, creating the directory if needed, and recovers its contents.
    ///
    /// Every segment is replayed in order to rebuild each group's bounds, hard state and the location of each
    /// entry (entries themselves stay on disk). Then the bytes kept of the last segment are written back in
    /// place (see below), the last segment is sealed if it is not, everything is synced, a new segment is
    /// started and synced, and segments holding nothing live are dropped. What recovery does with what it finds
    /// follows this table; anything marked "torn" is cut off (the file is truncated, or removed if nothing valid
    /// remains; a stale tail is cut logically by the seal that recovery writes), synced, and reported in
    /// [`Wal::recovery_report`]. Only the last segment can have a torn tail, because a segment is synced before
    /// the next one is created (and sealed first, see [`Wal`]). "Stale zone" is the part of a recycled file below
    /// the "recycled bytes" of its header (its length when the segment started in it; 0 for a new file), where
    /// bytes of the file's earlier lives may follow the records of this one. A record "of this life" is an intact
    /// record (length, checksum) whose life id is the one in the segment's header (random, drawn when the
    /// segment started: see [`SegmentHeader`]). "Searched" means: every later byte offset is a candidate,
    /// filtered on its header (life id, type, group, length within the file) and then checksummed, at most
    /// twice the file's size in bytes checksummed per search.
    ///
    /// | where              | what is found                                                   | outcome                    |
    /// |--------------------|-----------------------------------------------------------------|----------------------------|
    /// | directory          | no segment file                                                 | empty log                  |
    /// | directory          | a file whose name is not `wal-<20 digits>.log`                  | ignored                    |
    /// | directory          | a free file `recycle-<20 digits>.wal`                           | never replayed; reused later (surplus deleted) |
    /// | directory          | a free file numbered 2^64 - 1 (never written by this crate)     | kept; recycling stops (dropped segments are deleted), no overflow |
    /// | directory          | a segment number missing between two others                     | `Corruption` (missing file)|
    /// | any segment        | listing, opening or reading fails                               | `Io`, never `Corruption`   |
    /// | last segment       | header shorter than 40 bytes, or header and rest all zeros      | torn: file removed         |
    /// | last segment       | header that fails to decode (wrong magic or version included) but is a prefix of the magic number followed by zeros to the end of the file (a crash zero-filled it) | torn: file removed |
    /// | last segment       | bad header checksum or an older segment's number (a recycled file renamed, its new header not written or torn), and no evidence of this life: no intact checkpoint naming this segment right after the header, and (bad checksum only) no record of the life id in the header's field found by a search, unless that id is the life of an intact checkpoint of an older segment right after the header (a new header torn over an old one) | torn: file removed |
    /// | last segment       | the same, with such evidence (the header rotted after the segment was synced), or a search over its budget | `Corruption` |
    /// | other segment      | any of the three rows above                                     | `Corruption`               |
    /// | any segment        | wrong magic, a later segment's number in the header             | `Corruption`               |
    /// | any segment        | format version other than 3                                     | `UnsupportedVersion`       |
    /// | last segment, outside the stale zone | fewer bytes than a record header remain       | torn                       |
    /// | last segment, outside the stale zone | a record's length runs past the end of the file, and no record of this life found after it | torn |
    /// | last segment, outside the stale zone | bad checksum, the record ends the file or only zeros follow, and no record of this life found after it | torn |
    /// | last segment, outside the stale zone | either of the two rows above, with a record of this life found after it (a damaged length field), or a search over its budget | `Corruption` |
    /// | last segment, outside the stale zone | only zeros from a record boundary to the end  | torn                       |
    /// | last segment, in the stale zone | a record of another life (stale, or a client payload shaped like a record), or one that is short, runs past the end, has a bad checksum or a length above the limit, or zeros; and no record of this life found at any later offset | torn (stale tail) |
    /// | last segment, in the stale zone | the same, with a record of this life found at a later offset (damage or a stale record in the middle), or a search over its budget | `Corruption` |
    /// | last segment       | no complete checkpoint record after the header                  | torn: file removed         |
    /// | only one, number>1 | no complete checkpoint (older ones were deleted relying on it)  | `Corruption`               |
    /// | other segment      | any of the torn rows above                                      | `Corruption`               |
    /// | other segment      | ends without a seal record                                      | `Corruption`               |
    /// | any segment        | a seal record: the segment ends there; bytes after it are ignored if they lie in the stale zone | clean |
    /// | any segment        | bytes after a seal beyond the stale zone                        | `Corruption`               |
    /// | outside the stale zone | bad checksum with non-zero bytes after the record           | `Corruption`               |
    /// | outside the stale zone | length field above [`RECORD_BYTES_MAX`]                     | `Corruption`, no allocation|
    /// | outside the stale zone | an intact record of another life                            | `Corruption`               |
    /// | any segment        | valid checksum, but unknown type or malformed payload           | `Corruption`               |
    /// | any segment        | a record that breaks the log rules (gap, compacted index)       | `Corruption`               |
    /// | any segment        | first record not a checkpoint, or a checkpoint elsewhere        | `Corruption`               |
    /// | any segment        | a checkpoint naming another segment than the header's           | `Corruption`               |
    /// | segment after first| checkpoint disagreeing with the segments replayed before it    | `Corruption`               |
    /// | after the last     | live entries whose segment was deleted                          | `Corruption`               |
    ///
    /// Outside the stale zone the rules are those of a new file: only a crash's torn tail (short, or followed
    /// by zeros) ends the log, and only if no record of this life follows it, since a damaged length field
    /// looks like a torn record. In the stale zone, anything that is not a record of this life can be what a
    /// crash left over an earlier life, so it ends the log, unless a record of this life follows it. The
    /// search is what tells damage to a synced record (even to its length field) from a crash's tail when later
    /// synced records exist; it cannot be fooled by stale bytes, client payloads included, since they cannot
    /// carry the life id, drawn after they were written. On hostile bytes (many look-alike headers of this
    /// life, which only someone who can write the file directly can produce), it gives up within its budget
    /// and reports `Corruption` rather than guess or run for hours.
    ///
    /// Before returning, recovery writes the bytes it keeps of the last segment (header and records) back in
    /// place and syncs them, so that what it returns is durable: a process that reopens the WAL after a failed
    /// fdatasync, in the same boot, reads the page cache, whose pages Linux marked clean without writing them,
    /// and no later fdatasync would write them. Only the last segment can hold such pages (a failed sync
    /// poisons the WAL, and a rotation needs a successful sync of the seal before it), and rewriting it costs
    /// one write of at most a segment per opening. If the last segment is not sealed, recovery seals it (after
    /// cutting a torn tail) before starting the next segment.
    ///
    /// # Errors
    /// As in the table: [`Error::Corruption`] names the file and the offset of the bad header or record.
    ///
    /// # Panics
    /// If `config.segment_size_bytes_max` is below [`SEGMENT_SIZE_BYTES_MIN`] or the write buffer limit is 0.
    pub fn open(fs: F, config: WalConfig) -> Result<Self> {
        assert!(
            config.segment_size_bytes_max >= SEGMENT_SIZE_BYTES_MIN,
            "segment size limit too small"
        );
        assert!(
            config.write_buffer_bytes_max > 0,
            "the write buffer limit must be positive"
        );
        let dir = config.dir.clone();
        fs.create_dir_all(&dir)
            .map_err(|error| Error::io("create directory", &dir, error))?;
        let (numbers, recycled) = list_segments(&fs, &dir)?;
        let mut wal = Wal {
            fs,
            config,
            segments: BTreeMap::new(),
            segment_active: 0,
            active_records_offset: 0,
            write_buffer: Vec::new(),
            groups: BTreeMap::new(),
            active_unsynced: false,
            dir_unsynced: false,
            poisoned: false,
            recovery: RecoveryReport::default(),
            recycled: VecDeque::new(),
            // Saturating: a free file named with the largest number (hostile, never written by this crate) only
            // stops recycling, which never uses that number (see `collect_garbage`).
            recycled_next: recycled.last().map_or(1, |last| last.saturating_add(1)),
            segments_reused: 0,
        };
        let mut last_sealed = true;
        for (position, &number) in numbers.iter().enumerate() {
            let is_last = position + 1 == numbers.len();
            if let Some(sealed) = wal.replay_segment(number, position == 0, is_last)? {
                last_sealed = sealed;
            }
        }
        wal.check_nothing_missing(numbers.first().copied())?;
        wal.keep_recycled(recycled)?;
        if wal.segments.is_empty() {
            // Nothing to seal or write back.
        } else {
            wal.write_back_active()?;
            if last_sealed {
                wal.sync_active()?;
            } else {
                wal.seal_active()?;
            }
        }
        // A last segment removed as torn gives its number to the new segment, so numbers stay contiguous.
        let number_next = match wal.segments.last_key_value() {
            Some((last, _)) => last.checked_add(1).ok_or_else(|| {
                Error::corruption(
                    segment_path(&dir, *last),
                    0,
                    "segment numbers are exhausted",
                )
            })?,
            None => numbers.last().copied().unwrap_or(1),
        };
        wal.start_segment(number_next)?;
        wal.sync()?;
        Ok(wal)
    }

    /// Keeps the free files found at opening for reuse, up to the configured number, and deletes the others.
    fn keep_recycled(&mut self, recycled: Vec<u64>) -> Result<()> {
        let dir = self.config.dir.clone();
        let mut removed = false;
        for sequence in recycled {
            if self.recycled.len() < self.config.segments_recycled_max {
                self.recycled.push_back(sequence);
                continue;
            }
            let path = recycled_path(&dir, sequence);
            self.fs
                .remove(&path)
                .map_err(|error| Error::io("remove recycled segment", &path, error))?;
            removed = true;
        }
        if removed {
            self.fs
                .sync_dir(&dir)
                .map_err(|error| Error::io("fsync directory", &dir, error))?;
        }
        Ok(())
    }

    /// Replays one segment into `self.groups`, repairing it if it is the last one and its tail is torn.
    /// Returns whether the segment ends with a seal, or `None` if it was removed as torn.
    fn replay_segment(
        &mut self,
        number: u64,
        is_oldest: bool,
        is_last: bool,
    ) -> Result<Option<bool>> {
        let path = segment_path(&self.config.dir, number);
        let mut file = self
            .fs
            .open(&path)
            .map_err(|error| Error::io("open segment", &path, error))?;
        let file_bytes = file
            .len()
            .map_err(|error| Error::io("stat segment", &path, error))?;
        let mut replay = Replay {
            groups: &mut self.groups,
            path: &path,
            segment: number,
            is_oldest,
            is_last,
            records: 0,
            recycled_bytes: 0,
            life: 0,
        };
        let end = replay.scan(&file, file_bytes)?;
        let records = replay.records;
        let recycled_bytes = replay.recycled_bytes;
        let life = replay.life;
        self.recovery.segments_replayed += 1;
        self.recovery.records_replayed += records;
        let (bytes_valid, sealed) = match end {
            ScanEnd::Clean => (file_bytes, false),
            ScanEnd::Sealed { end } => (end, true),
            ScanEnd::Torn { .. } if records == 0 && is_oldest && number > 1 => {
                // Older segments are deleted only once this one's checkpoint is durable, so it cannot be torn.
                return Err(Error::corruption(
                    &path,
                    0,
                    "the oldest segment has no complete checkpoint, yet older segments were deleted",
                ));
            }
            #[cfg(madsim)]
            ScanEnd::Torn { .. }
                if records > 0 && crate::planted::planted(crate::planted::Bug::KeepTornTail) =>
            {
                (file_bytes, false)
            }
            ScanEnd::Torn { offset, kind } => {
                // A segment without its checkpoint holds nothing; it goes entirely.
                let kind = if records == 0 && kind != TornTailKind::SegmentHeader {
                    TornTailKind::Checkpoint
                } else {
                    kind
                };
                let offset = if records == 0 { 0 } else { offset };
                self.recovery.torn_tail = Some(TornTail {
                    file: path.clone(),
                    offset,
                    bytes_discarded: file_bytes - offset,
                    kind,
                });
                if records == 0 {
                    drop(file);
                    self.fs
                        .remove(&path)
                        .map_err(|error| Error::io("remove torn segment", &path, error))?;
                    let dir = &self.config.dir;
                    self.fs
                        .sync_dir(dir)
                        .map_err(|error| Error::io("fsync directory", dir, error))?;
                    return Ok(None);
                }
                // In the stale zone the tail is cut logically: the seal that recovery writes at `offset` ends the
                // segment, and the file keeps its blocks (only bytes past the stale zone, of a record torn across
                // it, are cut, so that nothing but stale bytes follows the seal). Elsewhere the file is cut.
                let length = if offset < recycled_bytes {
                    recycled_bytes
                } else {
                    offset
                };
                if file_bytes > length {
                    file.set_len(length)
                        .map_err(|error| Error::io("truncate torn tail", &path, error))?;
                    file.sync_data()
                        .map_err(|error| Error::io("fdatasync", &path, error))?;
                }
                (offset, false)
            }
        };
        self.recovery.bytes_replayed += bytes_valid;
        self.segments.insert(
            number,
            Segment {
                file,
                path,
                bytes_written: bytes_valid,
                life,
            },
        );
        self.segment_active = number;
        Ok(Some(sealed))
    }

    /// Fails if a live entry is known only from a checkpoint: its segment was deleted while it was still live.
    fn check_nothing_missing(&self, segment_oldest: Option<u64>) -> Result<()> {
        for (group, log) in &self.groups {
            if let Some(span) = log.spans.iter().find(|span| span.location.is_none()) {
                let file = segment_path(&self.config.dir, segment_oldest.unwrap_or(1));
                let reason = format!(
                    "group {group}: entries {}..={} are live but their segment is gone",
                    span.index_first, span.index_last
                );
                return Err(Error::corruption(file, 0, reason));
            }
        }
        Ok(())
    }
}

/// The segment numbers in `dir`, checked to have no gap, and the sequence numbers of the free files, sorted.
fn list_segments<F: FileSystem>(fs: &F, dir: &Path) -> Result<(Vec<u64>, Vec<u64>)> {
    let names = fs
        .list(dir)
        .map_err(|error| Error::io("list directory", dir, error))?;
    let mut numbers: Vec<u64> = names
        .iter()
        .filter_map(|name| parse_segment_file_name(name))
        .collect();
    numbers.sort_unstable();
    let mut recycled: Vec<u64> = names
        .iter()
        .filter_map(|name| parse_recycled_file_name(name))
        .collect();
    recycled.sort_unstable();
    for pair in numbers.windows(2) {
        if pair[1] != pair[0] + 1 {
            let reason = format!(
                "segment {} is missing between {} and {}",
                pair[0] + 1,
                pair[0],
                pair[1]
            );
            return Err(Error::corruption(segment_path(dir, pair[0] + 1), 0, reason));
        }
    }
    Ok((numbers, recycled))
}

impl Replay<'_> {
    fn corruption(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::corruption(self.path, offset, reason)
    }

    fn io(&self, error: std::io::Error) -> Error {
        Error::io("read segment", self.path, error)
    }

    /// A tail that looks torn: repaired in the last segment, corruption anywhere else.
    fn torn(&self, offset: u64, kind: TornTailKind) -> Result<ScanEnd> {
        if self.is_last {
            Ok(ScanEnd::Torn { offset, kind })
        } else {
            Err(self.corruption(
                offset,
                format!("{kind:?} damage in a segment that is not the last"),
            ))
        }
    }

    /// The end of the log at `offset` (damage of kind `kind` there), unless an intact record of this life
    /// starts at a later byte offset: then the damage is in the middle of the segment, `Corruption`. Only the
    /// last segment can have a tail; the search is filtered on the life id, which no stale byte or client
    /// payload can know, and bounded (see [`WindowReader::find_record_of`]).
    fn end_of_log<F: File>(
        &self,
        reader: &mut WindowReader<'_, F>,
        offset: u64,
        kind: TornTailKind,
    ) -> Result<ScanEnd> {
        if !self.is_last {
            return self.torn(offset, kind);
        }
        let what = match kind {
            TornTailKind::Stale => "a stale or damaged record",
            TornTailKind::RecordPayload => "a record running past the end of the file",
            _ => "a record with a bad checksum and nothing but zeros after it",
        };
        match reader
            .find_record_of(offset + 1, self.life)
            .map_err(|error| self.io(error))?
        {
            Search::Found(found) => Err(self.corruption(
                offset,
                format!("{what}, followed by an intact record of this segment at byte {found}"),
            )),
            Search::Undecided => Err(self.corruption(
                offset,
                format!(
                    "{what}, and too many look-alike records after it to decide whether it is a tail"
                ),
            )),
            Search::NotFound => Ok(ScanEnd::Torn { offset, kind }),
        }
    }

    /// Walks the segment record by record, following the decision table of [`Wal::open`].
    fn scan<F: File>(&mut self, file: &F, file_bytes: u64) -> Result<ScanEnd> {
        let mut reader = WindowReader::new(file, file_bytes);
        if let Some(end) = self.check_header(&mut reader)? {
            return Ok(end);
        }
        let mut offset = SEGMENT_HEADER_BYTES;
        loop {
            let file_bytes = reader.file_bytes();
            if offset == file_bytes {
                return if self.records == 0 {
                    self.torn(offset, TornTailKind::Checkpoint)
                } else if !self.is_last {
                    Err(self
                        .corruption(offset, "a segment that is not the last ends without a seal"))
                } else {
                    Ok(ScanEnd::Clean)
                };
            }
            let stale_zone = offset < self.recycled_bytes;
            let header = reader
                .bytes(offset, RECORD_HEADER_BYTES)
                .map_err(|error| self.io(error))?;
            let header_zero = header.iter().all(|&byte| byte == 0);
            let record_length = record::record_length(header);
            if !stale_zone
                && header_zero
                && reader.zeros_from(offset).map_err(|error| self.io(error))?
            {
                return self.torn(offset, TornTailKind::ZeroFilled);
            }
            let record_bytes = match record_length {
                Ok(Some(record_bytes)) => record_bytes,
                _ if stale_zone => {
                    return self.end_of_log(&mut reader, offset, TornTailKind::Stale);
                }
                Ok(None) => return self.torn(offset, TornTailKind::RecordHeader),
                Err(error) => return Err(self.corruption(offset, error.to_string())),
            };
            debug_assert!(record_bytes <= RECORD_BYTES_MAX);
            let bytes = reader
                .bytes(offset, record_bytes)
                .map_err(|error| self.io(error))?;
            match record::decode(bytes, self.life) {
                Ok((record, length)) => {
                    assert_eq!(length as u64, record_bytes);
                    let location = Location {
                        segment: self.segment,
                        offset,
                        length: record_bytes,
                    };
                    let is_seal = matches!(record, Record::Seal);
                    self.apply(record, location)?;
                    if is_seal {
                        let end = offset + record_bytes;
                        if file_bytes > end.max(self.recycled_bytes) {
                            return Err(self.corruption(
                                end,
                                "bytes after the seal, past the stale zone of the file",
                            ));
                        }
                        return Ok(ScanEnd::Sealed { end });
                    }
                }
                Err(error @ (DecodeError::UnknownType(_) | DecodeError::Malformed(_))) => {
                    return Err(self.corruption(offset, error.to_string()));
                }
                Err(_) if stale_zone => {
                    return self.end_of_log(&mut reader, offset, TornTailKind::Stale);
                }
                Err(DecodeError::Incomplete { .. }) => {
                    // A record torn by a crash, or a damaged length field: records of this life after it tell.
                    return self.end_of_log(&mut reader, offset, TornTailKind::RecordPayload);
                }
                Err(error @ DecodeError::Checksum { .. }) => {
                    let end = offset + record_bytes;
                    if reader.zeros_from(end).map_err(|error| self.io(error))? {
                        // The length field may be the damaged part, so "the record ends the file or zeros
                        // follow" proves nothing on its own: records of this life after it tell.
                        return self.end_of_log(&mut reader, offset, TornTailKind::Checksum);
                    }
                    return Err(
                        self.corruption(offset, format!("{error}, with more records after it"))
                    );
                }
                Err(error) => return Err(self.corruption(offset, error.to_string())),
            }
            offset += record_bytes;
        }
    }

    /// Checks the segment header; `Some` if the segment ends there (torn).
    fn check_header<F: File>(
        &mut self,
        reader: &mut WindowReader<'_, F>,
    ) -> Result<Option<ScanEnd>> {
        let bytes = reader
            .bytes(0, SEGMENT_HEADER_BYTES)
            .map_err(|error| self.io(error))?;
        let Ok(bytes) = <[u8; SEGMENT_HEADER_BYTES as usize]>::try_from(bytes) else {
            return self.torn(0, TornTailKind::SegmentHeader).map(Some);
        };
        let decoded = SegmentHeader::decode(&bytes);
        // A header cut short by a crash and zero-filled (the file grew but not all its bytes
        // reached the disk) can read as the wrong magic or version: torn, not corrupt or newer.
        if decoded.is_err()
            && is_zero_filled_header_prefix(&bytes)
            && reader
                .zeros_from(SEGMENT_HEADER_BYTES)
                .map_err(|error| self.io(error))?
        {
            return self.torn(0, TornTailKind::SegmentHeader).map(Some);
        }
        let reason = match decoded {
            Ok(header) if header.number == self.segment => {
                self.recycled_bytes = header.recycled_bytes;
                self.life = header.life;
                return Ok(None);
            }
            Ok(header) if header.number > self.segment => {
                return Err(self.corruption(0, format!("header says segment {}", header.number)));
            }
            Ok(header) => format!("header says older segment {}", header.number),
            Err(HeaderError::Magic) => return Err(self.corruption(0, "wrong magic number")),
            Err(HeaderError::Checksum) => "segment header checksum mismatch".to_owned(),
            Err(HeaderError::Version(version)) => {
                return Err(Error::UnsupportedVersion {
                    file: self.path.to_path_buf(),
                    version,
                    version_supported: SEGMENT_VERSION,
                });
            }
        };
        if !self.is_last {
            return Err(self.corruption(0, reason));
        }
        // A recycled file renamed to this segment's name whose new header never reached the disk (or was torn)
        // holds nothing of this segment: every write of this life starts with the header, so if it was lost,
        // nothing after it was synced either. Unless the file says otherwise, it is a torn tail.
        match self.evidence_of_this_life(reader, &bytes)? {
            None => self.torn(0, TornTailKind::SegmentHeader).map(Some),
            Some(evidence) => Err(self.corruption(0, format!("{reason}, but {evidence}"))),
        }
    }

    /// In the last segment, whose header is not this segment's (damaged, or an older life's): whether anything
    /// says that this life reached the disk, which makes the header's damage bit rot rather than a crash.
    /// Evidence is (1) an intact checkpoint right after the header that names this segment (its life id is
    /// read from the record itself), or (2) when the header's checksum is bad, an intact record anywhere in the
    /// file of the life id the header's (unchecked) field holds, unless that is the life of an intact checkpoint
    /// of an older segment right after the header (a crash tore the new header over the old one, leaving the
    /// old life's id in place). An intact header of an older segment is an older life's: only (1) applies.
    fn evidence_of_this_life<F: File>(
        &self,
        reader: &mut WindowReader<'_, F>,
        header: &[u8; SEGMENT_HEADER_BYTES as usize],
    ) -> Result<Option<String>> {
        let at = SEGMENT_HEADER_BYTES;
        let first = reader
            .bytes(at, RECORD_HEADER_BYTES)
            .map_err(|error| self.io(error))?;
        let (life_first, length_first) = (
            record::life_of(first),
            record::record_length(first).ok().flatten(),
        );
        let mut life_older = None;
        if let (Some(life), Some(length)) = (life_first, length_first)
            && let Ok((Record::Checkpoint { segment, .. }, _)) = record::decode(
                reader.bytes(at, length).map_err(|error| self.io(error))?,
                life,
            )
        {
            if segment == self.segment {
                return Ok(Some(format!(
                    "the checkpoint of this segment follows it at byte {at}"
                )));
            }
            life_older = Some(life);
        }
        let header_intact = SegmentHeader::decode(header).is_ok();
        let life = life_field(header);
        if header_intact || life == 0 || Some(life) == life_older {
            return Ok(None);
        }
        match reader
            .find_record_of(at, life)
            .map_err(|error| self.io(error))?
        {
            Search::Found(found) => Ok(Some(format!(
                "an intact record of the life id in the header is at byte {found}"
            ))),
            Search::Undecided => Ok(Some(
                "too many look-alike records follow to decide whether it is a tail".to_owned(),
            )),
            Search::NotFound => Ok(None),
        }
    }

    /// Applies one valid record to the groups being rebuilt.
    fn apply(&mut self, record: Record<'_>, location: Location) -> Result<()> {
        let offset = location.offset;
        let is_first = self.records == 0;
        self.records += 1;
        match record {
            Record::Checkpoint { segment, .. } if is_first && segment != self.segment => {
                Err(self.corruption(offset, format!("the checkpoint names segment {segment}")))
            }
            Record::Checkpoint { groups, .. } if is_first => self.apply_checkpoint(groups, offset),
            Record::Checkpoint { .. } => {
                Err(self.corruption(offset, "a checkpoint after the first record"))
            }
            _ if is_first => {
                Err(self.corruption(offset, "the segment does not start with a checkpoint"))
            }
            Record::Seal => Ok(()),
            Record::Append {
                group,
                index_first,
                entries,
            } => {
                let log = self.groups.entry(group).or_default();
                let result = log.append(index_first, entries.len() as u64, Some(location));
                self.check_rule(result, group, index_first, offset)
            }
            Record::HardState { group, hard_state } => {
                self.groups.entry(group).or_default().hard_state = hard_state;
                Ok(())
            }
            Record::Truncate {
                group,
                index_last_kept,
            } => {
                let result = self
                    .groups
                    .entry(group)
                    .or_default()
                    .truncate(index_last_kept);
                self.check_rule(result, group, index_last_kept, offset)
            }
            Record::Compact {
                group,
                index_first_kept,
            } => {
                self.groups
                    .entry(group)
                    .or_default()
                    .compact(index_first_kept);
                Ok(())
            }
        }
    }

    fn check_rule(
        &self,
        result: Result<(), Violation>,
        group: GroupId,
        index: u64,
        offset: u64,
    ) -> Result<()> {
        result.map_err(|violation| {
            self.corruption(
                offset,
                format!("group {group}: index {index} breaks the log rules ({violation:?})"),
            )
        })
    }

    /// The oldest segment's checkpoint is the starting state; a later one must agree with the replay so far.
    fn apply_checkpoint(&mut self, groups: Vec<GroupCheckpoint>, offset: u64) -> Result<()> {
        if self.is_oldest {
            *self.groups = groups
                .iter()
                .map(|checkpoint| (checkpoint.group, GroupLog::from_checkpoint(checkpoint)))
                .collect();
            return Ok(());
        }
        let expected: Vec<GroupCheckpoint> = self
            .groups
            .iter()
            .map(|(group, log)| log.checkpoint(*group))
            .collect();
        if groups != expected {
            return Err(self.corruption(
                offset,
                "the checkpoint disagrees with the segments before it",
            ));
        }
        Ok(())
    }
}

/// Whether a segment header looks like the beginning of a header whose end a crash zero-filled:
/// from some byte on everything is zero, and what comes before is the magic number or a prefix of
/// it. Only asked about headers that fail to decode; an intact header is never taken for torn.
fn is_zero_filled_header_prefix(bytes: &[u8; SEGMENT_HEADER_BYTES as usize]) -> bool {
    let written = bytes
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |last| last + 1);
    if written == bytes.len() {
        return false;
    }
    let magic_written = written.min(SEGMENT_MAGIC.len());
    bytes[..magic_written] == SEGMENT_MAGIC[..magic_written]
}
