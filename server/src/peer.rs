//! What servers say to each other over the transport: Raft messages, snapshots in chunks, and
//! requests the router forwards to a shard's leader.

use bytes::Bytes;
use client::{Request, Response, ShardId};
use raft_core::{GroupId, Message, NodeId, SnapshotMeta};
use serde::{Deserialize, Serialize};

/// The most snapshot bytes one chunk carries: well inside the transport's 16 MiB frames, so a
/// snapshot of any size crosses as a stream of frames that other traffic interleaves with.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// One server-to-server message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// A Raft message (never an `InstallSnapshot`: those travel as chunks).
    Raft(Message),
    /// One piece of an `InstallSnapshot` message.
    SnapshotChunk(SnapshotChunk),
    /// A request for the receiver to execute on its own replica of `shard` (never forwarded
    /// again: a receiver that does not lead answers `not_leader` with its hint).
    Forward {
        /// Chosen by the sender; echoed in the reply.
        id: u64,
        /// The shard the request is for (`None` for server-wide requests).
        shard: Option<ShardId>,
        /// The request.
        request: Request,
    },
    /// The answer to a [`PeerMessage::Forward`].
    ForwardReply {
        /// The forward's id.
        id: u64,
        /// The answer.
        response: Response,
    },
}

/// A piece of a snapshot on its way from a leader to one follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The group.
    pub group_id: GroupId,
    /// The leader.
    pub from: NodeId,
    /// The follower.
    pub to: NodeId,
    /// The leader's term.
    pub term: u64,
    /// What the whole snapshot covers.
    pub meta: SnapshotMeta,
    /// Total bytes of the snapshot's data.
    pub total_bytes: u64,
    /// Where this chunk starts in the data.
    pub offset: u64,
    /// The chunk's bytes.
    pub data: Bytes,
}
