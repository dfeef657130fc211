//! What applying an entry gives back: results, errors, changes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A key's value with the log indexes that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The index of the write that created the key; overwrites keep it, a delete then a put renews it.
    pub create_index: u64,
    /// The index of the last write of the key.
    pub mod_index: u64,
}

/// The versions of a key as a write found it, without its value: a write's answer (kept in the
/// exactly-once table until the client acknowledges it) stays small whatever the values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The index of the write that created the key.
    pub create_index: u64,
    /// The index of the last write of the key.
    pub mod_index: u64,
}

impl From<&Versioned> for Version {
    fn from(versioned: &Versioned) -> Version {
        Version {
            create_index: versioned.create_index,
            mod_index: versioned.mod_index,
        }
    }
}

/// The result of one operation of a txn branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// An [`Op::Put`](crate::Op::Put) ran.
    Put {
        /// The key's versions before the put, if it existed.
        previous: Option<Version>,
    },
    /// An [`Op::Delete`](crate::Op::Delete) ran.
    Delete {
        /// The key's versions before the delete, if it existed.
        previous: Option<Version>,
    },
    /// An [`Op::Get`](crate::Op::Get) ran.
    Get {
        /// The key as the earlier operations of the branch left it.
        current: Option<Versioned>,
    },
}

/// The result of an applied [`Write`](crate::Write).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    /// A [`Write::Put`](crate::Write::Put) was applied.
    Put {
        /// The key's versions before the put, if it existed.
        previous: Option<Version>,
    },
    /// A [`Write::Delete`](crate::Write::Delete) was applied.
    Delete {
        /// The key's versions before the delete, if it existed.
        previous: Option<Version>,
    },
    /// A [`Write::DeleteRange`](crate::Write::DeleteRange) was applied.
    DeleteRange {
        /// How many keys it removed.
        deleted: u64,
    },
    /// A [`Write::Txn`](crate::Write::Txn) was applied.
    Txn {
        /// Whether every compare held (so `success` ran) or not (so `failure` ran).
        succeeded: bool,
        /// The results of the branch that ran, in order.
        results: Vec<OpResult>,
    },
}

/// Why a write was not applied. Every replica decides this alike, from the entry and the state alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// The entry's bytes do not decode as a [`Command`](crate::Command). Nothing was applied; the
    /// proposer sent garbage (or a newer format), and resending it will not help.
    #[error("malformed entry: {reason}")]
    Malformed {
        /// What the decoder found wrong.
        reason: String,
    },
    /// A retry of a seq whose answer the machine no longer holds: the client acknowledged it
    /// (`first_unacked_seq` passed it), or it was evicted by the per-session answer bound. Nothing was
    /// applied now; the write may or may not have been applied earlier, and the client must not resend it.
    #[error(
        "client {client_id}: seq {seq} is below {first_unacked_seq}, its answer is forgotten; do not resend it"
    )]
    SequenceForgotten {
        /// The client.
        client_id: u64,
        /// The seq it sent.
        seq: u64,
        /// The lowest seq whose answer the session may still hold.
        first_unacked_seq: u64,
    },
    /// A txn with more than [`TXN_OPS_MAX`](crate::TXN_OPS_MAX) compares or operations in a branch.
    /// Nothing was applied.
    #[error("txn too large: {reason}")]
    TooLarge {
        /// Which list is too long.
        reason: String,
    },
}

/// One key's change, for notifications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The key that changed.
    pub key: Bytes,
    /// Its new value, or `None` if it was deleted.
    pub value: Option<Bytes>,
}

/// The outcome of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The entry's log index.
    pub index: u64,
    /// The index at which the write was first applied: `index`, unless this entry is a
    /// duplicate answered from the session table (then the original's index, so that a retry
    /// is answered exactly as the first attempt was).
    pub first_applied_index: u64,
    /// The write's result, or why it was not applied.
    pub result: Result<WriteResult, ApplyError>,
    /// Every put and every delete that changed something, in the order they ran; empty for a duplicate.
    pub changes: Vec<Change>,
    /// True when the answer came from the session table, without applying the write again.
    pub duplicate: bool,
}
