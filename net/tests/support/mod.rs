//! Helpers shared by the loopback test files: a test message type, transports on 127.0.0.1,
//! waiting for events and counters, and raw frames for hand-made peers.
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use net::{Incoming, Metrics, ServerId, Transport, TransportConfig, TransportHandle};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub const CLUSTER_ID: u64 = 7;

pub const SECRET: &[u8; 32] = b"agenda loopback test secret 32 b";

/// A guard against a hung test, far above what any step needs.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A message as raft-core's will be: every message names its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessage {
    pub group: u32,
    pub sequence: u64,
    pub payload: Vec<u8>,
}

pub fn message(group: u32, sequence: u64) -> GroupMessage {
    GroupMessage {
        group,
        sequence,
        payload: vec![group as u8; 16],
    }
}

pub type Events = mpsc::Receiver<Incoming<GroupMessage>>;

pub struct Server {
    pub handle: TransportHandle<GroupMessage>,
    pub events: Events,
}

pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

pub fn config(server_id: ServerId, peers: &[(ServerId, SocketAddr)]) -> TransportConfig {
    let mut config = TransportConfig::new(server_id, CLUSTER_ID, *SECRET, BTreeMap::new());
    config.peers = peers.iter().copied().collect();
    // Short backoff keeps reconnection tests quick.
    config.backoff_initial_ms = 10;
    config.backoff_max_ms = 100;
    config
}

pub fn start(config: TransportConfig, listener: TcpListener) -> Server {
    let (handle, events) = Transport::start(config, listener).unwrap();
    Server { handle, events }
}

pub async fn next_event(events: &mut Events) -> Incoming<GroupMessage> {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("no event in time")
        .expect("the transport closed its channel")
}

/// Waits for a reachability event about `peer`, skipping messages.
pub async fn expect_reachability(events: &mut Events, expected: Incoming<GroupMessage>) {
    loop {
        let event = next_event(events).await;
        if let Incoming::Message { .. } = event {
            continue;
        }
        if event == expected {
            return;
        }
    }
}

/// Polls the counters until `condition` holds.
pub async fn wait_for_metrics(
    handle: &TransportHandle<GroupMessage>,
    condition: impl Fn(&Metrics) -> bool,
) -> Metrics {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let metrics = handle.metrics();
        if condition(&metrics) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held: {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Frames a record as the transport does: length prefix, then payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut framed = BytesMut::new();
    framed.put_u32(payload.len() as u32);
    framed.put_slice(payload);
    framed.to_vec()
}

/// Reads until the other side closes (an orderly close or a reset both count).
pub async fn assert_closed_by_peer(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection stayed open");
}
