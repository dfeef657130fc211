//! The transport under madsim: the same code, simulated network and time, faults from the config.
//!
//! Run with `RUSTFLAGS="--cfg madsim" cargo test -p net --test sim`.

#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle, Runtime};
use net::handshake::{HELLO_BYTES, Hello, NONCE_BYTES, PROTOCOL_VERSION, acceptor_proof};
use net::{FaultConfig, Incoming, Metrics, ServerId, Transport, TransportConfig};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MESSAGES: u64 = 200;
const SECRET: &[u8; 24] = b"simulated cluster secret";
/// Simulated quiet time after which the receiver decides that nothing more is coming.
const QUIET: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct GroupMessage {
    group: u32,
    sequence: u64,
}

fn config(
    server_id: ServerId,
    peer: ServerId,
    peer_address: SocketAddr,
    faults: FaultConfig,
) -> TransportConfig {
    let peers = BTreeMap::from([(peer, peer_address)]);
    let mut config = TransportConfig::new(server_id, 1, *SECRET, peers);
    config.faults = faults;
    config
}

/// What server 2 saw: the messages in arrival order, and its counters.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    arrivals: Vec<(u32, u64)>,
    metrics: Metrics,
    reply_received: bool,
}

/// Two simulated machines, server-1 at 10.0.0.1 and server-2 at 10.0.0.2, each listening on
/// port 7000.
fn two_servers() -> [(NodeHandle, SocketAddr); 2] {
    let simulator = Handle::current();
    [1u8, 2].map(|number| {
        let address = SocketAddr::from(([10, 0, 0, number], 7000));
        let node = simulator
            .create_node()
            .name(format!("server-{number}"))
            .ip(address.ip())
            .build();
        (node, address)
    })
}

/// Server 1 sends `MESSAGES` messages to server 2, whose transport injects `faults`; server 2
/// answers the first message it gets.
async fn exchange(faults: FaultConfig) -> Observed {
    let [(node_1, address_1), (node_2, address_2)] = two_servers();

    let receiver = node_2.spawn(async move {
        let listener = TcpListener::bind(address_2).await.unwrap();
        let config = config(2, 1, address_1, faults);
        let (handle, mut events) = Transport::start::<GroupMessage>(config, listener).unwrap();
        let mut arrivals = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout(QUIET, events.recv()).await {
            if let Incoming::Message { message, .. } = event {
                if arrivals.is_empty() {
                    handle.send(1, message.clone()).unwrap();
                }
                arrivals.push((message.group, message.sequence));
            }
        }
        (arrivals, handle.metrics())
    });
    let sender = node_1.spawn(async move {
        let listener = TcpListener::bind(address_1).await.unwrap();
        let config = config(1, 2, address_2, FaultConfig::default());
        let (handle, mut events) = Transport::start::<GroupMessage>(config, listener).unwrap();
        for sequence in 0..MESSAGES {
            let message = GroupMessage {
                group: (sequence % 4) as u32,
                sequence,
            };
            handle.send(2, message).unwrap();
        }
        loop {
            match tokio::time::timeout(QUIET * 2, events.recv()).await {
                Ok(Some(Incoming::Message { from: 2, .. })) => return true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    });
    let reply_received = sender.await.unwrap();
    let (arrivals, metrics) = receiver.await.unwrap();
    Observed {
        arrivals,
        metrics,
        reply_received,
    }
}

#[madsim::test]
async fn messages_round_trip_in_order_without_faults() {
    let observed = exchange(FaultConfig::default()).await;
    let expected: Vec<(u32, u64)> = (0..MESSAGES).map(|n| ((n % 4) as u32, n)).collect();
    assert_eq!(observed.arrivals, expected);
    assert!(observed.reply_received);
    assert_eq!(observed.metrics.frames_received, MESSAGES);
}

fn lossy() -> FaultConfig {
    FaultConfig {
        seed: 99,
        drop_per_million: 200_000,
        duplicate_per_million: 200_000,
        delay_per_million: 200_000,
        delay_ms_min: 1,
        delay_ms_max: 50,
    }
}

#[madsim::test]
async fn fault_hooks_drop_duplicate_and_delay() {
    let observed = exchange(lossy()).await;
    let metrics = observed.metrics;
    assert_eq!(metrics.frames_received, MESSAGES);
    assert!(metrics.faults_dropped > 0, "{metrics:?}");
    assert!(metrics.faults_duplicated > 0, "{metrics:?}");
    assert!(metrics.faults_delayed > 0, "{metrics:?}");
    let expected_arrivals = MESSAGES - metrics.faults_dropped + metrics.faults_duplicated;
    assert_eq!(observed.arrivals.len() as u64, expected_arrivals);
    // Delays reorder: the arrival order is no longer the sending order.
    let sequences: Vec<u64> = observed.arrivals.iter().map(|arrival| arrival.1).collect();
    assert!(sequences.windows(2).any(|pair| pair[0] > pair[1]));
}

#[test]
fn madsim_finds_no_nondeterminism() {
    // madsim logs every draw of its RNG with the simulated time in a first run and panics at the
    // first difference in a second run with the same seed. This caught shutdown through a tokio
    // `watch` channel, whose wake order comes from tokio's unseeded generator.
    let observed = Runtime::check_determinism(5, madsim::Config::default(), || exchange(lossy()));
    assert!(observed.reply_received);
}

#[test]
fn a_seed_replays_the_same_run() {
    let run = |seed| {
        let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(exchange(lossy()))
    };
    let first = run(5);
    assert_eq!(first, run(5));
    assert!(first.reply_received);
}

/// Waits on server 1's events for `wanted`, skipping everything else.
async fn wait_for(
    events: &mut tokio::sync::mpsc::Receiver<Incoming<GroupMessage>>,
    wanted: impl Fn(&Incoming<GroupMessage>) -> bool,
) {
    loop {
        let event = tokio::time::timeout(QUIET * 10, events.recv())
            .await
            .expect("the awaited event never came")
            .expect("the transport closed its channel");
        if wanted(&event) {
            return;
        }
    }
}

fn reply_to(sequence: u64) -> impl Fn(&Incoming<GroupMessage>) -> bool {
    move |event| matches!(event, Incoming::Message { from: 2, message } if message.sequence == sequence)
}

#[madsim::test]
async fn a_killed_peer_is_reported_down_and_reconnected_after_restart() {
    let simulator = Handle::current();
    let address_1: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let address_2: SocketAddr = "10.0.0.2:7000".parse().unwrap();
    // Server 2 echoes every message; `init` runs again on restart.
    let node_2 = simulator
        .create_node()
        .name("server-2")
        .ip(address_2.ip())
        .init(move || async move {
            let listener = TcpListener::bind(address_2).await.unwrap();
            let config = config(2, 1, address_1, FaultConfig::default());
            let (handle, mut events) = Transport::start::<GroupMessage>(config, listener).unwrap();
            while let Some(event) = events.recv().await {
                if let Incoming::Message { message, .. } = event {
                    let _ = handle.send(1, message);
                }
            }
        })
        .build();
    let node_1 = simulator
        .create_node()
        .name("server-1")
        .ip(address_1.ip())
        .build();
    let ping = |sequence| GroupMessage { group: 0, sequence };

    let (handle, mut events) = node_1
        .spawn(async move {
            let listener = TcpListener::bind(address_1).await.unwrap();
            let config = config(1, 2, address_2, FaultConfig::default());
            let (handle, mut events) = Transport::start::<GroupMessage>(config, listener).unwrap();
            handle.send(2, ping(0)).unwrap();
            wait_for(&mut events, reply_to(0)).await;
            (handle, events)
        })
        .await
        .unwrap();

    simulator.kill(node_2.id());
    let mut events = node_1
        .spawn(async move {
            wait_for(&mut events, |event| *event == Incoming::PeerDown(2)).await;
            events
        })
        .await
        .unwrap();

    simulator.restart(node_2.id());
    let handle_1 = handle.clone();
    node_1
        .spawn(async move {
            wait_for(&mut events, |event| *event == Incoming::PeerUp(2)).await;
            handle_1.send(2, ping(1)).unwrap();
            wait_for(&mut events, reply_to(1)).await;
        })
        .await
        .unwrap();
    let metrics = handle.metrics();
    assert_eq!(metrics.connections_established, 2, "{metrics:?}");
    assert_eq!(metrics.peer_down_events, 1, "{metrics:?}");
}

async fn read_record(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let length = stream.read_u32().await? as usize;
    let mut record = vec![0; length];
    stream.read_exact(&mut record).await?;
    Ok(record)
}

async fn write_record(stream: &mut TcpStream, record: &[u8]) -> std::io::Result<()> {
    stream.write_u32(record.len() as u32).await?;
    stream.write_all(record).await?;
    stream.flush().await
}

/// Completes the handshake as acceptor 2, by hand, then lets the caller drop the connection.
///
/// Fails if the dialer hangs up first, as a dialer may at any time: when its transport stops
/// (here, when the test ends and drops it) it closes the connection it is dialing, and the real
/// acceptor counts that as a failed handshake.
async fn accept_then_hang_up(listener: &TcpListener) -> std::io::Result<()> {
    let (mut stream, _) = listener.accept().await.unwrap();
    let dialer_hello: [u8; HELLO_BYTES] = read_record(&mut stream)
        .await?
        .try_into()
        .expect("the dialer's first record is a hello");
    let challenge = [9; NONCE_BYTES];
    write_record(&mut stream, &challenge).await?;
    read_record(&mut stream).await?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        cluster_id: 1,
        server_id: 2,
        frame_size_bytes_max: 1024 * 1024,
        nonce: challenge,
    }
    .to_bytes();
    write_record(&mut stream, &hello).await?;
    write_record(
        &mut stream,
        &acceptor_proof(SECRET, &dialer_hello, &challenge, &hello),
    )
    .await
}

#[madsim::test]
async fn a_peer_that_hangs_up_at_once_is_redialed_with_backoff() {
    let [(node_1, address_1), (node_2, address_2)] = two_servers();
    let abandoned = Arc::new(AtomicU64::new(0));
    let abandoned_2 = abandoned.clone();
    node_2.spawn(async move {
        let listener = TcpListener::bind(address_2).await.unwrap();
        loop {
            if accept_then_hang_up(&listener).await.is_err() {
                abandoned_2.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let metrics = node_1
        .spawn(async move {
            let listener = TcpListener::bind(address_1).await.unwrap();
            let config = config(1, 2, address_2, FaultConfig::default());
            let (handle, _events) = Transport::start::<GroupMessage>(config, listener).unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            handle.metrics()
        })
        .await
        .unwrap();
    // Backoff from 50 ms doubling to 2 s allows about a dozen dials in 10 s; a tight loop would
    // make thousands.
    assert!(metrics.connections_established >= 5, "{metrics:?}");
    assert!(metrics.dials <= 20, "{metrics:?}");
    // A dial in progress when the test ends is abandoned (with some seeds); no other is.
    let abandoned = abandoned.load(Ordering::Relaxed);
    assert!(
        abandoned <= 1,
        "{abandoned} handshakes abandoned; {metrics:?}"
    );
}

/// Idle connections stay up on pings alone; a paused (hung, SIGSTOPped) peer is reported down
/// from its silence, although its socket stays open and nothing is written to it; once it
/// resumes it is reconnected.
#[madsim::test]
async fn pings_keep_idle_peers_up_and_a_paused_peer_is_reported_down() {
    let simulator = Handle::current();
    let address_1: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let address_2: SocketAddr = "10.0.0.2:7000".parse().unwrap();
    let node_2 = simulator
        .create_node()
        .name("server-2")
        .ip(address_2.ip())
        .build();
    let handle_2 = node_2
        .spawn(async move {
            let listener = TcpListener::bind(address_2).await.unwrap();
            let config = config(2, 1, address_1, FaultConfig::default());
            let (handle, mut events) = Transport::start::<GroupMessage>(config, listener).unwrap();
            let handle_2 = handle.clone();
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            handle_2
        })
        .await
        .unwrap();
    let node_1 = simulator
        .create_node()
        .name("server-1")
        .ip(address_1.ip())
        .build();
    let (handle, mut events) = node_1
        .spawn(async move {
            let listener = TcpListener::bind(address_1).await.unwrap();
            let config = config(1, 2, address_2, FaultConfig::default());
            let (handle, mut events) = Transport::start::<GroupMessage>(config, listener).unwrap();
            wait_for(&mut events, |event| *event == Incoming::PeerUp(2)).await;
            // A minute of silence from the node loops: only pings cross.
            tokio::time::sleep(Duration::from_secs(60)).await;
            (handle, events)
        })
        .await
        .unwrap();
    let metrics = handle.metrics();
    assert_eq!(metrics.peer_down_events, 0, "{metrics:?}");
    assert_eq!(metrics.connections_established, 1, "{metrics:?}");
    assert!(
        metrics.pings_sent >= 30 && metrics.pings_received >= 30,
        "{metrics:?}"
    );
    assert_eq!(handle_2.metrics().read_timeouts, 0);

    simulator.pause(node_2.id());
    let handle_1 = handle.clone();
    let mut events = node_1
        .spawn(async move {
            // Light traffic, as Raft's heartbeats: never enough to fill a socket buffer.
            let heartbeats = async {
                for sequence in 0.. {
                    let _ = handle_1.send(2, GroupMessage { group: 0, sequence });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                biased;
                () = wait_for(&mut events, |event| *event == Incoming::PeerDown(2)) => {}
                () = heartbeats => {}
            }
            events
        })
        .await
        .unwrap();
    assert_eq!(handle.metrics().read_timeouts, 1);

    simulator.resume(node_2.id());
    node_1
        .spawn(async move {
            wait_for(&mut events, |event| *event == Incoming::PeerUp(2)).await;
        })
        .await
        .unwrap();
}
