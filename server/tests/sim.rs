//! The real server under madsim: three servers on simulated machines with in-memory disks, a
//! client on a fourth, writes through the router, and a leader that crashes (losing what it
//! had not synced) and comes back. A gateway subscriber on every server (the pub/sub core,
//! without a socket) must see each shard's changes in log order, none twice, and on the
//! servers that stayed up exactly the acknowledged writes.
//!
//! Run with `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p server --test sim`.

#![cfg(madsim)]

use client::{Client, ClientConfig};
use madsim::runtime::Handle;
use server::gateway::{Outgoing, Session};
use server::{ServerAddresses, ServerConfig, StartOptions, Timing, default_shards};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::{Crash, MemFs};

const TOKEN: &str = "simulated-operator-token";
const SERVERS: u64 = 3;

fn addresses() -> Vec<ServerAddresses> {
    (1..=SERVERS)
        .map(|id| {
            let ip = [10, 0, 0, id as u8];
            ServerAddresses {
                id,
                peer: SocketAddr::from((ip, 7000)),
                client: SocketAddr::from((ip, 7100)),
                http: None,
            }
        })
        .collect()
}

fn config(id: u64) -> ServerConfig {
    ServerConfig {
        server_id: id,
        cluster_id: 3,
        cluster_secret: "simulated cluster secret".into(),
        operator_tokens: vec![TOKEN.into()],
        tokens: Vec::new(),
        data_dir: "/data".into(),
        servers: addresses(),
        shards: default_shards(SERVERS as usize),
        timing: Timing {
            tick_ms: 10,
            heartbeat_ticks: 3,
            election_ticks: 15,
            request_timeout_ms: 10_000,
            forward_timeout_ms: 1_000,
            balance_interval_ms: 500,
            lease_reads: false,
        },
        limits: server::Limits {
            // Small, so that the run takes snapshots and compacts.
            snapshot_entries: 50,
            ..Default::default()
        },
    }
}

/// The key recorded for a resync (with the position it goes on from).
const RESYNC: &str = "<resync>";

/// The changes one subscriber saw, as (shard, index, key), in the order they were queued.
type Changes = Vec<(u64, u64, String)>;

/// What the in-process subscriber of each server saw: per server, one list per life.
type Seen = Arc<Mutex<BTreeMap<u64, Vec<Changes>>>>;

/// Subscribes to every key through the gateway's protocol, in the server's own process, and
/// records every change queued for it, until the server dies.
fn watch_changes(server: &server::ServerHandle, id: u64, seen: Seen) {
    let mut session = Session::new(server.gateway().clone(), server.service().clone());
    session.on_text(&format!(r#"{{"op":"auth","token":"{TOKEN}"}}"#));
    session.on_text(r#"{"op":"subscribe","channel":"kv:"}"#);
    let life = {
        let mut seen = seen.lock().unwrap();
        let lives = seen.entry(id).or_default();
        lives.push(Vec::new());
        lives.len() - 1
    };
    tokio::spawn(async move {
        let outbox = session.outbox().clone();
        while let Ok(batch) = outbox.take().await {
            let frames = batch.iter().flat_map(|item| match item {
                Outgoing::Frame(frame) => vec![frame.clone()],
                Outgoing::Shared(frames) => frames.to_vec(),
            });
            for frame in frames {
                let frame: serde_json::Value = serde_json::from_slice(&frame).unwrap();
                if frame["op"] == "change" {
                    let shard = frame["position"]["shard"].as_u64().unwrap();
                    let index = frame["position"]["index"].as_u64().unwrap();
                    let key = frame["key"].as_str().unwrap().to_owned();
                    seen.lock().unwrap().get_mut(&id).unwrap()[life].push((shard, index, key));
                } else if frame["op"] == "resync" {
                    // The replica skipped entries (a snapshot from the leader after a
                    // restart): the subscriber is told, and goes on from `at`.
                    let at = frame["at"].as_object().unwrap();
                    let mut seen = seen.lock().unwrap();
                    for (shard, index) in at {
                        let entry = (
                            shard.parse().unwrap(),
                            index.as_u64().unwrap(),
                            RESYNC.to_owned(),
                        );
                        seen.get_mut(&id).unwrap()[life].push(entry);
                    }
                } else {
                    let op = frame["op"].as_str().unwrap();
                    assert!(["authenticated", "subscribed"].contains(&op), "{frame}");
                }
            }
        }
        drop(session);
    });
}

#[madsim::test]
async fn a_three_server_cluster_serves_writes_through_a_leader_crash() {
    let simulator = Handle::current();
    let disks: Vec<MemFs> = (1..=SERVERS).map(MemFs::with_seed).collect();
    let seen: Seen = Arc::default();
    let mut nodes = Vec::new();
    for id in 1..=SERVERS {
        let disk = disks[id as usize - 1].clone();
        let seen = seen.clone();
        let initialized = Arc::new(AtomicBool::new(false));
        let node = simulator
            .create_node()
            .name(format!("server-{id}"))
            .ip(addresses()[id as usize - 1].peer.ip())
            .init(move || {
                let disk = disk.clone();
                let initialized = initialized.clone();
                let seen = seen.clone();
                async move {
                    let init = !initialized.swap(true, Ordering::SeqCst);
                    let options = StartOptions {
                        init,
                        ..StartOptions::default()
                    };
                    let server = server::start(config(id), disk, options)
                        .await
                        .expect("the server starts");
                    watch_changes(&server, id, seen);
                    server
                        .wait()
                        .await
                        .expect("the node loop runs until killed");
                }
            })
            .build();
        nodes.push(node);
    }
    let client_node = simulator
        .create_node()
        .name("client")
        .ip([10, 0, 1, 1].into())
        .build();
    let servers: Vec<(u64, SocketAddr)> = addresses().iter().map(|a| (a.id, a.client)).collect();
    let written: Arc<Mutex<Changes>> = Arc::default();
    let done = client_node.spawn({
        let written = written.clone();
        async move {
            let client = Client::new(ClientConfig::new(servers, TOKEN));
            for round in 0..200u32 {
                let key = match round % 4 {
                    0 => format!("ev/am/alice/{round}"),
                    1 => format!("ev/nz/olga/{round}"),
                    2 => format!("gr/team-{round}"),
                    _ => format!("us/user-{round}"),
                };
                let answer = client
                    .put(key.clone(), format!("v{round}"))
                    .await
                    .expect("the write is acknowledged");
                written
                    .lock()
                    .unwrap()
                    .push((answer.shard, answer.index, key));
            }
            let status = client.cluster_status().await.unwrap();
            assert!(status.all_shards_led(), "{status:?}");
            let users_leader = status
                .shards
                .iter()
                .find(|s| s.name == "users")
                .unwrap()
                .leader_id;
            (client, users_leader)
        }
    });
    let (client, users_leader) = done.await.unwrap();

    // The users shard's leader crashes; what it did not sync is gone. Writes go on.
    let crashed = &nodes[users_leader as usize - 1];
    simulator.kill(crashed.id());
    disks[users_leader as usize - 1].crash(Crash::LoseUnsynced);
    let during = client_node.spawn({
        let client = client.clone();
        let written = written.clone();
        async move {
            for round in 200..300u32 {
                let key = format!("us/user-{round}");
                let answer = client
                    .put(key.clone(), format!("v{round}"))
                    .await
                    .expect("writes ride through the failover");
                written
                    .lock()
                    .unwrap()
                    .push((answer.shard, answer.index, key));
            }
        }
    });
    during.await.unwrap();
    simulator.restart(crashed.id());

    // Every acknowledged write is readable, and the restarted replica catches up.
    let check = client_node.spawn(async move {
        for round in 0..300u32 {
            let key = match round % 4 {
                _ if round >= 200 => format!("us/user-{round}"),
                0 => format!("ev/am/alice/{round}"),
                1 => format!("ev/nz/olga/{round}"),
                2 => format!("gr/team-{round}"),
                _ => format!("us/user-{round}"),
            };
            let value = client.get(key.clone()).await.unwrap();
            assert_eq!(
                value.map(|v| v.value),
                Some(format!("v{round}").into()),
                "{key}"
            );
        }
        for _ in 0..200 {
            let status = client.cluster_status_with(true).await.unwrap();
            let users = status.shards.iter().find(|s| s.name == "users").unwrap();
            let applied: Vec<u64> = users.replicas.iter().map(|r| r.applied_index).collect();
            let digests: Vec<u64> = users.replicas.iter().map(|r| r.state_digest).collect();
            if users.replicas.len() == SERVERS as usize
                && applied.windows(2).all(|pair| pair[0] == pair[1])
            {
                assert!(
                    digests.windows(2).all(|pair| pair[0] == pair[1]),
                    "{users:?}"
                );
                // Let the gateways' dispatchers deliver what was applied last.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the restarted replica did not catch up");
    });
    check.await.unwrap();
    check_notifications(
        &seen.lock().unwrap(),
        &written.lock().unwrap(),
        users_leader,
    );
}

/// Every server's subscriber saw each shard's changes in log order, never twice (a resync may
/// skip ahead, never back); the servers that never crashed saw exactly the acknowledged
/// writes (each applied once), with no resync.
fn check_notifications(
    seen: &BTreeMap<u64, Vec<Changes>>,
    written: &[(u64, u64, String)],
    crashed: u64,
) {
    let mut expected = written.to_vec();
    expected.sort();
    for (server, lives) in seen {
        for life in lives {
            let mut last = BTreeMap::new();
            for (shard, index, key) in life {
                let previous = last.insert(*shard, *index).unwrap_or(0);
                if key == RESYNC {
                    assert!(
                        *index >= previous,
                        "server {server}: a resync back to {index}"
                    );
                    continue;
                }
                let order = format!("server {server}: {key} at {shard}:{index} after {previous}");
                assert!(*index > previous, "{order}");
            }
        }
        if *server != crashed {
            assert_eq!(lives.len(), 1, "server {server} never restarted");
            let mut changes = lives[0].clone();
            changes.sort();
            assert_eq!(
                changes, expected,
                "server {server} notified every write once"
            );
        }
    }
}
