//! One simulation run: the cluster on simulated machines, the clients, the nemesis, the two
//! phases and the checks.

use crate::feed::{self, Feed};
use crate::history::{History, Recorder};
use crate::invariants::Invariants;
use crate::options::{Draw, Focus, Options};
use crate::subscriber::Subscriber;
use crate::timeline::{FaultSpan, LeaderSpan, Timeline};
use client::{Client, ClientConfig, MembershipChange, Request, ServerId};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use server::{ServerAddresses, ServerConfig, StartOptions, Timing};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use storage::{Crash, FaultError, FaultOperation, MemFs};
use tokio::time::Instant;

const TOKEN: &str = "simulation-operator-token";

/// What a passing run did, for the log.
#[derive(Debug, Clone)]
pub struct Report {
    /// The options the seed drew.
    pub options: Options,
    /// Client operations recorded (completed and unknown).
    pub operations: usize,
    /// Operations whose outcome the clients never learned.
    pub unknown: usize,
    /// Faults the nemesis injected.
    pub faults: usize,
    /// Change notifications the gateway's subscribers received, all checked.
    pub notifications: usize,
    /// Times a subscriber resumed (on the same or another server) after a connection ended.
    pub resumes: usize,
    /// Entries applied and snapshots installed over every replica.
    pub entries_applied: u64,
    /// Snapshots installed over every replica.
    pub snapshots_installed: u64,
    /// Agenda operations acknowledged, and failed or unknown.
    pub agenda_operations: (usize, usize),
    /// Invitations checked at the end against their events' last version.
    pub invitations_checked: usize,
    /// Simulated time the run took.
    pub simulated: Duration,
}

/// Why a run failed: what broke, and the options of the seed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The options the seed drew.
    pub options: Box<Options>,
    /// What broke.
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "simulation failed: {}\noptions: {}\nreplay: {}MADSIM_TEST_SEED={} RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo test -p sim --test simulation -- --nocapture",
            self.reason,
            self.options,
            match self.options.focus {
                Focus::Any => String::new(),
                focus => format!("SIM_FOCUS={} ", focus.name()),
            },
            self.options.seed
        )
    }
}

fn addresses(servers: usize) -> Vec<ServerAddresses> {
    (1..=servers as u64)
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

fn server_config(options: &Options, id: u64) -> ServerConfig {
    ServerConfig {
        server_id: id,
        cluster_id: 11,
        cluster_secret: "simulation cluster secret".into(),
        operator_tokens: vec![TOKEN.into()],
        tokens: Vec::new(),
        data_dir: "/data".into(),
        servers: addresses(options.servers),
        shards: options.shards.clone(),
        timing: Timing {
            tick_ms: options.tick_ms,
            heartbeat_ticks: options.heartbeat_ticks,
            election_ticks: options.election_ticks,
            request_timeout_ms: 3_000,
            forward_timeout_ms: 500,
            balance_interval_ms: 1_000,
            lease_reads: options.lease_reads,
        },
        limits: server::Limits {
            snapshot_entries: options.snapshot_entries,
            append_bytes_max: options.append_bytes_max,
            ..Default::default()
        },
    }
}

/// The simulated cluster: one machine per server, each with its own disk.
struct Cluster {
    options: Options,
    nodes: Vec<NodeHandle>,
    disks: Vec<MemFs>,
    invariants: Arc<Invariants>,
    /// Servers killed and not yet restarted.
    down: Vec<bool>,
    paused: Vec<bool>,
    /// Links cut by the nemesis, to heal.
    clogged: Vec<(usize, usize)>,
    /// Set by a machine whose server stopped (its disk failed).
    stopped: Vec<Arc<AtomicBool>>,
    /// Set by the nemesis when it arms a disk fault on a server, cleared when the server stops
    /// because of it or when the fault is cleared (a crash, a heal).
    disk_fault_armed: Vec<Arc<AtomicBool>>,
    /// The disk fault armed on each server: its operation, and the operation count once it
    /// has fired.
    armed: Vec<Option<(FaultOperation, u64)>>,
    /// Each server's wall clock, which the nemesis steps.
    wall_clocks: Vec<server::WallClock>,
    /// The faults injected, for the timeline.
    fault_spans: Vec<FaultSpan>,
    started: Instant,
}

impl Cluster {
    fn start(options: &Options, invariants: Arc<Invariants>) -> Cluster {
        let handle = Handle::current();
        let faults = net::FaultConfig {
            seed: options.seed,
            drop_per_million: options.faults.message_drop_per_million,
            duplicate_per_million: options.faults.message_duplicate_per_million,
            delay_per_million: options.faults.message_delay_per_million,
            delay_ms_min: 1,
            delay_ms_max: 200,
        };
        let mut nodes = Vec::new();
        let mut disks = Vec::new();
        let mut stopped_flags = Vec::new();
        let mut armed_flags = Vec::new();
        let wall_clocks: Vec<server::WallClock> =
            (0..options.servers).map(|_| Default::default()).collect();
        for id in 1..=options.servers as u64 {
            let wall_clock = wall_clocks[id as usize - 1].clone();
            let disk = MemFs::with_seed(options.seed ^ id);
            disks.push(disk.clone());
            let config = server_config(options, id);
            let clock_drift_ppm = options.clock_drift_ppm[id as usize - 1];
            let observer: Arc<dyn server::observe::Observer> = invariants.clone();
            let started = Arc::new(AtomicBool::new(false));
            let stopped = Arc::new(AtomicBool::new(false));
            stopped_flags.push(stopped.clone());
            let disk_fault_armed = Arc::new(AtomicBool::new(false));
            armed_flags.push(disk_fault_armed.clone());
            let invariants_of_node = invariants.clone();
            let node = handle
                .create_node()
                .name(format!("server-{id}"))
                .ip(config.me().peer.ip())
                .init(move || {
                    let (config, disk, observer, started, stopped) = (
                        config.clone(),
                        disk.clone(),
                        observer.clone(),
                        started.clone(),
                        stopped.clone(),
                    );
                    let (disk_fault_armed, invariants, wall_clock) = (
                        disk_fault_armed.clone(),
                        invariants_of_node.clone(),
                        wall_clock.clone(),
                    );
                    async move {
                        let init = !started.swap(true, Ordering::SeqCst);
                        let start = StartOptions {
                            init,
                            transport_faults: Some(faults),
                            observer: Some(observer),
                            clock_drift_ppm,
                            wall_clock,
                        };
                        // The sockets of the machine's previous life may take a moment to go.
                        let mut attempts = 0;
                        let server = loop {
                            match server::start(config.clone(), disk.clone(), start.clone()).await {
                                Ok(server) => break Some(server),
                                Err(server::Error::Listen { .. }) if attempts < 100 => {
                                    attempts += 1;
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                // The disk failed while the server started (an injected fault):
                                // it stops, like a server whose disk fails later.
                                Err(server::Error::Start(server::StartError::Storage {
                                    source: storage::Error::Io { .. } | storage::Error::Poisoned,
                                    ..
                                })) => break None,
                                // Anything else means the server refuses its own disk: a bug.
                                Err(error) => {
                                    panic!("server {} did not start: {error}", config.server_id)
                                }
                            }
                        };
                        let stopped_because = match server {
                            Some(server) => format!("{:?}", server.wait().await),
                            None => "its disk failed at start".to_owned(),
                        };
                        // Only an injected disk fault may stop a server: any other end of its
                        // node loop is a bug the supervisor must not hide.
                        if !disk_fault_armed.swap(false, Ordering::SeqCst) {
                            invariants.record(format!(
                                "server {} stopped without an injected disk fault: {stopped_because}",
                                config.server_id
                            ));
                        }
                        // A server whose disk failed stops, as its process would exit; the
                        // nemesis restarts the machine (see `Cluster::restart_stopped`) and the
                        // server starts again from what the disk kept.
                        disk.crash(Crash::LoseUnsynced);
                        disk.clear_faults();
                        stopped.store(true, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                })
                .build();
            nodes.push(node);
        }
        Cluster {
            options: options.clone(),
            down: vec![false; nodes.len()],
            paused: vec![false; nodes.len()],
            nodes,
            disks,
            invariants,
            clogged: Vec::new(),
            stopped: stopped_flags,
            disk_fault_armed: armed_flags,
            armed: vec![None; options.servers],
            wall_clocks,
            fault_spans: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Restarts the machines whose server stopped on a disk failure (a supervisor would).
    fn restart_stopped(&mut self) {
        for index in 0..self.nodes.len() {
            if self.stopped[index].swap(false, Ordering::SeqCst) && !self.down[index] {
                Handle::current().kill(self.nodes[index].id());
                self.down[index] = true;
                self.restart(index);
            }
        }
    }

    fn kill(&mut self, index: usize, draw: &mut Draw) {
        if self.down[index] {
            return;
        }
        Handle::current().kill(self.nodes[index].id());
        // Half the crashes tear what was unsynced; under the torn-writes focus, every one.
        let tear_per_mille = if self.options.focus == Focus::TornWrites {
            1000
        } else {
            500
        };
        let crash = if self.options.faults.torn_writes && draw.chance(tear_per_mille) {
            // Any unsynced write torn, a torn write whose lost bytes read back as zeros, or
            // the WAL's last write torn (the tail recovery must cut).
            let seed = draw.next_u64();
            match draw.between(0, 2) {
                0 => Crash::Tear { seed },
                1 => Crash::TearZeroFill { seed },
                _ => Crash::TearLastWrite { seed },
            }
        } else {
            Crash::LoseUnsynced
        };
        self.disks[index].crash(crash);
        self.armed[index] = None;
        self.disk_fault_armed[index].store(false, Ordering::SeqCst);
        self.down[index] = true;
    }

    /// Closes the open fault spans of `server` whose description holds `what`.
    fn end_fault(&mut self, server: u64, what: &str) {
        let now = self.now_us();
        for span in &mut self.fault_spans {
            if span.to_us.is_none() && span.servers == [server] && span.description.contains(what) {
                span.to_us = Some(now);
            }
        }
    }

    fn restart(&mut self, index: usize) {
        if !self.down[index] {
            return;
        }
        self.invariants.restarted(index as u64 + 1);
        self.end_fault(index as u64 + 1, "killed");
        Handle::current().restart(self.nodes[index].id());
        self.down[index] = false;
    }

    fn clog(&mut self, from: usize, to: usize) {
        NetSim::current().clog_link(self.nodes[from].id(), self.nodes[to].id());
        self.clogged.push((from, to));
    }

    /// Cuts the link between `a` and `b` both ways.
    fn cut(&mut self, a: usize, b: usize) {
        self.clog(a, b);
        self.clog(b, a);
    }

    fn heal_network(&mut self) {
        let net = NetSim::current();
        for (from, to) in self.clogged.drain(..) {
            net.unclog_link(self.nodes[from].id(), self.nodes[to].id());
        }
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Records a fault for the timeline.
    fn log_fault(&mut self, description: String, servers: Vec<u64>) {
        let from_us = self.now_us();
        self.fault_spans.push(FaultSpan {
            description,
            servers,
            from_us,
            to_us: None,
        });
    }

    fn heal_all(&mut self) {
        let now = self.now_us();
        for span in &mut self.fault_spans {
            span.to_us.get_or_insert(now);
        }
        self.heal_network();
        self.restart_stopped();
        for index in 0..self.nodes.len() {
            if self.paused[index] {
                Handle::current().resume(self.nodes[index].id());
                self.paused[index] = false;
            }
            // A fault that already fired keeps its flag: the server it stops may report the
            // stop only after this heal (its shutdown takes a moment).
            let fired = self.armed[index]
                .take()
                .is_some_and(|(operation, fires_at)| {
                    self.disks[index].operation_count(operation) >= fires_at
                });
            self.disks[index].clear_faults();
            self.wall_clocks[index].reset();
            if !fired {
                self.disk_fault_armed[index].store(false, Ordering::SeqCst);
            }
            self.restart(index);
        }
    }
}

fn client(options: &Options, request_timeout: Duration) -> Client {
    let servers: Vec<(ServerId, SocketAddr)> = addresses(options.servers)
        .iter()
        .map(|server| (server.id, server.client))
        .collect();
    let mut config = ClientConfig::new(servers, TOKEN);
    config.request_timeout = request_timeout;
    config.attempt_timeout = Duration::from_millis(1_000);
    Client::new(config)
}

/// Every machine a run created, killed when the run returns (pass or fail; a run that panics
/// is abandoned with its runtime, and only that seed's tasks are not freed).
///
/// madsim drops a task only when it polls it: a task still waiting when the runtime is dropped
/// (a server's transport, its node loop, a client's connection) is never freed, and the wakers
/// it left in channels and timers keep it alive. Killing a machine wakes every task it has, so
/// the executor drops them. Without this, one process running thousands of seeds (the soak)
/// grew by about 3 MB a seed until the kernel killed it.
struct Machines(Vec<madsim::task::NodeId>);

impl Drop for Machines {
    fn drop(&mut self) {
        // Outside a runtime (never, today) there is nothing to kill.
        let Ok(handle) = Handle::try_current() else {
            return;
        };
        for &machine in &self.0 {
            handle.kill(machine);
        }
    }
}

/// Runs the simulation of the current madsim seed, under the focus `SIM_FOCUS` names (none:
/// whatever the seed draws).
///
/// # Errors
/// The first invariant broken, a history that is not linearizable, or a cluster that did not
/// recover in the liveness phase.
pub async fn run() -> Result<Report, Failure> {
    run_focused(Focus::from_env()).await
}

/// Runs the simulation of the current madsim seed with its options restricted by `focus`.
///
/// # Errors
/// As [`run`].
pub async fn run_focused(focus: Focus) -> Result<Report, Failure> {
    let seed = Handle::current().seed();
    let options = Options::from_seed_focused(seed, focus);
    let fail = |reason: String| Failure {
        options: Box::new(options.clone()),
        reason,
    };
    let started = Instant::now();
    let invariants = Arc::new(Invariants::new(started));
    let mut cluster = Cluster::start(&options, invariants.clone());
    cluster.started = started;
    let mut machines = Machines(cluster.nodes.iter().map(NodeHandle::id).collect());
    let recorder = Recorder::new(started);
    let safety_end = started + Duration::from_millis(options.safety_ms);

    // The clients, each on its own machine.
    let handle = Handle::current();
    let mut workers = Vec::new();
    for index in 0..options.clients {
        let node = handle
            .create_node()
            .name(format!("client-{index}"))
            .ip([10, 0, 1, index as u8 + 1].into())
            .build();
        machines.0.push(node.id());
        let client = client(&options, Duration::from_secs(5));
        let recorder = recorder.clone();
        let keys = options.keys.clone();
        let draw = Draw::new(seed ^ (index as u64 + 1).rotate_left(40));
        workers.push(node.spawn(crate::history::workload(
            client,
            index as u64 + 1,
            keys,
            draw,
            recorder,
            safety_end,
        )));
    }

    // People using the agenda layer, each on a machine of its own.
    let agenda_log = Arc::new(std::sync::Mutex::new(crate::agenda::Log::default()));
    for index in 0..options.agenda_clients {
        let node = handle
            .create_node()
            .name(format!("agenda-{index}"))
            .ip([10, 0, 5, index as u8 + 1].into())
            .build();
        machines.0.push(node.id());
        let client = client(&options, Duration::from_secs(5));
        let draw = Draw::new(seed ^ (index as u64 + 1).rotate_left(56));
        workers.push(node.spawn(crate::agenda::workload(
            client,
            draw,
            safety_end,
            agenda_log.clone(),
        )));
    }

    // The gateway's subscribers, each on its own machine, until the end of the run.
    let subscribers_stop = Arc::new(AtomicBool::new(false));
    let mut feeds = Vec::new();
    for (index, channel) in options.subscribers.iter().enumerate() {
        let node = handle
            .create_node()
            .name(format!("subscriber-{index}"))
            .ip([10, 0, 4, index as u8 + 1].into())
            .build();
        machines.0.push(node.id());
        let feed = Feed::new(channel.clone());
        feeds.push(feed.clone());
        let subscriber = Subscriber {
            servers: addresses(options.servers)
                .iter()
                .map(|server| server.client)
                .collect(),
            token: TOKEN.into(),
            stop: subscribers_stop.clone(),
            feed,
            invariants: invariants.clone(),
        };
        let draw = Draw::new(seed ^ (index as u64 + 1).rotate_left(48));
        node.spawn(subscriber.run(draw));
    }

    // The nemesis, from a machine of its own (it also sends membership changes).
    let nemesis_node = handle
        .create_node()
        .name("nemesis")
        .ip([10, 0, 2, 1].into())
        .build();
    machines.0.push(nemesis_node.id());
    let operator = client(&options, Duration::from_secs(3));
    let mut draw = Draw::new(seed ^ 0x004e_454d_4553_4953);
    let mut faults = 0;
    while Instant::now() < safety_end {
        let pause_ms = draw.between(200, 1_500);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        if let Some(violation) = invariants.violation() {
            return Err(fail(violation));
        }
        cluster.restart_stopped();
        if inject(&mut cluster, &mut draw, &operator, &nemesis_node).await {
            faults += 1;
        }
    }
    for worker in workers {
        let _ = worker.await;
    }

    // Liveness: every fault healed, every server running.
    cluster.heal_all();
    let liveness_end = Instant::now() + Duration::from_millis(options.liveness_ms);
    let checker = client(&options, Duration::from_millis(options.liveness_ms));
    let probe_node = handle
        .create_node()
        .name("checker")
        .ip([10, 0, 3, 1].into())
        .build();
    machines.0.push(probe_node.id());
    let shards = options.shards.clone();
    let keys = options.keys.clone();
    let final_reads = recorder.clone();
    let probe = probe_node.spawn(async move {
        for shard in &shards {
            let key = format!("{}liveness-probe", shard.start);
            if let Err(error) = checker.put(key, "alive").await {
                return Err(format!(
                    "shard {} did not commit a write once healed: {error}",
                    shard.name
                ));
            }
        }
        // Every key read at the end: acknowledged writes are still there. These reads must
        // succeed: a read path that fails is a failure, not a gap in the history.
        for key in &keys {
            if final_reads.get(&checker, 0, key).await.is_none() {
                return Err(format!("the final read of {key} failed once healed"));
            }
        }
        Ok(checker)
    });
    let checker = match probe.await {
        Ok(Ok(checker)) => checker,
        Ok(Err(reason)) => return Err(fail(reason)),
        Err(_) => return Err(fail("the liveness checker panicked".into())),
    };
    if Instant::now() > liveness_end {
        return Err(fail(format!(
            "the cluster took longer than {} ms to serve every shard once healed",
            options.liveness_ms
        )));
    }

    // Replicas converge: once they applied the same index, their states are equal.
    let converged = probe_node
        .spawn(converge(checker, options.shards.len(), liveness_end))
        .await
        .unwrap_or_else(|_| Err("the convergence checker panicked".into()));
    if let Err(reason) = converged {
        return Err(fail(reason));
    }
    // Subscribers saw only committed changes, in order, without a gap, and catch up.
    let caught_up = subscribers_caught_up(
        &feeds,
        &invariants,
        liveness_end.max(Instant::now() + Duration::from_secs(15)),
    )
    .await;
    subscribers_stop.store(true, Ordering::Relaxed);
    if let Err(reason) = caught_up {
        return Err(fail(reason));
    }
    if let Some(violation) = invariants.violation() {
        return Err(fail(violation));
    }
    // The agenda's outboxes are delivered, and every attendee holds each event's last version.
    let agenda_log = agenda_log.lock().expect("no panic holds the log").clone();
    let invitations_checked = if options.agenda_clients > 0 {
        let checker = client(&options, Duration::from_secs(5));
        let deadline = liveness_end.max(Instant::now() + Duration::from_secs(20));
        let log = agenda_log.clone();
        let checked = probe_node
            .spawn(async move { crate::agenda::check(checker, &log, deadline).await })
            .await
            .unwrap_or_else(|_| Err("the agenda checker panicked".into()));
        match checked {
            Ok(checked) => checked,
            Err(reason) => return Err(fail(reason)),
        }
    } else {
        0
    };
    let history: History = recorder.history();
    if let Err(reason) = history.check() {
        let timeline = timeline(
            &options,
            &invariants,
            &cluster,
            &history,
            safety_end - started,
            &reason,
        );
        return Err(fail(format!(
            "{reason}\ntimeline: {}",
            write_timeline(&timeline)
        )));
    }
    if std::env::var_os("SIM_TIMELINE").is_some() {
        let timeline = timeline(
            &options,
            &invariants,
            &cluster,
            &history,
            safety_end - started,
            "passed",
        );
        println!("timeline: {}", write_timeline(&timeline));
    }
    let (entries_applied, snapshots_installed) = invariants.counts();
    Ok(Report {
        options,
        operations: history.len(),
        notifications: feeds.iter().map(Feed::changes).sum(),
        resumes: feeds.iter().map(Feed::resumes).sum(),
        unknown: history.unknown(),
        faults,
        entries_applied,
        snapshots_installed,
        agenda_operations: (agenda_log.acknowledged, agenda_log.failed),
        invitations_checked,
        simulated: started.elapsed(),
    })
}

/// The picture of a run.
fn timeline(
    options: &Options,
    invariants: &Invariants,
    cluster: &Cluster,
    history: &History,
    safety: Duration,
    verdict: &str,
) -> Timeline {
    let mut elections = invariants.elections();
    elections.sort_by_key(|(shard, _, term, at)| (*shard, *term, *at));
    let leaders = elections
        .iter()
        .enumerate()
        .map(|(position, (shard, server, term, at))| {
            let next = elections[position + 1..]
                .iter()
                .find(|(other, _, _, _)| other == shard)
                .map(|(_, _, _, next_at)| *next_at);
            LeaderSpan {
                shard: *shard,
                server: *server,
                term: *term,
                from_us: *at,
                to_us: next,
            }
        })
        .collect();
    // The checker names the operations it could not order as `#index`.
    let highlighted = verdict
        .split('#')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    Timeline {
        seed: options.seed,
        servers: options.servers as u64,
        shards: options
            .shards
            .iter()
            .map(|shard| (shard.id, shard.name.clone()))
            .collect(),
        end_us: cluster.now_us(),
        safety_end_us: safety.as_micros() as u64,
        leaders,
        faults: cluster.fault_spans.clone(),
        operations: history.operations().to_vec(),
        highlighted,
        verdict: verdict.to_owned(),
    }
}

/// Writes a timeline as SVG under the system's temporary directory; returns the path (or why
/// it could not be written).
fn write_timeline(timeline: &Timeline) -> String {
    let dir = std::env::temp_dir().join("agenda-sim");
    let path = dir.join(format!("seed-{}.svg", timeline.seed));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, timeline.to_svg())) {
        Ok(()) => path.display().to_string(),
        Err(error) => format!("not written ({error})"),
    }
}

/// Waits until every replica of every shard has applied the same index, then compares their
/// state digests.
async fn converge(client: Client, shards: usize, deadline: Instant) -> Result<(), String> {
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(status) = client.cluster_status_with(true).await {
            let settled = status.shards.len() == shards
                && status.unreachable.is_empty()
                && status.shards.iter().all(|shard| {
                    let members = shard
                        .replicas
                        .iter()
                        .find(|replica| replica.server_id == shard.leader_id)
                        .map_or(0, |leader| leader.voters.len() + leader.learners.len());
                    let current: Vec<_> = shard
                        .replicas
                        .iter()
                        .filter(|replica| {
                            let leader = shard
                                .replicas
                                .iter()
                                .find(|r| r.server_id == shard.leader_id);
                            leader.is_some_and(|leader| {
                                leader.voters.contains(&replica.server_id)
                                    || leader.learners.contains(&replica.server_id)
                            })
                        })
                        .collect();
                    shard.leader_id != 0
                        && current.len() == members
                        && current
                            .windows(2)
                            .all(|pair| pair[0].applied_index == pair[1].applied_index)
                });
            if settled {
                // Every replica at the leader's applied index holds the leader's state
                // (removed replicas still report; they are compared too if they got that far).
                for shard in &status.shards {
                    let leader = shard
                        .replicas
                        .iter()
                        .find(|r| r.server_id == shard.leader_id);
                    let Some(leader) = leader else { continue };
                    let differs = shard.replicas.iter().find(|replica| {
                        replica.applied_index == leader.applied_index
                            && replica.state_digest != leader.state_digest
                    });
                    if let Some(replica) = differs {
                        return Err(format!(
                            "shard {}: server {} applied index {} like the leader but holds a different state: {shard:?}",
                            shard.name, replica.server_id, leader.applied_index
                        ));
                    }
                }
                return Ok(());
            }
            last = format!("{status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the replicas did not converge once healed: {last}"))
}

/// Checks what every subscriber saw so far ([`feed::check`]) and waits until each has
/// received the last change its channel carries in every shard, or `deadline` passes.
async fn subscribers_caught_up(
    feeds: &[Feed],
    invariants: &Invariants,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        let applied = invariants.applied_changes();
        let mut behind = None;
        for (number, feed) in feeds.iter().enumerate() {
            let name = feed.channel().name();
            let seen = feed::check(feed, &applied)
                .map_err(|reason| format!("subscriber {number} to {reason}"))?;
            for (shard, last) in feed::last_carried(feed.channel(), &applied) {
                let position = seen.get(&shard).copied().unwrap_or(0);
                if position < last {
                    behind = Some(format!(
                        "subscriber {number} to {name} is at entry {position} of shard {shard}, whose last change on the channel is at {last}"
                    ));
                }
            }
        }
        let Some(behind) = behind else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(format!("{behind} once healed"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Injects one fault drawn from the enabled classes; says whether one was injected.
async fn inject(
    cluster: &mut Cluster,
    draw: &mut Draw,
    operator: &Client,
    nemesis: &NodeHandle,
) -> bool {
    let faults = cluster.options.faults.clone();
    let classes: Vec<(u64, u8)> = [
        (faults.partition, 0u8),
        (faults.one_way, 1),
        (faults.bridge, 2),
        (faults.kill_leader, 3),
        (faults.kill_random, 4),
        (faults.pause, 5),
        (faults.fsync_error, 6),
        (faults.membership, 7),
        (faults.transfer, 8),
        (faults.clock_jump, 9),
    ]
    .into_iter()
    .filter_map(|(weight, class)| weight.map(|weight| (weight, class)))
    .collect();
    let total: u64 = classes.iter().map(|(weight, _)| weight).sum();
    // Between faults, heal what is broken now and then, so that the run sees recoveries too.
    if draw.chance(400) || total == 0 {
        cluster.heal_all();
        return false;
    }
    let mut pick = draw.between(0, total - 1);
    let class = classes
        .iter()
        .find(|(weight, _)| {
            if pick < *weight {
                return true;
            }
            pick -= weight;
            false
        })
        .map(|(_, class)| *class)
        .expect("a class is picked");
    let servers = cluster.nodes.len();
    match class {
        0 => {
            // Symmetric partition: the leader of a shard cut off from the others (half the
            // time), or a random split.
            let shard = draw.pick(&cluster.options.shards).id;
            let leader = cluster.invariants.newest_leader(shard);
            let side: Vec<bool> = match leader.filter(|_| draw.chance(500)) {
                Some(leader) => (0..servers)
                    .map(|index| index as u64 + 1 == leader)
                    .collect(),
                None => {
                    let mut side: Vec<bool> = (0..servers).map(|_| draw.chance(500)).collect();
                    side[draw.between(0, servers as u64 - 1) as usize] = true;
                    side
                }
            };
            if side.iter().all(|cut| *cut) {
                return false;
            }
            for a in 0..servers {
                for b in 0..servers {
                    if side[a] && !side[b] {
                        cluster.cut(a, b);
                    }
                }
            }
            let cut: Vec<u64> = (0..servers)
                .filter(|i| side[*i])
                .map(|i| i as u64 + 1)
                .collect();
            cluster.log_fault(format!("partition: {cut:?} cut from the others"), cut);
        }
        1 => {
            let from = draw.between(0, servers as u64 - 1) as usize;
            let to = (from + draw.between(1, servers as u64 - 1) as usize) % servers;
            cluster.clog(from, to);
            let servers = vec![from as u64 + 1, to as u64 + 1];
            cluster.log_fault(
                format!("one-way: {} cannot reach {}", from + 1, to + 1),
                servers,
            );
        }
        2 => {
            // A bridge: two halves that only one server connects.
            let bridge = draw.between(0, servers as u64 - 1) as usize;
            let others: Vec<usize> = (0..servers).filter(|index| *index != bridge).collect();
            let (left, right) = others.split_at(others.len() / 2);
            for a in left {
                for b in right {
                    cluster.cut(*a, *b);
                }
            }
            let all = (1..=servers as u64).collect();
            cluster.log_fault(
                format!("bridge: only server {} joins both halves", bridge + 1),
                all,
            );
        }
        3 => {
            let shard = draw.pick(&cluster.options.shards).id;
            let Some(leader) = cluster.invariants.newest_leader(shard) else {
                return false;
            };
            cluster.kill(leader as usize - 1, draw);
            cluster.log_fault(
                format!("leader {leader} of shard {shard} killed"),
                vec![leader],
            );
            if draw.chance(500) {
                // During the election that follows, a voter crashes right after it grants its
                // vote and comes back at once (up to three times): what it promised must
                // survive the crash, when a competing candidate's request of the same term
                // (queued by that candidate's transport while the voter was down) reaches it
                // after the restart.
                let election_ms =
                    u64::from(cluster.options.election_ticks) * cluster.options.tick_ms;
                let until = Instant::now() + Duration::from_millis(2 * election_ms);
                let (_, mut seen) = cluster.invariants.votes_since(usize::MAX);
                let mut crashes = 0;
                while Instant::now() < until && crashes < 3 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let (voters, count) = cluster.invariants.votes_since(seen);
                    seen = count;
                    for voter in voters {
                        let index = voter as usize - 1;
                        if voter != leader && !cluster.down[index] && draw.chance(500) {
                            cluster.kill(index, draw);
                            cluster.restart(index);
                            cluster.log_fault(
                                format!("voter {voter} crashed right after its vote"),
                                vec![voter],
                            );
                            crashes += 1;
                        }
                    }
                }
            }
        }
        4 => {
            let index = draw.between(0, servers as u64 - 1) as usize;
            let was_up = !cluster.down[index];
            cluster.kill(index, draw);
            cluster.log_fault(
                format!("server {} killed", index + 1),
                vec![index as u64 + 1],
            );
            if was_up && cluster.options.faults.torn_writes && draw.chance(500) {
                // It comes back at once, appends to the WAL it recovered (after what a torn
                // write left, if recovery kept it) and crashes again: the next recovery reads
                // past the place the first crash tore.
                cluster.restart(index);
                tokio::time::sleep(Duration::from_millis(draw.between(300, 1_500))).await;
                if !cluster.down[index] {
                    cluster.kill(index, draw);
                    cluster.log_fault(
                        format!("server {} killed again soon after its restart", index + 1),
                        vec![index as u64 + 1],
                    );
                }
            }
        }
        5 => {
            let mut index = draw.between(0, servers as u64 - 1) as usize;
            let shard = draw.pick(&cluster.options.shards).id;
            if draw.chance(300)
                && let Some(leader) = cluster.invariants.newest_leader(shard)
                && !cluster.paused[leader as usize - 1]
                && !cluster.down[leader as usize - 1]
            {
                // A leader stalls while cut off from the other servers (clients still reach
                // it), and comes back after one to two election timeouts, when the others
                // may have elected a new leader: what it answers in the moment after it
                // resumes must not be stale. (The partition stays until the next heal.)
                index = leader as usize - 1;
                for other in (0..servers).filter(|other| *other != index) {
                    cluster.cut(index, other);
                }
                Handle::current().pause(cluster.nodes[index].id());
                cluster.log_fault(
                    format!("leader {leader} of shard {shard} stalled, cut off"),
                    vec![leader],
                );
                let election_ms =
                    u64::from(cluster.options.election_ticks) * cluster.options.tick_ms;
                let stall_ms = draw.between(election_ms, 2 * election_ms);
                tokio::time::sleep(Duration::from_millis(stall_ms)).await;
                Handle::current().resume(cluster.nodes[index].id());
                cluster.end_fault(leader, "stalled");
                return true;
            }
            if !cluster.paused[index] && !cluster.down[index] {
                Handle::current().pause(cluster.nodes[index].id());
                cluster.paused[index] = true;
                cluster.log_fault(
                    format!("server {} paused", index + 1),
                    vec![index as u64 + 1],
                );
                if draw.chance(500) {
                    // A short stall (a long GC, a VM hiccup) about as long as an election
                    // timeout: the others may elect a new leader while it stands still, and
                    // what it does in the moment after it resumes is what matters.
                    let election_ms =
                        u64::from(cluster.options.election_ticks) * cluster.options.tick_ms;
                    let stall_ms = draw.between(election_ms / 2, 3 * election_ms);
                    tokio::time::sleep(Duration::from_millis(stall_ms)).await;
                    Handle::current().resume(cluster.nodes[index].id());
                    cluster.paused[index] = false;
                    cluster.end_fault(index as u64 + 1, "paused");
                }
            }
        }
        6 => {
            let index = draw.between(0, servers as u64 - 1) as usize;
            // The next fsync fails, or a write (the disk is full or broken): either way the
            // WAL refuses to go on and the server stops.
            let (operation, what) = if draw.chance(500) {
                (FaultOperation::Sync, "an fsync")
            } else {
                (FaultOperation::Write, "a write")
            };
            let error = if draw.chance(500) {
                FaultError::Io
            } else {
                FaultError::NoSpace
            };
            let nth = draw.between(1, 20);
            let fires_at = cluster.disks[index].operation_count(operation) + nth + 1;
            cluster.armed[index] = Some((operation, fires_at));
            cluster.disks[index].fail_nth(operation, nth, error);
            cluster.disk_fault_armed[index].store(true, Ordering::SeqCst);
            let description = format!("server {}: {what} will fail", index + 1);
            cluster.log_fault(description, vec![index as u64 + 1]);
        }
        7 => {
            // A membership change drawn from the shard's membership now, as its leader sees
            // it: promote a learner and remove a voter (perhaps the leader itself, so the
            // self-removal path runs too) while four or more would vote; or add back, as a
            // learner, a server the shard lost (it catches up by snapshot or log); or, with
            // no learner and nobody to add, remove a voter so that the next change adds it back.
            let shard = draw.pick(&cluster.options.shards).id;
            let picks = (draw.next_u64(), draw.next_u64());
            let operator = operator.clone();
            let servers = servers as u64;
            let change = nemesis.spawn(async move {
                let status = operator.cluster_status().await.ok()?;
                let shard_status = status.shards.iter().find(|status| status.shard == shard)?;
                let leader = shard_status
                    .replicas
                    .iter()
                    .find(|replica| replica.server_id == shard_status.leader_id)?;
                let (voters, learners) = (leader.voters.clone(), leader.learners.clone());
                let absent: Vec<ServerId> = (1..=servers)
                    .filter(|server| !voters.contains(server) && !learners.contains(server))
                    .collect();
                let pick =
                    |items: &[ServerId], draw: u64| items[(draw % items.len() as u64) as usize];
                let mut changes = Vec::new();
                if !learners.is_empty() {
                    let learner = pick(&learners, picks.0);
                    changes.push(MembershipChange::AddVoter(learner));
                    if voters.len() >= 3 {
                        changes.push(MembershipChange::Remove(pick(&voters, picks.1)));
                    }
                } else if !absent.is_empty() {
                    changes.push(MembershipChange::AddLearner(pick(&absent, picks.0)));
                } else if voters.len() >= 3 {
                    changes.push(MembershipChange::Remove(pick(&voters, picks.1)));
                }
                let mut done = Vec::new();
                for change in changes {
                    let request = Request::ChangeMembership { shard, change };
                    if let Ok(client::Response::Done) = operator.request(request).await {
                        done.push(change);
                    }
                }
                Some(done)
            });
            let Ok(Some(changes)) = change.await else {
                return false;
            };
            if changes.is_empty() {
                return false;
            }
            let description = format!("shard {shard}: {changes:?}");
            cluster.log_fault(description, Vec::new());
        }
        9 => {
            // An operator or NTP steps a server's wall clock by a minute to two hours, either
            // way (a heal sets it right: another step). Sessions expire after an hour of the
            // shard's clock: were it the wall clock, a step forward on a leader would expire
            // them and let a client's retry apply twice.
            let index = draw.between(0, servers as u64 - 1) as usize;
            let by_ms = draw.between(60_000, 7_200_000) as i64;
            let by_ms = if draw.chance(500) { by_ms } else { -by_ms };
            cluster.wall_clocks[index].step(by_ms);
            let description = format!("server {}: wall clock stepped {by_ms} ms", index + 1);
            cluster.log_fault(description, vec![index as u64 + 1]);
        }
        _ => {
            let shard = draw.pick(&cluster.options.shards).clone();
            let to = *draw.pick(&shard.voters);
            let operator = operator.clone();
            let transfer = nemesis.spawn(async move {
                let _ = operator
                    .request(Request::TransferLeader {
                        shard: shard.id,
                        to,
                    })
                    .await;
            });
            let _ = transfer.await;
            cluster.log_fault(format!("shard {}: leadership to {to}", shard.id), vec![to]);
        }
    }
    true
}
