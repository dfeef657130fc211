//! Delivery of the outbox: the work that crosses shards, done after the fact and idempotently.
//!
//! An events shard's outbox (`ev/<b>/!o/`) holds one record per delivery still to make: an
//! invitation copy for an attendee, or a reply for an organizer. [`Agenda::deliver`] copies each
//! into its destination (one transaction on the destination's shard), then removes it from the
//! outbox (one transaction on the outbox's shard, which compares the record's `mod_index`, so a
//! newer version written meanwhile stays to be delivered in its turn).
//!
//! A delivery can be cut anywhere (a crash, a lost answer) and is simply made again: the
//! destination keeps only the newest copy (an invitation's `sequence`, a reply's `revision`), so
//! a repeated or late delivery changes nothing. Whoever leads the outbox's shard runs the
//! delivery; a new leader finds the same records and resumes.

use bytes::Bytes;
use kv::Versioned;

use crate::Agenda;
use crate::error::AgendaError;
use crate::events::{Event, Invitation, InvitationCopy, Reply, Response};
use crate::keys;
use crate::store::{ATTEMPTS_MAX, Env, Store, Tx, decode};

/// What one pass over an outbox did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Records delivered and removed.
    pub delivered: usize,
    /// Records found already delivered (a newer copy was there) and removed.
    pub superseded: usize,
    /// Records that did not decode: left in place and reported (never dropped silently).
    pub corrupt: usize,
    /// Records whose delivery failed this pass (a store error, a destination refusing the
    /// write): left in place for the next pass; the others were still delivered.
    pub failed: usize,
    /// The last failure, for the log.
    pub last_error: Option<AgendaError>,
    /// Whether records remain beyond this pass's limit.
    pub more: bool,
}

enum Destination {
    Invitation { attendee: String },
    Reply,
}

fn destination(outbox: &[u8], key: &[u8]) -> Option<Destination> {
    let rest = std::str::from_utf8(key.strip_prefix(outbox)?).ok()?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["i", attendee, _] => Some(Destination::Invitation {
            attendee: (*attendee).to_owned(),
        }),
        ["r", _, _] => Some(Destination::Reply),
        _ => None,
    }
}

impl<S: Store, E: Env> Agenda<S, E> {
    /// Delivers up to `limit` records of the outbox of bucket `am` or `nz`.
    pub async fn deliver(&self, bucket: &str, limit: u32) -> Result<Delivered, AgendaError> {
        let outbox = keys::outbox(bucket);
        let scanned = self
            .store
            .scan(outbox.clone(), crate::store::prefix_end(&outbox), limit)
            .await?;
        let mut report = Delivered {
            more: scanned.more,
            ..Delivered::default()
        };
        // One record that cannot be delivered (its destination refuses it, or its shard has
        // no leader) must not hold back the others: each is tried on its own.
        for (key, versioned) in scanned.entries {
            match self.deliver_one(&outbox, &key, &versioned).await {
                Ok(Some(true)) => report.delivered += 1,
                Ok(Some(false)) => report.superseded += 1,
                Ok(None) => report.corrupt += 1,
                Err(error) => {
                    report.failed += 1;
                    report.last_error = Some(error);
                }
            }
        }
        Ok(report)
    }

    /// Delivers one outbox record and removes it: whether it wrote (`false`: a newer copy was
    /// there), or `None` if the record does not decode.
    async fn deliver_one(
        &self,
        outbox: &[u8],
        key: &Bytes,
        versioned: &Versioned,
    ) -> Result<Option<bool>, AgendaError> {
        let applied = match destination(outbox, key) {
            Some(Destination::Invitation { attendee }) => {
                match decode::<InvitationCopy>(key, &versioned.value) {
                    Ok(copy) => self.deliver_invitation(&attendee, copy).await?,
                    Err(_) => return Ok(None),
                }
            }
            Some(Destination::Reply) => match decode::<Reply>(key, &versioned.value) {
                Ok(reply) => self.deliver_reply(reply).await?,
                Err(_) => return Ok(None),
            },
            None => return Ok(None),
        };
        self.remove_delivered(key, versioned).await?;
        Ok(Some(applied))
    }

    /// Removes an outbox record if it is still the version delivered.
    async fn remove_delivered(
        &self,
        key: &Bytes,
        delivered: &Versioned,
    ) -> Result<(), AgendaError> {
        let mut tx = Tx::new(&self.store);
        if let Some(current) = tx.get(key.clone()).await?
            && current.mod_index == delivered.mod_index
        {
            tx.delete(key.clone());
            // If it changed since the read, the newer version stays for the next pass.
            tx.commit().await?;
        }
        Ok(())
    }

    /// Writes an invitation copy into the attendee's shard unless a copy as new is there.
    /// Returns whether it wrote.
    async fn deliver_invitation(
        &self,
        attendee: &str,
        copy: InvitationCopy,
    ) -> Result<bool, AgendaError> {
        let key = keys::invitation(attendee, &copy.event_id);
        for _ in 0..ATTEMPTS_MAX {
            let mut tx = Tx::new(&self.store);
            let stored = tx.get_record::<Invitation>(key.clone()).await?;
            let invitation = match stored {
                Some(stored)
                    if (stored.copy.created_ms, stored.copy.sequence)
                        >= (copy.created_ms, copy.sequence) =>
                {
                    return Ok(false);
                }
                Some(mut stored) => {
                    // Asked again (a new time or place), invited again after a removal, or to
                    // a new incarnation of the event: earlier answers do not stand.
                    let reinvited = stored.copy.cancelled && !copy.cancelled;
                    let reborn = copy.created_ms != stored.copy.created_ms;
                    if copy.asked_sequence > stored.copy.asked_sequence || reinvited || reborn {
                        stored.response = Response::NeedsAction;
                        stored.occurrence_responses.clear();
                    }
                    // Answers for occurrences that no longer exist are dropped.
                    let schedule = &copy.content.schedule;
                    stored
                        .occurrence_responses
                        .retain(|at, _| schedule.has_occurrence(at).unwrap_or(false));
                    stored.copy = copy.clone();
                    stored
                }
                None => Invitation {
                    copy: copy.clone(),
                    response: Response::NeedsAction,
                    occurrence_responses: Default::default(),
                    reply_revision: 0,
                },
            };
            tx.put_record(key.clone(), &invitation);
            if tx.commit().await?.is_some() {
                return Ok(true);
            }
        }
        Err(AgendaError::Contended(format!(
            "invitation of {attendee} to {}",
            copy.event_id
        )))
    }

    /// Writes a reply into the organizer's shard unless the event is gone or a reply as new is
    /// there. Returns whether it wrote.
    async fn deliver_reply(&self, reply: Reply) -> Result<bool, AgendaError> {
        let key = keys::reply(&reply.event_id, &reply.attendee);
        for _ in 0..ATTEMPTS_MAX {
            let mut tx = Tx::new(&self.store);
            let event = tx.get_record::<Event>(keys::event(&reply.event_id)).await?;
            let still_invited = event
                .as_ref()
                .is_some_and(|event| event.invited.binary_search(&reply.attendee).is_ok());
            if !still_invited {
                return Ok(false);
            }
            if let Some(stored) = tx.get_record::<Reply>(key.clone()).await?
                && stored.revision >= reply.revision
            {
                return Ok(false);
            }
            tx.put_record(key.clone(), &reply);
            if tx.commit().await?.is_some() {
                return Ok(true);
            }
        }
        Err(AgendaError::Contended(format!(
            "reply of {} to {}",
            reply.attendee, reply.event_id
        )))
    }
}
