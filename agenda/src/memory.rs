//! [`MemStore`]: the agenda's [`Store`] over in-process key-value state machines, one per shard of
//! the default map, for tests and examples. It applies each transaction through the real
//! [`kv::StateMachine`], refuses transactions that span shards exactly as the router does, and can
//! be told to lose the answer of the next writes (applied, but reported unavailable), which is
//! what a client sees when a leader crashes after committing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use kv::{Command, Limits, StateMachine, Txn, Versioned, Write, WriteResult};

use crate::error::StoreError;
use crate::store::{Committed, Env, Scanned, Store};

/// The first key of each shard of the default map (see ARCHITECTURE.md): events a–m, events
/// n–z, groups, users.
pub const SHARD_STARTS: [&[u8]; 4] = [b"", b"ev/nz/", b"gr/", b"us/"];

/// The shard (1 to 4) that holds `key` in the default map.
pub fn shard_of(key: &[u8]) -> u64 {
    SHARD_STARTS
        .iter()
        .rposition(|start| key >= *start)
        .map_or(1, |position| position as u64 + 1)
}

/// Four in-process state machines behind the [`Store`] trait.
pub struct MemStore {
    shards: Mutex<Vec<(u64, StateMachine)>>,
    answers_to_lose: AtomicU64,
    transactions: AtomicU64,
}

impl Default for MemStore {
    fn default() -> MemStore {
        MemStore::new()
    }
}

impl MemStore {
    /// Four empty shards.
    pub fn new() -> MemStore {
        MemStore {
            shards: Mutex::new(
                (0..SHARD_STARTS.len())
                    .map(|_| (0, StateMachine::new(Limits::default())))
                    .collect(),
            ),
            answers_to_lose: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
        }
    }

    /// The next `count` transactions are applied but answered [`StoreError::Unavailable`].
    pub fn lose_answers(&self, count: u64) {
        self.answers_to_lose.store(count, Ordering::SeqCst);
    }

    /// How many transactions were applied (including those whose answer was lost).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::SeqCst)
    }

    /// Every key and value of every shard, in key order (for assertions).
    pub fn dump(&self) -> Vec<(Bytes, Bytes)> {
        let shards = self
            .shards
            .lock()
            .expect("a test panicked holding the store");
        shards
            .iter()
            .flat_map(|(_, machine)| machine.scan(b"", b"", usize::MAX).0)
            .map(|(key, versioned)| (key, versioned.value))
            .collect()
    }
}

impl Store for MemStore {
    async fn get(&self, key: Bytes) -> Result<Option<Versioned>, StoreError> {
        let shards = self
            .shards
            .lock()
            .expect("a test panicked holding the store");
        let (_, machine) = &shards[shard_of(&key) as usize - 1];
        Ok(machine.get(&key).cloned())
    }

    async fn scan(&self, start: Bytes, end: Bytes, limit: u32) -> Result<Scanned, StoreError> {
        // Ranges the layer scans are prefixes inside one shard.
        let shards = self
            .shards
            .lock()
            .expect("a test panicked holding the store");
        let (_, machine) = &shards[shard_of(&start) as usize - 1];
        let (entries, more) = machine.scan(&start, &end, limit as usize);
        Ok(Scanned { entries, more })
    }

    async fn txn(&self, txn: Txn) -> Result<Committed, StoreError> {
        let write = Write::Txn(txn);
        let keys = client_keys(&write);
        let Some(first) = keys.first() else {
            return Err(StoreError::Refused("a transaction without keys".into()));
        };
        let shard = shard_of(first);
        if keys.iter().any(|key| shard_of(key) != shard) {
            return Err(StoreError::Refused(
                "cross_shard: a transaction's keys must belong to one shard".into(),
            ));
        }
        let mut shards = self
            .shards
            .lock()
            .expect("a test panicked holding the store");
        let (last_index, machine) = &mut shards[shard as usize - 1];
        *last_index += 1;
        let index = *last_index;
        let command = Command {
            client_id: 0,
            seq: 0,
            first_unacked_seq: 0,
            timestamp_ms: 0,
            write,
        };
        let applied = machine.apply(index, &command.encode());
        self.transactions.fetch_add(1, Ordering::SeqCst);
        let lose = self
            .answers_to_lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        match applied.result {
            Ok(WriteResult::Txn { succeeded, results }) if !lose => Ok(Committed {
                succeeded,
                results,
                position: (shard, index),
            }),
            Ok(_) => Err(StoreError::Unavailable(
                "the answer was lost (test fault)".into(),
            )),
            Err(error) => Err(StoreError::Refused(error.to_string())),
        }
    }
}

/// Every key a write touches.
fn client_keys(write: &Write) -> Vec<Bytes> {
    let Write::Txn(txn) = write else {
        return Vec::new();
    };
    let compared = txn.compares.iter().map(|compare| match compare {
        kv::Compare::ValueEquals { key, .. }
        | kv::Compare::ModIndexEquals { key, .. }
        | kv::Compare::Absent { key }
        | kv::Compare::Exists { key } => key.clone(),
    });
    let operated = txn.success.iter().chain(&txn.failure).map(|op| match op {
        kv::Op::Put { key, .. } | kv::Op::Delete { key } | kv::Op::Get { key } => key.clone(),
    });
    compared.chain(operated).collect()
}

/// A test's clock (set by hand) and random source (a counter through SHA-256: deterministic).
pub struct TestEnv {
    now_ms: AtomicU64,
    draws: AtomicU64,
}

impl TestEnv {
    /// A clock at `now_ms`.
    pub fn at(now_ms: i64) -> TestEnv {
        TestEnv {
            now_ms: AtomicU64::new(now_ms as u64),
            draws: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.now_ms.fetch_add(ms as u64, Ordering::SeqCst);
    }
}

impl Env for TestEnv {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst) as i64
    }

    fn random(&self) -> [u8; 32] {
        use sha2::Digest;
        let draw = self.draws.fetch_add(1, Ordering::SeqCst);
        sha2::Sha256::digest(draw.to_le_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_route_by_the_default_map() {
        assert_eq!(shard_of(b"ev/am/alice/e/1"), 1);
        assert_eq!(shard_of(b"ev/nz/bob/e/1"), 2);
        assert_eq!(shard_of(b"gr/g/team/info"), 3);
        assert_eq!(shard_of(b"us/alice/account"), 4);
        assert_eq!(shard_of(b""), 1);
    }
}
