//! The simulation, one run per madsim seed: `MADSIM_TEST_SEED` picks the first seed and
//! `MADSIM_TEST_NUM` how many consecutive seeds to run.
//!
//! ```sh
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim MADSIM_TEST_SEED=1 MADSIM_TEST_NUM=20 \
//!     cargo test -p sim --test simulation -- --nocapture
//! ```

#![cfg(madsim)]

#[madsim::test]
async fn a_seeded_cluster_under_faults_stays_linearizable_and_recovers() {
    match sim::run().await {
        Ok(report) => {
            println!(
                "seed {}: {} operations ({} with unknown outcome), {} faults, {} entries applied, {} snapshots installed, {} notifications over {} resumes, agenda: {} operations acknowledged, {} failed or unknown, {} invitations checked",
                report.options.seed,
                report.operations,
                report.unknown,
                report.faults,
                report.entries_applied,
                report.snapshots_installed,
                report.notifications,
                report.resumes,
                report.agenda_operations.0,
                report.agenda_operations.1,
                report.invitations_checked
            );
        }
        Err(failure) => panic!("{failure}"),
    }
}
