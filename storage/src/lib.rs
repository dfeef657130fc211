//! Durable storage for the Raft groups of one server: a write-ahead log shared by every group, hard states,
//! snapshots, and crash recovery that never loses an acknowledged write.
//!
//! # What it promises
//!
//! - **One log per server.** [`Wal`] stores, for any number of groups, their entries (index, term, opaque
//!   bytes) and their hard state (term, vote, commit). One [`Wal::sync`] makes every group's writes durable
//!   with a single `fdatasync` (group commit). A write is durable exactly when a later sync has returned `Ok`.
//! - **Recovery keeps what was synced.** [`Wal::open`] replays every segment. A torn tail of the last segment
//!   (a crash mid-write) is cut off and reported; any other damage is an [`Error::Corruption`] naming the file
//!   and offset, never skipped. An I/O error is always [`Error::Io`], never mistaken for corruption.
//! - **No lies after a failed sync.** Once a write or sync fails, the WAL is poisoned and refuses further work
//!   ([`Error::Poisoned`]); recovery from the disk is the only way on.
//! - **Hostile bytes are errors.** Nothing on disk can make this crate panic or allocate more than
//!   [`RECORD_BYTES_MAX`] for a record, and recovery's searches through damaged bytes checksum at most twice
//!   the file's size. Stale bytes of a recycled segment file, old client payloads included, never pass for
//!   records: each segment life has a random id that its records carry (see [`SegmentHeader`]).
//! - **Space comes back.** Segments rotate at a size limit and are recycled (kept as free files and written
//!   over by later segments, a bounded number of them) or deleted once everything in them is compacted or
//!   superseded.
//! - **Snapshots are all or nothing.** [`SnapshotStore`] writes a temporary file, syncs, renames and syncs the
//!   directory.
//!
//! It knows nothing of Raft rules beyond "a log is a contiguous range of indexes", and has no threads and no
//! async I/O: every disk access goes through the [`FileSystem`] trait, implemented by [`StdFs`] for real disks
//! and [`MemFs`] for tests and the simulator (it loses unsynced bytes at a crash, tears writes, flips bits and
//! fails writes or syncs on demand).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use storage::{Crash, Entry, HardState, MemFs, Wal, WalConfig};
//!
//! let fs = MemFs::new();
//! let mut wal = Wal::open(fs.clone(), WalConfig::new("/data/wal"))?;
//! let entries = [
//!     Entry { index: 1, term: 1, payload: Bytes::from_static(b"create event") },
//!     Entry { index: 2, term: 1, payload: Bytes::from_static(b"invite bob") },
//! ];
//! wal.append(7, &entries)?;
//! wal.set_hard_state(7, HardState { term: 1, vote: 3, commit: 2 })?;
//! wal.sync()?; // Both groups' writes are durable from here on.
//!
//! drop(wal);
//! fs.crash(Crash::LoseUnsynced);
//! let wal = Wal::open(fs, WalConfig::new("/data/wal"))?;
//! assert_eq!(wal.index_last(7), 2);
//! assert_eq!(wal.hard_state(7).vote, 3);
//! assert_eq!(wal.entries(7, 1..3, u64::MAX)?, entries);
//! # Ok::<(), storage::Error>(())
//! ```

mod error;
mod fs;
#[cfg(madsim)]
pub mod planted;
mod record;
mod recovery;
mod segment;
mod snapshot;
mod wal;

pub use error::{Error, Result};
pub use fs::{Crash, FaultError, FaultOperation, File, FileSystem, MemFile, MemFs, StdFile, StdFs};
pub use record::{
    DecodeError, Entry, EntryRef, GroupCheckpoint, HardState, INDEX_LIMIT, RECORD_BYTES_MAX,
    RECORD_HEADER_BYTES, Record, decode, encode,
};
pub use recovery::{RecoveryReport, TornTail, TornTailKind};
pub use segment::{
    SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION, SegmentHeader, recycled_file_name,
    segment_file_name,
};
pub use snapshot::{SNAPSHOT_BYTES_MAX, Snapshot, SnapshotLoad, SnapshotStore};
pub use wal::{
    SEGMENT_SIZE_BYTES_DEFAULT, SEGMENT_SIZE_BYTES_MIN, SEGMENTS_RECYCLED_MAX_DEFAULT,
    WRITE_BUFFER_BYTES_DEFAULT, Wal, WalConfig,
};

/// Identifies a Raft group (a shard's replica set) on this server.
pub type GroupId = u64;
