//! Throughput of the transport next to raw TCP, all over loopback in one run.
//!
//! `cargo bench -p net --bench transport` prints a table and writes it to
//! `bench-results/net.txt` at the repository root. It measures figures; it asserts nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use net::{Incoming, SendError, Transport, TransportConfig};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MESSAGE_PAYLOAD_BYTES: usize = 100;
const PING_PONG_ROUND_TRIPS: u64 = 20_000;
const STREAM_CHUNK_BYTES: usize = 64 * 1024;
const STREAM_TOTAL_BYTES: u64 = 1024 * 1024 * 1024;
const TRANSPORT_WARM_UP_MESSAGES: u64 = 200_000;
const TRANSPORT_MESSAGES: u64 = 2_000_000;
const TRANSPORT_RUNS: usize = 3;

/// A message shaped like a small Raft message: a group id and 100 bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchMessage {
    group: u32,
    payload: Bytes,
}

async fn bind() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

/// Round trips per second of 100-byte messages, one at a time.
async fn raw_ping_pong() -> f64 {
    let (listener, address) = bind().await;
    let echo = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut buffer = [0u8; MESSAGE_PAYLOAD_BYTES];
        while stream.read_exact(&mut buffer).await.is_ok() {
            stream.write_all(&buffer).await.unwrap();
        }
    });
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buffer = [7u8; MESSAGE_PAYLOAD_BYTES];
    let start = Instant::now();
    for _ in 0..PING_PONG_ROUND_TRIPS {
        stream.write_all(&buffer).await.unwrap();
        stream.read_exact(&mut buffer).await.unwrap();
    }
    let elapsed = start.elapsed();
    drop(stream);
    echo.await.unwrap();
    PING_PONG_ROUND_TRIPS as f64 / elapsed.as_secs_f64()
}

/// Megabytes per second of one connection streaming 64 KiB writes.
async fn raw_streaming() -> f64 {
    let (listener, address) = bind().await;
    let sink = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0u8; STREAM_CHUNK_BYTES];
        let mut received: u64 = 0;
        loop {
            let read = stream.read(&mut buffer).await.unwrap();
            if read == 0 {
                return received;
            }
            received += read as u64;
        }
    });
    let mut stream = TcpStream::connect(address).await.unwrap();
    let chunk = vec![1u8; STREAM_CHUNK_BYTES];
    let start = Instant::now();
    let mut sent: u64 = 0;
    while sent < STREAM_TOTAL_BYTES {
        stream.write_all(&chunk).await.unwrap();
        sent += STREAM_CHUNK_BYTES as u64;
    }
    stream.shutdown().await.unwrap();
    let received = sink.await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(received, sent);
    received as f64 / 1e6 / elapsed.as_secs_f64()
}

struct TransportFigures {
    messages_per_second: f64,
    frame_megabytes_per_second: f64,
    payload_megabytes_per_second: f64,
    frames_per_write: f64,
    queue_full_retries: u64,
}

/// Server 1 sends 100-byte messages to server 2 over one connection as fast as its queue takes
/// them (retrying when it is full, as a node loop would drop); timed until the last one arrives.
async fn transport_one_way(messages: u64) -> TransportFigures {
    let (listener_1, address_1) = bind().await;
    let (listener_2, address_2) = bind().await;
    let secret = *b"benchmark cluster secret";
    let mut config_1 = TransportConfig::new(1, 1, secret, BTreeMap::from([(2, address_2)]));
    config_1.queue_capacity_per_peer = 16 * 1024;
    let config_2 = TransportConfig::new(2, 1, secret, BTreeMap::from([(1, address_1)]));
    let (sender, _events_1) = Transport::start::<BenchMessage>(config_1, listener_1).unwrap();
    let (receiver, mut events_2) = Transport::start::<BenchMessage>(config_2, listener_2).unwrap();

    let counting = tokio::spawn(async move {
        let mut received: u64 = 0;
        while received < messages {
            if let Incoming::Message { .. } = events_2.recv().await.unwrap() {
                received += 1;
            }
        }
        events_2
    });
    // A static payload: cloning it touches no shared reference count.
    static PAYLOAD: [u8; MESSAGE_PAYLOAD_BYTES] = [5; MESSAGE_PAYLOAD_BYTES];
    let message = |sequence: u64| BenchMessage {
        group: (sequence % 4) as u32,
        payload: Bytes::from_static(&PAYLOAD),
    };
    let start = Instant::now();
    let mut queue_full_retries: u64 = 0;
    for sequence in 0..messages {
        loop {
            match sender.send(2, message(sequence)) {
                Ok(()) => break,
                Err(SendError::QueueFull(_)) => {
                    // Sleeping (tokio's timer rounds up to 1 ms) rather than spinning leaves the
                    // cores to the writer and the reader; the queue holds ~8 ms of messages.
                    queue_full_retries += 1;
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                Err(error) => panic!("{error}"),
            }
        }
    }
    let _events_2 = counting.await.unwrap();
    let elapsed = start.elapsed();
    let metrics = sender.metrics();
    sender.shutdown();
    receiver.shutdown();
    let seconds = elapsed.as_secs_f64();
    TransportFigures {
        messages_per_second: messages as f64 / seconds,
        frame_megabytes_per_second: metrics.bytes_sent as f64 / 1e6 / seconds,
        payload_megabytes_per_second: (messages as usize * MESSAGE_PAYLOAD_BYTES) as f64
            / 1e6
            / seconds,
        frames_per_write: metrics.frames_sent as f64 / metrics.writes.max(1) as f64,
        queue_full_retries,
    }
}

/// Round trips per second through two transports: server 1 sends, server 2 echoes, one at a time.
async fn transport_ping_pong() -> f64 {
    let (listener_1, address_1) = bind().await;
    let (listener_2, address_2) = bind().await;
    let secret = *b"benchmark cluster secret";
    let config_1 = TransportConfig::new(1, 1, secret, BTreeMap::from([(2, address_2)]));
    let config_2 = TransportConfig::new(2, 1, secret, BTreeMap::from([(1, address_1)]));
    let (one, mut events_1) = Transport::start::<BenchMessage>(config_1, listener_1).unwrap();
    let (two, mut events_2) = Transport::start::<BenchMessage>(config_2, listener_2).unwrap();
    let echo_handle = two.clone();
    let echo = tokio::spawn(async move {
        while let Some(event) = events_2.recv().await {
            if let Incoming::Message { message, .. } = event {
                let _ = echo_handle.send(1, message);
            }
        }
    });
    static PAYLOAD: [u8; MESSAGE_PAYLOAD_BYTES] = [6; MESSAGE_PAYLOAD_BYTES];
    let ping = || BenchMessage {
        group: 0,
        payload: Bytes::from_static(&PAYLOAD),
    };
    let mut round_trip = async || {
        one.send(2, ping()).unwrap();
        loop {
            if let Incoming::Message { .. } = events_1.recv().await.unwrap() {
                return;
            }
        }
    };
    // The first round trip waits for the connection; it is not timed.
    round_trip().await;
    let start = Instant::now();
    for _ in 0..PING_PONG_ROUND_TRIPS {
        round_trip().await;
    }
    let elapsed = start.elapsed();
    one.shutdown();
    two.shutdown();
    drop(two);
    echo.abort();
    PING_PONG_ROUND_TRIPS as f64 / elapsed.as_secs_f64()
}

fn repository_root() -> PathBuf {
    let manifest = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).unwrap();
    manifest.parent().unwrap().to_path_buf()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let round_trips_per_second = raw_ping_pong().await;
        let streaming_megabytes_per_second = raw_streaming().await;
        let transport_round_trips_per_second = transport_ping_pong().await;
        transport_one_way(TRANSPORT_WARM_UP_MESSAGES).await;
        let mut runs = Vec::new();
        for _ in 0..TRANSPORT_RUNS {
            runs.push(transport_one_way(TRANSPORT_MESSAGES).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        runs.sort_by(|a, b| a.messages_per_second.total_cmp(&b.messages_per_second));
        format_report(
            round_trips_per_second,
            streaming_megabytes_per_second,
            transport_round_trips_per_second,
            &runs,
        )
    });
    print!("{report}");
    let folder = repository_root().join("bench-results");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("net.txt"), &report).unwrap();
}

fn format_report(
    round_trips_per_second: f64,
    streaming_megabytes_per_second: f64,
    transport_round_trips_per_second: f64,
    runs: &[TransportFigures],
) -> String {
    let median = &runs[runs.len() / 2];
    let mut report = String::new();
    let _ = writeln!(
        report,
        "net transport benchmark: loopback, tokio with 2 worker threads, one connection"
    );
    let _ = writeln!(report, "command: cargo bench -p net --bench transport");
    let _ = writeln!(report);
    let _ = writeln!(report, "| measurement | figure |");
    let _ = writeln!(report, "|---|---|");
    let _ = writeln!(
        report,
        "| raw TCP ping-pong, 100 B, {PING_PONG_ROUND_TRIPS} round trips | {:.0} round trips/s ({:.1} us each) |",
        round_trips_per_second,
        1e6 / round_trips_per_second
    );
    let _ = writeln!(
        report,
        "| raw TCP streaming, 64 KiB writes, {} MiB | {:.0} MB/s |",
        STREAM_TOTAL_BYTES / (1024 * 1024),
        streaming_megabytes_per_second
    );
    let _ = writeln!(
        report,
        "| transport ping-pong, 100 B, {PING_PONG_ROUND_TRIPS} round trips | {:.0} round trips/s ({:.1} us each) |",
        transport_round_trips_per_second,
        1e6 / transport_round_trips_per_second
    );
    let _ = writeln!(
        report,
        "| transport, 100 B messages one way, median of {TRANSPORT_RUNS} runs of {TRANSPORT_MESSAGES} | {:.0} messages/s, {:.1} MB/s of frames, {:.1} MB/s of payload |",
        median.messages_per_second,
        median.frame_megabytes_per_second,
        median.payload_megabytes_per_second
    );
    let _ = writeln!(
        report,
        "| transport, slowest / fastest run | {:.0} / {:.0} messages/s |",
        runs[0].messages_per_second,
        runs[runs.len() - 1].messages_per_second
    );
    let _ = writeln!(
        report,
        "| transport, batching (median run) | {:.0} frames per write, {} sends retried on a full queue |",
        median.frames_per_write, median.queue_full_retries
    );
    report
}
