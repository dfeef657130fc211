//! The rules of `SnapshotStore` that its unit tests (in `src/snapshot.rs`) leave open: the size limit and its
//! edges, which file names are snapshots, a file whose contents name another snapshot, a snapshot without data,
//! and a save that cannot clear its temporary name. Each story was written for a mutant that survived
//! cargo-mutants (see MUTANTS.md).

#[path = "support/altered_fs.rs"]
mod altered_fs;

use std::path::{Path, PathBuf};

use altered_fs::{AlteredFs, Length};
use bytes::Bytes;
use storage::{
    Error, FaultError, FaultOperation, FileSystem, MemFs, SNAPSHOT_BYTES_MAX, Snapshot,
    SnapshotLoad, SnapshotStore,
};

const DIR: &str = "/snapshots";
const HEADER_BYTES: u64 = 48;

fn snapshot(group: u64, index: u64) -> Snapshot {
    let data = Bytes::from(format!("state of group {group} at {index}"));
    Snapshot {
        group,
        index,
        term: 1,
        data,
    }
}

/// The path this crate gives a group's snapshot at an index.
fn path(group: u64, index: u64) -> PathBuf {
    Path::new(DIR).join(format!("snapshot-{group:020}-{index:020}.snap"))
}

/// A store over an `AlteredFs` holding snapshots 10 and 20 of group 1, file 20 reported as `length` bytes long.
/// Returns the store and the `MemFs` under it.
fn store_with_file_20_of_length(length: u64) -> (SnapshotStore<AlteredFs>, MemFs) {
    let fs = MemFs::new();
    let store = SnapshotStore::open(fs.clone(), DIR).unwrap();
    store.save(&snapshot(1, 10)).unwrap();
    store.save(&snapshot(1, 20)).unwrap();
    let oversized = AlteredFs::new(fs.clone()).reporting(path(1, 20), Length::Exactly(length));
    (SnapshotStore::open(oversized, DIR).unwrap(), fs)
}

#[test]
fn a_snapshot_of_several_mebibytes_is_saved_and_loaded() {
    // The limit is 1 GiB; a 4 MiB state machine is an ordinary one.
    let fs = MemFs::new();
    let store = SnapshotStore::open(fs, DIR).unwrap();
    let big = Snapshot {
        data: Bytes::from(vec![7; 4 << 20]),
        ..snapshot(1, 10)
    };
    store.save(&big).unwrap();
    assert_eq!(store.load_newest(1).unwrap().newest_valid, Some(big));
}

#[test]
fn a_snapshot_above_the_limit_is_refused_before_anything_is_written() {
    let fs = MemFs::new();
    let store = SnapshotStore::open(fs.clone(), DIR).unwrap();
    // Zeroed and never touched: the pages are not allocated.
    let too_big = Snapshot {
        data: Bytes::from(vec![0; SNAPSHOT_BYTES_MAX as usize + 1]),
        ..snapshot(1, 10)
    };
    match store.save(&too_big) {
        Err(Error::RecordTooLarge { bytes, bytes_max }) => {
            assert_eq!(
                (bytes, bytes_max),
                (SNAPSHOT_BYTES_MAX + 1, SNAPSHOT_BYTES_MAX)
            );
        }
        outcome => panic!("expected RecordTooLarge, got {outcome:?}"),
    }
    assert_eq!(fs.operation_count(FaultOperation::Metadata), 0);
    assert_eq!(fs.dir_bytes(Path::new(DIR)), 0);
}

#[test]
fn a_snapshot_of_exactly_the_limit_passes_the_size_check() {
    let fs = MemFs::new();
    let store = SnapshotStore::open(fs.clone(), DIR).unwrap();
    // The save's first file-system call (removing a leftover temporary file) fails, so that the 1 GiB is
    // encoded once but never written: what matters is that the size check let it through.
    fs.fail_nth(FaultOperation::Metadata, 0, FaultError::Io);
    let at_limit = Snapshot {
        data: Bytes::from(vec![0; SNAPSHOT_BYTES_MAX as usize]),
        ..snapshot(1, 10)
    };
    match store.save(&at_limit) {
        Err(Error::Io { operation, .. }) => assert_eq!(operation, "remove temporary snapshot"),
        outcome => panic!("expected the injected fault, got {outcome:?}"),
    }
}

#[test]
fn a_snapshot_file_above_the_limit_is_rejected_unread() {
    let length = HEADER_BYTES + SNAPSHOT_BYTES_MAX + 1;
    let (store, fs) = store_with_file_20_of_length(length);
    let reads = fs.operation_count(FaultOperation::Read);
    let load = store.load_newest(1).unwrap();
    assert_eq!(load.newest_valid, Some(snapshot(1, 10)));
    assert_eq!(
        load.rejected,
        vec![(
            path(1, 20),
            format!("{length} bytes is above the snapshot limit")
        )]
    );
    assert_eq!(
        fs.operation_count(FaultOperation::Read) - reads,
        1,
        "only the file within the limit is read"
    );
}

#[test]
fn a_snapshot_file_of_exactly_the_limit_is_read() {
    // The file says it is as long as the largest snapshot; reading it gives the bytes it really has, the
    // snapshot saved at 20, which is loaded (a file shorter than its stated length is a matter for the file
    // system, not for this limit).
    let (store, _fs) = store_with_file_20_of_length(HEADER_BYTES + SNAPSHOT_BYTES_MAX);
    let load = store.load_newest(1).unwrap();
    assert_eq!(load.newest_valid, Some(snapshot(1, 20)));
    assert!(load.rejected.is_empty(), "{:?}", load.rejected);
}

#[test]
fn a_snapshot_without_data_is_saved_and_loaded() {
    // Its file is a header only, 48 bytes: as short as a snapshot file can be.
    let fs = MemFs::new();
    let store = SnapshotStore::open(fs.clone(), DIR).unwrap();
    let empty = Snapshot {
        data: Bytes::new(),
        ..snapshot(1, 10)
    };
    store.save(&empty).unwrap();
    assert_eq!(
        fs.read_file(&path(1, 10)).map(|bytes| bytes.len() as u64),
        Some(HEADER_BYTES)
    );
    assert_eq!(store.load_newest(1).unwrap().newest_valid, Some(empty));
}

#[test]
fn a_snapshot_file_whose_contents_name_another_group_or_index_is_rejected() {
    let fs = MemFs::new();
    let store = SnapshotStore::open(fs.clone(), DIR).unwrap();
    store.save(&snapshot(1, 10)).unwrap();
    store.save(&snapshot(2, 30)).unwrap();
    // Intact snapshots under the wrong names: group 1's snapshot 10 as its 20 (the index differs), group 2's
    // snapshot 30 as group 1's 30 (the group differs).
    fs.write_file(&path(1, 20), &fs.read_file(&path(1, 10)).unwrap());
    fs.write_file(&path(1, 30), &fs.read_file(&path(2, 30)).unwrap());
    let reason = "group or index differs from the file name".to_owned();
    assert_eq!(
        store.load_newest(1).unwrap(),
        SnapshotLoad {
            newest_valid: Some(snapshot(1, 10)),
            rejected: vec![(path(1, 30), reason.clone()), (path(1, 20), reason)],
        }
    );
}

#[test]
fn only_names_with_two_twenty_digit_numbers_are_snapshot_files() {
    let fs = MemFs::new();
    let store = SnapshotStore::open(fs.clone(), DIR).unwrap();
    store.save(&snapshot(1, 10)).unwrap();
    // Copies of a valid snapshot 20 of group 1 under names that parse as group 1 and index 20 if a number may
    // be short, or have a sign: none is a snapshot file (the store would look for `path(1, 20)`, which does not
    // exist).
    let bytes = {
        let scratch = MemFs::new();
        let scratch_store = SnapshotStore::open(scratch.clone(), DIR).unwrap();
        scratch_store.save(&snapshot(1, 20)).unwrap();
        scratch.read_file(&path(1, 20)).unwrap()
    };
    let foreign = [
        "snapshot-1-20.snap",
        "snapshot-1-00000000000000000020.snap",
        "snapshot-00000000000000000001-20.snap",
        "snapshot-+0000000000000000001-+0000000000000000020.snap",
        "snapshot-00000000000000000001-+0000000000000000020.snap",
    ];
    for name in foreign {
        fs.write_file(&Path::new(DIR).join(name), &bytes);
    }
    assert_eq!(
        store.load_newest(1).unwrap(),
        SnapshotLoad {
            newest_valid: Some(snapshot(1, 10)),
            rejected: Vec::new(),
        }
    );
    // Nor are they pruned as older snapshots.
    store.save(&snapshot(1, 30)).unwrap();
    store.save(&snapshot(1, 40)).unwrap();
    let mut names = fs.list(Path::new(DIR)).unwrap();
    names.retain(|name| foreign.contains(&name.as_str()));
    assert_eq!(names.len(), foreign.len(), "{names:?}");
}

#[test]
fn a_save_that_cannot_clear_its_temporary_name_fails() {
    // A temporary file left by a crashed save is removed before the new one is written; when that removal fails
    // (not because there is nothing to remove), the save fails and says so.
    let fs = MemFs::new();
    let store = SnapshotStore::open(fs.clone(), DIR).unwrap();
    store.save(&snapshot(1, 10)).unwrap();
    let temporary =
        Path::new(DIR).join("snapshot-00000000000000000001-00000000000000000020.snap.tmp");
    fs.write_file(&temporary, b"half a snapshot");
    fs.fail_nth(FaultOperation::Metadata, 0, FaultError::Io);
    match store.save(&snapshot(1, 20)) {
        Err(Error::Io {
            operation, path, ..
        }) => assert_eq!((operation, path), ("remove temporary snapshot", temporary)),
        outcome => panic!("expected the removal to fail, got {outcome:?}"),
    }
    assert_eq!(
        store.load_newest(1).unwrap().newest_valid,
        Some(snapshot(1, 10))
    );
}
