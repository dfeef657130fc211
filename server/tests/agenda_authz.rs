//! Who may do what, on every route of the agenda's HTTP API (server/src/api/calendar.rs), and
//! what bad input gets on every route.
//!
//! The matrix asks each route as eight callers — no session, a bad token, a stranger, a former
//! member of the group, a member, an admin, the owner (who also organizes the event) and an
//! attendee of the event — and checks the status (401 without a session, 404 for what one may
//! not learn about, 403 for what one knows of but may not do) and that a refused change changed
//! nothing. Both tests read the routes from the router's source and fail when a route has no
//! row, so a new route cannot slip in untested.

#![cfg(not(madsim))]

mod support;

#[path = "support/api.rs"]
mod api;

use api::{Api, http, metric, raw};
use serde_json::{Value, json};
use server::default_shards;
use std::collections::BTreeSet;
use support::TestCluster;

/// The routers' sources (the agenda's and its iCalendar routes): the routes are read from them.
const ROUTER_SOURCES: [&str; 2] = [
    include_str!("../src/api/calendar.rs"),
    include_str!("../src/api/ical.rs"),
];

/// Every `(method, path)` the agenda's routers serve, as written in their `.route(...)` calls.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (source, at) in ROUTER_SOURCES.iter().flat_map(|source| {
        source
            .match_indices(".route(")
            .map(move |(at, _)| (*source, at))
    }) {
        let rest = &source[at + ".route(".len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .expect("a closed .route( call")
            .0;
        let call = &rest[..end];
        let path = call.split('"').nth(1).expect("a path literal");
        for method in ["get", "post", "put", "patch", "delete"] {
            for (found, _) in call.match_indices(&format!("{method}(")) {
                let before = call[..found].chars().next_back();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    routes.insert((method.to_uppercase(), path.to_owned()));
                }
            }
        }
    }
    assert!(routes.len() >= 20, "the router's routes: {routes:?}");
    routes
}

/// Fails unless `covered` names exactly the router's routes.
fn assert_every_route(covered: &BTreeSet<(String, String)>, what: &str) {
    let routes = routes_in_source();
    let missing: Vec<_> = routes.difference(covered).collect();
    let stale: Vec<_> = covered.difference(&routes).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "{what}: routes without a row {missing:?}; rows of no route {stale:?}"
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Nobody,
    BadToken,
    Stranger,
    /// Was a member of the group, removed; owns a group of their own.
    NonMember,
    Member,
    Admin,
    /// Owns the group and organizes the event.
    Owner,
    /// Invited to the event, in no group.
    Attendee,
}

use Caller::*;

const CALLERS: [Caller; 8] = [
    Nobody, BadToken, Stranger, NonMember, Member, Admin, Owner, Attendee,
];

/// The users behind the callers: the organizer in events a-m, the attendee in n-z.
fn name(caller: Caller) -> &'static str {
    match caller {
        Nobody | BadToken => "",
        Stranger => "sam",
        NonMember => "nico",
        Member => "mina",
        Admin => "adam",
        Owner => "carla",
        Attendee => "tara",
    }
}

/// A user who is in the fresh groups as a plain member, and one who is in none.
const SPARE_MEMBER: &str = "zoe";
const OUTSIDER: &str = "vera";

/// The shared fixtures: one session per caller, the group `team`, one event inviting the
/// attendee.
struct World {
    api: Api,
    tokens: Vec<(Caller, String)>,
    event: String,
    fresh: std::cell::Cell<u32>,
}

const TITLE: &str = "Secret plans";
const LOCATION: &str = "Room 101";

impl World {
    async fn new(api: Api) -> World {
        let mut tokens = Vec::new();
        for caller in CALLERS {
            let token = match caller {
                Nobody => String::new(),
                // Well formed, of a real user, but no session has it.
                BadToken => format!("carla.{}", "0".repeat(64)),
                _ => api.user(name(caller), "Europe/Madrid").await,
            };
            tokens.push((caller, token));
        }
        for user in [SPARE_MEMBER, OUTSIDER] {
            api.user(user, "UTC").await;
        }
        let world = World {
            api,
            tokens,
            event: String::new(),
            fresh: std::cell::Cell::new(0),
        };
        world.group("team").await;
        let (status, _) = world
            .call(NonMember, "POST", "/v1/groups", json!({"id": "nicos"}))
            .await;
        assert_eq!(status, 201);
        let event = world.event().await;
        // The invitation reaches the attendee's shard.
        world
            .api
            .until("/v1/invitations", world.token(Attendee).unwrap(), |v| {
                v["invitations"]
                    .as_array()
                    .is_some_and(|list| list.iter().any(|i| i["event_id"] == event.as_str()))
            })
            .await;
        World { event, ..world }
    }

    fn token(&self, caller: Caller) -> Option<&str> {
        let (_, token) = self.tokens.iter().find(|(c, _)| *c == caller).unwrap();
        (caller != Nobody).then_some(token.as_str())
    }

    async fn call(&self, caller: Caller, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.api.call(method, path, self.token(caller), body).await
    }

    /// Makes a group owned by the owner: the admin, the member and [`SPARE_MEMBER`] in it, the
    /// non-member added and removed again.
    async fn group(&self, id: &str) {
        let (status, answer) = self
            .call(Owner, "POST", "/v1/groups", json!({"id": id}))
            .await;
        assert_eq!(status, 201, "{answer}");
        let path = format!("/v1/groups/{id}/members");
        for (user, role) in [
            (name(Admin), "admin"),
            (name(Member), "member"),
            (SPARE_MEMBER, "member"),
            (name(NonMember), "member"),
        ] {
            let (status, answer) = self
                .call(Owner, "POST", &path, json!({"user": user, "role": role}))
                .await;
            assert_eq!(status, 200, "{answer}");
        }
        let (status, answer) = self
            .call(
                Owner,
                "DELETE",
                &format!("{path}/{}", name(NonMember)),
                Value::Null,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// A new group (for a case that may change it).
    async fn fresh_group(&self) -> String {
        self.fresh.set(self.fresh.get() + 1);
        let id = format!("fresh-{}", self.fresh.get());
        self.group(&id).await;
        id
    }

    /// A new event of the owner's, inviting the attendee.
    async fn event(&self) -> String {
        let event = json!({
            "title": TITLE, "location": LOCATION, "description": "nobody else may read this",
            "start": "2026-06-01T10:00", "end": "2026-06-01T11:00", "time_zone": "Europe/Madrid",
            "rrule": "FREQ=DAILY;COUNT=5", "attendees": [name(Attendee)],
        });
        let (status, created) = self.call(Owner, "POST", "/v1/events", event).await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().expect("an id").to_owned()
    }

    /// What the owner sees of a group or an event.
    async fn owner_view(&self, path: &str) -> (u16, Value) {
        self.call(Owner, "GET", path, Value::Null).await
    }
}

/// One row of the matrix: a route, what is asked of it, and the status each caller gets, in the
/// order of [`CALLERS`].
struct Row {
    method: &'static str,
    route: &'static str,
    what: &'static str,
    expect: [u16; 8],
}

const fn row(
    method: &'static str,
    route: &'static str,
    what: &'static str,
    expect: [u16; 8],
) -> Row {
    Row {
        method,
        route,
        what,
        expect,
    }
}

/// Statuses for: Nobody, BadToken, Stranger, NonMember, Member, Admin, Owner, Attendee.
const MATRIX: &[Row] = &[
    row("POST", "/v1/users", "register a taken name", [409; 8]),
    row(
        "GET",
        "/v1/users/{name}",
        "another's profile",
        [401, 401, 200, 200, 200, 200, 200, 200],
    ),
    row(
        "POST",
        "/v1/sessions",
        "log in with a wrong password",
        [401; 8],
    ),
    row(
        "DELETE",
        "/v1/sessions/current",
        "log out",
        [401, 401, 204, 204, 204, 204, 204, 204],
    ),
    row(
        "GET",
        "/v1/me",
        "own profile",
        [401, 401, 200, 200, 200, 200, 200, 200],
    ),
    row(
        "PATCH",
        "/v1/me",
        "own display name",
        [401, 401, 200, 200, 200, 200, 200, 200],
    ),
    row(
        "PATCH",
        "/v1/me",
        "password without the current one",
        [401; 8],
    ),
    row(
        "POST",
        "/v1/groups",
        "take a group's id",
        [401, 401, 409, 409, 409, 409, 409, 409],
    ),
    row(
        "GET",
        "/v1/groups",
        "own groups",
        [401, 401, 200, 200, 200, 200, 200, 200],
    ),
    row(
        "GET",
        "/v1/groups/{id}",
        "a group",
        [401, 401, 404, 404, 200, 200, 200, 404],
    ),
    row(
        "POST",
        "/v1/groups/{id}/members",
        "add a member",
        [401, 401, 404, 404, 403, 200, 200, 404],
    ),
    row(
        "POST",
        "/v1/groups/{id}/members",
        "make an admin",
        [401, 401, 404, 404, 403, 403, 200, 404],
    ),
    row(
        "POST",
        "/v1/groups/{id}/members",
        "demote the owner",
        [401, 401, 404, 404, 403, 403, 403, 404],
    ),
    row(
        "DELETE",
        "/v1/groups/{id}/members/{user}",
        "leave the group",
        [401, 401, 404, 404, 200, 200, 403, 404],
    ),
    row(
        "DELETE",
        "/v1/groups/{id}/members/{user}",
        "remove a member",
        [401, 401, 404, 404, 403, 200, 200, 404],
    ),
    row(
        "DELETE",
        "/v1/groups/{id}/members/{user}",
        "remove the admin",
        [401, 401, 404, 404, 403, 200, 200, 404],
    ),
    row(
        "DELETE",
        "/v1/groups/{id}/members/{user}",
        "remove the owner",
        [401, 401, 404, 404, 403, 403, 403, 404],
    ),
    row(
        "POST",
        "/v1/events",
        "invite a group",
        [401, 401, 404, 404, 201, 201, 201, 404],
    ),
    row(
        "GET",
        "/v1/events/{id}",
        "an event",
        [401, 401, 404, 404, 404, 404, 200, 200],
    ),
    row(
        "PATCH",
        "/v1/events/{id}",
        "retitle an event",
        [401, 401, 404, 404, 404, 404, 200, 403],
    ),
    row(
        "DELETE",
        "/v1/events/{id}",
        "delete an event",
        [401, 401, 404, 404, 404, 404, 200, 403],
    ),
    row(
        "GET",
        "/v1/events/{id}/tally",
        "the answers",
        [401, 401, 404, 404, 404, 404, 200, 403],
    ),
    row(
        "PUT",
        "/v1/events/{id}/alerts",
        "set alerts",
        [401, 401, 404, 404, 404, 404, 200, 200],
    ),
    row(
        "GET",
        "/v1/events/{id}/alerts",
        "alerts on an event",
        [401, 401, 404, 404, 404, 404, 200, 200],
    ),
    row(
        "GET",
        "/v1/alerts",
        "own alerts",
        [401, 401, 200, 200, 200, 200, 200, 200],
    ),
    row(
        "POST",
        "/v1/me/feed",
        "a feed of one's own",
        [401, 401, 201, 201, 201, 201, 201, 201],
    ),
    row(
        "DELETE",
        "/v1/me/feed",
        "turn one's feed off",
        [401, 401, 204, 204, 204, 204, 204, 204],
    ),
    row(
        "GET",
        "/v1/feeds/{user}/{file}",
        "the owner's feed with a wrong secret",
        [404; 8],
    ),
    row(
        "POST",
        "/v1/events/import",
        "import into one's own calendar",
        [401, 401, 201, 201, 201, 201, 201, 201],
    ),
    row(
        "GET",
        "/v1/agenda",
        "own agenda",
        [401, 401, 200, 200, 200, 200, 200, 200],
    ),
    row(
        "GET",
        "/v1/invitations",
        "own invitations",
        [401, 401, 200, 200, 200, 200, 200, 200],
    ),
    row(
        "POST",
        "/v1/invitations/{id}/rsvp",
        "answer",
        [401, 401, 404, 404, 404, 404, 404, 200],
    ),
    row(
        "POST",
        "/v1/freebusy",
        "busy times",
        [401, 401, 200, 200, 200, 200, 200, 200],
    ),
    row(
        "POST",
        "/v1/find-time",
        "a time for a group",
        [401, 401, 404, 404, 200, 200, 200, 404],
    ),
];

fn lists(value: &Value, field: &str, key: &str, wanted: &str) -> bool {
    value[field]
        .as_array()
        .is_some_and(|list| list.iter().any(|item| item[key] == wanted))
}

/// Asks `row` as `caller`, checks the status, and checks what the answer shows and that a refused
/// change changed nothing.
async fn ask(world: &World, row: &Row, caller: Caller, expected: u16) {
    let me = name(caller);
    let event = world.event.as_str();
    let allowed = (200..300).contains(&expected);
    let label = &format!("{} {} ({}) as {caller:?}", row.method, row.route, row.what);
    let send = |path: String, body: Value| async move {
        let (status, answer) = world.call(caller, row.method, &path, body).await;
        assert_eq!(status, expected, "{label}: {answer}");
        if !allowed {
            assert!(answer["code"].is_string(), "{label}: {answer}");
        }
        answer
    };
    match row.what {
        "register a taken name" => {
            send(
                "/v1/users".into(),
                json!({"name": name(Owner), "password": "another password"}),
            )
            .await;
        }
        "another's profile" => {
            let answer = send(format!("/v1/users/{}", name(Owner)), Value::Null).await;
            if allowed {
                assert_eq!(answer["name"], name(Owner));
                assert!(answer.get("password_hash").is_none(), "{answer}");
            }
        }
        "log in with a wrong password" => {
            send(
                "/v1/sessions".into(),
                json!({"name": name(Owner), "password": "not the password"}),
            )
            .await;
        }
        "log out" => {
            // A second session, logged out; the first keeps working.
            if allowed {
                let second = world.api.login(me).await;
                let (status, _) = world
                    .api
                    .call("DELETE", "/v1/sessions/current", Some(&second), Value::Null)
                    .await;
                assert_eq!(status, expected, "{label}");
                let (status, _) = world
                    .api
                    .call("GET", "/v1/me", Some(&second), Value::Null)
                    .await;
                assert_eq!(status, 401, "{label}: the closed session still works");
            } else {
                send("/v1/sessions/current".into(), Value::Null).await;
            }
        }
        "own profile" => {
            let answer = send("/v1/me".into(), Value::Null).await;
            if allowed {
                assert_eq!(answer["name"], me);
            }
        }
        "own display name" => {
            let answer = send(
                "/v1/me".into(),
                json!({"display_name": format!("{me} again")}),
            )
            .await;
            if allowed {
                assert_eq!(answer["name"], me);
            }
        }
        "password without the current one" => {
            send("/v1/me".into(), json!({"password": "a new password 1"})).await;
        }
        "take a group's id" => {
            send("/v1/groups".into(), json!({"id": "team", "name": "Mine"})).await;
        }
        "own groups" => {
            let answer = send("/v1/groups".into(), Value::Null).await;
            if allowed {
                let member = matches!(caller, Member | Admin | Owner);
                assert_eq!(
                    lists(&answer, "groups", "id", "team"),
                    member,
                    "{label}: {answer}"
                );
                let own = lists(&answer, "groups", "id", "nicos");
                assert_eq!(own, caller == NonMember, "{label}: {answer}");
            }
        }
        "a group" => {
            let answer = send("/v1/groups/team".into(), Value::Null).await;
            if allowed {
                assert_eq!(answer["group"]["owner"], name(Owner));
            }
        }
        "add a member" | "make an admin" | "demote the owner" | "leave the group"
        | "remove a member" | "remove the admin" | "remove the owner" => {
            let group = world.fresh_group().await;
            let path = format!("/v1/groups/{group}");
            let before = world.owner_view(&path).await.1;
            let (target, role) = match row.what {
                "add a member" => (OUTSIDER, Some("member")),
                "make an admin" => (name(Member), Some("admin")),
                "demote the owner" => (name(Owner), Some("member")),
                // Without a session, the caller names someone else.
                "leave the group" if me.is_empty() => (SPARE_MEMBER, None),
                "leave the group" => (me, None),
                "remove a member" => (SPARE_MEMBER, None),
                "remove the admin" => (name(Admin), None),
                _ => (name(Owner), None),
            };
            match role {
                Some(role) => {
                    send(
                        format!("{path}/members"),
                        json!({"user": target, "role": role}),
                    )
                    .await
                }
                None => send(format!("{path}/members/{target}"), Value::Null).await,
            };
            let after = world.owner_view(&path).await.1;
            let role_of = |view: &Value| {
                view["members"].as_array().and_then(|members| {
                    members
                        .iter()
                        .find(|m| m[0] == target)
                        .map(|m| m[1].clone())
                })
            };
            if allowed {
                assert_eq!(role_of(&after), role.map(Value::from), "{label}: {after}");
            } else {
                assert_eq!(before, after, "{label}: a refused change changed the group");
            }
        }
        "invite a group" => {
            let body = json!({"title": "Team", "start": "2026-07-01T10:00", "end": "2026-07-01T11:00", "attendees": ["group:team"]});
            let answer = send("/v1/events".into(), body).await;
            if allowed {
                let invited: BTreeSet<&str> = answer["invited"]
                    .as_array()
                    .expect("invited")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                let team: BTreeSet<&str> = [name(Owner), name(Admin), name(Member), SPARE_MEMBER]
                    .into_iter()
                    .filter(|user| *user != me)
                    .collect();
                assert_eq!(invited, team, "{label}: {answer}");
            }
        }
        "an event" => {
            let answer = send(format!("/v1/events/{event}"), Value::Null).await;
            if allowed {
                assert_eq!(answer["title"], TITLE);
            }
        }
        "retitle an event" | "delete an event" => {
            let id = world.event().await;
            let path = format!("/v1/events/{id}");
            let before = world.owner_view(&path).await;
            let body = if row.method == "PATCH" {
                json!({"title": format!("Retitled by {me}")})
            } else {
                Value::Null
            };
            send(path.clone(), body).await;
            let after = world.owner_view(&path).await;
            match (allowed, row.method) {
                (true, "PATCH") => assert_eq!(after.1["title"], format!("Retitled by {me}")),
                (true, _) => assert_eq!(after.0, 404, "{label}: not deleted"),
                (false, _) => assert_eq!(before, after, "{label}: a refused change changed it"),
            }
        }
        "the answers" => {
            let answer = send(format!("/v1/events/{event}/tally"), Value::Null).await;
            if allowed {
                assert!(answer["attendees"][name(Attendee)].is_array(), "{answer}");
            }
        }
        "own agenda" => {
            let answer = send(
                "/v1/agenda?from=2026-06-01T00:00:00Z&to=2026-06-08T00:00:00Z".into(),
                Value::Null,
            )
            .await;
            if allowed {
                let sees = lists(&answer, "occurrences", "event_id", event);
                assert_eq!(
                    sees,
                    matches!(caller, Owner | Attendee),
                    "{label}: {answer}"
                );
            }
        }
        "own invitations" => {
            let answer = send("/v1/invitations?all=true".into(), Value::Null).await;
            if allowed {
                let sees = lists(&answer, "invitations", "event_id", event);
                assert_eq!(sees, caller == Attendee, "{label}: {answer}");
            }
        }
        "answer" => {
            send(
                format!("/v1/invitations/{event}/rsvp"),
                json!({"response": "tentative"}),
            )
            .await;
        }
        "busy times" => {
            let body = json!({"users": [name(Owner), name(Attendee)], "from": "2026-06-01T00:00:00Z", "to": "2026-06-08T00:00:00Z"});
            let answer = send("/v1/freebusy".into(), body).await;
            if allowed {
                let text = answer.to_string();
                assert!(!text.contains(TITLE) && !text.contains(LOCATION), "{text}");
                assert!(
                    answer["users"][0]["busy"]
                        .as_array()
                        .is_some_and(|b| !b.is_empty())
                );
            }
        }
        "a time for a group" => {
            let body = json!({"group": "team", "from": "2026-06-01T00:00:00Z", "to": "2026-06-03T00:00:00Z", "minutes": 30, "max": 2});
            let answer = send("/v1/find-time".into(), body).await;
            if allowed {
                assert_eq!(
                    answer["users"].as_array().map(Vec::len),
                    Some(4),
                    "{answer}"
                );
            }
        }
        "set alerts" => {
            let answer = send(
                format!("/v1/events/{event}/alerts"),
                json!({"minutes_before": [10]}),
            )
            .await;
            if allowed {
                assert_eq!(
                    (&answer["user"], &answer["minutes_before"]),
                    (&json!(me), &json!([10]))
                );
            }
        }
        "alerts on an event" => {
            let answer = send(format!("/v1/events/{event}/alerts"), Value::Null).await;
            if allowed {
                assert_eq!(answer["event_id"], event, "{label}: {answer}");
            }
        }
        "own alerts" => {
            let answer = send("/v1/alerts".into(), Value::Null).await;
            if allowed {
                let sees = answer
                    .as_array()
                    .is_some_and(|list| list.iter().any(|alerts| alerts["event_id"] == event));
                // Only those the event is theirs to set alerts on did (the row above).
                assert_eq!(
                    sees,
                    matches!(caller, Owner | Attendee),
                    "{label}: {answer}"
                );
            }
        }
        "a feed of one's own" => {
            let answer = send("/v1/me/feed".into(), Value::Null).await;
            if allowed {
                let url = answer["url"].as_str().unwrap_or_default();
                assert!(
                    url.starts_with(&format!("/v1/feeds/{me}/")),
                    "{label}: {answer}"
                );
            }
        }
        "turn one's feed off" => {
            send("/v1/me/feed".into(), Value::Null).await;
        }
        "the owner's feed with a wrong secret" => {
            let path = format!("/v1/feeds/{}/{}.ics", name(Owner), "0".repeat(64));
            send(path, Value::Null).await;
        }
        "import into one's own calendar" => {
            let calendar = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:imported@test\r\nDTSTAMP:20260501T000000Z\r\nDTSTART:20260610T090000Z\r\nDTEND:20260610T100000Z\r\nSUMMARY:Imported\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
            let mut request = "POST /v1/events/import HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: text/calendar\r\n".to_owned();
            if let Some(token) = world.token(caller) {
                request.push_str(&format!("Authorization: Bearer {token}\r\n"));
            }
            request.push_str(&format!(
                "Content-Length: {}\r\n\r\n{calendar}",
                calendar.len()
            ));
            let (status, answer) = raw(world.api.address, request.as_bytes()).await;
            assert_eq!(status, expected, "{label}: {answer}");
            if allowed {
                let created = answer["created"].as_array().map(Vec::len);
                assert_eq!(created, Some(1), "{label}: {answer}");
            }
        }
        other => panic!("no request for the row {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_lets_each_caller_do_only_what_is_theirs() {
    let covered = MATRIX
        .iter()
        .map(|row| (row.method.to_owned(), row.route.to_owned()))
        .collect();
    assert_every_route(&covered, "the authorization matrix");

    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let api = Api {
        address: cluster.configs[1].me().http.expect("HTTP is on"),
    };
    let world = World::new(api).await;
    for row in MATRIX {
        for (caller, expected) in CALLERS.into_iter().zip(row.expect) {
            ask(&world, row, caller, expected).await;
        }
    }

    // What nobody else may change is as it was: the owner's password, profile, group, event.
    world.api.login(name(Owner)).await;
    let (status, profile) = world
        .call(
            Stranger,
            "GET",
            &format!("/v1/users/{}", name(Owner)),
            Value::Null,
        )
        .await;
    assert_eq!(
        (status, &profile["display_name"]),
        (200, &json!("carla again"))
    );
    let (_, team) = world.owner_view("/v1/groups/team").await;
    assert_eq!(team["group"]["owner"], name(Owner));
    assert_eq!(team["members"].as_array().map(Vec::len), Some(4), "{team}");
    let (status, event) = world
        .owner_view(&format!("/v1/events/{}", world.event))
        .await;
    assert_eq!(
        (status, &event["title"], event["sequence"].as_u64()),
        (200, &json!(TITLE), Some(0))
    );
}

/// One bad request: method, path, caller's token (or none), body, the status it must get.
struct Bad {
    method: &'static str,
    route: &'static str,
    path: String,
    token: Option<String>,
    body: Option<String>,
    expect: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_route_gets_a_clear_4xx_is_counted_and_the_server_stays_up() {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let address = cluster.configs[0].me().http.expect("HTTP is on");
    let api = Api { address };
    let alice = api.user("alice", "Europe/Madrid").await;
    api.user("nora", "UTC").await;
    let (status, _) = api
        .call("POST", "/v1/groups", Some(&alice), json!({"id": "team"}))
        .await;
    assert_eq!(status, 201);
    let (status, created) = api
        .call(
            "POST",
            "/v1/events",
            Some(&alice),
            json!({"title": "Weekly", "start": "2026-06-01T10:00", "end": "2026-06-01T11:00",
                   "rrule": "FREQ=WEEKLY;COUNT=4", "attendees": ["nora"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let event = created["id"].as_str().unwrap().to_owned();
    let nora = api.login("nora").await;
    api.until("/v1/invitations", &nora, |v| {
        v["invitations"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;

    let long = |n: usize| "x".repeat(n);
    let many = |n: usize| (0..n).map(|i| format!("user-{i}")).collect::<Vec<_>>();
    let event_path = format!("/v1/events/{event}");
    let mut cases: Vec<Bad> = Vec::new();
    let mut add = |method, route, path: &str, token: Option<&str>, body: Value, expect| {
        let body = match body {
            Value::Null => None,
            Value::String(text) => Some(text),
            other => Some(other.to_string()),
        };
        cases.push(Bad {
            method,
            route,
            path: path.to_owned(),
            token: token.map(str::to_owned),
            body,
            expect,
        });
    };
    let me = Some(alice.as_str());
    let an_event = |extra: Value| {
        let mut event =
            json!({"title": "x", "start": "2026-06-01T10:00:00Z", "end": "2026-06-01T11:00:00Z"});
        for (key, value) in extra.as_object().unwrap() {
            event[key] = value.clone();
        }
        event
    };
    let users = "/v1/users";
    add("POST", users, users, None, json!("{not json"), 400);
    add(
        "POST",
        users,
        users,
        None,
        json!({"name": 5, "password": "a long password"}),
        422,
    );
    add(
        "POST",
        users,
        users,
        None,
        json!({"name": "bob", "password": "a long password", "extra": 1}),
        422,
    );
    add(
        "POST",
        users,
        users,
        None,
        json!({"name": "Bad Name", "password": "a long password"}),
        400,
    );
    add(
        "POST",
        users,
        users,
        None,
        json!({"name": long(33), "password": "a long password"}),
        400,
    );
    add(
        "POST",
        users,
        users,
        None,
        json!({"name": "bob", "password": long(257)}),
        400,
    );
    add(
        "POST",
        users,
        users,
        None,
        json!({"name": "bob", "password": "a long password", "display_name": long(101)}),
        400,
    );
    add(
        "POST",
        users,
        users,
        None,
        json!({"name": "bob", "password": "a long password", "time_zone": "Mars/Base"}),
        400,
    );
    add(
        "POST",
        users,
        users,
        None,
        json!({"name": "bob", "password": "a long password", "working_hours": {"days": "XX", "start": "25:00", "end": "09:00"}}),
        422,
    );
    add(
        "GET",
        "/v1/users/{name}",
        "/v1/users/Not%20A%20Name",
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        "/v1/users/{name}",
        &format!("/v1/users/{}", long(200)),
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        "/v1/users/{name}",
        "/v1/users/nobody",
        me,
        Value::Null,
        404,
    );
    add(
        "POST",
        "/v1/sessions",
        "/v1/sessions",
        None,
        json!({"name": "alice"}),
        422,
    );
    add(
        "POST",
        "/v1/sessions",
        "/v1/sessions",
        None,
        json!({"name": "alice", "password": long(100_000)}),
        401,
    );
    add(
        "POST",
        "/v1/sessions",
        "/v1/sessions",
        None,
        json!({"name": long(10_000), "password": "a long password"}),
        401,
    );
    add(
        "DELETE",
        "/v1/sessions/current",
        "/v1/sessions/current",
        Some(&long(4_000)),
        Value::Null,
        401,
    );
    add(
        "GET",
        "/v1/me",
        "/v1/me",
        Some("alice.not-hex"),
        Value::Null,
        401,
    );
    add(
        "PATCH",
        "/v1/me",
        "/v1/me",
        me,
        json!({"time_zone": "Nowhere/City"}),
        400,
    );
    add(
        "PATCH",
        "/v1/me",
        "/v1/me",
        me,
        json!({"display_name": " "}),
        400,
    );
    add(
        "PATCH",
        "/v1/me",
        "/v1/me",
        me,
        json!({"display_name": "a\u{7}bell"}),
        400,
    );
    add(
        "PATCH",
        "/v1/me",
        "/v1/me",
        me,
        json!({"working_hours": {"days": "MO", "start": "17:00", "end": "09:00"}}),
        400,
    );
    add(
        "PATCH",
        "/v1/me",
        "/v1/me",
        me,
        json!({"password": "short", "current_password": "a long password"}),
        400,
    );
    add(
        "PATCH",
        "/v1/me",
        "/v1/me",
        me,
        json!({"display_name": ["a list"]}),
        422,
    );
    add(
        "POST",
        "/v1/groups",
        "/v1/groups",
        me,
        json!({"id": "x"}),
        400,
    );
    add(
        "POST",
        "/v1/groups",
        "/v1/groups",
        me,
        json!({"id": "ok-id", "name": long(101)}),
        400,
    );
    add(
        "POST",
        "/v1/groups",
        "/v1/groups",
        me,
        json!({"id": "ok-id", "name": "a\nb"}),
        400,
    );
    add(
        "GET",
        "/v1/groups",
        "/v1/groups",
        Some(""),
        Value::Null,
        401,
    );
    add(
        "GET",
        "/v1/groups/{id}",
        "/v1/groups/NOT_AN_ID",
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        "/v1/groups/{id}",
        "/v1/groups/%FF%FE",
        me,
        Value::Null,
        400,
    );
    let members = "/v1/groups/team/members";
    add(
        "POST",
        "/v1/groups/{id}/members",
        members,
        me,
        json!({"user": "nora", "role": "king"}),
        422,
    );
    add(
        "POST",
        "/v1/groups/{id}/members",
        members,
        me,
        json!({"user": "nora", "role": "owner"}),
        400,
    );
    add(
        "POST",
        "/v1/groups/{id}/members",
        members,
        me,
        json!({"user": "No Body"}),
        400,
    );
    add(
        "POST",
        "/v1/groups/{id}/members",
        members,
        me,
        json!({"user": "nobody"}),
        404,
    );
    add(
        "DELETE",
        "/v1/groups/{id}/members/{user}",
        "/v1/groups/team/members/UPPER",
        me,
        Value::Null,
        400,
    );
    add(
        "DELETE",
        "/v1/groups/{id}/members/{user}",
        "/v1/groups/team/members/alice",
        me,
        Value::Null,
        403,
    );
    let events = "/v1/events";
    add("POST", events, events, me, json!({"title": "x"}), 422);
    add(
        "POST",
        events,
        events,
        me,
        json!({"title": 7, "start": "2026-06-01T10:00:00Z"}),
        422,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"title": long(201)})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"title": ""})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"location": long(201)})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"description": long(5_001)})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"end": "2026-06-01T09:00:00Z"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"start": "yesterday"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"start": "+275760-09-13T00:00:00Z", "end": "+275760-09-13T01:00:00Z"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"time_zone": "Atlantis/Capital"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(
            json!({"start": "2026-02-30T10:00", "end": "2026-02-30T11:00", "time_zone": "Europe/Madrid"}),
        ),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"all_day": true, "start": "2026-06-01T10:00", "end": "2026-06-01T11:00"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"rrule": "FREQ=SECONDLY"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"rrule": "FREQ=DAILY;COUNT=100001"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"rrule": "FREQ=DAILY;INTERVAL=1001"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"rrule": "FREQ=MONTHLY;BYSETPOS=-1;BYDAY=MO"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"rrule": "FREQ=DAILY;UNTIL=not-a-date"})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"rrule": "garbage;;=="})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"rrule": long(10_000)})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"rrule": "FREQ=DAILY", "exdates": vec!["2026-06-02T10:00:00Z"; 1_001]})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"exdates": ["not a time"]})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"attendees": many(301)})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"attendees": ["nobody"]})),
        404,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"attendees": ["group:Bad Id"]})),
        400,
    );
    add(
        "POST",
        events,
        events,
        me,
        an_event(json!({"attendees": ["group:missing"]})),
        404,
    );
    add(
        "GET",
        "/v1/events/{id}",
        "/v1/events/not-an-id",
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        "/v1/events/{id}",
        "/v1/events/alice.0123456789abcdef",
        me,
        Value::Null,
        404,
    );
    let route = "/v1/events/{id}";
    add(
        "PATCH",
        route,
        "/v1/events/alice.xyz",
        me,
        json!({"title": "y"}),
        400,
    );
    add(
        "PATCH",
        route,
        &event_path,
        me,
        json!("{\"title\": \"y\""),
        400,
    );
    add(
        "PATCH",
        "/v1/me",
        "/v1/me",
        me,
        json!({"timezone": "Europe/Paris"}),
        422,
    );
    add(
        "PATCH",
        route,
        &event_path,
        me,
        json!({"colour": "red"}),
        422,
    );
    add(
        "PATCH",
        route,
        &event_path,
        me,
        json!({"scope": "sometimes"}),
        400,
    );
    add(
        "PATCH",
        route,
        &event_path,
        me,
        json!({"scope": "this", "title": "y"}),
        400,
    );
    add(
        "PATCH",
        route,
        &event_path,
        me,
        json!({"scope": "this", "occurrence": "2026-06-02T10:00", "title": "y"}),
        400,
    );
    add(
        "PATCH",
        route,
        &event_path,
        me,
        json!({"start": "2026-06-01T12:00"}),
        400,
    );
    add(
        "PATCH",
        route,
        &event_path,
        me,
        json!({"title": long(201)}),
        400,
    );
    add(
        "PATCH",
        route,
        &event_path,
        me,
        json!({"rrule": "FREQ=HOURLY"}),
        400,
    );
    add(
        "PATCH",
        route,
        &event_path,
        me,
        json!({"attendees": many(301)}),
        400,
    );
    add(
        "DELETE",
        route,
        &format!("{event_path}?scope=bogus"),
        me,
        Value::Null,
        400,
    );
    add(
        "DELETE",
        route,
        &format!("{event_path}?scope=this&occurrence=garbage"),
        me,
        Value::Null,
        400,
    );
    add(
        "DELETE",
        route,
        &format!("{event_path}?scope=this&occurrence=2026-06-03T10:00"),
        me,
        Value::Null,
        400,
    );
    add(
        "DELETE",
        route,
        &format!("{event_path}?color=red"),
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        "/v1/events/{id}/tally",
        "/v1/events/%00/tally",
        me,
        Value::Null,
        400,
    );
    let agenda = "/v1/agenda";
    add(
        "GET",
        agenda,
        "/v1/agenda?from=2026-06-01T00:00:00Z",
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        agenda,
        "/v1/agenda?from=2026-06-01T00:00:00Z&to=2027-06-07T00:00:00Z",
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        agenda,
        "/v1/agenda?from=2026-06-08T00:00:00Z&to=2026-06-01T00:00:00Z",
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        agenda,
        "/v1/agenda?from=-262143-01-01T00:00:00Z&to=+262142-12-31T00:00:00Z",
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        agenda,
        "/v1/agenda?from=2026-06-01&to=2026-06-02",
        me,
        Value::Null,
        400,
    );
    add(
        "GET",
        "/v1/invitations",
        "/v1/invitations?all=maybe",
        me,
        Value::Null,
        400,
    );
    let rsvp = format!("/v1/invitations/{event}/rsvp");
    let route = "/v1/invitations/{id}/rsvp";
    add(
        "POST",
        route,
        &rsvp,
        Some(&nora),
        json!({"response": "maybe"}),
        422,
    );
    add(
        "POST",
        route,
        &rsvp,
        Some(&nora),
        json!({"response": "accepted", "occurrence": "garbage"}),
        400,
    );
    add(
        "POST",
        route,
        &rsvp,
        Some(&nora),
        json!({"response": "accepted", "occurrence": "2026-06-02T10:00"}),
        400,
    );
    add(
        "POST",
        route,
        "/v1/invitations/nope/rsvp",
        Some(&nora),
        json!({"response": "accepted"}),
        400,
    );
    add(
        "POST",
        route,
        &rsvp,
        me,
        json!({"response": "accepted"}),
        404,
    );
    let range = json!({"from": "2026-06-01T00:00:00Z", "to": "2026-06-02T00:00:00Z"});
    let with = |extra: Value| {
        let mut body = range.clone();
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let freebusy = "/v1/freebusy";
    add(
        "POST",
        freebusy,
        freebusy,
        me,
        with(json!({"users": "alice"})),
        422,
    );
    add(
        "POST",
        freebusy,
        freebusy,
        me,
        with(json!({"users": many(101)})),
        400,
    );
    add(
        "POST",
        freebusy,
        freebusy,
        me,
        with(json!({"users": ["alice"], "from": "x"})),
        400,
    );
    add(
        "POST",
        freebusy,
        freebusy,
        me,
        with(json!({"users": ["alice"], "to": "2028-01-01T00:00:00Z"})),
        400,
    );
    add(
        "POST",
        freebusy,
        freebusy,
        me,
        with(json!({"users": ["Not Valid"]})),
        400,
    );
    let find = "/v1/find-time";
    add(
        "POST",
        find,
        find,
        me,
        with(json!({"users": ["alice"], "minutes": 0})),
        400,
    );
    add(
        "POST",
        find,
        find,
        me,
        with(json!({"users": ["alice"], "minutes": 1441})),
        400,
    );
    add(
        "POST",
        find,
        find,
        me,
        with(json!({"users": ["alice"], "minutes": -5})),
        422,
    );
    add(
        "POST",
        find,
        find,
        me,
        with(json!({"users": many(101), "minutes": 30})),
        400,
    );
    add(
        "POST",
        find,
        find,
        me,
        with(json!({"users": ["alice"], "minutes": 30, "to": "2028-01-01T00:00:00Z"})),
        400,
    );
    add(
        "POST",
        find,
        find,
        me,
        with(json!({"group": "Bad Group", "minutes": 30})),
        400,
    );

    // A change made against a sequence the event has left: told, nothing written.
    add(
        "PATCH",
        "/v1/events/{id}",
        &event_path,
        me,
        json!({"title": "stale edit", "if_sequence": 999}),
        409,
    );
    let alerts = "/v1/events/{id}/alerts";
    let alerts_path = format!("{event_path}/alerts");
    add(
        "PUT",
        alerts,
        &alerts_path,
        me,
        json!({"minutes_before": [1, 2, 3, 4, 5, 6]}),
        400,
    );
    add(
        "PUT",
        alerts,
        &alerts_path,
        me,
        json!({"minutes_before": [40_321]}),
        400,
    );
    add(
        "PUT",
        alerts,
        &alerts_path,
        me,
        json!({"minutes_before": "ten"}),
        422,
    );
    add(
        "PUT",
        alerts,
        &alerts_path,
        me,
        json!({"minutes": [10]}),
        422,
    );
    add(
        "PUT",
        alerts,
        "/v1/events/not-an-id/alerts",
        me,
        json!({"minutes_before": [10]}),
        400,
    );
    add("GET", alerts, "/v1/events/%00/alerts", me, Value::Null, 400);
    add(
        "GET",
        "/v1/alerts",
        "/v1/alerts",
        Some("alice.not-hex"),
        Value::Null,
        401,
    );
    add(
        "POST",
        "/v1/me/feed",
        "/v1/me/feed",
        Some(""),
        Value::Null,
        401,
    );
    add(
        "DELETE",
        "/v1/me/feed",
        "/v1/me/feed",
        None,
        Value::Null,
        401,
    );
    let feeds = "/v1/feeds/{user}/{file}";
    add(
        "GET",
        feeds,
        "/v1/feeds/alice/not-a-secret",
        None,
        Value::Null,
        404,
    );
    add(
        "GET",
        feeds,
        "/v1/feeds/Bad%20Name/x.ics",
        None,
        Value::Null,
        404,
    );
    let import = "/v1/events/import";
    // A JSON body is not a calendar (the media type is checked before the body is read).
    add("POST", import, import, me, json!({"title": "x"}), 415);
    add("POST", import, import, None, Value::Null, 401);

    let covered = cases
        .iter()
        .map(|case| (case.method.to_owned(), case.route.to_owned()))
        .collect();
    assert_every_route(&covered, "the bad input cases");

    let refused_before = metric(address, "agenda_calendar_requests_refused");
    let mut wrong = Vec::new();
    for case in &cases {
        let (status, answer) = http(
            address,
            case.method,
            &case.path,
            case.token.as_deref(),
            case.body.as_deref(),
        )
        .await;
        let clear = answer["code"].is_string() && answer["message"].is_string();
        if status != case.expect || !clear {
            let body = case.body.as_deref().unwrap_or("");
            let shown: String = body.chars().take(120).collect();
            let path: String = case.path.chars().take(120).collect();
            wrong.push(format!(
                "{} {path} {shown}: expected {}, got {status} {answer}",
                case.method, case.expect
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "unclear answers to bad input:\n{}",
        wrong.join("\n")
    );
    // A JSON body sent as something else, and one too large for the server.
    let unsupported = "POST /v1/users HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}";
    let (status, answer) = raw(address, unsupported.as_bytes()).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (415, Some("bad_request")),
        "{answer}"
    );
    let huge = json!({"title": long(2_000_000), "start": "2026-06-01T10:00:00Z"}).to_string();
    let (status, answer) = http(address, "POST", events, me, Some(&huge)).await;
    assert_eq!(status, 413, "{answer}");
    // A method a route does not take.
    for (method, path) in [("PUT", "/v1/me"), ("POST", event_path.as_str())] {
        let (status, answer) = http(address, method, path, me, Some("{}")).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (405, Some("method_not_allowed")),
            "{method} {path}: {answer}"
        );
    }
    let refused_after = metric(address, "agenda_calendar_requests_refused");
    assert_eq!(refused_after - refused_before, cases.len() as f64 + 4.0);

    // The server is up and answers as before; nothing refused was written.
    assert_eq!(http(address, "GET", "/health", None, None).await.0, 200);
    let (status, me_now) = api.call("GET", "/v1/me", me, Value::Null).await;
    assert_eq!(
        (status, &me_now["time_zone"]),
        (200, &json!("Europe/Madrid"))
    );
    api.login("alice").await;
    let (status, groups) = api.call("GET", "/v1/groups", me, Value::Null).await;
    assert_eq!(
        (status, groups["groups"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, stored) = api.call("GET", &event_path, me, Value::Null).await;
    assert_eq!(
        (status, stored["sequence"].as_u64()),
        (200, Some(0)),
        "{stored}"
    );
    let (status, agenda_now) = api
        .call(
            "GET",
            "/v1/agenda?from=2026-05-01T00:00:00Z&to=2027-05-01T00:00:00Z",
            me,
            Value::Null,
        )
        .await;
    assert_eq!(
        (status, agenda_now["occurrences"].as_array().map(Vec::len)),
        (200, Some(4)),
        "{agenda_now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attendee_removed_from_an_event_loses_it_everywhere() {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let api = Api {
        address: cluster.configs[2].me().http.expect("HTTP is on"),
    };
    let world = World::new(api).await;
    let attendee = world.token(Attendee).expect("a session").to_owned();
    let id = world.event.clone();
    let path = format!("/v1/events/{id}");
    let week = "from=2026-06-01T00:00:00Z&to=2026-06-08T00:00:00Z";
    let (status, _) = world
        .call(Owner, "PATCH", &path, json!({"attendees": []}))
        .await;
    assert_eq!(status, 200);
    // The cancellation reaches the attendee's shard.
    world
        .api
        .until("/v1/invitations?all=true", &attendee, |v| {
            !lists(v, "invitations", "event_id", &id)
        })
        .await;
    for (method, path, body) in [
        ("GET", path.clone(), Value::Null),
        ("PATCH", path.clone(), json!({"title": "Mine"})),
        ("DELETE", path.clone(), Value::Null),
        ("GET", format!("{path}/tally"), Value::Null),
        (
            "POST",
            format!("/v1/invitations/{id}/rsvp"),
            json!({"response": "accepted"}),
        ),
    ] {
        let (status, answer) = world.call(Attendee, method, &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }
    let (_, agenda) = world
        .call(Attendee, "GET", &format!("/v1/agenda?{week}"), Value::Null)
        .await;
    assert!(!lists(&agenda, "occurrences", "event_id", &id), "{agenda}");
    let body = json!({"users": [name(Attendee)], "from": "2026-06-01T00:00:00Z", "to": "2026-06-08T00:00:00Z"});
    let (_, busy) = world.call(Owner, "POST", "/v1/freebusy", body).await;
    assert_eq!(busy["users"][0]["busy"], json!([]), "{busy}");
    // The organizer still has it, with nobody invited.
    let (status, event) = world.owner_view(&path).await;
    assert_eq!((status, &event["invited"]), (200, &json!([])), "{event}");
}
