//! The WebSocket gateway's benchmark against a running cluster (for example `server demo`):
//! opens many subscribed connections spread over the servers, measures the servers' memory per
//! idle connection (from their `agenda_process_resident_bytes`), then writes one key at a time
//! and measures how long each write takes to reach every connection. Prints a table and
//! writes it to `bench-results/gateway.txt`.
//!
//! ```sh
//! cargo run --release -p server -- demo &      # note the token it prints
//! cargo run --release -p server --example gateway_bench -- <token> [connections] [writes] [servers] [http port]
//! ```
//!
//! Latency is measured from the moment the write is sent (so it includes the commit itself:
//! an upper bound on commit-to-delivery); the write's own latency is printed beside it.

#[cfg(not(madsim))]
mod common;

/// The benchmark drives real sockets: there is nothing to run under the simulator.
#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
#[tokio::main]
async fn main() {
    bench::run().await;
}

#[cfg(not(madsim))]
mod bench {
    use super::common::{demo_addresses, metric};
    use client::{Client, ClientConfig};
    use gateway_client::{Event, GatewayClient, GatewayConfig};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use tokio::sync::{OwnedSemaphorePermit, Semaphore};

    const CHANNEL: &str = "kv:us/bench/";
    const KEY: &str = "us/bench/fanout";

    fn resident_bytes(http: &[SocketAddr]) -> f64 {
        http.iter()
            .map(|address| metric(*address, "agenda_process_resident_bytes"))
            .sum()
    }

    /// What every connection task shares with the writer.
    struct Shared {
        base: Instant,
        /// When the current write was sent, in nanoseconds since `base`.
        sent_ns: AtomicU64,
        /// Connections that received the current write.
        received: AtomicUsize,
    }

    /// One subscribed connection, through the gateway's Rust client: answers the delivery
    /// latency of every write it receives, in nanoseconds, in order. `opening` is held until
    /// the subscription is acknowledged.
    async fn subscriber(
        url: String,
        token: String,
        shared: Arc<Shared>,
        writes: usize,
        opening: OwnedSemaphorePermit,
    ) -> Vec<u64> {
        let mut config = GatewayConfig::new(vec![url], token);
        config.events_capacity = 64;
        let mut client = GatewayClient::connect(config);
        client.subscribe(CHANNEL, None).await.expect("subscribed");
        drop(opening);
        let mut latencies = Vec::with_capacity(writes);
        while latencies.len() < writes {
            match client.next_event().await {
                Some(Event::Change(_)) => {}
                Some(Event::Disconnected { reason, .. }) => {
                    panic!("a subscriber was disconnected: {reason}")
                }
                Some(_) => continue,
                None => panic!("a subscriber's client stopped"),
            }
            let now = shared.base.elapsed().as_nanos() as u64;
            latencies.push(now.saturating_sub(shared.sent_ns.load(Ordering::Acquire)));
            shared.received.fetch_add(1, Ordering::AcqRel);
        }
        latencies
    }

    fn percentile(sorted: &[u64], fraction: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let position = ((sorted.len() - 1) as f64 * fraction).round() as usize;
        Duration::from_nanos(sorted[position])
    }

    pub async fn run() {
        let arguments: Vec<String> = std::env::args().collect();
        let usage = "usage: gateway_bench <token> [connections] [writes] [servers] [http port]";
        let token = arguments.get(1).expect(usage).clone();
        let connections: usize = arguments.get(2).map_or(10_000, |v| v.parse().expect(usage));
        let writes: usize = arguments.get(3).map_or(50, |v| v.parse().expect(usage));
        let servers: u16 = arguments.get(4).map_or(4, |v| v.parse().expect(usage));
        let http_port: u16 = arguments.get(5).map_or(8081, |v| v.parse().expect(usage));
        let (http, native) = demo_addresses(servers, http_port);
        let writer = Client::new(ClientConfig::new(native, token.clone()));
        writer
            .put(KEY, "warm-up")
            .await
            .expect("the cluster answers");

        let resident_before = resident_bytes(&http);
        let shared = Arc::new(Shared {
            base: Instant::now(),
            sent_ns: AtomicU64::new(0),
            received: AtomicUsize::new(0),
        });
        // Connections are opened a few hundred at a time (the listeners' backlogs are finite).
        let opening = Arc::new(Semaphore::new(256));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(connections);
        for n in 0..connections {
            let url = format!("ws://{}/v1/ws", http[n % http.len()]);
            let permit = opening.clone().acquire_owned().await.unwrap();
            let (token, shared) = (token.clone(), shared.clone());
            tasks.push(tokio::spawn(subscriber(url, token, shared, writes, permit)));
        }
        // Every connection subscribed: the servers count them.
        let subscribed_by = Instant::now() + Duration::from_secs(120);
        loop {
            let open: f64 = http
                .iter()
                .map(|address| metric(*address, "agenda_ws_connections_open"))
                .sum();
            if open as usize >= connections {
                break;
            }
            assert!(
                Instant::now() < subscribed_by,
                "only {open} connections opened"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let open_seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let resident_after = resident_bytes(&http);
        let per_connection = (resident_after - resident_before) / connections as f64;

        let mut write_latencies = Vec::with_capacity(writes);
        for write in 0..writes {
            shared.received.store(0, Ordering::Release);
            let sent = shared.base.elapsed().as_nanos() as u64;
            shared.sent_ns.store(sent, Ordering::Release);
            let began = Instant::now();
            writer.put(KEY, format!("{write}")).await.expect("written");
            write_latencies.push(began.elapsed().as_nanos() as u64);
            let deadline = Instant::now() + Duration::from_secs(30);
            while shared.received.load(Ordering::Acquire) < connections {
                assert!(
                    Instant::now() < deadline,
                    "write {write} did not reach everyone"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let mut deliveries = Vec::with_capacity(connections * writes);
        for task in tasks {
            deliveries.extend(task.await.expect("a subscriber"));
        }
        deliveries.sort_unstable();
        write_latencies.sort_unstable();
        let slow: f64 = http
            .iter()
            .map(|address| metric(*address, "agenda_ws_slow_consumers"))
            .sum();
        let report = format!(
            "gateway benchmark: {connections} connections subscribed to {CHANNEL} over {servers} servers, {writes} writes of one key fanned out to all\n\
             | measurement | figure | goal |\n\
             |---|---|---|\n\
             | memory per idle connection (servers' resident memory growth / connections) | {:.1} KiB | <= 16 KiB |\n\
             | write sent -> delivered, p50 | {:.1} ms | |\n\
             | write sent -> delivered, p99 | {:.1} ms | <= 100 ms |\n\
             | write sent -> delivered, max | {:.1} ms | |\n\
             | the write itself (sent -> acknowledged), p50 | {:.1} ms | |\n\
             | connections opened and subscribed | {open_seconds:.1} s | |\n\
             | slow consumers dropped | {slow} | 0 |\n",
            per_connection / 1024.0,
            percentile(&deliveries, 0.50).as_secs_f64() * 1e3,
            percentile(&deliveries, 0.99).as_secs_f64() * 1e3,
            percentile(&deliveries, 1.0).as_secs_f64() * 1e3,
            percentile(&write_latencies, 0.50).as_secs_f64() * 1e3,
        );
        print!("{report}");
        let _ = std::fs::create_dir_all("bench-results");
        match std::fs::write("bench-results/gateway.txt", &report) {
            Ok(()) => println!("written to bench-results/gateway.txt"),
            Err(error) => eprintln!("could not write bench-results/gateway.txt: {error}"),
        }
    }
}
