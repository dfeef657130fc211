//! Who may touch which keys. A token from the configuration grants a set of key prefixes:
//! operator tokens grant every key (the empty prefix), scoped tokens (`tokens` in the
//! configuration) the prefixes listed with them. The agenda issue replaces scoped tokens with
//! accounts; the checks here stay.

use bytes::Bytes;
use client::Request;
use kv::Write;

/// The key prefixes one authenticated caller may read and write, and the namespace of its
/// request ids.
#[derive(Clone, PartialEq, Eq)]
pub struct Permissions {
    prefixes: Vec<Bytes>,
    /// Whose request ids these are (see [`crate::service::RequestId`]); for a scoped token,
    /// the token itself (never printed).
    namespace: String,
}

impl std::fmt::Debug for Permissions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Permissions")
            .field("prefixes", &self.prefixes)
            .finish_non_exhaustive()
    }
}

impl Permissions {
    /// Every key (an operator); request ids in the operators' namespace.
    pub fn everything() -> Permissions {
        Permissions {
            prefixes: vec![Bytes::new()],
            namespace: crate::service::RequestId::OPERATORS.to_owned(),
        }
    }

    /// The keys under any of `prefixes`, for the caller holding `token` (its own namespace of
    /// request ids).
    pub fn prefixes(prefixes: impl IntoIterator<Item = Bytes>, token: &str) -> Permissions {
        Permissions {
            prefixes: prefixes.into_iter().collect(),
            namespace: format!("token:{token}"),
        }
    }

    /// The namespace of this caller's request ids.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether every key is allowed.
    pub fn is_everything(&self) -> bool {
        self.prefixes.iter().any(Bytes::is_empty)
    }

    /// Whether `key` is under an allowed prefix.
    pub fn allows_key(&self, key: &[u8]) -> bool {
        self.prefixes.iter().any(|prefix| key.starts_with(prefix))
    }

    /// Whether every key starting with `prefix` is allowed.
    pub fn allows_prefix(&self, prefix: &[u8]) -> bool {
        self.allows_key(prefix)
    }

    /// Whether every key of the range `[start, end)` is allowed (`end` empty: no end).
    pub fn allows_range(&self, start: &[u8], end: &[u8]) -> bool {
        self.prefixes.iter().any(|prefix| {
            if !start.starts_with(prefix) {
                return false;
            }
            let prefix_end = prefix_end(prefix);
            prefix_end.is_empty() || (!end.is_empty() && end <= &prefix_end[..])
        })
    }

    /// Whether the caller may run `request`: every key it reads or writes is allowed. Requests
    /// that are not about keys (status, membership, transfers) need every key.
    pub fn allows(&self, request: &Request) -> bool {
        match request {
            Request::Get { key, .. } => self.allows_key(key),
            Request::Scan { start, end, .. } => self.allows_range(start, end),
            Request::Write(command) => self.allows_write(&command.write),
            _ => self.is_everything(),
        }
    }

    /// Whether every key `write` may change is allowed.
    pub fn allows_write(&self, write: &Write) -> bool {
        match write {
            Write::DeleteRange { start, end } => self.allows_range(start, end),
            other => client::protocol::write_keys(other)
                .iter()
                .all(|key| self.allows_key(key)),
        }
    }
}

/// The end of the range of keys that start with `prefix`: the next prefix (empty: no end, for
/// an empty prefix or one of only `0xff` bytes).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Permissions {
        Permissions::prefixes([Bytes::from_static(b"us/")], "a scoped token")
    }

    #[test]
    fn the_end_of_a_prefix_range_is_the_next_prefix() {
        assert_eq!(&prefix_end(b"us/")[..], b"us0");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"\xff\xff")[..], b"");
        assert_eq!(&prefix_end(b"")[..], b"");
    }

    #[test]
    fn a_scoped_token_reaches_only_keys_under_its_prefixes() {
        let users = users();
        assert!(users.allows_key(b"us/alice"));
        assert!(!users.allows_key(b"gr/team"));
        assert!(users.allows_prefix(b"us/al"));
        assert!(!users.allows_prefix(b"us"), "`us` also covers `usx`");
        assert!(!users.is_everything());
        assert!(Permissions::everything().allows_prefix(b""));
    }

    #[test]
    fn a_range_is_allowed_only_when_it_stays_under_one_prefix() {
        let users = users();
        assert!(users.allows_range(b"us/", b"us0"));
        assert!(users.allows_range(b"us/a", b"us/b"));
        assert!(
            !users.allows_range(b"us/", b""),
            "unbounded reaches other keys"
        );
        assert!(!users.allows_range(b"us/", b"us1"));
        assert!(Permissions::everything().allows_range(b"", b""));
    }

    #[test]
    fn requests_other_than_key_value_ones_need_every_key() {
        let status = Request::ClusterStatus { digests: false };
        assert!(!users().allows(&status));
        assert!(Permissions::everything().allows(&status));
    }
}
