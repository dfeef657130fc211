//! The shard map: contiguous key ranges covering the whole key space, each one Raft group.

use client::protocol::write_keys;
use client::{ServerId, ShardId};
use kv::Write;
use serde::{Deserialize, Serialize};

/// One shard as the configuration describes it. Its voters and learners are the membership the
/// group is created with; later changes live in the group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    /// The shard's id, also its Raft group id (1 and up).
    pub id: ShardId,
    /// A name for people (`events-a-m`).
    pub name: String,
    /// First key of the range (UTF-8 in the configuration).
    pub start: String,
    /// End of the range, excluded; empty for the end of the key space.
    pub end: String,
    /// The initial voters; the first is the shard's preferred leader.
    pub voters: Vec<ServerId>,
    /// The initial learners.
    #[serde(default)]
    pub learners: Vec<ServerId>,
}

impl ShardSpec {
    /// Whether `server` is an initial member (voter or learner).
    pub fn is_initial_member(&self, server: ServerId) -> bool {
        self.voters.contains(&server) || self.learners.contains(&server)
    }

    /// The server that should lead when it is up and caught up.
    pub fn preferred_leader(&self) -> ServerId {
        self.voters[0]
    }

    /// Whether every key a write touches falls in this shard's range (for a delete-range: the
    /// whole range).
    pub fn holds_write(&self, write: &Write) -> bool {
        match write {
            Write::DeleteRange { start, end } => {
                self.contains(start)
                    && (self.end.is_empty() || (!end.is_empty() && end <= self.end.as_bytes()))
            }
            other => write_keys(other).into_iter().all(|key| self.contains(key)),
        }
    }

    /// Whether `key` falls in this shard's range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_bytes() && (self.end.is_empty() || key < self.end.as_bytes())
    }
}

/// The shards in key order; every key belongs to exactly one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    shards: Vec<ShardSpec>,
}

impl ShardMap {
    /// Checks that the ranges start at the empty key, follow each other without gap or overlap
    /// and end with an empty (unbounded) end; ids are distinct and non-zero; each shard has
    /// voters and no server twice.
    ///
    /// # Errors
    /// What does not hold, as a sentence.
    pub fn new(mut shards: Vec<ShardSpec>) -> Result<ShardMap, String> {
        shards.sort_by(|a, b| a.start.cmp(&b.start));
        if shards.is_empty() {
            return Err("the shard map is empty".to_owned());
        }
        if !shards[0].start.is_empty() {
            return Err("the first shard must start at the empty key".to_owned());
        }
        for pair in shards.windows(2) {
            if pair[0].end.is_empty() || pair[0].end != pair[1].start {
                return Err(format!(
                    "shard {} ends at {:?} but the next one starts at {:?}",
                    pair[0].name, pair[0].end, pair[1].start
                ));
            }
        }
        if !shards[shards.len() - 1].end.is_empty() {
            return Err("the last shard must end at the end of the key space (\"\")".into());
        }
        let mut ids: Vec<ShardId> = shards.iter().map(|shard| shard.id).collect();
        ids.sort_unstable();
        if ids.contains(&0) || ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err("shard ids must be distinct and not 0".to_owned());
        }
        for shard in &shards {
            if !shard.end.is_empty() && shard.start >= shard.end {
                return Err(format!("shard {} has an empty range", shard.name));
            }
            if shard.voters.is_empty() {
                return Err(format!("shard {} has no voters", shard.name));
            }
            let mut members: Vec<ServerId> = shard
                .voters
                .iter()
                .chain(&shard.learners)
                .copied()
                .collect();
            members.sort_unstable();
            if members.windows(2).any(|pair| pair[0] == pair[1]) || members.contains(&0) {
                return Err(format!("shard {} names a server twice (or 0)", shard.name));
            }
        }
        Ok(ShardMap { shards })
    }

    /// The shards in key order.
    pub fn shards(&self) -> &[ShardSpec] {
        &self.shards
    }

    /// The shard that holds `key`.
    pub fn lookup(&self, key: &[u8]) -> &ShardSpec {
        let position = self
            .shards
            .partition_point(|shard| shard.start.as_bytes() <= key);
        &self.shards[position - 1]
    }

    /// A shard by id.
    pub fn get(&self, id: ShardId) -> Option<&ShardSpec> {
        self.shards.iter().find(|shard| shard.id == id)
    }

    /// The shards whose ranges meet `[start, end)` (an empty `end`: no end), in key order,
    /// each with the part of the range it holds.
    pub fn split_range<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> Vec<(&'a ShardSpec, &'a [u8], &'a [u8])> {
        let unbounded = end.is_empty();
        self.shards
            .iter()
            .filter(|shard| {
                let ends_after_start = shard.end.is_empty() || shard.end.as_bytes() > start;
                let starts_before_end = unbounded || shard.start.as_bytes() < end;
                ends_after_start && starts_before_end
            })
            .map(|shard| {
                let part_start = start.max(shard.start.as_bytes());
                let part_end = match (unbounded, shard.end.is_empty()) {
                    (true, _) => shard.end.as_bytes(),
                    (false, true) => end,
                    (false, false) => end.min(shard.end.as_bytes()),
                };
                (shard, part_start, part_end)
            })
            .collect()
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
    fn keys_route_by_their_first_bytes() {
        let map = map();
        let cases: [(&[u8], &str); 8] = [
            (b"", "events-a-m"),
            (b"ev/am/alice/1", "events-a-m"),
            (b"ev/nz/bob/1", "events-n-z"),
            (b"ev/nz/", "events-n-z"),
            (b"gr/team", "groups"),
            (b"us/alice", "users"),
            (b"zzz", "users"),
            (b"\xff\xff", "users"),
        ];
        for (key, name) in cases {
            assert_eq!(map.lookup(key).name, name, "key {key:?}");
        }
    }

    #[test]
    fn a_range_is_split_at_shard_boundaries() {
        let map = map();
        let parts: Vec<(&str, &[u8], &[u8])> = map
            .split_range(b"ev/am/x", b"gr/b")
            .into_iter()
            .map(|(shard, start, end)| (shard.name.as_str(), start, end))
            .collect();
        assert_eq!(
            parts,
            [
                ("events-a-m", &b"ev/am/x"[..], &b"ev/nz/"[..]),
                ("events-n-z", &b"ev/nz/"[..], &b"gr/"[..]),
                ("groups", &b"gr/"[..], &b"gr/b"[..]),
            ]
        );
        let all = map.split_range(b"", b"");
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].2, b"");
    }

    #[test]
    fn maps_with_gaps_overlaps_or_open_ends_are_refused() {
        let mut shards = default_shards(4);
        shards[1].start = "ev/o".to_owned();
        assert!(ShardMap::new(shards).is_err());
        let mut shards = default_shards(4);
        shards[3].end = "zz".to_owned();
        assert!(ShardMap::new(shards).is_err());
        let mut shards = default_shards(4);
        shards[0].start = "a".to_owned();
        assert!(ShardMap::new(shards).is_err());
        let mut shards = default_shards(4);
        shards[2].id = 1;
        assert!(ShardMap::new(shards).is_err());
    }
}
