//! The command-line client: the real `server` binary run as processes against a cluster of real
//! servers on loopback. Sessions in private credentials files, an event from its creation to
//! the agenda, an invitation answered and tallied, errors as one line with distinct exit codes,
//! the operators' `kv` and `cluster status`, and `watch` following a change live and, after
//! the server it listens to stops, resuming on another without a gap or a duplicate.

#![cfg(not(madsim))]

mod support;

use serde_json::Value;
use server::default_shards;
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use support::{TOKEN, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "a long password";

/// One person at the command line: their own configuration directory (so their own
/// credentials file), and the servers they were told about at login.
struct Person {
    name: &'static str,
    config: PathBuf,
    servers: Vec<String>,
}

/// What a finished command printed.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(self) -> Ran {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.stdout))
    }

    /// Asserts a failure: the exit code, and exactly one line on stderr that starts with
    /// `error: <code>:`.
    fn failed(self, code: i32, error_code: &str) -> Ran {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {:?}", self.stderr);
        let prefix = format!("error: {error_code}: ");
        assert!(lines[0].starts_with(&prefix), "{:?}", lines[0]);
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout: {:?}",
            self.stdout
        );
        self
    }
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("agenda-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a scratch directory");
        Scratch(path)
    }

    fn person(&self, name: &'static str, cluster: &TestCluster) -> Person {
        Person {
            name,
            config: self.0.join(name),
            servers: http_urls(cluster),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn http_urls(cluster: &TestCluster) -> Vec<String> {
    cluster
        .configs
        .iter()
        .map(|config| format!("http://{}", config.me().http.expect("HTTP is on")))
        .collect()
}

/// The command, with an environment of its own: none of the caller's `AGENDA_*` variables,
/// the person's configuration directory.
fn command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
    command
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("AGENDA_SERVER")
        .env_remove("AGENDA_CREDENTIALS")
        .env_remove("AGENDA_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a command to its end (off the runtime's threads, which serve the cluster).
async fn run_in(config: &Path, args: &[&str], stdin: &str) -> Ran {
    let mut command = command(config, args);
    let stdin = stdin.to_owned();
    let output: Output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("the binary starts");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("the binary ends")
    })
    .await
    .expect("the command's thread");
    Ran {
        code: output.status.code().expect("an exit code, not a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Person {
    async fn run(&self, args: &[&str]) -> Ran {
        run_in(&self.config, args, "").await
    }

    fn credentials(&self) -> PathBuf {
        self.config.join("agenda").join("credentials")
    }

    /// `register`, then `login`, both told every server.
    async fn sign_up(&self, zone: &str) {
        let mut register = vec![
            "register",
            self.name,
            "--time-zone",
            zone,
            "--password-stdin",
        ];
        let mut login = vec!["login", self.name, "--password-stdin"];
        for server in &self.servers {
            register.extend(["--server", server.as_str()]);
            login.extend(["--server", server.as_str()]);
        }
        let password = format!("{PASSWORD}\n");
        let registered = run_in(&self.config, &register, &password).await.ok();
        assert!(
            registered
                .stdout
                .contains(&format!("registered {}", self.name))
        );
        let logged_in = run_in(&self.config, &login, &password).await.ok();
        assert!(
            logged_in
                .stdout
                .contains(&format!("logged in as {}", self.name))
        );
    }

    /// `login` again, told every server.
    async fn log_in(&self) {
        let mut login = vec!["login", self.name, "--password-stdin"];
        for server in &self.servers {
            login.extend(["--server", server.as_str()]);
        }
        let password = format!("{PASSWORD}\n");
        run_in(&self.config, &login, &password).await.ok();
    }

    /// Runs `args` until `done` holds of its output (deliveries between shards are
    /// asynchronous), for at most 20 s.
    async fn until(&self, args: &[&str], done: impl Fn(&Ran) -> bool) -> Ran {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ran = self.run(args).await;
            if ran.code == 0 && done(&ran) {
                return ran;
            }
            assert!(
                Instant::now() < deadline,
                "{args:?} never gave the expected output: {} {}",
                ran.stdout,
                ran.stderr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn cluster() -> TestCluster {
    let cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_kept_in_a_private_file_and_a_shared_one_is_refused() {
    let cluster = cluster().await;
    let scratch = Scratch::new("credentials");
    let alice = scratch.person("alice", &cluster);
    alice.sign_up("Europe/Madrid").await;

    let file = alice.credentials();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&file),
        0o600,
        "the credentials file is the owner's only"
    );
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(stored["user"], "alice");
    assert!(stored["token"].as_str().unwrap().starts_with("alice."));
    assert_eq!(stored["servers"].as_array().unwrap().len(), 3);
    // The stored servers and session are enough for the next command.
    alice.run(&["agenda"]).await.ok();

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let refused = alice
        .run(&["agenda"])
        .await
        .failed(1, "insecure_credentials");
    assert!(refused.stderr.contains("chmod 600"), "{}", refused.stderr);

    // `logout` reads even a shared file: it ends the session and removes the file.
    let kept = std::fs::read(&file).unwrap();
    alice.run(&["logout"]).await.ok();
    assert!(!file.exists(), "logout removes the file");
    alice.run(&["agenda"]).await.failed(3, "unauthenticated");
    // The session ended on the servers too: a private copy of the old file is refused by them.
    let restore = |bytes: &[u8]| {
        std::fs::write(&file, bytes).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    restore(&kept);
    alice.run(&["agenda"]).await.failed(3, "unauthenticated");

    // A new login ends the session the file held before it replaces it.
    alice.log_in().await;
    let first = std::fs::read(&file).unwrap();
    alice.log_in().await;
    let second = std::fs::read(&file).unwrap();
    assert_ne!(first, second, "a new session");
    alice.run(&["agenda"]).await.ok();
    restore(&first);
    alice.run(&["agenda"]).await.failed(3, "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_reaches_the_agenda_and_an_invitation_is_answered_and_tallied() {
    let cluster = cluster().await;
    let scratch = Scratch::new("events");
    let alice = scratch.person("alice", &cluster);
    let nora = scratch.person("nora", &cluster);
    alice.sign_up("Europe/Madrid").await;
    nora.sign_up("America/New_York").await;

    let created = alice
        .run(&[
            "event",
            "create",
            "--title",
            "Planning",
            "--location",
            "Room 2",
            "--start",
            "2026-06-01T10:00",
            "--end",
            "2026-06-01T11:00",
            "--rrule",
            "FREQ=WEEKLY;COUNT=4",
            "--json",
        ])
        .await
        .ok()
        .json();
    let id = created["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("alice."), "{created}");

    let shown = alice.run(&["event", "show", &id]).await.ok();
    assert!(shown.stdout.contains("Planning"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("FREQ=WEEKLY;COUNT=4"),
        "{}",
        shown.stdout
    );

    let range = ["--from", "2026-06-01", "--to", "2026-06-15"];
    let table = alice.run(&[&["agenda"][..], &range].concat()).await.ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "a header and two weekly occurrences: {}",
        table.stdout
    );
    assert!(lines[0].starts_with("WHEN"), "{}", lines[0]);
    assert!(
        lines[1].starts_with("Mon 2026-06-01 10:00-11:00") && lines[1].contains(&id),
        "in alice's zone: {}",
        lines[1]
    );
    let listed = alice
        .run(&[&["agenda", "--json"][..], &range].concat())
        .await
        .ok()
        .json();
    let occurrences = listed["occurrences"].as_array().expect("occurrences");
    assert_eq!(occurrences.len(), 2);
    assert_eq!(occurrences[0]["start"], "2026-06-01T10:00:00+02:00");

    // nora's events live in the other events shard: the invitation crosses shards.
    alice.run(&["invite", &id, "nora"]).await.ok();
    let invitations = nora
        .until(&["invitations"], |ran| ran.stdout.contains(&id))
        .await;
    assert!(
        invitations.stdout.contains("needs-action"),
        "{}",
        invitations.stdout
    );
    nora.run(&["rsvp", &id, "accepted"]).await.ok();
    nora.run(&["rsvp", &id, "declined", "--occurrence", "2026-06-08T10:00"])
        .await
        .ok();
    let tally = alice
        .until(&["tally", &id], |ran| {
            ran.stdout.contains("accepted") && ran.stdout.contains("2026-06-08T10:00 declined")
        })
        .await;
    let row = tally
        .stdout
        .lines()
        .find(|line| line.starts_with("nora"))
        .unwrap_or_else(|| panic!("nora in the tally: {}", tally.stdout));
    assert!(
        row.contains("accepted") && row.contains("2026-06-08T10:00 declined"),
        "{row}"
    );
    assert!(
        tally.stdout.contains("counts: accepted 1"),
        "{}",
        tally.stdout
    );

    // nora sees it in her own zone, with her answers.
    let hers = nora.run(&[&["agenda"][..], &range].concat()).await.ok();
    assert!(
        hers.stdout.contains("Mon 2026-06-01 04:00-05:00") && hers.stdout.contains("accepted"),
        "{}",
        hers.stdout
    );

    // An all-day event of Tokyo's days, seen from Madrid (where its instants start the day
    // before, at 17:00): its own dates, not the instants.
    alice
        .run(&[
            "event",
            "create",
            "--title",
            "Offsite",
            "--all-day",
            "--start",
            "2026-06-22",
            "--end",
            "2026-06-24",
            "--time-zone",
            "Asia/Tokyo",
        ])
        .await
        .ok();
    let days = alice
        .run(&["agenda", "--from", "2026-06-20", "--to", "2026-06-27"])
        .await
        .ok();
    let row = days
        .stdout
        .lines()
        .find(|line| line.contains("Offsite"))
        .unwrap_or_else(|| panic!("the all-day event: {}", days.stdout));
    assert!(
        row.starts_with("Mon 2026-06-22 (all day, 2 days)"),
        "{}",
        days.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_one_line_on_stderr_with_its_exit_code() {
    let cluster = cluster().await;
    let scratch = Scratch::new("errors");
    let alice = scratch.person("alice", &cluster);
    let eve = scratch.person("eve", &cluster);

    // Not logged in yet.
    alice.run(&["agenda"]).await.failed(3, "unauthenticated");
    alice.sign_up("UTC").await;
    eve.sign_up("UTC").await;

    // The server refuses the input.
    alice
        .run(&["event", "create", "--title", "X", "--start", "tomorrow"])
        .await
        .failed(1, "invalid");
    // The command line refuses it before any server is asked.
    alice
        .run(&[
            "event",
            "update",
            "alice.0123456789abcdef",
            "--scope",
            "this",
        ])
        .await
        .failed(2, "usage");
    alice.run(&["no-such-command"]).await.failed(2, "usage");
    // A command without its subcommand is a usage error too, not a success.
    alice.run(&["kv"]).await.failed(2, "usage");
    alice.run(&["event"]).await.failed(2, "usage");
    // A range past the last date the client can count to is refused, not a panic.
    alice
        .run(&["agenda", "--from", "+262142-12-31"])
        .await
        .failed(2, "usage");
    alice
        .run(&["agenda", "--from", "yesterday"])
        .await
        .failed(2, "usage");
    alice
        .run(&["event", "show", "alice.0123456789abcdef"])
        .await
        .failed(4, "not_found");

    let created = alice
        .run(&[
            "event",
            "create",
            "--title",
            "Mine",
            "--start",
            "2026-06-01T10:00",
            "--end",
            "2026-06-01T11:00",
            "--json",
        ])
        .await
        .ok()
        .json();
    let id = created["id"].as_str().unwrap();
    // Someone else's event is not found, whether or not it exists.
    eve.run(&["event", "show", id]).await.failed(4, "not_found");
    // A change conditional on an old sequence.
    alice
        .run(&["event", "update", id, "--title", "Renamed"])
        .await
        .ok();
    alice
        .run(&[
            "event",
            "update",
            id,
            "--title",
            "Again",
            "--if-sequence",
            "0",
        ])
        .await
        .failed(5, "conflict");

    // No server at all.
    let nowhere = run_in(
        &alice.config,
        &["cluster", "status", "--server", "http://127.0.0.1:1"],
        "",
    )
    .await;
    nowhere.failed(1, "unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_read_and_write_keys_and_see_every_shard() {
    let cluster = cluster().await;
    let scratch = Scratch::new("operators");
    let urls = http_urls(&cluster);
    let operator = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        for url in &urls {
            all.extend(["--server".to_owned(), url.clone()]);
        }
        all
    };
    let run = |args: Vec<String>| {
        let config = scratch.0.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_in(&config, &args, "").await
        }
    };

    run(operator(&["kv", "get", "us/x"]))
        .await
        .failed(3, "unauthenticated");
    let put = run(operator(&["kv", "put", "us/x", "hello", "--token", TOKEN]))
        .await
        .ok();
    assert!(
        put.stdout.starts_with("put us/x at shard 4 index "),
        "{}",
        put.stdout
    );
    let got = run(operator(&["kv", "get", "us/x", "--token", TOKEN]))
        .await
        .ok();
    assert_eq!(got.stdout, "hello\n");
    let versioned = run(operator(&["kv", "get", "us/x", "--token", TOKEN, "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(versioned["value"], "hello");
    assert!(versioned["mod_index"].as_u64().unwrap() > 0);
    run(operator(&["kv", "get", "us/absent", "--token", TOKEN]))
        .await
        .failed(4, "not_found");

    let txn = r#"{"compare":[{"op":"value_equals","key":"us/x","value":"hello"}],
                  "success":[{"op":"put","key":"us/y","value":"2"},{"op":"get","key":"us/x"}]}"#;
    let ran = run(operator(&["kv", "txn", txn, "--token", TOKEN, "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(ran["succeeded"], true);
    assert_eq!(ran["results"][1]["value"], "hello");
    let got = run(operator(&["kv", "get", "us/y", "--token", TOKEN]))
        .await
        .ok();
    assert_eq!(got.stdout, "2\n");

    // Every shard led and one leader each, at one instant: an election on a busy machine may
    // briefly leave a shard without one, so it is asked until it holds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = run(operator(&["cluster", "status"])).await.ok();
        let settled = status
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .contains("every shard led: true")
            && status.stdout.matches(" leader ").count() == 4;
        if settled {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "never settled: {}",
            status.stdout
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert!(lines[1].starts_with("SHARD"), "{}", status.stdout);
    // Four shards of three replicas each.
    assert_eq!(lines.len(), 2 + 4 * 3, "{}", status.stdout);
    for name in ["events-a-m", "events-n-z", "groups", "users"] {
        assert!(status.stdout.contains(name), "{name}: {}", status.stdout);
    }
    let json = run(operator(&["cluster", "status", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(json["shards"].as_array().unwrap().len(), 4);
}

/// The lines a running process prints, read by a thread per stream; each wait looks at the
/// lines after the one the previous wait found.
struct Lines {
    receiver: mpsc::Receiver<String>,
    seen: Vec<String>,
    next: usize,
}

impl Lines {
    fn read(stream: impl std::io::Read + Send + 'static) -> Lines {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            receiver,
            seen: Vec::new(),
            next: 0,
        }
    }

    /// Waits (without blocking the runtime) for a line for which `wanted` holds, at most
    /// `patience`; answers it.
    async fn wait_for(&mut self, patience: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + patience;
        loop {
            while let Ok(line) = self.receiver.try_recv() {
                self.seen.push(line);
            }
            while self.next < self.seen.len() {
                self.next += 1;
                if wanted(&self.seen[self.next - 1]) {
                    return self.seen[self.next - 1].clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no such line within {patience:?}; seen: {:#?}",
                self.seen
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn count(&mut self, wanted: impl Fn(&str) -> bool) -> usize {
        while let Ok(line) = self.receiver.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().filter(|line| wanted(line)).count()
    }
}

/// Creates an event called `title`.
async fn create(person: &Person, title: &str) -> Ran {
    let args = [
        "event",
        "create",
        "--title",
        title,
        "--start",
        "2026-06-01T10:00",
        "--end",
        "2026-06-01T11:00",
    ];
    person.run(&args).await
}

/// A process killed when dropped (a failed assertion must not leave it running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP relay to one server that can be closed (its connections cut, new ones dropped at
/// once) and opened again: what a client sees of a server that goes away and comes back.
struct Relay {
    url: String,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (accepting, kept) = (open.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let target = target.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                kept.lock().unwrap().push(relay.abort_handle());
            }
        });
        Relay {
            url,
            open,
            connections,
        }
    }

    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    fn ws_url(&self) -> String {
        format!("{}/v1/ws", self.url.replace("http://", "ws://"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_changes_live_and_resumes_after_a_gap_without_a_loss_or_a_repeat() {
    let cluster = cluster().await;
    let scratch = Scratch::new("watch");
    let alice = scratch.person("alice", &cluster);
    alice.sign_up("UTC").await;

    // The watch reaches two servers through relays, which the test cuts and restores.
    let urls = http_urls(&cluster);
    let relays = [
        Relay::start(urls[0].replace("http://", "")).await,
        Relay::start(urls[1].replace("http://", "")).await,
    ];
    let mut watch = Running(
        command(
            &alice.config,
            &[
                "watch",
                "--server",
                &relays[0].url,
                "--server",
                &relays[1].url,
            ],
        )
        .spawn()
        .expect("watch starts"),
    );
    let mut stdout = Lines::read(watch.0.stdout.take().expect("stdout"));
    let mut stderr = Lines::read(watch.0.stderr.take().expect("stderr"));
    let patience = Duration::from_secs(30);
    stderr
        .wait_for(patience, |line| line == "watching user:alice")
        .await;
    let connected = stderr
        .wait_for(patience, |line| line.starts_with("connected to "))
        .await;

    create(&alice, "First").await.ok();
    let first = stdout
        .wait_for(patience, |line| line.contains("\"First\""))
        .await;
    assert!(first.starts_with("user:alice "), "{first}");

    // No server takes the watch back while "Second" is made: it can only come from the
    // resumed subscription.
    for relay in &relays {
        relay.close();
    }
    stderr
        .wait_for(patience, |line| line.starts_with("disconnected from "))
        .await;
    create(&alice, "Second").await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stdout.count(|line| line.contains("\"Second\"")), 0);
    // Back on the other server.
    let other = if connected.ends_with(&relays[0].ws_url()) {
        &relays[1]
    } else {
        &relays[0]
    };
    other.reopen();
    let reconnected = stderr
        .wait_for(patience, |line| line.starts_with("connected to "))
        .await;
    assert_eq!(reconnected, format!("connected to {}", other.ws_url()));
    stdout
        .wait_for(patience, |line| line.contains("\"Second\""))
        .await;

    // A title cannot forge a line: its newline is printed escaped.
    create(&alice, "Third\nuser:alice 1:1 event forged")
        .await
        .ok();
    let third = stdout
        .wait_for(patience, |line| line.contains("\"Third"))
        .await;
    assert!(
        third.contains("\"Third\\nuser:alice 1:1 event forged\""),
        "{third}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stdout.count(|line| line.starts_with("user:alice 1:1 ")), 0);
    for title in ["\"First\"", "\"Second\""] {
        assert_eq!(
            stdout.count(|line| line.contains(title)),
            1,
            "{title}: resumed after the last change seen, nothing missed or twice"
        );
    }
    assert!(
        watch.0.try_wait().expect("try_wait").is_none(),
        "still watching"
    );
}

/// Starts `args` (a watch) and waits for its `connected to URL` line: the process, its
/// stderr, and that line.
async fn connected_watch(config: &Path, args: &[&str]) -> (Running, Lines, String) {
    let mut watch = Running(command(config, args).spawn().expect("watch starts"));
    let mut stderr = Lines::read(watch.0.stderr.take().expect("stderr"));
    let connected = stderr
        .wait_for(Duration::from_secs(30), |line| {
            line.starts_with("connected to ")
        })
        .await;
    (watch, stderr, connected)
}

/// Stops the server that a `connected to URL` line names.
async fn stop_the_one(cluster: &mut TestCluster, connected: &str) {
    let url = connected.trim_start_matches("connected to ");
    let stopped = (1..=3u64)
        .find(|id| cluster.ws_url(*id) == url)
        .unwrap_or_else(|| panic!("connected to a server of the cluster: {url}"));
    cluster.stop(stopped).await;
}

/// The error line an ended command printed on stderr, asserting it printed only one.
async fn the_one_error_line(stderr: &mut Lines, patience: Duration) -> String {
    let last = stderr
        .wait_for(patience, |line| line.starts_with("error"))
        .await;
    // Everything it printed has been read once the pipe's reader saw its end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = stderr.count(|line| line.starts_with("error"));
    assert_eq!(errors, 1, "one error line: {:#?}", stderr.seen);
    last
}

/// Waits for a process's end, at most `patience`; its exit code.
async fn exit_code(child: &mut Child, patience: Duration) -> i32 {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code().expect("an exit code, not a signal");
        }
        assert!(
            Instant::now() < deadline,
            "still running after {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_its_reader_goes_away_or_its_session_is_refused() {
    let mut cluster = cluster().await;
    let scratch = Scratch::new("watch-ends");
    let alice = scratch.person("alice", &cluster);
    alice.sign_up("UTC").await;
    let patience = Duration::from_secs(30);

    // `watch | head -1`: once the reader is gone, the next change ends the watch (exit 0).
    let mut headless = Running(command(&alice.config, &["watch"]).spawn().unwrap());
    drop(headless.0.stdout.take());
    let mut stderr = Lines::read(headless.0.stderr.take().expect("stderr"));
    stderr
        .wait_for(patience, |line| line.starts_with("connected to "))
        .await;
    create(&alice, "Unread").await.ok();
    assert_eq!(exit_code(&mut headless.0, patience).await, 0);

    // With a token and no --server, the stored session's servers (not demo's ports).
    let (operator, _, connected) =
        connected_watch(&alice.config, &["watch", "--token", TOKEN, "kv:us/"]).await;
    let url = connected.trim_start_matches("connected to ");
    assert!(cluster.ws_urls().iter().any(|ws| ws == url), "{url}");
    drop(operator);

    // A session ended elsewhere: the watch's next connection is refused, and it says so once
    // and ends (exit 3) instead of retrying for ever.
    let (mut watch, mut stderr, connected) = connected_watch(&alice.config, &["watch"]).await;
    alice.run(&["logout"]).await.ok();
    stop_the_one(&mut cluster, &connected).await;
    assert_eq!(exit_code(&mut watch.0, patience).await, 3);
    let last = the_one_error_line(&mut stderr, patience).await;
    assert!(
        last.starts_with("error: unauthorized: ") || last.starts_with("error: unauthenticated: "),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_its_only_channel_is_refused_on_reconnection() {
    let mut cluster = cluster().await;
    let scratch = Scratch::new("watch-forbidden");
    let alice = scratch.person("alice", &cluster);
    let bob = scratch.person("bob", &cluster);
    alice.sign_up("UTC").await;
    bob.sign_up("UTC").await;
    alice
        .run(&["group", "create", "team", "--name", "Team"])
        .await
        .ok();
    alice.run(&["group", "add", "team", "bob"]).await.ok();
    let patience = Duration::from_secs(30);

    let (mut watch, mut stderr, connected) =
        connected_watch(&bob.config, &["watch", "group:team"]).await;
    // bob leaves the group: the next server refuses his subscription, the watch's only one.
    alice.run(&["group", "remove", "team", "bob"]).await.ok();
    stop_the_one(&mut cluster, &connected).await;
    assert_eq!(exit_code(&mut watch.0, patience).await, 4);
    let last = the_one_error_line(&mut stderr, patience).await;
    assert!(
        last.starts_with("error: forbidden: group:team: ")
            && last.ends_with("no channel is left to watch"),
        "{last}"
    );
}

#[test]
fn ctrl_c_at_the_password_prompt_puts_the_terminal_back() {
    // `script` (util-linux) gives the command a terminal; the shell after it (which survives
    // the Ctrl-C through its trap) prints the exit code and the terminal's settings.
    let scratch = Scratch::new("ctrl-c");
    let shell = scratch.0.join("login.sh");
    std::fs::write(
        &shell,
        format!(
            "trap 'echo interrupted' INT\n\
             XDG_CONFIG_HOME={} {} login alice --server http://127.0.0.1:1\n\
             echo exit=$?\n\
             stty -a\n",
            scratch.0.display(),
            env!("CARGO_BIN_EXE_server")
        ),
    )
    .unwrap();
    let mut script = Running(
        Command::new("script")
            .args(["-qec", &format!("sh {}", shell.display()), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux) runs"),
    );
    let printed = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = script.0.stdout.take().expect("stdout");
    let kept = printed.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(read @ 1..) = std::io::Read::read(&mut stdout, &mut buffer) {
            kept.lock().unwrap().extend_from_slice(&buffer[..read]);
        }
    });
    let text = || String::from_utf8_lossy(&printed.lock().unwrap()).into_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text().contains("Password:") {
        assert!(Instant::now() < deadline, "no prompt: {:?}", text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdin = script.0.stdin.take().expect("stdin");
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    while !text().contains("speed") {
        assert!(Instant::now() < deadline, "no settings: {:?}", text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = text();
    assert!(text.contains("exit=130"), "{text:?}");
    let flags: Vec<&str> = text.split_whitespace().collect();
    assert!(
        flags.contains(&"echo") && !flags.contains(&"-echo"),
        "the echo is back on: {text:?}"
    );
}

/// A server that answers every request `503 unavailable` (as a server whose shard has no
/// leader does) and keeps the head of each request it was sent.
async fn unavailable_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // The head, then as much body as it announces.
            let head = loop {
                let Ok(read @ 1..) = stream.read(&mut buffer).await else {
                    break None;
                };
                request.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|line| {
                            line.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|n| n.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break Some(head.to_owned());
                    }
                }
            };
            let Some(head) = head else { continue };
            kept.lock().unwrap().push(head);
            let body = r#"{"code":"unavailable","message":"no leader answered in time"}"#;
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (url, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_unknown_outcome_only_reads_and_idempotent_writes_go_to_the_next_server() {
    let scratch = Scratch::new("retries");
    let (first_url, first) = unavailable_server().await;
    let (second_url, second) = unavailable_server().await;
    let alice = Person {
        name: "alice",
        config: scratch.0.join("alice"),
        servers: vec![first_url, second_url],
    };
    // A session as `login` stores it, naming both servers.
    let file = alice.credentials();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let stored = serde_json::json!({
        "user": "alice", "token": "alice.00", "servers": alice.servers, "expires_ms": 0,
    });
    std::fs::write(&file, stored.to_string()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sent = |heads: &Arc<Mutex<Vec<String>>>| -> Vec<String> {
        std::mem::take(&mut *heads.lock().unwrap())
    };

    // A change without an idempotency key: the first server's 503 is the answer.
    alice
        .run(&["event", "update", "alice.0123456789abcdef", "--title", "X"])
        .await
        .failed(1, "unavailable");
    alice
        .run(&["rsvp", "alice.0123456789abcdef", "accepted"])
        .await
        .failed(1, "unavailable");
    assert_eq!(sent(&first).len(), 2);
    assert!(sent(&second).is_empty(), "never sent twice");

    // A creation carries its idempotency key: the second server gets the same one.
    let creation = [
        "event",
        "create",
        "--title",
        "X",
        "--start",
        "2026-06-01T10:00",
        "--end",
        "2026-06-01T11:00",
    ];
    let failed = alice.run(&creation).await.failed(1, "unavailable");
    let key = |head: &str| -> String {
        head.lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("idempotency-key:")
                    .map(|key| key.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("an idempotency key: {head}"))
    };
    let (tried_first, tried_second) = (sent(&first), sent(&second));
    assert_eq!((tried_first.len(), tried_second.len()), (1, 1));
    assert_eq!(key(&tried_first[0]), key(&tried_second[0]));
    assert!(key(&tried_first[0]).len() >= 16);
    // The failure names the key, and a command given it sends it: a script retries safely.
    assert!(
        failed.stderr.contains(&format!(
            "(retry with --idempotency-key {})",
            key(&tried_first[0])
        )),
        "{}",
        failed.stderr
    );
    let again = alice
        .run(&[&creation[..], &["--idempotency-key", "my-key-1"]].concat())
        .await
        .failed(1, "unavailable");
    assert!(
        again
            .stderr
            .contains("(retry with --idempotency-key my-key-1)"),
        "{}",
        again.stderr
    );
    assert_eq!(key(&sent(&first)[0]), "my-key-1");
    assert_eq!(key(&sent(&second)[0]), "my-key-1");
    let txn = alice
        .run(&[
            "kv",
            "txn",
            r#"{"success":[]}"#,
            "--token",
            "t",
            "--request-id",
            "my-request-1",
        ])
        .await
        .failed(1, "unavailable");
    assert!(
        txn.stderr
            .contains("(retry with --request-id my-request-1)"),
        "{}",
        txn.stderr
    );
    for head in sent(&first).iter().chain(&sent(&second)) {
        assert!(
            head.to_ascii_lowercase()
                .contains("request-id: my-request-1"),
            "{head}"
        );
    }

    // A read goes to the next server too.
    alice
        .run(&[
            "agenda",
            "--from",
            "2026-06-01T00:00:00Z",
            "--to",
            "2026-06-08T00:00:00Z",
        ])
        .await
        .failed(1, "unavailable");
    assert_eq!((sent(&first).len(), sent(&second).len()), (1, 1));
}
