//! The HTTP/JSON API (axum): a thin adapter over the service, for outside tools. Parsing and
//! encoding only. Outside the simulator only.
//!
//! | route | does |
//! |---|---|
//! | `PUT /v1/kv/{key}` | writes the body (UTF-8) as the value: 200 `{"shard","index"}` |
//! | `GET /v1/kv/{key}` | the value as the body, 404 when absent; `?consistency=stale` reads the local replica |
//! | `DELETE /v1/kv/{key}` | 200 `{"shard","index","deleted"}` |
//! | `POST /v1/kv/{key}/cas` | `{"expected": null or "v", "value": "w"}`: 200 when swapped, 409 with the current value otherwise |
//! | `GET /v1/kv?prefix=P&limit=N` | the keys under `P` in order, as a JSON list (header `x-more: true` when the limit cut it) |
//! | `POST /v1/txn` | compares, then `success` or `failure` operations, atomically (one shard) |
//! | `POST /v1/shards/{id}/members` | `{"action": "add_learner" or "add_voter" or "remove", "server": N}` |
//! | `POST /v1/shards/{id}/transfer` | `{"to": N}`: hands the shard's leadership to voter `N` |
//! | `GET /v1/cluster/status` | per shard: leader, term, every replica's role, commit and applied index |
//! | `GET /v1/ws` | the WebSocket gateway (`api/ws.rs`, `docs/websocket.md`) |
//! | `GET /health`, `GET /metrics` | liveness; Prometheus text |
//! | `GET /`, `GET /cluster`, `GET /web/...` | the web page (`api/web.rs`) |
//!
//! The key-value, txn and membership routes need `Authorization: Bearer <operator token>`
//! (401 otherwise). An optional `Request-Id` header makes a write idempotent across retries.
//! Errors are `{"code": ..., "message": ...}`. Limits: keys of at most 4 KiB, values and
//! bodies of at most 1 MiB (413 beyond).

use super::json::{self, text};
use crate::auth::prefix_end;
use crate::gateway::{
    AGENDA_ANSWER_BYTES_MAX, AgendaAnswer, AgendaCall, AgendaCalls, AnswerBody, Gateway,
};
use crate::metrics::Metrics;
use crate::service::{Service, compare_and_swap};
use axum::body::Bytes as Body;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use client::protocol::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use client::{Consistency, ErrorCode, ErrorResponse, MembershipChange, Request, Response};
use kv::{OpResult, Versioned, Write, WriteResult};
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The largest request body, in bytes: a value at its limit plus room for JSON framing.
pub const BODY_BYTES_MAX: usize = VALUE_BYTES_MAX + 64 * 1024;

/// Serves the API on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    service: Service,
    gateway: Gateway,
    agenda: Arc<crate::agenda::ServerAgenda>,
    shutdown: CancellationToken,
) {
    let app = router(service, gateway, agenda, shutdown.clone());
    let listener = LimitedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
    };
    let app = app.into_make_service_with_connect_info::<ConnectionSlot>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "the HTTP server stopped");
    }
}

/// HTTP connections served at once; more wait in the kernel's backlog.
pub const CONNECTIONS_MAX: usize = 512;
/// A connection on which nothing is read or written for this long is closed (slow or idle
/// clients cannot hold connections and memory for ever).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share: the service, the gateway for `/v1/ws`, and the agenda.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(super) service: Service,
    websockets: super::ws::WebSockets,
    pub(super) agenda: super::calendar::SharedAgenda,
}

impl FromRef<AppState> for Service {
    fn from_ref(state: &AppState) -> Service {
        state.service.clone()
    }
}

impl FromRef<AppState> for super::ws::WebSockets {
    fn from_ref(state: &AppState) -> super::ws::WebSockets {
        state.websockets.clone()
    }
}

/// The routes, for tests that drive them without a socket.
pub fn router(
    service: Service,
    gateway: Gateway,
    agenda: Arc<crate::agenda::ServerAgenda>,
    shutdown: CancellationToken,
) -> Router {
    // The key-value, txn and membership routes check the token before anything reads the
    // request's body.
    let protected = Router::new()
        .route("/v1/kv", get(list))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key).post(post_key),
        )
        .route("/v1/txn", post(txn))
        .route("/v1/shards/{id}/members", post(members))
        .route("/v1/shards/{id}/transfer", post(transfer))
        .route_layer(middleware::from_fn_with_state(
            service.clone(),
            require_token,
        ));
    let calls = agenda_calls(&service, &gateway, &agenda, &shutdown);
    let websockets = super::ws::WebSockets::new(service.clone(), gateway, agenda.clone(), shutdown)
        .with_agenda_calls(calls);
    let state = AppState {
        websockets,
        service,
        agenda,
    };
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/ws", get(super::ws::upgrade))
        .merge(protected)
        .merge(super::calendar::routes())
        .merge(super::ical::routes())
        .merge(super::web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// The agenda's routes (and iCalendar's) as a connection calls them: requests over `/v1/ws`
/// and the native port's gateway sessions go through the very handlers HTTP requests do, with
/// the connection's agenda session as the bearer token.
pub(crate) fn agenda_calls(
    service: &Service,
    gateway: &Gateway,
    agenda: &Arc<crate::agenda::ServerAgenda>,
    shutdown: &CancellationToken,
) -> AgendaCalls {
    // The agenda's handlers use the service and the agenda only; this state's WebSockets (its
    // own connection slots, unused) only completes the type.
    let state = AppState {
        websockets: super::ws::WebSockets::new(
            service.clone(),
            gateway.clone(),
            agenda.clone(),
            shutdown.clone(),
        ),
        service: service.clone(),
        agenda: agenda.clone(),
    };
    let routes: Router = Router::new()
        .merge(super::calendar::routes())
        .merge(super::ical::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state);
    AgendaCalls::new(move |call| answer_agenda_call(routes.clone(), call))
}

async fn answer_agenda_call(routes: Router, call: AgendaCall) -> AgendaAnswer {
    use tower::ServiceExt;
    let refused = |status: StatusCode, code: &str, message: String| AgendaAnswer {
        status: status.as_u16(),
        body: AnswerBody::Json(Bytes::from(
            json!({"code": code, "message": message}).to_string(),
        )),
        overloaded: false,
    };
    let mut request = axum::http::Request::builder()
        .method(call.method.as_str())
        .uri(call.path.as_str())
        .header(header::AUTHORIZATION, format!("Bearer {}", call.token));
    if let Some(key) = &call.idempotency_key {
        request = request.header("idempotency-key", key.as_str());
    }
    let body = match (call.body, call.content_type) {
        (None, _) => axum::body::Body::empty(),
        // A body of another type travels as a string, sent as it is.
        (Some(Json_::String(text)), Some(content_type)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            axum::body::Body::from(text)
        }
        (Some(body), content_type) => {
            let content_type = content_type.unwrap_or_else(|| "application/json".to_owned());
            request = request.header(header::CONTENT_TYPE, content_type);
            axum::body::Body::from(body.to_string())
        }
    };
    let request = match request.body(body) {
        Ok(request) => request,
        Err(error) => {
            let message = format!("not a request of the agenda's API: {error}");
            return refused(StatusCode::BAD_REQUEST, "bad_request", message);
        }
    };
    let response = match routes.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let Ok(bytes) = axum::body::to_bytes(response.into_body(), AGENDA_ANSWER_BYTES_MAX).await
    else {
        let message = format!(
            "the answer is larger than {AGENDA_ANSWER_BYTES_MAX} bytes, the most a connection \
             carries: ask for less (a shorter range), or over HTTP"
        );
        return refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "answer_too_large",
            message,
        );
    };
    let body = if bytes.is_empty() {
        AnswerBody::Empty
    } else if is_json && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
        AnswerBody::Json(bytes)
    } else {
        AnswerBody::Text(String::from_utf8_lossy(&bytes).into_owned())
    };
    AgendaAnswer {
        status: status.as_u16(),
        body,
        overloaded: false,
    }
}

async fn require_token(
    State(service): State<Service>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> HttpResponse {
    match authorize(&service, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => finish(&service, Err(refusal)),
    }
}

async fn method_not_allowed(State(service): State<Service>) -> HttpResponse {
    let refusal = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    );
    finish(&service, Err(refusal))
}

/// Accepts at most [`CONNECTIONS_MAX`] connections at once, each closed after
/// [`IDLE_TIMEOUT`] without progress.
struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, std::net::SocketAddr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
        let _ = stream.set_nodelay(true);
        let stream = LimitedStream {
            stream,
            slot: ConnectionSlot::new(permit),
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
        };
        (stream, address)
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection's place among the [`CONNECTIONS_MAX`] HTTP connections, shared with its
/// handlers: a connection that becomes a WebSocket gives its place back (the gateway bounds
/// its connections by itself) and leaves the HTTP idle timeout behind.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionSlot {
    inner: Arc<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    permit: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    upgraded: std::sync::atomic::AtomicBool,
}

impl ConnectionSlot {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> ConnectionSlot {
        ConnectionSlot {
            inner: Arc::new(SlotState {
                permit: std::sync::Mutex::new(Some(permit)),
                upgraded: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The connection is a WebSocket now.
    pub(crate) fn upgraded(&self) {
        self.inner
            .upgraded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut permit) = self.inner.permit.lock() {
            permit.take();
        }
    }

    fn is_upgraded(&self) -> bool {
        self.inner
            .upgraded
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for ConnectionSlot
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> ConnectionSlot {
        stream.io().slot.clone()
    }
}

/// A connection that holds one of the listener's permits and times out when idle.
struct LimitedStream {
    stream: tokio::net::TcpStream,
    slot: ConnectionSlot,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl LimitedStream {
    fn progress(&mut self) {
        if self.slot.is_upgraded() {
            return;
        }
        self.idle
            .as_mut()
            .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
    }

    fn check_idle(&mut self, context: &mut Context<'_>) -> Poll<std::io::Error> {
        if self.slot.is_upgraded() {
            // A WebSocket keeps itself alive (pings) and times out by its own rules.
            return Poll::Pending;
        }
        match self.idle.as_mut().poll(context) {
            Poll::Ready(()) => Poll::Ready(std::io::ErrorKind::TimedOut.into()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(context, buffer) {
            Poll::Ready(result) => {
                self.progress();
                Poll::Ready(result)
            }
            Poll::Pending => self.check_idle(context).map(Err),
        }
    }
}

impl tokio::io::AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(context, bytes) {
            Poll::Ready(result) => {
                self.progress();
                Poll::Ready(result)
            }
            Poll::Pending => self.check_idle(context).map(Err),
        }
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

/// An API error: a status and the JSON body `{"code", "message"}`.
pub(super) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(super) fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ErrorResponse> for ApiError {
    fn from(error: ErrorResponse) -> ApiError {
        let status = match error.code {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::BadRequest | ErrorCode::CrossShard => StatusCode::BAD_REQUEST,
            ErrorCode::NotLeader | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::SequenceForgotten => StatusCode::CONFLICT,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.code.as_str(), error.message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_request"
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        let body = json!({ "code": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

pub(super) type ApiResult = Result<HttpResponse, ApiError>;

/// The service answered something that does not fit the request: a bug, reported as a 500.
fn unexpected(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("unexpected answer: {what}"),
    )
}

/// Counts 4xx answers, then hands the result to axum.
pub(super) fn finish(service: &Service, result: ApiResult) -> HttpResponse {
    Metrics::add(&service.metrics().counters.http_requests, 1);
    match result {
        Ok(response) => response,
        Err(error) => {
            if error.status.is_client_error() {
                Metrics::add(&service.metrics().counters.http_bad_requests, 1);
            }
            error.into_response()
        }
    }
}

fn authorize(service: &Service, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match token {
        Some(token) if service.authorize(token) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown operator token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <operator token>`",
        )),
    }
}

fn request_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("request-id") {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(id) if !id.is_empty() && id.len() <= 128 => Ok(Some(id.to_owned())),
            _ => Err(ApiError::bad_request(
                "Request-Id must be 1 to 128 visible ASCII characters",
            )),
        },
    }
}

/// The value of a path parameter, or a JSON 400 (a key that is not valid percent-encoded UTF-8,
/// a shard id that is not a number).
fn path_value<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

fn check_key(key: &str) -> Result<Bytes, ApiError> {
    json::key(key).map_err(ApiError::bad_request)
}

fn versioned_json(key: &Bytes, versioned: &Versioned) -> Json_ {
    json!({
        "key": text(key),
        "value": text(&versioned.value),
        "create_index": versioned.create_index,
        "mod_index": versioned.mod_index,
    })
}

async fn run(service: &Service, request: Request) -> Result<Response, ApiError> {
    match service.execute(request).await {
        Response::Error(error) => Err(error.into()),
        response => Ok(response),
    }
}

async fn write(
    service: &Service,
    headers: &HeaderMap,
    write: Write,
) -> Result<(u64, u64, WriteResult), ApiError> {
    let request_id = request_id(headers)?;
    let request_id = request_id.as_deref().map(|id| crate::service::RequestId {
        namespace: crate::service::RequestId::OPERATORS,
        id,
    });
    match service.write(write, request_id).await {
        Response::Error(error) => Err(error.into()),
        Response::Written {
            shard,
            index,
            result,
        } => Ok((shard, index, result)),
        other => Err(unexpected(format!("{other:?}"))),
    }
}

async fn health(State(service): State<Service>) -> HttpResponse {
    finish(
        &service,
        Ok(Json(json!({"status": "ok", "server_id": service.server_id()})).into_response()),
    )
}

async fn metrics(State(service): State<Service>) -> HttpResponse {
    let body = service.metrics_text();
    finish(
        &service,
        Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()),
    )
}

async fn not_found(State(service): State<Service>) -> HttpResponse {
    finish(
        &service,
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        )),
    )
}

#[derive(Deserialize)]
struct StatusQuery {
    digests: Option<bool>,
}

async fn cluster_status(
    State(service): State<Service>,
    headers: HeaderMap,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> HttpResponse {
    let digests = match query {
        Ok(Query(StatusQuery { digests })) => digests.unwrap_or(false),
        Err(rejection) => {
            return finish(&service, Err(ApiError::bad_request(rejection.body_text())));
        }
    };
    // Digests read every replica's whole state: operators only.
    if digests && let Err(refusal) = authorize(&service, &headers) {
        return finish(&service, Err(refusal));
    }
    let status = service.cluster_status(digests).await;
    let shards: Vec<Json_> = status
        .shards
        .iter()
        .map(|shard| {
            let replicas: Vec<Json_> = shard
                .replicas
                .iter()
                .map(|replica| {
                    json!({
                        "server_id": replica.server_id,
                        "role": replica.role.as_str(),
                        "term": replica.term,
                        "leader_id": replica.leader_id,
                        "commit_index": replica.commit_index,
                        "applied_index": replica.applied_index,
                        "first_index": replica.first_index,
                        "last_index": replica.last_index,
                        "voters": replica.voters,
                        "learners": replica.learners,
                        "keys": replica.keys,
                        "state_digest": format!("{:016x}", replica.state_digest),
                    })
                })
                .collect();
            json!({
                "shard": shard.shard,
                "name": shard.name,
                "start": text(&shard.start),
                "end": text(&shard.end),
                "leader_id": shard.leader_id,
                "term": shard.term,
                "replicas": replicas,
            })
        })
        .collect();
    let body = json!({
        "server_id": service.server_id(),
        "all_shards_led": status.all_shards_led(),
        "shards": shards,
        "unreachable": status.unreachable,
    });
    finish(&service, Ok(Json(body).into_response()))
}

#[derive(Deserialize)]
struct ReadQuery {
    consistency: Option<String>,
}

fn consistency(query: &ReadQuery) -> Result<Consistency, ApiError> {
    match query.consistency.as_deref() {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency must be `linearizable` or `stale`, not {other:?}"
        ))),
    }
}

async fn get_key(
    State(service): State<Service>,
    headers: HeaderMap,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> HttpResponse {
    let result = async {
        authorize(&service, &headers)?;
        let key = check_key(&path_value(key)?)?;
        let Query(query) =
            query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        let request = Request::Get {
            key,
            consistency: consistency(&query)?,
        };
        match run(&service, request).await? {
            Response::Value(Some(versioned)) => Ok((
                [
                    ("x-create-index", versioned.create_index.to_string()),
                    ("x-mod-index", versioned.mod_index.to_string()),
                ],
                versioned.value,
            )
                .into_response()),
            Response::Value(None) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such key",
            )),
            other => Err(unexpected(format!("{other:?}"))),
        }
    }
    .await;
    finish(&service, result)
}

async fn put_key(
    State(service): State<Service>,
    headers: HeaderMap,
    key: Result<Path<String>, PathRejection>,
    body: Result<Body, BytesRejection>,
) -> HttpResponse {
    let result = async {
        authorize(&service, &headers)?;
        let key = check_key(&path_value(key)?)?;
        let body = body.map_err(|rejection| {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_request"
            };
            ApiError::new(status, code, rejection.body_text())
        })?;
        if std::str::from_utf8(&body).is_err() {
            return Err(ApiError::bad_request("the value must be UTF-8 text"));
        }
        let (shard, index, _) = write(&service, &headers, Write::Put { key, value: body }).await?;
        Ok(Json(json!({"shard": shard, "index": index})).into_response())
    }
    .await;
    finish(&service, result)
}

async fn delete_key(
    State(service): State<Service>,
    headers: HeaderMap,
    key: Result<Path<String>, PathRejection>,
) -> HttpResponse {
    let result = async {
        authorize(&service, &headers)?;
        let key = check_key(&path_value(key)?)?;
        let (shard, index, outcome) = write(&service, &headers, Write::Delete { key }).await?;
        let deleted = matches!(outcome, WriteResult::Delete { previous: Some(_) });
        Ok(Json(json!({"shard": shard, "index": index, "deleted": deleted})).into_response())
    }
    .await;
    finish(&service, result)
}

#[derive(Deserialize)]
struct CasBody {
    expected: Option<String>,
    value: String,
}

/// `POST /v1/kv/{key}/cas`: the only POST under `/v1/kv/`.
async fn post_key(
    State(service): State<Service>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<CasBody>, JsonRejection>,
) -> HttpResponse {
    let result = async {
        authorize(&service, &headers)?;
        let path = path_value(path)?;
        let Some(key) = path.strip_suffix("/cas") else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "POST under /v1/kv/ is only /v1/kv/{key}/cas",
            ));
        };
        let key = check_key(key)?;
        let Json(body) = body?;
        let expected = body.expected.map(Bytes::from);
        let cas = compare_and_swap(key, expected, Bytes::from(body.value));
        let (shard, index, outcome) = write(&service, &headers, cas).await?;
        match outcome {
            WriteResult::Txn {
                succeeded: true, ..
            } => Ok(
                Json(json!({"succeeded": true, "shard": shard, "index": index})).into_response(),
            ),
            WriteResult::Txn { results, .. } => {
                let current = match results.first() {
                    Some(OpResult::Get {
                        current: Some(versioned),
                    }) => Json_::String(text(&versioned.value)),
                    _ => Json_::Null,
                };
                Ok((
                    StatusCode::CONFLICT,
                    Json(json!({
                        "succeeded": false,
                        "code": "compare_failed",
                        "message": "the key's value is not the expected one",
                        "current": current,
                    })),
                )
                    .into_response())
            }
            other => Err(unexpected(format!("{other:?}"))),
        }
    }
    .await;
    finish(&service, result)
}

#[derive(Deserialize)]
struct ListQuery {
    prefix: Option<String>,
    limit: Option<u32>,
    consistency: Option<String>,
}

async fn list(
    State(service): State<Service>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResponse {
    let result = async {
        authorize(&service, &headers)?;
        let Query(query) =
            query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        let prefix = Bytes::from(query.prefix.unwrap_or_default());
        if prefix.len() > KEY_BYTES_MAX {
            return Err(ApiError::bad_request(
                "the prefix is longer than a key may be",
            ));
        }
        let request = Request::Scan {
            end: prefix_end(&prefix),
            start: prefix,
            limit: query.limit.unwrap_or(1000),
            consistency: consistency(&ReadQuery {
                consistency: query.consistency,
            })?,
        };
        match run(&service, request).await? {
            Response::Scan { entries, more } => {
                let keys: Vec<Json_> = entries
                    .iter()
                    .map(|(key, versioned)| versioned_json(key, versioned))
                    .collect();
                // A JSON list; whether more keys follow is in a header, for paging.
                Ok(([("x-more", more.to_string())], Json(Json_::Array(keys))).into_response())
            }
            other => Err(unexpected(format!("{other:?}"))),
        }
    }
    .await;
    finish(&service, result)
}

async fn txn(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Result<Json<json::JsonTxn>, JsonRejection>,
) -> HttpResponse {
    let result = async {
        authorize(&service, &headers)?;
        let Json(body) = body?;
        let txn = body.into_txn().map_err(ApiError::bad_request)?;
        let (shard, index, outcome) = write(&service, &headers, Write::Txn(txn)).await?;
        let WriteResult::Txn { succeeded, results } = outcome else {
            return Err(unexpected("a txn answered as another write"));
        };
        let results = json::op_results(&results);
        Ok(Json(
            json!({"succeeded": succeeded, "shard": shard, "index": index, "results": results}),
        )
        .into_response())
    }
    .await;
    finish(&service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    action: String,
    server: u64,
}

async fn members(
    State(service): State<Service>,
    headers: HeaderMap,
    shard: Result<Path<u64>, PathRejection>,
    body: Result<Json<MembersBody>, JsonRejection>,
) -> HttpResponse {
    let result = async {
        authorize(&service, &headers)?;
        let shard = path_value(shard)?;
        let Json(body) = body?;
        let change = match body.action.as_str() {
            "add_learner" => MembershipChange::AddLearner(body.server),
            "add_voter" => MembershipChange::AddVoter(body.server),
            "remove" => MembershipChange::Remove(body.server),
            other => {
                return Err(ApiError::bad_request(format!(
                    "action must be add_learner, add_voter or remove, not {other:?}"
                )));
            }
        };
        if service.config().server(body.server).is_none() {
            return Err(ApiError::bad_request(format!(
                "server {} is not in the configuration",
                body.server
            )));
        }
        run(&service, Request::ChangeMembership { shard, change }).await?;
        Ok(Json(json!({"done": true})).into_response())
    }
    .await;
    finish(&service, result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to: u64,
}

async fn transfer(
    State(service): State<Service>,
    headers: HeaderMap,
    shard: Result<Path<u64>, PathRejection>,
    body: Result<Json<TransferBody>, JsonRejection>,
) -> HttpResponse {
    let result = async {
        authorize(&service, &headers)?;
        let shard = path_value(shard)?;
        let Json(body) = body?;
        run(&service, Request::TransferLeader { shard, to: body.to }).await?;
        Ok(Json(json!({"done": true})).into_response())
    }
    .await;
    finish(&service, result)
}
