//! A small client of the agenda's HTTP API for the tests (in-process clusters and server
//! processes alike): one request per connection, answers as JSON.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// The password every test user has.
pub const PASSWORD: &str = "a long password";

/// Sends `request` (a whole HTTP/1.1 request) on a fresh connection: the status and the body as
/// JSON (`Null` if none or not JSON).
pub async fn raw(address: SocketAddr, request: &[u8]) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // The server may answer (413) and close before reading a large body: what it answered
    // counts, not how the connection ended.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let status = head[9..12].parse().expect("a status code");
    // Bodies here are small JSON documents without chunked encoding.
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json)
}

/// One HTTP/1.1 request (`Connection: close`), JSON body if any: the status and the body.
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw(address, request.as_bytes()).await
}

/// Reads one counter from a server's `/metrics`.
pub fn metric(address: SocketAddr, name: &str) -> f64 {
    let text = server::probe::get(address, "/metrics").expect("metrics");
    server::probe::metric(&text, name)
}

/// The agenda API of one server.
#[derive(Clone, Copy, Debug)]
pub struct Api {
    pub address: SocketAddr,
}

impl Api {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let body = (!body.is_null()).then(|| body.to_string());
        http(self.address, method, path, token, body.as_deref()).await
    }

    /// Registers a user (password [`PASSWORD`]) and logs in; returns the session token.
    pub async fn user(&self, name: &str, zone: &str) -> String {
        let registration =
            json!({"name": name, "password": PASSWORD, "display_name": name, "time_zone": zone});
        let (status, profile) = self.call("POST", "/v1/users", None, registration).await;
        assert_eq!(status, 201, "{profile}");
        assert_eq!(profile["time_zone"], zone);
        self.login(name).await
    }

    /// Logs in as `name` (password [`PASSWORD`]); returns the session token.
    pub async fn login(&self, name: &str) -> String {
        let (status, session) = self
            .call(
                "POST",
                "/v1/sessions",
                None,
                json!({"name": name, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 201, "{session}");
        session["token"].as_str().expect("a token").to_owned()
    }

    /// Polls `path` until `done` holds of the answer (the outbox is delivered asynchronously),
    /// for at most 10 s.
    pub async fn until(&self, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.until_within(Duration::from_secs(10), path, token, done)
            .await
    }

    /// Polls `path` until `done` holds of the answer, for at most `patience`.
    pub async fn until_within(
        &self,
        patience: Duration,
        path: &str,
        token: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let (status, value) = self.call("GET", path, Some(token), Value::Null).await;
            if status == 200 && done(&value) {
                return value;
            }
            if Instant::now() > deadline {
                panic!("{path} never reached the expected state: {status} {value}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
