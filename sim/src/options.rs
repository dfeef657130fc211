//! What a seed decides: the cluster, the workload and the fault mix (swarm testing: each fault
//! class is on or off for a run, with its own rate).

use crate::feed::Channel;
use server::{ShardSpec, default_shards};
use std::fmt;

/// SplitMix64: the options come from the seed through this small generator only, so a seed
/// always draws the same options whatever else changes.
#[derive(Debug, Clone)]
pub struct Draw {
    state: u64,
}

impl Draw {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Draw {
        Draw {
            state: seed ^ 0x5ee5_5ee5_5ee5_5ee5,
        }
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next_u64() % 1000 < per_mille
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// The fault classes of one run; `None` is off, `Some` holds its weight among the enabled
/// classes (how often the nemesis picks it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Faults {
    /// Split the servers in two groups that cannot talk.
    pub partition: Option<u64>,
    /// Cut one direction of one link.
    pub one_way: Option<u64>,
    /// Two halves that only one server connects.
    pub bridge: Option<u64>,
    /// Kill the current leader of a shard, then restart it.
    pub kill_leader: Option<u64>,
    /// Kill a random server, then restart it.
    pub kill_random: Option<u64>,
    /// Pause a server (its clock and tasks stop), then resume it.
    pub pause: Option<u64>,
    /// Make a coming fsync or write of a server fail (the server stops; a supervisor restarts
    /// it).
    pub fsync_error: Option<u64>,
    /// A membership change: promote a learner and remove a voter.
    pub membership: Option<u64>,
    /// Ask a shard's leader to hand its leadership to another voter.
    pub transfer: Option<u64>,
    /// Step a server's wall clock by a minute to two hours, forward or back.
    pub clock_jump: Option<u64>,
    /// On a crash, the disk tears the last unsynced write instead of losing it whole.
    pub torn_writes: bool,
    /// Received messages dropped, duplicated and delayed by the transport, per million.
    pub message_drop_per_million: u32,
    /// As above, duplicated.
    pub message_duplicate_per_million: u32,
    /// As above, delayed (up to 200 ms).
    pub message_delay_per_million: u32,
    /// Every server's ticks run at a rate of their own (see [`Options::clock_drift_ppm`]).
    pub clock_drift: bool,
}

/// A narrower draw, for the planted-bug tests: what a seed draws, then restricted to the
/// configurations in which one kind of bug can show. A focused run replays with `SIM_FOCUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    /// Whatever the seed draws (the simulation tests and the soak).
    #[default]
    Any,
    /// Lease reads on; the only faults are partitions (half of them cut a shard's leader off
    /// from the other servers) and pauses (half of them short stalls about an election timeout
    /// long): the ways a deposed leader can still be asked to read.
    LeaseReads,
    /// Elections under stress: five servers, leaders killed with a voter crashing during the
    /// next election, partitions, and messages delayed, so that competing candidates, split
    /// votes and leaders of short terms are common; one entry per append message.
    Elections,
    /// Crashes that tear writes: every crash tears the last unsynced write, and servers are
    /// killed often (a torn tail must be cut at the next start).
    TornWrites,
    /// The default cluster as `demo` runs it: four servers, the four default shards, the
    /// default timing (50 ms ticks, heartbeats every 100 ms, elections after 1 s), appends up
    /// to 1 MiB; the faults as drawn. The soak's speed figure is measured on it.
    DefaultCluster,
}

impl Focus {
    /// Every focus, for the command line.
    pub const ALL: [Focus; 5] = [
        Focus::Any,
        Focus::LeaseReads,
        Focus::Elections,
        Focus::TornWrites,
        Focus::DefaultCluster,
    ];

    /// The focus's name, as `SIM_FOCUS` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Focus::Any => "any",
            Focus::LeaseReads => "lease-reads",
            Focus::Elections => "elections",
            Focus::TornWrites => "torn-writes",
            Focus::DefaultCluster => "default-cluster",
        }
    }

    /// The focus `SIM_FOCUS` names (none: [`Focus::Any`]).
    ///
    /// # Panics
    /// If `SIM_FOCUS` names no focus (a replay command with a typo must not run another run).
    pub fn from_env() -> Focus {
        let Ok(name) = std::env::var("SIM_FOCUS") else {
            return Focus::Any;
        };
        Focus::ALL
            .into_iter()
            .find(|focus| focus.name() == name)
            .unwrap_or_else(|| {
                let known: Vec<&str> = Focus::ALL.iter().map(|focus| focus.name()).collect();
                panic!(
                    "SIM_FOCUS={name} names no focus; known: {}",
                    known.join(", ")
                )
            })
    }
}

/// Everything a seed decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The seed.
    pub seed: u64,
    /// The restriction the draw was made under.
    pub focus: Focus,
    /// Servers in the cluster (3 to 5).
    pub servers: usize,
    /// The shard map (1, 2 or 4 shards over the servers).
    pub shards: Vec<ShardSpec>,
    /// Length of one tick (10 ms: five times the production default's pace of events, so a
    /// simulated second holds more elections and heartbeats).
    pub tick_ms: u64,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: u32,
    /// Ticks before an election.
    pub election_ticks: u32,
    /// Applied entries between snapshots (small values make snapshots and catch-up by
    /// snapshot frequent).
    pub snapshot_entries: u64,
    /// Linearizable reads from the leader's lease instead of a ReadIndex round.
    pub lease_reads: bool,
    /// The largest Raft append message: small values split a follower's catch-up into many
    /// messages, each acknowledged on its own (so a leader sees a quorum reach entries of
    /// earlier terms before its own).
    pub append_bytes_max: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// The keys the clients work on, spread over the shards.
    pub keys: Vec<String>,
    /// The channels of the gateway's subscribers, one subscriber each, on machines of their
    /// own.
    pub subscribers: Vec<Channel>,
    /// People using the agenda layer (each on a machine of its own), 0 to 2.
    pub agenda_clients: usize,
    /// The fault mix.
    pub faults: Faults,
    /// Per server (by id − 1), how many parts per million slower (positive) or faster its
    /// ticks run than simulated time: all 0 unless [`Faults::clock_drift`]. Drawn within
    /// ±1/(4 × election ticks), half the margin that lease reads assume (a lease of
    /// `election − 2` leader ticks must end before `election − 1` follower ticks), so the
    /// drift tests the margin without breaking the documented clock assumption.
    pub clock_drift_ppm: Vec<i32>,
    /// Simulated milliseconds of the safety phase (faults on).
    pub safety_ms: u64,
    /// Simulated milliseconds within which, once healed, every shard must elect a leader and
    /// commit a write.
    pub liveness_ms: u64,
}

fn shard_map(servers: usize, shards: usize) -> Vec<ShardSpec> {
    let mut map = default_shards(servers);
    match shards {
        4 => map,
        2 => {
            // events (a-m and n-z) in one shard, groups and users in the other.
            map[0].end = "gr/".into();
            map[2].end = String::new();
            map.remove(3);
            map.remove(1);
            map
        }
        _ => {
            map.truncate(1);
            map[0].end = String::new();
            map
        }
    }
}

impl Options {
    /// The options of `seed`.
    pub fn from_seed(seed: u64) -> Options {
        let mut draw = Draw::new(seed);
        let servers = draw.between(3, 5) as usize;
        let shards = *draw.pick(&[1, 2, 4, 4]);
        let prefixes = ["ev/am/alice/", "ev/nz/olga/", "gr/team/", "us/"];
        let keys = (0..draw.between(3, 8))
            .map(|index| format!("{}k{index}", prefixes[index as usize % prefixes.len()]))
            .collect();
        let weight =
            |draw: &mut Draw, per_mille: u64| draw.chance(per_mille).then(|| draw.between(1, 5));
        let faults = Faults {
            partition: weight(&mut draw, 600),
            one_way: weight(&mut draw, 400),
            bridge: weight(&mut draw, 300),
            kill_leader: weight(&mut draw, 600),
            kill_random: weight(&mut draw, 400),
            pause: weight(&mut draw, 300),
            fsync_error: weight(&mut draw, 200),
            membership: weight(&mut draw, 300),
            transfer: weight(&mut draw, 300),
            clock_jump: None,
            torn_writes: draw.chance(500),
            message_drop_per_million: if draw.chance(400) {
                draw.between(1_000, 50_000) as u32
            } else {
                0
            },
            message_duplicate_per_million: if draw.chance(300) {
                draw.between(1_000, 20_000) as u32
            } else {
                0
            },
            message_delay_per_million: if draw.chance(300) {
                draw.between(1_000, 50_000) as u32
            } else {
                0
            },
            clock_drift: false,
        };
        let heartbeat_ticks = draw.between(2, 4) as u32;
        let election_ticks = heartbeat_ticks * draw.between(4, 8) as u32;
        let snapshot_entries = *draw.pick(&[20, 100, 1_000, 10_000]);
        let lease_reads = draw.chance(500);
        let clients = draw.between(2, 6) as usize;
        let mut faults = faults;
        faults.clock_drift = draw.chance(300);
        let drift_max = 1_000_000 / (4 * u64::from(election_ticks));
        let clock_drift_ppm = (0..5)
            .map(|_| {
                let ppm = draw.between(0, 2 * drift_max) as i64 - drift_max as i64;
                if faults.clock_drift { ppm as i32 } else { 0 }
            })
            .collect();
        // Drawn last, so that adding them left every earlier draw of a seed as it was.
        let append_bytes_max = if draw.chance(300) {
            *draw.pick(&[1, 256, 4096])
        } else {
            1024 * 1024
        };
        faults.clock_jump = draw.chance(300).then(|| draw.between(1, 5));
        let subscribers = (0..draw.between(1, 2))
            .map(|_| match draw.between(0, 3) {
                0 => Channel::Prefix(String::new()),
                1 => Channel::Prefix("ev/".into()),
                2 => Channel::Prefix("us/".into()),
                _ => Channel::Shard(1),
            })
            .collect();
        // Drawn last, so that what every earlier option drew is unchanged.
        let agenda_clients = draw.between(0, 2) as usize;
        Options {
            seed,
            focus: Focus::Any,
            servers,
            shards: shard_map(servers, shards),
            tick_ms: 10,
            heartbeat_ticks,
            election_ticks,
            snapshot_entries,
            lease_reads,
            append_bytes_max,
            clients,
            keys,
            subscribers,
            agenda_clients,
            faults,
            clock_drift_ppm,
            safety_ms: 20_000,
            liveness_ms: 30_000,
        }
    }
}

impl Options {
    /// The options of `seed` under `focus`: the same draw as [`Options::from_seed`], then
    /// restricted.
    pub fn from_seed_focused(seed: u64, focus: Focus) -> Options {
        let mut options = Options::from_seed(seed);
        options.focus = focus;
        let faults = &mut options.faults;
        match focus {
            Focus::Any => {}
            Focus::LeaseReads => {
                options.lease_reads = true;
                *faults = Faults {
                    partition: Some(5),
                    pause: Some(5),
                    ..Faults::default()
                };
                options.clients = 6;
                options.keys.truncate(4);
                // etcd's default timeouts (100 ms heartbeat, 1 s election): a deposed leader's
                // last moments then outlast the router's retries.
                options.heartbeat_ticks = 10;
                options.election_ticks = 100;
                let drift_max = 1_000_000 / (4 * 100);
                for ppm in &mut options.clock_drift_ppm {
                    *ppm = (*ppm).clamp(-drift_max, drift_max);
                }
            }
            Focus::Elections => {
                options.servers = 5;
                options.shards = shard_map(5, options.shards.len());
                faults.kill_leader = Some(faults.kill_leader.unwrap_or(0).max(5));
                faults.partition = Some(faults.partition.unwrap_or(0).max(3));
                faults.message_delay_per_million = faults.message_delay_per_million.max(20_000);
                // One entry per append: a new leader's quorum reaches the entries of earlier
                // terms before its own no-op (the window of Raft's Figure 8).
                options.append_bytes_max = 1;
            }
            Focus::TornWrites => {
                faults.torn_writes = true;
                faults.kill_random = Some(faults.kill_random.unwrap_or(0).max(5));
                faults.kill_leader = Some(faults.kill_leader.unwrap_or(0).max(5));
            }
            Focus::DefaultCluster => {
                let timing = server::Timing::default();
                options.servers = 4;
                options.shards = shard_map(4, 4);
                options.tick_ms = timing.tick_ms;
                options.heartbeat_ticks = timing.heartbeat_ticks;
                options.election_ticks = timing.election_ticks;
                options.append_bytes_max = server::Limits::default().append_bytes_max;
                let drift_max = 1_000_000 / (4 * i32::try_from(timing.election_ticks).unwrap_or(1));
                for ppm in &mut options.clock_drift_ppm {
                    *ppm = (*ppm).clamp(-drift_max, drift_max);
                }
            }
        }
        options
    }
}

impl fmt::Display for Options {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shards: Vec<String> = self
            .shards
            .iter()
            .map(|shard| format!("{}{:?}+{:?}", shard.name, shard.voters, shard.learners))
            .collect();
        write!(
            formatter,
            "seed {}{}: {} servers, shards [{}], heartbeat {} / election {} ticks of {} ms, snapshot every {} entries, appends of at most {} bytes, {} reads, {} clients on {} keys, {} agenda clients, subscribers to {:?}, faults {:?}{}",
            self.seed,
            match self.focus {
                Focus::Any => String::new(),
                focus => format!(" (focus {})", focus.name()),
            },
            self.servers,
            shards.join(", "),
            self.heartbeat_ticks,
            self.election_ticks,
            self.tick_ms,
            self.snapshot_entries,
            self.append_bytes_max,
            if self.lease_reads {
                "lease"
            } else {
                "ReadIndex"
            },
            self.clients,
            self.keys.len(),
            self.agenda_clients,
            self.subscribers
                .iter()
                .map(Channel::name)
                .collect::<Vec<_>>(),
            self.faults,
            if self.faults.clock_drift {
                format!(
                    ", tick drift per server {:?} ppm",
                    &self.clock_drift_ppm[..self.servers]
                )
            } else {
                String::new()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_draws_the_same_options() {
        for seed in 0..100 {
            assert_eq!(Options::from_seed(seed), Options::from_seed(seed));
        }
        assert_ne!(Options::from_seed(1), Options::from_seed(2));
    }

    #[test]
    fn every_drawn_shard_map_covers_the_key_space_and_every_fault_class_is_drawn() {
        let mut seen_on = Faults::default();
        for seed in 0..500 {
            let options = Options::from_seed(seed);
            server::ShardMap::new(options.shards.clone()).expect("a valid map");
            assert!((3..=5).contains(&options.servers));
            let faults = &options.faults;
            seen_on.partition = seen_on.partition.or(faults.partition);
            seen_on.bridge = seen_on.bridge.or(faults.bridge);
            seen_on.fsync_error = seen_on.fsync_error.or(faults.fsync_error);
            seen_on.membership = seen_on.membership.or(faults.membership);
            seen_on.torn_writes |= faults.torn_writes;
            seen_on.clock_drift |= faults.clock_drift;
            let drift_max = 1_000_000 / (4 * options.election_ticks as i32);
            assert!(
                options
                    .clock_drift_ppm
                    .iter()
                    .all(|ppm| ppm.abs() <= drift_max && (faults.clock_drift || *ppm == 0)),
                "seed {seed}: drift within half the lease margin, and only when drawn"
            );
        }
        assert!(seen_on.partition.is_some() && seen_on.bridge.is_some());
        assert!(seen_on.fsync_error.is_some() && seen_on.membership.is_some());
        assert!(seen_on.torn_writes && seen_on.clock_drift);
    }
}
