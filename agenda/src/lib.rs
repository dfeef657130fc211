//! The team calendar as a **layer** over the sharded transactional key-value store.
//!
//! Users, groups, events and invitations are records under keys laid out so that each routes to
//! its shard (see ARCHITECTURE.md, "The key layout"); every agenda operation reads, then commits
//! one transaction on one shard with compares on what it read (optimistic concurrency, retried
//! on conflict). Work that spans shards (an invitation from Alice's events shard to Bob's) goes
//! through an outbox in the same transaction as the change that causes it. Nothing below this
//! crate learns about calendars.
//!
//! The layer is being built module by module; this commit holds the crate and the maintained
//! libraries it stands on (time zones, recurrence rules, password hashing).

pub mod schedule;
