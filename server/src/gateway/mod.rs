//! The gateway's pub/sub core: changes as they are applied, per-shard history, channels,
//! subscriptions, resume, and one bounded queue per connection. No WebSocket here (that is
//! `api/ws.rs`, outside the simulator): the simulator runs this code with the real servers.
//!
//! How a change travels:
//!
//! 1. The node loop applies a committed entry and [`Gateway::publish`]es its changes with its
//!    position (shard, log index): an append to the shard's [`History`] under a short lock,
//!    and a wake-up. It never waits on a subscriber.
//! 2. The dispatcher task takes what is new in every history, encodes each change once per
//!    channel that carries it, and pushes the shared frames into the [`Outbox`] of every
//!    subscriber of that channel. A full outbox closes it (a slow consumer), never waits.
//! 3. The connection's writer takes its outbox's frames and writes them to the socket.
//!
//! A subscriber that comes back with its last positions ([`Gateway::subscribe`] with `from`)
//! is sent what it missed from the history, then the live changes, with no gap and no
//! duplicate: both happen under the registry's lock, which the dispatcher also holds while it
//! delivers. A position the history no longer covers gets a `resync`; a position this replica
//! has not reached yet waits for it (positions are the same on every replica, which apply the
//! same log).

mod channel;
pub mod frames;
mod history;
mod outbox;
pub mod session;

pub use channel::{CHANNEL_BYTES_MAX, Channel, ChannelError};
pub use frames::{Position, Positions};
pub use history::{Event, Gone, History};
pub use outbox::{CloseReason, Outbox, Outgoing, Pushed};
pub use session::{
    AGENDA_ANSWER_BYTES_MAX, AgendaAnswer, AgendaCall, AgendaCalls, AnswerBody, Session,
};

use crate::config::GatewayLimits;
use crate::metrics::Metrics;
use crate::shard::ShardMap;
use bytes::Bytes;
use client::ShardId;
use kv::Change;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Identifies one connection's subscriptions.
pub type SubscriberId = u64;

/// Why a subscription was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The connection already listens to the channel.
    #[error("already subscribed to {0}")]
    AlreadySubscribed(String),
    /// This server holds no replica of a shard the channel covers.
    #[error(
        "server {server} holds no replica of shard {shard}; subscribe through a server that does"
    )]
    NotHosted {
        /// This server.
        server: u64,
        /// The shard.
        shard: ShardId,
    },
}

/// The gateway of one server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    server_id: u64,
    shard_map: ShardMap,
    limits: GatewayLimits,
    metrics: Arc<Metrics>,
    /// Locked by the node loop (briefly) and by the dispatcher and subscribers, after the
    /// registry: the lock order is registry, then histories.
    histories: Mutex<BTreeMap<ShardId, History>>,
    registry: Mutex<Registry>,
    wake: Notify,
    next_subscriber: AtomicU64,
}

/// Who listens to what, and how far the dispatcher has delivered.
#[derive(Debug, Default)]
struct Registry {
    /// The last index of each shard whose changes were delivered to the live subscribers.
    dispatched: BTreeMap<ShardId, u64>,
    /// `kv:PREFIX` channels by prefix.
    kv: BTreeMap<Bytes, Listeners>,
    /// `shard:ID` channels by shard.
    shards: BTreeMap<ShardId, Listeners>,
    /// The agenda's channels (`user:`, `group:`, `event:`), each over a few prefixes.
    named: BTreeMap<Channel, Listeners>,
    /// The agenda channels by each prefix they carry.
    named_by_prefix: BTreeMap<Bytes, Vec<Channel>>,
}

#[derive(Debug)]
struct Listeners {
    /// The channel's name, as frames carry it.
    name: String,
    subscribers: BTreeMap<SubscriberId, Subscriber>,
}

#[derive(Debug)]
struct Subscriber {
    outbox: Outbox,
    /// The last index of each covered shard delivered to (or already seen by) this
    /// subscriber: only later changes are pushed.
    cursors: Positions,
}

impl Registry {
    fn listeners(&self, channel: &Channel) -> Option<&Listeners> {
        match channel {
            Channel::Kv(prefix) => self.kv.get(prefix),
            Channel::Shard(shard) => self.shards.get(shard),
            _ => self.named.get(channel),
        }
    }

    fn listeners_mut(&mut self, channel: &Channel) -> Option<&mut Listeners> {
        match channel {
            Channel::Kv(prefix) => self.kv.get_mut(prefix),
            Channel::Shard(shard) => self.shards.get_mut(shard),
            _ => self.named.get_mut(channel),
        }
    }

    fn listeners_entry(&mut self, channel: &Channel, name: &str) -> &mut Listeners {
        let new = || Listeners {
            name: name.to_owned(),
            subscribers: BTreeMap::new(),
        };
        match channel {
            Channel::Kv(prefix) => self.kv.entry(prefix.clone()).or_insert_with(new),
            Channel::Shard(shard) => self.shards.entry(*shard).or_insert_with(new),
            _ => {
                if !self.named.contains_key(channel) {
                    for prefix in channel.prefixes() {
                        self.named_by_prefix
                            .entry(prefix)
                            .or_default()
                            .push(channel.clone());
                    }
                }
                self.named.entry(channel.clone()).or_insert_with(new)
            }
        }
    }

    fn remove(&mut self, channel: &Channel, subscriber: SubscriberId) -> bool {
        let Some(listeners) = self.listeners_mut(channel) else {
            return false;
        };
        let removed = listeners.subscribers.remove(&subscriber).is_some();
        if listeners.subscribers.is_empty() {
            match channel {
                Channel::Kv(prefix) => {
                    self.kv.remove(prefix);
                }
                Channel::Shard(shard) => {
                    self.shards.remove(shard);
                }
                _ => {
                    self.named.remove(channel);
                    for prefix in channel.prefixes() {
                        if let Some(channels) = self.named_by_prefix.get_mut(&prefix) {
                            channels.retain(|held| held != channel);
                            if channels.is_empty() {
                                self.named_by_prefix.remove(&prefix);
                            }
                        }
                    }
                }
            }
        }
        removed
    }
}

/// Counts a push: `frames` notifications queued, or a slow consumer dropped.
pub(crate) fn count_push(counters: &crate::metrics::Counters, pushed: Pushed, frames: u64) {
    match pushed {
        Pushed::Queued => Metrics::add(&counters.ws_notifications, frames),
        Pushed::Overflowed => Metrics::add(&counters.ws_slow_consumers, 1),
        Pushed::Closed => {}
    }
}

/// Whether `channel` carries a change of `key` in `shard`.
fn carries(channel: &Channel, shard: ShardId, key: &[u8]) -> bool {
    match channel {
        Channel::Kv(prefix) => key.starts_with(prefix),
        Channel::Shard(carried) => *carried == shard,
        _ => channel
            .prefixes()
            .iter()
            .any(|prefix| key.starts_with(prefix)),
    }
}

impl Gateway {
    /// A gateway with no shard open yet.
    pub fn new(
        server_id: u64,
        shard_map: ShardMap,
        limits: GatewayLimits,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                server_id,
                shard_map,
                limits,
                metrics,
                histories: Mutex::new(BTreeMap::new()),
                registry: Mutex::new(Registry::default()),
                wake: Notify::new(),
                next_subscriber: AtomicU64::new(1),
            }),
        }
    }

    /// The shard map.
    pub fn shard_map(&self) -> &ShardMap {
        &self.inner.shard_map
    }

    /// The limits.
    pub fn limits(&self) -> &GatewayLimits {
        &self.inner.limits
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// This server's id.
    pub fn server_id(&self) -> u64 {
        self.inner.server_id
    }

    fn new_history(&self, applied: u64) -> History {
        let limits = &self.inner.limits;
        History::new(applied, limits.history_entries, limits.history_bytes)
    }

    // ---- the node loop's side --------------------------------------------------------------

    /// A local replica of `shard` exists and has applied up to `applied` (at start: its
    /// snapshot): changes after it are published from now on.
    pub fn open_shard(&self, shard: ShardId, applied: u64) {
        let mut histories = self.inner.histories.lock().expect("histories lock");
        histories
            .entry(shard)
            .or_insert_with(|| self.new_history(applied));
    }

    /// The local replica of `shard` applied the entries `events` (index and the changes each
    /// made, in index order) and is now applied up to `applied`. Never waits on subscribers.
    pub fn publish(&self, shard: ShardId, events: Vec<(u64, Vec<Change>)>, applied: u64) {
        {
            let mut histories = self.inner.histories.lock().expect("histories lock");
            let first = events.first().map_or(applied, |(index, _)| *index);
            let history = histories
                .entry(shard)
                .or_insert_with(|| self.new_history(first.saturating_sub(1)));
            for (index, changes) in events {
                if index > history.head() {
                    history.append(index, changes);
                }
            }
            if applied > history.head() {
                history.append(applied, Vec::new());
            }
        }
        self.inner.wake.notify_one();
    }

    /// The local replica of `shard` installed a snapshot at `index`: the changes before it
    /// cannot be replayed from here; live subscribers that missed some are told to resync.
    pub fn snapshot_installed(&self, shard: ShardId, index: u64) {
        {
            let mut histories = self.inner.histories.lock().expect("histories lock");
            histories
                .entry(shard)
                .or_insert_with(|| self.new_history(index))
                .reset(index);
        }
        self.inner.wake.notify_one();
    }

    // ---- the dispatcher -----------------------------------------------------------------

    /// Delivers what the node loop publishes until `shutdown`.
    pub async fn run_dispatcher(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.inner.wake.notified() => self.dispatch(),
            }
        }
    }

    /// Delivers every change published since the last call to the live subscribers.
    pub fn dispatch(&self) {
        let mut registry = self.inner.registry.lock().expect("registry lock");
        let mut gaps = Vec::new();
        let mut pending = Vec::new();
        {
            let histories = self.inner.histories.lock().expect("histories lock");
            for (shard, history) in histories.iter() {
                let dispatched = registry.dispatched.entry(*shard).or_insert(history.floor());
                let events = match history.between(*dispatched, history.head()) {
                    Ok(events) => events,
                    Err(gone) => {
                        gaps.push((*shard, gone.floor));
                        history
                            .between(gone.floor, history.head())
                            .expect("the floor is always covered")
                    }
                };
                *dispatched = history.head();
                if !events.is_empty() {
                    pending.push((*shard, events));
                }
            }
        }
        for (shard, floor) in gaps {
            self.resync_behind(&mut registry, shard, floor);
        }
        for (shard, events) in pending {
            for event in events {
                self.deliver(&mut registry, shard, &event);
            }
        }
    }

    /// Tells every live subscriber of `shard` whose cursor is below `floor` to resync (the
    /// changes in between are gone) and moves its cursor there.
    fn resync_behind(&self, registry: &mut Registry, shard: ShardId, floor: u64) {
        let channels = registry
            .kv
            .values_mut()
            .chain(registry.shards.values_mut())
            .chain(registry.named.values_mut());
        for listeners in channels {
            self.resync_listeners(listeners, shard, floor);
        }
    }

    /// Tells the subscribers of one channel whose cursor on `shard` is below `floor` to
    /// resync, and moves their cursor there.
    fn resync_listeners(&self, listeners: &mut Listeners, shard: ShardId, floor: u64) {
        let counters = &self.inner.metrics.counters;
        for subscriber in listeners.subscribers.values_mut() {
            match subscriber.cursors.get_mut(&shard) {
                Some(cursor) if *cursor < floor => *cursor = floor,
                _ => continue,
            }
            let frame = frames::resync(&listeners.name, &subscriber.cursors);
            Metrics::add(&counters.ws_resyncs, 1);
            count_push(counters, subscriber.outbox.push(Outgoing::Frame(frame)), 1);
        }
    }

    /// Pushes one entry's changes to every subscriber of a channel that carries them: one
    /// encoding per channel, shared by its subscribers.
    fn deliver(&self, registry: &mut Registry, shard: ShardId, event: &history::Event) {
        let position = Position {
            shard,
            index: event.index,
        };
        let mut by_prefix: BTreeMap<Bytes, Vec<&kv::Change>> = BTreeMap::new();
        for change in &event.changes {
            for length in 0..=change.key.len() {
                if let Some((prefix, _)) = registry.kv.get_key_value(&change.key[..length]) {
                    by_prefix.entry(prefix.clone()).or_default().push(change);
                }
            }
        }
        for (prefix, changes) in by_prefix {
            if let Some(listeners) = registry.kv.get_mut(&prefix) {
                self.push_entry(listeners, position, &changes);
            }
        }
        // An agenda channel carries a change once, whichever of its prefixes it is under.
        let mut by_channel: BTreeMap<&Channel, Vec<&kv::Change>> = BTreeMap::new();
        for change in &event.changes {
            for length in 0..=change.key.len() {
                if let Some(channels) = registry.named_by_prefix.get(&change.key[..length]) {
                    for channel in channels {
                        let changes = by_channel.entry(channel).or_default();
                        if !changes
                            .last()
                            .is_some_and(|last| std::ptr::eq(*last, change))
                        {
                            changes.push(change);
                        }
                    }
                }
            }
        }
        let by_channel: Vec<(Channel, Vec<&kv::Change>)> = by_channel
            .into_iter()
            .map(|(channel, changes)| (channel.clone(), changes))
            .collect();
        for (channel, changes) in by_channel {
            if let Some(listeners) = registry.named.get_mut(&channel) {
                self.push_entry(listeners, position, &changes);
            }
        }
        if !event.changes.is_empty()
            && let Some(listeners) = registry.shards.get_mut(&shard)
        {
            let changes: Vec<&kv::Change> = event.changes.iter().collect();
            self.push_entry(listeners, position, &changes);
        }
    }

    /// Pushes one entry's `changes` on a channel to its subscribers; an entry with more
    /// changes than a connection may queue (a large delete-range) cannot be delivered to
    /// anyone, so they are told to resync instead of being dropped as slow consumers.
    fn push_entry(&self, listeners: &mut Listeners, position: Position, changes: &[&kv::Change]) {
        if changes.len() > self.inner.limits.queue_frames {
            self.resync_listeners(listeners, position.shard, position.index);
            return;
        }
        let frames = frames::entry_changes(&listeners.name, position, changes);
        self.push_to(listeners, position, frames);
    }

    fn push_to(&self, listeners: &mut Listeners, position: Position, frames: Vec<Bytes>) {
        let counters = &self.inner.metrics.counters;
        let count = frames.len() as u64;
        let shared: Arc<[Bytes]> = Arc::from(frames);
        for subscriber in listeners.subscribers.values_mut() {
            let Some(cursor) = subscriber.cursors.get_mut(&position.shard) else {
                continue;
            };
            if *cursor >= position.index {
                // It saw this entry already (it resumed from a later position).
                continue;
            }
            *cursor = position.index;
            let pushed = subscriber.outbox.push(Outgoing::Shared(shared.clone()));
            count_push(counters, pushed, count);
        }
    }

    // ---- subscribers --------------------------------------------------------------------

    /// A new subscriber id, for a new connection.
    pub fn new_subscriber(&self) -> SubscriberId {
        self.inner.next_subscriber.fetch_add(1, Ordering::Relaxed)
    }

    /// Subscribes `subscriber` to `channel` (called `name` in frames), pushing into `outbox`:
    /// first `subscribed` with the positions after which changes follow, then (resuming from
    /// `from`) what was missed, or `resync` when that is gone, then the live changes.
    ///
    /// # Errors
    /// A channel already subscribed, or one covering a shard with no replica here.
    pub fn subscribe(
        &self,
        subscriber: SubscriberId,
        outbox: &Outbox,
        channel: &Channel,
        name: &str,
        from: Option<&Positions>,
    ) -> Result<(), SubscribeError> {
        let shards = channel.shards(&self.inner.shard_map);
        let mut registry = self.inner.registry.lock().expect("registry lock");
        if registry
            .listeners(channel)
            .is_some_and(|listeners| listeners.subscribers.contains_key(&subscriber))
        {
            return Err(SubscribeError::AlreadySubscribed(name.to_owned()));
        }
        let plan = self.plan(&mut registry, channel, &shards, from, outbox.room())?;
        let counters = &self.inner.metrics.counters;
        outbox.push(Outgoing::Frame(frames::subscribed(name, &plan.start)));
        if plan.resync {
            Metrics::add(&counters.ws_resyncs, 1);
            outbox.push(Outgoing::Frame(frames::resync(name, &plan.cursors)));
        }
        for (shard, event) in &plan.replay {
            let position = Position {
                shard: *shard,
                index: event.index,
            };
            let changes: Vec<&kv::Change> = event
                .changes
                .iter()
                .filter(|change| carries(channel, *shard, &change.key))
                .collect();
            let frames = frames::entry_changes(name, position, &changes);
            if !frames.is_empty() {
                let count = frames.len() as u64;
                count_push(
                    counters,
                    outbox.push(Outgoing::Shared(Arc::from(frames))),
                    count,
                );
            }
        }
        let listeners = registry.listeners_entry(channel, name);
        listeners.subscribers.insert(
            subscriber,
            Subscriber {
                outbox: outbox.clone(),
                cursors: plan.cursors,
            },
        );
        Ok(())
    }

    /// Where a new subscription starts, per shard, and what it replays (see `subscribe`).
    fn plan(
        &self,
        registry: &mut Registry,
        channel: &Channel,
        shards: &[ShardId],
        from: Option<&Positions>,
        room: usize,
    ) -> Result<Plan, SubscribeError> {
        let histories = self.inner.histories.lock().expect("histories lock");
        let mut plan = Plan::default();
        let mut live = Positions::new();
        for shard in shards {
            let Some(history) = histories.get(shard) else {
                return Err(SubscribeError::NotHosted {
                    server: self.inner.server_id,
                    shard: *shard,
                });
            };
            // The live stream stands where the dispatcher delivered up to.
            let dispatched = *registry.dispatched.entry(*shard).or_insert(history.floor());
            live.insert(*shard, dispatched);
            let seen = match from {
                None => dispatched,
                Some(from) => match from.get(shard) {
                    Some(seen) => *seen,
                    None => {
                        plan.resync = true;
                        dispatched
                    }
                },
            };
            plan.start.insert(*shard, seen);
            plan.cursors.insert(*shard, seen.max(dispatched));
            match history.between(seen, dispatched) {
                Ok(events) => plan
                    .replay
                    .extend(events.into_iter().map(|event| (*shard, event))),
                Err(Gone { .. }) => plan.resync = true,
            }
        }
        // The node loop publishes under this lock: counting the replay goes on without it.
        drop(histories);
        let replay_frames: usize = plan
            .replay
            .iter()
            .map(|(shard, event)| {
                let carried = |change: &&Change| carries(channel, *shard, &change.key);
                event.changes.iter().filter(carried).count()
            })
            .sum();
        // Room for `subscribed` and `resync` too: a replay that does not fit the connection's
        // queue is a resync (the client refetches) rather than a slow-consumer drop.
        if replay_frames + 2 > room {
            plan.resync = true;
        }
        if plan.resync {
            // Every shard goes on from where the live stream stands, except one the client
            // has seen further than this server delivered (it came from a server ahead of this
            // one): a position never moves back, so no change reaches a client twice.
            plan.replay.clear();
            for (shard, position) in &mut live {
                let seen = from.and_then(|from| from.get(shard)).copied();
                *position = seen.map_or(*position, |seen| seen.max(*position));
            }
            plan.cursors = live.clone();
            plan.start = live;
        }
        Ok(plan)
    }

    /// Ends one subscription; false if there was none.
    pub fn unsubscribe(&self, subscriber: SubscriberId, channel: &Channel) -> bool {
        let mut registry = self.inner.registry.lock().expect("registry lock");
        registry.remove(channel, subscriber)
    }

    /// Ends every subscription of `subscriber` (its connection closed).
    pub fn remove(&self, subscriber: SubscriberId, channels: &[Channel]) {
        let mut registry = self.inner.registry.lock().expect("registry lock");
        for channel in channels {
            registry.remove(channel, subscriber);
        }
    }

    /// How many subscriptions are live (a gauge).
    pub fn subscriptions(&self) -> usize {
        let registry = self.inner.registry.lock().expect("registry lock");
        let count = |listeners: &Listeners| listeners.subscribers.len();
        registry.kv.values().map(count).sum::<usize>()
            + registry.shards.values().map(count).sum::<usize>()
            + registry.named.values().map(count).sum::<usize>()
    }

    /// The last index of `shard` this replica published (None: no local replica).
    pub fn applied(&self, shard: ShardId) -> Option<u64> {
        let histories = self.inner.histories.lock().expect("histories lock");
        histories.get(&shard).map(History::head)
    }
}

/// How a subscription starts.
#[derive(Debug, Default)]
struct Plan {
    /// What `subscribed` says: the positions after which this subscriber's changes follow.
    start: Positions,
    /// The registered cursors (after the replay).
    cursors: Positions,
    /// The events to send again, per shard in index order.
    replay: Vec<(ShardId, Arc<Event>)>,
    /// Whether the subscriber must refetch (something it missed is gone).
    resync: bool,
}

#[cfg(test)]
mod tests;
