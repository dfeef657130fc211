//! Real server processes on real disks over real sockets: leader kills under load, a full
//! restart, a new member catching up by snapshot, exactly-once across a leader change, hostile
//! input on every port, and a WebSocket subscriber that resumes on another process after its
//! server is killed.

#![cfg(not(madsim))]

#[path = "support/process.rs"]
mod process;

use bytes::Bytes;
use client::{Client, Request, Response};
use process::{ProcessCluster, bearer, http, metric};
use server::default_shards;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// What the writers saw acknowledged: key → value.
type Acknowledged = Arc<Mutex<BTreeMap<String, String>>>;

/// A writer that puts `count` distinct keys spread over the shards, through its own client,
/// recording each acknowledged write. A write that fails (its outcome unknown) is not recorded.
async fn writer(client: Client, writer: usize, count: usize, acknowledged: Acknowledged) -> usize {
    let prefixes = ["ev/am/alice", "ev/nz/olga", "gr/team", "us/user"];
    let mut failures = 0;
    for round in 0..count {
        let key = format!("{}/{writer}/{round}", prefixes[round % prefixes.len()]);
        let value = format!("value {writer} {round}");
        match client.put(key.clone(), value.clone()).await {
            Ok(_) => {
                acknowledged.lock().await.insert(key, value);
            }
            Err(_) => failures += 1,
        }
    }
    failures
}

/// A shard's leader and that leader's view of its replica (membership included).
fn leader_view(status: &client::ClusterStatus, shard: u64) -> (u64, client::ReplicaStatus) {
    let shard = status
        .shards
        .iter()
        .find(|s| s.shard == shard)
        .expect("the shard");
    let leader = shard
        .replicas
        .iter()
        .find(|r| r.server_id == shard.leader_id);
    (
        shard.leader_id,
        leader.expect("the leader's replica").clone(),
    )
}

async fn assert_all_readable(client: &Client, acknowledged: &Acknowledged) {
    for (key, value) in acknowledged.lock().await.iter() {
        let found = client.get(key.clone()).await.unwrap();
        assert_eq!(
            found.map(|versioned| versioned.value),
            Some(Bytes::from(value.clone())),
            "acknowledged write of {key} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leaders_killed_again_and_again() {
    let mut cluster = ProcessCluster::start("chaos", 4, 4, default_shards(4), 500);
    let client = cluster.client();
    cluster.wait_for_leaders(&client).await;
    let acknowledged = Acknowledged::default();
    let writers: Vec<_> = (0..8)
        .map(|index| {
            let client = cluster.client_from(index % 4);
            tokio::spawn(writer(client, index, 300, acknowledged.clone()))
        })
        .collect();
    // The chaos: the leader of one shard after another is killed with SIGKILL, then restarted.
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let status = cluster.wait_for_leaders(&client).await;
        let leader = status.shards[round % status.shards.len()].leader_id;
        cluster.kill(leader);
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.launch(leader, false);
    }
    let mut failures = 0;
    for writer in writers {
        failures += writer.await.unwrap();
    }
    let acknowledged_count = acknowledged.lock().await.len();
    eprintln!(
        "chaos: {acknowledged_count} writes acknowledged, {failures} failed (outcome unknown)"
    );
    assert_eq!(acknowledged_count + failures, 8 * 300);
    assert!(
        acknowledged_count >= 2000,
        "{acknowledged_count} acknowledged, {failures} failed"
    );
    cluster.wait_for_leaders(&client).await;
    assert_all_readable(&client, &acknowledged).await;
    cluster.assert_replicas_converge(&client, |_| 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_every_server_crashes_or_stops() {
    let mut cluster = ProcessCluster::start("restart", 4, 4, default_shards(4), 200);
    let client = cluster.client();
    cluster.wait_for_leaders(&client).await;
    let acknowledged = Acknowledged::default();
    let writers: Vec<_> = (0..4)
        .map(|index| {
            tokio::spawn(writer(
                cluster.client_from(index),
                index,
                150,
                acknowledged.clone(),
            ))
        })
        .collect();
    for writer in writers {
        assert_eq!(
            writer.await.unwrap(),
            0,
            "no write fails while every server runs"
        );
    }
    // Every server dies at once, without a chance to sync anything more.
    for id in 1..=4 {
        cluster.kill(id);
    }
    for id in 1..=4 {
        cluster.launch(id, false);
    }
    let client = cluster.client();
    cluster.wait_for_leaders(&client).await;
    assert_all_readable(&client, &acknowledged).await;
    // A clean stop (SIGTERM) exits with success, and a second full restart loses nothing.
    for id in 1..=4 {
        assert!(
            cluster.terminate(id),
            "server {id} stops cleanly on SIGTERM"
        );
    }
    for id in 1..=4 {
        cluster.launch(id, false);
    }
    cluster.wait_for_leaders(&client).await;
    assert_all_readable(&client, &acknowledged).await;
    cluster.assert_replicas_converge(&client, |_| 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_server_joins_a_shard_under_load_and_catches_up_by_snapshot() {
    // Five servers are configured; the shards live on the first four; the fifth starts empty.
    let mut cluster = ProcessCluster::start("membership", 5, 4, default_shards(4), 100);
    let client = cluster.client();
    let status = cluster.wait_for_leaders(&client).await;
    let users = status
        .shards
        .iter()
        .find(|shard| shard.name == "users")
        .unwrap()
        .shard;
    let acknowledged = Acknowledged::default();
    // Enough writes that the users shard compacts its log past what a new member could get
    // by replication.
    writer(cluster.client(), 0, 800, acknowledged.clone()).await;
    cluster.launch(5, true);
    let load = tokio::spawn(writer(cluster.client_from(1), 1, 400, acknowledged.clone()));
    let add = |change| Request::ChangeMembership {
        shard: users,
        change,
    };
    let answer = client
        .request(add(client::MembershipChange::AddLearner(5)))
        .await
        .unwrap();
    assert_eq!(answer, Response::Done);
    // The learner catches up (by snapshot: the log was compacted), then becomes a voter.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = client.cluster_status().await.unwrap();
        let shard = status
            .shards
            .iter()
            .find(|shard| shard.shard == users)
            .unwrap();
        let leader_applied = shard
            .replicas
            .iter()
            .map(|r| r.applied_index)
            .max()
            .unwrap();
        let fifth = shard.replicas.iter().find(|replica| replica.server_id == 5);
        if fifth.is_some_and(|replica| replica.applied_index + 50 >= leader_applied) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server 5 did not catch up: {shard:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric(cluster.http_address(5), "agenda_snapshots_installed") >= 1,
        "the new member caught up by snapshot"
    );
    let answer = client
        .request(add(client::MembershipChange::AddVoter(5)))
        .await
        .unwrap();
    assert_eq!(answer, Response::Done);
    assert_eq!(load.await.unwrap(), 0, "the shard stayed available");
    let (shard_leader, leader) = leader_view(&cluster.wait_for_leaders(&client).await, users);
    assert!(leader.voters.contains(&5), "{leader:?}");
    assert_all_readable(&client, &acknowledged).await;
    // Server 5 holds only the users shard: 5 replicas of it converge, the other shards keep 4.
    cluster
        .assert_replicas_converge(&client, |shard| if shard.shard == users { 5 } else { 4 })
        .await;
    // A voter is removed through the API; the shard keeps serving with the others.
    let removed = *leader
        .voters
        .iter()
        .find(|voter| **voter != shard_leader && **voter != 5)
        .unwrap();
    let remove = Request::ChangeMembership {
        shard: users,
        change: client::MembershipChange::Remove(removed),
    };
    assert_eq!(
        client.request(remove.clone()).await.unwrap(),
        Response::Done
    );
    // Removing it again is answered as done (the change is already in place).
    assert_eq!(client.request(remove).await.unwrap(), Response::Done);
    client.put("us/after-removal", "ok").await.unwrap();
    let (_, leader) = leader_view(&cluster.wait_for_leaders(&client).await, users);
    assert!(!leader.voters.contains(&removed), "{leader:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_after_a_leader_change_is_applied_once() {
    let mut cluster = ProcessCluster::start("exactly-once", 3, 3, default_shards(3), 10_000);
    let client = cluster.client();
    let status = cluster.wait_for_leaders(&client).await;
    let groups = status
        .shards
        .iter()
        .find(|shard| shard.name == "groups")
        .unwrap();
    let command = kv::Command {
        client_id: 4242,
        seq: 1,
        first_unacked_seq: 1,
        timestamp_ms: client::wall_clock_ms(),
        write: kv::Write::Put {
            key: "gr/once".into(),
            value: "1".into(),
        },
    };
    let first = client
        .request(Request::Write(command.clone()))
        .await
        .unwrap();
    let Response::Written { index, .. } = first else {
        panic!("{first:?}")
    };
    cluster.kill(groups.leader_id);
    // The same write again, after the leader is gone: answered as the first time.
    let second = client.request(Request::Write(command)).await.unwrap();
    assert_eq!(first, second);
    let value = client.get("gr/once").await.unwrap().unwrap();
    assert_eq!(value.mod_index, index, "applied once");
    // Over HTTP, a Request-Id makes a write idempotent in the same way.
    let survivor = (1..=3).find(|id| *id != groups.leader_id).unwrap();
    let address = cluster.http_address(survivor);
    let (bearer_name, bearer_value) = bearer();
    let headers = [
        (bearer_name, bearer_value.as_str()),
        ("Request-Id", "put-once-7"),
    ];
    let (status_1, body_1) = http(address, "PUT", "/v1/kv/gr/http-once", &headers, b"x");
    let (status_2, body_2) = http(address, "PUT", "/v1/kv/gr/http-once", &headers, b"x");
    assert_eq!((status_1, status_2), (200, 200));
    assert_eq!(
        body_1, body_2,
        "the retry is answered with the first write's index"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_port_is_answered_or_closed_and_counted() {
    let mut cluster = ProcessCluster::start("bad-input", 3, 3, default_shards(3), 10_000);
    let client = cluster.client();
    cluster.wait_for_leaders(&client).await;
    let address = cluster.http_address(1);
    let (bearer_name, bearer_value) = bearer();
    let auth = [(bearer_name, bearer_value.as_str())];
    let json = [
        (bearer_name, bearer_value.as_str()),
        ("Content-Type", "application/json"),
    ];
    let long_key = format!("/v1/kv/{}", "k".repeat(5000));
    // method, path, headers, body, expected status
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("PUT", "/v1/kv/us/x", &[], b"no token".to_vec(), 401),
        (
            "PUT",
            "/v1/kv/us/x",
            &[("Authorization", "Bearer wrong")],
            b"v".to_vec(),
            401,
        ),
        ("POST", "/v1/txn", &json, b"{not json".to_vec(), 400),
        (
            "POST",
            "/v1/txn",
            &json,
            br#"{"compare":[{"op":"nope","key":"a"}]}"#.to_vec(),
            422,
        ),
        (
            "POST",
            "/v1/kv/us/x/cas",
            &json,
            br#"{"value": 3}"#.to_vec(),
            422,
        ),
        (
            "PUT",
            "/v1/kv/us/x",
            &auth,
            vec![b'v'; 2 * 1024 * 1024],
            413,
        ),
        ("PUT", &long_key, &auth, b"v".to_vec(), 400),
        ("GET", "/v1/no/such/route", &[], Vec::new(), 404),
        (
            "GET",
            "/v1/kv/us/x?consistency=sometimes",
            &auth,
            Vec::new(),
            400,
        ),
        (
            "POST",
            "/v1/shards/99/transfer",
            &json,
            br#"{"to": 1}"#.to_vec(),
            404,
        ),
    ];
    for (method, path, headers, body, expected) in &cases {
        let (status, answer) = http(address, method, path, headers, body);
        assert_eq!(status, *expected, "{method} {path}: {answer}");
        if *expected != 413 {
            let parsed: serde_json::Value = serde_json::from_str(&answer)
                .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {answer}"));
            assert!(
                parsed["code"].is_string() && parsed["message"].is_string(),
                "{answer}"
            );
        }
    }
    assert!(metric(address, "agenda_http_bad_requests") >= cases.len() as u64 - 1);
    // Garbage on the peer and client ports: the connections are closed, the server stays up.
    let config = cluster.configs[0].clone();
    for port in [config.me().peer, config.me().client] {
        for garbage in [
            &b"\xff\xff\xff\xffgarbage"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            &[0u8; 64][..],
        ] {
            let mut stream = std::net::TcpStream::connect(port).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            use std::io::{Read, Write};
            let _ = stream.write_all(garbage);
            let mut buffer = [0u8; 64];
            // Closed (0 bytes or a reset), after at most an error frame.
            let mut total = 0;
            while let Ok(read) = stream.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                total += read;
                assert!(total < 4096, "the server keeps talking to garbage");
            }
        }
    }
    assert!(
        cluster.is_running(1),
        "the server survived: {}",
        cluster.log(1)
    );
    let (status, _) = http(address, "GET", "/health", &[], b"");
    assert_eq!(status, 200);
    assert!(
        metric(address, "agenda_client_frames_malformed")
            + metric(address, "agenda_client_unauthorized")
            >= 2
    );
    assert!(
        metric(address, "agenda_transport_handshake_failures")
            + metric(address, "agenda_transport_frames_oversized")
            >= 1
    );
    // A native client with a wrong token is refused with a clear error.
    let mut config = client::ClientConfig::new(vec![(1, config.me().client)], "not-the-token");
    config.request_timeout = Duration::from_secs(2);
    let stranger = client::Client::new(config);
    assert!(stranger.get("us/x").await.is_err());
    // And the cluster still serves.
    client.put("us/after", "ok").await.unwrap();
}

/// Waits for server `id`'s process to exit; returns whether it failed.
fn exits_with_failure(cluster: &mut ProcessCluster, id: u64) -> bool {
    let child = cluster.children[id as usize - 1].as_mut().unwrap();
    for _ in 0..500 {
        if let Some(status) = child.try_wait().unwrap() {
            cluster.children[id as usize - 1] = None;
            return !status.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server {id} kept running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refuses_to_start_blank_on_a_lost_or_corrupt_data_directory() {
    let mut cluster = ProcessCluster::start("refusals", 3, 3, default_shards(3), 10_000);
    let client = cluster.client();
    cluster.wait_for_leaders(&client).await;
    let acknowledged = Acknowledged::default();
    writer(cluster.client(), 0, 200, acknowledged.clone()).await;

    // Server 2 loses its data directory: it refuses to start rather than rejoin empty.
    assert!(cluster.terminate(2));
    std::fs::remove_dir_all(&cluster.configs[1].data_dir).unwrap();
    cluster.launch(2, false);
    assert!(exits_with_failure(&mut cluster, 2));
    assert!(
        cluster.log(2).contains("holds no server data"),
        "{}",
        cluster.log(2)
    );

    // `--init` on a directory that holds a server's data is refused too.
    assert!(cluster.terminate(3));
    cluster.launch(3, true);
    assert!(exits_with_failure(&mut cluster, 3));
    assert!(
        cluster.log(3).contains("refusing to initialize it again"),
        "{}",
        cluster.log(3)
    );

    // Server 3's WAL is damaged before its tail: it refuses to start, naming the corruption.
    let wal = cluster.configs[2].data_dir.join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .collect();
    segments.sort();
    let segment = &segments[0];
    let mut bytes = std::fs::read(segment).unwrap();
    assert!(bytes.len() > 4096, "the segment holds the writes");
    for byte in &mut bytes[300..340] {
        *byte ^= 0x5a;
    }
    std::fs::write(segment, bytes).unwrap();
    cluster.launch(3, false);
    assert!(exits_with_failure(&mut cluster, 3));
    assert!(
        cluster.log(3).contains("cannot be recovered safely"),
        "{}",
        cluster.log(3)
    );

    // Server 1, alone now, cannot form a quorum but stays up.
    assert!(cluster.is_running(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_writes_reads_swaps_lists_and_runs_transactions() {
    let cluster = ProcessCluster::start("http", 3, 3, default_shards(3), 10_000);
    let client = cluster.client();
    cluster.wait_for_leaders(&client).await;
    let (bearer_name, bearer_value) = bearer();
    let auth = [(bearer_name, bearer_value.as_str())];
    let json = [
        (bearer_name, bearer_value.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (one, two, three) = (
        cluster.http_address(1),
        cluster.http_address(2),
        cluster.http_address(3),
    );
    let (status, body) = http(one, "PUT", "/v1/kv/us/alice", &auth, b"Alice");
    assert_eq!(status, 200, "{body}");
    let written: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(written["shard"], 4, "users is the fourth shard of the map");
    assert_eq!(
        http(two, "GET", "/v1/kv/us/alice", &auth, b""),
        (200, "Alice".to_owned())
    );
    let stale = http(
        three,
        "GET",
        "/v1/kv/us/alice?consistency=stale",
        &auth,
        b"",
    );
    assert!(
        stale.0 == 200 || stale.0 == 404,
        "a stale read may lag: {stale:?}"
    );
    assert_eq!(http(one, "GET", "/v1/kv/us/nobody", &auth, b"").0, 404);

    // Compare-and-swap: the expected value wins once; a stale expectation gets 409.
    let swap = br#"{"expected": "Alice", "value": "Alice B."}"#;
    assert_eq!(http(two, "POST", "/v1/kv/us/alice/cas", &json, swap).0, 200);
    let (status, body) = http(two, "POST", "/v1/kv/us/alice/cas", &json, swap);
    assert_eq!(status, 409);
    let conflict: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(conflict["current"], "Alice B.");
    let create = br#"{"expected": null, "value": "Bob"}"#;
    assert_eq!(
        http(three, "POST", "/v1/kv/us/bob/cas", &json, create).0,
        200
    );
    assert_eq!(
        http(three, "POST", "/v1/kv/us/bob/cas", &json, create).0,
        409
    );

    // A list across the prefix, in key order, with paging.
    let (status, body) = http(one, "GET", "/v1/kv?prefix=us/", &auth, b"");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["us/alice", "us/bob"]);
    let (status, body) = http(one, "GET", "/v1/kv?prefix=us/&limit=1", &auth, b"");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A transaction: compares, then the success branch, atomically; its gets see its puts.
    let txn = br#"{
        "compare": [{"op": "value_equals", "key": "gr/team", "value": "v1"}],
        "success": [{"op": "delete", "key": "gr/team"}],
        "failure": [{"op": "put", "key": "gr/team", "value": "v1"}, {"op": "get", "key": "gr/team"}]
    }"#;
    let (status, body) = http(two, "POST", "/v1/txn", &json, txn);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["succeeded"], false);
    assert_eq!(answer["results"][1]["value"], "v1");
    let (_, body) = http(three, "POST", "/v1/txn", &json, txn);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["succeeded"], true);
    assert_eq!(http(one, "DELETE", "/v1/kv/us/bob", &auth, b"").0, 200);
    assert_eq!(http(one, "GET", "/v1/kv/us/bob", &auth, b"").0, 404);

    // The status shows every shard with a leader and three replicas.
    let (status, body) = http(one, "GET", "/v1/cluster/status", &[], b"");
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["all_shards_led"], true);
    for shard in status["shards"].as_array().unwrap() {
        assert_eq!(shard["replicas"].as_array().unwrap().len(), 3, "{shard}");
    }
    // Digests are for operators.
    assert_eq!(
        http(one, "GET", "/v1/cluster/status?digests=true", &[], b"").0,
        401
    );
    assert_eq!(
        http(one, "GET", "/v1/cluster/status?digests=true", &auth, b"").0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_subscriber_resumes_on_another_process_after_its_server_is_killed() {
    use gateway_client::{Event, GatewayClient, GatewayConfig, Position};
    let mut cluster = ProcessCluster::start("gateway", 4, 4, default_shards(4), 500);
    let client = cluster.client();
    let status = cluster.wait_for_leaders(&client).await;
    let users = status.shards.iter().find(|s| s.name == "users").unwrap();
    let leader = users.leader_id;
    // The subscriber starts on the users shard's leader, which is then killed; it waits a
    // while before reconnecting, so that it must be sent what was committed meanwhile.
    let url = |id: u64| format!("ws://{}/v1/ws", cluster.http_address(id));
    let mut urls = vec![url(leader)];
    urls.extend((1..=4).filter(|id| *id != leader).map(url));
    let mut config = GatewayConfig::new(urls, process::TOKEN);
    config.backoff_min = Duration::from_secs(2);
    let mut subscriber = GatewayClient::connect(config);
    subscriber.subscribe("kv:us/proc/", None).await.unwrap();
    let writer = cluster.client_from(leader as usize % 4);
    let mut written = Vec::new();
    for round in 0..30 {
        if round == 10 {
            cluster.kill(leader);
        }
        let key = format!("us/proc/{round:02}");
        let answer = writer.put(key.clone(), "v").await.unwrap();
        let position = Position {
            shard: answer.shard,
            index: answer.index,
        };
        written.push((key, position));
    }
    let mut seen = Vec::new();
    let mut servers = Vec::new();
    while seen.len() < written.len() {
        let event = tokio::time::timeout(Duration::from_secs(30), subscriber.next_event())
            .await
            .expect("every change in time")
            .unwrap();
        match event {
            Event::Change(change) => seen.push((change.key, change.position)),
            Event::Connected { server } => servers.push(server),
            Event::Resync { .. } => panic!("the history covers what was missed"),
            _ => {}
        }
    }
    assert_eq!(seen, written, "no gap, no duplicate, in log order");
    assert!(
        servers.len() >= 2,
        "reconnected to another server: {servers:?}"
    );
}
