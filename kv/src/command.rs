//! What clients submit: the [`Command`] carried by a Raft entry, its [`Write`], and their encoding.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// The first byte of an encoded [`Command`]: the format of what follows (postcard).
pub const COMMAND_FORMAT: u8 = 1;

/// A compare of a txn: a condition on the state as it was before the txn ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// Holds if the key exists with exactly this value.
    ValueEquals {
        /// The key to look at.
        key: Bytes,
        /// The value it must hold.
        value: Bytes,
    },
    /// Holds if the key exists and was last written by the entry at this log index.
    ModIndexEquals {
        /// The key to look at.
        key: Bytes,
        /// The log index of its last write.
        mod_index: u64,
    },
    /// Holds if the key does not exist.
    Absent {
        /// The key to look at.
        key: Bytes,
    },
    /// Holds if the key exists, whatever its value.
    Exists {
        /// The key to look at.
        key: Bytes,
    },
}

/// One operation of a txn branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets a key's value, creating the key if it is absent.
    Put {
        /// The key to write.
        key: Bytes,
        /// Its new value.
        value: Bytes,
    },
    /// Removes a key; removing an absent key changes nothing.
    Delete {
        /// The key to remove.
        key: Bytes,
    },
    /// Reads a key as the earlier operations of the same branch left it.
    Get {
        /// The key to read.
        key: Bytes,
    },
}

/// A transaction: if every compare holds (an empty list holds), run `success` in order, else run `failure`.
///
/// A txn is applied atomically. Each list holds at most [`TXN_OPS_MAX`](crate::TXN_OPS_MAX) items;
/// a larger txn is refused whole with [`ApplyError::TooLarge`](crate::ApplyError::TooLarge).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Txn {
    /// The conditions, all evaluated against the state before the txn.
    pub compares: Vec<Compare>,
    /// The operations run when every compare holds.
    pub success: Vec<Op>,
    /// The operations run when some compare does not hold.
    pub failure: Vec<Op>,
}

/// A write submitted through Raft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Sets a key's value.
    Put {
        /// The key to write.
        key: Bytes,
        /// Its new value.
        value: Bytes,
    },
    /// Removes a key.
    Delete {
        /// The key to remove.
        key: Bytes,
    },
    /// Removes every key in `[start, end)`; an empty `end` means "to the end of the key space".
    /// A range whose non-empty `end` is not above `start` is empty.
    DeleteRange {
        /// The first key of the range (included).
        start: Bytes,
        /// The key after the range (excluded), or empty for no upper bound.
        end: Bytes,
    },
    /// A conditional, atomic group of operations.
    Txn(Txn),
}

/// What a client's write asks, with its exactly-once identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The client's session; 0 means no session: the write is applied without deduplication.
    pub client_id: u64,
    /// The client's sequence number, starting at 1 and increasing with each new write (a retry
    /// reuses the sequence number of the write it repeats).
    pub seq: u64,
    /// The client has received answers to every seq below this one, so the machine may forget them.
    pub first_unacked_seq: u64,
    /// The proposing leader's clock in milliseconds (the server's shard clock). Only session
    /// expiry uses it, through the machine's clock, which is the largest timestamp seen and so
    /// never goes back.
    pub timestamp_ms: u64,
    /// The write itself.
    pub write: Write,
}

impl Command {
    /// Encodes the command as a Raft entry's data: [`COMMAND_FORMAT`] then postcard.
    pub fn encode(&self) -> Bytes {
        // Serializing into a Vec fails only for types serde cannot express; ours are plain data.
        let out =
            postcard::to_extend(self, vec![COMMAND_FORMAT]).expect("a Command always serializes");
        Bytes::from(out)
    }

    /// Decodes an entry's data. Any bytes give a command or an error, never a panic; trailing bytes
    /// after the command are an error, so one command has exactly one encoding accepted here.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let body = crate::codec::strip_format(bytes, COMMAND_FORMAT)?;
        crate::codec::postcard_exact(body)
    }
}
