//! The bounded history of one shard's applied changes, by log index: what a subscriber that
//! reconnects with its last position is sent again.

use bytes::Bytes;
use kv::Change;
use std::collections::VecDeque;
use std::sync::Arc;

/// The changes of one applied entry (a transaction's changes travel together).
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    /// The entry's log index.
    pub index: u64,
    /// Every key it changed, in the order they changed.
    pub changes: Vec<Change>,
}

impl Event {
    fn bytes(&self) -> usize {
        self.changes
            .iter()
            .map(|change| change.key.len() + change.value.as_ref().map_or(0, Bytes::len))
            .sum()
    }
}

/// What the history holds is no longer enough: the changes after `after` were partly
/// forgotten (evicted, or skipped by a snapshot), so the subscriber must refetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone {
    /// The oldest position the history can still resume from.
    pub floor: u64,
}

/// One shard's recent events.
///
/// Invariant: every entry with index in `(floor, head]` that changed a key is in `events`,
/// in index order; nothing at or below `floor` is.
#[derive(Debug)]
pub struct History {
    events: VecDeque<Arc<Event>>,
    floor: u64,
    head: u64,
    bytes: usize,
    entries_max: usize,
    bytes_max: usize,
}

impl History {
    /// An empty history of a replica that has applied up to `applied`: it can resume from
    /// `applied` on.
    pub fn new(applied: u64, entries_max: usize, bytes_max: usize) -> History {
        History {
            events: VecDeque::new(),
            floor: applied,
            head: applied,
            bytes: 0,
            entries_max: entries_max.max(1),
            bytes_max,
        }
    }

    /// The last applied index published.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The oldest position it can resume from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The replica applied the entry at `index` (above every index before), which changed
    /// `changes` (empty: nothing to tell, only the head moves). The oldest events are
    /// forgotten beyond the bounds.
    ///
    /// # Panics
    /// If `index` is not above the head (the node loop applies in order).
    pub fn append(&mut self, index: u64, changes: Vec<Change>) {
        assert!(index > self.head, "applied {index} after {}", self.head);
        self.head = index;
        if changes.is_empty() {
            return;
        }
        let event = Arc::new(Event { index, changes });
        self.bytes += event.bytes();
        self.events.push_back(event);
        while self.events.len() > self.entries_max
            || (self.bytes > self.bytes_max && self.events.len() > 1)
        {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self.events.pop_front() {
            self.bytes -= oldest.bytes();
            self.floor = oldest.index;
        }
    }

    /// The replica's state jumped to `index` (a snapshot was installed): what lies between is
    /// unknown here, so nothing before `index` can be resumed from any more.
    pub fn reset(&mut self, index: u64) {
        self.events.clear();
        self.bytes = 0;
        self.floor = index;
        self.head = self.head.max(index);
    }

    /// The events after `after`, up to and including `until`, in order; empty when `after` is
    /// at or past `until` (the subscriber is ahead of this replica: it waits).
    ///
    /// # Errors
    /// [`Gone`] when some of them were forgotten.
    pub fn between(&self, after: u64, until: u64) -> Result<Vec<Arc<Event>>, Gone> {
        if after >= until {
            return Ok(Vec::new());
        }
        if after < self.floor {
            return Err(Gone { floor: self.floor });
        }
        let start = self.events.partition_point(|event| event.index <= after);
        #[cfg(madsim)]
        let start = if crate::planted::planted(crate::planted::Bug::ResumeSkipsFirst) {
            (start + 1).min(self.events.len())
        } else {
            start
        };
        Ok(self
            .events
            .range(start..)
            .take_while(|event| event.index <= until)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> Vec<Change> {
        vec![Change {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Some(Bytes::from_static(b"v")),
        }]
    }

    fn indexes(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|event| event.index).collect()
    }

    #[test]
    fn a_subscriber_gets_exactly_the_events_after_its_position() {
        let mut history = History::new(10, 100, 1 << 20);
        history.append(11, put("a"));
        history.append(12, Vec::new());
        history.append(13, put("b"));
        history.append(14, put("c"));
        assert_eq!(indexes(&history.between(10, 14).unwrap()), [11, 13, 14]);
        assert_eq!(indexes(&history.between(12, 14).unwrap()), [13, 14]);
        assert_eq!(indexes(&history.between(11, 13).unwrap()), [13]);
        assert_eq!(history.between(14, 14).unwrap(), []);
        assert_eq!(history.head(), 14);
    }

    #[test]
    fn a_subscriber_ahead_of_the_replica_gets_nothing_and_waits() {
        let mut history = History::new(0, 100, 1 << 20);
        history.append(1, put("a"));
        assert_eq!(history.between(7, 1).unwrap(), []);
    }

    #[test]
    fn a_position_older_than_the_history_is_gone() {
        let mut history = History::new(5, 2, 1 << 20);
        history.append(6, put("a"));
        history.append(7, put("b"));
        history.append(8, put("c"));
        assert_eq!(history.floor(), 6, "6 was evicted");
        assert_eq!(history.between(5, 8), Err(Gone { floor: 6 }));
        assert_eq!(indexes(&history.between(6, 8).unwrap()), [7, 8]);
        assert_eq!(History::new(5, 2, 1).between(4, 5), Err(Gone { floor: 5 }));
    }

    #[test]
    fn the_byte_bound_evicts_but_keeps_the_newest_event() {
        let mut history = History::new(0, 100, 3);
        history.append(1, put("ab"));
        history.append(2, put("cd"));
        assert_eq!(history.floor(), 1);
        assert_eq!(indexes(&history.between(1, 2).unwrap()), [2]);
        history.append(3, put("a very long key"));
        assert_eq!(indexes(&history.between(2, 3).unwrap()), [3]);
    }

    #[test]
    fn a_snapshot_forgets_everything_before_it() {
        let mut history = History::new(0, 100, 1 << 20);
        history.append(1, put("a"));
        history.reset(50);
        assert_eq!(history.between(1, 50), Err(Gone { floor: 50 }));
        assert_eq!(history.head(), 50);
        history.append(51, put("b"));
        assert_eq!(indexes(&history.between(50, 51).unwrap()), [51]);
    }
}
