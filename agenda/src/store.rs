//! The seam between the agenda and the key-value store: [`Store`] (what the layer needs of the
//! store: reads and one-shard transactions), [`Env`] (the clock and the random source), and
//! [`Tx`], the optimistic transaction every operation is written with.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use kv::{Compare, Op, OpResult, Txn, Versioned};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{AgendaError, StoreError};

/// What the agenda needs of the sharded store. Reads are linearizable; a transaction touches keys
/// of one shard only and is applied exactly once (the implementation retries it under one
/// request identity).
///
/// The server implements it over its service door (with every key allowed: the layer enforces its
/// own rules), the client library over the native protocol, and [`crate::memory::MemStore`] over
/// one in-process state machine for tests.
pub trait Store: Send + Sync {
    /// Reads one key.
    fn get(&self, key: Bytes)
    -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;

    /// Reads at most `limit` keys of `[start, end)` in order; `more` says whether keys remain.
    fn scan(
        &self,
        start: Bytes,
        end: Bytes,
        limit: u32,
    ) -> impl Future<Output = Result<Scanned, StoreError>> + Send;

    /// Commits a transaction on one shard.
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<Committed, StoreError>> + Send;
}

/// The answer to [`Store::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The keys found, in order.
    pub entries: Vec<(Bytes, Versioned)>,
    /// Whether keys remain in the range after the last one returned.
    pub more: bool,
}

/// The answer to [`Store::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Whether every compare held (the success branch ran).
    pub succeeded: bool,
    /// The results of the branch that ran.
    pub results: Vec<OpResult>,
    /// The shard and log index that applied it: the position of its notifications.
    pub position: (u64, u64),
}

/// The clock and the random source of the process the layer runs in (the server's, the
/// simulator's seeded ones, or a test's).
pub trait Env: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// 32 unpredictable bytes (session tokens, event ids, password salts).
    fn random(&self) -> [u8; 32];

    /// Runs `work`, one password hash or check (Argon2id: by default 19 MiB and tens of
    /// milliseconds of CPU), and gives its result. By default at once, on the calling task: right
    /// for tests and the simulator. A server on an async runtime runs it off the runtime's
    /// threads, so that a flood of logins does not stall every other request, and may refuse
    /// with [`AgendaError::Unavailable`] (nothing written) when too many wait.
    fn password_work<T, F>(&self, work: F) -> PasswordWork<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        Box::pin(async move { Ok(work()) })
    }
}

/// What [`Env::password_work`] gives: a boxed future, so that it names no lifetime of its
/// caller (an opaque type that did would not be provably `Send` in the server's handlers).
pub type PasswordWork<T> = Pin<Box<dyn Future<Output = Result<T, AgendaError>> + Send>>;

/// How many times an operation re-reads and retries when other writers changed what it read.
pub const ATTEMPTS_MAX: usize = 16;

/// The keys a scan reads at most, for the lists the layer reads whole (a group's members, a
/// user's events): beyond it an operation refuses rather than acting on a partial list.
pub const LIST_KEYS_MAX: u32 = 10_000;

/// An optimistic transaction: every key read through it becomes a compare (its `mod_index`, or
/// its absence), so the writes commit only if nothing read has changed since. Scans add no
/// compares: an operation that depends on a list also reads (and so compares) the record that
/// every change of that list rewrites (a group's record for its members, for instance).
pub struct Tx<'s, S: Store> {
    store: &'s S,
    compares: Vec<Compare>,
    ops: Vec<Op>,
}

impl<'s, S: Store> Tx<'s, S> {
    /// A transaction over `store` with nothing read yet.
    pub fn new(store: &'s S) -> Tx<'s, S> {
        Tx {
            store,
            compares: Vec::new(),
            ops: Vec::new(),
        }
    }

    /// Reads a key and makes the commit depend on it staying as read.
    pub async fn get(&mut self, key: Bytes) -> Result<Option<Versioned>, AgendaError> {
        let found = self.store.get(key.clone()).await?;
        self.compares.push(match &found {
            Some(versioned) => Compare::ModIndexEquals {
                key,
                mod_index: versioned.mod_index,
            },
            None => Compare::Absent { key },
        });
        Ok(found)
    }

    /// Reads a key and decodes its JSON record.
    pub async fn get_record<T: DeserializeOwned>(
        &mut self,
        key: Bytes,
    ) -> Result<Option<T>, AgendaError> {
        let found = self.get(key.clone()).await?;
        found
            .map(|versioned| decode(&key, &versioned.value))
            .transpose()
    }

    /// Reads every key under `prefix` (at most [`LIST_KEYS_MAX`]), without compares.
    pub async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Versioned)>, AgendaError> {
        scan_prefix(self.store, prefix).await
    }

    /// Writes a JSON record when the transaction commits.
    pub fn put_record<T: Serialize>(&mut self, key: Bytes, record: &T) {
        self.ops.push(Op::Put {
            key,
            value: encode(record),
        });
    }

    /// Removes a key when the transaction commits.
    pub fn delete(&mut self, key: Bytes) {
        self.ops.push(Op::Delete { key });
    }

    /// Commits: `Ok(Some(position))` if nothing read had changed (the writes are applied),
    /// `Ok(None)` if something had (nothing is written; read again and retry).
    pub async fn commit(self) -> Result<Option<(u64, u64)>, AgendaError> {
        if self.ops.is_empty() {
            return Ok(Some((0, 0)));
        }
        let committed = self
            .store
            .txn(Txn {
                compares: self.compares,
                success: self.ops,
                failure: Vec::new(),
            })
            .await?;
        Ok(committed.succeeded.then_some(committed.position))
    }
}

/// Reads every key under `prefix` (at most [`LIST_KEYS_MAX`]; more is refused as too large).
pub async fn scan_prefix<S: Store>(
    store: &S,
    prefix: &[u8],
) -> Result<Vec<(Bytes, Versioned)>, AgendaError> {
    let end = prefix_end(prefix);
    let mut start = Bytes::copy_from_slice(prefix);
    let mut entries: Vec<(Bytes, Versioned)> = Vec::new();
    // A store may answer a part (it bounds an answer's bytes too): page until the end.
    loop {
        let left = LIST_KEYS_MAX.saturating_sub(entries.len() as u32) + 1;
        let scanned = store.scan(start, end.clone(), left).await?;
        let Some((last, _)) = scanned.entries.last() else {
            break;
        };
        let mut next = last.to_vec();
        next.push(0);
        start = Bytes::from(next);
        entries.extend(scanned.entries);
        if entries.len() > LIST_KEYS_MAX as usize {
            return Err(AgendaError::invalid(
                "list",
                format!(
                    "more than {LIST_KEYS_MAX} records under {}",
                    String::from_utf8_lossy(prefix)
                ),
            ));
        }
        if !scanned.more {
            break;
        }
    }
    Ok(entries)
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::new()
}

/// A record's stored form: JSON, so that an operator's `kv get` and a `kv:` subscriber read it.
pub fn encode<T: Serialize>(record: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(record).expect("agenda records always serialize"))
}

/// Decodes a stored record; bytes that do not decode are [`AgendaError::Corrupt`].
pub fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, AgendaError> {
    serde_json::from_slice(value).map_err(|error| AgendaError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: error.to_string(),
    })
}

/// Lowercase hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_next_prefix() {
        assert_eq!(&prefix_end(b"ev/am/")[..], b"ev/am0");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"\xff")[..], b"");
    }
}
