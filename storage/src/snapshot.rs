//! Snapshots: one file per snapshot, written so that a crash leaves either the whole new file or none of it.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::GroupId;
use crate::error::{Error, Result};
use crate::fs::{File, FileSystem};

/// The largest snapshot this crate writes or reads, in bytes of data. Checked before allocating.
pub const SNAPSHOT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

const SNAPSHOT_MAGIC: [u8; 8] = *b"AGNDSNP\n";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_BYTES: u64 = 48;

/// A group's state machine image as of an index, with the term of that index. The data is opaque.
///
/// On disk, in a file named `snapshot-<group>-<index>.snap` (both numbers zero-padded to 20 digits), little endian:
///
/// ```text
///  0        8         12       16       24       32       40            48
///  +--------+---------+--------+--------+--------+--------+-------------+------------------+
///  | magic  | version | crc32  | group  | index  | term   | data length | data             |
///  | 8 B    | u32     | u32    | u64    | u64    | u64    | u64         | data length B    |
///  +--------+---------+--------+--------+--------+--------+-------------+------------------+
/// ```
///
/// The checksum covers every byte but its own field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The group.
    pub group: GroupId,
    /// The last index the snapshot covers.
    pub index: u64,
    /// The term of that index.
    pub term: u64,
    /// The state machine's bytes.
    pub data: Bytes,
}

/// What [`SnapshotStore::load_newest`] found for a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotLoad {
    /// The newest snapshot that passed every check.
    pub newest_valid: Option<Snapshot>,
    /// Complete-looking snapshot files newer than it that failed a check, with the reason, newest first.
    /// Only bit rot or tampering produces them (a crash leaves only temporary files, which are ignored);
    /// the caller decides whether an older snapshot is acceptable.
    pub rejected: Vec<(PathBuf, String)>,
}

/// The snapshots of every group of a server, in one directory, over a [`FileSystem`].
///
/// [`SnapshotStore::save`] writes a temporary file, syncs it, renames it into place and syncs the directory,
/// so the new snapshot exists completely or not at all. It keeps the previous snapshot of the group as a
/// fallback and deletes older ones.
#[derive(Debug)]
pub struct SnapshotStore<F: FileSystem> {
    fs: F,
    dir: PathBuf,
}

const TEMPORARY_SUFFIX: &str = ".tmp";

fn snapshot_file_name(group: GroupId, index: u64) -> String {
    format!("snapshot-{group:020}-{index:020}.snap")
}

/// `(group, index)` from a snapshot file name.
fn parse_snapshot_file_name(name: &str) -> Option<(GroupId, u64)> {
    let middle = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    let (group, index) = middle.split_once('-')?;
    let is_number =
        |digits: &str| digits.len() == 20 && digits.bytes().all(|byte| byte.is_ascii_digit());
    if !is_number(group) || !is_number(index) {
        return None;
    }
    Some((group.parse().ok()?, index.parse().ok()?))
}

fn snapshot_checksum(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[0..12]);
    hasher.update(&bytes[16..]);
    hasher.finalize()
}

fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_BYTES as usize + snapshot.data.len());
    bytes.extend_from_slice(&SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    for number in [
        snapshot.group,
        snapshot.index,
        snapshot.term,
        snapshot.data.len() as u64,
    ] {
        bytes.extend_from_slice(&number.to_le_bytes());
    }
    bytes.extend_from_slice(&snapshot.data);
    let crc = snapshot_checksum(&bytes);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes a whole snapshot file, or says what is wrong with it.
fn decode_snapshot(bytes: &[u8]) -> std::result::Result<Snapshot, String> {
    if (bytes.len() as u64) < SNAPSHOT_HEADER_BYTES {
        return Err("shorter than a snapshot header".to_owned());
    }
    if bytes[0..8] != SNAPSHOT_MAGIC {
        return Err("wrong magic number".to_owned());
    }
    let number = |offset: usize| {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("eight bytes"))
    };
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"));
    if version != SNAPSHOT_VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let data_bytes = number(40);
    if data_bytes != bytes.len() as u64 - SNAPSHOT_HEADER_BYTES {
        return Err(format!("data length {data_bytes} does not match the file"));
    }
    let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("four bytes"));
    if stored != snapshot_checksum(bytes) {
        return Err("checksum mismatch".to_owned());
    }
    let data = Bytes::copy_from_slice(&bytes[SNAPSHOT_HEADER_BYTES as usize..]);
    Ok(Snapshot {
        group: number(16),
        index: number(24),
        term: number(32),
        data,
    })
}

impl<F: FileSystem> SnapshotStore<F> {
    /// Opens the snapshot directory, creating it if needed, removes temporary files left by a crash, and syncs
    /// the directory.
    ///
    /// The directory is synced even when nothing was removed, so that every snapshot the opened store shows
    /// survives a crash: a [`SnapshotStore::save`] whose directory fsync failed leaves its rename in the page
    /// cache only, and a process restarted without a reboot would otherwise load a snapshot that a later power
    /// loss takes back (the replica, having compacted its log up to it, would then have a hole). As
    /// [`crate::Wal::open`] does for the log.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn open(fs: F, dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs.create_dir_all(&dir)
            .map_err(|error| Error::io("create directory", &dir, error))?;
        let store = SnapshotStore { fs, dir };
        for name in store.list()? {
            if name.ends_with(TEMPORARY_SUFFIX) {
                let path = store.dir.join(&name);
                store
                    .fs
                    .remove(&path)
                    .map_err(|error| Error::io("remove temporary snapshot", &path, error))?;
            }
        }
        store.sync_dir()?;
        Ok(store)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.fs
            .list(&self.dir)
            .map_err(|error| Error::io("list directory", &self.dir, error))
    }

    fn sync_dir(&self) -> Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|error| Error::io("fsync directory", &self.dir, error))
    }

    /// The indexes of a group's snapshot files, newest first.
    fn indexes(&self, group: GroupId) -> Result<Vec<u64>> {
        let mut indexes: Vec<u64> = self
            .list()?
            .iter()
            .filter_map(|name| parse_snapshot_file_name(name))
            .filter(|(owner, _)| *owner == group)
            .map(|(_, index)| index)
            .collect();
        indexes.sort_unstable_by(|a, b| b.cmp(a));
        Ok(indexes)
    }

    /// Writes a snapshot durably, then deletes the group's snapshots older than the previous one.
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`] if the data exceeds [`SNAPSHOT_BYTES_MAX`]; [`Error::Io`].
    pub fn save(&self, snapshot: &Snapshot) -> Result<()> {
        let data_bytes = snapshot.data.len() as u64;
        if data_bytes > SNAPSHOT_BYTES_MAX {
            return Err(Error::RecordTooLarge {
                bytes: data_bytes,
                bytes_max: SNAPSHOT_BYTES_MAX,
            });
        }
        let name = snapshot_file_name(snapshot.group, snapshot.index);
        let path = self.dir.join(&name);
        let temporary = self.dir.join(format!("{name}{TEMPORARY_SUFFIX}"));
        self.write_temporary(&temporary, &encode_snapshot(snapshot))?;
        self.fs
            .rename(&temporary, &path)
            .map_err(|error| Error::io("rename snapshot", &path, error))?;
        self.sync_dir()?;
        let older = self
            .indexes(snapshot.group)?
            .into_iter()
            .filter(|index| *index < snapshot.index)
            .skip(1);
        let mut removed_any = false;
        for index in older {
            let old = self.dir.join(snapshot_file_name(snapshot.group, index));
            self.fs
                .remove(&old)
                .map_err(|error| Error::io("remove old snapshot", &old, error))?;
            removed_any = true;
        }
        if removed_any {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn write_temporary(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        // A temporary file left by an earlier failed save is replaced.
        match self.fs.remove(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::io("remove temporary snapshot", path, error)),
        }
        let mut file = self
            .fs
            .create(path)
            .map_err(|error| Error::io("create snapshot", path, error))?;
        file.write_at(0, bytes)
            .map_err(|error| Error::io("write snapshot", path, error))?;
        file.sync_data()
            .map_err(|error| Error::io("fdatasync", path, error))
    }

    /// Loads the newest valid snapshot of a group. Temporary files are never considered.
    ///
    /// # Errors
    /// [`Error::Io`] only: a damaged snapshot file is listed in [`SnapshotLoad::rejected`], not returned as an error.
    pub fn load_newest(&self, group: GroupId) -> Result<SnapshotLoad> {
        let mut load = SnapshotLoad::default();
        for index in self.indexes(group)? {
            let path = self.dir.join(snapshot_file_name(group, index));
            match self.read(&path)?.and_then(|bytes| decode_snapshot(&bytes)) {
                Ok(snapshot) if snapshot.group == group && snapshot.index == index => {
                    load.newest_valid = Some(snapshot);
                    return Ok(load);
                }
                Ok(_) => load
                    .rejected
                    .push((path, "group or index differs from the file name".to_owned())),
                Err(reason) => load.rejected.push((path, reason)),
            }
        }
        Ok(load)
    }

    /// The bytes of a snapshot file, or why it is too large to read.
    fn read(&self, path: &Path) -> Result<std::result::Result<Vec<u8>, String>> {
        let file = self
            .fs
            .open(path)
            .map_err(|error| Error::io("open snapshot", path, error))?;
        let file_bytes = file
            .len()
            .map_err(|error| Error::io("stat snapshot", path, error))?;
        if file_bytes > SNAPSHOT_HEADER_BYTES + SNAPSHOT_BYTES_MAX {
            return Ok(Err(format!(
                "{file_bytes} bytes is above the snapshot limit"
            )));
        }
        let mut bytes = vec![0; file_bytes as usize];
        let read = file
            .read_at(0, &mut bytes)
            .map_err(|error| Error::io("read snapshot", path, error))?;
        bytes.truncate(read);
        Ok(Ok(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Crash, MemFs};

    fn snapshot(group: GroupId, index: u64) -> Snapshot {
        Snapshot {
            group,
            index,
            term: index / 10 + 1,
            data: Bytes::from(format!("state at {index}")),
        }
    }

    #[test]
    fn the_newest_snapshot_survives_a_crash_and_older_ones_are_pruned() {
        let fs = MemFs::new();
        let store = SnapshotStore::open(fs.clone(), "/snapshots").unwrap();
        for index in [10, 20, 30] {
            store.save(&snapshot(1, index)).unwrap();
        }
        store.save(&snapshot(2, 5)).unwrap();
        fs.crash(Crash::LoseUnsynced);
        let store = SnapshotStore::open(fs.clone(), "/snapshots").unwrap();
        assert_eq!(
            store.load_newest(1).unwrap().newest_valid,
            Some(snapshot(1, 30))
        );
        assert_eq!(
            store.load_newest(2).unwrap().newest_valid,
            Some(snapshot(2, 5))
        );
        assert_eq!(store.load_newest(3).unwrap(), SnapshotLoad::default());
        assert_eq!(
            store.indexes(1).unwrap(),
            vec![30, 20],
            "the previous snapshot is kept, older ones go"
        );
    }

    #[test]
    fn a_half_written_snapshot_is_ignored() {
        let fs = MemFs::new();
        let store = SnapshotStore::open(fs.clone(), "/snapshots").unwrap();
        store.save(&snapshot(1, 10)).unwrap();
        // The crash comes after the temporary file was written but before it was synced and renamed.
        let temporary = Path::new("/snapshots")
            .join(format!("{}{TEMPORARY_SUFFIX}", snapshot_file_name(1, 20)));
        fs.write_file(&temporary, &encode_snapshot(&snapshot(1, 20))[..30]);
        fs.crash(Crash::Tear { seed: 7 });
        let store = SnapshotStore::open(fs.clone(), "/snapshots").unwrap();
        let load = store.load_newest(1).unwrap();
        assert_eq!(load.newest_valid, Some(snapshot(1, 10)));
        assert!(load.rejected.is_empty());
        assert!(
            fs.read_file(&temporary).is_none(),
            "temporary files are removed at open"
        );
    }

    #[test]
    fn a_damaged_snapshot_is_rejected_and_the_previous_one_loaded() {
        let fs = MemFs::new();
        let store = SnapshotStore::open(fs.clone(), "/snapshots").unwrap();
        store.save(&snapshot(1, 10)).unwrap();
        store.save(&snapshot(1, 20)).unwrap();
        let newest = Path::new("/snapshots").join(snapshot_file_name(1, 20));
        fs.flip_bit(&newest, 50, 3);
        let load = store.load_newest(1).unwrap();
        assert_eq!(load.newest_valid, Some(snapshot(1, 10)));
        assert_eq!(
            load.rejected,
            vec![(newest, "checksum mismatch".to_owned())]
        );
    }

    #[test]
    fn a_failed_sync_fails_the_save_and_leaves_the_old_snapshot() {
        let fs = MemFs::new();
        let store = SnapshotStore::open(fs.clone(), "/snapshots").unwrap();
        store.save(&snapshot(1, 10)).unwrap();
        fs.fail_nth(
            crate::fs::FaultOperation::Sync,
            0,
            crate::fs::FaultError::Io,
        );
        assert!(matches!(
            store.save(&snapshot(1, 20)),
            Err(Error::Io { .. })
        ));
        fs.crash(Crash::LoseUnsynced);
        let store = SnapshotStore::open(fs, "/snapshots").unwrap();
        assert_eq!(
            store.load_newest(1).unwrap().newest_valid,
            Some(snapshot(1, 10))
        );
    }

    #[test]
    fn hostile_snapshot_bytes_are_rejected() {
        assert!(decode_snapshot(&[]).is_err());
        assert!(decode_snapshot(&[0; 48]).is_err());
        let mut bytes = encode_snapshot(&snapshot(1, 1));
        bytes[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_snapshot(&bytes).is_err());
    }
}
