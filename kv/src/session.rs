//! The exactly-once table: one session per client, holding the answers of its recent writes.

use std::collections::{BTreeMap, BTreeSet};

use crate::{ApplyError, WriteResult};

/// The answer to one write, as a duplicate gets it back: where it was first applied, and what
/// it did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Answer {
    /// The log index at which the write was applied.
    pub(crate) index: u64,
    /// Its result.
    pub(crate) result: Result<WriteResult, ApplyError>,
}

/// One client's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The machine's clock when the client last sent a command.
    pub(crate) last_used_ms: u64,
    /// The lowest seq whose answer may still be held: the largest `first_unacked_seq` the client sent,
    /// raised past any answer evicted by the bound. A seq below it is forgotten.
    pub(crate) seq_floor: u64,
    /// The held answers, by seq; every key is at least `seq_floor`.
    pub(crate) answers: BTreeMap<u64, Answer>,
}

impl Session {
    fn new(clock_ms: u64) -> Session {
        Session {
            last_used_ms: clock_ms,
            seq_floor: 0,
            answers: BTreeMap::new(),
        }
    }

    /// The client has every answer below `first_unacked_seq`: forget them. The floor never goes down,
    /// so a reordered, older command cannot bring an acknowledged seq back.
    pub(crate) fn acknowledge(&mut self, first_unacked_seq: u64) {
        if first_unacked_seq > self.seq_floor {
            self.seq_floor = first_unacked_seq;
            self.answers = self.answers.split_off(&first_unacked_seq);
        }
    }

    /// Holds the answer to `seq`, evicting the lowest seqs beyond `answers_max`.
    pub(crate) fn record(&mut self, seq: u64, answer: Answer, answers_max: usize) {
        debug_assert!(seq >= self.seq_floor);
        let replaced = self.answers.insert(seq, answer);
        debug_assert!(
            replaced.is_none(),
            "a held seq is answered, never applied again"
        );
        while self.answers.len() > answers_max {
            let (evicted, _) = self
                .answers
                .pop_first()
                .expect("more answers than the bound");
            // A retry of the evicted seq must not apply again: raise the floor past it.
            self.seq_floor = self.seq_floor.max(evicted.saturating_add(1));
        }
    }
}

/// Every session, with an index by last use for cheap expiry and least-recently-used eviction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sessions {
    pub(crate) by_client: BTreeMap<u64, Session>,
    /// `(last_used_ms, client_id)` of every session, oldest first.
    by_last_used: BTreeSet<(u64, u64)>,
}

impl Sessions {
    /// Rebuilds the table from sessions in client order (from a snapshot).
    pub(crate) fn from_sessions(by_client: BTreeMap<u64, Session>) -> Sessions {
        let by_last_used = by_client
            .iter()
            .map(|(&client, session)| (session.last_used_ms, client))
            .collect();
        Sessions {
            by_client,
            by_last_used,
        }
    }

    /// How many sessions there are.
    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.by_client.len(), self.by_last_used.len());
        self.by_client.len()
    }

    /// Drops every session idle for longer than `idle_ms_max` at `clock_ms`; returns how many.
    pub(crate) fn expire(&mut self, clock_ms: u64, idle_ms_max: u64) -> u64 {
        let mut expired = 0;
        while let Some(&(last_used_ms, client)) = self.by_last_used.first() {
            if clock_ms.saturating_sub(last_used_ms) <= idle_ms_max {
                break;
            }
            self.remove_oldest(last_used_ms, client);
            expired += 1;
        }
        expired
    }

    /// The client's session, used at `clock_ms`, created if absent; before a creation, the least
    /// recently used sessions (ties: the lowest client id) are evicted to stay within `sessions_max`.
    /// Returns the session and how many were evicted.
    pub(crate) fn touch(
        &mut self,
        client: u64,
        clock_ms: u64,
        sessions_max: usize,
    ) -> (&mut Session, u64) {
        let mut evicted = 0;
        if let Some(session) = self.by_client.get_mut(&client) {
            let removed = self.by_last_used.remove(&(session.last_used_ms, client));
            debug_assert!(removed);
            session.last_used_ms = clock_ms;
        } else {
            while self.len() >= sessions_max {
                let &(last_used_ms, oldest) = self
                    .by_last_used
                    .first()
                    .expect("sessions_max is at least 1");
                self.remove_oldest(last_used_ms, oldest);
                evicted += 1;
            }
            self.by_client.insert(client, Session::new(clock_ms));
        }
        self.by_last_used.insert((clock_ms, client));
        (
            self.by_client.get_mut(&client).expect("just touched"),
            evicted,
        )
    }

    fn remove_oldest(&mut self, last_used_ms: u64, client: u64) {
        self.by_last_used.pop_first();
        let removed = self.by_client.remove(&client);
        debug_assert_eq!(
            removed.map(|session| session.last_used_ms),
            Some(last_used_ms)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Answer {
        Answer {
            index: 1,
            result: Ok(WriteResult::DeleteRange { deleted: 0 }),
        }
    }

    #[test]
    fn evicting_an_answer_raises_the_floor_past_it() {
        let mut session = Session::new(0);
        for seq in [1, 2, 5] {
            session.record(seq, ok(), 2);
        }
        assert_eq!(
            session.answers.keys().copied().collect::<Vec<_>>(),
            vec![2, 5]
        );
        assert_eq!(session.seq_floor, 2);
        session.acknowledge(1);
        assert_eq!(session.seq_floor, 2, "the floor never goes down");
        session.acknowledge(4);
        assert_eq!((session.seq_floor, session.answers.len()), (4, 1));
    }

    #[test]
    fn the_last_use_index_follows_every_touch_expiry_and_eviction() {
        let mut sessions = Sessions::default();
        sessions.touch(1, 10, 3);
        sessions.touch(2, 20, 3);
        sessions.touch(1, 30, 3);
        assert_eq!(
            sessions.by_last_used.iter().copied().collect::<Vec<_>>(),
            vec![(20, 2), (30, 1)]
        );
        let (_, evicted) = sessions.touch(3, 30, 2);
        assert_eq!(evicted, 1);
        assert_eq!(
            sessions.by_last_used.iter().copied().collect::<Vec<_>>(),
            vec![(30, 1), (30, 3)]
        );
        assert_eq!(sessions.expire(40, 10), 0);
        assert_eq!(sessions.expire(41, 10), 2);
        assert_eq!(sessions.len(), 0);
        assert!(sessions.by_last_used.is_empty());
    }
}
