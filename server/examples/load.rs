//! A quick load generator against a running cluster (for example `server demo`): many
//! concurrent clients write 100-byte values to distinct keys for a while, then it prints the
//! throughput, latency percentiles and, from every server's `/metrics`, how many entries each
//! fsync carried.
//!
//! ```sh
//! cargo run --release -p server -- demo &          # note the token it prints
//! cargo run --release -p server --example load -- <token> [clients] [seconds] [servers] [http port]
//! ```
//!
//! The benchmark against etcd (a later issue) grows out of this.

mod common;

use client::{Client, ClientConfig};
use common::{demo_addresses, metric};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let token = arguments
        .get(1)
        .expect("usage: load <token> [clients] [seconds] [servers] [http port]")
        .clone();
    let clients: usize = arguments.get(2).map_or(64, |value| value.parse().unwrap());
    let seconds: u64 = arguments.get(3).map_or(10, |value| value.parse().unwrap());
    let servers: u16 = arguments.get(4).map_or(4, |value| value.parse().unwrap());
    let http_port: u16 = arguments
        .get(5)
        .map_or(8081, |value| value.parse().unwrap());
    let (http, native) = demo_addresses(servers, http_port);
    let fsyncs_before: f64 = http.iter().map(|a| metric(*a, "agenda_fsyncs")).sum();
    let entries_before: f64 = http
        .iter()
        .map(|a| metric(*a, "agenda_entries_persisted"))
        .sum();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let value = "x".repeat(100);
    let tasks: Vec<_> = (0..clients)
        .map(|index| {
            let mut servers = native.clone();
            servers.rotate_left(index % native.len());
            let client = Client::new(ClientConfig::new(servers, token.clone()));
            let value = value.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut round = 0u64;
                let shards = ["ev/am/a", "ev/nz/n", "gr/g", "us/u"];
                while Instant::now() < deadline {
                    let key = format!("{}/{index}/{round}", shards[(round as usize + index) % 4]);
                    let started = Instant::now();
                    if client.put(key, value.clone()).await.is_ok() {
                        latencies.push(started.elapsed());
                    }
                    round += 1;
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let fsyncs: f64 = http
        .iter()
        .map(|a| metric(*a, "agenda_fsyncs"))
        .sum::<f64>()
        - fsyncs_before;
    let entries: f64 = http
        .iter()
        .map(|a| metric(*a, "agenda_entries_persisted"))
        .sum::<f64>()
        - entries_before;
    println!(
        "clients {clients}: {:.0} writes/s, p50 {:?}, p99 {:?}, p99.9 {:?}; {:.1} entries per fsync (all servers: {entries} entries, {fsyncs} fsyncs)",
        latencies.len() as f64 / elapsed,
        percentile(0.5),
        percentile(0.99),
        percentile(0.999),
        if fsyncs > 0.0 { entries / fsyncs } else { 0.0 },
    );
}
