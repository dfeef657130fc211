//! The native client port: the project's framing over TCP, a hello with an operator token,
//! then pipelined requests answered by id (see `client::protocol`). Parsing and encoding only;
//! the service decides everything else. A connection that opens with `gateway` instead runs
//! the gateway's session, as the WebSocket endpoint does (and as the simulator's subscribers
//! use it).

use crate::agenda::ServerAgenda;
use crate::gateway::{AgendaCalls, CloseReason, Gateway, Outgoing, Session};
use crate::metrics::Metrics;
use crate::service::Service;
use bytes::BytesMut;
use client::protocol::{
    CLIENT_FRAME_BYTES_MAX, ClientFrame, FrameReader, Request, Response, ServerFrame,
    write_and_flush,
};
use client::{ErrorCode, ErrorResponse};
use net::timer::Deadline;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest hello: a token, not a payload (strangers get no more before authenticating).
const HELLO_FRAME_BYTES_MAX: usize = 4096;
/// A connection that sends nothing for this long is closed (clients reconnect by themselves).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A write of answers that makes no progress for this long closes the connection: a client
/// that stops reading does not hold its answers and slot for ever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers gathered into one write, at most (beyond one answer).
const WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Answers queued for one connection's writer.
const ANSWER_QUEUE_CAPACITY: usize = 1024;

/// Accepts client connections until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    service: Service,
    gateway: Gateway,
    agenda: Arc<ServerAgenda>,
    agenda_calls: Option<AgendaCalls>,
    shutdown: CancellationToken,
) {
    let connections_max = service.config_limits().client_connections_max;
    let connections = Arc::new(Semaphore::new(connections_max));
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors or a reset during accept: pause briefly and go on.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Over the limit: the connection is closed at once (dropped).
            continue;
        };
        Metrics::add(&service.metrics().counters.client_connections, 1);
        let service = service.clone();
        let gateway = gateway.clone();
        let agenda = agenda.clone();
        let agenda_calls = agenda_calls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(stream, service, gateway, agenda, agenda_calls, shutdown).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    service: Service,
    gateway: Gateway,
    agenda: Arc<ServerAgenda>,
    agenda_calls: Option<AgendaCalls>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = tokio::io::split(stream);
    let mut frames = FrameReader::new(reader, HELLO_FRAME_BYTES_MAX);
    let hello = tokio::time::timeout(HELLO_TIMEOUT, frames.next()).await;
    frames.set_frame_size_bytes_max(CLIENT_FRAME_BYTES_MAX);
    let welcome = match hello {
        Ok(Ok(Some(payload))) => match net::codec::decode_message::<ClientFrame>(&payload) {
            Ok(ClientFrame {
                id,
                request: Request::Hello { token },
            }) => {
                if service.authorize(&token) {
                    Ok(ServerFrame {
                        id,
                        response: Response::Welcome {
                            server_id: service.server_id(),
                        },
                    })
                } else {
                    Err(Some(refusal(
                        id,
                        ErrorCode::Unauthorized,
                        "unknown operator token",
                    )))
                }
            }
            Ok(ClientFrame {
                id,
                request: Request::Gateway,
            }) => {
                let welcome = ServerFrame {
                    id,
                    response: Response::Welcome {
                        server_id: service.server_id(),
                    },
                };
                let mut buffer = BytesMut::new();
                if encode(&welcome, &mut buffer)
                    && write_and_flush(&mut writer, &buffer).await.is_ok()
                {
                    let mut session = Session::new(gateway, service).with_agenda(agenda);
                    if let Some(calls) = agenda_calls {
                        session = session.with_agenda_calls(calls);
                    }
                    serve_gateway(frames, writer, session, shutdown).await;
                }
                return;
            }
            Ok(frame) => Err(Some(refusal(
                frame.id,
                ErrorCode::Unauthorized,
                "the first frame must be a hello with an operator token, or gateway",
            ))),
            Err(_) => {
                Metrics::add(&service.metrics().counters.client_frames_malformed, 1);
                Err(None)
            }
        },
        Ok(Err(_)) => {
            // Oversized or cut short: not our protocol.
            Metrics::add(&service.metrics().counters.client_frames_malformed, 1);
            Err(None)
        }
        Ok(Ok(None)) | Err(_) => Err(None),
    };
    let mut buffer = BytesMut::new();
    match welcome {
        Ok(frame) => {
            if !encode(&frame, &mut buffer) || write_and_flush(&mut writer, &buffer).await.is_err()
            {
                return;
            }
        }
        Err(answer) => {
            if let Some(frame) = answer
                && encode(&frame, &mut buffer)
            {
                let _ = write_and_flush(&mut writer, &buffer).await;
            }
            return;
        }
    }
    let (answers, mut queue) = mpsc::channel::<ServerFrame>(ANSWER_QUEUE_CAPACITY);
    let writer_task = tokio::spawn(async move {
        let mut buffer = BytesMut::new();
        while let Some(frame) = queue.recv().await {
            buffer.clear();
            encode(&frame, &mut buffer);
            while buffer.len() < WRITE_BATCH_BYTES_MAX {
                let Ok(frame) = queue.try_recv() else { break };
                encode(&frame, &mut buffer);
            }
            let written =
                tokio::time::timeout(WRITE_TIMEOUT, write_and_flush(&mut writer, &buffer));
            if !matches!(written.await, Ok(Ok(()))) {
                return;
            }
            if buffer.capacity() > 2 * WRITE_BATCH_BYTES_MAX {
                buffer = BytesMut::new();
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(
        service.config_limits().requests_per_connection_max,
    ));
    let mut stopping = std::pin::pin!(shutdown.cancelled());
    let mut idle = Deadline::new(Instant::now() + IDLE_TIMEOUT);
    loop {
        idle.set(Instant::now() + IDLE_TIMEOUT);
        let next = tokio::select! {
            biased;
            () = &mut stopping => break,
            next = frames.next() => next,
            () = idle.reached() => break,
        };
        let Ok(Some(payload)) = next else { break };
        let frame = match net::codec::decode_message::<ClientFrame>(&payload) {
            Ok(frame) => frame,
            Err(_) => {
                Metrics::add(&service.metrics().counters.client_frames_malformed, 1);
                break;
            }
        };
        // Waiting for a permit stops reading: a client with too many requests in flight is
        // slowed by TCP, not served without bound.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let service = service.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let response = service.execute(frame.request).await;
            let _ = answers
                .send(ServerFrame {
                    id: frame.id,
                    response,
                })
                .await;
            drop(permit);
        });
    }
    drop(answers);
    let _ = writer_task.await;
}

/// The gateway's protocol over this port: the same session as a WebSocket connection's, with
/// each JSON text message in a frame of its own (postcard-encoded as a string). The limits are
/// the gateway's: a connection that has not authenticated by the first ping interval, or from
/// which nothing arrives for the idle timeout, is closed, and one whose queued frames cannot
/// be written within the write timeout is dropped as a slow consumer. A close the server
/// decides is announced by a last message, `{"op":"closed","reason":R}`.
async fn serve_gateway<R, W>(
    mut frames: FrameReader<R>,
    mut writer: W,
    mut session: Session,
    shutdown: CancellationToken,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let limits = session.gateway().limits().clone();
    let metrics = session.gateway().metrics().clone();
    let outbox = session.outbox().clone();
    let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
    let write_timeout = Duration::from_millis(limits.write_timeout_ms);
    let mut stopping = std::pin::pin!(shutdown.cancelled());
    let mut idle = Deadline::new(Instant::now() + idle_timeout);
    let mut authentication =
        Deadline::new(Instant::now() + Duration::from_millis(limits.ping_interval_ms));
    let mut buffer = BytesMut::new();
    let reason = loop {
        tokio::select! {
            biased;
            () = &mut stopping => break Some(CloseReason::Shutdown.as_str()),
            batch = outbox.take() => match batch {
                Ok(batch) => {
                    buffer.clear();
                    encode_texts(batch, &mut buffer);
                    let written =
                        tokio::time::timeout(write_timeout, write_and_flush(&mut writer, &buffer));
                    match written.await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break None,
                        Err(_) => {
                            Metrics::add(&metrics.counters.ws_slow_consumers, 1);
                            break None;
                        }
                    }
                }
                Err(reason) => break Some(reason.as_str()),
            },
            next = frames.next() => {
                idle.set(Instant::now() + idle_timeout);
                match next {
                    Ok(Some(payload)) => match net::codec::decode_message::<String>(&payload) {
                        Ok(text) => session.on_text(&text),
                        // Bytes that are not a string frame: what a WebSocket calls binary.
                        Err(_) => session.on_binary(),
                    },
                    // Oversized (beyond the client frame limit) or cut short: not our
                    // protocol, or a closed connection.
                    Ok(None) | Err(_) => break None,
                }
            }
            () = authentication.reached(), if !session.is_authenticated() => {
                Metrics::add(&metrics.counters.ws_unauthenticated_closed, 1);
                break Some(CloseReason::Unauthenticated.as_str());
            }
            () = idle.reached() => {
                Metrics::add(&metrics.counters.ws_idle_closed, 1);
                break Some("idle");
            }
        }
    };
    if let Some(reason) = reason {
        buffer.clear();
        let closed = serde_json::json!({"op": "closed", "reason": reason}).to_string();
        if net::codec::encode_message(&closed, CLIENT_FRAME_BYTES_MAX, &mut buffer).is_ok() {
            let _ =
                tokio::time::timeout(write_timeout, write_and_flush(&mut writer, &buffer)).await;
        }
    }
}

/// Encodes a batch of the gateway's text frames, one string frame each (a shared frame is
/// read, not copied, until it is written into the buffer).
fn encode_texts(batch: Vec<Outgoing>, buffer: &mut BytesMut) {
    let mut encode_text = |frame: &bytes::Bytes| {
        // Frames are JSON that serde_json wrote from Rust strings: always UTF-8, and within
        // the frame limit (a change carries at most one key and one value).
        if let Ok(text) = std::str::from_utf8(frame) {
            let _ = net::codec::encode_message(&text, CLIENT_FRAME_BYTES_MAX, buffer);
        }
    };
    for item in batch {
        match item {
            Outgoing::Frame(frame) => encode_text(&frame),
            Outgoing::Shared(frames) => frames.iter().for_each(&mut encode_text),
        }
    }
}

fn refusal(id: u64, code: ErrorCode, message: &str) -> ServerFrame {
    ServerFrame {
        id,
        response: Response::Error(ErrorResponse::new(code, message)),
    }
}

/// Encodes a frame; an answer too large for a frame is replaced by an error answer.
fn encode(frame: &ServerFrame, buffer: &mut BytesMut) -> bool {
    if net::codec::encode_message(frame, CLIENT_FRAME_BYTES_MAX, buffer).is_ok() {
        return true;
    }
    let replacement = refusal(
        frame.id,
        ErrorCode::BadRequest,
        "the answer is larger than a frame; ask for fewer keys",
    );
    net::codec::encode_message(&replacement, CLIENT_FRAME_BYTES_MAX, buffer).is_ok()
}
