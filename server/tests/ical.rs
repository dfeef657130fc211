//! The agenda's iCalendar endpoints against a cluster of real servers on loopback: an event as
//! `.ics` (and who may get it), the feed behind its secret URL (rotation, turning it off), an
//! import, and bad input.

#![cfg(not(madsim))]

mod support;

use serde_json::{Value, json};
use server::default_shards;
use std::net::SocketAddr;
use support::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer: the status, the `Content-Type` and the body as text.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request with `Connection: close` and a body of the given type.
async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let (media, body) = body.unwrap_or(("", ""));
    if !media.is_empty() {
        head.push_str(&format!("Content-Type: {media}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.expect("send");
    stream.write_all(body.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("receive");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Answer {
        status: head[9..12].parse().expect("a status code"),
        content_type,
        body: body.to_owned(),
    }
}

fn json_body(value: &Value) -> Option<(&'static str, String)> {
    Some(("application/json", value.to_string()))
}

struct Api {
    address: SocketAddr,
}

impl Api {
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> Answer {
        let body = body.as_ref().map(|(media, text)| (*media, text.as_str()));
        request(self.address, method, path, token, body).await
    }

    /// Registers a user and logs in; returns the session token.
    async fn user(&self, name: &str, zone: &str) -> String {
        let registration = json!({"name": name, "password": "a long password", "time_zone": zone});
        let answer = self
            .send("POST", "/v1/users", None, json_body(&registration))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        let login = json!({"name": name, "password": "a long password"});
        let answer = self
            .send("POST", "/v1/sessions", None, json_body(&login))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.json()["token"].as_str().expect("a token").to_owned()
    }

    async fn import(&self, token: &str, text: &str) -> Answer {
        self.send(
            "POST",
            "/v1/events/import",
            Some(token),
            Some(("text/calendar", text.to_owned())),
        )
        .await
    }
}

fn http_address(cluster: &TestCluster) -> SocketAddr {
    cluster.configs[0].me().http.expect("HTTP is on")
}

const CALENDAR: &str = "text/calendar; charset=utf-8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_exports_the_feed_follows_its_secret_and_an_import_creates_events() {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let api = Api {
        address: http_address(&cluster),
    };
    let alice = api.user("alice", "Europe/Madrid").await;
    let nora = api.user("nora", "America/New_York").await;
    let zed = api.user("zed", "UTC").await;

    // The export: organizer and attendee get it; a stranger gets 404, as for the event.
    let event = json!({
        "title": "Planning", "location": "Room 2",
        "start": "2026-03-23T09:30", "end": "2026-03-23T10:00", "time_zone": "Europe/Madrid",
        "rrule": "FREQ=WEEKLY;BYDAY=MO;COUNT=4", "exdates": ["2026-03-30T09:30"], "attendees": ["nora"],
    });
    let created = api
        .send("POST", "/v1/events", Some(&alice), json_body(&event))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("an id").to_owned();
    let path = format!("/v1/events/{id}.ics");
    let ics = api.send("GET", &path, Some(&alice), None).await;
    assert_eq!(ics.status, 200, "{}", ics.body);
    assert_eq!(ics.content_type, CALENDAR);
    for line in [
        &format!("UID:{id}"),
        "DTSTART;TZID=Europe/Madrid:20260323T093000",
        "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=4",
        "EXDATE;TZID=Europe/Madrid:20260330T093000",
        "LOCATION:Room 2",
        "ATTENDEE;CN=nora;PARTSTAT=NEEDS-ACTION",
    ] {
        assert!(ics.body.contains(line), "{line} in {}", ics.body);
    }
    // The JSON form of the same event still answers at the same path without the suffix.
    let plain = api
        .send("GET", &format!("/v1/events/{id}"), Some(&alice), None)
        .await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.json()["id"], id.as_str());
    for _ in 0..100 {
        if api.send("GET", &path, Some(&nora), None).await.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(api.send("GET", &path, Some(&nora), None).await.status, 200);
    assert_eq!(api.send("GET", &path, Some(&zed), None).await.status, 404);
    assert_eq!(api.send("GET", &path, None, None).await.status, 401);

    // The feed: a secret URL without a session; rotating it retires the old one at once.
    let first = api.send("POST", "/v1/me/feed", Some(&nora), None).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first_url = first.json()["url"].as_str().expect("a url").to_owned();
    assert!(first_url.starts_with("/v1/feeds/nora/") && first_url.ends_with(".ics"));
    let feed = api.send("GET", &first_url, None, None).await;
    assert_eq!(feed.status, 200, "{}", feed.body);
    assert_eq!(feed.content_type, CALENDAR);
    assert!(feed.body.contains(&format!("UID:{id}")), "{}", feed.body);
    let second = api.send("POST", "/v1/me/feed", Some(&nora), None).await;
    let second_url = second.json()["url"].as_str().expect("a url").to_owned();
    assert_ne!(first_url, second_url);
    assert_eq!(api.send("GET", &first_url, None, None).await.status, 404);
    assert_eq!(api.send("GET", &second_url, None, None).await.status, 200);
    let secret = second_url
        .trim_start_matches("/v1/feeds/nora/")
        .trim_end_matches(".ics");
    for wrong in [
        format!("/v1/feeds/alice/{secret}.ics"),
        format!("/v1/feeds/nora/{secret}"),
        format!("/v1/feeds/nora/{}.ics", "0".repeat(64)),
        "/v1/feeds/nora/x.ics".to_owned(),
    ] {
        assert_eq!(
            api.send("GET", &wrong, None, None).await.status,
            404,
            "{wrong}"
        );
    }
    let off = api.send("DELETE", "/v1/me/feed", Some(&nora), None).await;
    assert_eq!(off.status, 204);
    assert_eq!(api.send("GET", &second_url, None, None).await.status, 404);

    // Import: alice's export, imported by zed, keeps its times; a bad VEVENT is reported.
    let with_bad = ics.body.replace(
        "END:VCALENDAR",
        "BEGIN:VEVENT\r\nUID:bad\r\nDTSTART;TZID=Mars/Base:20260601T100000\r\n\
         DURATION:PT1H\r\nEND:VEVENT\r\nEND:VCALENDAR",
    );
    let imported = api.import(&zed, &with_bad).await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    let report = imported.json();
    assert_eq!(
        report["created"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(report["errors"][0]["uid"], "bad", "{report}");
    let message = report["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Mars/Base"), "{report}");
    let copy_id = report["created"][0]["id"].as_str().expect("an id");
    let copy = api
        .send("GET", &format!("/v1/events/{copy_id}"), Some(&zed), None)
        .await
        .json();
    assert_eq!(copy["owner"], "zed");
    assert_eq!(copy["schedule"]["zone"], "Europe/Madrid", "{copy}");
    assert_eq!(copy["schedule"]["start"], "2026-03-23T09:30", "{copy}");
    assert_eq!(
        copy["schedule"]["exdates"],
        json!(["2026-03-30T09:30"]),
        "{copy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calendar_input_gets_a_4xx_and_is_counted() {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let address = http_address(&cluster);
    let api = Api { address };
    let alice = api.user("alice", "UTC").await;
    let vevent = |body: &str| {
        format!("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n{body}END:VEVENT\r\nEND:VCALENDAR\r\n")
    };
    let huge = "X".repeat(agenda::ical::IMPORT_BYTES_MAX + 1);
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "/v1/events/import",
            Some(&alice),
            Some(("text/calendar", "not a calendar".into())),
            400,
        ),
        (
            "POST",
            "/v1/events/import",
            Some(&alice),
            Some(("application/json", "{}".into())),
            415,
        ),
        (
            "POST",
            "/v1/events/import",
            None,
            Some((
                "text/calendar",
                vevent("DTSTART:20260601T100000Z\r\nDURATION:PT1H\r\n"),
            )),
            401,
        ),
        (
            "POST",
            "/v1/events/import",
            Some(&alice),
            Some((
                "text/calendar",
                vevent("DTSTART;TZID=Nowhere/Land:20260601T100000\r\nDURATION:PT1H\r\n"),
            )),
            400,
        ),
        (
            "POST",
            "/v1/events/import",
            Some(&alice),
            Some((
                "text/calendar",
                vevent(
                    "DTSTART:20260601T100000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=MONTHLY;BYSETPOS=1;BYDAY=MO\r\n",
                ),
            )),
            400,
        ),
        (
            "POST",
            "/v1/events/import",
            Some(&alice),
            Some(("text/calendar", huge)),
            413,
        ),
        ("GET", "/v1/events/not-an-id.ics", Some(&alice), None, 400),
        (
            "GET",
            "/v1/events/zed.0000000000000001.ics",
            Some(&alice),
            None,
            404,
        ),
        ("GET", "/v1/feeds/alice/nothing.ics", None, None, 404),
        ("POST", "/v1/me/feed", None, None, 401),
        ("DELETE", "/v1/me/feed", Some("alice.bad"), None, 401),
    ];
    let refused_before = metric(address, "agenda_calendar_requests_refused");
    for (method, path, token, body, expected) in cases.iter().cloned() {
        let answer = api.send(method, path, token, body).await;
        assert_eq!(answer.status, expected, "{method} {path}: {}", answer.body);
        let error = answer.json();
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{method} {path}: {}",
            answer.body
        );
    }
    let refused_after = metric(address, "agenda_calendar_requests_refused");
    assert_eq!(refused_after - refused_before, cases.len() as f64);
    assert_eq!(api.send("GET", "/health", None, None).await.status, 200);
}

/// A request (method, path, token, body with its type) and the status it must get.
type Case<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<(&'a str, String)>,
    u16,
);

fn metric(address: SocketAddr, name: &str) -> f64 {
    let text = server::probe::get(address, "/metrics").expect("metrics");
    server::probe::metric(&text, name)
}
