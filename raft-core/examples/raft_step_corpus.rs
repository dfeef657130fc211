//! Writes the seed corpus of the `raft_step` fuzz target: sequences of real messages captured
//! from a simulated group (elections, replication, reads, a snapshot, a transfer), postcard-
//! encoded back to back as the target reads them.
//!
//! Run from the repository root: `cargo run -p raft-core --example raft_step_corpus -- fuzz/corpus`.

use bytes::Bytes;
use raft_core::Message;
use raft_core::testing::Cluster;
use std::path::PathBuf;

/// Runs `scenario` and returns every message it put on the wire, in order.
fn capture(scenario: impl FnOnce(&mut Cluster, &mut Vec<Message>)) -> Vec<Message> {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    let mut seen = Vec::new();
    scenario(&mut cluster, &mut seen);
    seen
}

fn record(cluster: &mut Cluster, seen: &mut Vec<Message>, rounds: usize) {
    for _ in 0..rounds {
        cluster.process_all();
        seen.extend(cluster.in_transit().into_iter().cloned());
        cluster.deliver_round();
    }
}

fn main() {
    let directory: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .expect("usage: raft_step_corpus <corpus directory>")
        .join("raft_step");
    std::fs::create_dir_all(&directory).expect("create the corpus directory");
    let scenarios: Vec<(&str, Vec<Message>)> = vec![
        (
            "election",
            capture(|cluster, seen| {
                for _ in 0..30 {
                    cluster.tick(1);
                    record(cluster, seen, 1);
                }
            }),
        ),
        (
            "replication-and-reads",
            capture(|cluster, seen| {
                cluster.elect(1);
                for write in 0..5u8 {
                    cluster
                        .propose(1, Bytes::from(vec![write; 8]))
                        .expect("leader");
                    cluster.read(3);
                    record(cluster, seen, 4);
                }
            }),
        ),
        (
            "snapshot-and-transfer",
            capture(|cluster, seen| {
                cluster.elect(1);
                cluster.crash(3);
                cluster
                    .propose(1, Bytes::from_static(b"x"))
                    .expect("leader");
                cluster.stabilize();
                cluster.compact(1);
                cluster.restart(3);
                cluster.tick_all(4);
                record(cluster, seen, 6);
                cluster.node_mut(1).transfer_leader(2).expect("leader");
                record(cluster, seen, 6);
            }),
        ),
    ];
    for (name, messages) in scenarios {
        let mut bytes = Vec::new();
        for message in &messages {
            bytes.extend(postcard::to_allocvec(message).expect("messages encode"));
        }
        std::fs::write(directory.join(name), bytes).expect("write a seed");
        println!("{name}: {} messages", messages.len());
    }
}
