//! An idle group allocates nothing per tick: a server hosts many groups, and most of them
//! are idle most of the time.

// Counting allocations needs a global allocator, which is an `unsafe impl`; it only forwards
// to the system allocator and bumps a thread-local counter.
#![allow(unsafe_code)]

use raft_core::{Config, InitialState, Message, Node, Role};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { System.realloc(pointer, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

/// Three nodes with node 1 elected, everything delivered.
fn idle_group() -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| {
            let mut config = Config::new(id, 1);
            config.election_timeout_ticks = 20;
            config.heartbeat_interval_ticks = 5;
            Node::new(config, InitialState::bootstrap(&[1, 2, 3])).unwrap()
        })
        .collect();
    let mut wire: Vec<Message> = Vec::new();
    for _ in 0..100 {
        if nodes[0].role() != Role::Leader {
            nodes[0].tick();
        }
        for node in nodes.iter_mut() {
            if node.has_ready() {
                let ready = node.ready();
                wire.extend(ready.messages);
                wire.extend(ready.persisted_messages);
                node.advance(ready.number);
            }
        }
        for message in wire.drain(..) {
            let to = (message.to - 1) as usize;
            nodes[to].step(message).unwrap();
        }
    }
    assert_eq!(nodes[0].role(), Role::Leader);
    nodes
}

#[test]
fn idle_followers_and_a_leader_between_heartbeats_allocate_nothing_per_tick() {
    let mut nodes = idle_group();
    let follower_ticks = allocations_during(|| {
        for _ in 0..19 {
            nodes[1].tick();
            assert!(!nodes[1].has_ready());
        }
    });
    assert_eq!(follower_ticks, 0);
    // The leader ticks 4 times between heartbeats (its counter was reset by the last one).
    let leader = &mut nodes[0];
    while leader.has_ready() {
        let ready = leader.ready();
        leader.advance(ready.number);
    }
    let mut ticks_until_heartbeat = 0;
    while !leader.has_ready() {
        leader.tick();
        ticks_until_heartbeat += 1;
    }
    let ready = leader.ready();
    leader.advance(ready.number);
    let leader_ticks = allocations_during(|| {
        for _ in 0..4 {
            leader.tick();
            assert!(!leader.has_ready());
        }
    });
    assert!(ticks_until_heartbeat <= 5);
    assert_eq!(leader_ticks, 0);
}
