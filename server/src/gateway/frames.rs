//! The JSON text frames the gateway sends, encoded once: a change frame is shared (a
//! reference-counted `Bytes`) by every connection subscribed to its channel.

use super::session::AnswerBody;
use bytes::Bytes;
use client::ShardId;
use kv::Change;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Where a change sits: the same on every replica, since every replica applies the same log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// The shard (Raft group).
    pub shard: ShardId,
    /// The log index of the entry that made the change.
    pub index: u64,
}

/// A subscription's place in each shard its channel covers: the last index seen (JSON: an
/// object from shard id to index, `{"1": 120, "4": 77}`).
pub type Positions = BTreeMap<ShardId, u64>;

#[derive(Serialize)]
struct ChangeFrame<'a> {
    op: &'static str,
    channel: &'a str,
    position: Position,
    key: &'a str,
    value: Option<&'a str>,
    /// The last change of its entry on this channel: a client moves its resume position to
    /// the entry only then (an entry cut off by a disconnect is replayed whole).
    last: bool,
}

fn to_bytes(value: &impl Serialize) -> Bytes {
    // Serializing these types (strings, integers, maps with integer keys) cannot fail.
    Bytes::from(serde_json::to_vec(value).expect("JSON encoding of a frame"))
}

/// Keys and values travel as text; bytes that are not UTF-8 are replaced (U+FFFD), as the
/// HTTP API shows them.
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// `{"op":"change","channel":C,"position":{"shard":S,"index":I},"key":K,"value":V|null,
/// "last":B}`.
pub fn change(channel: &str, position: Position, change: &Change, last: bool) -> Bytes {
    let key = text(&change.key);
    let value = change.value.as_deref().map(text);
    to_bytes(&ChangeFrame {
        op: "change",
        channel,
        position,
        key: &key,
        value: value.as_deref(),
        last,
    })
}

/// The frames of one entry's `changes` on `channel`, the last one marked.
pub fn entry_changes(channel: &str, position: Position, changes: &[&Change]) -> Vec<Bytes> {
    changes
        .iter()
        .enumerate()
        .map(|(number, item)| change(channel, position, item, number + 1 == changes.len()))
        .collect()
}

/// `{"op":"resync","channel":C,"at":{...}}`: changes were missed; refetch, then continue from
/// `at`.
pub fn resync(channel: &str, at: &Positions) -> Bytes {
    to_bytes(&json!({"op": "resync", "channel": channel, "at": at}))
}

/// `{"op":"subscribed","channel":C,"at":{...}}`: changes after `at` follow.
pub fn subscribed(channel: &str, at: &Positions) -> Bytes {
    to_bytes(&json!({"op": "subscribed", "channel": channel, "at": at}))
}

/// `{"op":"unsubscribed","channel":C}`.
pub fn unsubscribed(channel: &str) -> Bytes {
    to_bytes(&json!({"op": "unsubscribed", "channel": channel}))
}

/// `{"op":"authenticated","server_id":N}`.
pub fn authenticated(server_id: u64) -> Bytes {
    to_bytes(&json!({"op": "authenticated", "server_id": server_id}))
}

/// `{"op":"authenticated","server_id":ID,"user":NAME}`: an agenda session was accepted.
pub fn authenticated_user(server_id: u64, user: &str) -> Bytes {
    to_bytes(&json!({"op": "authenticated", "server_id": server_id, "user": user}))
}

/// `{"op":"pong"}`.
pub fn pong() -> Bytes {
    Bytes::from_static(br#"{"op":"pong"}"#)
}

/// What an error frame refers to, if anything: a request's id or a channel.
#[derive(Clone, Debug, Default)]
pub struct ErrorContext {
    /// The request's id.
    pub id: Option<u64>,
    /// The channel.
    pub channel: Option<String>,
}

/// `{"op":"error","code":C,"message":M}`, with `"id"` or `"channel"` when it refers to one.
pub fn error(code: &str, message: &str, context: &ErrorContext) -> Bytes {
    let mut frame = json!({"op": "error", "code": code, "message": message});
    if let Some(id) = context.id {
        frame["id"] = json!(id);
    }
    if let Some(channel) = &context.channel {
        frame["channel"] = json!(channel);
    }
    to_bytes(&frame)
}

/// The answer to an agenda request: a success as `{"op":"reply","id":N,"status":S,"body":B}`
/// (a JSON body placed as the handler wrote it, a text body as a JSON string, none as `null`);
/// a refusal as `{"op":"error","id":N,"code":C,"message":M,"status":S}`, with the code and
/// message of the API's error body (or, for a body that is not one, a code for the status and
/// the text).
pub fn agenda_answer(id: u64, status: u16, body: &AnswerBody) -> Bytes {
    if (200..300).contains(&status) {
        let mut frame =
            format!(r#"{{"op":"reply","id":{id},"status":{status},"body":"#).into_bytes();
        match body {
            AnswerBody::Empty => frame.extend_from_slice(b"null"),
            AnswerBody::Json(json) => frame.extend_from_slice(json),
            AnswerBody::Text(text) => frame.extend(to_bytes(text)),
        }
        frame.push(b'}');
        return Bytes::from(frame);
    }
    #[derive(Deserialize)]
    struct ApiError {
        code: String,
        message: String,
    }
    let (code, message) = match body {
        AnswerBody::Json(json) => match serde_json::from_slice::<ApiError>(json) {
            Ok(error) => (error.code, error.message),
            Err(_) => (
                status_code(status).to_owned(),
                String::from_utf8_lossy(json).into_owned(),
            ),
        },
        AnswerBody::Text(text) => (status_code(status).to_owned(), text.clone()),
        AnswerBody::Empty => (status_code(status).to_owned(), String::new()),
    };
    to_bytes(&json!({"op": "error", "id": id, "code": code, "message": message, "status": status}))
}

/// The error code of an HTTP status whose answer did not say one.
fn status_code(status: u16) -> &'static str {
    match status {
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "too_large",
        415 => "unsupported_media_type",
        429 => "too_many_requests",
        503 => "unavailable",
        400..500 => "bad_request",
        _ => "internal",
    }
}

/// `{"op":"reply","id":N, ...fields}`.
pub fn reply(id: u64, fields: Value) -> Bytes {
    let mut frame = json!({"op": "reply", "id": id});
    if let (Value::Object(frame), Value::Object(fields)) = (&mut frame, fields) {
        frame.extend(fields);
    }
    to_bytes(&frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_frame_carries_its_channel_position_key_and_value() {
        let put = Change {
            key: Bytes::from_static(b"us/alice"),
            value: Some(Bytes::from_static(b"Alice")),
        };
        let frame = change("kv:us/", Position { shard: 4, index: 9 }, &put, true);
        assert_eq!(
            &frame[..],
            br#"{"op":"change","channel":"kv:us/","position":{"shard":4,"index":9},"key":"us/alice","value":"Alice","last":true}"#
        );
        let delete = Change {
            key: Bytes::from_static(b"us/alice"),
            value: None,
        };
        let frame = change(
            "shard:4",
            Position {
                shard: 4,
                index: 10,
            },
            &delete,
            false,
        );
        assert!(frame.ends_with(br#""value":null,"last":false}"#));
    }

    #[test]
    fn only_the_last_change_of_an_entry_is_marked_last() {
        let changes: Vec<Change> = ["us/a", "us/b", "us/c"]
            .into_iter()
            .map(|key| Change {
                key: Bytes::from_static(key.as_bytes()),
                value: None,
            })
            .collect();
        let refs: Vec<&Change> = changes.iter().collect();
        let position = Position { shard: 4, index: 3 };
        let marks: Vec<bool> = entry_changes("kv:us/", position, &refs)
            .iter()
            .map(|frame| frame.ends_with(br#""last":true}"#))
            .collect();
        assert_eq!(marks, [false, false, true]);
    }

    #[test]
    fn positions_are_an_object_from_shard_to_index() {
        let at: Positions = [(1, 5), (4, 77)].into_iter().collect();
        assert_eq!(
            &subscribed("kv:", &at)[..],
            br#"{"at":{"1":5,"4":77},"channel":"kv:","op":"subscribed"}"#
        );
    }

    #[test]
    fn a_reply_merges_its_fields_after_the_id() {
        let frame = reply(3, json!({"value": null}));
        let parsed: Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(parsed, json!({"op": "reply", "id": 3, "value": null}));
    }
}
