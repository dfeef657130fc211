//! The agenda's commands: accounts and sessions, the agenda over a range, events, invitations
//! and answers, groups, free/busy and finding a time. Each is one or two calls of the HTTP API
//! (docs/agenda-api.md); `--json` prints the API's answer as it is.

use super::ClientOptions;
use super::client::{Call, Http, Reply, encode, random_id};
use super::credentials::{self, Credentials};
use super::error::{CliError, Exit};
use super::output::{self, Table, field, text};
use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use clap::{Args, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Write};

/// `register`.
#[derive(Args, Debug)]
pub(super) struct RegisterArgs {
    /// The user name: 3 to 32 of a-z, 0-9 and `-`.
    name: String,
    /// The name others see.
    #[arg(long)]
    display_name: Option<String>,
    /// The user's IANA time zone (`Europe/Madrid`; default UTC).
    #[arg(long)]
    time_zone: Option<String>,
    /// Reads the password from the first line of stdin, without a prompt.
    #[arg(long)]
    password_stdin: bool,
}

/// `login`.
#[derive(Args, Debug)]
pub(super) struct LoginArgs {
    /// The user name.
    name: String,
    /// Reads the password from the first line of stdin, without a prompt.
    #[arg(long)]
    password_stdin: bool,
}

/// A range of time: `--from` and `--to`, each an RFC 3339 instant
/// (`2026-06-01T10:00:00+02:00`), a date (`2026-06-01`, midnight in your zone), a wall-clock
/// time in your zone (`2026-06-01T10:00`), `now` or `today`.
#[derive(Args, Debug, Clone, Default)]
pub(super) struct Range {
    /// The start (default: this week's Monday, 00:00 in your zone).
    #[arg(long)]
    from: Option<String>,
    /// The end, exclusive (default: 7 days after the start).
    #[arg(long)]
    to: Option<String>,
}

/// `event ...`.
#[derive(Subcommand, Debug)]
pub(super) enum EventCommand {
    /// Creates an event (retried safely: the request carries an idempotency key).
    Create(EventCreate),
    /// Shows an event.
    Show {
        /// The event's id.
        id: String,
    },
    /// Changes an event: the whole series (default), one occurrence, or it and the following.
    Update(EventUpdate),
    /// Deletes an event, one occurrence, or it and the following.
    Delete {
        /// The event's id.
        id: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

/// `event create`.
#[derive(Args, Debug)]
pub(super) struct EventCreate {
    /// The title.
    #[arg(long)]
    title: String,
    /// The start: RFC 3339, or a wall-clock time of the event's zone (`2026-06-01T10:00`);
    /// a date for an all-day event.
    #[arg(long)]
    start: String,
    /// The end, in the forms of `--start` (optional for an all-day event of one day).
    #[arg(long)]
    end: Option<String>,
    /// The event's IANA zone (default: yours).
    #[arg(long)]
    time_zone: Option<String>,
    /// A whole-day event: `--start` and `--end` are dates, the end exclusive.
    #[arg(long)]
    all_day: bool,
    /// A recurrence rule (`FREQ=WEEKLY;BYDAY=MO;COUNT=10`).
    #[arg(long)]
    rrule: Option<String>,
    /// An occurrence left out of the series (its start); repeat for several.
    #[arg(long = "exdate")]
    exdates: Vec<String>,
    /// Where.
    #[arg(long)]
    location: Option<String>,
    /// Free text.
    #[arg(long)]
    description: Option<String>,
    /// A user or `group:ID` to invite; repeat, or separate with commas.
    #[arg(long = "attendee", value_delimiter = ',')]
    attendees: Vec<String>,
    /// The idempotency key to send (default: a random one): run the command again with the
    /// key its failure printed, and the event is made at most once.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Which occurrences a change or a deletion covers.
#[derive(Args, Debug, Clone)]
pub(super) struct ScopeArgs {
    /// `all` (the series, default), `this` (one occurrence) or `following` (it and the rest).
    #[arg(long, value_enum)]
    scope: Option<Scope>,
    /// The occurrence for `this` and `following`: its original start (`2026-06-08T10:00` in
    /// the event's zone, or RFC 3339).
    #[arg(long)]
    occurrence: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    All,
    This,
    Following,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::This => "this",
            Scope::Following => "following",
        }
    }
}

impl ScopeArgs {
    fn check(&self) -> Result<(), CliError> {
        match (self.scope, &self.occurrence) {
            (Some(Scope::This | Scope::Following), None) => Err(CliError::usage(
                "--scope this and --scope following need --occurrence",
            )),
            (None | Some(Scope::All), Some(_)) => Err(CliError::usage(
                "--occurrence goes with --scope this or --scope following",
            )),
            _ => Ok(()),
        }
    }
}

/// `event update`.
#[derive(Args, Debug)]
pub(super) struct EventUpdate {
    /// The event's id.
    id: String,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Changes only if the event is still at this sequence (as `event show` gave it).
    #[arg(long)]
    if_sequence: Option<u32>,
    /// A new title.
    #[arg(long)]
    title: Option<String>,
    /// A new description.
    #[arg(long)]
    description: Option<String>,
    /// A new place.
    #[arg(long)]
    location: Option<String>,
    /// A new start (with `--end`).
    #[arg(long, requires = "end")]
    start: Option<String>,
    /// A new end (with `--start`).
    #[arg(long, requires = "start")]
    end: Option<String>,
    /// A new recurrence rule.
    #[arg(long, conflicts_with = "no_rrule")]
    rrule: Option<String>,
    /// Ends the recurrence: a single event.
    #[arg(long)]
    no_rrule: bool,
    /// The new attendee list (users and `group:ID`; repeat, or separate with commas). To add
    /// attendees to the list, use `invite`.
    #[arg(long = "attendee", value_delimiter = ',')]
    attendees: Option<Vec<String>>,
}

/// The answers to an invitation.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Accepted,
    Declined,
    Tentative,
}

/// `rsvp`.
#[derive(Args, Debug)]
pub(super) struct RsvpArgs {
    /// The event's id.
    event: String,
    /// The answer.
    #[arg(value_enum)]
    response: Answer,
    /// Answers one occurrence only (its original start) instead of the series.
    #[arg(long)]
    occurrence: Option<String>,
}

/// `group ...`.
#[derive(Subcommand, Debug)]
pub(super) enum GroupCommand {
    /// Creates a group that you own.
    Create {
        /// The group's id: 3 to 32 of a-z, 0-9 and `-`.
        id: String,
        /// Its name.
        #[arg(long)]
        name: String,
    },
    /// Your groups and your role in each.
    List,
    /// A group and its members (members only).
    Show {
        /// The group's id.
        id: String,
    },
    /// Adds a member or changes a member's role.
    Add {
        /// The group's id.
        id: String,
        /// The user.
        user: String,
        /// `member` (default) or `admin` (the owner only).
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Removes a member (yourself: leaves the group).
    Remove {
        /// The group's id.
        id: String,
        /// The user.
        user: String,
    },
}

/// `find-time`.
#[derive(Args, Debug)]
pub(super) struct FindTimeArgs {
    /// Users who must all be free; repeat, or separate with commas.
    #[arg(long = "users", value_delimiter = ',')]
    users: Vec<String>,
    /// A group whose members must all be free.
    #[arg(long)]
    group: Option<String>,
    /// How long, in minutes.
    #[arg(long)]
    minutes: u32,
    /// At most this many slots (default 10, at most 50).
    #[arg(long)]
    max: Option<u32>,
    /// The start (default: now), in the forms of `agenda --from`.
    #[arg(long)]
    from: Option<String>,
    /// The end (default: 7 days after the start).
    #[arg(long)]
    to: Option<String>,
}

/// A command's link to the cluster, with the stored session.
struct Session {
    http: Http,
    credentials: Credentials,
    json: bool,
    zone: Option<Tz>,
}

impl Session {
    fn open(options: &ClientOptions) -> Result<Session, CliError> {
        let path = options.credentials_path()?;
        let credentials = credentials::require(&path)?;
        let http = Http::new(options.endpoints(Some(&credentials))?);
        Ok(Session {
            http,
            credentials,
            json: options.json,
            zone: None,
        })
    }

    fn token(&self) -> &str {
        &self.credentials.token
    }

    async fn get(&self, path: &str) -> Result<Reply, CliError> {
        self.http.json(&Call::get(path).token(self.token())).await
    }

    async fn send(&self, call: Call) -> Result<Reply, CliError> {
        self.http.json(&call.token(self.token())).await
    }

    /// The user's zone (from `GET /v1/me`, asked once).
    async fn zone(&mut self) -> Result<Tz, CliError> {
        if let Some(zone) = self.zone {
            return Ok(zone);
        }
        let me = self.get("/v1/me").await?;
        let zone = output::zone(me["time_zone"].as_str().unwrap_or("UTC"));
        self.zone = Some(zone);
        Ok(zone)
    }

    /// Prints `answer` as JSON with `--json`, else through `table`.
    fn show(&self, answer: &Reply, table: impl FnOnce(&Value)) {
        if self.json {
            output::reply(answer);
        } else {
            table(answer);
        }
    }
}

/// Reads a password: one line of stdin. On a terminal (without `--password-stdin`) it prompts
/// on stderr first and turns the terminal's echo off while the password is typed, through
/// `stty` (no terminal code of its own; where `stty` is missing the password is echoed). The
/// terminal's settings are saved first (`stty -g`) and put back when the line is read, and on
/// Ctrl-C too (the command then exits 130, as a shell reports an interrupted one).
async fn read_password(password_stdin: bool) -> Result<String, CliError> {
    let read = || -> Result<String, CliError> {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|error| {
                CliError::usage(format!("reading the password from stdin: {error}"))
            })?;
        Ok(line)
    };
    let line = if !password_stdin && std::io::stdin().is_terminal() {
        use tokio::signal::unix::{SignalKind, signal};
        // Listening before the echo goes off: a Ctrl-C from then on is ours to handle.
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|error| CliError::other("signal", format!("listening for Ctrl-C: {error}")))?;
        // The echo goes off before the prompt shows: what is typed after it is never echoed.
        let quiet = NoEcho::start();
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
        let reading = tokio::task::spawn_blocking(read);
        tokio::select! {
            line = reading => {
                drop(quiet);
                line.map_err(|error| CliError::other("internal", error.to_string()))??
            }
            _ = interrupt.recv() => {
                drop(quiet);
                std::process::exit(130);
            }
        }
    } else {
        read()?
    };
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(CliError::usage("no password on stdin"));
    }
    Ok(password)
}

/// The terminal's echo, off from `start` until dropped, when the settings saved before are
/// put back.
struct NoEcho {
    saved: Option<String>,
}

impl NoEcho {
    fn start() -> NoEcho {
        let saved = stty(&["-g"]).filter(|saved| !saved.is_empty());
        stty(&["-echo"]);
        NoEcho { saved }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        match &self.saved {
            Some(saved) => stty(&[saved.as_str()]),
            None => stty(&["echo"]),
        };
        // The Enter that ended the password was not echoed either.
        eprintln!();
    }
}

/// Runs `stty` on the terminal that is stdin and answers what it printed; a failure only
/// leaves the terminal as it was.
fn stty(arguments: &[&str]) -> Option<String> {
    let output = std::process::Command::new("stty")
        .args(arguments)
        .stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

pub(super) async fn register(
    options: &ClientOptions,
    command: RegisterArgs,
) -> Result<(), CliError> {
    let password = read_password(command.password_stdin).await?;
    let http = Http::new(options.endpoints_without_session()?);
    let mut body = json!({"name": command.name, "password": password});
    if let Some(display_name) = &command.display_name {
        body["display_name"] = json!(display_name);
    }
    if let Some(zone) = &command.time_zone {
        body["time_zone"] = json!(zone);
    }
    let profile = http
        .json(&Call::write(Method::POST, "/v1/users").json(&body))
        .await?;
    if options.json {
        output::reply(&profile);
    } else {
        output::line(&format!(
            "registered {} (time zone {}); now run `login {}`",
            field(&profile, "name"),
            field(&profile, "time_zone"),
            field(&profile, "name"),
        ));
    }
    Ok(())
}

pub(super) async fn login(options: &ClientOptions, command: LoginArgs) -> Result<(), CliError> {
    let path = options.credentials_path()?;
    let password = read_password(command.password_stdin).await?;
    let http = Http::new(options.endpoints_without_session()?);
    let body = json!({"name": command.name, "password": password});
    let session = http
        .json(&Call::write(Method::POST, "/v1/sessions").json(&body))
        .await?;
    let (Some(token), Some(user)) = (session["token"].as_str(), session["user"].as_str()) else {
        return Err(CliError::other(
            "bad_answer",
            "the server's answer has no token",
        ));
    };
    let credentials = Credentials {
        user: user.to_owned(),
        token: token.to_owned(),
        servers: http.servers().iter().map(|server| server.url()).collect(),
        expires_ms: session["expires_ms"].as_i64().unwrap_or(0),
    };
    // The session this file held is ended before the file forgets it (best effort: it may
    // have ended already, or the file may not parse), so that no forgotten token lives on.
    if let Ok(Some(previous)) = credentials::load_to_discard(&path)
        && previous.token != credentials.token
    {
        let _ = end_session(&http, &previous.token).await;
    }
    credentials::store(&path, &credentials)?;
    if options.json {
        output::reply(&session);
    } else {
        output::line(&format!(
            "logged in as {user} until {} UTC; session kept in {}",
            output::ms_in_zone(credentials.expires_ms, Tz::UTC),
            path.display()
        ));
    }
    Ok(())
}

pub(super) async fn logout(options: &ClientOptions) -> Result<(), CliError> {
    let path = options.credentials_path()?;
    // A file that others could read is read all the same: ending its session and removing
    // it is what to do with it.
    let Some(stored) = credentials::load_to_discard(&path)? else {
        return Err(CliError::new(
            Exit::Unauthenticated,
            "unauthenticated",
            format!("not logged in (no {})", path.display()),
        ));
    };
    let http = Http::new(options.endpoints(Some(&stored))?);
    match end_session(&http, &stored.token).await {
        Ok(()) => {}
        // The session had already ended (expired, revoked, a new password): forget it too.
        Err(error) if error.code() == "unauthenticated" => {}
        Err(error) => return Err(error),
    }
    credentials::remove(&path)?;
    if options.json {
        output::json(&json!({"user": stored.user, "logged_out": true}));
    } else {
        output::line(&format!("logged out {}", stored.user));
    }
    Ok(())
}

/// Ends the session of `token` on the servers (at once, on every one).
async fn end_session(http: &Http, token: &str) -> Result<(), CliError> {
    let call = Call::write(Method::DELETE, "/v1/sessions/current").token(token);
    http.json(&call).await.map(drop)
}

/// The instants of a range, as RFC 3339 for the API.
async fn resolve(
    session: &mut Session,
    range: &Range,
    default_from: Start,
) -> Result<(String, String), CliError> {
    let from = match &range.from {
        Some(text) => instant(session, "--from", text).await?,
        None => {
            let zone = session.zone().await?;
            default_from.instant(zone)
        }
    };
    let to = match &range.to {
        Some(text) => instant(session, "--to", text).await?,
        None => week_after(from).ok_or_else(|| {
            CliError::usage("--from is too far in the future for a range of 7 days after it")
        })?,
    };
    if to <= from {
        return Err(CliError::usage("--to must be after --from"));
    }
    Ok((rfc3339(from), rfc3339(to)))
}

/// Where a range starts when `--from` is not given.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// This week's Monday at midnight.
    ThisWeek,
    /// Now.
    Now,
}

impl Start {
    fn instant(self, zone: Tz) -> DateTime<Tz> {
        let now = now_in(zone);
        match self {
            Start::Now => now,
            Start::ThisWeek => {
                let monday =
                    now.date_naive() - Days::days(i64::from(now.weekday().num_days_from_monday()));
                local(zone, monday.and_hms_opt(0, 0, 0).unwrap_or_default()).unwrap_or(now)
            }
        }
    }
}

/// A week later on the wall clock, so that a week over a change of daylight saving time still
/// ends at the time of day it started; `None` past the last time chrono can hold.
fn week_after(from: DateTime<Tz>) -> Option<DateTime<Tz>> {
    let week = Days::days(7);
    let wall = from.naive_local().checked_add_signed(week)?;
    local(from.timezone(), wall).or_else(|| from.checked_add_signed(week))
}

fn now_in(zone: Tz) -> DateTime<Tz> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0);
    let utc = DateTime::from_timestamp_millis(ms).unwrap_or_default();
    zone.from_utc_datetime(&utc.naive_utc())
}

/// A wall-clock time of `zone` as an instant: the earlier one in a fold, the time after a gap.
fn local(zone: Tz, wall: NaiveDateTime) -> Option<DateTime<Tz>> {
    zone.from_local_datetime(&wall).earliest().or_else(|| {
        let later = wall.checked_add_signed(Days::hours(1))?;
        zone.from_local_datetime(&later).earliest()
    })
}

fn rfc3339(instant: DateTime<Tz>) -> String {
    instant.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One end of a range (see [`Range`]); the user's zone is asked only when the text needs it.
async fn instant(session: &mut Session, flag: &str, text: &str) -> Result<DateTime<Tz>, CliError> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&Tz::UTC));
    }
    let wall = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|date| date.and_hms_opt(0, 0, 0))
        });
    let zone = match (wall, text) {
        (Some(_), _) | (None, "now" | "today") => session.zone().await?,
        (None, _) => {
            return Err(CliError::usage(format!(
                "{flag} {text:?}: expected RFC 3339, YYYY-MM-DD, YYYY-MM-DDTHH:MM, now or today"
            )));
        }
    };
    let wall = match (wall, text) {
        (Some(wall), _) => wall,
        (None, "today") => now_in(zone)
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default(),
        _ => return Ok(now_in(zone)),
    };
    local(zone, wall)
        .ok_or_else(|| CliError::usage(format!("{flag} {text:?}: not a time in {zone}")))
}

pub(super) async fn agenda(options: &ClientOptions, range: &Range) -> Result<(), CliError> {
    let mut session = Session::open(options)?;
    let (from, to) = resolve(&mut session, range, Start::ThisWeek).await?;
    let path = format!(
        "/v1/agenda?from={}&to={}",
        encode(&from, false),
        encode(&to, false)
    );
    let answer = session.get(&path).await?;
    session.show(&answer, |answer| {
        let mut table = Table::new(&["WHEN", "TITLE", "LOCATION", "ORGANIZER", "ANSWER", "EVENT"]);
        for entry in answer["occurrences"].as_array().into_iter().flatten() {
            let answer = if entry["organizer"] == true {
                "organizer".to_owned()
            } else {
                field(entry, "response")
            };
            table.row(vec![
                when(entry),
                field(entry, "title"),
                field(entry, "location"),
                field(entry, "owner"),
                answer,
                field(entry, "event_id"),
            ]);
        }
        table.print_or(&format!("nothing from {from} to {to}"));
    });
    Ok(())
}

/// When an agenda entry happens: an all-day occurrence by its date in the event's own zone
/// (`Mon 2026-06-01 (all day)`, or `(all day, 3 days)`), which a calendar shows whatever the
/// reader's zone; a timed one as the span of its instants in the reader's zone.
fn when(entry: &Value) -> String {
    if entry["all_day"] != true {
        return output::span(&field(entry, "start"), &field(entry, "end"));
    }
    let day = output::local_time(&field(entry, "day"));
    let length = match (entry["start_ms"].as_i64(), entry["end_ms"].as_i64()) {
        (Some(start), Some(end)) => (end.saturating_sub(start) as f64 / 86_400_000.0).round(),
        _ => 1.0,
    };
    if length > 1.0 {
        format!("{day} (all day, {length} days)")
    } else {
        format!("{day} (all day)")
    }
}

pub(super) async fn event(options: &ClientOptions, command: EventCommand) -> Result<(), CliError> {
    let session = Session::open(options)?;
    match command {
        EventCommand::Create(create) => create_event(&session, create).await,
        EventCommand::Show { id } => {
            let event = session.get(&event_path(&id)).await?;
            session.show(&event, print_event);
            Ok(())
        }
        EventCommand::Update(update) => update_event(&session, update).await,
        EventCommand::Delete { id, scope } => {
            scope.check()?;
            let mut path = event_path(&id);
            if let (Some(scope), Some(occurrence)) = (scope.scope, &scope.occurrence) {
                path.push_str(&format!(
                    "?scope={}&occurrence={}",
                    scope.as_str(),
                    encode(occurrence, false)
                ));
            }
            let answer = session.send(Call::write(Method::DELETE, path)).await?;
            session.show(&answer, |_| {
                let what = match (scope.scope, &scope.occurrence) {
                    (Some(Scope::This), Some(occurrence)) => {
                        format!(" (the occurrence {occurrence})")
                    }
                    (Some(Scope::Following), Some(occurrence)) => {
                        format!(" (from the occurrence {occurrence} on)")
                    }
                    _ => String::new(),
                };
                output::line(&format!("deleted {id}{what}"));
            });
            Ok(())
        }
    }
}

fn event_path(id: &str) -> String {
    format!("/v1/events/{}", encode(id, false))
}

async fn create_event(session: &Session, create: EventCreate) -> Result<(), CliError> {
    let mut body = json!({
        "title": create.title,
        "start": create.start,
        "all_day": create.all_day,
        "exdates": create.exdates,
        "attendees": create.attendees,
    });
    set_given(
        &mut body,
        [
            ("end", create.end),
            ("time_zone", create.time_zone),
            ("rrule", create.rrule),
            ("location", create.location),
            ("description", create.description),
        ],
    );
    // The key makes the creation safe to send again: a retry after a lost answer or a 503
    // gets the event the first attempt made (docs/agenda-api.md), whether the retry is this
    // command's next server or a new command given the same key.
    let key = match create.idempotency_key {
        Some(key) => key,
        None => random_id()?,
    };
    let call = Call::write(Method::POST, "/v1/events")
        .json(&body)
        .header("idempotency-key", key.clone())
        .safe();
    let event = session
        .send(call)
        .await
        .map_err(|error| error.retry_with("--idempotency-key", &key))?;
    session.show(&event, |event| {
        output::line(&format!("created {}", field(event, "id")));
        print_event(event);
    });
    Ok(())
}

/// Sets the fields of `body` that the command line gave.
fn set_given<const N: usize>(body: &mut Value, fields: [(&str, Option<String>); N]) {
    for (name, value) in fields {
        if let Some(value) = value {
            body[name] = json!(value);
        }
    }
}

async fn update_event(session: &Session, update: EventUpdate) -> Result<(), CliError> {
    update.scope.check()?;
    let mut body = json!({});
    set_given(
        &mut body,
        [
            ("title", update.title),
            ("description", update.description),
            ("location", update.location),
            ("start", update.start),
            ("end", update.end),
            ("rrule", update.rrule),
        ],
    );
    if update.no_rrule {
        body["rrule"] = Value::Null;
    }
    if let Some(attendees) = update.attendees {
        body["attendees"] = json!(attendees);
    }
    if body.as_object().is_some_and(|fields| fields.is_empty()) {
        return Err(CliError::usage(
            "nothing to change: give --title, --description, --location, --start and --end, --rrule, --no-rrule or --attendee",
        ));
    }
    if let Some(scope) = update.scope.scope {
        body["scope"] = json!(scope.as_str());
    }
    if let Some(occurrence) = &update.scope.occurrence {
        body["occurrence"] = json!(occurrence);
    }
    if let Some(sequence) = update.if_sequence {
        body["if_sequence"] = json!(sequence);
    }
    let call = Call::write(Method::PATCH, event_path(&update.id)).json(&body);
    let event = session.send(call).await?;
    session.show(&event, |event| {
        output::line(&format!(
            "updated {} (sequence {})",
            field(event, "id"),
            field(event, "sequence")
        ));
        if event["truncated"].is_object() {
            output::line(&format!(
                "the series before it stays as {}",
                field(&event["truncated"], "id")
            ));
        }
        print_event(event);
    });
    Ok(())
}

/// An event as `field value` lines, then its conflicts if the answer reports any.
fn print_event(event: &Value) {
    let schedule = &event["schedule"];
    let list = |value: &Value| -> String {
        value
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut table = Table::headless(2);
    let mut pair = |name: &str, value: String| {
        if !value.is_empty() {
            table.row(vec![name.to_owned(), value]);
        }
    };
    pair("id", field(event, "id"));
    pair("title", field(event, "title"));
    pair(
        "when",
        format!(
            "{} - {} ({})",
            field(schedule, "start"),
            field(schedule, "end"),
            field(schedule, "zone")
        ),
    );
    pair("repeats", field(schedule, "rrule"));
    pair("except", list(&schedule["exdates"]));
    let moved: Vec<String> = schedule["overrides"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(occurrence, to)| {
            format!(
                "{occurrence} to {} - {}",
                field(to, "start"),
                field(to, "end")
            )
        })
        .collect();
    pair("moved", moved.join(", "));
    pair("location", field(event, "location"));
    pair("description", field(event, "description"));
    pair("organizer", field(event, "owner"));
    pair("attendees", list(&event["attendees"]));
    pair("invited", list(&event["invited"]));
    pair("sequence", field(event, "sequence"));
    output::line(&table.render());
    let conflicts = event["conflicts"].as_array().map_or(&[][..], Vec::as_slice);
    if !conflicts.is_empty() {
        output::line(&format!("conflicts ({}):", conflicts.len()));
        for conflict in conflicts {
            output::line(&format!(
                "  {} is busy at the occurrence {}",
                field(conflict, "user"),
                field(conflict, "occurrence")
            ));
        }
    }
}

pub(super) async fn invite(
    options: &ClientOptions,
    event_id: &str,
    users: &[String],
) -> Result<(), CliError> {
    let session = Session::open(options)?;
    // Read, add, write only if nobody changed the event meanwhile (`if_sequence`); a
    // concurrent change is read again, a few times.
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let event = session.get(&event_path(event_id)).await?;
        let mut attendees: Vec<String> = event["attendees"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let before = attendees.len();
        for user in users {
            if !attendees.contains(user) {
                attendees.push(user.clone());
            }
        }
        if attendees.len() == before {
            session.show(&event, |_| {
                output::line(&format!(
                    "{} already invited to {event_id}",
                    users.join(", ")
                ));
            });
            return Ok(());
        }
        let body = json!({"attendees": attendees, "if_sequence": event["sequence"]});
        let call = Call::write(Method::PATCH, event_path(event_id)).json(&body);
        match session.send(call).await {
            Ok(updated) => {
                session.show(&updated, |updated| {
                    output::line(&format!(
                        "invited {} to {event_id} (sequence {}); invited now: {}",
                        users.join(", "),
                        field(updated, "sequence"),
                        updated["invited"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(text)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                });
                return Ok(());
            }
            Err(error) if error.code() == "conflict" && attempt < ATTEMPTS => continue,
            Err(error) => return Err(error),
        }
    }
    Err(CliError::new(
        Exit::Conflict,
        "conflict",
        format!("{event_id} kept changing while the attendees were added: try again"),
    ))
}

pub(super) async fn rsvp(options: &ClientOptions, command: RsvpArgs) -> Result<(), CliError> {
    let session = Session::open(options)?;
    let response = match command.response {
        Answer::Accepted => "accepted",
        Answer::Declined => "declined",
        Answer::Tentative => "tentative",
    };
    let mut body = json!({"response": response});
    if let Some(occurrence) = &command.occurrence {
        body["occurrence"] = json!(occurrence);
    }
    let path = format!("/v1/invitations/{}/rsvp", encode(&command.event, false));
    let answer = session
        .send(Call::write(Method::POST, path).json(&body))
        .await?;
    session.show(&answer, |_| {
        let what = command
            .occurrence
            .as_ref()
            .map(|occurrence| format!(" (the occurrence {occurrence})"))
            .unwrap_or_default();
        output::line(&format!("{response} {}{what}", command.event));
    });
    Ok(())
}

pub(super) async fn invitations(options: &ClientOptions, all: bool) -> Result<(), CliError> {
    let session = Session::open(options)?;
    let path = if all {
        "/v1/invitations?all=true"
    } else {
        "/v1/invitations"
    };
    let answer = session.get(path).await?;
    session.show(&answer, |answer| {
        let mut table = Table::new(&["EVENT", "TITLE", "ORGANIZER", "STARTS", "REPEATS", "ANSWER"]);
        for invitation in answer["invitations"].as_array().into_iter().flatten() {
            let content = &invitation["content"];
            let schedule = &content["schedule"];
            table.row(vec![
                field(invitation, "event_id"),
                field(content, "title"),
                field(invitation, "organizer"),
                format!("{} {}", field(schedule, "start"), field(schedule, "zone")),
                field(schedule, "rrule"),
                field(invitation, "response"),
            ]);
        }
        table.print_or("no invitations");
    });
    Ok(())
}

pub(super) async fn tally(options: &ClientOptions, event_id: &str) -> Result<(), CliError> {
    let session = Session::open(options)?;
    let path = format!("{}/tally", event_path(event_id));
    let answer = session.get(&path).await?;
    session.show(&answer, |answer| {
        let mut table = Table::new(&["USER", "ANSWER", "OCCURRENCES"]);
        for (user, answers) in answer["attendees"].as_object().into_iter().flatten() {
            let occurrences: Vec<String> = answers[1]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(occurrence, response)| format!("{occurrence} {}", text(response)))
                .collect();
            table.row(vec![
                user.clone(),
                text(&answers[0]),
                occurrences.join(", "),
            ]);
        }
        table.print_or("nobody is invited");
        let counts: Vec<String> = answer["counts"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(response, count)| format!("{response} {count}"))
            .collect();
        if !counts.is_empty() {
            output::line(&format!("counts: {}", counts.join(", ")));
        }
    });
    Ok(())
}

pub(super) async fn group(options: &ClientOptions, command: GroupCommand) -> Result<(), CliError> {
    let session = Session::open(options)?;
    let group_path = |id: &str| format!("/v1/groups/{}", encode(id, false));
    match command {
        GroupCommand::Create { id, name } => {
            let body = json!({"id": id, "name": name});
            let call = Call::write(Method::POST, "/v1/groups").json(&body);
            let answer = session.send(call).await?;
            session.show(&answer, |_| output::line(&format!("created group {id}")));
        }
        GroupCommand::List => {
            let answer = session.get("/v1/groups").await?;
            session.show(&answer, |answer| {
                let mut table = Table::new(&["GROUP", "ROLE"]);
                for group in answer["groups"].as_array().into_iter().flatten() {
                    table.row(vec![field(group, "id"), field(group, "role")]);
                }
                table.print_or("no groups");
            });
        }
        GroupCommand::Show { id } => {
            let answer = session.get(&group_path(&id)).await?;
            session.show(&answer, |answer| {
                let group = &answer["group"];
                output::line(&format!(
                    "{} ({}), owned by {}",
                    field(group, "id"),
                    field(group, "name"),
                    field(group, "owner")
                ));
                let mut table = Table::new(&["MEMBER", "ROLE"]);
                for member in answer["members"].as_array().into_iter().flatten() {
                    table.row(vec![text(&member[0]), text(&member[1])]);
                }
                table.print_or("no members");
            });
        }
        GroupCommand::Add { id, user, role } => {
            let body = json!({"user": user, "role": role});
            let path = format!("{}/members", group_path(&id));
            let answer = session
                .send(Call::write(Method::POST, path).json(&body))
                .await?;
            session.show(&answer, |_| {
                output::line(&format!("{user} is in {id} as {role}"));
            });
        }
        GroupCommand::Remove { id, user } => {
            let path = format!("{}/members/{}", group_path(&id), encode(&user, false));
            let answer = session.send(Call::write(Method::DELETE, path)).await?;
            session.show(&answer, |_| {
                output::line(&format!("removed {user} from {id}"))
            });
        }
    }
    Ok(())
}

pub(super) async fn free_busy(
    options: &ClientOptions,
    users: &[String],
    range: &Range,
) -> Result<(), CliError> {
    let mut session = Session::open(options)?;
    let (from, to) = resolve(&mut session, range, Start::ThisWeek).await?;
    let body = json!({"users": users, "from": from, "to": to});
    // A read, over POST: safe to send again.
    let call = Call::write(Method::POST, "/v1/freebusy").json(&body).safe();
    let answer = session.send(call).await?;
    let zone = if session.json {
        Tz::UTC
    } else {
        session.zone().await?
    };
    session.show(&answer, |answer| {
        let mut table = Table::new(&["USER", "BUSY"]);
        for user in answer["users"].as_array().into_iter().flatten() {
            let busy = user["busy"].as_array().map_or(&[][..], Vec::as_slice);
            if busy.is_empty() {
                table.row(vec![field(user, "user"), "free".into()]);
            }
            for interval in busy {
                let (start, end) = (interval[0].as_i64(), interval[1].as_i64());
                let (Some(start), Some(end)) = (start, end) else {
                    continue;
                };
                table.row(vec![field(user, "user"), output::ms_span(start, end, zone)]);
            }
        }
        table.print_or("no users");
    });
    Ok(())
}

pub(super) async fn find_time(
    options: &ClientOptions,
    command: FindTimeArgs,
) -> Result<(), CliError> {
    if command.users.is_empty() && command.group.is_none() {
        return Err(CliError::usage("give --users, --group or both"));
    }
    let mut session = Session::open(options)?;
    let range = Range {
        from: command.from.clone(),
        to: command.to.clone(),
    };
    let (from, to) = resolve(&mut session, &range, Start::Now).await?;
    let mut body =
        json!({"users": command.users, "from": from, "to": to, "minutes": command.minutes});
    if let Some(group) = &command.group {
        body["group"] = json!(group);
    }
    if let Some(max) = command.max {
        body["max"] = json!(max);
    }
    let call = Call::write(Method::POST, "/v1/find-time")
        .json(&body)
        .safe();
    let answer = session.send(call).await?;
    let zone = if session.json {
        Tz::UTC
    } else {
        session.zone().await?
    };
    session.show(&answer, |answer| {
        let users: Vec<String> = answer["users"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        output::line(&format!("free: {}", users.join(", ")));
        let mut table = Table::new(&["SLOT"]);
        for slot in answer["slots"].as_array().into_iter().flatten() {
            if let (Some(start), Some(end)) = (slot["start_ms"].as_i64(), slot["end_ms"].as_i64()) {
                table.row(vec![output::ms_span(start, end, zone)]);
            }
        }
        table.print_or(&format!(
            "no slot of {} minutes from {from} to {to}",
            command.minutes
        ));
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").unwrap()
    }

    #[test]
    fn wall_clock_times_in_gaps_and_folds_and_weeks_over_a_change_of_time() {
        let madrid: Tz = "Europe/Madrid".parse().unwrap();
        // 02:30 does not exist on 2026-03-29 in Madrid: the time an hour later does.
        let gap = local(madrid, wall("2026-03-29T02:30")).unwrap();
        assert_eq!(rfc3339(gap), "2026-03-29T03:30:00+02:00");
        // 02:30 happens twice on 2026-10-25: the first one.
        let fold = local(madrid, wall("2026-10-25T02:30")).unwrap();
        assert_eq!(rfc3339(fold), "2026-10-25T02:30:00+02:00");
        let monday = local(madrid, wall("2026-03-23T00:00")).unwrap();
        assert_eq!(
            rfc3339(week_after(monday).unwrap()),
            "2026-03-30T00:00:00+02:00"
        );
        // The last day chrono holds has no week after it: no panic, `None`.
        let last = local(Tz::UTC, wall("+262142-12-31T00:00")).unwrap();
        assert_eq!(week_after(last), None);
        let utc = local(Tz::UTC, wall("2026-06-01T00:00")).unwrap();
        assert_eq!(rfc3339(utc), "2026-06-01T00:00:00Z");
    }

    #[test]
    fn an_all_day_occurrence_shows_its_own_date_and_length() {
        let one = json!({"all_day": true, "day": "2026-06-01",
            "start": "2026-05-31T18:00:00-04:00", "end": "2026-06-01T18:00:00-04:00",
            "start_ms": 1_780_264_800_000_i64, "end_ms": 1_780_351_200_000_i64});
        assert_eq!(when(&one), "Mon 2026-06-01 (all day)");
        // Three days over a change of daylight saving time: 71 hours, still three days.
        let three = json!({"all_day": true, "day": "2026-10-24",
            "start_ms": 0, "end_ms": 71 * 3_600_000_i64});
        assert_eq!(when(&three), "Sat 2026-10-24 (all day, 3 days)");
        let timed = json!({"all_day": false,
            "start": "2026-06-01T10:00:00+02:00", "end": "2026-06-01T11:00:00+02:00"});
        assert_eq!(when(&timed), "Mon 2026-06-01 10:00-11:00");
    }

    #[test]
    fn this_week_starts_on_monday_at_midnight() {
        let start = Start::ThisWeek.instant(Tz::UTC);
        assert_eq!(start.weekday(), chrono::Weekday::Mon);
        assert_eq!(start.naive_local().time(), chrono::NaiveTime::MIN);
        let now = now_in(Tz::UTC);
        assert!(start <= now && now < week_after(start).unwrap());
    }
}
