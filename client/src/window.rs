//! The sequence numbers of one exactly-once session, handed out within a window.
//!
//! Each write of a session carries its sequence number and the session's oldest unacknowledged
//! one; the cluster keeps the answers from that oldest one on (kv's `answers_per_session_max`,
//! 1024 per shard), so that a retry is answered as the first attempt was. If one slow write
//! stayed unacknowledged while more than that many quick ones followed, the cluster would
//! forget its answer and refuse the retry (`sequence_forgotten`). So a new write waits while
//! the oldest unacknowledged one is [`WINDOW`] sequence numbers behind: the writes in flight
//! span fewer than that, and are fewer than that.

use std::collections::BTreeSet;
use std::sync::Mutex;
use tokio::sync::Notify;

/// The widest span of sequence numbers a session's writes in flight may cover: well under
/// the 1024 answers the cluster keeps per session.
pub const WINDOW: u64 = 512;

/// One session's sequence numbers (they start at 1).
#[derive(Debug)]
pub struct SeqWindow {
    state: Mutex<State>,
    /// Woken when a write stops being outstanding.
    room: Notify,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    outstanding: BTreeSet<u64>,
}

impl Default for SeqWindow {
    fn default() -> SeqWindow {
        SeqWindow {
            state: Mutex::new(State {
                next_seq: 1,
                outstanding: BTreeSet::new(),
            }),
            room: Notify::new(),
        }
    }
}

impl SeqWindow {
    /// Waits until the window has room, then takes the next sequence number. It stays
    /// outstanding until the guard is dropped (the write answered, or given up).
    pub async fn next(&self) -> Seq<'_> {
        loop {
            // Created before the check, so that a write ending in between still wakes it.
            let room = self.room.notified();
            {
                let mut state = self.state.lock().expect("session window lock");
                let oldest = state.outstanding.first().copied().unwrap_or(state.next_seq);
                if state.next_seq - oldest < WINDOW {
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    state.outstanding.insert(seq);
                    let first_unacked_seq = oldest.min(seq);
                    return Seq {
                        window: self,
                        seq,
                        first_unacked_seq,
                    };
                }
            }
            room.await;
        }
    }
}

/// A sequence number taken from a [`SeqWindow`], outstanding until dropped.
#[derive(Debug)]
pub struct Seq<'a> {
    window: &'a SeqWindow,
    /// The write's sequence number.
    pub seq: u64,
    /// The session's oldest unacknowledged sequence number when this one was taken.
    pub first_unacked_seq: u64,
}

impl Drop for Seq<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.window.state.lock() {
            state.outstanding.remove(&self.seq);
        }
        self.window.room.notify_waiters();
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_slow_write_holds_the_window_and_its_end_lets_the_next_one_in() {
        let window = SeqWindow::default();
        let slow = window.next().await;
        assert_eq!((slow.seq, slow.first_unacked_seq), (1, 1));
        // Quick writes come and go behind it, up to the edge of the window.
        for seq in 2..=WINDOW {
            let quick = window.next().await;
            assert_eq!((quick.seq, quick.first_unacked_seq), (seq, 1));
        }
        // The next one would be WINDOW numbers past the slow one: it waits...
        let waiting = tokio::time::timeout(Duration::from_millis(50), window.next()).await;
        assert!(waiting.is_err(), "no room while the slow write is out");
        // ... until the slow one ends.
        let (next, ()) = tokio::join!(async { window.next().await.seq }, async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(slow);
        });
        assert_eq!(next, WINDOW + 1);
        let after = window.next().await;
        assert_eq!(after.first_unacked_seq, after.seq, "nothing older is out");
    }
}
