//! What a server can report of its replicas' progress as it happens: the simulator's checkers
//! listen here (at most one leader per term, the same entry at every index on every replica).
//! Production servers run without an observer.

use client::{ServerId, ShardId};
use kv::Change;

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

    /// A replica applied the entry at `index`, which made `changes` (in order); the gateway
    /// publishes them as they are. Every replica makes the same changes at the same index.
    fn changes_applied(&self, server: ServerId, shard: ShardId, index: u64, changes: &[Change]) {
        let _ = (server, shard, index, changes);
    }

    /// A replica applied the write `seq` of client `client_id` at `index`, and it took effect
    /// (not answered from the session table). Exactly-once: a write takes effect at one index.
    fn write_took_effect(
        &self,
        server: ServerId,
        shard: ShardId,
        index: u64,
        client_id: u64,
        seq: u64,
    ) {
        let _ = (server, shard, index, client_id, seq);
    }

    /// The leader of `term` stamped a write it proposes with `stamped_ms` of the shard's
    /// clock, read from its wall clock if `from_wall_clock` (only while no stamp of the shard
    /// was committed in a term up to this one). The shard's clock never runs faster than time.
    fn write_stamped(
        &self,
        server: ServerId,
        shard: ShardId,
        term: u64,
        stamped_ms: u64,
        from_wall_clock: bool,
    ) {
        let _ = (server, shard, term, stamped_ms, from_wall_clock);
    }

    /// A replica started from what its disk kept: its `term`, its `vote` in that term
    /// (`raft_core::NO_NODE` if none) and the index its log ends at. Every vote a replica
    /// granted before a crash must be there (a vote forgotten lets it vote twice in one term),
    /// and its log must reach as far as it had made durable ([`Observer::log_durable`]).
    fn replica_started(
        &self,
        server: ServerId,
        shard: ShardId,
        term: u64,
        vote: ServerId,
        last_index: u64,
    ) {
        let _ = (server, shard, term, vote, last_index);
    }

    /// A replica's log is durable up to `last_index` and ends there (a write that replaced a
    /// suffix may end it lower than before): what it acknowledged must survive a crash.
    fn log_durable(&self, server: ServerId, shard: ShardId, last_index: u64) {
        let _ = (server, shard, last_index);
    }

    /// A new, empty replica of `shard` was created on `server` (it joined the shard): what
    /// an earlier replica of the shard there made durable is not its to keep.
    fn replica_created(&self, server: ServerId, shard: ShardId) {
        let _ = (server, shard);
    }

    /// A replica's commit index is `commit` (reported before any message that carries it
    /// leaves); the replica is in `term`, leads it if `leader`, and holds the entry at `commit`
    /// with term `commit_term` (`None` if compacted away). A leader may move its commit index
    /// only to an entry of its own term (Raft §5.4.2).
    fn commit_reported(
        &self,
        server: ServerId,
        shard: ShardId,
        term: u64,
        leader: bool,
        commit: u64,
        commit_term: Option<u64>,
    ) {
        let _ = (server, shard, term, leader, commit, commit_term);
    }

    /// A replica sent its vote for `candidate` in `term` (after making it durable).
    fn vote_granted(&self, server: ServerId, shard: ShardId, term: u64, candidate: ServerId) {
        let _ = (server, shard, term, candidate);
    }

    /// A replica answered a linearizable read from its state at `state_index` (its applied
    /// index when it answered); the read reached this server's node loop at `arrived`. Raft's
    /// read rule: that state holds every entry committed anywhere before `arrived`.
    fn read_served(
        &self,
        server: ServerId,
        shard: ShardId,
        arrived: tokio::time::Instant,
        state_index: u64,
    ) {
        let _ = (server, shard, arrived, state_index);
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
