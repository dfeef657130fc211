//! The team calendar as a **layer** over the sharded transactional key-value store.
//!
//! Users, groups, events and invitations are records under keys laid out so that each routes to
//! its shard ([`keys`]); every agenda operation reads, then commits **one transaction on one
//! shard** with compares on what it read (optimistic concurrency, retried on conflict: [`Tx`]).
//! Work that spans shards — an invitation from Alice's events shard to Bob's, Bob's answer back —
//! is written in the same transaction as the change that causes it, as an outbox record, and
//! delivered later, idempotently ([`outbox`]). Nothing below this crate learns about calendars:
//! it sees keys, values and transactions, so the simulator's linearizability checks of the store
//! cover the agenda's data.
//!
//! # What it promises
//!
//! - **One shard per write.** Every write is one transaction whose keys belong to one shard of
//!   the default map; the store refuses any other (and the tests run on a store that does).
//! - **Never half-done across shards.** Once an event's write is acknowledged, each attendee's
//!   invitation eventually lands exactly once, whatever crashes between (outbox + newest-copy-wins
//!   delivery); an answer (RSVP) travels back the same way.
//! - **No lost updates.** Two writers that read the same record cannot both commit a change
//!   based on it: the second one's compare fails, and it reads again.
//! - **Secrets are not stored.** Passwords as Argon2id hashes, session tokens as SHA-256 digests.
//! - **Time zones and recurrences** from maintained crates (chrono-tz, rrule), with every input
//!   validated: hostile strings get [`AgendaError::Invalid`], never a panic.
//!
//! The crate does no I/O of its own: a [`Store`] (the server's service door, the native client,
//! or [`memory::MemStore`]) and an [`Env`] (clock, randomness) are handed in.
//!
//! # Example
//!
//! ```
//! use agenda::memory::{MemStore, TestEnv};
//! use agenda::events::{Attendee, NewEvent, Response};
//! use agenda::schedule::Schedule;
//! use agenda::{Agenda, Config, users::Registration};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let agenda = Agenda::new(MemStore::new(), TestEnv::at(1_780_000_000_000), Config::for_tests());
//! for name in ["alice", "nora"] {
//!     agenda.register(Registration {
//!         name: name.into(), password: "correct horse".into(),
//!         display_name: None, zone: Some("Europe/Madrid".into()), working_hours: None,
//!     }).await?;
//! }
//! let session = agenda.login("alice", "correct horse").await?;
//! let alice = agenda.authenticate(&session.token).await?;
//!
//! // Alice (events a-m) invites Nora (events n-z) to a weekly meeting: one transaction on
//! // Alice's shard, with an outbox record for Nora.
//! let saved = agenda.create_event(&alice, NewEvent {
//!     title: "Planning".into(), description: String::new(), location: "Room 2".into(),
//!     schedule: serde_json::from_str(r#"{"zone": "Europe/Madrid",
//!         "start": "2026-06-01T10:00", "end": "2026-06-01T11:00",
//!         "rrule": "FREQ=WEEKLY;COUNT=4"}"#).unwrap(),
//!     attendees: vec![Attendee::User("nora".into())],
//! }).await?;
//! assert!(agenda.invitations("nora", true).await?.is_empty()); // not delivered yet
//!
//! // The delivery (run by the leader of Alice's shard) copies it to Nora's shard.
//! agenda.deliver("am", 100).await?;
//! let pending = agenda.invitations("nora", true).await?;
//! assert_eq!(pending[0].copy.event_id, saved.event.id);
//!
//! // Nora accepts; her answer travels back the same way.
//! agenda.rsvp("nora", &saved.event.id, Response::Accepted, None).await?;
//! agenda.deliver("nz", 100).await?;
//! let tally = agenda.tally(&alice, &saved.event.id).await?;
//! assert_eq!(tally.counts[&Response::Accepted], 1);
//! # Ok::<(), agenda::AgendaError>(())
//! # }).unwrap();
//! ```

pub mod calendar;
pub mod error;
pub mod events;
pub mod groups;
pub mod ical;
pub mod keys;
pub mod memory;
pub mod outbox;
pub mod reminders;
pub mod schedule;
pub mod store;
pub mod users;
pub mod wire;

pub use error::{AgendaError, StoreError};
pub use store::{Committed, Env, Scanned, Store, Tx};

/// The layer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a session lasts (ms).
    pub session_ttl_ms: i64,
    /// Argon2id memory cost in KiB (OWASP's minimum for Argon2id: 19,456 with 2 iterations).
    pub password_memory_kib: u32,
    /// Argon2id iterations.
    pub password_iterations: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            session_ttl_ms: 30 * 24 * 3_600_000,
            password_memory_kib: 19 * 1024,
            password_iterations: 2,
        }
    }
}

impl Config {
    /// Cheap password hashing for tests and the simulator (the same algorithm, tiny costs).
    pub fn for_tests() -> Config {
        Config {
            password_memory_kib: 64,
            password_iterations: 1,
            ..Config::default()
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), AgendaError> {
        if self.session_ttl_ms <= 0 {
            return Err(AgendaError::invalid("session_ttl_ms", "must be positive"));
        }
        argon2::Params::new(self.password_memory_kib, self.password_iterations, 1, None)
            .map_err(|error| AgendaError::invalid("password hashing", error.to_string()))?;
        Ok(())
    }
}

/// The agenda over a store: every operation of the product, as methods (users and sessions in
/// [`users`], groups in [`groups`], events, invitations and replies in [`events`], reading time
/// in [`calendar`], the cross-shard delivery in [`outbox`], alerts in [`reminders`]).
pub struct Agenda<S, E> {
    store: S,
    env: E,
    config: Config,
}

impl<S, E> std::fmt::Debug for Agenda<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agenda")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store, E: Env> Agenda<S, E> {
    /// The agenda over `store`.
    ///
    /// # Panics
    ///
    /// If `config` does not pass [`Config::validate`].
    pub fn new(store: S, env: E, config: Config) -> Agenda<S, E> {
        if let Err(error) = config.validate() {
            panic!("invalid agenda config: {error}");
        }
        Agenda { store, env, config }
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The clock and random source.
    pub fn env(&self) -> &E {
        &self.env
    }
}
