//! Random puts, deletes, ranges and txns against a plain model written the slow, obvious way.

mod support;

use std::collections::BTreeMap;

use kv::{
    Bytes, Change, Compare, Limits, Op, OpResult, StateMachine, Version, Versioned, Write,
    WriteResult,
};
use proptest::prelude::*;
use support::{anonymous, key, runner, write};

/// The model: every key with its value, create index and mod index.
#[derive(Default)]
struct Model {
    keys: BTreeMap<Bytes, Versioned>,
}

impl Model {
    fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
        key >= start && (end.is_empty() || key < end)
    }

    fn put(
        &mut self,
        index: u64,
        key: &Bytes,
        value: &Bytes,
        changes: &mut Vec<Change>,
    ) -> Option<Versioned> {
        let previous = self.keys.get(key).cloned();
        let create_index = previous.as_ref().map_or(index, |p| p.create_index);
        self.keys.insert(
            key.clone(),
            Versioned {
                value: value.clone(),
                create_index,
                mod_index: index,
            },
        );
        changes.push(Change {
            key: key.clone(),
            value: Some(value.clone()),
        });
        previous
    }

    fn delete(&mut self, key: &Bytes, changes: &mut Vec<Change>) -> Option<Versioned> {
        let previous = self.keys.remove(key);
        if previous.is_some() {
            changes.push(Change {
                key: key.clone(),
                value: None,
            });
        }
        previous
    }

    fn holds(&self, compare: &Compare) -> bool {
        match compare {
            Compare::ValueEquals { key, value } => {
                self.keys.get(key).map(|v| &v.value) == Some(value)
            }
            Compare::ModIndexEquals { key, mod_index } => {
                self.keys.get(key).map(|v| v.mod_index) == Some(*mod_index)
            }
            Compare::Absent { key } => !self.keys.contains_key(key),
            Compare::Exists { key } => self.keys.contains_key(key),
        }
    }

    fn apply(&mut self, index: u64, write: &Write) -> (WriteResult, Vec<Change>) {
        let mut changes = Vec::new();
        let result = match write {
            Write::Put { key, value } => WriteResult::Put {
                previous: self
                    .put(index, key, value, &mut changes)
                    .as_ref()
                    .map(Version::from),
            },
            Write::Delete { key } => WriteResult::Delete {
                previous: self.delete(key, &mut changes).as_ref().map(Version::from),
            },
            Write::DeleteRange { start, end } => {
                let doomed: Vec<Bytes> = self
                    .keys
                    .keys()
                    .filter(|key| Model::in_range(key, start, end))
                    .cloned()
                    .collect();
                for key in &doomed {
                    self.delete(key, &mut changes);
                }
                WriteResult::DeleteRange {
                    deleted: doomed.len() as u64,
                }
            }
            Write::Txn(txn) => {
                let succeeded = txn.compares.iter().filter(|c| !self.holds(c)).count() == 0;
                let mut results = Vec::new();
                for op in if succeeded {
                    &txn.success
                } else {
                    &txn.failure
                } {
                    results.push(match op {
                        Op::Put { key, value } => OpResult::Put {
                            previous: self
                                .put(index, key, value, &mut changes)
                                .as_ref()
                                .map(Version::from),
                        },
                        Op::Delete { key } => OpResult::Delete {
                            previous: self.delete(key, &mut changes).as_ref().map(Version::from),
                        },
                        Op::Get { key } => OpResult::Get {
                            current: self.keys.get(key).cloned(),
                        },
                    });
                }
                WriteResult::Txn { succeeded, results }
            }
        };
        (result, changes)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> (Vec<(Bytes, Versioned)>, bool) {
        let all: Vec<(Bytes, Versioned)> = self
            .keys
            .iter()
            .filter(|(key, _)| Model::in_range(key, start, end))
            .map(|(key, v)| (key.clone(), v.clone()))
            .collect();
        let more = all.len() > limit;
        (all.into_iter().take(limit).collect(), more)
    }
}

#[test]
fn the_machine_agrees_with_a_plain_model_on_results_changes_versions_and_scans() {
    let step = (write(), key(), key(), 0usize..6);
    let strategy = prop::collection::vec(step, 1..80);
    runner()
        .run(&strategy, |steps| {
            let mut machine = StateMachine::new(Limits::default());
            let mut model = Model::default();
            for ((write, start, end, limit), index) in steps.into_iter().zip(1..) {
                let applied = machine.apply(index, &anonymous(write.clone()).encode());
                let (result, changes) = model.apply(index, &write);
                prop_assert_eq!(applied.result, Ok(result));
                prop_assert_eq!(applied.changes, changes);
                prop_assert_eq!(
                    machine.scan(b"", b"", usize::MAX),
                    model.scan(b"", b"", usize::MAX)
                );
                prop_assert_eq!(
                    machine.scan(&start, &end, limit),
                    model.scan(&start, &end, limit)
                );
                prop_assert_eq!(machine.len(), model.keys.len());
            }
            Ok(())
        })
        .unwrap();
}
