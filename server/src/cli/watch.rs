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
    let (token, stored, endpoints) = match token {
        // The stored session's servers still serve when a token is given (if there is a
        // usable session file); its token is not used.
        Some(token) => (token, None, options.endpoints_without_session()?),
        None => {
            let stored = credentials::require(&options.credentials_path()?)?;
            let endpoints = options.endpoints(Some(&stored))?;
            (stored.token.clone(), Some(stored), endpoints)
        }
    };
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
        note(&format!("watching {channel}"));
    }
    let mut watched = channels;
    let signal = super::serve::wait_for_signal();
    tokio::pin!(signal);
    loop {
        let event = tokio::select! {
            biased;
            () = &mut signal => return Ok(()),
            event = client.next_event() => event,
        };
        let printed = match event {
            Some(Event::Change(change)) => print_change(&change, options.json),
            Some(Event::Resync { channel, at }) => {
                if options.json {
                    output::try_json(&json!({"op": "resync", "channel": channel, "at": at}))
                } else {
                    output::try_line(&output::escape_controls(&format!(
                        "{channel}: changes were missed; refetch (resync)"
                    )))
                }
            }
            Some(Event::Connected { server }) => {
                note(&format!("connected to {server}"));
                Ok(())
            }
            Some(Event::Disconnected { server, reason }) => {
                note(&format!(
                    "disconnected from {server}: {reason}; reconnecting"
                ));
                Ok(())
            }
            Some(Event::Error { code, message }) => {
                refused(&client, &mut watched, code, &message)?;
                Ok(())
            }
            None => return Ok(()),
        };
        match printed {
            Ok(()) => {}
            // The reader went away (`watch | head -1`): the end, as for other Unix tools.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(error) => {
                return Err(CliError::other(
                    "stdout",
                    format!("writing the changes: {error}"),
                ));
            }
        }
    }
}

/// A line about the connection on stderr, control characters escaped.
fn note(text: &str) {
    eprintln!("{}", output::escape_controls(text));
}

/// An error the gateway reported outside a request: a refused token ends the watch (the
/// client would retry it every few seconds for ever); a refused subscription (on a
/// reconnection: `forbidden` after the user left a group, say) drops that channel, said in
/// one line, and ends the watch when no channel is left.
fn refused(
    client: &GatewayClient,
    watched: &mut Vec<String>,
    code: String,
    message: &str,
) -> Result<(), CliError> {
    if matches!(code.as_str(), "unauthorized" | "unauthenticated") {
        return Err(CliError::new(Exit::Unauthenticated, code, message));
    }
    // The client forgets a refused channel's positions as it drops it: those are the
    // channels gone.
    let (kept, dropped): (Vec<String>, Vec<String>) = watched
        .drain(..)
        .partition(|channel| client.positions(channel).is_some());
    *watched = kept;
    let exit = match code.as_str() {
        "forbidden" => Exit::NotFound,
        "unknown_channel" => Exit::Usage,
        _ => Exit::Other,
    };
    let what = if dropped.is_empty() {
        message.to_owned()
    } else {
        format!("{}: {message}", dropped.join(", "))
    };
    if watched.is_empty() {
        return Err(CliError::new(
            exit,
            code,
            format!("{what}; no channel is left to watch"),
        ));
    }
    let line = if dropped.is_empty() {
        what
    } else {
        format!("{what}; no longer watched")
    };
    note(&format!("error: {code}: {line}"));
    Ok(())
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

/// Prints a change; a failed write (the reader went away) is the caller's to handle.
fn print_change(change: &Change, json: bool) -> std::io::Result<()> {
    let position = change.position;
    if json {
        return output::try_json(&json!({
            "channel": change.channel,
            "position": {"shard": position.shard, "index": position.index},
            "key": change.key,
            "value": change.value,
        }));
    }
    output::try_line(&format!(
        "{} {}:{} {}",
        output::escape_controls(&change.channel),
        position.shard,
        position.index,
        describe(&change.key, change.value.as_deref())
    ))
}

/// A change in words: the agenda's records by what they are (their keys say which:
/// agenda/src/keys.rs), anything else as `key = value`. Control characters (a newline or an
/// escape sequence in a title) are escaped, so that no text can forge a line or drive the
/// terminal.
fn describe(key: &str, value: Option<&str>) -> String {
    output::escape_controls(&describe_raw(key, value))
}

fn describe_raw(key: &str, value: Option<&str>) -> String {
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
        let forged = r#"{"title":"Lunch\nuser:alice 1:99 event x \"Fake\"\u001b[2J","schedule":{"start":"s"},"sequence":0}"#;
        assert_eq!(
            describe("ev/am/alice/e/alice.02", Some(forged)),
            "event alice.02 \"Lunch\\nuser:alice 1:99 event x \"Fake\"\\u{1b}[2J\" at s (sequence 0)"
        );
        assert_eq!(describe("us/a\rb", Some("x\ty")), "us/a\\rb = x\\ty");
        assert_eq!(describe("us/alice", None), "us/alice = (deleted)");
        assert_eq!(
            describe("ev/am/alice/e/alice.01", Some("not json")),
            "ev/am/alice/e/alice.01 = not json"
        );
    }
}
