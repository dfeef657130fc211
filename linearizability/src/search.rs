//! The porcupine search (Wing and Gong's algorithm with Lowe's cache) over one key's operations.
//!
//! The events (invocations and completions) sit in a doubly linked list, sorted by time, with
//! invocations before completions at equal times (equal times are concurrent). The search walks
//! the list from the front:
//!
//! - at an invocation, it tries to linearize that operation now: if the model allows it and the
//!   resulting (set of linearized operations, state) was never visited, the operation and its
//!   completion are lifted out of the list, pushed on a stack, and the walk restarts from the front;
//! - at a completion, the operation completed without having been linearized before everything
//!   still in the list, so the last choice was wrong: the search pops it, puts its events back,
//!   and goes on with the invocation after it;
//! - once every completed operation is linearized, the history is linearizable. Operations whose
//!   outcome is unknown have no completion event: they can always wait, so they are never forced
//!   in, and the ones left over simply never took effect.
//!
//! Three refinements keep operations with unknown outcomes from multiplying the configurations to
//! visit, which would otherwise double with each of them still pending:
//!
//! - if the search in invocation order runs out of budget, a second search tries, from each
//!   configuration, the completed operations before the unknown ones, so that the configurations
//!   reached with the fewest unknown operations tend to be visited first (see [`Order`]);
//! - an unknown put or delete is not tried right after another unknown operation, whose effect
//!   it would erase: trying it instead of that operation reaches the same state with less;
//! - the cache prunes by dominance rather than equality: a configuration is skipped if one with
//!   the same completed operations linearized, the same state, and a subset of its unknown
//!   operations was visited. That is sound because unknown operations are optional and, having no
//!   completion, constrain nothing: every continuation of the skipped configuration is a
//!   continuation of the visited one, which the search explores (or already has).

use std::cmp::Reverse;
use std::collections::HashMap;

use crate::Budget;
use crate::model::{Effect, KeyOperation, State};

/// The result of a search.
pub(crate) enum Search {
    Linearizable,
    /// Carries the deepest point reached when the search was asked to record it.
    NotLinearizable(Option<Deepest>),
    Exhausted(Exhaustion),
}

/// Which limit of the [`Budget`] stopped the search.
pub(crate) enum Exhaustion {
    Steps,
    CacheBytes,
}

impl Exhaustion {
    pub(crate) fn describe(&self, budget: Budget, operations: usize) -> String {
        match self {
            Exhaustion::Steps => format!(
                "the search of {operations} operations took more than {} steps",
                budget.steps_per_key_max
            ),
            Exhaustion::CacheBytes => format!(
                "the search of {operations} operations needed more than {} bytes of cache",
                budget.cache_bytes_per_key_max
            ),
        }
    }
}

/// The longest partial linearization the search found, and where it got stuck: the one with the
/// most completed operations, and of those the first found with the fewest operations in all (an
/// operation with an unknown outcome that is not needed only gets in the way of the account).
pub(crate) struct Deepest {
    /// How many operations it linearized.
    pub(crate) depth: usize,
    /// How many of those had completed.
    completed: usize,
    /// Its last few operations (positions in the searched slice), each with the state after it.
    pub(crate) tail: Vec<(usize, State)>,
    /// The state after the partial linearization.
    pub(crate) state: State,
    /// The operations that could have gone next as far as real time goes, none of which led to a
    /// linearization (positions, in event order).
    pub(crate) candidates: Vec<usize>,
    /// The completed operation that had to be linearized before anything later (a position).
    pub(crate) due: usize,
}

/// How many operations of the deepest partial linearization [`Deepest::tail`] keeps.
pub(crate) const DEEPEST_TAIL_LENGTH_MAX: usize = 8;

/// In which order the search tries the operations that may go next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// In the order of their invocations. Good at finding a linearization: an unknown operation
    /// whose effect was seen is tried early, where it usually belongs.
    Invocation,
    /// The completed operations first, in the order of their invocations, then the unknown ones.
    /// Good at proving there is none: the configurations with the fewest unknown operations come
    /// first and dominate the others.
    CompletedFirst,
}

/// Searches for a linearization in the order `first`, and if that runs out of budget, in the
/// other order: either answer is exact, and each order often settles quickly the histories the
/// other does not. Returns the result and the order that gave it.
pub(crate) fn decide(
    operations: &[KeyOperation],
    budget: Budget,
    record_deepest: bool,
    first: Order,
) -> (Search, Order) {
    let second = match first {
        Order::Invocation => Order::CompletedFirst,
        Order::CompletedFirst => Order::Invocation,
    };
    match search(operations, budget, record_deepest, first) {
        Search::Exhausted(_) => (search(operations, budget, record_deepest, second), second),
        decided => (decided, first),
    }
}

/// Searches for a linearization of `operations`, starting from the absent state.
pub(crate) fn search(
    operations: &[KeyOperation],
    budget: Budget,
    record_deepest: bool,
    order: Order,
) -> Search {
    let two_passes = order == Order::CompletedFirst;
    let mut events = Events::new(operations);
    let mut linearized = Linearized::new(operations);
    let mut cache = Cache::default();
    // The linearized operations, in order: their invocation event and the state before them.
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let completed_total = linearized.completed_total();
    let mut completed_left = completed_total;
    let mut deepest: Option<Deepest> = None;
    let mut steps: u64 = 0;
    let mut event = events.first();
    // In `Order::CompletedFirst`, whether the walk tries the unknown operations (second pass) or
    // the completed ones (first pass).
    let mut trying_unknown = false;
    while completed_left > 0 {
        if steps >= budget.steps_per_key_max {
            return Search::Exhausted(Exhaustion::Steps);
        }
        steps += 1;
        match events.kind[event] {
            Kind::Invocation(position) => {
                let operation = &operations[position];
                let unknown = operation.completed_at.is_none();
                let pass_ok = !two_passes || unknown == trying_unknown;
                let worth_trying = pass_ok
                    && !(unknown && overwrites_unknown(operation, &events, &stack, operations));
                let next_state = if worth_trying {
                    operation.effect.apply(state)
                } else {
                    None
                };
                let Some(next_state) = next_state else {
                    event = events.next[event];
                    continue;
                };
                linearized.insert(position);
                if cache.insert(&linearized, next_state) {
                    if cache.bytes > budget.cache_bytes_per_key_max {
                        return Search::Exhausted(Exhaustion::CacheBytes);
                    }
                    stack.push((event, state));
                    state = next_state;
                    events.lift(event);
                    completed_left -= usize::from(operation.completed_at.is_some());
                    event = events.first();
                    trying_unknown = false;
                } else {
                    linearized.remove(position);
                    event = events.next[event];
                }
            }
            Kind::Completion(_) if two_passes && !trying_unknown => {
                event = events.first();
                trying_unknown = true;
            }
            Kind::Completion(position) => {
                let completed = completed_total - completed_left;
                let deeper = deepest
                    .as_ref()
                    .is_none_or(|deepest| deepest.is_shallower(completed, stack.len()));
                if record_deepest && deeper {
                    deepest = Some(Deepest::capture(
                        &events, &stack, state, position, completed,
                    ));
                }
                let Some((invocation, previous_state)) = stack.pop() else {
                    return Search::NotLinearizable(deepest);
                };
                let Kind::Invocation(position) = events.kind[invocation] else {
                    unreachable!("the stack holds invocation events")
                };
                linearized.remove(position);
                state = previous_state;
                events.unlift(invocation);
                completed_left += usize::from(operations[position].completed_at.is_some());
                event = events.next[invocation];
                // Go on with the alternatives of the same kind; the other pass follows or came first.
                trying_unknown = two_passes && operations[position].completed_at.is_none();
            }
            Kind::Head | Kind::Tail => {
                unreachable!("a completed operation is left, so its completion precedes the tail")
            }
        }
    }
    Search::Linearizable
}

/// Whether `operation` is an unknown blind write (a put or a delete) that would come right after
/// another unknown operation, and so erase its effect. That order need not be tried: applying
/// `operation` in its stead, from the configuration before the other operation, gives the same
/// state with fewer unknown operations, a configuration that dominates this one and that the
/// search explores anyway (it is an ancestor's alternative).
fn overwrites_unknown(
    operation: &KeyOperation,
    events: &Events,
    stack: &[(usize, State)],
    operations: &[KeyOperation],
) -> bool {
    let Some(&(previous, _)) = stack.last() else {
        return false;
    };
    let Kind::Invocation(previous) = events.kind[previous] else {
        unreachable!("the stack holds invocation events")
    };
    matches!(operation.effect, Effect::Write(_)) && operations[previous].completed_at.is_none()
}

impl Deepest {
    fn is_shallower(&self, completed: usize, depth: usize) -> bool {
        (self.completed, Reverse(self.depth)) < (completed, Reverse(depth))
    }

    fn capture(
        events: &Events,
        stack: &[(usize, State)],
        state: State,
        due: usize,
        completed: usize,
    ) -> Deepest {
        let tail_start = stack.len().saturating_sub(DEEPEST_TAIL_LENGTH_MAX);
        let tail = (tail_start..stack.len())
            .map(|depth| {
                let Kind::Invocation(position) = events.kind[stack[depth].0] else {
                    unreachable!("the stack holds invocation events")
                };
                let after = stack.get(depth + 1).map_or(state, |&(_, before)| before);
                (position, after)
            })
            .collect();
        let mut candidates = Vec::new();
        let mut event = events.first();
        while let Kind::Invocation(position) = events.kind[event] {
            candidates.push(position);
            event = events.next[event];
        }
        Deepest {
            depth: stack.len(),
            completed,
            tail,
            state,
            candidates,
            due,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Head,
    Invocation(usize),
    Completion(usize),
    Tail,
}

/// The events in a doubly linked list over a vector, with sentinels at both ends. Lifting an
/// operation unlinks its events but keeps their own links, so that unlifting (in the reverse
/// order of lifting) puts them back exactly where they were.
struct Events {
    kind: Vec<Kind>,
    previous: Vec<usize>,
    next: Vec<usize>,
    /// The completion event of each operation's invocation event, if it completed.
    completion: Vec<Option<usize>>,
}

const HEAD: usize = 0;

impl Events {
    fn new(operations: &[KeyOperation]) -> Events {
        // Sorted by time, invocations first at equal times, then by position: a total order.
        let mut sorted: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * operations.len());
        for (position, operation) in operations.iter().enumerate() {
            sorted.push((operation.invoked_at, 0, position));
            if let Some(at) = operation.completed_at {
                sorted.push((at, 1, position));
            }
        }
        sorted.sort_unstable();
        let mut kind = Vec::with_capacity(sorted.len() + 2);
        kind.push(Kind::Head);
        let mut invocation_of = vec![usize::MAX; operations.len()];
        let mut completion = vec![None; sorted.len() + 2];
        for (_, order, position) in sorted {
            if order == 0 {
                invocation_of[position] = kind.len();
                kind.push(Kind::Invocation(position));
            } else {
                completion[invocation_of[position]] = Some(kind.len());
                kind.push(Kind::Completion(position));
            }
        }
        kind.push(Kind::Tail);
        let count = kind.len();
        let previous = (0..count).map(|event| event.saturating_sub(1)).collect();
        let next = (0..count).map(|event| (event + 1).min(count - 1)).collect();
        Events {
            kind,
            previous,
            next,
            completion,
        }
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    /// Takes an invocation and its completion out of the list.
    fn lift(&mut self, invocation: usize) {
        self.unlink(invocation);
        if let Some(completion) = self.completion[invocation] {
            self.unlink(completion);
        }
    }

    /// Undoes the last [`Events::lift`], which must have been of `invocation`.
    fn unlift(&mut self, invocation: usize) {
        if let Some(completion) = self.completion[invocation] {
            self.relink(completion);
        }
        self.relink(invocation);
    }

    fn unlink(&mut self, event: usize) {
        let (previous, next) = (self.previous[event], self.next[event]);
        self.next[previous] = next;
        self.previous[next] = previous;
    }

    fn relink(&mut self, event: usize) {
        let (previous, next) = (self.previous[event], self.next[event]);
        debug_assert_eq!(self.next[previous], next, "relinked out of order");
        self.next[previous] = event;
        self.previous[next] = event;
    }
}

/// The set of linearized operations, in two bit sets: the completed operations and the unknown
/// ones (each numbered among its kind). The hash of the completed part is kept up to date as
/// members come and go (Zobrist hashing), so that a cache lookup does not rehash the whole set.
struct Linearized {
    /// For each position, whether the operation is unknown and its number among its kind.
    slots: Vec<(bool, usize)>,
    completed: Vec<u64>,
    unknown: Vec<u64>,
    completed_hash: u64,
}

impl Linearized {
    fn new(operations: &[KeyOperation]) -> Linearized {
        let mut counts = [0, 0];
        let slots: Vec<(bool, usize)> = operations
            .iter()
            .map(|operation| {
                let unknown = operation.completed_at.is_none();
                let slot = counts[usize::from(unknown)];
                counts[usize::from(unknown)] += 1;
                (unknown, slot)
            })
            .collect();
        Linearized {
            slots,
            completed: vec![0; counts[0].div_ceil(64)],
            unknown: vec![0; counts[1].div_ceil(64)],
            completed_hash: 0,
        }
    }

    fn completed_total(&self) -> usize {
        self.slots.iter().filter(|(unknown, _)| !unknown).count()
    }

    fn insert(&mut self, position: usize) {
        let (words, bit) = self.locate(position);
        assert_eq!(*words & bit, 0, "operation {position} linearized twice");
        *words |= bit;
        self.rehash(position);
    }

    fn remove(&mut self, position: usize) {
        let (words, bit) = self.locate(position);
        assert_ne!(
            *words & bit,
            0,
            "operation {position} removed but not linearized"
        );
        *words &= !bit;
        self.rehash(position);
    }

    fn locate(&mut self, position: usize) -> (&mut u64, u64) {
        let (unknown, slot) = self.slots[position];
        let words = if unknown {
            &mut self.unknown
        } else {
            &mut self.completed
        };
        (&mut words[slot / 64], 1 << (slot % 64))
    }

    fn rehash(&mut self, position: usize) {
        let (unknown, slot) = self.slots[position];
        if !unknown {
            self.completed_hash ^= mix(slot as u64);
        }
    }
}

/// A visited configuration.
struct Visited {
    completed: Box<[u64]>,
    state: State,
    unknown: Box<[u64]>,
}

/// The visited configurations, bucketed by the hash of their completed operations and state, and
/// compared in full, so that a hash collision costs time but never a wrong verdict.
#[derive(Default)]
struct Cache {
    buckets: HashMap<u64, Vec<Visited>>,
    bytes: u64,
}

impl Cache {
    /// Adds the configuration; returns `false` if a visited one dominates it (same completed
    /// operations and state, a subset of its unknown operations), in which case it need not be
    /// visited.
    fn insert(&mut self, linearized: &Linearized, state: State) -> bool {
        let hash =
            linearized.completed_hash ^ mix(state.map_or(u64::MAX, u64::from).rotate_left(32));
        let bucket = self.buckets.entry(hash).or_default();
        let same = |visited: &Visited| {
            visited.state == state && *visited.completed == *linearized.completed
        };
        let subset = |smaller: &[u64], larger: &[u64]| {
            smaller
                .iter()
                .zip(larger)
                .all(|(small, large)| small & !large == 0)
        };
        if bucket
            .iter()
            .any(|visited| same(visited) && subset(&visited.unknown, &linearized.unknown))
        {
            return false;
        }
        // The configurations this one dominates are no longer needed.
        let before = bucket.len();
        bucket.retain(|visited| !(same(visited) && subset(&linearized.unknown, &visited.unknown)));
        let entry_bytes = 8 * (linearized.completed.len() + linearized.unknown.len()) as u64 + 48;
        self.bytes -= (before - bucket.len()) as u64 * entry_bytes;
        bucket.push(Visited {
            completed: linearized.completed.clone().into_boxed_slice(),
            state,
            unknown: linearized.unknown.clone().into_boxed_slice(),
        });
        // The words, the entry in the bucket, and a share of the map's overhead.
        self.bytes += entry_bytes;
        true
    }
}

/// SplitMix64's finalizer: a fixed, well-spread hash of an integer.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
