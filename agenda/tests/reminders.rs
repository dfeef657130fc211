//! Reminders: alerts before every occurrence, sent once by the scheduler pass whoever runs it
//! and however often, late within a grace period, never for what the user declined.

use agenda::AgendaError;
use agenda::events::{Attendee, NewEvent, Response};
use agenda::memory::TestEnv;
use agenda::schedule::Schedule;

mod support;
use support::*;

const MINUTE_MS: i64 = 60_000;
const GRACE_MS: i64 = 10 * MINUTE_MS;
const LOOKAHEAD_MS: i64 = 30_000;
/// 10:00 in Madrid (CEST, UTC+2) on Monday 1 June 2026.
const TEN_MADRID_MS: i64 = JUNE_1_MS + 8 * HOUR_MS;

/// Alice's weekly 10:00-11:00 (Madrid) meeting of three occurrences, inviting `attendees`.
async fn weekly_meeting(agenda: &TestAgenda, attendees: &[&str]) -> String {
    for name in ["alice", "nora"] {
        register(agenda, name, "Europe/Madrid").await;
    }
    let saved = agenda
        .create_event(
            "alice",
            NewEvent {
                title: "Planning".into(),
                description: String::new(),
                location: String::new(),
                schedule: Schedule {
                    zone: "Europe/Madrid".into(),
                    start: local("2026-06-01T10:00"),
                    end: local("2026-06-01T11:00"),
                    rrule: Some("FREQ=WEEKLY;COUNT=3".into()),
                    exdates: Vec::new(),
                    overrides: Default::default(),
                },
                attendees: attendees
                    .iter()
                    .map(|name| Attendee::User((*name).into()))
                    .collect(),
            },
        )
        .await
        .expect("created");
    deliver_all(agenda).await;
    saved.event.id
}

fn set_clock(agenda: &TestAgenda, at_ms: i64) {
    let env: &TestEnv = agenda.env();
    let now = agenda::Env::now_ms(env);
    assert!(at_ms >= now, "the test clock only moves forward");
    env.advance_ms(at_ms - now);
}

async fn remind(agenda: &TestAgenda) -> agenda::reminders::Reminded {
    let am = agenda
        .remind("am", GRACE_MS, LOOKAHEAD_MS)
        .await
        .expect("pass");
    let nz = agenda
        .remind("nz", GRACE_MS, LOOKAHEAD_MS)
        .await
        .expect("pass");
    agenda::reminders::Reminded {
        fired: am.fired + nz.fired,
        fired_late: am.fired_late + nz.fired_late,
        stale: am.stale + nz.stale,
        removed: am.removed + nz.removed,
        corrupt: am.corrupt + nz.corrupt,
        failed: am.failed + nz.failed,
        last_error: am.last_error.or(nz.last_error),
        next_due_ms: match (am.next_due_ms, nz.next_due_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    }
}

#[test]
fn an_alert_rings_once_at_its_time_before_every_occurrence() {
    run(async {
        let agenda = agenda();
        let id = weekly_meeting(&agenda, &[]).await;
        agenda.set_alerts("alice", &id, &[10]).await.expect("set");

        set_clock(&agenda, TEN_MADRID_MS - 10 * MINUTE_MS - LOOKAHEAD_MS - 1);
        let early = remind(&agenda).await;
        assert_eq!(early.fired, 0);
        assert_eq!(early.next_due_ms, None, "beyond the look-ahead");

        set_clock(&agenda, TEN_MADRID_MS - 10 * MINUTE_MS - 1_000);
        let before = remind(&agenda).await;
        assert_eq!(before.fired, 0, "one second early");
        assert_eq!(before.next_due_ms, Some(TEN_MADRID_MS - 10 * MINUTE_MS));

        set_clock(&agenda, TEN_MADRID_MS - 10 * MINUTE_MS);
        assert_eq!(remind(&agenda).await.fired, 1, "09:50 Madrid");
        let alerts = agenda.alerts("alice", &id).await.expect("alerts");
        assert_eq!(alerts.fired_count, 1);
        assert_eq!(alerts.fired[0].start_ms, TEN_MADRID_MS);
        assert_eq!(alerts.fired[0].due_ms, TEN_MADRID_MS - 10 * MINUTE_MS);
        assert_eq!(alerts.fired[0].title, "Planning");
        assert!(!alerts.fired[0].late);

        for _ in 0..3 {
            assert_eq!(
                remind(&agenda).await.fired,
                0,
                "sent once, whatever runs again"
            );
        }
        set_clock(&agenda, TEN_MADRID_MS + 7 * DAY_MS - 10 * MINUTE_MS);
        assert_eq!(remind(&agenda).await.fired, 1, "the next week's");
        set_clock(&agenda, TEN_MADRID_MS + 15 * DAY_MS);
        let late = remind(&agenda).await;
        assert_eq!(
            (late.fired, late.stale),
            (0, 1),
            "the third one is stale by now"
        );
        let alerts = agenda.alerts("alice", &id).await.expect("alerts");
        assert_eq!(alerts.fired_count, 2);
        assert!(
            alerts.fired.is_empty(),
            "moving past a stale alert sends nothing again: {:?}",
            alerts.fired
        );
    });
}

#[test]
fn a_late_alert_rings_within_the_grace_period_and_a_stale_one_is_dropped() {
    run(async {
        let agenda = agenda();
        let id = weekly_meeting(&agenda, &[]).await;
        agenda
            .set_alerts("alice", &id, &[5, 60])
            .await
            .expect("set");

        // No scheduler ran from 09:00 to 09:57: the 60-minute alert is stale, the 5-minute one
        // is late but within the grace period.
        set_clock(&agenda, TEN_MADRID_MS - 3 * MINUTE_MS);
        let pass = remind(&agenda).await;
        assert_eq!((pass.fired, pass.fired_late, pass.stale), (1, 1, 1));
        let alerts = agenda.alerts("alice", &id).await.expect("alerts");
        assert_eq!(alerts.fired.len(), 1);
        assert_eq!(alerts.fired[0].minutes_before, 5);
        assert!(alerts.fired[0].late);
        let again = remind(&agenda).await;
        assert_eq!((again.fired, again.stale), (0, 0), "each counted once");
    });
}

#[test]
fn an_attendee_is_reminded_of_what_they_did_not_decline_and_a_cancellation_removes_the_alerts() {
    run(async {
        let agenda = agenda();
        let id = weekly_meeting(&agenda, &["nora"]).await;
        agenda.set_alerts("nora", &id, &[10]).await.expect("set");
        let first = local("2026-06-01T10:00");
        agenda
            .rsvp("nora", &id, Response::Declined, Some(first))
            .await
            .expect("declined the first");

        set_clock(&agenda, TEN_MADRID_MS - 10 * MINUTE_MS);
        assert_eq!(remind(&agenda).await.fired, 0, "declined");
        set_clock(&agenda, TEN_MADRID_MS + 7 * DAY_MS - 10 * MINUTE_MS);
        assert_eq!(
            remind(&agenda).await.fired,
            1,
            "the second one she did not decline"
        );
        let alerts = agenda.alerts("nora", &id).await.expect("alerts");
        assert_eq!(alerts.fired[0].start_ms, TEN_MADRID_MS + 7 * DAY_MS);

        agenda
            .delete_event("alice", &id, agenda::events::Scope::All)
            .await
            .expect("cancelled");
        deliver_all(&agenda).await;
        assert_eq!(remind(&agenda).await.removed, 1);
        assert!(agenda.all_alerts("nora").await.expect("list").is_empty());
    });
}

#[test]
fn a_pass_whose_answer_was_lost_does_not_ring_twice() {
    run(async {
        let agenda = agenda();
        let id = weekly_meeting(&agenda, &[]).await;
        agenda.set_alerts("alice", &id, &[10]).await.expect("set");
        set_clock(&agenda, TEN_MADRID_MS - 10 * MINUTE_MS);
        // The transaction that sends the alert is applied, but its answer is lost: the
        // scheduler (or the next leader's) runs again.
        agenda.store().lose_answers(1);
        let lost = remind(&agenda).await;
        assert_eq!((lost.fired, lost.failed), (0, 1));
        assert_eq!(remind(&agenda).await.fired, 0, "it was sent");
        let alerts = agenda.alerts("alice", &id).await.expect("alerts");
        assert_eq!(alerts.fired_count, 1);
    });
}

#[test]
fn only_the_organizer_and_attendees_set_alerts_within_limits() {
    run(async {
        let agenda = agenda();
        let id = weekly_meeting(&agenda, &["nora"]).await;
        register(&agenda, "mallory", "Europe/Madrid").await;
        assert!(matches!(
            agenda.set_alerts("mallory", &id, &[10]).await,
            Err(AgendaError::NotFound(_))
        ));
        assert!(matches!(
            agenda.alerts("mallory", &id).await,
            Err(AgendaError::NotFound(_))
        ));
        assert!(matches!(
            agenda.set_alerts("alice", &id, &[1, 2, 3, 4, 5, 6]).await,
            Err(AgendaError::Invalid { .. })
        ));
        assert!(matches!(
            agenda.set_alerts("alice", &id, &[40_321]).await,
            Err(AgendaError::Invalid { .. })
        ));
        assert!(matches!(
            agenda.set_alerts("alice", "not-an-id", &[10]).await,
            Err(AgendaError::Invalid { .. })
        ));
        let set = agenda
            .set_alerts("nora", &id, &[60, 10, 10])
            .await
            .expect("set");
        assert_eq!(set.minutes_before, [10, 60]);
        agenda.set_alerts("nora", &id, &[]).await.expect("cleared");
        assert!(agenda.all_alerts("nora").await.expect("list").is_empty());
    });
}

#[test]
fn a_clock_stepped_back_after_a_sending_neither_fails_nor_rings_again() {
    run(async {
        let agenda = agenda();
        let id = weekly_meeting(&agenda, &[]).await;
        agenda.set_alerts("alice", &id, &[10]).await.expect("set");
        set_clock(&agenda, TEN_MADRID_MS - 10 * MINUTE_MS);
        assert_eq!(remind(&agenda).await.fired, 1);
        // The next leader's clock is two minutes behind the one that sent it.
        agenda.env().advance_ms(-2 * MINUTE_MS);
        let behind = remind(&agenda).await;
        assert_eq!((behind.fired, behind.failed), (0, 0), "{behind:?}");
        set_clock(&agenda, TEN_MADRID_MS + 7 * DAY_MS - 10 * MINUTE_MS);
        assert_eq!(remind(&agenda).await.fired, 1, "and the next one rings");
    });
}

#[test]
fn setting_the_same_alerts_again_keeps_one_that_is_due_but_not_sent() {
    run(async {
        let agenda = agenda();
        let id = weekly_meeting(&agenda, &[]).await;
        agenda.set_alerts("alice", &id, &[10]).await.expect("set");
        // Due at 09:50:00; the scheduler has not run yet when alice saves again at 09:50:01.
        set_clock(&agenda, TEN_MADRID_MS - 10 * MINUTE_MS + 1_000);
        agenda.set_alerts("alice", &id, &[10]).await.expect("same");
        assert_eq!(remind(&agenda).await.fired, 1, "still rings");
        // An alert added now does not ring for what was due before it was set.
        set_clock(&agenda, TEN_MADRID_MS - 4 * MINUTE_MS);
        agenda
            .set_alerts("alice", &id, &[5, 10])
            .await
            .expect("added");
        assert_eq!(
            remind(&agenda).await.fired,
            0,
            "09:55 passed before it was set"
        );
    });
}
