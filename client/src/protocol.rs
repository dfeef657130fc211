//! The native client protocol: what a client sends to any server and what it gets back.
//!
//! A connection carries frames of the project's transport framing (`net::codec`: a 4-byte
//! big-endian length, a kind byte, a postcard body). The first frame from the client is a
//! [`ClientFrame`] holding [`Request::Hello`] with an operator token; every later frame is a
//! [`ClientFrame`] with a request id chosen by the client, and the server answers each with a
//! [`ServerFrame`] carrying the same id, in any order (requests are pipelined).
//!
//! A connection whose first frame is [`Request::Gateway`] speaks the gateway's protocol
//! instead (`docs/websocket.md`, the same as over the WebSocket endpoint): after the server's
//! [`Response::Welcome`], every frame either way holds one JSON text message, postcard-encoded
//! as a string. It is how a client without WebSocket (and the simulator) subscribes.
//!
//! The same [`Request`] and [`Response`] types travel between servers when the router forwards
//! a request to a shard's leader, and the HTTP adapter translates to and from them: one service,
//! several doors.

use bytes::Bytes;
use kv::{ApplyError, Command, Compare, Op, Versioned, Write, WriteResult};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// Identifies a server of the cluster.
pub type ServerId = u64;
/// Identifies a shard (one Raft group).
pub type ShardId = u64;

/// The largest frame a client or server accepts on the client port.
pub const CLIENT_FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The largest key, in bytes.
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// The largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// The most keys a scan returns in one answer.
pub const SCAN_LIMIT_MAX: u32 = 10_000;
/// A scan stops (answering `more`) once its keys and values reach this many bytes, so that an
/// answer always fits a frame.
pub const SCAN_BYTES_MAX: usize = 2 * 1024 * 1024;

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Consistency {
    /// At the shard's leader, after a ReadIndex round: sees every write acknowledged before the
    /// read began.
    #[default]
    Linearizable,
    /// From the replica on the server that received the request, without any round trip: may
    /// miss recent writes.
    Stale,
}

/// A membership change of one shard, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a server as a learner (it receives the log but does not vote).
    AddLearner(ServerId),
    /// Promote a learner to voter (or add a voter directly).
    AddVoter(ServerId),
    /// Remove a voter or learner.
    Remove(ServerId),
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The first frame of a connection: authenticates with an operator token.
    Hello {
        /// The operator token from the server's configuration.
        token: String,
    },
    /// Reads one key.
    Get {
        /// The key.
        key: Bytes,
        /// How the read is served.
        consistency: Consistency,
    },
    /// Reads the keys in `[start, end)` in order (an empty `end`: to the end of the key
    /// space); a range over several shards is read shard by shard and merged.
    Scan {
        /// First key of the range.
        start: Bytes,
        /// End of the range, excluded; empty for no end.
        end: Bytes,
        /// At most this many keys (capped at [`SCAN_LIMIT_MAX`]).
        limit: u32,
        /// How the read is served.
        consistency: Consistency,
    },
    /// A write (put, delete, delete-range, txn) with its exactly-once identity. Every key it
    /// touches must belong to one shard.
    Write(Command),
    /// The status of the cluster as every server sees its own replicas.
    ClusterStatus {
        /// Also compute each replica's state digest (it reads the whole state: for tests and
        /// operators, not for dashboards polling often).
        digests: bool,
    },
    /// The status of the replicas on the server that receives it (used to build
    /// [`Request::ClusterStatus`]).
    LocalStatus {
        /// As for [`Request::ClusterStatus`].
        digests: bool,
    },
    /// Changes the membership of a shard (at its leader).
    ChangeMembership {
        /// The shard.
        shard: ShardId,
        /// The change.
        change: MembershipChange,
    },
    /// Asks a shard's leader to hand its leadership to `to`.
    TransferLeader {
        /// The shard.
        shard: ShardId,
        /// The voter that should lead.
        to: ServerId,
    },
    /// The first frame of a connection that speaks the gateway's protocol (see the module
    /// documentation); it authenticates inside that protocol, with its `auth` message. Last
    /// of the variants, so that the others keep their numbers on the wire.
    Gateway,
}

impl Request {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Gateway => "gateway",
            Request::Get { .. } => "get",
            Request::Scan { .. } => "scan",
            Request::Write(_) => "write",
            Request::ClusterStatus { .. } => "cluster_status",
            Request::LocalStatus { .. } => "local_status",
            Request::ChangeMembership { .. } => "change_membership",
            Request::TransferLeader { .. } => "transfer_leader",
        }
    }
}

/// What the server answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The connection is authenticated.
    Welcome {
        /// The server that answered.
        server_id: ServerId,
    },
    /// The answer to [`Request::Get`]: the key's value and versions, if it exists.
    Value(Option<Versioned>),
    /// The answer to [`Request::Scan`].
    Scan {
        /// The keys found, in order.
        entries: Vec<(Bytes, Versioned)>,
        /// Whether more keys remain in the range after the last one returned.
        more: bool,
    },
    /// The answer to [`Request::Write`]: the write was committed and applied at `index`.
    Written {
        /// The shard that applied it.
        shard: ShardId,
        /// The log index of the write.
        index: u64,
        /// What the write did (for a retry: what the first application did).
        result: WriteResult,
    },
    /// The answer to [`Request::ClusterStatus`] and [`Request::LocalStatus`].
    Status(ClusterStatus),
    /// The answer to [`Request::ChangeMembership`] and [`Request::TransferLeader`]: done (the
    /// change is committed; the transfer is under way).
    Done,
    /// The request failed.
    Error(ErrorResponse),
}

/// A failed request: a stable code, a sentence for people and, when the server knows it, the
/// server that leads the shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// The server that leads the shard, if known (after [`ErrorCode::NotLeader`]).
    pub leader_hint: Option<ServerId>,
}

impl ErrorResponse {
    /// An error without a leader hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            code,
            message: message.into(),
            leader_hint: None,
        }
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.code.as_str(), self.message)
    }
}

/// The stable error codes of the API (the HTTP adapter maps them to statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No valid token.
    Unauthorized,
    /// The request is malformed or breaks a limit; retrying it unchanged fails again.
    BadRequest,
    /// The keys of one write belong to more than one shard.
    CrossShard,
    /// The server that received the request does not lead the shard (routing retries this).
    NotLeader,
    /// No leader could be reached in time, or the leader lost its leadership before the
    /// outcome was known; retrying the same request (same client id and sequence) is safe.
    Unavailable,
    /// The write's sequence number was already acknowledged by the client and its answer
    /// forgotten: it must not be sent again.
    SequenceForgotten,
    /// The shard or server named does not exist.
    NotFound,
    /// The server is shutting down or failed internally.
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON errors.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::CrossShard => "cross_shard",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::SequenceForgotten => "sequence_forgotten",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
        }
    }
}

impl From<ApplyError> for ErrorResponse {
    fn from(error: ApplyError) -> ErrorResponse {
        let code = match error {
            ApplyError::SequenceForgotten { .. } => ErrorCode::SequenceForgotten,
            ApplyError::Malformed { .. } | ApplyError::TooLarge { .. } => ErrorCode::BadRequest,
        };
        ErrorResponse::new(code, error.to_string())
    }
}

/// The role of one replica, as the status reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRole {
    /// Leads its shard.
    Leader,
    /// A voter that follows.
    Follower,
    /// Campaigning (or asking for pre-votes).
    Candidate,
    /// Receives the log without voting.
    Learner,
}

impl ReplicaRole {
    /// The role as it appears in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReplicaRole::Leader => "leader",
            ReplicaRole::Follower => "follower",
            ReplicaRole::Candidate => "candidate",
            ReplicaRole::Learner => "learner",
        }
    }
}

/// One replica of one shard, as the server that hosts it sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The hosting server.
    pub server_id: ServerId,
    /// Its role.
    pub role: ReplicaRole,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of (0: none).
    pub leader_id: ServerId,
    /// Its commit index.
    pub commit_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// The first index still in its log (after compaction).
    pub first_index: u64,
    /// Its last log index.
    pub last_index: u64,
    /// The voters of the shard as this replica knows them.
    pub voters: Vec<ServerId>,
    /// The learners of the shard as this replica knows them.
    pub learners: Vec<ServerId>,
    /// A digest of its applied state (equal on replicas at the same applied index); 0 unless
    /// digests were asked for.
    pub state_digest: u64,
    /// How many keys it holds.
    pub keys: u64,
}

/// One shard: its name, key range and the replicas that answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatus {
    /// The shard's id.
    pub shard: ShardId,
    /// The shard's name (`events-a-m`, ...).
    pub name: String,
    /// First key of its range.
    pub start: Bytes,
    /// End of its range, excluded; empty for no end.
    pub end: Bytes,
    /// The leader with the highest term among the replicas that answered (0: none).
    pub leader_id: ServerId,
    /// That leader's term.
    pub term: u64,
    /// The replicas that answered.
    pub replicas: Vec<ReplicaStatus>,
}

/// The status of the cluster (or of one server's replicas, for [`Request::LocalStatus`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterStatus {
    /// The shards, in key order.
    pub shards: Vec<ShardStatus>,
    /// Servers that did not answer.
    pub unreachable: Vec<ServerId>,
}

impl ClusterStatus {
    /// Whether every shard has a leader.
    pub fn all_shards_led(&self) -> bool {
        !self.shards.is_empty() && self.shards.iter().all(|shard| shard.leader_id != 0)
    }
}

/// A frame from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Chosen by the client; echoed in the answer.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// A frame from a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// The id of the request this answers.
    pub id: u64,
    /// The answer.
    pub response: Response,
}

/// Checks the sizes of a request's keys and values against the documented limits.
pub fn check_limits(request: &Request) -> Result<(), ErrorResponse> {
    let too_large = |what: &str, bytes: usize, max: usize| {
        Err(ErrorResponse::new(
            ErrorCode::BadRequest,
            format!("{what} of {bytes} bytes exceeds the limit of {max} bytes"),
        ))
    };
    let check_key = |key: &Bytes| {
        if key.len() > KEY_BYTES_MAX {
            return too_large("key", key.len(), KEY_BYTES_MAX);
        }
        Ok(())
    };
    let check_value = |value: &Bytes| {
        if value.len() > VALUE_BYTES_MAX {
            return too_large("value", value.len(), VALUE_BYTES_MAX);
        }
        Ok(())
    };
    match request {
        Request::Get { key, .. } => check_key(key),
        Request::Scan {
            start, end, limit, ..
        } => {
            if *limit == 0 {
                return Err(ErrorResponse::new(
                    ErrorCode::BadRequest,
                    "a scan's limit must be at least 1",
                ));
            }
            check_key(start).and_then(|()| check_key(end))
        }
        Request::Write(command) => {
            if command.client_id == 0 {
                return Err(ErrorResponse::new(
                    ErrorCode::BadRequest,
                    "client id 0 is reserved: a write needs an exactly-once identity",
                ));
            }
            for key in write_keys(&command.write) {
                check_key(key)?;
            }
            for value in write_values(&command.write) {
                check_value(value)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Every key a write names (for a delete-range: its start, and its end when it has one), in
/// order of appearance. The router maps them to shards.
pub fn write_keys(write: &Write) -> Vec<&Bytes> {
    match write {
        Write::Put { key, .. } | Write::Delete { key } => vec![key],
        Write::DeleteRange { start, end } => {
            if end.is_empty() {
                vec![start]
            } else {
                vec![start, end]
            }
        }
        Write::Txn(txn) => {
            let compares = txn.compares.iter().map(|compare| match compare {
                Compare::ValueEquals { key, .. }
                | Compare::ModIndexEquals { key, .. }
                | Compare::Absent { key }
                | Compare::Exists { key } => key,
            });
            let ops = txn.success.iter().chain(&txn.failure).map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } => key,
            });
            compares.chain(ops).collect()
        }
    }
}

/// Every value a write carries (puts and value compares).
pub fn write_values(write: &Write) -> Vec<&Bytes> {
    match write {
        Write::Put { value, .. } => vec![value],
        Write::Delete { .. } | Write::DeleteRange { .. } => Vec::new(),
        Write::Txn(txn) => {
            let compares = txn.compares.iter().filter_map(|compare| match compare {
                Compare::ValueEquals { value, .. } => Some(value),
                _ => None,
            });
            let ops = txn
                .success
                .iter()
                .chain(&txn.failure)
                .filter_map(|op| match op {
                    Op::Put { value, .. } => Some(value),
                    _ => None,
                });
            compares.chain(ops).collect()
        }
    }
}

/// Reads whole frames (the project's framing, `net::codec`) from a byte stream, refusing any
/// longer than its limit before reading it.
#[derive(Debug)]
pub struct FrameReader<R> {
    reader: R,
    decoder: net::codec::FrameDecoder,
    buffer: bytes::BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of frames of at most `frame_size_bytes_max` bytes.
    pub fn new(reader: R, frame_size_bytes_max: usize) -> FrameReader<R> {
        FrameReader {
            reader,
            decoder: net::codec::FrameDecoder::new(frame_size_bytes_max),
            buffer: bytes::BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Changes the largest frame accepted (a server takes only a small hello before the
    /// client has authenticated).
    pub fn set_frame_size_bytes_max(&mut self, frame_size_bytes_max: usize) {
        self.decoder.set_frame_size_bytes_max(frame_size_bytes_max);
    }

    /// The next frame's payload; `None` at a clean end of stream.
    ///
    /// # Errors
    /// An oversized frame (`InvalidData`), a stream that ends inside a frame
    /// (`UnexpectedEof`), or the socket's error.
    pub async fn next(&mut self) -> std::io::Result<Option<bytes::BytesMut>> {
        loop {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(error) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        error.to_string(),
                    ));
                }
            }
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }
}

/// Writes `bytes` and flushes them. The flush matters: a buffered writer, and madsim's
/// simulated TCP, send nothing until it.
///
/// # Errors
/// The socket's error.
pub async fn write_and_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}
