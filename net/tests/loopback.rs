//! The transport over real sockets on 127.0.0.1.

#![cfg(not(madsim))]

mod support;
use support::*;

use std::net::SocketAddr;
use std::time::Duration;

use net::handshake::{NONCE_BYTES, dialer_proof};
use net::{HandshakeFailure, Incoming, SendError, ServerId, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Two servers, 1 and 2, that know each other.
async fn pair() -> (Server, Server) {
    let (listener_1, address_1) = bind().await;
    let (listener_2, address_2) = bind().await;
    let one = start(config(1, &[(2, address_2)]), listener_1);
    let two = start(config(2, &[(1, address_1)]), listener_2);
    (one, two)
}

/// The next message, skipping reachability events.
async fn next_message(events: &mut Events) -> (ServerId, GroupMessage) {
    loop {
        if let Incoming::Message { from, message } = next_event(events).await {
            return (from, message);
        }
    }
}

#[tokio::test]
async fn a_message_goes_there_and_back() {
    let (mut one, mut two) = pair().await;
    one.handle.send(2, message(1, 1)).unwrap();
    expect_reachability(&mut one.events, Incoming::PeerUp(2)).await;
    assert_eq!(next_event(&mut two.events).await, Incoming::PeerUp(1));
    assert_eq!(next_message(&mut two.events).await, (1, message(1, 1)));
    two.handle.send(1, message(1, 2)).unwrap();
    assert_eq!(
        next_event(&mut one.events).await,
        Incoming::Message {
            from: 2,
            message: message(1, 2)
        }
    );
}

#[tokio::test]
async fn many_groups_share_one_connection_in_order() {
    let (mut one, mut two) = pair().await;
    for sequence in 0..200 {
        for group in 0..3 {
            one.handle.send(2, message(group, sequence)).unwrap();
            two.handle.send(1, message(group, sequence)).unwrap();
        }
    }
    for events in [&mut one.events, &mut two.events] {
        let mut next_sequence = [0u64; 3];
        for _ in 0..600 {
            let (_, received) = next_message(events).await;
            let group = received.group as usize;
            assert_eq!(received.sequence, next_sequence[group]);
            next_sequence[group] += 1;
        }
    }
    for handle in [&one.handle, &two.handle] {
        let metrics = handle.metrics();
        assert_eq!(metrics.connections_established, 1, "{metrics:?}");
        assert_eq!(metrics.frames_sent, 600);
        assert_eq!(metrics.frames_received, 600);
    }
}

#[tokio::test]
async fn three_servers_need_three_connections() {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(bind().await);
    }
    let addresses: Vec<(ServerId, SocketAddr)> = listeners
        .iter()
        .enumerate()
        .map(|(index, (_, address))| (index as ServerId + 1, *address))
        .collect();
    let mut servers: Vec<Server> = Vec::new();
    for (index, (listener, _)) in listeners.into_iter().enumerate() {
        let id = index as ServerId + 1;
        let others: Vec<_> = addresses
            .iter()
            .copied()
            .filter(|(peer, _)| *peer != id)
            .collect();
        servers.push(start(config(id, &others), listener));
    }
    for from in 1..=3u64 {
        for to in (1..=3u64).filter(|to| *to != from) {
            servers[from as usize - 1]
                .handle
                .send(to, message(from as u32, to))
                .unwrap();
        }
    }
    for (index, server) in servers.iter_mut().enumerate() {
        let id = index as u64 + 1;
        let mut senders = vec![
            next_message(&mut server.events).await,
            next_message(&mut server.events).await,
        ];
        senders.sort_by_key(|(from, _)| *from);
        let expected: Vec<_> = (1..=3u64)
            .filter(|from| *from != id)
            .map(|from| (from, message(from as u32, id)))
            .collect();
        assert_eq!(senders, expected);
    }
    let established: u64 = servers
        .iter()
        .map(|server| server.handle.metrics().connections_established)
        .sum();
    // Each of the three connections is counted once at each end.
    assert_eq!(established, 6);
}

#[tokio::test]
async fn messages_queued_before_the_connection_go_out_in_one_write() {
    let (listener_1, address_1) = bind().await;
    let (listener_2, address_2) = bind().await;
    let one = start(config(1, &[(2, address_2)]), listener_1);
    for sequence in 0..100 {
        one.handle.send(2, message(0, sequence)).unwrap();
    }
    // Server 2 starts only now; until its handshake, server 1 can only queue.
    let mut two = start(config(2, &[(1, address_1)]), listener_2);
    for sequence in 0..100 {
        assert_eq!(
            next_message(&mut two.events).await,
            (1, message(0, sequence))
        );
    }
    let metrics = wait_for_metrics(&one.handle, |metrics| metrics.frames_sent == 100).await;
    assert_eq!(metrics.writes, 1, "{metrics:?}");
}

/// The hello carries each side's frame limit: a message over the peer's limit is dropped and
/// counted by the sender, and the connection carries on.
#[tokio::test]
async fn a_message_over_the_peers_limit_is_dropped_by_the_sender() {
    let (listener_1, address_1) = bind().await;
    let (listener_2, address_2) = bind().await;
    let mut large_config = config(1, &[(2, address_2)]);
    large_config.frame_size_bytes_max = 8192;
    let one = start(large_config, listener_1);
    let mut small_config = config(2, &[(1, address_1)]);
    small_config.frame_size_bytes_max = 1024;
    let mut two = start(small_config, listener_2);

    let mut oversized = message(0, 0);
    oversized.payload = vec![0; 4096];
    one.handle.send(2, oversized).unwrap();
    wait_for_metrics(&one.handle, |metrics| metrics.dropped_unencodable == 1).await;
    one.handle.send(2, message(0, 1)).unwrap();
    assert_eq!(next_message(&mut two.events).await, (1, message(0, 1)));
    let metrics = two.handle.metrics();
    assert_eq!((metrics.frames_received, metrics.frames_oversized), (1, 0));
    assert_eq!(one.handle.metrics().connections_established, 1);

    // A message over the sender's own maximum never leaves it either.
    let mut too_big_to_send = message(0, 2);
    too_big_to_send.payload = vec![0; 10_000];
    one.handle.send(2, too_big_to_send).unwrap();
    wait_for_metrics(&one.handle, |metrics| metrics.dropped_unencodable == 2).await;
}

/// A frame over the receiver's limit (from a peer that ignores the limit in the hello) closes
/// the connection and is counted.
#[tokio::test]
async fn an_oversized_frame_closes_the_connection_and_is_counted() {
    let (listener_5, address_5) = bind().await;
    let (_, unused_address) = bind().await;
    let mut small_config = config(5, &[(3, unused_address)]);
    small_config.frame_size_bytes_max = 1024;
    let five = start(small_config, listener_5);
    let mut peer = handshake_by_hand(address_5, 3).await.0;
    let mut oversized = message(0, 0);
    oversized.payload = vec![0; 4096];
    peer.write_all(&message_frame(&oversized)).await.unwrap();
    assert_closed_by_peer(&mut peer).await;
    wait_for_metrics(&five.handle, |metrics| metrics.frames_oversized == 1).await;
}

#[tokio::test]
async fn garbage_closes_only_its_own_connection() {
    let (listener_1, address_1) = bind().await;
    let (listener_5, address_5) = bind().await;
    let (_, unused_address) = bind().await;
    let mut one = start(config(1, &[(5, address_5)]), listener_1);
    let mut five = start(
        config(5, &[(1, address_1), (3, unused_address)]),
        listener_5,
    );
    one.handle.send(5, message(0, 0)).unwrap();
    assert_eq!(next_message(&mut five.events).await, (1, message(0, 0)));

    // Bytes that are not a handshake.
    let mut stranger = TcpStream::connect(address_5).await.unwrap();
    stranger.write_all(&[0xde; 64]).await.unwrap();
    assert_closed_by_peer(&mut stranger).await;
    wait_for_metrics(&five.handle, |metrics| {
        metrics.handshake_failures_for(HandshakeFailure::Malformed) == 1
    })
    .await;

    // An authenticated peer that then sends a frame that is not a message.
    let mut confused = handshake_by_hand(address_5, 3).await.0;
    confused.write_all(&frame(&[0xff; 10])).await.unwrap();
    assert_closed_by_peer(&mut confused).await;
    wait_for_metrics(&five.handle, |metrics| metrics.frames_malformed == 1).await;

    // The connection with server 1 carried on in both directions.
    one.handle.send(5, message(0, 1)).unwrap();
    assert_eq!(next_message(&mut five.events).await, (1, message(0, 1)));
    five.handle.send(1, message(0, 2)).unwrap();
    assert_eq!(next_message(&mut one.events).await, (5, message(0, 2)));
    assert_eq!(five.handle.metrics().connections_established, 2);
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_after_the_write_timeout() {
    let (listener_1, _) = bind().await;
    let (listener_2, address_2) = bind().await;
    let mut impatient = config(1, &[(2, address_2)]);
    impatient.write_timeout_ms = 200;
    let mut one = start(impatient, listener_1);
    let _never_reads = accept_by_hand(&listener_2, 2).await;
    expect_reachability(&mut one.events, Incoming::PeerUp(2)).await;
    // 32 MiB: far more than the two socket buffers hold.
    for sequence in 0..64 {
        let mut large = message(0, sequence);
        large.payload = vec![0; 512 * 1024];
        one.handle.send(2, large).unwrap();
    }
    expect_reachability(&mut one.events, Incoming::PeerDown(2)).await;
    assert_eq!(one.handle.metrics().write_timeouts, 1);
}

#[tokio::test]
async fn a_peer_that_dials_again_replaces_its_connection() {
    let (listener_5, address_5) = bind().await;
    let (_, unused_address) = bind().await;
    let mut five = start(config(5, &[(3, unused_address)]), listener_5);
    let mut first = handshake_by_hand(address_5, 3).await.0;
    expect_reachability(&mut five.events, Incoming::PeerUp(3)).await;
    let mut second = handshake_by_hand(address_5, 3).await.0;
    assert_closed_by_peer(&mut first).await;
    wait_for_metrics(&five.handle, |metrics| metrics.connections_replaced == 1).await;
    // Server 5 now writes to the newer connection.
    five.handle.send(3, message(0, 9)).unwrap();
    let payload = read_frame(&mut second).await;
    let received: GroupMessage = net::codec::decode_message(&payload).unwrap();
    assert_eq!(received, message(0, 9));
    assert_eq!(five.handle.metrics().peer_down_events, 0);
}

#[tokio::test]
async fn dropping_every_handle_stops_the_transport() {
    let (mut one, two) = pair().await;
    one.handle.send(2, message(0, 0)).unwrap();
    expect_reachability(&mut one.events, Incoming::PeerUp(2)).await;
    drop(two);
    expect_reachability(&mut one.events, Incoming::PeerDown(2)).await;
    drop(one.handle);
    let last = tokio::time::timeout(PATIENCE, async {
        while one.events.recv().await.is_some() {}
    })
    .await;
    assert!(last.is_ok(), "the event channel stayed open");
}

/// Binds `address` again once the stopped transport has released it.
async fn rebind(address: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(error) => assert!(tokio::time::Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn restarted_peers_are_reconnected() {
    let (listener_1, address_1) = bind().await;
    let (listener_2, address_2) = bind().await;
    let mut one = start(config(1, &[(2, address_2)]), listener_1);
    let two = start(config(2, &[(1, address_1)]), listener_2);
    one.handle.send(2, message(0, 0)).unwrap();
    expect_reachability(&mut one.events, Incoming::PeerUp(2)).await;

    // The accepting side restarts: the dialing side notices and dials until it is back.
    two.handle.shutdown();
    expect_reachability(&mut one.events, Incoming::PeerDown(2)).await;
    let mut two = start(config(2, &[(1, address_1)]), rebind(address_2).await);
    expect_reachability(&mut one.events, Incoming::PeerUp(2)).await;
    one.handle.send(2, message(0, 1)).unwrap();
    assert_eq!(next_message(&mut two.events).await, (1, message(0, 1)));

    // The dialing side restarts: the accepting side reports it down, then up again.
    one.handle.shutdown();
    expect_reachability(&mut two.events, Incoming::PeerDown(1)).await;
    let mut one = start(config(1, &[(2, address_2)]), rebind(address_1).await);
    expect_reachability(&mut two.events, Incoming::PeerUp(1)).await;
    two.handle.send(1, message(0, 2)).unwrap();
    assert_eq!(next_message(&mut one.events).await, (2, message(0, 2)));
    assert!(one.handle.metrics().dials >= 1);
    let metrics = two.handle.metrics();
    assert_eq!((metrics.reconnections, metrics.peer_down_events), (1, 1));
}

#[tokio::test]
async fn a_message_whose_deadline_passed_in_the_queue_is_never_written() {
    let (listener_1, address_1) = bind().await;
    // Server 2 is down at first: what is sent to it waits in server 1's queue.
    let (listener_2, address_2) = bind().await;
    drop(listener_2);
    let mut one = start(config(1, &[(2, address_2)]), listener_1);
    let soon = tokio::time::Instant::now() + Duration::from_millis(50);
    let later = tokio::time::Instant::now() + PATIENCE * 10;
    one.handle.send_before(2, message(0, 0), soon).unwrap();
    one.handle.send(2, message(0, 1)).unwrap();
    one.handle.send_before(2, message(0, 2), later).unwrap();
    expect_reachability(&mut one.events, Incoming::PeerDown(2)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Server 2 comes up after the first message's deadline: only the other two reach it.
    let mut two = start(config(2, &[(1, address_1)]), rebind(address_2).await);
    assert_eq!(next_message(&mut two.events).await, (1, message(0, 1)));
    assert_eq!(next_message(&mut two.events).await, (1, message(0, 2)));
    assert_eq!(one.handle.metrics().dropped_expired, 1);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let (listener_1, _) = bind().await;
    // Nothing listens at server 2's address, so its queue only fills.
    let (listener_2, address_2) = bind().await;
    drop(listener_2);
    let mut small_queue = config(1, &[(2, address_2)]);
    small_queue.queue_capacity_per_peer = 4;
    let mut one = start(small_queue, listener_1);
    let results: Vec<_> = (0..10).map(|n| one.handle.send(2, message(0, n))).collect();
    assert!(results[..4].iter().all(Result::is_ok), "{results:?}");
    assert!(
        results[4..]
            .iter()
            .all(|result| *result == Err(SendError::QueueFull(2)))
    );
    assert_eq!(one.handle.metrics().dropped_queue_full, 6);
    expect_reachability(&mut one.events, Incoming::PeerDown(2)).await;
    let metrics = wait_for_metrics(&one.handle, |metrics| metrics.dial_failures >= 2).await;
    assert_eq!(metrics.peer_down_events, 1, "reported once per change");

    assert_eq!(
        one.handle.send(9, message(0, 0)),
        Err(SendError::UnknownPeer(9))
    );
    assert_eq!(
        one.handle.send(1, message(0, 0)),
        Err(SendError::UnknownPeer(1))
    );
    assert_eq!(one.handle.metrics().dropped_unknown_peer, 2);
    one.handle.shutdown();
    assert_eq!(one.handle.send(2, message(0, 0)), Err(SendError::Stopped));
}

/// The acceptor counts `reason`; the dialer, which is not told why, sees the connection closed.
async fn assert_refused(change: fn(&mut TransportConfig), reason: HandshakeFailure) {
    let (listener_1, address_1) = bind().await;
    let (listener_2, address_2) = bind().await;
    let mut one = start(config(1, &[(2, address_2)]), listener_1);
    let mut other_config = config(2, &[(1, address_1)]);
    change(&mut other_config);
    let mut two = start(other_config, listener_2);
    one.handle.send(2, message(0, 0)).unwrap();
    wait_for_metrics(&two.handle, |metrics| {
        metrics.handshake_failures_for(reason) >= 2
    })
    .await;
    wait_for_metrics(&one.handle, |metrics| {
        metrics.handshake_failures_for(HandshakeFailure::Io) >= 2
    })
    .await;
    expect_reachability(&mut one.events, Incoming::PeerDown(2)).await;
    for handle in [&one.handle, &two.handle] {
        let metrics = handle.metrics();
        assert_eq!(metrics.connections_established, 0, "{metrics:?}");
        assert_eq!(metrics.frames_received, 0);
    }
    one.handle.shutdown();
    two.handle.shutdown();
    let last = tokio::time::timeout(PATIENCE, two.events.recv()).await;
    assert_eq!(last, Ok(None), "nothing reached server 2");
}

#[tokio::test]
async fn another_cluster_id_is_refused() {
    assert_refused(|config| config.cluster_id += 1, HandshakeFailure::ClusterId).await;
}

#[tokio::test]
async fn another_secret_is_refused() {
    assert_refused(
        |config| config.cluster_secret = b"not the cluster's secret".to_vec(),
        HandshakeFailure::Authentication,
    )
    .await;
}

#[tokio::test]
async fn a_stranger_claiming_a_higher_id_is_refused() {
    let (listener_2, address_2) = bind().await;
    let (_, address_3) = bind().await;
    let two = start(config(2, &[(3, address_3)]), listener_2);
    let mut stream = TcpStream::connect(address_2).await.unwrap();
    let hello = hello(3, 0);
    stream.write_all(&frame(&hello)).await.unwrap();
    let challenge: [u8; NONCE_BYTES] = read_frame(&mut stream).await.try_into().unwrap();
    // Even with the secret, a higher id learns nothing more: no hello, no proof.
    let proof = dialer_proof(SECRET, &hello, &challenge);
    stream.write_all(&frame(&proof)).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{rest:?}");
    wait_for_metrics(&two.handle, |metrics| {
        metrics.handshake_failures_for(HandshakeFailure::WrongDirection) == 1
    })
    .await;
}
