//! The state machine: applying entries, reading, snapshots.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::codec::{self, DecodeError, SNAPSHOT_FORMAT, SessionOwned, SnapshotOwned, SnapshotRef};
use crate::session::{Answer, Session, Sessions};
use crate::store::Store;
use crate::{Applied, ApplyError, Command, Versioned};

/// The most compares, or operations in one branch, that a txn may hold.
pub const TXN_OPS_MAX: usize = 1024;

/// The bounds of the session table. Every replica of a group must use the same limits, because they
/// decide which answers are kept, and so what a retry gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most sessions held; creating one more evicts the least recently used (ties: the lowest
    /// client id). At least 1. Default 100 000.
    pub sessions_max: usize,
    /// A session unused for longer than this, by the machine's clock, expires. Default 3 600 000 (1 h).
    pub session_idle_ms_max: u64,
    /// The most answers one session holds; beyond it the lowest seq is forgotten, and a retry of it gets
    /// [`ApplyError::SequenceForgotten`]. So a client should keep fewer writes than this unacknowledged.
    /// At least 1. Default 1024.
    pub answers_per_session_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            sessions_max: 100_000,
            session_idle_ms_max: 3_600_000,
            answers_per_session_max: 1024,
        }
    }
}

impl Limits {
    fn assert_valid(&self) {
        assert!(
            self.sessions_max >= 1,
            "Limits::sessions_max must be at least 1"
        );
        assert!(
            self.answers_per_session_max >= 1,
            "Limits::answers_per_session_max must be at least 1"
        );
    }
}

/// Counters of what the machine did since it was created or restored. They are not part of the
/// state: snapshots and digests leave them out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Entries given to [`StateMachine::apply`], whatever their outcome.
    pub entries_applied: u64,
    /// Writes that ran against the keys (with an `Ok` result); duplicates and refusals are not counted.
    pub writes_applied: u64,
    /// Retries answered from the session table.
    pub duplicates_answered: u64,
    /// Entries whose bytes did not decode.
    pub malformed_entries: u64,
    /// Sessions dropped because they were idle too long.
    pub sessions_expired: u64,
    /// Sessions dropped to stay within [`Limits::sessions_max`].
    pub sessions_evicted: u64,
}

/// The replicated key-value state of one Raft group.
///
/// Its methods come in four kinds:
///
/// - **inputs**, in log order: [`apply`](Self::apply) for each committed normal entry and
///   [`skip`](Self::skip) for each committed entry without a command; each index must be above
///   [`applied_index`](Self::applied_index);
/// - **reads**: [`get`](Self::get), [`scan`](Self::scan), [`len`](Self::len), [`is_empty`](Self::is_empty),
///   [`applied_index`](Self::applied_index), [`metrics`](Self::metrics);
/// - **snapshots**: [`snapshot`](Self::snapshot), [`restore`](Self::restore), [`digest`](Self::digest);
/// - **construction**: [`new`](Self::new).
#[derive(Clone, Debug)]
pub struct StateMachine {
    limits: Limits,
    store: Store,
    sessions: Sessions,
    /// The largest `timestamp_ms` seen: the machine's clock, which never goes back.
    clock_ms: u64,
    applied_index: u64,
    metrics: Metrics,
}

impl StateMachine {
    /// An empty machine at applied index 0.
    ///
    /// # Panics
    ///
    /// If `limits.sessions_max` or `limits.answers_per_session_max` is 0.
    pub fn new(limits: Limits) -> StateMachine {
        limits.assert_valid();
        StateMachine {
            limits,
            store: Store::default(),
            sessions: Sessions::default(),
            clock_ms: 0,
            applied_index: 0,
            metrics: Metrics::default(),
        }
    }

    /// Applies a committed normal entry whose data is an encoded [`Command`]. Never panics on any
    /// bytes: data that does not decode gives [`ApplyError::Malformed`], is counted, and still moves
    /// the applied index.
    ///
    /// # Panics
    ///
    /// If `index` is not greater than [`applied_index`](Self::applied_index) (misuse of the API).
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Applied {
        self.advance(index);
        self.metrics.entries_applied += 1;
        let command = match Command::decode(data) {
            Ok(command) => command,
            Err(error) => {
                self.metrics.malformed_entries += 1;
                let reason = error.to_string();
                return Applied {
                    index,
                    first_applied_index: index,
                    result: Err(ApplyError::Malformed { reason }),
                    changes: Vec::new(),
                    duplicate: false,
                };
            }
        };
        self.clock_ms = self.clock_ms.max(command.timestamp_ms);
        self.metrics.sessions_expired += self
            .sessions
            .expire(self.clock_ms, self.limits.session_idle_ms_max);
        if command.client_id == 0 {
            let (result, changes) = self.store.execute(index, &command.write);
            self.metrics.writes_applied += u64::from(result.is_ok());
            return Applied {
                index,
                first_applied_index: index,
                result,
                changes,
                duplicate: false,
            };
        }
        self.apply_in_session(index, command)
    }

    /// The exactly-once path: forgotten, duplicate, or new.
    fn apply_in_session(&mut self, index: u64, command: Command) -> Applied {
        let Command {
            client_id,
            seq,
            first_unacked_seq,
            write,
            ..
        } = command;
        let (session, evicted) =
            self.sessions
                .touch(client_id, self.clock_ms, self.limits.sessions_max);
        self.metrics.sessions_evicted += evicted;
        session.acknowledge(first_unacked_seq);
        if seq < session.seq_floor {
            let error = ApplyError::SequenceForgotten {
                client_id,
                seq,
                first_unacked_seq: session.seq_floor,
            };
            return Applied {
                index,
                first_applied_index: index,
                result: Err(error),
                changes: Vec::new(),
                duplicate: false,
            };
        }
        #[cfg(madsim)]
        if crate::planted::planted(crate::planted::Bug::ApplyRetryTwice) {
            // The planted bug forgets the held answer, so the retry applies again.
            session.answers.remove(&seq);
        }
        if let Some(answer) = session.answers.get(&seq) {
            self.metrics.duplicates_answered += 1;
            return Applied {
                index,
                first_applied_index: answer.index,
                result: answer.result.clone(),
                changes: Vec::new(),
                duplicate: true,
            };
        }
        let (result, changes) = self.store.execute(index, &write);
        self.metrics.writes_applied += u64::from(result.is_ok());
        let answer = Answer {
            index,
            result: result.clone(),
        };
        session.record(seq, answer, self.limits.answers_per_session_max);
        Applied {
            index,
            first_applied_index: index,
            result,
            changes,
            duplicate: false,
        }
    }

    /// Records a committed entry that carries no command (a leader's empty no-op, a membership
    /// change), so that the applied index moves.
    ///
    /// # Panics
    ///
    /// If `index` is not greater than [`applied_index`](Self::applied_index) (misuse of the API).
    pub fn skip(&mut self, index: u64) {
        self.advance(index);
    }

    fn advance(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "entry {index} applied after entry {}: entries must come in log order",
            self.applied_index
        );
        self.applied_index = index;
    }

    /// The machine's clock: the largest `timestamp_ms` applied (or restored); 0 at first.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The index of the last entry applied or skipped (or restored from a snapshot); 0 at first.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The key's value and versions, if it exists.
    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.store.keys.get(key)
    }

    /// Keys in `[start, end)` (an empty `end` means no upper bound) in key order, at most `limit` of them;
    /// the bool says whether more keys remain in the range. A non-empty `end` not above `start` is an
    /// empty range.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> (Vec<(Bytes, Versioned)>, bool) {
        self.store.scan(start, end, limit)
    }

    /// How many keys exist.
    pub fn len(&self) -> usize {
        self.store.keys.len()
    }

    /// Whether no key exists.
    pub fn is_empty(&self) -> bool {
        self.store.keys.is_empty()
    }

    /// Counters since creation or restore.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The whole state (keys with versions, the session table, the clock, the applied index) as bytes:
    /// [`SNAPSHOT_FORMAT`] then postcard. Deterministic: equal states give equal bytes. Metrics and
    /// limits are not included.
    pub fn snapshot(&self) -> Bytes {
        let body = SnapshotRef {
            applied_index: self.applied_index,
            clock_ms: self.clock_ms,
            keys: &self.store.keys,
            sessions: &self.sessions.by_client,
        };
        let bytes = postcard::to_extend(&body, vec![SNAPSHOT_FORMAT])
            .expect("a snapshot always serializes");
        Bytes::from(bytes)
    }

    /// Rebuilds a machine from [`snapshot`](Self::snapshot) bytes, with fresh metrics. Hostile bytes
    /// give an error, never a panic: the body must decode exactly and keep the state's invariants.
    /// Sessions or answers beyond `limits` (a snapshot taken under larger limits) are kept until the
    /// next command trims them.
    ///
    /// # Panics
    ///
    /// If `limits.sessions_max` or `limits.answers_per_session_max` is 0.
    pub fn restore(limits: Limits, bytes: &[u8]) -> Result<StateMachine, DecodeError> {
        limits.assert_valid();
        let body: SnapshotOwned =
            codec::postcard_exact(codec::strip_format(bytes, SNAPSHOT_FORMAT)?)?;
        let keys = codec::strictly_ordered("keys", body.keys)?;
        if let Some((key, v)) = keys.iter().find(|(_, v)| {
            v.create_index == 0 || v.create_index > v.mod_index || v.mod_index > body.applied_index
        }) {
            return Err(DecodeError::Invalid(format!(
                "key {key:?} created at {} and modified at {} with applied index {}",
                v.create_index, v.mod_index, body.applied_index
            )));
        }
        let sessions = restore_sessions(body.sessions, body.clock_ms, body.applied_index)?;
        Ok(StateMachine {
            limits,
            store: Store { keys },
            sessions: Sessions::from_sessions(sessions),
            clock_ms: body.clock_ms,
            applied_index: body.applied_index,
            metrics: Metrics::default(),
        })
    }

    /// A 64-bit digest (FNV-1a over [`snapshot`](Self::snapshot)) of the applied state: keys, values,
    /// versions, sessions, clock, applied index. Replicas that applied the same entries have equal digests.
    pub fn digest(&self) -> u64 {
        codec::fnv1a_64(&self.snapshot())
    }
}

/// Checks and rebuilds the session table of a snapshot.
fn restore_sessions(
    items: Vec<(u64, SessionOwned)>,
    clock_ms: u64,
    applied_index: u64,
) -> Result<BTreeMap<u64, Session>, DecodeError> {
    let owned = codec::strictly_ordered("sessions", items)?;
    let mut sessions = BTreeMap::new();
    for (client, session) in owned {
        if client == 0 || session.last_used_ms > clock_ms {
            return Err(DecodeError::Invalid(format!(
                "session {client} last used at {} with clock {clock_ms}",
                session.last_used_ms
            )));
        }
        let answers = codec::strictly_ordered("answers", session.answers)?;
        if answers
            .first_key_value()
            .is_some_and(|(&seq, _)| seq < session.seq_floor)
        {
            return Err(DecodeError::Invalid(format!(
                "session {client} holds an answer below its floor"
            )));
        }
        if answers
            .values()
            .any(|answer| answer.index == 0 || answer.index > applied_index)
        {
            return Err(DecodeError::Invalid(format!(
                "session {client} holds an answer from outside the applied log"
            )));
        }
        let session = Session {
            last_used_ms: session.last_used_ms,
            seq_floor: session.seq_floor,
            answers,
        };
        sessions.insert(client, session);
    }
    Ok(sessions)
}
