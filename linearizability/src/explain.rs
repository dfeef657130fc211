//! Explanations of a key that is not linearizable, for someone debugging a simulation seed.
//!
//! The explanation looks for the earliest time `t` such that the operations invoked by `t` cannot
//! be ordered, where the operations still pending at `t` are taken as having unknown outcomes.
//! Cutting a history this way keeps every linearization of the whole (the completed operations
//! cut off were invoked after everything completed by `t`, so they come last), so if the history
//! up to `t` cannot be ordered, neither can the whole; and the property holds for every later `t`,
//! which is what makes a binary search over the completion times correct. The operations that
//! completed at that `t` are the ones whose answers no order can explain.

use std::fmt::Write as _;

use crate::model::{KeyHistory, KeyOperation, State};
use crate::search::{self, Deepest, Order, Search};
use crate::{Budget, Bytes, Operation};

/// Explains why `key_history`, which the search found not linearizable, is not.
/// `order` is the search order that found it not linearizable, so the one to try first.
pub(crate) fn explain(
    history: &[Operation],
    key_history: &KeyHistory,
    budget: Budget,
    order: Order,
) -> String {
    let operations = &key_history.operations;
    let mut cut_times: Vec<u64> = operations
        .iter()
        .filter_map(|operation| operation.completed_at)
        .collect();
    cut_times.sort_unstable();
    cut_times.dedup();
    assert!(
        !cut_times.is_empty(),
        "a history without completed operations is linearizable"
    );

    // The last cut holds every operation that matters, so it fails; find the first that does.
    let (mut low, mut high) = (0, cut_times.len() - 1);
    while low < high {
        let middle = low + (high - low) / 2;
        let fails = matches!(
            search::decide(&cut(operations, cut_times[middle]), budget, false, order).0,
            Search::NotLinearizable(_)
        );
        if fails {
            high = middle;
        } else {
            // Not shown to fail: either it can be ordered, or the budget ran out on it.
            low = middle + 1;
        }
    }
    let time = cut_times[high];
    let prefix = cut(operations, time);

    let key = history[operations[0].index].key.as_slice();
    let mut text = format!("key {} is not linearizable.\n", Bytes(Some(key)));
    if high == 0 {
        let _ = writeln!(
            text,
            "Its operations cannot be ordered as soon as the first of them completes, at time {time}:"
        );
    } else {
        let _ = writeln!(
            text,
            "Its operations invoked by time {} can be ordered, but not those invoked by time {time}, \
             when this completed:",
            cut_times[high - 1]
        );
    }
    for operation in prefix
        .iter()
        .filter(|operation| operation.completed_at == Some(time))
    {
        describe(&mut text, history, operation.index, time);
    }
    if let Search::NotLinearizable(Some(deepest)) = search::decide(&prefix, budget, true, order).0 {
        describe_deepest(&mut text, history, key_history, &prefix, &deepest, time);
    }
    text
}

/// The operations invoked by `time`, those completed after it taken as having unknown outcomes.
fn cut(operations: &[KeyOperation], time: u64) -> Vec<KeyOperation> {
    operations
        .iter()
        .filter(|operation| operation.invoked_at <= time)
        .filter_map(|&operation| match operation.completed_at {
            Some(at) if at > time => operation.forgotten(),
            _ => Some(operation),
        })
        .collect()
}

fn describe_deepest(
    text: &mut String,
    history: &[Operation],
    key_history: &KeyHistory,
    prefix: &[KeyOperation],
    deepest: &Deepest,
    time: u64,
) {
    if deepest.depth == 0 {
        let _ = writeln!(
            text,
            "Starting from the initial state (absent), every operation that may go first \
             contradicts it or leads to a dead end:"
        );
    } else {
        let _ = writeln!(
            text,
            "The longest order found of the operations invoked by time {time} has {} operations; \
             it ends with:",
            deepest.depth
        );
        for &(position, after) in &deepest.tail {
            describe(text, history, prefix[position].index, time);
            let _ = writeln!(text, "      value after: {}", value(key_history, after));
        }
        let _ = writeln!(
            text,
            "From the value {}, every operation that may go next contradicts it or leads to a \
             dead end:",
            value(key_history, deepest.state)
        );
    }
    for &position in &deepest.candidates {
        describe(text, history, prefix[position].index, time);
    }
    let due = &history[prefix[deepest.due].index];
    let _ = writeln!(
        text,
        "and #{} must go before anything invoked after it completed at {}.",
        prefix[deepest.due].index,
        due.completed_at().expect("the due operation completed")
    );
}

/// One line per operation, indented, with its index in the history.
fn describe(text: &mut String, history: &[Operation], index: usize, time: u64) {
    let operation = &history[index];
    let _ = write!(text, "  #{index} {operation}");
    if operation.completed_at().is_some_and(|at| at > time) {
        let _ = write!(text, " (still pending at {time}, so taken as unknown)");
    }
    text.push('\n');
}

fn value(key_history: &KeyHistory, state: State) -> String {
    Bytes(key_history.bytes(state)).to_string()
}

/// Explains why the brute-force check found the operations `indices` of `key` not linearizable:
/// it lists them all, since it has no finer account.
pub(crate) fn explain_brute_force(history: &[Operation], key: &[u8], indices: &[usize]) -> String {
    let mut text = format!(
        "key {} is not linearizable: no order of its {} operations that respects real time is legal:\n",
        Bytes(Some(key)),
        indices.len()
    );
    for &index in indices {
        let _ = writeln!(text, "  #{index} {}", history[index]);
    }
    text
}
