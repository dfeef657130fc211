//! Decoding hostile bytes, and the snapshot format.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use crate::Versioned;
use crate::session::{Answer, Session};

/// The first byte of a snapshot: the version of the format that follows (postcard).
pub const SNAPSHOT_FORMAT: u8 = 1;

/// Why bytes do not decode as a [`Command`](crate::Command) or a snapshot.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// There were no bytes at all, so not even a format byte.
    #[error("no bytes")]
    Empty,
    /// The format (or version) byte is not one this build knows.
    #[error("unknown format byte {0}")]
    UnknownFormat(u8),
    /// Postcard could not decode the body.
    #[error("postcard: {0}")]
    Postcard(String),
    /// The body decoded, with this many bytes left over after it.
    #[error("{0} bytes after the end")]
    TrailingBytes(usize),
    /// A snapshot decoded but breaks an invariant of the state (a key written after the applied index,
    /// keys out of order, ...): it did not come from [`StateMachine::snapshot`](crate::StateMachine::snapshot).
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

/// The body after the expected format byte.
pub(crate) fn strip_format(bytes: &[u8], format: u8) -> Result<&[u8], DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&first, body)) if first == format => Ok(body),
        Some((&first, _)) => Err(DecodeError::UnknownFormat(first)),
    }
}

/// Decodes exactly `body` as one `T`. Postcard checks each length against the bytes left before
/// taking them, and serde caps what it reserves for a sequence, so hostile lengths cannot allocate much.
pub(crate) fn postcard_exact<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(body)
        .map_err(|error| DecodeError::Postcard(error.to_string()))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes(rest.len()))
    }
}

/// A snapshot's body as written: maps are written as sequences of pairs in key order.
#[derive(Serialize)]
pub(crate) struct SnapshotRef<'a> {
    pub(crate) applied_index: u64,
    pub(crate) clock_ms: u64,
    #[serde(serialize_with = "pairs")]
    pub(crate) keys: &'a BTreeMap<Bytes, Versioned>,
    #[serde(serialize_with = "sessions")]
    pub(crate) sessions: &'a BTreeMap<u64, Session>,
}

/// A snapshot's body as read back: the same layout, with plain vectors so that restore can check
/// the order instead of silently merging duplicate keys.
#[derive(Deserialize)]
pub(crate) struct SnapshotOwned {
    pub(crate) applied_index: u64,
    pub(crate) clock_ms: u64,
    pub(crate) keys: Vec<(Bytes, Versioned)>,
    pub(crate) sessions: Vec<(u64, SessionOwned)>,
}

#[derive(Serialize)]
struct SessionRef<'a> {
    last_used_ms: u64,
    seq_floor: u64,
    #[serde(serialize_with = "pairs")]
    answers: &'a BTreeMap<u64, Answer>,
}

/// One session as read back from a snapshot.
#[derive(Deserialize)]
pub(crate) struct SessionOwned {
    pub(crate) last_used_ms: u64,
    pub(crate) seq_floor: u64,
    pub(crate) answers: Vec<(u64, Answer)>,
}

fn pairs<K: Serialize, V: Serialize, S: Serializer>(
    map: &&BTreeMap<K, V>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(map.iter())
}

fn sessions<S: Serializer>(
    map: &&BTreeMap<u64, Session>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(map.iter().map(|(client, session)| {
        let body = SessionRef {
            last_used_ms: session.last_used_ms,
            seq_floor: session.seq_floor,
            answers: &session.answers,
        };
        (*client, body)
    }))
}

/// Checks that `items` are in strictly increasing key order, then collects them into a map.
pub(crate) fn strictly_ordered<K: Ord + std::fmt::Debug, V>(
    what: &str,
    items: Vec<(K, V)>,
) -> Result<BTreeMap<K, V>, DecodeError> {
    if let Some(pair) = items.windows(2).find(|pair| pair[0].0 >= pair[1].0) {
        return Err(DecodeError::Invalid(format!(
            "{what} out of order at {:?}",
            pair[1].0
        )));
    }
    Ok(items.into_iter().collect())
}

/// FNV-1a, 64 bits: a simple, stable hash that needs no dependency.
pub(crate) fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors_so_digests_are_stable_across_builds() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn strictly_ordered_refuses_duplicates_and_disorder() {
        assert!(strictly_ordered("k", vec![(1, ()), (2, ())]).is_ok());
        assert!(strictly_ordered("k", vec![(1, ()), (1, ())]).is_err());
        assert!(strictly_ordered("k", vec![(2, ()), (1, ())]).is_err());
        assert!(strictly_ordered::<u8, ()>("k", vec![]).is_ok());
    }
}
