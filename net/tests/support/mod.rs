//! Helpers shared by the loopback test files: a test message type, transports on 127.0.0.1,
//! waiting for events and counters, raw frames, and hand-made peers that do the handshake by
//! hand (reading past the transport's pings).
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use net::codec::{KIND_MESSAGE, KIND_PING};
use net::handshake::{
    HELLO_BYTES, Hello, NONCE_BYTES, PROTOCOL_VERSION, acceptor_proof, dialer_proof,
    verify_dialer_proof,
};
use net::{Incoming, Metrics, ServerId, Transport, TransportConfig, TransportHandle};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The next frame's payload, skipping the pings of an idle writer (no handshake record is one
/// byte long).
pub async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    loop {
        let length = stream.read_u32().await.unwrap() as usize;
        let mut payload = vec![0; length];
        stream.read_exact(&mut payload).await.unwrap();
        if payload != [KIND_PING] {
            return payload;
        }
    }
}

/// A message frame as the transport writes it: length, kind byte, postcard.
pub fn message_frame(message: &GroupMessage) -> Vec<u8> {
    let mut payload = vec![KIND_MESSAGE];
    payload.extend(postcard::to_allocvec(message).unwrap());
    frame(&payload)
}

pub fn hello(server_id: ServerId, nonce_byte: u8) -> [u8; HELLO_BYTES] {
    Hello {
        version: PROTOCOL_VERSION,
        cluster_id: CLUSTER_ID,
        server_id,
        // More than any test sends: the transport's own limit is the one under test.
        frame_size_bytes_max: 64 * 1024 * 1024,
        nonce: [nonce_byte; NONCE_BYTES],
    }
    .to_bytes()
}

/// Completes the handshake by hand as dialer `claimed_id`; returns the stream, the dialer's
/// hello and its proof.
pub async fn handshake_by_hand(
    address: SocketAddr,
    claimed_id: ServerId,
) -> (TcpStream, [u8; HELLO_BYTES], [u8; 32]) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let dialer_hello = hello(claimed_id, 3);
    stream.write_all(&frame(&dialer_hello)).await.unwrap();
    let challenge: [u8; NONCE_BYTES] = read_frame(&mut stream).await.try_into().unwrap();
    let dialer_proof = dialer_proof(SECRET, &dialer_hello, &challenge);
    stream.write_all(&frame(&dialer_proof)).await.unwrap();
    assert_eq!(read_frame(&mut stream).await.len(), HELLO_BYTES);
    assert_eq!(read_frame(&mut stream).await.len(), 32);
    (stream, dialer_hello, dialer_proof)
}

/// Accepts one connection and completes the handshake by hand as acceptor `server_id`.
pub async fn accept_by_hand(listener: &TcpListener, server_id: ServerId) -> TcpStream {
    let (mut stream, _) = listener.accept().await.unwrap();
    let dialer_hello: [u8; HELLO_BYTES] = read_frame(&mut stream).await.try_into().unwrap();
    let challenge = [4; NONCE_BYTES];
    stream.write_all(&frame(&challenge)).await.unwrap();
    let received_proof = read_frame(&mut stream).await;
    assert!(verify_dialer_proof(
        SECRET,
        &dialer_hello,
        &challenge,
        &received_proof
    ));
    let acceptor_hello = hello(server_id, 4);
    let mut answer = frame(&acceptor_hello);
    answer.extend(frame(&acceptor_proof(
        SECRET,
        &dialer_hello,
        &challenge,
        &acceptor_hello,
    )));
    stream.write_all(&answer).await.unwrap();
    stream
}
