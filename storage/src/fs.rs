//! The file-system seam: a trait, the real implementation over `std::fs`, and an in-memory one that injects faults.
//!
//! Everything in this crate touches the disk only through [`FileSystem`] and [`File`], so that tests and the
//! deterministic simulator can run the same code over [`MemFs`], which loses unsynced bytes at a crash, tears the
//! last write, flips bits and fails writes or syncs on demand. Neither implementation uses threads or async I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A directory tree of files, as the storage crate needs it.
///
/// Paths are plain [`Path`]s; a directory holds files only (no nested directories are listed).
pub trait FileSystem {
    /// An open file.
    type File: File;

    /// Creates a directory and its parents if they do not exist.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Lists the names of the files in a directory, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new empty file for reading and writing; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Removes a file. The removal is durable only after [`FileSystem::sync_dir`].
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing any file at `to`. Durable only after [`FileSystem::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creations, removals and renames in a directory durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// A random number that whoever writes the data cannot predict: the WAL draws the "life id" of each segment
    /// from it (see [`crate::SegmentHeader`]). It comes through this seam so that the simulator stays
    /// deterministic: [`StdFs`] draws from the operating system, [`MemFs`] from its seeded generator.
    fn random_u64(&self) -> u64;
}

/// An open file, read and written at explicit offsets.
pub trait File {
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads up to `buffer.len()` bytes at `offset`, returning how many were read (fewer only at the end of file).
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, extending the file if needed.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Truncates or extends the file to `length` bytes.
    fn set_len(&mut self, length: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The real file system, through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

/// A file of [`StdFs`].
#[derive(Debug)]
pub struct StdFile(std::fs::File);

impl FileSystem for StdFs {
    type File = StdFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                // A name that is not UTF-8 was not written by this crate, so it is not listed.
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<StdFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(StdFile(file))
    }

    fn open(&self, path: &Path) -> io::Result<StdFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(StdFile(file))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Linux a directory is fsynced through a read-only handle to it.
        std::fs::File::open(dir)?.sync_all()
    }

    /// SipHash-1-3 of a constant under a fresh `RandomState`: std seeds its 128-bit keys from the operating
    /// system's random source (once per thread, then steps them for every new `RandomState`), so the values are
    /// distinct and unpredictable without the keys, with no new dependency. Life ids need to be unguessable by
    /// clients, not secret from someone who can read the disk (the header stores them).
    fn random_u64(&self) -> u64 {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
    }
}

impl File for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut filled = 0;
        while filled < buffer.len() {
            match self
                .0
                .read_at(&mut buffer[filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(count) => filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(filled)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(data, offset)
    }

    fn set_len(&mut self, length: u64) -> io::Result<()> {
        self.0.set_len(length)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// The operations of [`MemFs`] that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultOperation {
    /// [`File::read_at`].
    Read,
    /// [`File::write_at`] and [`File::set_len`].
    Write,
    /// [`File::sync_data`] and [`FileSystem::sync_dir`].
    Sync,
    /// [`FileSystem::create`], [`FileSystem::remove`] and [`FileSystem::rename`].
    Metadata,
}

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// `ENOSPC`: the disk is full.
    NoSpace,
    /// `EIO`: the device failed.
    Io,
}

impl FaultError {
    fn to_io_error(self) -> io::Error {
        match self {
            FaultError::NoSpace => io::Error::from_raw_os_error(28),
            FaultError::Io => io::Error::from_raw_os_error(5),
        }
    }
}

/// What a simulated crash does to the bytes that were written but not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Every unsynced byte is lost.
    LoseUnsynced,
    /// Each file keeps a prefix of its unsynced bytes, cut at a byte chosen from the seed: the last write is torn.
    /// The unsynced writes are taken to reach the disk in offset order (as the WAL writes them): before the cut
    /// the file holds its new bytes (except those a failed sync forgot: never written back), after it the bytes
    /// it held at its last sync, so an unsynced overwrite of synced bytes is kept up to the cut and lost after
    /// it, and synced bytes are never lost.
    Tear {
        /// Picks where each file is cut.
        seed: u64,
    },
    /// Like [`Crash::Tear`], but the lost unsynced bytes past the synced length read back as zeros instead of
    /// vanishing, as when a file system has extended the file before the data blocks reached the disk.
    TearZeroFill {
        /// Picks where each file is cut.
        seed: u64,
    },
    /// Every unsynced write reached the disk in the order it was made, and the crash tore the last one: it holds
    /// its new bytes up to a cut chosen from the seed and its earlier bytes after it (a write that extended the
    /// file leaves the file ending at the cut). Aims the tear at the WAL's tail, where [`Crash::Tear`] often
    /// cuts an earlier write and loses the last one whole. If the last write was followed by a sync or a
    /// `set_len` of its file, or no write was made since the last crash, every unsynced byte persists whole
    /// (except those a failed sync forgot, as always).
    TearLastWrite {
        /// Picks the cut.
        seed: u64,
    },
    /// Each unsynced 512-byte sector of each file persists or not, independently, chosen from the seed, as real
    /// disks allow (a sector is written whole or not at all, and sectors of one write reach the platter in any
    /// order); the file's length is either its length at the last sync or its current one (the size is metadata,
    /// written apart from the data). A sector that did not persist holds its durable bytes, zeros past the
    /// durable length. A later sector of the tail can persist while an earlier one did not: a hole followed by
    /// intact records, which recovery cannot tell from damage to synced records (see the WAL's recovery table).
    Sectors {
        /// Picks which sectors persist and which length the file keeps.
        seed: u64,
    },
}

/// The unit in which [`Crash::Sectors`] persists or loses unsynced bytes.
pub const SECTOR_BYTES: usize = 512;

/// An in-memory, deterministic, fault-injecting file system.
///
/// It models what a crash may do to a real disk: each file has its current bytes and its durable bytes (as of its
/// last successful sync), and the directory tree has its current names and its durable names (as of the last
/// directory sync). [`MemFs::crash`] throws away everything that was not durable, possibly keeping a torn part of
/// the unsynced tail. A failed sync behaves like Linux after `EIO`: the dirty pages are marked clean, so a later
/// sync reports success although they never reached the disk, and no later sync writes them (the bytes a read
/// returns then differ from the disk's until they are written again, or until a crash). That is why the WAL
/// refuses to continue after a failed sync, and why [`crate::Wal::open`] writes back what it recovers.
/// [`FileSystem::random_u64`] comes from a generator seeded by [`MemFs::with_seed`] (a fixed seed for
/// [`MemFs::new`]), so runs are reproducible.
///
/// Clones share the same disk, so a test can keep a handle while the WAL owns another.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    state: Arc<Mutex<MemState>>,
}

#[derive(Debug, Clone, Default)]
struct MemState {
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    names_durable: BTreeMap<PathBuf, u64>,
    dirs: Vec<PathBuf>,
    inode_next: u64,
    faults: Vec<Fault>,
    operation_counts: BTreeMap<FaultOperation, u64>,
    /// Every operation attempted on the disk or its files (of any kind, failed ones included), numbered from 0.
    operations: u64,
    /// What happens at a given operation number: a fault, or a crash (see [`MemFs::fail_at`], [`MemFs::crash_at`]).
    scheduled: BTreeMap<u64, Scheduled>,
    /// Set when a crash of [`MemFs::crash_at`] happened: every operation fails until [`MemFs::power_on`].
    powered_off: bool,
    /// The last write since the last crash, with what it replaced, for [`Crash::TearLastWrite`].
    last_write: Option<LastWrite>,
    /// The state of the generator of [`FileSystem::random_u64`]; 0 until first used.
    random: u64,
}

/// The seed of [`MemFs::new`]'s generator.
const RANDOM_SEED_DEFAULT: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    data_durable: Vec<u8>,
    /// The smallest offset changed since the last sync, if any: bytes before it equal the durable bytes.
    dirty_from: Option<u64>,
    /// Byte ranges whose writeback a failed sync dropped: they are no longer dirty, so no later sync writes them
    /// (the durable bytes there stay as they were, zeros past the durable length) until they are written again.
    forgotten: Vec<Range<usize>>,
}

/// An event at one operation number.
#[derive(Debug, Clone, Copy)]
enum Scheduled {
    Fault(FaultError),
    Crash(Crash),
}

/// A write and what its range held before it.
#[derive(Debug, Clone)]
struct LastWrite {
    inode: u64,
    offset: usize,
    end: usize,
    /// The file's length before the write.
    length_before: usize,
    /// The bytes the write replaced (those of `offset..end` below `length_before`).
    replaced: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    operation: FaultOperation,
    countdown: u64,
    error: FaultError,
}

/// A file of [`MemFs`].
#[derive(Debug)]
pub struct MemFile {
    state: Arc<Mutex<MemState>>,
    inode: u64,
}

impl MemFs {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty disk whose [`FileSystem::random_u64`] generator starts from `seed` (for example one per
    /// simulated server, from the simulation's seed).
    pub fn with_seed(seed: u64) -> Self {
        let fs = Self::default();
        fs.lock().random = if seed == 0 { RANDOM_SEED_DEFAULT } else { seed };
        fs
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        lock(&self.state)
    }

    /// Makes the `nth` next operation of kind `operation` (counting from 0) fail with `error`.
    pub fn fail_nth(&self, operation: FaultOperation, nth: u64, error: FaultError) {
        self.lock().faults.push(Fault {
            operation,
            countdown: nth,
            error,
        });
    }

    /// Removes every pending injected fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// How many operations of a kind have been attempted so far.
    pub fn operation_count(&self, operation: FaultOperation) -> u64 {
        self.lock()
            .operation_counts
            .get(&operation)
            .copied()
            .unwrap_or(0)
    }

    /// How many operations have been attempted on the disk and its files so far, of every kind (listing, opening,
    /// reading, writing, syncing, creating, renaming, removing, asking a length), failed ones included. The next
    /// operation has this number: [`MemFs::fail_at`] and [`MemFs::crash_at`] take it.
    pub fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// Makes the operation numbered `operation` (see [`MemFs::operations`]) fail with `error`, whatever its kind.
    pub fn fail_at(&self, operation: u64, error: FaultError) {
        self.lock()
            .scheduled
            .insert(operation, Scheduled::Fault(error));
    }

    /// Cuts the power at the operation numbered `operation`: the disk crashes as [`MemFs::crash`] does, before that
    /// operation takes effect, and that operation and every later one fail with `EIO` until [`MemFs::power_on`]
    /// (the process died with the machine). [`MemFs::crashed`] tells whether it happened.
    pub fn crash_at(&self, operation: u64, crash: Crash) {
        self.lock()
            .scheduled
            .insert(operation, Scheduled::Crash(crash));
    }

    /// Whether a crash of [`MemFs::crash_at`] happened and the power is still off.
    pub fn crashed(&self) -> bool {
        self.lock().powered_off
    }

    /// Turns the power back on after a crash of [`MemFs::crash_at`]: operations work again, on what the crash
    /// left. Open files keep pointing to the old contents; drop them and reopen.
    pub fn power_on(&self) {
        self.lock().powered_off = false;
    }

    /// A copy of the whole disk (names, current and durable bytes, pending faults, counters, the power) that shares
    /// nothing with this one, unlike [`Clone`]: a sweep can crash the copy one way and another copy another way, or
    /// go on from the same image many times.
    pub fn copy_disk(&self) -> MemFs {
        let state = self.lock().clone();
        MemFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Simulates a power failure: only durable names and bytes survive, shaped by `crash`. Pending faults (of
    /// [`MemFs::fail_nth`] and [`MemFs::fail_at`]) are cleared.
    /// Open files keep pointing to the old contents; drop them and reopen.
    pub fn crash(&self, crash: Crash) {
        self.lock().crash(crash);
    }

    /// Flips one bit of a file, in both its current and durable bytes, as bit rot would.
    ///
    /// # Panics
    /// If the file does not exist or the offset is past its end: this is a test helper.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) {
        let mut state = self.lock();
        let inode = state.names[path];
        let inode = state.inodes.get_mut(&inode).expect("a named inode exists");
        let offset = usize::try_from(offset).expect("offset fits in memory");
        inode.data[offset] ^= 1 << (bit % 8);
        if offset < inode.data_durable.len() {
            inode.data_durable[offset] ^= 1 << (bit % 8);
        }
    }

    /// The current bytes of a file, if it exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = state.names.get(path)?;
        Some(state.inodes[inode].data.clone())
    }

    /// Creates or replaces a file with the given bytes, durably (name and contents).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.lock();
        if let Some(parent) = path.parent() {
            state.add_dir(parent);
        }
        let inode_id = state.new_inode();
        let inode = state.inodes.get_mut(&inode_id).expect("just created");
        inode.data = bytes.to_vec();
        inode.data_durable = bytes.to_vec();
        state.names.insert(path.to_path_buf(), inode_id);
        state.names_durable.insert(path.to_path_buf(), inode_id);
    }

    /// The total size of the files directly in `dir`, in bytes.
    pub fn dir_bytes(&self, dir: &Path) -> u64 {
        let state = self.lock();
        state
            .names
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(_, inode)| state.inodes[inode].data.len() as u64)
            .sum()
    }
}

fn lock(state: &Mutex<MemState>) -> MutexGuard<'_, MemState> {
    // A panic while holding the lock can only come from a test assertion; the state is still usable.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// SplitMix64's finalizer: spreads the bits of a small seed over the whole word.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic generator (xorshift64), so that crashes are reproducible from a seed.
fn next_random(random: &mut u64) -> u64 {
    *random ^= *random << 13;
    *random ^= *random >> 7;
    *random ^= *random << 17;
    *random
}

impl Inode {
    /// The file after a torn crash: the unsynced writes reached the disk in offset order up to a cut chosen at
    /// random between the first unsynced byte and the current end. Before the cut the current bytes (but the
    /// durable ones in the ranges a failed sync forgot, which are never written back), after it the durable ones (an overwrite of synced bytes that did not make it leaves them as they were); the file
    /// is as long as the longer of the two, padded with zeros up to the current length if `zero_fill`.
    fn torn(&self, random: &mut u64, zero_fill: bool) -> Vec<u8> {
        let Some(dirty_from) = self.dirty_from else {
            return self.data_durable.clone();
        };
        let start = usize::try_from(dirty_from)
            .unwrap_or(usize::MAX)
            .min(self.data_durable.len())
            .min(self.data.len());
        let cut = start + (next_random(random) % (self.data.len() - start + 1) as u64) as usize;
        let mut bytes = self.written_back()[..cut].to_vec();
        if let Some(rest) = self.data_durable.get(cut..) {
            bytes.extend_from_slice(rest);
        }
        if zero_fill && bytes.len() < self.data.len() {
            bytes.resize(self.data.len(), 0);
        }
        bytes
    }

    /// The file after a [`Crash::TearLastWrite`] that tears `write`, its last write: every other unsynced byte
    /// persists (but those a failed sync forgot); the write keeps its new bytes up to a cut chosen at random within
    /// it and its replaced bytes after the cut, and a write that extended the file leaves it ending at the cut.
    fn torn_at(&self, write: &LastWrite, random: &mut u64) -> Vec<u8> {
        let mut bytes = self.written_back().into_owned();
        let cut =
            write.offset + (next_random(random) % (write.end - write.offset + 1) as u64) as usize;
        let replaced_end = write.end.min(write.length_before);
        if cut < replaced_end {
            bytes[cut..replaced_end].copy_from_slice(&write.replaced[cut - write.offset..]);
        }
        if write.end > write.length_before {
            bytes.truncate(cut.max(write.length_before));
        }
        bytes
    }

    /// The file after a [`Crash::Sectors`]: its length is the durable or the current one (a coin), and each
    /// sector from the first unsynced byte on, below the current length, holds its written-back bytes or its
    /// durable ones (a coin per sector, zeros past the durable length).
    fn sectors(&self, random: &mut u64) -> Vec<u8> {
        let Some(dirty_from) = self.dirty_from else {
            return self.data_durable.clone();
        };
        let written_back = self.written_back();
        let length = if next_random(random) & 1 == 0 {
            self.data_durable.len()
        } else {
            written_back.len()
        };
        let first_sector = usize::try_from(dirty_from).unwrap_or(usize::MAX) / SECTOR_BYTES;
        let mut bytes = vec![0; length];
        let durable_part = self.data_durable.len().min(length);
        bytes[..durable_part].copy_from_slice(&self.data_durable[..durable_part]);
        // Past the current length the file was cut: nothing new to persist there.
        let new_end = length.min(written_back.len());
        let mut sector_start = first_sector.saturating_mul(SECTOR_BYTES);
        while sector_start < new_end {
            let sector_end = (sector_start + SECTOR_BYTES).min(new_end);
            if next_random(random) & 1 == 1 {
                for (offset, byte) in bytes[sector_start..sector_end].iter_mut().enumerate() {
                    *byte = written_back
                        .get(sector_start + offset)
                        .copied()
                        .unwrap_or(0);
                }
            }
            sector_start = sector_end;
        }
        bytes
    }

    /// The bytes a writeback of the whole file would leave on the disk: the current bytes, except in the ranges a
    /// failed sync forgot, which keep their durable bytes (zeros past the durable length).
    fn written_back(&self) -> Cow<'_, [u8]> {
        if self.forgotten.is_empty() {
            return Cow::Borrowed(&self.data);
        }
        let mut bytes = self.data.clone();
        for range in &self.forgotten {
            let range = range.start.min(bytes.len())..range.end.min(bytes.len());
            for offset in range {
                bytes[offset] = self.data_durable.get(offset).copied().unwrap_or(0);
            }
        }
        Cow::Owned(bytes)
    }

    /// After a failed sync: the dirty bytes are marked clean without reaching the disk.
    fn forget_dirty(&mut self) {
        if let Some(dirty_from) = self.dirty_from.take() {
            let start = usize::try_from(dirty_from).unwrap_or(usize::MAX);
            if start < self.data.len() {
                self.forgotten.push(start..self.data.len());
            }
        }
    }

    /// Bytes written again are dirty again: no longer forgotten.
    fn remember(&mut self, written: Range<usize>) {
        if self.forgotten.is_empty() {
            return;
        }
        let mut kept = Vec::new();
        for range in self.forgotten.drain(..) {
            if range.start < written.start {
                kept.push(range.start..range.end.min(written.start));
            }
            if range.end > written.end {
                kept.push(range.start.max(written.end)..range.end);
            }
        }
        self.forgotten = kept;
    }

    fn mark_dirty(&mut self, offset: u64) {
        self.dirty_from = Some(
            self.dirty_from
                .map_or(offset, |dirty_from| dirty_from.min(offset)),
        );
    }
}

impl MemState {
    fn crash(&mut self, crash: Crash) {
        self.names = self.names_durable.clone();
        self.faults.clear();
        self.scheduled.clear();
        let mut random = match crash {
            Crash::LoseUnsynced => 0,
            Crash::Tear { seed } | Crash::TearZeroFill { seed } => seed | 1,
            // The first draws of xorshift from a small seed are poor coins; these modes draw many.
            Crash::TearLastWrite { seed } | Crash::Sectors { seed } => mix(seed) | 1,
        };
        let live: Vec<u64> = self.names.values().copied().collect();
        self.inodes.retain(|inode, _| live.contains(inode));
        let last_write = self.last_write.take();
        for (id, inode) in self.inodes.iter_mut() {
            inode.data = match crash {
                Crash::LoseUnsynced => inode.data_durable.clone(),
                Crash::Tear { .. } => inode.torn(&mut random, false),
                Crash::TearZeroFill { .. } => inode.torn(&mut random, true),
                Crash::TearLastWrite { .. } => match &last_write {
                    Some(write) if write.inode == *id => inode.torn_at(write, &mut random),
                    _ => inode.written_back().into_owned(),
                },
                Crash::Sectors { .. } => inode.sectors(&mut random),
            };
            inode.data_durable = inode.data.clone();
            inode.dirty_from = None;
            inode.forgotten.clear();
        }
    }

    /// Counts an operation and applies what is scheduled at its number; then, for the operations of a fault kind,
    /// the faults of [`MemFs::fail_nth`].
    fn begin(&mut self, kind: Option<FaultOperation>) -> io::Result<()> {
        if self.powered_off {
            return Err(FaultError::Io.to_io_error());
        }
        let number = self.operations;
        self.operations += 1;
        match self.scheduled.remove(&number) {
            Some(Scheduled::Crash(crash)) => {
                self.crash(crash);
                self.powered_off = true;
                return Err(FaultError::Io.to_io_error());
            }
            Some(Scheduled::Fault(error)) => {
                if let Some(kind) = kind {
                    *self.operation_counts.entry(kind).or_default() += 1;
                }
                return Err(error.to_io_error());
            }
            None => {}
        }
        match kind {
            Some(kind) => self.check_fault(kind),
            None => Ok(()),
        }
    }

    fn check_fault(&mut self, operation: FaultOperation) -> io::Result<()> {
        *self.operation_counts.entry(operation).or_default() += 1;
        let mut fired = None;
        for (position, fault) in self.faults.iter_mut().enumerate() {
            if fault.operation != operation {
                continue;
            }
            if fault.countdown == 0 {
                fired = Some(position);
                break;
            }
            fault.countdown -= 1;
        }
        match fired {
            Some(position) => Err(self.faults.remove(position).error.to_io_error()),
            None => Ok(()),
        }
    }

    /// The last write is no longer the one a [`Crash::TearLastWrite`] tears once its file was synced or resized.
    fn forget_last_write(&mut self, inode: u64) {
        if self
            .last_write
            .as_ref()
            .is_some_and(|write| write.inode == inode)
        {
            self.last_write = None;
        }
    }

    fn new_inode(&mut self) -> u64 {
        self.inode_next += 1;
        self.inodes.insert(self.inode_next, Inode::default());
        self.inode_next
    }

    fn add_dir(&mut self, dir: &Path) {
        if !self.dirs.iter().any(|known| known == dir) {
            self.dirs.push(dir.to_path_buf());
        }
    }

    fn check_dir(&self, dir: &Path) -> io::Result<()> {
        if self.dirs.iter().any(|known| known == dir) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", dir.display()),
            ))
        }
    }

    fn inode(&mut self, inode: u64) -> &mut Inode {
        // A removed file stays readable through its open handles, as on Unix, until the next crash.
        self.inodes.entry(inode).or_default()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no file {}", path.display()),
    )
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

impl FileSystem for MemFs {
    type File = MemFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories are durable at once: the crate creates its directories only when a server is installed.
        let mut state = self.lock();
        state.begin(None)?;
        state.add_dir(dir);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut state = self.lock();
        state.begin(None)?;
        state.check_dir(dir)?;
        let names = state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect();
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<MemFile> {
        let mut state = self.lock();
        state.begin(Some(FaultOperation::Metadata))?;
        state.check_dir(parent(path))?;
        if state.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let inode = state.new_inode();
        state.names.insert(path.to_path_buf(), inode);
        Ok(MemFile {
            state: Arc::clone(&self.state),
            inode,
        })
    }

    fn open(&self, path: &Path) -> io::Result<MemFile> {
        let mut state = self.lock();
        state.begin(None)?;
        let inode = *state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(MemFile {
            state: Arc::clone(&self.state),
            inode,
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin(Some(FaultOperation::Metadata))?;
        state.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin(Some(FaultOperation::Metadata))?;
        state.check_dir(parent(to))?;
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin(Some(FaultOperation::Sync))?;
        state.check_dir(dir)?;
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        state.names_durable.retain(|path, _| !in_dir(path));
        let current: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, inode)| (path.clone(), *inode))
            .collect();
        state.names_durable.extend(current);
        Ok(())
    }

    fn random_u64(&self) -> u64 {
        let mut state = self.lock();
        if state.random == 0 {
            state.random = RANDOM_SEED_DEFAULT;
        }
        next_random(&mut state.random)
    }
}

impl File for MemFile {
    fn len(&self) -> io::Result<u64> {
        let mut state = lock(&self.state);
        state.begin(None)?;
        Ok(state.inode(self.inode).data.len() as u64)
    }

    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        let mut state = lock(&self.state);
        state.begin(Some(FaultOperation::Read))?;
        let data = &state.inode(self.inode).data;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let count = buffer.len().min(data.len() - start);
        buffer[..count].copy_from_slice(&data[start..start + count]);
        Ok(count)
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.begin(Some(FaultOperation::Write))?;
        let start = usize::try_from(offset).map_err(|_| io::Error::from_raw_os_error(27))?;
        let end = start
            .checked_add(bytes.len())
            .ok_or_else(|| io::Error::from_raw_os_error(27))?;
        let inode_id = self.inode;
        let inode = state.inode(inode_id);
        let length_before = inode.data.len();
        let replaced = inode.data[start.min(length_before)..end.min(length_before)].to_vec();
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        inode.data[start..end].copy_from_slice(bytes);
        inode.mark_dirty(offset);
        inode.remember(start..end);
        state.last_write = Some(LastWrite {
            inode: inode_id,
            offset: start,
            end,
            length_before,
            replaced,
        });
        Ok(())
    }

    fn set_len(&mut self, length: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.begin(Some(FaultOperation::Write))?;
        let length_bytes = usize::try_from(length).map_err(|_| io::Error::from_raw_os_error(27))?;
        let inode = state.inode(self.inode);
        let length_before = inode.data.len() as u64;
        inode.data.resize(length_bytes, 0);
        inode.mark_dirty(length.min(length_before));
        // Bytes cut off are gone, and those the extension adds are new (dirty), so nothing past the cut stays
        // forgotten.
        let cut = length_bytes.min(length_before as usize);
        inode.remember(cut..usize::MAX);
        state.forget_last_write(self.inode);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = lock(&self.state);
        let result = state.begin(Some(FaultOperation::Sync));
        if state.powered_off {
            return result;
        }
        if result.is_ok() {
            state.forget_last_write(self.inode);
        }
        let inode = state.inode(self.inode);
        match result {
            Ok(()) => {
                if let Some(dirty_from) = inode.dirty_from.take() {
                    let start = usize::try_from(dirty_from)
                        .unwrap_or(usize::MAX)
                        .min(inode.data_durable.len())
                        .min(inode.data.len());
                    if inode.forgotten.is_empty() {
                        inode.data_durable.truncate(start);
                        inode.data_durable.extend_from_slice(&inode.data[start..]);
                    } else {
                        let written_back = inode.written_back().into_owned();
                        inode.data_durable.truncate(start);
                        inode.data_durable.extend_from_slice(&written_back[start..]);
                    }
                }
                Ok(())
            }
            Err(error) => {
                // Linux marks the dirty pages clean after a failed writeback: the next fsync reports success
                // although the bytes never reached the disk, and no later fsync writes them.
                inode.forget_dirty();
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn write(fs: &MemFs, path: &Path, bytes: &[u8]) -> MemFile {
        let mut file = fs.create(path).unwrap();
        file.write_at(0, bytes).unwrap();
        file
    }

    #[test]
    fn a_crash_keeps_only_synced_bytes_and_synced_names() {
        let fs = MemFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut synced = write(&fs, Path::new("/d/a"), b"durable");
        synced.sync_data().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        synced.write_at(7, b" lost").unwrap();
        write(&fs, Path::new("/d/b"), b"never named durably")
            .sync_data()
            .unwrap();
        fs.crash(Crash::LoseUnsynced);
        assert_eq!(fs.read_file(Path::new("/d/a")).unwrap(), b"durable");
        assert_eq!(fs.read_file(Path::new("/d/b")), None);
        assert_eq!(fs.list(Path::new("/d")).unwrap(), vec!["a".to_owned()]);
    }

    #[test]
    fn a_torn_crash_keeps_a_prefix_of_the_unsynced_tail() {
        let mut lengths = BTreeSet::new();
        for seed in 0..50 {
            let fs = MemFs::new();
            fs.write_file(Path::new("/d/a"), b"0123");
            let mut file = fs.open(Path::new("/d/a")).unwrap();
            file.write_at(4, b"456789").unwrap();
            fs.crash(Crash::Tear { seed });
            let bytes = fs.read_file(Path::new("/d/a")).unwrap();
            assert!(
                b"0123456789".starts_with(&bytes) && bytes.len() >= 4,
                "{bytes:?}"
            );
            lengths.insert(bytes.len());
            let fs_zero = MemFs::new();
            fs_zero.write_file(Path::new("/d/a"), b"0123");
            fs_zero
                .open(Path::new("/d/a"))
                .unwrap()
                .write_at(4, b"456789")
                .unwrap();
            fs_zero.crash(Crash::TearZeroFill { seed });
            let bytes = fs_zero.read_file(Path::new("/d/a")).unwrap();
            assert_eq!(bytes.len(), 10);
            let kept = bytes[4..].iter().take_while(|&&byte| byte != 0).count();
            assert_eq!(&bytes[..4 + kept], &b"0123456789"[..4 + kept]);
            assert!(bytes[4 + kept..].iter().all(|&byte| byte == 0));
        }
        // The seed picks the cut: 50 seeds reach most of the 7 possible lengths.
        assert!(lengths.len() >= 5, "{lengths:?}");
    }

    #[test]
    fn a_torn_crash_keeps_synced_bytes_and_a_prefix_of_an_unsynced_overwrite() {
        for seed in 0..50 {
            for zero_fill in [false, true] {
                let fs = MemFs::new();
                fs.write_file(Path::new("/d/a"), b"abcdefgh");
                let mut file = fs.open(Path::new("/d/a")).unwrap();
                file.write_at(0, b"ABCD").unwrap();
                file.sync_data().unwrap();
                file.write_at(2, b"xyzwvu-tail").unwrap();
                let crash = if zero_fill {
                    Crash::TearZeroFill { seed }
                } else {
                    Crash::Tear { seed }
                };
                fs.crash(crash);
                let bytes = fs.read_file(Path::new("/d/a")).unwrap();
                let new = b"ABxyzwvu-tail";
                let old = b"ABCDefgh";
                // Some cut: the new bytes before it, the synced ones after it, zeros past the synced length.
                let matches_a_cut = (2..=new.len()).any(|cut| {
                    let mut expected = new[..cut].to_vec();
                    expected.extend_from_slice(old.get(cut..).unwrap_or(&[]));
                    if zero_fill {
                        expected.resize(new.len(), 0);
                    }
                    expected == bytes
                });
                assert!(matches_a_cut, "{:?}", String::from_utf8_lossy(&bytes));
            }
        }
    }

    #[test]
    fn a_failed_sync_forgets_the_dirty_bytes_like_linux() {
        let fs = MemFs::new();
        fs.write_file(Path::new("/d/a"), b"old");
        let mut file = fs.open(Path::new("/d/a")).unwrap();
        file.write_at(3, b" new").unwrap();
        fs.fail_nth(FaultOperation::Sync, 0, FaultError::Io);
        assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(5));
        // The retry reports success, yet the bytes never became durable.
        file.sync_data().unwrap();
        fs.crash(Crash::LoseUnsynced);
        assert_eq!(fs.read_file(Path::new("/d/a")).unwrap(), b"old");
    }

    /// Regression (adversarial review, finding 4): after a failed fsync, MemFs used to write the forgotten bytes
    /// at the next successful sync of the file, which Linux does not do: the failed writeback marked the pages
    /// clean, so a page lost by it never reaches the disk unless it is written again.
    #[test]
    fn memfs_does_not_resurrect_bytes_forgotten_by_a_failed_sync() {
        let fs = MemFs::new();
        let path = Path::new("/d/a");
        fs.write_file(path, &[b'o'; 4096]);
        let mut file = fs.open(path).unwrap();
        // Page 1: lost by the failed writeback.
        file.write_at(4096, &[b'A'; 4096]).unwrap();
        fs.fail_nth(FaultOperation::Sync, 0, FaultError::Io);
        assert!(file.sync_data().is_err());
        // Page 2: written and synced successfully afterwards.
        file.write_at(8192, &[b'B'; 4096]).unwrap();
        file.sync_data().unwrap();
        // The cache still returns page 1 as written.
        assert_eq!(&fs.read_file(path).unwrap()[4096..8192], &[b'A'; 4096][..]);
        fs.crash(Crash::LoseUnsynced);
        let bytes = fs.read_file(path).unwrap();
        assert_eq!(&bytes[..4096], &[b'o'; 4096][..]);
        assert_eq!(
            &bytes[4096..8192],
            &[0; 4096][..],
            "page 1 was never written back after the failed fsync"
        );
        assert_eq!(&bytes[8192..], &[b'B'; 4096][..]);
    }

    #[test]
    fn bytes_forgotten_by_a_failed_sync_are_durable_once_written_again() {
        for torn in [false, true] {
            let fs = MemFs::new();
            let path = Path::new("/d/a");
            fs.write_file(path, b"0123");
            let mut file = fs.open(path).unwrap();
            file.write_at(4, b"456789").unwrap();
            fs.fail_nth(FaultOperation::Sync, 0, FaultError::Io);
            assert!(file.sync_data().is_err());
            // Write part of the forgotten range again (as the WAL does at opening) and sync.
            file.write_at(4, b"45").unwrap();
            file.sync_data().unwrap();
            fs.crash(if torn {
                Crash::Tear { seed: 7 }
            } else {
                Crash::LoseUnsynced
            });
            assert_eq!(fs.read_file(path).unwrap(), b"012345\0\0\0\0");
        }
    }

    /// What the recovery code relies on, checked on the real file system and on `MemFs` alike:
    /// names listed in order, `create` refusing an existing name, reads that stop at the end
    /// of the file (also from an offset), writes past the end, truncation, rename, removal,
    /// and life ids that differ from one call to the next.
    #[test]
    fn both_file_systems_keep_the_contract_the_wal_relies_on() {
        fn check(fs: &impl FileSystem, dir: &Path) {
            fs.create_dir_all(&dir.join("nested")).unwrap();
            fs.create_dir_all(dir).unwrap();
            for name in ["b", "a"] {
                fs.create(&dir.join(name)).unwrap();
            }
            assert_eq!(fs.list(dir).unwrap(), ["a", "b"]);
            assert!(
                fs.create(&dir.join("a")).is_err(),
                "create refuses an existing name"
            );
            assert_eq!(
                fs.open(&dir.join("missing"))
                    .err()
                    .map(|error| error.kind()),
                Some(io::ErrorKind::NotFound)
            );

            let mut file = fs.open(&dir.join("a")).unwrap();
            file.write_at(0, b"hello").unwrap();
            file.write_at(10, b"x").unwrap();
            assert_eq!(file.len().unwrap(), 11);
            let mut buffer = [7u8; 20];
            assert_eq!(file.read_at(0, &mut buffer).unwrap(), 11);
            assert_eq!(&buffer[..11], b"hello\0\0\0\0\0x");
            assert_eq!(file.read_at(3, &mut buffer).unwrap(), 8);
            assert_eq!(&buffer[..8], b"lo\0\0\0\0\0x");
            assert_eq!(file.read_at(11, &mut buffer).unwrap(), 0);
            file.set_len(4).unwrap();
            assert_eq!(file.len().unwrap(), 4);
            file.sync_data().unwrap();
            drop(file);

            fs.rename(&dir.join("a"), &dir.join("c")).unwrap();
            fs.remove(&dir.join("b")).unwrap();
            fs.sync_dir(dir).unwrap();
            assert_eq!(fs.list(dir).unwrap(), ["c"]);
            assert!(fs.remove(&dir.join("b")).is_err(), "b is gone");
            let mut buffer = [0u8; 8];
            let file = fs.open(&dir.join("c")).unwrap();
            assert_eq!(file.read_at(0, &mut buffer).unwrap(), 4);
            assert_eq!(&buffer[..4], b"hell");
            assert_ne!(fs.random_u64(), fs.random_u64());
        }
        check(&MemFs::new(), Path::new("/contract"));
        let dir = std::env::temp_dir().join(format!("storage-contract-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        check(&StdFs, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `is_empty` is the file's length compared with zero, on either file system.
    #[test]
    fn a_file_is_empty_until_a_byte_is_written() {
        fn check(fs: &impl FileSystem, dir: &Path) {
            fs.create_dir_all(dir).unwrap();
            let mut file = fs.create(&dir.join("f")).unwrap();
            assert!(file.is_empty().unwrap());
            file.write_at(0, b"x").unwrap();
            assert!(!file.is_empty().unwrap());
            file.set_len(0).unwrap();
            assert!(file.is_empty().unwrap());
        }
        check(&MemFs::new(), Path::new("/d"));
        let dir = std::env::temp_dir().join(format!("storage-is-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        check(&StdFs, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_random_numbers_follow_the_seed() {
        let draw = |fs: &MemFs| (0..3).map(|_| fs.random_u64()).collect::<Vec<_>>();
        assert_eq!(draw(&MemFs::new()), draw(&MemFs::new()));
        assert_eq!(draw(&MemFs::with_seed(5)), draw(&MemFs::with_seed(5)));
        assert_ne!(draw(&MemFs::with_seed(5)), draw(&MemFs::with_seed(6)));
        let values = draw(&MemFs::new());
        assert!(values[0] != values[1] && values[1] != values[2]);
        assert_ne!(StdFs.random_u64(), StdFs.random_u64());
    }

    #[test]
    fn a_fault_at_operation_n_fails_that_operation_whatever_its_kind() {
        let fs = MemFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut file = fs.create(Path::new("/d/a")).unwrap();
        let next = fs.operations();
        assert_eq!(next, 2, "creating the directory and the file");
        // The third operation from here: the length, then a write, then the sync fails.
        fs.fail_at(next + 2, FaultError::NoSpace);
        assert_eq!(file.len().unwrap(), 0);
        file.write_at(0, b"abc").unwrap();
        assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(28));
        assert_eq!(fs.operations(), next + 3);
        assert_eq!(fs.operation_count(FaultOperation::Sync), 1);
        // Only that one: the list after it works, and so does a fault at a listing.
        fs.fail_at(fs.operations() + 1, FaultError::Io);
        assert_eq!(fs.list(Path::new("/d")).unwrap(), vec!["a".to_owned()]);
        assert_eq!(
            fs.list(Path::new("/d")).unwrap_err().raw_os_error(),
            Some(5)
        );
        assert_eq!(fs.list(Path::new("/d")).unwrap(), vec!["a".to_owned()]);
    }

    #[test]
    fn a_crash_at_operation_n_happens_before_it_and_stops_every_later_one() {
        let fs = MemFs::new();
        fs.write_file(Path::new("/d/a"), b"synced");
        let mut file = fs.open(Path::new("/d/a")).unwrap();
        let next = fs.operations();
        fs.crash_at(next + 1, Crash::LoseUnsynced);
        file.write_at(6, b" lost").unwrap();
        assert!(!fs.crashed());
        // The second write is where the power fails: it does not happen, nor does anything after it.
        assert_eq!(
            file.write_at(11, b" too").unwrap_err().raw_os_error(),
            Some(5)
        );
        assert!(fs.crashed());
        assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(5));
        assert!(fs.open(Path::new("/d/a")).is_err());
        assert_eq!(fs.read_file(Path::new("/d/a")).unwrap(), b"synced");
        fs.power_on();
        assert!(!fs.crashed());
        let mut file = fs.open(Path::new("/d/a")).unwrap();
        file.write_at(6, b"!").unwrap();
        file.sync_data().unwrap();
        assert_eq!(fs.read_file(Path::new("/d/a")).unwrap(), b"synced!");
    }

    #[test]
    fn a_disk_copy_shares_nothing_with_the_original() {
        let fs = MemFs::new();
        fs.write_file(Path::new("/d/a"), b"both");
        let mut file = fs.open(Path::new("/d/a")).unwrap();
        file.write_at(4, b" unsynced").unwrap();
        let copy = fs.copy_disk();
        assert_eq!(copy.read_file(Path::new("/d/a")).unwrap(), b"both unsynced");
        assert_eq!(copy.operations(), fs.operations());
        copy.crash(Crash::LoseUnsynced);
        copy.write_file(Path::new("/d/b"), b"copy only");
        assert_eq!(copy.read_file(Path::new("/d/a")).unwrap(), b"both");
        assert_eq!(fs.read_file(Path::new("/d/a")).unwrap(), b"both unsynced");
        assert_eq!(fs.read_file(Path::new("/d/b")), None);
        // The original's unsynced bytes are still there to lose, and a second copy still has them too.
        let second = fs.copy_disk();
        file.sync_data().unwrap();
        second.crash(Crash::LoseUnsynced);
        fs.crash(Crash::LoseUnsynced);
        assert_eq!(fs.read_file(Path::new("/d/a")).unwrap(), b"both unsynced");
        assert_eq!(second.read_file(Path::new("/d/a")).unwrap(), b"both");
        // Unlike a clone, which is the same disk.
        let clone = fs.clone();
        clone.write_file(Path::new("/d/c"), b"shared");
        assert_eq!(fs.read_file(Path::new("/d/c")).unwrap(), b"shared");
    }

    #[test]
    fn a_tear_of_the_last_write_keeps_the_earlier_ones_whole() {
        let mut cuts = BTreeSet::new();
        for seed in 0..64 {
            let fs = MemFs::new();
            fs.write_file(Path::new("/d/a"), b"0123");
            fs.write_file(Path::new("/d/b"), b"b");
            let mut a = fs.open(Path::new("/d/a")).unwrap();
            let mut b = fs.open(Path::new("/d/b")).unwrap();
            a.write_at(4, b"4567").unwrap();
            b.write_at(1, b" whole").unwrap();
            a.write_at(8, b"89ab").unwrap();
            fs.crash(Crash::TearLastWrite { seed });
            assert_eq!(fs.read_file(Path::new("/d/b")).unwrap(), b"b whole");
            let bytes = fs.read_file(Path::new("/d/a")).unwrap();
            assert!(
                bytes.len() >= 8 && b"0123456789ab".starts_with(&bytes),
                "{bytes:?}"
            );
            cuts.insert(bytes.len());
        }
        assert_eq!(cuts, (8..=12).collect(), "every cut within the last write");
    }

    #[test]
    fn a_tear_of_the_last_write_over_old_bytes_keeps_them_after_the_cut() {
        let mut shapes = BTreeSet::new();
        for seed in 0..64 {
            let fs = MemFs::new();
            fs.write_file(Path::new("/d/a"), b"abcdefgh");
            let mut file = fs.open(Path::new("/d/a")).unwrap();
            file.write_at(0, b"A").unwrap();
            file.write_at(2, b"CDEF").unwrap();
            fs.crash(Crash::TearLastWrite { seed });
            let bytes = fs.read_file(Path::new("/d/a")).unwrap();
            let cut = (2..=6).find(|cut| {
                let mut expected = b"AbCDEFgh".to_vec();
                expected[*cut..6].copy_from_slice(&b"abcdefgh"[*cut..6]);
                expected == bytes
            });
            assert!(cut.is_some(), "{:?}", String::from_utf8_lossy(&bytes));
            shapes.insert(cut);
        }
        assert_eq!(shapes.len(), 5);
        // A sync or a set_len after the last write: nothing left to tear, every unsynced byte persists.
        let fs = MemFs::new();
        fs.write_file(Path::new("/d/a"), b"ab");
        fs.write_file(Path::new("/d/b"), b"");
        let mut a = fs.open(Path::new("/d/a")).unwrap();
        a.write_at(2, b"cd").unwrap();
        let mut b = fs.open(Path::new("/d/b")).unwrap();
        b.write_at(0, b"xyz").unwrap();
        b.sync_data().unwrap();
        fs.crash(Crash::TearLastWrite { seed: 3 });
        assert_eq!(fs.read_file(Path::new("/d/a")).unwrap(), b"abcd");
    }

    #[test]
    fn sectors_persist_independently_and_synced_bytes_never_change() {
        let synced: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8 + 1).collect();
        let new: Vec<u8> = vec![0xee; 3 * SECTOR_BYTES];
        let mut holes_before_new_data = 0;
        let mut lengths = BTreeSet::new();
        for seed in 0..64 {
            let fs = MemFs::new();
            fs.write_file(Path::new("/d/a"), &synced);
            let mut file = fs.open(Path::new("/d/a")).unwrap();
            file.write_at(600, &new).unwrap();
            fs.crash(Crash::Sectors { seed });
            let bytes = fs.read_file(Path::new("/d/a")).unwrap();
            lengths.insert(bytes.len());
            assert!(bytes.len() == 700 || bytes.len() == 600 + new.len());
            assert_eq!(&bytes[..512], &synced[..512], "sectors before the write");
            let mut persisted = Vec::new();
            for (sector, chunk) in bytes.chunks(SECTOR_BYTES).enumerate().skip(1) {
                let start = sector * SECTOR_BYTES;
                let mut old = synced.get(start..).unwrap_or(&[]).to_vec();
                old.resize(chunk.len(), 0);
                old.truncate(chunk.len());
                let mut written = synced[start.min(600)..600].to_vec();
                written.extend_from_slice(&new);
                let new_bytes = &written[..chunk.len()];
                assert!(
                    chunk == old.as_slice() || chunk == new_bytes,
                    "sector {sector}"
                );
                persisted.push(chunk == new_bytes && chunk != old.as_slice());
            }
            if persisted.windows(2).any(|pair| !pair[0] && pair[1]) {
                holes_before_new_data += 1;
            }
        }
        assert_eq!(
            lengths.len(),
            2,
            "the length is the durable or the current one"
        );
        assert!(
            holes_before_new_data > 0,
            "a later sector persisted after a lost one"
        );
    }

    #[test]
    fn faults_fire_on_the_chosen_operation_only() {
        let fs = MemFs::new();
        fs.write_file(Path::new("/d/a"), b"abc");
        let mut file = fs.open(Path::new("/d/a")).unwrap();
        fs.fail_nth(FaultOperation::Write, 1, FaultError::NoSpace);
        file.write_at(3, b"d").unwrap();
        assert_eq!(file.write_at(4, b"e").unwrap_err().raw_os_error(), Some(28));
        file.write_at(4, b"e").unwrap();
        let mut buffer = [0; 5];
        assert_eq!(file.read_at(0, &mut buffer).unwrap(), 5);
        assert_eq!(&buffer, b"abcde");
    }
}
