//! Bugs planted on purpose, compiled only for the simulator (`--cfg madsim`): the simulation
//! tests switch one on and show that the simulator catches it. Production builds hold none of
//! this code.

use std::sync::atomic::{AtomicU32, Ordering};

/// The bugs this crate can plant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Bug {
    /// Send the acknowledgements of a Ready (votes, append responses) before its fsync.
    AckBeforeFsync = 1,
    /// Answer a linearizable read from the local replica, without the leader or a ReadIndex.
    LocalLinearizableRead = 2,
    /// Write every hard state with no vote: a restarted node may vote twice in a term.
    VoteNotPersisted = 4,
    /// Stamp writes with the leader's wall clock (never going back) instead of the shard
    /// clock: a step of that clock expires sessions, and a retry applies twice.
    WallClockStamps = 8,
    /// Replay a resumed subscription from the second entry it missed: the first change a
    /// reconnecting subscriber missed is never sent.
    ResumeSkipsFirst = 16,
}

static PLANTED: AtomicU32 = AtomicU32::new(0);

/// Switches `bug` on or off for the whole process.
pub fn plant(bug: Bug, on: bool) {
    if on {
        PLANTED.fetch_or(bug as u32, Ordering::SeqCst);
    } else {
        PLANTED.fetch_and(!(bug as u32), Ordering::SeqCst);
    }
}

/// Whether `bug` is switched on.
pub(crate) fn planted(bug: Bug) -> bool {
    PLANTED.load(Ordering::SeqCst) & bug as u32 != 0
}
