//! What a server can report of its replicas' progress as it happens: the simulator's checkers
//! listen here (at most one leader per term, the same entry at every index on every replica).
//! Production servers run without an observer.

use client::{ServerId, ShardId};

/// Receives a server's progress reports. Calls come from the node loop: keep them short.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// A replica became leader of its shard in `term`.
    fn leader_elected(&self, server: ServerId, shard: ShardId, term: u64) {
        let _ = (server, shard, term);
    }

    /// A replica applied the committed entry at `index` (of `term`), whose kind and bytes
    /// hash to `fingerprint`.
    fn entry_applied(
        &self,
        server: ServerId,
        shard: ShardId,
        index: u64,
        term: u64,
        fingerprint: u64,
    ) {
        let _ = (server, shard, index, term, fingerprint);
    }

    /// A replica replaced its state with a snapshot ending at `index` (the entries up to it
    /// were applied elsewhere and are not reported by this replica).
    fn snapshot_installed(&self, server: ServerId, shard: ShardId, index: u64) {
        let _ = (server, shard, index);
    }
}

/// FNV-1a over an entry's kind and bytes: equal entries give equal fingerprints.
pub(crate) fn fingerprint(kind: raft_core::EntryKind, data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let kind_byte = match kind {
        raft_core::EntryKind::Normal => 0u8,
        raft_core::EntryKind::ConfChange => 1u8,
    };
    for byte in std::iter::once(&kind_byte).chain(data) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
