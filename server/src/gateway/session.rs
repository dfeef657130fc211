//! One client connection's protocol, whatever carries its text messages (the WebSocket adapter
//! outside the simulator; a test or the simulator directly): authentication, subscriptions and
//! requests in, frames out through the connection's [`Outbox`]. Bad input is answered with an
//! error frame and counted; nothing a client sends can panic the server.
//!
//! The protocol is described in `docs/websocket.md`.

use super::frames::{self, ErrorContext, Positions};
use super::{
    Channel, ChannelError, CloseReason, Gateway, Outbox, Outgoing, Pushed, SubscribeError,
    SubscriberId,
};
use crate::agenda::ServerAgenda;
use crate::api::json::{JsonCompare, JsonOp, JsonTxn, op_results, text};
use crate::auth::{Permissions, prefix_end};
use crate::metrics::Metrics;
use crate::service::{Service, compare_and_swap};
use bytes::Bytes;
use client::protocol::VALUE_BYTES_MAX;
use client::{Consistency, Request, Response};
use kv::{OpResult, Versioned, Write, WriteResult};
use serde::Deserialize;
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The largest text message a client may send, in bytes: a value at its limit plus room for
/// the JSON around it. Larger messages are answered with a `too_large` error.
pub const MESSAGE_BYTES_MAX: usize = VALUE_BYTES_MAX + 64 * 1024;

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    gateway: Gateway,
    service: Service,
    /// The agenda, for its sessions and its channels (none: operator tokens and `kv:`/`shard:`
    /// channels only).
    agenda: Option<Arc<ServerAgenda>>,
    /// The agenda's API for an agenda session's requests (none: this connection takes none).
    agenda_calls: Option<AgendaCalls>,
    id: SubscriberId,
    outbox: Outbox,
    permissions: Option<Arc<Permissions>>,
    /// What the tasks this session spawns (an agenda session's check, an agenda channel's
    /// authorization) share with it.
    shared: Arc<Mutex<Shared>>,
    requests_in_flight: Arc<AtomicUsize>,
    /// Cancelled when the connection ends: its requests still running stop (their answers
    /// would go nowhere, and the next connection gets its own limit).
    requests_cancel: CancellationToken,
}

/// A session's state that its spawned tasks change too.
#[derive(Debug, Default)]
struct Shared {
    /// The agenda user an agenda session token named, once checked.
    user: Option<String>,
    /// That session token: the connection's agenda requests carry it, as HTTP's carry theirs.
    token: Option<SessionToken>,
    /// An agenda session token is being checked.
    authenticating: bool,
    /// Wrong tokens sent so far; the connection closes at [`AUTH_FAILURES_MAX`].
    auth_failures: u32,
    /// The channels subscribed to.
    channels: Vec<Channel>,
    /// The connection is gone: a late authorization subscribes nothing.
    closed: bool,
}

/// Wrong tokens a connection may send before it is closed (a token is not guessed one
/// connection at a time without it being seen in the counters).
const AUTH_FAILURES_MAX: u32 = 3;

/// A refusal: the error frame's code and message.
struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

#[derive(Deserialize)]
struct Auth {
    token: String,
}

#[derive(Deserialize)]
struct Subscribe {
    channel: String,
    from: Option<Positions>,
}

#[derive(Deserialize)]
struct Unsubscribe {
    channel: String,
}

/// A request over the socket, by `method`: the key-value operations of the HTTP API.
#[derive(Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
enum Call {
    Get {
        key: String,
        #[serde(default)]
        stale: bool,
    },
    List {
        #[serde(default)]
        prefix: String,
        limit: Option<u32>,
        #[serde(default)]
        stale: bool,
    },
    Put {
        key: String,
        value: String,
        request_id: Option<String>,
    },
    Delete {
        key: String,
        request_id: Option<String>,
    },
    Cas {
        key: String,
        expected: Option<String>,
        value: String,
        request_id: Option<String>,
    },
    Txn {
        #[serde(default)]
        compare: Vec<JsonCompare>,
        #[serde(default)]
        success: Vec<JsonOp>,
        #[serde(default)]
        failure: Vec<JsonOp>,
        request_id: Option<String>,
    },
}

impl Session {
    /// A new connection's session; its frames go to [`Session::outbox`].
    pub fn new(gateway: Gateway, service: Service) -> Session {
        let outbox = Outbox::new(gateway.limits().queue_frames);
        let metrics = gateway.metrics();
        Metrics::add(&metrics.counters.ws_connections, 1);
        metrics
            .gauges
            .ws_connections_open
            .fetch_add(1, Ordering::Relaxed);
        Session {
            id: gateway.new_subscriber(),
            gateway,
            service,
            agenda: None,
            agenda_calls: None,
            outbox,
            permissions: None,
            shared: Arc::default(),
            requests_in_flight: Arc::new(AtomicUsize::new(0)),
            requests_cancel: CancellationToken::new(),
        }
    }

    /// A session that also takes the agenda's session tokens and its channels.
    pub fn with_agenda(mut self, agenda: Arc<ServerAgenda>) -> Session {
        self.agenda = Some(agenda);
        self
    }

    /// A session whose agenda sessions may also send the agenda's requests, answered by
    /// `calls` (the server's HTTP handlers).
    pub fn with_agenda_calls(mut self, calls: AgendaCalls) -> Session {
        self.agenda_calls = Some(calls);
        self
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("session lock")
    }

    /// The gateway this session subscribes through.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The queue of frames to write to the client.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The client sent a text message.
    pub fn on_text(&mut self, text: &str) {
        if text.len() > MESSAGE_BYTES_MAX {
            self.on_oversized(text.len());
            return;
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(error) => {
                let counters = &self.gateway.metrics().counters;
                Metrics::add(&counters.ws_malformed, 1);
                self.send_error(
                    refuse("malformed", format!("not JSON: {error}")),
                    ErrorContext::default(),
                );
                return;
            }
        };
        let op = value.get("op").and_then(Value::as_str).unwrap_or_default();
        let result = match op {
            "auth" => self.auth(value),
            "subscribe" => self.subscribe(value),
            "unsubscribe" => self.unsubscribe(value),
            "request" => self.request(value),
            "ping" => {
                self.push(frames::pong());
                Ok(())
            }
            _ => Err((
                refuse("unknown_op", format!("unknown op {op:?}")),
                ErrorContext::default(),
            )),
        };
        if let Err((refusal, context)) = result {
            self.count_refusal(refusal.code);
            self.send_error(refusal, context);
        }
    }

    /// The client sent a message larger than [`MESSAGE_BYTES_MAX`] (the adapter may cut it
    /// off before it is read whole).
    pub fn on_oversized(&mut self, bytes: usize) {
        Metrics::add(&self.gateway.metrics().counters.ws_oversized, 1);
        let message = format!("a message has at most {MESSAGE_BYTES_MAX} bytes, not {bytes}");
        self.send_error(refuse("too_large", message), ErrorContext::default());
    }

    /// The client sent a binary message: the protocol is JSON text.
    pub fn on_binary(&mut self) {
        Metrics::add(&self.gateway.metrics().counters.ws_malformed, 1);
        let refusal = refuse("malformed", "messages are JSON text frames, not binary");
        self.send_error(refusal, ErrorContext::default());
    }

    fn count_refusal(&self, code: &str) {
        count_refusal(self.gateway.metrics(), code);
    }

    fn push(&self, frame: Bytes) {
        push_frame(&self.outbox, self.gateway.metrics(), frame);
    }

    fn send_error(&self, refusal: Refusal, context: ErrorContext) {
        self.push(frames::error(refusal.code, &refusal.message, &context));
    }

    fn permissions(&mut self) -> Result<Arc<Permissions>, Refusal> {
        let user = self.shared().user.clone();
        if self.permissions.is_none()
            && let Some(user) = user
        {
            // An agenda user reads no key directly: only the agenda's channels it is allowed.
            let none = Permissions::prefixes([], &format!("agenda user {user}"));
            self.permissions = Some(Arc::new(none));
        }
        self.permissions.clone().ok_or_else(|| {
            refuse(
                "unauthenticated",
                "send {\"op\":\"auth\",\"token\":...} first (and wait for `authenticated`)",
            )
        })
    }

    /// One more wrong token: the connection closes at the limit.
    fn auth_failed(shared: &Mutex<Shared>, outbox: &Outbox, metrics: &Metrics) {
        let mut shared = shared.lock().expect("session lock");
        shared.authenticating = false;
        shared.auth_failures += 1;
        if shared.auth_failures >= AUTH_FAILURES_MAX {
            Metrics::add(&metrics.counters.ws_unauthenticated_closed, 1);
            outbox.close(CloseReason::Unauthenticated);
        }
    }
}

fn count_refusal(metrics: &Metrics, code: &str) {
    {
        let counters = &metrics.counters;
        let counter = match code {
            "unknown_channel" => &counters.ws_unknown_channels,
            "forbidden" => &counters.ws_forbidden,
            "unauthenticated" => &counters.ws_unauthenticated,
            "too_large" => &counters.ws_oversized,
            "too_many_requests" => &counters.ws_requests_refused,
            "unauthorized" => return, // counted by the service
            "unavailable" => return,  // not the client's fault
            _ => &counters.ws_malformed,
        };
        Metrics::add(counter, 1);
    }
}

impl Session {
    fn auth(&mut self, value: Value) -> Result<(), (Refusal, ErrorContext)> {
        let no_context = |refusal| (refusal, ErrorContext::default());
        let Auth { token } = parse(value).map_err(no_context)?;
        {
            let shared = self.shared();
            if self.permissions.is_some() || shared.user.is_some() || shared.authenticating {
                return Err(no_context(refuse("bad_request", "already authenticated")));
            }
        }
        if let Some(permissions) = self.service.authenticate(&token) {
            self.permissions = Some(Arc::new(permissions));
            self.push(frames::authenticated(self.gateway.server_id()));
            return Ok(());
        }
        let metrics = self.gateway.metrics().clone();
        let Some(agenda) = self.agenda.clone() else {
            Self::auth_failed(&self.shared, &self.outbox, &metrics);
            return Err(no_context(refuse("unauthorized", "unknown token")));
        };
        // Perhaps an agenda session: the agenda reads it from the users shard.
        self.shared().authenticating = true;
        let shared = self.shared.clone();
        let outbox = self.outbox.clone();
        let server_id = self.gateway.server_id();
        tokio::spawn(async move {
            match agenda.authenticate(&token).await {
                Ok(user) => {
                    let frame = frames::authenticated_user(server_id, &user);
                    {
                        let mut shared = shared.lock().expect("session lock");
                        shared.authenticating = false;
                        shared.user = Some(user);
                        shared.token = Some(SessionToken(token));
                    }
                    push_frame(&outbox, &metrics, frame);
                }
                Err(error) => {
                    let refusal = match error {
                        agenda::AgendaError::Unavailable(_) => {
                            shared.lock().expect("session lock").authenticating = false;
                            refuse("unavailable", error.to_string())
                        }
                        _ => {
                            Self::auth_failed(&shared, &outbox, &metrics);
                            refuse("unauthorized", "unknown token or session")
                        }
                    };
                    count_refusal(&metrics, refusal.code);
                    let frame =
                        frames::error(refusal.code, &refusal.message, &ErrorContext::default());
                    push_frame(&outbox, &metrics, frame);
                }
            }
        });
        Ok(())
    }

    /// Whether the client has authenticated.
    pub fn is_authenticated(&self) -> bool {
        let shared = self.shared();
        // A session being checked is given its answer's time before the first ping closes it.
        self.permissions.is_some() || shared.user.is_some() || shared.authenticating
    }

    fn subscribe(&mut self, value: Value) -> Result<(), (Refusal, ErrorContext)> {
        let channel_name = value
            .get("channel")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let context = ErrorContext {
            id: None,
            channel: channel_name,
        };
        let with_context = |refusal| (refusal, context.clone());
        let permissions = self.permissions().map_err(with_context)?;
        let Subscribe {
            channel: name,
            from,
        } = parse(value).map_err(with_context)?;
        let map = self.gateway.shard_map();
        let channel = Channel::parse(&name, map).map_err(|error| {
            let code = match error {
                ChannelError::TooLong => "too_large",
                _ => "unknown_channel",
            };
            with_context(refuse(code, error.to_string()))
        })?;
        let subscription = Subscription {
            gateway: self.gateway.clone(),
            id: self.id,
            outbox: self.outbox.clone(),
            shared: self.shared.clone(),
            channel,
            name,
            from,
        };
        if subscription.channel.allowed(&permissions, map) {
            return subscription.register().map_err(with_context);
        }
        let user = self.shared().user.clone();
        let (Some(user), Some(agenda)) = (user, self.agenda.clone()) else {
            let message = format!("this token may not read {}", subscription.name);
            return Err(with_context(refuse("forbidden", message)));
        };
        if !subscription.channel.is_agenda() {
            let message = format!("an agenda session may not read {}", subscription.name);
            return Err(with_context(refuse("forbidden", message)));
        }
        // Whether this user may listen is the agenda's to say (a group's members, an event's
        // organizer and attendees): asked in a task, bounded like the requests in flight.
        let max = self.gateway.limits().requests_per_connection_max;
        if self.requests_in_flight.load(Ordering::Relaxed) >= max {
            let message = format!("at most {max} requests in flight per connection");
            return Err(with_context(refuse("too_many_requests", message)));
        }
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = self.requests_in_flight.clone();
        let metrics = self.gateway.metrics().clone();
        tokio::spawn(async move {
            let outcome = match subscription.may_listen(&agenda, &user).await {
                Ok(()) => subscription.register(),
                Err(refusal) => Err(refusal),
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Err(refusal) = outcome {
                count_refusal(&metrics, refusal.code);
                let frame = frames::error(refusal.code, &refusal.message, &context);
                push_frame(&subscription.outbox, &metrics, frame);
            }
        });
        Ok(())
    }

    fn unsubscribe(&mut self, value: Value) -> Result<(), (Refusal, ErrorContext)> {
        let no_context = |refusal| (refusal, ErrorContext::default());
        self.permissions().map_err(no_context)?;
        let Unsubscribe { channel: name } = parse(value).map_err(no_context)?;
        let context = ErrorContext {
            id: None,
            channel: Some(name.clone()),
        };
        let mut shared = self.shared.lock().expect("session lock");
        let position = Channel::parse(&name, self.gateway.shard_map())
            .ok()
            .and_then(|channel| shared.channels.iter().position(|held| *held == channel));
        let Some(position) = position else {
            return Err((
                refuse("not_subscribed", format!("not subscribed to {name}")),
                context,
            ));
        };
        let channel = shared.channels.swap_remove(position);
        self.gateway.unsubscribe(self.id, &channel);
        drop(shared);
        self.push(frames::unsubscribed(&name));
        Ok(())
    }

    fn request(&mut self, value: Value) -> Result<(), (Refusal, ErrorContext)> {
        let Some(id) = value.get("id").and_then(Value::as_u64) else {
            let refusal = refuse("malformed", "a request needs a numeric `id`");
            return Err((refusal, ErrorContext::default()));
        };
        let context = ErrorContext {
            id: Some(id),
            channel: None,
        };
        let with_context = |refusal| (refusal, context.clone());
        let permissions = self.permissions().map_err(with_context)?;
        let token = self.shared().token.clone();
        if let Some(SessionToken(token)) = token {
            return self.agenda_request(id, token, &value, context);
        }
        if value.get("method").and_then(Value::as_str) == Some("agenda") {
            let refusal = refuse("forbidden", "agenda requests need an agenda session");
            return Err(with_context(refusal));
        }
        let call: Call = parse(value).map_err(with_context)?;
        let service = self.service.clone();
        let metrics = self.gateway.metrics().clone();
        let reply_context = context.clone();
        self.spawn_request(async move {
            match run_call(&service, &permissions, call).await {
                Ok(fields) => frames::reply(id, fields),
                Err(refusal) => {
                    if refusal.code == "forbidden" {
                        Metrics::add(&metrics.counters.ws_forbidden, 1);
                    }
                    frames::error(refusal.code, &refusal.message, &reply_context)
                }
            }
        })
        .map_err(with_context)
    }

    /// Runs a request within the connection's limit of requests in flight, until its answer
    /// (queued to the client) or the connection's end.
    fn spawn_request(
        &self,
        answer: impl Future<Output = Bytes> + Send + 'static,
    ) -> Result<(), Refusal> {
        let max = self.gateway.limits().requests_per_connection_max;
        if self.requests_in_flight.load(Ordering::Relaxed) >= max {
            let message = format!("at most {max} requests in flight per connection");
            return Err(refuse("too_many_requests", message));
        }
        Metrics::add(&self.gateway.metrics().counters.ws_requests, 1);
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        // Counted out when the task ends, however it ends (answered, stopped, or a panic).
        let in_flight = InFlight(self.requests_in_flight.clone());
        let outbox = self.outbox.clone();
        let metrics = self.gateway.metrics().clone();
        let cancel = self.requests_cancel.clone();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let frame = tokio::select! {
                biased;
                () = cancel.cancelled() => None,
                frame = answer => Some(frame),
            };
            if let Some(frame) = frame {
                push_frame(&outbox, &metrics, frame);
            }
        });
        Ok(())
    }
}

impl Session {
    /// An agenda session's request: `{"op":"request","id":N,"method":"agenda","call":"POST
    /// /v1/events","body":{...}}`, one call of the agenda's HTTP API as that session, answered
    /// `{"op":"reply","id":N,"status":S,"body":B}`, or an error frame with the answer's code,
    /// message and status (docs/websocket.md, "Agenda requests").
    fn agenda_request(
        &mut self,
        id: u64,
        token: String,
        value: &Value,
        context: ErrorContext,
    ) -> Result<(), (Refusal, ErrorContext)> {
        let with_context = |refusal| (refusal, context.clone());
        if value.get("method").and_then(Value::as_str) != Some("agenda") {
            let refusal = refuse(
                "forbidden",
                "an agenda session sends `agenda` requests (calls of the agenda's API), not \
                 key-value ones",
            );
            return Err(with_context(refusal));
        }
        let Some(calls) = self.agenda_calls.clone() else {
            let refusal = refuse("forbidden", "this connection takes no agenda requests");
            return Err(with_context(refusal));
        };
        let AgendaRequest {
            call,
            body,
            content_type,
            idempotency_key,
        } = parse(value.clone()).map_err(with_context)?;
        let (method, path) = parse_agenda_call(&call).ok_or_else(|| {
            with_context(refuse(
                "malformed",
                "an agenda request's `call` is a method and a path of the agenda's API, as \
                 \"GET /v1/agenda?from=...&to=...\"",
            ))
        })?;
        let call = AgendaCall {
            method,
            path,
            body: body.filter(|body| !body.is_null()),
            content_type,
            idempotency_key,
            token,
        };
        let metrics = self.gateway.metrics().clone();
        self.spawn_request(async move {
            let answer = calls.call(call).await;
            if answer.status == 503 && answer.overloaded {
                Metrics::add(&metrics.counters.ws_requests_refused, 1);
            }
            let frame = frames::agenda_answer(id, answer.status, &answer.body);
            if frame.len() > AGENDA_FRAME_BYTES_MAX {
                // A text answer's escapes can make its frame several times the answer.
                let message = format!(
                    "the answer takes more than {AGENDA_FRAME_BYTES_MAX} bytes as a frame, the most \
                     a connection carries: ask for less, or over HTTP"
                );
                let body = refusal_body("answer_too_large", &message);
                return frames::agenda_answer(id, 500, &body);
            }
            match calls.hold(frame) {
                Some(frame) => frame,
                None => {
                    Metrics::add(&metrics.counters.ws_requests_refused, 1);
                    let message = format!(
                        "this server holds {AGENDA_ANSWERS_QUEUED_BYTES_MAX} bytes of agenda \
                         answers not yet written to their connections; try again"
                    );
                    frames::agenda_answer(id, 503, &refusal_body("unavailable", &message))
                }
            }
        })
        .map_err(with_context)
    }
}

/// A request in flight on a connection, counted out when dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An error body as the API writes one.
fn refusal_body(code: &str, message: &str) -> AnswerBody {
    AnswerBody::Json(Bytes::from(
        json!({"code": code, "message": message}).to_string(),
    ))
}

/// The fields of an agenda request.
#[derive(Deserialize)]
struct AgendaRequest {
    call: String,
    body: Option<Value>,
    /// The body's type when it is not JSON (`text/calendar` for an import): `body` is then a
    /// string, sent as it is.
    content_type: Option<String>,
    /// HTTP's `Idempotency-Key`: a creation retried with it happens once.
    idempotency_key: Option<String>,
}

/// `"METHOD /v1/..."` as its method and path (with its query), if it is one: a method the
/// agenda's API takes, and a path under `/v1/` without spaces or control characters.
fn parse_agenda_call(call: &str) -> Option<(String, String)> {
    let (method, path) = call.split_once(' ')?;
    let known = ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method);
    let clean =
        path.starts_with("/v1/") && !path.chars().any(|c| c.is_whitespace() || c.is_control());
    (known && clean && path.len() <= 2048).then(|| (method.to_owned(), path.to_owned()))
}

/// One call of the agenda's HTTP API from a connection.
pub struct AgendaCall {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// The path under `/v1/`, with its query.
    pub path: String,
    /// The body, if any: JSON, or with a `content_type` a string sent as it is.
    pub body: Option<Value>,
    /// The body's type when it is not JSON.
    pub content_type: Option<String>,
    /// HTTP's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The connection's agenda session token, sent as the bearer token.
    pub token: String,
}

impl std::fmt::Debug for AgendaCall {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: a debug print must not leak a live credential into a log.
        formatter
            .debug_struct("AgendaCall")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A session token kept by a connection; its debug print hides it.
#[derive(Clone)]
struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SessionToken(..)")
    }
}

/// The largest answer an agenda request over a connection gets, in bytes: half of the native
/// port's frame limit, so that every door carries it. A larger answer (a long range of a busy
/// calendar) is refused as `answer_too_large`: ask for a shorter range, or over HTTP.
pub const AGENDA_ANSWER_BYTES_MAX: usize = 2 * 1024 * 1024;

/// The largest frame an agenda answer may take (its JSON escapes included): below the native
/// port's 4 MiB frame limit.
pub const AGENDA_FRAME_BYTES_MAX: usize = 3 * 1024 * 1024;

/// The bytes of agenda answers a port holds until the connections' writers have written them:
/// a connection's queue counts frames, not bytes, so large answers to slow readers are bounded
/// here; beyond it an answer is replaced by `unavailable` (503).
pub const AGENDA_ANSWERS_QUEUED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What a call answered.
#[derive(Debug)]
pub struct AgendaAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The answer's body.
    pub body: AnswerBody,
    /// Refused because the server runs as many agenda requests from connections as it may.
    pub overloaded: bool,
}

/// An answer's body as the handlers wrote it: JSON bytes are passed on without being parsed
/// and written again.
#[derive(Debug)]
pub enum AnswerBody {
    /// No body.
    Empty,
    /// A JSON document (checked to be one).
    Json(Bytes),
    /// Any other body (an `.ics` file), as text.
    Text(String),
}

/// The agenda's API as a connection calls it: the server's HTTP handlers (`api::http`), so
/// that a request over a connection is checked and answered exactly as over HTTP. At most
/// [`AGENDA_CALLS_MAX`] run at once (across the connections of a port: each connection's own
/// limit resets with a new connection); more are refused `unavailable`. The simulator's
/// servers have none (no HTTP): their connections take no agenda requests.
#[derive(Clone)]
pub struct AgendaCalls {
    answer: Arc<dyn Fn(AgendaCall) -> AnswerFuture + Send + Sync>,
    running: Arc<Semaphore>,
    /// Bytes of answers queued and not yet written ([`AGENDA_ANSWERS_QUEUED_BYTES_MAX`]).
    queued: Arc<Semaphore>,
}

/// An answer on its way.
type AnswerFuture = Pin<Box<dyn Future<Output = AgendaAnswer> + Send>>;

/// Agenda requests from connections running at once, per server port (HTTP serves at most 512
/// connections, each one request at a time).
pub const AGENDA_CALLS_MAX: usize = 256;

impl AgendaCalls {
    /// Calls made by `answer`.
    pub fn new<F>(answer: impl Fn(AgendaCall) -> F + Send + Sync + 'static) -> AgendaCalls
    where
        F: Future<Output = AgendaAnswer> + Send + 'static,
    {
        AgendaCalls {
            answer: Arc::new(move |call| Box::pin(answer(call))),
            running: Arc::new(Semaphore::new(AGENDA_CALLS_MAX)),
            queued: Arc::new(Semaphore::new(AGENDA_ANSWERS_QUEUED_BYTES_MAX)),
        }
    }

    /// The answer's frame, holding its bytes against [`AGENDA_ANSWERS_QUEUED_BYTES_MAX`] until the
    /// last copy of it is dropped (once written); `None` when the budget is spent.
    pub fn hold(&self, frame: Bytes) -> Option<Bytes> {
        let bytes = u32::try_from(frame.len()).ok()?;
        let permit = self.queued.clone().try_acquire_many_owned(bytes).ok()?;
        Some(Bytes::from_owner(Held {
            frame,
            _permit: permit,
        }))
    }

    /// Makes one call, unless [`AGENDA_CALLS_MAX`] are running.
    pub async fn call(&self, call: AgendaCall) -> AgendaAnswer {
        let Ok(_running) = self.running.clone().try_acquire_owned() else {
            let body = json!({
                "code": "unavailable",
                "message": format!(
                    "this server runs {AGENDA_CALLS_MAX} agenda requests from connections at \
                     once; try again"
                ),
            });
            return AgendaAnswer {
                status: 503,
                body: AnswerBody::Json(Bytes::from(body.to_string())),
                overloaded: true,
            };
        };
        (self.answer)(call).await
    }
}

/// A frame and the budget it holds.
struct Held {
    frame: Bytes,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl std::fmt::Debug for AgendaCalls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AgendaCalls")
    }
}

/// A subscription on its way: checked, then registered with the gateway.
struct Subscription {
    gateway: Gateway,
    id: SubscriberId,
    outbox: Outbox,
    shared: Arc<Mutex<Shared>>,
    channel: Channel,
    name: String,
    from: Option<Positions>,
}

impl Subscription {
    /// Whether agenda user `user` may listen: a user to their own channel, a group's members
    /// to its channel, an event's organizer and attendees to its channel. Anything else is
    /// `forbidden`, whether or not the group or event exists.
    async fn may_listen(&self, agenda: &ServerAgenda, user: &str) -> Result<(), Refusal> {
        let checked = match &self.channel {
            Channel::User(name) if name == user => Ok(()),
            Channel::Group(group) => agenda.group(user, group).await.map(drop),
            Channel::Event(event) => agenda.event(user, event).await.map(drop),
            _ => Err(agenda::AgendaError::Forbidden(String::new())),
        };
        match checked {
            Ok(()) => Ok(()),
            Err(error @ agenda::AgendaError::Unavailable(_)) => {
                Err(refuse("unavailable", error.to_string()))
            }
            Err(_) => Err(refuse(
                "forbidden",
                format!("{user} may not listen to {}", self.name),
            )),
        }
    }

    /// Registers the subscription, unless the connection is gone or holds too many.
    fn register(&self) -> Result<(), Refusal> {
        let mut shared = self.shared.lock().expect("session lock");
        if shared.closed {
            return Ok(());
        }
        let max = self.gateway.limits().subscriptions_per_connection_max;
        if shared.channels.len() >= max {
            let message = format!("at most {max} subscriptions per connection");
            return Err(refuse("too_many_subscriptions", message));
        }
        let subscribed = self.gateway.subscribe(
            self.id,
            &self.outbox,
            &self.channel,
            &self.name,
            self.from.as_ref(),
        );
        match subscribed {
            Ok(()) => {
                shared.channels.push(self.channel.clone());
                Ok(())
            }
            Err(error @ SubscribeError::AlreadySubscribed(_)) => {
                Err(refuse("already_subscribed", error.to_string()))
            }
            Err(error @ SubscribeError::NotHosted { .. }) => {
                Err(refuse("not_hosted", error.to_string()))
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.requests_cancel.cancel();
        let mut shared = self.shared.lock().expect("session lock");
        shared.closed = true;
        self.gateway.remove(self.id, &shared.channels);
        drop(shared);
        let gauges = &self.gateway.metrics().gauges;
        gauges.ws_connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Queues one frame of this connection (not a notification); counts a slow consumer if it
/// overflows the queue.
fn push_frame(outbox: &Outbox, metrics: &Metrics, frame: Bytes) {
    if outbox.push(Outgoing::Frame(frame)) == Pushed::Overflowed {
        Metrics::add(&metrics.counters.ws_slow_consumers, 1);
    }
}

/// The message's fields as `T`, or a `malformed` refusal saying what is wrong.
fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Refusal> {
    serde_json::from_value(value).map_err(|error| refuse("malformed", error.to_string()))
}

fn versioned_json(versioned: &Versioned) -> Value {
    json!({
        "value": text(&versioned.value),
        "create_index": versioned.create_index,
        "mod_index": versioned.mod_index,
    })
}

fn position_json(shard: u64, index: u64) -> Value {
    json!({"shard": shard, "index": index})
}

/// Runs one call through the service with the caller's permissions; the reply's fields.
async fn run_call(
    service: &Service,
    permissions: &Permissions,
    call: Call,
) -> Result<Value, Refusal> {
    match call {
        Call::Get { key, stale } => {
            let request = Request::Get {
                key: checked_key(&key)?,
                consistency: consistency(stale),
            };
            match execute(service, permissions, request).await? {
                Response::Value(Some(versioned)) => Ok(versioned_json(&versioned)),
                Response::Value(None) => Ok(json!({"value": null})),
                other => Err(unexpected(&other)),
            }
        }
        Call::List {
            prefix,
            limit,
            stale,
        } => {
            if prefix.len() > client::protocol::KEY_BYTES_MAX {
                return Err(refuse(
                    "bad_request",
                    "the prefix is longer than a key may be",
                ));
            }
            let prefix = Bytes::from(prefix);
            let request = Request::Scan {
                end: prefix_end(&prefix),
                start: prefix,
                limit: limit.unwrap_or(1000),
                consistency: consistency(stale),
            };
            match execute(service, permissions, request).await? {
                Response::Scan { entries, more } => {
                    let entries: Vec<Value> = entries
                        .iter()
                        .map(|(key, versioned)| {
                            let mut entry = versioned_json(versioned);
                            entry["key"] = json!(text(key));
                            entry
                        })
                        .collect();
                    Ok(json!({"entries": entries, "more": more}))
                }
                other => Err(unexpected(&other)),
            }
        }
        Call::Put {
            key,
            value,
            request_id,
        } => {
            let write = Write::Put {
                key: checked_key(&key)?,
                value: Bytes::from(value),
            };
            let (shard, index, _) = write_through(service, permissions, write, request_id).await?;
            Ok(json!({"position": position_json(shard, index)}))
        }
        Call::Delete { key, request_id } => {
            let write = Write::Delete {
                key: checked_key(&key)?,
            };
            let (shard, index, result) =
                write_through(service, permissions, write, request_id).await?;
            let deleted = matches!(result, WriteResult::Delete { previous: Some(_) });
            Ok(json!({"position": position_json(shard, index), "deleted": deleted}))
        }
        Call::Cas {
            key,
            expected,
            value,
            request_id,
        } => cas(service, permissions, key, expected, value, request_id).await,
        Call::Txn {
            compare,
            success,
            failure,
            request_id,
        } => {
            let txn = JsonTxn {
                compare,
                success,
                failure,
            };
            let txn = txn
                .into_txn()
                .map_err(|reason| refuse("bad_request", reason))?;
            let write = Write::Txn(txn);
            let (shard, index, result) =
                write_through(service, permissions, write, request_id).await?;
            let WriteResult::Txn { succeeded, results } = result else {
                return Err(refuse("internal", "a txn answered as another write"));
            };
            Ok(json!({
                "succeeded": succeeded,
                "position": position_json(shard, index),
                "results": op_results(&results),
            }))
        }
    }
}

/// A key as the JSON doors take it (not empty, at most 4 KiB), or `bad_request`.
fn checked_key(key: &str) -> Result<Bytes, Refusal> {
    crate::api::json::key(key).map_err(|reason| refuse("bad_request", reason))
}

fn consistency(stale: bool) -> Consistency {
    if stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    }
}

async fn cas(
    service: &Service,
    permissions: &Permissions,
    key: String,
    expected: Option<String>,
    value: String,
    request_id: Option<String>,
) -> Result<Value, Refusal> {
    let write = compare_and_swap(
        checked_key(&key)?,
        expected.map(Bytes::from),
        Bytes::from(value),
    );
    let (shard, index, result) = write_through(service, permissions, write, request_id).await?;
    let WriteResult::Txn { succeeded, results } = result else {
        return Err(refuse(
            "internal",
            "a compare-and-swap answered as another write",
        ));
    };
    let current = match results.first() {
        Some(OpResult::Get {
            current: Some(versioned),
        }) if !succeeded => json!(text(&versioned.value)),
        _ => Value::Null,
    };
    Ok(json!({
        "succeeded": succeeded,
        "position": position_json(shard, index),
        "current": current,
    }))
}

async fn execute(
    service: &Service,
    permissions: &Permissions,
    request: Request,
) -> Result<Response, Refusal> {
    if !permissions.allows(&request) {
        return Err(refuse("forbidden", "this token may not reach these keys"));
    }
    match service.execute(request).await {
        Response::Error(error) => Err(refuse(error.code.as_str(), error.message)),
        response => Ok(response),
    }
}

async fn write_through(
    service: &Service,
    permissions: &Permissions,
    write: Write,
    request_id: Option<String>,
) -> Result<(u64, u64, WriteResult), Refusal> {
    if !permissions.allows_write(&write) {
        return Err(refuse("forbidden", "this token may not write these keys"));
    }
    if let Some(id) = &request_id
        && (id.is_empty() || id.len() > 128)
    {
        return Err(refuse(
            "bad_request",
            "request_id must have 1 to 128 characters",
        ));
    }
    let request_id = request_id.as_deref().map(|id| crate::service::RequestId {
        namespace: permissions.namespace(),
        id,
    });
    match service.write(write, request_id).await {
        Response::Written {
            shard,
            index,
            result,
        } => Ok((shard, index, result)),
        Response::Error(error) => Err(refuse(error.code.as_str(), error.message)),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(response: &Response) -> Refusal {
    refuse("internal", format!("unexpected answer: {response:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> AgendaCall {
        AgendaCall {
            method: "GET".into(),
            path: "/v1/me".into(),
            body: None,
            content_type: None,
            idempotency_key: None,
            token: "alice.0123".into(),
        }
    }

    /// At most `AGENDA_CALLS_MAX` agenda requests run at once; one more is refused
    /// `unavailable` at once (not queued), and runs again once one has ended.
    #[tokio::test]
    async fn agenda_calls_beyond_the_limit_are_refused_until_one_ends() {
        let gate = Arc::new(Semaphore::new(0));
        let calls = {
            let gate = gate.clone();
            AgendaCalls::new(move |_| {
                let gate = gate.clone();
                async move {
                    let _passed = gate.acquire().await.expect("open");
                    AgendaAnswer {
                        status: 200,
                        body: AnswerBody::Empty,
                        overloaded: false,
                    }
                }
            })
        };
        let running: Vec<_> = (0..AGENDA_CALLS_MAX)
            .map(|_| {
                let calls = calls.clone();
                tokio::spawn(async move { calls.call(call()).await })
            })
            .collect();
        while calls.running.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = calls.call(call()).await;
        assert_eq!((refused.status, refused.overloaded), (503, true));
        assert!(matches!(&refused.body, AnswerBody::Json(body)
            if serde_json::from_slice::<Value>(body).unwrap()["code"] == "unavailable"));
        gate.add_permits(AGENDA_CALLS_MAX + 1);
        for answer in running {
            assert_eq!(answer.await.expect("ran").status, 200);
        }
        assert_eq!(calls.call(call()).await.status, 200);
    }

    /// Answers hold their bytes against the port's budget until the last copy of their frame is
    /// dropped (written): past the budget the next one is refused, and a written one gives its
    /// bytes back.
    #[test]
    fn queued_answers_hold_their_bytes_until_written() {
        let calls = AgendaCalls::new(|_| async {
            AgendaAnswer {
                status: 200,
                body: AnswerBody::Empty,
                overloaded: false,
            }
        });
        let half = Bytes::from(vec![b' '; AGENDA_ANSWERS_QUEUED_BYTES_MAX / 2]);
        let first = calls.hold(half.clone()).expect("room");
        let second = calls.hold(half.clone()).expect("room");
        assert_eq!(&first[..], &half[..]);
        assert!(
            calls.hold(Bytes::from_static(b"x")).is_none(),
            "the budget is spent"
        );
        let shared = second.clone();
        drop(second);
        assert!(
            calls.hold(Bytes::from_static(b"x")).is_none(),
            "a copy still holds it"
        );
        drop(shared);
        assert!(calls.hold(Bytes::from_static(b"x")).is_some());
        drop(first);
    }

    /// A request counted in flight is counted out however its task ends, a panic included.
    #[test]
    fn a_request_in_flight_is_counted_out_when_its_task_ends() {
        let count = Arc::new(AtomicUsize::new(1));
        let guard = InFlight(count.clone());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("a handler's bug");
        }));
        assert!(panicked.is_err());
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_call_is_a_known_method_and_a_clean_path_under_v1() {
        assert_eq!(
            parse_agenda_call("GET /v1/agenda?from=a&to=b"),
            Some(("GET".into(), "/v1/agenda?from=a&to=b".into()))
        );
        for refused in [
            "GET",
            "get /v1/me",
            "BREW /v1/me",
            "GET /v2/me",
            "GET http://elsewhere/v1/me",
            "GET /v1/me HTTP/1.1",
            "GET /v1/me\r\nX-Injected: 1",
            "GET  /v1/me",
        ] {
            assert_eq!(parse_agenda_call(refused), None, "{refused:?}");
        }
        let long = format!("GET /v1/{}", "a".repeat(2048));
        assert_eq!(parse_agenda_call(&long), None);
    }

    #[test]
    fn a_debug_print_never_shows_a_session_token() {
        let printed = format!("{:?} {:?}", call(), SessionToken("alice.0123".into()));
        assert!(!printed.contains("0123"), "{printed}");
    }
}
