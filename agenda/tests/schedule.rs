//! `agenda::schedule`: one test per promise of the module documentation, then properties with
//! fixed seeds (expanding composes over ranges, splitting keeps every occurrence, no input
//! panics).

use std::collections::BTreeMap;

use agenda::schedule::{
    Availability, Local, Moved, Occurrence, Schedule, ScheduleError, WorkingHours, find_slots,
    format_local, merge_busy, parse_zone,
};
use chrono::{DateTime, Duration, NaiveDate, Weekday};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

const HOUR_MS: i64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn local(text: &str) -> Local {
    text.parse().unwrap()
}

/// An RFC 3339 instant as ms since the epoch.
fn ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

fn schedule(zone: &str, start: &str, end: &str, rrule: Option<&str>) -> Schedule {
    Schedule {
        zone: zone.to_string(),
        start: local(start),
        end: local(end),
        rrule: rrule.map(str::to_string),
        exdates: Vec::new(),
        overrides: BTreeMap::new(),
    }
}

/// `local` moved by a wall-clock duration.
fn plus(point: Local, by: Duration) -> Local {
    match point {
        Local::At(at) => Local::At(at + by),
        Local::Day(day) => Local::Day(day + by),
    }
}

/// The starts of the occurrences in `[from, to)`, as RFC 3339 in the schedule's zone.
fn starts(schedule: &Schedule, from: &str, to: &str) -> Vec<String> {
    let zone = parse_zone(&schedule.zone).unwrap();
    schedule
        .expand(ms(from), ms(to), 10_000)
        .unwrap()
        .iter()
        .map(|occurrence| format_local(occurrence.start_ms, zone))
        .collect()
}

/// Every occurrence, from the first supported day to the last.
fn all(schedule: &Schedule) -> Vec<Occurrence> {
    schedule.expand(i64::MIN, i64::MAX, 200_000).unwrap()
}

/// The occurrences of 2000 to 2035: all of them for a bounded series that begins after 2000, and
/// a few thousand of an unbounded one.
fn window(schedule: &Schedule) -> Vec<Occurrence> {
    let (from, to) = (ms("2000-01-01T00:00:00Z"), ms("2036-01-01T00:00:00Z"));
    schedule.expand(from, to, 20_000).unwrap()
}

fn ids(schedule: &Schedule) -> Vec<String> {
    all(schedule).iter().map(|o| o.id.to_string()).collect()
}

fn rule_part(error: ScheduleError) -> String {
    match error {
        ScheduleError::InvalidRule { part, .. } => part,
        ScheduleError::UnsupportedRulePart { part } => part,
        other => panic!("expected a rule error, got {other:?}"),
    }
}

// ---- Local ----

#[test]
fn local_reads_and_writes_minutes_and_days() {
    for text in [
        "2026-12-03T09:30",
        "2026-12-03",
        "1900-01-01T00:00",
        "2999-12-31",
    ] {
        assert_eq!(local(text).to_string(), text);
    }
    assert!(local("2026-12-03") > local("2026-12-02"));
    assert!(local("2026-12-03T09:30") < local("2026-12-03T10:00"));
}

#[test]
fn local_refuses_anything_else() {
    for text in [
        "",
        "2026-12-3",
        "2026-02-30",
        "2026-12-03T24:00",
        "2026-12-03T09:30:00",
        "2026-12-03 09:30",
        "2026-12-03T09:30Z",
        "+026-12-03",
        "２０２６-12-03",
        "2026-12-03T09:3é",
    ] {
        assert!(
            matches!(
                text.parse::<Local>(),
                Err(ScheduleError::InvalidLocal { .. })
            ),
            "{text:?}"
        );
    }
}

#[test]
fn schedule_round_trips_through_json_with_locals_as_map_keys() {
    let mut weekly = schedule(
        "Europe/Madrid",
        "2026-12-07T09:00",
        "2026-12-07T10:00",
        Some("FREQ=WEEKLY"),
    );
    weekly.exdates.push(local("2026-12-14T09:00"));
    weekly.overrides.insert(
        local("2026-12-21T09:00"),
        Moved {
            start: local("2026-12-22T11:00"),
            end: local("2026-12-22T12:00"),
        },
    );
    let json = serde_json::to_string(&weekly).unwrap();
    assert!(
        json.contains(r#""overrides":{"2026-12-21T09:00":{"start":"2026-12-22T11:00""#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), weekly);
    assert!(serde_json::from_str::<Local>(r#""2026-13-01""#).is_err());
    // Missing optional fields default.
    let one_off: Schedule =
        serde_json::from_str(r#"{"zone":"UTC","start":"2026-12-03","end":"2026-12-04"}"#).unwrap();
    one_off.validate().unwrap();
}

// ---- Zones ----

#[test]
fn zones_are_iana_names() {
    assert_eq!(parse_zone("Europe/Madrid").unwrap().name(), "Europe/Madrid");
    let long = "A".repeat(10_000);
    for name in [
        "",
        "Europe/Nowhere",
        "europe/madrid",
        "../../etc/passwd",
        &long,
    ] {
        assert!(matches!(
            parse_zone(name),
            Err(ScheduleError::UnknownZone(_))
        ));
    }
    let mut bad = schedule("Mars/Olympus", "2026-12-07T09:00", "2026-12-07T10:00", None);
    assert!(matches!(bad.validate(), Err(ScheduleError::UnknownZone(_))));
    bad.zone = "Europe/Madrid".to_string();
    bad.validate().unwrap();
}

#[test]
fn format_local_gives_the_offset_of_the_instant() {
    let madrid = parse_zone("Europe/Madrid").unwrap();
    assert_eq!(
        format_local(ms("2026-12-03T08:30:00Z"), madrid),
        "2026-12-03T09:30:00+01:00"
    );
    assert_eq!(
        format_local(ms("2026-07-03T08:30:00Z"), madrid),
        "2026-07-03T10:30:00+02:00"
    );
    let new_york = parse_zone("America/New_York").unwrap();
    assert_eq!(
        format_local(ms("2026-12-03T14:00:00Z"), new_york),
        "2026-12-03T09:00:00-05:00"
    );
    assert_eq!(
        format_local(1_500, chrono_tz::UTC),
        "1970-01-01T00:00:01.500+00:00"
    );
    // Monrovia Mean Time, -00:44:30 until 1972: the offset is cut to the minute and the string
    // still names the instant.
    let monrovia = parse_zone("Africa/Monrovia").unwrap();
    let instant = ms("1950-06-01T12:00:00Z");
    let shown = format_local(instant, monrovia);
    assert_eq!(shown, "1950-06-01T11:16:00-00:44");
    assert_eq!(ms(&shown), instant);
    // Instants out of chrono's range are clamped, not a panic.
    assert!(!format_local(i64::MAX, madrid).is_empty());
    assert!(!format_local(i64::MIN, madrid).is_empty());
}

// ---- Daylight saving time ----

#[test]
fn a_weekly_meeting_keeps_its_local_time_across_both_dst_changes() {
    let weekly = schedule(
        "Europe/Madrid",
        "2026-03-16T09:00",
        "2026-03-16T10:00",
        Some("FREQ=WEEKLY"),
    );
    assert_eq!(
        starts(&weekly, "2026-03-16T00:00:00Z", "2026-04-07T00:00:00Z"),
        [
            "2026-03-16T09:00:00+01:00",
            "2026-03-23T09:00:00+01:00",
            "2026-03-30T09:00:00+02:00",
            "2026-04-06T09:00:00+02:00",
        ]
    );
    assert_eq!(
        starts(&weekly, "2026-10-19T00:00:00Z", "2026-11-03T00:00:00Z"),
        [
            "2026-10-19T09:00:00+02:00",
            "2026-10-26T09:00:00+01:00",
            "2026-11-02T09:00:00+01:00",
        ]
    );
    let occurrences = weekly
        .expand(ms("2026-03-30T00:00:00Z"), ms("2026-03-31T00:00:00Z"), 10)
        .unwrap();
    assert_eq!(occurrences[0].start_ms, ms("2026-03-30T07:00:00Z"));
    assert_eq!(occurrences[0].end_ms - occurrences[0].start_ms, HOUR_MS);
}

#[test]
fn a_time_in_the_spring_gap_moves_later_by_the_gap() {
    // 29 March 2026: Madrid's clocks jump from 02:00 to 03:00, so 02:30 does not exist.
    let nightly = schedule(
        "Europe/Madrid",
        "2026-03-28T02:30",
        "2026-03-28T03:00",
        Some("FREQ=DAILY;COUNT=3"),
    );
    let occurrences = all(&nightly);
    let madrid = parse_zone("Europe/Madrid").unwrap();
    let shown: Vec<(String, String)> = occurrences
        .iter()
        .map(|o| {
            (
                format_local(o.start_ms, madrid),
                format_local(o.end_ms, madrid),
            )
        })
        .collect();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        shown,
        [
            pair("2026-03-28T02:30:00+01:00", "2026-03-28T03:00:00+01:00"),
            // 02:30 read with the offset before the gap (+01:00) is 03:30 summer time; its end,
            // 03:00 summer time, would come first, so it lasts its 30 minutes from its start.
            pair("2026-03-29T03:30:00+02:00", "2026-03-29T04:00:00+02:00"),
            pair("2026-03-30T02:30:00+02:00", "2026-03-30T03:00:00+02:00"),
        ]
    );
    assert_eq!(occurrences[1].id, local("2026-03-29T02:30"));
}

#[test]
fn a_time_in_the_autumn_fold_is_the_first_of_the_two() {
    // 25 October 2026: Madrid's clocks fall back from 03:00 to 02:00, so 02:30 happens twice.
    let nightly = schedule(
        "Europe/Madrid",
        "2026-10-24T02:30",
        "2026-10-24T03:30",
        Some("FREQ=DAILY;COUNT=3"),
    );
    let occurrences = all(&nightly);
    assert_eq!(occurrences[1].start_ms, ms("2026-10-25T02:30:00+02:00"));
    // Its end, 03:30 after the change, is two hours later: the wall clock read 02:30 twice.
    assert_eq!(occurrences[1].end_ms, ms("2026-10-25T03:30:00+01:00"));
    assert_eq!(occurrences[2].start_ms, ms("2026-10-26T02:30:00+01:00"));
}

#[test]
fn a_day_whose_midnight_is_skipped_starts_when_the_clocks_jump() {
    // Chile springs forward at midnight: 2026-09-06 00:00 does not exist in Santiago.
    let day = schedule("America/Santiago", "2026-09-06", "2026-09-07", None);
    let occurrence = all(&day)[0];
    assert_eq!(occurrence.start_ms, ms("2026-09-06T01:00:00-03:00"));
    assert_eq!(occurrence.end_ms, ms("2026-09-07T00:00:00-03:00"));
    assert_eq!(occurrence.end_ms - occurrence.start_ms, 23 * HOUR_MS);
    // A daily series across it keeps every day.
    let daily = schedule(
        "America/Santiago",
        "2026-09-04",
        "2026-09-05",
        Some("FREQ=DAILY;COUNT=4"),
    );
    assert_eq!(
        ids(&daily),
        ["2026-09-04", "2026-09-05", "2026-09-06", "2026-09-07"]
    );
}

// ---- Recurrence ----

#[test]
fn count_counts_exdated_occurrences() {
    let mut daily = schedule(
        "Europe/Madrid",
        "2026-12-01T09:00",
        "2026-12-01T09:30",
        Some("FREQ=DAILY;COUNT=5"),
    );
    daily.exdates.push(local("2026-12-02T09:00"));
    assert_eq!(
        ids(&daily),
        [
            "2026-12-01T09:00",
            "2026-12-03T09:00",
            "2026-12-04T09:00",
            "2026-12-05T09:00"
        ]
    );
}

#[test]
fn until_is_inclusive() {
    // The fifth occurrence is at 08:00 UTC; UNTIL names exactly that instant.
    let daily = |until: &str| {
        schedule(
            "Europe/Madrid",
            "2026-12-01T09:00",
            "2026-12-01T09:30",
            Some(&format!("FREQ=DAILY;UNTIL={until}")),
        )
    };
    assert_eq!(all(&daily("20261205T080000Z")).len(), 5);
    assert_eq!(all(&daily("20261205T075959Z")).len(), 4);
    let days = schedule(
        "Europe/Madrid",
        "2026-12-01",
        "2026-12-02",
        Some("FREQ=DAILY;UNTIL=20261205"),
    );
    assert_eq!(all(&days).last().unwrap().id, local("2026-12-05"));
}

#[test]
fn monthly_on_the_31st_skips_short_months() {
    let monthly = schedule(
        "Europe/Madrid",
        "2026-01-31T18:00",
        "2026-01-31T19:00",
        Some("FREQ=MONTHLY;BYMONTHDAY=31;COUNT=4"),
    );
    assert_eq!(
        ids(&monthly),
        [
            "2026-01-31T18:00",
            "2026-03-31T18:00",
            "2026-05-31T18:00",
            "2026-07-31T18:00"
        ]
    );
    // The same without BYMONTHDAY: the day comes from the start.
    let implied = Schedule {
        rrule: Some("FREQ=MONTHLY;COUNT=4".to_string()),
        ..monthly.clone()
    };
    assert_eq!(ids(&implied), ids(&monthly));
    // The last day of every month.
    let last = schedule(
        "UTC",
        "2026-01-31",
        "2026-02-01",
        Some("FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=3"),
    );
    assert_eq!(ids(&last), ["2026-01-31", "2026-02-28", "2026-03-31"]);
}

#[test]
fn monthly_by_numbered_weekday() {
    let second_tuesday = schedule(
        "America/New_York",
        "2026-01-13T10:00",
        "2026-01-13T11:00",
        Some("FREQ=MONTHLY;BYDAY=2TU;COUNT=3"),
    );
    assert_eq!(
        ids(&second_tuesday),
        ["2026-01-13T10:00", "2026-02-10T10:00", "2026-03-10T10:00"]
    );
    let last_friday = schedule(
        "America/New_York",
        "2026-01-30",
        "2026-01-31",
        Some("FREQ=MONTHLY;BYDAY=-1FR;COUNT=3"),
    );
    assert_eq!(
        ids(&last_friday),
        ["2026-01-30", "2026-02-27", "2026-03-27"]
    );
}

#[test]
fn interval_skips_periods() {
    let fortnightly = schedule(
        "Europe/Madrid",
        "2026-12-07T09:00",
        "2026-12-07T10:00",
        Some("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;COUNT=5"),
    );
    assert_eq!(
        ids(&fortnightly),
        [
            "2026-12-07T09:00",
            "2026-12-10T09:00",
            "2026-12-21T09:00",
            "2026-12-24T09:00",
            "2027-01-04T09:00"
        ]
    );
}

#[test]
fn all_day_events_span_whole_local_days() {
    // A yearly birthday, all day in Madrid: local midnight to local midnight.
    let birthday = schedule(
        "Europe/Madrid",
        "2020-02-29",
        "2020-03-01",
        Some("FREQ=YEARLY"),
    );
    let occurrences = birthday
        .expand(ms("2023-01-01T00:00:00Z"), ms("2029-01-01T00:00:00Z"), 10)
        .unwrap();
    let ids: Vec<String> = occurrences.iter().map(|o| o.id.to_string()).collect();
    // RFC 5545: an invalid date (29 February in a common year) is skipped.
    assert_eq!(ids, ["2024-02-29", "2028-02-29"]);
    assert!(occurrences.iter().all(|o| o.all_day));
    assert_eq!(occurrences[0].start_ms, ms("2024-02-29T00:00:00+01:00"));
    assert_eq!(occurrences[0].end_ms, ms("2024-03-01T00:00:00+01:00"));

    // A three-day conference across the October change is 24 + 25 + 24 hours.
    let conference = schedule("Europe/Madrid", "2026-10-24", "2026-10-27", None);
    assert!(conference.is_all_day());
    let occurrence = all(&conference)[0];
    assert_eq!(occurrence.start_ms, ms("2026-10-24T00:00:00+02:00"));
    assert_eq!(occurrence.end_ms - occurrence.start_ms, 73 * HOUR_MS);
    // Its busy time is those local days.
    assert_eq!(
        merge_busy(vec![(occurrence.start_ms, occurrence.end_ms)]),
        [(ms("2026-10-23T22:00:00Z"), ms("2026-10-26T23:00:00Z"))]
    );

    // A weekly two-day all-day event.
    let weekend = schedule(
        "Europe/Madrid",
        "2026-12-05",
        "2026-12-07",
        Some("FREQ=WEEKLY;COUNT=3"),
    );
    let occurrences = all(&weekend);
    assert_eq!(occurrences.len(), 3);
    assert_eq!(occurrences[2].end_ms - occurrences[2].start_ms, 2 * DAY_MS);
}

#[test]
fn the_start_must_be_an_occurrence() {
    // 2026-12-08 is a Tuesday.
    let off_pattern = schedule(
        "Europe/Madrid",
        "2026-12-08T09:00",
        "2026-12-08T10:00",
        Some("FREQ=WEEKLY;BYDAY=MO,WE"),
    );
    let error = off_pattern.validate().unwrap_err();
    assert!(error.to_string().contains("not an occurrence"), "{error}");
    assert!(error.to_string().contains("2026-12-09T09:00"), "{error}");
    assert!(off_pattern.expand(0, 1, 1).is_err());
}

#[test]
fn a_one_off_event_is_one_occurrence() {
    let lunch = schedule(
        "Europe/Madrid",
        "2026-12-03T13:00",
        "2026-12-03T14:00",
        None,
    );
    assert!(!lunch.is_recurring());
    assert!(!lunch.is_all_day());
    let occurrences = all(&lunch);
    assert_eq!(occurrences.len(), 1);
    assert_eq!(occurrences[0].start_ms, ms("2026-12-03T12:00:00Z"));
    let count = |from: &str, to: &str| lunch.expand(ms(from), ms(to), 1).unwrap().len();
    // Ranges are half-open: an occurrence ending at `from` or starting at `to` is outside.
    assert_eq!(count("2026-12-03T13:00:00Z", "2026-12-04T00:00:00Z"), 0);
    assert_eq!(count("2026-12-03T00:00:00Z", "2026-12-03T12:00:00Z"), 0);
    assert_eq!(count("2026-12-03T12:59:59Z", "2026-12-04T00:00:00Z"), 1);
    assert!(lunch.expand(5, 5, 0).unwrap().is_empty());
    assert!(matches!(
        lunch.expand(6, 5, 1),
        Err(ScheduleError::InvalidQuery(_))
    ));
}

// ---- Exceptions ----

fn weekly_with_exceptions() -> Schedule {
    let mut weekly = schedule(
        "Europe/Madrid",
        "2026-12-07T09:00",
        "2026-12-07T10:00",
        Some("FREQ=WEEKLY;COUNT=6"),
    );
    weekly.exdates.push(local("2026-12-21T09:00"));
    // The occurrence of 14 December moved a month ahead, into January.
    weekly.overrides.insert(
        local("2026-12-14T09:00"),
        Moved {
            start: local("2027-01-13T16:00"),
            end: local("2027-01-13T17:00"),
        },
    );
    weekly
}

#[test]
fn overrides_move_occurrences_in_and_out_of_ranges() {
    let weekly = weekly_with_exceptions();
    weekly.validate().unwrap();
    // December: the 14th has moved out, the 21st is removed.
    assert_eq!(
        starts(&weekly, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ["2026-12-07T09:00:00+01:00", "2026-12-28T09:00:00+01:00"]
    );
    // January: the moved one comes in, sorted by its new start.
    let january = weekly
        .expand(ms("2027-01-01T00:00:00Z"), ms("2027-02-01T00:00:00Z"), 10)
        .unwrap();
    let summary: Vec<(String, bool)> = january
        .iter()
        .map(|o| (o.id.to_string(), o.moved))
        .collect();
    assert_eq!(
        summary,
        [
            ("2027-01-04T09:00".to_string(), false),
            ("2027-01-11T09:00".to_string(), false),
            ("2026-12-14T09:00".to_string(), true),
        ]
    );
    assert_eq!(january[2].start_ms, ms("2027-01-13T16:00:00+01:00"));
}

#[test]
fn has_occurrence_knows_the_series() {
    let weekly = weekly_with_exceptions();
    let has = |id: &str| weekly.has_occurrence(&local(id)).unwrap();
    assert!(has("2026-12-07T09:00"));
    assert!(has("2026-12-14T09:00"), "moved, still an occurrence");
    assert!(!has("2026-12-21T09:00"), "exdated");
    assert!(!has("2026-12-08T09:00"));
    assert!(!has("2027-01-18T09:00"), "after COUNT");
    assert!(!has("2026-12-07"), "another kind");
}

#[test]
fn too_many_occurrences_is_an_error_not_a_short_list() {
    let daily = schedule(
        "Europe/Madrid",
        "2026-01-01T09:00",
        "2026-01-01T10:00",
        Some("FREQ=DAILY"),
    );
    let (from, to) = (ms("2026-01-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"));
    assert_eq!(daily.expand(from, to, 365).unwrap().len(), 365);
    assert_eq!(
        daily.expand(from, to, 364),
        Err(ScheduleError::TooManyOccurrences { max: 364 })
    );
}

#[test]
fn an_unbounded_series_ends_on_the_last_supported_day() {
    let daily = schedule("UTC", "2999-12-29", "2999-12-30", Some("FREQ=DAILY"));
    assert_eq!(ids(&daily), ["2999-12-29", "2999-12-30", "2999-12-31"]);
}

#[test]
fn a_series_begun_long_ago_expands_a_year() {
    // Begun in 1950: every call walks ~27,700 occurrences from the start, then a year.
    let daily = schedule(
        "Europe/Madrid",
        "1950-01-01T09:00",
        "1950-01-01T10:00",
        Some("FREQ=DAILY"),
    );
    let started = std::time::Instant::now();
    let occurrences = daily
        .expand(ms("2026-01-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"), 400)
        .unwrap();
    assert_eq!(occurrences.len(), 365);
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
}

// ---- Validation ----

#[test]
fn validation_names_the_rule_part_at_fault() {
    let cases = [
        ("FREQ=HOURLY", "FREQ=HOURLY"),
        ("FREQ=WEEKLY;BYSETPOS=1;BYDAY=MO", "BYSETPOS"),
        ("FREQ=YEARLY;BYMONTH=3", "BYMONTH"),
        ("FREQ=DAILY;BYHOUR=9", "BYHOUR"),
        ("FREQ=DAILY;X-FOO=1", "X-FOO"),
        ("FREQ=FORTNIGHTLY", "FREQ"),
        ("INTERVAL=2", "FREQ"),
        ("FREQ=DAILY;FREQ=DAILY", "FREQ"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20270101T000000Z", "COUNT"),
        ("FREQ=DAILY;COUNT=0", "COUNT"),
        ("FREQ=DAILY;COUNT=100001", "COUNT"),
        ("FREQ=DAILY;COUNT=-1", "COUNT"),
        ("FREQ=DAILY;INTERVAL=1001", "INTERVAL"),
        ("FREQ=DAILY;UNTIL=20270101", "UNTIL"),
        ("FREQ=DAILY;UNTIL=20270101T000000", "UNTIL"),
        ("FREQ=DAILY;UNTIL=20200101T000000Z", "UNTIL"),
        ("FREQ=WEEKLY;BYDAY=2MO", "BYDAY"),
        ("FREQ=MONTHLY;BYDAY=6MO", "BYDAY"),
        ("FREQ=MONTHLY;BYDAY=XX", "BYDAY"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "BYMONTHDAY"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY"),
        ("FREQ=WEEKLY;WKST=XY", "WKST"),
        ("RRULE:FREQ=DAILY", "RRULE"),
        ("FREQ", "FREQ"),
    ];
    for (rule, part) in cases {
        let series = schedule(
            "Europe/Madrid",
            "2026-12-07T09:00",
            "2026-12-07T10:00",
            Some(rule),
        );
        let error = series.validate().unwrap_err();
        assert!(error.to_string().contains(part), "{rule}: {error}");
        assert_eq!(rule_part(error), part, "{rule}");
    }
}

#[test]
fn validation_accepts_the_supported_subset() {
    for rule in [
        "FREQ=DAILY",
        "freq=weekly;byday=mo,we",
        "FREQ=WEEKLY;BYDAY=MO;WKST=SU;INTERVAL=3;",
        "FREQ=MONTHLY;BYMONTHDAY=7,-1",
        "FREQ=MONTHLY;BYDAY=1MO,-1MO",
        "FREQ=YEARLY;BYDAY=49MO",
        "FREQ=DAILY;UNTIL=20271207T080000Z",
        "FREQ=WEEKLY;COUNT=100000",
    ] {
        let series = schedule(
            "Europe/Madrid",
            "2026-12-07T09:00",
            "2026-12-07T10:00",
            Some(rule),
        );
        series
            .validate()
            .unwrap_or_else(|error| panic!("{rule}: {error}"));
    }
}

#[test]
fn validation_checks_kinds_order_and_limits() {
    let base = schedule(
        "Europe/Madrid",
        "2026-12-07T09:00",
        "2026-12-07T10:00",
        Some("FREQ=DAILY"),
    );
    let invalid =
        |schedule: Schedule| matches!(schedule.validate(), Err(ScheduleError::InvalidSchedule(_)));
    let with = |start: &str, end: &str, rrule: Option<&str>| Schedule {
        start: local(start),
        end: local(end),
        rrule: rrule.map(str::to_string),
        ..base.clone()
    };
    assert!(invalid(with(
        "2026-12-07T09:00",
        "2026-12-07T09:00",
        Some("FREQ=DAILY")
    )));
    assert!(invalid(with(
        "2026-12-07T09:00",
        "2026-12-08",
        Some("FREQ=DAILY")
    )));
    assert!(invalid(with("1899-12-31T09:00", "1899-12-31T10:00", None)));
    assert!(invalid(with("3000-01-01T09:00", "3000-01-01T10:00", None)));
    assert!(invalid(with("2026-12-07T09:00", "2029-12-07T10:00", None)));
    let seconds = match local("2026-12-07T10:00") {
        Local::At(at) => Local::At(at + Duration::seconds(1)),
        Local::Day(_) => unreachable!(),
    };
    assert!(invalid(Schedule {
        end: seconds,
        ..base.clone()
    }));
    assert!(invalid(Schedule {
        exdates: vec![local("2026-12-08")],
        ..base.clone()
    }));
    assert!(invalid(Schedule {
        rrule: None,
        exdates: vec![local("2026-12-08T09:00")],
        ..base.clone()
    }));
    let many = (0..1001)
        .map(|day| plus(local("2026-12-08T09:00"), Duration::days(day)))
        .collect();
    assert!(invalid(Schedule {
        exdates: many,
        ..base.clone()
    }));
    // Overrides: keyed by occurrences, not also exdated, in order.
    let moved = Moved {
        start: local("2026-12-09T11:00"),
        end: local("2026-12-09T12:00"),
    };
    let with_override = |key: &str| {
        let mut schedule = base.clone();
        schedule.overrides.insert(local(key), moved.clone());
        schedule
    };
    with_override("2026-12-09T09:00").validate().unwrap();
    assert!(invalid(with_override("2026-12-09T09:30")));
    assert!(invalid(with_override("2026-12-06T09:00")));
    let mut both = with_override("2026-12-09T09:00");
    both.exdates.push(local("2026-12-09T09:00"));
    assert!(invalid(both));
    let mut backwards = with_override("2026-12-09T09:00");
    backwards.overrides.insert(
        local("2026-12-10T09:00"),
        Moved {
            start: moved.end,
            end: moved.start,
        },
    );
    assert!(invalid(backwards));
}

// ---- This and following ----

/// Checks `split_at(id)`: both parts validate, together they have exactly the original
/// occurrences, and the part after starts at `id`.
fn check_split(series: &Schedule, id: Local) -> (Option<Schedule>, Schedule) {
    let (before, after) = series.split_at(&id).unwrap();
    after
        .validate()
        .unwrap_or_else(|error| panic!("{after:?}: {error}"));
    assert_eq!(after.start, id);
    let mut together = Vec::new();
    if let Some(before) = &before {
        before
            .validate()
            .unwrap_or_else(|error| panic!("{before:?}: {error}"));
        together.extend(window(before));
    }
    together.extend(window(&after));
    together.sort_by_key(|o| (o.start_ms, o.id));
    assert_eq!(together, window(series), "split of {series:?} at {id}");
    (before, after)
}

#[test]
fn split_shares_out_count() {
    let series = weekly_with_exceptions();
    let (before, after) = check_split(&series, local("2026-12-28T09:00"));
    let before = before.unwrap();
    // Three occurrences before the 28th (one moved, one exdated): COUNT counts them all.
    assert_eq!(before.rrule.as_deref(), Some("FREQ=WEEKLY;COUNT=3"));
    assert_eq!(after.rrule.as_deref(), Some("FREQ=WEEKLY;COUNT=3"));
    assert_eq!(before.exdates, [local("2026-12-21T09:00")]);
    assert_eq!(before.overrides.len(), 1);
    assert!(after.exdates.is_empty() && after.overrides.is_empty());
    assert_eq!(after.end, local("2026-12-28T10:00"));
}

#[test]
fn split_keeps_until_after_and_ends_the_part_before() {
    let series = schedule(
        "Europe/Madrid",
        "2026-03-02T09:00",
        "2026-03-02T10:00",
        Some("FREQ=WEEKLY;BYDAY=MO,TH;UNTIL=20260430T070000Z"),
    );
    let (before, after) = check_split(&series, local("2026-04-02T09:00"));
    // The last occurrence before is 30 March, 09:00 summer time.
    assert_eq!(
        before.unwrap().rrule.as_deref(),
        Some("FREQ=WEEKLY;BYDAY=MO,TH;UNTIL=20260330T070000Z")
    );
    assert_eq!(after.rrule, series.rrule);
}

#[test]
fn split_an_unbounded_series_and_at_the_first_occurrence() {
    let series = schedule(
        "Europe/Madrid",
        "2026-01-05",
        "2026-01-06",
        Some("FREQ=MONTHLY;BYDAY=1MO"),
    );
    let (before, after) = check_split(&series, local("2026-06-01"));
    assert_eq!(
        before.unwrap().rrule.as_deref(),
        Some("FREQ=MONTHLY;BYDAY=1MO;UNTIL=20260504")
    );
    assert_eq!(after.rrule, series.rrule);
    let (before, after) = check_split(&series, local("2026-01-05"));
    assert!(before.is_none());
    assert_eq!(after, series);
}

#[test]
fn split_across_a_skipped_day_ends_the_part_before_by_count() {
    // Samoa skipped 30 December 2011 (from 29 December, UTC-10, to 31 December, UTC+14): the
    // 09:00 of the 30th reads as 09:00 on the 31st, the same instant as the next occurrence.
    let daily = schedule(
        "Pacific/Apia",
        "2011-12-28T09:00",
        "2011-12-28T10:00",
        Some("FREQ=DAILY"),
    );
    let occurrences = daily
        .expand(ms("2011-12-27T00:00:00Z"), ms("2012-01-02T00:00:00Z"), 10)
        .unwrap();
    assert_eq!(occurrences[2].id, local("2011-12-30T09:00"));
    assert_eq!(occurrences[2].start_ms, ms("2011-12-31T09:00:00+14:00"));
    assert_eq!(occurrences[3].start_ms, occurrences[2].start_ms);
    // An UNTIL at the 30th's instant would also take in the 31st, so the part before ends by
    // COUNT.
    let (before, _) = check_split(&daily, local("2011-12-31T09:00"));
    assert_eq!(before.unwrap().rrule.as_deref(), Some("FREQ=DAILY;COUNT=3"));
    // The skipped day, all day, lasts 24 hours from the jump.
    let day = schedule("Pacific/Apia", "2011-12-30", "2011-12-31", None);
    let occurrence = all(&day)[0];
    assert_eq!(occurrence.start_ms, ms("2011-12-30T10:00:00Z"));
    assert_eq!(occurrence.end_ms - occurrence.start_ms, DAY_MS);
}

#[test]
fn split_needs_an_occurrence_of_a_series() {
    let series = weekly_with_exceptions();
    for id in [
        "2026-12-21T09:00",
        "2026-12-22T09:00",
        "2027-01-18T09:00",
        "2026-12-28",
    ] {
        assert_eq!(
            series.split_at(&local(id)),
            Err(ScheduleError::NotAnOccurrence(local(id)))
        );
    }
    let one_off = schedule(
        "Europe/Madrid",
        "2026-12-03T13:00",
        "2026-12-03T14:00",
        None,
    );
    assert_eq!(
        one_off.split_at(&local("2026-12-03T13:00")),
        Err(ScheduleError::NotRecurring)
    );
}

#[test]
fn moving_a_series_keeps_its_exceptions_and_end() {
    let mut series = schedule(
        "Europe/Madrid",
        "2026-12-07T09:00",
        "2026-12-07T10:00",
        Some("FREQ=WEEKLY;UNTIL=20261228T080000Z"),
    );
    series.exdates.push(local("2026-12-14T09:00"));
    let later = series
        .moved_to(local("2026-12-07T16:30"), local("2026-12-07T18:00"))
        .unwrap();
    assert_eq!(later.exdates, [local("2026-12-14T16:30")]);
    assert_eq!(
        later.rrule.as_deref(),
        Some("FREQ=WEEKLY;UNTIL=20261228T153000Z")
    );
    assert_eq!(
        ids(&later),
        ["2026-12-07T16:30", "2026-12-21T16:30", "2026-12-28T16:30"]
    );
    let first = all(&later)[0];
    assert_eq!(first.end_ms - first.start_ms, 90 * 60 * 1000);
    // A BYDAY=MO series cannot move to a Tuesday without changing its rule.
    let mondays = Schedule {
        rrule: Some("FREQ=WEEKLY;BYDAY=MO".to_string()),
        exdates: Vec::new(),
        ..series.clone()
    };
    assert!(
        mondays
            .moved_to(local("2026-12-08T09:00"), local("2026-12-08T10:00"))
            .is_err()
    );
    assert!(
        series
            .moved_to(local("2026-12-07"), local("2026-12-08"))
            .is_err()
    );
}

// ---- Busy time and finding a time ----

#[test]
fn busy_intervals_merge_when_they_overlap_or_touch() {
    assert_eq!(
        merge_busy(vec![
            (50, 60),
            (10, 20),
            (20, 30),
            (15, 25),
            (70, 70),
            (90, 80),
            (59, 65)
        ]),
        [(10, 30), (50, 65)]
    );
    assert!(merge_busy(Vec::new()).is_empty());
}

fn person(zone: &str, busy: Vec<(i64, i64)>) -> Availability {
    Availability {
        zone: zone.to_string(),
        hours: WorkingHours::default(),
        busy,
    }
}

#[test]
fn find_slots_across_two_zones() {
    // Friday 4 December to Tuesday 8 December 2026; Madrid is UTC+1, New York UTC-5.
    let madrid = person(
        "Europe/Madrid",
        vec![(
            ms("2026-12-07T15:00:00+01:00"),
            ms("2026-12-07T16:00:00+01:00"),
        )],
    );
    let new_york = person("America/New_York", Vec::new());
    let slots = find_slots(
        &[madrid, new_york],
        ms("2026-12-04T00:00:00Z"),
        ms("2026-12-08T00:00:00Z"),
        HOUR_MS,
        30 * 60 * 1000,
        10,
    )
    .unwrap();
    let zone = parse_zone("Europe/Madrid").unwrap();
    let shown: Vec<String> = slots
        .iter()
        .map(|(start, _)| format_local(*start, zone))
        .collect();
    // Only 15:00–17:00 Madrid is inside both working days; the weekend is out; on Monday
    // Madrid is busy 15:00–16:00.
    assert_eq!(
        shown,
        [
            "2026-12-04T15:00:00+01:00",
            "2026-12-04T15:30:00+01:00",
            "2026-12-04T16:00:00+01:00",
            "2026-12-07T16:00:00+01:00",
        ]
    );
    assert!(slots.iter().all(|(start, end)| end - start == HOUR_MS));
    // `max` stops early.
    let first = find_slots(
        &[person("Europe/Madrid", Vec::new())],
        ms("2026-12-07T00:00:00Z"),
        ms("2026-12-08T00:00:00Z"),
        HOUR_MS,
        HOUR_MS,
        2,
    )
    .unwrap();
    assert_eq!(
        first,
        [
            (
                ms("2026-12-07T09:00:00+01:00"),
                ms("2026-12-07T10:00:00+01:00")
            ),
            (
                ms("2026-12-07T10:00:00+01:00"),
                ms("2026-12-07T11:00:00+01:00")
            )
        ]
    );
}

#[test]
fn working_hours_serialize_as_strings() {
    let hours = WorkingHours::default();
    let json = serde_json::to_string(&hours).unwrap();
    assert_eq!(
        json,
        r#"{"days":"MO,TU,WE,TH,FR","start":"09:00","end":"17:00"}"#
    );
    assert_eq!(serde_json::from_str::<WorkingHours>(&json).unwrap(), hours);
    let weekend: WorkingHours =
        serde_json::from_str(r#"{"days":"SA,SU","start":"10:00","end":"14:30"}"#).unwrap();
    assert_eq!(weekend.days, [Weekday::Sat, Weekday::Sun]);
    for bad in [
        r#"{"days":"MO,XX","start":"09:00","end":"17:00"}"#,
        r#"{"days":"MO","start":"9:00","end":"17:00"}"#,
        r#"{"days":"MO","start":"09:00","end":"24:00"}"#,
    ] {
        assert!(serde_json::from_str::<WorkingHours>(bad).is_err(), "{bad}");
    }
}

#[test]
fn find_slots_refuses_bad_queries() {
    let people = [person("Europe/Madrid", Vec::new())];
    let query = |from: i64, to: i64, length: i64, step: i64| {
        find_slots(&people, from, to, length, step, 10)
    };
    let refused = |result: Result<Vec<(i64, i64)>, ScheduleError>| {
        matches!(result, Err(ScheduleError::InvalidQuery(_)))
    };
    assert!(refused(query(10, 10, 1, 1)));
    assert!(refused(query(0, 400 * DAY_MS, 1, 1)));
    assert!(refused(query(i64::MIN, i64::MAX, 1, 1)));
    assert!(refused(query(0, DAY_MS, 0, 1)));
    assert!(refused(query(0, DAY_MS, 1, -5)));
    assert!(refused(find_slots(&[], 0, DAY_MS, 1, 1, 1)));
    assert!(matches!(
        find_slots(&[person("Nowhere", Vec::new())], 0, DAY_MS, 1, 1, 1),
        Err(ScheduleError::UnknownZone(_))
    ));
    // Near the ends of i64: no overflow, no panic.
    assert!(query(i64::MAX - DAY_MS, i64::MAX, HOUR_MS, HOUR_MS).is_ok());
    assert!(query(i64::MIN, i64::MIN + DAY_MS, HOUR_MS, HOUR_MS).is_ok());
}

// ---- Properties ----

/// A runner whose cases all come from `seed`, with no persisted failures.
fn runner(seed: u64, cases: u32) -> TestRunner {
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// A rule and the first days it produces in 2026, from which a series may start.
fn rules() -> Vec<(&'static str, Vec<NaiveDate>)> {
    let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
    let every_day: Vec<NaiveDate> = (0..300).map(|n| day(1, 1) + Duration::days(n)).collect();
    let sundays: Vec<NaiveDate> = (0..40).map(|n| day(1, 4) + Duration::weeks(n)).collect();
    vec![
        ("FREQ=DAILY", every_day.clone()),
        ("FREQ=DAILY;INTERVAL=3;COUNT=40", every_day.clone()),
        ("FREQ=WEEKLY;BYDAY=MO,WE,SU", sundays.clone()),
        ("FREQ=WEEKLY;INTERVAL=2;COUNT=25", every_day.clone()),
        (
            "FREQ=MONTHLY;BYMONTHDAY=31",
            vec![day(1, 31), day(3, 31), day(10, 31)],
        ),
        // Last Sundays: the days Europe changes its clocks.
        (
            "FREQ=MONTHLY;BYDAY=-1SU;COUNT=12",
            vec![day(3, 29), day(10, 25)],
        ),
        ("FREQ=YEARLY;UNTIL=20330101T000000Z", every_day.clone()),
        ("FREQ=DAILY;UNTIL=20270301T000000Z", every_day),
    ]
}

/// Valid recurring schedules in zones with DST changes, often at night, with exceptions.
fn series_strategy() -> impl Strategy<Value = Schedule> {
    let zone = prop::sample::select(vec![
        "Europe/Madrid",
        "America/New_York",
        "Australia/Sydney",
        "America/Santiago",
        "UTC",
    ]);
    let exceptions = prop::collection::vec(0..60usize, 0..4);
    (
        zone,
        prop::sample::select(rules()),
        any::<prop::sample::Index>(),
        0..96i64,
        1..600i64,
        any::<bool>(),
        exceptions,
    )
        .prop_filter_map(
            "a valid schedule",
            |(zone, (rule, days), pick, quarter, minutes, all_day, exceptions)| {
                let first = days[pick.index(days.len())];
                let (start, end, rule) = if all_day {
                    let rule = rule.replace("T000000Z", "");
                    let end = first + Duration::days(1 + minutes % 3);
                    (Local::Day(first), Local::Day(end), rule)
                } else {
                    let at = first.and_hms_opt(0, 0, 0).unwrap() + Duration::minutes(15 * quarter);
                    let end = at + Duration::minutes(minutes);
                    (Local::At(at), Local::At(end), rule.to_string())
                };
                let mut series = Schedule {
                    zone: zone.to_string(),
                    start,
                    end,
                    rrule: Some(rule),
                    exdates: Vec::new(),
                    overrides: BTreeMap::new(),
                };
                let occurrences = series
                    .expand(ms("2025-12-01T00:00:00Z"), ms("2028-01-01T00:00:00Z"), 2000)
                    .ok()?;
                for (n, index) in exceptions.iter().enumerate() {
                    let id = occurrences.get(*index)?.id;
                    if series.exdates.contains(&id) || series.overrides.contains_key(&id) {
                        continue;
                    }
                    if n % 2 == 0 {
                        series.exdates.push(id);
                    } else {
                        // Moved well away, earlier or later, so that it crosses range ends.
                        let by = if all_day { -20 } else { 40 };
                        let start = plus(id, Duration::days(by));
                        let end = plus(start, Duration::minutes(if all_day { 1440 } else { 30 }));
                        series.overrides.insert(id, Moved { start, end });
                    }
                }
                series.validate().ok()?;
                Some(series)
            },
        )
}

#[test]
fn expanding_composes_over_adjacent_ranges() {
    let base = ms("2026-01-01T00:00:00Z");
    let span = 500 * DAY_MS;
    runner(0x5c4e_d01e, 96)
        .run(&(series_strategy(), 0..span), |(series, cut)| {
            let (a, b, c) = (base, base + cut, base + span);
            let whole = series.expand(a, c, 5000).unwrap();
            let mut parts = series.expand(a, b, 5000).unwrap();
            for occurrence in series.expand(b, c, 5000).unwrap() {
                if !parts.contains(&occurrence) {
                    parts.push(occurrence);
                }
            }
            parts.sort_by_key(|o| (o.start_ms, o.id));
            prop_assert_eq!(parts, whole);
            Ok(())
        })
        .unwrap();
}

#[test]
fn splitting_keeps_every_occurrence() {
    runner(0x5711_7000, 64)
        .run(
            &(series_strategy(), any::<prop::sample::Index>()),
            |(series, pick)| {
                let ids: Vec<Local> = window(&series).iter().map(|o| o.id).collect();
                check_split(&series, ids[pick.index(ids.len())]);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn hostile_input_is_an_error_not_a_panic() {
    let text = prop_oneof![
        ".{0,40}",
        "[A-Z=;,0-9+-]{0,60}",
        "(FREQ=(DAILY|WEEKLY|MONTHLY|YEARLY|HOURLY);)?((INTERVAL|COUNT|BYDAY|BYMONTHDAY|WKST|UNTIL|BYSETPOS)=[-+0-9A-Z,TZ]{0,12};){0,4}",
    ];
    runner(0x0bad_1a9e, 2000)
        .run(
            &(text.clone(), text, any::<bool>()),
            |(rule, other, all_day)| {
                let (start, end) = if all_day {
                    ("2026-12-07", "2026-12-08")
                } else {
                    ("2026-12-07T09:00", "2026-12-07T10:00")
                };
                let series = schedule("Europe/Madrid", start, end, Some(&rule));
                if series.validate().is_ok() {
                    let from = ms("2026-12-01T00:00:00Z");
                    let _ = series.expand(from, from + 366 * DAY_MS, 1000);
                    let _ = series.split_at(&local(start));
                }
                let _ = other.parse::<Local>();
                let _ = parse_zone(&other);
                let _ = serde_json::from_str::<Schedule>(&other);
                let odd_zone = Schedule {
                    zone: other.clone(),
                    ..series
                };
                let _ = odd_zone.validate();
                Ok(())
            },
        )
        .unwrap();
}

/// Rules built from every supported part, with any start from 1900 to 2999, in zones with odd
/// offsets and gaps (Apia skipped a whole day in 2011; Lord Howe moves by half an hour;
/// Kathmandu is +05:45): whatever validates expands, knows its occurrences, splits into two
/// valid parts with the same occurrences, and moves.
#[test]
fn any_valid_rule_expands_splits_and_moves() {
    const DAYS: [&str; 7] = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
    let by_day = prop::collection::vec((-60i32..60, 0usize..7), 1..5).prop_map(|days| {
        let days: Vec<String> = days
            .iter()
            .map(|&(n, day)| match n {
                0 => DAYS[day].to_string(),
                n => format!("{n}{}", DAYS[day]),
            })
            .collect();
        format!("BYDAY={}", days.join(","))
    });
    let by_month_day = prop::collection::vec(-32i32..33, 1..4).prop_map(|days| {
        let days: Vec<String> = days.iter().map(i32::to_string).collect();
        format!("BYMONTHDAY={}", days.join(","))
    });
    let until = (1900i32..3100, 1u32..13, 1u32..29, any::<bool>()).prop_map(|(y, m, d, day)| {
        if day {
            format!("UNTIL={y:04}{m:02}{d:02}")
        } else {
            format!("UNTIL={y:04}{m:02}{d:02}T120000Z")
        }
    });
    let part = prop_oneof![
        (1u32..1001).prop_map(|n| format!("INTERVAL={n}")),
        (1u32..2000).prop_map(|n| format!("COUNT={n}")),
        by_day,
        by_month_day,
        (0usize..7).prop_map(|day| format!("WKST={}", DAYS[day])),
        until,
    ];
    let frequency = prop::sample::select(vec!["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]);
    let zone = prop::sample::select(vec![
        "Europe/Madrid",
        "America/Santiago",
        "Pacific/Apia",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Europe/Amsterdam",
    ]);
    let start = (
        1900i32..3000,
        1u32..13,
        1u32..29,
        0u32..24,
        prop::sample::select(vec![0u32, 15, 30, 45]),
    );
    let case = (
        frequency,
        prop::collection::vec(part, 0..4),
        zone,
        start,
        any::<bool>(),
        1i64..3000,
    );
    runner(0x0dd_2013, 1500)
        .run(
            &case,
            |(frequency, parts, zone, (y, m, d, h, minute), all_day, length)| {
                let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
                let (start, end) = if all_day {
                    let end = day + Duration::days(1 + length % 5);
                    (Local::Day(day), Local::Day(end))
                } else {
                    let at = day.and_hms_opt(h, minute, 0).unwrap();
                    (Local::At(at), Local::At(at + Duration::minutes(length)))
                };
                let mut rule = format!("FREQ={frequency}");
                for part in parts {
                    rule = format!("{rule};{part}");
                }
                let series = Schedule {
                    zone: zone.to_string(),
                    start,
                    end,
                    rrule: Some(rule),
                    exdates: Vec::new(),
                    overrides: BTreeMap::new(),
                };
                if series.validate().is_err() {
                    return Ok(());
                }
                let from = (i64::from(y) - 1970) * 365 * DAY_MS;
                let to = from + 3 * 366 * DAY_MS;
                let occurrences = series.expand(from, to, 100_000).unwrap();
                let Some(middle) = occurrences.get(occurrences.len() / 2) else {
                    return Ok(());
                };
                prop_assert!(series.has_occurrence(&middle.id).unwrap());
                let (before, after) = series.split_at(&middle.id).unwrap();
                after.validate().unwrap();
                let mut together = after.expand(from, to, 100_000).unwrap();
                if let Some(before) = before {
                    before.validate().unwrap();
                    together.extend(before.expand(from, to, 100_000).unwrap());
                }
                together.sort_by_key(|o| (o.start_ms, o.id));
                prop_assert_eq!(together, occurrences);
                let later = match (series.start, series.end) {
                    (Local::Day(_), _) => {
                        (plus(start, Duration::days(7)), plus(end, Duration::days(7)))
                    }
                    _ => (
                        plus(start, Duration::minutes(30)),
                        plus(end, Duration::minutes(30)),
                    ),
                };
                if let Ok(moved) = series.moved_to(later.0, later.1) {
                    prop_assert_eq!(moved.start, later.0);
                }
                Ok(())
            },
        )
        .unwrap();
}
