//! Busy time and finding a time that suits everyone.

use std::fmt;

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Timelike, Weekday};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ScheduleError;
use super::zone::{instant_ms, parse_zone, wall_clock};

/// The longest range [`find_slots`] searches: a year and a day, in milliseconds.
pub const SEARCH_RANGE_MS_MAX: i64 = 366 * 24 * 60 * 60 * 1000;
/// The most busy intervals one person may bring to [`find_slots`].
pub const BUSY_INTERVALS_MAX: usize = 100_000;

/// Merges busy intervals `[start_ms, end_ms)` that overlap or touch, and sorts them.
/// Empty or reversed intervals (`start_ms >= end_ms`) are dropped.
pub fn merge_busy(mut intervals: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    intervals.retain(|(start, end)| start < end);
    intervals.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// A person's working hours in their own zone: the same hours on each working day.
///
/// Serialized as `{"days": "MO,TU,WE,TH,FR", "start": "09:00", "end": "17:00"}` (the default).
/// Hours end on the day they start: `start` is before `end`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WorkingHours {
    /// The working days.
    #[serde(
        serialize_with = "serialize_days",
        deserialize_with = "deserialize_days"
    )]
    pub days: Vec<Weekday>,
    /// When work starts, to the minute.
    #[serde(
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time"
    )]
    pub start: NaiveTime,
    /// When work ends (exclusive), to the minute.
    #[serde(
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time"
    )]
    pub end: NaiveTime,
}

impl Default for WorkingHours {
    /// Monday to Friday, 09:00 to 17:00.
    fn default() -> WorkingHours {
        WorkingHours {
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            start: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or(NaiveTime::MIN),
            end: NaiveTime::from_hms_opt(17, 0, 0).unwrap_or(NaiveTime::MIN),
        }
    }
}

impl WorkingHours {
    /// Checks that the hours end after they start, on the same day, on at least one day, each
    /// day named once.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        let invalid = |reason: &str| ScheduleError::InvalidQuery(reason.to_string());
        if self.start >= self.end {
            return Err(invalid(
                "working hours must end after they start, on the same day",
            ));
        }
        if self.days.is_empty() {
            return Err(invalid("working hours need at least one day"));
        }
        let mut days = self.days.clone();
        days.sort_by_key(|day| day.num_days_from_monday());
        days.dedup();
        if days.len() != self.days.len() {
            return Err(invalid("each working day is named once"));
        }
        Ok(())
    }
}

/// One person's side of a search: their zone, their working hours and their busy time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// IANA zone name of the person, e.g. "America/New_York".
    pub zone: String,
    /// Working hours, in that zone.
    pub hours: WorkingHours,
    /// Busy intervals `[start_ms, end_ms)`, in any order, overlapping or not.
    pub busy: Vec<(i64, i64)>,
}

/// Finds a time: the first `max` slots `[start, start + length_ms)` inside `[from_ms, to_ms)`
/// whose start is a multiple of `step_ms` since the epoch (a 15-minute step gives :00, :15, ...
/// in every zone whose offset is whole quarter-hours), in which every person is inside their
/// working hours, in their own zone, and not busy. Slots come sorted by start.
///
/// The range may be at most [`SEARCH_RANGE_MS_MAX`] long; `length_ms` and `step_ms` must be
/// positive, and `people` not empty.
pub fn find_slots(
    people: &[Availability],
    from_ms: i64,
    to_ms: i64,
    length_ms: i64,
    step_ms: i64,
    max: usize,
) -> Result<Vec<(i64, i64)>, ScheduleError> {
    let query = |reason: &str| ScheduleError::InvalidQuery(reason.to_string());
    if from_ms >= to_ms {
        return Err(query("the range's end must be after its start"));
    }
    if to_ms
        .checked_sub(from_ms)
        .is_none_or(|span| span > SEARCH_RANGE_MS_MAX)
    {
        return Err(query("the range is longer than a year and a day"));
    }
    if length_ms <= 0 || step_ms <= 0 {
        return Err(query("the length and the step must be positive"));
    }
    if people.is_empty() {
        return Err(query("no people to find a time for"));
    }
    let mut common = vec![(from_ms, to_ms)];
    for person in people {
        let free = free_time(person, from_ms, to_ms)?;
        common = intersect(&common, &free);
    }
    let mut slots = Vec::new();
    for (start, end) in common {
        // The first multiple of the step at or after `start`; no overflow, as `start` is within
        // a year of `from_ms` and the step is positive.
        let mut slot = start.div_euclid(step_ms).saturating_mul(step_ms);
        if slot < start {
            slot = slot.saturating_add(step_ms);
        }
        while slots.len() < max {
            let Some(slot_end) = slot.checked_add(length_ms) else {
                break;
            };
            if slot_end > end {
                break;
            }
            slots.push((slot, slot_end));
            slot = match slot.checked_add(step_ms) {
                Some(next) => next,
                None => break,
            };
        }
        if slots.len() >= max {
            break;
        }
    }
    Ok(slots)
}

/// A person's working hours within `[from_ms, to_ms)` with their busy time taken out.
fn free_time(
    person: &Availability,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, i64)>, ScheduleError> {
    let zone = parse_zone(&person.zone)?;
    let hours = &person.hours;
    hours.validate()?;
    if person.busy.len() > BUSY_INTERVALS_MAX {
        return Err(ScheduleError::InvalidQuery(format!(
            "more than {BUSY_INTERVALS_MAX} busy intervals"
        )));
    }
    let first_day = wall_clock(zone, from_ms).date() - Duration::days(1);
    let last_day = wall_clock(zone, to_ms).date() + Duration::days(1);
    let working: Vec<(i64, i64)> = first_day
        .iter_days()
        .take_while(|day| *day <= last_day)
        .filter(|day| hours.days.contains(&day.weekday()))
        .map(|day: NaiveDate| {
            let start = instant_ms(zone, day.and_time(hours.start));
            let end = instant_ms(zone, day.and_time(hours.end));
            (start.max(from_ms), end.min(to_ms))
        })
        .filter(|(start, end)| start < end)
        .collect();
    Ok(subtract(&working, &merge_busy(person.busy.clone())))
}

/// The parts of sorted, disjoint `a` that are also in sorted, disjoint `b`.
fn intersect(a: &[(i64, i64)], b: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let (mut i, mut j) = (0, 0);
    let mut both = Vec::new();
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if start < end {
            both.push((start, end));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    both
}

/// The parts of sorted, disjoint `a` outside sorted, disjoint `b`.
fn subtract(a: &[(i64, i64)], b: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut left = Vec::new();
    let mut j = 0;
    for &(start, end) in a {
        let mut start = start;
        while j < b.len() && b[j].1 <= start {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < end {
            if b[k].0 > start {
                left.push((start, b[k].0));
            }
            start = start.max(b[k].1);
            k += 1;
        }
        if start < end {
            left.push((start, end));
        }
    }
    left
}

fn serialize_days<S: Serializer>(days: &[Weekday], serializer: S) -> Result<S::Ok, S::Error> {
    let names: Vec<&str> = days.iter().map(|day| day_name(*day)).collect();
    serializer.serialize_str(&names.join(","))
}

fn deserialize_days<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Weekday>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut days = Vec::new();
    for name in text.split(',') {
        let day = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ]
        .into_iter()
        .find(|day| day_name(*day) == name)
        .ok_or_else(|| {
            serde::de::Error::custom(Unexpected("a day: MO, TU, WE, TH, FR, SA or SU"))
        })?;
        if !days.contains(&day) {
            days.push(day);
        }
    }
    Ok(days)
}

fn day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

fn serialize_time<S: Serializer>(time: &NaiveTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{:02}:{:02}", time.hour(), time.minute()))
}

fn deserialize_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    let bytes = text.as_bytes();
    let number = |at: usize| -> Option<u32> {
        let (tens, ones) = (*bytes.get(at)?, *bytes.get(at + 1)?);
        (tens.is_ascii_digit() && ones.is_ascii_digit())
            .then(|| u32::from(tens - b'0') * 10 + u32::from(ones - b'0'))
    };
    let time = match (bytes.len(), bytes.get(2)) {
        (5, Some(b':')) => number(0)
            .zip(number(3))
            .and_then(|(hour, minute)| NaiveTime::from_hms_opt(hour, minute, 0)),
        _ => None,
    };
    time.ok_or_else(|| serde::de::Error::custom(Unexpected("a time of day, HH:MM")))
}

/// An "expected ..." message for serde.
struct Unexpected(&'static str);

impl fmt::Display for Unexpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}", self.0)
    }
}
