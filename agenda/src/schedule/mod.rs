//! When events happen: time zones, recurrence, exceptions, busy time and finding a time.
//!
//! Pure functions over values: no I/O and no clock. Instants are `i64` milliseconds since the
//! Unix epoch (UTC); calendars are wall-clock times ([`Local`]) in an IANA zone. Zones come from
//! `chrono-tz` (its database is compiled in, so every server expands the same occurrences) and
//! recurrence from the `rrule` crate (RFC 5545); this module checks input, decides the cases
//! those crates leave open, and never panics on what a client sends: every refusal is a
//! [`ScheduleError`].
//!
//! What it promises:
//! - **Wall-clock series.** A series is a pattern of wall-clock times: a weekly 09:00 meeting in
//!   Madrid is at 09:00 Madrid time on both sides of a DST change. Every occurrence lasts the
//!   wall-clock length of the first (`end - start`), its start and end each turned into
//!   instants; all-day occurrences run from local midnight to local midnight. (RFC 5545 keeps
//!   the exact duration of a DTEND instead; the two differ only for an occurrence that spans a
//!   DST change, where a 22:00–06:00 shift stays 22:00–06:00 here.)
//! - **Gaps and folds** (see [`format_local`] for reading instants back): a wall-clock time that
//!   does not exist (02:30 when clocks jump from 02:00 to 03:00) moves later by the length of the
//!   gap, as RFC 5545 says (03:30); a time that happens twice (02:30 when clocks fall back) is
//!   the first, earlier, one. If a gap would swallow an occurrence's end, it lasts its wall-clock
//!   length from its start.
//! - **The start is the first occurrence**: a rule must produce its series' start (RFC 5545
//!   leaves the other case undefined). COUNT counts exdated occurrences; UNTIL is inclusive and
//!   is compared as a wall-clock time in the event's zone.
//! - **Bounded.** Schedules use the days from 1900-01-01 to 2999-12-31; a series without COUNT
//!   or UNTIL ends on the last of them. Sizes are capped (rule length, COUNT, INTERVAL, exdates,
//!   overrides, occurrences per call), and a list of occurrences is either complete or an error
//!   ([`ScheduleError::TooManyOccurrences`]), never silently cut short.
//! - **Ranges compose.** Expanding `[a, c)` gives the occurrences of `[a, b)` and `[b, c)`
//!   together (once each), and [`Schedule::split_at`] keeps every occurrence on one side.
//!
//! Costs: the `rrule` crate cannot jump ahead, so every query walks a series from its start:
//! one step per occurrence before the end of the range (a daily series begun ten years ago is
//! about 3,650 steps, well under a millisecond each). The walk is capped at
//! [`STEPS_MAX`] steps, more than the daily series over every supported year.
//!
//! ```
//! use agenda::schedule::{Local, Schedule, format_local, parse_zone};
//!
//! // A weekly meeting in Madrid, Mondays and Wednesdays 09:30–10:00, ten times.
//! let meeting = Schedule {
//!     zone: "Europe/Madrid".to_string(),
//!     start: "2026-03-23T09:30".parse()?,
//!     end: "2026-03-23T10:00".parse()?,
//!     rrule: Some("FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10".to_string()),
//!     exdates: vec!["2026-03-25T09:30".parse()?],
//!     overrides: Default::default(),
//! };
//! meeting.validate()?;
//!
//! // 1 to 8 April, as instants (ms since the epoch, UTC).
//! let from_ms = 1_774_994_400_000; // 2026-04-01T00:00:00+02:00
//! let to_ms = from_ms + 8 * 24 * 60 * 60 * 1000;
//! let occurrences = meeting.expand(from_ms, to_ms, 100)?;
//! let madrid = parse_zone("Europe/Madrid")?;
//! let starts: Vec<String> =
//!     occurrences.iter().map(|o| format_local(o.start_ms, madrid)).collect();
//! // Still 09:30 in Madrid after the clocks changed on 29 March.
//! assert_eq!(
//!     starts,
//!     ["2026-04-01T09:30:00+02:00", "2026-04-06T09:30:00+02:00", "2026-04-08T09:30:00+02:00"]
//! );
//! // An occurrence's id is its original start, the key for exdates and overrides.
//! assert_eq!(occurrences[0].id, "2026-04-01T09:30".parse::<Local>()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod local;
mod rule;
mod series;
mod slots;
mod zone;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use local::Local;
pub use rule::{COUNT_MAX, INTERVAL_MAX, RULE_LENGTH_MAX};
pub use series::{EXCEPTIONS_MAX, LENGTH_DAYS_MAX, STEPS_MAX};
pub use slots::{
    Availability, BUSY_INTERVALS_MAX, SEARCH_RANGE_MS_MAX, WorkingHours, find_slots, merge_busy,
};
pub use zone::{format_local, parse_zone};
pub(crate) use zone::{instant_ms, wall_clock};

use series::Series;

/// Why a schedule, a rule or a query was refused. Every variant but
/// [`ScheduleError::TooManyOccurrences`] and [`ScheduleError::NotAnOccurrence`] means "the
/// request is wrong; show the message"; those two ask the caller for a narrower range, or to
/// reload the series.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The zone is not an IANA zone name known to the compiled-in database.
    #[error("unknown time zone {0:?}")]
    UnknownZone(String),
    /// A [`Local`] string is not `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM`.
    #[error("invalid local date or time {input:?}: {reason}")]
    InvalidLocal {
        /// The input (at most its first 64 characters).
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The schedule breaks a rule other than its RRULE's: kinds, order, limits, exceptions.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
    /// The RRULE is malformed, or a part of it is out of range or badly combined.
    #[error("invalid recurrence rule, {part}: {reason}")]
    InvalidRule {
        /// The rule part at fault, e.g. "COUNT".
        part: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The RRULE uses a part of RFC 5545 this calendar does not support.
    #[error(
        "recurrence rule part {part} is not supported (use FREQ=DAILY, WEEKLY, MONTHLY or \
         YEARLY with INTERVAL, COUNT, UNTIL, BYDAY, BYMONTHDAY, WKST)"
    )]
    UnsupportedRulePart {
        /// The part, e.g. "BYSETPOS" or "FREQ=HOURLY".
        part: String,
    },
    /// The `rrule` crate refused the rule (a combination its validation rejects).
    #[error("recurrence rule refused: {0}")]
    Recurrence(String),
    /// The occurrence named is not one of the series (or was removed by an exdate).
    #[error("{0} is not an occurrence of the series")]
    NotAnOccurrence(Local),
    /// The operation needs a recurring series and this is a one-off event.
    #[error("the event does not recur")]
    NotRecurring,
    /// More occurrences overlap the range than the caller allowed: ask for a narrower range.
    #[error("more than {max} occurrences in the range")]
    TooManyOccurrences {
        /// The caller's limit.
        max: usize,
    },
    /// Walking the series took more steps than allowed.
    #[error("the series needs more than {steps} steps to expand")]
    IterationLimit {
        /// The limit reached.
        steps: usize,
    },
    /// The query itself is wrong: a reversed range, a non-positive step, bad working hours.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

/// When an event happens: its zone, its first occurrence, an optional recurrence rule and the
/// exceptions to it.
///
/// A plain value: build it, then [`Schedule::validate`] it before storing it. Every method
/// validates what it needs again, so a stored schedule that has become invalid (say, a zone
/// renamed) gives an error, not wrong occurrences.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// IANA zone name, e.g. "Europe/Madrid".
    pub zone: String,
    /// The first occurrence's start ([`Local::At`]) or first day ([`Local::Day`]).
    pub start: Local,
    /// The first occurrence's exclusive end, of the same kind as `start`; for all-day events the
    /// day after the last day.
    pub end: Local,
    /// The RRULE value without the "RRULE:" prefix, e.g. "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10".
    #[serde(default)]
    pub rrule: Option<String>,
    /// Original starts of occurrences removed from the series.
    #[serde(default)]
    pub exdates: Vec<Local>,
    /// Single occurrences moved, keyed by the occurrence's original start.
    #[serde(default)]
    pub overrides: BTreeMap<Local, Moved>,
}

/// Where one occurrence of a series was moved to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    /// The new start, of the series' kind.
    pub start: Local,
    /// The new exclusive end, of the series' kind.
    pub end: Local,
}

/// One occurrence of a schedule, as instants.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence {
    /// The occurrence's original start: its id within the series, even when it was moved.
    pub id: Local,
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// Exclusive end, ms since the epoch.
    pub end_ms: i64,
    /// Whether this is an all-day occurrence (local midnight to local midnight).
    pub all_day: bool,
    /// Whether an override moved this occurrence from its place in the series.
    pub moved: bool,
}

impl Schedule {
    /// Checks the whole schedule: the zone is known; `start < end`, both of one kind, to the
    /// minute, within the supported years and at most 1,000 days apart; exdates and overrides
    /// are of that kind, at most 1,000 each, only on a recurring schedule, and every override
    /// is keyed by an occurrence of the series (and not also exdated); the rule parses, uses
    /// only FREQ (DAILY, WEEKLY, MONTHLY, YEARLY), INTERVAL (≤ 1,000), COUNT (≤ 100,000) or
    /// UNTIL (not both), BYDAY, BYMONTHDAY and WKST, and produces `start` as its first
    /// occurrence. An exdate that names no occurrence is allowed and changes nothing.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        Series::compile(self)?.check_overrides()
    }

    /// Whether the schedule's occurrences are whole days.
    pub fn is_all_day(&self) -> bool {
        self.start.is_day()
    }

    /// Whether the schedule has a recurrence rule.
    pub fn is_recurring(&self) -> bool {
        self.rrule.is_some()
    }

    /// The occurrences overlapping `[from_ms, to_ms)`, sorted by start and then id, with
    /// exdates removed and overrides applied. A moved occurrence is included when its moved
    /// interval overlaps the range, wherever its original start is.
    ///
    /// More than `max` occurrences is [`ScheduleError::TooManyOccurrences`]: a calendar is never
    /// silently cut short. An empty range (`from_ms == to_ms`) has no occurrences; a reversed
    /// one is [`ScheduleError::InvalidQuery`].
    pub fn expand(
        &self,
        from_ms: i64,
        to_ms: i64,
        max: usize,
    ) -> Result<Vec<Occurrence>, ScheduleError> {
        if from_ms > to_ms {
            return Err(ScheduleError::InvalidQuery(
                "the range's end is before its start".to_string(),
            ));
        }
        let series = Series::compile(self)?;
        if from_ms == to_ms {
            return Ok(Vec::new());
        }
        series.expand(from_ms, to_ms, max)
    }

    /// Whether `id` is the original start of an occurrence of this series (an exdated one is
    /// not; a moved one is).
    pub fn has_occurrence(&self, id: &Local) -> Result<bool, ScheduleError> {
        Series::compile(self)?.has_occurrence(id)
    }

    /// "This and following": the series before `id` (`None` when `id` is the first occurrence)
    /// and the series from `id` on.
    ///
    /// COUNT is shared out (the part before keeps the occurrences before `id`, exdated ones
    /// included; the part after gets the rest); UNTIL stays on the part after, and the part
    /// before ends with UNTIL at the last occurrence before `id`. Exdates and overrides go to
    /// the side of their key. Other rule parts are kept as written. Together the two parts
    /// have exactly the occurrences of `self`.
    pub fn split_at(&self, id: &Local) -> Result<(Option<Schedule>, Schedule), ScheduleError> {
        Series::compile(self)?.split_at(self, id)
    }

    /// The same series moved or resized, given the new start and end of its first occurrence
    /// (for "this and following" after [`Schedule::split_at`], or "all"). Exdates, override keys
    /// and UNTIL move by as much as the start, so they keep naming the same occurrences;
    /// overrides keep their moved times. The result is validated: moving a series to a day
    /// its rule does not produce (a `BYDAY=MO` series to a Tuesday) is an error, and the caller
    /// changes the rule too. Turning a timed series into an all-day one is an error: build a
    /// new schedule.
    pub fn moved_to(&self, start: Local, end: Local) -> Result<Schedule, ScheduleError> {
        Series::compile(self)?.moved_to(self, start, end)
    }
}
