//! iCalendar: export, the feed and import, over `MemStore`. Each story is one promise of
//! `agenda::ical`.

use agenda::AgendaError;
use agenda::events::{Attendee, EventChange, NewEvent, Response, Scope};
use agenda::ical::read;
use agenda::schedule::{Moved, Schedule};
use proptest::prelude::*;

mod support;
use support::*;

fn schedule(zone: &str, start: &str, end: &str, rrule: Option<&str>, exdates: &[&str]) -> Schedule {
    Schedule {
        zone: zone.into(),
        start: local(start),
        end: local(end),
        rrule: rrule.map(str::to_owned),
        exdates: exdates.iter().map(|at| local(at)).collect(),
        overrides: Default::default(),
    }
}

fn event(title: &str, schedule: Schedule, attendees: &[&str]) -> NewEvent {
    NewEvent {
        title: title.into(),
        description: String::new(),
        location: String::new(),
        schedule,
        attendees: attendees
            .iter()
            .map(|user| Attendee::User((*user).into()))
            .collect(),
    }
}

/// The occurrences of a schedule over two years from 2026, as instants.
fn instants(schedule: &Schedule) -> Vec<(i64, i64)> {
    let from_ms = JUNE_1_MS - 200 * DAY_MS;
    schedule
        .expand(from_ms, from_ms + 730 * DAY_MS, 10_000)
        .expect("expands")
        .iter()
        .map(|occurrence| (occurrence.start_ms, occurrence.end_ms))
        .collect()
}

/// Exports `new` as alice, imports the text as `importer`, and returns both events' schedules.
async fn round_trip(new: NewEvent, importer_zone: &str) -> (Schedule, Schedule) {
    let agenda = agenda();
    register(&agenda, "alice", "Europe/Madrid").await;
    register(&agenda, "nora", importer_zone).await;
    let saved = agenda.create_event("alice", new).await.expect("created");
    let text = agenda
        .event_ics("alice", &saved.event.id)
        .await
        .expect("exported");
    let report = agenda.import_ics("nora", &text).await.expect("imported");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.created.len(), 1);
    assert_eq!(
        report.created[0].uid.as_deref(),
        Some(saved.event.id.as_str())
    );
    let copy = agenda
        .event("nora", &report.created[0].id)
        .await
        .expect("the copy");
    (saved.event.content.schedule, copy.content.schedule)
}

#[test]
fn a_weekly_series_in_madrid_keeps_its_wall_clock_across_daylight_saving() {
    run(async {
        // Thursdays 18:30 from 5 March to 23 April 2026: Madrid moves to summer time on 29 March.
        let series = schedule(
            "Europe/Madrid",
            "2026-03-05T18:30",
            "2026-03-05T19:45",
            Some("FREQ=WEEKLY;BYDAY=TH;COUNT=8"),
            &["2026-03-19T18:30"],
        );
        let (original, copy) = round_trip(event("Choir", series, &[]), "America/New_York").await;
        assert_eq!(copy, original);
        let occurrences = instants(&copy);
        assert_eq!(occurrences.len(), 7);
        assert_eq!(occurrences, instants(&original));
    });
}

#[test]
fn a_daily_series_in_new_york_keeps_its_wall_clock_across_the_fall_back() {
    run(async {
        let series = schedule(
            "America/New_York",
            "2026-10-28T09:00",
            "2026-10-28T09:30",
            Some("FREQ=DAILY;UNTIL=20261106T140000Z"),
            &["2026-11-01T09:00"],
        );
        let (original, copy) = round_trip(event("Standup", series, &[]), "Europe/Madrid").await;
        assert_eq!(copy, original);
        assert_eq!(instants(&copy), instants(&original));
        assert_eq!(instants(&copy).len(), 9);
    });
}

#[test]
fn an_all_day_yearly_series_stays_on_its_dates() {
    run(async {
        let series = schedule(
            "Europe/Madrid",
            "2026-07-14",
            "2026-07-16",
            Some("FREQ=YEARLY;COUNT=5"),
            &["2027-07-14"],
        );
        let (original, copy) = round_trip(event("Holiday", series, &[]), "UTC").await;
        // Dates are floating: the copy is read in the importer's zone, on the same dates.
        assert_eq!(copy.zone, "UTC");
        assert_eq!((copy.start, copy.end), (original.start, original.end));
        assert_eq!(
            (&copy.rrule, &copy.exdates),
            (&original.rrule, &original.exdates)
        );
    });
}

#[test]
fn a_moved_and_retitled_occurrence_comes_back_as_an_exception() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "Europe/Madrid").await;
        let mut series = schedule(
            "Europe/Madrid",
            "2026-06-01T10:00",
            "2026-06-01T11:00",
            Some("FREQ=WEEKLY;COUNT=4"),
            &[],
        );
        series.overrides.insert(
            local("2026-06-08T10:00"),
            Moved {
                start: local("2026-06-09T15:00"),
                end: local("2026-06-09T16:30"),
            },
        );
        let mut new = event("Planning; the big one, really", series, &[]);
        new.description = format!(
            "Line one\nLine two, with \\ and ;\n{}",
            "long ñ ".repeat(40)
        );
        let saved = agenda.create_event("alice", new).await.expect("created");
        let change = EventChange {
            scope: Scope::This(local("2026-06-15T10:00")),
            title: Some("Planning (short)".into()),
            ..EventChange::default()
        };
        agenda
            .update_event("alice", &saved.event.id, change)
            .await
            .expect("retitled");
        let original = agenda.event("alice", &saved.event.id).await.expect("read");
        let text = agenda
            .event_ics("alice", &saved.event.id)
            .await
            .expect("exported");
        assert_eq!(text.matches("BEGIN:VEVENT").count(), 3, "{text}");
        assert!(
            text.contains("RECURRENCE-ID;TZID=Europe/Madrid:20260608T100000"),
            "{text}"
        );
        // Lines end in CRLF and are folded at 75 octets (RFC 5545 3.1).
        assert!(text.ends_with("END:VCALENDAR\r\n"));
        assert!(text.split("\r\n").all(|line| line.len() <= 75), "{text}");
        let report = agenda.import_ics("alice", &text).await.expect("imported");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let copy = agenda
            .event("alice", &report.created[0].id)
            .await
            .expect("the copy");
        assert_eq!(copy.content.schedule, original.content.schedule);
        assert_eq!(copy.content.details, original.content.details);
        assert_eq!(copy.content.title, original.content.title);
        assert_eq!(copy.content.description, original.content.description);
    });
}

#[test]
fn the_organizer_sees_answers_and_an_attendee_their_own() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "Europe/Madrid").await;
        register(&agenda, "nora", "Europe/Madrid").await;
        register(&agenda, "bob", "Europe/Madrid").await;
        let series = schedule(
            "Europe/Madrid",
            "2026-06-01T10:00",
            "2026-06-01T11:00",
            None,
            &[],
        );
        let saved = agenda
            .create_event("alice", event("Review", series, &["nora", "bob"]))
            .await
            .expect("created");
        let id = saved.event.id;
        deliver_all(&agenda).await;
        agenda
            .rsvp("nora", &id, Response::Accepted, None)
            .await
            .expect("answered");
        deliver_all(&agenda).await;
        let organizer = agenda.event_ics("alice", &id).await.expect("exported");
        assert!(organizer.contains("ORGANIZER;CN=alice:mailto:alice@agenda.invalid"));
        assert!(
            organizer.contains("CN=nora;PARTSTAT=ACCEPTED"),
            "{organizer}"
        );
        assert!(
            organizer.contains("CN=bob;PARTSTAT=NEEDS-ACTION"),
            "{organizer}"
        );
        assert!(organizer.contains(&format!("UID:{id}")));
        assert!(organizer.contains("DTSTART;TZID=Europe/Madrid:20260601T100000"));
        let attendee = agenda.event_ics("nora", &id).await.expect("exported");
        assert!(attendee.contains("CN=nora;PARTSTAT=ACCEPTED"), "{attendee}");
        assert!(!attendee.contains("CN=bob;PARTSTAT"), "{attendee}");
        // A stranger learns nothing, as for the event itself.
        register(&agenda, "zed", "UTC").await;
        assert!(matches!(
            agenda.event_ics("zed", &id).await,
            Err(AgendaError::NotFound(_))
        ));
    });
}

#[test]
fn the_feed_answers_its_secret_only_and_rotation_retires_the_old_one() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "Europe/Madrid").await;
        register(&agenda, "nora", "Europe/Madrid").await;
        let at = |day: &str| {
            schedule(
                "Europe/Madrid",
                &format!("2026-06-{day}T10:00"),
                &format!("2026-06-{day}T11:00"),
                None,
                &[],
            )
        };
        let own = agenda
            .create_event("nora", event("Own", at("01"), &[]))
            .await
            .expect("created");
        let accepted = agenda
            .create_event("alice", event("Accepted", at("02"), &["nora"]))
            .await
            .expect("created");
        let declined = agenda
            .create_event("alice", event("Declined", at("03"), &["nora"]))
            .await
            .expect("created");
        deliver_all(&agenda).await;
        agenda
            .rsvp("nora", &accepted.event.id, Response::Accepted, None)
            .await
            .expect("answered");
        agenda
            .rsvp("nora", &declined.event.id, Response::Declined, None)
            .await
            .expect("answered");

        let first = agenda.rotate_feed("nora").await.expect("a feed");
        let secret = |url: &str| {
            url.trim_start_matches("/v1/feeds/nora/")
                .trim_end_matches(".ics")
                .to_owned()
        };
        let text = agenda
            .feed("nora", &secret(&first.url))
            .await
            .expect("the feed");
        assert!(text.contains(&format!("UID:{}", own.event.id)));
        assert!(text.contains(&format!("UID:{}", accepted.event.id)));
        assert!(!text.contains(&format!("UID:{}", declined.event.id)));
        assert!(text.contains("CN=nora;PARTSTAT=ACCEPTED"), "{text}");
        assert!(text.contains("X-WR-CALNAME:Agenda: nora"));

        let second = agenda.rotate_feed("nora").await.expect("rotated");
        assert_ne!(first, second);
        for (user, wrong) in [
            ("nora", secret(&first.url)),
            ("nora", "0".repeat(64)),
            ("nora", "short".into()),
            ("alice", secret(&second.url)),
            ("No-Such", secret(&second.url)),
        ] {
            assert!(
                matches!(
                    agenda.feed(user, &wrong).await,
                    Err(AgendaError::NotFound(_))
                ),
                "{user} {wrong}"
            );
        }
        agenda
            .feed("nora", &secret(&second.url))
            .await
            .expect("the new secret works");
        // A new password turns the feed off, as it closes every session.
        let change = agenda::users::ProfileChange {
            password: Some("a brand new password".into()),
            current_password: Some("nora password".into()),
            ..Default::default()
        };
        agenda
            .update_profile("nora", change)
            .await
            .expect("changed");
        assert!(matches!(
            agenda.feed("nora", &secret(&second.url)).await,
            Err(AgendaError::NotFound(_))
        ));
        let third = agenda.rotate_feed("nora").await.expect("a feed again");
        agenda
            .feed("nora", &secret(&third.url))
            .await
            .expect("works");
        agenda.delete_feed("nora").await.expect("turned off");
        assert!(matches!(
            agenda.feed("nora", &secret(&third.url)).await,
            Err(AgendaError::NotFound(_))
        ));
    });
}

/// A calendar as other applications write it: a VTIMEZONE with a private TZID, DURATION,
/// a cancelled exception, a floating event, and refused VEVENTs between good ones.
const FOREIGN: &str = "BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN\r
BEGIN:VTIMEZONE\r
TZID:W. Europe Standard Time\r
X-LIC-LOCATION:Europe/Berlin\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:one@example.com\r
SUMMARY:Yoga\\, with friends\r
DTSTART;TZID=W. Europe Standard Time:20260302T073000\r
DURATION:PT1H\r
RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:one@example.com\r
RECURRENCE-ID;TZID=W. Europe Standard Time:20260304T073000\r
STATUS:CANCELLED\r
DTSTART;TZID=W. Europe Standard Time:20260304T073000\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:one@example.com\r
RECURRENCE-ID;TZID=W. Europe Standard Time:20260309T073000\r
DTSTART;TZID=W. Europe Standard Time:20260309T080000\r
SUMMARY:Yoga, later\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:two@example.com\r
SUMMARY:Somewhere else\r
DTSTART;TZID=Mars/Olympus_Mons:20260302T073000\r
DTEND;TZID=Mars/Olympus_Mons:20260302T083000\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:three@example.com\r
SUMMARY:Last Friday\r
DTSTART:20260327T160000Z\r
DTEND:20260327T170000Z\r
RRULE:FREQ=MONTHLY;BYDAY=FR;BYSETPOS=-1\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:four@example.com\r
SUMMARY:Floating lunch\r
DTSTART:20260610T130000\r
DTEND:20260610T140000\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:five@example.com\r
SUMMARY:No length\r
DTSTART:20260610T130000\r
END:VEVENT\r
END:VCALENDAR\r
";

#[test]
fn a_foreign_calendar_imports_what_it_can_and_says_why_not_the_rest() {
    run(async {
        let agenda = agenda();
        register(&agenda, "nora", "America/New_York").await;
        let report = agenda.import_ics("nora", FOREIGN).await.expect("imported");
        let created: Vec<_> = report.created.iter().map(|c| c.index).collect();
        assert_eq!(created, [0, 5]);
        let errors: Vec<_> = report
            .errors
            .iter()
            .map(|e| (e.index, e.message.as_str()))
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].1.contains("unknown time zone"), "{errors:?}");
        assert!(errors[1].1.contains("BYSETPOS"), "{errors:?}");
        assert!(errors[2].1.contains("DTEND"), "{errors:?}");

        // The same file again (a retry after an unknown outcome): the same events, no copies.
        let events_before = agenda
            .agenda("nora", 1_767_225_600_000, 1_798_761_600_000)
            .await;
        let again = agenda.import_ics("nora", FOREIGN).await.expect("again");
        assert_eq!(again.created, report.created);
        let events_after = agenda
            .agenda("nora", 1_767_225_600_000, 1_798_761_600_000)
            .await;
        assert_eq!(events_before, events_after);

        let yoga = agenda
            .event("nora", &report.created[0].id)
            .await
            .expect("yoga");
        assert_eq!(yoga.content.title, "Yoga, with friends");
        // The exception without an end keeps the series' hour, and its own title.
        let later = local("2026-03-09T07:30");
        let moved = &yoga.content.schedule.overrides[&later];
        assert_eq!(
            (moved.start, moved.end),
            (local("2026-03-09T08:00"), local("2026-03-09T09:00"))
        );
        assert_eq!(
            yoga.content.details[&later].title.as_deref(),
            Some("Yoga, later")
        );
        let yoga = &yoga.content.schedule;
        assert_eq!(yoga.zone, "Europe/Berlin");
        assert_eq!(yoga.end, local("2026-03-02T08:30"));
        assert_eq!(yoga.exdates, [local("2026-03-04T07:30")]);
        let lunch = agenda
            .event("nora", &report.created[1].id)
            .await
            .expect("lunch");
        assert_eq!(lunch.content.schedule.zone, "America/New_York");
    });
}

#[test]
fn bare_line_feeds_and_a_byte_order_mark_are_read_too() {
    let text = format!("\u{feff}{}", FOREIGN.replace("\r\n", "\n"));
    let results = read::read(&text, "UTC").expect("parses");
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 2);
    let yoga = results[0].as_ref().expect("yoga");
    assert_eq!(yoga.event.title, "Yoga, with friends");
    assert_eq!(yoga.event.schedule.exdates.len(), 1);
}

#[test]
fn malformed_calendars_are_refused_whole() {
    for text in [
        "",
        "hello",
        "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n",
        "BEGIN:VEVENT\r\nEND:VTODO\r\n",
    ] {
        assert!(read::read(text, "UTC").is_err(), "{text:?}");
    }
    // The parser recurses per nested component: a text of BEGIN lines must not overflow the stack.
    let deep = "BEGIN:VCALENDAR\r\n".repeat(25_000);
    assert!(read::read(&deep, "UTC").is_err());
    // Nor a nesting the check would not see: a value ended by a bare LF once ran on to the next
    // CRLF, hiding each END from the parser (a stack overflow from a 512 KiB import).
    let hidden = format!(
        "BEGIN:VCALENDAR\r\n{}",
        "BEGIN:A\r\nX:\nEND:A\r\n".repeat(27_000)
    );
    assert!(read::read(&hidden, "UTC").is_err());
    // And a text of bare LFs only parses line by line.
    let bare = format!(
        "BEGIN:VCALENDAR\n{}END:VCALENDAR\n",
        "X-A:b\n".repeat(80_000)
    );
    assert!(read::read(&bare, "UTC").is_err(), "no VEVENT");
    let huge = "X".repeat(read::IMPORT_BYTES_MAX + 1);
    assert!(read::read(&huge, "UTC").is_err());
    let many = format!(
        "BEGIN:VCALENDAR\r\n{}END:VCALENDAR\r\n",
        "BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20260601\r\nEND:VEVENT\r\n"
            .repeat(read::IMPORT_EVENTS_MAX + 1)
    );
    assert!(read::read(&many, "UTC").is_err());
}

/// One VEVENT's refusal, by its body.
fn refusal(body: &str) -> String {
    let text = format!("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n{body}END:VEVENT\r\nEND:VCALENDAR\r\n");
    match read::read(&text, "UTC").expect("parses").remove(0) {
        Ok(imported) => panic!("accepted: {imported:?}"),
        Err(refused) => refused.error.to_string(),
    }
}

#[test]
fn bad_vevents_are_refused_with_a_reason() {
    let cases = [
        ("SUMMARY:x\r\n", "DTSTART is missing"),
        ("DTSTART:2026060\r\n", "DTSTART"),
        (
            "DTSTART:20261301T100000\r\nDTEND:20261301T110000\r\n",
            "DTSTART",
        ),
        (
            "DTSTART:20260601T100000\r\nDTEND:20260601T090000\r\n",
            "schedule",
        ),
        (
            "DTSTART:20260601T100000\r\nDTEND;VALUE=DATE:20260602\r\n",
            "mixed",
        ),
        ("DTSTART:20260601T100000\r\nDURATION:-PT1H\r\n", "DURATION"),
        ("DTSTART:20260601T100000\r\nDURATION:PT\r\n", "DURATION"),
        (
            "DTSTART:20260601T100000\r\nDURATION:P99999999999999W\r\n",
            "DURATION",
        ),
        (
            "DTSTART:20260601T100000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=HOURLY\r\n",
            "HOURLY",
        ),
        (
            "DTSTART:20260601T100000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=DAILY;UNTIL=20260610\r\n",
            "UNTIL",
        ),
        (
            "DTSTART:20260601T100000Z\r\nDURATION:PT1H\r\nRDATE:20260605T100000Z\r\n",
            "RDATE",
        ),
        (
            "DTSTART;TZID=Nowhere:20260601T100000\r\nDURATION:PT1H\r\n",
            "Nowhere",
        ),
    ];
    for (body, expected) in cases {
        let message = refusal(body);
        assert!(message.contains(expected), "{body:?}: {message}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the text, reading it answers (an error or events), never panics.
    #[test]
    fn reading_never_panics(lines in proptest::collection::vec(
        prop_oneof![
            Just("BEGIN:VCALENDAR".to_owned()),
            Just("END:VCALENDAR".to_owned()),
            Just("BEGIN:VEVENT".to_owned()),
            Just("END:VEVENT".to_owned()),
            Just("DTSTART;TZID=Europe/Madrid:20260601T100000".to_owned()),
            Just("DTSTART;VALUE=DATE:20260601".to_owned()),
            Just("RECURRENCE-ID:20260608T100000".to_owned()),
            Just("UID:x".to_owned()),
            "[A-Z;=:,/\\\\ -]{0,12}:[0-9TZP;=A-Z,-]{0,20}",
            ".{0,30}",
        ],
        0..24,
    )) {
        let text = lines.join("\r\n");
        let _ = read::read(&text, "Europe/Madrid");
    }
}
