//! The benchmark against etcd: one command that starts, on loopback, a 3-server Agenda cluster
//! in two shapes (one shard, etcd's shape; the default four shards with their leaders spread)
//! and a 3-member etcd cluster, drives the same workload against each through its own client
//! protocol, and measures the machine's floor in the same run, so that every figure can be
//! read as a ratio that survives a noisy machine.
//!
//! ```sh
//! scripts/bench            # the full run (a few minutes); installs etcd-server if missing
//! scripts/bench --smoke    # a few seconds, as in the test command
//! ```
//!
//! Per system, operation (writes of 100-byte values to new keys; linearizable reads) and
//! concurrency (1, 16, 256, 1024 clients): throughput, p50/p99/p99.9 latency, the servers' CPU
//! seconds per 1,000 operations, the load generator's own, entries per fsync; peak memory;
//! failover (SIGKILL of the leader to the next acknowledged write, heartbeats every 100 ms and
//! elections after 1 s on both). Results go to `bench/results/`: `latest.json`, `latest.md`,
//! `throughput.svg` and `latency.svg`.

mod floor;
mod grpc;
mod load;
mod report;
mod systems;

use anyhow::{Context, bail};
use load::{Connections, Operation};
use report::{Failover, Results, Row};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use systems::{Cluster, Kind, MEMBERS};

/// What the command line asks.
struct Options {
    smoke: bool,
    out: PathBuf,
    data: PathBuf,
    etcd: PathBuf,
}

impl Options {
    fn parse() -> anyhow::Result<Options> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut options = Options {
            smoke: false,
            out: root.join("results"),
            data: root.join("../target/bench-data"),
            etcd: PathBuf::from("/usr/bin/etcd"),
        };
        let mut arguments = std::env::args().skip(1);
        while let Some(argument) = arguments.next() {
            let mut value = |name: &str| {
                arguments
                    .next()
                    .map(PathBuf::from)
                    .with_context(|| format!("{name} needs a value"))
            };
            match argument.as_str() {
                "--smoke" => options.smoke = true,
                "--out" => options.out = value("--out")?,
                "--data" => options.data = value("--data")?,
                "--etcd" => options.etcd = value("--etcd")?,
                "--help" | "-h" => {
                    println!(
                        "usage: bench [--smoke] [--out FOLDER] [--data FOLDER] [--etcd BINARY]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (see --help)"),
            }
        }
        Ok(options)
    }
}

/// How long each load runs, which concurrencies, how many failover trials.
struct Plan {
    seconds: f64,
    concurrencies: Vec<usize>,
    failover_trials: usize,
    settle: Duration,
    syncs: usize,
    round_trips: usize,
}

impl Plan {
    fn new(smoke: bool) -> Plan {
        if smoke {
            Plan {
                seconds: 0.5,
                concurrencies: vec![1, 16],
                failover_trials: 1,
                settle: Duration::from_millis(500),
                syncs: 50,
                round_trips: 500,
            }
        } else {
            Plan {
                seconds: 8.0,
                concurrencies: vec![1, 16, 256, 1024],
                failover_trials: 10,
                settle: Duration::from_secs(3),
                syncs: 500,
                round_trips: 10_000,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    let plan = Plan::new(options.smoke);
    let server = std::env::current_exe()?
        .parent()
        .context("the folder of this program")?
        .join("server");
    if !server.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p server` (scripts/bench does)",
            server.display()
        );
    }
    if !options.etcd.exists() {
        bail!(
            "{} is missing: install Debian's etcd-server (scripts/bench does)",
            options.etcd.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();

    println!("floor: fdatasync and loopback round trips");
    let floor = floor::measure(&options.data, plan.syncs, plan.round_trips)?;
    println!(
        "  fdatasync {:.0}/s (p50 {:.2} ms), loopback p50 {:.3} ms",
        floor.fdatasync_per_second, floor.fdatasync_p50_ms, floor.loopback_rtt_p50_ms
    );
    let mut results = Results {
        smoke: options.smoke,
        seconds_per_load: plan.seconds,
        floor,
        rows: Vec::new(),
        peak_memory_bytes: BTreeMap::new(),
        failover: Vec::new(),
        write_throughput_ratio_vs_etcd: BTreeMap::new(),
        read_throughput_ratio_vs_etcd: BTreeMap::new(),
        p99_write_at_1_client_over_floor: None,
        p99_write_at_1_client_over_floor_p50: None,
        entries_per_fsync_at_256: None,
    };
    for kind in [Kind::Etcd, Kind::AgendaOneShard, Kind::AgendaFourShards] {
        let data = options.data.join(kind.name());
        println!(
            "{}: starting {MEMBERS} members in {}",
            kind.name(),
            data.display()
        );
        let mut cluster = match kind {
            Kind::Etcd => Cluster::etcd(&options.etcd, &data)?,
            _ => Cluster::agenda(kind, &server, &data)?,
        };
        std::thread::sleep(plan.settle);
        measure_loads(&runtime, &cluster, &plan, &mut results)?;
        results
            .peak_memory_bytes
            .insert(kind.name().to_owned(), cluster.usage().peak_bytes);
        if kind != Kind::AgendaFourShards {
            let trials = failover(&runtime, &mut cluster, &plan)?;
            let failover = Failover::new(kind.name(), trials);
            println!(
                "  failover: median {:.0} ms, max {:.0} ms over {} trials",
                failover.median_ms,
                failover.max_ms,
                failover.trials_ms.len()
            );
            results.failover.push(failover);
        }
        drop(cluster);
    }
    results.compute_ratios();
    results.write(&options.out)?;
    println!();
    print!("{}", results.markdown());
    println!(
        "\nwritten to {} in {:.0} s",
        options.out.display(),
        started.elapsed().as_secs_f64()
    );
    let failed: u64 = results.rows.iter().map(|row| row.errors).sum();
    if failed > 0 {
        bail!("{failed} operations failed (see the table)");
    }
    Ok(())
}

/// Writes then reads at every concurrency of the plan, one row each.
fn measure_loads(
    runtime: &tokio::runtime::Runtime,
    cluster: &Cluster,
    plan: &Plan,
    results: &mut Results,
) -> anyhow::Result<()> {
    let name = cluster.kind.name();
    let leader = cluster.leaders()?.first().copied().flatten().unwrap_or(0);
    for &clients in &plan.concurrencies {
        let connections = runtime.block_on(Connections::open(
            cluster,
            load::connections_for(clients),
            leader,
        ))?;
        let run = format!("c{clients}");
        for operation in [Operation::Write, Operation::Read] {
            let before = cluster.fsyncs_and_entries();
            let server_before = cluster.usage().cpu_seconds;
            let load_before = systems::usage(std::process::id()).cpu_seconds;
            let measured = runtime.block_on(load::run(
                &connections,
                operation,
                clients,
                Duration::from_secs_f64(plan.seconds),
                &run,
                1,
            ));
            let server_cpu = cluster.usage().cpu_seconds - server_before;
            let load_cpu = systems::usage(std::process::id()).cpu_seconds - load_before;
            let after = cluster.fsyncs_and_entries();
            let entries_per_fsync = match (operation, before, after) {
                (Operation::Write, Some((fsyncs_0, entries_0)), Some((fsyncs_1, entries_1)))
                    if fsyncs_1 > fsyncs_0 && entries_1 >= entries_0 =>
                {
                    Some((entries_1 - entries_0) / (fsyncs_1 - fsyncs_0))
                }
                _ => None,
            };
            let row = Row::new(
                name,
                operation,
                clients,
                &measured,
                server_cpu,
                load_cpu,
                entries_per_fsync,
            );
            println!(
                "  {:>5} × {:>4} clients: {:>8.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms{}",
                operation.name(),
                clients,
                row.throughput,
                row.p50_ms,
                row.p99_ms,
                match &measured.first_error {
                    Some(error) => format!("  {} errors, first: {error}", measured.errors),
                    None => String::new(),
                }
            );
            results.rows.push(row);
        }
    }
    Ok(())
}

/// Kills the leader `plan.failover_trials` times and measures, each time, how long until a
/// write through the surviving members is acknowledged; the killed member is restarted and
/// the cluster left to settle before the next trial.
fn failover(
    runtime: &tokio::runtime::Runtime,
    cluster: &mut Cluster,
    plan: &Plan,
) -> anyhow::Result<Vec<f64>> {
    let mut trials = Vec::new();
    for trial in 0..plan.failover_trials {
        // A leader that stays for the settling time (after a heavy load, or the restart of
        // the last trial, leadership may still move).
        let leader = loop {
            cluster.wait_ready(Duration::from_secs(60))?;
            let before = cluster.leaders()?[0];
            std::thread::sleep(plan.settle);
            let after = cluster.leaders()?[0];
            if let Some(leader) = after.filter(|_| after == before) {
                break leader;
            }
        };
        let survivors: Vec<usize> = (0..MEMBERS).filter(|&member| member != leader).collect();
        let writer = runtime.block_on(FailoverWriter::connect(cluster, &survivors))?;
        let key = |n: usize| format!("failover/{trial}/{n}").into_bytes();
        runtime.block_on(writer.write_until_acknowledged(key(0), Duration::from_secs(10)))?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        runtime.block_on(writer.write_until_acknowledged(key(1), Duration::from_secs(30)))?;
        trials.push(killed_at.elapsed().as_secs_f64() * 1000.0);
        cluster.restart(leader)?;
    }
    cluster.wait_ready(Duration::from_secs(60))?;
    Ok(trials)
}

/// Writes through the surviving members only, retrying every 20 ms on both systems.
enum FailoverWriter {
    Agenda(client::Client),
    Etcd(Vec<grpc::Etcd>),
}

impl FailoverWriter {
    async fn connect(cluster: &Cluster, survivors: &[usize]) -> anyhow::Result<FailoverWriter> {
        match cluster.kind {
            Kind::Etcd => {
                let mut connections = Vec::new();
                for &member in survivors {
                    connections.push(grpc::Etcd::connect(cluster.clients[member]).await?);
                }
                Ok(FailoverWriter::Etcd(connections))
            }
            _ => {
                let servers = survivors
                    .iter()
                    .map(|&member| (member as u64 + 1, cluster.clients[member]))
                    .collect();
                let mut config = client::ClientConfig::new(servers, cluster.token.clone());
                config.attempt_timeout = Duration::from_millis(300);
                config.backoff_initial = Duration::from_millis(20);
                config.backoff_max = Duration::from_millis(20);
                config.request_timeout = Duration::from_secs(30);
                Ok(FailoverWriter::Agenda(client::Client::new(config)))
            }
        }
    }

    async fn write_until_acknowledged(&self, key: Vec<u8>, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let value = vec![b'f'; load::VALUE_BYTES];
        match self {
            FailoverWriter::Agenda(client) => {
                tokio::time::timeout(within, client.put(key, value))
                    .await
                    .context("no write acknowledged in time")??;
                Ok(())
            }
            FailoverWriter::Etcd(connections) => {
                let mut attempt = 0;
                loop {
                    if Instant::now() > deadline {
                        bail!("no write acknowledged within {within:?}");
                    }
                    let connection = &connections[attempt % connections.len()];
                    let put = connection.put(&key, &value);
                    if let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(300), put).await
                    {
                        return Ok(());
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}
