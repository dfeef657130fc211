//! `GET /v1/ws`: the WebSocket adapter of the gateway (axum, outside the simulator). It only
//! moves text between the socket and the connection's [`Session`] and keeps the connection
//! healthy (pings, idle timeout, write timeout, size limits); the protocol and the pub/sub
//! core are in `gateway/`, which the simulator runs without a socket.

use super::http::ConnectionSlot;
use crate::gateway::session::MESSAGE_BYTES_MAX;
use crate::gateway::{AgendaCalls, CloseReason, Gateway, Outgoing, Session};
use crate::metrics::Metrics;
use crate::service::Service;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::Extensions;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Messages above this size are cut off by the WebSocket layer, which closes the connection
/// (code 1009). Between [`MESSAGE_BYTES_MAX`] and this, a message is read and answered with a
/// `too_large` error frame.
pub const MESSAGE_BYTES_HARD_MAX: usize = 4 * MESSAGE_BYTES_MAX;

/// The socket's read buffer: small, so that an idle connection holds little memory (it grows
/// while a large message is read).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// How long the closing handshake may take before the connection is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the WebSocket route needs: the service, the gateway, and the connection slots.
#[derive(Clone, Debug)]
pub(crate) struct WebSockets {
    service: Service,
    gateway: Gateway,
    agenda: Arc<crate::agenda::ServerAgenda>,
    /// The agenda's API for agenda sessions' requests.
    agenda_calls: Option<AgendaCalls>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl WebSockets {
    pub(crate) fn new(
        service: Service,
        gateway: Gateway,
        agenda: Arc<crate::agenda::ServerAgenda>,
        shutdown: CancellationToken,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(gateway.limits().connections_max));
        WebSockets {
            service,
            gateway,
            agenda,
            agenda_calls: None,
            slots,
            shutdown,
        }
    }

    /// Connections whose agenda sessions send the agenda's requests to `calls`.
    pub(crate) fn with_agenda_calls(mut self, calls: AgendaCalls) -> Self {
        self.agenda_calls = Some(calls);
        self
    }
}

fn refusal(service: &Service, status: StatusCode, code: &str, message: String) -> HttpResponse {
    Metrics::add(&service.metrics().counters.http_requests, 1);
    Metrics::add(&service.metrics().counters.http_bad_requests, 1);
    let body = json!({"code": code, "message": message});
    (status, axum::Json(body)).into_response()
}

/// Upgrades the request to a WebSocket connection, if the gateway has room.
pub(crate) async fn upgrade(
    State(websockets): State<WebSockets>,
    extensions: Extensions,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> HttpResponse {
    // Served through `http::serve`, the connection has an HTTP slot to give back; a router
    // driven without a socket has none.
    let http_slot = extensions
        .get::<ConnectInfo<ConnectionSlot>>()
        .map(|info| info.0.clone());
    let service = &websockets.service;
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let message = format!(
                "/v1/ws takes WebSocket connections: {}",
                rejection.body_text()
            );
            return refusal(service, rejection.status(), "bad_request", message);
        }
    };
    let Ok(slot) = websockets.slots.clone().try_acquire_owned() else {
        Metrics::add(&service.metrics().counters.ws_connections_refused, 1);
        let message = "the gateway serves as many connections as it may; try another server";
        return refusal(
            service,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            message.into(),
        );
    };
    Metrics::add(&service.metrics().counters.http_requests, 1);
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(MESSAGE_BYTES_HARD_MAX)
        .max_frame_size(MESSAGE_BYTES_HARD_MAX)
        .on_upgrade(move |socket| {
            if let Some(http_slot) = http_slot {
                http_slot.upgraded();
            }
            serve(socket, websockets, slot)
        })
}

/// Why a connection ends: the reason a close frame says, or none when the socket is gone.
type Ending = Option<&'static str>;

/// Serves one connection until it closes, idles out, falls behind, or the server stops.
async fn serve(mut socket: WebSocket, websockets: WebSockets, _slot: OwnedSemaphorePermit) {
    let limits = websockets.gateway.limits().clone();
    let metrics = websockets.service.metrics().clone();
    let mut session = Session::new(websockets.gateway.clone(), websockets.service.clone())
        .with_agenda(websockets.agenda.clone());
    if let Some(calls) = websockets.agenda_calls.clone() {
        session = session.with_agenda_calls(calls);
    }
    let outbox = session.outbox().clone();
    let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
    let write_timeout = Duration::from_millis(limits.write_timeout_ms);
    let mut ping = tokio::time::interval(Duration::from_millis(limits.ping_interval_ms));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    let mut last_heard = Instant::now();
    // Made once: a fresh one per turn would lock the token's list of waiters twice per frame,
    // on a list every connection shares.
    let shutting_down = websockets.shutdown.cancelled();
    tokio::pin!(shutting_down);
    let ending = loop {
        let step = tokio::select! {
            biased;
            () = &mut shutting_down => Err(Some(CloseReason::Shutdown.as_str())),
            batch = outbox.take() => match batch {
                Ok(batch) => deliver(&mut socket, batch, write_timeout, &metrics).await,
                Err(reason) => Err(Some(reason.as_str())),
            },
            message = socket.recv() => {
                last_heard = Instant::now();
                receive(&mut session, message)
            }
            _ = ping.tick() => {
                if !session.is_authenticated() {
                    // A connection answers pings by itself: one that has not authenticated by
                    // the first ping would otherwise hold its place for ever.
                    Metrics::add(&metrics.counters.ws_unauthenticated_closed, 1);
                    Err(Some(CloseReason::Unauthenticated.as_str()))
                } else if last_heard.elapsed() >= idle_timeout {
                    Metrics::add(&metrics.counters.ws_idle_closed, 1);
                    Err(Some("idle"))
                } else {
                    keepalive(&mut socket, write_timeout).await
                }
            }
        };
        if let Err(ending) = step {
            break ending;
        }
    };
    if let Some(reason) = ending {
        close(&mut socket, reason).await;
    }
}

/// Writes a batch within the write timeout; a connection that cannot take it in time is a
/// slow consumer.
async fn deliver(
    socket: &mut WebSocket,
    batch: Vec<Outgoing>,
    write_timeout: Duration,
    metrics: &Metrics,
) -> Result<(), Ending> {
    match tokio::time::timeout(write_timeout, write(socket, batch)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => {
            Metrics::add(&metrics.counters.ws_slow_consumers, 1);
            Err(None)
        }
    }
}

/// Hands a client message to the session.
fn receive(
    session: &mut Session,
    message: Option<Result<Message, axum::Error>>,
) -> Result<(), Ending> {
    match message {
        Some(Ok(Message::Text(text))) => session.on_text(text.as_str()),
        Some(Ok(Message::Binary(_))) => session.on_binary(),
        // tungstenite answers pings by itself; a pong only proves liveness.
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
        Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(None),
    }
    Ok(())
}

/// Pings the client (its answer, or anything else it sends, keeps the connection alive).
async fn keepalive(socket: &mut WebSocket, write_timeout: Duration) -> Result<(), Ending> {
    let ping = socket.send(Message::Ping(Default::default()));
    match tokio::time::timeout(write_timeout, ping).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(None),
    }
}

/// Writes a batch of frames; a shared frame is sent as is (no copy of its payload here).
async fn write(socket: &mut WebSocket, batch: Vec<Outgoing>) -> Result<(), axum::Error> {
    for item in batch {
        match item {
            Outgoing::Frame(frame) => send_text(socket, frame).await?,
            Outgoing::Shared(frames) => {
                for frame in frames.iter() {
                    send_text(socket, frame.clone()).await?;
                }
            }
        }
    }
    Ok(())
}

async fn send_text(socket: &mut WebSocket, frame: bytes::Bytes) -> Result<(), axum::Error> {
    // Frames are encoded from Rust strings by serde_json: always UTF-8. The check reads the
    // frame (no copy); a frame that failed it would be a bug, and is skipped.
    match Utf8Bytes::try_from(frame) {
        Ok(text) => socket.send(Message::Text(text)).await,
        Err(_) => Ok(()),
    }
}

/// Sends a close frame with `reason` and waits a moment for the client's answer (the
/// closing handshake), so that a client that reads late still finds the reason instead of a
/// reset connection. Best effort: a slow consumer may not take it.
async fn close(socket: &mut WebSocket, reason: &'static str) {
    let code = match reason {
        "shutdown" => 1001,
        "slow_consumer" => 1013,
        _ => 1000,
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let closing = async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}
