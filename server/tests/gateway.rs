//! The WebSocket gateway against a real cluster in this process, over loopback: notifications
//! after commit and only then, requests over the socket, resume on the same or another server
//! and across a failover, slow consumers, idle connections, and every class of bad input.

#![cfg(not(madsim))]

mod support;

#[path = "support/api.rs"]
mod api;

use client::{Request, Response};
use futures_util::{SinkExt, StreamExt};
use gateway_client::{Change, Event, GatewayClient, GatewayConfig, GatewayError, Position};
use serde_json::{Value, json};
use server::default_shards;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{TOKEN, TestCluster, USERS_TOKEN};
use tokio_tungstenite::tungstenite::Message;

type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn gateway_client(servers: Vec<String>, token: &str) -> GatewayClient {
    let mut config = GatewayConfig::new(servers, token);
    config.backoff_max = Duration::from_millis(200);
    config.connect_timeout = Duration::from_secs(2);
    GatewayClient::connect(config)
}

/// The next change, skipping connection events; fails after `within`.
async fn next_change(client: &mut GatewayClient, within: Duration) -> Change {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .expect("a change in time")
            .expect("the client runs");
        match event {
            Event::Change(change) => return change,
            Event::Resync { channel, .. } => panic!("unexpected resync of {channel}"),
            _ => {}
        }
    }
}

async fn raw_socket(url: &str) -> RawSocket {
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket
}

async fn send(socket: &mut RawSocket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next text frame, parsed (pings are skipped).
async fn receive(socket: &mut RawSocket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a frame");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn server_metrics(cluster: &TestCluster, id: u64) -> std::sync::Arc<server::metrics::Metrics> {
    let server = cluster.servers[id as usize - 1].as_ref().unwrap();
    server.service().metrics().clone()
}

/// Three servers with these gateway limits, every shard led.
async fn cluster_with_gateway(gateway: server::GatewayLimits) -> TestCluster {
    let limits = server::Limits {
        gateway,
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, default_shards(3), limits).await;
    cluster.wait_for_leaders().await;
    cluster
}

/// What `/metrics` shows of server `id`.
fn metrics_text(cluster: &TestCluster, id: u64) -> String {
    let server = cluster.servers[id as usize - 1].as_ref().unwrap();
    server.service().metrics_text()
}

async fn stop_all(cluster: &mut TestCluster) {
    for id in 1..=cluster.configs.len() as u64 {
        cluster.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_notified_once_applied_with_the_position_of_its_write() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let mut subscriber = gateway_client(vec![cluster.ws_url(1)], TOKEN);
    subscriber.subscribe("kv:us/", None).await.unwrap();
    // Written through the native protocol, by another server: the gateway publishes what is
    // applied, whoever wrote it.
    let written = cluster.client().put("us/alice", "Alice").await.unwrap();
    let change = next_change(&mut subscriber, Duration::from_secs(10)).await;
    assert_eq!(change.channel, "kv:us/");
    assert_eq!(change.key, "us/alice");
    assert_eq!(change.value.as_deref(), Some("Alice"));
    let position = Position {
        shard: written.shard,
        index: written.index,
    };
    assert_eq!(change.position, position);
    // Published when applied, never earlier: the subscriber's server already holds it.
    let service = cluster.servers[0].as_ref().unwrap().service().clone();
    let stale = Request::Get {
        key: "us/alice".into(),
        consistency: client::Consistency::Stale,
    };
    let Response::Value(Some(value)) = service.execute(stale).await else {
        panic!("applied on the subscriber's server")
    };
    assert!(value.mod_index >= position.index);
    stop_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_notifies_every_shards_changes_and_a_transactions_changes_together() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let mut subscriber = gateway_client(vec![cluster.ws_url(2)], TOKEN);
    let at = subscriber.subscribe("kv:", None).await.unwrap();
    assert_eq!(at.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    let writer = cluster.client();
    let mut expected = Vec::new();
    for key in ["ev/am/alice/1", "ev/nz/olga/1", "gr/team", "us/alice"] {
        let written = writer.put(key, "v").await.unwrap();
        expected.push((key.to_owned(), written.shard, written.index));
    }
    let team = kv::Txn {
        compares: vec![],
        success: vec![
            kv::Op::Put {
                key: "gr/team/bob".into(),
                value: "member".into(),
            },
            kv::Op::Delete {
                key: "gr/team".into(),
            },
        ],
        failure: vec![],
    };
    let txn = writer.write(kv::Write::Txn(team)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let change = next_change(&mut subscriber, Duration::from_secs(10)).await;
        seen.push((change.key, change.position.shard, change.position.index));
    }
    // The transaction's two changes: one position, consecutive, in the order it made them
    // (shards are independent, so the others may come in any order around them).
    let first = seen
        .iter()
        .position(|(_, shard, index)| (*shard, *index) == (txn.shard, txn.index))
        .expect("the transaction's changes");
    let together: Vec<_> = seen.drain(first..first + 2).collect();
    let keys: Vec<&str> = together.iter().map(|(key, _, _)| key.as_str()).collect();
    assert_eq!(keys, ["gr/team/bob", "gr/team"]);
    assert!(
        together
            .iter()
            .all(|(_, s, i)| (*s, *i) == (txn.shard, txn.index))
    );
    seen.sort_by_key(|(_, shard, _)| *shard);
    assert_eq!(seen, expected, "each shard's change, once");
    stop_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_notifies_nothing() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let mut subscriber = gateway_client(vec![cluster.ws_url(2)], TOKEN);
    subscriber.subscribe("kv:", None).await.unwrap();
    // A compare-and-swap whose compare fails is applied (at a position) but changes nothing;
    // a write spanning shards is refused before it reaches a log.
    let failed = subscriber
        .request(json!({"method": "cas", "key": "us/x", "expected": "nope", "value": "v"}))
        .await
        .unwrap();
    assert_eq!(failed["succeeded"], false);
    let spanning = kv::Txn {
        compares: vec![],
        success: vec![
            kv::Op::Put {
                key: "gr/x".into(),
                value: "1".into(),
            },
            kv::Op::Put {
                key: "us/x".into(),
                value: "1".into(),
            },
        ],
        failure: vec![],
    };
    assert!(cluster.client().txn(spanning).await.is_err());
    // The next change the subscriber sees is the next accepted write.
    let accepted = subscriber.put("us/y", "accepted").await.unwrap();
    let change = next_change(&mut subscriber, Duration::from_secs(10)).await;
    assert_eq!((change.key.as_str(), change.position), ("us/y", accepted));
    stop_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_socket_is_answered_and_its_notification_carries_the_reply_position() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let mut client = gateway_client(vec![cluster.ws_url(3)], TOKEN);
    client.subscribe("kv:gr/team", None).await.unwrap();
    let put = client.put("gr/team", "Team").await.unwrap();
    let change = next_change(&mut client, Duration::from_secs(10)).await;
    assert_eq!(change.position, put);
    assert_eq!(
        client.get("gr/team").await.unwrap().as_deref(),
        Some("Team")
    );
    let listed = client
        .request(json!({"method": "list", "prefix": "gr/"}))
        .await
        .unwrap();
    assert_eq!(listed["entries"][0]["key"], "gr/team");
    let deleted = client.delete("gr/team").await.unwrap();
    assert!(deleted.index > put.index);
    let change = next_change(&mut client, Duration::from_secs(10)).await;
    assert_eq!((change.position, change.value), (deleted, None));
    // A transaction over the socket: its changes carry the reply's position.
    let txn = json!({"method": "txn",
        "compare": [{"op": "absent", "key": "gr/team"}],
        "success": [{"op": "put", "key": "gr/team", "value": "again"}, {"op": "get", "key": "gr/team"}],
    });
    let reply = client.request(txn).await.unwrap();
    assert_eq!(reply["succeeded"], true);
    assert_eq!(reply["results"][1]["value"], "again");
    let change = next_change(&mut client, Duration::from_secs(10)).await;
    assert_eq!(json!(change.position), reply["position"]);
    // A request the service refuses comes back as an error with the request's id.
    let too_long = "k".repeat(5000);
    let refused = client
        .request(json!({"method": "get", "key": too_long}))
        .await;
    assert!(
        matches!(&refused, Err(GatewayError::Server { code, .. }) if code == "bad_request"),
        "{refused:?}"
    );
    stop_all(&mut cluster).await;
}

/// Writes `count` keys `us/resume/NNN` one after the other through the native client and
/// answers their positions.
async fn write_sequence(
    client: client::Client,
    first: usize,
    count: usize,
) -> Vec<(String, Position)> {
    let mut written = Vec::new();
    for n in first..first + count {
        let key = format!("us/resume/{n:04}");
        let answer = client.put(key.clone(), "v").await.unwrap();
        written.push((
            key,
            Position {
                shard: answer.shard,
                index: answer.index,
            },
        ));
    }
    written
}

/// As [`write_sequence`], through one server's service (its router follows a new leader as
/// soon as one is elected, with no client-side timeout).
async fn write_sequence_via(
    service: server::Service,
    first: usize,
    count: usize,
) -> Vec<(String, Position)> {
    let mut written = Vec::new();
    for n in first..first + count {
        let key = format!("us/resume/{n:04}");
        let put = kv::Write::Put {
            key: key.clone().into(),
            value: "v".into(),
        };
        match service.write(put, None).await {
            Response::Written { shard, index, .. } => {
                written.push((key, Position { shard, index }));
            }
            other => panic!("{other:?}"),
        }
    }
    written
}

/// Collects `count` changes and checks that they are exactly `expected`, in order.
async fn expect_exactly(subscriber: &mut GatewayClient, expected: &[(String, Position)]) {
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let change = next_change(subscriber, Duration::from_secs(20)).await;
        seen.push((change.key, change.position));
    }
    assert_eq!(seen, expected, "no gap, no duplicate, in log order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resuming_on_another_server_gets_exactly_what_it_missed() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let writer = cluster.client();
    let mut first = gateway_client(vec![cluster.ws_url(1)], TOKEN);
    first.subscribe("kv:us/resume/", None).await.unwrap();
    let before = write_sequence(writer.clone(), 0, 5).await;
    expect_exactly(&mut first, &before).await;
    let last_seen = first.positions("kv:us/resume/").unwrap();
    drop(first);
    let missed = write_sequence(writer.clone(), 5, 7).await;
    // Another client, on another server, from the first one's positions.
    let mut second = gateway_client(vec![cluster.ws_url(2)], TOKEN);
    let at = second
        .subscribe("kv:us/resume/", Some(last_seen.clone()))
        .await
        .unwrap();
    assert_eq!(at, last_seen);
    let after = write_sequence(writer, 12, 3).await;
    let expected: Vec<_> = missed.into_iter().chain(after).collect();
    expect_exactly(&mut second, &expected).await;
    stop_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_follows_its_server_through_a_crash_and_failover_without_gap_or_duplicate() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    let status = cluster.wait_for_leaders().await;
    let users = status.shards.iter().find(|s| s.name == "users").unwrap();
    let leader = users.leader_id;
    // Connected first to the users shard's leader, which is then crashed.
    let mut urls = vec![cluster.ws_url(leader)];
    urls.extend(
        (1..=3)
            .filter(|id| *id != leader)
            .map(|id| cluster.ws_url(id)),
    );
    // It waits a while before reconnecting, so that writes commit on the new leader while
    // it is away: it must be sent them again.
    let mut config = GatewayConfig::new(urls, TOKEN);
    config.backoff_min = Duration::from_secs(3);
    let mut subscriber = GatewayClient::connect(config);
    subscriber.subscribe("kv:us/resume/", None).await.unwrap();
    let survivor = if leader == 1 { 2 } else { 1 };
    let writer = cluster.servers[survivor as usize - 1]
        .as_ref()
        .unwrap()
        .service()
        .clone();
    let mut expected = write_sequence_via(writer.clone(), 0, 10).await;
    let writing = tokio::spawn(write_sequence_via(writer.clone(), 10, 30));
    tokio::time::sleep(Duration::from_millis(20)).await;
    cluster.crash(leader).await;
    expected.extend(writing.await.unwrap());
    expected.extend(write_sequence_via(writer, 40, 5).await);
    let mut seen = Vec::new();
    let mut reconnected = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < expected.len() {
        let event = tokio::time::timeout_at(deadline, subscriber.next_event())
            .await
            .expect("every change in time")
            .unwrap();
        match event {
            Event::Change(change) => seen.push((change.key, change.position)),
            Event::Resync { .. } => panic!("the history covers what was missed"),
            Event::Connected { server } if server != cluster.ws_url(leader) => reconnected = true,
            _ => {}
        }
    }
    assert!(reconnected, "the subscriber moved to another server");
    assert_eq!(seen, expected, "no gap, no duplicate, in log order");
    let new_leader = cluster.wait_for_leaders().await;
    let users_now = new_leader
        .shards
        .iter()
        .find(|s| s.name == "users")
        .unwrap();
    assert_ne!(users_now.leader_id, leader, "a failover happened");
    stop_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_the_history_gets_a_resync() {
    let mut cluster = cluster_with_gateway(server::GatewayLimits {
        history_entries: 4,
        ..Default::default()
    })
    .await;
    let writer = cluster.client();
    let mut first = gateway_client(vec![cluster.ws_url(1)], TOKEN);
    first.subscribe("kv:us/resume/", None).await.unwrap();
    let before = write_sequence(writer.clone(), 0, 1).await;
    expect_exactly(&mut first, &before).await;
    let last_seen = first.positions("kv:us/resume/").unwrap();
    drop(first);
    write_sequence(writer, 1, 10).await;
    let mut second = gateway_client(vec![cluster.ws_url(1)], TOKEN);
    second
        .subscribe("kv:us/resume/", Some(last_seen))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), second.next_event()).await {
            Ok(Some(Event::Resync { channel, at })) => {
                assert_eq!(channel, "kv:us/resume/");
                assert!(at[&4] >= before[0].1.index + 10);
                break;
            }
            Ok(Some(Event::Change(change))) => panic!("a change instead of a resync: {change:?}"),
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    stop_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_dropped_with_a_reason_and_counted() {
    let mut cluster = cluster_with_gateway(server::GatewayLimits {
        queue_frames: 8,
        write_timeout_ms: 120_000,
        ..Default::default()
    })
    .await;
    let mut socket = raw_socket(&cluster.ws_url(1)).await;
    send(&mut socket, json!({"op": "auth", "token": TOKEN})).await;
    assert_eq!(receive(&mut socket).await["op"], "authenticated");
    send(
        &mut socket,
        json!({"op": "subscribe", "channel": "kv:us/big/"}),
    )
    .await;
    assert_eq!(receive(&mut socket).await["op"], "subscribed");
    // The subscriber stops reading; large changes fill the socket's buffers, then its queue.
    let metrics = cluster.servers[0]
        .as_ref()
        .unwrap()
        .service()
        .metrics()
        .clone();
    let writer = cluster.client();
    let value = "x".repeat(256 * 1024);
    let mut written = 0;
    while metrics.counters.ws_slow_consumers.load(Ordering::Relaxed) == 0 {
        assert!(written < 400, "the subscriber was never dropped");
        let key = format!("us/big/{written}");
        writer.put(key, value.clone()).await.unwrap();
        written += 1;
    }
    // Reading again, it finds the changes that were written to it, then the reason.
    let reason = loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("the close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => break frame.reason.to_string(),
            Some(Ok(_)) => {}
            other => panic!("closed without a reason: {other:?}"),
        }
    };
    assert_eq!(reason, "slow_consumer");
    // The node loop kept going: writes still commit and other subscribers are served.
    let mut other = gateway_client(vec![cluster.ws_url(1)], TOKEN);
    other.subscribe("kv:us/after", None).await.unwrap();
    let put = other.put("us/after", "ok").await.unwrap();
    assert_eq!(
        next_change(&mut other, Duration::from_secs(10))
            .await
            .position,
        put
    );
    let text = metrics_text(&cluster, 1);
    assert!(text.contains("agenda_ws_slow_consumers 1"), "{text}");
    stop_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_times_out_while_a_live_one_is_kept_by_pings() {
    let mut cluster = cluster_with_gateway(server::GatewayLimits {
        ping_interval_ms: 100,
        idle_timeout_ms: 400,
        ..Default::default()
    })
    .await;
    // The client library reads, so it answers the server's pings.
    let mut live = gateway_client(vec![cluster.ws_url(1)], TOKEN);
    live.subscribe("kv:us/", None).await.unwrap();
    // A raw socket that authenticates, then never reads, answers no ping.
    let mut idle = raw_socket(&cluster.ws_url(1)).await;
    send(&mut idle, json!({"op": "auth", "token": TOKEN})).await;
    assert_eq!(receive(&mut idle).await["op"], "authenticated");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(close_reason(&mut idle).await, "idle");
    let put = live.put("us/still-here", "yes").await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), live.next_event()).await {
            Ok(Some(Event::Change(change))) => {
                assert_eq!(change.position, put);
                break;
            }
            Ok(Some(Event::Disconnected { reason, .. })) => panic!("dropped: {reason}"),
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    let metrics = cluster.servers[0]
        .as_ref()
        .unwrap()
        .service()
        .metrics()
        .clone();
    assert_eq!(metrics.counters.ws_idle_closed.load(Ordering::Relaxed), 1);
    stop_all(&mut cluster).await;
}

/// The close reason a raw socket receives next (other frames skipped).
async fn close_reason(socket: &mut RawSocket) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return frame.reason.to_string(),
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_authenticate_is_closed() {
    let mut cluster = cluster_with_gateway(server::GatewayLimits {
        // Long enough for the three guesses below, even on a loaded machine.
        ping_interval_ms: 2_000,
        idle_timeout_ms: 10_000,
        ..Default::default()
    })
    .await;
    let mut silent = raw_socket(&cluster.ws_url(1)).await;
    // Two wrong tokens are answered; the third closes the connection at once.
    let mut guesser = raw_socket(&cluster.ws_url(1)).await;
    for guess in ["guess number one", "guess number two"] {
        let guess = text(json!({"op": "auth", "token": guess}));
        expect_error(&mut guesser, guess, "unauthorized").await;
    }
    send(
        &mut guesser,
        json!({"op": "auth", "token": "guess number three"}),
    )
    .await;
    assert_eq!(close_reason(&mut guesser).await, "unauthenticated");
    // Silent after connecting: closed at the first ping, long before the idle timeout.
    assert_eq!(close_reason(&mut silent).await, "unauthenticated");
    let counters = &server_metrics(&cluster, 1).counters;
    assert_eq!(
        counters.ws_unauthenticated_closed.load(Ordering::Relaxed),
        2
    );
    stop_all(&mut cluster).await;
}

/// Sends `frame` and expects an error frame with `code`.
async fn expect_error(socket: &mut RawSocket, frame: Message, code: &str) -> Value {
    socket.send(frame).await.unwrap();
    let answer = receive(socket).await;
    assert_eq!(answer["op"], "error", "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
    answer
}

fn text(frame: Value) -> Message {
    Message::Text(frame.to_string().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_answered_with_an_error_frame_and_counted() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let mut socket = raw_socket(&cluster.ws_url(1)).await;
    let subscribe_users = text(json!({"op": "subscribe", "channel": "kv:us/"}));
    expect_error(&mut socket, subscribe_users.clone(), "unauthenticated").await;
    let wrong_token = text(json!({"op": "auth", "token": "not a token at all"}));
    expect_error(&mut socket, wrong_token, "unauthorized").await;
    // A token that may read only `us/`.
    send(&mut socket, json!({"op": "auth", "token": USERS_TOKEN})).await;
    assert_eq!(receive(&mut socket).await["op"], "authenticated");
    expect_error(&mut socket, Message::Text("{not json".into()), "malformed").await;
    expect_error(&mut socket, text(json!({"op": "dance"})), "unknown_op").await;
    expect_error(
        &mut socket,
        Message::Binary(vec![1, 2, 3].into()),
        "malformed",
    )
    .await;
    let unknown = text(json!({"op": "subscribe", "channel": "calendar:bob"}));
    let answer = expect_error(&mut socket, unknown, "unknown_channel").await;
    assert_eq!(answer["channel"], "calendar:bob");
    let groups = text(json!({"op": "subscribe", "channel": "kv:gr/"}));
    expect_error(&mut socket, groups, "forbidden").await;
    let whole_shard = text(json!({"op": "subscribe", "channel": "shard:4"}));
    expect_error(&mut socket, whole_shard, "forbidden").await;
    let foreign_write =
        text(json!({"op": "request", "id": 7, "method": "put", "key": "gr/x", "value": "v"}));
    let answer = expect_error(&mut socket, foreign_write, "forbidden").await;
    assert_eq!(answer["id"], 7);
    let no_id = text(json!({"op": "request", "method": "get", "key": "us/a"}));
    expect_error(&mut socket, no_id, "malformed").await;
    let bad_method = text(json!({"op": "request", "id": 8, "method": "explode"}));
    assert_eq!(
        expect_error(&mut socket, bad_method, "malformed").await["id"],
        8
    );
    let huge = "x".repeat(server::gateway::session::MESSAGE_BYTES_MAX + 1);
    let oversized =
        text(json!({"op": "request", "id": 9, "method": "put", "key": "us/a", "value": huge}));
    expect_error(&mut socket, oversized, "too_large").await;
    let bad_from = text(json!({"op": "subscribe", "channel": "kv:us/", "from": "yesterday"}));
    expect_error(&mut socket, bad_from, "malformed").await;
    // The connection and the server are still up: what the token allows works.
    socket.send(subscribe_users).await.unwrap();
    assert_eq!(receive(&mut socket).await["op"], "subscribed");
    let put = json!({"op": "request", "id": 10, "method": "put", "key": "us/ok", "value": "v"});
    send(&mut socket, put).await;
    let mut replied = false;
    let mut notified = false;
    while !(replied && notified) {
        let frame = receive(&mut socket).await;
        replied |= frame["op"] == "reply" && frame["id"] == 10;
        notified |= frame["op"] == "change" && frame["key"] == "us/ok";
    }
    let metrics = cluster.servers[0]
        .as_ref()
        .unwrap()
        .service()
        .metrics()
        .clone();
    let counters = &metrics.counters;
    let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    assert_eq!(count(&counters.ws_unauthenticated), 1);
    assert_eq!(count(&counters.ws_malformed), 6);
    assert_eq!(count(&counters.ws_unknown_channels), 1);
    assert_eq!(count(&counters.ws_forbidden), 3);
    assert_eq!(count(&counters.ws_oversized), 1);
    assert!(count(&counters.client_unauthorized) >= 1);
    let text = metrics_text(&cluster, 1);
    assert!(text.contains("agenda_ws_oversized 1"), "{text}");
    stop_all(&mut cluster).await;
}

/// `GET /health` over a plain connection: the HTTP status line.
async fn http_health(address: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = "GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_leave_the_http_connection_limit_and_have_their_own() {
    let connections_max = server::api::http::CONNECTIONS_MAX + 40;
    let mut cluster = cluster_with_gateway(server::GatewayLimits {
        connections_max,
        ..Default::default()
    })
    .await;
    let url = cluster.ws_url(1);
    let mut sockets = Vec::new();
    for _ in 0..connections_max {
        let connecting = tokio_tungstenite::connect_async(url.as_str());
        let connected = tokio::time::timeout(Duration::from_secs(5), connecting).await;
        let (socket, _) = connected.expect("a WebSocket holds no HTTP slot").unwrap();
        sockets.push(socket);
    }
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("one connection too many was not refused: {other:?}"),
    }
    let http = cluster.configs[0].me().http.unwrap();
    assert!(
        http_health(http).await.contains("200"),
        "plain HTTP is still served"
    );
    let metrics = server_metrics(&cluster, 1);
    let refused = metrics
        .counters
        .ws_connections_refused
        .load(Ordering::Relaxed);
    assert_eq!(refused, 1);
    drop(sockets);
    stop_all(&mut cluster).await;
}

/// One gateway connection over the native client port.
struct NativeGateway {
    frames: client::protocol::FrameReader<tokio::io::ReadHalf<tokio::net::TcpStream>>,
    writer: tokio::io::WriteHalf<tokio::net::TcpStream>,
}

impl NativeGateway {
    /// Connects to server `id`'s native port and opens the gateway protocol.
    async fn open(cluster: &TestCluster, id: u64) -> NativeGateway {
        let address = cluster.configs[id as usize - 1].me().client;
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (reader, writer) = tokio::io::split(stream);
        let mut gateway = NativeGateway {
            frames: client::protocol::FrameReader::new(reader, 1 << 20),
            writer,
        };
        let hello = client::protocol::ClientFrame {
            id: 7,
            request: Request::Gateway,
        };
        gateway.write(&hello).await;
        let welcome: client::protocol::ServerFrame = gateway.read().await;
        assert_eq!(welcome.id, 7);
        assert_eq!(welcome.response, Response::Welcome { server_id: id });
        gateway
    }

    async fn write<M: serde::Serialize>(&mut self, message: &M) {
        let mut buffer = bytes::BytesMut::new();
        net::codec::encode_message(message, 1 << 20, &mut buffer).unwrap();
        client::protocol::write_and_flush(&mut self.writer, &buffer)
            .await
            .unwrap();
    }

    async fn read<M: serde::de::DeserializeOwned>(&mut self) -> M {
        let payload = tokio::time::timeout(Duration::from_secs(10), self.frames.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .expect("the connection is open");
        net::codec::decode_message(&payload).unwrap()
    }

    async fn send(&mut self, message: Value) {
        self.write(&message.to_string()).await;
    }

    async fn receive(&mut self) -> Value {
        let text: String = self.read().await;
        serde_json::from_str(&text).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_protocol_also_runs_over_the_native_port() {
    let mut cluster = cluster_with_gateway(server::GatewayLimits {
        ping_interval_ms: 1_000,
        ..Default::default()
    })
    .await;
    cluster.wait_for_leaders().await;
    let mut gateway = NativeGateway::open(&cluster, 2).await;
    gateway.send(json!({"op": "auth", "token": TOKEN})).await;
    assert_eq!(gateway.receive().await["op"], "authenticated");
    gateway
        .send(json!({"op": "subscribe", "channel": "kv:us/"}))
        .await;
    assert_eq!(gateway.receive().await["op"], "subscribed");
    let written = cluster.client().put("us/bob", "Bob").await.unwrap();
    let change = gateway.receive().await;
    assert_eq!(change["op"], "change");
    assert_eq!(change["key"], "us/bob");
    assert_eq!(change["value"], "Bob");
    assert_eq!(change["position"]["index"], written.index);
    // Bad input is answered as over a WebSocket: text that is not JSON, then a frame that is
    // not text at all.
    gateway.write(&"not json".to_string()).await;
    assert_eq!(gateway.receive().await["code"], "malformed");
    gateway.write(&42_u64).await;
    assert_eq!(gateway.receive().await["code"], "malformed");
    // An agenda session on the native port sends the agenda's requests, as over a WebSocket.
    let api = api::Api {
        address: cluster.configs[0].me().http.expect("HTTP is on"),
    };
    let carol = api.user("carol", "UTC").await;
    let mut agenda = NativeGateway::open(&cluster, 3).await;
    agenda.send(json!({"op": "auth", "token": carol})).await;
    assert_eq!(agenda.receive().await["user"], "carol");
    let call = json!({"op": "request", "id": 1, "method": "agenda", "call": "GET /v1/me"});
    agenda.send(call).await;
    let reply = agenda.receive().await;
    assert_eq!(
        (&reply["op"], &reply["status"], &reply["body"]["name"]),
        (&json!("reply"), &json!(200), &json!("carol")),
        "{reply}"
    );
    // A connection that never authenticates is closed at the first ping interval, with the
    // reason in a last message.
    let mut silent = NativeGateway::open(&cluster, 1).await;
    let closed = silent.receive().await;
    assert_eq!(closed, json!({"op": "closed", "reason": "unauthenticated"}));
    assert_eq!(
        server_metrics(&cluster, 1)
            .counters
            .ws_unauthenticated_closed
            .load(Ordering::Relaxed),
        1
    );
    stop_all(&mut cluster).await;
}
