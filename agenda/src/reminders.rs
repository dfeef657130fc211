//! Reminders: alerts a user sets before every occurrence of an event they organize or attend,
//! and the scheduler pass that sends each one once.
//!
//! A user's alerts for one event live in one record in the user's own events shard
//! (`ev/<b>/!a/<user>/<event>`, next to the event or the invitation they refer to), with the
//! instant up to which alerts were handled (`sent_up_to_ms`). Sending an alert *is* a write:
//! [`Agenda::remind`] commits the record with the alerts now due in `fired` and `sent_up_to_ms`
//! moved past them, comparing the record's `mod_index`. So:
//!
//! - an alert is sent once: two schedulers (an old leader that does not know it was deposed, and
//!   the new one) cannot both commit the same record version, and a scheduler that lost its
//!   answer reads `sent_up_to_ms` again before it tries;
//! - a new leader neither loses nor repeats alerts: it reads the same records and resumes;
//! - the notification is the committed change itself: the gateway publishes it on the user's
//!   channel (`user:<name>`) when it is applied, never earlier.
//!
//! An alert whose time passed while no scheduler ran (every replica of the shard down) is still
//! sent within [`Agenda::remind`]'s `grace_ms`, marked `late`; an older one is dropped and counted
//! (`Reminded::stale`): an alert for a meeting that is long over helps nobody.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Agenda;
use crate::error::AgendaError;
use crate::events::{Event, Invitation, Response};
use crate::keys;
use crate::schedule::{Local, Schedule};
use crate::store::{ATTEMPTS_MAX, Env, Store, Tx, decode, prefix_end, scan_prefix};

/// The most alerts one user sets on one event.
pub const ALERTS_MAX: usize = 5;
/// The earliest an alert may come before its occurrence: four weeks, in minutes.
pub const MINUTES_BEFORE_MAX: u32 = 4 * 7 * 24 * 60;
/// Occurrences one record's pass looks at, at most: a window of minutes holds a few.
const OCCURRENCES_PER_PASS_MAX: usize = 1_000;
/// Alert records a pass reads per scan.
const PAGE_RECORDS: u32 = 256;
/// An alert sent more than this after its time is marked late.
const LATE_AFTER_MS: i64 = 5_000;
/// How far back a pass counts the stale alerts it drops.
const STALE_COUNTED_MS: i64 = 7 * 24 * 3_600_000;
/// The most alert records (events with alerts) one user has.
pub const ALERT_RECORDS_MAX: usize = 1_000;

/// A user's alerts on one event, as stored at `ev/<b>/!a/<user>/<event>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alerts {
    /// Whose alerts.
    pub user: String,
    /// The event.
    pub event_id: String,
    /// Minutes before each occurrence's start, ascending, without repeats.
    pub minutes_before: Vec<u32>,
    /// Every alert due at or before this instant was sent (or dropped as stale).
    pub sent_up_to_ms: i64,
    /// The alerts of the last sending: what the user's channel shows.
    #[serde(default)]
    pub fired: Vec<Fired>,
    /// How many alerts were sent so far.
    #[serde(default)]
    pub fired_count: u64,
}

/// One alert sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fired {
    /// The occurrence's id (its original start).
    pub occurrence: Local,
    /// The occurrence's start, ms since the epoch.
    pub start_ms: i64,
    /// Which alert: minutes before the start.
    pub minutes_before: u32,
    /// When it was due, ms since the epoch.
    pub due_ms: i64,
    /// When it was sent (the scheduler's clock).
    pub sent_ms: i64,
    /// The occurrence's title.
    pub title: String,
    /// Sent after its time (no scheduler ran when it was due).
    pub late: bool,
}

/// What one scheduler pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reminded {
    /// Alerts sent.
    pub fired: usize,
    /// Of those, alerts sent after their time.
    pub fired_late: usize,
    /// Alerts dropped because they were due more than the grace period ago.
    pub stale: usize,
    /// Alert records removed because their event or invitation is gone.
    pub removed: usize,
    /// Records that did not decode (left in place and reported).
    pub corrupt: usize,
    /// Records this pass could not handle (a store error, contention): tried again next pass.
    pub failed: usize,
    /// The last failure, for the log.
    pub last_error: Option<AgendaError>,
    /// The earliest alert due after this pass within its look-ahead, ms since the epoch.
    pub next_due_ms: Option<i64>,
}

/// Checks a list of alerts: at most [`ALERTS_MAX`], each at most [`MINUTES_BEFORE_MAX`].
fn check_minutes(minutes_before: &[u32]) -> Result<Vec<u32>, AgendaError> {
    let unique: BTreeSet<u32> = minutes_before.iter().copied().collect();
    if unique.len() > ALERTS_MAX {
        return Err(AgendaError::invalid(
            "minutes_before",
            format!("at most {ALERTS_MAX} alerts per event"),
        ));
    }
    if let Some(too_early) = unique.iter().find(|m| **m > MINUTES_BEFORE_MAX) {
        return Err(AgendaError::invalid(
            "minutes_before",
            format!("at most {MINUTES_BEFORE_MAX} minutes (four weeks), not {too_early}"),
        ));
    }
    Ok(unique.into_iter().collect())
}

/// What a user's alerts on an event ring for: the event's schedule and texts, and the user's
/// answers (a declined occurrence rings no alert).
struct Target {
    title: String,
    schedule: Schedule,
    details: std::collections::BTreeMap<Local, crate::events::Details>,
    responses: Option<(Response, std::collections::BTreeMap<Local, Response>)>,
}

impl Target {
    fn declined(&self, occurrence: &Local) -> bool {
        self.responses.as_ref().is_some_and(|(series, single)| {
            *single.get(occurrence).unwrap_or(series) == Response::Declined
        })
    }

    fn title(&self, occurrence: &Local) -> String {
        self.details
            .get(occurrence)
            .and_then(|details| details.title.clone())
            .unwrap_or_else(|| self.title.clone())
    }
}

impl<S: Store, E: Env> Agenda<S, E> {
    /// Reads, through `tx` (so the commit depends on it), what `user`'s alerts on `event_id`
    /// refer to: the event if the user organizes it, else their invitation. `None`: neither
    /// (or a cancelled invitation).
    async fn alert_target(
        &self,
        tx: &mut Tx<'_, S>,
        user: &str,
        event_id: &str,
    ) -> Result<Option<Target>, AgendaError> {
        let owner = keys::event_owner(event_id)?;
        if owner == user {
            let event: Option<Event> = tx.get_record(keys::event(event_id)).await?;
            return Ok(event.map(|event| Target {
                title: event.content.title,
                schedule: event.content.schedule,
                details: event.content.details,
                responses: None,
            }));
        }
        let invitation: Option<Invitation> =
            tx.get_record(keys::invitation(user, event_id)).await?;
        Ok(invitation
            .filter(|invitation| !invitation.copy.cancelled)
            .map(|invitation| Target {
                title: invitation.copy.content.title,
                schedule: invitation.copy.content.schedule,
                details: invitation.copy.content.details,
                responses: Some((invitation.response, invitation.occurrence_responses)),
            }))
    }

    /// Sets the caller's alerts on an event they organize or are invited to (an empty list
    /// removes them). Alerts due before now are not sent.
    pub async fn set_alerts(
        &self,
        caller: &str,
        event_id: &str,
        minutes_before: &[u32],
    ) -> Result<Alerts, AgendaError> {
        let minutes_before = check_minutes(minutes_before)?;
        for _ in 0..ATTEMPTS_MAX {
            let mut tx = Tx::new(&self.store);
            if self
                .alert_target(&mut tx, caller, event_id)
                .await?
                .is_none()
            {
                return Err(AgendaError::NotFound(format!("event {event_id}")));
            }
            let key = keys::alerts(caller, event_id);
            let old: Option<Alerts> = tx.get_record(key.clone()).await?;
            if old.is_none() && !minutes_before.is_empty() {
                self.check_alert_records(caller).await?;
            }
            let now_ms = self.env.now_ms();
            // What was sent stays sent. An alert added now rings from now on (not for what was
            // due before); if none is added, one due but not sent yet (the scheduler wakes at
            // its time) still rings.
            let sent_up_to_ms = match &old {
                Some(old)
                    if minutes_before
                        .iter()
                        .all(|minutes| old.minutes_before.contains(minutes)) =>
                {
                    old.sent_up_to_ms
                }
                Some(old) => old.sent_up_to_ms.max(now_ms),
                None => now_ms,
            };
            let alerts = Alerts {
                user: caller.to_owned(),
                event_id: event_id.to_owned(),
                minutes_before: minutes_before.clone(),
                sent_up_to_ms,
                fired: Vec::new(),
                fired_count: old.map_or(0, |old| old.fired_count),
            };
            if alerts.minutes_before.is_empty() {
                tx.delete(key);
            } else {
                tx.put_record(key, &alerts);
            }
            if tx.commit().await?.is_some() {
                return Ok(alerts);
            }
        }
        Err(AgendaError::Contended(format!("alerts on {event_id}")))
    }

    /// The caller's alerts on an event (none set: an empty list).
    pub async fn alerts(&self, caller: &str, event_id: &str) -> Result<Alerts, AgendaError> {
        let mut tx = Tx::new(&self.store);
        if self
            .alert_target(&mut tx, caller, event_id)
            .await?
            .is_none()
        {
            return Err(AgendaError::NotFound(format!("event {event_id}")));
        }
        let key = keys::alerts(caller, event_id);
        Ok(tx.get_record(key).await?.unwrap_or_else(|| Alerts {
            user: caller.to_owned(),
            event_id: event_id.to_owned(),
            minutes_before: Vec::new(),
            sent_up_to_ms: self.env.now_ms(),
            fired: Vec::new(),
            fired_count: 0,
        }))
    }

    /// One scheduler pass over the alerts of bucket `am` or `nz`: sends every alert due now
    /// (each record in its own transaction), drops those due more than `grace_ms` ago, removes
    /// alerts whose event is gone, and reports the next alert due within `lookahead_ms`.
    pub async fn remind(
        &self,
        bucket: &str,
        grace_ms: i64,
        lookahead_ms: i64,
    ) -> Result<Reminded, AgendaError> {
        let mut report = Reminded::default();
        let prefix = keys::alerts_all(bucket);
        let end = prefix_end(&prefix);
        let mut start = prefix;
        loop {
            let page = self
                .store
                .scan(start.clone(), end.clone(), PAGE_RECORDS)
                .await?;
            let Some((last, _)) = page.entries.last() else {
                return Ok(report);
            };
            let mut next = last.to_vec();
            next.push(0);
            start = Bytes::from(next);
            self.remind_page(page.entries, grace_ms, lookahead_ms, &mut report)
                .await;
            if !page.more {
                return Ok(report);
            }
        }
    }

    async fn remind_page(
        &self,
        records: Vec<(Bytes, kv::Versioned)>,
        grace_ms: i64,
        lookahead_ms: i64,
        report: &mut Reminded,
    ) {
        for (key, found) in records {
            if let Err(error) = decode::<Alerts>(&key, &found.value) {
                report.corrupt += 1;
                report.last_error = Some(error);
                continue;
            }
            if let Err(error) = self.remind_one(key, grace_ms, lookahead_ms, report).await {
                report.failed += 1;
                report.last_error = Some(error);
            }
        }
    }

    async fn remind_one(
        &self,
        key: Bytes,
        grace_ms: i64,
        lookahead_ms: i64,
        report: &mut Reminded,
    ) -> Result<(), AgendaError> {
        let mut tx = Tx::new(&self.store);
        // Read again through the transaction: the commit depends on this version.
        let Some(mut alerts) = tx.get_record::<Alerts>(key.clone()).await? else {
            return Ok(());
        };
        let Some(target) = self
            .alert_target(&mut tx, &alerts.user, &alerts.event_id)
            .await?
        else {
            tx.delete(key);
            if tx.commit().await?.is_some() {
                report.removed += 1;
            }
            return Ok(());
        };
        let now_ms = self.env.now_ms();
        let sent_up_to = alerts.sent_up_to_ms;
        // Alerts due in (sent_up_to, now]: sent, unless older than the grace period.
        let window_start = sent_up_to.max(now_ms.saturating_sub(grace_ms));
        let window_end = now_ms.saturating_add(lookahead_ms);
        if window_start >= window_end {
            // Sent up to beyond the look-ahead: this server's clock is behind the one that
            // sent them (a step back, a failover). Nothing is due here until it catches up.
            return Ok(());
        }
        let mut due = Vec::new();
        for &minutes in &alerts.minutes_before {
            let before_ms = i64::from(minutes) * 60_000;
            let occurrences = target
                .schedule
                .expand(
                    window_start.saturating_add(before_ms),
                    window_end.saturating_add(before_ms).saturating_add(1),
                    OCCURRENCES_PER_PASS_MAX,
                )
                .map_err(|error| AgendaError::invalid("schedule", error.to_string()))?;
            for occurrence in occurrences {
                let due_ms = occurrence.start_ms - before_ms;
                if due_ms <= window_start || target.declined(&occurrence.id) {
                    continue;
                }
                if due_ms > now_ms {
                    report.next_due_ms =
                        Some(report.next_due_ms.map_or(due_ms, |next| next.min(due_ms)));
                    continue;
                }
                due.push(Fired {
                    occurrence: occurrence.id,
                    start_ms: occurrence.start_ms,
                    minutes_before: minutes,
                    due_ms,
                    sent_ms: now_ms,
                    title: target.title(&occurrence.id),
                    // A scheduler wakes at the due instant: a few seconds' slack (a pass over
                    // many records, a failover's election) is not late.
                    late: now_ms - due_ms > LATE_AFTER_MS,
                });
            }
        }
        let stale = if sent_up_to < window_start {
            // Counted over a week back at most, so that a quiet record costs a bounded
            // expansion per pass.
            let from = sent_up_to.max(window_start.saturating_sub(STALE_COUNTED_MS));
            self.stale_alerts(&alerts, &target, from, window_start)
        } else {
            0
        };
        if due.is_empty() && stale == 0 {
            return Ok(());
        }
        due.sort_by_key(|fired| (fired.due_ms, fired.minutes_before));
        let fired = due.len();
        let fired_late = due.iter().filter(|fired| fired.late).count();
        alerts.sent_up_to_ms = now_ms;
        alerts.fired_count += fired as u64;
        // `fired` is what this write sent: empty when it only moves past stale alerts, so that
        // a subscriber never sees an alert twice.
        alerts.fired = due;
        tx.put_record(key, &alerts);
        match tx.commit().await? {
            Some(_) => {
                report.fired += fired;
                report.fired_late += fired_late;
                report.stale += stale;
                Ok(())
            }
            // Someone changed the record (the user, or another scheduler that sent these).
            None => Err(AgendaError::Contended(format!(
                "alerts of {} on {}",
                alerts.user, alerts.event_id
            ))),
        }
    }

    /// How many alerts fell in `(from_ms, to_ms]` and were dropped as stale (counted up to
    /// [`OCCURRENCES_PER_PASS_MAX`] per alert).
    fn stale_alerts(&self, alerts: &Alerts, target: &Target, from_ms: i64, to_ms: i64) -> usize {
        let mut stale = 0;
        for &minutes in &alerts.minutes_before {
            let before_ms = i64::from(minutes) * 60_000;
            let from = from_ms.saturating_add(before_ms);
            let to = to_ms.saturating_add(before_ms).saturating_add(1);
            if let Ok(occurrences) = target.schedule.expand(from, to, OCCURRENCES_PER_PASS_MAX) {
                stale += occurrences
                    .iter()
                    .filter(|o| o.start_ms - before_ms > from_ms && o.start_ms - before_ms <= to_ms)
                    .filter(|o| !target.declined(&o.id))
                    .count();
            }
        }
        stale
    }

    /// Refuses a new alert record for a user who has [`ALERT_RECORDS_MAX`] already (every
    /// record costs the scheduler a read per pass).
    async fn check_alert_records(&self, user: &str) -> Result<(), AgendaError> {
        let prefix = keys::alerts_of(user);
        let limit = ALERT_RECORDS_MAX as u32;
        let scanned = self
            .store
            .scan(prefix.clone(), prefix_end(&prefix), limit)
            .await?;
        if scanned.entries.len() >= ALERT_RECORDS_MAX {
            return Err(AgendaError::invalid(
                "alerts",
                format!("at most {ALERT_RECORDS_MAX} events with alerts per user"),
            ));
        }
        Ok(())
    }

    /// Every alert record of a user (their alerts on every event).
    pub async fn all_alerts(&self, caller: &str) -> Result<Vec<Alerts>, AgendaError> {
        scan_prefix(&self.store, &keys::alerts_of(caller))
            .await?
            .into_iter()
            .map(|(key, found)| decode(&key, &found.value))
            .collect()
    }
}
