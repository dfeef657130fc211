//! Random small histories, checked by the search and by brute force, which must agree. The runs
//! use fixed seeds, so every run tries the same cases.

mod support;

use std::cell::Cell;

use linearizability::{Input, Operation, Outcome, Output, Verdict, check, check_brute_force};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use support::{Fate, Planned, linearizable_history};

const CASES: u32 = 2_000;

fn runner(seed: u8) -> TestRunner {
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

/// A value from a small domain, so that reads and compare-and-swaps often match: index 3 is absent.
fn value(index: u8) -> Option<Vec<u8>> {
    ["a", "b", "c"]
        .get(usize::from(index))
        .map(|value| value.as_bytes().to_vec())
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => Just(Input::Get),
        3 => (0..3u8).prop_map(|index| Input::Put(value(index).unwrap())),
        1 => Just(Input::Delete),
        3 => (0..4u8, 0..4u8).prop_map(|(expected, new)| Input::Cas { expected: value(expected), new: value(new) }),
    ]
}

/// An operation; `completed_weight` to 2 is the odds that its outcome is known.
fn planned(completed_weight: u32) -> impl Strategy<Value = Planned> {
    let fate = prop_oneof![
        completed_weight => Just(Fate::Completed),
        1 => Just(Fate::UnknownApplied),
        1 => Just(Fate::UnknownLost),
    ];
    (0..3u64, 0..2u8, input(), 0..30u64, 0..30u64, fate).prop_map(
        |(client, key, input, invoked_before, completed_after, fate)| Planned {
            client,
            key: vec![b'k', key],
            input,
            invoked_before,
            completed_after,
            fate,
        },
    )
}

/// Up to eight operations, about one in four with an unknown outcome.
fn plan() -> impl Strategy<Value = Vec<Planned>> {
    prop::collection::vec(planned(6), 0..=8)
}

/// Which operation to change and how; applied to the history modulo its length.
type Mutation = (usize, u8, u64);

/// Changes what an operation observed, or narrows when it ran.
fn mutate(history: &mut [Operation], (position, choice, shift): Mutation) {
    let Some(operation) = history.get_mut(position % history.len().max(1)) else {
        return;
    };
    let invoked_at = operation.invoked_at;
    match &mut operation.outcome {
        Outcome::Completed {
            output: Output::Value(observed),
            ..
        } => *observed = value(choice % 4),
        Outcome::Completed {
            output: Output::Swapped(swapped),
            ..
        } => *swapped = !*swapped,
        // A write observed nothing: start it later, within its interval.
        Outcome::Completed { at, .. } => operation.invoked_at = (invoked_at + shift).min(*at),
        Outcome::Unknown => operation.invoked_at = invoked_at + shift,
    }
}

/// Asserts that both checks give the same verdict (and the same key when not linearizable).
fn assert_agree(history: &[Operation]) -> Result<Verdict, TestCaseError> {
    let fast = check(history);
    let slow = check_brute_force(history);
    let agree = match (&fast, &slow) {
        (Verdict::Linearizable, Verdict::Linearizable) => true,
        (Verdict::NotLinearizable { key, .. }, Verdict::NotLinearizable { key: slow_key, .. }) => {
            key == slow_key
        }
        _ => false,
    };
    prop_assert!(
        agree,
        "check: {fast}\nbrute force: {slow}\nhistory: {history:#?}"
    );
    Ok(fast)
}

#[test]
fn histories_from_a_sequential_execution_are_linearizable() {
    runner(1)
        .run(&plan(), |plan| {
            let history = linearizable_history(&plan);
            let verdict = assert_agree(&history)?;
            prop_assert_eq!(verdict, Verdict::Linearizable, "history: {:#?}", history);
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_histories_get_the_same_verdict_from_both_checks() {
    let mutations = prop::collection::vec((0..8usize, 0..8u8, 1..25u64), 1..=3);
    let violations = Cell::new(0);
    runner(2)
        .run(&(plan(), mutations), |(plan, mutations)| {
            let mut history = linearizable_history(&plan);
            for mutation in mutations {
                mutate(&mut history, mutation);
            }
            let verdict = assert_agree(&history)?;
            violations.set(violations.get() + u32::from(verdict != Verdict::Linearizable));
            Ok(())
        })
        .unwrap();
    assert_both_verdicts_common(violations.get());
}

#[test]
fn random_histories_get_the_same_verdict_from_both_checks() {
    // Arbitrary intervals and answers: mostly not linearizable, with ties in time.
    let operation = (
        0..3u64,
        0..2u8,
        input(),
        0..40u64,
        0..20u64,
        0..10u8,
        any::<bool>(),
    );
    let history = prop::collection::vec(operation, 0..=8);
    let violations = Cell::new(0);
    runner(3)
        .run(&history, |history| {
            let history: Vec<Operation> = history
                .into_iter()
                .map(
                    |(client, key, input, invoked_at, duration, answer, swapped)| {
                        let output = match input {
                            Input::Get => Output::Value(value(answer % 4)),
                            Input::Put(_) | Input::Delete => Output::Ok,
                            Input::Cas { .. } => Output::Swapped(swapped),
                        };
                        let outcome = if answer == 9 {
                            Outcome::Unknown
                        } else {
                            Outcome::Completed {
                                at: invoked_at + duration,
                                output,
                            }
                        };
                        Operation {
                            client,
                            key: vec![b'k', key],
                            input,
                            invoked_at,
                            outcome,
                        }
                    },
                )
                .collect();
            let verdict = assert_agree(&history)?;
            violations.set(violations.get() + u32::from(verdict != Verdict::Linearizable));
            Ok(())
        })
        .unwrap();
    assert_both_verdicts_common(violations.get());
}

/// The cases must exercise both verdicts, or agreement would prove little.
fn assert_both_verdicts_common(violations: u32) {
    println!("{violations} of {CASES} cases not linearizable");
    assert!(
        (CASES / 10..CASES * 9 / 10).contains(&violations),
        "{violations} of {CASES} cases not linearizable"
    );
}

#[test]
fn histories_with_many_unknown_outcomes_get_the_same_verdict_from_both_checks() {
    // Two operations in three have unknown outcomes, to exercise how the search prunes them.
    let plan = prop::collection::vec(planned(1), 0..=8);
    let mutations = prop::collection::vec((0..8usize, 0..8u8, 1..25u64), 0..=2);
    let violations = Cell::new(0);
    runner(4)
        .run(&(plan, mutations), |(plan, mutations)| {
            let mut history = linearizable_history(&plan);
            let linearizable = mutations.is_empty();
            for mutation in mutations {
                mutate(&mut history, mutation);
            }
            let verdict = assert_agree(&history)?;
            prop_assert!(
                !linearizable || verdict == Verdict::Linearizable,
                "{}",
                verdict
            );
            violations.set(violations.get() + u32::from(verdict != Verdict::Linearizable));
            Ok(())
        })
        .unwrap();
    assert_both_verdicts_common(violations.get());
}
