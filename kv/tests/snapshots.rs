//! Snapshots and digests: what restore promises, and that replicas agree byte for byte.

mod support;

use kv::{
    ApplyError, Bytes, Command, DecodeError, Limits, SNAPSHOT_FORMAT, StateMachine, Versioned,
    WriteResult,
};
use proptest::prelude::*;
use support::{b, command, entry, feed, log, put, runner, tight_limits};

/// A machine with keys, two sessions (one with held answers), a malformed entry and skips.
fn busy_machine() -> StateMachine {
    let mut machine = StateMachine::new(Limits::default());
    machine.skip(1);
    machine.apply(2, &command(1, 1, 1_000, put("a", "1")).encode());
    machine.apply(3, &command(2, 1, 1_200, put("b", "1")).encode());
    let pipelined = Command {
        first_unacked_seq: 1,
        ..command(1, 2, 1_300, put("a", "2"))
    };
    machine.apply(4, &pipelined.encode());
    machine.apply(5, b"not a command");
    machine.skip(8);
    machine
}

#[test]
fn restore_gives_an_equal_digest_and_the_same_future_including_deduplication() {
    let mut original = busy_machine();
    let snapshot = original.snapshot();
    assert_eq!(snapshot[0], SNAPSHOT_FORMAT);
    let mut restored = StateMachine::restore(Limits::default(), &snapshot).unwrap();
    assert_eq!(restored.digest(), original.digest());
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(restored.applied_index(), 8);
    assert_eq!(restored.get(b"a"), original.get(b"a"));
    assert_eq!(
        restored.metrics(),
        &kv::Metrics::default(),
        "metrics are not state"
    );

    let future = [
        // Retries of held answers are duplicates on both.
        Command {
            first_unacked_seq: 1,
            ..command(1, 1, 1_400, put("a", "1"))
        },
        Command {
            first_unacked_seq: 1,
            ..command(1, 2, 1_400, put("a", "2"))
        },
        // Seq 3 acknowledges 1 and 2; a retry of 1 is then forgotten on both.
        command(1, 3, 1_500, put("c", "1")),
        command(1, 1, 1_500, put("a", "1")),
        command(0, 0, 1_600, put("d", "1")),
    ];
    for (command, index) in future.iter().zip(9..) {
        let expected = original.apply(index, &command.encode());
        let actual = restored.apply(index, &command.encode());
        assert_eq!(actual, expected);
    }
    assert!(restored.metrics().duplicates_answered == 2);
    assert_eq!(restored.digest(), original.digest());
    assert_eq!(restored.snapshot(), original.snapshot());
}

#[test]
fn equal_entries_give_equal_snapshot_bytes_and_any_difference_changes_the_digest() {
    assert_eq!(busy_machine().snapshot(), busy_machine().snapshot());

    let base = busy_machine();
    let mut more_index = busy_machine();
    more_index.skip(9);
    let mut other_value = busy_machine();
    other_value.apply(9, &command(0, 0, 0, put("a", "2")).encode());
    let mut other_session = busy_machine();
    other_session.apply(
        9,
        &command(3, 1, 0, kv::Write::Delete { key: b("absent") }).encode(),
    );
    let digests = [
        base.digest(),
        more_index.digest(),
        other_value.digest(),
        other_session.digest(),
    ];
    for (i, x) in digests.iter().enumerate() {
        for y in &digests[i + 1..] {
            assert_ne!(x, y);
        }
    }
}

#[test]
fn a_malformed_entry_and_a_skip_leave_equal_states() {
    let mut malformed = StateMachine::new(Limits::default());
    let mut skipped = StateMachine::new(Limits::default());
    malformed.apply(1, &[]);
    skipped.skip(1);
    assert_eq!(malformed.digest(), skipped.digest());
    assert_eq!(malformed.metrics().malformed_entries, 1);
}

/// The snapshot layout written by hand, to forge snapshots that decode but break an invariant.
/// Each answer: its seq, then the index it was applied at and its result.
type Answers = Vec<(u64, (u64, Result<WriteResult, ApplyError>))>;
type Forged = (
    u64,
    u64,
    Vec<(Bytes, Versioned)>,
    Vec<(u64, (u64, u64, Answers))>,
);

fn forge(body: &Forged) -> Vec<u8> {
    postcard::to_extend(body, vec![SNAPSHOT_FORMAT]).unwrap()
}

fn versioned(create_index: u64, mod_index: u64) -> Versioned {
    Versioned {
        value: b("v"),
        create_index,
        mod_index,
    }
}

#[test]
fn restore_refuses_snapshots_that_break_an_invariant() {
    let good: Forged = (
        10,
        500,
        vec![(b("a"), versioned(1, 2)), (b("b"), versioned(3, 10))],
        vec![(
            4,
            (
                500,
                2,
                vec![(2, (7, Ok(WriteResult::DeleteRange { deleted: 0 })))],
            ),
        )],
    );
    let restored = StateMachine::restore(Limits::default(), &forge(&good)).unwrap();
    assert_eq!(
        restored.snapshot().as_ref(),
        forge(&good),
        "the hand layout is the real one"
    );

    let mut forgeries: Vec<(&str, Forged)> = Vec::new();
    let mut bad = good.clone();
    bad.2.swap(0, 1);
    forgeries.push(("keys out of order", bad));
    let mut bad = good.clone();
    bad.2[1].0 = b("a");
    forgeries.push(("duplicate key", bad));
    let mut bad = good.clone();
    bad.2[0].1 = versioned(0, 2);
    forgeries.push(("created at index 0", bad));
    let mut bad = good.clone();
    bad.2[0].1 = versioned(3, 2);
    forgeries.push(("created after modified", bad));
    let mut bad = good.clone();
    bad.2[1].1 = versioned(3, 11);
    forgeries.push(("modified after the applied index", bad));
    let mut bad = good.clone();
    bad.3[0].0 = 0;
    forgeries.push(("a session for client 0", bad));
    let mut bad = good.clone();
    bad.3[0].1.0 = 501;
    forgeries.push(("a session used after the clock", bad));
    let mut bad = good.clone();
    bad.3[0].1.1 = 3;
    forgeries.push(("an answer below the floor", bad));
    let mut bad = good.clone();
    bad.3[0].1.2[0].1.0 = 0;
    forgeries.push(("an answer applied at index 0", bad));
    let mut bad = good.clone();
    bad.3[0].1.2[0].1.0 = 11;
    forgeries.push(("an answer applied after the applied index", bad));
    let mut bad = good.clone();
    bad.3.push((4, (1, 0, vec![])));
    forgeries.push(("duplicate session", bad));
    for (what, forged) in forgeries {
        let error = StateMachine::restore(Limits::default(), &forge(&forged)).unwrap_err();
        assert!(
            matches!(error, DecodeError::Invalid(_)),
            "{what}: {error:?}"
        );
    }

    let mut trailing = forge(&good);
    trailing.push(0);
    assert_eq!(
        StateMachine::restore(Limits::default(), &trailing).unwrap_err(),
        DecodeError::TrailingBytes(1)
    );
    let mut future = forge(&good);
    future[0] = 2;
    assert_eq!(
        StateMachine::restore(Limits::default(), &future).unwrap_err(),
        DecodeError::UnknownFormat(2)
    );
    assert_eq!(
        StateMachine::restore(Limits::default(), &[]).unwrap_err(),
        DecodeError::Empty
    );
    let truncated = &forge(&good)[..20];
    assert!(matches!(
        StateMachine::restore(Limits::default(), truncated),
        Err(DecodeError::Postcard(_))
    ));
}

#[test]
fn a_snapshot_taken_under_larger_limits_is_trimmed_by_the_next_commands() {
    let mut large = StateMachine::new(Limits::default());
    for client in 1..=5 {
        large.apply(client, &command(client, 1, 0, put("k", "v")).encode());
    }
    let limits = Limits {
        sessions_max: 2,
        ..Limits::default()
    };
    let mut small = StateMachine::restore(limits, &large.snapshot()).unwrap();
    small.apply(6, &command(9, 1, 0, put("k", "v")).encode());
    assert_eq!(
        small.metrics().sessions_evicted,
        4,
        "down to one old session plus the new one"
    );
    assert!(
        small
            .apply(7, &command(5, 1, 0, put("k", "v")).encode())
            .duplicate,
        "the newest survived"
    );
}

#[test]
fn replicas_agree_byte_for_byte_when_one_of_them_restarts_from_a_snapshot_midway() {
    let strategy = (
        prop::collection::vec(entry(), 1..60),
        any::<prop::sample::Index>(),
    );
    // What the random logs exercised, summed over the cases, to show that they reach every rule.
    let seen = std::cell::RefCell::new(kv::Metrics::default());
    let forgotten = std::cell::Cell::new(0);
    runner()
        .run(&strategy, |(entries, cut)| {
            let log = log(&entries);
            let cut = cut.index(log.len() + 1);
            let mut steady = StateMachine::new(tight_limits());
            let mut restarted = StateMachine::new(tight_limits());
            for (index, data) in &log[..cut] {
                feed(&mut steady, *index, data);
                feed(&mut restarted, *index, data);
            }
            let snapshot = restarted.snapshot();
            let mut restarted = StateMachine::restore(tight_limits(), &snapshot).unwrap();
            prop_assert_eq!(restarted.snapshot(), snapshot);
            for (index, data) in &log[cut..] {
                let expected = feed(&mut steady, *index, data);
                prop_assert_eq!(feed(&mut restarted, *index, data), expected);
            }
            prop_assert_eq!(restarted.digest(), steady.digest());
            prop_assert_eq!(restarted.snapshot(), steady.snapshot());
            let mut probe = StateMachine::new(tight_limits());
            for (index, data) in &log {
                let applied = feed(&mut probe, *index, data);
                let is_forgotten = applied
                    .is_some_and(|a| matches!(a.result, Err(ApplyError::SequenceForgotten { .. })));
                forgotten.set(forgotten.get() + u64::from(is_forgotten));
            }
            let mut seen = seen.borrow_mut();
            let metrics = probe.metrics();
            seen.duplicates_answered += metrics.duplicates_answered;
            seen.malformed_entries += metrics.malformed_entries;
            seen.sessions_expired += metrics.sessions_expired;
            seen.sessions_evicted += metrics.sessions_evicted;
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    assert!(
        seen.duplicates_answered > 0 && seen.malformed_entries > 0,
        "{seen:?}"
    );
    assert!(
        seen.sessions_expired > 0 && seen.sessions_evicted > 0,
        "{seen:?}"
    );
    assert!(forgotten.get() > 0);
}
