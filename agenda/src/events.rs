//! Events, their invitations and replies (the events shards).
//!
//! An event lives in its owner's events shard. Creating, changing or deleting it is one
//! transaction there, which also writes one outbox record per attendee: a copy of what the
//! attendee must see, with the event's `sequence`. The delivery ([`crate::outbox`]) copies it into
//! the attendee's shard later, idempotently, so an invitation is never half-sent: once the
//! organizer's write is acknowledged, every attendee gets it, whatever crashes in between.
//! A reply (RSVP) travels back the same way, from the attendee's shard to the organizer's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::AgendaError;
use crate::keys;
use crate::schedule::{Local, Moved, Schedule};
use crate::store::{ATTEMPTS_MAX, Env, Store, Tx, decode};
use crate::{Agenda, calendar::Conflict};

/// The longest title.
pub const TITLE_CHARS_MAX: usize = 200;
/// The longest description.
pub const DESCRIPTION_CHARS_MAX: usize = 5_000;
/// The longest location.
pub const LOCATION_CHARS_MAX: usize = 200;
/// The most users one event invites (groups expanded): each costs an outbox record in the
/// event's transaction, which holds at most [`kv::TXN_OPS_MAX`] operations. The largest
/// transaction replaces every attendee: the event, a copy for each new one, and for each removed
/// one a cancellation and the removal of their reply.
pub const INVITED_MAX: usize = 300;
const _: () = assert!(3 * INVITED_MAX < kv::TXN_OPS_MAX);
/// The most per-occurrence changes of text one event keeps.
pub const DETAILS_MAX: usize = 1_000;

/// Someone asked to an event: a user, or every member of a group (expanded when the event is
/// created or its attendees change).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Attendee {
    /// One user, by name.
    User(String),
    /// Every member of a group, by id.
    Group(String),
}

/// A change of one occurrence's text (its time is in the schedule's overrides).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Details {
    /// A title for this occurrence only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A description for this occurrence only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A place for this occurrence only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// What attendees see of an event: everything but its attendee list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Content {
    /// The title.
    pub title: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Where.
    #[serde(default)]
    pub location: String,
    /// When.
    pub schedule: Schedule,
    /// Per-occurrence changes of text, by occurrence id.
    #[serde(default)]
    pub details: BTreeMap<Local, Details>,
}

/// An event as stored at `ev/<b>/<owner>/e/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// The event id (unique per owner).
    pub id: String,
    /// The organizer.
    pub owner: String,
    /// What it is and when.
    #[serde(flatten)]
    pub content: Content,
    /// Who was asked, as asked (users and groups).
    pub attendees: Vec<Attendee>,
    /// The users invited (groups expanded, the owner left out), sorted.
    pub invited: Vec<String>,
    /// Increases with every change attendees must see (iCalendar's SEQUENCE).
    pub sequence: u32,
    /// The sequence of the last change of time or place: replies to an earlier one no longer
    /// count, the attendees are asked again.
    pub asked_sequence: u32,
    /// When it was made.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

/// An attendee's answer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// Not answered (yet, or since the last change of time or place).
    #[default]
    NeedsAction,
    /// Will come.
    Accepted,
    /// Will not come.
    Declined,
    /// Might come.
    Tentative,
}

/// What the organizer's shard sends an attendee: the event as they must see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvitationCopy {
    /// The organizer.
    pub organizer: String,
    /// The event id.
    pub event_id: String,
    /// The event's sequence when this copy was made: a copy replaces only an older one.
    pub sequence: u32,
    /// The event's `asked_sequence`: a newer one resets the attendee's answers.
    pub asked_sequence: u32,
    /// When the event was made: an event deleted and made again under the same id (a creation
    /// retried with its idempotency key) is a new incarnation, whose copies win over the old
    /// one's whatever their sequences (0 for records written before this field).
    #[serde(default)]
    pub created_ms: i64,
    /// The event was cancelled, or the attendee removed from it.
    pub cancelled: bool,
    /// What the event is and when (as it was when cancelled, for a cancellation).
    pub content: Content,
}

/// An invitation as stored in the attendee's shard at `ev/<b>/<attendee>/i/<organizer>/<event>`.
/// A cancelled one stays as a tombstone, so that an older copy delivered late cannot bring it back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invitation {
    /// The latest copy delivered.
    #[serde(flatten)]
    pub copy: InvitationCopy,
    /// The attendee's answer for the whole series.
    pub response: Response,
    /// Answers for single occurrences, by occurrence id (they win over the series' answer).
    #[serde(default)]
    pub occurrence_responses: BTreeMap<Local, Response>,
    /// Counts the attendee's answers: the organizer keeps only the newest.
    pub reply_revision: u64,
}

/// An attendee's answers as delivered to the organizer (`ev/<b>/<organizer>/r/<event>/<attendee>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// Who answered.
    pub attendee: String,
    /// The organizer.
    pub organizer: String,
    /// The event id.
    pub event_id: String,
    /// The `asked_sequence` of the invitation answered: an answer to an older time or place
    /// does not count.
    pub asked_sequence: u32,
    /// The attendee's answer counter: a reply replaces only an older one.
    pub revision: u64,
    /// The answer for the series.
    pub response: Response,
    /// Answers for single occurrences.
    #[serde(default)]
    pub occurrence_responses: BTreeMap<Local, Response>,
}

/// A new event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewEvent {
    /// The title.
    pub title: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Where.
    #[serde(default)]
    pub location: String,
    /// When.
    pub schedule: Schedule,
    /// Who is asked.
    #[serde(default)]
    pub attendees: Vec<Attendee>,
}

/// Which occurrences a change or a deletion applies to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(tag = "scope", content = "occurrence", rename_all = "lowercase")]
pub enum Scope {
    /// The whole series (or the single event).
    #[default]
    All,
    /// One occurrence, by its id (its original start).
    This(Local),
    /// That occurrence and every later one: the series is split there.
    Following(Local),
}

/// A change of an event: the fields given are replaced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventChange {
    /// Which occurrences.
    #[serde(default, flatten)]
    pub scope: Scope,
    /// A new title.
    #[serde(default)]
    pub title: Option<String>,
    /// A new description.
    #[serde(default)]
    pub description: Option<String>,
    /// A new place.
    #[serde(default)]
    pub location: Option<String>,
    /// A new start (of the occurrence, or of the series from the scope's first occurrence).
    #[serde(default)]
    pub start: Option<Local>,
    /// A new end, paired with `start`.
    #[serde(default)]
    pub end: Option<Local>,
    /// A new recurrence rule (scopes `all` and `following`); `Some(None)` ends the recurrence.
    #[serde(default, with = "double_option")]
    pub rrule: Option<Option<String>>,
    /// A new attendee list (scope `all` only).
    #[serde(default)]
    pub attendees: Option<Vec<Attendee>>,
    /// Apply only if the event's `sequence` (which every change increases) is still this: a
    /// client that read the event at this sequence is told ([`AgendaError::Conflict`]) when
    /// someone changed it since, instead of overwriting that change unseen.
    #[serde(default)]
    pub if_sequence: Option<u32>,
}

/// What creating or changing an event did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Saved {
    /// The event as stored (for a `following` change: the new series).
    pub event: Event,
    /// The event cut short by a `following` change, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Event>,
    /// Overlaps of its occurrences with the busy time of its owner and attendees (reported,
    /// not refused: people decide).
    pub conflicts: Vec<Conflict>,
    /// The shard and log index of the write: its notifications carry this position (`(0, 0)`
    /// for a replayed creation, which wrote nothing).
    pub position: (u64, u64),
    /// A creation retried with the same idempotency key: the event the first attempt created,
    /// as it is now; nothing was written.
    #[serde(default)]
    pub replayed: bool,
}

/// The longest idempotency key a creation takes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// An attendee's answer, as the organizer sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tally {
    /// Per invited user: the answer for the series and per occurrence (needs-action if none
    /// counts).
    pub attendees: BTreeMap<String, (Response, BTreeMap<Local, Response>)>,
    /// How many answered the series each way.
    pub counts: BTreeMap<Response, usize>,
}

/// `Option<Option<T>>` in JSON: absent is `None`, `null` is `Some(None)`.
pub(crate) mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Option<String>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => serializer.serialize_none(),
            Some(inner) => inner.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(deserializer).map(Some)
    }
}

fn check_text(
    field: &'static str,
    text: &str,
    max: usize,
    required: bool,
) -> Result<(), AgendaError> {
    if required && text.trim().is_empty() {
        return Err(AgendaError::invalid(field, "must not be blank"));
    }
    if text.chars().count() > max {
        return Err(AgendaError::invalid(
            field,
            format!("at most {max} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(AgendaError::invalid(field, "no control characters"));
    }
    Ok(())
}

pub(crate) fn check_content(content: &Content) -> Result<(), AgendaError> {
    check_text("title", &content.title, TITLE_CHARS_MAX, true)?;
    check_text(
        "description",
        &content.description,
        DESCRIPTION_CHARS_MAX,
        false,
    )?;
    check_text("location", &content.location, LOCATION_CHARS_MAX, false)?;
    content
        .schedule
        .validate()
        .map_err(|error| AgendaError::invalid("schedule", error.to_string()))?;
    if content.details.len() > DETAILS_MAX {
        return Err(AgendaError::invalid(
            "details",
            format!("at most {DETAILS_MAX}"),
        ));
    }
    for (occurrence, details) in &content.details {
        let exists = content
            .schedule
            .has_occurrence(occurrence)
            .map_err(|error| AgendaError::invalid("schedule", error.to_string()))?;
        if !exists {
            return Err(AgendaError::invalid(
                "occurrence",
                format!("{occurrence} is not an occurrence of the event"),
            ));
        }
        if let Some(title) = &details.title {
            check_text("title", title, TITLE_CHARS_MAX, true)?;
        }
        if let Some(description) = &details.description {
            check_text("description", description, DESCRIPTION_CHARS_MAX, false)?;
        }
        if let Some(location) = &details.location {
            check_text("location", location, LOCATION_CHARS_MAX, false)?;
        }
    }
    Ok(())
}

fn not_found(id: &str) -> AgendaError {
    AgendaError::NotFound(format!("event {id}"))
}

fn check_occurrence(schedule: &Schedule, occurrence: &Local) -> Result<(), AgendaError> {
    let exists = schedule
        .has_occurrence(occurrence)
        .map_err(|error| AgendaError::invalid("occurrence", error.to_string()))?;
    if exists {
        Ok(())
    } else {
        Err(AgendaError::invalid(
            "occurrence",
            format!("{occurrence} is not an occurrence of the event"),
        ))
    }
}

impl Event {
    fn copy(&self, cancelled: bool) -> InvitationCopy {
        InvitationCopy {
            organizer: self.owner.clone(),
            event_id: self.id.clone(),
            sequence: self.sequence,
            asked_sequence: self.asked_sequence,
            created_ms: self.created_ms,
            cancelled,
            content: self.content.clone(),
        }
    }
}

/// Writes, in `tx`, the outbox records that bring every attendee up to date: the current copy to
/// everyone in `event.invited`, a cancellation to everyone in `removed`.
fn queue_invitations<S: Store>(tx: &mut Tx<'_, S>, event: &Event) {
    for attendee in &event.invited {
        tx.put_record(
            keys::outbox_invitation(attendee, &event.id),
            &event.copy(false),
        );
    }
}

/// Writes, in `tx`, a cancellation for each of `removed`, carrying the event as it was before
/// (`before`: a removed attendee learns nothing of the change that removed them) with the new
/// `sequence`, and removes their replies from the organizer's tally.
fn queue_cancellations<S: Store>(
    tx: &mut Tx<'_, S>,
    before: &Event,
    sequence: u32,
    removed: &[String],
) {
    let mut copy = before.copy(true);
    copy.sequence = sequence;
    for attendee in removed {
        tx.put_record(keys::outbox_invitation(attendee, &before.id), &copy);
        tx.delete(keys::reply(&before.id, attendee));
    }
}

impl<S: Store, E: Env> Agenda<S, E> {
    /// The users `attendees` name (groups expanded; each must exist), without `owner`, sorted.
    async fn expand_attendees(
        &self,
        owner: &str,
        attendees: &[Attendee],
    ) -> Result<Vec<String>, AgendaError> {
        if attendees.len() > INVITED_MAX {
            return Err(AgendaError::invalid(
                "attendees",
                format!("at most {INVITED_MAX} entries"),
            ));
        }
        let asked: BTreeSet<&Attendee> = attendees.iter().collect();
        let mut invited = BTreeSet::new();
        for attendee in asked {
            match attendee {
                Attendee::User(user) => {
                    self.account(user).await?;
                    invited.insert(user.clone());
                }
                Attendee::Group(group) => {
                    keys::check_name("group id", group)?;
                    invited.extend(self.group_members(owner, group).await?);
                }
            }
            if invited.len() > INVITED_MAX + 1 {
                break;
            }
        }
        invited.remove(owner);
        if invited.len() > INVITED_MAX {
            return Err(AgendaError::invalid(
                "attendees",
                format!("at most {INVITED_MAX} users per event"),
            ));
        }
        Ok(invited.into_iter().collect())
    }

    fn new_event_id(&self, owner: &str) -> String {
        keys::event_id(owner, &self.env.random())
    }

    /// Creates an event owned by `caller` and invites its attendees.
    pub async fn create_event(&self, caller: &str, new: NewEvent) -> Result<Saved, AgendaError> {
        self.create_event_once(caller, new, None).await
    }

    /// Creates an event, at most once per `idempotency_key`: the event id is derived from the
    /// caller and the key, so a retry of a creation whose answer was lost (a timeout, a
    /// failover) finds the event the first attempt made and answers it ([`Saved::replayed`])
    /// instead of making a second one. A retry after the event was deleted creates it again.
    pub async fn create_event_once(
        &self,
        caller: &str,
        new: NewEvent,
        idempotency_key: Option<&str>,
    ) -> Result<Saved, AgendaError> {
        let id = match idempotency_key {
            Some(key) => {
                if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
                    return Err(AgendaError::invalid(
                        "idempotency key",
                        format!("1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
                    ));
                }
                keys::check_name("user", caller)?;
                let digest = sha2::Sha256::digest(format!("{caller}\n{key}").as_bytes());
                keys::event_id(caller, &digest.into())
            }
            None => self.new_event_id(caller),
        };
        let content = Content {
            title: new.title,
            description: new.description,
            location: new.location,
            schedule: new.schedule,
            details: BTreeMap::new(),
        };
        check_content(&content)?;
        let invited = self.expand_attendees(caller, &new.attendees).await?;
        let attendees: Vec<Attendee> = new
            .attendees
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let now_ms = self.env.now_ms();
        let event = Event {
            id,
            owner: caller.to_owned(),
            content,
            attendees,
            invited,
            sequence: 0,
            asked_sequence: 0,
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        let conflicts = self.conflicts(&event).await.unwrap_or_default();
        let key = keys::event(&event.id);
        let mut tx = Tx::new(&self.store);
        if let Some(found) = tx.get(key.clone()).await? {
            if idempotency_key.is_none() {
                return Err(AgendaError::AlreadyExists(format!("event {}", event.id)));
            }
            return Ok(Saved {
                event: decode(&key, &found.value)?,
                truncated: None,
                conflicts: Vec::new(),
                position: (0, 0),
                replayed: true,
            });
        }
        tx.put_record(key.clone(), &event);
        queue_invitations(&mut tx, &event);
        match tx.commit().await? {
            Some(position) => Ok(Saved {
                event,
                truncated: None,
                conflicts,
                position,
                replayed: false,
            }),
            // With a key, an event that appeared between the read and the commit is this very
            // creation: an earlier attempt (whose answer was lost) committed meanwhile. It is
            // answered as a replay, as if the retry had come a moment later.
            None if idempotency_key.is_some() => match self.store.get(key.clone()).await? {
                Some(found) => Ok(Saved {
                    event: decode(&key, &found.value)?,
                    truncated: None,
                    conflicts: Vec::new(),
                    position: (0, 0),
                    replayed: true,
                }),
                None => Err(AgendaError::Contended(format!("event {}", event.id))),
            },
            None => Err(AgendaError::Contended(format!("event {}", event.id))),
        }
    }

    /// An event, for its owner or someone it invites.
    pub async fn event(&self, caller: &str, id: &str) -> Result<Event, AgendaError> {
        let owner = keys::event_owner(id)?;
        let key = keys::event(id);
        let Some(found) = self.store.get(key.clone()).await? else {
            return Err(not_found(id));
        };
        let event: Event = decode(&key, &found.value)?;
        if caller != owner && event.invited.binary_search(&caller.to_owned()).is_err() {
            return Err(not_found(id));
        }
        Ok(event)
    }

    /// Changes an event (only its owner may). A change of time or place asks the attendees
    /// again; every change reaches them through the outbox.
    pub async fn update_event(
        &self,
        caller: &str,
        id: &str,
        change: EventChange,
    ) -> Result<Saved, AgendaError> {
        let owner = keys::event_owner(id)?;
        if caller != owner {
            return Err(AgendaError::Forbidden(
                "only the organizer changes an event".into(),
            ));
        }
        if change.start.is_some() != change.end.is_some() {
            return Err(AgendaError::invalid(
                "start",
                "a new start needs a new end, and back",
            ));
        }
        let invited = match &change.attendees {
            Some(attendees) if change.scope == Scope::All => {
                Some(self.expand_attendees(owner, attendees).await?)
            }
            Some(_) => {
                return Err(AgendaError::invalid(
                    "attendees",
                    "the attendees change for the whole series only",
                ));
            }
            None => None,
        };
        let new_id = self.new_event_id(owner);
        for _ in 0..ATTEMPTS_MAX {
            let mut tx = Tx::new(&self.store);
            let key = keys::event(id);
            let Some(mut event) = tx.get_record::<Event>(key.clone()).await? else {
                return Err(not_found(id));
            };
            if let Some(expected) = change.if_sequence
                && event.sequence != expected
            {
                return Err(AgendaError::Conflict(format!(
                    "event {id} is at sequence {}, not {expected}: read it again",
                    event.sequence
                )));
            }
            let before = event.clone();
            let now_ms = self.env.now_ms();
            let (saved, truncated, removed) = match &change.scope {
                Scope::All => {
                    let removed = apply_to_series(&mut event, &change, invited.clone())?;
                    (event, None, removed)
                }
                Scope::This(occurrence) => {
                    apply_to_occurrence(&mut event, occurrence, &change)?;
                    (event, None, Vec::new())
                }
                Scope::Following(occurrence) => {
                    check_occurrence(&event.content.schedule, occurrence)?;
                    let (before, after) = event
                        .content
                        .schedule
                        .split_at(occurrence)
                        .map_err(|error| AgendaError::invalid("occurrence", error.to_string()))?;
                    match before {
                        None => {
                            let removed = apply_to_series(&mut event, &change, None)?;
                            (event, None, removed)
                        }
                        Some(before) => {
                            let mut later = event.clone();
                            later.id = new_id.clone();
                            later.created_ms = now_ms;
                            later.sequence = 0;
                            later.asked_sequence = 0;
                            split_details(&mut event.content, before, &mut later.content, after);
                            apply_to_series(&mut later, &change, None)?;
                            later.updated_ms = now_ms;
                            event.sequence += 1;
                            event.updated_ms = now_ms;
                            check_content(&event.content)?;
                            tx.put_record(key.clone(), &event);
                            queue_invitations(&mut tx, &event);
                            let new_key = keys::event(&later.id);
                            if tx.get(new_key.clone()).await?.is_some() {
                                return Err(AgendaError::AlreadyExists(format!(
                                    "event {}",
                                    later.id
                                )));
                            }
                            (later, Some(event), Vec::new())
                        }
                    }
                }
            };
            let mut saved = saved;
            saved.updated_ms = now_ms;
            check_content(&saved.content)?;
            tx.put_record(keys::event(&saved.id), &saved);
            queue_invitations(&mut tx, &saved);
            queue_cancellations(&mut tx, &before, saved.sequence, &removed);
            if let Some(position) = tx.commit().await? {
                // The write is done: a failure to compute its conflicts must not turn the
                // answer into an error (the caller would retry a write that happened).
                let conflicts = self.conflicts(&saved).await.unwrap_or_default();
                return Ok(Saved {
                    event: saved,
                    truncated,
                    conflicts,
                    position,
                    replayed: false,
                });
            }
        }
        Err(AgendaError::Contended(format!("event {id}")))
    }

    /// Deletes an event, one occurrence of it, or an occurrence and every later one. The
    /// attendees' invitations are cancelled (or updated) through the outbox.
    pub async fn delete_event(
        &self,
        caller: &str,
        id: &str,
        scope: Scope,
    ) -> Result<(u64, u64), AgendaError> {
        let owner = keys::event_owner(id)?;
        if caller != owner {
            return Err(AgendaError::Forbidden(
                "only the organizer deletes an event".into(),
            ));
        }
        for _ in 0..ATTEMPTS_MAX {
            let mut tx = Tx::new(&self.store);
            let key = keys::event(id);
            let Some(mut event) = tx.get_record::<Event>(key.clone()).await? else {
                return Err(not_found(id));
            };
            let one_off = !event.content.schedule.is_recurring();
            let kept = match &scope {
                Scope::All => None,
                // The only occurrence of a one-off event is the event.
                Scope::This(_) | Scope::Following(_) if one_off => None,
                Scope::This(occurrence) => {
                    check_occurrence(&event.content.schedule, occurrence)?;
                    let schedule = &mut event.content.schedule;
                    schedule.overrides.remove(occurrence);
                    event.content.details.remove(occurrence);
                    schedule.exdates.push(*occurrence);
                    schedule.exdates.sort();
                    Some(event.clone())
                }
                Scope::Following(occurrence) => {
                    check_occurrence(&event.content.schedule, occurrence)?;
                    let (before, _) = event
                        .content
                        .schedule
                        .split_at(occurrence)
                        .map_err(|error| AgendaError::invalid("occurrence", error.to_string()))?;
                    before.map(|before| {
                        event.content.details.retain(|at, _| at < occurrence);
                        event.content.schedule = before;
                        event.clone()
                    })
                }
            };
            // Removing occurrences changes no time or place of the others: nobody is asked again.
            let sequence = event.sequence + 1;
            match kept {
                Some(mut kept) => {
                    check_content(&kept.content)?;
                    kept.sequence = sequence;
                    kept.updated_ms = self.env.now_ms();
                    tx.put_record(key, &kept);
                    queue_invitations(&mut tx, &kept);
                }
                None => {
                    tx.delete(key);
                    // Replies exist only for invited users (a removal deletes its attendee's).
                    queue_cancellations(&mut tx, &event, sequence, &event.invited);
                }
            }
            if let Some(position) = tx.commit().await? {
                return Ok(position);
            }
        }
        Err(AgendaError::Contended(format!("event {id}")))
    }

    /// Answers an invitation, for the series or one occurrence. The answer is kept in the
    /// caller's shard and travels to the organizer's through the outbox.
    pub async fn rsvp(
        &self,
        caller: &str,
        id: &str,
        response: Response,
        occurrence: Option<Local>,
    ) -> Result<Invitation, AgendaError> {
        let organizer = keys::event_owner(id)?;
        for _ in 0..ATTEMPTS_MAX {
            let mut tx = Tx::new(&self.store);
            let key = keys::invitation(caller, id);
            let Some(mut invitation) = tx.get_record::<Invitation>(key.clone()).await? else {
                return Err(not_found(id));
            };
            if invitation.copy.cancelled {
                return Err(not_found(id));
            }
            match &occurrence {
                Some(occurrence) => {
                    check_occurrence(&invitation.copy.content.schedule, occurrence)?;
                    invitation
                        .occurrence_responses
                        .insert(*occurrence, response);
                }
                None => {
                    invitation.response = response;
                    invitation.occurrence_responses.clear();
                }
            }
            invitation.reply_revision += 1;
            let reply = Reply {
                attendee: caller.to_owned(),
                organizer: organizer.to_owned(),
                event_id: id.to_owned(),
                asked_sequence: invitation.copy.asked_sequence,
                revision: invitation.reply_revision,
                response: invitation.response,
                occurrence_responses: invitation.occurrence_responses.clone(),
            };
            tx.put_record(key, &invitation);
            tx.put_record(keys::outbox_reply(id, caller), &reply);
            if tx.commit().await?.is_some() {
                return Ok(invitation);
            }
        }
        Err(AgendaError::Contended(format!("invitation {id}")))
    }

    /// The caller's invitations that are not cancelled, newest sequence first within organizer
    /// order; `pending_only` keeps those whose series is not answered.
    pub async fn invitations(
        &self,
        caller: &str,
        pending_only: bool,
    ) -> Result<Vec<Invitation>, AgendaError> {
        let mut invitations = Vec::new();
        for (key, versioned) in
            crate::store::scan_prefix(&self.store, &keys::invitations(caller)).await?
        {
            let invitation: Invitation = decode(&key, &versioned.value)?;
            let pending = invitation.response == Response::NeedsAction;
            if !invitation.copy.cancelled && (pending || !pending_only) {
                invitations.push(invitation);
            }
        }
        Ok(invitations)
    }

    /// The answers to an event, for its organizer: the newest reply of each invited user that
    /// answers the current time and place.
    pub async fn tally(&self, caller: &str, id: &str) -> Result<Tally, AgendaError> {
        let event = self.event(caller, id).await?;
        if caller != event.owner {
            return Err(AgendaError::Forbidden(
                "only the organizer sees the tally".into(),
            ));
        }
        let mut attendees: BTreeMap<String, (Response, BTreeMap<Local, Response>)> = event
            .invited
            .iter()
            .map(|user| (user.clone(), (Response::NeedsAction, BTreeMap::new())))
            .collect();
        for (key, versioned) in crate::store::scan_prefix(&self.store, &keys::replies(id)).await? {
            let reply: Reply = decode(&key, &versioned.value)?;
            if reply.asked_sequence < event.asked_sequence {
                continue;
            }
            if let Some(entry) = attendees.get_mut(&reply.attendee) {
                *entry = (reply.response, reply.occurrence_responses);
            }
        }
        let mut counts = BTreeMap::new();
        for (response, _) in attendees.values() {
            *counts.entry(*response).or_insert(0) += 1;
        }
        Ok(Tally { attendees, counts })
    }

    /// The events `owner` organizes.
    pub(crate) async fn owned_events(&self, owner: &str) -> Result<Vec<Event>, AgendaError> {
        let mut events = Vec::new();
        for (key, versioned) in crate::store::scan_prefix(&self.store, &keys::events(owner)).await?
        {
            events.push(decode(&key, &versioned.value)?);
        }
        Ok(events)
    }
}

/// Applies a change to a whole series (or a single event). Returns the users no longer invited.
fn apply_to_series(
    event: &mut Event,
    change: &EventChange,
    invited: Option<Vec<String>>,
) -> Result<Vec<String>, AgendaError> {
    let content = &mut event.content;
    let place_changed = change
        .location
        .as_ref()
        .is_some_and(|location| *location != content.location);
    let moved = match (&change.start, &change.end) {
        (Some(start), Some(end))
            if *start != content.schedule.start || *end != content.schedule.end =>
        {
            Some((*start, *end))
        }
        _ => None,
    };
    let new_rule = change
        .rrule
        .as_ref()
        .filter(|rrule| **rrule != content.schedule.rrule);
    let time_changed = moved.is_some() || new_rule.is_some();
    match (moved, new_rule) {
        // Exdates, overrides and UNTIL move with the series, so they keep naming the same
        // occurrences.
        (Some((start, end)), None) => {
            content.schedule = content
                .schedule
                .moved_to(start, end)
                .map_err(|error| AgendaError::invalid("start", error.to_string()))?;
        }
        (moved, new_rule) => {
            if let Some((start, end)) = moved {
                content.schedule.start = start;
                content.schedule.end = end;
            }
            if let Some(rrule) = new_rule {
                content.schedule.rrule = rrule.clone();
            }
        }
    }
    if time_changed {
        // Exceptions name occurrences of the old series; those that are no longer occurrences go.
        let schedule = content.schedule.clone();
        let still = |at: &Local| {
            Schedule {
                exdates: Vec::new(),
                overrides: BTreeMap::new(),
                ..schedule.clone()
            }
            .has_occurrence(at)
            .unwrap_or(false)
        };
        content.schedule.exdates.retain(|at| still(at));
        content.schedule.overrides.retain(|at, _| still(at));
        content.details.retain(|at, _| still(at));
    }
    if let Some(title) = &change.title {
        content.title = title.clone();
    }
    if let Some(description) = &change.description {
        content.description = description.clone();
    }
    if let Some(location) = &change.location {
        content.location = location.clone();
    }
    let mut removed = Vec::new();
    if let Some(invited) = invited {
        removed = event
            .invited
            .iter()
            .filter(|user| invited.binary_search(user).is_err())
            .cloned()
            .collect();
        event.invited = invited;
        event.attendees = change.attendees.clone().unwrap_or_default();
    }
    event.sequence += 1;
    if time_changed || place_changed {
        event.asked_sequence = event.sequence;
    }
    Ok(removed)
}

/// Applies a change to one occurrence: its time goes to the schedule's overrides, its text to
/// the event's details.
fn apply_to_occurrence(
    event: &mut Event,
    occurrence: &Local,
    change: &EventChange,
) -> Result<(), AgendaError> {
    check_occurrence(&event.content.schedule, occurrence)?;
    if change.rrule.is_some() || change.attendees.is_some() {
        return Err(AgendaError::invalid(
            "scope",
            "the recurrence and the attendees change for the whole series only",
        ));
    }
    let content = &mut event.content;
    let mut asked_again = false;
    if let (Some(start), Some(end)) = (&change.start, &change.end) {
        content.schedule.overrides.insert(
            *occurrence,
            Moved {
                start: *start,
                end: *end,
            },
        );
        asked_again = true;
    }
    let details = content.details.entry(*occurrence).or_default();
    if let Some(title) = &change.title {
        details.title = Some(title.clone());
    }
    if let Some(description) = &change.description {
        details.description = Some(description.clone());
    }
    if let Some(location) = &change.location {
        asked_again |= details.location.as_ref() != Some(location);
        details.location = Some(location.clone());
    }
    if *details == Details::default() {
        content.details.remove(occurrence);
    }
    event.sequence += 1;
    if asked_again {
        event.asked_sequence = event.sequence;
    }
    Ok(())
}

/// Shares a series' per-occurrence details between its two halves after a split.
fn split_details(
    before: &mut Content,
    before_schedule: Schedule,
    after: &mut Content,
    after_schedule: Schedule,
) {
    let details = std::mem::take(&mut before.details);
    before.schedule = before_schedule;
    after.schedule = after_schedule;
    after.details.clear();
    for (at, detail) in details {
        if before.schedule.has_occurrence(&at).unwrap_or(false) {
            before.details.insert(at, detail);
        } else {
            after.details.insert(at, detail);
        }
    }
}
