//! A linearizability checker for histories of a key-value store with compare-and-swap, recorded by
//! concurrent clients (for example by the deterministic simulation in `sim`).
//!
//! # What it promises
//!
//! - **Exact.** [`Verdict::Linearizable`] means that some total order of the operations respects
//!   real time and is a legal run of the model below; [`Verdict::NotLinearizable`] means that no
//!   such order exists. [`Verdict::Unknown`] is returned only when the search budget ([`Budget`])
//!   of a key runs out, never as a guess.
//! - **Real time.** If operation A completed before operation B was invoked (`A.at < B.invoked_at`,
//!   strictly), A takes effect before B. Operations with equal times are concurrent.
//! - **Unknown outcomes.** An operation with [`Outcome::Unknown`] (the client timed out or lost its
//!   connection) may take effect at any point after its invocation, or never.
//! - **Per key.** Keys are independent registers, so each key's sub-history is checked on its own
//!   (linearizability is compositional); keys are visited in byte order.
//! - **Deterministic.** The same history gives the same verdict and the same explanation. The
//!   checker reads no clock, draws no random number, and iterates no hash map (hash maps serve only
//!   as caches).
//! - **Readable failures.** A [`Verdict::NotLinearizable`] names the key and explains the failure
//!   with the operations involved (index in the history, client, input, times, observed output):
//!   the earliest completion after which the history can no longer be ordered, and how far the
//!   deepest attempt to order it got.
//!
//! # The model, per key
//!
//! The state of a key is its value, or absent (the initial state).
//!
//! | [`Input`]                     | [`Output`]                | legal when                                  |
//! |-------------------------------|---------------------------|---------------------------------------------|
//! | `Get`                         | `Value(v)`                | `v` is the current value                    |
//! | `Put(v)`                      | `Ok`                      | always; the value becomes `v`               |
//! | `Delete`                      | `Ok`                      | always; the key becomes absent              |
//! | `Cas { expected, new }`       | `Swapped(true)`           | the value equals `expected`; it becomes `new` |
//! | `Cas { expected, new }`       | `Swapped(false)`          | the value differs from `expected`           |
//!
//! In `Cas`, `expected: None` means "the key must be absent" and `new: None` deletes the key.
//!
//! # Algorithm
//!
//! [`check`] is the Wing–Gong search as improved by Lowe and implemented by porcupine: a list of
//! invocation and completion events, operations lifted out of the list as they are linearized and
//! put back on backtracking, and a cache of visited (set of linearized operations, value) pairs so
//! that no configuration is explored twice. Operations with unknown outcomes are optional and
//! never expire, which multiplies the configurations; the search skips orders that merely erase
//! one of them, and prunes a configuration when one with a subset of its unknown operations (and
//! otherwise the same) was visited; if the search runs out of budget, it starts over trying the
//! completed operations first. It is iterative and bounded by a [`Budget`].
//! [`check_brute_force`] tries every order, for small histories, and exists to cross-check
//! [`check`].
//!
//! # Example
//!
//! ```
//! use linearizability::{Input, Operation, Output, Verdict, check};
//!
//! // Client 1 writes "a" and is told, at time 10, that the write succeeded.
//! let write = Operation::completed(1, b"x", Input::Put(b"a".to_vec()), 0, 10, Output::Ok);
//! // Client 2 then reads the key, between times 20 and 30.
//! let fresh_read = Operation::completed(2, b"x", Input::Get, 20, 30, Output::Value(Some(b"a".to_vec())));
//! assert_eq!(check(&[write.clone(), fresh_read]), Verdict::Linearizable);
//!
//! // A read that starts after the write completed and still sees no value is stale.
//! let stale_read = Operation::completed(2, b"x", Input::Get, 20, 30, Output::Value(None));
//! let verdict = check(&[write, stale_read]);
//! let Verdict::NotLinearizable { key, explanation } = &verdict else { panic!("{verdict}") };
//! assert_eq!(key, b"x");
//! assert!(explanation.contains("#1 client 2: get -> absent [invoked at 20, completed at 30]"));
//!
//! // A write whose outcome is unknown may have taken effect, or not.
//! let lost = Operation::unknown(1, b"y", Input::Put(b"b".to_vec()), 0);
//! let seen = Operation::completed(2, b"y", Input::Get, 5, 6, Output::Value(Some(b"b".to_vec())));
//! let unseen = Operation::completed(2, b"y", Input::Get, 1, 2, Output::Value(None));
//! assert_eq!(check(&[lost, unseen, seen]), Verdict::Linearizable);
//! ```

use std::collections::BTreeMap;
use std::fmt;

mod brute_force;
mod explain;
mod model;
mod search;

/// What a client asked of the store, on the key of its [`Operation`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Read the value; answered with [`Output::Value`].
    Get,
    /// Set the value; answered with [`Output::Ok`].
    Put(Vec<u8>),
    /// Remove the key; answered with [`Output::Ok`].
    Delete,
    /// Compare-and-swap; answered with [`Output::Swapped`].
    Cas {
        /// The value the key must have for the swap to happen; `None`: the key must be absent.
        expected: Option<Vec<u8>>,
        /// The value after a swap; `None`: the swap deletes the key.
        new: Option<Vec<u8>>,
    },
}

/// What the client observed when its operation completed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The answer to [`Input::Get`]: the value, or `None` if the key was absent.
    Value(Option<Vec<u8>>),
    /// The answer to [`Input::Put`] and [`Input::Delete`].
    Ok,
    /// The answer to [`Input::Cas`]: whether the swap happened.
    Swapped(bool),
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The client received an answer.
    Completed {
        /// When the answer arrived, on the same clock as [`Operation::invoked_at`].
        at: u64,
        /// The answer.
        output: Output,
    },
    /// The client never learned the outcome (timeout, lost connection): the operation may have
    /// taken effect at any time after its invocation, or never.
    Unknown,
}

/// One operation of a history: a client's call on one key, with its times and outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// Who issued the operation; used only in explanations.
    pub client: u64,
    /// The key the operation reads or writes.
    pub key: Vec<u8>,
    /// What was asked.
    pub input: Input,
    /// When the client sent it. Any clock works, provided all operations use the same one.
    pub invoked_at: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// The result of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history can be ordered legally.
    Linearizable,
    /// The sub-history of `key` cannot be ordered legally (the first such key in byte order).
    NotLinearizable {
        /// The key whose sub-history has no legal order.
        key: Vec<u8>,
        /// A readable account of why, naming the operations involved; several lines.
        explanation: String,
    },
    /// The search ran out of budget on `key` (the first such key in byte order), and no key was
    /// found not linearizable.
    Unknown {
        /// The key whose search ran out of budget.
        key: Vec<u8>,
        /// Which limit was reached.
        reason: String,
    },
}

/// Limits on the search for one key, so that a pathological history yields [`Verdict::Unknown`]
/// instead of running forever or exhausting memory.
///
/// The limits apply to each search: a key that the search in invocation order cannot settle
/// within them is searched again with the completed operations tried first (which is better at
/// proving a violation when many outcomes are unknown), so a key may cost twice the budget, and
/// explaining a violation costs a few more searches of prefixes of the key's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Search steps (one step tries one event of the list) per key.
    pub steps_per_key_max: u64,
    /// Bytes held by the cache of visited configurations, per key. One entry costs about
    /// `operations / 8 + 40` bytes, where `operations` counts the key's operations.
    pub cache_bytes_per_key_max: u64,
}

impl Default for Budget {
    /// Ten million steps and 256 MiB of cache per key: far more than a linearizable history of
    /// thousands of operations from ten clients needs.
    fn default() -> Self {
        Budget {
            steps_per_key_max: 10_000_000,
            cache_bytes_per_key_max: 256 << 20,
        }
    }
}

impl Operation {
    /// An operation whose client received `output` at time `at`.
    pub fn completed(
        client: u64,
        key: &[u8],
        input: Input,
        invoked_at: u64,
        at: u64,
        output: Output,
    ) -> Self {
        Operation {
            client,
            key: key.to_vec(),
            input,
            invoked_at,
            outcome: Outcome::Completed { at, output },
        }
    }

    /// An operation whose outcome its client never learned.
    pub fn unknown(client: u64, key: &[u8], input: Input, invoked_at: u64) -> Self {
        Operation {
            client,
            key: key.to_vec(),
            input,
            invoked_at,
            outcome: Outcome::Unknown,
        }
    }

    /// When the operation completed, or `None` if its outcome is unknown.
    pub fn completed_at(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Completed { at, .. } => Some(at),
            Outcome::Unknown => None,
        }
    }
}

/// Checks `history` with the default [`Budget`]. See [`check_with_budget`].
///
/// # Panics
///
/// As [`check_with_budget`].
pub fn check(history: &[Operation]) -> Verdict {
    check_with_budget(history, Budget::default())
}

/// Checks whether `history` is linearizable, key by key, with the porcupine search.
///
/// Returns the first key (in byte order) that is not linearizable; if there is none but the
/// search of some key ran out of `budget`, returns [`Verdict::Unknown`] for the first such key.
///
/// # Panics
///
/// If the history is malformed, which is a bug in the recorder rather than in the system under
/// test: an operation that completed before it was invoked, or an output of the wrong kind for its
/// input (for example [`Output::Swapped`] for a [`Input::Put`]).
pub fn check_with_budget(history: &[Operation], budget: Budget) -> Verdict {
    validate(history);
    let mut first_unknown = None;
    for (key, indices) in indices_by_key(history) {
        let key_history = model::KeyHistory::new(history, &indices);
        let operations = &key_history.operations;
        match search::decide(operations, budget, false, search::Order::Invocation) {
            (search::Search::Linearizable, _) => {}
            (search::Search::NotLinearizable(_), order) => {
                let explanation = explain::explain(history, &key_history, budget, order);
                return Verdict::NotLinearizable {
                    key: key.to_vec(),
                    explanation,
                };
            }
            (search::Search::Exhausted(exhaustion), _) => {
                if first_unknown.is_none() {
                    let reason = exhaustion.describe(budget, indices.len());
                    first_unknown = Some(Verdict::Unknown {
                        key: key.to_vec(),
                        reason,
                    });
                }
            }
        }
    }
    first_unknown.unwrap_or(Verdict::Linearizable)
}

/// Checks `history` by trying every order of each key's operations that respects real time, with
/// every subset of the operations whose outcome is unknown. Exponential: meant for histories of
/// about ten operations per key, to cross-check [`check`], which it must always agree with.
///
/// Returns [`Verdict::Unknown`] if a key needs more than [`BRUTE_FORCE_ORDERS_PER_KEY_MAX`] steps.
///
/// # Panics
///
/// As [`check_with_budget`].
pub fn check_brute_force(history: &[Operation]) -> Verdict {
    validate(history);
    let mut first_unknown = None;
    for (key, indices) in indices_by_key(history) {
        let operations: Vec<&Operation> = indices.iter().map(|&index| &history[index]).collect();
        match brute_force::linearizable(&operations) {
            Some(true) => {}
            Some(false) => {
                let explanation = explain::explain_brute_force(history, key, &indices);
                return Verdict::NotLinearizable {
                    key: key.to_vec(),
                    explanation,
                };
            }
            None => {
                if first_unknown.is_none() {
                    let reason = format!(
                        "the brute-force search of {} operations took more than {BRUTE_FORCE_ORDERS_PER_KEY_MAX} steps",
                        indices.len()
                    );
                    first_unknown = Some(Verdict::Unknown {
                        key: key.to_vec(),
                        reason,
                    });
                }
            }
        }
    }
    first_unknown.unwrap_or(Verdict::Linearizable)
}

/// The most steps (partial orders tried) [`check_brute_force`] spends on one key.
pub const BRUTE_FORCE_ORDERS_PER_KEY_MAX: u64 = 50_000_000;

/// The indices of the operations on each key, keys in byte order, indices in history order.
fn indices_by_key(history: &[Operation]) -> BTreeMap<&[u8], Vec<usize>> {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, operation) in history.iter().enumerate() {
        by_key.entry(&operation.key).or_default().push(index);
    }
    by_key
}

fn validate(history: &[Operation]) {
    for (index, operation) in history.iter().enumerate() {
        let Outcome::Completed { at, output } = &operation.outcome else {
            continue;
        };
        assert!(
            operation.invoked_at <= *at,
            "malformed history: operation #{index} ({operation}) completed before it was invoked"
        );
        let matches = matches!(
            (&operation.input, output),
            (Input::Get, Output::Value(_))
                | (Input::Put(_) | Input::Delete, Output::Ok)
                | (Input::Cas { .. }, Output::Swapped(_))
        );
        assert!(
            matches,
            "malformed history: operation #{index} ({operation}) has an output of the wrong kind"
        );
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(formatter, "linearizable"),
            Verdict::NotLinearizable { explanation, .. } => write!(formatter, "{explanation}"),
            Verdict::Unknown { key, reason } => {
                write!(
                    formatter,
                    "key {}: linearizability unknown: {reason}",
                    Bytes(Some(key))
                )
            }
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Get => write!(formatter, "get"),
            Input::Put(value) => write!(formatter, "put {}", Bytes(Some(value))),
            Input::Delete => write!(formatter, "delete"),
            Input::Cas { expected, new } => {
                write!(
                    formatter,
                    "cas {} -> {}",
                    Bytes(expected.as_deref()),
                    Bytes(new.as_deref())
                )
            }
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Value(value) => write!(formatter, "{}", Bytes(value.as_deref())),
            Output::Ok => write!(formatter, "ok"),
            Output::Swapped(true) => write!(formatter, "swapped"),
            Output::Swapped(false) => write!(formatter, "not swapped"),
        }
    }
}

/// For example `client 2: get -> "a" [invoked at 20, completed at 30]`, or
/// `client 1: put "b" -> unknown outcome [invoked at 0, never completed]`.
impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Completed { at, output } => write!(
                formatter,
                "client {}: {} -> {output} [invoked at {}, completed at {at}]",
                self.client, self.input, self.invoked_at
            ),
            Outcome::Unknown => write!(
                formatter,
                "client {}: {} -> unknown outcome [invoked at {}, never completed]",
                self.client, self.input, self.invoked_at
            ),
        }
    }
}

/// Shows a value as a quoted string if it is printable ASCII, as hexadecimal otherwise, and
/// `absent` for `None`.
struct Bytes<'a>(Option<&'a [u8]>);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(bytes) = self.0 else {
            return write!(formatter, "absent");
        };
        if bytes.iter().all(|byte| (0x20..0x7f).contains(byte)) {
            // Printable ASCII is valid UTF-8; `{:?}` adds the quotes and escapes `"` and `\`.
            write!(formatter, "{:?}", String::from_utf8_lossy(bytes))
        } else {
            write!(formatter, "0x")?;
            bytes
                .iter()
                .try_for_each(|byte| write!(formatter, "{byte:02x}"))
        }
    }
}
