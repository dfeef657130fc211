//! Proof that the simulator can fail: each bug planted on purpose (compiled only for the
//! simulator) is caught within a bounded number of seeds. The seeds are fixed (1, 2, ...), so
//! the number each bug takes is the same on every run.
//!
//! A bug that can only show in some configurations is hunted with the seed's options
//! restricted to them (a [`sim::Focus`]: lease reads on for the lease bug).
//!
//! Some are caught by the clients' history (linearizability), others by the invariants the
//! servers' reports are checked against as the run goes (vote durability, the commit rule,
//! the read rule): see `sim::invariants`.
//!
//! ```sh
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p sim --test planted -- --nocapture
//! ```

#![cfg(madsim)]

/// The most seeds a planted bug may take to be caught.
const SEEDS_MAX: u64 = 100;

struct Planted {
    name: &'static str,
    plant: fn(bool),
    focus: sim::Focus,
}

fn planted() -> Vec<Planted> {
    vec![
        Planted {
            name: "an append acknowledged before its fsync",
            plant: |on| server::planted::plant(server::planted::Bug::AckBeforeFsync, on),
            focus: sim::Focus::Any,
        },
        Planted {
            name: "a linearizable read answered from the local replica",
            plant: |on| server::planted::plant(server::planted::Bug::LocalLinearizableRead, on),
            focus: sim::Focus::Any,
        },
        Planted {
            name: "a torn tail kept instead of cut",
            plant: |on| storage::planted::plant(storage::planted::Bug::KeepTornTail, on),
            focus: sim::Focus::TornWrites,
        },
        Planted {
            name: "a retried write applied twice",
            plant: |on| kv::planted::plant(kv::planted::Bug::ApplyRetryTwice, on),
            focus: sim::Focus::Any,
        },
        Planted {
            name: "an old-term entry committed by counting replicas",
            plant: |on| raft_core::planted::plant(raft_core::planted::Bug::CommitOldTerm, on),
            focus: sim::Focus::Elections,
        },
        Planted {
            name: "a vote not persisted",
            plant: |on| server::planted::plant(server::planted::Bug::VoteNotPersisted, on),
            focus: sim::Focus::Elections,
        },
        Planted {
            name: "writes stamped with the wall clock",
            plant: |on| server::planted::plant(server::planted::Bug::WallClockStamps, on),
            focus: sim::Focus::Any,
        },
        Planted {
            name: "a resumed subscription that skips the first change missed",
            plant: |on| server::planted::plant(server::planted::Bug::ResumeSkipsFirst, on),
            focus: sim::Focus::Any,
        },
        Planted {
            name: "a lease read served after the lease expired",
            plant: |on| raft_core::planted::plant(raft_core::planted::Bug::LeaseAfterExpiry, on),
            focus: sim::Focus::LeaseReads,
        },
    ]
}

#[test]
fn every_planted_bug_is_caught_within_a_bounded_number_of_seeds() {
    let mut missed = Vec::new();
    for bug in planted() {
        (bug.plant)(true);
        let caught = (1..=SEEDS_MAX).find_map(|seed| {
            sim::run_seed_focused(seed, bug.focus)
                .err()
                .map(|failure| (seed, failure))
        });
        (bug.plant)(false);
        match caught {
            Some((seed, failure)) => {
                let reason: String = failure.reason.chars().take(160).collect();
                println!(
                    "caught {:<52} at seed {seed:>4} (focus {}): {reason}",
                    bug.name,
                    bug.focus.name()
                );
            }
            None => missed.push(bug.name),
        }
    }
    assert!(
        missed.is_empty(),
        "not caught within {SEEDS_MAX} seeds: {missed:?}"
    );
}
