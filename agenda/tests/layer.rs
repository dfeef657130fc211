//! The agenda layer over a store that applies every transaction through the real key-value
//! state machine and refuses any that spans shards (`MemStore`): each story is one promise of the
//! layer, read top to bottom.

use agenda::events::{Attendee, EventChange, NewEvent, Response, Scope};
use agenda::groups::Role;
use agenda::schedule::Schedule;
use agenda::users::{ProfileChange, Registration};
use agenda::{AgendaError, Config, Tx};

mod support;
use support::*;

fn weekly(start: &str, end: &str, count: u32) -> Schedule {
    Schedule {
        zone: "Europe/Madrid".into(),
        start: local(start),
        end: local(end),
        rrule: Some(format!("FREQ=WEEKLY;COUNT={count}")),
        exdates: Vec::new(),
        overrides: Default::default(),
    }
}

fn meeting(schedule: Schedule, attendees: &[&str]) -> NewEvent {
    NewEvent {
        title: "Planning".into(),
        description: String::new(),
        location: "Room 2".into(),
        schedule,
        attendees: attendees
            .iter()
            .map(|name| match name.strip_prefix("group:") {
                Some(group) => Attendee::Group(group.into()),
                None => Attendee::User((*name).into()),
            })
            .collect(),
    }
}

/// Registers `users` (alice among them) in `zone`; alice creates a weekly 10:00-11:00 meeting
/// (Madrid time) of `count` occurrences inviting `attendees`. Returns its id.
async fn alice_invites(
    agenda: &TestAgenda,
    users: &[&str],
    zone: &str,
    count: u32,
    attendees: &[&str],
) -> String {
    for name in users {
        register(agenda, name, zone).await;
    }
    let schedule = weekly("2026-06-01T10:00", "2026-06-01T11:00", count);
    let saved = agenda
        .create_event("alice", meeting(schedule, attendees))
        .await;
    saved.expect("the meeting is created").event.id
}

fn outbox_is_empty(agenda: &TestAgenda) -> bool {
    !agenda
        .store()
        .dump()
        .iter()
        .any(|(key, _)| key.windows(4).any(|w| w == b"/!o/"))
}

#[test]
fn a_user_registers_logs_in_and_out() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "Europe/Madrid").await;
        let session = agenda.login("alice", "alice password").await.unwrap();
        assert_eq!(session.token.len(), "alice.".len() + 64);
        assert_eq!(agenda.authenticate(&session.token).await.unwrap(), "alice");
        // Only the token's digest is stored: no stored value contains the token's secret.
        let secret = session.token.split_once('.').unwrap().1.to_owned();
        let stored = agenda.store().dump();
        assert!(!stored.iter().any(|(key, value)| {
            String::from_utf8_lossy(key).contains(&secret)
                || String::from_utf8_lossy(value).contains(&secret)
        }));
        // Nor the password.
        assert!(
            !stored
                .iter()
                .any(|(_, value)| String::from_utf8_lossy(value).contains("alice password"))
        );

        agenda.logout(&session.token).await.unwrap();
        assert_eq!(
            agenda.authenticate(&session.token).await,
            Err(AgendaError::Unauthenticated("invalid or expired session"))
        );
    });
}

#[test]
fn registration_and_login_refuse_what_they_must() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "UTC").await;
        let again = agenda
            .register(Registration {
                name: "alice".into(),
                password: "another password".into(),
                display_name: None,
                zone: None,
                working_hours: None,
            })
            .await;
        assert!(matches!(again, Err(AgendaError::AlreadyExists(_))));
        for (name, password, zone) in [
            ("Al", "long enough", "UTC"),
            ("al/ce", "long enough", "UTC"),
            ("bob", "short", "UTC"),
            ("bob", "long enough", "Mars/Olympus"),
        ] {
            let refused = agenda
                .register(Registration {
                    name: name.into(),
                    password: password.into(),
                    display_name: None,
                    zone: Some(zone.into()),
                    working_hours: None,
                })
                .await;
            assert!(
                matches!(refused, Err(AgendaError::Invalid { .. })),
                "{name} {password} {zone}"
            );
        }
        assert!(matches!(
            agenda.login("alice", "wrong password").await,
            Err(AgendaError::Unauthenticated(_))
        ));
        assert!(matches!(
            agenda.login("nobody", "alice password").await,
            Err(AgendaError::Unauthenticated(_))
        ));
        for forged in [
            "",
            "alice",
            "alice.",
            "alice.zz",
            &format!("alice.{}", "0".repeat(64)),
        ] {
            assert!(
                matches!(
                    agenda.authenticate(forged).await,
                    Err(AgendaError::Unauthenticated(_))
                ),
                "{forged}"
            );
        }
    });
}

#[test]
fn a_session_expires_and_an_expired_one_is_cleaned_up_at_the_next_login() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "UTC").await;
        let old = agenda.login("alice", "alice password").await.unwrap();
        agenda.env().advance_ms(Config::for_tests().session_ttl_ms);
        assert!(agenda.authenticate(&old.token).await.is_err());
        let sessions = |agenda: &TestAgenda| {
            agenda
                .store()
                .dump()
                .iter()
                .filter(|(key, _)| key.starts_with(b"us/alice/session/"))
                .count()
        };
        assert_eq!(sessions(&agenda), 1);
        let new = agenda.login("alice", "alice password").await.unwrap();
        assert_eq!(sessions(&agenda), 1, "the expired session was removed");
        assert_eq!(agenda.authenticate(&new.token).await.unwrap(), "alice");
    });
}

#[test]
fn a_profile_changes_and_a_new_password_works() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "UTC").await;
        let session = agenda.login("alice", "alice password").await.unwrap();
        let change = |current: &str| ProfileChange {
            display_name: Some("Alice A.".into()),
            zone: Some("America/New_York".into()),
            working_hours: None,
            password: Some("a new password".into()),
            current_password: Some(current.into()),
        };
        // A session alone does not change the password: the current one is asked.
        let refused = agenda
            .update_profile("alice", change("a guess at it"))
            .await;
        assert!(matches!(refused, Err(AgendaError::Unauthenticated(_))));
        let changed = agenda
            .update_profile("alice", change("alice password"))
            .await
            .unwrap();
        // Every session closed with the old password.
        assert!(agenda.authenticate(&session.token).await.is_err());
        assert_eq!(changed.zone, "America/New_York");
        assert_eq!(
            agenda.profile("alice").await.unwrap().display_name,
            "Alice A."
        );
        assert!(agenda.login("alice", "alice password").await.is_err());
        assert!(agenda.login("alice", "a new password").await.is_ok());
    });
}

#[test]
fn groups_have_one_owner_admins_add_members_and_members_leave() {
    run(async {
        let agenda = agenda();
        for name in ["alice", "bob", "carol", "dave"] {
            register(&agenda, name, "UTC").await;
        }
        agenda
            .create_group("alice", "team", "The team")
            .await
            .unwrap();
        assert!(matches!(
            agenda.create_group("bob", "team", "Mine").await,
            Err(AgendaError::AlreadyExists(_))
        ));
        agenda
            .add_member("alice", "team", "bob", Role::Admin)
            .await
            .unwrap();
        agenda
            .add_member("bob", "team", "carol", Role::Member)
            .await
            .unwrap();
        // An admin makes no admins; a member adds nobody; nobody makes a second owner.
        assert!(matches!(
            agenda.add_member("bob", "team", "dave", Role::Admin).await,
            Err(AgendaError::Forbidden(_))
        ));
        assert!(matches!(
            agenda
                .add_member("carol", "team", "dave", Role::Member)
                .await,
            Err(AgendaError::Forbidden(_))
        ));
        assert!(matches!(
            agenda
                .add_member("alice", "team", "dave", Role::Owner)
                .await,
            Err(AgendaError::Invalid { .. })
        ));
        // A non-member learns nothing of the group.
        assert!(matches!(
            agenda.group("dave", "team").await,
            Err(AgendaError::NotFound(_))
        ));
        let view = agenda.group("carol", "team").await.unwrap();
        assert_eq!(
            view.members,
            [
                ("alice".to_owned(), Role::Owner),
                ("bob".to_owned(), Role::Admin),
                ("carol".to_owned(), Role::Member)
            ]
        );
        assert_eq!(agenda.my_groups("carol").await.unwrap()[0].id, "team");
        // An admin may not remove the owner or another admin; a member leaves; the owner stays.
        assert!(matches!(
            agenda.remove_member("bob", "team", "alice").await,
            Err(AgendaError::Forbidden(_))
        ));
        agenda
            .remove_member("carol", "team", "carol")
            .await
            .unwrap();
        assert!(agenda.my_groups("carol").await.unwrap().is_empty());
        assert!(matches!(
            agenda.remove_member("alice", "team", "alice").await,
            Err(AgendaError::Forbidden(_))
        ));
        // Members of unknown users are refused.
        assert!(matches!(
            agenda
                .add_member("alice", "team", "nobody", Role::Member)
                .await,
            Err(AgendaError::NotFound(_))
        ));
    });
}

#[test]
fn an_invitation_crosses_shards_through_the_outbox_and_lands_once() {
    run(async {
        let agenda = agenda();
        // alice (events a-m) invites nora and zed (events n-z) and bob (a-m, the same shard).
        for name in ["alice", "bob", "nora", "zed"] {
            register(&agenda, name, "Europe/Madrid").await;
        }
        agenda.create_group("alice", "team", "Team").await.unwrap();
        agenda
            .add_member("alice", "team", "zed", Role::Member)
            .await
            .unwrap();
        let saved = agenda
            .create_event(
                "alice",
                meeting(
                    weekly("2026-06-01T10:00", "2026-06-01T11:00", 4),
                    &["nora", "bob", "group:team"],
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            saved.event.invited,
            ["bob", "nora", "zed"],
            "the group expanded, the owner left out"
        );
        assert!(agenda.invitations("nora", false).await.unwrap().is_empty());
        deliver_all(&agenda).await;
        assert!(outbox_is_empty(&agenda));
        for name in ["bob", "nora", "zed"] {
            let invitations = agenda.invitations(name, true).await.unwrap();
            assert_eq!(invitations.len(), 1, "{name}");
            assert_eq!(invitations[0].copy.event_id, saved.event.id);
            let agenda_entries = agenda
                .agenda(name, JUNE_1_MS, JUNE_1_MS + 7 * DAY_MS)
                .await
                .unwrap();
            assert_eq!(agenda_entries.len(), 1, "{name} sees the first occurrence");
            assert_eq!(agenda_entries[0].start, "2026-06-01T10:00:00+02:00");
            assert!(!agenda_entries[0].organizer);
        }
        // Delivering again changes nothing.
        let before = agenda.store().dump();
        deliver_all(&agenda).await;
        assert_eq!(agenda.store().dump(), before);
    });
}

#[test]
fn a_delivery_whose_answers_are_lost_is_repeated_and_still_lands_once() {
    run(async {
        let agenda = agenda();
        for name in ["alice", "nora"] {
            register(&agenda, name, "UTC").await;
        }
        let saved = agenda
            .create_event(
                "alice",
                meeting(weekly("2026-06-01T10:00", "2026-06-01T11:00", 2), &["nora"]),
            )
            .await
            .unwrap();
        // The copy into nora's shard is applied but its answer lost, then the removal's too:
        // the leader crashed twice midway.
        agenda.store().lose_answers(1);
        assert_eq!(agenda.deliver("am", 100).await.unwrap().failed, 1);
        agenda.store().lose_answers(2);
        let _ = agenda.deliver("am", 100).await;
        deliver_all(&agenda).await;
        assert!(outbox_is_empty(&agenda));
        let invitations = agenda.invitations("nora", false).await.unwrap();
        assert_eq!(invitations.len(), 1);
        assert_eq!(invitations[0].copy.sequence, saved.event.sequence);
    });
}

#[test]
fn an_answer_travels_back_and_a_change_of_time_asks_again() {
    run(async {
        let agenda = agenda();
        let id = alice_invites(
            &agenda,
            &["alice", "nora", "bob"],
            "UTC",
            4,
            &["nora", "bob"],
        )
        .await;
        deliver_all(&agenda).await;
        agenda
            .rsvp("nora", &id, Response::Accepted, None)
            .await
            .unwrap();
        agenda
            .rsvp(
                "bob",
                &id,
                Response::Declined,
                Some(local("2026-06-08T10:00")),
            )
            .await
            .unwrap();
        deliver_all(&agenda).await;
        let tally = agenda.tally("alice", &id).await.unwrap();
        assert_eq!(tally.attendees["nora"].0, Response::Accepted);
        assert_eq!(
            tally.attendees["bob"].1[&local("2026-06-08T10:00")],
            Response::Declined
        );
        assert_eq!(tally.counts[&Response::Accepted], 1);
        // Only the organizer sees the tally; an attendee cannot change the event.
        assert!(matches!(
            agenda.tally("nora", &id).await,
            Err(AgendaError::Forbidden(_))
        ));
        assert!(matches!(
            agenda
                .update_event("nora", &id, EventChange::default())
                .await,
            Err(AgendaError::Forbidden(_))
        ));

        // A new title keeps the answers; a new time asks again.
        let renamed = EventChange {
            title: Some("Planning (2)".into()),
            ..EventChange::default()
        };
        agenda.update_event("alice", &id, renamed).await.unwrap();
        deliver_all(&agenda).await;
        assert_eq!(
            agenda.invitations("nora", false).await.unwrap()[0].response,
            Response::Accepted
        );
        assert_eq!(
            agenda.tally("alice", &id).await.unwrap().attendees["nora"].0,
            Response::Accepted
        );
        let moved = EventChange {
            start: Some(local("2026-06-01T12:00")),
            end: Some(local("2026-06-01T13:00")),
            ..EventChange::default()
        };
        let saved = agenda.update_event("alice", &id, moved).await.unwrap();
        assert_eq!(saved.event.asked_sequence, saved.event.sequence);
        deliver_all(&agenda).await;
        let invitation = &agenda.invitations("nora", false).await.unwrap()[0];
        assert_eq!(invitation.response, Response::NeedsAction);
        assert_eq!(invitation.copy.content.title, "Planning (2)");
        assert_eq!(
            agenda.tally("alice", &id).await.unwrap().attendees["nora"].0,
            Response::NeedsAction
        );
    });
}

#[test]
fn a_cancel_removes_the_invitation_everywhere_and_a_late_copy_cannot_bring_it_back() {
    run(async {
        let agenda = agenda();
        let id = alice_invites(&agenda, &["alice", "nora"], "UTC", 4, &["nora"]).await;
        // The first copy is still in the outbox when the event is deleted: the cancellation
        // replaces it there (same key), so nora never sees the event.
        agenda.delete_event("alice", &id, Scope::All).await.unwrap();
        deliver_all(&agenda).await;
        assert!(agenda.invitations("nora", false).await.unwrap().is_empty());
        assert!(
            agenda
                .agenda("nora", JUNE_1_MS, JUNE_1_MS + 30 * DAY_MS)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            agenda.event("alice", &id).await,
            Err(AgendaError::NotFound(_))
        ));
        assert!(matches!(
            agenda.rsvp("nora", &id, Response::Accepted, None).await,
            Err(AgendaError::NotFound(_))
        ));
    });
}

#[test]
fn removing_an_attendee_cancels_their_invitation_only() {
    run(async {
        let agenda = agenda();
        let id = alice_invites(
            &agenda,
            &["alice", "nora", "bob"],
            "UTC",
            4,
            &["nora", "bob"],
        )
        .await;
        deliver_all(&agenda).await;
        let change = EventChange {
            attendees: Some(vec![Attendee::User("bob".into())]),
            ..EventChange::default()
        };
        agenda.update_event("alice", &id, change).await.unwrap();
        deliver_all(&agenda).await;
        assert!(agenda.invitations("nora", false).await.unwrap().is_empty());
        assert_eq!(agenda.invitations("bob", false).await.unwrap().len(), 1);
        assert!(matches!(
            agenda.event("nora", &id).await,
            Err(AgendaError::NotFound(_))
        ));
        assert!(agenda.event("bob", &id).await.is_ok());
    });
}

#[test]
fn an_all_day_occurrence_is_listed_on_its_own_day_also_when_moved_and_seen_from_far_away() {
    run(async {
        let agenda = agenda();
        // Alice is in Madrid, Nora in Honolulu, where Madrid's midnight is the afternoon before:
        // by its instants, each of Nora's all-day occurrences starts the day before its date.
        register(&agenda, "alice", "Europe/Madrid").await;
        register(&agenda, "nora", "Pacific/Honolulu").await;
        let mut schedule = weekly("2026-06-01", "2026-06-02", 3);
        schedule.start = local("2026-06-01");
        schedule.end = local("2026-06-02");
        let id = agenda
            .create_event("alice", meeting(schedule, &["nora"]))
            .await
            .unwrap()
            .event
            .id;
        let moved = EventChange {
            scope: Scope::This(local("2026-06-08")),
            start: Some(local("2026-06-10")),
            end: Some(local("2026-06-11")),
            ..EventChange::default()
        };
        agenda.update_event("alice", &id, moved).await.unwrap();
        deliver_all(&agenda).await;
        for name in ["alice", "nora"] {
            let entries = agenda
                .agenda(name, JUNE_1_MS - DAY_MS, JUNE_1_MS + 30 * DAY_MS)
                .await
                .unwrap();
            let days: Vec<(String, Option<String>)> = entries
                .iter()
                .map(|e| (e.occurrence.to_string(), e.day.map(|day| day.to_string())))
                .collect();
            assert_eq!(
                days,
                [
                    ("2026-06-01".to_owned(), Some("2026-06-01".to_owned())),
                    ("2026-06-08".to_owned(), Some("2026-06-10".to_owned())),
                    ("2026-06-15".to_owned(), Some("2026-06-15".to_owned())),
                ],
                "{name}"
            );
        }
        // A timed occurrence has no day: it is placed by its start in the caller's zone.
        let id = alice_invites(&agenda, &[], "UTC", 1, &[]).await;
        let entries = agenda
            .agenda("alice", JUNE_1_MS, JUNE_1_MS + DAY_MS)
            .await
            .unwrap();
        let timed = entries.iter().find(|e| e.event_id == id).unwrap();
        assert_eq!(timed.day, None);
    });
}

#[test]
fn one_occurrence_moves_and_the_following_ones_split_into_a_new_series() {
    run(async {
        let agenda = agenda();
        let id = alice_invites(&agenda, &["alice", "nora"], "Europe/Madrid", 4, &["nora"]).await;
        // This occurrence: the second Monday moves to 15:00 and gets its own title.
        let this = EventChange {
            scope: Scope::This(local("2026-06-08T10:00")),
            title: Some("Planning, afternoon".into()),
            start: Some(local("2026-06-08T15:00")),
            end: Some(local("2026-06-08T16:00")),
            ..EventChange::default()
        };
        agenda.update_event("alice", &id, this).await.unwrap();
        // This and following: from the third Monday the meeting is at 09:00.
        let following = EventChange {
            scope: Scope::Following(local("2026-06-15T10:00")),
            start: Some(local("2026-06-15T09:00")),
            end: Some(local("2026-06-15T10:00")),
            ..EventChange::default()
        };
        let saved = agenda.update_event("alice", &id, following).await.unwrap();
        assert_ne!(saved.event.id, id, "the later part is a new series");
        assert!(saved.truncated.is_some());
        deliver_all(&agenda).await;
        for name in ["alice", "nora"] {
            let entries = agenda
                .agenda(name, JUNE_1_MS, JUNE_1_MS + 30 * DAY_MS)
                .await
                .unwrap();
            let starts: Vec<(&str, &str)> = entries
                .iter()
                .map(|e| (e.start.as_str(), e.title.as_str()))
                .collect();
            assert_eq!(
                starts,
                [
                    ("2026-06-01T10:00:00+02:00", "Planning"),
                    ("2026-06-08T15:00:00+02:00", "Planning, afternoon"),
                    ("2026-06-15T09:00:00+02:00", "Planning"),
                    ("2026-06-22T09:00:00+02:00", "Planning"),
                ],
                "{name}"
            );
        }
        // Deleting one occurrence of the new series leaves the rest.
        agenda
            .delete_event(
                "alice",
                &saved.event.id,
                Scope::This(local("2026-06-22T09:00")),
            )
            .await
            .unwrap();
        deliver_all(&agenda).await;
        assert_eq!(
            agenda
                .agenda("nora", JUNE_1_MS, JUNE_1_MS + 30 * DAY_MS)
                .await
                .unwrap()
                .len(),
            3
        );
    });
}

#[test]
fn the_agenda_is_shown_in_the_callers_zone() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "Europe/Madrid").await;
        register(&agenda, "nora", "America/New_York").await;
        agenda
            .create_event(
                "alice",
                meeting(weekly("2026-06-01T16:00", "2026-06-01T17:00", 1), &["nora"]),
            )
            .await
            .unwrap();
        deliver_all(&agenda).await;
        let entries = agenda
            .agenda("nora", JUNE_1_MS, JUNE_1_MS + DAY_MS)
            .await
            .unwrap();
        assert_eq!(entries[0].start, "2026-06-01T10:00:00-04:00");
    });
}

#[test]
fn free_busy_shows_intervals_only_and_conflicts_are_reported() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "UTC").await;
        register(&agenda, "nora", "UTC").await;
        let mut first = meeting(weekly("2026-06-01T10:00", "2026-06-01T11:00", 2), &["nora"]);
        first.title = "Secret project".into();
        first.schedule.zone = "UTC".into();
        agenda.create_event("alice", first).await.unwrap();
        deliver_all(&agenda).await;
        let free_busy = agenda
            .free_busy(&["nora".into()], JUNE_1_MS, JUNE_1_MS + 14 * DAY_MS)
            .await
            .unwrap();
        assert_eq!(
            free_busy[0].busy,
            [
                (JUNE_1_MS + 10 * HOUR_MS, JUNE_1_MS + 11 * HOUR_MS),
                (
                    JUNE_1_MS + 7 * DAY_MS + 10 * HOUR_MS,
                    JUNE_1_MS + 7 * DAY_MS + 11 * HOUR_MS
                )
            ]
        );
        assert!(
            !serde_json::to_string(&free_busy)
                .unwrap()
                .contains("Secret")
        );

        // nora's own event overlapping the second occurrence is a conflict for alice's next one.
        let mut own = meeting(
            weekly("2026-06-08T10:30", "2026-06-08T11:30", 1),
            &["alice"],
        );
        own.schedule.zone = "UTC".into();
        let saved = agenda.create_event("nora", own).await.unwrap();
        let users: Vec<&str> = saved.conflicts.iter().map(|c| c.user.as_str()).collect();
        // The overlap is in both calendars: nora's invitation and alice's own meeting.
        assert_eq!(users, ["nora", "alice"]);

        // Declined time is free.
        let id = agenda.invitations("nora", false).await.unwrap()[0]
            .copy
            .event_id
            .clone();
        agenda
            .rsvp("nora", &id, Response::Declined, None)
            .await
            .unwrap();
        let free_busy = agenda
            .free_busy(&["nora".into()], JUNE_1_MS, JUNE_1_MS + 14 * DAY_MS)
            .await
            .unwrap();
        assert_eq!(
            free_busy[0].busy,
            [(
                JUNE_1_MS + 7 * DAY_MS + 10 * HOUR_MS + HOUR_MS / 2,
                JUNE_1_MS + 7 * DAY_MS + 11 * HOUR_MS + HOUR_MS / 2
            )]
        );
    });
}

#[test]
fn find_a_time_when_everyone_works_and_is_free() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "Europe/Madrid").await;
        register(&agenda, "nora", "America/New_York").await;
        // Working hours overlap 15:00-17:00 Madrid (09:00-11:00 New York); alice is busy 15:00-16:00.
        let mut busy = meeting(weekly("2026-06-01T15:00", "2026-06-01T16:00", 1), &[]);
        busy.schedule.zone = "Europe/Madrid".into();
        agenda.create_event("alice", busy).await.unwrap();
        let slots = agenda
            .find_time(
                &["alice".into(), "nora".into()],
                JUNE_1_MS,
                JUNE_1_MS + DAY_MS,
                HOUR_MS,
                3,
            )
            .await
            .unwrap();
        // 16:00 Madrid = 14:00 UTC.
        assert_eq!(
            slots,
            [(JUNE_1_MS + 14 * HOUR_MS, JUNE_1_MS + 15 * HOUR_MS)]
        );
    });
}

#[test]
fn two_writers_of_one_record_cannot_both_commit_on_what_they_read() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice", "UTC").await;
        let key = agenda::keys::account("alice");
        let mut first = Tx::new(agenda.store());
        let mut second = Tx::new(agenda.store());
        let mut account: agenda::users::Account =
            first.get_record(key.clone()).await.unwrap().unwrap();
        let _: Option<agenda::users::Account> = second.get_record(key.clone()).await.unwrap();
        account.display_name = "first".into();
        first.put_record(key.clone(), &account);
        account.display_name = "second".into();
        second.put_record(key.clone(), &account);
        assert!(first.commit().await.unwrap().is_some());
        assert!(
            second.commit().await.unwrap().is_none(),
            "the second writer read a stale version"
        );
        assert_eq!(agenda.profile("alice").await.unwrap().display_name, "first");
    });
}

#[test]
fn an_outsider_reads_nothing_of_an_event() {
    run(async {
        let agenda = agenda();
        let id = alice_invites(&agenda, &["alice", "nora", "eve"], "UTC", 1, &["nora"]).await;
        deliver_all(&agenda).await;
        assert!(matches!(
            agenda.event("eve", &id).await,
            Err(AgendaError::NotFound(_))
        ));
        assert!(matches!(
            agenda.tally("eve", &id).await,
            Err(AgendaError::NotFound(_))
        ));
        assert!(matches!(
            agenda.rsvp("eve", &id, Response::Accepted, None).await,
            Err(AgendaError::NotFound(_))
        ));
        assert!(matches!(
            agenda.delete_event("eve", &id, Scope::All).await,
            Err(AgendaError::Forbidden(_))
        ));
        assert!(
            agenda
                .agenda("eve", JUNE_1_MS, JUNE_1_MS + DAY_MS)
                .await
                .unwrap()
                .is_empty()
        );
        // A group one does not belong to cannot be invited.
        agenda
            .create_group("nora", "secret", "Secret")
            .await
            .unwrap();
        let refused = agenda
            .create_event(
                "eve",
                meeting(
                    weekly("2026-06-01T10:00", "2026-06-01T11:00", 1),
                    &["group:secret"],
                ),
            )
            .await;
        assert!(matches!(refused, Err(AgendaError::NotFound(_))));
    });
}

#[test]
fn a_change_made_against_an_old_sequence_is_refused_and_the_newer_one_is_kept() {
    run(async {
        let agenda = agenda();
        let id = alice_invites(&agenda, &["alice"], "Europe/Madrid", 1, &[]).await;
        // Two editors read the event at sequence 0.
        let read = agenda.event("alice", &id).await.unwrap();
        assert_eq!(read.sequence, 0);
        let first = EventChange {
            title: Some("Planning, by the first editor".into()),
            if_sequence: Some(read.sequence),
            ..EventChange::default()
        };
        let saved = agenda.update_event("alice", &id, first).await.unwrap();
        assert_eq!(saved.event.sequence, 1);
        // The second one's change was made against sequence 0: refused, nothing written.
        let second = EventChange {
            location: Some("Room 9".into()),
            if_sequence: Some(read.sequence),
            ..EventChange::default()
        };
        assert!(matches!(
            agenda.update_event("alice", &id, second.clone()).await,
            Err(AgendaError::Conflict(_))
        ));
        let now = agenda.event("alice", &id).await.unwrap();
        assert_eq!(now.content.title, "Planning, by the first editor");
        assert_eq!(now.content.location, "Room 2");
        // Read again, it applies on top of the first change.
        let again = EventChange {
            if_sequence: Some(now.sequence),
            ..second
        };
        let saved = agenda.update_event("alice", &id, again).await.unwrap();
        assert_eq!(
            (
                saved.event.content.title.as_str(),
                saved.event.content.location.as_str()
            ),
            ("Planning, by the first editor", "Room 9")
        );
    });
}
