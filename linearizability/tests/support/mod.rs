//! Builds histories from a real sequential execution: each operation takes effect at its own
//! instant, in the order given, and its recorded interval is stretched around that instant, so
//! that operations overlap. Such a history is linearizable by construction.

#![allow(dead_code)] // Each test file uses part of this module.

use std::collections::BTreeMap;

use linearizability::{Input, Operation, Outcome, Output};

/// One operation to run, and how its recording is blurred.
#[derive(Clone, Debug)]
pub struct Planned {
    pub client: u64,
    pub key: Vec<u8>,
    pub input: Input,
    /// How long before the instant it takes effect the client invoked it.
    pub invoked_before: u64,
    /// How long after that instant the client got the answer.
    pub completed_after: u64,
    pub fate: Fate,
}

/// What the client learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The client got the answer.
    Completed,
    /// The client gave up, but the operation took effect.
    UnknownApplied,
    /// The client gave up, and the operation never took effect.
    UnknownLost,
}

/// Operations take effect `SPACING` apart, starting at `START` (so that invocations can be earlier).
const SPACING: u64 = 10;
const START: u64 = 1_000;

/// Runs `plan` in order against a sequential store and records the history, one operation of the
/// history per planned operation, in the same order.
pub fn linearizable_history(plan: &[Planned]) -> Vec<Operation> {
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let instant = |position: usize| START + SPACING * position as u64;
    // A client's next operation starts after its previous one ended, so intervals are clipped to
    // the instants of the client's neighbouring operations.
    let mut completed_at = vec![0; plan.len()];
    for (position, planned) in plan.iter().enumerate() {
        let next_of_client = plan[position + 1..]
            .iter()
            .position(|other| other.client == planned.client);
        let latest = next_of_client.map_or(u64::MAX, |offset| instant(position + 1 + offset) - 1);
        completed_at[position] = (instant(position) + planned.completed_after).min(latest);
    }
    let mut history = Vec::with_capacity(plan.len());
    let mut client_free_at: BTreeMap<u64, u64> = BTreeMap::new();
    for (position, planned) in plan.iter().enumerate() {
        let earliest = client_free_at.get(&planned.client).map_or(0, |&at| at + 1);
        let invoked_at = instant(position)
            .saturating_sub(planned.invoked_before)
            .max(earliest);
        client_free_at.insert(planned.client, completed_at[position]);
        let output = match planned.fate {
            Fate::UnknownLost => None,
            Fate::Completed | Fate::UnknownApplied => {
                Some(apply(&mut store, &planned.key, &planned.input))
            }
        };
        let outcome = match (planned.fate, output) {
            (Fate::Completed, Some(output)) => Outcome::Completed {
                at: completed_at[position],
                output,
            },
            _ => Outcome::Unknown,
        };
        history.push(Operation {
            client: planned.client,
            key: planned.key.clone(),
            input: planned.input.clone(),
            invoked_at,
            outcome,
        });
    }
    history
}

fn apply(store: &mut BTreeMap<Vec<u8>, Vec<u8>>, key: &[u8], input: &Input) -> Output {
    match input {
        Input::Get => Output::Value(store.get(key).cloned()),
        Input::Put(value) => {
            store.insert(key.to_vec(), value.clone());
            Output::Ok
        }
        Input::Delete => {
            store.remove(key);
            Output::Ok
        }
        Input::Cas { expected, new } => {
            let swapped = store.get(key) == expected.as_ref();
            if swapped {
                match new {
                    Some(new) => store.insert(key.to_vec(), new.clone()),
                    None => store.remove(key),
                };
            }
            Output::Swapped(swapped)
        }
    }
}

/// SplitMix64: a tiny deterministic generator for the larger generated histories.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
