//! The one door every request enters by, whatever its protocol, and the router behind it (the
//! seed's coordinator): a request maps to its shard by key and runs on that shard's leader —
//! here if the leader is local, else forwarded to it over the server-to-server transport. On
//! `not_leader` or a timeout it tries again at the new leader with backoff, so a leader crash
//! costs the client a delay, not an error.

use crate::auth::Permissions;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::node::{NodeRequest, Shared};
use crate::peer::PeerMessage;
use crate::shard::ShardMap;
use bytes::Bytes;
use client::protocol::{SCAN_BYTES_MAX, SCAN_LIMIT_MAX, check_limits, write_keys};
use client::{
    ClusterStatus, ErrorCode, ErrorResponse, Request, Response, ServerId, ShardId, ShardStatus,
};
use kv::{Command, Write};
use net::TransportHandle;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The service of one server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<ServerConfig>,
    shard_map: ShardMap,
    node: mpsc::Sender<NodeRequest>,
    transport: TransportHandle<PeerMessage>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    next_forward_id: AtomicU64,
    /// The client id of this server life's own session, for writes that come without one
    /// (HTTP writes without a `Request-Id`).
    session_client_id: u64,
    /// Its sequence numbers, one window per shard (each shard's state machine keeps its own
    /// sessions), so that a write stuck on a shard without a leader holds back only the
    /// writes to that shard.
    sessions: BTreeMap<ShardId, client::window::SeqWindow>,
}

/// The most writes of the server's own session in flight at once per shard (their sequence
/// numbers span at most this many): well under the answers the cluster keeps per session
/// (kv's `answers_per_session_max`, 1024).
pub const SERVER_WRITES_IN_FLIGHT_MAX: usize = client::window::WINDOW as usize;

/// Removes a forward's waiting entry however the forward ends (answered, timed out, or
/// dropped with its caller).
struct ForwardGuard<'a> {
    forwards: &'a Mutex<HashMap<u64, crate::node::Forwarded>>,
    id: u64,
}

impl Drop for ForwardGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut forwards) = self.forwards.lock() {
            forwards.remove(&self.id);
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorResponse::new(code, message))
}

/// FNV-1a, 64 bits: a stable hash for turning a request id into a client id.
/// A caller's request id (HTTP's `Request-Id`, the gateway's `request_id`), in the caller's
/// namespace: the same id from two namespaces names two different writes.
#[derive(Clone, Copy, Debug)]
pub struct RequestId<'a> {
    /// Whose ids: [`RequestId::OPERATORS`] for operator tokens, or one scoped token's own.
    pub namespace: &'a str,
    /// The id.
    pub id: &'a str,
}

impl RequestId<'_> {
    /// The namespace shared by every operator token.
    pub const OPERATORS: &'static str = "operators";
}

/// See [`Service::request_client_id`].
fn request_client_id(secret: &str, id: RequestId<'_>) -> u64 {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for part in [
        b"request-id".as_slice(),
        secret.as_bytes(),
        id.namespace.as_bytes(),
        id.id.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first).max(1)
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl Service {
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        shard_map: ShardMap,
        node: mpsc::Sender<NodeRequest>,
        transport: TransportHandle<PeerMessage>,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
        boot_id: u64,
    ) -> Service {
        let session_client_id = fnv1a(&[
            b"server-session",
            &boot_id.to_le_bytes(),
            &config.server_id.to_le_bytes(),
        ])
        .max(1);
        let sessions = shard_map
            .shards()
            .iter()
            .map(|spec| (spec.id, client::window::SeqWindow::default()))
            .collect();
        Service {
            inner: Arc::new(Inner {
                config,
                shard_map,
                node,
                transport,
                shared,
                metrics,
                // Ids of an earlier life of this server must not match a late reply.
                next_forward_id: AtomicU64::new(boot_id << 20),
                session_client_id,
                sessions,
            }),
        }
    }

    /// This server's id.
    pub fn server_id(&self) -> ServerId {
        self.inner.config.server_id
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The server's limits.
    pub fn config_limits(&self) -> &crate::config::Limits {
        &self.inner.config.limits
    }

    /// The shard map.
    pub fn shard_map(&self) -> &ShardMap {
        &self.inner.shard_map
    }

    /// Whether `token` is one of the configured operator tokens (compared in constant time).
    pub fn authorize(&self, token: &str) -> bool {
        let ok = self
            .inner
            .config
            .operator_tokens
            .iter()
            .any(|known| constant_time_equal(known.as_bytes(), token.as_bytes()));
        if !ok {
            Metrics::add(&self.inner.metrics.counters.client_unauthorized, 1);
        }
        ok
    }

    /// The key prefixes `token` grants: every key for an operator token, its prefixes for a
    /// scoped token (compared in constant time); `None` (counted) for an unknown token.
    pub fn authenticate(&self, token: &str) -> Option<Permissions> {
        let config = &self.inner.config;
        let known = |candidate: &str| constant_time_equal(candidate.as_bytes(), token.as_bytes());
        if config
            .operator_tokens
            .iter()
            .any(|operator| known(operator))
        {
            return Some(Permissions::everything());
        }
        if let Some(scoped) = config.tokens.iter().find(|scoped| known(&scoped.token)) {
            let prefixes = scoped
                .prefixes
                .iter()
                .map(|prefix| Bytes::from(prefix.clone()));
            return Some(Permissions::prefixes(prefixes, &scoped.token));
        }
        Metrics::add(&self.inner.metrics.counters.client_unauthorized, 1);
        None
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The metrics in Prometheus' text format.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.render(&self.inner.transport.metrics())
    }

    /// The client identity of a write sent with `id`: a hash keyed by the cluster secret of
    /// the caller's namespace and the id, the same on every server. Callers in different
    /// namespaces never share an identity, and none can choose an id that lands on another's.
    fn request_client_id(&self, id: RequestId<'_>) -> u64 {
        request_client_id(&self.inner.config.cluster_secret, id)
    }

    /// Runs a write that comes without a client identity (an HTTP write), exactly once.
    ///
    /// With a request id (HTTP's `Request-Id`), the id and the caller's namespace decide the
    /// identity, so the same id again is answered as the first time, for as long as the cluster keeps its session (an
    /// hour idle, or until 100,000 newer sessions evict it). Without one, the write gets the
    /// next sequence number of this server's own session, which keeps the router's retries
    /// exactly-once; such writes in flight to one shard span at most
    /// [`SERVER_WRITES_IN_FLIGHT_MAX`] sequence numbers (the cluster holds the answers of a
    /// session's writes from its oldest unacknowledged one on, a bounded number of them).
    pub async fn write(&self, write: Write, request_id: Option<RequestId<'_>>) -> Response {
        if let Some(id) = request_id {
            let command = Command {
                client_id: self.request_client_id(id),
                seq: 1,
                first_unacked_seq: 1,
                timestamp_ms: 0,
                write,
            };
            return self.execute(Request::Write(command)).await;
        }
        let shard = match self.shard_of_write(&write) {
            Ok(shard) => shard,
            Err(refusal) => return Response::Error(refusal),
        };
        let Some(window) = self.inner.sessions.get(&shard) else {
            return error(ErrorCode::NotFound, format!("no shard {shard}"));
        };
        // However this future ends (answered, or dropped with its HTTP connection), the seq
        // stops holding the session's floor back.
        let seq = window.next().await;
        let command = Command {
            client_id: self.inner.session_client_id,
            seq: seq.seq,
            first_unacked_seq: seq.first_unacked_seq,
            timestamp_ms: 0,
            write,
        };
        self.execute(Request::Write(command)).await
    }

    /// Runs one request and answers it. Never panics on any request.
    pub async fn execute(&self, request: Request) -> Response {
        let started = Instant::now();
        let kind = request.name();
        let response = match check_limits(&request) {
            Err(refusal) => Response::Error(refusal),
            Ok(()) => self.route(request).await,
        };
        self.inner.metrics.latency(kind).observe(started.elapsed());
        if matches!(response, Response::Error(_)) {
            Metrics::add(&self.inner.metrics.counters.requests_failed, 1);
        }
        response
    }

    async fn route(&self, request: Request) -> Response {
        match request {
            Request::Hello { .. } | Request::Gateway => error(
                ErrorCode::BadRequest,
                "hello and gateway are only the first frame of a connection",
            ),
            Request::Get {
                ref key,
                consistency,
            } => {
                let shard = self.inner.shard_map.lookup(key).id;
                let local = consistency == client::Consistency::Stale;
                #[cfg(madsim)]
                if crate::planted::planted(crate::planted::Bug::LocalLinearizableRead) {
                    let stale = Request::Get {
                        key: key.clone(),
                        consistency: client::Consistency::Stale,
                    };
                    return self.run_on_shard(shard, stale, true).await;
                }
                self.run_on_shard(shard, request, local).await
            }
            Request::Scan {
                start,
                end,
                limit,
                consistency,
            } => self.scan(start, end, limit, consistency).await,
            Request::Write(command) => match self.shard_of_write(&command.write) {
                Ok(shard) => {
                    self.run_on_shard(shard, Request::Write(command), false)
                        .await
                }
                Err(refusal) => Response::Error(refusal),
            },
            Request::ClusterStatus { digests } => {
                Response::Status(self.cluster_status(digests).await)
            }
            Request::LocalStatus { digests } => match self.local_status(digests).await {
                Some(status) => Response::Status(status),
                None => error(ErrorCode::Internal, "the node loop is not running"),
            },
            Request::ChangeMembership { shard, .. } | Request::TransferLeader { shard, .. } => {
                if self.inner.shard_map.get(shard).is_none() {
                    return error(ErrorCode::NotFound, format!("no shard {shard}"));
                }
                self.run_on_shard(shard, request, false).await
            }
        }
    }

    fn shard_of_write(&self, write: &Write) -> Result<ShardId, ErrorResponse> {
        let first = write_keys(write).first().map_or(&b""[..], |key| &key[..]);
        let shard = self.inner.shard_map.lookup(first);
        if shard.holds_write(write) {
            Ok(shard.id)
        } else {
            Err(ErrorResponse::new(
                ErrorCode::CrossShard,
                "the keys of one write must belong to one shard",
            ))
        }
    }

    /// A scan over the shards its range meets, in key order. It stops, with `more`, at the
    /// limit, at [`SCAN_BYTES_MAX`] bytes of keys and values (so that an answer fits a frame),
    /// or when a shard says more remain; all parts share one deadline.
    async fn scan(
        &self,
        start: Bytes,
        end: Bytes,
        limit: u32,
        consistency: client::Consistency,
    ) -> Response {
        let timing = &self.inner.config.timing;
        let deadline = Instant::now() + Duration::from_millis(timing.request_timeout_ms);
        let stale = consistency == client::Consistency::Stale;
        let mut remaining = limit.min(SCAN_LIMIT_MAX);
        let mut bytes = 0usize;
        let mut entries = Vec::new();
        let parts: Vec<(ShardId, Bytes, Bytes)> = self
            .inner
            .shard_map
            .split_range(&start, &end)
            .into_iter()
            .map(|(shard, start, end)| {
                let (start, end) = (Bytes::copy_from_slice(start), Bytes::copy_from_slice(end));
                (shard.id, start, end)
            })
            .collect();
        for (shard, part_start, part_end) in parts {
            if remaining == 0 || bytes >= SCAN_BYTES_MAX {
                return Response::Scan {
                    entries,
                    more: true,
                };
            }
            let request = Request::Scan {
                start: part_start,
                end: part_end,
                limit: remaining,
                consistency,
            };
            match self
                .run_on_shard_until(shard, request, stale, deadline)
                .await
            {
                Response::Scan {
                    entries: part,
                    more,
                } => {
                    remaining -= part.len() as u32;
                    bytes += part
                        .iter()
                        .map(|(key, v)| key.len() + v.value.len())
                        .sum::<usize>();
                    entries.extend(part);
                    if more {
                        return Response::Scan {
                            entries,
                            more: true,
                        };
                    }
                }
                other => return other,
            }
        }
        Response::Scan {
            entries,
            more: false,
        }
    }

    /// Runs a request on a shard's leader (or, for a stale read, on the local replica),
    /// following leader hints and retrying with backoff until the request timeout.
    async fn run_on_shard(&self, shard: ShardId, request: Request, local: bool) -> Response {
        let timing = &self.inner.config.timing;
        let deadline = Instant::now() + Duration::from_millis(timing.request_timeout_ms);
        self.run_on_shard_until(shard, request, local, deadline)
            .await
    }

    async fn run_on_shard_until(
        &self,
        shard: ShardId,
        request: Request,
        local: bool,
        deadline: Instant,
    ) -> Response {
        let timing = &self.inner.config.timing;
        let attempt_timeout = Duration::from_millis(timing.forward_timeout_ms);
        let mut backoff = Duration::from_millis(5);
        let me = self.server_id();
        let voters = self
            .inner
            .shard_map
            .get(shard)
            .map(|spec| spec.voters.clone())
            .unwrap_or_default();
        let mut target = if local {
            me
        } else {
            self.leader_hint(shard).unwrap_or(me)
        };
        let mut rotation = 0usize;
        loop {
            let outcome = if target == me {
                self.run_locally(shard, request.clone(), attempt_timeout)
                    .await
            } else {
                Metrics::add(&self.inner.metrics.counters.requests_forwarded, 1);
                self.forward(target, Some(shard), request.clone(), attempt_timeout)
                    .await
            };
            let hint = match outcome {
                Some(Response::Error(refusal))
                    if matches!(refusal.code, ErrorCode::NotLeader | ErrorCode::Unavailable) =>
                {
                    refusal.leader_hint.filter(|hint| *hint != target)
                }
                Some(response) => return response,
                None => None,
            };
            Metrics::add(&self.inner.metrics.counters.requests_retried, 1);
            let now = Instant::now();
            if now >= deadline {
                return error(
                    ErrorCode::Unavailable,
                    format!(
                        "shard {shard} did not answer within {} ms (no leader reachable); retrying with the same client id and sequence is safe",
                        timing.request_timeout_ms
                    ),
                );
            }
            target =
                match hint.or_else(|| self.leader_hint(shard).filter(|leader| *leader != target)) {
                    Some(next) => next,
                    None if voters.is_empty() => me,
                    None => {
                        rotation += 1;
                        voters[rotation % voters.len()]
                    }
                };
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Whether this server's replica of `shard` is its leader, as the node loop last reported.
    pub fn leads(&self, shard: ShardId) -> bool {
        self.leader_hint(shard) == Some(self.inner.config.server_id)
    }

    fn leader_hint(&self, shard: ShardId) -> Option<ServerId> {
        let leaders = self.inner.shared.leaders.lock().expect("leaders lock");
        leaders.get(&shard).copied().filter(|leader| *leader != 0)
    }

    /// Runs a request on the local replica; `None` if the node loop did not answer in time.
    async fn run_locally(
        &self,
        shard: ShardId,
        request: Request,
        timeout: Duration,
    ) -> Option<Response> {
        let (reply, answer) = oneshot::channel();
        let sent = self.inner.node.try_send(NodeRequest::Execute {
            shard,
            request,
            reply,
        });
        if sent.is_err() {
            return Some(error(
                ErrorCode::Unavailable,
                "the node loop's queue is full",
            ));
        }
        tokio::time::timeout(timeout, answer).await.ok()?.ok()
    }

    /// Sends a request to another server; `None` if it did not answer in time.
    async fn forward(
        &self,
        target: ServerId,
        shard: Option<ShardId>,
        request: Request,
        timeout: Duration,
    ) -> Option<Response> {
        let id = self.inner.next_forward_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let forwards = &self.inner.shared.forwards;
        let waiting = crate::node::Forwarded { target, reply };
        forwards.lock().expect("forwards lock").insert(id, waiting);
        let _guard = ForwardGuard { forwards, id };
        // A forward still queued when this attempt gives up (the peer unreachable) is never
        // sent: a late copy should not run after the caller was told the outcome is unknown
        // and moved on. The deadline is this server's monotonic clock, so no wall clock, here
        // or at the receiver, decides it. (A write that still lands late is applied once: the
        // client's retry carries the same client id and seq.)
        let deadline = tokio::time::Instant::now() + timeout;
        let message = PeerMessage::Forward { id, shard, request };
        if let Err(error) = self.inner.transport.send_before(target, message, deadline) {
            tracing::debug!(%error, target, "forward not queued");
            Metrics::add(&self.inner.metrics.counters.peer_messages_dropped, 1);
            return None;
        }
        tokio::time::timeout(timeout, answer).await.ok()?.ok()
    }

    async fn local_status(&self, digests: bool) -> Option<ClusterStatus> {
        let (reply, answer) = oneshot::channel();
        let timeout = Duration::from_millis(self.inner.config.timing.forward_timeout_ms);
        let request = NodeRequest::LocalStatus { digests, reply };
        self.inner.node.try_send(request).ok()?;
        tokio::time::timeout(timeout, answer).await.ok()?.ok()
    }

    /// Every server's view of its replicas, merged per shard; the servers are asked at once.
    pub async fn cluster_status(&self, digests: bool) -> ClusterStatus {
        let me = self.server_id();
        let timeout = Duration::from_millis(self.inner.config.timing.forward_timeout_ms);
        let asks: Vec<(ServerId, tokio::task::JoinHandle<Option<ClusterStatus>>)> = self
            .inner
            .config
            .servers
            .iter()
            .map(|server| {
                let service = self.clone();
                let id = server.id;
                let ask = tokio::spawn(async move {
                    if id == me {
                        return service.local_status(digests).await;
                    }
                    let request = Request::LocalStatus { digests };
                    match service.forward(id, None, request, timeout).await {
                        Some(Response::Status(status)) => Some(status),
                        _ => None,
                    }
                });
                (id, ask)
            })
            .collect();
        let mut views = Vec::new();
        let mut unreachable = Vec::new();
        for (id, ask) in asks {
            match ask.await.ok().flatten() {
                Some(view) => views.push(view),
                None => unreachable.push(id),
            }
        }
        let shards = self
            .inner
            .shard_map
            .shards()
            .iter()
            .map(|spec| {
                let mut replicas: Vec<client::ReplicaStatus> = views
                    .iter()
                    .flat_map(|view| view.shards.iter())
                    .filter(|shard| shard.shard == spec.id)
                    .flat_map(|shard| shard.replicas.iter().cloned())
                    .collect();
                replicas.sort_by_key(|replica| replica.server_id);
                let leader = replicas
                    .iter()
                    .filter(|replica| replica.role == client::ReplicaRole::Leader)
                    .max_by_key(|replica| replica.term);
                ShardStatus {
                    shard: spec.id,
                    name: spec.name.clone(),
                    start: Bytes::from(spec.start.clone()),
                    end: Bytes::from(spec.end.clone()),
                    leader_id: leader.map_or(0, |leader| leader.server_id),
                    term: leader.map_or(0, |leader| leader.term),
                    replicas,
                }
            })
            .collect();
        ClusterStatus {
            shards,
            unreachable,
        }
    }
}

/// The compare-and-swap both client doors offer, as one txn: put `value` at `key` if the key
/// holds `expected` (`None`: if it is absent); otherwise read the key, so that the answer
/// says what it holds.
pub fn compare_and_swap(key: Bytes, expected: Option<Bytes>, value: Bytes) -> Write {
    let compare = match expected {
        None => kv::Compare::Absent { key: key.clone() },
        Some(expected) => kv::Compare::ValueEquals {
            key: key.clone(),
            value: expected,
        },
    };
    Write::Txn(kv::Txn {
        compares: vec![compare],
        success: vec![kv::Op::Put {
            key: key.clone(),
            value,
        }],
        failure: vec![kv::Op::Get { key }],
    })
}

fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{RequestId, request_client_id};

    #[test]
    fn a_request_id_names_one_write_per_namespace() {
        let id = |namespace, id| request_client_id("cluster secret", RequestId { namespace, id });
        assert_eq!(id("token:alice", "7"), id("token:alice", "7"));
        assert_ne!(id("token:alice", "7"), id("token:bob", "7"));
        assert_ne!(id(RequestId::OPERATORS, "7"), id("token:bob", "7"));
        // Lengths are part of the hash: moving bytes between the parts changes the identity.
        assert_ne!(id("token:a", "b7"), id("token:ab", "7"));
        let other_cluster = request_client_id(
            "another secret",
            RequestId {
                namespace: "token:alice",
                id: "7",
            },
        );
        assert_ne!(other_cluster, id("token:alice", "7"));
    }
}
