//! The pub/sub core without sockets: publish, dispatch, subscribe, resume.

use super::*;
use crate::config::default_shards;
use serde_json::Value;

fn gateway(limits: GatewayLimits) -> Gateway {
    let map = ShardMap::new(default_shards(4)).unwrap();
    let gateway = Gateway::new(1, map, limits, Arc::new(Metrics::default()));
    for shard in 1..=4 {
        gateway.open_shard(shard, 0);
    }
    gateway
}

fn put(key: &str, value: &str) -> Change {
    Change {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
    }
}

/// Every frame queued, parsed.
fn drain(outbox: &Outbox) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Some(batch) = outbox.try_take().unwrap() {
        for item in batch {
            match item {
                Outgoing::Frame(frame) => frames.push(serde_json::from_slice(&frame).unwrap()),
                Outgoing::Shared(shared) => frames.extend(
                    shared
                        .iter()
                        .map(|frame| serde_json::from_slice(frame).unwrap()),
                ),
            }
        }
    }
    frames
}

fn changes(frames: &[Value]) -> Vec<(u64, String)> {
    frames
        .iter()
        .filter(|frame| frame["op"] == "change")
        .map(|frame| {
            let index = frame["position"]["index"].as_u64().unwrap();
            (index, frame["key"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn subscribe(gateway: &Gateway, name: &str, from: Option<&Positions>) -> Outbox {
    let outbox = Outbox::new(gateway.limits().queue_frames);
    let channel = Channel::parse(name, gateway.shard_map()).unwrap();
    let id = gateway.new_subscriber();
    gateway
        .subscribe(id, &outbox, &channel, name, from)
        .unwrap();
    outbox
}

#[test]
fn a_subscriber_gets_the_changes_of_its_prefix_once_dispatched() {
    let gateway = gateway(GatewayLimits::default());
    let users = subscribe(&gateway, "kv:us/", None);
    let alice = subscribe(&gateway, "kv:us/alice", None);
    gateway.publish(
        4,
        vec![(5, vec![put("us/alice", "A"), put("us/bob", "B")])],
        5,
    );
    gateway.publish(3, vec![(2, vec![put("gr/team", "T")])], 2);
    let frames = drain(&users);
    assert_eq!(frames[0]["op"], "subscribed");
    assert!(
        changes(&frames).is_empty(),
        "nothing before the dispatcher runs"
    );
    gateway.dispatch();
    let frames = drain(&users);
    assert_eq!(
        changes(&frames),
        [(5, "us/alice".into()), (5, "us/bob".into())]
    );
    assert_eq!(frames[0]["channel"], "kv:us/");
    assert_eq!(changes(&drain(&alice)[1..]), [(5, "us/alice".into())]);
}

#[test]
fn one_encoded_frame_is_shared_by_every_subscriber_of_a_channel() {
    let gateway = gateway(GatewayLimits::default());
    let first = subscribe(&gateway, "kv:us/", None);
    let second = subscribe(&gateway, "kv:us/", None);
    gateway.publish(4, vec![(1, vec![put("us/a", "1")])], 1);
    gateway.dispatch();
    let last_shared = |outbox: &Outbox| {
        let batch = outbox.try_take().unwrap().unwrap();
        match batch.last().unwrap() {
            Outgoing::Shared(frames) => frames.clone(),
            other => panic!("{other:?}"),
        }
    };
    let (a, b) = (last_shared(&first), last_shared(&second));
    assert!(Arc::ptr_eq(&a, &b), "the same frames, not copies");
}

#[test]
fn a_resumed_subscription_replays_exactly_what_was_missed() {
    let gateway = gateway(GatewayLimits::default());
    for index in 1..=5 {
        let key = format!("us/{index}");
        gateway.publish(4, vec![(index, vec![put(&key, "v")])], index);
    }
    gateway.dispatch();
    let from: Positions = [(4, 2)].into_iter().collect();
    let outbox = subscribe(&gateway, "kv:us/", Some(&from));
    gateway.publish(4, vec![(6, vec![put("us/6", "v")])], 6);
    gateway.dispatch();
    let frames = drain(&outbox);
    assert_eq!(frames[0]["at"]["4"], 2);
    let indexes: Vec<u64> = changes(&frames).iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, [3, 4, 5, 6]);
}

#[test]
fn a_subscriber_ahead_of_this_replica_waits_without_duplicates() {
    let gateway = gateway(GatewayLimits::default());
    gateway.publish(4, vec![(1, vec![put("us/1", "v")])], 1);
    gateway.dispatch();
    // It saw index 3 on another server; this replica has applied 1 so far.
    let from: Positions = [(4, 3)].into_iter().collect();
    let outbox = subscribe(&gateway, "kv:us/", Some(&from));
    for index in 2..=4 {
        let key = format!("us/{index}");
        gateway.publish(4, vec![(index, vec![put(&key, "v")])], index);
    }
    gateway.dispatch();
    let frames = drain(&outbox);
    assert!(frames.iter().all(|frame| frame["op"] != "resync"));
    assert_eq!(changes(&frames), [(4, "us/4".into())]);
}

#[test]
fn a_position_the_history_forgot_gets_a_resync() {
    let limits = GatewayLimits {
        history_entries: 2,
        ..GatewayLimits::default()
    };
    let gateway = gateway(limits);
    for index in 1..=5 {
        gateway.publish(4, vec![(index, vec![put("us/x", "v")])], index);
    }
    gateway.dispatch();
    let from: Positions = [(4, 1)].into_iter().collect();
    let outbox = subscribe(&gateway, "kv:us/", Some(&from));
    let frames = drain(&outbox);
    assert_eq!(frames[1]["op"], "resync");
    assert_eq!(frames[1]["at"]["4"], 5);
    assert!(changes(&frames).is_empty());
}

#[test]
fn a_resync_never_moves_a_shard_back_from_what_the_subscriber_saw_elsewhere() {
    // Found by the simulator's subscribers: a client resumes here with shard 4 seen further
    // (on another server) than this replica has applied, and shard 3 older than this
    // history keeps. The resync is for shard 3; shard 4 must stay where the client was, or
    // its next change would reach the client twice.
    let limits = GatewayLimits {
        history_entries: 2,
        ..GatewayLimits::default()
    };
    let gateway = gateway(limits);
    for index in 1..=5 {
        gateway.publish(3, vec![(index, vec![put("gr/x", "v")])], index);
    }
    gateway.publish(4, vec![(1, vec![put("us/1", "v")])], 1);
    gateway.dispatch();
    let from: Positions = [(1, 0), (2, 0), (3, 1), (4, 3)].into_iter().collect();
    let outbox = subscribe(&gateway, "kv:", Some(&from));
    for index in 2..=4 {
        let key = format!("us/{index}");
        gateway.publish(4, vec![(index, vec![put(&key, "v")])], index);
    }
    gateway.dispatch();
    let frames = drain(&outbox);
    assert_eq!(frames[1]["op"], "resync");
    assert_eq!(frames[1]["at"]["3"], 5);
    assert_eq!(
        frames[1]["at"]["4"], 3,
        "not moved back to this replica's 1"
    );
    assert_eq!(frames[0]["at"], frames[1]["at"]);
    assert_eq!(changes(&frames), [(4, "us/4".into())]);
}

#[test]
fn a_resume_without_a_position_for_a_covered_shard_is_a_resync() {
    let gateway = gateway(GatewayLimits::default());
    let from: Positions = [(1, 0)].into_iter().collect();
    let outbox = subscribe(&gateway, "kv:", Some(&from));
    let frames = drain(&outbox);
    assert_eq!(frames[1]["op"], "resync");
}

#[test]
fn a_snapshot_under_a_live_subscriber_makes_it_resync() {
    let gateway = gateway(GatewayLimits::default());
    let outbox = subscribe(&gateway, "shard:4", None);
    gateway.snapshot_installed(4, 40);
    gateway.publish(4, vec![(41, vec![put("us/a", "v")])], 41);
    gateway.dispatch();
    let frames = drain(&outbox);
    let ops: Vec<&str> = frames.iter().map(|f| f["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["subscribed", "resync", "change"]);
    assert_eq!(frames[1]["at"]["4"], 40);
}

#[test]
fn a_subscriber_whose_queue_overflows_is_closed_as_slow_and_counted() {
    let limits = GatewayLimits {
        queue_frames: 3,
        ..GatewayLimits::default()
    };
    let gateway = gateway(limits);
    let outbox = subscribe(&gateway, "kv:us/", None);
    for index in 1..=5 {
        gateway.publish(4, vec![(index, vec![put("us/x", "v")])], index);
    }
    gateway.dispatch();
    assert_eq!(outbox.closed(), Some(CloseReason::SlowConsumer));
    let counters = &gateway.metrics().counters;
    assert_eq!(counters.ws_slow_consumers.load(Ordering::Relaxed), 1);
}

#[test]
fn a_replay_larger_than_the_queue_is_a_resync_not_a_drop() {
    let limits = GatewayLimits {
        queue_frames: 4,
        ..GatewayLimits::default()
    };
    let gateway = gateway(limits);
    for index in 1..=10 {
        gateway.publish(4, vec![(index, vec![put("us/x", "v")])], index);
    }
    gateway.dispatch();
    let from: Positions = [(4, 0)].into_iter().collect();
    let outbox = subscribe(&gateway, "kv:us/", Some(&from));
    assert_eq!(outbox.closed(), None);
    assert_eq!(drain(&outbox)[1]["op"], "resync");
}

#[test]
fn an_unsubscribed_or_removed_subscriber_gets_nothing_more() {
    let gateway = gateway(GatewayLimits::default());
    let outbox = Outbox::new(100);
    let channel = Channel::parse("kv:us/", gateway.shard_map()).unwrap();
    let id = gateway.new_subscriber();
    gateway
        .subscribe(id, &outbox, &channel, "kv:us/", None)
        .unwrap();
    assert_eq!(
        gateway.subscribe(id, &outbox, &channel, "kv:us/", None),
        Err(SubscribeError::AlreadySubscribed("kv:us/".into()))
    );
    assert_eq!(gateway.subscriptions(), 1);
    gateway.remove(id, std::slice::from_ref(&channel));
    assert_eq!(gateway.subscriptions(), 0);
    gateway.publish(4, vec![(1, vec![put("us/a", "v")])], 1);
    gateway.dispatch();
    assert!(changes(&drain(&outbox)).is_empty());
}

#[test]
fn a_shard_without_a_local_replica_cannot_be_subscribed_here() {
    let map = ShardMap::new(default_shards(4)).unwrap();
    let gateway = Gateway::new(
        1,
        map,
        GatewayLimits::default(),
        Arc::new(Metrics::default()),
    );
    gateway.open_shard(4, 0);
    let outbox = Outbox::new(10);
    let channel = Channel::Shard(3);
    let refused = gateway.subscribe(1, &outbox, &channel, "shard:3", None);
    assert_eq!(
        refused,
        Err(SubscribeError::NotHosted {
            server: 1,
            shard: 3
        })
    );
}
