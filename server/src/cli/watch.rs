//! `watch`: the changes of channels, live, over the WebSocket gateway (`gateway-client`, which
//! reconnects to the next server when one goes away and resumes every subscription from the
//! last position it delivered, so nothing is missed or printed twice). One line per change on
//! stdout (`--json`: one JSON object per line); connections and disconnections on stderr.

use super::ClientOptions;
use super::client::{Call, Endpoint, Http};
use super::credentials;
use super::error::{CliError, Exit};
use super::output::{self, field};
use gateway_client::{Change, Event, GatewayClient, GatewayConfig, GatewayError};
use serde_json::{Value, json};
use std::time::Duration;

pub(super) async fn watch(
    options: &ClientOptions,
    token: Option<String>,
    channels: Vec<String>,
) -> Result<(), CliError> {
    let (token, stored) = match token {
        Some(token) => (token, None),
        None => {
            let stored = credentials::require(&options.credentials_path()?)?;
            (stored.token.clone(), Some(stored))
        }
    };
    let endpoints = options.endpoints(stored.as_ref())?;
    if let Some(stored) = &stored {
        // A session that ended would be refused by every server, again and again: say so
        // now, in one line, instead of retrying for ever.
        Http::new(endpoints.clone())
            .send(&Call::get("/v1/me").token(&stored.token))
            .await?;
    }
    let channels = match (&stored, channels.is_empty()) {
        (_, false) => channels,
        (Some(stored), true) => vec![format!("user:{}", stored.user)],
        (None, true) => {
            return Err(CliError::usage(
                "with --token, name the channels to watch (kv:PREFIX, shard:ID, user:NAME, ...)",
            ));
        }
    };
    let servers = endpoints.iter().map(Endpoint::ws_url).collect();
    let mut client = GatewayClient::connect(GatewayConfig::new(servers, token));
    for channel in &channels {
        if let Err(error) = client.subscribe(channel, None).await {
            return Err(subscribe_error(&mut client, channel, error).await);
        }
        eprintln!("watching {channel}");
    }
    let signal = super::serve::wait_for_signal();
    tokio::pin!(signal);
    loop {
        let event = tokio::select! {
            biased;
            () = &mut signal => return Ok(()),
            event = client.next_event() => event,
        };
        match event {
            Some(Event::Change(change)) => print_change(&change, options.json),
            Some(Event::Resync { channel, at }) => {
                if options.json {
                    output::json(&json!({"op": "resync", "channel": channel, "at": at}));
                } else {
                    output::line(&format!("{channel}: changes were missed; refetch (resync)"));
                }
            }
            Some(Event::Connected { server }) => eprintln!("connected to {server}"),
            Some(Event::Disconnected { server, reason }) => {
                eprintln!("disconnected from {server}: {reason}; reconnecting");
            }
            Some(Event::Error { code, message }) => eprintln!("error {code}: {message}"),
            None => return Ok(()),
        }
    }
}

/// Why a subscription failed, with the exit code its cause deserves. A refused token shows as
/// an error event (the client keeps retrying it), so those that arrived are looked at first.
async fn subscribe_error(
    client: &mut GatewayClient,
    channel: &str,
    error: GatewayError,
) -> CliError {
    let pending = Duration::from_millis(10);
    while let Ok(Some(event)) = tokio::time::timeout(pending, client.next_event()).await {
        if let Event::Error { code, message } = event {
            return CliError::new(Exit::Unauthenticated, code, message);
        }
    }
    match error {
        GatewayError::Server { code, message } => {
            let exit = match code.as_str() {
                "forbidden" => Exit::NotFound,
                "unauthorized" | "unauthenticated" => Exit::Unauthenticated,
                "unknown_channel" => Exit::Usage,
                _ => Exit::Other,
            };
            CliError::new(exit, code, format!("{channel}: {message}"))
        }
        GatewayError::Timeout | GatewayError::Disconnected => CliError::other(
            "unavailable",
            format!("no server accepted the subscription to {channel} in time"),
        ),
        other => CliError::other("gateway", format!("{channel}: {other}")),
    }
}

fn print_change(change: &Change, json: bool) {
    let position = change.position;
    if json {
        output::json(&json!({
            "channel": change.channel,
            "position": {"shard": position.shard, "index": position.index},
            "key": change.key,
            "value": change.value,
        }));
        return;
    }
    output::line(&format!(
        "{} {}:{} {}",
        change.channel,
        position.shard,
        position.index,
        describe(&change.key, change.value.as_deref())
    ));
}

/// A change in words: the agenda's records by what they are (their keys say which:
/// agenda/src/keys.rs), anything else as `key = value`.
fn describe(key: &str, value: Option<&str>) -> String {
    let raw = || format!("{key} = {}", value.unwrap_or("(deleted)"));
    let record: Option<Value> = match value.map(serde_json::from_str) {
        None => None,
        Some(Ok(record)) => Some(record),
        Some(Err(_)) => return raw(),
    };
    let parts: Vec<&str> = key.split('/').collect();
    let described = match (parts.as_slice(), &record) {
        (["ev", _, _, "e", id], Some(event)) => Some(format!(
            "event {id} \"{}\" at {} (sequence {})",
            field(event, "title"),
            field(&event["schedule"], "start"),
            field(event, "sequence")
        )),
        (["ev", _, _, "e", id], None) => Some(format!("event {id} deleted")),
        (["ev", _, _, "i", id], Some(invitation)) => {
            let state = if invitation["cancelled"] == true {
                "cancelled".to_owned()
            } else {
                format!("your answer: {}", field(invitation, "response"))
            };
            Some(format!(
                "invitation {id} \"{}\" from {} at {} ({state})",
                field(&invitation["content"], "title"),
                field(invitation, "organizer"),
                field(&invitation["content"]["schedule"], "start"),
            ))
        }
        (["ev", _, _, "r", id, attendee], Some(reply)) => Some(format!(
            "{attendee} answered {} to {id}",
            field(reply, "response")
        )),
        (["ev", _, "!a", _, id], Some(alerts)) => {
            let fired: Vec<String> = alerts["fired"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|fired| {
                    format!(
                        "reminder: \"{}\" at {} ({} minutes before)",
                        field(fired, "title"),
                        field(fired, "occurrence"),
                        field(fired, "minutes_before")
                    )
                })
                .collect();
            if fired.is_empty() {
                Some(format!("alerts on {id} set"))
            } else {
                Some(fired.join("; "))
            }
        }
        (["gr", "g", group, "info"], Some(info)) => Some(format!(
            "group {group} \"{}\" (revision {})",
            field(info, "name"),
            field(info, "revision")
        )),
        (["gr", "g", group, "member", user], membership) => Some(match membership {
            Some(membership) => format!("{user} is in {group} as {}", field(membership, "role")),
            None => format!("{user} left {group}"),
        }),
        _ => None,
    };
    described.unwrap_or_else(raw)
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn agenda_records_are_told_by_their_keys_and_other_keys_as_they_are() {
        let event = r#"{"id":"alice.01","title":"Planning","schedule":{"start":"2026-06-01T10:00"},"sequence":2}"#;
        assert_eq!(
            describe("ev/am/alice/e/alice.01", Some(event)),
            "event alice.01 \"Planning\" at 2026-06-01T10:00 (sequence 2)"
        );
        assert_eq!(
            describe("ev/am/alice/e/alice.01", None),
            "event alice.01 deleted"
        );
        let invitation = r#"{"organizer":"alice","cancelled":false,"response":"needs-action",
            "content":{"title":"Planning","schedule":{"start":"2026-06-01T10:00"}}}"#;
        assert_eq!(
            describe("ev/am/bob/i/alice.01", Some(invitation)),
            "invitation alice.01 \"Planning\" from alice at 2026-06-01T10:00 (your answer: needs-action)"
        );
        assert_eq!(
            describe(
                "ev/am/alice/r/alice.01/bob",
                Some(r#"{"response":"accepted"}"#)
            ),
            "bob answered accepted to alice.01"
        );
        assert_eq!(describe("us/alice", Some("Alice")), "us/alice = Alice");
        assert_eq!(describe("us/alice", None), "us/alice = (deleted)");
        assert_eq!(
            describe("ev/am/alice/e/alice.01", Some("not json")),
            "ev/am/alice/e/alice.01 = not json"
        );
    }
}
