//! The shapes of the public API (HTTP/JSON, and the WebSocket's requests): what clients send,
//! in the forms the issue fixes for outside tools — RFC 3339 instants, a `time_zone` beside
//! them, attendees as user names and `group:<id>` — turned into the layer's values.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveTime, TimeZone, Timelike};
use serde::{Deserialize, Serialize};

use crate::error::AgendaError;
use crate::events::{Attendee, EventChange, NewEvent, Scope};
use crate::schedule::{self, Local, Schedule};

/// `POST /v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// The title.
    pub title: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Where.
    #[serde(default)]
    pub location: String,
    /// RFC 3339 (`2026-06-01T10:00:00+02:00`), or a wall-clock time in `time_zone`
    /// (`2026-06-01T10:00`); for an all-day event a date (`2026-06-01`).
    pub start: String,
    /// As `start`; exclusive (an all-day event's end is the day after its last day).
    /// Optional for an all-day event (one day).
    #[serde(default)]
    pub end: Option<String>,
    /// The event's IANA zone (its recurrence follows this zone's wall clock); the
    /// organizer's own zone if absent.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// A whole-day event.
    #[serde(default)]
    pub all_day: bool,
    /// An RRULE value (`FREQ=WEEKLY;BYDAY=MO;COUNT=10`).
    #[serde(default)]
    pub rrule: Option<String>,
    /// Occurrences removed from the series (their original starts, in the forms of `start`).
    #[serde(default)]
    pub exdates: Vec<String>,
    /// User names, and `group:<id>` for every member of a group.
    #[serde(default)]
    pub attendees: Vec<String>,
}

/// `PATCH /v1/events/{id}`: the fields given change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventPatch {
    /// `all` (default), `this` or `following`.
    #[serde(default)]
    pub scope: Option<String>,
    /// The occurrence for `this` and `following`: its original start (RFC 3339, or the
    /// wall-clock form in the event's zone).
    #[serde(default)]
    pub occurrence: Option<String>,
    /// A new title.
    #[serde(default)]
    pub title: Option<String>,
    /// A new description.
    #[serde(default)]
    pub description: Option<String>,
    /// A new place.
    #[serde(default)]
    pub location: Option<String>,
    /// A new start, with `end`.
    #[serde(default)]
    pub start: Option<String>,
    /// A new end, with `start`.
    #[serde(default)]
    pub end: Option<String>,
    /// A new rule; `null` ends the recurrence.
    #[serde(default, with = "crate::events::double_option")]
    pub rrule: Option<Option<String>>,
    /// A new attendee list.
    #[serde(default)]
    pub attendees: Option<Vec<String>>,
    /// Apply only if the event's `sequence` is still this (the one the client read).
    #[serde(default)]
    pub if_sequence: Option<u32>,
}

/// An RFC 3339 instant as ms since the epoch.
pub fn parse_instant(field: &'static str, text: &str) -> Result<i64, AgendaError> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.timestamp_millis())
        .map_err(|error| {
            AgendaError::invalid(
                field,
                format!("{:?} is not an RFC 3339 instant: {error}", short(text)),
            )
        })
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

/// A point on the event's calendar from a request: a date for all-day events; otherwise RFC
/// 3339 (turned into the wall-clock time in `zone`) or the wall-clock form itself.
pub fn parse_local(
    field: &'static str,
    text: &str,
    zone: &str,
    all_day: bool,
) -> Result<Local, AgendaError> {
    let invalid = |reason: String| AgendaError::invalid(field, reason);
    if all_day {
        let local: Local = text
            .parse()
            .map_err(|error: schedule::ScheduleError| invalid(error.to_string()))?;
        if !local.is_day() {
            return Err(invalid(format!(
                "an all-day event takes a date, not {:?}",
                short(text)
            )));
        }
        return Ok(local);
    }
    if text.len() == 16 {
        let local: Local = text
            .parse()
            .map_err(|error: schedule::ScheduleError| invalid(error.to_string()))?;
        return Ok(local);
    }
    let instant = DateTime::parse_from_rfc3339(text).map_err(|error| {
        invalid(format!(
            "{:?} is neither RFC 3339 nor YYYY-MM-DDTHH:MM: {error}",
            short(text)
        ))
    })?;
    let tz = schedule::parse_zone(zone)
        .map_err(|error| AgendaError::invalid("time_zone", error.to_string()))?;
    let wall = tz.from_utc_datetime(&instant.naive_utc()).naive_local();
    if wall.second() != 0 || wall.nanosecond() != 0 {
        return Err(invalid("times are to the minute".into()));
    }
    Ok(Local::At(wall.date().and_time(
        NaiveTime::from_hms_opt(wall.hour(), wall.minute(), 0).unwrap_or(NaiveTime::MIN),
    )))
}

/// Attendees as the API names them: `group:<id>` or a user name.
pub fn parse_attendees(names: &[String]) -> Vec<Attendee> {
    names
        .iter()
        .map(|name| match name.strip_prefix("group:") {
            Some(group) => Attendee::Group(group.to_owned()),
            None => Attendee::User(name.clone()),
        })
        .collect()
}

/// Attendees in the API's form.
pub fn attendee_names(attendees: &[Attendee]) -> Vec<String> {
    attendees
        .iter()
        .map(|attendee| match attendee {
            Attendee::Group(group) => format!("group:{group}"),
            Attendee::User(user) => user.clone(),
        })
        .collect()
}

/// The most exdates one request may carry.
const EXDATES_MAX: usize = 1_000;

impl EventRequest {
    /// The new event, with `default_zone` (the organizer's) when the request names none.
    pub fn into_new_event(self, default_zone: &str) -> Result<NewEvent, AgendaError> {
        let zone = self.time_zone.unwrap_or_else(|| default_zone.to_owned());
        let start = parse_local("start", &self.start, &zone, self.all_day)?;
        let end = match (&self.end, start) {
            (Some(end), _) => parse_local("end", end, &zone, self.all_day)?,
            (None, Local::Day(day)) => Local::Day(
                day.succ_opt()
                    .ok_or_else(|| AgendaError::invalid("start", "no day after it"))?,
            ),
            (None, Local::At(_)) => {
                return Err(AgendaError::invalid("end", "required unless all_day"));
            }
        };
        if self.exdates.len() > EXDATES_MAX {
            return Err(AgendaError::invalid(
                "exdates",
                format!("at most {EXDATES_MAX}"),
            ));
        }
        let exdates = self
            .exdates
            .iter()
            .map(|text| parse_local("exdates", text, &zone, self.all_day))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NewEvent {
            title: self.title,
            description: self.description,
            location: self.location,
            schedule: Schedule {
                zone,
                start,
                end,
                rrule: self.rrule,
                exdates,
                overrides: BTreeMap::new(),
            },
            attendees: parse_attendees(&self.attendees),
        })
    }
}

impl EventPatch {
    /// The change, reading times in the event's `zone` (all-day if the event is).
    pub fn into_change(self, zone: &str, all_day: bool) -> Result<EventChange, AgendaError> {
        let occurrence = self
            .occurrence
            .as_deref()
            .map(|text| parse_local("occurrence", text, zone, all_day))
            .transpose()?;
        let scope = match (self.scope.as_deref().unwrap_or("all"), occurrence) {
            ("all", None) => Scope::All,
            ("this", Some(at)) => Scope::This(at),
            ("following", Some(at)) => Scope::Following(at),
            ("all", Some(_)) => {
                return Err(AgendaError::invalid(
                    "occurrence",
                    "scope all takes no occurrence",
                ));
            }
            ("this" | "following", None) => {
                return Err(AgendaError::invalid(
                    "occurrence",
                    "required for this scope",
                ));
            }
            (other, _) => {
                return Err(AgendaError::invalid(
                    "scope",
                    format!("all, this or following, not {:?}", short(other)),
                ));
            }
        };
        let local = |field, text: Option<String>| {
            text.map(|text| parse_local(field, &text, zone, all_day))
                .transpose()
        };
        Ok(EventChange {
            scope,
            title: self.title,
            description: self.description,
            location: self.location,
            start: local("start", self.start)?,
            end: local("end", self.end)?,
            rrule: self.rrule,
            attendees: self.attendees.as_deref().map(parse_attendees),
            if_sequence: self.if_sequence,
        })
    }
}

/// `DELETE /v1/events/{id}?scope=&occurrence=`.
pub fn parse_scope(
    scope: Option<&str>,
    occurrence: Option<&str>,
    zone: &str,
    all_day: bool,
) -> Result<Scope, AgendaError> {
    EventPatch {
        scope: scope.map(str::to_owned),
        occurrence: occurrence.map(str::to_owned),
        ..EventPatch::default()
    }
    .into_change(zone, all_day)
    .map(|change| change.scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_becomes_the_wall_clock_time_of_the_event_zone() {
        let local = parse_local("start", "2026-06-01T08:00:00Z", "Europe/Madrid", false).unwrap();
        assert_eq!(local.to_string(), "2026-06-01T10:00");
        let local = parse_local("start", "2026-06-01T10:00", "Europe/Madrid", false).unwrap();
        assert_eq!(local.to_string(), "2026-06-01T10:00");
        assert!(parse_local("start", "2026-06-01T08:00:30Z", "Europe/Madrid", false).is_err());
        assert!(parse_local("start", "2026-06-01", "Europe/Madrid", false).is_err());
        assert!(parse_local("start", "2026-06-01T10:00", "Europe/Madrid", true).is_err());
        assert!(parse_local("start", "2026-06-01", "Europe/Madrid", true).is_ok());
        assert!(parse_local("start", "yesterday", "UTC", false).is_err());
        assert!(parse_local("start", "2026-06-01T08:00:00Z", "Mars/Olympus", false).is_err());
    }

    #[test]
    fn attendees_are_users_or_groups() {
        let parsed = parse_attendees(&["bob".into(), "group:team".into()]);
        assert_eq!(
            parsed,
            [Attendee::User("bob".into()), Attendee::Group("team".into())]
        );
        assert_eq!(attendee_names(&parsed), ["bob", "group:team"]);
    }

    #[test]
    fn a_one_day_all_day_event_needs_no_end() {
        let request: EventRequest = serde_json::from_str(
            r#"{"title": "Holiday", "start": "2026-08-10", "all_day": true, "time_zone": "UTC"}"#,
        )
        .unwrap();
        let event = request.into_new_event("UTC").unwrap();
        assert_eq!(event.schedule.end.to_string(), "2026-08-11");
    }

    #[test]
    fn unknown_fields_and_bad_scopes_are_refused() {
        assert!(
            serde_json::from_str::<EventRequest>(r#"{"title": "x", "start": "s", "color": 1}"#)
                .is_err()
        );
        let patch = EventPatch {
            scope: Some("some".into()),
            ..EventPatch::default()
        };
        assert!(patch.into_change("UTC", false).is_err());
        let patch = EventPatch {
            scope: Some("this".into()),
            ..EventPatch::default()
        };
        assert!(patch.into_change("UTC", false).is_err());
    }
}
