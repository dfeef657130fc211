//! A simulated cluster for tests: nodes with durable and volatile state, a network whose links
//! can be cut, dropped, delayed, duplicated and reordered (at random from a seed, or message by
//! message through filters that drop or hold what a predicate selects), explicit time, and a
//! checker of the Raft invariants that runs after every step.
//!
//! Public behind the `testing` feature so that the simulator and other crates can reuse it.
//!
//! ```
//! use bytes::Bytes;
//! use raft_core::testing::Cluster;
//!
//! let mut cluster = Cluster::new(&[1, 2, 3]);
//! assert!(cluster.elect(1));
//! cluster.propose(1, Bytes::from_static(b"x")).unwrap();
//! cluster.stabilize();
//! for id in [1, 2, 3] {
//!     assert_eq!(cluster.state(id), [Bytes::from_static(b"x")]);
//! }
//! ```

use crate::{
    ConfState, Config, Entry, EntryKind, HardState, InitialState, Message, MessageBody, Node,
    NodeId, ProposeError, ReadState, Role, Snapshot,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

/// The group id every simulated node uses.
pub const GROUP_ID: u64 = 1;

/// The seed of the network's generator when a test gives none ([`Cluster::with_network_seed`]).
pub const NETWORK_SEED_DEFAULT: u64 = 0x5EED;

/// What survives a crash of one node.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    /// The persisted hard state.
    pub hard_state: HardState,
    /// The persisted snapshot.
    pub snapshot: Option<Snapshot>,
    /// The persisted entries after the snapshot.
    pub entries: Vec<Entry>,
}

/// A read the harness served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedRead {
    /// The id given to [`Cluster::read`].
    pub request_id: u64,
    /// The read index the node returned.
    pub index: u64,
    /// The number of application writes in the state the read observed.
    pub state_length: usize,
}

/// One simulated replica.
#[derive(Debug)]
pub struct SimNode {
    config: Config,
    bootstrap: ConfState,
    /// `None` while crashed.
    node: Option<Node>,
    durable: Durable,
    /// The application state: the data of every non-empty normal entry applied, in order.
    state: Vec<Bytes>,
    state_set: HashSet<Bytes>,
    /// Reads released by Raft, waiting for the applied index to reach theirs.
    reads_waiting: Vec<ReadState>,
    served_reads: Vec<ServedRead>,
    /// Last commit and applied index seen in this lifetime, to check they never go back.
    seen_commit: u64,
    seen_applied: u64,
}

impl SimNode {
    fn new(config: Config, bootstrap: ConfState) -> SimNode {
        let mut sim_node = SimNode {
            config,
            bootstrap,
            node: None,
            durable: Durable::default(),
            state: Vec::new(),
            state_set: HashSet::new(),
            reads_waiting: Vec::new(),
            served_reads: Vec::new(),
            seen_commit: 0,
            seen_applied: 0,
        };
        sim_node.start();
        sim_node
    }

    fn start(&mut self) {
        let initial = InitialState {
            hard_state: self.durable.hard_state,
            snapshot: self.durable.snapshot.clone(),
            entries: self.durable.entries.clone(),
            bootstrap: self.bootstrap.clone(),
        };
        let node = Node::new(self.config.clone(), initial).expect("durable state is consistent");
        self.state = self
            .durable
            .snapshot
            .as_ref()
            .map_or_else(Vec::new, |snapshot| decode_state(&snapshot.data));
        self.state_set = self.state.iter().cloned().collect();
        self.reads_waiting.clear();
        self.seen_commit = node.commit_index();
        self.seen_applied = node.applied_index();
        self.node = Some(node);
    }
}

/// Faults applied to every message sent, unless a link is cut.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkFaults {
    /// Chance, per million, that a message is lost.
    pub drop_per_million: u32,
    /// Chance, per million, that a message is delivered twice.
    pub duplicate_per_million: u32,
    /// Chance, per million, that a message is held back for a few delivery rounds.
    pub delay_per_million: u32,
}

/// A message on the simulated wire.
#[derive(Clone, Debug)]
struct InTransit {
    message: Message,
    /// Delivery rounds to wait before the message can be delivered.
    delay_rounds: u32,
    /// Released from a hold ([`Cluster::release`]): delivered without passing the filters again.
    released: bool,
}

impl InTransit {
    fn new(message: Message, delay_rounds: u32) -> InTransit {
        InTransit {
            message,
            delay_rounds,
            released: false,
        }
    }
}

/// Identifies a filter installed by [`Cluster::drop_if`] or [`Cluster::hold`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilterId(u64);

/// What a filter does to the messages it selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FilterAction {
    Drop,
    Hold,
}

/// A predicate over the messages about to be delivered, installed by a test.
struct Filter {
    id: FilterId,
    action: FilterAction,
    selects: Box<dyn FnMut(&Message) -> bool + Send>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Filter")
            .field("id", &self.id)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

/// A cluster of simulated nodes of one group.
#[derive(Debug)]
pub struct Cluster {
    nodes: BTreeMap<NodeId, SimNode>,
    in_transit: VecDeque<InTransit>,
    /// Directed links that lose everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: LinkFaults,
    rng_state: u64,
    /// Installed by the test, applied in this order; the first that selects a message decides.
    filters: Vec<Filter>,
    filter_id_next: u64,
    /// Messages set aside by a hold, in the order they were held.
    held: Vec<Message>,
    checker: Checker,
    transcript: Option<String>,
    next_request_id: u64,
}

impl Cluster {
    /// A fresh group of `voters`, with the default configuration.
    pub fn new(voters: &[NodeId]) -> Cluster {
        Cluster::with_config(voters, |_| {})
    }

    /// A fresh group of `voters`; `adjust` may change each node's configuration.
    pub fn with_config(voters: &[NodeId], adjust: impl Fn(&mut Config)) -> Cluster {
        let bootstrap = ConfState::with_voters(voters);
        let nodes = voters
            .iter()
            .map(|id| {
                (
                    *id,
                    SimNode::new(node_config(*id, &adjust), bootstrap.clone()),
                )
            })
            .collect();
        Cluster {
            nodes,
            in_transit: VecDeque::new(),
            cut: BTreeSet::new(),
            faults: LinkFaults::default(),
            rng_state: NETWORK_SEED_DEFAULT,
            filters: Vec::new(),
            filter_id_next: 1,
            held: Vec::new(),
            checker: Checker::default(),
            transcript: None,
            next_request_id: 1,
        }
    }

    /// Seeds the generator that decides which messages the [`LinkFaults`] drop, duplicate and
    /// delay (otherwise [`NETWORK_SEED_DEFAULT`]), so that one schedule can be run under many
    /// networks. Election timeouts draw from each node's [`Config::seed`], which
    /// [`Cluster::with_config`] can set.
    pub fn with_network_seed(mut self, seed: u64) -> Cluster {
        self.rng_state = seed;
        self
    }

    /// Adds a node that joins an existing group: it knows no membership and learns it from the
    /// leader (add it with [`Node::propose_conf_change`] at the leader).
    pub fn add_joining_node(&mut self, id: NodeId, adjust: impl Fn(&mut Config)) {
        let sim_node = SimNode::new(node_config(id, &adjust), ConfState::default());
        self.nodes.insert(id, sim_node);
    }

    /// Records a textual transcript of every Ready handled, to compare runs byte for byte.
    pub fn record_transcript(&mut self) {
        self.transcript = Some(String::new());
    }

    /// The transcript recorded since [`Cluster::record_transcript`].
    pub fn transcript(&self) -> &str {
        self.transcript.as_deref().unwrap_or("")
    }

    /// Sets the faults applied to messages from now on.
    pub fn set_faults(&mut self, faults: LinkFaults) {
        self.faults = faults;
    }

    /// The ids of all nodes, crashed or not.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The node `id`.
    ///
    /// # Panics
    /// If the node is crashed or unknown.
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[&id].node.as_ref().expect("node is crashed")
    }

    /// The node `id`, mutably.
    ///
    /// # Panics
    /// If the node is crashed or unknown.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .and_then(|sim_node| sim_node.node.as_mut())
            .expect("node is crashed")
    }

    /// Whether node `id` is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|sim_node| sim_node.node.is_some())
    }

    /// The durable state of node `id`.
    pub fn durable(&self, id: NodeId) -> &Durable {
        &self.nodes[&id].durable
    }

    /// The application writes node `id` has applied, in order.
    pub fn state(&self, id: NodeId) -> &[Bytes] {
        &self.nodes[&id].state
    }

    /// The reads node `id` served.
    pub fn served_reads(&self, id: NodeId) -> &[ServedRead] {
        &self.nodes[&id].served_reads
    }

    /// Messages currently on the wire.
    pub fn in_transit(&self) -> Vec<&Message> {
        self.in_transit.iter().map(|item| &item.message).collect()
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, sim_node)| Some((*id, sim_node.node.as_ref()?)))
            .filter(|(_, node)| node.role() == Role::Leader)
            .max_by_key(|(_, node)| node.term())
            .map(|(id, _)| id)
    }

    /// The running leader with the highest term among `ids`, if any.
    pub fn leader_among(&self, ids: &[NodeId]) -> Option<NodeId> {
        ids.iter()
            .copied()
            .filter(|id| self.is_up(*id) && self.node(*id).role() == Role::Leader)
            .max_by_key(|id| self.node(*id).term())
    }

    // ---- time and client requests ----

    /// One tick on node `id` (ignored if crashed).
    pub fn tick(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id).and_then(|n| n.node.as_mut()) {
            node.tick();
        }
        self.after_step();
    }

    /// `count` ticks on every running node, handling Readys and delivering messages after each.
    pub fn tick_all(&mut self, count: u32) {
        for _ in 0..count {
            for id in self.ids() {
                self.tick(id);
            }
            self.process_all();
            self.deliver_round();
        }
    }

    /// Makes `id` campaign (by ticking it alone until its election timer fires), then lets the
    /// cluster settle. Returns whether `id` became leader.
    pub fn elect(&mut self, id: NodeId) -> bool {
        let ticks_max = self.node(id).config().election_timeout_ticks * 2;
        for _ in 0..ticks_max {
            if self.node(id).role() != Role::Follower {
                break;
            }
            self.tick(id);
        }
        self.stabilize();
        self.is_up(id) && self.node(id).role() == Role::Leader
    }

    /// Proposes `data` at node `id`.
    pub fn propose(&mut self, id: NodeId, data: Bytes) -> Result<u64, ProposeError> {
        let result = self.node_mut(id).propose(data.clone());
        if result.is_ok() {
            self.checker.proposed.insert(data, id);
        }
        self.after_step();
        result
    }

    /// Asks node `id` for a linearizable read; returns the request id, or `None` if refused.
    pub fn read(&mut self, id: NodeId) -> Option<u64> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let accepted = self.node_mut(id).read_index(request_id).is_ok();
        if accepted {
            let completed = self.checker.completed_writes.len();
            self.checker
                .reads_requested
                .insert((id, request_id), completed);
        }
        self.after_step();
        accepted.then_some(request_id)
    }

    /// Takes a snapshot of node `id`'s application state at its applied index and compacts.
    pub fn compact(&mut self, id: NodeId) {
        let sim_node = self.nodes.get_mut(&id).expect("unknown node");
        let Some(node) = sim_node.node.as_mut() else {
            return;
        };
        let index = node.applied_index();
        if node.compact(index, encode_state(&sim_node.state)).is_ok() {
            let snapshot = node.snapshot().cloned().expect("just taken");
            sim_node.durable.entries.retain(|entry| entry.index > index);
            sim_node.durable.snapshot = Some(snapshot);
        }
        self.after_step();
    }

    // ---- the node loop ----

    /// Handles node `id`'s Ready, if it has one: persist, send, apply, advance.
    pub fn process(&mut self, id: NodeId) -> bool {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return false;
        };
        let Some(node) = sim_node.node.as_mut() else {
            return false;
        };
        if !node.has_ready() {
            return false;
        }
        let ready = node.ready();
        if let Some(transcript) = self.transcript.as_mut() {
            transcript.push_str(&format!("{id}: {ready:?}\n"));
        }
        persist(&mut sim_node.durable, &ready);
        let messages: Vec<Message> = ready
            .messages
            .iter()
            .chain(ready.persisted_messages.iter())
            .cloned()
            .collect();
        if let Some(snapshot) = &ready.snapshot {
            sim_node.state = decode_state(&snapshot.data);
            sim_node.state_set = sim_node.state.iter().cloned().collect();
        }
        for entry in &ready.committed_entries {
            self.checker.applied(id, entry);
            if entry.kind == EntryKind::Normal && !entry.data.is_empty() {
                sim_node.state.push(entry.data.clone());
                sim_node.state_set.insert(entry.data.clone());
                if self.checker.proposed.get(&entry.data) == Some(&id) {
                    self.checker.completed_writes.push(entry.data.clone());
                }
            }
        }
        sim_node
            .reads_waiting
            .extend(ready.read_states.iter().copied());
        let node = sim_node.node.as_mut().expect("running");
        node.advance(ready.number);
        let applied = node.applied_index();
        self.serve_reads(id, applied);
        for message in messages {
            self.send(message);
        }
        self.after_step();
        true
    }

    fn serve_reads(&mut self, id: NodeId, applied: u64) {
        let sim_node = self.nodes.get_mut(&id).expect("known node");
        let (ready_reads, waiting): (Vec<_>, Vec<_>) = sim_node
            .reads_waiting
            .drain(..)
            .partition(|read| read.index <= applied);
        sim_node.reads_waiting = waiting;
        for read in ready_reads {
            let completed_before = self.checker.reads_requested.remove(&(id, read.request_id));
            if let Some(completed_before) = completed_before {
                let missed = self.checker.completed_writes[..completed_before]
                    .iter()
                    .find(|write| !sim_node.state_set.contains(*write))
                    .cloned();
                if let Some(write) = missed {
                    self.checker.violation(format!(
                        "node {id}: read {} misses write {write:?} completed before it",
                        read.request_id
                    ));
                }
            }
            sim_node.served_reads.push(ServedRead {
                request_id: read.request_id,
                index: read.index,
                state_length: sim_node.state.len(),
            });
        }
    }

    /// Handles the Ready of every running node once.
    pub fn process_all(&mut self) -> bool {
        let mut any = false;
        for id in self.ids() {
            any |= self.process(id);
        }
        any
    }

    /// Handles Readys and delivers messages until nothing is left to do.
    ///
    /// # Panics
    /// If the cluster does not settle within a bound of rounds (a livelock).
    pub fn stabilize(&mut self) {
        const ROUNDS_MAX: usize = 10_000;
        for _ in 0..ROUNDS_MAX {
            let processed = self.process_all();
            if !processed && self.in_transit.is_empty() {
                return;
            }
            self.deliver_round();
        }
        panic!("the cluster did not settle within {ROUNDS_MAX} rounds");
    }

    // ---- the network ----

    fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.rng_state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn chance(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.next_random() % 1_000_000 < u64::from(per_million)
    }

    fn send(&mut self, message: Message) {
        if self.chance(self.faults.drop_per_million) {
            self.report_lost(&message);
            return;
        }
        let delay_rounds = if self.chance(self.faults.delay_per_million) {
            1 + (self.next_random() % 4) as u32
        } else {
            0
        };
        if self.chance(self.faults.duplicate_per_million) {
            self.in_transit
                .push_back(InTransit::new(message.clone(), 0));
        }
        self.in_transit
            .push_back(InTransit::new(message, delay_rounds));
    }

    /// Puts a message on the wire as if a node had sent it (for hostile-input tests).
    pub fn inject(&mut self, message: Message) {
        self.in_transit.push_back(InTransit::new(message, 0));
    }

    /// Delivers every message on the wire that is not delayed, in order. Messages sent in
    /// answer wait for the next round.
    pub fn deliver_round(&mut self) {
        let round: Vec<InTransit> = self.in_transit.drain(..).collect();
        for mut item in round {
            if item.delay_rounds > 0 {
                item.delay_rounds -= 1;
                self.in_transit.push_back(item);
            } else {
                self.arrive(item);
            }
        }
    }

    /// Delivers the message at `position` on the wire (out of order), if there is one.
    pub fn deliver_one(&mut self, position: usize) {
        if let Some(item) = self.in_transit.remove(position) {
            self.arrive(item);
        }
    }

    /// Loses the message at `position` on the wire, if there is one.
    pub fn drop_one(&mut self, position: usize) {
        if let Some(item) = self.in_transit.remove(position) {
            self.report_lost(&item.message);
        }
        self.after_step();
    }

    /// Duplicates the message at `position` on the wire, if there is one.
    pub fn duplicate_one(&mut self, position: usize) {
        if let Some(item) = self.in_transit.get(position).cloned() {
            self.in_transit.push_back(item);
        }
    }

    /// A message reaches its receiver's side of the network: the filters may drop or hold it,
    /// unless it was released from a hold.
    fn arrive(&mut self, item: InTransit) {
        let action = if item.released {
            None
        } else {
            self.filter_action(&item.message)
        };
        match action {
            None => self.deliver(item.message),
            Some(FilterAction::Drop) => {
                self.report_lost(&item.message);
                self.after_step();
            }
            Some(FilterAction::Hold) => self.held.push(item.message),
        }
    }

    fn filter_action(&mut self, message: &Message) -> Option<FilterAction> {
        for filter in &mut self.filters {
            if (filter.selects)(message) {
                return Some(filter.action);
            }
        }
        None
    }

    fn deliver(&mut self, message: Message) {
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
        let (from, to) = (message.from, message.to);
        let receiver = self.nodes.get_mut(&to).and_then(|n| n.node.as_mut());
        match receiver {
            Some(node) if !self.cut.contains(&(from, to)) => {
                // Hostile and stale messages are errors the node counts; the harness ignores
                // them.
                let _ = node.step(message);
                if is_snapshot {
                    self.report_snapshot(from, to, true);
                }
            }
            _ => self.report_lost(&message),
        }
        self.after_step();
    }

    /// Like a real transport, tells the sender that a snapshot did not arrive.
    fn report_lost(&mut self, message: &Message) {
        if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
            self.report_snapshot(message.from, message.to, false);
        }
    }

    fn report_snapshot(&mut self, from: NodeId, to: NodeId, delivered: bool) {
        if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.node.as_mut()) {
            sender.report_snapshot(to, delivered);
        }
    }

    // ---- filters: messages selected by a predicate ----

    /// From now on, loses every message that `selects` picks when it is about to be delivered
    /// (a lost snapshot is reported to its sender, as a transport would). Filters see messages
    /// after their random delay, before cut links, in the order they were installed; the first
    /// that picks a message decides. `selects` may keep state (count, pick the first only).
    pub fn drop_if(&mut self, selects: impl FnMut(&Message) -> bool + Send + 'static) -> FilterId {
        self.add_filter(FilterAction::Drop, Box::new(selects))
    }

    /// From now on, sets aside every message that `selects` picks when it is about to be
    /// delivered, until the test releases it ([`Cluster::release`]) or loses it
    /// ([`Cluster::drop_held`]); [`Cluster::held`] lists them. Filters apply as in
    /// [`Cluster::drop_if`]. Held messages are off the wire: [`Cluster::stabilize`] does not
    /// wait for them.
    pub fn hold(&mut self, selects: impl FnMut(&Message) -> bool + Send + 'static) -> FilterId {
        self.add_filter(FilterAction::Hold, Box::new(selects))
    }

    fn add_filter(
        &mut self,
        action: FilterAction,
        selects: Box<dyn FnMut(&Message) -> bool + Send>,
    ) -> FilterId {
        let id = FilterId(self.filter_id_next);
        self.filter_id_next += 1;
        self.filters.push(Filter {
            id,
            action,
            selects,
        });
        id
    }

    /// Removes a filter. The messages it held stay held until released or dropped.
    pub fn remove_filter(&mut self, id: FilterId) {
        self.filters.retain(|filter| filter.id != id);
    }

    /// The messages set aside by holds, in the order they were held.
    pub fn held(&self) -> Vec<&Message> {
        self.held.iter().collect()
    }

    /// Puts the held messages that `selects` picks back on the wire, in the order they were
    /// held: the next round delivers them (or loses them on a cut link or to a crashed node)
    /// without passing the filters again. Returns how many were released.
    pub fn release(&mut self, selects: impl FnMut(&Message) -> bool) -> usize {
        let released = self.take_held(selects);
        let count = released.len();
        for message in released {
            self.in_transit.push_back(InTransit {
                released: true,
                ..InTransit::new(message, 0)
            });
        }
        count
    }

    /// Loses the held messages that `selects` picks (a lost snapshot is reported to its
    /// sender). Returns how many were lost.
    pub fn drop_held(&mut self, selects: impl FnMut(&Message) -> bool) -> usize {
        let lost = self.take_held(selects);
        for message in &lost {
            self.report_lost(message);
        }
        self.after_step();
        lost.len()
    }

    fn take_held(&mut self, mut selects: impl FnMut(&Message) -> bool) -> Vec<Message> {
        let (taken, kept) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|message| selects(message));
        self.held = kept;
        taken
    }

    // ---- links ----

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts only the direction from `from` to `to`.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Cuts every link of `id`.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    /// Splits the cluster into `side` and the rest.
    pub fn partition(&mut self, side: &[NodeId]) {
        for a in side {
            for b in self.ids() {
                if !side.contains(&b) {
                    self.cut(*a, b);
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    // ---- crashes ----

    /// Crashes node `id`: everything not persisted is lost.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(sim_node) = self.nodes.get_mut(&id) {
            sim_node.node = None;
        }
        self.after_step();
    }

    /// Crashes node `id` in the middle of handling a Ready: the messages that may go before
    /// persisting are sent, then the node dies before anything is persisted.
    pub fn crash_mid_ready(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id).and_then(|n| n.node.as_mut()) else {
            return;
        };
        if node.has_ready() {
            let ready = node.ready();
            for message in ready.messages {
                self.send(message);
            }
        }
        self.crash(id);
    }

    /// Restarts a crashed node `id` from its durable state.
    pub fn restart(&mut self, id: NodeId) {
        if let Some(sim_node) = self.nodes.get_mut(&id)
            && sim_node.node.is_none()
        {
            sim_node.start();
            let applied = sim_node.node.as_ref().expect("started").applied_index();
            self.checker.last_applied.insert(id, applied);
        }
        self.after_step();
    }

    // ---- invariants ----

    fn after_step(&mut self) {
        self.check_step();
        if let Some(violation) = self.checker.violations.first() {
            panic!("invariant violated: {violation}");
        }
    }

    /// The invariants checked after every step (panicking on the first violation):
    /// at most one leader per term; log matching; leader completeness; every node applies the
    /// same entry at each index; commit and applied indexes never go back; a served read
    /// observes every write completed before it was requested.
    fn check_step(&mut self) {
        let mut leaders = Vec::new();
        for (id, sim_node) in self.nodes.iter_mut() {
            let Some(node) = sim_node.node.as_ref() else {
                continue;
            };
            if node.commit_index() < sim_node.seen_commit {
                self.checker
                    .violation(format!("node {id}: commit index went back"));
            }
            if node.applied_index() < sim_node.seen_applied {
                self.checker
                    .violation(format!("node {id}: applied index went back"));
            }
            sim_node.seen_commit = node.commit_index();
            sim_node.seen_applied = node.applied_index();
            let durable_commit = sim_node.durable.hard_state.commit;
            if durable_commit < self.checker.durable_commit.get(id).copied().unwrap_or(0) {
                self.checker
                    .violation(format!("node {id}: durable commit went back"));
            }
            self.checker.durable_commit.insert(*id, durable_commit);
            if node.role() == Role::Leader {
                leaders.push(*id);
            }
        }
        for id in leaders {
            let node = self.nodes[&id].node.as_ref().expect("running");
            self.checker.leader_seen(id, node);
        }
        self.check_log_matching();
    }

    fn check_log_matching(&mut self) {
        let running: Vec<&Node> = self
            .nodes
            .values()
            .filter_map(|n| n.node.as_ref())
            .collect();
        for (position, a) in running.iter().enumerate() {
            for b in &running[position + 1..] {
                if let Some(reason) = logs_mismatch(a, b) {
                    self.checker.violations.push(reason);
                }
            }
        }
    }

    /// Every violation found so far (the harness panics on the first one).
    pub fn violations(&self) -> &[String] {
        &self.checker.violations
    }

    /// The entries known committed, by index: `(term, data)`.
    pub fn committed(&self) -> &BTreeMap<u64, (u64, Bytes)> {
        &self.checker.applied_entries
    }
}

fn node_config(id: NodeId, adjust: &impl Fn(&mut Config)) -> Config {
    let mut config = Config::new(id, GROUP_ID);
    config.seed = id.wrapping_mul(0x2545_F491_4F6C_DD1D);
    adjust(&mut config);
    config
}

fn persist(durable: &mut Durable, ready: &crate::Ready) {
    if let Some(snapshot) = &ready.snapshot {
        durable.entries.clear();
        durable.snapshot = Some(snapshot.clone());
    }
    if let Some(first) = ready.entries.first() {
        durable.entries.retain(|entry| entry.index < first.index);
        durable.entries.extend(ready.entries.iter().cloned());
    }
    if let Some(hard_state) = ready.hard_state {
        durable.hard_state = hard_state;
    }
}

/// If two logs hold an entry with the same index and term, they must be identical up to it.
fn logs_mismatch(a: &Node, b: &Node) -> Option<String> {
    let low = a.first_index().max(b.first_index());
    let high = a.last_index().min(b.last_index());
    let matching = (low..=high)
        .rev()
        .find(|index| a.term_at(*index) == b.term_at(*index))?;
    for index in low..=matching {
        if a.entry(index) != b.entry(index) {
            return Some(format!(
                "log matching: nodes {} and {} agree at {matching} but differ at {index}",
                a.id(),
                b.id()
            ));
        }
    }
    None
}

#[derive(Debug, Default)]
struct Checker {
    /// The leader of each term seen.
    leaders_by_term: BTreeMap<u64, NodeId>,
    /// Entries committed by a leader: index -> (entry term, term of the committing leader).
    committed_by_leaders: BTreeMap<u64, (u64, u64)>,
    /// Entries applied by any node: index -> (term, data).
    applied_entries: BTreeMap<u64, (u64, Bytes)>,
    /// Index of the last entry each node applied (per lifetime, reset at restart).
    last_applied: BTreeMap<NodeId, u64>,
    durable_commit: BTreeMap<NodeId, u64>,
    /// Data proposed, and the node it was proposed at.
    proposed: BTreeMap<Bytes, NodeId>,
    /// Writes applied at the node they were proposed at, in completion order.
    completed_writes: Vec<Bytes>,
    /// Reads requested and not yet served: (node, request id) -> completed writes at request.
    reads_requested: BTreeMap<(NodeId, u64), usize>,
    violations: Vec<String>,
}

impl Checker {
    fn violation(&mut self, reason: String) {
        self.violations.push(reason);
    }

    fn leader_seen(&mut self, id: NodeId, node: &Node) {
        let term = node.term();
        match self.leaders_by_term.get(&term) {
            Some(other) if *other != id => {
                self.violation(format!("two leaders in term {term}: {other} and {id}"));
            }
            _ => {
                self.leaders_by_term.insert(term, id);
            }
        }
        // Entries this leader committed, with the term that committed them.
        let commit = node.commit_index();
        let from = self
            .committed_by_leaders
            .last_key_value()
            .map_or(node.first_index(), |(index, _)| index + 1)
            .max(node.first_index());
        for index in from..=commit {
            if let Some(entry_term) = node.term_at(index) {
                self.committed_by_leaders.insert(index, (entry_term, term));
            }
        }
        // Leader completeness: every entry committed in an earlier term is in this log.
        for (index, (entry_term, committed_in)) in
            self.committed_by_leaders.range(node.first_index()..)
        {
            if *committed_in < term && node.term_at(*index) != Some(*entry_term) {
                self.violations.push(format!(
                    "leader completeness: leader {id} of term {term} lacks entry {index} (term {entry_term}) committed in term {committed_in}"
                ));
            }
        }
    }

    fn applied(&mut self, id: NodeId, entry: &Entry) {
        // Entries may jump forward past an installed snapshot, never go back.
        let last = self.last_applied.get(&id).copied().unwrap_or(0);
        if entry.index <= last {
            self.violation(format!("node {id}: applied index {} again", entry.index));
        }
        self.last_applied.insert(id, entry.index);
        match self.applied_entries.get(&entry.index) {
            Some((term, data)) if (*term, data) != (entry.term, &entry.data) => {
                self.violation(format!(
                    "node {id} applied a different entry at index {}",
                    entry.index
                ));
            }
            Some(_) => {}
            None => {
                self.applied_entries
                    .insert(entry.index, (entry.term, entry.data.clone()));
            }
        }
    }
}

// ---- helpers for tests that drive one node by hand ----

/// A message of the simulated group.
pub fn message(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        group_id: GROUP_ID,
        from,
        to,
        term,
        body,
    }
}

/// An acknowledgement of the leader's log up to `index`.
pub fn acknowledge(index: u64) -> MessageBody {
    MessageBody::AppendResponse {
        index,
        reject: false,
        reject_hint: 0,
        hint_term: 0,
    }
}

/// The term [`leader_of_three`] leads: the bootstrap entries are of term 1, its election
/// raises it to 2.
pub const LEADER_OF_THREE_TERM: u64 = 2;

/// Node 1 of a group of three, made leader by hand (one vote delivered directly, pre-vote off),
/// with its first Ready handled. `adjust` may change its configuration first.
///
/// # Panics
/// If the configuration keeps the node from winning.
pub fn leader_of_three(adjust: impl Fn(&mut Config)) -> Node {
    let mut config = Config::new(1, GROUP_ID);
    config.pre_vote = false;
    adjust(&mut config);
    let mut node = Node::new(config, InitialState::bootstrap(&[1, 2, 3])).expect("valid config");
    while node.role() != Role::Candidate {
        node.tick();
    }
    let granted = MessageBody::VoteResponse {
        pre_vote: false,
        granted: true,
    };
    let term = node.term();
    node.step(message(2, 1, term, granted))
        .expect("a vote in the candidate's term");
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(node.term(), LEADER_OF_THREE_TERM);
    let ready = node.ready();
    node.advance(ready.number);
    node
}

/// Handles every Ready of a lone `node` (persisting nothing, applying nothing) and returns the
/// messages it sent.
pub fn drain(node: &mut Node) -> Vec<Message> {
    let mut sent = Vec::new();
    while node.has_ready() {
        let ready = node.ready();
        sent.extend(ready.messages);
        sent.extend(ready.persisted_messages);
        node.advance(ready.number);
    }
    sent
}

/// Encodes an application state as snapshot data: a count, then each write as
/// `(length: u32 LE, bytes)`.
pub fn encode_state(state: &[Bytes]) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_u64_le(state.len() as u64);
    for write in state {
        buffer.put_u32_le(write.len() as u32);
        buffer.put_slice(write);
    }
    buffer.freeze()
}

/// Decodes [`encode_state`]'s output.
///
/// # Panics
/// If `data` was not produced by [`encode_state`] (the harness only feeds its own snapshots).
pub fn decode_state(data: &Bytes) -> Vec<Bytes> {
    let mut data = data.clone();
    let count = data.get_u64_le();
    (0..count)
        .map(|_| {
            let length = data.get_u32_le() as usize;
            data.split_to(length)
        })
        .collect()
}
