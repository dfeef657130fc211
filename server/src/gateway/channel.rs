//! Channels: what a subscriber listens to. `kv:PREFIX` carries the changes of the keys that
//! start with `PREFIX` (over every shard the prefix reaches); `shard:ID` every change of one
//! shard. The agenda issue adds `user:`, `group:` and `event:` channels.

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
}

/// Why a channel name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Not a channel this server knows.
    #[error("unknown channel {0:?}: channels are `kv:PREFIX` and `shard:ID`")]
    Unknown(String),
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
        Err(ChannelError::Unknown(name.to_owned()))
    }

    /// The shards whose changes the channel may carry, in id order.
    pub fn shards(&self, shard_map: &ShardMap) -> Vec<ShardId> {
        let mut shards: Vec<ShardId> = match self {
            Channel::Shard(shard) => vec![*shard],
            Channel::Kv(prefix) => shard_map
                .split_range(prefix, &prefix_end(prefix))
                .into_iter()
                .map(|(spec, _, _)| spec.id)
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
            Channel::Kv(prefix) => permissions.allows_prefix(prefix),
            Channel::Shard(shard) => shard_map.get(*shard).is_some_and(|spec| {
                permissions.allows_range(spec.start.as_bytes(), spec.end.as_bytes())
            }),
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
            Channel::parse("user:bob", &map),
            Err(ChannelError::Unknown(_))
        ));
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
