//! The register model of one key, over interned values so that states are small and `Copy`.

use std::collections::HashMap;

use crate::{Input, Operation, Outcome, Output};

/// A value, as its index in [`KeyHistory::values`].
pub(crate) type ValueId = u32;

/// The state of a key: its value, or `None` if it is absent.
pub(crate) type State = Option<ValueId>;

/// What an operation does to the state, and what it requires of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A completed `Get` that observed this state.
    Read(State),
    /// A `Put` (`Some`) or a `Delete` (`None`), completed or not: legal in every state.
    Write(State),
    /// A `Cas`; `swapped` is `None` when the outcome is unknown.
    Cas {
        expected: State,
        new: State,
        swapped: Option<bool>,
    },
}

impl Effect {
    /// The state after the effect, or `None` if the effect is illegal in `state`.
    pub(crate) fn apply(self, state: State) -> Option<State> {
        match self {
            Effect::Read(observed) => (observed == state).then_some(state),
            Effect::Write(value) => Some(value),
            Effect::Cas {
                expected,
                new,
                swapped,
            } => {
                let matches = state == expected;
                match swapped {
                    Some(true) => matches.then_some(new),
                    Some(false) => (!matches).then_some(state),
                    // A compare-and-swap on a matching value always swaps: the outcome is unknown
                    // to the client, not to the model.
                    None => Some(if matches { new } else { state }),
                }
            }
        }
    }
}

/// One operation of a key's sub-history, as the search sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyOperation {
    /// The index of the operation in the whole history.
    pub(crate) index: usize,
    pub(crate) effect: Effect,
    pub(crate) invoked_at: u64,
    /// `None` when the outcome is unknown: the operation may take effect any time after its
    /// invocation, or never.
    pub(crate) completed_at: Option<u64>,
}

impl KeyOperation {
    /// The same operation as if its client had stopped waiting for the answer: `None` if it would
    /// then have no effect worth searching (a read).
    pub(crate) fn forgotten(self) -> Option<KeyOperation> {
        let effect = match self.effect {
            Effect::Read(_) => return None,
            Effect::Write(value) => Effect::Write(value),
            Effect::Cas { expected, new, .. } => Effect::Cas {
                expected,
                new,
                swapped: None,
            },
        };
        Some(KeyOperation {
            effect,
            completed_at: None,
            ..self
        })
    }
}

/// The sub-history of one key, ready for the search.
pub(crate) struct KeyHistory<'a> {
    /// The operations, in history order. A `Get` with an unknown outcome is left out: it has no
    /// effect and constrains nothing.
    pub(crate) operations: Vec<KeyOperation>,
    /// The distinct values, in order of first appearance in the history.
    pub(crate) values: Vec<&'a [u8]>,
}

impl<'a> KeyHistory<'a> {
    /// The sub-history made of `history[index]` for each of `indices`.
    pub(crate) fn new(history: &'a [Operation], indices: &[usize]) -> Self {
        let mut interner = Interner::default();
        let mut operations = Vec::with_capacity(indices.len());
        for &index in indices {
            let operation = &history[index];
            let output = match &operation.outcome {
                Outcome::Completed { output, .. } => Some(output),
                Outcome::Unknown => None,
            };
            let effect = match (&operation.input, output) {
                (Input::Get, None) => continue,
                (Input::Get, Some(Output::Value(value))) => {
                    Effect::Read(interner.state(value.as_deref()))
                }
                (Input::Put(value), _) => Effect::Write(Some(interner.value(value))),
                (Input::Delete, _) => Effect::Write(None),
                (Input::Cas { expected, new }, output) => Effect::Cas {
                    expected: interner.state(expected.as_deref()),
                    new: interner.state(new.as_deref()),
                    swapped: output.map(|output| *output == Output::Swapped(true)),
                },
                (Input::Get, Some(_)) => unreachable!("validated: a get is answered with a value"),
            };
            operations.push(KeyOperation {
                index,
                effect,
                invoked_at: operation.invoked_at,
                completed_at: operation.completed_at(),
            });
        }
        KeyHistory {
            operations,
            values: interner.values,
        }
    }

    /// The value of `value`, for explanations.
    pub(crate) fn bytes(&self, state: State) -> Option<&'a [u8]> {
        state.map(|id| self.values[id as usize])
    }
}

#[derive(Default)]
struct Interner<'a> {
    values: Vec<&'a [u8]>,
    // Only looked up, never iterated: the ids come from the order of `values`.
    ids: HashMap<&'a [u8], ValueId>,
}

impl<'a> Interner<'a> {
    fn value(&mut self, value: &'a [u8]) -> ValueId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id =
            ValueId::try_from(self.values.len()).expect("fewer than 2^32 distinct values per key");
        self.values.push(value);
        self.ids.insert(value, id);
        id
    }

    fn state(&mut self, value: Option<&'a [u8]>) -> State {
        value.map(|value| self.value(value))
    }
}
