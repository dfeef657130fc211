//! Invariants checked while the simulation runs, from the servers' progress reports: at most
//! one leader per term per shard; a client's write takes effect at one index only (a retry is
//! answered from the session table); the shard clock that stamps writes never runs faster than
//! time; a vote a server granted survives its crashes, and so does every entry its log made
//! durable (a restarted replica's log reaches at least as far); a leader moves
//! the commit index past what was committed only to an entry of its own term; every replica applies the same entry at every index (so a
//! committed entry never changes and every replica applies the same sequence); within one life
//! of a replica, every index is applied once and in order, none skipped except through a
//! snapshot; every replica makes the same changes at the same index; a linearizable read is answered from a state that holds every entry any replica
//! had applied (so committed) before the read arrived (Raft's read rule, which is stricter
//! than what the clients' history can show: it catches a stale read even when no write to the
//! same key happened to land in between).

use crate::feed::{self, Applied};
use client::{ServerId, ShardId};
use kv::Change;
use server::observe::Observer;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The first invariant broken, as a sentence.
pub type Violation = String;

#[derive(Debug, Default)]
struct State {
    /// (shard, term) → the server that led it.
    leaders: BTreeMap<(ShardId, u64), ServerId>,
    /// (shard, index) → (term, fingerprint) of the entry applied there.
    applied: BTreeMap<(ShardId, u64), (u64, u64)>,
    /// (server, shard) → the last index it applied (or installed by snapshot).
    last_applied: BTreeMap<(ServerId, ShardId), u64>,
    /// The servers that granted a vote, in order (the nemesis crashes voters right after).
    votes: Vec<ServerId>,
    /// (server, shard) → the index its log ended at when last made durable.
    durable: BTreeMap<(ServerId, ShardId), u64>,
    /// (server, shard) → the newest vote it granted: (term, candidate).
    granted: BTreeMap<(ServerId, ShardId), (u64, ServerId)>,
    /// Per shard, the highest commit index any replica has reported.
    committed_max: BTreeMap<ShardId, u64>,
    /// (shard, client id, seq) → the index at which that write took effect.
    took_effect: BTreeMap<(ShardId, u64, u64), u64>,
    /// Per shard, the largest (stamp − simulated milliseconds) of a write stamped so far.
    stamp_offset_max: BTreeMap<ShardId, i64>,
    /// Per shard, the earliest term of an entry in which a stamped write took effect.
    stamps_committed: BTreeMap<ShardId, u64>,
    /// Per shard, the highest index applied by any replica so far, each time it grew:
    /// (microseconds since the start, index), both increasing.
    applied_max: BTreeMap<ShardId, Vec<(u64, u64)>>,
    /// The newest (term, leader) of each shard.
    newest_leader: BTreeMap<ShardId, (u64, ServerId)>,
    violation: Option<Violation>,
    /// Every election won, with its simulated time in microseconds: (shard, server, term, at).
    elections: Vec<(ShardId, ServerId, u64, u64)>,
    entries_applied: u64,
    snapshots_installed: u64,
    /// The changes of every applied entry that changed something, as the first replica to
    /// apply it reported them (the subscribers' checker compares what they saw with these).
    changes: Applied,
}

/// Listens to every server of a simulated cluster.
#[derive(Debug)]
pub struct Invariants {
    state: Mutex<State>,
    started: tokio::time::Instant,
}

impl Invariants {
    /// Invariants of a run that started at `started` (times are counted from it).
    pub fn new(started: tokio::time::Instant) -> Invariants {
        Invariants {
            state: Mutex::default(),
            started,
        }
    }

    /// The servers that granted a vote after the first `seen` grants, and the count of grants.
    pub fn votes_since(&self, seen: usize) -> (Vec<ServerId>, usize) {
        let state = self.state.lock().expect("invariants lock");
        (
            state.votes[seen.min(state.votes.len())..].to_vec(),
            state.votes.len(),
        )
    }

    /// Every election won: (shard, server, term, microseconds since the start), in order.
    pub fn elections(&self) -> Vec<(ShardId, ServerId, u64, u64)> {
        self.state
            .lock()
            .expect("invariants lock")
            .elections
            .clone()
    }

    /// The first violation seen, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.state
            .lock()
            .expect("invariants lock")
            .violation
            .clone()
    }

    /// The leader of the newest term seen for `shard`, if any.
    pub fn newest_leader(&self, shard: ShardId) -> Option<ServerId> {
        let state = self.state.lock().expect("invariants lock");
        state.newest_leader.get(&shard).map(|(_, leader)| *leader)
    }

    /// Entries applied and snapshots installed over every replica, for the report.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state.lock().expect("invariants lock");
        (state.entries_applied, state.snapshots_installed)
    }

    /// A restarted replica starts again from its snapshot: forget where it was.
    pub fn restarted(&self, server: ServerId) {
        let mut state = self.state.lock().expect("invariants lock");
        state
            .last_applied
            .retain(|(replica, _), _| *replica != server);
    }

    /// Whether a replica has applied entry `index` of `shard` (one that changed something).
    pub fn has_applied(&self, shard: ShardId, index: u64) -> bool {
        let state = self.state.lock().expect("invariants lock");
        state
            .changes
            .get(&shard)
            .is_some_and(|entries| entries.contains_key(&index))
    }

    /// The changes of every entry applied so far that changed something.
    pub fn applied_changes(&self) -> Applied {
        self.state.lock().expect("invariants lock").changes.clone()
    }

    /// Records a violation found outside the observer's reports.
    pub fn record(&self, violation: String) {
        let mut state = self.state.lock().expect("invariants lock");
        if state.violation.is_none() {
            state.violation = Some(violation);
        }
    }
}

impl Observer for Invariants {
    fn log_durable(&self, server: ServerId, shard: ShardId, last_index: u64) {
        let mut state = self.state.lock().expect("invariants lock");
        state.durable.insert((server, shard), last_index);
    }

    fn replica_created(&self, server: ServerId, shard: ShardId) {
        let mut state = self.state.lock().expect("invariants lock");
        state.durable.remove(&(server, shard));
    }

    fn changes_applied(&self, server: ServerId, shard: ShardId, index: u64, changes: &[Change]) {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let changes: Vec<feed::Change> = changes
            .iter()
            .map(|change| (text(&change.key), change.value.as_deref().map(text)))
            .collect();
        let mut state = self.state.lock().expect("invariants lock");
        let first = state
            .changes
            .entry(shard)
            .or_default()
            .entry(index)
            .or_insert_with(|| changes.clone());
        if *first != changes {
            let first = first.clone();
            drop(state);
            self.record(format!(
                "shard {shard}: server {server} applied entry {index} as the changes {changes:?}, another replica as {first:?}"
            ));
        }
    }

    fn leader_elected(&self, server: ServerId, shard: ShardId, term: u64) {
        let mut state = self.state.lock().expect("invariants lock");
        if let Some(other) = state.leaders.insert((shard, term), server)
            && other != server
        {
            drop(state);
            self.record(format!(
                "two leaders in term {term} of shard {shard}: servers {other} and {server}"
            ));
            return;
        }
        let at = self.started.elapsed().as_micros() as u64;
        state.elections.push((shard, server, term, at));
        let newest = state.newest_leader.entry(shard).or_insert((term, server));
        if term >= newest.0 {
            *newest = (term, server);
        }
    }

    fn entry_applied(
        &self,
        server: ServerId,
        shard: ShardId,
        index: u64,
        term: u64,
        fingerprint: u64,
    ) {
        let mut state = self.state.lock().expect("invariants lock");
        state.entries_applied += 1;
        let violation = match state.applied.insert((shard, index), (term, fingerprint)) {
            Some((other_term, other)) if (other_term, other) != (term, fingerprint) => {
                Some(format!(
                    "shard {shard}: server {server} applied entry {index} of term {term} (fingerprint {fingerprint:016x}), another replica applied entry {index} of term {other_term} ({other:016x})"
                ))
            }
            _ => None,
        };
        let at = self.started.elapsed().as_micros() as u64;
        let steps = state.applied_max.entry(shard).or_default();
        if steps.last().is_none_or(|(_, newest)| index > *newest) {
            steps.push((at, index));
        }
        let last = state.last_applied.insert((server, shard), index);
        // A replica applies each index once, in order, within one life (a restart starts it
        // again from its snapshot; a snapshot moves it forward).
        let skipped = last.filter(|last| index != last + 1).map(|last| {
            format!("shard {shard}: server {server} applied entry {index} right after {last}")
        });
        drop(state);
        if let Some(violation) = violation.or(skipped) {
            self.record(violation);
        }
    }

    fn vote_granted(&self, server: ServerId, shard: ShardId, term: u64, candidate: ServerId) {
        let mut state = self.state.lock().expect("invariants lock");
        state.votes.push(server);
        state.granted.insert((server, shard), (term, candidate));
    }

    fn write_took_effect(
        &self,
        server: ServerId,
        shard: ShardId,
        index: u64,
        client_id: u64,
        seq: u64,
    ) {
        let mut state = self.state.lock().expect("invariants lock");
        if let Some(&(term, _)) = state.applied.get(&(shard, index)) {
            let earliest = state.stamps_committed.entry(shard).or_insert(term);
            *earliest = (*earliest).min(term);
        }
        let first = *state
            .took_effect
            .entry((shard, client_id, seq))
            .or_insert(index);
        drop(state);
        if first != index {
            self.record(format!(
                "shard {shard}: write {seq} of client {client_id} took effect at index {first} \
                 and again at index {index} (server {server}): a retry applied twice"
            ));
        }
    }

    fn write_stamped(
        &self,
        server: ServerId,
        shard: ShardId,
        term: u64,
        stamped_ms: u64,
        from_wall_clock: bool,
    ) {
        // A stamp carries a known one forward by at most the time that passed, so its offset
        // from simulated time never grows, except for a wall-clock read while the shard has
        // no committed stamp (then nothing can expire by it).
        let offset = stamped_ms as i64 - self.started.elapsed().as_millis() as i64;
        let mut state = self.state.lock().expect("invariants lock");
        // A leader of `term` holds every entry committed in terms up to it (a stale leader,
        // deposed without knowing, may not: what it proposes cannot commit).
        let committed = state
            .stamps_committed
            .get(&shard)
            .is_some_and(|earliest| *earliest <= term);
        let known = state.stamp_offset_max.get(&shard).copied();
        state
            .stamp_offset_max
            .insert(shard, known.map_or(offset, |known| known.max(offset)));
        drop(state);
        let violation = if from_wall_clock && committed {
            Some(format!(
                "server {server}, leader of term {term}, stamped a write of shard {shard} from \
                 its wall clock, although stamps of the shard were committed in a term up to it"
            ))
        } else if let Some(known) = known
            && !from_wall_clock
            && offset > known + 1
        {
            Some(format!(
                "server {server} stamped a write of shard {shard} {} ms ahead of the time that \
                 passed since the stamps it continues: the shard's clock ran fast",
                offset - known
            ))
        } else {
            None
        };
        if let Some(violation) = violation {
            self.record(violation);
        }
    }

    fn replica_started(
        &self,
        server: ServerId,
        shard: ShardId,
        term: u64,
        vote: ServerId,
        last_index: u64,
    ) {
        let mut state = self.state.lock().expect("invariants lock");
        let durable = state.durable.insert((server, shard), last_index);
        let granted = state.granted.get(&(server, shard)).copied();
        drop(state);
        if let Some(durable) = durable
            && last_index < durable
        {
            self.record(format!(
                "server {server} restarted shard {shard} with its log ending at {last_index}, \
                 but had made it durable up to {durable}: entries it acknowledged were lost"
            ));
        }
        let Some((granted_term, candidate)) = granted else {
            return;
        };
        if term < granted_term || (term == granted_term && vote != candidate) {
            self.record(format!(
                "server {server} voted for {candidate} in term {granted_term} of shard {shard}, \
                 then restarted with term {term} and vote {vote}: a granted vote was not durable"
            ));
        }
    }

    fn commit_reported(
        &self,
        server: ServerId,
        shard: ShardId,
        term: u64,
        leader: bool,
        commit: u64,
        commit_term: Option<u64>,
    ) {
        let mut state = self.state.lock().expect("invariants lock");
        let known = state.committed_max.entry(shard).or_insert(0);
        let before = *known;
        *known = before.max(commit);
        drop(state);
        // A leader that moves the commit index past what anyone committed must point it at an
        // entry of its own term: an older entry held by a majority may still be overwritten
        // (Raft §5.4.2, Figure 8).
        if leader
            && commit > before
            && let Some(entry_term) = commit_term
            && entry_term != term
        {
            self.record(format!(
                "server {server}, leader of term {term} of shard {shard}, committed index \
                 {commit} of term {entry_term} by counting replicas (Raft §5.4.2)"
            ));
        }
    }

    fn read_served(
        &self,
        server: ServerId,
        shard: ShardId,
        arrived: tokio::time::Instant,
        state_index: u64,
    ) {
        let arrived_us = arrived.saturating_duration_since(self.started).as_micros() as u64;
        let state = self.state.lock().expect("invariants lock");
        let Some(steps) = state.applied_max.get(&shard) else {
            return;
        };
        // The newest index applied anywhere strictly before the read arrived: it was committed
        // by then, so the read must see it.
        let before = steps.partition_point(|(at, _)| *at < arrived_us);
        let Some(&(applied_at, index)) = before.checked_sub(1).map(|last| &steps[last]) else {
            return;
        };
        drop(state);
        if index > state_index {
            self.record(format!(
                "shard {shard}: server {server} answered a linearizable read that arrived at {arrived_us} µs from its state at index {state_index}, but entry {index} was applied (so committed) at {applied_at} µs, before the read arrived: a stale read"
            ));
        }
    }

    fn snapshot_installed(&self, server: ServerId, shard: ShardId, index: u64) {
        let mut state = self.state.lock().expect("invariants lock");
        state.snapshots_installed += 1;
        state.last_applied.insert((server, shard), index);
    }
}
