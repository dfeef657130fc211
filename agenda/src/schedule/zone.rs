//! Wall-clock times and instants in an IANA zone (chrono-tz does the zone arithmetic).
//!
//! Turning a wall-clock time into an instant has two awkward cases, and both are decided here:
//! - a time in a **gap** (skipped when clocks spring forward, e.g. 02:30 in Madrid on the last
//!   Sunday of March) is read with the UTC offset in effect before the gap, as RFC 5545 (3.3.5)
//!   says, which moves it later by the length of the gap: 02:30 becomes 03:30 summer time;
//! - a time in a **fold** (repeated when clocks fall back) is the first, earlier, instant.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::{ScheduleError, local::shorten};

/// The first day a schedule may use: zones before 1900 are mostly local mean time.
pub(crate) const FIRST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(1900, 1, 1) {
    Some(day) => day,
    None => panic!("1900-01-01 is a date"),
};

/// The last day a schedule may use; recurring series end on it at the latest.
pub(crate) const LAST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(2999, 12, 31) {
    Some(day) => day,
    None => panic!("2999-12-31 is a date"),
};

/// Instants are clamped into this many milliseconds either side of the epoch before chrono sees
/// them (chrono represents about 262,000 years; this is about 250,000).
const INSTANT_MS_LIMIT: i64 = 7_900_000_000_000_000;

/// How far back a time in a gap looks for the offset in effect before it (gaps are at most a day:
/// Pacific/Apia skipped 2011-12-30), in steps of a quarter of an hour.
const GAP_SEARCH_STEPS: i64 = 49 * 4;

/// Looks up an IANA zone name ("Europe/Madrid"); case matters, as in the database.
pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    if name.len() > 64 {
        return Err(ScheduleError::UnknownZone(shorten(name)));
    }
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownZone(name.to_string()))
}

/// The instant (ms since the epoch) of a wall-clock time in `zone`, with the gap and fold rules
/// of the module documentation.
pub(crate) fn instant_ms(zone: Tz, naive: NaiveDateTime) -> i64 {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(at) => at.timestamp_millis(),
        LocalResult::Ambiguous(first, second) => first.min(second).timestamp_millis(),
        LocalResult::None => {
            let offset_seconds = offset_before_gap(zone, naive);
            (naive - Duration::seconds(i64::from(offset_seconds)))
                .and_utc()
                .timestamp_millis()
        }
    }
}

/// The UTC offset (seconds east) in effect just before the gap that swallows `naive`.
fn offset_before_gap(zone: Tz, naive: NaiveDateTime) -> i32 {
    for step in 1..=GAP_SEARCH_STEPS {
        let probe = naive - Duration::minutes(15 * step);
        match zone.from_local_datetime(&probe) {
            LocalResult::Single(at) => return at.offset().fix().local_minus_utc(),
            LocalResult::Ambiguous(first, second) => {
                return first.max(second).offset().fix().local_minus_utc();
            }
            LocalResult::None => {}
        }
    }
    // No zone has a gap this long; reading the time as UTC keeps the answer defined.
    0
}

/// The wall-clock time in `zone` at an instant (clamped to what chrono represents).
pub(crate) fn wall_clock(zone: Tz, ms: i64) -> NaiveDateTime {
    utc(ms).with_timezone(&zone).naive_local()
}

fn utc(ms: i64) -> DateTime<Utc> {
    let clamped = ms.clamp(-INSTANT_MS_LIMIT, INSTANT_MS_LIMIT);
    DateTime::from_timestamp_millis(clamped).unwrap_or_default()
}

/// An instant as local time with its offset in a zone, RFC 3339: `"2026-12-03T09:30:00+01:00"`
/// (milliseconds appear only when they are not zero).
///
/// RFC 3339 offsets are whole minutes; the few historical offsets with seconds (local mean time,
/// e.g. Monrovia's -00:44:30 until 1972) are cut to the minute and the local time shown with
/// that offset, so the string always names exactly the instant `ms`.
pub fn format_local(ms: i64, zone: Tz) -> String {
    let at = utc(ms);
    let offset_seconds = at.with_timezone(&zone).offset().fix().local_minus_utc();
    let offset_minutes = offset_seconds / 60;
    let wall_clock = at.naive_utc() + Duration::minutes(i64::from(offset_minutes));
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let offset_minutes = offset_minutes.unsigned_abs();
    let millis = ms.rem_euclid(1000);
    let fraction = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}")
    };
    format!(
        "{}{fraction}{sign}{:02}:{:02}",
        wall_clock.format("%Y-%m-%dT%H:%M:%S"),
        offset_minutes / 60,
        offset_minutes % 60
    )
}
