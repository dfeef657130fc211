//! The ordered keys and how each kind of write changes them.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::{
    ApplyError, Change, Compare, Op, OpResult, TXN_OPS_MAX, Txn, Version, Versioned, Write,
    WriteResult,
};

/// The keys with their versions, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Store {
    pub(crate) keys: BTreeMap<Bytes, Versioned>,
}

/// A key range as `BTreeMap::range` takes it.
type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The bounds of `[start, end)` with an empty `end` meaning no upper bound, or `None` when the range is
/// empty. `BTreeMap::range` panics on a start above the end, so every range goes through here.
fn range_bounds<'a>(start: &'a [u8], end: &'a [u8]) -> Option<Bounds<'a>> {
    if end.is_empty() {
        Some((Bound::Included(start), Bound::Unbounded))
    } else if start < end {
        Some((Bound::Included(start), Bound::Excluded(end)))
    } else {
        None
    }
}

impl Store {
    /// Applies one write at `index`: its result and the changes it made, in order.
    pub(crate) fn execute(
        &mut self,
        index: u64,
        write: &Write,
    ) -> (Result<WriteResult, ApplyError>, Vec<Change>) {
        let mut changes = Vec::new();
        let result = match write {
            Write::Put { key, value } => Ok(WriteResult::Put {
                previous: self
                    .put(index, key, value, &mut changes)
                    .as_ref()
                    .map(Version::from),
            }),
            Write::Delete { key } => Ok(WriteResult::Delete {
                previous: self.delete(key, &mut changes).as_ref().map(Version::from),
            }),
            Write::DeleteRange { start, end } => Ok(WriteResult::DeleteRange {
                deleted: self.delete_range(start, end, &mut changes),
            }),
            Write::Txn(txn) => self.txn(index, txn, &mut changes),
        };
        debug_assert!(
            result.is_ok() || changes.is_empty(),
            "a refused write changes nothing"
        );
        (result, changes)
    }

    fn put(
        &mut self,
        index: u64,
        key: &Bytes,
        value: &Bytes,
        changes: &mut Vec<Change>,
    ) -> Option<Versioned> {
        let create_index = self.keys.get(key).map_or(index, |old| old.create_index);
        let new = Versioned {
            value: value.clone(),
            create_index,
            mod_index: index,
        };
        changes.push(Change {
            key: key.clone(),
            value: Some(value.clone()),
        });
        self.keys.insert(key.clone(), new)
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

    fn delete_range(&mut self, start: &[u8], end: &[u8], changes: &mut Vec<Change>) -> u64 {
        let Some(bounds) = range_bounds(start, end) else {
            return 0;
        };
        let doomed: Vec<Bytes> = self
            .keys
            .range::<[u8], _>(bounds)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &doomed {
            let removed = self.keys.remove(key);
            debug_assert!(removed.is_some());
            changes.push(Change {
                key: key.clone(),
                value: None,
            });
        }
        doomed.len() as u64
    }

    fn txn(
        &mut self,
        index: u64,
        txn: &Txn,
        changes: &mut Vec<Change>,
    ) -> Result<WriteResult, ApplyError> {
        check_txn_size(txn)?;
        let succeeded = txn.compares.iter().all(|compare| self.holds(compare));
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // Every op is infallible once the sizes are checked, so running them one by one is atomic.
        let results = branch
            .iter()
            .map(|op| self.op(index, op, changes))
            .collect();
        Ok(WriteResult::Txn { succeeded, results })
    }

    fn op(&mut self, index: u64, op: &Op, changes: &mut Vec<Change>) -> OpResult {
        match op {
            Op::Put { key, value } => OpResult::Put {
                previous: self
                    .put(index, key, value, changes)
                    .as_ref()
                    .map(Version::from),
            },
            Op::Delete { key } => OpResult::Delete {
                previous: self.delete(key, changes).as_ref().map(Version::from),
            },
            Op::Get { key } => OpResult::Get {
                current: self.keys.get(key).cloned(),
            },
        }
    }

    fn holds(&self, compare: &Compare) -> bool {
        match compare {
            Compare::ValueEquals { key, value } => {
                self.keys.get(key).is_some_and(|v| v.value == *value)
            }
            Compare::ModIndexEquals { key, mod_index } => self
                .keys
                .get(key)
                .is_some_and(|v| v.mod_index == *mod_index),
            Compare::Absent { key } => !self.keys.contains_key(key),
            Compare::Exists { key } => self.keys.contains_key(key),
        }
    }

    /// Keys in `[start, end)` (empty `end`: no upper bound), at most `limit`, and whether more remain.
    pub(crate) fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> (Vec<(Bytes, Versioned)>, bool) {
        let Some(bounds) = range_bounds(start, end) else {
            return (Vec::new(), false);
        };
        let mut range = self.keys.range::<[u8], _>(bounds);
        let found: Vec<(Bytes, Versioned)> = range
            .by_ref()
            .take(limit)
            .map(|(key, versioned)| (key.clone(), versioned.clone()))
            .collect();
        (found, range.next().is_some())
    }
}

fn check_txn_size(txn: &Txn) -> Result<(), ApplyError> {
    let lists = [
        ("compares", txn.compares.len()),
        ("success", txn.success.len()),
        ("failure", txn.failure.len()),
    ];
    for (name, len) in lists {
        if len > TXN_OPS_MAX {
            return Err(ApplyError::TooLarge {
                reason: format!("{len} {name}, more than {TXN_OPS_MAX}"),
            });
        }
    }
    Ok(())
}
