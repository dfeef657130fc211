//! The recurrence rule: the subset of RFC 5545's RRULE this calendar accepts, parsed and checked
//! here, then handed to the `rrule` crate, which generates the occurrences.
//!
//! The value is parsed here rather than by `rrule`'s own parser for three reasons: every part
//! outside the subset must be refused by name; a floating UNTIL would be read in the host's
//! local zone by `rrule` (not deterministic across servers); and our limits (COUNT, INTERVAL,
//! list lengths) are checked before anything iterates.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Weekday};
use rrule::{Frequency, NWeekday};

use super::{ScheduleError, local::shorten};

/// The longest rule value accepted, in bytes.
pub const RULE_LENGTH_MAX: usize = 512;
/// The largest COUNT accepted.
pub const COUNT_MAX: u32 = 100_000;
/// The largest INTERVAL accepted.
pub const INTERVAL_MAX: u16 = 1000;
/// The most values one BYDAY or BYMONTHDAY list may hold.
const LIST_LENGTH_MAX: usize = 64;

/// How a series ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuleEnd {
    /// No COUNT and no UNTIL: the series runs to the last supported day.
    Never,
    /// COUNT: this many occurrences, exdated ones included (RFC 5545).
    Count(u32),
    /// UNTIL of an all-day series: the last day that may hold an occurrence.
    UntilDay(NaiveDate),
    /// UNTIL of a timed series: a UTC instant (ms), inclusive.
    UntilInstant(i64),
}

impl RuleEnd {
    /// The rule part that states this end, or `None` for [`RuleEnd::Never`].
    pub(crate) fn part(&self) -> Option<String> {
        match *self {
            RuleEnd::Never => None,
            RuleEnd::Count(count) => Some(format!("COUNT={count}")),
            RuleEnd::UntilDay(day) => Some(format!("UNTIL={}", day.format("%Y%m%d"))),
            RuleEnd::UntilInstant(ms) => {
                let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
                Some(format!("UNTIL={}", at.format("%Y%m%dT%H%M%SZ")))
            }
        }
    }
}

/// A parsed rule value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) frequency: Frequency,
    pub(crate) interval: u16,
    pub(crate) end: RuleEnd,
    pub(crate) by_day: Vec<NWeekday>,
    pub(crate) by_month_day: Vec<i8>,
    pub(crate) week_start: Weekday,
}

fn invalid(part: &str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError::InvalidRule {
        part: shorten(part),
        reason: reason.into(),
    }
}

impl Rule {
    /// Parses a rule value (without the `RRULE:` prefix) for an all-day or a timed series.
    pub(crate) fn parse(text: &str, all_day: bool) -> Result<Rule, ScheduleError> {
        if text.len() > RULE_LENGTH_MAX {
            return Err(invalid(
                "RRULE",
                format!("longer than {RULE_LENGTH_MAX} bytes"),
            ));
        }
        if !text.is_ascii() {
            return Err(invalid("RRULE", "contains characters other than ASCII"));
        }
        let text = text.to_ascii_uppercase();
        if text.starts_with("RRULE:") {
            return Err(invalid(
                "RRULE",
                "give the value without the \"RRULE:\" prefix",
            ));
        }
        let mut frequency = None;
        let mut interval = None;
        let mut count = None;
        let mut until = None;
        let mut by_day = None;
        let mut by_month_day = None;
        let mut week_start = None;
        for part in text.split(';').filter(|part| !part.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(invalid(part, "expected NAME=VALUE"));
            };
            let duplicate = || invalid(name, "given twice");
            match name {
                "FREQ" => set_once(&mut frequency, parse_frequency(value)?, duplicate)?,
                "INTERVAL" => set_once(&mut interval, parse_interval(value)?, duplicate)?,
                "COUNT" => set_once(&mut count, parse_count(value)?, duplicate)?,
                "UNTIL" => set_once(&mut until, parse_until(value, all_day)?, duplicate)?,
                "BYDAY" => set_once(&mut by_day, parse_by_day(value)?, duplicate)?,
                "BYMONTHDAY" => set_once(&mut by_month_day, parse_by_month_day(value)?, duplicate)?,
                "WKST" => set_once(&mut week_start, parse_weekday(name, value)?, duplicate)?,
                "BYMONTH" | "BYSETPOS" | "BYYEARDAY" | "BYWEEKNO" | "BYHOUR" | "BYMINUTE"
                | "BYSECOND" => {
                    return Err(ScheduleError::UnsupportedRulePart {
                        part: name.to_string(),
                    });
                }
                _ => return Err(invalid(name, "not a recurrence rule part")),
            }
        }
        let frequency = frequency.ok_or_else(|| invalid("FREQ", "missing"))?;
        let end = match (count, until) {
            (Some(_), Some(_)) => {
                return Err(invalid("COUNT", "COUNT and UNTIL cannot both be given"));
            }
            (Some(count), None) => RuleEnd::Count(count),
            (None, Some(until)) => until,
            (None, None) => RuleEnd::Never,
        };
        let by_day = by_day.unwrap_or_default();
        let by_month_day = by_month_day.unwrap_or_default();
        check_combinations(frequency, &by_day, &by_month_day)?;
        Ok(Rule {
            frequency,
            interval: interval.unwrap_or(1),
            end,
            by_day,
            by_month_day,
            week_start: week_start.unwrap_or(Weekday::Mon),
        })
    }

    /// The `rrule` crate's form of this rule for a series starting at `start`.
    ///
    /// The series is generated in "floating" time: wall-clock times carried as if they were UTC,
    /// so that `rrule` never meets a gap or a fold; the caller turns each wall-clock time into an
    /// instant with the zone rules of [`super::zone`]. `until_wall_clock` is UNTIL as a wall-clock
    /// time in the event's zone.
    pub(crate) fn to_rrule(
        &self,
        start: NaiveDateTime,
        until_wall_clock: Option<NaiveDateTime>,
    ) -> Result<rrule::RRuleSet, ScheduleError> {
        let floating = |naive: NaiveDateTime| naive.and_utc().with_timezone(&rrule::Tz::UTC);
        let mut rule = rrule::RRule::new(self.frequency)
            .interval(self.interval)
            .week_start(self.week_start)
            .by_weekday(self.by_day.clone())
            .by_month_day(self.by_month_day.clone());
        if let RuleEnd::Count(count) = self.end {
            rule = rule.count(count);
        }
        if let Some(until) = until_wall_clock {
            rule = rule.until(floating(until));
        }
        let rule = rule
            .validate(floating(start))
            .map_err(|error| ScheduleError::Recurrence(error.to_string()))?;
        // `limit` keeps rrule's guard against rules that stop matching (at most 100,000
        // periods in a row without an occurrence); unlimited iteration could loop forever.
        Ok(rrule::RRuleSet::new(floating(start)).rrule(rule).limit())
    }
}

/// Replaces the COUNT or UNTIL of a rule value, keeping its other parts as written.
pub(crate) fn with_end(text: &str, end: RuleEnd) -> String {
    let mut parts: Vec<String> = text
        .split(';')
        .filter(|part| !part.is_empty())
        .filter(|part| {
            let name = part.split('=').next().unwrap_or_default();
            !name.eq_ignore_ascii_case("COUNT") && !name.eq_ignore_ascii_case("UNTIL")
        })
        .map(str::to_string)
        .collect();
    parts.extend(end.part());
    parts.join(";")
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    duplicate: impl Fn() -> ScheduleError,
) -> Result<(), ScheduleError> {
    if slot.is_some() {
        return Err(duplicate());
    }
    *slot = Some(value);
    Ok(())
}

fn parse_frequency(value: &str) -> Result<Frequency, ScheduleError> {
    match value {
        "DAILY" => Ok(Frequency::Daily),
        "WEEKLY" => Ok(Frequency::Weekly),
        "MONTHLY" => Ok(Frequency::Monthly),
        "YEARLY" => Ok(Frequency::Yearly),
        "HOURLY" | "MINUTELY" | "SECONDLY" => Err(ScheduleError::UnsupportedRulePart {
            part: format!("FREQ={value}"),
        }),
        _ => Err(invalid("FREQ", "expected DAILY, WEEKLY, MONTHLY or YEARLY")),
    }
}

/// A small decimal number: digits only (no sign), at most six of them.
fn parse_number(part: &str, value: &str) -> Result<u32, ScheduleError> {
    if value.is_empty() || value.len() > 6 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(part, "expected a positive whole number"));
    }
    value
        .parse()
        .map_err(|_| invalid(part, "expected a positive whole number"))
}

fn parse_interval(value: &str) -> Result<u16, ScheduleError> {
    let interval = parse_number("INTERVAL", value)?;
    if !(1..=u32::from(INTERVAL_MAX)).contains(&interval) {
        return Err(invalid("INTERVAL", format!("must be 1 to {INTERVAL_MAX}")));
    }
    u16::try_from(interval).map_err(|_| invalid("INTERVAL", "too large"))
}

fn parse_count(value: &str) -> Result<u32, ScheduleError> {
    let count = parse_number("COUNT", value)?;
    if !(1..=COUNT_MAX).contains(&count) {
        return Err(invalid("COUNT", format!("must be 1 to {COUNT_MAX}")));
    }
    Ok(count)
}

/// UNTIL takes the kind of the series' start (RFC 5545): a date for all-day series, a UTC
/// date-time for timed series.
fn parse_until(value: &str, all_day: bool) -> Result<RuleEnd, ScheduleError> {
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let field = bytes.get(range)?;
        field.iter().all(u8::is_ascii_digit).then(|| {
            field
                .iter()
                .fold(0, |sum, b| sum * 10 + u32::from(b - b'0'))
        })
    };
    let date = || {
        let year = i32::try_from(digits(0..4)?).ok()?;
        NaiveDate::from_ymd_opt(year, digits(4..6)?, digits(6..8)?)
    };
    if all_day {
        return match (bytes.len(), date()) {
            (8, Some(day)) => Ok(RuleEnd::UntilDay(day)),
            _ => Err(invalid(
                "UNTIL",
                "an all-day series needs UNTIL as a date, YYYYMMDD",
            )),
        };
    }
    let time = || NaiveTime::from_hms_opt(digits(9..11)?, digits(11..13)?, digits(13..15)?);
    match (bytes.len(), bytes.get(8), bytes.get(15), date(), time()) {
        (16, Some(b'T'), Some(b'Z'), Some(day), Some(time)) => Ok(RuleEnd::UntilInstant(
            day.and_time(time).and_utc().timestamp_millis(),
        )),
        _ => Err(invalid(
            "UNTIL",
            "a timed series needs UNTIL as a UTC date-time, YYYYMMDDTHHMMSSZ",
        )),
    }
}

fn parse_weekday(part: &str, value: &str) -> Result<Weekday, ScheduleError> {
    match value {
        "MO" => Ok(Weekday::Mon),
        "TU" => Ok(Weekday::Tue),
        "WE" => Ok(Weekday::Wed),
        "TH" => Ok(Weekday::Thu),
        "FR" => Ok(Weekday::Fri),
        "SA" => Ok(Weekday::Sat),
        "SU" => Ok(Weekday::Sun),
        _ => Err(invalid(
            part,
            "expected a day: MO, TU, WE, TH, FR, SA or SU",
        )),
    }
}

fn list(part: &str, value: &str) -> Result<Vec<String>, ScheduleError> {
    let items: Vec<String> = value.split(',').map(str::to_string).collect();
    if items.len() > LIST_LENGTH_MAX {
        return Err(invalid(part, format!("more than {LIST_LENGTH_MAX} values")));
    }
    Ok(items)
}

/// A signed ordinal: `[+|-]digits`, not zero, at most `max` either way.
fn parse_ordinal(part: &str, text: &str, max: i16) -> Result<i16, ScheduleError> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = parse_number(part, digits)?;
    if magnitude == 0 || magnitude > max.unsigned_abs().into() {
        return Err(invalid(
            part,
            format!("{text} is not within 1 to {max} or -{max} to -1"),
        ));
    }
    let magnitude = i16::try_from(magnitude).map_err(|_| invalid(part, "out of range"))?;
    Ok(if negative { -magnitude } else { magnitude })
}

fn parse_by_day(value: &str) -> Result<Vec<NWeekday>, ScheduleError> {
    let mut days = Vec::new();
    for item in list("BYDAY", value)? {
        // Every item ends with a two-letter day; the text is ASCII, so slicing is safe.
        let split = item.len().saturating_sub(2);
        let weekday = parse_weekday("BYDAY", &item[split..])?;
        let day = if split == 0 {
            NWeekday::Every(weekday)
        } else {
            NWeekday::Nth(parse_ordinal("BYDAY", &item[..split], 53)?, weekday)
        };
        days.push(day);
    }
    days.sort();
    days.dedup();
    Ok(days)
}

fn parse_by_month_day(value: &str) -> Result<Vec<i8>, ScheduleError> {
    let mut days = Vec::new();
    for item in list("BYMONTHDAY", value)? {
        let day = parse_ordinal("BYMONTHDAY", &item, 31)?;
        days.push(i8::try_from(day).map_err(|_| invalid("BYMONTHDAY", "out of range"))?);
    }
    days.sort_unstable();
    days.dedup();
    Ok(days)
}

/// RFC 5545's rules on which parts go with which frequency.
fn check_combinations(
    frequency: Frequency,
    by_day: &[NWeekday],
    by_month_day: &[i8],
) -> Result<(), ScheduleError> {
    let ordinal_max = match frequency {
        Frequency::Monthly => Some(5),
        Frequency::Yearly => Some(53),
        _ => None,
    };
    for day in by_day {
        if let NWeekday::Nth(n, _) = day {
            match ordinal_max {
                None => {
                    return Err(invalid(
                        "BYDAY",
                        "numbered days (like 2TU) need FREQ=MONTHLY or FREQ=YEARLY",
                    ));
                }
                Some(max) if n.unsigned_abs() > max => {
                    return Err(invalid(
                        "BYDAY",
                        format!(
                            "a numbered day is within 1 to {max} or -{max} to -1 for this FREQ"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    if frequency == Frequency::Weekly && !by_month_day.is_empty() {
        return Err(invalid("BYMONTHDAY", "cannot be used with FREQ=WEEKLY"));
    }
    Ok(())
}
