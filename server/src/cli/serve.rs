//! `serve` (one server from its configuration) and `demo` (a local cluster of child processes).

use anyhow::{Context, bail};
use server::{ServerAddresses, ServerConfig, StartOptions, default_shards};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub(super) fn serve(path: &Path, init: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    let config: ServerConfig = toml::from_str(&text)
        .with_context(|| format!("parsing the configuration {}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let options = StartOptions {
            init,
            ..StartOptions::default()
        };
        let server = server::start(config, storage::StdFs, options)
            .await
            .context("the server did not start")?;
        let shutdown = server.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: syncing the WAL and closing connections");
            shutdown.cancel();
        });
        server.wait().await.map_err(anyhow::Error::msg)
    })
}

pub(super) async fn wait_for_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match &mut terminate {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

/// The configuration of server `id` of a demo cluster of `servers`.
fn demo_config(
    id: u64,
    servers: usize,
    http_port: u16,
    data_dir: &Path,
    token: &str,
    secret: &str,
) -> ServerConfig {
    let address = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let addresses = (1..=servers as u64)
        .map(|server| {
            let http = http_port + (server as u16 - 1);
            ServerAddresses {
                id: server,
                http: Some(address(http)),
                client: address(http + 1000),
                peer: address(http + 2000),
            }
        })
        .collect();
    ServerConfig {
        server_id: id,
        cluster_id: 1,
        cluster_secret: secret.to_owned(),
        operator_tokens: vec![token.to_owned()],
        tokens: Vec::new(),
        data_dir: data_dir.join(format!("server-{id}")),
        servers: addresses,
        shards: default_shards(servers),
        timing: Default::default(),
        limits: Default::default(),
    }
}

/// Writes a file only its owner may read: it holds the cluster secret and the token.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

pub(super) fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn getrandom_bytes(bytes: &mut [u8]) -> anyhow::Result<()> {
    let mut file = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    file.read_exact(bytes).context("reading /dev/urandom")?;
    Ok(())
}

struct Children(Vec<(u64, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (id, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        eprintln!("server {id} stopped ({status})");
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

pub(super) fn demo(
    servers: usize,
    http_port: u16,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    if usize::from(http_port) + servers + 2000 > usize::from(u16::MAX) {
        bail!("--http-port {http_port} leaves no room for the client and peer ports");
    }
    let data_dir = match data_dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("agenda-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", data_dir.display()))?;
    }
    let token = format!("operator-{}", random_hex()?);
    let secret = random_hex()?;
    let executable = std::env::current_exe().context("finding this program")?;
    let mut children = Children(Vec::new());
    for id in 1..=servers as u64 {
        let config = demo_config(id, servers, http_port, &data_dir, &token, &secret);
        let path = data_dir.join(format!("server-{id}.toml"));
        let text = toml::to_string(&config).context("writing a configuration")?;
        write_private(&path, text.as_bytes())?;
        let fresh = !config.data_dir.join("IDENTITY").exists();
        let mut command = std::process::Command::new(&executable);
        command.arg("serve").arg("--config").arg(&path);
        if fresh {
            command.arg("--init");
        }
        let log = std::fs::File::create(data_dir.join(format!("server-{id}.log")))?;
        command.stdout(log.try_clone()?).stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("starting server {id}"))?;
        children.0.push((id, child));
    }
    let status_url = SocketAddr::from(([127, 0, 0, 1], http_port));
    let deadline = Instant::now() + Duration::from_secs(60);
    let balance_deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        for (id, child) in &mut children.0 {
            if let Some(exit) = child.try_wait()? {
                bail!(
                    "server {id} exited ({exit}); see {}",
                    data_dir.join(format!("server-{id}.log")).display()
                );
            }
        }
        if let Ok(body) = server::probe::get(status_url, "/v1/cluster/status")
            && body.contains("\"all_shards_led\":true")
        {
            // Leaders are handed to their preferred servers a moment after the elections;
            // show the balanced picture when it comes within a few seconds.
            if balanced(&body, servers) || Instant::now() > balance_deadline {
                break body;
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not elect a leader for every shard within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "Agenda demo cluster: {servers} servers, data in {}",
        data_dir.display()
    );
    for id in 1..=servers as u16 {
        println!("  server {id}: http://127.0.0.1:{}", http_port + id - 1);
    }
    println!("token: {token}");
    println!();
    println!(
        "The agenda's page: http://127.0.0.1:{http_port}/ (the cluster: http://127.0.0.1:{http_port}/cluster)"
    );
    println!();
    print_status(&status);
    println!();
    println!("Try it:");
    println!(
        "  curl -X PUT -H 'Authorization: Bearer {token}' --data 'Alice' http://127.0.0.1:{http_port}/v1/kv/us/alice"
    );
    println!(
        "  curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{}/v1/kv/us/alice",
        http_port + 1
    );
    println!("  curl http://127.0.0.1:{http_port}/v1/cluster/status");
    println!(
        "  cargo run -p server -- watch --server ws://127.0.0.1:{http_port}/v1/ws --server ws://127.0.0.1:{}/v1/ws --token {token} kv:us/",
        http_port + 1
    );
    println!();
    println!("Press Ctrl-C to stop the cluster.");
    let _ = std::io::stdout().flush();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let watch_children = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                for (id, child) in &mut children.0 {
                    if let Ok(Some(exit)) = child.try_wait() {
                        return (*id, exit);
                    }
                }
            }
        };
        tokio::select! {
            biased;
            () = wait_for_signal() => {}
            (id, exit) = watch_children => {
                eprintln!("server {id} exited ({exit}); stopping the cluster");
            }
        }
    });
    println!("stopping...");
    drop(children);
    Ok(())
}

/// Whether every shard is led by its preferred leader (the first voter of the default map).
fn balanced(body: &str, servers: usize) -> bool {
    let Ok(status) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let leaders: Vec<u64> = status["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|shard| shard["leader_id"].as_u64().unwrap_or(0))
        .collect();
    let preferred: Vec<u64> = default_shards(servers)
        .iter()
        .map(|shard| shard.voters[0])
        .collect();
    leaders == preferred
}

/// Prints the shards, their leaders and replicas from the status JSON.
fn print_status(body: &str) {
    let Ok(status) = serde_json::from_str::<serde_json::Value>(body) else {
        println!("{body}");
        return;
    };
    println!(
        "{:<12} {:<10} {:>6}  replicas (server:role:applied)",
        "shard", "leader", "term"
    );
    for shard in status["shards"].as_array().into_iter().flatten() {
        let replicas: Vec<String> = shard["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|replica| {
                format!(
                    "{}:{}:{}",
                    replica["server_id"],
                    replica["role"].as_str().unwrap_or("?"),
                    replica["applied_index"]
                )
            })
            .collect();
        println!(
            "{:<12} {:<10} {:>6}  {}",
            shard["name"].as_str().unwrap_or("?"),
            format!("server {}", shard["leader_id"]),
            shard["term"],
            replicas.join("  ")
        );
    }
}
