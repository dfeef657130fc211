//! The agenda's HTTP API against a cluster of real servers on loopback: a cross-shard invitation
//! delivered by the leader of the organizer's shard (also after that leader crashes), the answer
//! travelling back, the agenda in the caller's zone, who may see what, and bad input.

#![cfg(not(madsim))]

mod support;

use serde_json::{Value, json};
use server::default_shards;
use std::net::SocketAddr;
use std::time::Duration;
use support::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request (`Connection: close`): the status and the body as JSON (`Null` if none).
async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("receive");
    let answer = String::from_utf8(answer).expect("UTF-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().expect("a status code");
    // Bodies here are small JSON documents without chunked encoding.
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json)
}

struct Api {
    address: SocketAddr,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let body = (!body.is_null()).then(|| body.to_string());
        http(self.address, method, path, token, body.as_deref()).await
    }

    /// Registers a user and logs in; returns the session token.
    async fn user(&self, name: &str, zone: &str) -> String {
        let registration = json!({"name": name, "password": "a long password", "display_name": name, "time_zone": zone});
        let (status, profile) = self.call("POST", "/v1/users", None, registration).await;
        assert_eq!(status, 201, "{profile}");
        assert_eq!(profile["time_zone"], zone);
        let (status, session) = self
            .call(
                "POST",
                "/v1/sessions",
                None,
                json!({"name": name, "password": "a long password"}),
            )
            .await;
        assert_eq!(status, 201, "{session}");
        session["token"].as_str().expect("a token").to_owned()
    }

    /// Polls `path` until `done` holds of the answer (the outbox is delivered asynchronously).
    async fn until(&self, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let (status, value) = self.call("GET", path, Some(token), Value::Null).await;
            if status == 200 && done(&value) {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, last) = self.call("GET", path, Some(token), Value::Null).await;
        panic!("{path} never reached the expected state: {status} {last}");
    }
}

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

fn metric(address: SocketAddr, name: &str) -> f64 {
    let text = server::probe::get(address, "/metrics").expect("metrics");
    server::probe::metric(&text, name)
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
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let due_ms = (now_ms + 8_000 + 59_999) / 60_000 * 60_000;
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
    let wall_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64
    };
    let crash_at = due_ms - 1_000;
    tokio::time::sleep(Duration::from_millis((crash_at - wall_ms()).max(0) as u64)).await;
    cluster.crash(leader).await;

    // Every alert frame until 8 s after the due time: exactly one, within seconds.
    let mut reminders = Vec::new();
    while wall_ms() < due_ms + 8_000 {
        let left = Duration::from_millis((due_ms + 8_000 - wall_ms()).max(1) as u64);
        let Some(frame) = receive(&mut socket, left).await else {
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
