//! Committed entries per second of a 3-node group in memory, in one thread, without I/O.
//!
//! Run with `cargo bench -p raft-core --bench throughput`. Prints a table and writes it to
//! `bench-results/raft-core.txt` at the workspace root.

use bytes::Bytes;
use raft_core::{Config, InitialState, Message, Node, Role};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const VOTERS: [u64; 3] = [1, 2, 3];

struct Group {
    nodes: Vec<Node>,
    wire: VecDeque<Message>,
    applied: u64,
}

impl Group {
    fn new() -> Group {
        let nodes = VOTERS
            .iter()
            .map(|id| {
                let mut config = Config::new(*id, 1);
                config.uncommitted_bytes_max = 256 * 1024 * 1024;
                Node::new(config, InitialState::bootstrap(&VOTERS)).expect("valid")
            })
            .collect();
        let mut group = Group {
            nodes,
            wire: VecDeque::new(),
            applied: 0,
        };
        while group.nodes[0].role() != Role::Leader {
            group.nodes[0].tick();
            group.settle();
        }
        group
    }

    /// The node loop of every node, until nothing is left: persist (no-op here: the bench
    /// measures the protocol, not the disk), send, apply, advance.
    fn settle(&mut self) {
        loop {
            let mut any = false;
            for position in 0..self.nodes.len() {
                let node = &mut self.nodes[position];
                if !node.has_ready() {
                    continue;
                }
                any = true;
                let ready = node.ready();
                self.wire.extend(ready.messages);
                self.wire.extend(ready.persisted_messages);
                if position == 0 {
                    self.applied += ready.committed_entries.len() as u64;
                }
                node.advance(ready.number);
            }
            while let Some(message) = self.wire.pop_front() {
                any = true;
                let to = (message.to - 1) as usize;
                self.nodes[to].step(message).expect("well-formed");
            }
            if !any {
                return;
            }
        }
    }
}

fn measure(entry_size_bytes: usize, batch: usize, duration: Duration) -> (u64, f64) {
    let mut group = Group::new();
    let data = Bytes::from(vec![7u8; entry_size_bytes]);
    let start = Instant::now();
    let applied_at_start = group.applied;
    let mut proposed = 0u64;
    while start.elapsed() < duration {
        for _ in 0..batch {
            group.nodes[0]
                .propose(data.clone())
                .expect("leader accepts");
        }
        proposed += batch as u64;
        group.settle();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let committed = group.applied - applied_at_start;
    assert!(committed >= proposed, "every proposal commits");
    (committed, committed as f64 / elapsed)
}

fn main() {
    let duration = Duration::from_secs(3);
    let mut report = String::new();
    writeln!(
        report,
        "raft-core throughput: 3 voters in one thread, no I/O, {}s per row",
        duration.as_secs()
    )
    .unwrap();
    writeln!(
        report,
        "{:>12} {:>8} {:>14} {:>12}",
        "entry bytes", "batch", "entries/s", "MB/s"
    )
    .unwrap();
    for (entry_size_bytes, batch) in [(16, 64), (16, 256), (16, 1024), (1024, 64), (1024, 256)] {
        let (_, rate) = measure(entry_size_bytes, batch, duration);
        let megabytes = rate * entry_size_bytes as f64 / 1e6;
        writeln!(
            report,
            "{entry_size_bytes:>12} {batch:>8} {rate:>14.0} {megabytes:>12.1}"
        )
        .unwrap();
    }
    print!("{report}");
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench-results");
    std::fs::create_dir_all(directory).expect("create bench-results");
    std::fs::write(format!("{directory}/raft-core.txt"), report).expect("write results");
}
