//! The load generator, the same for both systems: `clients` concurrent tasks, each writing
//! 100-byte values to keys of its own (or reading them back, linearizably) one after the
//! other for a fixed time; every operation's latency is kept.
//!
//! Connections are shared as a real client library shares them: one per 64 tasks (an Agenda
//! `Client` multiplexes its requests over a connection per server; an etcd connection carries
//! one HTTP/2 stream per request), so 1,024 clients use 16 connections on either system.

use crate::grpc::Etcd;
use crate::systems::{Cluster, Kind};
use anyhow::Context;
use client::{Client, ClientConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tasks per connection.
const TASKS_PER_CONNECTION: usize = 64;

/// The size of every value written.
pub const VALUE_BYTES: usize = 100;

/// What the tasks do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Writes of new keys.
    Write,
    /// Linearizable reads of keys written before.
    Read,
}

impl Operation {
    /// The name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Write => "write",
            Operation::Read => "read",
        }
    }
}

/// The connections of one system.
#[derive(Clone)]
pub enum Connections {
    /// Agenda clients (each with its own connections and client id).
    Agenda(Vec<Client>),
    /// etcd HTTP/2 connections, to the leader.
    Etcd(Vec<Etcd>),
}

impl Connections {
    /// Opens `count` connections to `cluster` (etcd: to its leader, member `leader`, so that
    /// no request pays a follower's forwarding).
    pub async fn open(
        cluster: &Cluster,
        count: usize,
        leader: usize,
    ) -> anyhow::Result<Connections> {
        match cluster.kind {
            Kind::Etcd => {
                let mut connections = Vec::new();
                for _ in 0..count {
                    connections.push(Etcd::connect(cluster.clients[leader]).await?);
                }
                Ok(Connections::Etcd(connections))
            }
            _ => {
                // The leader (of the first shard) first, as etcd's connections go to its
                // leader: a request to a follower pays a forwarding hop.
                let mut servers: Vec<(u64, std::net::SocketAddr)> = cluster
                    .clients
                    .iter()
                    .enumerate()
                    .map(|(index, address)| (index as u64 + 1, *address))
                    .collect();
                let first = leader.min(servers.len() - 1);
                servers.rotate_left(first);
                let clients = (0..count)
                    .map(|_| {
                        let mut config = ClientConfig::new(servers.clone(), cluster.token.clone());
                        config.attempt_timeout = Duration::from_secs(2);
                        config.request_timeout = Duration::from_secs(10);
                        Client::new(config)
                    })
                    .collect();
                Ok(Connections::Agenda(clients))
            }
        }
    }

    fn count(&self) -> usize {
        match self {
            Connections::Agenda(clients) => clients.len(),
            Connections::Etcd(connections) => connections.len(),
        }
    }

    /// Writes `value` at `key` through connection `which`.
    pub async fn put(&self, which: usize, key: Vec<u8>, value: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Connections::Agenda(clients) => {
                clients[which].put(key, value).await?;
            }
            Connections::Etcd(connections) => connections[which].put(&key, &value).await?,
        }
        Ok(())
    }

    /// Reads `key` (linearizable) through connection `which`; whether it holds a value.
    pub async fn get(&self, which: usize, key: Vec<u8>) -> anyhow::Result<bool> {
        match self {
            Connections::Agenda(clients) => Ok(clients[which].get(key).await?.is_some()),
            Connections::Etcd(connections) => Ok(connections[which].get(&key).await?.is_some()),
        }
    }
}

/// The key task `task` writes `n`-th in run `run`. The first segment spreads the tasks over
/// the default shard map's four shards (every key lands in the one shard of the one-shard
/// shape, and etcd has no shards).
pub fn key(run: &str, task: usize, n: u64) -> Vec<u8> {
    let shard_prefix = ["ev/am/", "ev/nz/", "gr/", "us/"][task % 4];
    format!("{shard_prefix}bench/{run}/{task}/{n}").into_bytes()
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Operations completed (whenever they completed).
    pub operations: u64,
    /// Operations completed before the deadline: the throughput's numerator (an operation
    /// still in flight at the deadline would otherwise stretch the run).
    pub completed_in_time: u64,
    /// Operations that failed (counted, not in the latencies).
    pub errors: u64,
    /// The run's planned length.
    pub elapsed: Duration,
    /// Every completed operation's latency, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
}

impl Measured {
    /// Operations per second, over the planned duration.
    pub fn throughput(&self) -> f64 {
        self.completed_in_time as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile` (0.5, 0.99, ...), in milliseconds.
    pub fn percentile_ms(&self, quantile: f64) -> f64 {
        percentile(&self.latencies_us, quantile) as f64 / 1000.0
    }
}

/// The value at `quantile` of sorted `values` (nearest rank; 0 if empty).
pub fn percentile(sorted: &[u32], quantile: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `clients` tasks doing `operation` for `duration` over `connections`; reads go to the
/// first `prefilled` keys each task wrote in run `run`.
pub async fn run(
    connections: &Connections,
    operation: Operation,
    clients: usize,
    duration: Duration,
    run: &str,
    prefilled: u64,
) -> Measured {
    let started = Instant::now();
    let deadline = started + duration;
    let value = Arc::new(vec![b'x'; VALUE_BYTES]);
    let tasks: Vec<_> = (0..clients)
        .map(|task| {
            let connections = connections.clone();
            let which = task % connections.count();
            let value = value.clone();
            let run = run.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut in_time = 0u64;
                let mut errors = 0u64;
                let mut first_error = None;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    let outcome = match operation {
                        Operation::Write => {
                            connections
                                .put(which, key(&run, task, n), value.to_vec())
                                .await
                        }
                        Operation::Read => connections
                            .get(which, key(&run, task, n % prefilled.max(1)))
                            .await
                            .and_then(|found| {
                                found
                                    .then_some(())
                                    .context("a key written before is missing")
                            }),
                    };
                    match outcome {
                        Ok(()) => {
                            latencies.push(began.elapsed().as_micros() as u32);
                            in_time += u64::from(Instant::now() <= deadline);
                        }
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{error:#}"));
                        }
                    }
                    n += 1;
                }
                (latencies, in_time, errors, first_error)
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    let mut completed_in_time = 0;
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        if let Ok((latencies, in_time, task_errors, error)) = task.await {
            latencies_us.extend(latencies);
            completed_in_time += in_time;
            errors += task_errors;
            first_error = first_error.or(error);
        }
    }
    let elapsed = duration;
    latencies_us.sort_unstable();
    Measured {
        operations: latencies_us.len() as u64,
        completed_in_time,
        errors,
        elapsed,
        latencies_us,
        first_error,
    }
}

/// Connections for `clients` tasks.
pub fn connections_for(clients: usize) -> usize {
    clients.div_ceil(TASKS_PER_CONNECTION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&values, 0.5), 500);
        assert_eq!(percentile(&values, 0.99), 990);
        assert_eq!(percentile(&values, 0.999), 999);
        assert_eq!(percentile(&values, 1.0), 1000);
        assert_eq!(percentile(&[7], 0.5), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn keys_spread_over_the_four_shards_and_never_repeat() {
        assert!(key("w1", 0, 0).starts_with(b"ev/am/"));
        assert!(key("w1", 3, 0).starts_with(b"us/"));
        assert_ne!(key("w1", 1, 2), key("w1", 1, 3));
        assert_ne!(key("w1", 1, 2), key("w2", 1, 2));
        assert_eq!(connections_for(1), 1);
        assert_eq!(connections_for(1024), 16);
    }
}
