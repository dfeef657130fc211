//! Events as iCalendar text: one VEVENT per event (the series), one more per occurrence that
//! was moved or given its own text (RECURRENCE-ID), inside one VCALENDAR.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use icalendar::{Calendar, Component, Property};

use crate::events::{Content, Response};
use crate::schedule::Local;

/// The domain of the attendees' and organizers' calendar addresses. Accounts have no e-mail
/// address, and RFC 5545 wants a URI; `.invalid` (RFC 2606) can never reach anyone, so no
/// calendar application sends mail to it.
pub const ADDRESS_DOMAIN: &str = "agenda.invalid";

/// The product id every calendar carries.
const PRODUCT_ID: &str = "-//Agenda//Agenda team calendar//EN";

/// One event to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported<'a> {
    /// The UID: the event id.
    pub uid: &'a str,
    /// The organizer's user name.
    pub organizer: &'a str,
    /// What and when.
    pub content: &'a Content,
    /// The event's sequence (SEQUENCE).
    pub sequence: u32,
    /// The users listed as attendees, each with the answer shown (PARTSTAT), if known.
    pub attendees: Vec<(String, Option<Response>)>,
    /// DTSTAMP: when the information last changed (RFC 5545 3.8.7.2, for a calendar without
    /// METHOD), ms since the epoch.
    pub stamp_ms: i64,
}

/// A calendar's own properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalendarInfo {
    /// X-WR-CALNAME, the name Google Calendar and Thunderbird show for a subscription.
    pub name: Option<String>,
    /// How often a subscriber should fetch it again (REFRESH-INTERVAL, X-PUBLISHED-TTL), in
    /// minutes.
    pub refresh_minutes: Option<u32>,
}

/// A VCALENDAR holding `events`, as text with CRLF line ends and folded lines.
pub fn calendar(info: &CalendarInfo, events: &[Exported<'_>]) -> String {
    let mut calendar = Calendar::empty();
    calendar
        .append_property(Property::new("VERSION", "2.0"))
        .append_property(Property::new("PRODID", PRODUCT_ID))
        .append_property(Property::new("CALSCALE", "GREGORIAN"));
    if let Some(name) = &info.name {
        calendar.append_property(Property::new("X-WR-CALNAME", name.as_str()));
    }
    if let Some(minutes) = info.refresh_minutes {
        let duration = format!("PT{minutes}M");
        calendar
            .append_property(
                Property::new("REFRESH-INTERVAL", duration.as_str())
                    .add_parameter("VALUE", "DURATION")
                    .done(),
            )
            .append_property(Property::new("X-PUBLISHED-TTL", duration));
    }
    for event in events {
        for component in vevents(event) {
            calendar.push(component);
        }
    }
    calendar.to_string()
}

/// The VEVENTs of one event: the series first, then its exceptions in occurrence order.
fn vevents(exported: &Exported<'_>) -> Vec<icalendar::Event> {
    let content = exported.content;
    let schedule = &content.schedule;
    let zone = schedule.zone.as_str();
    let mut series = base(exported);
    series
        .append_property(date_property("DTSTART", &schedule.start, zone))
        .append_property(date_property("DTEND", &schedule.end, zone))
        .summary(&content.title);
    text(&mut series, "DESCRIPTION", &content.description);
    text(&mut series, "LOCATION", &content.location);
    if let Some(rule) = &schedule.rrule {
        series.append_property(Property::new("RRULE", rule.to_ascii_uppercase()));
    }
    for exdate in &schedule.exdates {
        series.append_multi_property(date_property("EXDATE", exdate, zone));
    }
    let mut events = vec![series.done()];
    let exceptions: std::collections::BTreeSet<&Local> = schedule
        .overrides
        .keys()
        .chain(content.details.keys())
        .collect();
    for occurrence in exceptions {
        let (start, end) = match schedule.overrides.get(occurrence) {
            Some(moved) => (moved.start, moved.end),
            None => (
                *occurrence,
                super::shifted_end(&schedule.start, &schedule.end, occurrence),
            ),
        };
        let details = content.details.get(occurrence).cloned().unwrap_or_default();
        let mut exception = base(exported);
        exception
            .append_property(date_property("RECURRENCE-ID", occurrence, zone))
            .append_property(date_property("DTSTART", &start, zone))
            .append_property(date_property("DTEND", &end, zone))
            .summary(details.title.as_deref().unwrap_or(&content.title));
        let description = details.description.as_deref();
        text(
            &mut exception,
            "DESCRIPTION",
            description.unwrap_or(&content.description),
        );
        let location = details.location.as_deref();
        text(
            &mut exception,
            "LOCATION",
            location.unwrap_or(&content.location),
        );
        events.push(exception.done());
    }
    events
}

/// The properties every VEVENT of an event shares: UID, DTSTAMP, SEQUENCE, the people.
fn base(exported: &Exported<'_>) -> icalendar::Event {
    let mut event = icalendar::Event::new();
    event
        .uid(exported.uid)
        .append_property(Property::new("DTSTAMP", utc_text(exported.stamp_ms)))
        .sequence(exported.sequence)
        .append_property(
            Property::new("ORGANIZER", address(exported.organizer))
                .add_parameter("CN", exported.organizer)
                .done(),
        );
    for (user, response) in &exported.attendees {
        let mut attendee = Property::new("ATTENDEE", address(user));
        attendee.add_parameter("CN", user);
        attendee.add_parameter("ROLE", "REQ-PARTICIPANT");
        if let Some(response) = response {
            attendee.add_parameter("PARTSTAT", partstat(*response));
        }
        event.append_multi_property(attendee.done());
    }
    event
}

/// A text property, left out when empty.
fn text(event: &mut icalendar::Event, name: &str, value: &str) {
    if !value.is_empty() {
        event.add_property(name, value);
    }
}

/// The calendar address of a user.
pub fn address(user: &str) -> String {
    format!("mailto:{user}@{ADDRESS_DOMAIN}")
}

/// RFC 5545's PARTSTAT for an answer.
pub fn partstat(response: Response) -> &'static str {
    match response {
        Response::NeedsAction => "NEEDS-ACTION",
        Response::Accepted => "ACCEPTED",
        Response::Declined => "DECLINED",
        Response::Tentative => "TENTATIVE",
    }
}

/// Whether a zone name means UTC (written as `...Z`, which every application reads).
pub(super) fn is_utc(zone: &str) -> bool {
    matches!(zone, "UTC" | "Etc/UTC" | "Etc/Zulu" | "Zulu" | "Universal")
}

/// A DATE or DATE-TIME property: `VALUE=DATE` for days, `TZID` for wall-clock times (or the
/// UTC form for the UTC zone).
fn date_property(name: &str, at: &Local, zone: &str) -> Property {
    match at {
        Local::Day(day) => Property::new(name, date_text(*day))
            .add_parameter("VALUE", "DATE")
            .done(),
        Local::At(at) if is_utc(zone) => Property::new(name, format!("{}Z", date_time_text(*at))),
        Local::At(at) => Property::new(name, date_time_text(*at))
            .add_parameter("TZID", zone)
            .done(),
    }
}

fn date_text(day: NaiveDate) -> String {
    day.format("%Y%m%d").to_string()
}

fn date_time_text(at: NaiveDateTime) -> String {
    at.format("%Y%m%dT%H%M%S").to_string()
}

fn utc_text(ms: i64) -> String {
    let at: DateTime<Utc> = DateTime::from_timestamp_millis(ms).unwrap_or_default();
    at.format("%Y%m%dT%H%M%SZ").to_string()
}
