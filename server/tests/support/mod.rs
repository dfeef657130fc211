//! A cluster of real servers in this test process: real TCP on loopback, each server on its own
//! in-memory disk (`MemFs`), so a test can crash one (losing what it did not sync) and restart
//! it.

#![allow(dead_code)]

use client::{Client, ClientConfig, ClusterStatus};
use server::{
    Listeners, ScopedToken, ServerAddresses, ServerConfig, ServerHandle, ShardSpec, StartOptions,
    Timing,
};
use std::time::Duration;
use storage::{Crash, MemFs};
use tokio::net::TcpListener;

pub const TOKEN: &str = "test-operator-token-0123456789";
pub const SECRET: &str = "test-cluster-secret-0123456789";
/// A token that reaches only the keys under `us/` (the gateway's scoped tokens).
pub const USERS_TOKEN: &str = "test-users-token-0123456789";

async fn bind_any() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Fast timing for tests on loopback: 10 ms ticks, elections after 150 to 300 ms.
pub fn fast_timing() -> Timing {
    Timing {
        tick_ms: 10,
        heartbeat_ticks: 3,
        election_ticks: 15,
        request_timeout_ms: 10_000,
        forward_timeout_ms: 1_000,
        balance_interval_ms: 500,
        lease_reads: false,
    }
}

pub struct TestCluster {
    pub configs: Vec<ServerConfig>,
    pub disks: Vec<MemFs>,
    pub servers: Vec<Option<ServerHandle>>,
}

impl TestCluster {
    /// Starts `count` servers (ids 1..=count) holding `shards`.
    pub async fn start(count: usize, shards: Vec<ShardSpec>) -> TestCluster {
        TestCluster::start_with(count, shards, server::Limits::default()).await
    }

    /// Starts `count` servers holding `shards`, with `limits`.
    pub async fn start_with(
        count: usize,
        shards: Vec<ShardSpec>,
        limits: server::Limits,
    ) -> TestCluster {
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        for id in 1..=count as u64 {
            let (peer, client, http) = (bind_any().await, bind_any().await, bind_any().await);
            addresses.push(ServerAddresses {
                id,
                peer: peer.local_addr().unwrap(),
                client: client.local_addr().unwrap(),
                http: Some(http.local_addr().unwrap()),
            });
            listeners.push(Listeners {
                peer,
                client,
                http: Some(http),
            });
        }
        let configs: Vec<ServerConfig> = (1..=count as u64)
            .map(|id| ServerConfig {
                server_id: id,
                cluster_id: 9,
                cluster_secret: SECRET.to_owned(),
                operator_tokens: vec![TOKEN.to_owned()],
                tokens: vec![ScopedToken {
                    token: USERS_TOKEN.to_owned(),
                    prefixes: vec!["us/".to_owned()],
                }],
                data_dir: format!("/data/{id}").into(),
                servers: addresses.clone(),
                shards: shards.clone(),
                timing: fast_timing(),
                limits: limits.clone(),
            })
            .collect();
        let disks: Vec<MemFs> = (0..count)
            .map(|index| MemFs::with_seed(index as u64))
            .collect();
        let mut cluster = TestCluster {
            configs,
            disks,
            servers: (0..count).map(|_| None).collect(),
        };
        for (index, listeners) in listeners.into_iter().enumerate() {
            cluster.boot(index as u64 + 1, true, listeners).await;
        }
        cluster
    }

    async fn boot(&mut self, id: u64, init: bool, listeners: Listeners) {
        let index = id as usize - 1;
        let server = server::start_on(
            self.configs[index].clone(),
            self.disks[index].clone(),
            StartOptions {
                init,
                ..StartOptions::default()
            },
            listeners,
        )
        .await
        .expect("the server starts");
        self.servers[index] = Some(server);
    }

    /// Stops a server cleanly.
    pub async fn stop(&mut self, id: u64) {
        if let Some(server) = self.servers[id as usize - 1].take() {
            server.stop().await.expect("a clean stop");
        }
    }

    /// Crashes a server: its tasks stop at once and its disk loses what was not synced.
    pub async fn crash(&mut self, id: u64) {
        if let Some(server) = self.servers[id as usize - 1].take() {
            server.abort();
        }
        self.disks[id as usize - 1].crash(Crash::LoseUnsynced);
    }

    /// Starts a stopped or crashed server again from its disk.
    pub async fn restart(&mut self, id: u64) {
        // The server's ports were released when it stopped; bind them again (another socket
        // may hold one for a moment).
        let config = &self.configs[id as usize - 1];
        let mut attempts = 0;
        let listeners = loop {
            match Listeners::bind(config).await {
                Ok(listeners) => break listeners,
                Err(error) if attempts < 100 => {
                    attempts += 1;
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("cannot bind the ports of server {id} again: {error}"),
            }
        };
        self.boot(id, false, listeners).await;
    }

    pub fn client(&self) -> Client {
        let servers = self
            .configs
            .iter()
            .map(|config| (config.server_id, config.me().client))
            .collect();
        let mut config = ClientConfig::new(servers, TOKEN);
        config.attempt_timeout = Duration::from_secs(2);
        Client::new(config)
    }

    /// The WebSocket URL of server `id`.
    pub fn ws_url(&self, id: u64) -> String {
        let http = self.configs[id as usize - 1].me().http.expect("HTTP is on");
        format!("ws://{http}/v1/ws")
    }

    /// The WebSocket URLs of every server, in id order.
    pub fn ws_urls(&self) -> Vec<String> {
        (1..=self.configs.len() as u64)
            .map(|id| self.ws_url(id))
            .collect()
    }

    pub fn running(&self) -> impl Iterator<Item = &ServerHandle> {
        self.servers.iter().flatten()
    }

    /// Waits until every shard has a leader, as seen from a running server.
    pub async fn wait_for_leaders(&self) -> ClusterStatus {
        for _ in 0..500 {
            let server = self.running().next().expect("a running server");
            let status = server.service().cluster_status(false).await;
            if status.all_shards_led() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no leader for every shard within 10 s");
    }
}
