//! The CLI's HTTP client: one HTTP/1.1 request per connection (hyper's client connection over a
//! tokio socket), sent to the servers in turn. Any server takes any request, so a server that
//! cannot be reached is skipped. An answer that may hide a write already made is never retried
//! blindly: a `503 unavailable` (no leader answered in time: the outcome is unknown) or a
//! connection lost after the request left is retried on the next server only for a request
//! marked [`Retry::Safe`] (reads, and writes that carry an idempotency key or a request id).

use super::error::{CliError, Exit};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::time::Duration;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer may take once the request is sent: above the servers' request timeout
/// (10 s by default, after which a server answers 503 itself).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a command's requests may take in all, every server and attempt included: past
/// it the command fails (`unavailable`) instead of trying further.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// The largest answer read (an agenda of a year of occurrences is a few MiB).
const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The servers tried when neither `--server`, `AGENDA_SERVER` nor a stored session names any:
/// the HTTP ports of `demo`'s four servers.
pub(super) const DEFAULT_SERVERS: [&str; 4] = [
    "http://127.0.0.1:8081",
    "http://127.0.0.1:8082",
    "http://127.0.0.1:8083",
    "http://127.0.0.1:8084",
];

/// One server: its `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Endpoint {
    authority: String,
}

impl Endpoint {
    /// Reads `http://host:port` (a path after it is ignored; `ws://` is taken too, so the URLs
    /// `watch` was given before work here).
    pub(super) fn parse(text: &str) -> Result<Endpoint, CliError> {
        let text = text.trim();
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|scheme| text.strip_prefix(scheme));
        let Some(rest) = rest else {
            let reason = if text.starts_with("https://") || text.starts_with("wss://") {
                "TLS is not supported: use http://"
            } else {
                "expected http://HOST:PORT"
            };
            return Err(CliError::usage(format!("server {text:?}: {reason}")));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let valid = !authority.is_empty()
            && authority
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
        if !valid {
            return Err(CliError::usage(format!(
                "server {text:?}: expected http://HOST:PORT"
            )));
        }
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.ends_with('[') && port.parse::<u16>().is_ok());
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint { authority })
    }

    /// `http://host:port`.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// The WebSocket gateway's URL on this server.
    pub(super) fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.authority)
    }
}

/// Whether a request may be sent again after an answer that leaves its outcome unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// A read, or a write that the servers apply once however often it arrives.
    Safe,
    /// A write that a second attempt could make twice.
    Unsafe,
}

/// One request, built once and sent to as many servers as it takes.
#[derive(Clone, Debug)]
pub(super) struct Call {
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<(Bytes, &'static str)>,
    headers: Vec<(&'static str, String)>,
    retry: Retry,
}

impl Call {
    /// A read.
    pub(super) fn get(path: impl Into<String>) -> Call {
        Call::new(Method::GET, path, Retry::Safe)
    }

    /// A write: not retried after an unknown outcome unless [`Call::safe`] says so.
    pub(super) fn write(method: Method, path: impl Into<String>) -> Call {
        Call::new(method, path, Retry::Unsafe)
    }

    fn new(method: Method, path: impl Into<String>, retry: Retry) -> Call {
        Call {
            method,
            path: path.into(),
            token: None,
            body: None,
            headers: Vec::new(),
            retry,
        }
    }

    /// Marks the request as safe to send again (a read over POST, an idempotent write).
    pub(super) fn safe(mut self) -> Call {
        self.retry = Retry::Safe;
        self
    }

    pub(super) fn token(mut self, token: &str) -> Call {
        self.token = Some(token.to_owned());
        self
    }

    pub(super) fn json(mut self, body: &Value) -> Call {
        self.body = Some((Bytes::from(body.to_string()), "application/json"));
        self
    }

    pub(super) fn text(mut self, body: String) -> Call {
        self.body = Some((Bytes::from(body), "text/plain; charset=utf-8"));
        self
    }

    pub(super) fn header(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.headers.push((name, value.into()));
        self
    }

    fn request(&self, endpoint: &Endpoint) -> Result<Request<Full<Bytes>>, CliError> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header(HOST, &endpoint.authority);
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some((_, content_type)) = &self.body {
            builder = builder.header(CONTENT_TYPE, *content_type);
        }
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        let body = self.body.as_ref().map(|(bytes, _)| bytes.clone());
        builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|error| CliError::usage(format!("cannot make the request: {error}")))
    }
}

/// An answer: its status, headers and whole body.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: hyper::HeaderMap,
    pub(super) body: Bytes,
}

impl Answer {
    /// The body as text (lossy).
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub(super) fn json(&self) -> Result<Value, CliError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            CliError::other(
                "bad_answer",
                format!("the server's answer is not JSON ({error})"),
            )
        })
    }

    /// A non-2xx answer as the error it reports (`{"code", "message"}`).
    fn error(&self) -> CliError {
        let parsed: Option<Value> = serde_json::from_slice(&self.body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|value| value[name].as_str())
                .map(str::to_owned)
        };
        let code = field("code").unwrap_or_else(|| format!("http_{}", self.status));
        let message = field("message").unwrap_or_else(|| {
            let text: String = self.text().chars().take(200).collect();
            if text.trim().is_empty() {
                format!("HTTP status {}", self.status)
            } else {
                text
            }
        });
        CliError::from_api(self.status, &code, &message)
    }
}

/// A JSON answer, with the text the server sent (what `--json` prints, as it is).
#[derive(Debug)]
pub(super) struct Reply {
    value: Value,
    text: String,
}

impl Reply {
    /// The answer's text, without the trailing newline if it had one.
    pub(super) fn text(&self) -> &str {
        self.text.trim_end()
    }
}

impl std::ops::Deref for Reply {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// Why one attempt failed.
enum Failure {
    /// The request never left: another server may take it.
    NotSent(String),
    /// The request left and no whole answer came back: its outcome is unknown.
    Lost(String),
    /// The request cannot be made at all.
    Invalid(CliError),
}

/// The servers, tried in turn, until the command's deadline.
#[derive(Clone, Debug)]
pub(super) struct Http {
    servers: Vec<Endpoint>,
    budget: Duration,
    deadline: tokio::time::Instant,
}

impl Http {
    /// The servers of one command: its requests share [`COMMAND_DEADLINE`] from now.
    pub(super) fn new(servers: Vec<Endpoint>) -> Http {
        Http::within(servers, COMMAND_DEADLINE)
    }

    /// The servers, for requests that share `budget` from now.
    fn within(servers: Vec<Endpoint>, budget: Duration) -> Http {
        Http {
            servers,
            budget,
            deadline: tokio::time::Instant::now() + budget,
        }
    }

    pub(super) fn servers(&self) -> &[Endpoint] {
        &self.servers
    }

    /// Sends `call` and answers a 2xx answer; anything else as its error.
    pub(super) async fn send(&self, call: &Call) -> Result<Answer, CliError> {
        let answer = self.answer(call).await?;
        if (200..300).contains(&answer.status) {
            Ok(answer)
        } else {
            Err(answer.error())
        }
    }

    /// Sends `call` and answers its JSON body (`null` for an empty one).
    pub(super) async fn json(&self, call: &Call) -> Result<Reply, CliError> {
        let answer = self.send(call).await?;
        let value = if answer.body.is_empty() {
            Value::Null
        } else {
            answer.json()?
        };
        Ok(Reply {
            value,
            text: answer.text(),
        })
    }

    /// Sends `call` to the servers in turn until one answers (and, for a safe call, answers
    /// something other than 503), within the command's deadline; the answer whatever its
    /// status.
    pub(super) async fn answer(&self, call: &Call) -> Result<Answer, CliError> {
        match tokio::time::timeout_at(self.deadline, self.answer_in_turn(call)).await {
            Ok(result) => result,
            Err(_) => {
                let outcome = match (call.retry, call.method == Method::GET) {
                    (_, true) => "",
                    (Retry::Safe, false) => "; the request may be sent again",
                    (Retry::Unsafe, false) => {
                        "; the change may or may not have been made: check before trying again"
                    }
                };
                Err(CliError::other(
                    "unavailable",
                    format!("no answer within {:?}{outcome}", self.budget),
                ))
            }
        }
    }

    async fn answer_in_turn(&self, call: &Call) -> Result<Answer, CliError> {
        let mut unavailable = None;
        let mut failures = Vec::new();
        for endpoint in &self.servers {
            match attempt(endpoint, call).await {
                Ok(answer) if answer.status == 503 && call.retry == Retry::Safe => {
                    unavailable = Some(answer);
                }
                Ok(answer) => return Ok(answer),
                Err(Failure::Invalid(error)) => return Err(error),
                Err(Failure::NotSent(reason)) => {
                    failures.push(format!("{}: {reason}", endpoint.url()))
                }
                Err(Failure::Lost(reason)) if call.retry == Retry::Safe => {
                    failures.push(format!("{}: {reason}", endpoint.url()));
                }
                Err(Failure::Lost(reason)) => {
                    return Err(CliError::new(
                        Exit::Other,
                        "unavailable",
                        format!(
                            "{}: {reason}; the change may or may not have been made: check before trying again",
                            endpoint.url()
                        ),
                    ));
                }
            }
        }
        if let Some(answer) = unavailable {
            return Ok(answer);
        }
        Err(CliError::other(
            "unreachable",
            format!("no server answered ({})", failures.join("; ")),
        ))
    }
}

async fn attempt(endpoint: &Endpoint, call: &Call) -> Result<Answer, Failure> {
    let request = call.request(endpoint).map_err(Failure::Invalid)?;
    let connect = tokio::net::TcpStream::connect(endpoint.authority.as_str());
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(Failure::NotSent(error.to_string())),
        Err(_) => return Err(Failure::NotSent("no connection within 3 s".into())),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| Failure::NotSent(error.to_string()))?;
    let driver = tokio::spawn(connection);
    let exchange = async {
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, ANSWER_BYTES_MAX).collect().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.to_bytes(),
        })
    };
    let result = tokio::time::timeout(ANSWER_TIMEOUT, exchange).await;
    driver.abort();
    match result {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(Failure::Lost(error.to_string())),
        Err(_) => Err(Failure::Lost(format!(
            "no answer within {} s",
            ANSWER_TIMEOUT.as_secs()
        ))),
    }
}

/// 32 random hex digits: an idempotency key or a request id that only this command's own
/// attempts share.
pub(super) fn random_id() -> Result<String, CliError> {
    super::serve::random_hex().map_err(|error| CliError::other("random", format!("{error:#}")))
}

/// Percent-encodes `text` for a URL's path or query: every byte but the unreserved ones (and
/// `/` when `keep_slash`, for a key's path).
pub(super) fn encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
        if unreserved || (keep_slash && byte == b'/') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_read_in_both_forms_and_bad_ones_refused() {
        let plain = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(plain.url(), "http://127.0.0.1:8081");
        assert_eq!(plain.ws_url(), "ws://127.0.0.1:8081/v1/ws");
        let socket = Endpoint::parse("ws://127.0.0.1:8082/v1/ws").unwrap();
        assert_eq!(socket.url(), "http://127.0.0.1:8082");
        assert_eq!(
            Endpoint::parse("http://example/").unwrap().url(),
            "http://example:80"
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:9").unwrap().url(),
            "http://[::1]:9"
        );
        for bad in [
            "https://a:1",
            "127.0.0.1:8081",
            "http://",
            "http://a b:1",
            "http://a@b:1",
        ] {
            let error = Endpoint::parse(bad).unwrap_err();
            assert_eq!(error.code(), "usage", "{bad}");
        }
    }

    #[tokio::test]
    async fn a_command_gives_up_at_its_deadline_whatever_the_servers_and_attempts() {
        // A server that takes connections and never answers: each attempt alone would wait
        // 30 s, three of them 90 s.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let servers = vec![Endpoint::parse(&url).unwrap(); 3];
        let http = Http::within(servers, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let error = http.answer(&Call::get("/v1/me")).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(error.to_string(), "unavailable: no answer within 300ms");
        let write = Call::write(Method::DELETE, "/v1/sessions/current");
        let error = http.answer(&write).await.unwrap_err();
        assert!(
            error.to_string().contains("may or may not have been made"),
            "{error}"
        );
    }

    #[test]
    fn paths_and_queries_are_percent_encoded() {
        assert_eq!(encode("us/alice", true), "us/alice");
        assert_eq!(encode("us/alice", false), "us%2Falice");
        assert_eq!(
            encode("2026-06-01T10:00:00+02:00", false),
            "2026-06-01T10%3A00%3A00%2B02%3A00"
        );
        assert_eq!(encode("a b?é", true), "a%20b%3F%C3%A9");
    }
}
