//! `sim`: the deterministic simulation of Agenda clusters. It runs the real server code — node
//! loop, router, state machine, storage over the fault-injecting `MemFs`, the transport over
//! madsim's TCP — with clients on their own simulated machines, and checks what they saw.
//!
//! # What a run does
//!
//! A seed decides everything ([`Options::from_seed`]): the cluster (3 to 5 servers, 1, 2 or 4
//! shards, timeouts, snapshot frequency), the workload (2 to 6 clients doing reads, puts,
//! compare-and-swaps and deletes on a few keys across shards, through the router, with
//! retries) and the fault mix, drawn per seed (swarm testing): symmetric, one-way and bridge
//! partitions, leader kills and random kills with restarts (the disk loses its unsynced writes
//! or tears the last one), pauses, failing fsyncs, message loss, duplication and delay at the
//! transport, membership changes and leadership transfers.
//!
//! 1. **Safety phase** (20 simulated seconds): clients work while the nemesis injects faults;
//!    the servers report every leader elected and every entry applied, and the invariants are
//!    checked as it happens ([`invariants`]): at most one leader per term per shard, the same
//!    entry at every index on every replica, no entry skipped except through a snapshot.
//! 2. **Liveness phase**: every partition healed, every server running and resumed, no disk
//!    fault armed (the transport's message loss, duplication and delay stay at their rate), each
//!    shard must commit a write within 30 simulated seconds; every key is read once more, and
//!    these reads must succeed.
//! 3. **Checks**: the client history is linearizable per key (the `linearizability` crate,
//!    which takes operations whose outcome is unknown into account), and replicas that applied
//!    the same index hold equal states.
//!
//! A failure names the seed, the options it drew, and the command that replays it; the same
//! seed gives the same run (the test command checks madsim's determinism on a sampled seed).
//!
//! Everything but [`options`] exists only in `--cfg madsim` builds:
//!
//! ```sh
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p sim --test simulation
//! ```
//!
//! # Example
//!
//! ```
//! let options = sim::Options::from_seed(42);
//! assert_eq!(options, sim::Options::from_seed(42), "a seed always draws the same run");
//! assert!((3..=5).contains(&options.servers));
//! ```

pub mod feed;
pub mod options;
pub mod timeline;

#[cfg(madsim)]
pub mod agenda;
#[cfg(madsim)]
pub mod history;
#[cfg(madsim)]
pub mod invariants;
#[cfg(madsim)]
mod run;
#[cfg(madsim)]
pub mod subscriber;

pub use options::{Faults, Focus, Options};
#[cfg(madsim)]
pub use run::{Failure, Report, run, run_focused};

/// Runs the simulation of `seed` in a runtime of its own (for the planted-bug tests and the
/// soak, which run many seeds from one test). A panic inside the simulation (a server that
/// cannot start, a checker's assertion) is a failure of the seed.
///
/// # Errors
/// As [`run`].
#[cfg(madsim)]
pub fn run_seed(seed: u64) -> Result<Report, Failure> {
    run_seed_focused(seed, Focus::Any)
}

/// As [`run_seed`], with the options of `seed` restricted by `focus`.
///
/// # Errors
/// As [`run`].
#[cfg(madsim)]
pub fn run_seed_focused(seed: u64, focus: Focus) -> Result<Report, Failure> {
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(run_focused(focus))
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Err(Failure {
                options: Box::new(Options::from_seed_focused(seed, focus)),
                reason: format!("a task panicked: {message}"),
            })
        }
    }
}
