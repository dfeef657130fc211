//! One story per rule of the exactly-once table: duplicates, forgotten seqs, bounds, expiry, eviction.

mod support;

use kv::{Applied, ApplyError, Command, Limits, StateMachine, Write, WriteResult};
use support::{b, command, put};

fn send(machine: &mut StateMachine, index: u64, command: &Command) -> Applied {
    machine.apply(index, &command.encode())
}

fn forgotten(client_id: u64, seq: u64, first_unacked_seq: u64) -> Result<WriteResult, ApplyError> {
    Err(ApplyError::SequenceForgotten {
        client_id,
        seq,
        first_unacked_seq,
    })
}

#[test]
fn a_retried_command_is_answered_the_same_and_not_applied_twice() {
    let mut machine = StateMachine::new(Limits::default());
    let write = command(1, 1, 0, put("k", "v1"));
    let first = send(&mut machine, 1, &write);
    send(&mut machine, 2, &command(2, 1, 0, put("k", "v2")));

    let retry = send(&mut machine, 3, &write);
    assert!(retry.duplicate && !first.duplicate);
    assert_eq!(retry.result, first.result);
    assert_eq!(
        (
            first.first_applied_index,
            retry.first_applied_index,
            retry.index
        ),
        (1, 1, 3),
        "a duplicate names the index of the first application"
    );
    assert!(retry.changes.is_empty(), "a duplicate changes nothing");
    let current = machine.get(b"k").unwrap();
    assert_eq!(
        (
            current.value.clone(),
            current.create_index,
            current.mod_index
        ),
        (b("v2"), 1, 2)
    );
    assert_eq!(machine.applied_index(), 3);
    let metrics = machine.metrics();
    assert_eq!(
        (
            metrics.writes_applied,
            metrics.duplicates_answered,
            metrics.entries_applied
        ),
        (2, 1, 3)
    );
}

#[test]
fn a_refused_write_is_answered_the_same_on_retry() {
    let mut machine = StateMachine::new(Limits::default());
    let oversized = kv::Txn {
        compares: vec![kv::Compare::Exists { key: b("k") }; kv::TXN_OPS_MAX + 1],
        ..kv::Txn::default()
    };
    let write = command(1, 1, 0, Write::Txn(oversized));
    let first = send(&mut machine, 1, &write);
    let retry = send(&mut machine, 2, &write);
    assert!(matches!(first.result, Err(ApplyError::TooLarge { .. })));
    assert_eq!((retry.result, retry.duplicate), (first.result, true));
}

#[test]
fn a_retry_below_first_unacked_seq_is_forgotten_and_not_applied() {
    let mut machine = StateMachine::new(Limits::default());
    let first = Command {
        first_unacked_seq: 1,
        ..command(1, 1, 0, put("k", "v1"))
    };
    send(&mut machine, 1, &first);
    // Seq 2 says the client has the answer to seq 1.
    send(&mut machine, 2, &command(1, 2, 0, put("other", "x")));

    let late_retry = send(&mut machine, 3, &first);
    assert_eq!(late_retry.result, forgotten(1, 1, 2));
    assert!(!late_retry.duplicate && late_retry.changes.is_empty());
    assert_eq!(machine.get(b"k").unwrap().mod_index, 1);
    assert_eq!(machine.metrics().writes_applied, 2);
}

#[test]
fn first_unacked_seq_never_goes_back_when_commands_arrive_reordered() {
    let mut machine = StateMachine::new(Limits::default());
    send(&mut machine, 1, &command(1, 1, 0, put("a", "1")));
    send(&mut machine, 2, &command(1, 3, 0, put("c", "3")));
    // A command that claims less (first_unacked_seq 1) cannot bring seq 2 back.
    let stale = Command {
        first_unacked_seq: 1,
        ..command(1, 2, 0, put("b", "2"))
    };
    assert_eq!(send(&mut machine, 3, &stale).result, forgotten(1, 2, 3));
    assert!(machine.get(b"b").is_none());
}

#[test]
fn a_pipelined_client_gets_every_answer_until_it_acknowledges_them() {
    let mut machine = StateMachine::new(Limits::default());
    let writes: Vec<Command> = (1..=3)
        .map(|seq| Command {
            first_unacked_seq: 1,
            ..command(1, seq, 0, put("k", "v"))
        })
        .collect();
    let answers: Vec<Applied> = writes
        .iter()
        .zip(1..)
        .map(|(write, index)| send(&mut machine, index, write))
        .collect();
    for (write, index) in writes.iter().zip(10..) {
        let retry = send(&mut machine, index, write);
        assert!(retry.duplicate);
        assert_eq!(retry.result, answers[(write.seq - 1) as usize].result);
    }
}

#[test]
fn answers_beyond_the_per_session_bound_are_evicted_lowest_seq_first_and_then_forgotten() {
    let limits = Limits {
        answers_per_session_max: 2,
        ..Limits::default()
    };
    let mut machine = StateMachine::new(limits);
    let writes: Vec<Command> = (1..=3)
        .map(|seq| Command {
            first_unacked_seq: 1,
            ..command(1, seq, 0, put("k", "v"))
        })
        .collect();
    for (write, index) in writes.iter().zip(1..) {
        send(&mut machine, index, write);
    }
    assert_eq!(send(&mut machine, 4, &writes[0]).result, forgotten(1, 1, 2));
    assert!(send(&mut machine, 5, &writes[1]).duplicate);
    assert!(send(&mut machine, 6, &writes[2]).duplicate);
    assert_eq!(machine.get(b"k").unwrap().mod_index, 3);
}

#[test]
fn a_session_idle_longer_than_the_limit_expires_and_a_retry_of_its_write_applies_again() {
    let limits = Limits {
        session_idle_ms_max: 1_000,
        ..Limits::default()
    };
    let mut machine = StateMachine::new(limits);
    let write = command(1, 1, 5_000, put("k", "v"));
    send(&mut machine, 1, &write);

    // Idle for exactly the limit: still there.
    send(&mut machine, 2, &command(2, 1, 6_000, put("x", "1")));
    assert!(
        send(
            &mut machine,
            3,
            &Command {
                timestamp_ms: 6_000,
                ..write.clone()
            }
        )
        .duplicate
    );
    send(&mut machine, 4, &command(2, 2, 6_500, put("x", "2")));
    // Idle for one millisecond more (client 1 was last used at 6 000, client 2 at 6 500): expired.
    send(&mut machine, 5, &command(2, 3, 7_001, put("x", "3")));
    assert_eq!(machine.metrics().sessions_expired, 1);

    let retry = send(&mut machine, 6, &write);
    assert!(
        !retry.duplicate,
        "the documented limit: an expired session's retry applies again"
    );
    assert_eq!(machine.get(b"k").unwrap().mod_index, 6);
}

#[test]
fn the_clock_is_the_largest_timestamp_seen_so_a_late_proposer_cannot_rewind_it() {
    let limits = Limits {
        session_idle_ms_max: 1_000,
        ..Limits::default()
    };
    let mut machine = StateMachine::new(limits);
    send(&mut machine, 1, &command(1, 1, 5_000, put("a", "1")));
    // A proposer whose clock is behind: client 2 is stamped with the machine's clock (5 000), and
    // client 1 does not look idle.
    send(&mut machine, 2, &command(2, 1, 100, put("b", "1")));
    assert_eq!(machine.metrics().sessions_expired, 0);
    send(&mut machine, 3, &command(3, 1, 6_001, put("c", "1")));
    assert_eq!(
        machine.metrics().sessions_expired,
        2,
        "both were last used at 5 000"
    );
}

#[test]
fn over_sessions_max_the_least_recently_used_session_is_evicted() {
    let limits = Limits {
        sessions_max: 2,
        ..Limits::default()
    };
    let mut machine = StateMachine::new(limits);
    let client_1 = command(1, 1, 1, put("a", "1"));
    let client_2 = command(2, 1, 2, put("b", "1"));
    send(&mut machine, 1, &client_1);
    send(&mut machine, 2, &client_2);
    send(&mut machine, 3, &command(1, 2, 3, put("a", "2"))); // client 1 used again
    send(&mut machine, 4, &command(3, 1, 4, put("c", "1")));
    assert_eq!(machine.metrics().sessions_evicted, 1);

    assert_eq!(
        send(&mut machine, 5, &client_1).result,
        forgotten(1, 1, 2),
        "client 1 kept its session"
    );
    assert!(
        !send(&mut machine, 6, &client_2).duplicate,
        "client 2 was evicted: its retry applies again"
    );
}

#[test]
fn eviction_ties_on_last_use_go_to_the_lowest_client_id() {
    let limits = Limits {
        sessions_max: 2,
        ..Limits::default()
    };
    let mut machine = StateMachine::new(limits);
    let client_5 = command(5, 1, 0, put("five", "1"));
    let client_3 = command(3, 1, 0, put("three", "1"));
    send(&mut machine, 1, &client_5);
    send(&mut machine, 2, &client_3);
    send(&mut machine, 3, &command(9, 1, 0, put("nine", "1")));
    assert_eq!(machine.metrics().sessions_evicted, 1);
    // Evicting client 3 made room for client 9; now client 5 (tied, lower than 9) goes for client 3.
    assert!(send(&mut machine, 4, &client_5).duplicate);
    assert!(!send(&mut machine, 5, &client_3).duplicate);
    assert_eq!(machine.metrics().sessions_evicted, 2);
}

#[test]
fn client_zero_has_no_session_so_a_repeat_applies_again() {
    let mut machine = StateMachine::new(Limits::default());
    let write = Command {
        client_id: 0,
        seq: 1,
        first_unacked_seq: 1,
        timestamp_ms: 0,
        write: put("k", "v"),
    };
    send(&mut machine, 1, &write);
    let again = send(&mut machine, 2, &write);
    assert!(!again.duplicate);
    assert_eq!(machine.get(b"k").unwrap().mod_index, 2);
    assert_eq!(machine.metrics().writes_applied, 2);
}
