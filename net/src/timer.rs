//! A deadline that moves often and is seldom reached: an idle timeout, a keepalive, the next
//! tick of a loop that wakes for many other reasons.
//!
//! Waiting on a fresh `tokio::time::sleep` in every turn of a `select!` loop arms a new timer
//! each turn. Under tokio that is cheap; under madsim it is not: every poll of a pending `Sleep`
//! adds a timer that stays in the simulator's heap until its instant, and wakes the task then
//! for nothing. A loop that turns a hundred times per timeout leaves a hundred timers behind.
//!
//! [`Deadline`] arms one timer and keeps it:
//!
//! - polled again by the same task with the deadline unchanged, it adds nothing under madsim
//!   (under tokio every poll goes to the `Sleep`: a poll made when the task's cooperative
//!   budget is used up returns `Pending` without registering, so skipping the next one could
//!   lose the wake-up);
//! - moved later, it keeps the armed timer and re-arms only when that one fires early, so an
//!   idle timeout pushed back by every message costs one timer per timeout period, not one per
//!   message;
//! - moved earlier, it re-arms at once.
//!
//! It behaves the same under both runtimes; only the number of timers differs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

/// A resettable deadline (see the module documentation).
///
/// ```
/// use std::time::Duration;
/// use net::timer::Deadline;
/// use tokio::time::Instant;
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let start = Instant::now();
///     let mut idle = Deadline::new(start + Duration::from_millis(5));
///     idle.set(start + Duration::from_millis(20)); // pushed back: no new timer yet
///     idle.reached().await;
///     assert!(start.elapsed() >= Duration::from_millis(20));
/// }
/// ```
#[derive(Debug)]
pub struct Deadline {
    target: Instant,
    /// Armed at or before `target`; firing early only leads to re-arming.
    sleep: Pin<Box<Sleep>>,
    /// The task the armed timer will wake, once it has been polled.
    registered: Option<Waker>,
}

impl Deadline {
    /// A deadline at `target`.
    pub fn new(target: Instant) -> Self {
        Self {
            target,
            sleep: Box::pin(tokio::time::sleep_until(target)),
            registered: None,
        }
    }

    /// When the deadline is.
    pub fn target(&self) -> Instant {
        self.target
    }

    /// Moves the deadline to `target`, later or earlier.
    pub fn set(&mut self, target: Instant) {
        if target < self.sleep.deadline() {
            self.sleep.as_mut().reset(target);
            self.registered = None;
        }
        self.target = target;
    }

    /// Whether the deadline has passed.
    pub fn is_reached(&self) -> bool {
        Instant::now() >= self.target
    }

    /// Ready once the deadline has passed (and for as long as it is not moved).
    pub fn poll_reached(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            // One reading of the clock serves both checks (under madsim a reading is not free).
            let now = Instant::now();
            if now >= self.target {
                return Poll::Ready(());
            }
            if now >= self.sleep.deadline() {
                // The armed timer fired before the deadline it was pushed back to.
                self.sleep.as_mut().reset(self.target);
                self.registered = None;
            }
            // Only under madsim: there a poll of a pending `Sleep` always registers its timer,
            // so one registration per deadline is enough. Under tokio a poll may return
            // `Pending` without registering (when the task has used up its cooperative budget),
            // so every poll goes to the `Sleep`, which is cheap there.
            if cfg!(madsim)
                && self
                    .registered
                    .as_ref()
                    .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                return Poll::Pending;
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Pending => {
                    if cfg!(madsim) {
                        self.registered = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                // Elapsed between the checks above: look again.
                Poll::Ready(()) => {}
            }
        }
    }

    /// Waits until the deadline has passed.
    pub fn reached(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_reached(cx))
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_pushed_back_is_reached_at_its_new_instant_not_before() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_millis(10));
        // Armed for 10 ms by a first poll, then pushed back twice.
        assert!(
            futures_poll_once(&mut deadline).is_pending(),
            "not reached at the start"
        );
        deadline.set(start + Duration::from_millis(30));
        deadline.set(start + Duration::from_millis(50));
        deadline.reached().await;
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_brought_forward_is_reached_at_its_new_instant() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_millis(100));
        assert!(futures_poll_once(&mut deadline).is_pending());
        deadline.set(start + Duration::from_millis(20));
        deadline.reached().await;
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        assert!(deadline.is_reached());
        assert!(
            futures_poll_once(&mut deadline).is_ready(),
            "stays reached until moved"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reached_deadline_moved_to_the_future_waits_again() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_millis(10));
        deadline.reached().await;
        deadline.set(Instant::now() + Duration::from_millis(10));
        assert!(!deadline.is_reached());
        deadline.reached().await;
        assert_eq!(start.elapsed(), Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_polled_by_another_task_wakes_that_task() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_millis(10));
        // Registered with a no-op waker first, as if another task had polled it.
        let noop = Waker::noop();
        assert!(
            deadline
                .poll_reached(&mut Context::from_waker(noop))
                .is_pending()
        );
        // This task must still be woken: a waker that would not wake it is not trusted.
        tokio::time::timeout(Duration::from_millis(100), deadline.reached())
            .await
            .expect("woken at the deadline");
        assert_eq!(start.elapsed(), Duration::from_millis(10));
    }

    fn futures_poll_once(deadline: &mut Deadline) -> Poll<()> {
        deadline.poll_reached(&mut Context::from_waker(Waker::noop()))
    }
}
