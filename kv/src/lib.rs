//! The deterministic, transactional, ordered key-value state machine that every replica of a Raft
//! group applies its committed entries to.
//!
//! # What it promises
//!
//! - **Deterministic apply.** The same entries applied in the same order give the same state, the same
//!   answers and byte-identical [`StateMachine::snapshot`]s on every replica. The machine reads no
//!   clock (its clock is the largest [`Command::timestamp_ms`] seen), draws no random number, starts no
//!   thread and iterates no hash map: nothing observable depends on the process it runs in.
//! - **No I/O.** Entries come in as bytes, answers and [`Change`]s go out as values, and persistence is
//!   the caller's: [`StateMachine::snapshot`] gives bytes and [`StateMachine::restore`] takes them back.
//! - **Hostile bytes never panic.** Entry data that does not decode gives an
//!   [`ApplyError::Malformed`] outcome, is counted in [`Metrics::malformed_entries`], and still moves
//!   the applied index; snapshot bytes that do not decode, or that break an invariant, give a
//!   [`DecodeError`].
//! - **Transactions** ([`Txn`]) compare, then run one branch of puts, deletes and gets atomically, in
//!   the spirit of etcd's `Txn`. Every key carries the log index that created it and the one that last
//!   wrote it ([`Versioned`]).
//! - **Exactly once**, within limits. A command with a client id and a sequence number is applied once:
//!   a retry is answered from the session table ([`Applied::duplicate`]). A retry of a sequence number
//!   the client acknowledged, or whose answer was evicted by [`Limits::answers_per_session_max`], gets
//!   [`ApplyError::SequenceForgotten`]. The limit: a session idle for longer than
//!   [`Limits::session_idle_ms_max`], or evicted by [`Limits::sessions_max`], is forgotten whole, and a
//!   later retry of one of its writes applies again (as with the Raft thesis' sessions, 6.3).
//!
//! # Example
//!
//! ```
//! use kv::{Applied, Bytes, Command, Compare, Limits, Op, StateMachine, Txn, Write, WriteResult};
//!
//! let mut machine = StateMachine::new(Limits::default());
//! let put = Command {
//!     client_id: 7,
//!     seq: 1,
//!     first_unacked_seq: 1,
//!     timestamp_ms: 1_000,
//!     write: Write::Put { key: Bytes::from("alice/1"), value: Bytes::from("team meeting") },
//! };
//! let first = machine.apply(1, &put.encode());
//! assert_eq!(first.result, Ok(WriteResult::Put { previous: None }));
//! assert_eq!(machine.get(b"alice/1").unwrap().create_index, 1);
//!
//! // The same command again (a client retry through a new leader) is answered, not applied.
//! let retry = machine.apply(2, &put.encode());
//! assert!(retry.duplicate);
//! assert_eq!(retry.result, first.result);
//! assert_eq!(machine.get(b"alice/1").unwrap().mod_index, 1);
//!
//! // A txn: move the event only if nobody changed it since index 1.
//! let txn = Txn {
//!     compares: vec![Compare::ModIndexEquals { key: Bytes::from("alice/1"), mod_index: 1 }],
//!     success: vec![
//!         Op::Delete { key: Bytes::from("alice/1") },
//!         Op::Put { key: Bytes::from("alice/2"), value: Bytes::from("team meeting") },
//!     ],
//!     failure: vec![Op::Get { key: Bytes::from("alice/1") }],
//! };
//! let command = Command { client_id: 7, seq: 2, first_unacked_seq: 2, timestamp_ms: 1_500, write: Write::Txn(txn) };
//! let Applied { result, changes, .. } = machine.apply(3, &command.encode());
//! assert!(matches!(result, Ok(WriteResult::Txn { succeeded: true, .. })));
//! assert_eq!(changes.len(), 2);
//!
//! // Garbage is an outcome, not a panic.
//! assert!(machine.apply(4, b"\xff garbage").result.is_err());
//!
//! // Replicas compare their state by digest; a snapshot restores it exactly.
//! let restored = StateMachine::restore(Limits::default(), &machine.snapshot())?;
//! assert_eq!(restored.digest(), machine.digest());
//! assert_eq!(restored.applied_index(), 4);
//! # Ok::<(), kv::DecodeError>(())
//! ```

mod codec;
mod command;
mod machine;
mod outcome;
#[cfg(madsim)]
pub mod planted;
mod session;
mod store;

pub use bytes::Bytes;

pub use codec::{DecodeError, SNAPSHOT_FORMAT};
pub use command::{COMMAND_FORMAT, Command, Compare, Op, Txn, Write};
pub use machine::{Limits, Metrics, StateMachine, TXN_OPS_MAX};
pub use outcome::{Applied, ApplyError, Change, OpResult, Version, Versioned, WriteResult};
