//! [`Local`]: a point on a local calendar, and its string form.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ScheduleError;

/// A point on a local calendar: a date-time to the minute, or a whole day (all-day events).
///
/// Serialized as a string, `"2026-12-03T09:30"` or `"2026-12-03"`, so that it can be a JSON map
/// key. `Ord` orders by kind first (every `At` before every `Day`) and then by time; a valid
/// [`Schedule`](super::Schedule) never mixes the kinds, so within one schedule the order is the
/// calendar order. A `Local` is also the id of an occurrence: its original start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Local {
    /// A wall-clock date and time, to the minute (seconds are zero).
    At(NaiveDateTime),
    /// A whole local day.
    Day(NaiveDate),
}

impl Local {
    /// Whether this is a whole day.
    pub fn is_day(&self) -> bool {
        matches!(self, Local::Day(_))
    }

    /// The wall-clock time this stands for: a day starts at its midnight.
    pub(crate) fn naive(&self) -> NaiveDateTime {
        match *self {
            Local::At(at) => at,
            Local::Day(day) => day.and_time(NaiveTime::MIN),
        }
    }

    /// The `Local` of the given kind for a wall-clock time (a day keeps only the date).
    pub(crate) fn from_naive(naive: NaiveDateTime, all_day: bool) -> Local {
        if all_day {
            Local::Day(naive.date())
        } else {
            Local::At(naive)
        }
    }

    /// Whether this value is to the minute (a `Day`, or an `At` with zero seconds).
    pub(crate) fn is_to_the_minute(&self) -> bool {
        match self {
            Local::At(at) => at.second() == 0 && at.nanosecond() == 0,
            Local::Day(_) => true,
        }
    }
}

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Local::At(at) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}",
                at.year(),
                at.month(),
                at.day(),
                at.hour(),
                at.minute()
            ),
            Local::Day(day) => write!(f, "{:04}-{:02}-{:02}", day.year(), day.month(), day.day()),
        }
    }
}

impl FromStr for Local {
    type Err = ScheduleError;

    /// Parses exactly `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM` (four-digit year, no seconds, no offset).
    fn from_str(input: &str) -> Result<Local, ScheduleError> {
        let invalid = |reason: &str| ScheduleError::InvalidLocal {
            input: shorten(input),
            reason: reason.to_string(),
        };
        let bytes = input.as_bytes();
        if bytes.len() != 10 && bytes.len() != 16 {
            return Err(invalid("expected YYYY-MM-DD or YYYY-MM-DDTHH:MM"));
        }
        let digits = |range: std::ops::Range<usize>| -> Result<u32, ScheduleError> {
            let field = &bytes[range];
            if !field.iter().all(u8::is_ascii_digit) {
                return Err(invalid("expected YYYY-MM-DD or YYYY-MM-DDTHH:MM"));
            }
            Ok(field
                .iter()
                .fold(0, |sum, b| sum * 10 + u32::from(b - b'0')))
        };
        if bytes[4] != b'-' || bytes[7] != b'-' {
            return Err(invalid("expected YYYY-MM-DD or YYYY-MM-DDTHH:MM"));
        }
        let year = i32::try_from(digits(0..4)?).map_err(|_| invalid("year out of range"))?;
        let day = NaiveDate::from_ymd_opt(year, digits(5..7)?, digits(8..10)?)
            .ok_or_else(|| invalid("no such date"))?;
        if bytes.len() == 10 {
            return Ok(Local::Day(day));
        }
        if bytes[10] != b'T' || bytes[13] != b':' {
            return Err(invalid("expected YYYY-MM-DD or YYYY-MM-DDTHH:MM"));
        }
        let time = NaiveTime::from_hms_opt(digits(11..13)?, digits(14..16)?, 0)
            .ok_or_else(|| invalid("no such time of day"))?;
        Ok(Local::At(day.and_time(time)))
    }
}

/// At most the first 64 characters of hostile input go into an error message.
pub(crate) fn shorten(input: &str) -> String {
    input.chars().take(64).collect()
}

impl Serialize for Local {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Local {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Local, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Local;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a local date \"YYYY-MM-DD\" or date-time \"YYYY-MM-DDTHH:MM\"")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Local, E> {
                value.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}
