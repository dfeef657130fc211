//! The JSON shapes both JSON doors share (the HTTP API and the WebSocket gateway's requests):
//! a transaction and its results. Parsing and encoding only.

use bytes::Bytes;
use client::protocol::KEY_BYTES_MAX;
use kv::{Compare, Op, OpResult, Txn};
use serde::Deserialize;
use serde_json::{Value, json};

/// One compare of a transaction.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum JsonCompare {
    ValueEquals { key: String, value: String },
    ModIndexEquals { key: String, mod_index: u64 },
    Absent { key: String },
    Exists { key: String },
}

/// One operation of a transaction.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum JsonOp {
    Put { key: String, value: String },
    Delete { key: String },
    Get { key: String },
}

/// A transaction: compares, then `success` if they all hold, else `failure`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonTxn {
    #[serde(default)]
    pub compare: Vec<JsonCompare>,
    #[serde(default)]
    pub success: Vec<JsonOp>,
    #[serde(default)]
    pub failure: Vec<JsonOp>,
}

/// A key as the JSON doors take it: not empty, at most [`KEY_BYTES_MAX`] bytes.
pub(crate) fn key(key: &str) -> Result<Bytes, String> {
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "key of {} bytes exceeds the limit of {KEY_BYTES_MAX} bytes",
            key.len()
        ));
    }
    Ok(Bytes::copy_from_slice(key.as_bytes()))
}

fn op(op: JsonOp) -> Result<Op, String> {
    Ok(match op {
        JsonOp::Put { key: name, value } => Op::Put {
            key: key(&name)?,
            value: Bytes::from(value),
        },
        JsonOp::Delete { key: name } => Op::Delete { key: key(&name)? },
        JsonOp::Get { key: name } => Op::Get { key: key(&name)? },
    })
}

fn compare(compare: JsonCompare) -> Result<Compare, String> {
    Ok(match compare {
        JsonCompare::ValueEquals { key: name, value } => Compare::ValueEquals {
            key: key(&name)?,
            value: Bytes::from(value),
        },
        JsonCompare::ModIndexEquals {
            key: name,
            mod_index,
        } => Compare::ModIndexEquals {
            key: key(&name)?,
            mod_index,
        },
        JsonCompare::Absent { key: name } => Compare::Absent { key: key(&name)? },
        JsonCompare::Exists { key: name } => Compare::Exists { key: key(&name)? },
    })
}

impl JsonTxn {
    /// The transaction, or why a key is refused.
    pub(crate) fn into_txn(self) -> Result<Txn, String> {
        Ok(Txn {
            compares: self
                .compare
                .into_iter()
                .map(compare)
                .collect::<Result<_, _>>()?,
            success: self.success.into_iter().map(op).collect::<Result<_, _>>()?,
            failure: self.failure.into_iter().map(op).collect::<Result<_, _>>()?,
        })
    }
}

/// Bytes as text; what is not UTF-8 is replaced (U+FFFD).
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The results of the branch a transaction ran, in order.
pub(crate) fn op_results(results: &[OpResult]) -> Vec<Value> {
    results
        .iter()
        .map(|result| match result {
            OpResult::Put { .. } => json!({"op": "put"}),
            OpResult::Delete { previous } => {
                json!({"op": "delete", "deleted": previous.is_some()})
            }
            OpResult::Get {
                current: Some(versioned),
            } => json!({
                "op": "get",
                "value": text(&versioned.value),
                "create_index": versioned.create_index,
                "mod_index": versioned.mod_index,
            }),
            OpResult::Get { current: None } => json!({"op": "get", "value": null}),
        })
        .collect()
}
