//! The real server under madsim: three servers on simulated machines with in-memory disks, a
//! client on a fourth, writes through the router, and a leader that crashes (losing what it
//! had not synced) and comes back.
//!
//! Run with `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p server --test sim`.

#![cfg(madsim)]

use client::{Client, ClientConfig};
use madsim::runtime::Handle;
use server::{ServerAddresses, ServerConfig, StartOptions, Timing, default_shards};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

#[madsim::test]
async fn a_three_server_cluster_serves_writes_through_a_leader_crash() {
    let simulator = Handle::current();
    let disks: Vec<MemFs> = (1..=SERVERS).map(MemFs::with_seed).collect();
    let mut nodes = Vec::new();
    for id in 1..=SERVERS {
        let disk = disks[id as usize - 1].clone();
        let initialized = Arc::new(AtomicBool::new(false));
        let node = simulator
            .create_node()
            .name(format!("server-{id}"))
            .ip(addresses()[id as usize - 1].peer.ip())
            .init(move || {
                let disk = disk.clone();
                let initialized = initialized.clone();
                async move {
                    let init = !initialized.swap(true, Ordering::SeqCst);
                    let options = StartOptions {
                        init,
                        ..StartOptions::default()
                    };
                    let server = server::start(config(id), disk, options)
                        .await
                        .expect("the server starts");
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
    let done = client_node.spawn(async move {
        let client = Client::new(ClientConfig::new(servers, TOKEN));
        for round in 0..200u32 {
            let key = match round % 4 {
                0 => format!("ev/am/alice/{round}"),
                1 => format!("ev/nz/olga/{round}"),
                2 => format!("gr/team-{round}"),
                _ => format!("us/user-{round}"),
            };
            client
                .put(key, format!("v{round}"))
                .await
                .expect("the write is acknowledged");
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
    });
    let (client, users_leader) = done.await.unwrap();

    // The users shard's leader crashes; what it did not sync is gone. Writes go on.
    let crashed = &nodes[users_leader as usize - 1];
    simulator.kill(crashed.id());
    disks[users_leader as usize - 1].crash(Crash::LoseUnsynced);
    let during = client_node.spawn({
        let client = client.clone();
        async move {
            for round in 200..300u32 {
                client
                    .put(format!("us/user-{round}"), format!("v{round}"))
                    .await
                    .expect("writes ride through the failover");
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
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the restarted replica did not catch up");
    });
    check.await.unwrap();
}
