//! The bounded queue of frames waiting to be written to one connection. Pushing never waits:
//! a push that would overfill the queue closes it instead (the connection is a slow consumer),
//! so neither the dispatcher nor the node loop is ever held back by a client.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What is pushed: one frame, or the frames of one entry for one channel (shared by every
/// subscriber of that channel; they are queued and written together).
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// One frame of this connection (a reply, an error, a subscription's answer).
    Frame(Bytes),
    /// Shared frames, written in order.
    Shared(Arc<[Bytes]>),
}

impl Outgoing {
    fn frames(&self) -> usize {
        match self {
            Outgoing::Frame(_) => 1,
            Outgoing::Shared(frames) => frames.len(),
        }
    }
}

/// What became of a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The item is queued.
    Queued,
    /// The item did not fit: the queue is closed now, as a slow consumer's.
    Overflowed,
    /// The queue was closed already; the item is dropped.
    Closed,
}

/// Why an outbox was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The connection did not keep up: its queue was full.
    SlowConsumer,
    /// The server is stopping.
    Shutdown,
    /// The client did not authenticate in time, or sent wrong tokens too often.
    Unauthenticated,
}

impl CloseReason {
    /// The reason as the close frame says it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Unauthenticated => "unauthenticated",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outgoing>,
    frames: usize,
    closed: Option<CloseReason>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    ready: Notify,
    frames_max: usize,
}

/// One connection's queue. Cheap to clone; every clone is the same queue.
#[derive(Clone, Debug)]
pub struct Outbox {
    inner: Arc<Inner>,
}

/// Items queued at most this many at once before the writer takes them (a batch for one
/// write to the socket).
const TAKE_BATCH_MAX: usize = 64;

/// Above this capacity, an emptied queue gives its memory back: an idle connection holds no
/// large buffer after a burst.
const IDLE_CAPACITY_MAX: usize = 16;

impl Outbox {
    /// A queue of at most `frames_max` frames.
    pub fn new(frames_max: usize) -> Outbox {
        Outbox {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
                frames_max,
            }),
        }
    }

    /// Queues `item`, or closes the queue as a slow consumer's when it does not fit.
    pub fn push(&self, item: Outgoing) -> Pushed {
        let mut state = self.inner.state.lock().expect("outbox lock");
        if state.closed.is_some() {
            return Pushed::Closed;
        }
        let frames = item.frames();
        if state.frames + frames > self.inner.frames_max {
            state.closed = Some(CloseReason::SlowConsumer);
            state.items.clear();
            state.frames = 0;
            drop(state);
            self.inner.ready.notify_one();
            return Pushed::Overflowed;
        }
        state.frames += frames;
        state.items.push_back(item);
        drop(state);
        self.inner.ready.notify_one();
        Pushed::Queued
    }

    /// Frames that fit now (`frames_max` less what is queued); 0 once closed.
    pub fn room(&self) -> usize {
        let state = self.inner.state.lock().expect("outbox lock");
        if state.closed.is_some() {
            return 0;
        }
        self.inner.frames_max - state.frames
    }

    /// Closes the queue; what is queued is dropped.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.inner.state.lock().expect("outbox lock");
        if state.closed.is_none() {
            state.closed = Some(reason);
            state.items.clear();
            state.frames = 0;
        }
        drop(state);
        self.inner.ready.notify_one();
    }

    /// Why the queue was closed, if it was.
    pub fn closed(&self) -> Option<CloseReason> {
        self.inner.state.lock().expect("outbox lock").closed
    }

    /// Waits until something is queued or the queue is closed, then takes a batch: `Err`
    /// with the reason once it is closed. Only one task (the connection's writer) takes.
    ///
    /// # Errors
    /// The reason the queue was closed.
    pub async fn take(&self) -> Result<Vec<Outgoing>, CloseReason> {
        loop {
            if let Some(batch) = self.try_take()? {
                return Ok(batch);
            }
            self.inner.ready.notified().await;
        }
    }

    /// Takes a batch if anything is queued.
    ///
    /// # Errors
    /// The reason the queue was closed.
    pub fn try_take(&self) -> Result<Option<Vec<Outgoing>>, CloseReason> {
        let mut state = self.inner.state.lock().expect("outbox lock");
        if let Some(reason) = state.closed {
            return Err(reason);
        }
        if state.items.is_empty() {
            return Ok(None);
        }
        let count = state.items.len().min(TAKE_BATCH_MAX);
        let batch: Vec<Outgoing> = state.items.drain(..count).collect();
        state.frames -= batch.iter().map(Outgoing::frames).sum::<usize>();
        if state.items.is_empty() && state.items.capacity() > IDLE_CAPACITY_MAX {
            state.items = VecDeque::new();
        }
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Outgoing {
        Outgoing::Frame(Bytes::from_static(text.as_bytes()))
    }

    #[test]
    fn frames_come_out_in_the_order_they_were_pushed() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(frame("a")), Pushed::Queued);
        let shared: Arc<[Bytes]> =
            Arc::from(vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]);
        assert_eq!(outbox.push(Outgoing::Shared(shared)), Pushed::Queued);
        assert_eq!(outbox.room(), 7);
        let batch = outbox.try_take().unwrap().unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(outbox.room(), 10);
        assert!(outbox.try_take().unwrap().is_none());
    }

    #[test]
    fn a_push_that_does_not_fit_closes_the_queue_as_a_slow_consumer() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(frame("a")), Pushed::Queued);
        let shared: Arc<[Bytes]> = Arc::from(vec![Bytes::new(), Bytes::new()]);
        let pushed = outbox.push(Outgoing::Shared(shared));
        assert_eq!(pushed, Pushed::Overflowed, "all of an entry or none");
        assert_eq!(outbox.closed(), Some(CloseReason::SlowConsumer));
        assert_eq!(outbox.push(frame("b")), Pushed::Closed);
        assert_eq!(outbox.try_take().unwrap_err(), CloseReason::SlowConsumer);
        assert_eq!(outbox.room(), 0);
    }

    #[test]
    fn an_emptied_queue_gives_its_memory_back() {
        let outbox = Outbox::new(1000);
        for _ in 0..500 {
            outbox.push(frame("x"));
        }
        while outbox.try_take().unwrap().is_some() {}
        let capacity = outbox.inner.state.lock().unwrap().items.capacity();
        assert!(capacity <= IDLE_CAPACITY_MAX, "{capacity}");
    }
}
