//! The agenda's HTTP API against a cluster of real servers on loopback: a cross-shard invitation
//! delivered by the leader of the organizer's shard (also after that leader crashes), the answer
//! travelling back, the agenda in the caller's zone, who may see what, and bad input.

#![cfg(not(madsim))]

mod support;

#[path = "support/api.rs"]
mod api;

use api::{Api, http, metric};
use serde_json::{Value, json};
use server::default_shards;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::TestCluster;

fn http_address(cluster: &TestCluster, id: u64) -> SocketAddr {
    cluster.configs[id as usize - 1]
        .me()
        .http
        .expect("HTTP is on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_crosses_shards_and_the_answer_comes_back_also_when_a_leader_crashes() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let api = Api {
        address: http_address(&cluster, 1),
    };
    // alice's events live in shard 1 (a-m), nora's in shard 2 (n-z).
    let alice = api.user("alice", "Europe/Madrid").await;
    let nora = api.user("nora", "America/New_York").await;

    let event = json!({
        "title": "Planning", "location": "Room 2",
        "start": "2026-06-01T10:00:00+02:00", "end": "2026-06-01T11:00:00+02:00",
        "time_zone": "Europe/Madrid", "rrule": "FREQ=WEEKLY;COUNT=4", "attendees": ["nora"],
    });
    let (status, created) = api.call("POST", "/v1/events", Some(&alice), event).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("alice."));

    let invitations = api
        .until("/v1/invitations", &nora, |v| {
            v["invitations"].as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    assert_eq!(invitations["invitations"][0]["event_id"], id.as_str());
    let agenda = api
        .call(
            "GET",
            "/v1/agenda?from=2026-06-01T00:00:00Z&to=2026-06-08T00:00:00Z",
            Some(&nora),
            Value::Null,
        )
        .await
        .1;
    assert_eq!(
        agenda["occurrences"][0]["start"], "2026-06-01T04:00:00-04:00",
        "in nora's zone"
    );

    let (status, _) = api
        .call(
            "POST",
            &format!("/v1/invitations/{id}/rsvp"),
            Some(&nora),
            json!({"response": "accepted"}),
        )
        .await;
    assert_eq!(status, 200);
    api.until(&format!("/v1/events/{id}/tally"), &alice, |v| {
        v["counts"]["accepted"] == 1
    })
    .await;

    // The leader of alice's events shard crashes right after acknowledging a second event:
    // whichever server leads next delivers it.
    let status = cluster.wait_for_leaders().await;
    let leader = status.shards[0].leader_id;
    assert_ne!(leader, 0, "shard 1 has a leader");
    let second = json!({
        "title": "Retro", "start": "2026-06-02T10:00", "end": "2026-06-02T11:00",
        "time_zone": "Europe/Madrid", "attendees": ["nora"],
    });
    let api_elsewhere = Api {
        address: http_address(&cluster, leader % 3 + 1),
    };
    let (status, created) = api_elsewhere
        .call("POST", "/v1/events", Some(&alice), second)
        .await;
    assert_eq!(status, 201, "{created}");
    cluster.crash(leader).await;
    api_elsewhere
        .until("/v1/invitations?all=true", &nora, |v| {
            v["invitations"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    cluster.restart(leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_reads_or_changes_what_is_not_theirs() {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let api = Api {
        address: http_address(&cluster, 2),
    };
    let alice = api.user("alice", "UTC").await;
    let eve = api.user("eve", "UTC").await;
    let (status, _) = api
        .call(
            "POST",
            "/v1/groups",
            Some(&alice),
            json!({"id": "team", "name": "Team"}),
        )
        .await;
    assert_eq!(status, 201);
    let event = json!({"title": "Private", "start": "2026-06-01T10:00:00Z", "end": "2026-06-01T11:00:00Z", "time_zone": "UTC"});
    let (_, created) = api.call("POST", "/v1/events", Some(&alice), event).await;
    let id = created["id"].as_str().expect("an id").to_owned();

    let event_path = format!("/v1/events/{id}");
    let tally_path = format!("/v1/events/{id}/tally");
    let patch = json!({"title": "Mine now"});
    for (method, path, body, expected) in [
        ("GET", event_path.as_str(), Value::Null, 404),
        ("PATCH", event_path.as_str(), patch.clone(), 404),
        ("DELETE", event_path.as_str(), Value::Null, 404),
        ("GET", tally_path.as_str(), Value::Null, 404),
        ("GET", "/v1/groups/team", Value::Null, 404),
        (
            "POST",
            "/v1/groups/team/members",
            json!({"user": "eve"}),
            404,
        ),
        ("DELETE", "/v1/groups/team/members/alice", Value::Null, 404),
        (
            "POST",
            &format!("/v1/invitations/{id}/rsvp"),
            json!({"response": "accepted"}),
            404,
        ),
    ] {
        let (status, answer) = api.call(method, path, Some(&eve), body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
    }
    // Without a session, or with a forged one, nothing at all.
    let forged = format!("alice.{}", "0".repeat(64));
    for token in [None, Some("not-a-token"), Some(forged.as_str())] {
        for (method, path) in [
            ("GET", "/v1/me"),
            ("GET", event_path.as_str()),
            ("GET", "/v1/invitations"),
        ] {
            let (status, answer) = api.call(method, path, token, Value::Null).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {answer}");
            assert_eq!(answer["code"], "unauthenticated");
        }
    }
    // Alice still sees her own event, unchanged.
    let (status, own) = api
        .call("GET", &event_path, Some(&alice), Value::Null)
        .await;
    assert_eq!((status, own["title"].as_str()), (200, Some("Private")));
    // After logout the token is dead on every server.
    let (status, _) = api
        .call("DELETE", "/v1/sessions/current", Some(&alice), Value::Null)
        .await;
    assert_eq!(status, 204);
    let other = Api {
        address: http_address(&cluster, 3),
    };
    assert_eq!(
        other
            .call("GET", "/v1/me", Some(&alice), Value::Null)
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_is_counted_and_the_server_stays_up() {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let address = http_address(&cluster, 1);
    let api = Api { address };
    let alice = api.user("alice", "UTC").await;
    let huge = "x".repeat(300);
    let cases: Vec<(&str, &str, Option<&str>, String, u16)> = vec![
        ("POST", "/v1/users", None, "{not json".into(), 400),
        ("POST", "/v1/users", None, json!({"name": "Bad Name", "password": "a long password"}).to_string(), 400),
        ("POST", "/v1/users", None, json!({"name": "alice", "password": "a long password"}).to_string(), 409),
        ("POST", "/v1/users", None, json!({"name": "bob", "password": "short"}).to_string(), 400),
        ("POST", "/v1/users", None, json!({"name": "bob", "password": "a long password", "time_zone": "Mars/Base"}).to_string(), 400),
        ("POST", "/v1/sessions", None, json!({"name": "alice", "password": "wrong password"}).to_string(), 401),
        ("POST", "/v1/events", Some(&alice), json!({"title": "x"}).to_string(), 422),
        ("POST", "/v1/events", Some(&alice), json!({"title": huge, "start": "2026-06-01T10:00:00Z", "end": "2026-06-01T11:00:00Z"}).to_string(), 400),
        ("POST", "/v1/events", Some(&alice), json!({"title": "x", "start": "2026-06-01T11:00:00Z", "end": "2026-06-01T10:00:00Z"}).to_string(), 400),
        ("POST", "/v1/events", Some(&alice), json!({"title": "x", "start": "2026-06-01T10:00:00Z", "end": "2026-06-01T11:00:00Z", "rrule": "FREQ=SECONDLY"}).to_string(), 400),
        ("POST", "/v1/events", Some(&alice), json!({"title": "x", "start": "2026-06-01T10:00:00Z", "end": "2026-06-01T11:00:00Z", "attendees": ["nobody"]}).to_string(), 404),
        ("POST", "/v1/events", Some(&alice), json!({"title": "x", "start": "yesterday", "end": "today"}).to_string(), 400),
        ("GET", "/v1/events/not-an-id", Some(&alice), String::new(), 400),
        ("GET", "/v1/agenda?from=2026-06-01T00:00:00Z", Some(&alice), String::new(), 400),
        ("GET", "/v1/agenda?from=2026-06-01T00:00:00Z&to=2030-06-01T00:00:00Z", Some(&alice), String::new(), 400),
        ("POST", "/v1/freebusy", Some(&alice), json!({"users": ["alice"], "from": "x", "to": "y"}).to_string(), 400),
        ("POST", "/v1/find-time", Some(&alice), json!({"users": ["alice"], "from": "2026-06-01T00:00:00Z", "to": "2026-06-02T00:00:00Z", "minutes": 0}).to_string(), 400),
        ("POST", "/v1/groups", Some(&alice), json!({"id": "x"}).to_string(), 400),
    ];
    let refused_before = metric(address, "agenda_calendar_requests_refused");
    for (method, path, token, body, expected) in &cases {
        let (status, answer) = http(
            address,
            method,
            path,
            *token,
            Some(body.as_str()).filter(|b| !b.is_empty()),
        )
        .await;
        assert_eq!(status, *expected, "{method} {path} {body}: {answer}");
        assert!(
            answer["code"].is_string() && answer["message"].is_string(),
            "{answer}"
        );
    }
    let refused_after = metric(address, "agenda_calendar_requests_refused");
    assert_eq!(refused_after - refused_before, cases.len() as f64);
    assert_eq!(http(address, "GET", "/health", None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_does_not_stall_the_other_requests() {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let api = Api {
        address: http_address(&cluster, 1),
    };
    let alice = api.user("alice", "UTC").await;
    let wrong = json!({"name": "alice", "password": "not the password"});
    // One login's cost here (Argon2id at the production settings), to size a flood that keeps
    // every core hashing for several seconds.
    let started = Instant::now();
    assert_eq!(
        api.call("POST", "/v1/sessions", None, wrong.clone())
            .await
            .0,
        401
    );
    let one = started.elapsed().max(Duration::from_millis(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count = ((5.0 * cores as f64 / one.as_secs_f64()) as usize).clamp(16, 400);
    let flood: Vec<_> = (0..count)
        .map(|_| {
            let wrong = wrong.clone();
            tokio::spawn(async move { api.call("POST", "/v1/sessions", None, wrong).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Requests that hash nothing are answered promptly meanwhile.
    for _ in 0..5 {
        let asked = Instant::now();
        let (status, _) = api.call("GET", "/v1/me", Some(&alice), Value::Null).await;
        let waited = asked.elapsed();
        assert_eq!(status, 200);
        assert!(
            waited < Duration::from_secs(2),
            "GET /v1/me took {waited:?} during a flood of {count} logins (one takes {one:?})"
        );
    }
    assert!(
        flood.iter().any(|login| !login.is_finished()),
        "the flood of {count} logins was over before the other requests were measured"
    );
    for login in flood {
        let (status, answer) = login.await.expect("the login task");
        // A wrong password, or (past the wait bound) refused as unavailable: nothing else.
        assert!(status == 401 || status == 503, "{status} {answer}");
    }
}

/// One acknowledged change of the contended event: which field, the value, the event's
/// sequence and the log index of the write.
struct Acknowledged {
    field: &'static str,
    value: String,
    sequence: u64,
    index: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_of_one_event_each_land_or_are_refused_and_none_is_lost() {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let api = Api {
        address: http_address(&cluster, 1),
    };
    let alice = api.user("alice", "Europe/Madrid").await;
    let nora = api.user("nora", "UTC").await;
    let event = json!({
        "title": "Planning", "start": "2026-06-01T10:00", "end": "2026-06-01T11:00",
        "time_zone": "Europe/Madrid", "rrule": "FREQ=DAILY;COUNT=5", "attendees": ["nora"],
    });
    let (status, created) = api.call("POST", "/v1/events", Some(&alice), event).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    let path = format!("/v1/events/{id}");

    // Five writers through the three servers at once: two on the title (the same field), one
    // each on the description, the location and one occurrence's title.
    const ROUNDS: usize = 8;
    let writers = [
        ("title", 0),
        ("title", 1),
        ("description", 2),
        ("location", 3),
        ("occurrence title", 4),
    ];
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|(field, writer)| {
            let api = Api {
                address: http_address(&cluster, writer as u64 % 3 + 1),
            };
            let (alice, path) = (alice.clone(), path.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut refused = 0;
                for round in 0..ROUNDS {
                    let value = format!("{field} by writer {writer}, round {round}");
                    let patch = match field {
                        "occurrence title" => {
                            json!({"scope": "this", "occurrence": "2026-06-03T10:00", "title": value})
                        }
                        _ => json!({ field: value }),
                    };
                    // Told of a conflict, the writer asks again, a bounded number of times.
                    for _ in 0..20 {
                        let (status, answer) = api.call("PATCH", &path, Some(&alice), patch.clone()).await;
                        if status == 409 {
                            assert_eq!(answer["code"], "contended", "{answer}");
                            refused += 1;
                            continue;
                        }
                        assert_eq!(status, 200, "{answer}");
                        acknowledged.push(Acknowledged {
                            field,
                            value: value.clone(),
                            sequence: answer["sequence"].as_u64().expect("a sequence"),
                            index: answer["position"]["index"].as_u64().expect("an index"),
                        });
                        break;
                    }
                }
                (acknowledged, refused)
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (done, told) = task.await.expect("a writer");
        acknowledged.extend(done);
        refused += told;
    }
    eprintln!(
        "{} changes acknowledged, {refused} refused as contended and asked again",
        acknowledged.len()
    );
    assert_eq!(
        acknowledged.len(),
        writers.len() * ROUNDS,
        "every change landed, {refused} refusals retried"
    );

    // Each acknowledged change made its own version: sequences 1..=n, one write each.
    let mut sequences: Vec<u64> = acknowledged.iter().map(|a| a.sequence).collect();
    sequences.sort_unstable();
    let expected: Vec<u64> = (1..=acknowledged.len() as u64).collect();
    assert_eq!(sequences, expected, "a change lost or applied twice");
    // The event holds, for each field, the value of the last write that changed it.
    let (status, stored) = api.call("GET", &path, Some(&alice), Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(stored["sequence"], acknowledged.len() as u64, "{stored}");
    let last = |field: &str| {
        acknowledged
            .iter()
            .filter(|a| a.field == field)
            .max_by_key(|a| a.index)
            .map(|a| a.value.clone())
            .expect("a write")
    };
    assert_eq!(stored["title"], last("title"), "{stored}");
    assert_eq!(stored["description"], last("description"), "{stored}");
    assert_eq!(stored["location"], last("location"), "{stored}");
    assert_eq!(
        stored["details"]["2026-06-03T10:00"]["title"],
        last("occurrence title"),
        "{stored}"
    );
    // And Nora's copy ends at the last version.
    api.until("/v1/invitations?all=true", &nora, |v| {
        v["invitations"][0]["sequence"] == acknowledged.len() as u64
            && v["invitations"][0]["content"]["title"] == last("title")
    })
    .await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket on server `id`, authenticated with an agenda session `token`.
async fn agenda_socket(cluster: &TestCluster, id: u64, token: &str, user: &str) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(cluster.ws_url(id))
        .await
        .expect("connect");
    send(&mut socket, json!({"op": "auth", "token": token})).await;
    let answer = receive(&mut socket, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(answer["op"], "authenticated", "{answer}");
    assert_eq!(answer["user"], user);
    socket
}

async fn send(socket: &mut Socket, frame: Value) {
    use futures_util::SinkExt;
    let text = frame.to_string();
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
        .await
        .expect("send");
}

/// The next text frame within `within`, parsed; `None` if none came.
async fn receive(socket: &mut Socket, within: Duration) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()?;
        match next.expect("the connection is open").expect("a frame") {
            Message::Text(text) => return Some(serde_json::from_str(text.as_str()).expect("JSON")),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Subscribes to each channel and returns each one's answer (`subscribed` or an error's code),
/// by channel: answers to agenda channels come once the agenda has said who may listen.
async fn subscribe_all(socket: &mut Socket, channels: &[&str]) -> Vec<(String, String)> {
    subscribe_from(socket, channels, None)
        .await
        .into_iter()
        .map(|(channel, answer, _)| (channel, answer))
        .collect()
}

/// As `subscribe_all`, resuming after `from` if given; each answer with its `at` positions.
async fn subscribe_from(
    socket: &mut Socket,
    channels: &[&str],
    from: Option<&Value>,
) -> Vec<(String, String, Value)> {
    for channel in channels {
        let mut frame = json!({"op": "subscribe", "channel": channel});
        if let Some(from) = from {
            frame["from"] = from.clone();
        }
        send(socket, frame).await;
    }
    let mut answers = Vec::new();
    while answers.len() < channels.len() {
        let frame = receive(socket, Duration::from_secs(10))
            .await
            .expect("an answer to every subscription");
        let channel = frame["channel"].as_str().unwrap_or_default().to_owned();
        let answer = match frame["op"].as_str() {
            Some("subscribed") => "subscribed".to_owned(),
            Some("error") => frame["code"].as_str().unwrap_or_default().to_owned(),
            _ => continue,
        };
        answers.push((channel, answer, frame["at"].clone()));
    }
    answers.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    answers
}

/// The title of an event or invitation record in a change frame's value.
fn title_in(frame: &Value) -> String {
    let value: Value =
        serde_json::from_str(frame["value"].as_str().unwrap_or("null")).unwrap_or_default();
    value["title"]
        .as_str()
        .or(value["content"]["title"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agenda_channels_notify_only_those_the_agenda_allows() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let api = Api {
        address: http_address(&cluster, 1),
    };
    let alice = api.user("alice", "Europe/Madrid").await;
    let nora = api.user("nora", "Europe/Madrid").await;
    let mallory = api.user("mallory", "Europe/Madrid").await;
    let (status, _) = api
        .call(
            "POST",
            "/v1/groups",
            Some(&alice),
            json!({"id": "team", "name": "Team"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = api
        .call(
            "POST",
            "/v1/groups/team/members",
            Some(&alice),
            json!({"user": "nora"}),
        )
        .await;
    assert_eq!(status, 200);
    let event = json!({
        "title": "Planning", "start": "2026-06-01T10:00", "end": "2026-06-01T11:00",
        "time_zone": "Europe/Madrid", "attendees": ["nora"],
    });
    let (status, created) = api.call("POST", "/v1/events", Some(&alice), event).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    let event_channel = format!("event:{id}");

    let mut nora_socket = agenda_socket(&cluster, 2, &nora, "nora").await;
    let answers = subscribe_from(
        &mut nora_socket,
        &[
            "user:nora",
            "user:alice",
            "group:team",
            &event_channel,
            "kv:us/",
            "shard:1",
        ],
        None,
    )
    .await;
    let mut nora_at = answers
        .iter()
        .find(|(channel, _, _)| channel == "user:nora")
        .map(|(_, _, at)| at.clone())
        .expect("subscribed to user:nora");
    let answers: Vec<(String, String)> = answers
        .into_iter()
        .map(|(channel, answer, _)| (channel, answer))
        .collect();
    let expected: Vec<(String, String)> = [
        (event_channel.as_str(), "subscribed"),
        ("group:team", "subscribed"),
        ("kv:us/", "forbidden"),
        ("shard:1", "forbidden"),
        ("user:alice", "forbidden"),
        ("user:nora", "subscribed"),
    ]
    .iter()
    .map(|(channel, answer)| ((*channel).to_owned(), (*answer).to_owned()))
    .collect();
    assert_eq!(answers, expected);

    let mut mallory_socket = agenda_socket(&cluster, 3, &mallory, "mallory").await;
    let answers = subscribe_all(
        &mut mallory_socket,
        &["group:team", "group:nosuch", &event_channel, "user:nora"],
    )
    .await;
    assert!(
        answers.iter().all(|(_, answer)| answer == "forbidden"),
        "{answers:?}"
    );

    // A wrong session is refused like a wrong token.
    let (mut stranger, _) = tokio_tungstenite::connect_async(cluster.ws_url(1))
        .await
        .expect("connect");
    let revoked = format!("nora.{}", "0".repeat(64));
    send(&mut stranger, json!({"op": "auth", "token": revoked})).await;
    let refused = receive(&mut stranger, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(refused["code"], "unauthorized", "{refused}");

    // Nora answers: her reply travels to alice's calendar, which the event's channel does not
    // carry (an attendee does not see the others' answers).
    let (status, _) = api
        .call(
            "POST",
            &format!("/v1/invitations/{id}/rsvp"),
            Some(&nora),
            json!({"response": "accepted"}),
        )
        .await;
    assert_eq!(status, 200);
    api.until(&format!("/v1/events/{id}/tally"), &alice, |v| {
        v["counts"]["accepted"] == 1
    })
    .await;

    // Alice renames the event: nora hears it on the event's channel (the organizer's record)
    // and on her own (her invitation, once delivered), each once; mallory hears nothing.
    let (status, _) = api
        .call(
            "PATCH",
            &format!("/v1/events/{id}"),
            Some(&alice),
            json!({"title": "Planning, renamed"}),
        )
        .await;
    assert_eq!(status, 200);
    let mut heard = std::collections::BTreeMap::new();
    while heard.len() < 2 {
        let frame = receive(&mut nora_socket, Duration::from_secs(10))
            .await
            .expect("the change reaches nora");
        if frame["op"] != "change" {
            continue;
        }
        if frame["channel"] == "user:nora" {
            let shard = frame["position"]["shard"].to_string();
            nora_at[shard] = frame["position"]["index"].clone();
        }
        if frame["channel"] == event_channel.as_str() {
            assert_eq!(frame["key"], format!("ev/am/alice/e/{id}"), "{frame}");
        }
        if title_in(&frame) == "Planning, renamed" {
            let channel = frame["channel"].as_str().unwrap_or_default().to_owned();
            let key = frame["key"].as_str().unwrap_or_default().to_owned();
            assert!(
                heard.insert(channel.clone(), key).is_none(),
                "{channel} heard the change twice"
            );
        }
    }
    assert_eq!(heard[&event_channel], format!("ev/am/alice/e/{id}"));
    assert_eq!(heard["user:nora"], format!("ev/nz/nora/i/{id}"));
    assert_eq!(
        receive(&mut mallory_socket, Duration::from_millis(500)).await,
        None,
        "mallory subscribed to nothing"
    );

    // Nora goes away; alice renames the event again; nora comes back to another server with
    // her last positions and gets what she missed, once, and nothing she had seen.
    drop(nora_socket);
    let (status, _) = api
        .call(
            "PATCH",
            &format!("/v1/events/{id}"),
            Some(&alice),
            json!({"title": "Planning, third"}),
        )
        .await;
    assert_eq!(status, 200);
    let mut nora_socket = agenda_socket(&cluster, 3, &nora, "nora").await;
    let answers = subscribe_from(&mut nora_socket, &["user:nora"], Some(&nora_at)).await;
    assert_eq!(answers[0].1, "subscribed");
    assert_eq!(answers[0].2, nora_at, "resumed where she left");
    loop {
        let frame = receive(&mut nora_socket, Duration::from_secs(10))
            .await
            .expect("the missed change reaches nora");
        assert_ne!(frame["op"], "resync", "{frame}");
        if frame["op"] != "change" {
            continue;
        }
        let title = title_in(&frame);
        assert_ne!(title, "Planning, renamed", "seen before the reconnection");
        if title == "Planning, third" {
            assert_eq!(frame["key"], format!("ev/nz/nora/i/{id}"));
            break;
        }
    }
    for id in 1..=3 {
        cluster.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_due_during_a_failover_of_its_events_shard_arrives_once_on_time() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    let status = cluster.wait_for_leaders().await;
    // alice's events (and alerts) live in shard 1.
    let leader = status.shards[0].leader_id;
    let elsewhere = leader % 3 + 1;
    let api = Api {
        address: http_address(&cluster, elsewhere),
    };
    let alice = api.user("alice", "UTC").await;

    // An event at the first whole minute at least 8 s away, with an alert at its start.
    let due_ms = (wall_ms() + 8_000 + 59_999) / 60_000 * 60_000;
    let utc = agenda::schedule::parse_zone("UTC").expect("UTC");
    let start = |ms: i64| agenda::schedule::format_local(ms, utc);
    let event = json!({
        "title": "Stand-up", "start": start(due_ms), "end": start(due_ms + 15 * 60_000),
        "time_zone": "UTC",
    });
    let (status, created) = api.call("POST", "/v1/events", Some(&alice), event).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    let (status, alerts) = api
        .call(
            "PUT",
            &format!("/v1/events/{id}/alerts"),
            Some(&alice),
            json!({"minutes_before": [0]}),
        )
        .await;
    assert_eq!(status, 200, "{alerts}");

    let mut socket = agenda_socket(&cluster, elsewhere, &alice, "alice").await;
    let answers = subscribe_all(&mut socket, &["user:alice"]).await;
    assert_eq!(answers[0].1, "subscribed");

    // The leader of alice's events shard crashes a second before the alert is due.
    // The socket is read all along, as a live client does: one that stops reading answers no
    // ping and is closed as idle. Any alert before the crash is collected too.
    let mut reminders = Vec::new();
    let crash_at = due_ms - 1_000;
    collect_alerts(&mut socket, crash_at, &mut reminders).await;
    cluster.crash(leader).await;

    // Every alert frame until 8 s after the due time: exactly one, within seconds.
    collect_alerts(&mut socket, due_ms + 8_000, &mut reminders).await;
    assert_eq!(reminders.len(), 1, "one reminder: {reminders:?}");
    let (arrived_ms, alert) = &reminders[0];
    assert_eq!(alert["fired"][0]["due_ms"], due_ms);
    assert_eq!(alert["fired_count"], 1);
    assert!(
        *arrived_ms >= due_ms && *arrived_ms - due_ms < 5_000,
        "arrived {} ms after its time",
        arrived_ms - due_ms
    );
    cluster.restart(leader).await;
    for id in 1..=3 {
        cluster.stop(id).await;
    }
}

/// One connection for everything (docs/websocket.md, "Agenda requests"): an agenda session
/// sends the agenda's calls over its socket and they are answered as over HTTP, with the same
/// checks; a write's reply carries the position of the notification it causes, which arrives on
/// the same socket. Key-value requests stay refused, and an operator token sends no agenda call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agenda_session_sends_its_requests_over_the_socket() {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let api = Api {
        address: http_address(&cluster, 1),
    };
    let alice = api.user("alice", "UTC").await;
    let bob = api.user("bob", "UTC").await;
    let event = json!({"title": "Bob's", "start": "2026-06-01T09:00:00Z", "end": "2026-06-01T09:30:00Z", "time_zone": "UTC"});
    let (status, bobs) = api.call("POST", "/v1/events", Some(&bob), event).await;
    assert_eq!(status, 201, "{bobs}");
    let bobs_path = format!("/v1/events/{}", bobs["id"].as_str().expect("an id"));

    let mut socket = agenda_socket(&cluster, 2, &alice, "alice").await;
    let answers = subscribe_all(&mut socket, &["user:alice"]).await;
    assert_eq!(answers[0].1, "subscribed");
    let requests = [
        json!({"op": "request", "id": 1, "method": "agenda", "call": "POST /v1/events",
               "body": {"title": "Planning", "start": "2026-06-01T10:00:00Z",
                        "end": "2026-06-01T11:00:00Z", "time_zone": "UTC"}}),
        json!({"op": "request", "id": 2, "method": "agenda", "call": format!("GET {bobs_path}")}),
        json!({"op": "request", "id": 3, "method": "agenda", "call": "POST /v1/events",
               "body": {"title": "Backwards", "start": "2026-06-01T11:00:00Z",
                        "end": "2026-06-01T10:00:00Z"}}),
        json!({"op": "request", "id": 4, "method": "agenda", "call": "GET /v1/me"}),
        json!({"op": "request", "id": 5, "method": "agenda", "call": "GET /v1/nowhere"}),
        json!({"op": "request", "id": 6, "method": "agenda", "call": "BREW /v1/me"}),
        json!({"op": "request", "id": 7, "method": "get", "key": "us/alice"}),
    ];
    for request in requests {
        send(&mut socket, request).await;
    }
    // Every request answered once, by id; the creation's notification with the reply's position.
    let mut answered = std::collections::BTreeMap::new();
    let mut notified = Vec::new();
    while answered.len() < 7 || notified.is_empty() {
        let frame = receive(&mut socket, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("answers so far: {answered:?}, notified: {notified:?}"));
        match (frame["op"].as_str(), frame["id"].as_u64()) {
            (Some("reply" | "error"), Some(id)) => {
                assert!(answered.insert(id, frame).is_none(), "answered twice");
            }
            (Some("change"), _) => notified.push(frame),
            _ => {}
        }
    }
    let created = &answered[&1];
    assert_eq!(
        (created["op"].as_str(), created["status"].as_u64()),
        (Some("reply"), Some(201)),
        "{created}"
    );
    assert_eq!(created["body"]["title"], "Planning");
    let id = created["body"]["id"].as_str().expect("an id");
    let position = &created["body"]["position"];
    assert!(
        notified.iter().any(|change| &change["position"] == position
            && change["key"].as_str().is_some_and(|key| key.contains(id))),
        "a notification at {position}: {notified:?}"
    );
    // The same checks as over HTTP: Bob's event is not Alice's to read; a bad range is refused.
    for (id, status, code) in [
        (2, 404, "not_found"),
        (3, 400, "invalid"),
        (5, 404, "not_found"),
    ] {
        let answer = &answered[&id];
        assert_eq!(answer["op"], "error", "{answer}");
        assert_eq!(answer["status"], status, "{answer}");
        assert_eq!(answer["code"], code, "{answer}");
    }
    assert_eq!(answered[&4]["status"], 200);
    assert_eq!(answered[&4]["body"]["name"], "alice");
    assert_eq!(answered[&6]["code"], "malformed", "{}", answered[&6]);
    assert_eq!(answered[&7]["code"], "forbidden", "{}", answered[&7]);
    // Over HTTP, the event the socket created is there.
    let (status, read) = api
        .call(
            "GET",
            &format!("/v1/events/{id}"),
            Some(&alice),
            Value::Null,
        )
        .await;
    assert_eq!((status, read["title"].as_str()), (200, Some("Planning")));

    // What HTTP takes besides JSON: an idempotency key (a retried creation happens once), a
    // text body with its type (an import), a text answer (an `.ics` file), an empty one.
    let created_once = json!({"title": "Once", "start": "2026-06-02T10:00:00Z",
                              "end": "2026-06-02T11:00:00Z", "time_zone": "UTC"});
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n\
               UID:imported@example.com\r\nDTSTAMP:20260101T000000Z\r\n\
               DTSTART:20260603T100000Z\r\nDTEND:20260603T110000Z\r\nSUMMARY:Imported\r\n\
               END:VEVENT\r\nEND:VCALENDAR\r\n";
    // The retry goes once the first attempt has answered (sent together, either may commit first).
    let first = [
        json!({"op": "request", "id": 11, "method": "agenda", "call": "POST /v1/events",
                        "idempotency_key": "once-1", "body": created_once}),
    ];
    let mut answered = requests_answered(&mut socket, &first).await;
    let requests = [
        json!({"op": "request", "id": 12, "method": "agenda", "call": "POST /v1/events",
               "idempotency_key": "once-1", "body": created_once}),
        json!({"op": "request", "id": 13, "method": "agenda", "call": "POST /v1/events/import",
               "content_type": "text/calendar", "body": ics}),
        json!({"op": "request", "id": 14, "method": "agenda", "call": format!("GET /v1/events/{id}.ics")}),
    ];
    answered.extend(requests_answered(&mut socket, &requests).await);
    assert_eq!(answered[&11]["status"], 201, "{}", answered[&11]);
    assert_eq!(answered[&12]["body"]["replayed"], true, "{}", answered[&12]);
    assert_eq!(answered[&11]["body"]["id"], answered[&12]["body"]["id"]);
    assert_eq!(answered[&13]["status"], 201, "{}", answered[&13]);
    assert_eq!(
        answered[&13]["body"]["created"].as_array().map(Vec::len),
        Some(1)
    );
    let exported = answered[&14]["body"]
        .as_str()
        .expect("the .ics file as text");
    assert!(exported.starts_with("BEGIN:VCALENDAR") && exported.contains("SUMMARY:Planning"));

    // An answer larger than a connection carries is refused with a reason (HTTP still gives
    // it): eight daily events with the longest titles and places, a year of them.
    let long = "é".repeat(200);
    for day in 0..8 {
        let daily = json!({"title": long, "location": long, "rrule": "FREQ=DAILY",
                           "start": format!("2026-01-01T0{day}:00:00Z"),
                           "end": format!("2026-01-01T0{day}:30:00Z"), "time_zone": "UTC"});
        let (status, created) = api.call("POST", "/v1/events", Some(&alice), daily).await;
        assert_eq!(status, 201, "{created}");
    }
    let year = "/v1/agenda?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z";
    let (status, agenda) = api.call("GET", year, Some(&alice), Value::Null).await;
    assert_eq!(status, 200);
    assert!(agenda.to_string().len() > server::gateway::AGENDA_ANSWER_BYTES_MAX);
    let requests =
        [json!({"op": "request", "id": 15, "method": "agenda", "call": format!("GET {year}")})];
    let answered = requests_answered(&mut socket, &requests).await;
    assert_eq!(
        answered[&15]["code"], "answer_too_large",
        "{}",
        answered[&15]
    );

    // Each request checks the session anew, as over HTTP: after a logout (sent over the socket,
    // answered 204 with no body) the next one is refused, while the connection stays.
    let requests = [
        json!({"op": "request", "id": 21, "method": "agenda", "call": "DELETE /v1/sessions/current"}),
    ];
    let answered = requests_answered(&mut socket, &requests).await;
    assert_eq!(
        (&answered[&21]["status"], &answered[&21]["body"]),
        (&json!(204), &Value::Null)
    );
    let requests = [json!({"op": "request", "id": 22, "method": "agenda", "call": "GET /v1/me"})];
    let answered = requests_answered(&mut socket, &requests).await;
    assert_eq!(
        (&answered[&22]["status"], &answered[&22]["code"]),
        (&json!(401), &json!("unauthenticated"))
    );

    // An operator token's connection sends key-value requests, not agenda calls.
    let (mut operator, _) = tokio_tungstenite::connect_async(cluster.ws_url(3))
        .await
        .expect("connect");
    send(
        &mut operator,
        json!({"op": "auth", "token": support::TOKEN}),
    )
    .await;
    let answer = receive(&mut operator, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(answer["op"], "authenticated", "{answer}");
    send(
        &mut operator,
        json!({"op": "request", "id": 1, "method": "agenda", "call": "GET /v1/me"}),
    )
    .await;
    let answer = receive(&mut operator, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(
        (answer["op"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{answer}"
    );
}

/// Sends `requests` and returns each one's answer (reply or error) by id, skipping other frames.
async fn requests_answered(
    socket: &mut Socket,
    requests: &[Value],
) -> std::collections::BTreeMap<u64, Value> {
    for request in requests {
        send(socket, request.clone()).await;
    }
    let mut answered = std::collections::BTreeMap::new();
    while answered.len() < requests.len() {
        let frame = receive(socket, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("answers so far: {answered:?}"));
        if let (Some("reply" | "error"), Some(id)) = (frame["op"].as_str(), frame["id"].as_u64()) {
            assert!(answered.insert(id, frame).is_none(), "answered twice");
        }
    }
    answered
}

/// Milliseconds since the Unix epoch, by the wall clock alerts follow.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// Reads the socket until the wall clock reaches `until_ms`, keeping each change of alice's alerts
/// that says one fired, with the time it arrived.
async fn collect_alerts(socket: &mut Socket, until_ms: i64, reminders: &mut Vec<(i64, Value)>) {
    while wall_ms() < until_ms {
        let left = Duration::from_millis((until_ms - wall_ms()).max(1) as u64);
        let Some(frame) = receive(socket, left).await else {
            break;
        };
        let key = frame["key"].as_str().unwrap_or_default();
        if frame["op"] != "change" || !key.contains("/!a/alice/") {
            continue;
        }
        let value: Value =
            serde_json::from_str(frame["value"].as_str().unwrap_or("null")).unwrap_or_default();
        if value["fired"]
            .as_array()
            .is_some_and(|fired| !fired.is_empty())
        {
            reminders.push((wall_ms(), value));
        }
    }
}
