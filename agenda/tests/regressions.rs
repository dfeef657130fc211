//! One story per bug an adversarial review of the agenda layer found (each failed before its
//! fix), named after the bug as it was.

use agenda::events::{Attendee, EventChange, NewEvent, Response, Scope};
use agenda::schedule::Schedule;
use agenda::users::Registration;

mod support;
use support::*;

async fn register(agenda: &TestAgenda, name: &str) {
    agenda
        .register(Registration {
            name: name.into(),
            password: format!("{name} password"),
            display_name: None,
            zone: Some("Europe/Madrid".into()),
            working_hours: None,
        })
        .await
        .expect("registration");
}

fn schedule(rrule: Option<&str>) -> Schedule {
    Schedule {
        zone: "Europe/Madrid".into(),
        start: local("2026-06-01T10:00"),
        end: local("2026-06-01T11:00"),
        rrule: rrule.map(str::to_owned),
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
            .map(|n| Attendee::User((*n).into()))
            .collect(),
    }
}

#[test]
fn deleting_this_occurrence_of_a_one_off_event_breaks_every_attendees_agenda() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice").await;
        register(&agenda, "nora").await;
        let saved = agenda
            .create_event("alice", meeting(schedule(None), &["nora"]))
            .await
            .unwrap();
        deliver_all(&agenda).await;
        let result = agenda
            .delete_event(
                "alice",
                &saved.event.id,
                Scope::This(local("2026-06-01T10:00")),
            )
            .await;
        deliver_all(&agenda).await;
        let nora = agenda
            .agenda("nora", JUNE_1_MS, JUNE_1_MS + 7 * DAY_MS)
            .await;
        let alice = agenda
            .agenda("alice", JUNE_1_MS, JUNE_1_MS + 7 * DAY_MS)
            .await;
        let busy = agenda
            .free_busy(&["nora".into()], JUNE_1_MS, JUNE_1_MS + 7 * DAY_MS)
            .await;
        assert!(
            result.is_err() || (nora.is_ok() && alice.is_ok() && busy.is_ok()),
            "delete {result:?} left nora's agenda {nora:?}, alice's {alice:?}, busy {busy:?}"
        );
    });
}

/// Moving a series by an hour silently drops its exdates: a deleted occurrence comes back.
#[test]
fn moving_a_series_brings_back_a_deleted_occurrence() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice").await;
        let saved = agenda
            .create_event("alice", meeting(schedule(Some("FREQ=WEEKLY;COUNT=4")), &[]))
            .await
            .unwrap();
        let id = saved.event.id;
        agenda
            .delete_event("alice", &id, Scope::This(local("2026-06-08T10:00")))
            .await
            .unwrap();
        let before = agenda
            .agenda("alice", JUNE_1_MS, JUNE_1_MS + 30 * DAY_MS)
            .await
            .unwrap();
        assert_eq!(before.len(), 3);
        agenda
            .update_event(
                "alice",
                &id,
                EventChange {
                    start: Some(local("2026-06-01T11:00")),
                    end: Some(local("2026-06-01T12:00")),
                    ..EventChange::default()
                },
            )
            .await
            .unwrap();
        let after = agenda
            .agenda("alice", JUNE_1_MS, JUNE_1_MS + 30 * DAY_MS)
            .await
            .unwrap();
        let days: Vec<_> = after.iter().map(|e| e.start.clone()).collect();
        assert_eq!(after.len(), 3, "the deleted occurrence is back: {days:?}");
    });
}

/// An answer given while removed is dropped by the organizer's shard; after a re-add the
/// attendee's calendar and the organizer's tally disagree for good.
#[test]
fn an_answer_dropped_while_removed_leaves_the_tally_wrong_after_a_re_add() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice").await;
        register(&agenda, "nora").await;
        let id = agenda
            .create_event(
                "alice",
                meeting(schedule(Some("FREQ=WEEKLY;COUNT=4")), &["nora"]),
            )
            .await
            .unwrap()
            .event
            .id;
        deliver_all(&agenda).await;
        agenda
            .rsvp("nora", &id, Response::Accepted, None)
            .await
            .unwrap();
        deliver_all(&agenda).await;
        // Alice removes nora; before the cancellation lands, nora declines.
        let change = |who: &[&str]| EventChange {
            attendees: Some(who.iter().map(|n| Attendee::User((*n).into())).collect()),
            ..EventChange::default()
        };
        agenda
            .update_event("alice", &id, change(&[]))
            .await
            .unwrap();
        agenda
            .rsvp("nora", &id, Response::Declined, None)
            .await
            .unwrap();
        deliver_all(&agenda).await;
        // Alice adds her back (no change of time or place: answers still count).
        agenda
            .update_event("alice", &id, change(&["nora"]))
            .await
            .unwrap();
        deliver_all(&agenda).await;
        let mine = agenda.invitations("nora", false).await.unwrap();
        let tally = agenda.tally("alice", &id).await.unwrap();
        assert_eq!(
            Some(tally.attendees["nora"].0),
            mine.first().map(|i| i.response),
            "nora's calendar and alice's tally disagree"
        );
    });
}

/// Every login adds a session; expired ones are all deleted in the next login's transaction,
/// which the store refuses beyond 1024 operations: the user can never log in again.
#[test]
fn many_expired_sessions_lock_the_user_out_for_good() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice").await;
        for _ in 0..1100 {
            agenda.login("alice", "alice password").await.unwrap();
        }
        agenda.env().advance_ms(31 * DAY_MS);
        let again = agenda.login("alice", "alice password").await;
        assert!(again.is_ok(), "login after the sessions expired: {again:?}");
    });
}

/// The attendee list is stored as given: duplicates are neither folded nor bounded (each also
/// costs one read of the users shard).
#[test]
fn duplicate_attendees_are_unbounded() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice").await;
        register(&agenda, "nora").await;
        let many = vec!["nora"; 5000];
        let saved = agenda
            .create_event("alice", meeting(schedule(None), &many))
            .await;
        assert!(
            saved
                .as_ref()
                .map_or(true, |s| s.event.attendees.len() <= 400),
            "stored {} attendees",
            saved.unwrap().event.attendees.len()
        );
    });
}

/// `update_event` commits, then computes conflicts with `?`: a failure there answers an error
/// for a write that happened (the client retries a committed change).
#[test]
fn an_update_that_committed_is_answered_as_an_error() {
    run(async {
        let agenda = agenda();
        for name in ["alice", "bob", "nora"] {
            register(&agenda, name).await;
        }
        // Bob leaves a schedule in nora's calendar that no longer expands (see above).
        let poison = agenda
            .create_event("bob", meeting(schedule(None), &["nora"]))
            .await
            .unwrap();
        agenda
            .delete_event(
                "bob",
                &poison.event.id,
                Scope::This(local("2026-06-01T10:00")),
            )
            .await
            .unwrap();
        let id = agenda
            .create_event("alice", meeting(schedule(Some("FREQ=WEEKLY;COUNT=4")), &[]))
            .await
            .unwrap()
            .event
            .id;
        deliver_all(&agenda).await;
        let result = agenda
            .update_event(
                "alice",
                &id,
                EventChange {
                    title: Some("Renamed".into()),
                    attendees: Some(vec![Attendee::User("nora".into())]),
                    ..EventChange::default()
                },
            )
            .await;
        let stored = agenda.event("alice", &id).await.unwrap();
        assert!(
            result.is_ok() || stored.content.title != "Renamed",
            "answered {result:?} but stored title {:?}",
            stored.content.title
        );
    });
}

/// One record that fails to deliver (here: a destination record that does not decode; in
/// production also a value over 1 MiB, a refused txn) aborts the whole pass with `?`: every
/// record after it in the outbox waits forever.
#[test]
fn one_undeliverable_record_blocks_the_whole_outbox() {
    run(async {
        let agenda = agenda();
        for name in ["alice", "bob", "nora"] {
            register(&agenda, name).await;
        }
        // Something unreadable at bob's invitation key (bob sorts before nora in the outbox).
        let first = agenda
            .create_event("alice", meeting(schedule(None), &["bob"]))
            .await
            .unwrap();
        let mut tx = agenda::Tx::new(agenda.store());
        tx.put_record(
            agenda::keys::invitation("bob", &first.event.id),
            &serde_json::json!("not an invitation"),
        );
        tx.commit().await.unwrap();
        let second = agenda
            .create_event("alice", meeting(schedule(None), &["nora"]))
            .await
            .unwrap();
        for _ in 0..5 {
            let _ = agenda.deliver("am", 100).await;
        }
        let nora = agenda.invitations("nora", false).await.unwrap();
        assert!(
            nora.iter().any(|i| i.copy.event_id == second.event.id),
            "nora's invitation is stuck behind bob's"
        );
    });
}

/// Replies of attendees who were removed stay; deleting the event deletes every reply and
/// cancels every attendee in one transaction, which the store refuses past 1024 operations:
/// the event can never be deleted.
#[test]
fn an_event_with_many_past_replies_cannot_be_deleted() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice").await;
        let users: Vec<String> = (0..600).map(|i| format!("u{i:03}")).collect();
        for user in &users {
            register(&agenda, user).await;
        }
        let ask = |who: &[String]| {
            who.iter()
                .map(|n| Attendee::User(n.clone()))
                .collect::<Vec<_>>()
        };
        let mut new = meeting(schedule(Some("FREQ=WEEKLY;COUNT=4")), &[]);
        new.attendees = ask(&users[..300]);
        let id = agenda.create_event("alice", new).await.unwrap().event.id;
        deliver_all(&agenda).await;
        for user in &users[..300] {
            agenda
                .rsvp(user, &id, Response::Accepted, None)
                .await
                .unwrap();
        }
        deliver_all(&agenda).await;
        let change = EventChange {
            attendees: Some(ask(&users[300..])),
            ..EventChange::default()
        };
        agenda.update_event("alice", &id, change).await.unwrap();
        deliver_all(&agenda).await;
        for user in &users[300..] {
            agenda
                .rsvp(user, &id, Response::Accepted, None)
                .await
                .unwrap();
        }
        deliver_all(&agenda).await;
        let deleted = agenda.delete_event("alice", &id, Scope::All).await;
        assert!(deleted.is_ok(), "delete: {deleted:?}");
    });
}

#[test]
fn a_creation_retried_after_its_answer_was_lost_makes_a_second_event() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice").await;
        register(&agenda, "nora").await;
        // Without a key, a lost answer and a retry make two events (the client cannot tell).
        agenda.store().lose_answers(1);
        let lost = agenda
            .create_event("alice", meeting(schedule(None), &["nora"]))
            .await;
        assert!(matches!(lost, Err(agenda::AgendaError::Unavailable(_))));
        agenda
            .create_event("alice", meeting(schedule(None), &["nora"]))
            .await
            .expect("the retry");
        deliver_all(&agenda).await;
        assert_eq!(agenda.invitations("nora", false).await.unwrap().len(), 2);

        // With an idempotency key, the retry answers the event the first attempt made.
        agenda.store().lose_answers(1);
        let lost = agenda
            .create_event_once("alice", meeting(schedule(None), &["nora"]), Some("req-7"))
            .await;
        assert!(matches!(lost, Err(agenda::AgendaError::Unavailable(_))));
        let retried = agenda
            .create_event_once("alice", meeting(schedule(None), &["nora"]), Some("req-7"))
            .await
            .expect("the retry");
        assert!(retried.replayed);
        assert_eq!(retried.position, (0, 0), "nothing written");
        let again = agenda
            .create_event_once("alice", meeting(schedule(None), &["nora"]), Some("req-7"))
            .await
            .expect("once more");
        assert_eq!(again.event.id, retried.event.id);
        deliver_all(&agenda).await;
        assert_eq!(agenda.invitations("nora", false).await.unwrap().len(), 3);

        // Keys are per user; a new key is a new event; an empty key is refused.
        let nora = agenda
            .create_event_once("nora", meeting(schedule(None), &[]), Some("req-7"))
            .await
            .expect("nora's");
        assert!(!nora.replayed);
        assert!(nora.event.id.starts_with("nora."));
        let other = agenda
            .create_event_once("alice", meeting(schedule(None), &[]), Some("req-8"))
            .await
            .expect("another");
        assert!(!other.replayed);
        assert_ne!(other.event.id, retried.event.id);
        assert!(matches!(
            agenda
                .create_event_once("alice", meeting(schedule(None), &[]), Some(""))
                .await,
            Err(agenda::AgendaError::Invalid { .. })
        ));
    });
}

#[test]
fn an_event_made_again_with_its_idempotency_key_after_a_delete_never_reaches_its_attendees() {
    run(async {
        let agenda = agenda();
        register(&agenda, "alice").await;
        register(&agenda, "nora").await;
        let make =
            || agenda.create_event_once("alice", meeting(schedule(None), &["nora"]), Some("k"));
        let first = make().await.expect("made");
        deliver_all(&agenda).await;
        // Changed twice, then deleted: nora holds a cancellation at sequence 3.
        for title in ["Planning (2)", "Planning (3)"] {
            let change = EventChange {
                title: Some(title.into()),
                ..EventChange::default()
            };
            agenda
                .update_event("alice", &first.event.id, change)
                .await
                .expect("changed");
        }
        agenda
            .delete_event("alice", &first.event.id, Scope::All)
            .await
            .expect("deleted");
        deliver_all(&agenda).await;
        assert!(agenda.invitations("nora", false).await.unwrap().is_empty());

        // Made again with the same key: the same id, sequence 0, a new incarnation.
        agenda.env().advance_ms(1_000);
        let again = make().await.expect("made again");
        assert_eq!(again.event.id, first.event.id);
        assert!(!again.replayed);
        deliver_all(&agenda).await;
        let invitations = agenda.invitations("nora", false).await.unwrap();
        assert_eq!(invitations.len(), 1, "the new incarnation reaches nora");
        assert_eq!(invitations[0].copy.content.title, "Planning");
        assert_eq!(invitations[0].response, Response::NeedsAction);
    });
}

/// A store in which an earlier attempt of the next transaction commits first: what a server
/// sees when a retry with the same idempotency key reads before, and commits after, the first
/// attempt whose answer was lost.
struct RacedByAnEarlierAttempt {
    inner: agenda::memory::MemStore,
    armed: std::sync::atomic::AtomicBool,
}

impl agenda::Store for RacedByAnEarlierAttempt {
    async fn get(
        &self,
        key: bytes::Bytes,
    ) -> Result<Option<kv::Versioned>, agenda::error::StoreError> {
        self.inner.get(key).await
    }

    async fn scan(
        &self,
        start: bytes::Bytes,
        end: bytes::Bytes,
        limit: u32,
    ) -> Result<agenda::Scanned, agenda::error::StoreError> {
        self.inner.scan(start, end, limit).await
    }

    async fn txn(&self, txn: kv::Txn) -> Result<agenda::Committed, agenda::error::StoreError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.inner.txn(txn.clone()).await?;
        }
        self.inner.txn(txn).await
    }
}

#[test]
fn a_creation_retried_while_its_first_attempt_commits_is_answered_contended() {
    run(async {
        let agenda = agenda::Agenda::new(
            RacedByAnEarlierAttempt {
                inner: agenda::memory::MemStore::new(),
                armed: std::sync::atomic::AtomicBool::new(false),
            },
            agenda::memory::TestEnv::at(JUNE_1_MS - 30 * DAY_MS),
            agenda::Config::for_tests(),
        );
        agenda
            .register(Registration {
                name: "alice".into(),
                password: "alice password".into(),
                display_name: None,
                zone: Some("Europe/Madrid".into()),
                working_hours: None,
            })
            .await
            .expect("registration");
        agenda
            .store()
            .armed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let retried = agenda
            .create_event_once("alice", meeting(schedule(None), &[]), Some("req-9"))
            .await
            .expect("the retry is answered the event, not `contended`");
        assert!(retried.replayed);
        assert_eq!(retried.position, (0, 0), "the retry wrote nothing");
        let events = agenda
            .agenda("alice", JUNE_1_MS, JUNE_1_MS + DAY_MS)
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "one event: {events:?}");
        assert_eq!(events[0].event_id, retried.event.id);
    });
}
