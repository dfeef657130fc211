//! The agenda across real server processes on real disks: invitations from the organizer's
//! events shard to the attendee's, and the answers back, with the leader of each shard involved
//! killed (SIGKILL) midway. Every invitation and every answer must land exactly once.

#![cfg(not(madsim))]

#[path = "support/api.rs"]
mod api;
#[path = "support/process.rs"]
mod process;

use api::Api;
use client::{Client, Consistency};
use process::ProcessCluster;
use serde_json::{Value, json};
use server::default_shards;
use std::time::Duration;
use tokio::time::Instant;

/// How long a test waits for what must happen after a kill (elections take under a second).
const PATIENCE: Duration = Duration::from_secs(60);

/// The current leader of the shard named `name`, once every shard has one.
async fn leader(cluster: &ProcessCluster, client: &Client, name: &str) -> u64 {
    let status = cluster.wait_for_leaders(client).await;
    let shard = status
        .shards
        .iter()
        .find(|shard| shard.name == name)
        .unwrap_or_else(|| panic!("no shard {name}: {status:?}"));
    shard.leader_id
}

/// The API of a running server other than `avoid`.
fn api_besides(cluster: &mut ProcessCluster, avoid: u64) -> Api {
    let id = (1..=cluster.configs.len() as u64)
        .find(|&id| id != avoid && cluster.is_running(id))
        .expect("another running server");
    Api {
        address: cluster.http_address(id),
    }
}

/// The keys under `prefix`, read at the leader.
async fn keys_under(client: &Client, prefix: &str) -> Vec<String> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    let (entries, more) = client
        .scan(prefix.to_owned(), end, 1_000, Consistency::Linearizable)
        .await
        .expect("a scan");
    assert!(!more);
    entries
        .into_iter()
        .map(|(key, _)| String::from_utf8_lossy(&key).into_owned())
        .collect()
}

/// Asks until the answer is not a 503 (a write whose outcome was unknown when a leader died is
/// asked again: every agenda write here is idempotent).
async fn call_until_known(api: Api, method: &str, path: &str, token: &str, body: Value) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, answer) = api.call(method, path, Some(token), body.clone()).await;
        if status != 503 {
            assert_eq!(status, 200, "{method} {path}: {answer}");
            return answer;
        }
        assert!(Instant::now() < deadline, "{method} {path}: still {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_and_answers_land_exactly_once_when_each_shards_leader_is_killed() {
    let mut cluster = ProcessCluster::start("agenda-kills", 3, 3, default_shards(3), 1_000);
    let client = cluster.client();
    cluster.wait_for_leaders(&client).await;

    // Alice's events live in events-a-m, Nora's in events-n-z.
    let am_leader = leader(&cluster, &client, "events-a-m").await;
    let api = api_besides(&mut cluster, am_leader);
    let alice = api.user("alice", "Europe/Madrid").await;
    let nora = api.user("nora", "Pacific/Auckland").await;

    // Alice invites Nora to several events at once; the leader of her shard is killed as soon
    // as the last is acknowledged, with deliveries pending or in flight.
    let am_leader = leader(&cluster, &client, "events-a-m").await;
    let api = api_besides(&mut cluster, am_leader);
    let creates: Vec<_> = (0..5)
        .map(|day| {
            let alice = alice.clone();
            let event = json!({
                "title": format!("Planning {day}"),
                "start": format!("2026-06-0{}T10:00", day + 1), "end": format!("2026-06-0{}T11:00", day + 1),
                "time_zone": "Europe/Madrid", "attendees": ["nora"],
            });
            tokio::spawn(async move { api.call("POST", "/v1/events", Some(&alice), event).await })
        })
        .collect();
    let mut events = Vec::new();
    for create in creates {
        let (status, created) = create.await.expect("the create task");
        assert_eq!(status, 201, "{created}");
        events.push(created["id"].as_str().expect("an id").to_owned());
    }
    cluster.kill(am_leader);

    // Each invitation arrives, once, at the version the organizer wrote.
    let api = api_besides(&mut cluster, am_leader);
    let (_, early) = api
        .call("GET", "/v1/invitations?all=true", Some(&nora), Value::Null)
        .await;
    let early = early["invitations"].as_array().map_or(0, Vec::len);
    eprintln!(
        "{early} of {} invitations had landed when the leader was killed",
        events.len()
    );
    let landed = api
        .until_within(PATIENCE, "/v1/invitations?all=true", &nora, |value| {
            value["invitations"]
                .as_array()
                .is_some_and(|list| list.len() >= events.len())
        })
        .await;
    let mut seen: Vec<&str> = landed["invitations"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|invitation| {
            assert_eq!(invitation["sequence"], 0, "{invitation}");
            invitation["event_id"].as_str().expect("an event id")
        })
        .collect();
    seen.sort_unstable();
    let mut expected: Vec<&str> = events.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected, "each invitation exactly once");
    assert_eq!(
        keys_under(&client, "ev/nz/nora/i/").await.len(),
        events.len()
    );
    cluster.launch(am_leader, false);

    // Nora answers every invitation at once; the leader of her shard is killed while the
    // answers are in flight.
    let nz_leader = leader(&cluster, &client, "events-n-z").await;
    let api = api_besides(&mut cluster, nz_leader);
    let answers: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(index, id)| {
            let response = if index == 0 { "accepted" } else { "declined" };
            let path = format!("/v1/invitations/{id}/rsvp");
            let nora = nora.clone();
            tokio::spawn(async move {
                let body = json!({"response": response});
                call_until_known(api, "POST", &path, &nora, body).await
            })
        })
        .collect();
    cluster.kill(nz_leader);
    for answer in answers {
        let invitation = answer.await.expect("the answer task");
        assert_ne!(invitation["response"], "needs-action", "{invitation}");
    }

    // Each answer reaches the organizer's tally exactly once.
    let api = api_besides(&mut cluster, nz_leader);
    for (index, id) in events.iter().enumerate() {
        let response = if index == 0 { "accepted" } else { "declined" };
        let tally = api
            .until_within(PATIENCE, &format!("/v1/events/{id}/tally"), &alice, |v| {
                v["counts"][response] == 1
            })
            .await;
        let mut once = serde_json::Map::new();
        once.insert(response.to_owned(), json!(1));
        assert_eq!(tally["counts"], Value::Object(once), "{tally}");
        assert_eq!(tally["attendees"]["nora"][0], response, "{tally}");
        assert_eq!(
            keys_under(&client, &format!("ev/am/alice/r/{id}/")).await,
            vec![format!("ev/am/alice/r/{id}/nora")]
        );
    }
    cluster.launch(nz_leader, false);

    // Once the killed servers are back, nothing is left to deliver and the replicas agree.
    cluster.wait_for_leaders(&client).await;
    let deadline = Instant::now() + PATIENCE;
    for outbox in ["ev/am/!o/", "ev/nz/!o/"] {
        loop {
            let left = keys_under(&client, outbox).await;
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "outbox not delivered: {left:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.assert_replicas_converge(&client, |_| 3).await;
    // The answers are what Nora's agenda shows too, and the killed servers serve again.
    for id in 1..=3 {
        let api = Api {
            address: cluster.http_address(id),
        };
        api.until_within(PATIENCE, "/v1/invitations?all=true", &nora, |value| {
            value["invitations"].as_array().is_some_and(|list| {
                list.len() == events.len()
                    && list
                        .iter()
                        .all(|invitation| invitation["response"] != "needs-action")
            })
        })
        .await;
    }
}
