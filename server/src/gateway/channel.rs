//! Channels: what a subscriber listens to. `kv:PREFIX` carries the changes of the keys that
//! start with `PREFIX` (over every shard the prefix reaches); `shard:ID` every change of one
//! shard. The agenda's channels carry the changes of its records:
//!
//! - `user:NAME`: the user's calendar (their events, their invitations — which every change of
//!   an event they attend rewrites —, the replies to their events), their alerts (a reminder
//!   sent is a change of one) and their group memberships; never their account or sessions;
//! - `group:ID`: the group's record and memberships;
//! - `event:ID`: the event's record (not the replies: those are the organizer's, on
//!   `user:ORGANIZER`).
//!
//! Who may listen to an agenda channel (that user; the group's members; the event's organizer
//! and attendees) is decided by the session, which asks the agenda; this module only names the
//! keys.

use crate::auth::{Permissions, prefix_end};
use crate::shard::ShardMap;
use bytes::Bytes;
use client::ShardId;

/// The longest channel name, in bytes (a key prefix is at most a key).
pub const CHANNEL_BYTES_MAX: usize = client::protocol::KEY_BYTES_MAX + 16;

/// A parsed channel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    /// The keys under a prefix.
    Kv(Bytes),
    /// Every key of one shard.
    Shard(ShardId),
    /// A user's calendar, alerts and memberships.
    User(String),
    /// A group's record and memberships.
    Group(String),
    /// An event's record.
    Event(String),
}

/// Why a channel name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Not a channel this server knows.
    #[error(
        "unknown channel {0:?}: channels are `kv:PREFIX`, `shard:ID`, `user:NAME`, `group:ID` \
         and `event:ID`"
    )]
    Unknown(String),
    /// An agenda channel whose name or id does not parse.
    #[error("{0}")]
    BadName(String),
    /// A shard channel for a shard the map does not have.
    #[error("no shard {0}")]
    NoSuchShard(String),
    /// The name is longer than [`CHANNEL_BYTES_MAX`].
    #[error("a channel name has at most {CHANNEL_BYTES_MAX} bytes")]
    TooLong,
}

impl Channel {
    /// Parses a channel name against the shard map. A shard id must be written as the map's
    /// decimal id (`shard:4`), so that every channel has one name.
    ///
    /// # Errors
    /// A name that is too long, unknown, or names no shard.
    pub fn parse(name: &str, shard_map: &ShardMap) -> Result<Channel, ChannelError> {
        if name.len() > CHANNEL_BYTES_MAX {
            return Err(ChannelError::TooLong);
        }
        if let Some(prefix) = name.strip_prefix("kv:") {
            return Ok(Channel::Kv(Bytes::copy_from_slice(prefix.as_bytes())));
        }
        if let Some(id) = name.strip_prefix("shard:") {
            return match id.parse::<ShardId>() {
                Ok(shard) if shard_map.get(shard).is_some() && shard.to_string() == id => {
                    Ok(Channel::Shard(shard))
                }
                _ => Err(ChannelError::NoSuchShard(id.to_owned())),
            };
        }
        let bad = |error: agenda::AgendaError| ChannelError::BadName(error.to_string());
        if let Some(user) = name.strip_prefix("user:") {
            agenda::keys::check_name("user", user).map_err(bad)?;
            return Ok(Channel::User(user.to_owned()));
        }
        if let Some(group) = name.strip_prefix("group:") {
            agenda::keys::check_name("group id", group).map_err(bad)?;
            return Ok(Channel::Group(group.to_owned()));
        }
        if let Some(event) = name.strip_prefix("event:") {
            agenda::keys::event_owner(event).map_err(bad)?;
            return Ok(Channel::Event(event.to_owned()));
        }
        Err(ChannelError::Unknown(name.to_owned()))
    }

    /// Whether this is one of the agenda's channels (whose listeners the session authorizes).
    pub fn is_agenda(&self) -> bool {
        matches!(
            self,
            Channel::User(_) | Channel::Group(_) | Channel::Event(_)
        )
    }

    /// The key prefixes the channel carries (none for a shard channel, which carries a range).
    pub fn prefixes(&self) -> Vec<Bytes> {
        use agenda::keys;
        match self {
            Channel::Kv(prefix) => vec![prefix.clone()],
            Channel::Shard(_) => Vec::new(),
            Channel::User(user) => vec![
                keys::calendar(user),
                keys::alerts_of(user),
                keys::groups_of(user),
            ],
            Channel::Group(group) => vec![keys::group_records(group)],
            // Not the replies: an attendee does not see the others' answers (the organizer
            // gets them on their own channel, under their calendar).
            Channel::Event(event) => vec![keys::event(event)],
        }
    }

    /// The shards whose changes the channel may carry, in id order.
    pub fn shards(&self, shard_map: &ShardMap) -> Vec<ShardId> {
        let mut shards: Vec<ShardId> = match self {
            Channel::Shard(shard) => vec![*shard],
            _ => self
                .prefixes()
                .iter()
                .flat_map(|prefix| {
                    let end = prefix_end(prefix);
                    let ids: Vec<ShardId> = shard_map
                        .split_range(prefix, &end)
                        .into_iter()
                        .map(|(spec, _, _)| spec.id)
                        .collect();
                    ids
                })
                .collect(),
        };
        shards.sort_unstable();
        shards.dedup();
        shards
    }

    /// Whether a caller with `permissions` may listen: every key the channel carries must be
    /// allowed.
    pub fn allowed(&self, permissions: &Permissions, shard_map: &ShardMap) -> bool {
        match self {
            Channel::Shard(shard) => shard_map.get(*shard).is_some_and(|spec| {
                permissions.allows_range(spec.start.as_bytes(), spec.end.as_bytes())
            }),
            _ => self
                .prefixes()
                .iter()
                .all(|prefix| permissions.allows_prefix(prefix)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_shards;

    fn map() -> ShardMap {
        ShardMap::new(default_shards(4)).unwrap()
    }

    #[test]
    fn a_channel_name_is_a_prefix_or_a_shard_id() {
        let map = map();
        assert_eq!(
            Channel::parse("kv:us/", &map),
            Ok(Channel::Kv(Bytes::from_static(b"us/")))
        );
        assert_eq!(Channel::parse("kv:", &map), Ok(Channel::Kv(Bytes::new())));
        assert_eq!(Channel::parse("shard:4", &map), Ok(Channel::Shard(4)));
        assert!(matches!(
            Channel::parse("shard:04", &map),
            Err(ChannelError::NoSuchShard(_))
        ));
        assert!(matches!(
            Channel::parse("shard:9", &map),
            Err(ChannelError::NoSuchShard(_))
        ));
        assert!(matches!(
            Channel::parse("users:bob", &map),
            Err(ChannelError::Unknown(_))
        ));
        assert_eq!(
            Channel::parse("user:bob", &map),
            Ok(Channel::User("bob".into()))
        );
        assert_eq!(
            Channel::parse("group:team", &map),
            Ok(Channel::Group("team".into()))
        );
        assert_eq!(
            Channel::parse("event:bob.0123456789abcdef", &map),
            Ok(Channel::Event("bob.0123456789abcdef".into()))
        );
        for bad in [
            "user:Bob",
            "user:b",
            "group:a/b",
            "event:bob",
            "event:bob.xyz",
        ] {
            assert!(
                matches!(Channel::parse(bad, &map), Err(ChannelError::BadName(_))),
                "{bad}"
            );
        }
        let long = format!("kv:{}", "a".repeat(CHANNEL_BYTES_MAX));
        assert_eq!(Channel::parse(&long, &map), Err(ChannelError::TooLong));
    }

    #[test]
    fn a_prefix_channel_covers_the_shards_its_range_meets() {
        let map = map();
        assert_eq!(Channel::Kv("us/".into()).shards(&map), [4]);
        assert_eq!(Channel::Kv("".into()).shards(&map), [1, 2, 3, 4]);
        assert_eq!(Channel::Kv("ev/".into()).shards(&map), [1, 2]);
        assert_eq!(Channel::Shard(3).shards(&map), [3]);
        // Bob's calendar and alerts are in the a-m events shard, his memberships in groups'.
        assert_eq!(Channel::User("bob".into()).shards(&map), [1, 3]);
        assert_eq!(Channel::User("nora".into()).shards(&map), [2, 3]);
        assert_eq!(Channel::Group("team".into()).shards(&map), [3]);
        assert_eq!(
            Channel::Event("nora.0123456789abcdef".into()).shards(&map),
            [2]
        );
    }

    #[test]
    fn a_user_channel_never_carries_an_account_or_a_session() {
        let user = Channel::User("bob".into());
        let carried = |key: &str| {
            user.prefixes()
                .iter()
                .any(|prefix| key.as_bytes().starts_with(prefix))
        };
        assert!(carried("ev/am/bob/e/bob.0123456789abcdef"));
        assert!(carried("ev/am/bob/i/nora.0123456789abcdef"));
        assert!(carried("ev/am/!a/bob/nora.0123456789abcdef"));
        assert!(carried("gr/u/bob/team"));
        assert!(!carried("us/bob/account"));
        assert!(!carried("us/bob/session/00"));
        assert!(!carried("ev/am/bobby/e/bobby.0123456789abcdef"));
        assert!(!carried("ev/am/!o/i/bob/nora.0123456789abcdef"));
    }

    #[test]
    fn a_shard_channel_needs_a_token_that_covers_the_whole_shard() {
        let map = map();
        let users = Permissions::prefixes([Bytes::from_static(b"us/")], "a scoped token");
        assert!(Channel::Kv("us/alice".into()).allowed(&users, &map));
        assert!(!Channel::Kv("gr/".into()).allowed(&users, &map));
        assert!(
            !Channel::Shard(4).allowed(&users, &map),
            "shard 4 also holds `zzz`"
        );
        assert!(Channel::Shard(4).allowed(&Permissions::everything(), &map));
    }
}
