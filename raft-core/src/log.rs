//! The in-memory Raft log of one node: the entries after the last snapshot, which of them are
//! durable, and the commit and applied indexes.
//!
//! ```text
//!   snapshot_index   stable_index        commit ≤ last_index
//!        │                │                       │
//!   ─────┼────────────────┼───────────────────────┼──▶ index
//!  compacted  │ durable entries │ entries handed to the runtime to persist
//!             first_index
//! ```
//!
//! The runtime holds the durable copy; this crate keeps the entries since the last compaction
//! in memory, so that it never has to wait for storage. The application bounds that memory by
//! compacting (see [`crate::Node::compact`]).

use crate::message::Entry;
use std::collections::VecDeque;

/// Keeps a deque's spare capacity from outliving a burst.
pub(crate) fn shrink_if_sparse<T>(deque: &mut VecDeque<T>) {
    const CAPACITY_KEPT_MIN: usize = 64;
    if deque.capacity() > CAPACITY_KEPT_MIN && deque.capacity() > deque.len() * 4 {
        deque.shrink_to(deque.len().max(CAPACITY_KEPT_MIN));
    }
}

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// Index of the last entry covered by the snapshot (0 if none).
    snapshot_index: u64,
    /// Term of that entry.
    snapshot_term: u64,
    /// Entries `snapshot_index + 1 ..= last_index()`.
    entries: VecDeque<Entry>,
    /// Entries up to this index are durable (persisted and confirmed by `advance`). Below
    /// `snapshot_index` while a snapshot received from the leader is not yet durable.
    stable_index: u64,
    /// Highest index known to be committed.
    pub(crate) commit: u64,
    /// Highest index handed to the application and confirmed by `advance`.
    pub(crate) applied: u64,
}

impl RaftLog {
    /// A log recovered from storage: everything given is durable.
    pub(crate) fn recovered(snapshot_index: u64, snapshot_term: u64, entries: Vec<Entry>) -> Self {
        let last_index = snapshot_index + entries.len() as u64;
        RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            stable_index: last_index,
            commit: snapshot_index,
            applied: snapshot_index,
        }
    }

    /// A brand-new log holding committed entries that still have to be persisted.
    pub(crate) fn bootstrap(entries: Vec<Entry>) -> Self {
        let last_index = entries.len() as u64;
        RaftLog {
            snapshot_index: 0,
            snapshot_term: 0,
            entries: entries.into(),
            stable_index: 0,
            commit: last_index,
            applied: 0,
        }
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.snapshot_index + 1
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    pub(crate) fn stable_index(&self) -> u64 {
        self.stable_index
    }

    pub(crate) fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// The term of the entry at `index`; `None` if it is compacted or beyond the log.
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.first_index()) as usize].term)
    }

    /// The entry at `index`, if it is in memory.
    pub(crate) fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.first_index()) as usize)
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.snapshot_term, |entry| entry.term)
    }

    pub(crate) fn matches(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a candidate whose log ends at `(last_index, last_term)` is at least as
    /// up-to-date as this log (Raft paper, 5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let own_term = self.last_term();
        last_term > own_term || (last_term == own_term && last_index >= self.last_index())
    }

    /// The largest index `≤ index` whose term is `≤ term`, stopping at the compaction point.
    /// Used on both sides of fast backtracking.
    pub(crate) fn find_conflict_by_term(&self, index: u64, term: u64) -> u64 {
        let mut index = index.min(self.last_index());
        while index > self.snapshot_index {
            match self.term(index) {
                Some(found) if found > term => index -= 1,
                _ => break,
            }
        }
        index
    }

    /// Appends entries that directly follow the log (the leader's own proposals).
    pub(crate) fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        debug_assert!(entry.term >= self.last_term());
        self.entries.push_back(entry);
    }

    /// Appends `entries` (consecutive, starting at or below `last_index() + 1`), replacing any
    /// suffix that conflicts with them. Entries already present with the same term are kept.
    /// Returns the first replaced index, if any.
    ///
    /// # Panics
    /// If the entries would replace a committed entry, or leave a gap: callers check both.
    pub(crate) fn merge(&mut self, entries: Vec<Entry>) -> Option<u64> {
        let first = entries.first()?;
        assert!(first.index <= self.last_index() + 1, "gap in the log");
        let mut truncated_from = None;
        for entry in entries {
            if entry.index <= self.snapshot_index {
                continue;
            }
            match self.term(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    assert!(entry.index > self.commit, "conflict with a committed entry");
                    self.truncate_from(entry.index);
                    truncated_from.get_or_insert(entry.index);
                }
                None => {}
            }
            self.entries.push_back(entry);
        }
        truncated_from
    }

    fn truncate_from(&mut self, index: u64) {
        debug_assert!(index > self.snapshot_index);
        self.entries.truncate((index - self.first_index()) as usize);
        self.stable_index = self.stable_index.min(index - 1);
    }

    /// Entries `low ..= high`, stopping once `size_bytes_max` is reached but always
    /// returning at least one entry if the range is not empty.
    pub(crate) fn slice(&self, low: u64, high: u64, size_bytes_max: u64) -> Vec<Entry> {
        if low > high {
            return Vec::new();
        }
        debug_assert!(low >= self.first_index() && high <= self.last_index());
        let start = (low - self.first_index()) as usize;
        let end = (high - self.first_index()) as usize;
        let mut size_bytes = 0u64;
        let mut out = Vec::new();
        for entry in self.entries.range(start..=end) {
            size_bytes += entry.size_bytes();
            if !out.is_empty() && size_bytes > size_bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// The entries not yet durable.
    pub(crate) fn unstable_entries(&self) -> Vec<Entry> {
        let start = self.stable_index.max(self.snapshot_index) + 1;
        self.slice(start, self.last_index(), u64::MAX)
    }

    /// Marks entries up to `(index, term)` durable, unless the log changed under them since
    /// they were handed out. `(index, term)` may be the snapshot's own position.
    pub(crate) fn stable_to(&mut self, index: u64, term: u64) {
        if index > self.stable_index && self.matches(index, term) {
            self.stable_index = index;
        }
    }

    /// The committed entries not yet handed to the application, up to `size_bytes_max`.
    pub(crate) fn next_committed(&self, size_bytes_max: u64) -> Vec<Entry> {
        let high = self.commit.min(self.last_index());
        self.slice(self.applied + 1, high, size_bytes_max)
    }

    pub(crate) fn has_next_committed(&self) -> bool {
        self.commit.min(self.last_index()) > self.applied
    }

    pub(crate) fn commit_to(&mut self, index: u64) -> bool {
        if index <= self.commit {
            return false;
        }
        assert!(index <= self.last_index(), "commit beyond the log");
        self.commit = index;
        true
    }

    pub(crate) fn applied_to(&mut self, index: u64) {
        if index > self.applied {
            assert!(index <= self.commit, "applied beyond commit");
            self.applied = index;
        }
    }

    /// Drops the entries up to `index` (inclusive), which a snapshot now covers.
    pub(crate) fn compact(&mut self, index: u64) {
        assert!(index > self.snapshot_index && index <= self.applied);
        let term = self.term(index).expect("applied entries are in the log");
        let count = (index - self.snapshot_index) as usize;
        self.entries.drain(..count);
        self.snapshot_index = index;
        self.snapshot_term = term;
        shrink_if_sparse(&mut self.entries);
    }

    /// Replaces the whole log by a snapshot's position (a follower installing a snapshot).
    ///
    /// The snapshot is not durable yet: the stable index drops to what the durable log holds of
    /// the new one (its committed prefix, which the snapshot covers) and reaches the snapshot's
    /// index when the Ready carrying the snapshot is confirmed (`stable_to`).
    pub(crate) fn restore(&mut self, index: u64, term: u64) {
        debug_assert!(index > self.commit);
        self.entries.clear();
        shrink_if_sparse(&mut self.entries);
        self.stable_index = self.stable_index.min(self.commit);
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.commit = index;
        self.applied = index;
    }
}

#[cfg(test)]
mod tests {
    use super::RaftLog;
    use crate::message::{Entry, EntryKind};
    use bytes::Bytes;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(position, term)| entry(position as u64 + 1, *term))
            .collect();
        RaftLog::recovered(0, 0, entries)
    }

    #[test]
    fn merge_replaces_only_the_conflicting_suffix() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        assert_eq!(log.merge(vec![entry(2, 1), entry(3, 3)]), Some(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.stable_index(), 2);
        assert_eq!(log.unstable_entries(), vec![entry(3, 3)]);
    }

    #[test]
    fn find_conflict_by_term_walks_back_over_higher_terms() {
        let log = log_with_terms(&[1, 1, 4, 4, 5, 5]);
        assert_eq!(log.find_conflict_by_term(6, 4), 4);
        assert_eq!(log.find_conflict_by_term(6, 2), 2);
        assert_eq!(log.find_conflict_by_term(100, 9), 6);
        assert_eq!(log.find_conflict_by_term(6, 0), 0);
    }

    /// The result is an index whose term the log knows: at the lowest the compaction point,
    /// even when the snapshot's term is higher than the one asked about. (Going below it would
    /// be safe on the leader's side, where it sends the snapshot one round trip sooner, but the
    /// follower's side reads the term at the result to build its hint; see MUTANTS.md.)
    #[test]
    fn find_conflict_by_term_stops_at_the_compaction_point() {
        let log = RaftLog::recovered(3, 4, vec![entry(4, 5), entry(5, 5)]);
        assert_eq!(log.find_conflict_by_term(5, 2), 3);
        assert_eq!(log.term(3), Some(4));
        assert_eq!(log.find_conflict_by_term(5, 5), 5);
    }

    #[test]
    fn compaction_keeps_terms_at_the_boundary() {
        let mut log = log_with_terms(&[1, 2, 3]);
        log.commit_to(3);
        log.applied_to(2);
        log.compact(2);
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2), Some(2));
        assert_eq!(log.term(1), None);
        assert_eq!(log.slice(3, 3, 0), vec![entry(3, 3)]);
    }

    #[test]
    fn slice_respects_the_size_limit_but_returns_at_least_one_entry() {
        let log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.slice(1, 4, 0).len(), 1);
        assert_eq!(log.slice(1, 4, 48).len(), 2);
        assert_eq!(log.slice(1, 4, u64::MAX).len(), 4);
    }
}
