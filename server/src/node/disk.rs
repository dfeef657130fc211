//! The server's disk: one WAL for every group, the snapshot store and the identity file, all
//! through storage's `FileSystem` seam (real files in production, `MemFs` under the simulator).
//!
//! Layout of a data directory:
//!
//! ```text
//! <data_dir>/IDENTITY        which server and cluster the directory belongs to
//! <data_dir>/wal/            the write-ahead log (storage::Wal)
//! <data_dir>/snapshots/      one snapshot per group (storage::SnapshotStore)
//! ```

use bytes::Bytes;
use raft_core::{ConfState, Entry, EntryKind, GroupId, HardState, InitialState};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use storage::{File, FileSystem, SnapshotStore, Wal, WalConfig};

/// Why a server refuses to start from its data directory.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--init` on a directory that already belongs to a server.
    #[error(
        "{dir} already holds a server's data; refusing to initialize it again (start without --init)"
    )]
    AlreadyInitialized {
        /// The data directory.
        dir: PathBuf,
    },
    /// No identity file: the directory is new or was lost.
    #[error(
        "{dir} holds no server data (no IDENTITY file). If this is a new server, start it once with --init; if it lost its data, do not start it blank: remove it from its shards and add it back as a new member"
    )]
    NotInitialized {
        /// The data directory.
        dir: PathBuf,
    },
    /// The identity file names another server or cluster, or cannot be read.
    #[error("{dir}/IDENTITY does not match this configuration: {reason}")]
    IdentityMismatch {
        /// The data directory.
        dir: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The WAL or a snapshot is damaged, or the disk failed: the replica must not start from it.
    #[error("the data in {dir} cannot be recovered safely: {source}")]
    Storage {
        /// The data directory.
        dir: PathBuf,
        /// What storage found.
        #[source]
        source: storage::Error,
    },
    /// What the disk holds contradicts itself (a log compacted past the newest snapshot, a
    /// group this server should host with no state at all, a snapshot that does not decode).
    #[error("the data in {dir} is inconsistent: {reason}")]
    Inconsistent {
        /// The data directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The format of snapshot files' data: the membership as of the snapshot and the state
/// machine's own bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredSnapshot {
    conf_state: ConfState,
    data: Bytes,
}

const STORED_SNAPSHOT_FORMAT: u8 = 1;

fn encode_stored(conf_state: &ConfState, data: &Bytes) -> Bytes {
    let stored = StoredSnapshot {
        conf_state: conf_state.clone(),
        data: data.clone(),
    };
    let mut bytes = vec![STORED_SNAPSHOT_FORMAT];
    bytes.extend(postcard::to_allocvec(&stored).expect("snapshots always serialize"));
    Bytes::from(bytes)
}

fn decode_stored(bytes: &[u8]) -> Result<StoredSnapshot, String> {
    match bytes.split_first() {
        Some((&STORED_SNAPSHOT_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|error| error.to_string())
        }
        Some((format, _)) => Err(format!("unknown snapshot format {format}")),
        None => Err("empty snapshot".to_owned()),
    }
}

/// The kind byte in front of every entry payload in the WAL (the WAL stores bytes only).
fn entry_payload(entry: &Entry) -> Bytes {
    let kind = match entry.kind {
        EntryKind::Normal => 0u8,
        EntryKind::ConfChange => 1u8,
    };
    let mut payload = Vec::with_capacity(1 + entry.data.len());
    payload.push(kind);
    payload.extend_from_slice(&entry.data);
    Bytes::from(payload)
}

fn entry_from_wal(entry: storage::Entry) -> Result<Entry, String> {
    let kind = match entry.payload.first() {
        Some(0) => EntryKind::Normal,
        Some(1) => EntryKind::ConfChange,
        Some(other) => return Err(format!("entry {} has unknown kind {other}", entry.index)),
        None => return Err(format!("entry {} has no kind byte", entry.index)),
    };
    Ok(Entry {
        index: entry.index,
        term: entry.term,
        kind,
        data: entry.payload.slice(1..),
    })
}

/// A snapshot to make durable before the WAL forgets what it covers.
#[derive(Debug)]
pub(crate) struct SnapshotSave {
    pub group: GroupId,
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
    pub data: Bytes,
    /// Received from a leader (the log is replaced) rather than taken here (the log is
    /// compacted).
    pub installed: bool,
}

/// One group's writes of one Ready.
#[derive(Debug, Default)]
pub(crate) struct GroupWrite {
    pub group: GroupId,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

/// Everything to make durable with one fsync.
#[derive(Debug, Default)]
pub(crate) struct PersistBatch {
    pub snapshots: Vec<SnapshotSave>,
    pub groups: Vec<GroupWrite>,
    /// Whether anything in the batch must be durable before the Readys go on: a snapshot,
    /// entries, or a new term or vote. A batch of commit indexes alone is written unsynced.
    pub must_sync: bool,
}

impl PersistBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.groups.is_empty()
    }

    pub(crate) fn entries(&self) -> u64 {
        self.groups
            .iter()
            .map(|group| group.entries.len() as u64)
            .sum()
    }
}

/// What recovery found for one group.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub initial: InitialState,
    /// The state machine's bytes from the snapshot, if there is one.
    pub state: Option<Bytes>,
}

/// The WAL, the snapshot store and the directory they live in.
pub(crate) struct Disk<F: FileSystem> {
    dir: PathBuf,
    wal: Wal<F>,
    snapshots: SnapshotStore<F>,
}

const IDENTITY_FILE: &str = "IDENTITY";

fn identity_text(server_id: u64, cluster_id: u64) -> String {
    format!("agenda data directory, format 1\nserver_id = {server_id}\ncluster_id = {cluster_id}\n")
}

impl<F: FileSystem + Clone> Disk<F> {
    /// Opens (or, with `init`, creates) a data directory and recovers its WAL.
    pub(crate) fn open(
        fs: F,
        dir: &Path,
        server_id: u64,
        cluster_id: u64,
        init: bool,
    ) -> Result<Disk<F>, StartError> {
        let storage_error = |source| StartError::Storage {
            dir: dir.to_owned(),
            source,
        };
        let io_error = |operation: &'static str, path: &Path, error: std::io::Error| {
            storage_error(storage::Error::Io {
                operation,
                path: path.to_owned(),
                source: error,
            })
        };
        let identity_path = dir.join(IDENTITY_FILE);
        let expected = identity_text(server_id, cluster_id);
        let existing =
            read_whole(&fs, &identity_path).map_err(|e| io_error("read", &identity_path, e))?;
        let reinit = existing.is_some() && init;
        match (existing, init) {
            (Some(text), true) if text != expected.as_bytes() => {
                return Err(StartError::IdentityMismatch {
                    dir: dir.to_owned(),
                    reason: "an unfinished initialization for another server".to_owned(),
                });
            }
            // Checked below, once the WAL is open: an initialization that crashed before any
            // group was written starts again; a directory that holds data is refused.
            (Some(_), true) => {}
            (None, false) => {
                return Err(StartError::NotInitialized {
                    dir: dir.to_owned(),
                });
            }
            (Some(text), false) if text != expected.as_bytes() => {
                return Err(StartError::IdentityMismatch {
                    dir: dir.to_owned(),
                    reason: format!(
                        "it says {:?}, this configuration is server {server_id} of cluster {cluster_id}",
                        String::from_utf8_lossy(&text)
                    ),
                });
            }
            (Some(_), false) => {}
            (None, true) => {
                fs.create_dir_all(dir)
                    .map_err(|e| io_error("create directory", dir, e))?;
                let mut file = fs
                    .create(&identity_path)
                    .map_err(|e| io_error("create", &identity_path, e))?;
                file.write_at(0, expected.as_bytes())
                    .and_then(|()| file.sync_data())
                    .map_err(|e| io_error("write", &identity_path, e))?;
                fs.sync_dir(dir)
                    .map_err(|e| io_error("fsync directory", dir, e))?;
            }
        }
        let wal = Wal::open(fs.clone(), WalConfig::new(dir.join("wal"))).map_err(storage_error)?;
        if reinit && (!wal.groups().is_empty() || holds_snapshots(&fs, dir)) {
            return Err(StartError::AlreadyInitialized {
                dir: dir.to_owned(),
            });
        }
        let snapshots = SnapshotStore::open(fs, dir.join("snapshots")).map_err(storage_error)?;
        Ok(Disk {
            dir: dir.to_owned(),
            wal,
            snapshots,
        })
    }

    fn inconsistent(&self, reason: String) -> StartError {
        StartError::Inconsistent {
            dir: self.dir.clone(),
            reason,
        }
    }

    /// The durable state of one group, or `None` if the disk holds nothing of it.
    ///
    /// When the group has a snapshot, the WAL is made to agree with it before anything else
    /// is written: compacted to the snapshot, and cut back to it if its entries do not
    /// continue it (a crash between saving a received snapshot and syncing the WAL records
    /// that replace the log leaves the stale log behind). Call [`Disk::sync`] once every group
    /// is recovered.
    pub(crate) fn recover(&mut self, group: GroupId) -> Result<Option<Recovered>, StartError> {
        let load = self
            .snapshots
            .load_newest(group)
            .map_err(|source| StartError::Storage {
                dir: self.dir.clone(),
                source,
            })?;
        let snapshot = match &load.newest_valid {
            Some(snapshot) => {
                let stored = decode_stored(&snapshot.data).map_err(|reason| {
                    self.inconsistent(format!("snapshot of group {group}: {reason}"))
                })?;
                Some((snapshot.index, snapshot.term, stored))
            }
            None => None,
        };
        let in_wal = self.wal.groups().contains(&group);
        if snapshot.is_none() && !in_wal {
            if let Some((path, reason)) = load.rejected.first() {
                return Err(self.inconsistent(format!(
                    "group {group}'s only snapshot {} is damaged: {reason}",
                    path.display()
                )));
            }
            return Ok(None);
        }
        let snapshot_index = snapshot.as_ref().map_or(0, |(index, _, _)| *index);
        let index_first = self.wal.index_first(group);
        if index_first > snapshot_index + 1 {
            return Err(self.inconsistent(format!(
                "group {group}'s log starts at {index_first} but its newest valid snapshot ends at {snapshot_index}{}",
                match load.rejected.first() {
                    Some((path, reason)) => format!(" (a newer one, {}, is damaged: {reason})", path.display()),
                    None => String::new(),
                }
            )));
        }
        let mut entries = Vec::new();
        // The entries after the snapshot continue it only if the log agrees with the snapshot
        // at its index; otherwise they are a stale branch that the snapshot's installation
        // replaced before a crash cut the WAL's record of it.
        let continues = match &snapshot {
            None => true,
            Some((index, term, _)) => {
                *index < index_first || self.wal.term(group, *index).ok() == Some(*term)
            }
        };
        if snapshot.is_some() {
            let storage_error = |source| StartError::Storage {
                dir: self.dir.clone(),
                source,
            };
            self.wal
                .compact(group, snapshot_index + 1)
                .map_err(storage_error)?;
            if !continues {
                self.wal
                    .truncate(group, snapshot_index)
                    .map_err(|source| StartError::Storage {
                        dir: self.dir.clone(),
                        source,
                    })?;
            }
        }
        let index_last = self.wal.index_last(group);
        // After the repair, whatever follows the snapshot in the WAL continues it.
        if index_last > snapshot_index {
            let from = self.wal.index_first(group).max(snapshot_index + 1);
            let read = self
                .wal
                .entries(group, from..index_last + 1, u64::MAX)
                .map_err(|source| StartError::Storage {
                    dir: self.dir.clone(),
                    source,
                })?;
            for entry in read {
                entries.push(entry_from_wal(entry).map_err(|reason| self.inconsistent(reason))?);
            }
        }
        let wal_hard_state = self.wal.hard_state(group);
        let mut hard_state = HardState {
            term: wal_hard_state.term,
            vote: wal_hard_state.vote,
            commit: wal_hard_state.commit,
        };
        let snapshot_term = snapshot.as_ref().map_or(0, |(_, term, _)| *term);
        let newest_term = entries.last().map_or(snapshot_term, |entry| entry.term);
        if newest_term > hard_state.term {
            // A snapshot saved before the crash cut the WAL's hard state: the node saw that
            // term but cast no vote in it (a vote leaves only once durable).
            hard_state.term = newest_term;
            hard_state.vote = raft_core::NO_NODE;
        }
        let last_index = entries.last().map_or(snapshot_index, |entry| entry.index);
        if hard_state.commit > last_index {
            return Err(self.inconsistent(format!(
                "group {group}'s durable commit index {} is beyond its last durable entry {last_index}",
                hard_state.commit
            )));
        }
        hard_state.commit = hard_state.commit.max(snapshot_index);
        let (raft_snapshot, state) = match snapshot {
            Some((index, term, stored)) => (
                Some(raft_core::Snapshot {
                    meta: raft_core::SnapshotMeta {
                        index,
                        term,
                        conf_state: stored.conf_state,
                    },
                    data: stored.data.clone(),
                }),
                Some(stored.data),
            ),
            None => (None, None),
        };
        Ok(Some(Recovered {
            initial: InitialState {
                hard_state,
                snapshot: raft_snapshot,
                entries,
                bootstrap: ConfState::default(),
            },
            state,
        }))
    }

    /// Makes everything written so far durable (after recovery's repairs).
    pub(crate) fn sync(&mut self) -> Result<(), StartError> {
        self.wal.sync().map_err(|source| StartError::Storage {
            dir: self.dir.clone(),
            source,
        })
    }

    /// Syncs the WAL (the second half of [`Disk::persist`], after [`Disk::write`]).
    #[cfg(madsim)]
    pub(crate) fn sync_wal(&mut self) -> Result<(), storage::Error> {
        self.wal.sync()
    }

    /// Makes a batch durable: snapshots first (each with its own fsync), then the WAL's
    /// records for every group, then one fsync for all of them. (Under the simulator the node
    /// loop calls the two halves itself, with simulated disk time between them.)
    #[cfg_attr(madsim, allow(dead_code))]
    pub(crate) fn persist(&mut self, batch: &PersistBatch) -> Result<(), storage::Error> {
        self.write(batch)?;
        self.wal.sync()
    }

    /// Writes a batch's records into the WAL without syncing: for batches that change only
    /// commit indexes, which need not be durable before anything else happens (a recovered
    /// commit index that lags is caught up from the leader).
    pub(crate) fn write(&mut self, batch: &PersistBatch) -> Result<(), storage::Error> {
        for save in &batch.snapshots {
            self.snapshots.save(&storage::Snapshot {
                group: save.group,
                index: save.index,
                term: save.term,
                data: encode_stored(&save.conf_state, &save.data),
            })?;
            self.wal.compact(save.group, save.index + 1)?;
            if save.installed {
                self.wal.truncate(save.group, save.index)?;
            }
        }
        let mut payloads = Vec::new();
        for write in &batch.groups {
            if !write.entries.is_empty() {
                payloads.clear();
                payloads.extend(write.entries.iter().map(|entry| storage::Entry {
                    index: entry.index,
                    term: entry.term,
                    payload: entry_payload(entry),
                }));
                self.wal.append(write.group, &payloads)?;
            }
            if let Some(hard_state) = write.hard_state {
                #[cfg(madsim)]
                let hard_state = if crate::planted::planted(crate::planted::Bug::VoteNotPersisted) {
                    HardState {
                        vote: raft_core::NO_NODE,
                        ..hard_state
                    }
                } else {
                    hard_state
                };
                self.wal.set_hard_state(
                    write.group,
                    storage::HardState {
                        term: hard_state.term,
                        vote: hard_state.vote,
                        commit: hard_state.commit,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Whether a data directory holds any snapshot file.
fn holds_snapshots<F: FileSystem>(fs: &F, dir: &Path) -> bool {
    fs.list(&dir.join("snapshots"))
        .unwrap_or_default()
        .iter()
        .any(|name| name.ends_with(".snap"))
}

fn read_whole<F: FileSystem>(fs: &F, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let file = match fs.open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let length = file.len()?;
    if length > 4096 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "identity file larger than 4 KiB",
        ));
    }
    let mut bytes = vec![0; length as usize];
    let read = file.read_at(0, &mut bytes)?;
    bytes.truncate(read);
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::{Crash, MemFs};

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry {
                index,
                term,
                kind: EntryKind::Normal,
                data: Bytes::from(format!("entry {index}")),
            })
            .collect()
    }

    fn write(group: GroupId, entries: Vec<Entry>, term: u64, commit: u64) -> PersistBatch {
        PersistBatch {
            snapshots: Vec::new(),
            groups: vec![GroupWrite {
                group,
                entries,
                hard_state: Some(HardState {
                    term,
                    vote: 0,
                    commit,
                }),
            }],
            must_sync: true,
        }
    }

    /// A follower holds a stale log (`stale_last` entries of term 1), installs a snapshot at
    /// 100 of term 2, and crashes after the snapshot file is durable but before the WAL
    /// records that replace its log are synced.
    fn crash_after_snapshot_save(stale_last: u64) -> MemFs {
        let fs = MemFs::new();
        let dir = Path::new("/data");
        let mut disk = Disk::open(fs.clone(), dir, 1, 1, true).unwrap();
        assert!(disk.recover(1).unwrap().is_none());
        disk.persist(&write(1, entries(1..=stale_last, 1), 1, 50))
            .unwrap();
        let install = PersistBatch {
            snapshots: vec![SnapshotSave {
                group: 1,
                index: 100,
                term: 2,
                conf_state: ConfState::with_voters(&[1, 2, 3]),
                data: Bytes::from_static(b"state at 100"),
                installed: true,
            }],
            groups: Vec::new(),
            must_sync: true,
        };
        disk.write(&install).unwrap();
        drop(disk);
        fs.crash(Crash::LoseUnsynced);
        fs
    }

    fn restart(fs: &MemFs) -> (Disk<MemFs>, Recovered) {
        let mut disk = Disk::open(fs.clone(), Path::new("/data"), 1, 1, false).unwrap();
        let recovered = disk.recover(1).unwrap().unwrap();
        disk.sync().unwrap();
        (disk, recovered)
    }

    #[test]
    fn entries_after_a_received_snapshot_survive_a_crash_that_cut_the_wal_records_replacing_the_log()
     {
        // Regression (review): recovery ignored the stale log without cutting it, so the
        // entries appended after the snapshot were dropped again at the next restart.
        let fs = crash_after_snapshot_save(120);
        let (mut disk, recovered) = restart(&fs);
        assert_eq!(recovered.initial.snapshot.unwrap().meta.index, 100);
        assert!(
            recovered.initial.entries.is_empty(),
            "the stale branch is not taken"
        );
        disk.persist(&write(1, entries(101..=105, 2), 2, 105))
            .unwrap();
        drop(disk);
        fs.crash(Crash::LoseUnsynced);
        let (_, recovered) = restart(&fs);
        let indexes: Vec<u64> = recovered.initial.entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [101, 102, 103, 104, 105]);
        assert_eq!(recovered.initial.hard_state.commit, 105);
    }

    #[test]
    fn a_lagging_log_shorter_than_a_received_snapshot_accepts_the_entries_after_it() {
        // Regression (review): the WAL still ended at 90, so appending 101 was a gap and the
        // server stopped at every start.
        let fs = crash_after_snapshot_save(90);
        let (mut disk, recovered) = restart(&fs);
        assert!(recovered.initial.entries.is_empty());
        disk.persist(&write(1, entries(101..=101, 2), 2, 101))
            .unwrap();
    }

    #[test]
    fn a_second_init_is_refused_once_the_directory_holds_data_but_an_unfinished_one_restarts() {
        let fs = MemFs::new();
        let dir = Path::new("/data");
        let disk = Disk::open(fs.clone(), dir, 1, 1, true).unwrap();
        drop(disk);
        // The first initialization stopped before any group was written: --init again works.
        let mut disk = Disk::open(fs.clone(), dir, 1, 1, true).unwrap();
        disk.persist(&write(1, entries(1..=3, 1), 1, 3)).unwrap();
        drop(disk);
        assert!(matches!(
            Disk::open(fs.clone(), dir, 1, 1, true),
            Err(StartError::AlreadyInitialized { .. })
        ));
        assert!(matches!(
            Disk::open(fs, dir, 2, 1, false),
            Err(StartError::IdentityMismatch { .. })
        ));
    }
}
