//! `raft-core`: the Raft consensus protocol as a deterministic, sans-IO state machine.
//!
//! # What this crate promises
//!
//! * **No I/O.** It reads no clock, starts no thread, opens no socket or file and knows
//!   nothing of tokio. Time is [`Node::tick`]; randomness (election timeouts only) comes from
//!   [`Config::seed`]. The same configuration, seed and inputs give the same outputs, byte for
//!   byte.
//! * **Safety** as in the Raft paper: at most one leader per term, log matching, a committed
//!   entry is never lost, every replica applies the same entries in the same order; only
//!   entries of the leader's own term are committed by counting (Figure 8), and a new leader
//!   appends a no-op.
//! * **Hostile input never panics.** [`Node::step`] drops (and counts in [`Metrics`]) or
//!   answers messages from other groups, non-members, stale terms, with absurd indexes, or
//!   duplicated and reordered. Panics are reserved for misuse of the API, and documented.
//! * **Made for multi-raft.** Every [`Message`] carries its [`GroupId`]. An idle node
//!   allocates nothing per tick, and its buffers shrink back after bursts.
//!
//! Features: pre-vote, check-quorum with leader stickiness, fast log backtracking,
//! per-follower probe / replicate / snapshot flow control with inflight limits, batched
//! proposals with a bound on uncommitted bytes, ReadIndex and lease reads, snapshots and
//! compaction, learners and one-at-a-time membership changes, and leadership transfer.
//!
//! # The obligations of the runtime
//!
//! The runtime owns the I/O. For each [`Ready`] it must, in this order:
//!
//! 1. **persist** the snapshot, the entries and the hard state, durably (fsync);
//! 2. **send** `messages` (allowed before step 1 too) and then `persisted_messages` (only
//!    after step 1: they acknowledge state that must survive a crash, such as a vote or an
//!    appended entry);
//! 3. **apply** the snapshot and then the committed entries to the application;
//! 4. serve the `read_states` once their index is applied;
//! 5. **advance**: call [`Node::advance`] with the Ready's number.
//!
//! The leader counts itself toward a commit only after `advance` confirms that its own entries
//! are durable.
//!
//! # Example: a single-node group, driven by hand
//!
//! ```
//! use bytes::Bytes;
//! use raft_core::{Config, InitialState, Node, Role};
//!
//! let mut node = Node::new(Config::new(1, 7), InitialState::bootstrap(&[1])).unwrap();
//! let mut durable_log = Vec::new();
//! let mut applied = Vec::new();
//!
//! // Time passes until the node elects itself.
//! while node.role() != Role::Leader {
//!     node.tick();
//! }
//! let index = node.propose(Bytes::from_static(b"hello")).unwrap();
//!
//! // The node loop: persist, send, apply, advance, until there is nothing left to do.
//! while node.has_ready() {
//!     let ready = node.ready();
//!     durable_log.truncate(ready.entries.first().map_or(durable_log.len(), |e| e.index as usize - 1));
//!     durable_log.extend(ready.entries.iter().cloned()); // 1. persist (a real runtime fsyncs)
//!     assert!(ready.messages.is_empty() && ready.persisted_messages.is_empty()); // 2. send
//!     for entry in &ready.committed_entries {
//!         applied.push(entry.data.clone()); // 3. apply
//!     }
//!     node.advance(ready.number); // 5. advance
//! }
//! assert_eq!(node.commit_index(), index);
//! assert_eq!(applied.last().unwrap(), &Bytes::from_static(b"hello"));
//! ```
//!
//! The [`testing`] module (feature `testing`) drives many nodes over a simulated network with
//! faults; the simulator and other crates reuse it.

#![deny(missing_docs)]

mod config;
mod error;
mod log;
mod membership;
mod message;
mod node;
#[cfg(madsim)]
pub mod planted;
mod progress;
mod rng;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Config, ReadMode};
pub use error::{
    CompactError, ConfigError, InitError, ProposeError, ReadError, StepError, TransferError,
};
pub use message::{
    ConfChange, ConfState, Entry, EntryKind, GroupId, HardState, INDEX_AND_TERM_MAX, Message,
    MessageBody, NO_NODE, NodeId, ReadState, Snapshot, SnapshotMeta,
};
pub use node::{InitialState, Metrics, Node, Ready, Role, SoftState};
pub use progress::{Progress, ProgressState};
