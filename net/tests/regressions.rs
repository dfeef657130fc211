//! Regression tests from an adversarial review; each describes the bug as it was.
//!
//! Over real sockets on 127.0.0.1. The first group are the findings (each failed before its fix);
//! the second group are properties the review checked and found to hold, kept so that they keep
//! holding. Timeouts here are only upper bounds for "it eventually happens"; nothing measures
//! speed.

#![cfg(not(madsim))]
// The counting allocator below needs an `unsafe impl`, as in raft-core/tests/allocations.rs.
#![allow(unsafe_code)]

mod support;
use support::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use net::codec::{KIND_MESSAGE, KIND_PING};
use net::handshake::{HELLO_BYTES, Hello, NONCE_BYTES, acceptor_proof, dialer_proof};
use net::{HandshakeFailure, Incoming, TransportConfig, TransportHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// A per-thread count of live heap bytes. `#[tokio::test]` runs on a current-thread runtime, so
// the transport's tasks allocate on the test's own thread and other tests do not interfere.

thread_local! {
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + delta));
}

fn live_bytes() -> i64 {
    LIVE_BYTES.with(Cell::get)
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            count(layout.size() as i64);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            count(layout.size() as i64);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---------------------------------------------------------------------------------------------

/// Waits until server `handle` has accepted `count` TCP connections in all, then lets its tasks
/// run (they start reading at once).
async fn wait_until_accepted(handle: &TransportHandle<GroupMessage>, count: u64) {
    wait_for_metrics(handle, |metrics| metrics.connections_accepted >= count).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Server 5 accepting from server 3 (whose address is never dialed).
async fn acceptor_five(change: impl FnOnce(&mut TransportConfig)) -> (Server, SocketAddr) {
    let (listener_5, address_5) = bind().await;
    let (_, unused_address) = bind().await;
    let mut config_5 = config(5, &[(3, unused_address)]);
    change(&mut config_5);
    (start(config_5, listener_5), address_5)
}

// =============================================================================================
// Findings (each failed before its fix).

/// Slowloris: strangers that connect and say nothing each hold a task, a socket and a read buffer
/// until the handshake timeout. Nothing limits how many are pending, so an attacker who opens
/// connections faster than `handshake_timeout_ms` retires them exhausts file descriptors (and
/// with them the WAL's and the clients' sockets). Expect the server to shed some of 1024 silent
/// strangers long before a (deliberately long) handshake timeout.
#[tokio::test]
async fn pending_handshakes_are_limited() {
    let (five, address_5) = acceptor_five(|config| config.handshake_timeout_ms = 600_000).await;
    let (closed_sender, mut closed) = mpsc::unbounded_channel();
    let mut open = 0;
    for index in 0..1024 {
        let Ok(mut stream) = TcpStream::connect(address_5).await else {
            // Refused outright: the server is shedding load, which is what this test wants.
            let _ = closed_sender.send(index);
            break;
        };
        open += 1;
        let closed_sender = closed_sender.clone();
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
            let _ = closed_sender.send(index);
        });
    }
    let shed = tokio::time::timeout(Duration::from_secs(20), closed.recv()).await;
    let pending = five.handle.metrics().handshake_failures_total();
    assert!(
        shed.is_ok(),
        "{open} silent strangers were all kept open ({pending} handshake failures): \
         no limit on pending handshakes"
    );
    five.handle.shutdown();
}

/// handshake.rs says frames are limited to 64 bytes before authentication "so that a stranger
/// cannot make the server reserve a large buffer", but `FrameReader::fill` reserves 64 KiB on the
/// first read of every connection, handshake or not.
#[tokio::test]
async fn a_silent_stranger_costs_little_memory() {
    let (five, address_5) = acceptor_five(|config| {
        config.handshake_timeout_ms = 600_000;
        // All strangers come from 127.0.0.1; none may be shed, or the test would measure less.
        config.pending_handshakes_per_address_max = 64;
    })
    .await;
    // Warm up lazily allocated runtime structures with one stranger first.
    let _warm = TcpStream::connect(address_5).await.unwrap();
    wait_until_accepted(&five.handle, 1).await;

    const STRANGERS: i64 = 32;
    let before = live_bytes();
    let mut strangers = Vec::new();
    for _ in 0..STRANGERS {
        strangers.push(TcpStream::connect(address_5).await.unwrap());
    }
    // Each acceptor task has started reading for the stranger's hello.
    wait_until_accepted(&five.handle, 1 + STRANGERS as u64).await;
    assert_eq!(five.handle.metrics().handshakes_shed, 0);
    let per_stranger = (live_bytes() - before) / STRANGERS;
    eprintln!("heap per silent stranger: {per_stranger} bytes");
    assert!(
        per_stranger < 16 * 1024,
        "each silent, unauthenticated connection holds {per_stranger} bytes of heap"
    );
    drop(strangers);
    five.handle.shutdown();
}

/// A peer that completed the handshake and then stops reading (hung process, SIGSTOP, a kernel
/// that still ACKs) is never reported down while the traffic to it is light: `write_timeout_ms`
/// only fires once the socket buffers are full, and there is no read/idle timeout or keepalive.
/// The README says Raft's heartbeats would trip the write timeout; at heartbeat rates filling
/// megabytes of socket buffer takes many minutes.
#[tokio::test]
async fn a_hung_peer_with_light_traffic_is_reported_down() {
    let (listener_1, _) = bind().await;
    let (listener_2, address_2) = bind().await;
    let mut impatient = config(1, &[(2, address_2)]);
    impatient.write_timeout_ms = 200;
    let mut one = start(impatient, listener_1);
    let _hung = accept_by_hand(&listener_2, 2).await;
    expect_reachability(&mut one.events, Incoming::PeerUp(2)).await;
    // Heartbeat-sized messages every 10 ms for 10 s: 50 times the write timeout.
    for sequence in 0..1000 {
        one.handle.send(2, message(0, sequence)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        while let Ok(event) = one.events.try_recv() {
            if event == Incoming::PeerDown(2) {
                return;
            }
        }
    }
    panic!(
        "a peer that has not read a byte for 10 s is still reported up: {:?}",
        one.handle.metrics()
    );
}

/// `write_timeout_ms` bounds a whole batch, not progress: a peer that reads steadily but more
/// slowly than `frame_size / write_timeout` can never receive a large message (a snapshot). The
/// connection is torn down mid-frame, the peer reported down, and the same happens on every retry.
#[tokio::test]
async fn a_slow_but_reading_peer_receives_a_large_message() {
    let (listener_1, _) = bind().await;
    // A small receive buffer on the fake peer so that the kernels hold only a few MiB.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address_2 = socket.local_addr().unwrap();
    let listener_2 = socket.listen(16).unwrap();
    let mut slow_link = config(1, &[(2, address_2)]);
    slow_link.write_timeout_ms = 1000;
    slow_link.frame_size_bytes_max = 32 * 1024 * 1024;
    // The peer by hand reads but sends nothing, not even pings; a live transport would.
    slow_link.read_timeout_ms = 600_000;
    let mut one = start(slow_link, listener_1);
    let mut peer = accept_by_hand(&listener_2, 2).await;
    expect_reachability(&mut one.events, Incoming::PeerUp(2)).await;
    let mut large = message(0, 0);
    large.payload = vec![7; 16 * 1024 * 1024];
    one.handle.send(2, large).unwrap();

    // The peer reads all the time, at about 3 MB/s (64 KiB every 20 ms).
    let reading = async {
        // Skip any ping an idle writer sent before the message.
        let length = loop {
            let length = peer.read_u32().await.unwrap() as usize;
            if length != 1 {
                break length;
            }
            assert_eq!(peer.read_u8().await.unwrap(), KIND_PING);
        };
        let mut received = 0;
        let mut chunk = vec![0; 64 * 1024];
        while received < length {
            let wanted = chunk.len().min(length - received);
            match peer.read(&mut chunk[..wanted]).await {
                Ok(0) | Err(_) => return Err((received, length)),
                Ok(read) => received += read,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(length)
    };
    let result = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the frame neither arrived nor was cut off");
    if let Err((received, length)) = result {
        panic!(
            "the connection was closed after {received} of {length} bytes while the peer kept \
             reading: {:?}",
            one.handle.metrics()
        );
    }
}

/// The acceptor sent its hello (protocol version, cluster id, its server id) to anyone who
/// connected, before the stranger had said anything: a port scanner learned that this is an
/// Agenda server, of which cluster, with which id.
#[tokio::test]
async fn a_stranger_learns_nothing_before_speaking() {
    let (five, address_5) = acceptor_five(|_| {}).await;
    let mut stranger = TcpStream::connect(address_5).await.unwrap();
    let mut first = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), stranger.read(&mut first)).await;
    if let Ok(Ok(count)) = read
        && count > 0
    {
        let record = first.get(4..4 + HELLO_BYTES).map(Hello::from_bytes);
        panic!("a silent stranger was sent {count} bytes: {record:?}");
    }
    five.handle.shutdown();
}

/// The writer's batch buffer keeps the capacity of the largest batch it ever encoded
/// (`self.buffer.clear()` in `encode_batch`), so one large message (a snapshot) pins up to
/// `frame_size_bytes_max` bytes per peer for the life of the transport.
#[tokio::test]
async fn a_large_message_does_not_pin_its_buffer() {
    let (listener_1, _) = bind().await;
    let (listener_2, address_2) = bind().await;
    let mut one = start(config(1, &[(2, address_2)]), listener_1);
    let mut peer = accept_by_hand(&listener_2, 2).await;
    expect_reachability(&mut one.events, Incoming::PeerUp(2)).await;
    // Warm up the writer with a small message.
    one.handle.send(2, message(0, 0)).unwrap();
    let _ = read_frame(&mut peer).await;
    let before = live_bytes();

    let mut large = message(0, 1);
    large.payload = vec![7; 8 * 1024 * 1024];
    one.handle.send(2, large).unwrap();
    let received = read_frame(&mut peer).await;
    assert!(received.len() > 8 * 1024 * 1024);
    drop(received);
    one.handle.send(2, message(0, 2)).unwrap();
    let _ = read_frame(&mut peer).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let retained = live_bytes() - before;
    assert!(
        retained < 1024 * 1024,
        "{retained} bytes stay allocated after an 8 MiB message was written"
    );
}

// =============================================================================================
// Properties the review checked and found to hold.

/// A recorded dialer hello and proof, replayed on a new connection, are refused: the acceptor's
/// fresh challenge changes what the proof must cover.
#[tokio::test]
async fn a_replayed_handshake_is_refused() {
    let (mut five, address_5) = acceptor_five(|_| {}).await;
    let (first, recorded_hello, recorded_proof) = handshake_by_hand(address_5, 3).await;
    expect_reachability(&mut five.events, Incoming::PeerUp(3)).await;
    drop(first);
    expect_reachability(&mut five.events, Incoming::PeerDown(3)).await;

    let mut replay = TcpStream::connect(address_5).await.unwrap();
    replay.write_all(&frame(&recorded_hello)).await.unwrap();
    let _new_challenge = read_frame(&mut replay).await;
    replay.write_all(&frame(&recorded_proof)).await.unwrap();
    replay
        .write_all(&message_frame(&message(1, 1)))
        .await
        .unwrap();
    assert_closed_by_peer(&mut replay).await;
    let metrics = wait_for_metrics(&five.handle, |metrics| {
        metrics.handshake_failures_for(HandshakeFailure::Authentication) == 1
    })
    .await;
    assert_eq!(metrics.connections_established, 1);
    assert_eq!(metrics.frames_received, 0);
}

/// Without the secret, nothing gets through: the acceptor sends no proof that could be reflected
/// (only its challenge, which sent back as a proof fails), and a bogus proof followed at once by
/// a message frame gets no PeerUp and no message.
#[tokio::test]
async fn a_reflected_challenge_and_pipelined_frames_get_nothing_through() {
    let (mut five, address_5) = acceptor_five(|_| {}).await;
    // Reflection: all the acceptor sends before our proof is its challenge; send it back, padded
    // to a proof's length.
    let mut reflector = TcpStream::connect(address_5).await.unwrap();
    reflector.write_all(&frame(&hello(3, 1))).await.unwrap();
    let challenge = read_frame(&mut reflector).await;
    assert_eq!(challenge.len(), NONCE_BYTES);
    let mut reflected = challenge.clone();
    reflected.extend(&challenge);
    reflector.write_all(&frame(&reflected)).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, reflector.read_to_end(&mut rest)).await;
    assert!(
        rest.is_empty(),
        "the acceptor answered a bogus proof: {rest:?}"
    );

    // A forged proof with a message pipelined behind it, in one write.
    let mut forger = TcpStream::connect(address_5).await.unwrap();
    forger.write_all(&frame(&hello(3, 2))).await.unwrap();
    let _challenge = read_frame(&mut forger).await;
    let mut bytes = frame(&[0u8; 32]);
    bytes.extend(message_frame(&message(1, 1)));
    forger.write_all(&bytes).await.unwrap();
    assert_closed_by_peer(&mut forger).await;

    let metrics = wait_for_metrics(&five.handle, |metrics| {
        metrics.handshake_failures_for(HandshakeFailure::Authentication) == 2
    })
    .await;
    assert_eq!(metrics.connections_established, 0);
    assert_eq!(metrics.frames_received, 0);
    assert!(
        five.events.try_recv().is_err(),
        "nothing reaches the node loop"
    );
}

/// Ids outside the peer list, this server's own id, and higher ids (even with the secret) are
/// refused, and are sent neither the acceptor's hello nor its proof.
#[tokio::test]
async fn non_members_self_and_higher_ids_are_refused() {
    let (listener_5, address_5) = bind().await;
    let (_, unused) = bind().await;
    let five = start(config(5, &[(3, unused), (7, unused)]), listener_5);
    for (claimed, reason) in [
        (9, HandshakeFailure::UnknownServer),
        (5, HandshakeFailure::UnknownServer),
        (7, HandshakeFailure::WrongDirection),
    ] {
        let mut stream = TcpStream::connect(address_5).await.unwrap();
        let dialer_hello = hello(claimed, 1);
        stream.write_all(&frame(&dialer_hello)).await.unwrap();
        let challenge: [u8; NONCE_BYTES] = read_frame(&mut stream).await.try_into().unwrap();
        // Even a correct proof does not help.
        let dialer_proof = dialer_proof(SECRET, &dialer_hello, &challenge);
        let _ = stream.write_all(&frame(&dialer_proof)).await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "claimed {claimed}: {rest:?} was sent back");
        wait_for_metrics(&five.handle, |metrics| {
            metrics.handshake_failures_for(reason) >= 1
        })
        .await;
    }
    assert_eq!(five.handle.metrics().connections_established, 0);
}

/// The dialer refuses an acceptor that answers with another member's id, or that cannot prove the secret.
#[tokio::test]
async fn the_dialer_checks_who_answers() {
    let (listener_1, _) = bind().await;
    let (listener_2, address_2) = bind().await;
    let (_, address_3) = bind().await;
    let mut one = start(config(1, &[(2, address_2), (3, address_3)]), listener_1);
    // Answers as server 3, another member, at server 2's address (even with the secret).
    let (mut impostor, _) = listener_2.accept().await.unwrap();
    let dialer_hello: [u8; HELLO_BYTES] = read_frame(&mut impostor).await.try_into().unwrap();
    let challenge = [1; NONCE_BYTES];
    impostor.write_all(&frame(&challenge)).await.unwrap();
    let _dialer_proof = read_frame(&mut impostor).await;
    let impostor_hello = hello(3, 1);
    let mut answer = frame(&impostor_hello);
    answer.extend(frame(&acceptor_proof(
        SECRET,
        &dialer_hello,
        &challenge,
        &impostor_hello,
    )));
    impostor.write_all(&answer).await.unwrap();
    assert_closed_by_peer(&mut impostor).await;
    // Answers as server 2 but without the secret.
    let (mut forger, _) = listener_2.accept().await.unwrap();
    let _ = read_frame(&mut forger).await;
    forger.write_all(&frame(&[1; NONCE_BYTES])).await.unwrap();
    let _dialer_proof = read_frame(&mut forger).await;
    let mut answer = frame(&hello(2, 1));
    answer.extend(frame(&[0u8; 32]));
    forger.write_all(&answer).await.unwrap();
    assert_closed_by_peer(&mut forger).await;
    let metrics = wait_for_metrics(&one.handle, |metrics| {
        metrics.handshake_failures_for(HandshakeFailure::Authentication) >= 1
    })
    .await;
    assert_eq!(
        metrics.handshake_failures_for(HandshakeFailure::UnexpectedServer),
        1
    );
    assert_eq!(metrics.connections_established, 0);
    expect_reachability(&mut one.events, Incoming::PeerDown(2)).await;
    while let Ok(event) = one.events.try_recv() {
        assert_ne!(event, Incoming::PeerUp(2));
    }
}

/// A stranger that sends a valid hello and then stalls is cut off at the handshake timeout.
#[tokio::test]
async fn a_hello_then_stall_times_out() {
    let (five, address_5) = acceptor_five(|config| config.handshake_timeout_ms = 300).await;
    let mut staller = TcpStream::connect(address_5).await.unwrap();
    staller.write_all(&frame(&hello(3, 1))).await.unwrap();
    // And one that sends half a length prefix.
    let mut half = TcpStream::connect(address_5).await.unwrap();
    half.write_all(&[0, 0]).await.unwrap();
    assert_closed_by_peer(&mut staller).await;
    assert_closed_by_peer(&mut half).await;
    wait_for_metrics(&five.handle, |metrics| {
        metrics.handshake_failures_for(HandshakeFailure::Timeout) == 2
    })
    .await;
}

/// Hostile lengths: a 4 GiB prefix before and after authentication, and postcard payloads that
/// declare absurd lengths, close only their own connection and are counted; the transport goes on.
#[tokio::test]
async fn hostile_lengths_cost_one_connection_each() {
    let (mut five, address_5) = acceptor_five(|_| {}).await;
    let mut stranger = TcpStream::connect(address_5).await.unwrap();
    stranger.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_closed_by_peer(&mut stranger).await;
    wait_for_metrics(&five.handle, |metrics| {
        metrics.handshake_failures_for(HandshakeFailure::Malformed) == 1
    })
    .await;

    let (mut peer, _, _) = handshake_by_hand(address_5, 3).await;
    peer.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_closed_by_peer(&mut peer).await;
    wait_for_metrics(&five.handle, |metrics| metrics.frames_oversized == 1).await;

    // Kind "message", group = 1, sequence = 1, then a payload whose varint length is u64::MAX;
    // then an empty payload (no kind byte) and an unknown kind.
    let mut absurd = vec![KIND_MESSAGE, 1, 1];
    absurd.extend([0xff; 9]);
    absurd.push(0x01);
    let mut absurd_vec_len = vec![KIND_MESSAGE, 1, 1];
    absurd_vec_len.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    for payload in [absurd, absurd_vec_len, Vec::new(), vec![0xff; 20]] {
        let (mut peer, _, _) = handshake_by_hand(address_5, 3).await;
        peer.write_all(&frame(&payload)).await.unwrap();
        assert_closed_by_peer(&mut peer).await;
    }
    wait_for_metrics(&five.handle, |metrics| metrics.frames_malformed == 4).await;

    // Still serving.
    let (mut peer, _, _) = handshake_by_hand(address_5, 3).await;
    peer.write_all(&message_frame(&message(2, 9)))
        .await
        .unwrap();
    loop {
        if let Incoming::Message { from, message: got } = next_event(&mut five.events).await {
            assert_eq!((from, got), (3, message(2, 9)));
            break;
        }
    }
}

/// After `shutdown`, every task ends, pending handshakes included: the events channel closes (all
/// `Context` clones dropped), every socket is closed, and the port is released.
#[tokio::test]
async fn shutdown_ends_every_task_even_with_pending_handshakes() {
    let (listener_5, address_5) = bind().await;
    let (_, unused) = bind().await;
    let (_, higher) = bind().await;
    let mut config_5 = config(5, &[(3, unused), (9, higher)]);
    config_5.handshake_timeout_ms = 600_000;
    let mut five = start(config_5, listener_5);
    let (mut peer, _, _) = handshake_by_hand(address_5, 3).await;
    expect_reachability(&mut five.events, Incoming::PeerUp(3)).await;
    let mut strangers = Vec::new();
    for _ in 0..8 {
        strangers.push(TcpStream::connect(address_5).await.unwrap());
    }
    wait_until_accepted(&five.handle, 9).await;
    five.handle.shutdown();
    let drained = tokio::time::timeout(PATIENCE, async {
        while five.events.recv().await.is_some() {}
    })
    .await;
    assert!(drained.is_ok(), "a task still holds the events channel");
    assert_closed_by_peer(&mut peer).await;
    for stranger in &mut strangers {
        assert_closed_by_peer(stranger).await;
    }
    TcpListener::bind(address_5).await.expect("port released");
}
