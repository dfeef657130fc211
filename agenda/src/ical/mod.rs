//! iCalendar (RFC 5545): one event as a `.ics`, a per-user subscription feed behind a secret
//! URL, and importing a `.ics` file.
//!
//! The text itself is written and parsed by the `icalendar` crate; this module translates
//! between it and the layer's values ([`write`] and [`read`] are pure, the [`Agenda`] methods
//! here read the store).
//!
//! Choices, and why:
//! - **UID** is the event id; **DTSTAMP** is when the event last changed (RFC 5545 3.8.7.2 for a
//!   calendar without METHOD), so the same event gives the same text and no clock is read for
//!   it. An invitation copy has no such time: the feed stamps it with the time of the request.
//! - **Times** carry the event's IANA zone as `TZID` (the UTC zone is written `...Z`) and all-day
//!   events are `VALUE=DATE`. No VTIMEZONE is written: Google Calendar, Thunderbird and Apple
//!   Calendar read IANA names in TZID, and chrono-tz does not give the rules in VTIMEZONE's form.
//! - **People** have no e-mail address here, so they are `mailto:<user>@agenda.invalid` with
//!   `CN=<user>` ([`write::ADDRESS_DOMAIN`]): a URI as RFC 5545 asks, which no application can
//!   send mail to.
//! - **The feed** holds the user's own events and the invitations they did not decline (as a
//!   whole; occurrences they declined are left out as EXDATEs), because a subscribed calendar is
//!   read-only and is what the user's day looks like. Their own answer is their ATTENDEE's
//!   PARTSTAT. At most [`FEED_EVENTS_MAX`] events: their own first, then invitations, each in id
//!   order. Only the SHA-256 of the secret is stored (`us/<user>/feed`); a new secret replaces it,
//!   so the old URL stops working at once, and the check compares digests in constant time.
//! - **Import** creates each series (a VEVENT without RECURRENCE-ID, with its exceptions) as its
//!   own event of the caller, by [`Agenda::create_event`]: a moved or cancelled occurrence goes
//!   into the schedule (an override, an EXDATE), a changed text is applied afterwards as a change
//!   of that occurrence. ATTENDEE and ORGANIZER are ignored (an import asks nobody), UIDs are not
//!   kept (importing a file twice makes two copies), floating times and dates are read in the
//!   caller's zone, seconds are dropped, and a TZID must be an IANA name (or name one in its
//!   VTIMEZONE's X-LIC-LOCATION). RDATE, EXRULE, RANGE=THISANDFUTURE and rule parts outside the
//!   calendar's subset refuse that VEVENT with a message; the others are still created.

pub mod read;
pub mod write;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use subtle::ConstantTimeEq;

use crate::error::AgendaError;
use crate::events::{Event, EventChange, Invitation, Response, Scope};
use crate::keys;
use crate::schedule::{Local, ScheduleError};
use crate::store::{Env, Store, Tx, decode, hex};
use crate::{Agenda, schedule::Schedule};

pub use read::{IMPORT_BYTES_MAX, IMPORT_EVENTS_MAX};
use write::{CalendarInfo, Exported};

/// The most events one feed holds.
pub const FEED_EVENTS_MAX: usize = 500;
/// How often a subscriber is asked to fetch the feed again, in minutes.
const FEED_REFRESH_MINUTES: u32 = 60;

/// Why iCalendar text was refused (all of it, or one VEVENT of an import).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IcalError {
    /// The text is not iCalendar, or holds no VEVENT.
    #[error("not an iCalendar text: {0}")]
    Syntax(String),
    /// Larger than an import takes.
    #[error("the calendar is too large: {0}")]
    TooLarge(String),
    /// A required property is missing.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A property's value is malformed or does not fit.
    #[error("{property}: {reason}")]
    Invalid {
        /// The property, e.g. "DTEND".
        property: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A part of RFC 5545 this calendar does not support.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The schedule it makes is refused: an unknown zone, a rule outside the subset, limits.
    #[error(transparent)]
    Schedule(ScheduleError),
}

impl From<IcalError> for AgendaError {
    fn from(error: IcalError) -> AgendaError {
        AgendaError::invalid("calendar", error.to_string())
    }
}

/// A user's feed as stored at `us/<user>/feed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Feed {
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// When this secret was made.
    pub created_ms: i64,
}

/// A new feed secret and where it is served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeedUrl {
    /// The path of the feed: `/v1/feeds/<user>/<secret>.ics`.
    pub url: String,
}

/// One created event of an import.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportCreated {
    /// The VEVENT's position in the file (from 0).
    pub index: usize,
    /// Its UID in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The new event's id.
    pub id: String,
}

/// One refused VEVENT of an import.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportFailure {
    /// The VEVENT's position in the file (from 0).
    pub index: usize,
    /// Its UID in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The event created anyway, when only an occurrence's text could not be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why.
    pub message: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    /// The events created.
    pub created: Vec<ImportCreated>,
    /// The VEVENTs refused.
    pub errors: Vec<ImportFailure>,
}

/// The path a feed is served at.
pub fn feed_path(user: &str, secret: &str) -> String {
    format!("/v1/feeds/{user}/{secret}.ics")
}

/// The end of an occurrence that was not moved: its start plus the series' wall-clock length.
pub(crate) fn shifted_end(start: &Local, end: &Local, occurrence: &Local) -> Local {
    let length = end.naive() - start.naive();
    let shifted = occurrence.naive().checked_add_signed(length);
    Local::from_naive(
        shifted.unwrap_or_else(|| occurrence.naive()),
        occurrence.is_day(),
    )
}

fn secret_hash(secret: &str) -> String {
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

/// The content an attendee's feed shows: the occurrences they declined removed.
fn attended(invitation: &Invitation) -> crate::events::Content {
    let mut content = invitation.copy.content.clone();
    for (occurrence, response) in &invitation.occurrence_responses {
        if *response == Response::Declined {
            let schedule: &mut Schedule = &mut content.schedule;
            schedule.overrides.remove(occurrence);
            content.details.remove(occurrence);
            schedule.exdates.push(*occurrence);
        }
    }
    content.schedule.exdates.sort();
    content.schedule.exdates.dedup();
    content
}

impl<S: Store, E: Env> Agenda<S, E> {
    /// One event as a VCALENDAR, for its organizer (with everyone's answers) or an attendee
    /// (with their own).
    pub async fn event_ics(&self, caller: &str, id: &str) -> Result<String, AgendaError> {
        let event = self.event(caller, id).await?;
        let attendees = if caller == event.owner {
            let tally = self.tally(caller, id).await?;
            tally
                .attendees
                .into_iter()
                .map(|(user, (response, _))| (user, Some(response)))
                .collect()
        } else {
            let own = self.own_response(caller, id).await?;
            event
                .invited
                .iter()
                .map(|user| (user.clone(), (user == caller).then_some(own).flatten()))
                .collect()
        };
        let exported = exported_event(&event, attendees);
        Ok(write::calendar(&CalendarInfo::default(), &[exported]))
    }

    async fn own_response(&self, caller: &str, id: &str) -> Result<Option<Response>, AgendaError> {
        let key = keys::invitation(caller, id);
        let Some(found) = self.store.get(key.clone()).await? else {
            return Ok(None);
        };
        let invitation: Invitation = decode(&key, &found.value)?;
        Ok(Some(invitation.response))
    }

    /// Makes a new feed secret for `caller`, replacing any earlier one (whose URL stops
    /// working at once).
    pub async fn rotate_feed(&self, caller: &str) -> Result<FeedUrl, AgendaError> {
        keys::check_name("user", caller)?;
        let secret = hex(&self.env.random());
        let feed = Feed {
            secret_hash: secret_hash(&secret),
            created_ms: self.env.now_ms(),
        };
        let mut tx = Tx::new(&self.store);
        tx.put_record(keys::feed(caller), &feed);
        match tx.commit().await? {
            Some(_) => Ok(FeedUrl {
                url: feed_path(caller, &secret),
            }),
            None => Err(AgendaError::Contended(format!("feed of {caller}"))),
        }
    }

    /// Turns `caller`'s feed off (nothing happens if there is none).
    pub async fn delete_feed(&self, caller: &str) -> Result<(), AgendaError> {
        keys::check_name("user", caller)?;
        let mut tx = Tx::new(&self.store);
        tx.delete(keys::feed(caller));
        match tx.commit().await? {
            Some(_) => Ok(()),
            None => Err(AgendaError::Contended(format!("feed of {caller}"))),
        }
    }

    /// `user`'s feed, if `secret` is its current secret; anything else is
    /// [`AgendaError::NotFound`] (a wrong secret learns nothing, not even whether the user
    /// exists).
    pub async fn feed(&self, user: &str, secret: &str) -> Result<String, AgendaError> {
        let not_found = || AgendaError::NotFound("feed".into());
        let well_formed = keys::check_name("user", user).is_ok()
            && secret.len() == 64
            && secret.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return Err(not_found());
        }
        let key = keys::feed(user);
        let Some(found) = self.store.get(key.clone()).await? else {
            return Err(not_found());
        };
        let feed: Feed = decode(&key, &found.value)?;
        let given = secret_hash(secret);
        if !bool::from(given.as_bytes().ct_eq(feed.secret_hash.as_bytes())) {
            return Err(not_found());
        }
        self.feed_calendar(user).await
    }

    async fn feed_calendar(&self, user: &str) -> Result<String, AgendaError> {
        let owned = self.owned_events(user).await?;
        let invitations: Vec<Invitation> = self
            .invitations(user, false)
            .await?
            .into_iter()
            .filter(|invitation| invitation.response != Response::Declined)
            .collect();
        let contents: Vec<_> = invitations.iter().map(attended).collect();
        let now_ms = self.env.now_ms();
        let mut exported: Vec<Exported<'_>> = owned
            .iter()
            .map(|event| exported_event(event, attendees_unknown(event)))
            .collect();
        exported.extend(
            invitations
                .iter()
                .zip(&contents)
                .map(|(invitation, content)| Exported {
                    uid: &invitation.copy.event_id,
                    organizer: &invitation.copy.organizer,
                    content,
                    sequence: invitation.copy.sequence,
                    attendees: vec![(user.to_owned(), Some(invitation.response))],
                    stamp_ms: now_ms,
                }),
        );
        exported.truncate(FEED_EVENTS_MAX);
        let info = CalendarInfo {
            name: Some(format!("Agenda: {user}")),
            refresh_minutes: Some(FEED_REFRESH_MINUTES),
        };
        Ok(write::calendar(&info, &exported))
    }

    /// Creates the events of a `.ics` text for `caller`, each in its own transaction; what
    /// could not be created is reported per VEVENT. A text that does not parse at all is
    /// [`AgendaError::Invalid`].
    pub async fn import_ics(&self, caller: &str, text: &str) -> Result<ImportReport, AgendaError> {
        let zone = self.profile(caller).await?.zone;
        let mut report = ImportReport::default();
        let digest = {
            use sha2::Digest;
            crate::store::hex(&sha2::Sha256::digest(text.as_bytes())[..8])
        };
        let mut unknown = None;
        for result in read::read(text, &zone)? {
            let imported = match result {
                Ok(imported) => imported,
                Err(refused) => {
                    report.errors.push(ImportFailure {
                        index: refused.index,
                        uid: refused.uid,
                        id: None,
                        message: refused.error.to_string(),
                    });
                    continue;
                }
            };
            let (index, uid) = (imported.index, imported.uid.clone());
            let failure = |id: Option<String>, error: AgendaError| ImportFailure {
                index,
                uid: uid.clone(),
                id,
                message: error.to_string(),
            };
            // The same file imported again (a retry after an unknown outcome, or twice by
            // mistake) makes no second copy: each VEVENT's id derives from the file and its place.
            let key = format!("import:{digest}:{index}");
            let id = match self
                .create_event_once(caller, imported.event, Some(&key))
                .await
            {
                // Imported before from this very file: answered as then (its exceptions
                // were applied then too).
                Ok(saved) if saved.replayed => {
                    report.created.push(ImportCreated {
                        index,
                        uid,
                        id: saved.event.id,
                    });
                    continue;
                }
                Ok(saved) => saved.event.id,
                Err(error) => {
                    if matches!(
                        error,
                        AgendaError::Unavailable(_) | AgendaError::Contended(_)
                    ) {
                        unknown = Some(error.clone());
                    }
                    report.errors.push(failure(None, error));
                    continue;
                }
            };
            for (occurrence, details) in imported.details {
                let change = EventChange {
                    scope: Scope::This(occurrence),
                    title: details.title,
                    description: details.description,
                    location: details.location,
                    ..EventChange::default()
                };
                if let Err(error) = self.update_event(caller, &id, change).await {
                    report.errors.push(failure(Some(id.clone()), error));
                }
            }
            report.created.push(ImportCreated { index, uid, id });
        }
        // Nothing created and some outcome unknown: the caller retries the whole (safely).
        if report.created.is_empty()
            && let Some(error) = unknown
        {
            return Err(error);
        }
        Ok(report)
    }
}

fn exported_event(event: &Event, attendees: Vec<(String, Option<Response>)>) -> Exported<'_> {
    Exported {
        uid: &event.id,
        organizer: &event.owner,
        content: &event.content,
        sequence: event.sequence,
        attendees,
        stamp_ms: event.updated_ms,
    }
}

/// The invited users of an event, without answers (the feed does not read every tally).
fn attendees_unknown(event: &Event) -> Vec<(String, Option<Response>)> {
    event
        .invited
        .iter()
        .map(|user| (user.clone(), None))
        .collect()
}
