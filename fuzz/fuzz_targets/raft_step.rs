//! Throws arbitrary bytes at a running three-node Raft group, as postcard-encoded messages from
//! peers (the form they take on the wire), with ticks and Ready handling in between. Nothing may
//! panic; every message that decodes re-encodes to the same bytes' meaning (round trip).
#![no_main]

use libfuzzer_sys::fuzz_target;
use raft_core::{Config, InitialState, Message, Node};

/// Handles every node's Ready and delivers the messages they sent (to known nodes only).
fn settle(nodes: &mut [Node]) {
    let mut wire = Vec::new();
    for node in nodes.iter_mut() {
        if node.has_ready() {
            let ready = node.ready();
            wire.extend(ready.messages);
            wire.extend(ready.persisted_messages);
            node.advance(ready.number);
        }
    }
    for message in wire {
        deliver(nodes, message);
    }
}

fn deliver(nodes: &mut [Node], message: Message) {
    if let Some(node) = nodes.get_mut((message.to as usize).wrapping_sub(1)) {
        // Errors are the expected outcome for hostile input: counted, never a panic.
        let _ = node.step(message);
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| {
            Node::new(Config::new(id, 1), InitialState::bootstrap(&[1, 2, 3])).expect("valid")
        })
        .collect();
    for _ in 0..30 {
        nodes[0].tick();
        settle(&mut nodes);
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        match postcard::take_from_bytes::<Message>(rest) {
            Ok((message, tail)) => {
                let encoded = postcard::to_allocvec(&message).expect("a decoded message encodes");
                let decoded: Message = postcard::from_bytes(&encoded).expect("and decodes again");
                assert_eq!(decoded, message);
                deliver(&mut nodes, message);
                rest = tail;
            }
            Err(_) => rest = &rest[1..],
        }
        for node in nodes.iter_mut() {
            node.tick();
        }
        settle(&mut nodes);
    }
});
