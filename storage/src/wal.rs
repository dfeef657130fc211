//! The write-ahead log shared by every Raft group of a server.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::GroupId;
use crate::error::{Error, Result};
use crate::fs::{File, FileSystem};
use crate::record::{self, Entry, GroupCheckpoint, HardState, RECORD_BYTES_MAX, Record};
use crate::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, recycled_path, segment_path};

/// The default soft limit on a segment's size.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// The default number of free segment files kept for reuse (see [`WalConfig::segments_recycled_max`]).
pub const SEGMENTS_RECYCLED_MAX_DEFAULT: usize = 4;

/// The smallest segment size limit accepted: room for a header and a small checkpoint.
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 1024;

/// The default size at which appended bytes are written to the file before a sync: 4 MiB, so that a batch of
/// up to 4 MiB between two syncs (256 records of 4 KiB take 1.03 MiB) reaches the file in one `write`.
pub const WRITE_BUFFER_BYTES_DEFAULT: u64 = 4 * 1024 * 1024;

// A record as large as allowed must fit in a segment of the default size.
const _: () = assert!(RECORD_BYTES_MAX <= SEGMENT_SIZE_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_HEADER_BYTES < SEGMENT_SIZE_BYTES_MIN);

/// How a [`Wal`] is laid out and buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// The directory holding the segment files (and nothing else the WAL must read).
    pub dir: PathBuf,
    /// A segment is closed and a new one started before a record would take it past this size.
    /// A record larger than the limit still gets a segment of its own.
    pub segment_size_bytes_max: u64,
    /// Appended records are gathered in memory and written to the file when they reach this size or at the
    /// next sync, so that small appends cost no system call.
    pub write_buffer_bytes_max: u64,
    /// How many segment files that hold nothing live any more are kept, renamed `recycle-<n>.wal`, to be
    /// written over by later segments instead of being deleted (beyond this number they are deleted). An
    /// fdatasync after writing into blocks the file already has needs no file-system journal commit for
    /// block allocation and size, which a file that grows needs at every sync; 0 turns recycling off.
    /// The disk space kept is up to this many segments, each as large as it grew.
    pub segments_recycled_max: usize,
}

impl WalConfig {
    /// The default configuration for a WAL in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig {
            dir: dir.into(),
            segment_size_bytes_max: SEGMENT_SIZE_BYTES_DEFAULT,
            write_buffer_bytes_max: WRITE_BUFFER_BYTES_DEFAULT,
            segments_recycled_max: SEGMENTS_RECYCLED_MAX_DEFAULT,
        }
    }
}

/// Where a record lives on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) length: u64,
}

/// Entries `index_first..=index_last` of a group, which come from the append record at `location` whose first
/// entry has index `index_record_first`. A location of `None` exists only during recovery: entries that a
/// checkpoint says exist but whose segment was deleted; recovery fails if any of them are still live at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) index_record_first: u64,
    pub(crate) index_first: u64,
    pub(crate) index_last: u64,
    pub(crate) location: Option<Location>,
}

/// What the WAL knows about one group: its bounds, its hard state and where each entry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupLog {
    pub(crate) hard_state: HardState,
    pub(crate) index_first: u64,
    pub(crate) index_last: u64,
    pub(crate) spans: VecDeque<Span>,
}

/// Why an operation on a group's log is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    Gap,
    Compacted,
}

impl Default for GroupLog {
    fn default() -> Self {
        GroupLog {
            hard_state: HardState::default(),
            index_first: 1,
            index_last: 0,
            spans: VecDeque::new(),
        }
    }
}

impl GroupLog {
    pub(crate) fn from_checkpoint(checkpoint: &GroupCheckpoint) -> Self {
        let mut log = GroupLog {
            hard_state: checkpoint.hard_state,
            index_first: checkpoint.index_first,
            index_last: checkpoint.index_last,
            spans: VecDeque::new(),
        };
        if checkpoint.index_last >= checkpoint.index_first {
            log.spans.push_back(Span {
                index_record_first: checkpoint.index_first,
                index_first: checkpoint.index_first,
                index_last: checkpoint.index_last,
                location: None,
            });
        }
        log
    }

    pub(crate) fn checkpoint(&self, group: GroupId) -> GroupCheckpoint {
        GroupCheckpoint {
            group,
            hard_state: self.hard_state,
            index_first: self.index_first,
            index_last: self.index_last,
        }
    }

    /// Adds entries `index_first..index_first + count`, dropping any entries from `index_first` on.
    pub(crate) fn append(
        &mut self,
        index_first: u64,
        count: u64,
        location: Option<Location>,
    ) -> Result<(), Violation> {
        assert!(count > 0);
        if index_first < self.index_first {
            return Err(Violation::Compacted);
        }
        if index_first > self.index_last + 1 {
            return Err(Violation::Gap);
        }
        self.cut_after(index_first - 1);
        let index_last = index_first + (count - 1);
        self.spans.push_back(Span {
            index_record_first: index_first,
            index_first,
            index_last,
            location,
        });
        self.index_last = index_last;
        self.check();
        Ok(())
    }

    /// Drops the entries after `index_last_kept`.
    pub(crate) fn truncate(&mut self, index_last_kept: u64) -> Result<(), Violation> {
        if index_last_kept < self.index_first - 1 {
            return Err(Violation::Compacted);
        }
        if index_last_kept < self.index_last {
            self.cut_after(index_last_kept);
            self.index_last = index_last_kept;
        }
        self.check();
        Ok(())
    }

    /// Drops the entries before `index_first_kept`; past the end of the log, the log becomes empty there.
    pub(crate) fn compact(&mut self, index_first_kept: u64) {
        if index_first_kept <= self.index_first {
            return;
        }
        while self
            .spans
            .front()
            .is_some_and(|span| span.index_last < index_first_kept)
        {
            self.spans.pop_front();
        }
        if let Some(front) = self.spans.front_mut() {
            front.index_first = front.index_first.max(index_first_kept);
        }
        self.index_first = index_first_kept;
        self.index_last = self.index_last.max(index_first_kept - 1);
        self.check();
    }

    fn cut_after(&mut self, index_last_kept: u64) {
        while self
            .spans
            .back()
            .is_some_and(|span| span.index_first > index_last_kept)
        {
            self.spans.pop_back();
        }
        if let Some(back) = self.spans.back_mut() {
            back.index_last = back.index_last.min(index_last_kept);
        }
    }

    /// The spans cover exactly `index_first..=index_last`, in order, with segments never going backwards.
    fn check(&self) {
        assert!(self.index_first >= 1);
        assert!(self.index_last + 1 >= self.index_first);
        if cfg!(debug_assertions) {
            let mut index_next = self.index_first;
            let mut segment_previous = 0;
            for span in &self.spans {
                assert_eq!(span.index_first, index_next);
                assert!(span.index_first <= span.index_last);
                assert!(span.index_record_first <= span.index_first);
                if let Some(location) = span.location {
                    assert!(location.segment >= segment_previous);
                    segment_previous = location.segment;
                }
                index_next = span.index_last + 1;
            }
            assert_eq!(index_next, self.index_last + 1);
        }
    }
}

/// An open segment file.
#[derive(Debug)]
pub(crate) struct Segment<F> {
    pub(crate) file: F,
    pub(crate) path: PathBuf,
    /// Bytes written to the file so far (the active segment may have more waiting in the write buffer).
    pub(crate) bytes_written: u64,
    /// The life id in the segment's header, carried by each of its records.
    pub(crate) life: u64,
}

/// The write-ahead log of one server: the entries and hard states of every Raft group on it, in one sequence of
/// segment files, so that one sync makes every group's writes durable (group commit).
///
/// # Methods, by kind
///
/// - Opening: [`Wal::open`] replays the segments (see its decision table) and is the only constructor.
/// - Getters: [`Wal::groups`], [`Wal::index_first`], [`Wal::index_last`], [`Wal::hard_state`],
///   [`Wal::entries`], [`Wal::term`], [`Wal::recovery_report`], [`Wal::segment_numbers`], [`Wal::is_poisoned`].
/// - Writes: [`Wal::append`], [`Wal::set_hard_state`], [`Wal::truncate`], [`Wal::compact`].
/// - Durability: [`Wal::sync`].
///
/// # When a write is durable
///
/// A write returns once its record is in memory (or in the file's page cache) and is visible to the getters at
/// once, but it is durable only when a later [`Wal::sync`] returns `Ok`. One sync covers every write of every
/// group made before it. If the machine crashes earlier, recovery returns the state after some prefix of the
/// writes: never fewer than those covered by the last successful sync, never a write out of order.
/// (Writes may become durable earlier, for example when a segment fills up and is synced before the next one
/// starts; callers must not count on it.)
///
/// "A prefix" assumes that a file's unsynced bytes reach the disk in the order they were written, as [`crate::MemFs`]
/// models. A real disk may persist a later unsynced page before an earlier one; recovery then finds damage
/// followed by valid records in the unsynced tail and reports [`Error::Corruption`] instead of guessing. That
/// stops the replica (safe, but it needs an operator); no synced write is lost either way.
///
/// # After a failure
///
/// If a write to a file or a sync fails, the WAL is poisoned: every later write and sync returns
/// [`Error::Poisoned`]. After a failed fsync the kernel may have dropped the unsynced bytes while a retried
/// fsync reports success, so the only safe course is to reopen and recover from what the disk really holds.
/// A reopening in the same boot reads those bytes from the page cache, which may differ from the disk, so
/// [`Wal::open`] writes back and syncs what it recovers of the last segment before returning it.
///
/// # Space
///
/// Every segment starts with a checkpoint record holding every group's hard state and log bounds, so a segment
/// holds nothing needed once every entry it holds is compacted or truncated away: hard states, truncations
/// and compactions in it are all restated by the next segment's checkpoint. After each sync, such segments are
/// dropped, oldest first (one directory sync after each, so that a crash never leaves a hole in the numbering).
///
/// # Segment recycling
///
/// A dropped segment is not deleted but renamed `recycle-<n>.wal` (then a directory sync), as long as fewer
/// than [`WalConfig::segments_recycled_max`] such free files exist; beyond that it is deleted. When the active
/// segment is full, the WAL
///
/// 1. appends a seal record to it, writes it and fdatasyncs it (every segment but the last ends with a seal, so
///    recovery knows where a segment ends even when stale bytes follow it);
/// 2. takes the oldest free file, if its header names a segment older than the new one (else deletes it),
///    renames it to the new segment's name and syncs the directory, BEFORE writing anything of the new segment
///    into it: a file holding records of segment `n` only ever has the name of segment `n`, so the stale bytes of
///    a free file are always of an older segment than any it is reused for;
/// 3. writes, from offset 0 and without truncating (truncating would free the blocks, and with them the gain),
///    a header that records the file's old length (its "recycled bytes") and the checkpoint, then the records.
///
/// With no free file it creates a new one, as before. Every segment life gets a random 64-bit life id (from
/// [`FileSystem::random_u64`], drawn when it starts, never the file's previous one) in its header, and every
/// record carries it under its checksum, so recovery never takes a stale record of an earlier life for a live
/// one, nor bytes of an old client payload crafted to look like records (they were written before the id was
/// drawn); what it does with the stale bytes is in the decision table of [`Wal::open`]. Recycled files are never replayed: at opening they
/// join the free files (the surplus is deleted).
#[derive(Debug)]
pub struct Wal<F: FileSystem> {
    pub(crate) fs: F,
    pub(crate) config: WalConfig,
    pub(crate) segments: BTreeMap<u64, Segment<F::File>>,
    pub(crate) segment_active: u64,
    /// Where the records of the active segment start, after its header and checkpoint.
    pub(crate) active_records_offset: u64,
    /// Bytes appended to the active segment but not yet written to its file.
    pub(crate) write_buffer: Vec<u8>,
    pub(crate) groups: BTreeMap<GroupId, GroupLog>,
    /// Whether the active segment's file was written since its last sync.
    pub(crate) active_unsynced: bool,
    /// Whether a segment file was created since the last directory sync.
    pub(crate) dir_unsynced: bool,
    pub(crate) poisoned: bool,
    pub(crate) recovery: crate::RecoveryReport,
    /// The sequence numbers of the free (recycled) files, oldest first.
    pub(crate) recycled: VecDeque<u64>,
    /// The sequence number of the next file to be recycled.
    pub(crate) recycled_next: u64,
    /// Segments started in a recycled file since the WAL was opened.
    pub(crate) segments_reused: u64,
}

impl<F: FileSystem> Wal<F> {
    /// The groups that have any record in the log, in order.
    pub fn groups(&self) -> Vec<GroupId> {
        self.groups.keys().copied().collect()
    }

    /// The first index in a group's log (1 for a group never compacted, or never seen).
    pub fn index_first(&self, group: GroupId) -> u64 {
        self.groups.get(&group).map_or(1, |log| log.index_first)
    }

    /// The last index in a group's log; `index_first - 1` when the log is empty.
    pub fn index_last(&self, group: GroupId) -> u64 {
        self.groups.get(&group).map_or(0, |log| log.index_last)
    }

    /// A group's latest hard state (all zeros for a group never seen).
    pub fn hard_state(&self, group: GroupId) -> HardState {
        self.groups
            .get(&group)
            .map_or_else(HardState::default, |log| log.hard_state)
    }

    /// What [`Wal::open`] found and repaired.
    pub fn recovery_report(&self) -> &crate::RecoveryReport {
        &self.recovery
    }

    /// The numbers of the segment files in use, oldest first.
    pub fn segment_numbers(&self) -> Vec<u64> {
        self.segments.keys().copied().collect()
    }

    /// How many free segment files (`recycle-<n>.wal`) are waiting to be reused.
    pub fn segments_recycled(&self) -> usize {
        self.recycled.len()
    }

    /// How many segments were started in a recycled file (instead of a new one) since the WAL was opened.
    pub fn segments_reused(&self) -> u64 {
        self.segments_reused
    }

    /// Whether an earlier failure poisoned the WAL (see [`Error::Poisoned`]): it must be reopened.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    fn check_writable(&self) -> Result<()> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Poisons the WAL if `result` is an error, so that nothing is written after a failure.
    fn poison_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Appends entries to a group's log. The entries must have consecutive indexes, the first one at most one
    /// past the group's last index and not before its first index. Entries already at those indexes and every
    /// entry after them are replaced: an append that starts inside the log truncates the conflicting suffix
    /// (the append record implies the truncation; no separate record is written).
    ///
    /// Durable after the next successful [`Wal::sync`].
    ///
    /// # Panics
    /// If an index reaches [`crate::INDEX_LIMIT`].
    ///
    /// # Errors
    /// [`Error::NotConsecutive`], [`Error::Gap`], [`Error::Compacted`], [`Error::RecordTooLarge`] (nothing is
    /// written); [`Error::Io`] or [`Error::Poisoned`] (the WAL is poisoned).
    pub fn append(&mut self, group: GroupId, entries: &[Entry]) -> Result<()> {
        self.check_writable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for pair in entries.windows(2) {
            if pair[0].index.checked_add(1) != Some(pair[1].index) {
                return Err(Error::NotConsecutive {
                    group,
                    index: pair[1].index,
                    index_previous: pair[0].index,
                });
            }
        }
        let index_last_new = entries[entries.len() - 1].index;
        assert!(
            index_last_new < record::INDEX_LIMIT,
            "entry index {index_last_new} is out of range"
        );
        let (index_first, index_last) = (self.index_first(group), self.index_last(group));
        if first.index < index_first {
            return Err(Error::Compacted {
                group,
                index: first.index,
                index_first,
            });
        }
        if first.index > index_last + 1 {
            return Err(Error::Gap {
                group,
                index: first.index,
                index_last,
            });
        }
        let location =
            self.write_encoded(|buffer, life| record::encode_append(group, entries, life, buffer))?;
        let log = self.groups.entry(group).or_default();
        log.append(first.index, entries.len() as u64, Some(location))
            .expect("checked before writing");
        Ok(())
    }

    /// Stores a group's hard state. Durable after the next successful [`Wal::sync`].
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Poisoned`].
    pub fn set_hard_state(&mut self, group: GroupId, hard_state: HardState) -> Result<()> {
        self.check_writable()?;
        self.write(&Record::HardState { group, hard_state })?;
        self.groups.entry(group).or_default().hard_state = hard_state;
        Ok(())
    }

    /// Removes a group's entries after `index_last_kept`, as after a conflict. Writes a truncate record (old
    /// segments are never rewritten); does nothing if the log already ends at or before that index.
    /// Durable after the next successful [`Wal::sync`].
    ///
    /// # Errors
    /// [`Error::Compacted`] if `index_last_kept` is before the compaction point; [`Error::Io`] or
    /// [`Error::Poisoned`].
    pub fn truncate(&mut self, group: GroupId, index_last_kept: u64) -> Result<()> {
        self.check_writable()?;
        let (index_first, index_last) = (self.index_first(group), self.index_last(group));
        if index_last_kept < index_first - 1 {
            return Err(Error::Compacted {
                group,
                index: index_last_kept,
                index_first,
            });
        }
        if index_last_kept >= index_last {
            return Ok(());
        }
        self.write(&Record::Truncate {
            group,
            index_last_kept,
        })?;
        let log = self
            .groups
            .get_mut(&group)
            .expect("a group with entries exists");
        log.truncate(index_last_kept)
            .expect("checked before writing");
        Ok(())
    }

    /// Removes a group's entries before `index_first_kept`, once a snapshot covers them. Compacting past the
    /// end of the log empties it, and the next append must then start at `index_first_kept`.
    /// Does nothing if the log already starts at or after that index.
    /// Durable after the next successful [`Wal::sync`]; the space comes back at a later sync (see [`Wal`]).
    ///
    /// # Panics
    /// If `index_first_kept` reaches [`crate::INDEX_LIMIT`].
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Poisoned`].
    pub fn compact(&mut self, group: GroupId, index_first_kept: u64) -> Result<()> {
        self.check_writable()?;
        assert!(
            index_first_kept < record::INDEX_LIMIT,
            "index {index_first_kept} is out of range"
        );
        if index_first_kept <= self.index_first(group) {
            return Ok(());
        }
        self.write(&Record::Compact {
            group,
            index_first_kept,
        })?;
        self.groups
            .entry(group)
            .or_default()
            .compact(index_first_kept);
        Ok(())
    }

    /// Makes every write made so far, for every group, durable: writes the buffered bytes, then issues one
    /// `fdatasync` for the active segment (and one for the directory if a segment was created since the last
    /// sync). Then deletes the segments that hold nothing live any more.
    ///
    /// # Errors
    /// [`Error::Io`] (the WAL is then poisoned) or [`Error::Poisoned`].
    pub fn sync(&mut self) -> Result<()> {
        self.check_writable()?;
        let result = self.sync_inner();
        self.poison_on_error(result)?;
        let result = self.collect_garbage();
        self.poison_on_error(result)
    }

    fn sync_inner(&mut self) -> Result<()> {
        self.flush()?;
        if self.active_unsynced {
            self.sync_active()?;
        }
        if self.dir_unsynced {
            let dir = &self.config.dir;
            self.fs
                .sync_dir(dir)
                .map_err(|error| Error::io("fsync directory", dir, error))?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// Recycles (or deletes, once enough files are free) the segments before the oldest one that holds a live
    /// entry, oldest first. Called only right after a sync, so that the records that made them dead are durable.
    fn collect_garbage(&mut self) -> Result<()> {
        let segment_live_oldest = self
            .groups
            .values()
            .filter_map(|log| log.spans.front())
            .map(|span| {
                span.location
                    .expect("live spans have a location after recovery")
                    .segment
            })
            .min()
            .unwrap_or(self.segment_active)
            .min(self.segment_active);
        while let Some((&number, _)) = self.segments.first_key_value() {
            if number >= segment_live_oldest {
                break;
            }
            let segment = self.segments.remove(&number).expect("just found");
            drop(segment.file);
            // The largest sequence number is never used, so that the next one never overflows (it can only be
            // reached through a hostile file name found at opening: recycling then stops).
            if self.recycled.len() < self.config.segments_recycled_max
                && self.recycled_next < u64::MAX
            {
                let to = recycled_path(&self.config.dir, self.recycled_next);
                self.fs
                    .rename(&segment.path, &to)
                    .map_err(|error| Error::io("recycle segment", &segment.path, error))?;
                self.recycled.push_back(self.recycled_next);
                self.recycled_next += 1;
            } else {
                self.fs
                    .remove(&segment.path)
                    .map_err(|error| Error::io("remove segment", &segment.path, error))?;
            }
            let dir = &self.config.dir;
            self.fs
                .sync_dir(dir)
                .map_err(|error| Error::io("fsync directory", dir, error))?;
        }
        Ok(())
    }

    /// Encodes and writes a record other than an append.
    fn write(&mut self, record: &Record<'_>) -> Result<Location> {
        self.write_encoded(|buffer, life| record::encode(record, life, buffer))
    }

    /// Encodes a record straight into the write buffer (no intermediate copy) and places it in the active
    /// segment, starting a new segment first if the record would overflow this one. `encode` appends the
    /// record of the given segment life and returns its length, or fails leaving the buffer unchanged.
    fn write_encoded(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>, u64) -> Result<u64>,
    ) -> Result<Location> {
        let start = self.write_buffer.len();
        let life = self.life_active();
        let length = encode(&mut self.write_buffer, life)?;
        assert_eq!(self.write_buffer.len() - start, length as usize);
        let offset = self.active_bytes() - length;
        let has_records = offset > self.active_records_offset;
        if has_records && offset + length > self.config.segment_size_bytes_max {
            // Rare: the record goes to the next segment, so it leaves the buffer while this one is closed.
            let mut record = self.write_buffer.split_off(start);
            let result = self.rotate();
            self.poison_on_error(result)?;
            record::set_life(&mut record, self.life_active());
            self.write_buffer.extend_from_slice(&record);
        }
        let location = Location {
            segment: self.segment_active,
            offset: self.active_bytes() - length,
            length,
        };
        if self.write_buffer.len() as u64 >= self.config.write_buffer_bytes_max {
            let result = self.flush();
            self.poison_on_error(result)?;
        }
        Ok(location)
    }

    /// The life id of the active segment.
    fn life_active(&self) -> u64 {
        self.segments[&self.segment_active].life
    }

    /// The size of the active segment, counting the bytes still in the write buffer.
    fn active_bytes(&self) -> u64 {
        self.segments[&self.segment_active].bytes_written + self.write_buffer.len() as u64
    }

    /// Writes the buffered bytes to the active segment's file.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.write_buffer.is_empty() {
            return Ok(());
        }
        let segment = self
            .segments
            .get_mut(&self.segment_active)
            .expect("the active segment is open");
        segment
            .file
            .write_at(segment.bytes_written, &self.write_buffer)
            .map_err(|error| Error::io("write", &segment.path, error))?;
        segment.bytes_written += self.write_buffer.len() as u64;
        self.write_buffer.clear();
        self.active_unsynced = true;
        Ok(())
    }

    /// Closes the active segment (sealed, written and synced, so that a later segment never survives a crash
    /// that an earlier one did not) and starts the next one with a header and a checkpoint.
    pub(crate) fn rotate(&mut self) -> Result<()> {
        self.seal_active()?;
        self.start_segment(self.segment_active + 1)
    }

    /// Appends a seal record to the active segment, writes and fdatasyncs it: the segment is complete.
    pub(crate) fn seal_active(&mut self) -> Result<()> {
        record::encode(&Record::Seal, self.life_active(), &mut self.write_buffer)?;
        self.flush()?;
        self.sync_active()
    }

    /// Fdatasyncs the active segment's file (its buffered bytes must have been written).
    pub(crate) fn sync_active(&mut self) -> Result<()> {
        assert!(self.write_buffer.is_empty());
        let segment = self
            .segments
            .get_mut(&self.segment_active)
            .expect("the active segment is open");
        segment
            .file
            .sync_data()
            .map_err(|error| Error::io("fdatasync", &segment.path, error))?;
        self.active_unsynced = false;
        Ok(())
    }

    /// Writes the bytes of the active segment that recovery kept (header and records, up to `bytes_written`)
    /// back in place, unchanged, so that the next sync makes them durable. Called by [`Wal::open`] on the last
    /// segment: after a failed fdatasync, Linux marks the dirty pages clean without writing them, so a process
    /// that reopens the WAL in the same boot reads bytes from the page cache that are not on the disk, and no
    /// later fdatasync writes them unless they are written again. Only the last segment can hold such pages (a
    /// failed sync poisons the WAL, and a rotation needs the seal of the segment before to be synced), so
    /// rewriting it makes whatever recovery returns durable. Costs a write of at most one segment per opening.
    pub(crate) fn write_back_active(&mut self) -> Result<()> {
        const CHUNK_BYTES: u64 = 4 * 1024 * 1024;
        assert!(self.write_buffer.is_empty());
        let segment = self
            .segments
            .get_mut(&self.segment_active)
            .expect("the active segment is open");
        let mut chunk = Vec::new();
        let mut offset = 0;
        while offset < segment.bytes_written {
            let length = (segment.bytes_written - offset).min(CHUNK_BYTES);
            chunk.resize(length as usize, 0);
            let read = segment
                .file
                .read_at(offset, &mut chunk)
                .map_err(|error| Error::io("read segment", &segment.path, error))?;
            if read < chunk.len() {
                return Err(Error::corruption(
                    &segment.path,
                    offset + read as u64,
                    "the file shrank during recovery",
                ));
            }
            segment
                .file
                .write_at(offset, &chunk)
                .map_err(|error| Error::io("write back", &segment.path, error))?;
            offset += length;
        }
        self.active_unsynced = true;
        Ok(())
    }

    /// Takes the oldest free file for segment `number`: renamed to the segment's name and the directory synced
    /// before anything of the segment is written into it. Returns the file, its length and the life id in its
    /// header, or `None` if no free file is left. A free file whose header does not name an older segment is deleted instead of reused
    /// (free files only ever come from sealed older segments, so this is a second line of defence).
    fn take_recycled(&mut self, number: u64, path: &Path) -> Result<Option<(F::File, u64, u64)>> {
        let dir = self.config.dir.clone();
        while let Some(sequence) = self.recycled.pop_front() {
            let from = recycled_path(&dir, sequence);
            let file = self
                .fs
                .open(&from)
                .map_err(|error| Error::io("open recycled segment", &from, error))?;
            let mut header = [0; SEGMENT_HEADER_BYTES as usize];
            let read = file
                .read_at(0, &mut header)
                .map_err(|error| Error::io("read recycled segment", &from, error))?;
            let older = (read == header.len())
                .then(|| SegmentHeader::decode(&header).ok())
                .flatten()
                .filter(|header| header.number < number);
            let Some(older) = older else {
                drop(file);
                self.fs
                    .remove(&from)
                    .map_err(|error| Error::io("remove recycled segment", &from, error))?;
                self.fs
                    .sync_dir(&dir)
                    .map_err(|error| Error::io("fsync directory", &dir, error))?;
                continue;
            };
            let length = file
                .len()
                .map_err(|error| Error::io("stat recycled segment", &from, error))?;
            self.fs
                .rename(&from, path)
                .map_err(|error| Error::io("reuse recycled segment", &from, error))?;
            self.fs
                .sync_dir(&dir)
                .map_err(|error| Error::io("fsync directory", &dir, error))?;
            self.segments_reused += 1;
            return Ok(Some((file, length, older.life)));
        }
        Ok(None)
    }

    /// Starts segment `number` in a recycled file if one is free, else in a new file, with its header and
    /// checkpoint (in the write buffer), and makes it active. Its life id is drawn at random now, after every
    /// byte the file already holds was written (never 0, never the file's previous life id).
    pub(crate) fn start_segment(&mut self, number: u64) -> Result<()> {
        assert!(self.write_buffer.is_empty());
        assert!(!self.segments.contains_key(&number));
        let path = segment_path(&self.config.dir, number);
        let (file, recycled_bytes, life_previous) = match self.take_recycled(number, &path)? {
            Some(recycled) => recycled,
            None => {
                let file = self
                    .fs
                    .create(&path)
                    .map_err(|error| Error::io("create segment", &path, error))?;
                self.dir_unsynced = true;
                (file, 0, 0)
            }
        };
        let life = loop {
            let life = self.fs.random_u64();
            if life != 0 && life != life_previous {
                break life;
            }
        };
        self.segments.insert(
            number,
            Segment {
                file,
                path,
                bytes_written: 0,
                life,
            },
        );
        self.segment_active = number;
        self.write_buffer.extend_from_slice(
            &SegmentHeader {
                number,
                recycled_bytes,
                life,
            }
            .encode(),
        );
        let groups = self
            .groups
            .iter()
            .map(|(group, log)| log.checkpoint(*group))
            .collect();
        record::encode(
            &Record::Checkpoint {
                segment: number,
                groups,
            },
            life,
            &mut self.write_buffer,
        )?;
        self.active_records_offset = self.write_buffer.len() as u64;
        Ok(())
    }

    /// A group's entries with indexes in `range`, oldest first, stopping before the payloads would exceed
    /// `bytes_max` in total (but always returning at least one entry if the range is not empty).
    /// Reads go to the files, one record at a time, so memory stays bounded by the result and one record.
    ///
    /// # Errors
    /// [`Error::Compacted`] or [`Error::Unavailable`] if the range is not inside the log; [`Error::Io`];
    /// [`Error::Corruption`] if a record read back is damaged.
    pub fn entries(&self, group: GroupId, range: Range<u64>, bytes_max: u64) -> Result<Vec<Entry>> {
        let (index_first, index_last) = (self.index_first(group), self.index_last(group));
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        if range.start < index_first {
            return Err(Error::Compacted {
                group,
                index: range.start,
                index_first,
            });
        }
        if range.end - 1 > index_last {
            return Err(Error::Unavailable {
                group,
                index: range.end - 1,
                index_last,
            });
        }
        let spans = &self.groups[&group].spans;
        let position = spans.partition_point(|span| span.index_last < range.start);
        let mut entries = Vec::new();
        let mut bytes_total = 0u64;
        for span in spans.range(position..) {
            if span.index_first >= range.end {
                break;
            }
            let location = span
                .location
                .expect("live spans have a location after recovery");
            let bytes = self.read_record(location)?;
            let append = self.decode_append(location, &bytes, span)?;
            let from = range.start.max(span.index_first);
            let to = (range.end - 1).min(span.index_last);
            for index in from..=to {
                let entry_ref = append[(index - span.index_record_first) as usize];
                bytes_total += entry_ref.payload.len() as u64;
                if bytes_total > bytes_max && !entries.is_empty() {
                    return Ok(entries);
                }
                entries.push(Entry {
                    index,
                    term: entry_ref.term,
                    payload: Bytes::copy_from_slice(entry_ref.payload),
                });
            }
        }
        Ok(entries)
    }

    /// The term of one entry.
    ///
    /// # Errors
    /// As [`Wal::entries`].
    pub fn term(&self, group: GroupId, index: u64) -> Result<u64> {
        let index_end = index.checked_add(1).ok_or(Error::Unavailable {
            group,
            index,
            index_last: self.index_last(group),
        })?;
        let entries = self.entries(group, index..index_end, 0)?;
        Ok(entries[0].term)
    }

    /// The bytes of one record, from the write buffer or the file.
    fn read_record(&self, location: Location) -> Result<Vec<u8>> {
        let segment = &self.segments[&location.segment];
        if location.segment == self.segment_active && location.offset >= segment.bytes_written {
            let start = (location.offset - segment.bytes_written) as usize;
            return Ok(self.write_buffer[start..start + location.length as usize].to_vec());
        }
        let mut bytes = vec![0; location.length as usize];
        let read = segment
            .file
            .read_at(location.offset, &mut bytes)
            .map_err(|error| Error::io("read", &segment.path, error))?;
        if read < bytes.len() {
            return Err(Error::corruption(
                &segment.path,
                location.offset,
                "the file ends inside a record",
            ));
        }
        Ok(bytes)
    }

    /// Decodes an append record read back for `span`, checking that it is the one the index expects.
    fn decode_append<'a>(
        &self,
        location: Location,
        bytes: &'a [u8],
        span: &Span,
    ) -> Result<Vec<record::EntryRef<'a>>> {
        let segment = &self.segments[&location.segment];
        let corrupt = |reason: String| Error::corruption(&segment.path, location.offset, reason);
        match record::decode(bytes, segment.life) {
            Ok((
                Record::Append {
                    index_first,
                    entries,
                    ..
                },
                _,
            )) if index_first == span.index_record_first
                && index_first + (entries.len() as u64 - 1) >= span.index_last =>
            {
                Ok(entries)
            }
            Ok(_) => Err(corrupt(
                "the record read back is not the expected append".to_owned(),
            )),
            Err(error) => Err(corrupt(format!("record read back: {error}"))),
        }
    }
}
