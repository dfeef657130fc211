//! Subscribers of the gateway on machines of their own, and the checker of what they saw.
//!
//! A subscriber speaks the gateway's protocol over the native client port (the same session
//! the WebSocket endpoint runs), subscribes to one channel, and every few seconds leaves its
//! server for another one, resuming from the last position it saw; kills, partitions and
//! failovers break its connections too. What it saw is checked at the end against the changes
//! every replica reported as it applied them:
//!
//! - only committed changes: each change frame is the change of an entry some replica had
//!   already applied when the frame arrived, with its key and value;
//! - in log order per shard, every change of an entry together, none twice;
//! - no gap: between two entries a subscriber saw, it missed none of the channel's entries,
//!   across reconnections to other servers (unless the server said `resync`, which moves the
//!   subscriber's position forward without the entries in between);
//! - it catches up: once the cluster is healed, every subscriber reaches the last change of
//!   every shard.

use client::ShardId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One change as a subscriber received it or a replica applied it: the key and its new
/// value (`None`: deleted).
pub type Change = (String, Option<String>);

/// What one subscriber saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection was opened and the subscription answered.
    Subscribed {
        /// The server (its id).
        server: usize,
        /// The position the subscriber resumed from (`None` the first time).
        resumed_from: Option<Positions>,
        /// The server's answer: changes after these positions follow.
        at: Positions,
    },
    /// A change frame.
    Change {
        /// The shard of its entry.
        shard: ShardId,
        /// Its entry's log index.
        index: u64,
        /// The key and its new value.
        change: Change,
        /// Whether it is the last change of its entry on the channel.
        last: bool,
        /// Whether some replica had applied the entry when the frame arrived (a change must
        /// never be published before it is committed and applied).
        applied_on_receipt: bool,
    },
    /// The server no longer holds what the subscriber missed.
    Resync {
        /// The positions it goes on from.
        at: Positions,
    },
    /// The connection ended (or was left).
    Disconnected,
}

/// Which keys of which shard a channel carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// `kv:PREFIX`.
    Prefix(String),
    /// `shard:ID`.
    Shard(ShardId),
}

impl Channel {
    /// The channel's name in the protocol.
    pub fn name(&self) -> String {
        match self {
            Channel::Prefix(prefix) => format!("kv:{prefix}"),
            Channel::Shard(shard) => format!("shard:{shard}"),
        }
    }

    fn carries(&self, shard: ShardId, key: &str) -> bool {
        match self {
            Channel::Prefix(prefix) => key.starts_with(prefix.as_str()),
            Channel::Shard(id) => *id == shard,
        }
    }
}

/// One subscriber's record; clones share it.
#[derive(Debug, Clone)]
pub struct Feed {
    channel: Channel,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Feed {
    /// An empty record of a subscriber to `channel`.
    pub fn new(channel: Channel) -> Feed {
        Feed {
            channel,
            events: Arc::default(),
        }
    }

    /// Records the next event (as the subscriber receives it).
    pub fn push(&self, event: Event) {
        self.events.lock().expect("feed lock").push(event);
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("feed lock").clone()
    }

    /// Change frames received.
    pub fn changes(&self) -> usize {
        let events = self.events.lock().expect("feed lock");
        events
            .iter()
            .filter(|event| matches!(event, Event::Change { .. }))
            .count()
    }

    /// Subscriptions that resumed from a position.
    pub fn resumes(&self) -> usize {
        let events = self.events.lock().expect("feed lock");
        events
            .iter()
            .filter(|event| {
                matches!(
                    event,
                    Event::Subscribed {
                        resumed_from: Some(_),
                        ..
                    }
                )
            })
            .count()
    }

    /// The channel subscribed to.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// The changes of every applied entry that changed something, per shard and index, as the
/// first replica to apply it reported them.
pub type Applied = BTreeMap<ShardId, BTreeMap<u64, Vec<Change>>>;

/// A subscriber's place after replaying its events: the last entry it saw whole, per shard.
pub type Positions = BTreeMap<ShardId, u64>;

/// The entries `channel` carries, with only the changes it carries.
fn carried(channel: &Channel, applied: &Applied) -> Applied {
    applied
        .iter()
        .map(|(&shard, entries)| {
            let entries = entries
                .iter()
                .filter_map(|(&index, changes)| {
                    let changes: Vec<Change> = changes
                        .iter()
                        .filter(|(key, _)| channel.carries(shard, key))
                        .cloned()
                        .collect();
                    (!changes.is_empty()).then_some((index, changes))
                })
                .collect();
            (shard, entries)
        })
        .collect()
}

/// Per shard, the index of the last entry applied so far that `channel` carries.
pub fn last_carried(channel: &Channel, applied: &Applied) -> Positions {
    carried(channel, applied)
        .into_iter()
        .filter_map(|(shard, entries)| Some((shard, *entries.keys().next_back()?)))
        .collect()
}

/// Replays a subscriber's events against what the replicas applied.
///
/// # Errors
/// The first event that shows a change never applied, one out of order or twice, or an entry
/// missed without a `resync`.
pub fn check(feed: &Feed, applied: &Applied) -> Result<Positions, String> {
    let name = feed.channel().name();
    let carried = carried(feed.channel(), applied);
    let mut positions: Option<Positions> = None;
    // The entry being received: its shard, index, and the changes so far.
    let mut partial: Option<(ShardId, u64, Vec<Change>)> = None;
    // A resume answered with other positions than it asked for: a resync to them must follow.
    let mut resync_due: Option<Positions> = None;
    for (number, event) in feed.events().into_iter().enumerate() {
        let at_event = |what: String| format!("{name}, event {number}: {what}");
        if let Some(due) = resync_due.take()
            && !matches!(&event, Event::Resync { at } if *at == due)
        {
            return Err(at_event(format!(
                "a resume answered with changes after {due:?} was not followed by a resync to them, but by {event:?}"
            )));
        }
        match event {
            Event::Subscribed {
                server: _,
                resumed_from,
                at,
            } => {
                partial = None;
                match (&resumed_from, &positions) {
                    (Some(from), _) if *from != at => resync_due = Some(at),
                    (None, None) => positions = Some(at),
                    (None, Some(_)) | (Some(_), None) => {
                        return Err(at_event("the subscriber lost its place".into()));
                    }
                    (Some(_), Some(_)) => {}
                }
            }
            Event::Change {
                shard,
                index,
                change,
                last,
                applied_on_receipt,
            } => {
                if !applied_on_receipt {
                    return Err(at_event(format!(
                        "shard {shard} entry {index} arrived before any replica applied it"
                    )));
                }
                let Some(positions) = positions.as_mut() else {
                    return Err(at_event("a change before any subscription".into()));
                };
                let seen = positions.get(&shard).copied().unwrap_or(0);
                if index <= seen {
                    return Err(at_event(format!(
                        "shard {shard} entry {index} again (already saw up to {seen}): a duplicate or out of order"
                    )));
                }
                let Some(expected) = carried.get(&shard).and_then(|entries| entries.get(&index))
                else {
                    return Err(at_event(format!(
                        "shard {shard} entry {index} ({change:?}) was never applied with a change on this channel"
                    )));
                };
                let mut changes = match partial.take() {
                    Some((partial_shard, partial_index, changes))
                        if (partial_shard, partial_index) == (shard, index) =>
                    {
                        changes
                    }
                    Some((partial_shard, partial_index, _)) => {
                        return Err(at_event(format!(
                            "shard {shard} entry {index} began before shard {partial_shard} entry {partial_index} ended"
                        )));
                    }
                    None => Vec::new(),
                };
                changes.push(change);
                if !last {
                    partial = Some((shard, index, changes));
                    continue;
                }
                if changes != *expected {
                    return Err(at_event(format!(
                        "shard {shard} entry {index} carried {changes:?}, the replicas applied {expected:?}"
                    )));
                }
                let skipped = carried
                    .get(&shard)
                    .and_then(|entries| entries.range(seen + 1..index).next());
                if let Some((missed, _)) = skipped {
                    return Err(at_event(format!(
                        "shard {shard}: entry {missed} was missed between {seen} and {index}"
                    )));
                }
                positions.insert(shard, index);
            }
            Event::Resync { at } => {
                partial = None;
                let Some(positions) = positions.as_mut() else {
                    return Err(at_event("a resync before any subscription".into()));
                };
                for (&shard, &index) in &at {
                    let seen = positions.get(&shard).copied().unwrap_or(0);
                    if index < seen {
                        return Err(at_event(format!(
                            "a resync moved shard {shard} back from {seen} to {index}"
                        )));
                    }
                    positions.insert(shard, index);
                }
            }
            Event::Disconnected => partial = None,
        }
    }
    Ok(positions.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Change {
        (key.into(), Some(value.into()))
    }

    /// Shard 1 applied entries 3 (two changes), 5 and 8 with changes; 4, 6 and 7 changed
    /// nothing (no-ops, or keys of no interest to the channel).
    fn applied() -> Applied {
        BTreeMap::from([(
            1,
            BTreeMap::from([
                (3, vec![put("us/a", "1"), put("us/b", "1")]),
                (5, vec![put("us/a", "2")]),
                (6, vec![put("gr/x", "1")]),
                (8, vec![(String::from("us/b"), None)]),
            ]),
        )])
    }

    fn change(index: u64, change: Change, last: bool) -> Event {
        Event::Change {
            shard: 1,
            index,
            change,
            last,
            applied_on_receipt: true,
        }
    }

    fn subscribed(resumed_from: Option<u64>, at: u64) -> Event {
        Event::Subscribed {
            server: 1,
            resumed_from: resumed_from.map(|index| BTreeMap::from([(1, index)])),
            at: BTreeMap::from([(1, at)]),
        }
    }

    fn feed(events: Vec<Event>) -> Feed {
        let feed = Feed::new(Channel::Prefix("us/".into()));
        for event in events {
            feed.push(event);
        }
        feed
    }

    #[test]
    fn a_subscriber_that_saw_every_entry_in_order_across_a_resume_passes() {
        let events = vec![
            subscribed(None, 2),
            change(3, put("us/a", "1"), false),
            // Cut off in the middle of entry 3: it comes again, whole, after the resume.
            Event::Disconnected,
            subscribed(Some(2), 2),
            change(3, put("us/a", "1"), false),
            change(3, put("us/b", "1"), true),
            change(5, put("us/a", "2"), true),
            Event::Disconnected,
            subscribed(Some(5), 5),
            change(8, (String::from("us/b"), None), true),
        ];
        let positions = check(&feed(events), &applied()).expect("a clean feed");
        assert_eq!(positions, BTreeMap::from([(1, 8)]));
        assert_eq!(
            last_carried(&Channel::Prefix("us/".into()), &applied())[&1],
            8
        );
        assert_eq!(
            last_carried(&Channel::Prefix("gr/".into()), &applied())[&1],
            6
        );
    }

    #[test]
    fn a_missed_entry_a_duplicate_and_a_change_never_applied_are_caught() {
        let gap = vec![
            subscribed(None, 2),
            change(3, put("us/a", "1"), false),
            change(3, put("us/b", "1"), true),
            change(8, (String::from("us/b"), None), true),
        ];
        let error = check(&feed(gap), &applied()).expect_err("entry 5 missed");
        assert!(error.contains("entry 5 was missed"), "{error}");

        let duplicate = vec![
            subscribed(None, 4),
            change(5, put("us/a", "2"), true),
            Event::Disconnected,
            subscribed(Some(5), 5),
            change(5, put("us/a", "2"), true),
        ];
        let error = check(&feed(duplicate), &applied()).expect_err("entry 5 twice");
        assert!(error.contains("again"), "{error}");

        let invented = vec![subscribed(None, 4), change(5, put("us/a", "3"), true)];
        let error = check(&feed(invented), &applied()).expect_err("a value never written");
        assert!(error.contains("the replicas applied"), "{error}");

        let uncommitted = vec![subscribed(None, 8), change(9, put("us/a", "3"), true)];
        let error = check(&feed(uncommitted), &applied()).expect_err("never applied");
        assert!(error.contains("never applied"), "{error}");

        // Applied later, but published before: caught at receipt.
        let early = vec![
            subscribed(None, 4),
            Event::Change {
                shard: 1,
                index: 5,
                change: put("us/a", "2"),
                last: true,
                applied_on_receipt: false,
            },
        ];
        let error = check(&feed(early), &applied()).expect_err("published before applied");
        assert!(error.contains("before any replica applied it"), "{error}");
    }

    #[test]
    fn a_resume_answered_elsewhere_needs_a_resync_that_never_moves_back() {
        let resynced = vec![
            subscribed(None, 2),
            Event::Disconnected,
            subscribed(Some(2), 5),
            Event::Resync {
                at: BTreeMap::from([(1, 5)]),
            },
            change(8, (String::from("us/b"), None), true),
        ];
        assert!(check(&feed(resynced), &applied()).is_ok());

        let silent = vec![
            subscribed(None, 2),
            Event::Disconnected,
            subscribed(Some(2), 5),
            change(8, (String::from("us/b"), None), true),
        ];
        let error = check(&feed(silent), &applied()).expect_err("skipped without a resync");
        assert!(error.contains("not followed by a resync"), "{error}");

        let backwards = vec![
            subscribed(None, 5),
            Event::Resync {
                at: BTreeMap::from([(1, 2)]),
            },
        ];
        let error = check(&feed(backwards), &applied()).expect_err("a resync back");
        assert!(error.contains("back"), "{error}");
    }
}
