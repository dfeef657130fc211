//! Whole servers in one process over real loopback TCP: routing, exactly-once writes,
//! transactions, scans over shards, and failover.

#![cfg(not(madsim))]

mod support;

use bytes::Bytes;
use client::{Consistency, ErrorCode, Request, Response};
use kv::{Compare, Op, OpResult, Txn, Write, WriteResult};
use server::default_shards;
use std::time::Duration;
use support::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_server_reach_every_shard_and_read_back() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let client = cluster.client();
    let keys = [
        "ev/am/alice/1",
        "ev/nz/olga/1",
        "gr/team",
        "us/alice",
        "a",
        "zzz",
    ];
    let mut shards = std::collections::BTreeSet::new();
    for key in keys {
        let written = client.put(key, format!("value of {key}")).await.unwrap();
        shards.insert(written.shard);
    }
    assert_eq!(shards.len(), 4, "the keys cover every shard");
    for key in keys {
        let value = client.get(key).await.unwrap().expect("written");
        assert_eq!(value.value, Bytes::from(format!("value of {key}")));
    }
    // A scan over the whole key space crosses every shard and comes back in key order.
    let (entries, more) = client
        .scan("", "", 100, Consistency::Linearizable)
        .await
        .unwrap();
    let found: Vec<&[u8]> = entries.iter().map(|(key, _)| &key[..]).collect();
    let mut expected: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
    expected.sort();
    assert_eq!(found, expected);
    assert!(!more);
    // A limit that stops inside the range says that more remain.
    let (entries, more) = client
        .scan("", "", 2, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert!(more);
    for id in 1..=3 {
        cluster.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_applied_once_and_answered_the_same() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let service = cluster.servers[1].as_ref().unwrap().service().clone();
    let command = kv::Command {
        client_id: 77,
        seq: 1,
        first_unacked_seq: 1,
        timestamp_ms: client::wall_clock_ms(),
        write: Write::Put {
            key: "us/bob".into(),
            value: "first".into(),
        },
    };
    let first = service.execute(Request::Write(command.clone())).await;
    let Response::Written { index, .. } = first else {
        panic!("{first:?}")
    };
    // The same command again, through another server: the same answer, nothing applied.
    let other = cluster.servers[2].as_ref().unwrap().service().clone();
    let second = other.execute(Request::Write(command)).await;
    assert_eq!(first, second);
    let read = Request::Get {
        key: "us/bob".into(),
        consistency: Consistency::Linearizable,
    };
    let Response::Value(Some(value)) = service.execute(read).await else {
        panic!()
    };
    assert_eq!(value.mod_index, index, "the retry did not write again");
    for id in 1..=3 {
        cluster.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_compare_then_act_and_refuse_to_span_shards() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    cluster.wait_for_leaders().await;
    let client = cluster.client();
    let create = Txn {
        compares: vec![Compare::Absent {
            key: "gr/team".into(),
        }],
        success: vec![
            Op::Put {
                key: "gr/team".into(),
                value: "v1".into(),
            },
            Op::Put {
                key: "gr/team/alice".into(),
                value: "owner".into(),
            },
        ],
        failure: vec![Op::Get {
            key: "gr/team".into(),
        }],
    };
    let (succeeded, _) = client.txn(create.clone()).await.unwrap();
    assert!(succeeded);
    let (succeeded, results) = client.txn(create).await.unwrap();
    assert!(!succeeded, "the group exists now");
    assert!(matches!(&results[0], OpResult::Get { current: Some(v) } if v.value == "v1"));
    let spanning = Txn {
        compares: vec![],
        success: vec![
            Op::Put {
                key: "gr/x".into(),
                value: "1".into(),
            },
            Op::Put {
                key: "us/x".into(),
                value: "1".into(),
            },
        ],
        failure: vec![],
    };
    match client.txn(spanning).await {
        Err(client::ClientError::Server(error)) => assert_eq!(error.code, ErrorCode::CrossShard),
        other => panic!("{other:?}"),
    }
    let deleted = client.delete("gr/team/alice").await.unwrap();
    assert!(matches!(
        deleted.result,
        WriteResult::Delete { previous: Some(_) }
    ));
    for id in 1..=3 {
        cluster.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_ride_through_the_loss_of_a_leader() {
    let mut cluster = TestCluster::start(3, default_shards(3)).await;
    let status = cluster.wait_for_leaders().await;
    let client = cluster.client();
    client.put("us/carol", "before").await.unwrap();
    let users = status
        .shards
        .iter()
        .find(|shard| shard.name == "users")
        .unwrap();
    let leader = users.leader_id;
    cluster.crash(leader).await;
    // The client may have been talking to the crashed server: it fails over by itself.
    let written = tokio::time::timeout(Duration::from_secs(15), client.put("us/carol", "after"))
        .await
        .expect("the write completes after a failover")
        .unwrap();
    assert_eq!(written.shard, users.shard);
    let value = client.get("us/carol").await.unwrap().unwrap();
    assert_eq!(value.value, "after");
    cluster.restart(leader).await;
    cluster.wait_for_leaders().await;
    // The restarted server catches up and serves the value from its own replica.
    let service = cluster.servers[leader as usize - 1]
        .as_ref()
        .unwrap()
        .service()
        .clone();
    let mut caught_up = false;
    for _ in 0..200 {
        let stale = Request::Get {
            key: "us/carol".into(),
            consistency: Consistency::Stale,
        };
        if let Response::Value(Some(value)) = service.execute(stale).await
            && value.value == "after"
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(caught_up, "the restarted replica caught up");
    for id in 1..=3 {
        cluster.stop(id).await;
    }
}

/// Waits until every shard is led by its preferred leader (its first configured voter).
async fn wait_for_preferred_leaders(cluster: &TestCluster) -> bool {
    let preferred: Vec<u64> = default_shards(4)
        .iter()
        .map(|shard| shard.voters[0])
        .collect();
    for _ in 0..300 {
        let server = cluster.running().next().unwrap();
        let status = server.service().cluster_status(false).await;
        let leaders: Vec<u64> = status.shards.iter().map(|shard| shard.leader_id).collect();
        if leaders == preferred {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_settle_one_per_server_and_come_back_after_a_failover() {
    let mut cluster = TestCluster::start(4, default_shards(4)).await;
    cluster.wait_for_leaders().await;
    assert!(
        wait_for_preferred_leaders(&cluster).await,
        "leaders balanced after start"
    );
    // Server 2 leads events-n-z; it goes away, another server takes over, and once server 2
    // is back and caught up, the leadership is handed back to it.
    let client = cluster.client();
    cluster.stop(2).await;
    client
        .put("ev/nz/olga/1", "during the failover")
        .await
        .unwrap();
    cluster.restart(2).await;
    assert!(
        wait_for_preferred_leaders(&cluster).await,
        "leaders balanced after the failover"
    );
    let value = client.get("ev/nz/olga/1").await.unwrap().unwrap();
    assert_eq!(value.value, "during the failover");
    for id in 1..=4 {
        cluster.stop(id).await;
    }
}
