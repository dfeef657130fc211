//! The operators' commands: `kv get|put|txn` with an operator token (`--token` or
//! `AGENDA_TOKEN`), and `cluster status`. Writes carry a `Request-Id`, which the servers apply
//! once however often it arrives, so they are retried on another server like reads.

use super::ClientOptions;
use super::client::{Call, Http, Reply, encode, random_id};
use super::error::{CliError, Exit};
use super::output::{self, Table, field, text};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};
use std::io::Read;

/// The operator token.
#[derive(Args, Debug, Clone)]
pub(super) struct Token {
    /// An operator token of the servers' configuration (`demo` prints one).
    #[arg(long, global = true, env = "AGENDA_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `kv ...`.
#[derive(Subcommand, Debug)]
pub(super) enum KvCommand {
    /// Reads a key (linearizable unless `--stale`).
    Get {
        /// The key.
        key: String,
        /// Reads the answering server's replica, which may lag.
        #[arg(long)]
        stale: bool,
    },
    /// Writes a value (`-` reads it from stdin).
    Put {
        /// The key.
        key: String,
        /// The value (UTF-8 text), or `-` for stdin.
        value: String,
        #[command(flatten)]
        once: Once,
    },
    /// Runs a transaction: the JSON body of `POST /v1/txn` (`compare`, `success`,
    /// `failure`), as an argument or on stdin (`-` or nothing).
    Txn {
        /// The transaction as JSON.
        body: Option<String>,
        #[command(flatten)]
        once: Once,
    },
}

/// The request id of a write.
#[derive(Args, Debug, Clone)]
pub(super) struct Once {
    /// The request id to send (default: a random one): run the command again with the id its
    /// failure printed, and the servers apply the write at most once.
    #[arg(long)]
    request_id: Option<String>,
}

/// `cluster ...`.
#[derive(Subcommand, Debug)]
pub(super) enum ClusterCommand {
    /// Every shard: its leader, term, and each replica's role, commit and applied index.
    Status,
}

impl Token {
    fn require(&self) -> Result<&str, CliError> {
        self.token.as_deref().ok_or_else(|| {
            CliError::new(
                Exit::Unauthenticated,
                "unauthenticated",
                "kv needs an operator token: --token or AGENDA_TOKEN",
            )
        })
    }
}

fn read_stdin(what: &str) -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|error| CliError::usage(format!("reading {what} from stdin: {error}")))?;
    Ok(text)
}

/// Sends a write with the operator token and a request id: the one given, else a random
/// one, so that only this command's own attempts share it. The servers apply it once however
/// many arrive, so it may go to the next server after an unknown outcome; a failure with an
/// unknown outcome names the id to run the command again with.
async fn write_once(http: &Http, token: &Token, once: Once, call: Call) -> Result<Reply, CliError> {
    let id = match once.request_id {
        Some(id) => id,
        None => format!("cli-{}", random_id()?),
    };
    let call = call
        .token(token.require()?)
        .header("request-id", id.clone())
        .safe();
    http.json(&call)
        .await
        .map_err(|error| error.retry_with("--request-id", &id))
}

fn key_path(key: &str) -> Result<String, CliError> {
    if key.is_empty() {
        return Err(CliError::usage("the key is empty"));
    }
    Ok(format!("/v1/kv/{}", encode(key, true)))
}

pub(super) async fn kv(
    options: &ClientOptions,
    token: &Token,
    command: KvCommand,
) -> Result<(), CliError> {
    let http = Http::new(options.endpoints_without_session()?);
    match command {
        KvCommand::Get { key, stale } => {
            let mut path = key_path(&key)?;
            if stale {
                path.push_str("?consistency=stale");
            }
            let call = Call::get(path).token(token.require()?);
            let answer = http.send(&call).await?;
            if options.json {
                let index = |name: &str| {
                    answer
                        .headers
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<u64>().ok())
                };
                output::json(&json!({
                    "key": key,
                    "value": answer.text(),
                    "create_index": index("x-create-index"),
                    "mod_index": index("x-mod-index"),
                }));
            } else {
                output::line(&answer.text());
            }
        }
        KvCommand::Put { key, value, once } => {
            let value = if value == "-" {
                read_stdin("the value")?
            } else {
                value
            };
            let call = Call::write(Method::PUT, key_path(&key)?).text(value);
            let answer = write_once(&http, token, once, call).await?;
            if options.json {
                output::reply(&answer);
            } else {
                output::line(&format!(
                    "put {key} at shard {} index {}",
                    field(&answer, "shard"),
                    field(&answer, "index")
                ));
            }
        }
        KvCommand::Txn { body, once } => {
            let body = match body.as_deref() {
                None | Some("-") => read_stdin("the transaction")?,
                Some(text) => text.to_owned(),
            };
            let body: Value = serde_json::from_str(&body).map_err(|error| {
                CliError::usage(format!("the transaction is not JSON: {error}"))
            })?;
            let call = Call::write(Method::POST, "/v1/txn").json(&body);
            let answer = write_once(&http, token, once, call).await?;
            if options.json {
                output::reply(&answer);
            } else {
                print_txn(&answer);
            }
        }
    }
    Ok(())
}

fn print_txn(answer: &Value) {
    let branch = if answer["succeeded"] == true {
        "success"
    } else {
        "failure"
    };
    output::line(&format!(
        "{branch} branch ran at shard {} index {}",
        field(answer, "shard"),
        field(answer, "index")
    ));
    let mut table = Table::new(&["OP", "RESULT"]);
    for result in answer["results"].as_array().into_iter().flatten() {
        let outcome = match field(result, "op").as_str() {
            "get" if result["value"].is_null() => "absent".to_owned(),
            "get" => format!(
                "{} (mod index {})",
                field(result, "value"),
                field(result, "mod_index")
            ),
            "delete" => format!("deleted: {}", field(result, "deleted")),
            _ => "ok".to_owned(),
        };
        table.row(vec![field(result, "op"), outcome]);
    }
    if !table.is_empty() {
        output::line(&table.render());
    }
}

pub(super) async fn cluster(
    options: &ClientOptions,
    command: ClusterCommand,
) -> Result<(), CliError> {
    let ClusterCommand::Status = command;
    let http = Http::new(options.endpoints_without_session()?);
    let status = http.json(&Call::get("/v1/cluster/status")).await?;
    if options.json {
        output::reply(&status);
        return Ok(());
    }
    output::line(&format!(
        "as seen by server {}; every shard led: {}",
        field(&status, "server_id"),
        field(&status, "all_shards_led")
    ));
    let mut table = Table::new(&[
        "SHARD", "NAME", "LEADER", "TERM", "REPLICA", "ROLE", "COMMIT", "APPLIED",
    ]);
    for shard in status["shards"].as_array().into_iter().flatten() {
        let leader = match shard["leader_id"].as_u64() {
            Some(0) | None => "none".to_owned(),
            Some(id) => id.to_string(),
        };
        for (index, replica) in shard["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            // The shard's own columns on its first row only, so that shards stand apart.
            let shard_cells = if index == 0 {
                vec![
                    field(shard, "shard"),
                    field(shard, "name"),
                    leader.clone(),
                    field(shard, "term"),
                ]
            } else {
                vec![String::new(); 4]
            };
            let mut row = shard_cells;
            row.extend([
                field(replica, "server_id"),
                field(replica, "role"),
                field(replica, "commit_index"),
                field(replica, "applied_index"),
            ]);
            table.row(row);
        }
    }
    table.print_or("no shards");
    let unreachable: Vec<String> = status["unreachable"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if !unreachable.is_empty() {
        output::line(&format!("unreachable servers: {}", unreachable.join(", ")));
    }
    Ok(())
}
