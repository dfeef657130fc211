//! Hostile bytes: no entry and no snapshot can make the machine panic; they give errors, counted.

mod support;

use kv::{ApplyError, COMMAND_FORMAT, Command, DecodeError, Limits, SNAPSHOT_FORMAT, StateMachine};
use proptest::prelude::*;
use support::{command, entry, feed, log, put, runner, tight_limits, write};

#[test]
fn malformed_entries_are_errors_that_are_counted_and_still_move_the_applied_index() {
    let mut valid = command(1, 1, 0, put("k", "v")).encode().to_vec();
    let truncated = valid[..valid.len() - 1].to_vec();
    let mut unknown_format = valid.clone();
    unknown_format[0] = 9;
    valid.push(0);
    let trailing = valid;
    let mut machine = StateMachine::new(Limits::default());
    let bad: [&[u8]; 4] = [&[], &unknown_format, &truncated, &trailing];
    for (data, index) in bad.into_iter().zip(1..) {
        let applied = machine.apply(index, data);
        assert!(
            matches!(applied.result, Err(ApplyError::Malformed { .. })),
            "{applied:?}"
        );
        assert!(applied.changes.is_empty() && !applied.duplicate);
        assert_eq!(machine.applied_index(), index);
    }
    assert!(machine.is_empty());
    assert_eq!(machine.metrics().malformed_entries, 4);
    assert_eq!(machine.metrics().entries_applied, 4);
}

#[test]
fn decode_names_what_is_wrong_and_accepts_exactly_one_encoding() {
    let encoded = command(1, 1, 0, put("k", "v")).encode();
    assert_eq!(encoded[0], COMMAND_FORMAT);
    assert_eq!(Command::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(Command::decode(&[7, 0]), Err(DecodeError::UnknownFormat(7)));
    let mut trailing = encoded.to_vec();
    trailing.extend_from_slice(&[1, 2]);
    assert_eq!(
        Command::decode(&trailing),
        Err(DecodeError::TrailingBytes(2))
    );
    assert!(matches!(
        Command::decode(&encoded[..3]),
        Err(DecodeError::Postcard(_))
    ));
}

#[test]
fn every_command_decodes_back_to_itself() {
    let strategy = (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        write(),
    );
    runner()
        .run(
            &strategy,
            |(client_id, seq, first_unacked_seq, timestamp_ms, write)| {
                let command = Command {
                    client_id,
                    seq,
                    first_unacked_seq,
                    timestamp_ms,
                    write,
                };
                prop_assert_eq!(Command::decode(&command.encode()), Ok(command));
                Ok(())
            },
        )
        .unwrap();
}

/// Arbitrary bytes, half of them behind a valid format byte so that postcard sees them.
fn hostile_bytes(format: u8) -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(
        move |(prefixed, mut bytes)| {
            if prefixed {
                bytes.insert(0, format);
            }
            bytes
        },
    )
}

#[test]
fn arbitrary_entry_bytes_never_panic_apply() {
    let strategy = prop::collection::vec(hostile_bytes(COMMAND_FORMAT), 1..20);
    runner()
        .run(&strategy, |entries| {
            let mut machine = StateMachine::new(tight_limits());
            for (data, index) in entries.iter().zip(1..) {
                let applied = machine.apply(index, data);
                prop_assert_eq!(applied.index, index);
                let decodes = Command::decode(data).is_ok();
                prop_assert_eq!(
                    matches!(applied.result, Err(ApplyError::Malformed { .. })),
                    !decodes
                );
            }
            prop_assert_eq!(machine.applied_index(), entries.len() as u64);
            Ok(())
        })
        .unwrap();
}

/// A change to a valid snapshot: cut it, flip a bit, or insert a byte, at a position.
#[derive(Clone, Debug)]
enum Damage {
    Cut(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Cut),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip(at, bit)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert(at, byte)),
    ]
}

fn damaged(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::Cut(at) => bytes.truncate(at.index(bytes.len())),
        Damage::Flip(at, bit) => {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        Damage::Insert(at, byte) => bytes.insert(at.index(bytes.len() + 1), *byte),
    }
    bytes
}

/// A machine restored from hostile bytes still works: it applies, snapshots and restores.
fn exercise(mut machine: StateMachine) -> Result<(), TestCaseError> {
    let snapshot = machine.snapshot();
    let again = StateMachine::restore(tight_limits(), &snapshot).unwrap();
    prop_assert_eq!(again.snapshot(), snapshot);
    let _ = machine.scan(b"", b"", 100);
    for (client, seq) in [(1, 1), (2, 5), (3, 1), (4, 2), (1, 1)] {
        let write = command(client, seq, u64::MAX / 2, put("k", "v")).encode();
        for data in [&[][..], &write[..]] {
            let Some(index) = machine.applied_index().checked_add(1) else {
                return Ok(());
            };
            machine.apply(index, data);
        }
    }
    Ok(())
}

#[test]
fn arbitrary_snapshot_bytes_never_panic_restore() {
    runner()
        .run(&hostile_bytes(SNAPSHOT_FORMAT), |bytes| {
            if let Ok(machine) = StateMachine::restore(tight_limits(), &bytes) {
                exercise(machine)?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn damaged_snapshots_never_panic_restore() {
    let strategy = (
        prop::collection::vec(entry(), 0..30),
        prop::collection::vec(damage(), 1..4),
    );
    // Some damage (a flipped bit in a value) still restores; count it, so the test shows it reaches
    // the restored machine and not only the decoder's errors.
    let restored = std::cell::Cell::new(0);
    runner()
        .run(&strategy, |(entries, damages)| {
            let mut machine = StateMachine::new(tight_limits());
            for (index, data) in &log(&entries) {
                feed(&mut machine, *index, data);
            }
            let mut bytes = machine.snapshot().to_vec();
            for damage in &damages {
                bytes = damaged(bytes, damage);
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(machine) = StateMachine::restore(tight_limits(), &bytes) {
                restored.set(restored.get() + 1);
                exercise(machine)?;
            }
            Ok(())
        })
        .unwrap();
    assert!(restored.get() > 0);
}
