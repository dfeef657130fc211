//! iCalendar text into new events: the `icalendar` crate parses (unfolding and unescaping),
//! this module turns each series' VEVENT and its exceptions into a [`Schedule`] and checks it.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use icalendar::parser::{Component, Property, read_calendar, unfold};

use crate::events::{Details, NewEvent};
use crate::schedule::{self, Local, Moved, Schedule, ScheduleError};

use super::IcalError;

/// The most VEVENTs one import may hold (each is a transaction, and each series computes its
/// conflicts).
pub const IMPORT_EVENTS_MAX: usize = 200;
/// The largest calendar text an import takes, in bytes.
pub const IMPORT_BYTES_MAX: usize = 512 * 1024;

/// How deep components may nest (VCALENDAR, VEVENT, VALARM need three): the parser recurses
/// once per level, so a text of nothing but BEGIN lines must not reach it.
const NESTING_MAX: usize = 8;

/// The title of an imported event that has no SUMMARY (a title is required here).
const UNTITLED: &str = "(no title)";

/// A series read from the text, ready to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Its position among the file's VEVENTs (from 0).
    pub index: usize,
    /// Its UID in the file.
    pub uid: Option<String>,
    /// The event to create (no attendees: an import asks nobody).
    pub event: NewEvent,
    /// Text changes of single occurrences (RECURRENCE-ID exceptions), applied after creation.
    pub details: Vec<(Local, Details)>,
}

/// A VEVENT that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its position among the file's VEVENTs (from 0).
    pub index: usize,
    /// Its UID in the file.
    pub uid: Option<String>,
    /// Why.
    pub error: IcalError,
}

/// Reads a calendar: each series (a VEVENT without RECURRENCE-ID, with its exceptions) is
/// either an [`Imported`] or a [`Refused`]. Floating times and dates are read in
/// `default_zone`. A text that does not parse, is too large or holds too many VEVENTs is one
/// error for the whole.
pub fn read(text: &str, default_zone: &str) -> Result<Vec<Result<Imported, Refused>>, IcalError> {
    if text.len() > IMPORT_BYTES_MAX {
        return Err(IcalError::TooLarge(format!(
            "at most {IMPORT_BYTES_MAX} bytes"
        )));
    }
    schedule::parse_zone(default_zone).map_err(IcalError::Schedule)?;
    // Some Windows applications start the file with a byte-order mark.
    let text = text.trim_start_matches('\u{feff}');
    // Every line ends in CRLF before anything reads it: the parser looks for CRLF first, so a
    // value followed by a bare LF would run on to the next CRLF (swallowing the lines between,
    // which the nesting check counts but the parser would not: a stack overflow), and a text of
    // bare LFs only would be scanned to its end once per line.
    let mut lines = text.replace("\r\n", "\n").replace('\r', "\n");
    if !lines.ends_with('\n') {
        lines.push('\n');
    }
    let unfolded = unfold(&lines.replace('\n', "\r\n"));
    check_nesting(&unfolded)?;
    let calendar =
        read_calendar(&unfolded).map_err(|error| IcalError::Syntax(first_line(&error)))?;
    let mut zones = BTreeMap::new();
    let mut vevents = Vec::new();
    for component in &calendar.components {
        match component.name.as_str().to_ascii_uppercase().as_str() {
            "VEVENT" => vevents.push(component),
            "VTIMEZONE" => {
                if let (Some(id), Some(location)) =
                    (value(component, "TZID"), value(component, "X-LIC-LOCATION"))
                {
                    zones.insert(id.to_owned(), location.to_owned());
                }
            }
            _ => {}
        }
    }
    if vevents.is_empty() {
        return Err(IcalError::Syntax("no VEVENT in the calendar".into()));
    }
    if vevents.len() > IMPORT_EVENTS_MAX {
        return Err(IcalError::TooLarge(format!(
            "at most {IMPORT_EVENTS_MAX} VEVENTs per import"
        )));
    }
    let reader = Reader {
        default_zone,
        zones: &zones,
    };
    Ok(reader.series(&vevents))
}

/// Refuses a text whose components nest deeper than [`NESTING_MAX`].
fn check_nesting(unfolded: &str) -> Result<(), IcalError> {
    let mut depth: usize = 0;
    for line in unfolded.lines() {
        let name = line.split([':', ';']).next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("BEGIN") {
            depth += 1;
            if depth > NESTING_MAX {
                return Err(IcalError::Syntax(format!(
                    "components nest deeper than {NESTING_MAX} levels"
                )));
            }
        } else if name.eq_ignore_ascii_case("END") {
            depth = depth.saturating_sub(1);
        }
    }
    Ok(())
}

struct Reader<'a> {
    default_zone: &'a str,
    /// VTIMEZONE ids that are not IANA names, mapped to the IANA name their X-LIC-LOCATION
    /// gives (Thunderbird writes it).
    zones: &'a BTreeMap<String, String>,
}

/// What an exception (a VEVENT with RECURRENCE-ID) does to its occurrence.
enum Exception {
    /// STATUS:CANCELLED: the occurrence is removed.
    Cancelled,
    /// The occurrence stays, perhaps moved, perhaps with its own text.
    Kept {
        moved: Option<Moved>,
        details: Details,
    },
}

/// A date or date-time value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Written {
    Day(NaiveDate),
    Floating(NaiveDateTime),
    Utc(NaiveDateTime),
    Zoned(NaiveDateTime, String),
}

impl Reader<'_> {
    /// Groups exceptions with their series, in file order of the series.
    fn series(&self, vevents: &[&Component<'_>]) -> Vec<Result<Imported, Refused>> {
        let mut exceptions: BTreeMap<Option<&str>, Vec<(usize, &Component<'_>)>> = BTreeMap::new();
        let mut masters = Vec::new();
        for (index, vevent) in vevents.iter().enumerate() {
            if vevent.find_prop("RECURRENCE-ID").is_some() {
                exceptions
                    .entry(value(vevent, "UID"))
                    .or_default()
                    .push((index, vevent));
            } else {
                masters.push((index, *vevent));
            }
        }
        let mut results = Vec::new();
        for (index, master) in masters {
            let uid = value(master, "UID");
            let own = exceptions.remove(&uid).unwrap_or_default();
            let own: Vec<&Component<'_>> = own.into_iter().map(|(_, vevent)| vevent).collect();
            results.push(
                self.event(master, &own)
                    .map(|(event, details)| Imported {
                        index,
                        uid: uid.map(str::to_owned),
                        event,
                        details,
                    })
                    .map_err(|error| Refused {
                        index,
                        uid: uid.map(str::to_owned),
                        error,
                    }),
            );
        }
        for (uid, orphans) in exceptions {
            for (index, _) in orphans {
                results.push(Err(Refused {
                    index,
                    uid: uid.map(str::to_owned),
                    error: IcalError::Invalid {
                        property: "RECURRENCE-ID".into(),
                        reason: "an exception without its series (no VEVENT with this UID and \
                                 no RECURRENCE-ID)"
                            .into(),
                    },
                }));
            }
        }
        results.sort_by_key(|result| match result {
            Ok(imported) => imported.index,
            Err(refused) => refused.index,
        });
        results
    }

    /// One series and its exceptions.
    fn event(
        &self,
        master: &Component<'_>,
        exceptions: &[&Component<'_>],
    ) -> Result<(NewEvent, Vec<(Local, Details)>), IcalError> {
        for unsupported in ["RDATE", "EXRULE"] {
            if master.find_prop(unsupported).is_some() {
                return Err(IcalError::Unsupported(unsupported.into()));
            }
        }
        if master
            .properties
            .iter()
            .filter(|p| p.name == "RRULE")
            .count()
            > 1
        {
            return Err(IcalError::Unsupported("more than one RRULE".into()));
        }
        if is_cancelled(master) {
            return Err(IcalError::Unsupported(
                "a cancelled event (STATUS:CANCELLED)".into(),
            ));
        }
        let start_written = self.written(required(master, "DTSTART")?)?;
        let zone = self.zone_of(&start_written);
        let start = self.local(start_written, &zone)?;
        let end = self.end(master, &start, &zone)?;
        let all_day = start.is_day();
        let rrule = value(master, "RRULE").map(|rule| rule_for(rule, all_day));
        let mut exdates = Vec::new();
        for property in master.properties.iter().filter(|p| p.name == "EXDATE") {
            for part in property.val.as_str().split(',') {
                let written = self.written_value(property, part)?;
                exdates.push(self.local_of_kind("EXDATE", written, &zone, all_day)?);
            }
        }
        exdates.sort();
        exdates.dedup();
        let title = value(master, "SUMMARY")
            .filter(|title| !title.trim().is_empty())
            .unwrap_or(UNTITLED)
            .to_owned();
        let description = value(master, "DESCRIPTION").unwrap_or_default().to_owned();
        let location = value(master, "LOCATION").unwrap_or_default().to_owned();
        let mut schedule = Schedule {
            zone,
            start,
            end,
            rrule,
            exdates,
            overrides: BTreeMap::new(),
        };
        let mut details = Vec::new();
        for exception in exceptions {
            let (occurrence, exception) =
                self.exception(exception, &schedule, [&title, &description, &location])?;
            let Exception::Kept {
                moved,
                details: text,
            } = exception
            else {
                schedule.exdates.push(occurrence);
                continue;
            };
            if let Some(moved) = moved {
                schedule.overrides.insert(occurrence, moved);
            }
            if text != Details::default() {
                details.push((occurrence, text));
            }
        }
        schedule.exdates.sort();
        schedule.exdates.dedup();
        if schedule.rrule.is_none() && !(schedule.exdates.is_empty() && details.is_empty()) {
            return Err(IcalError::Invalid {
                property: "RECURRENCE-ID".into(),
                reason: "exceptions of an event that does not recur".into(),
            });
        }
        schedule.validate().map_err(IcalError::Schedule)?;
        let event = NewEvent {
            title,
            description,
            location,
            schedule,
            attendees: Vec::new(),
        };
        Ok((event, details))
    }

    /// One exception: its occurrence and what became of it.
    fn exception(
        &self,
        exception: &Component<'_>,
        schedule: &Schedule,
        [title, description, location]: [&String; 3],
    ) -> Result<(Local, Exception), IcalError> {
        let recurrence_id = required(exception, "RECURRENCE-ID")?;
        if param(recurrence_id, "RANGE").is_some() {
            return Err(IcalError::Unsupported(
                "RECURRENCE-ID;RANGE=THISANDFUTURE".into(),
            ));
        }
        let all_day = schedule.is_all_day();
        let zone = &schedule.zone;
        let occurrence =
            self.local_of_kind("RECURRENCE-ID", self.written(recurrence_id)?, zone, all_day)?;
        if is_cancelled(exception) {
            return Ok((occurrence, Exception::Cancelled));
        }
        let start = match exception.find_prop("DTSTART") {
            Some(start) => self.local_of_kind("DTSTART", self.written(start)?, zone, all_day)?,
            None => occurrence,
        };
        // An exception that gives no end keeps the series' length.
        let has_end =
            exception.find_prop("DTEND").is_some() || value(exception, "DURATION").is_some();
        let end = if has_end {
            self.end(exception, &start, zone)?
        } else {
            super::shifted_end(&schedule.start, &schedule.end, &start)
        };
        let series_end = super::shifted_end(&schedule.start, &schedule.end, &occurrence);
        let moved = (start != occurrence || end != series_end).then_some(Moved { start, end });
        let differs = |name: &str, series: &String| {
            value(exception, name)
                .filter(|text| *text != series.as_str())
                .map(str::to_owned)
        };
        let details = Details {
            title: differs("SUMMARY", title).filter(|text| !text.trim().is_empty()),
            description: differs("DESCRIPTION", description),
            location: differs("LOCATION", location),
        };
        Ok((occurrence, Exception::Kept { moved, details }))
    }

    /// DTEND, or DTSTART plus DURATION, or one day for a date; in the start's zone and kind.
    fn end(&self, vevent: &Component<'_>, start: &Local, zone: &str) -> Result<Local, IcalError> {
        if let Some(end) = vevent.find_prop("DTEND") {
            return self.local_of_kind("DTEND", self.written(end)?, zone, start.is_day());
        }
        if let Some(duration) = value(vevent, "DURATION") {
            let length = parse_duration(duration)?;
            if start.is_day() && length.num_seconds() % 86_400 != 0 {
                return Err(IcalError::Invalid {
                    property: "DURATION".into(),
                    reason: "an all-day event lasts whole days".into(),
                });
            }
            let end = start
                .naive()
                .checked_add_signed(length)
                .ok_or_else(|| invalid("DURATION", "too long"))?;
            return Ok(Local::from_naive(truncate(end), start.is_day()));
        }
        match start {
            Local::Day(day) => day
                .succ_opt()
                .map(Local::Day)
                .ok_or_else(|| invalid("DTSTART", "no day after it")),
            Local::At(_) => Err(IcalError::Invalid {
                property: "DTEND".into(),
                reason: "a timed event needs DTEND or DURATION (events without length are not \
                         supported)"
                    .into(),
            }),
        }
    }

    /// The event's zone: the start's TZID, UTC for a UTC start, else the default.
    fn zone_of(&self, start: &Written) -> String {
        match start {
            Written::Zoned(_, zone) => zone.clone(),
            Written::Utc(_) => "UTC".to_owned(),
            Written::Day(_) | Written::Floating(_) => self.default_zone.to_owned(),
        }
    }

    /// A value as a [`Local`] in `zone` (any kind).
    fn local(&self, written: Written, zone: &str) -> Result<Local, IcalError> {
        let tz = schedule::parse_zone(zone).map_err(IcalError::Schedule)?;
        let naive = match written {
            Written::Day(day) => return Ok(Local::Day(day)),
            Written::Floating(at) => at,
            Written::Utc(at) => schedule::wall_clock(tz, at.and_utc().timestamp_millis()),
            Written::Zoned(at, from) if from == zone => at,
            Written::Zoned(at, from) => {
                let from = schedule::parse_zone(&from).map_err(IcalError::Schedule)?;
                schedule::wall_clock(tz, schedule::instant_ms(from, at))
            }
        };
        Ok(Local::At(truncate(naive)))
    }

    /// As [`Reader::local`], and of the kind the series is (a day or a time).
    fn local_of_kind(
        &self,
        property: &str,
        written: Written,
        zone: &str,
        all_day: bool,
    ) -> Result<Local, IcalError> {
        let local = self.local(written, zone)?;
        if local.is_day() != all_day {
            return Err(invalid(
                property,
                "dates and date-times are mixed (DTSTART decides which)",
            ));
        }
        Ok(local)
    }

    fn written(&self, property: &Property<'_>) -> Result<Written, IcalError> {
        self.written_value(property, property.val.as_str())
    }

    /// One date or date-time value of `property` (which may hold a list).
    fn written_value(&self, property: &Property<'_>, text: &str) -> Result<Written, IcalError> {
        let name = property.name.as_str();
        let text = text.trim();
        let is_date = param(property, "VALUE").is_some_and(|v| v.eq_ignore_ascii_case("DATE"))
            || text.len() == 8;
        if is_date {
            return parse_date(text)
                .map(Written::Day)
                .ok_or_else(|| invalid(name, "expected a date, YYYYMMDD"));
        }
        let (text, utc) = match text.strip_suffix('Z') {
            Some(text) => (text, true),
            None => (text, false),
        };
        let at = parse_date_time(text)
            .ok_or_else(|| invalid(name, "expected a date-time, YYYYMMDDTHHMMSS"))?;
        if utc {
            return Ok(Written::Utc(at));
        }
        match param(property, "TZID") {
            None => Ok(Written::Floating(at)),
            Some(tzid) => Ok(Written::Zoned(at, self.zone_name(tzid)?)),
        }
    }

    /// An IANA zone name for a TZID: the name itself (without a leading `/`), or the
    /// X-LIC-LOCATION of its VTIMEZONE.
    fn zone_name(&self, tzid: &str) -> Result<String, IcalError> {
        let trimmed = tzid.trim_start_matches('/');
        if schedule::parse_zone(trimmed).is_ok() {
            return Ok(trimmed.to_owned());
        }
        match self.zones.get(tzid) {
            Some(location) if schedule::parse_zone(location).is_ok() => Ok(location.clone()),
            _ => Err(IcalError::Schedule(ScheduleError::UnknownZone(
                tzid.chars().take(64).collect(),
            ))),
        }
    }
}

/// An RRULE value as this calendar stores it: an all-day series' UNTIL as a date (some
/// applications write a date-time there).
fn rule_for(rule: &str, all_day: bool) -> String {
    if !all_day {
        return rule.to_owned();
    }
    rule.split(';')
        .map(|part| match part.split_once('=') {
            Some((name, until)) if name.eq_ignore_ascii_case("UNTIL") && until.len() > 8 => {
                format!("{name}={}", until.get(..8).unwrap_or(until))
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn is_cancelled(vevent: &Component<'_>) -> bool {
    value(vevent, "STATUS").is_some_and(|status| status.eq_ignore_ascii_case("CANCELLED"))
}

fn value<'c>(component: &'c Component<'_>, name: &str) -> Option<&'c str> {
    component
        .find_prop(name)
        .map(|property| property.val.as_str())
}

fn required<'c, 'a>(
    component: &'c Component<'a>,
    name: &'static str,
) -> Result<&'c Property<'a>, IcalError> {
    component
        .properties
        .iter()
        .find(|property| property.name == name)
        .ok_or(IcalError::Missing(name))
}

fn param<'p>(property: &'p Property<'_>, name: &str) -> Option<&'p str> {
    property
        .params
        .iter()
        .find(|param| param.key.as_str().eq_ignore_ascii_case(name))
        .and_then(|param| param.val.as_ref())
        .map(|value| value.as_str().trim_matches('"'))
}

fn invalid(property: &str, reason: &str) -> IcalError {
    IcalError::Invalid {
        property: property.chars().take(64).collect(),
        reason: reason.to_owned(),
    }
}

fn first_line(error: &str) -> String {
    let line = error.lines().find(|line| !line.trim().is_empty());
    line.unwrap_or("does not parse").chars().take(200).collect()
}

fn digits(text: &str) -> Option<u32> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    if text.len() != 8 || !text.is_ascii() {
        return None;
    }
    let year = i32::try_from(digits(&text[0..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(&text[4..6])?, digits(&text[6..8])?)
}

fn parse_date_time(text: &str) -> Option<NaiveDateTime> {
    if text.len() != 15 || !text.is_ascii() || text.as_bytes()[8] != b'T' {
        return None;
    }
    let day = parse_date(&text[0..8])?;
    // A leap second (60) is read as 59.
    let second = digits(&text[13..15])?.min(59);
    let time = NaiveTime::from_hms_opt(digits(&text[9..11])?, digits(&text[11..13])?, second)?;
    Some(day.and_time(time))
}

/// Times are kept to the minute: seconds are dropped.
fn truncate(at: NaiveDateTime) -> NaiveDateTime {
    at.with_second(0)
        .and_then(|at| at.with_nanosecond(0))
        .unwrap_or(at)
}

/// An RFC 5545 DURATION (`P1W`, `P1DT2H30M`, `PT45M`); negative ones are refused.
fn parse_duration(text: &str) -> Result<Duration, IcalError> {
    let bad = || invalid("DURATION", "expected a duration such as PT1H30M or P1D");
    let text = text.trim().strip_prefix('+').unwrap_or(text.trim());
    let rest = text.strip_prefix('P').ok_or_else(bad)?;
    let (days_part, time_part) = match rest.split_once('T') {
        Some((days, time)) => (days, Some(time)),
        None => (rest, None),
    };
    let mut seconds: i64 = 0;
    let mut any = false;
    for (part, units) in [
        (days_part, &[('W', 604_800), ('D', 86_400)][..]),
        (
            time_part.unwrap_or_default(),
            &[('H', 3_600), ('M', 60), ('S', 1)][..],
        ),
    ] {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let position = units[next_unit..]
                .iter()
                .position(|(unit, _)| *unit == c)
                .ok_or_else(bad)?;
            let (_, scale) = units[next_unit + position];
            next_unit += position + 1;
            let count: i64 = number.parse().map_err(|_| bad())?;
            seconds = count
                .checked_mul(scale)
                .and_then(|add| seconds.checked_add(add))
                .filter(|total| *total <= 1_000 * 86_400)
                .ok_or_else(|| invalid("DURATION", "longer than 1,000 days"))?;
            number.clear();
            any = true;
        }
        if !number.is_empty() {
            return Err(bad());
        }
    }
    if !any || time_part == Some("") {
        return Err(bad());
    }
    Ok(Duration::seconds(seconds))
}
