//! Helpers shared by the test files: builders, a deterministic proptest runner, and strategies.

// Each test file uses a part of these helpers.
#![allow(dead_code)]

use kv::{Bytes, Command, Compare, Limits, Op, StateMachine, Txn, Write};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

/// A command of `client_id` with `seq`, acknowledging everything below `seq`.
pub fn command(client_id: u64, seq: u64, timestamp_ms: u64, write: Write) -> Command {
    Command {
        client_id,
        seq,
        first_unacked_seq: seq,
        timestamp_ms,
        write,
    }
}

/// A command without a session.
pub fn anonymous(write: Write) -> Command {
    Command {
        client_id: 0,
        seq: 0,
        first_unacked_seq: 0,
        timestamp_ms: 0,
        write,
    }
}

pub fn put(key: &str, value: &str) -> Write {
    Write::Put {
        key: b(key),
        value: b(value),
    }
}

pub fn delete(key: &str) -> Write {
    Write::Delete { key: b(key) }
}

pub fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// The keys of a machine with their values, in order.
pub fn contents(machine: &StateMachine) -> Vec<(Bytes, Bytes)> {
    let (all, more) = machine.scan(b"", b"", usize::MAX);
    assert!(!more);
    all.into_iter()
        .map(|(key, versioned)| (key, versioned.value))
        .collect()
}

/// The same runner on every run: a fixed seed, a fixed number of cases, no persisted failures.
pub fn runner() -> TestRunner {
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

/// Small limits, so that random sequences expire, evict and forget.
pub fn tight_limits() -> Limits {
    Limits {
        sessions_max: 3,
        session_idle_ms_max: 3_000,
        answers_per_session_max: 3,
    }
}

/// Keys from a small alphabet, so that random writes collide; the empty key is a key too.
pub fn key() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(b'a'..b'e', 0..3).prop_map(Bytes::from)
}

pub fn value() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(b'0'..b'3', 0..3).prop_map(Bytes::from)
}

pub fn compare() -> impl Strategy<Value = Compare> {
    prop_oneof![
        (key(), value()).prop_map(|(key, value)| Compare::ValueEquals { key, value }),
        (key(), 0u64..40).prop_map(|(key, mod_index)| Compare::ModIndexEquals { key, mod_index }),
        key().prop_map(|key| Compare::Absent { key }),
        key().prop_map(|key| Compare::Exists { key }),
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), value()).prop_map(|(key, value)| Op::Put { key, value }),
        key().prop_map(|key| Op::Delete { key }),
        key().prop_map(|key| Op::Get { key }),
    ]
}

pub fn txn() -> impl Strategy<Value = Txn> {
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op(), 0..4),
        prop::collection::vec(op(), 0..4),
    )
        .prop_map(|(compares, success, failure)| Txn {
            compares,
            success,
            failure,
        })
}

pub fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => (key(), value()).prop_map(|(key, value)| Write::Put { key, value }),
        1 => key().prop_map(|key| Write::Delete { key }),
        1 => (key(), key()).prop_map(|(start, end)| Write::DeleteRange { start, end }),
        3 => txn().prop_map(Write::Txn),
    ]
}

/// One committed entry of a random log.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A command; its timestamp is the previous one plus `clock_step_ms` (which may be negative).
    Command {
        client_id: u64,
        seq: u64,
        first_unacked_seq: u64,
        clock_step_ms: i64,
        write: Write,
    },
    /// An entry without a command.
    Skip,
    /// Bytes that are not a command.
    Garbage(Vec<u8>),
}

pub fn entry() -> impl Strategy<Value = Entry> {
    let command = (0u64..5, 1u64..8, 0u64..6, -500i64..1_500, write()).prop_map(
        |(client_id, seq, first_unacked_seq, clock_step_ms, write)| Entry::Command {
            client_id,
            seq,
            first_unacked_seq,
            clock_step_ms,
            write,
        },
    );
    prop_oneof![
        20 => command,
        1 => Just(Entry::Skip),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(Entry::Garbage),
    ]
}

/// Turns random entries into (index, data) pairs, data `None` for a skip; indexes have gaps.
pub fn log(entries: &[Entry]) -> Vec<(u64, Option<Bytes>)> {
    let mut clock_ms: u64 = 10_000;
    let mut index = 0;
    entries
        .iter()
        .map(|entry| {
            index += 1 + (index % 3) / 2;
            let data = match entry {
                Entry::Command {
                    client_id,
                    seq,
                    first_unacked_seq,
                    clock_step_ms,
                    write,
                } => {
                    clock_ms = clock_ms.saturating_add_signed(*clock_step_ms);
                    let command = Command {
                        client_id: *client_id,
                        seq: *seq,
                        first_unacked_seq: *first_unacked_seq,
                        timestamp_ms: clock_ms,
                        write: write.clone(),
                    };
                    Some(command.encode())
                }
                Entry::Skip => None,
                Entry::Garbage(bytes) => Some(Bytes::copy_from_slice(bytes)),
            };
            (index, data)
        })
        .collect()
}

/// Applies one entry of `log`, returning its outcome (`None` for a skip).
pub fn feed(machine: &mut StateMachine, index: u64, data: &Option<Bytes>) -> Option<kv::Applied> {
    match data {
        Some(data) => Some(machine.apply(index, data)),
        None => {
            machine.skip(index);
            None
        }
    }
}
