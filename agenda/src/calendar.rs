//! Reading time: a user's agenda over a range, busy time, conflicts, and finding a free slot.
//!
//! Everything here reads; nothing writes. An attendee's calendar needs no read of the
//! organizer's shard: the invitation in the attendee's own shard carries a copy of the event.
//! Free/busy shows intervals only, never titles or places.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Agenda;
use crate::error::AgendaError;
use crate::events::{Content, Event, Response};
use crate::schedule::{self, Availability, Local};
use crate::store::{Env, Store};

/// The longest range one query expands: a year and a bit.
pub const RANGE_MS_MAX: i64 = 370 * 24 * 3_600_000;
/// The most occurrences one query returns, over all events.
pub const OCCURRENCES_MAX: usize = 20_000;
/// How far ahead conflicts of a new or changed event are looked for.
pub const CONFLICT_HORIZON_MS: i64 = 180 * 24 * 3_600_000;
/// The most users one free/busy or find-a-time query covers.
pub const PEOPLE_MAX: usize = 100;

/// One occurrence in a user's agenda.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The organizer.
    pub owner: String,
    /// The event id.
    pub event_id: String,
    /// The occurrence id (its original start in the event's zone).
    pub occurrence: Local,
    /// Its start, in the caller's zone (RFC 3339 with offset).
    pub start: String,
    /// Its end, in the caller's zone.
    pub end: String,
    /// Start and end in ms since the epoch.
    pub start_ms: i64,
    /// See `start_ms`.
    pub end_ms: i64,
    /// An all-day occurrence (shown by date, in the event's own zone).
    pub all_day: bool,
    /// For an all-day occurrence, its first day in the event's own zone (where it was moved to,
    /// if it was): a calendar shows it on that date whatever the caller's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<Local>,
    /// The title (this occurrence's, if it was changed).
    pub title: String,
    /// The place.
    pub location: String,
    /// The caller organizes it.
    pub organizer: bool,
    /// The caller's answer (for an invitation), this occurrence's if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
}

/// An overlap found when saving an event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Conflict {
    /// Whose busy time it overlaps.
    pub user: String,
    /// The occurrence of the saved event.
    pub occurrence: Local,
    /// The busy interval it overlaps, in ms since the epoch.
    pub busy: (i64, i64),
}

/// Busy intervals of one user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FreeBusy {
    /// The user.
    pub user: String,
    /// Merged busy intervals in ms since the epoch, sorted.
    pub busy: Vec<(i64, i64)>,
}

/// Something in a user's calendar: an event they organize, or an invitation to one.
struct Item {
    owner: String,
    event_id: String,
    content: Content,
    organizer: bool,
    response: Option<(Response, BTreeMap<Local, Response>)>,
}

impl Item {
    fn response_for(&self, occurrence: &Local) -> Option<Response> {
        self.response
            .as_ref()
            .map(|(series, occurrences)| occurrences.get(occurrence).copied().unwrap_or(*series))
    }
}

fn check_range(from_ms: i64, to_ms: i64) -> Result<(), AgendaError> {
    if to_ms <= from_ms {
        return Err(AgendaError::invalid(
            "range",
            "the end must be after the start",
        ));
    }
    if to_ms - from_ms > RANGE_MS_MAX {
        return Err(AgendaError::invalid("range", "at most 370 days"));
    }
    Ok(())
}

fn schedule_error(error: schedule::ScheduleError) -> AgendaError {
    AgendaError::invalid("range", error.to_string())
}

impl<S: Store, E: Env> Agenda<S, E> {
    /// Everything in `user`'s calendar: their events and their invitations (not cancelled).
    async fn items(&self, user: &str) -> Result<Vec<Item>, AgendaError> {
        let mut items: Vec<Item> = self
            .owned_events(user)
            .await?
            .into_iter()
            .map(|event: Event| Item {
                owner: event.owner,
                event_id: event.id,
                content: event.content,
                organizer: true,
                response: None,
            })
            .collect();
        for invitation in self.invitations(user, false).await? {
            items.push(Item {
                owner: invitation.copy.organizer,
                event_id: invitation.copy.event_id,
                content: invitation.copy.content,
                organizer: false,
                response: Some((invitation.response, invitation.occurrence_responses)),
            });
        }
        Ok(items)
    }

    /// The caller's agenda over `[from_ms, to_ms)`: every occurrence of their events and
    /// invitations, recurrences expanded, in the caller's zone, sorted by start.
    pub async fn agenda(
        &self,
        caller: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Entry>, AgendaError> {
        check_range(from_ms, to_ms)?;
        let zone = schedule::parse_zone(&self.account(caller).await?.zone)
            .map_err(|error| AgendaError::invalid("zone", error.to_string()))?;
        let mut entries = Vec::new();
        for item in self.items(caller).await? {
            let left = OCCURRENCES_MAX.saturating_sub(entries.len());
            let occurrences = item
                .content
                .schedule
                .expand(from_ms, to_ms, left)
                .map_err(schedule_error)?;
            for occurrence in occurrences {
                let details = item.content.details.get(&occurrence.id);
                let title = details.and_then(|d| d.title.clone());
                let location = details.and_then(|d| d.location.clone());
                entries.push(Entry {
                    owner: item.owner.clone(),
                    event_id: item.event_id.clone(),
                    start: schedule::format_local(occurrence.start_ms, zone),
                    end: schedule::format_local(occurrence.end_ms, zone),
                    start_ms: occurrence.start_ms,
                    end_ms: occurrence.end_ms,
                    all_day: occurrence.all_day,
                    day: occurrence.all_day.then(|| {
                        item.content
                            .schedule
                            .overrides
                            .get(&occurrence.id)
                            .map_or(occurrence.id, |moved| moved.start)
                    }),
                    title: title.unwrap_or_else(|| item.content.title.clone()),
                    location: location.unwrap_or_else(|| item.content.location.clone()),
                    organizer: item.organizer,
                    response: item.response_for(&occurrence.id),
                    occurrence: occurrence.id,
                });
            }
        }
        entries.sort_by(|a, b| {
            (a.start_ms, &a.owner, &a.event_id).cmp(&(b.start_ms, &b.owner, &b.event_id))
        });
        Ok(entries)
    }

    /// A user's busy intervals over a range, leaving out one event (the one being saved) and
    /// what the user declined.
    async fn busy(
        &self,
        user: &str,
        from_ms: i64,
        to_ms: i64,
        except: Option<(&str, &str)>,
    ) -> Result<Vec<(i64, i64)>, AgendaError> {
        let mut busy = Vec::new();
        for item in self.items(user).await? {
            if except == Some((item.owner.as_str(), item.event_id.as_str())) {
                continue;
            }
            let left = OCCURRENCES_MAX.saturating_sub(busy.len());
            for occurrence in item
                .content
                .schedule
                .expand(from_ms, to_ms, left)
                .map_err(schedule_error)?
            {
                if item.response_for(&occurrence.id) != Some(Response::Declined) {
                    busy.push((occurrence.start_ms, occurrence.end_ms));
                }
            }
        }
        Ok(schedule::merge_busy(busy))
    }

    /// Free/busy of `users` over a range: busy intervals only.
    pub async fn free_busy(
        &self,
        users: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<FreeBusy>, AgendaError> {
        check_range(from_ms, to_ms)?;
        if users.len() > PEOPLE_MAX {
            return Err(AgendaError::invalid(
                "users",
                format!("at most {PEOPLE_MAX}"),
            ));
        }
        let mut answer = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for user in users.iter().filter(|user| seen.insert(user.as_str())) {
            self.account(user).await?;
            answer.push(FreeBusy {
                user: user.clone(),
                busy: self.busy(user, from_ms, to_ms, None).await?,
            });
        }
        Ok(answer)
    }

    /// The overlaps of an event's occurrences (from now, within [`CONFLICT_HORIZON_MS`]) with the
    /// busy time of its owner and everyone it invites.
    pub(crate) async fn conflicts(&self, event: &Event) -> Result<Vec<Conflict>, AgendaError> {
        let from_ms = self.env.now_ms();
        let to_ms = from_ms + CONFLICT_HORIZON_MS;
        let occurrences = event
            .content
            .schedule
            .expand(from_ms, to_ms, OCCURRENCES_MAX)
            .map_err(schedule_error)?;
        let Some((first, last)) = occurrences
            .first()
            .zip(occurrences.iter().map(|o| o.end_ms).max())
        else {
            return Ok(Vec::new());
        };
        let mut conflicts = Vec::new();
        let people = std::iter::once(&event.owner).chain(&event.invited);
        for user in people {
            let busy = self
                .busy(user, first.start_ms, last, Some((&event.owner, &event.id)))
                .await?;
            for occurrence in &occurrences {
                for &(start, end) in &busy {
                    if start < occurrence.end_ms && occurrence.start_ms < end {
                        conflicts.push(Conflict {
                            user: user.clone(),
                            occurrence: occurrence.id,
                            busy: (start, end),
                        });
                    }
                }
            }
        }
        Ok(conflicts)
    }

    /// Find a time: the first `max` slots of `length_ms` in a range when every one of `users`
    /// is free and within their working hours (slots start on quarter hours).
    pub async fn find_time(
        &self,
        users: &[String],
        from_ms: i64,
        to_ms: i64,
        length_ms: i64,
        max: usize,
    ) -> Result<Vec<(i64, i64)>, AgendaError> {
        check_range(from_ms, to_ms)?;
        if users.is_empty() || users.len() > PEOPLE_MAX {
            return Err(AgendaError::invalid("users", format!("1 to {PEOPLE_MAX}")));
        }
        let mut people = Vec::new();
        let users: std::collections::BTreeSet<&String> = users.iter().collect();
        for user in users {
            let account = self.account(user).await?;
            people.push(Availability {
                zone: account.zone,
                hours: account.working_hours,
                busy: self.busy(user, from_ms, to_ms, None).await?,
            });
        }
        const QUARTER_HOUR_MS: i64 = 15 * 60_000;
        schedule::find_slots(&people, from_ms, to_ms, length_ms, QUARTER_HOUR_MS, max)
            .map_err(|error| AgendaError::invalid("find a time", error.to_string()))
    }
}
