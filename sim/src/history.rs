//! What the clients did and saw, and the workload that produces it.

use crate::options::Draw;
use client::Client;
use kv::{Compare, Op, Txn, Write, WriteResult};
use linearizability::{Input, Operation, Output, Verdict};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Records operations as the clients invoke and complete them; clones share the record.
#[derive(Debug, Clone)]
pub struct Recorder {
    started: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
}

/// A finished history.
#[derive(Debug, Clone)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    /// Operations recorded.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The operations, in the order they were recorded.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Operations whose outcome the client never learned.
    pub fn unknown(&self) -> usize {
        self.operations
            .iter()
            .filter(|operation| operation.completed_at().is_none())
            .count()
    }

    /// Checks linearizability per key.
    ///
    /// # Errors
    /// The checker's explanation of the first key that cannot be ordered, or of a key whose
    /// search ran out of budget.
    pub fn check(&self) -> Result<(), String> {
        match linearizability::check(&self.operations) {
            Verdict::Linearizable => Ok(()),
            Verdict::NotLinearizable { explanation, .. } => {
                Err(format!("the history is not linearizable: {explanation}"))
            }
            Verdict::Unknown { key, reason } => Err(format!(
                "the linearizability search gave up on key {}: {reason}",
                String::from_utf8_lossy(&key)
            )),
        }
    }
}

impl Recorder {
    /// A recorder whose times count from `started`.
    pub fn new(started: Instant) -> Recorder {
        Recorder {
            started,
            operations: Arc::default(),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn push(&self, operation: Operation) {
        self.operations
            .lock()
            .expect("history lock")
            .push(operation);
    }

    /// The history so far.
    pub fn history(&self) -> History {
        History {
            operations: self.operations.lock().expect("history lock").clone(),
        }
    }

    /// A linearizable read, recorded; its value if it completed.
    pub async fn get(&self, client: &Client, client_id: u64, key: &str) -> Option<Option<Vec<u8>>> {
        let invoked_at = self.now();
        // A read that fails has no effect: it is not recorded.
        let value = client.get(key.to_owned()).await.ok()?;
        let value = value.map(|versioned| versioned.value.to_vec());
        let output = Output::Value(value.clone());
        self.push(Operation::completed(
            client_id,
            key.as_bytes(),
            Input::Get,
            invoked_at,
            self.now(),
            output,
        ));
        Some(value)
    }

    async fn put(&self, client: &Client, client_id: u64, key: &str, value: Vec<u8>) {
        let invoked_at = self.now();
        let input = Input::Put(value.clone());
        let operation = match client.put(key.to_owned(), value).await {
            Ok(_) => Operation::completed(
                client_id,
                key.as_bytes(),
                input,
                invoked_at,
                self.now(),
                Output::Ok,
            ),
            Err(_) => Operation::unknown(client_id, key.as_bytes(), input, invoked_at),
        };
        self.push(operation);
    }

    async fn delete(&self, client: &Client, client_id: u64, key: &str) {
        let invoked_at = self.now();
        let operation = match client.delete(key.to_owned()).await {
            Ok(_) => Operation::completed(
                client_id,
                key.as_bytes(),
                Input::Delete,
                invoked_at,
                self.now(),
                Output::Ok,
            ),
            Err(_) => Operation::unknown(client_id, key.as_bytes(), Input::Delete, invoked_at),
        };
        self.push(operation);
    }

    async fn cas(
        &self,
        client: &Client,
        client_id: u64,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Option<bool> {
        let invoked_at = self.now();
        let key_bytes = bytes::Bytes::from(key.to_owned());
        let compare = match &expected {
            Some(value) => Compare::ValueEquals {
                key: key_bytes.clone(),
                value: value.clone().into(),
            },
            None => Compare::Absent {
                key: key_bytes.clone(),
            },
        };
        let txn = Txn {
            compares: vec![compare],
            success: vec![Op::Put {
                key: key_bytes,
                value: new.clone().into(),
            }],
            failure: Vec::new(),
        };
        let input = Input::Cas {
            expected,
            new: Some(new),
        };
        let result = client.write(Write::Txn(txn)).await;
        let (operation, swapped) = match result {
            Ok(written) => {
                let swapped = matches!(
                    written.result,
                    WriteResult::Txn {
                        succeeded: true,
                        ..
                    }
                );
                let output = Output::Swapped(swapped);
                let operation = Operation::completed(
                    client_id,
                    key.as_bytes(),
                    input,
                    invoked_at,
                    self.now(),
                    output,
                );
                (operation, Some(swapped))
            }
            Err(_) => (
                Operation::unknown(client_id, key.as_bytes(), input, invoked_at),
                None,
            ),
        };
        self.push(operation);
        swapped
    }
}

/// One client's work until `until`: reads, puts of unique values, compare-and-swaps on what it
/// last saw, deletes, on a small set of keys across shards, each recorded.
pub async fn workload(
    client: Client,
    client_id: u64,
    keys: Vec<String>,
    mut draw: Draw,
    recorder: Recorder,
    until: Instant,
) {
    let mut seen: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
    let mut sequence = 0u64;
    while Instant::now() < until {
        let key = draw.pick(&keys).clone();
        sequence += 1;
        let value = format!("c{client_id}-{sequence}").into_bytes();
        match draw.between(0, 99) {
            0..40 => {
                if let Some(value) = recorder.get(&client, client_id, &key).await {
                    seen.insert(key, value);
                }
            }
            40..65 => {
                recorder.put(&client, client_id, &key, value.clone()).await;
            }
            65..90 => {
                let expected = seen.get(&key).cloned().flatten();
                if recorder
                    .cas(&client, client_id, &key, expected, value.clone())
                    .await
                    == Some(true)
                {
                    seen.insert(key, Some(value));
                }
            }
            _ => recorder.delete(&client, client_id, &key).await,
        }
        tokio::time::sleep(Duration::from_millis(draw.between(0, 40))).await;
    }
}
