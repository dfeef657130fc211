//! The command line of the `server` binary: `serve` and `demo` run servers; every other
//! command is a client of a running cluster (docs/cli.md): the agenda for people, `kv` and
//! `cluster` for operators, `watch` for live changes.
//!
//! | module | holds |
//! |---|---|
//! | `serve.rs` | `serve` and `demo` |
//! | `client.rs` | the HTTP client: servers tried in turn, which requests may be retried |
//! | `credentials.rs` | the session kept in a file only its owner may read |
//! | `agenda.rs` | users, sessions, events, invitations, groups, free/busy, find-a-time |
//! | `operator.rs` | `kv` and `cluster status` |
//! | `watch.rs` | live changes over the WebSocket gateway |
//! | `output.rs` | tables, times in the user's zone, stdout that tolerates a closed pipe |
//! | `error.rs` | the one-line errors and the exit codes |

mod agenda;
mod client;
mod credentials;
mod error;
mod operator;
mod output;
mod serve;
mod watch;

use clap::{Args, Parser, Subcommand};
use error::CliError;
use std::path::PathBuf;
use std::process::ExitCode;

/// An Agenda server: sharded, replicated (Raft) key-value storage for the team calendar, and
/// its command-line client.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: tracing::Level,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs one server from a TOML configuration file.
    Serve {
        /// The configuration file (server id, addresses, peers, data directory, shard map,
        /// timeouts, cluster secret, operator tokens).
        #[arg(long)]
        config: PathBuf,
        /// Creates the data directory and bootstraps this server's shards. Only for a new
        /// server: a directory that already holds data is refused, and without this flag a
        /// missing directory is refused too (a server never rejoins with a blank state).
        #[arg(long)]
        init: bool,
    },
    /// Starts a local cluster: N servers as child processes on loopback, each with its own
    /// data directory, the four default shards laid over them; prints the URLs, the cluster's
    /// status and an example; stops everything on Ctrl-C.
    Demo {
        /// How many servers (3 to 12).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(3..=12))]
        servers: u16,
        /// The HTTP port of server 1; server i listens on this plus i - 1. Client ports are
        /// 1000 above, peer ports 2000 above.
        #[arg(long, default_value_t = 8081)]
        http_port: u16,
        /// Where the data directories go (default: a new directory under the system's
        /// temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(Box<ClientCommand>),
}

/// The commands that talk to a running cluster.
#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Prints the committed changes of channels live, over the WebSocket gateway, one line
    /// each; reconnects (to the next server when one is down) and resumes by itself.
    Watch {
        #[command(flatten)]
        client: ClientOptions,
        /// An operator or scoped token (`demo` prints one); without it, the stored session.
        #[arg(long, env = "AGENDA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The channels: `user:NAME`, `group:ID`, `event:ID` (with a session), `kv:PREFIX`,
        /// `shard:ID` (with a token). Default: `user:<me>`.
        channels: Vec<String>,
    },
    /// Creates an account.
    Register {
        #[command(flatten)]
        client: ClientOptions,
        #[command(flatten)]
        command: agenda::RegisterArgs,
    },
    /// Logs in and keeps the session in the credentials file (owner-only permissions).
    Login {
        #[command(flatten)]
        client: ClientOptions,
        #[command(flatten)]
        command: agenda::LoginArgs,
    },
    /// Ends the stored session on the servers and removes the credentials file.
    Logout {
        #[command(flatten)]
        client: ClientOptions,
    },
    /// The occurrences of your events and invitations in a range (default: this week).
    Agenda {
        #[command(flatten)]
        client: ClientOptions,
        #[command(flatten)]
        range: agenda::Range,
    },
    /// Creates, changes, shows or deletes an event.
    Event {
        #[command(flatten)]
        client: ClientOptions,
        #[command(subcommand)]
        command: agenda::EventCommand,
    },
    /// Adds users (or `group:ID`) to an event's attendees.
    Invite {
        #[command(flatten)]
        client: ClientOptions,
        /// The event's id.
        event: String,
        /// User names, or `group:ID` for every member of a group.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Answers an invitation: accepted, declined or tentative.
    Rsvp {
        #[command(flatten)]
        client: ClientOptions,
        #[command(flatten)]
        command: agenda::RsvpArgs,
    },
    /// Your invitations (unanswered ones; `--all` for every one not cancelled).
    Invitations {
        #[command(flatten)]
        client: ClientOptions,
        /// Every invitation not cancelled, answered or not.
        #[arg(long)]
        all: bool,
    },
    /// Every invited user's answer to your event, and the counts.
    Tally {
        #[command(flatten)]
        client: ClientOptions,
        /// The event's id.
        event: String,
    },
    /// Groups: create, list, show, add or remove members.
    Group {
        #[command(flatten)]
        client: ClientOptions,
        #[command(subcommand)]
        command: agenda::GroupCommand,
    },
    /// The busy times of users in a range (default: this week).
    Freebusy {
        #[command(flatten)]
        client: ClientOptions,
        /// The users.
        #[arg(required = true)]
        users: Vec<String>,
        #[command(flatten)]
        range: agenda::Range,
    },
    /// The first slots when every user (and every member of a group) is free and working.
    FindTime {
        #[command(flatten)]
        client: ClientOptions,
        #[command(flatten)]
        command: agenda::FindTimeArgs,
    },
    /// Operators: read and write keys, run transactions (needs an operator token).
    Kv {
        #[command(flatten)]
        client: ClientOptions,
        #[command(flatten)]
        token: operator::Token,
        #[command(subcommand)]
        command: operator::KvCommand,
    },
    /// Operators: the cluster's shards and replicas.
    Cluster {
        #[command(flatten)]
        client: ClientOptions,
        #[command(subcommand)]
        command: operator::ClusterCommand,
    },
}

/// What every client command takes: where the servers are, where the session is, how to
/// print.
#[derive(Args, Debug, Clone)]
struct ClientOptions {
    /// A server's URL (`http://127.0.0.1:8081`; a `ws://` URL is taken too); repeat it for
    /// several, tried in turn. Default: the servers of the stored session, else
    /// http://127.0.0.1:8081 to 8084.
    #[arg(
        long = "server",
        global = true,
        env = "AGENDA_SERVER",
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// The credentials file (default: $XDG_CONFIG_HOME/agenda/credentials, or
    /// ~/.config/agenda/credentials).
    #[arg(long, global = true, env = "AGENDA_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// Prints the API's JSON answer as it is, instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve { config, init } => serve::serve(&config, init),
        Command::Demo {
            servers,
            http_port,
            data_dir,
        } => serve::demo(usize::from(servers), http_port, data_dir),
        Command::Client(command) => {
            return match run_client(*command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => error.report(),
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version asked for go to stdout as clap writes them (exit 0); a usage error is
/// one line on stderr (exit 2) — a missing subcommand (`server kv`) too, after the help that
/// lists them.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return CliError::usage("a subcommand is missing (see --help)").report();
        }
        _ => {}
    }
    let text = error.render().to_string();
    let first = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid arguments");
    let first = first.trim().strip_prefix("error: ").unwrap_or(first.trim());
    CliError::usage(format!("{first} (see --help)")).report()
}

fn run_client(command: ClientCommand) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::other("runtime", format!("starting the runtime: {error}")))?;
    runtime.block_on(async move {
        match command {
            ClientCommand::Watch {
                client,
                token,
                channels,
            } => watch::watch(&client, token, channels).await,
            ClientCommand::Register { client, command } => agenda::register(&client, command).await,
            ClientCommand::Login { client, command } => agenda::login(&client, command).await,
            ClientCommand::Logout { client } => agenda::logout(&client).await,
            ClientCommand::Agenda { client, range } => agenda::agenda(&client, &range).await,
            ClientCommand::Event { client, command } => agenda::event(&client, command).await,
            ClientCommand::Invite {
                client,
                event,
                users,
            } => agenda::invite(&client, &event, &users).await,
            ClientCommand::Rsvp { client, command } => agenda::rsvp(&client, command).await,
            ClientCommand::Invitations { client, all } => agenda::invitations(&client, all).await,
            ClientCommand::Tally { client, event } => agenda::tally(&client, &event).await,
            ClientCommand::Group { client, command } => agenda::group(&client, command).await,
            ClientCommand::Freebusy {
                client,
                users,
                range,
            } => agenda::free_busy(&client, &users, &range).await,
            ClientCommand::FindTime { client, command } => {
                agenda::find_time(&client, command).await
            }
            ClientCommand::Kv {
                client,
                token,
                command,
            } => operator::kv(&client, &token, command).await,
            ClientCommand::Cluster { client, command } => operator::cluster(&client, command).await,
        }
    })
}

impl ClientOptions {
    /// The credentials file's path.
    fn credentials_path(&self) -> Result<PathBuf, CliError> {
        credentials::path(self.credentials.as_deref())
    }

    /// The servers to try: `--server` (or `AGENDA_SERVER`), else the stored session's, else
    /// `demo`'s.
    fn endpoints(
        &self,
        stored: Option<&credentials::Credentials>,
    ) -> Result<Vec<client::Endpoint>, CliError> {
        // An empty `AGENDA_SERVER` (or `--server ''`) names no server.
        let given: Vec<String> = self
            .servers
            .iter()
            .filter(|url| !url.trim().is_empty())
            .cloned()
            .collect();
        let urls: Vec<String> = match stored {
            _ if !given.is_empty() => given,
            Some(stored) if !stored.servers.is_empty() => stored.servers.clone(),
            _ => client::DEFAULT_SERVERS.map(str::to_owned).to_vec(),
        };
        urls.iter()
            .map(|url| client::Endpoint::parse(url))
            .collect()
    }

    /// The servers for a command that needs no session: those of the stored one if there is a
    /// usable one (a missing or refused file is no error here: the command does not read the
    /// token).
    fn endpoints_without_session(&self) -> Result<Vec<client::Endpoint>, CliError> {
        let stored = self
            .credentials_path()
            .ok()
            .and_then(|path| credentials::load(&path).ok().flatten());
        self.endpoints(stored.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
