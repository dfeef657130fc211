//! A cluster of real `server` processes: real TCP between them, real files with fsync, each in
//! its own data directory; killed with SIGKILL or stopped with SIGTERM and started again.

#![allow(dead_code)]

use client::{Client, ClientConfig, ClusterStatus, ShardStatus};
use server::{ServerAddresses, ServerConfig, ShardSpec, Timing};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "process-test-operator-token";
pub const SECRET: &str = "process-test-cluster-secret";

/// Ports below Linux's ephemeral range (32768 and up), so that no outgoing connection of a
/// parallel test takes one; each test process starts at its own offset, and every port is
/// checked free before use.
fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Timing for tests: 20 ms ticks, heartbeats every 60 ms, elections after 300 to 600 ms.
pub fn test_timing() -> Timing {
    Timing {
        tick_ms: 20,
        heartbeat_ticks: 3,
        election_ticks: 15,
        request_timeout_ms: 15_000,
        forward_timeout_ms: 1_000,
        balance_interval_ms: 1_000,
        lease_reads: false,
    }
}

pub struct ProcessCluster {
    pub dir: PathBuf,
    pub configs: Vec<ServerConfig>,
    pub children: Vec<Option<Child>>,
}

impl ProcessCluster {
    /// Writes the configurations of `count` servers holding `shards` and starts the first
    /// `started` of them (with `--init`).
    pub fn start(
        name: &str,
        count: usize,
        started: usize,
        shards: Vec<ShardSpec>,
        snapshot_entries: u64,
    ) -> ProcessCluster {
        let dir = std::env::temp_dir().join(format!("agenda-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let address = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let servers: Vec<ServerAddresses> = (1..=count as u64)
            .map(|id| ServerAddresses {
                id,
                peer: address(free_port()),
                client: address(free_port()),
                http: Some(address(free_port())),
            })
            .collect();
        let configs: Vec<ServerConfig> = (1..=count as u64)
            .map(|id| ServerConfig {
                server_id: id,
                cluster_id: 5,
                cluster_secret: SECRET.to_owned(),
                operator_tokens: vec![TOKEN.to_owned()],
                tokens: Vec::new(),
                data_dir: dir.join(format!("server-{id}")),
                servers: servers.clone(),
                shards: shards.clone(),
                timing: test_timing(),
                limits: server::Limits {
                    snapshot_entries,
                    ..Default::default()
                },
            })
            .collect();
        for config in &configs {
            let path = dir.join(format!("server-{}.toml", config.server_id));
            std::fs::write(path, toml::to_string(config).unwrap()).unwrap();
        }
        let mut cluster = ProcessCluster {
            dir,
            configs,
            children: (0..count).map(|_| None).collect(),
        };
        for id in 1..=started as u64 {
            cluster.launch(id, true);
        }
        cluster
    }

    /// Starts server `id` (`init`: with `--init`, for its first start).
    pub fn launch(&mut self, id: u64, init: bool) {
        let index = id as usize - 1;
        assert!(self.children[index].is_none(), "server {id} is running");
        let config = self.dir.join(format!("server-{id}.toml"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("server-{id}.log")))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
        command
            .args(["--log-level", "warn", "serve", "--config"])
            .arg(config)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if init {
            command.arg("--init");
        }
        self.children[index] = Some(command.spawn().expect("the server binary starts"));
    }

    /// SIGKILL: the process dies at once; the kernel closes its sockets.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self, id: u64) -> bool {
        let Some(mut child) = self.children[id as usize - 1].take() else {
            return true;
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        match &mut self.children[id as usize - 1] {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("server-{id}.log"))).unwrap_or_default()
    }

    /// A client that knows every server, starting with server `first`.
    pub fn client_from(&self, first: usize) -> Client {
        let count = self.configs.len();
        let servers = (0..count)
            .map(|offset| {
                let config = &self.configs[(first + offset) % count];
                (config.server_id, config.me().client)
            })
            .collect();
        let mut config = ClientConfig::new(servers, TOKEN);
        config.attempt_timeout = Duration::from_secs(2);
        config.request_timeout = Duration::from_secs(30);
        Client::new(config)
    }

    pub fn client(&self) -> Client {
        self.client_from(0)
    }

    pub fn http_address(&self, id: u64) -> SocketAddr {
        self.configs[id as usize - 1].me().http.unwrap()
    }

    /// Waits until every shard has a leader (and every running server answers).
    pub async fn wait_for_leaders(&self, client: &Client) -> ClusterStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(status) = client.cluster_status().await
                && status.all_shards_led()
            {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader for every shard within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every replica of every shard has applied the same index, then checks that
    /// their states are equal.
    pub async fn assert_replicas_converge(
        &self,
        client: &Client,
        replicas: impl Fn(&ShardStatus) -> usize,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            let status = client.cluster_status_with(true).await.unwrap();
            if status
                .shards
                .iter()
                .all(|shard| converged(shard, replicas(shard)))
            {
                for shard in &status.shards {
                    let digests: Vec<u64> = shard.replicas.iter().map(|r| r.state_digest).collect();
                    assert!(
                        digests.windows(2).all(|pair| pair[0] == pair[1]),
                        "replicas of {} applied the same index but hold different states: {shard:?}",
                        shard.name
                    );
                }
                return;
            }
            last = Some(status);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("replicas did not converge: {last:?}");
    }
}

fn converged(shard: &ShardStatus, replicas: usize) -> bool {
    shard.replicas.len() == replicas
        && shard
            .replicas
            .windows(2)
            .all(|pair| pair[0].applied_index == pair[1].applied_index)
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("server logs and data kept in {}", self.dir.display());
        }
    }
}

/// One HTTP/1.1 request over a fresh connection: the status and the body.
pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // The server may answer (413) and close before reading a large body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `Authorization: Bearer <token>`.
pub fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

/// Reads one counter from a server's `/metrics`.
pub fn metric(address: SocketAddr, name: &str) -> u64 {
    let (status, body) = http(address, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}
