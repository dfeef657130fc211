//! The brute-force check of one key: every order that respects real time, with every subset of
//! the operations whose outcome is unknown. It shares no code with the search on purpose (not the
//! interning, not the model), so that the two can check each other.

use crate::{BRUTE_FORCE_ORDERS_PER_KEY_MAX, Input, Operation, Outcome, Output};

/// Whether `operations` (all on one key) can be ordered legally; `None` if finding out took more
/// than [`BRUTE_FORCE_ORDERS_PER_KEY_MAX`] steps.
pub(crate) fn linearizable(operations: &[&Operation]) -> Option<bool> {
    let mut search = BruteForce {
        operations,
        placed: vec![false; operations.len()],
        steps: 0,
    };
    let completed = operations
        .iter()
        .filter(|operation| operation.completed_at().is_some())
        .count();
    search.extend(None, completed)
}

struct BruteForce<'a> {
    operations: &'a [&'a Operation],
    placed: Vec<bool>,
    steps: u64,
}

impl BruteForce<'_> {
    /// Whether the operations not yet placed can follow the placed ones, from `value`.
    /// The recursion is as deep as the number of operations, which is small here.
    fn extend(&mut self, value: Option<Vec<u8>>, completed_left: usize) -> Option<bool> {
        if completed_left == 0 {
            // The unknown operations not placed never took effect.
            return Some(true);
        }
        for candidate in 0..self.operations.len() {
            if self.placed[candidate] || !self.may_go_next(candidate) {
                continue;
            }
            let operation = self.operations[candidate];
            let completed = usize::from(operation.completed_at().is_some());
            for next_value in next_values(operation, &value) {
                self.steps += 1;
                if self.steps > BRUTE_FORCE_ORDERS_PER_KEY_MAX {
                    return None;
                }
                self.placed[candidate] = true;
                let found = self.extend(next_value, completed_left - completed)?;
                self.placed[candidate] = false;
                if found {
                    return Some(true);
                }
            }
        }
        Some(false)
    }

    /// Real time: every completed operation that completed before `candidate` was invoked must
    /// already be placed.
    fn may_go_next(&self, candidate: usize) -> bool {
        let invoked_at = self.operations[candidate].invoked_at;
        self.operations
            .iter()
            .zip(&self.placed)
            .all(|(operation, &placed)| {
                placed
                    || operation
                        .completed_at()
                        .is_none_or(|completed_at| completed_at >= invoked_at)
            })
    }
}

/// The values the key may have after `operation` runs on `value`: none if its observed output is
/// impossible, and for an unknown outcome, every outcome possible.
fn next_values(operation: &Operation, value: &Option<Vec<u8>>) -> Vec<Option<Vec<u8>>> {
    let output = match &operation.outcome {
        Outcome::Completed { output, .. } => Some(output),
        Outcome::Unknown => None,
    };
    match (&operation.input, output) {
        (Input::Get, Some(Output::Value(observed))) => {
            if observed == value {
                vec![value.clone()]
            } else {
                vec![]
            }
        }
        (Input::Get, _) => vec![value.clone()],
        (Input::Put(new), _) => vec![Some(new.clone())],
        (Input::Delete, _) => vec![None],
        (Input::Cas { expected, new }, output) => {
            let swaps = expected == value;
            match (swaps, output) {
                (true, Some(Output::Swapped(true)) | None) => vec![new.clone()],
                (false, Some(Output::Swapped(false)) | None) => vec![value.clone()],
                _ => vec![],
            }
        }
    }
}
