//! A headless Chromium driven through the DevTools protocol (CDP) over its WebSocket: pages in
//! separate browser contexts (separate cookies and storage, as two people on two machines),
//! JavaScript evaluated in them, key presses, screenshots.
//!
//! Chromium is Debian's `chromium` (`scripts/test-all` installs it when missing), or the binary
//! named by `CHROMIUM`.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Replies = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// What pages printed to their consoles and the exceptions they threw, by page.
type Console = Arc<Mutex<Vec<String>>>;

/// Helpers installed in every document before its scripts run: what a test does in a page, as
/// a person would (fill a field and let the page see the input, click, submit).
const HELPERS: &str = r#"
window.__test = {
  find(selector) {
    const element = document.querySelector(selector);
    if (!element) throw new Error(`no element ${selector}`);
    return element;
  },
  fill(selector, value) {
    const element = this.find(selector);
    element.focus();
    element.value = value;
    element.dispatchEvent(new Event("input", { bubbles: true }));
    element.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  },
  check(selector, checked) {
    const element = this.find(selector);
    element.checked = checked;
    element.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  },
  click(selector) {
    const element = this.find(selector);
    element.focus();
    element.click();
    return true;
  },
  submit(selector) {
    this.find(selector).requestSubmit();
    return true;
  },
  text(selector) {
    const element = document.querySelector(selector);
    return element ? element.textContent : null;
  },
};
"#;

/// A running Chromium and the protocol connection to it.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    cdp: Arc<Cdp>,
}

struct Cdp {
    outgoing: mpsc::UnboundedSender<String>,
    replies: Replies,
    next_id: AtomicU64,
    console: Console,
    sessions: Arc<Mutex<HashMap<String, String>>>,
}

impl Cdp {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (reply, answer) = oneshot::channel();
        self.replies.lock().unwrap().insert(id, reply);
        self.outgoing
            .send(message.to_string())
            .expect("the DevTools connection is open");
        match tokio::time::timeout(Duration::from_secs(60), answer).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(error))) => panic!("{method}: {error}"),
            Ok(Err(_)) => panic!("{method}: the DevTools connection closed"),
            Err(_) => panic!("{method}: no answer within 60 s"),
        }
    }
}

/// The Chromium binary: `CHROMIUM`, or the first of the usual names on the PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Chromium found: the browser tests need one (scripts/test-all installs Debian's \
         `chromium`; or set CHROMIUM to a Chromium or Chrome binary)"
    );
}

impl Browser {
    /// Starts a headless Chromium with a fresh profile and connects to it.
    pub async fn start() -> Browser {
        let profile = std::env::temp_dir().join(format!("agenda-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                // Tests run as root in CI containers, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("Chromium starts");
        // Chromium names its DevTools endpoint on stderr; the rest of stderr is drained (a full
        // pipe would stop the browser) and kept for a failure's report.
        let stderr = child.stderr.take().unwrap();
        let (found, endpoint) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.trim().to_owned());
                }
            }
        });
        let url = endpoint
            .recv_timeout(Duration::from_secs(60))
            .expect("Chromium printed its DevTools endpoint within 60 s");
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the DevTools WebSocket");
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = to_send.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        let replies: Replies = Arc::default();
        let console: Console = Arc::default();
        let sessions: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let (reading_replies, reading_console, reading_sessions) =
            (replies.clone(), console.clone(), sessions.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(id) = message["id"].as_u64() {
                    let answer = match message.get("error") {
                        Some(error) => Err(error.to_string()),
                        None => Ok(message["result"].clone()),
                    };
                    if let Some(reply) = reading_replies.lock().unwrap().remove(&id) {
                        let _ = reply.send(answer);
                    }
                    continue;
                }
                let page = message["sessionId"]
                    .as_str()
                    .and_then(|session| reading_sessions.lock().unwrap().get(session).cloned())
                    .unwrap_or_default();
                match message["method"].as_str() {
                    Some("Runtime.consoleAPICalled") => {
                        let args: Vec<String> = message["params"]["args"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|arg| {
                                arg["value"]
                                    .as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| arg["description"].to_string())
                            })
                            .collect();
                        let kind = message["params"]["type"].as_str().unwrap_or("log");
                        reading_console
                            .lock()
                            .unwrap()
                            .push(format!("[{page}] console.{kind}: {}", args.join(" ")));
                    }
                    Some("Runtime.exceptionThrown") => {
                        let details = &message["params"]["exceptionDetails"];
                        let text = details["exception"]["description"]
                            .as_str()
                            .or(details["text"].as_str())
                            .unwrap_or("?");
                        reading_console
                            .lock()
                            .unwrap()
                            .push(format!("[{page}] uncaught: {text}"));
                    }
                    _ => {}
                }
            }
        });
        Browser {
            child,
            profile,
            cdp: Arc::new(Cdp {
                outgoing,
                replies,
                next_id: AtomicU64::new(1),
                console,
                sessions,
            }),
        }
    }

    /// A new page in a browser context of its own (as a separate person's browser).
    pub async fn page(&self, name: &str, width: u32, height: u32) -> Page {
        let context = self
            .cdp
            .call(None, "Target.createBrowserContext", json!({}))
            .await;
        let target = self
            .cdp
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": context["browserContextId"]}),
            )
            .await;
        let attached = self
            .cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        self.cdp
            .sessions
            .lock()
            .unwrap()
            .insert(session.clone(), name.to_owned());
        let page = Page {
            cdp: self.cdp.clone(),
            session,
            name: name.to_owned(),
        };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": HELPERS}),
        )
        .await;
        page.viewport(width, height, false).await;
        page
    }

    /// What the pages printed and threw so far.
    pub fn console(&self) -> Vec<String> {
        self.cdp.console.lock().unwrap().clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One page (tab) of the browser.
pub struct Page {
    cdp: Arc<Cdp>,
    session: String,
    pub name: String,
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> Value {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Sets the page's size: `mobile` emulates a phone's screen (touch, device width).
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// Loads `url` and waits until the document is complete.
    pub async fn goto(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        let expected = serde_json::to_string(url).unwrap();
        self.wait_for(
            &format!("load of {url}"),
            &format!("location.href === {expected} && document.readyState === 'complete'"),
        )
        .await;
    }

    /// Evaluates `expression` (awaited if it is a promise): its value, as JSON. A thrown error
    /// is `Err` with its text.
    pub async fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(details) = answer.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("?");
            return Err(text.to_owned());
        }
        Ok(answer["result"]["value"].clone())
    }

    /// As `try_eval`; an error fails the test.
    pub async fn eval(&self, expression: &str) -> Value {
        match self.try_eval(expression).await {
            Ok(value) => value,
            Err(error) => self.fail(&format!("{expression}: {error}")).await,
        }
    }

    /// Waits (up to 20 s) until `condition` is truthy: its value. What the page shows is part
    /// of the failure's report.
    pub async fn wait_for(&self, what: &str, condition: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut last = Ok(Value::Null);
        while tokio::time::Instant::now() < deadline {
            last = self.try_eval(condition).await;
            if let Ok(value) = &last
                && !matches!(value, Value::Null | Value::Bool(false))
                && value != &json!("")
                && value != &json!(0)
            {
                return value.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.fail(&format!(
            "waited 20 s for {what} ({condition}); last: {last:?}"
        ))
        .await
    }

    /// Fails the test with what the page shows.
    pub async fn fail(&self, why: &str) -> ! {
        let shown = self
            .try_eval("location.href + '\\n' + document.body.innerText")
            .await
            .unwrap_or_default();
        let console = self.cdp.console.lock().unwrap().join("\n");
        panic!(
            "[{}] {why}\n--- the page shows:\n{}\n--- console:\n{console}",
            self.name,
            shown.as_str().unwrap_or("?")
        );
    }

    /// Presses and releases a key (as a keyboard would: the page sees keydown and keyup).
    pub async fn press(&self, key: &str, code: &str, key_code: u32) {
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({
                "type": kind, "key": key, "code": code,
                "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code,
            });
            if kind == "keyDown" && key.chars().count() == 1 {
                event["text"] = json!(key);
            }
            self.call("Input.dispatchKeyEvent", event).await;
        }
    }

    /// Saves a PNG of what the page shows (the whole page when `full`).
    pub async fn screenshot(&self, path: &Path, full: bool) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": full}),
            )
            .await;
        let data = shot["data"].as_str().expect("PNG data");
        std::fs::write(path, base64_decode(data)).expect("the screenshot is written");
    }
}

/// Standard base64 (what CDP sends screenshots in).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |byte: u8| -> u32 {
        match byte {
            b'A'..=b'Z' => u32::from(byte - b'A'),
            b'a'..=b'z' => u32::from(byte - b'a') + 26,
            b'0'..=b'9' => u32::from(byte - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {byte}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&b| b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut bits = 0u32;
        for (i, &byte) in chunk.iter().enumerate() {
            bits |= value(byte) << (18 - 6 * i);
        }
        let produced = chunk.len() * 6 / 8;
        for i in 0..produced {
            out.push((bits >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn base64_decodes_what_it_should() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
