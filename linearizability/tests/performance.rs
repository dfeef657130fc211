//! Long histories on one key must be checked within the default budget. These tests assert the
//! verdict, not the time: a budget that runs out gives `Unknown`, which fails them.

mod support;

use linearizability::{Input, Operation, Outcome, Output, Verdict, check};
use support::{Fate, Planned, SplitMix, linearizable_history};

const OPERATIONS: usize = 5_000;
const CLIENTS: u64 = 8;

/// A workload on key "k" from `CLIENTS` clients whose operations overlap by up to about eight
/// operations; about one in `unknown_one_in` operations has an unknown outcome.
fn plan(seed: u64, unknown_one_in: u64) -> Vec<Planned> {
    let mut random = SplitMix(seed);
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut plan = Vec::with_capacity(OPERATIONS);
    for index in 0..OPERATIONS {
        let recent = |random: &mut SplitMix, written: &[Vec<u8>]| {
            let back = random.below(3) as usize;
            written
                .len()
                .checked_sub(back + 1)
                .map(|position| written[position].clone())
        };
        let input = match random.below(10) {
            0..=3 => Input::Get,
            4..=6 => {
                let value = format!("v{index}").into_bytes();
                written.push(value.clone());
                Input::Put(value)
            }
            7 => Input::Delete,
            _ => {
                let value = format!("v{index}").into_bytes();
                let expected = recent(&mut random, &written);
                written.push(value.clone());
                Input::Cas {
                    expected,
                    new: Some(value),
                }
            }
        };
        let fate = match random.below(unknown_one_in.max(1) * 2) {
            0 => Fate::UnknownApplied,
            1 => Fate::UnknownLost,
            _ => Fate::Completed,
        };
        plan.push(Planned {
            client: random.below(CLIENTS),
            key: b"k".to_vec(),
            input,
            invoked_before: random.below(80),
            completed_after: random.below(80),
            fate,
        });
    }
    plan
}

fn assert_linearizable(history: &[Operation]) {
    let verdict = check(history);
    assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
}

#[test]
fn five_thousand_operations_from_eight_clients() {
    let history = linearizable_history(&plan(7, u64::MAX / 2));
    assert!(
        history
            .iter()
            .all(|operation| operation.completed_at().is_some())
    );
    assert_linearizable(&history);
}

#[test]
fn five_thousand_operations_with_some_unknown_outcomes() {
    let history = linearizable_history(&plan(8, 50));
    let unknown = history
        .iter()
        .filter(|operation| operation.outcome == Outcome::Unknown)
        .count();
    assert!(unknown > 20, "{unknown} unknown outcomes");
    assert_linearizable(&history);
}

#[test]
fn a_stale_read_at_the_end_of_a_long_history_is_found_and_explained() {
    let mut history = linearizable_history(&plan(9, u64::MAX / 2));
    let end = history
        .iter()
        .filter_map(Operation::completed_at)
        .max()
        .unwrap();
    history.push(Operation::completed(
        99,
        b"k",
        Input::Put(b"last".to_vec()),
        end + 1,
        end + 2,
        Output::Ok,
    ));
    history.push(Operation::completed(
        99,
        b"k",
        Input::Get,
        end + 3,
        end + 4,
        Output::Value(None),
    ));
    let Verdict::NotLinearizable { key, explanation } = check(&history) else {
        panic!("linearizable")
    };
    assert_eq!(key, b"k");
    let read = format!("#{} client 99: get -> absent", OPERATIONS + 1);
    assert!(explanation.contains(&read), "{explanation}");
    assert!(
        explanation.contains("value after: \"last\""),
        "{explanation}"
    );
}

#[test]
fn a_stale_read_amid_unknown_outcomes_is_found() {
    // About one operation in a hundred has an unknown outcome; each stays a candidate until the
    // end, which is what makes proving a violation costly.
    let mut history = linearizable_history(&plan(10, 100)[..1_000]);
    let unknown = history[..500]
        .iter()
        .filter(|operation| operation.outcome == Outcome::Unknown)
        .count();
    assert!(
        unknown >= 3,
        "{unknown} unknown outcomes before the violation"
    );
    let middle = history[500].invoked_at;
    history.push(Operation::completed(
        99,
        b"k",
        Input::Put(b"z".to_vec()),
        middle,
        middle + 1,
        Output::Ok,
    ));
    history.push(Operation::completed(
        98,
        b"k",
        Input::Get,
        middle + 300,
        middle + 305,
        Output::Value(Some(b"z".to_vec())),
    ));
    let verdict = check(&history);
    let Verdict::NotLinearizable { explanation, .. } = verdict else {
        panic!("{verdict}")
    };
    assert!(
        explanation.contains("#1001 client 98: get -> \"z\""),
        "{explanation}"
    );
}
