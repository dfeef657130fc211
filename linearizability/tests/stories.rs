//! Hand-written histories, each a short story with a known verdict. Every story is also checked
//! by brute force, which must agree.

use linearizability::{
    Budget, Input, Operation, Output, Verdict, check, check_brute_force, check_with_budget,
};

fn put(client: u64, key: &str, value: &str, invoked_at: u64, at: u64) -> Operation {
    Operation::completed(
        client,
        key.as_bytes(),
        Input::Put(value.into()),
        invoked_at,
        at,
        Output::Ok,
    )
}

fn delete(client: u64, key: &str, invoked_at: u64, at: u64) -> Operation {
    Operation::completed(
        client,
        key.as_bytes(),
        Input::Delete,
        invoked_at,
        at,
        Output::Ok,
    )
}

fn get(client: u64, key: &str, seen: Option<&str>, invoked_at: u64, at: u64) -> Operation {
    let output = Output::Value(seen.map(Vec::from));
    Operation::completed(client, key.as_bytes(), Input::Get, invoked_at, at, output)
}

fn cas(
    client: u64,
    key: &str,
    expected: Option<&str>,
    new: Option<&str>,
    invoked_at: u64,
    at: u64,
    swapped: bool,
) -> Operation {
    let input = Input::Cas {
        expected: expected.map(Vec::from),
        new: new.map(Vec::from),
    };
    Operation::completed(
        client,
        key.as_bytes(),
        input,
        invoked_at,
        at,
        Output::Swapped(swapped),
    )
}

fn unknown(client: u64, key: &str, input: Input, invoked_at: u64) -> Operation {
    Operation::unknown(client, key.as_bytes(), input, invoked_at)
}

/// The verdict of `check`, after making sure that brute force agrees.
fn verdict(history: &[Operation]) -> Verdict {
    let fast = check(history);
    let slow = check_brute_force(history);
    match (&fast, &slow) {
        (Verdict::Linearizable, Verdict::Linearizable) => {}
        (Verdict::NotLinearizable { key, .. }, Verdict::NotLinearizable { key: slow_key, .. })
            if key == slow_key => {}
        _ => panic!("check and brute force disagree:\n{fast}\n{slow}"),
    }
    fast
}

fn assert_linearizable(history: &[Operation]) {
    let verdict = verdict(history);
    assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
}

/// Asserts that `key` is the key found not linearizable, and returns the explanation.
fn assert_not_linearizable(history: &[Operation], expected_key: &str) -> String {
    match verdict(history) {
        Verdict::NotLinearizable { key, explanation } => {
            assert_eq!(key, expected_key.as_bytes(), "{explanation}");
            explanation
        }
        other => panic!("expected not linearizable, got {other}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_follows_the_model() {
    let history = [
        get(1, "x", None, 0, 1),
        put(1, "x", "a", 2, 3),
        get(2, "x", Some("a"), 4, 5),
        cas(1, "x", Some("b"), Some("c"), 6, 7, false),
        cas(2, "x", Some("a"), Some("b"), 8, 9, true),
        get(1, "x", Some("b"), 10, 11),
        cas(1, "x", Some("b"), None, 12, 13, true),
        cas(2, "x", None, Some("d"), 14, 15, true),
        get(2, "x", Some("d"), 16, 17),
    ];
    assert_linearizable(&history);
}

#[test]
fn sequential_history_with_a_wrong_answer_is_not_linearizable() {
    let history = [
        put(1, "x", "a", 0, 1),
        cas(2, "x", Some("a"), Some("b"), 2, 3, true),
        cas(1, "x", Some("a"), Some("c"), 4, 5, true),
    ];
    assert_not_linearizable(&history, "x");
}

#[test]
fn concurrent_put_and_get_may_be_ordered_either_way() {
    let before = [put(1, "x", "a", 0, 10), get(2, "x", None, 5, 8)];
    let after = [put(1, "x", "a", 0, 10), get(2, "x", Some("a"), 5, 8)];
    assert_linearizable(&before);
    assert_linearizable(&after);
}

#[test]
fn concurrent_puts_may_land_in_either_order() {
    for last in ["a", "b"] {
        let history = [
            put(1, "x", "a", 0, 10),
            put(2, "x", "b", 5, 15),
            get(3, "x", Some(last), 20, 30),
        ];
        assert_linearizable(&history);
    }
}

#[test]
fn equal_times_are_concurrent() {
    // The get starts at the very time the put is acknowledged: either order is allowed.
    let history = [put(1, "x", "a", 0, 10), get(2, "x", None, 10, 20)];
    assert_linearizable(&history);
}

#[test]
fn stale_read_after_a_completed_write_is_not_linearizable() {
    let history = [
        put(1, "x", "a", 0, 10),
        put(1, "x", "b", 11, 20),
        get(2, "x", Some("a"), 25, 30),
    ];
    let explanation = assert_not_linearizable(&history, "x");
    // The explanation names the key, the read that cannot be explained, and what came before it.
    assert!(
        explanation.starts_with("key \"x\" is not linearizable."),
        "{explanation}"
    );
    assert!(
        explanation.contains("not those invoked by time 30"),
        "{explanation}"
    );
    assert!(
        explanation.contains("#2 client 2: get -> \"a\" [invoked at 25, completed at 30]"),
        "{explanation}"
    );
    assert!(
        explanation.contains("#1 client 1: put \"b\" -> ok [invoked at 11, completed at 20]"),
        "{explanation}"
    );
    assert!(explanation.contains("value after: \"b\""), "{explanation}");
}

#[test]
fn lost_write_is_not_linearizable() {
    // Both writes were acknowledged, but a later read sees the older value: "b" was lost.
    let history = [
        put(1, "x", "a", 0, 10),
        put(2, "x", "b", 20, 30),
        get(3, "x", Some("b"), 35, 40),
        get(3, "x", Some("a"), 45, 50),
    ];
    let explanation = assert_not_linearizable(&history, "x");
    // The failure is pinned on the last read: everything before it can be ordered.
    assert!(
        explanation.contains("invoked by time 40 can be ordered"),
        "{explanation}"
    );
    assert!(
        explanation.contains("#3 client 3: get -> \"a\""),
        "{explanation}"
    );
}

#[test]
fn only_one_of_two_racing_cas_with_the_same_expected_value_may_succeed() {
    let setup = put(0, "x", "0", 0, 1);
    let both_win = [
        setup.clone(),
        cas(1, "x", Some("0"), Some("1"), 10, 20, true),
        cas(2, "x", Some("0"), Some("2"), 12, 22, true),
    ];
    assert_not_linearizable(&both_win, "x");

    let one_wins = [
        setup.clone(),
        cas(1, "x", Some("0"), Some("1"), 10, 20, true),
        cas(2, "x", Some("0"), Some("2"), 12, 22, false),
        get(3, "x", Some("1"), 30, 31),
    ];
    assert_linearizable(&one_wins);

    // The loser's value cannot be what is left.
    let loser_seen = [
        setup,
        cas(1, "x", Some("0"), Some("1"), 10, 20, true),
        cas(2, "x", Some("0"), Some("2"), 12, 22, false),
        get(3, "x", Some("2"), 30, 31),
    ];
    assert_not_linearizable(&loser_seen, "x");
}

#[test]
fn both_racing_cas_may_fail_only_if_something_else_changed_the_value() {
    let history = [
        put(0, "x", "0", 0, 1),
        cas(1, "x", Some("0"), Some("1"), 10, 20, false),
        cas(2, "x", Some("0"), Some("2"), 12, 22, false),
    ];
    assert_not_linearizable(&history, "x");
    // A concurrent delete explains both failures.
    let mut explained = history.to_vec();
    explained.push(delete(3, "x", 5, 11));
    assert_linearizable(&explained);
}

#[test]
fn unknown_put_whose_effect_appears_later_is_linearizable() {
    let history = [
        unknown(1, "x", Input::Put("a".into()), 0),
        get(2, "x", None, 10, 20),
        get(2, "x", Some("a"), 30, 40),
        get(3, "x", Some("a"), 50, 60),
    ];
    assert_linearizable(&history);
}

#[test]
fn unknown_put_whose_effect_never_appears_is_linearizable() {
    let history = [
        unknown(1, "x", Input::Put("a".into()), 0),
        get(2, "x", None, 10, 20),
        get(2, "x", None, 30, 40),
    ];
    assert_linearizable(&history);
}

#[test]
fn unknown_put_cannot_be_seen_to_flicker() {
    // Once seen, the unknown put's value cannot disappear without another write.
    let history = [
        unknown(1, "x", Input::Put("a".into()), 0),
        get(2, "x", Some("a"), 10, 20),
        get(2, "x", None, 30, 40),
    ];
    assert_not_linearizable(&history, "x");
}

#[test]
fn unknown_op_cannot_take_effect_before_its_invocation() {
    let history = [
        get(1, "x", Some("a"), 0, 10),
        unknown(2, "x", Input::Put("a".into()), 20),
    ];
    let explanation = assert_not_linearizable(&history, "x");
    assert!(
        explanation.contains(
            "Starting from the initial state (absent), every operation that may go first"
        ),
        "{explanation}"
    );
    // The unknown put, invoked after the read completed, is not even a candidate.
    assert!(!explanation.contains("#1"), "{explanation}");
}

#[test]
fn unknown_cas_may_have_swapped() {
    let history = [
        put(0, "x", "a", 0, 1),
        unknown(
            1,
            "x",
            Input::Cas {
                expected: Some("a".into()),
                new: Some("b".into()),
            },
            5,
        ),
        get(2, "x", Some("a"), 10, 20),
        get(2, "x", Some("b"), 30, 40),
    ];
    assert_linearizable(&history);
}

#[test]
fn unknown_get_constrains_nothing() {
    let history = [
        put(0, "x", "a", 0, 1),
        unknown(1, "x", Input::Get, 5),
        get(2, "x", Some("a"), 10, 20),
    ];
    assert_linearizable(&history);
}

#[test]
fn delete_then_get_sees_absent() {
    let history = [
        put(1, "x", "a", 0, 10),
        delete(1, "x", 20, 30),
        get(2, "x", None, 40, 50),
    ];
    assert_linearizable(&history);
    let resurrected = [
        put(1, "x", "a", 0, 10),
        delete(1, "x", 20, 30),
        get(2, "x", Some("a"), 40, 50),
    ];
    assert_not_linearizable(&resurrected, "x");
}

#[test]
fn several_keys_where_only_one_is_bad() {
    let history = [
        put(1, "a", "1", 0, 10),
        put(2, "b", "1", 0, 10),
        put(3, "c", "1", 0, 10),
        get(1, "a", Some("1"), 20, 30),
        // Key "b" reads a value nobody wrote.
        get(2, "b", Some("2"), 20, 30),
        get(3, "c", Some("1"), 20, 30),
        // On another key, the read would be fine: keys are independent.
        put(3, "c", "2", 31, 40),
    ];
    let explanation = assert_not_linearizable(&history, "b");
    assert!(
        explanation.contains("#4 client 2: get -> \"2\""),
        "{explanation}"
    );
    assert!(
        !explanation.contains("#3 "),
        "operations on other keys are not named: {explanation}"
    );
}

#[test]
fn the_first_bad_key_in_byte_order_is_reported() {
    let history = [
        get(1, "zebra", Some("1"), 0, 1),
        get(1, "apple", Some("1"), 2, 3),
    ];
    assert_not_linearizable(&history, "apple");
}

#[test]
fn binary_values_are_shown_in_hexadecimal() {
    let history = [Operation::completed(
        1,
        &[0, 255],
        Input::Get,
        0,
        1,
        Output::Value(Some(vec![1, 2])),
    )];
    let Verdict::NotLinearizable { key, explanation } = verdict(&history) else {
        panic!("linearizable")
    };
    assert_eq!(key, [0, 255]);
    assert!(
        explanation.starts_with("key 0x00ff is not linearizable."),
        "{explanation}"
    );
    assert!(explanation.contains("get -> 0x0102"), "{explanation}");
}

#[test]
fn an_exhausted_budget_gives_unknown() {
    let history = [
        put(1, "x", "a", 0, 10),
        put(2, "x", "b", 0, 10),
        get(3, "x", Some("a"), 20, 30),
    ];
    let tiny = Budget {
        steps_per_key_max: 2,
        ..Budget::default()
    };
    let verdict = check_with_budget(&history, tiny);
    assert!(
        matches!(&verdict, Verdict::Unknown { key, .. } if key == b"x"),
        "{verdict}"
    );
    assert!(
        verdict.to_string().contains("more than 2 steps"),
        "{verdict}"
    );
}

#[test]
fn a_bad_key_wins_over_an_unknown_one() {
    let mut history: Vec<Operation> = (0..6).map(|client| put(client, "a", "v", 0, 10)).collect();
    history.push(get(9, "b", Some("never written"), 0, 1));
    let tiny = Budget {
        steps_per_key_max: 3,
        ..Budget::default()
    };
    let verdict = check_with_budget(&history, tiny);
    assert!(
        matches!(&verdict, Verdict::NotLinearizable { key, .. } if key == b"b"),
        "{verdict}"
    );
}

#[test]
#[should_panic(expected = "completed before it was invoked")]
fn a_completion_before_the_invocation_is_a_recorder_bug() {
    check(&[put(1, "x", "a", 10, 5)]);
}

#[test]
#[should_panic(expected = "output of the wrong kind")]
fn an_output_of_the_wrong_kind_is_a_recorder_bug() {
    check(&[Operation::completed(
        1,
        b"x",
        Input::Put("a".into()),
        0,
        1,
        Output::Swapped(true),
    )]);
}
