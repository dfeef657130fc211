//! A [`Schedule`] checked and compiled into wall-clock times: the work behind its methods.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use chrono::{Duration, NaiveDateTime};
use chrono_tz::Tz;

use super::rule::{Rule, RuleEnd, with_end};
use super::zone::{FIRST_DAY, LAST_DAY, instant_ms, parse_zone, wall_clock};
use super::{Local, Moved, Occurrence, Schedule, ScheduleError};

/// The most exdates, and the most overrides, one series may carry.
pub const EXCEPTIONS_MAX: usize = 1000;
/// The longest an occurrence may last, in days.
pub const LENGTH_DAYS_MAX: i64 = 1000;
/// The most occurrences one call may generate while walking a series from its start: more than
/// a daily series from the first supported day to the last (about 402,000), so only a bug can
/// reach it.
pub const STEPS_MAX: usize = 500_000;
/// Slack, in wall-clock time, between a range's ends and the occurrences considered: larger than
/// any offset change or gap (at most a day), so no overlapping occurrence is skipped.
const SLACK_DAYS: i64 = 2;

/// A schedule whose every part has been checked, as wall-clock times.
pub(crate) struct Series {
    zone: Tz,
    all_day: bool,
    start: NaiveDateTime,
    /// Wall-clock length of every occurrence (the first occurrence's `end - start`).
    length: Duration,
    rule: Option<(Rule, rrule::RRuleSet)>,
    exdates: BTreeSet<NaiveDateTime>,
    overrides: BTreeMap<NaiveDateTime, (NaiveDateTime, NaiveDateTime)>,
}

fn invalid(reason: impl Into<String>) -> ScheduleError {
    ScheduleError::InvalidSchedule(reason.into())
}

/// Checks one start/end pair: same kind as the series, to the minute, in order, within the
/// supported days and at most [`LENGTH_DAYS_MAX`] long.
fn check_interval(
    what: &str,
    all_day: bool,
    start: &Local,
    end: &Local,
) -> Result<(NaiveDateTime, NaiveDateTime), ScheduleError> {
    check_point(what, all_day, start)?;
    check_point(what, all_day, end)?;
    let (start, end) = (start.naive(), end.naive());
    if start >= end {
        return Err(invalid(format!("{what}: the end must be after the start")));
    }
    if end - start > Duration::days(LENGTH_DAYS_MAX) {
        return Err(invalid(format!(
            "{what}: longer than {LENGTH_DAYS_MAX} days"
        )));
    }
    Ok((start, end))
}

fn check_point(what: &str, all_day: bool, point: &Local) -> Result<(), ScheduleError> {
    if point.is_day() != all_day {
        let kind = if all_day { "a day" } else { "a date-time" };
        return Err(invalid(format!(
            "{what}: {point} is not {kind} like the series' start"
        )));
    }
    if !point.is_to_the_minute() {
        return Err(invalid(format!("{what}: times are to the minute")));
    }
    let day = point.naive().date();
    // An end may fall on the day after the last day (the exclusive end of an all-day event);
    // the length limit keeps the rest in range.
    if day < FIRST_DAY || day > LAST_DAY + Duration::days(LENGTH_DAYS_MAX + 1) {
        return Err(invalid(format!(
            "{what}: {point} is outside the supported years {FIRST_DAY} to {LAST_DAY}"
        )));
    }
    Ok(())
}

impl Series {
    /// Checks everything that can be checked without walking the series, plus that its start is
    /// its first occurrence.
    pub(crate) fn compile(schedule: &Schedule) -> Result<Series, ScheduleError> {
        let zone = parse_zone(&schedule.zone)?;
        let all_day = schedule.start.is_day();
        let (start, end) = check_interval("start/end", all_day, &schedule.start, &schedule.end)?;
        if start.date() > LAST_DAY {
            return Err(invalid(format!(
                "start: {} is after the last supported day {LAST_DAY}",
                schedule.start
            )));
        }
        if schedule.exdates.len() > EXCEPTIONS_MAX || schedule.overrides.len() > EXCEPTIONS_MAX {
            return Err(invalid(format!(
                "at most {EXCEPTIONS_MAX} exdates and {EXCEPTIONS_MAX} overrides"
            )));
        }
        let rule = match &schedule.rrule {
            None => {
                if !schedule.exdates.is_empty() || !schedule.overrides.is_empty() {
                    return Err(invalid(
                        "a one-off event has no exdates or overrides (it has no series to change)",
                    ));
                }
                None
            }
            Some(text) => Some(compile_rule(zone, all_day, start, text)?),
        };
        let mut exdates = BTreeSet::new();
        for exdate in &schedule.exdates {
            check_point("exdate", all_day, exdate)?;
            exdates.insert(exdate.naive());
        }
        let mut overrides = BTreeMap::new();
        for (id, moved) in &schedule.overrides {
            check_point("override", all_day, id)?;
            if exdates.contains(&id.naive()) {
                return Err(invalid(format!(
                    "override: {id} is also an exdate (an occurrence is removed or moved, not both)"
                )));
            }
            let interval = check_interval("override", all_day, &moved.start, &moved.end)?;
            overrides.insert(id.naive(), interval);
        }
        let series = Series {
            zone,
            all_day,
            start,
            length: end - start,
            rule,
            exdates,
            overrides,
        };
        series.check_first_occurrence()?;
        Ok(series)
    }

    /// RFC 5545 leaves a start that the rule does not produce undefined; here it is an error.
    fn check_first_occurrence(&self) -> Result<(), ScheduleError> {
        let mut first = None;
        self.walk(|start| {
            first = Some(start);
            ControlFlow::Break(())
        })?;
        if first != Some(self.start) {
            let first = match first {
                Some(first) => format!("the first one is {}", self.local(first)),
                None => format!("it has none by {LAST_DAY}"),
            };
            return Err(invalid(format!(
                "the start {} is not an occurrence of the rule ({first})",
                self.local(self.start)
            )));
        }
        Ok(())
    }

    fn local(&self, naive: NaiveDateTime) -> Local {
        Local::from_naive(naive, self.all_day)
    }

    /// Calls `visit` with the original start of every occurrence in order, exdated ones
    /// included, until it breaks or the series ends.
    ///
    /// The walk starts at the series' start whatever the caller needs: `rrule` has no way to
    /// jump ahead, so a call costs one step per occurrence from the start (a daily series begun
    /// ten years ago: about 3,650 steps). [`STEPS_MAX`] bounds it.
    ///
    /// `rrule`'s own guard ends a walk silently after 100,000 periods in a row without an
    /// occurrence. It cannot cut a valid series short: the start is an occurrence, and the
    /// parts accepted here (weekdays, days of the month, numbered weekdays) match again within
    /// a few years, far fewer periods than that.
    fn walk(
        &self,
        mut visit: impl FnMut(NaiveDateTime) -> ControlFlow<()>,
    ) -> Result<(), ScheduleError> {
        let Some((_, set)) = &self.rule else {
            let _ = visit(self.start);
            return Ok(());
        };
        for (steps, at) in set.into_iter().enumerate() {
            if steps >= STEPS_MAX {
                return Err(ScheduleError::IterationLimit { steps: STEPS_MAX });
            }
            let at = at.naive_utc();
            if at.date() > LAST_DAY || visit(at).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The instants of an occurrence from its wall-clock start and end. When a gap swallows
    /// the whole occurrence (its end would not come after its start), it lasts its wall-clock
    /// length from its start.
    fn instants(&self, start: NaiveDateTime, end: NaiveDateTime) -> (i64, i64) {
        let start_ms = instant_ms(self.zone, start);
        let end_ms = instant_ms(self.zone, end);
        if end_ms > start_ms {
            (start_ms, end_ms)
        } else {
            (start_ms, start_ms + (end - start).num_milliseconds())
        }
    }

    /// Checks what needs a walk: every override's key is an occurrence.
    pub(crate) fn check_overrides(&self) -> Result<(), ScheduleError> {
        let Some(last) = self.overrides.keys().next_back().copied() else {
            return Ok(());
        };
        let mut found = 0;
        self.walk(|start| {
            if self.overrides.contains_key(&start) {
                found += 1;
            }
            if start >= last {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        if found != self.overrides.len() {
            return Err(self.missing_override(|_| true));
        }
        Ok(())
    }

    fn missing_override(&self, seen: impl Fn(&NaiveDateTime) -> bool) -> ScheduleError {
        let key = self.overrides.keys().find(|key| !seen(key)).copied();
        invalid(format!(
            "override: {} is not an occurrence of the series",
            key.map_or(String::new(), |key| self.local(key).to_string())
        ))
    }

    /// See [`Schedule::expand`].
    pub(crate) fn expand(
        &self,
        from_ms: i64,
        to_ms: i64,
        max: usize,
    ) -> Result<Vec<Occurrence>, ScheduleError> {
        let slack = Duration::days(SLACK_DAYS);
        let mut stop_after = wall_clock(self.zone, to_ms) + slack;
        if let Some(last) = self.overrides.keys().next_back() {
            stop_after = stop_after.max(*last);
        }
        let skip_before = wall_clock(self.zone, from_ms) - self.length - slack;
        let mut seen_overrides = BTreeSet::new();
        let mut occurrences = Vec::new();
        let mut too_many = false;
        self.walk(|start| {
            if start > stop_after {
                return ControlFlow::Break(());
            }
            let (start_ms, end_ms, moved) =
                if let Some(&(moved_start, moved_end)) = self.overrides.get(&start) {
                    seen_overrides.insert(start);
                    let (start_ms, end_ms) = self.instants(moved_start, moved_end);
                    (start_ms, end_ms, true)
                } else if self.exdates.contains(&start) || start < skip_before {
                    return ControlFlow::Continue(());
                } else {
                    let (start_ms, end_ms) = self.instants(start, start + self.length);
                    (start_ms, end_ms, false)
                };
            if start_ms < to_ms && end_ms > from_ms {
                if occurrences.len() == max {
                    too_many = true;
                    return ControlFlow::Break(());
                }
                occurrences.push(Occurrence {
                    id: self.local(start),
                    start_ms,
                    end_ms,
                    all_day: self.all_day,
                    moved,
                });
            }
            ControlFlow::Continue(())
        })?;
        if too_many {
            return Err(ScheduleError::TooManyOccurrences { max });
        }
        if seen_overrides.len() != self.overrides.len() {
            return Err(self.missing_override(|key| seen_overrides.contains(key)));
        }
        occurrences.sort_by_key(|occurrence| (occurrence.start_ms, occurrence.id));
        Ok(occurrences)
    }

    /// See [`Schedule::has_occurrence`].
    pub(crate) fn has_occurrence(&self, id: &Local) -> Result<bool, ScheduleError> {
        if id.is_day() != self.all_day || self.exdates.contains(&id.naive()) {
            return Ok(false);
        }
        let id = id.naive();
        let mut found = false;
        self.walk(|start| {
            found = start == id;
            if start >= id {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(found)
    }

    /// See [`Schedule::split_at`].
    pub(crate) fn split_at(
        &self,
        schedule: &Schedule,
        id: &Local,
    ) -> Result<(Option<Schedule>, Schedule), ScheduleError> {
        let (Some((rule, _)), Some(text)) = (&self.rule, &schedule.rrule) else {
            return Err(ScheduleError::NotRecurring);
        };
        let not_an_occurrence = || ScheduleError::NotAnOccurrence(*id);
        if id.is_day() != self.all_day || self.exdates.contains(&id.naive()) {
            return Err(not_an_occurrence());
        }
        let id_naive = id.naive();
        let mut before_count: u32 = 0;
        let mut previous = None;
        let mut found = false;
        self.walk(|start| {
            if start >= id_naive {
                found = start == id_naive;
                return ControlFlow::Break(());
            }
            before_count += 1;
            previous = Some(start);
            ControlFlow::Continue(())
        })?;
        if !found {
            return Err(not_an_occurrence());
        }
        let Some(previous) = previous else {
            return Ok((None, schedule.clone()));
        };
        let (before_end, after_end) = match rule.end {
            RuleEnd::Count(count) => (
                RuleEnd::Count(before_count),
                RuleEnd::Count(count - before_count),
            ),
            end => (self.until_previous(previous, id_naive, before_count), end),
        };
        let before = Schedule {
            zone: schedule.zone.clone(),
            start: schedule.start,
            end: schedule.end,
            rrule: Some(with_end(text, before_end)),
            exdates: schedule
                .exdates
                .iter()
                .filter(|x| **x < *id)
                .copied()
                .collect(),
            overrides: split_overrides(&schedule.overrides, |key| key < id),
        };
        let after = Schedule {
            zone: schedule.zone.clone(),
            start: *id,
            end: self.local(id_naive + self.length),
            rrule: Some(with_end(text, after_end)),
            exdates: schedule
                .exdates
                .iter()
                .filter(|x| **x >= *id)
                .copied()
                .collect(),
            overrides: split_overrides(&schedule.overrides, |key| key >= id),
        };
        Ok((Some(before), after))
    }

    /// The UNTIL that ends a series at `previous`, just before `id`. A timed series' UNTIL is
    /// compared as a wall-clock time: when the UTC instant of `previous` does not read back as a
    /// wall-clock time in `[previous, id)` (a gap longer than the spacing of occurrences), the
    /// series ends by COUNT instead.
    fn until_previous(&self, previous: NaiveDateTime, id: NaiveDateTime, count: u32) -> RuleEnd {
        if self.all_day {
            return RuleEnd::UntilDay(previous.date());
        }
        let until_ms = instant_ms(self.zone, previous);
        let read_back = wall_clock(self.zone, until_ms);
        if previous <= read_back && read_back < id {
            RuleEnd::UntilInstant(until_ms)
        } else {
            RuleEnd::Count(count)
        }
    }

    /// See [`Schedule::moved_to`].
    pub(crate) fn moved_to(
        &self,
        schedule: &Schedule,
        start: Local,
        end: Local,
    ) -> Result<Schedule, ScheduleError> {
        if start.is_day() != self.all_day {
            return Err(invalid(
                "moving a series between all-day and timed needs a new schedule",
            ));
        }
        let (new_start, _) = check_interval("start/end", self.all_day, &start, &end)?;
        let shift = new_start - self.start;
        let shifted = |point: &Local| self.local(point.naive() + shift);
        let rrule = match (&self.rule, &schedule.rrule) {
            (Some((rule, _)), Some(text)) => Some(match rule.end {
                RuleEnd::UntilDay(day) => with_end(text, RuleEnd::UntilDay(day + shift)),
                RuleEnd::UntilInstant(ms) => {
                    let until = wall_clock(self.zone, ms) + shift;
                    with_end(text, RuleEnd::UntilInstant(instant_ms(self.zone, until)))
                }
                RuleEnd::Never | RuleEnd::Count(_) => text.clone(),
            }),
            _ => None,
        };
        let moved = Schedule {
            zone: schedule.zone.clone(),
            start,
            end,
            rrule,
            exdates: schedule.exdates.iter().map(shifted).collect(),
            overrides: schedule
                .overrides
                .iter()
                .map(|(key, moved)| (shifted(key), moved.clone()))
                .collect(),
        };
        moved.validate()?;
        Ok(moved)
    }
}

fn compile_rule(
    zone: Tz,
    all_day: bool,
    start: NaiveDateTime,
    text: &str,
) -> Result<(Rule, rrule::RRuleSet), ScheduleError> {
    let rule = Rule::parse(text, all_day)?;
    let until_wall_clock = match rule.end {
        RuleEnd::UntilDay(day) => Some(day.and_time(chrono::NaiveTime::MIN)),
        RuleEnd::UntilInstant(ms) => Some(wall_clock(zone, ms)),
        RuleEnd::Never | RuleEnd::Count(_) => None,
    };
    if let Some(until) = until_wall_clock
        && until < start
    {
        return Err(ScheduleError::InvalidRule {
            part: "UNTIL".to_string(),
            reason: "before the start".to_string(),
        });
    }
    let set = rule.to_rrule(start, until_wall_clock)?;
    Ok((rule, set))
}

fn split_overrides(
    overrides: &BTreeMap<Local, Moved>,
    keep: impl Fn(&Local) -> bool,
) -> BTreeMap<Local, Moved> {
    overrides
        .iter()
        .filter(|(key, _)| keep(key))
        .map(|(key, moved)| (*key, moved.clone()))
        .collect()
}
