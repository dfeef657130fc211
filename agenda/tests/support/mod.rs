//! What the agenda's test files share: a runtime, an agenda over `MemStore`, local times, and
//! the delivery of every outbox.

#![allow(dead_code)]

use agenda::memory::{MemStore, TestEnv};
use agenda::schedule::Local;
use agenda::users::Registration;
use agenda::{Agenda, Config};

pub const JUNE_1_MS: i64 = 1_780_272_000_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

pub type TestAgenda = Agenda<MemStore, TestEnv>;

pub fn run<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

pub fn agenda() -> TestAgenda {
    Agenda::new(
        MemStore::new(),
        TestEnv::at(JUNE_1_MS - 30 * DAY_MS),
        Config::for_tests(),
    )
}

pub fn local(text: &str) -> Local {
    text.parse().expect("a local time")
}

/// Runs every outbox until nothing is left, as the leaders' delivery tasks do.
pub async fn deliver_all(agenda: &TestAgenda) {
    for _ in 0..10 {
        let am = agenda.deliver("am", 100).await.expect("delivery");
        let nz = agenda.deliver("nz", 100).await.expect("delivery");
        if am.delivered + am.superseded + nz.delivered + nz.superseded == 0 {
            return;
        }
    }
    panic!("the outboxes never emptied");
}

/// Registers `name` (password `<name> password`) in `zone`.
pub async fn register(agenda: &TestAgenda, name: &str, zone: &str) {
    agenda
        .register(Registration {
            name: name.into(),
            password: format!("{name} password"),
            display_name: None,
            zone: Some(zone.into()),
            working_hours: None,
        })
        .await
        .expect("registration");
}
