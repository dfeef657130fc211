//! Randomness: unpredictable nonces in production, replayable ones under the simulator, and a small
//! seeded generator for jitter and fault decisions.

use crate::handshake::{HandshakeFailure, NONCE_BYTES};

/// A fresh nonce for one handshake, from the operating system.
#[cfg(not(madsim))]
pub(crate) fn nonce() -> Result<[u8; NONCE_BYTES], HandshakeFailure> {
    let mut nonce = [0; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|error| {
        tracing::error!(%error, "the operating system's random source failed");
        HandshakeFailure::Io
    })?;
    Ok(nonce)
}

/// A fresh nonce for one handshake, from madsim's seeded RNG so that a simulation replays.
/// (madsim also intercepts the libc `getrandom` symbol, but asking its RNG directly does not depend
/// on how the `getrandom` crate reaches the kernel.)
#[cfg(madsim)]
pub(crate) fn nonce() -> Result<[u8; NONCE_BYTES], HandshakeFailure> {
    Ok(madsim::rand::random::<u128>().to_le_bytes())
}

/// A seed for the reconnection jitter when the configuration gives none.
#[cfg(not(madsim))]
pub(crate) fn seed() -> u64 {
    // A failed random source only makes the jitter of different servers alike, so a constant will
    // do.
    getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15)
}

/// A seed for the reconnection jitter, from madsim's seeded RNG.
#[cfg(madsim)]
pub(crate) fn seed() -> u64 {
    madsim::rand::random::<u64>()
}

/// SplitMix64: a tiny, fast, seeded generator for jitter and fault decisions, where statistical
/// quality matters little and replaying a seed matters a lot. Not for secrets.
#[derive(Debug, Clone)]
pub(crate) struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub(crate) fn new(seed: u64) -> Self {
        SeededRng { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..=bound`.
    pub(crate) fn up_to(&mut self, bound: u64) -> u64 {
        match bound.checked_add(1) {
            Some(span) => self.next_u64() % span,
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let mut first = SeededRng::new(5);
        let mut second = SeededRng::new(5);
        let mut other = SeededRng::new(6);
        let first_numbers: Vec<u64> = (0..8).map(|_| first.next_u64()).collect();
        let second_numbers: Vec<u64> = (0..8).map(|_| second.next_u64()).collect();
        let other_numbers: Vec<u64> = (0..8).map(|_| other.next_u64()).collect();
        assert_eq!(first_numbers, second_numbers);
        assert_ne!(first_numbers, other_numbers);
    }

    #[test]
    fn up_to_stays_in_range() {
        let mut rng = SeededRng::new(1);
        for bound in [0, 1, 7, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(rng.up_to(bound) <= bound);
            }
        }
    }

    // Under madsim, nonces need a simulation context; tests/sim.rs covers them there.
    #[cfg(not(madsim))]
    #[test]
    fn nonces_differ() {
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }
}
