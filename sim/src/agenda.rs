//! The agenda workload: people using the calendar from machines of their own, running the agenda
//! layer (the crate the servers serve) over the native client, through every fault of the run;
//! and the check, once the cluster is healed, that the outboxes were delivered and every
//! invitation the organizers' events ask for landed once, up to date, in every attendee's shard
//! (and none that no event asks for).
//!
//! Writes whose outcome is unknown are part of the workload: the check reads the final state of
//! every event and holds the attendees' copies to it, whatever was acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agenda::events::{Attendee, Event, EventChange, Invitation, NewEvent, Response, Scope};
use agenda::schedule::Schedule;
use agenda::users::Registration;
use agenda::{Agenda, AgendaError, Committed, Config, Scanned, StoreError};
use bytes::Bytes;
use client::{Client, ClientError, Consistency};
use kv::{Txn, Versioned, Write, WriteResult};
use tokio::time::Instant;

use crate::options::Draw;

/// The people: two whose events live in `events-a-m`, two in `events-n-z`.
pub const USERS: [&str; 4] = ["amy", "max", "nia", "zoe"];

/// The agenda's store over the native client (linearizable reads; transactions under the
/// client's exactly-once session).
pub struct ClientStore(pub Client);

fn store_error(error: ClientError) -> StoreError {
    use client::ErrorCode;
    match error {
        ClientError::Server(refusal)
            if matches!(
                refusal.code,
                ErrorCode::BadRequest | ErrorCode::CrossShard | ErrorCode::Unauthorized
            ) =>
        {
            StoreError::Refused(refusal.to_string())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl agenda::Store for ClientStore {
    async fn get(&self, key: Bytes) -> Result<Option<Versioned>, StoreError> {
        self.0.get(key).await.map_err(store_error)
    }

    async fn scan(&self, start: Bytes, end: Bytes, limit: u32) -> Result<Scanned, StoreError> {
        let (entries, more) = self
            .0
            .scan(start, end, limit, Consistency::Linearizable)
            .await
            .map_err(store_error)?;
        Ok(Scanned { entries, more })
    }

    async fn txn(&self, txn: Txn) -> Result<Committed, StoreError> {
        let written = self.0.write(Write::Txn(txn)).await.map_err(store_error)?;
        match written.result {
            WriteResult::Txn { succeeded, results } => Ok(Committed {
                succeeded,
                results,
                position: (written.shard, written.index),
            }),
            other => Err(StoreError::Unavailable(format!(
                "a txn answered as {other:?}"
            ))),
        }
    }
}

/// A simulated person's clock (simulated time from a fixed day) and random source (the seed's).
pub struct SimEnv {
    started: Instant,
    draw: Mutex<Draw>,
}

/// 2026-06-01T00:00:00Z: the simulated people's calendars start here.
const EPOCH_MS: i64 = 1_780_272_000_000;

impl SimEnv {
    /// An environment drawing from `draw`.
    pub fn new(draw: Draw) -> SimEnv {
        SimEnv {
            started: Instant::now(),
            draw: Mutex::new(draw),
        }
    }
}

impl agenda::Env for SimEnv {
    fn now_ms(&self) -> i64 {
        EPOCH_MS + self.started.elapsed().as_millis() as i64
    }

    fn random(&self) -> [u8; 32] {
        let mut draw = self.draw.lock().expect("no panic holds the draw");
        let mut bytes = [0; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&draw.next_u64().to_le_bytes());
        }
        bytes
    }
}

/// What the workload did, for the report.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Events whose creation was acknowledged.
    pub created: BTreeSet<String>,
    /// Events someone tried to delete (acknowledged or not).
    pub delete_attempted: BTreeSet<String>,
    /// Operations acknowledged, and those that failed (unknown outcomes and refusals).
    pub acknowledged: usize,
    /// See `acknowledged`.
    pub failed: usize,
}

type SimAgenda = Agenda<ClientStore, SimEnv>;

fn agenda(client: Client, draw: Draw) -> SimAgenda {
    Agenda::new(ClientStore(client), SimEnv::new(draw), Config::for_tests())
}

/// Registers every user (again after an unknown outcome: `AlreadyExists` means it took).
async fn register_everyone(agenda: &SimAgenda, until: Instant) {
    for user in USERS {
        while Instant::now() < until {
            let registration = Registration {
                name: user.into(),
                password: format!("{user} password"),
                display_name: None,
                zone: Some("Europe/Madrid".into()),
                working_hours: None,
            };
            match agenda.register(registration).await {
                Ok(_) | Err(AgendaError::AlreadyExists(_)) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// One person's session of work until `until`: create, change and delete events with
/// attendees across both events shards, and answer invitations.
pub async fn workload(client: Client, mut draw: Draw, until: Instant, log: Arc<Mutex<Log>>) {
    let agenda = agenda(client, Draw::new(draw.next_u64()));
    register_everyone(&agenda, until).await;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(draw.between(20, 300))).await;
        let user = *draw.pick(&USERS);
        let known: Vec<String> = log
            .lock()
            .expect("no panic holds the log")
            .created
            .iter()
            .filter(|id| id.starts_with(&format!("{user}.")))
            .cloned()
            .collect();
        let outcome = match draw.between(0, 99) {
            0..35 => create(&agenda, user, &mut draw, &log).await,
            35..60 if !known.is_empty() => {
                let id = draw.pick(&known).clone();
                let change = change(&mut draw);
                agenda.update_event(user, &id, change).await.map(|_| ())
            }
            60..70 if !known.is_empty() => {
                let id = draw.pick(&known).clone();
                log.lock()
                    .expect("no panic holds the log")
                    .delete_attempted
                    .insert(id.clone());
                agenda.delete_event(user, &id, Scope::All).await.map(|_| ())
            }
            _ => answer(&agenda, user, &mut draw).await,
        };
        let mut log = log.lock().expect("no panic holds the log");
        match outcome {
            Ok(()) => log.acknowledged += 1,
            Err(_) => log.failed += 1,
        }
    }
}

async fn create(
    agenda: &SimAgenda,
    user: &str,
    draw: &mut Draw,
    log: &Arc<Mutex<Log>>,
) -> Result<(), AgendaError> {
    let hour = draw.between(8, 17);
    let day = draw.between(1, 28);
    let attendees: Vec<Attendee> = USERS
        .iter()
        .filter(|other| **other != user && draw.chance(600))
        .map(|other| Attendee::User((*other).into()))
        .collect();
    let start = format!("2026-07-{day:02}T{hour:02}:00");
    let end = format!("2026-07-{day:02}T{hour:02}:30");
    let schedule = Schedule {
        zone: "Europe/Madrid".into(),
        start: start.parse().expect("a valid local time"),
        end: end.parse().expect("a valid local time"),
        rrule: draw
            .chance(500)
            .then(|| format!("FREQ=WEEKLY;COUNT={}", draw.between(2, 6))),
        exdates: Vec::new(),
        overrides: BTreeMap::new(),
    };
    let new = NewEvent {
        title: format!("{user} {day}/{hour}"),
        description: String::new(),
        location: format!("room {}", draw.between(1, 3)),
        schedule,
        attendees,
    };
    let saved = agenda.create_event(user, new).await?;
    log.lock()
        .expect("no panic holds the log")
        .created
        .insert(saved.event.id);
    Ok(())
}

fn change(draw: &mut Draw) -> EventChange {
    match draw.between(0, 2) {
        0 => EventChange {
            title: Some(format!("renamed {}", draw.next_u64() % 1000)),
            ..EventChange::default()
        },
        1 => EventChange {
            location: Some(format!("room {}", draw.between(1, 3))),
            ..EventChange::default()
        },
        _ => {
            let people: Vec<Attendee> = USERS
                .iter()
                .filter(|_| draw.chance(500))
                .map(|other| Attendee::User((*other).into()))
                .collect();
            EventChange {
                attendees: Some(people),
                ..EventChange::default()
            }
        }
    }
}

async fn answer(agenda: &SimAgenda, user: &str, draw: &mut Draw) -> Result<(), AgendaError> {
    let invitations = agenda.invitations(user, false).await?;
    if invitations.is_empty() {
        return Ok(());
    }
    let invitation = draw.pick(&invitations);
    let response = *draw.pick(&[Response::Accepted, Response::Declined, Response::Tentative]);
    agenda
        .rsvp(user, &invitation.copy.event_id, response, None)
        .await
        .map(|_| ())
}

/// Reads every key under `prefix` through the client (linearizable), decoded.
async fn records<T: serde::de::DeserializeOwned>(
    agenda: &SimAgenda,
    prefix: &Bytes,
) -> Result<Vec<T>, String> {
    let entries = agenda::store::scan_prefix(agenda.store(), prefix)
        .await
        .map_err(|error| format!("reading {}: {error}", String::from_utf8_lossy(prefix)))?;
    entries
        .iter()
        .map(|(key, versioned)| {
            agenda::store::decode(key, &versioned.value).map_err(|error| error.to_string())
        })
        .collect()
}

/// Once healed: the outboxes empty by `deadline`, then every event's attendees hold its
/// current copy, and nobody holds a live invitation no event asks for. Returns how many
/// invitations it checked.
pub async fn check(client: Client, log: &Log, deadline: Instant) -> Result<usize, String> {
    let agenda = agenda(client, Draw::new(0));
    loop {
        let mut pending = 0;
        for bucket in ["am", "nz"] {
            let outbox = agenda::keys::outbox(bucket);
            let end = agenda::store::prefix_end(&outbox);
            let scanned = agenda::Store::scan(agenda.store(), outbox, end, 1).await;
            pending += scanned.map_or(1, |scanned| scanned.entries.len());
        }
        if pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err("the agenda's outboxes were not delivered once the cluster healed".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut events: BTreeMap<String, Event> = BTreeMap::new();
    let mut invitations: BTreeMap<(String, String), Invitation> = BTreeMap::new();
    for user in USERS {
        for event in records::<Event>(&agenda, &agenda::keys::events(user)).await? {
            events.insert(event.id.clone(), event);
        }
        for invitation in records::<Invitation>(&agenda, &agenda::keys::invitations(user)).await? {
            invitations.insert(
                (user.to_owned(), invitation.copy.event_id.clone()),
                invitation,
            );
        }
    }
    let mut checked = 0;
    for event in events.values() {
        for attendee in &event.invited {
            let Some(invitation) = invitations.get(&(attendee.clone(), event.id.clone())) else {
                return Err(format!(
                    "{attendee} never received the invitation to {}",
                    event.id
                ));
            };
            let copy = &invitation.copy;
            if copy.cancelled || copy.sequence != event.sequence || copy.content != event.content {
                return Err(format!(
                    "{attendee}'s copy of {} is not the event's last version: copy sequence {} (cancelled {}), event sequence {}",
                    event.id, copy.sequence, copy.cancelled, event.sequence
                ));
            }
            checked += 1;
        }
    }
    for ((attendee, id), invitation) in &invitations {
        let asked = events
            .get(id)
            .is_some_and(|event| event.invited.contains(attendee));
        if !invitation.copy.cancelled && !asked {
            return Err(format!(
                "{attendee} holds a live invitation to {id}, which no event asks for"
            ));
        }
    }
    for id in &log.created {
        if !events.contains_key(id) && !log.delete_attempted.contains(id) {
            return Err(format!(
                "the acknowledged event {id} is gone, never deleted"
            ));
        }
    }
    Ok(checked)
}
