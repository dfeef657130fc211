//! Bugs planted on purpose, compiled only for the simulator (`--cfg madsim`): the simulation
//! tests switch one on and show that the simulator catches it. Production builds hold none of
//! this code.

use std::sync::atomic::{AtomicU32, Ordering};

/// The bugs this crate can plant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Bug {
    /// Keep a torn tail at recovery instead of cutting it: later records follow the garbage.
    KeepTornTail = 1,
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
