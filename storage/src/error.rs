//! The errors of the storage crate, one variant per decision the caller makes.

use std::io;
use std::path::PathBuf;

use crate::GroupId;

/// What went wrong in a storage operation.
///
/// The variants are sorted by what the caller does about them:
/// [`Error::Io`] and [`Error::Poisoned`] stop the replica until an operator (or a restart) fixes the disk;
/// [`Error::Corruption`] and [`Error::UnsupportedVersion`] stop the replica because the data on disk cannot be trusted;
/// the other variants report a misuse that the caller can correct (an append with a gap, a read of compacted entries).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system (or the simulated disk) failed an operation.
    /// This is never reported as corruption: the bytes were not read, so nothing is known about them.
    #[error("I/O error during {operation} on {}: {source}", path.display())]
    Io {
        /// The file-system operation that failed, for example `"fdatasync"`.
        operation: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The error the file system returned.
        source: io::Error,
    },
    /// Bytes on disk are not what this crate wrote, outside of a torn tail that recovery may truncate.
    #[error("corruption in {} at byte {offset}: {reason}", file.display())]
    Corruption {
        /// The segment or snapshot file holding the bad bytes.
        file: PathBuf,
        /// Where the bad record or header starts, in bytes from the start of the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A file was written by a newer version of this crate.
    #[error("{} has format version {version}, this build reads only version {version_supported}", file.display())]
    UnsupportedVersion {
        /// The file with the unknown version.
        file: PathBuf,
        /// The version found in the file.
        version: u32,
        /// The only version this build reads.
        version_supported: u32,
    },
    /// An earlier write or sync failed, so the log no longer knows what is durable.
    /// Every later write and sync fails with this error; reopen the log to recover from what the disk holds.
    #[error("the write-ahead log is poisoned by an earlier failed write or sync")]
    Poisoned,
    /// A record would be larger than [`crate::RECORD_BYTES_MAX`].
    #[error("a record of {bytes} bytes exceeds the limit of {bytes_max} bytes")]
    RecordTooLarge {
        /// The size the record would have had.
        bytes: u64,
        /// The limit.
        bytes_max: u64,
    },
    /// An append would leave a hole in the group's log.
    #[error(
        "group {group}: append at index {index} leaves a gap after the last index {index_last}"
    )]
    Gap {
        /// The group appended to.
        group: GroupId,
        /// The first index of the appended entries.
        index: u64,
        /// The last index of the log before the append.
        index_last: u64,
    },
    /// The entries of one append do not have consecutive indexes.
    #[error("group {group}: entry index {index} does not follow {index_previous}")]
    NotConsecutive {
        /// The group appended to.
        group: GroupId,
        /// The index that broke the sequence.
        index: u64,
        /// The index before it.
        index_previous: u64,
    },
    /// The operation touches entries that were compacted away.
    #[error("group {group}: index {index} is compacted, the log starts at {index_first}")]
    Compacted {
        /// The group.
        group: GroupId,
        /// The index that was asked for.
        index: u64,
        /// The first index still in the log.
        index_first: u64,
    },
    /// A read asked for entries after the end of the log.
    #[error("group {group}: index {index} is after the last index {index_last}")]
    Unavailable {
        /// The group.
        group: GroupId,
        /// The index that was asked for.
        index: u64,
        /// The last index in the log.
        index_last: u64,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and path it came from.
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    /// Builds a corruption error naming the file and offset.
    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}
