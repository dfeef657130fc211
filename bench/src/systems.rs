//! The two systems under test as processes on loopback: a 3-server Agenda cluster (the
//! `server` binary next to this one) and a 3-member etcd cluster (Debian's `etcd`), both with
//! their data in the same folder (so on the same disk), fsync on, heartbeats every 100 ms and
//! elections after 1 s. Each can be started, asked who leads, have a member SIGKILLed and
//! restarted, and read for its processes' CPU time, peak memory and fsync counts.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Members of each cluster.
pub const MEMBERS: usize = 3;

/// A process's resource use, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Peak resident memory (`VmHWM`), in bytes.
    pub peak_bytes: u64,
}

/// The clock ticks per second of `/proc/<pid>/stat`'s CPU times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The CPU time and peak memory of process `pid` (zero for a process that is gone).
pub fn usage(pid: u32) -> Usage {
    let mut usage = Usage::default();
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after the command name (which may hold spaces, inside parentheses).
        if let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
            let ticks: f64 = [11, 12]
                .iter()
                .filter_map(|&index| fields.get(index)?.parse::<f64>().ok())
                .sum();
            usage.cpu_seconds = ticks / clock_ticks();
        }
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        usage.peak_bytes = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib * 1024);
    }
    usage
}

/// One member process, restartable.
struct Member {
    command: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.command[0]))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Which system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This project, with one shard (etcd's shape).
    AgendaOneShard,
    /// This project, the default four shards with their leaders spread.
    AgendaFourShards,
    /// etcd.
    Etcd,
}

impl Kind {
    /// The name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::AgendaOneShard => "agenda-1-shard",
            Kind::AgendaFourShards => "agenda-4-shards",
            Kind::Etcd => "etcd",
        }
    }
}

/// A running cluster of [`MEMBERS`] processes.
pub struct Cluster {
    /// Which system it is.
    pub kind: Kind,
    members: Vec<Member>,
    /// Each member's client address (native port, or etcd's client URL).
    pub clients: Vec<SocketAddr>,
    /// Each member's address for `/metrics` (the HTTP port, or etcd's client URL).
    pub metrics: Vec<SocketAddr>,
    /// The operator token (Agenda).
    pub token: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    /// Starts an Agenda cluster of `kind` in `data` (emptied first), with `server` the binary.
    pub fn agenda(kind: Kind, server: &Path, data: &Path) -> anyhow::Result<Cluster> {
        let base_http = 28_101;
        reset(data)?;
        let token = "bench-operator-token-0123456789".to_owned();
        let addresses: Vec<server::ServerAddresses> = (1..=MEMBERS as u16)
            .map(|id| server::ServerAddresses {
                id: u64::from(id),
                http: Some(local(base_http + id - 1)),
                client: local(base_http + 1000 + id - 1),
                peer: local(base_http + 2000 + id - 1),
            })
            .collect();
        let shards = match kind {
            Kind::AgendaFourShards => server::default_shards(MEMBERS),
            _ => vec![server::ShardSpec {
                id: 1,
                name: "everything".into(),
                start: String::new(),
                end: String::new(),
                voters: (1..=MEMBERS as u64).collect(),
                learners: Vec::new(),
            }],
        };
        let mut members = Vec::new();
        for address in &addresses {
            let config = server::ServerConfig {
                server_id: address.id,
                cluster_id: 1,
                cluster_secret: "bench cluster secret 0123456789".into(),
                operator_tokens: vec![token.clone()],
                tokens: Vec::new(),
                data_dir: data.join(format!("server-{}", address.id)),
                servers: addresses.clone(),
                shards: shards.clone(),
                timing: server::Timing::default(),
                limits: server::Limits::default(),
            };
            let path = data.join(format!("server-{}.toml", address.id));
            std::fs::write(&path, toml::to_string(&config)?)?;
            let mut member = Member {
                command: vec![
                    server.display().to_string(),
                    "--log-level".into(),
                    "warn".into(),
                    "serve".into(),
                    "--config".into(),
                    path.display().to_string(),
                    "--init".into(),
                ],
                log: data.join(format!("server-{}.log", address.id)),
                child: None,
            };
            member.start()?;
            // Restarts go on from the data already there.
            member.command.pop();
            members.push(member);
        }
        let cluster = Cluster {
            kind,
            clients: addresses.iter().map(|address| address.client).collect(),
            metrics: addresses
                .iter()
                .filter_map(|address| address.http)
                .collect(),
            members,
            token,
        };
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Starts an etcd cluster in `data` (emptied first), with `etcd` the binary.
    pub fn etcd(etcd: &Path, data: &Path) -> anyhow::Result<Cluster> {
        reset(data)?;
        let client_port = |id: u16| 23_790 + id;
        let peer_port = |id: u16| 23_800 + id;
        let initial: Vec<String> = (1..=MEMBERS as u16)
            .map(|id| format!("m{id}=http://127.0.0.1:{}", peer_port(id)))
            .collect();
        let mut members = Vec::new();
        for id in 1..=MEMBERS as u16 {
            let client = format!("http://127.0.0.1:{}", client_port(id));
            let peer = format!("http://127.0.0.1:{}", peer_port(id));
            let mut member = Member {
                command: vec![
                    etcd.display().to_string(),
                    format!("--name=m{id}"),
                    format!("--data-dir={}", data.join(format!("m{id}")).display()),
                    format!("--listen-client-urls={client}"),
                    format!("--advertise-client-urls={client}"),
                    format!("--listen-peer-urls={peer}"),
                    format!("--initial-advertise-peer-urls={peer}"),
                    format!("--initial-cluster={}", initial.join(",")),
                    "--initial-cluster-state=new".into(),
                    "--initial-cluster-token=bench".into(),
                    "--heartbeat-interval=100".into(),
                    "--election-timeout=1000".into(),
                    "--logger=zap".into(),
                    "--log-level=error".into(),
                ],
                log: data.join(format!("m{id}.log")),
                child: None,
            };
            member.start()?;
            members.push(member);
        }
        let addresses: Vec<SocketAddr> = (1..=MEMBERS as u16)
            .map(|id| local(client_port(id)))
            .collect();
        let cluster = Cluster {
            kind: Kind::Etcd,
            clients: addresses.clone(),
            metrics: addresses,
            members,
            token: String::new(),
        };
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Waits until every member runs and every shard (etcd: the cluster) has a leader.
    pub fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self
                .leaders()
                .is_ok_and(|leaders| leaders.iter().all(|l| l.is_some()))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not elect its leaders within {within:?}",
                    self.kind.name()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Per shard (etcd: one), the index into the members of its leader, if known.
    pub fn leaders(&self) -> anyhow::Result<Vec<Option<usize>>> {
        match self.kind {
            Kind::Etcd => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let mut ids = Vec::new();
                    let mut leader = 0;
                    for address in &self.clients {
                        let status = tokio::time::timeout(Duration::from_secs(1), async {
                            crate::grpc::Etcd::connect(*address).await?.status().await
                        })
                        .await;
                        match status {
                            Ok(Ok(status)) => {
                                ids.push(Some(status.member_id));
                                if status.leader != 0 {
                                    leader = status.leader;
                                }
                            }
                            _ => ids.push(None),
                        }
                    }
                    Ok(vec![ids.iter().position(|id| *id == Some(leader))])
                })
            }
            _ => {
                let mut last_error = None;
                for (index, address) in self.metrics.iter().enumerate() {
                    if self.members[index].child.is_none() {
                        continue;
                    }
                    match server::probe::get(*address, "/v1/cluster/status") {
                        Ok(body) => {
                            let status: serde_json::Value = serde_json::from_str(&body)?;
                            return Ok(status["shards"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|shard| {
                                    let leader = shard["leader_id"].as_u64().unwrap_or(0);
                                    (leader >= 1).then(|| leader as usize - 1)
                                })
                                .collect());
                        }
                        Err(error) => last_error = Some(anyhow::Error::from(error)),
                    }
                }
                Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no member is running")))
            }
        }
    }

    /// SIGKILLs member `index`.
    pub fn kill(&mut self, index: usize) {
        self.members[index].kill();
    }

    /// Starts member `index` again on its data.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.members[index].start()
    }

    /// The CPU time and peak memory of every member, summed.
    pub fn usage(&self) -> Usage {
        self.members.iter().filter_map(Member::pid).map(usage).fold(
            Usage::default(),
            |total, one| Usage {
                cpu_seconds: total.cpu_seconds + one.cpu_seconds,
                peak_bytes: total.peak_bytes + one.peak_bytes,
            },
        )
    }

    /// Over every member: (fsyncs, entries made durable), from their `/metrics`; `None` when
    /// a member did not answer (a sum over fewer members would be wrong, not just smaller).
    pub fn fsyncs_and_entries(&self) -> Option<(f64, f64)> {
        let (fsyncs, entries) = match self.kind {
            Kind::Etcd => (
                "etcd_disk_wal_fsync_duration_seconds_count",
                "etcd_server_proposals_committed_total",
            ),
            _ => ("agenda_fsyncs", "agenda_entries_persisted"),
        };
        let mut totals = (0.0, 0.0);
        for address in &self.metrics {
            let text = server::probe::get(*address, "/metrics").ok()?;
            totals.0 += server::probe::metric(&text, fsyncs);
            totals.1 += server::probe::metric(&text, entries);
        }
        Some(totals)
    }
}

/// Empties `data` (a previous run's) and creates it.
fn reset(data: &Path) -> anyhow::Result<()> {
    if data.exists() {
        std::fs::remove_dir_all(data).with_context(|| format!("emptying {}", data.display()))?;
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let mine = usage(std::process::id());
        assert!(mine.peak_bytes > 0);
        let gone = usage(u32::MAX);
        assert_eq!((gone.cpu_seconds, gone.peak_bytes), (0.0, 0));
    }
}
