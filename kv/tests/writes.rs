//! One story per rule of the key space: versions, deletes, ranges, scans, txns and their changes.

mod support;

use kv::{
    ApplyError, Change, Compare, Limits, Op, OpResult, StateMachine, TXN_OPS_MAX, Txn, Version,
    Versioned, Write, WriteResult,
};
use support::{anonymous, b, contents, delete, put};

fn apply(machine: &mut StateMachine, index: u64, write: Write) -> kv::Applied {
    machine.apply(index, &anonymous(write).encode())
}

fn version(create_index: u64, mod_index: u64) -> Version {
    Version {
        create_index,
        mod_index,
    }
}

fn versioned(value: &str, create_index: u64, mod_index: u64) -> Versioned {
    Versioned {
        value: b(value),
        create_index,
        mod_index,
    }
}

#[test]
fn a_put_creates_a_key_and_an_overwrite_keeps_its_create_index() {
    let mut machine = StateMachine::new(Limits::default());
    let first = apply(&mut machine, 3, put("k", "v1"));
    assert_eq!(first.result, Ok(WriteResult::Put { previous: None }));
    assert_eq!(
        first.changes,
        vec![Change {
            key: b("k"),
            value: Some(b("v1"))
        }]
    );
    assert_eq!(machine.get(b"k"), Some(&versioned("v1", 3, 3)));

    let second = apply(&mut machine, 5, put("k", "v2"));
    assert_eq!(
        second.result,
        Ok(WriteResult::Put {
            previous: Some(version(3, 3))
        })
    );
    assert_eq!(machine.get(b"k"), Some(&versioned("v2", 3, 5)));
    assert_eq!((machine.len(), machine.applied_index()), (1, 5));
    assert_eq!(machine.metrics().writes_applied, 2);
}

#[test]
fn a_delete_removes_the_key_and_a_put_after_it_creates_it_anew() {
    let mut machine = StateMachine::new(Limits::default());
    apply(&mut machine, 1, put("k", "v1"));
    let deleted = apply(&mut machine, 2, delete("k"));
    assert_eq!(
        deleted.result,
        Ok(WriteResult::Delete {
            previous: Some(version(1, 1))
        })
    );
    assert_eq!(
        deleted.changes,
        vec![Change {
            key: b("k"),
            value: None
        }]
    );
    assert!(machine.get(b"k").is_none() && machine.is_empty());

    let again = apply(&mut machine, 3, delete("k"));
    assert_eq!(again.result, Ok(WriteResult::Delete { previous: None }));
    assert!(
        again.changes.is_empty(),
        "deleting an absent key changes nothing"
    );

    apply(&mut machine, 4, put("k", "v2"));
    assert_eq!(machine.get(b"k"), Some(&versioned("v2", 4, 4)));
}

#[test]
fn delete_range_removes_start_to_end_exclusive_and_an_empty_end_means_no_upper_bound() {
    let mut machine = StateMachine::new(Limits::default());
    for (index, key) in ["a", "b", "b0", "c", "d"].into_iter().enumerate() {
        apply(&mut machine, index as u64 + 1, put(key, "v"));
    }
    let ranged = apply(
        &mut machine,
        10,
        Write::DeleteRange {
            start: b("b"),
            end: b("c"),
        },
    );
    assert_eq!(ranged.result, Ok(WriteResult::DeleteRange { deleted: 2 }));
    let removed = vec![
        Change {
            key: b("b"),
            value: None,
        },
        Change {
            key: b("b0"),
            value: None,
        },
    ];
    assert_eq!(ranged.changes, removed);
    assert_eq!(
        contents(&machine),
        vec![(b("a"), b("v")), (b("c"), b("v")), (b("d"), b("v"))]
    );

    let backwards = apply(
        &mut machine,
        11,
        Write::DeleteRange {
            start: b("d"),
            end: b("a"),
        },
    );
    assert_eq!(
        backwards.result,
        Ok(WriteResult::DeleteRange { deleted: 0 }),
        "end below start: empty"
    );

    let to_the_end = apply(
        &mut machine,
        12,
        Write::DeleteRange {
            start: b("c"),
            end: b(""),
        },
    );
    assert_eq!(
        to_the_end.result,
        Ok(WriteResult::DeleteRange { deleted: 2 })
    );
    assert_eq!(contents(&machine), vec![(b("a"), b("v"))]);
}

#[test]
fn scan_returns_keys_in_order_up_to_the_limit_and_says_whether_more_remain() {
    let mut machine = StateMachine::new(Limits::default());
    for (index, key) in ["e", "a", "c", "b", "d"].into_iter().enumerate() {
        apply(&mut machine, index as u64 + 1, put(key, key));
    }
    let keys = |found: Vec<(kv::Bytes, Versioned)>| {
        found.into_iter().map(|(key, _)| key).collect::<Vec<_>>()
    };

    let (found, more) = machine.scan(b"b", b"e", 2);
    assert_eq!((keys(found), more), (vec![b("b"), b("c")], true));
    let (found, more) = machine.scan(b"b", b"e", 3);
    assert_eq!((keys(found), more), (vec![b("b"), b("c"), b("d")], false));
    let (found, more) = machine.scan(b"c", b"", 10);
    assert_eq!((keys(found), more), (vec![b("c"), b("d"), b("e")], false));
    let (found, more) = machine.scan(b"a", b"", 0);
    assert_eq!((keys(found), more), (vec![], true));
    assert_eq!(
        machine.scan(b"e", b"a", 10),
        (vec![], false),
        "a backwards range is empty"
    );
}

/// A txn guarded by one compare that puts "yes" on success and "no" on failure.
fn guarded(compare: Compare) -> Write {
    Write::Txn(Txn {
        compares: vec![compare],
        success: vec![Op::Put {
            key: b("out"),
            value: b("yes"),
        }],
        failure: vec![Op::Put {
            key: b("out"),
            value: b("no"),
        }],
    })
}

#[test]
fn a_txn_runs_success_when_every_compare_holds_and_failure_otherwise_for_each_compare_kind() {
    let cases = [
        (
            Compare::ValueEquals {
                key: b("k"),
                value: b("v"),
            },
            true,
        ),
        (
            Compare::ValueEquals {
                key: b("k"),
                value: b("w"),
            },
            false,
        ),
        (
            Compare::ValueEquals {
                key: b("none"),
                value: b(""),
            },
            false,
        ),
        (
            Compare::ModIndexEquals {
                key: b("k"),
                mod_index: 1,
            },
            true,
        ),
        (
            Compare::ModIndexEquals {
                key: b("k"),
                mod_index: 2,
            },
            false,
        ),
        (
            Compare::ModIndexEquals {
                key: b("none"),
                mod_index: 0,
            },
            false,
        ),
        (Compare::Absent { key: b("none") }, true),
        (Compare::Absent { key: b("k") }, false),
        (Compare::Exists { key: b("k") }, true),
        (Compare::Exists { key: b("none") }, false),
    ];
    for (compare, holds) in cases {
        let mut machine = StateMachine::new(Limits::default());
        apply(&mut machine, 1, put("k", "v"));
        let applied = apply(&mut machine, 2, guarded(compare.clone()));
        let Ok(WriteResult::Txn { succeeded, results }) = applied.result else {
            panic!("{applied:?}")
        };
        assert_eq!(succeeded, holds, "{compare:?}");
        assert_eq!(results, vec![OpResult::Put { previous: None }]);
        let expected = if holds { "yes" } else { "no" };
        assert_eq!(
            machine.get(b"out").map(|v| v.value.clone()),
            Some(b(expected)),
            "{compare:?}"
        );
    }
}

#[test]
fn a_txn_with_no_compare_succeeds_and_one_failing_compare_among_many_fails_it() {
    let mut machine = StateMachine::new(Limits::default());
    apply(&mut machine, 1, put("k", "v"));
    let empty = apply(&mut machine, 2, Write::Txn(Txn::default()));
    assert_eq!(
        empty.result,
        Ok(WriteResult::Txn {
            succeeded: true,
            results: vec![]
        })
    );

    let compares = vec![
        Compare::Exists { key: b("k") },
        Compare::Absent { key: b("k") },
    ];
    let mixed = apply(
        &mut machine,
        3,
        Write::Txn(Txn {
            compares,
            ..Txn::default()
        }),
    );
    assert_eq!(
        mixed.result,
        Ok(WriteResult::Txn {
            succeeded: false,
            results: vec![]
        })
    );
}

#[test]
fn gets_inside_a_txn_see_the_earlier_ops_of_the_same_branch_and_changes_list_them_in_order() {
    let mut machine = StateMachine::new(Limits::default());
    apply(&mut machine, 1, put("a", "old"));
    let txn = Txn {
        compares: vec![Compare::ValueEquals {
            key: b("a"),
            value: b("old"),
        }],
        success: vec![
            Op::Get { key: b("a") },
            Op::Put {
                key: b("a"),
                value: b("new"),
            },
            Op::Get { key: b("a") },
            Op::Delete { key: b("a") },
            Op::Get { key: b("a") },
            Op::Delete { key: b("absent") },
            Op::Put {
                key: b("b"),
                value: b("1"),
            },
        ],
        failure: vec![],
    };
    let applied = apply(&mut machine, 7, Write::Txn(txn));
    let results = vec![
        OpResult::Get {
            current: Some(versioned("old", 1, 1)),
        },
        OpResult::Put {
            previous: Some(version(1, 1)),
        },
        OpResult::Get {
            current: Some(versioned("new", 1, 7)),
        },
        OpResult::Delete {
            previous: Some(version(1, 7)),
        },
        OpResult::Get { current: None },
        OpResult::Delete { previous: None },
        OpResult::Put { previous: None },
    ];
    assert_eq!(
        applied.result,
        Ok(WriteResult::Txn {
            succeeded: true,
            results
        })
    );
    let changes = vec![
        Change {
            key: b("a"),
            value: Some(b("new")),
        },
        Change {
            key: b("a"),
            value: None,
        },
        Change {
            key: b("b"),
            value: Some(b("1")),
        },
    ];
    assert_eq!(
        applied.changes, changes,
        "the delete of an absent key is not a change"
    );
    assert_eq!(contents(&machine), vec![(b("b"), b("1"))]);
}

#[test]
fn a_txn_over_the_op_limit_is_refused_whole_and_changes_nothing() {
    let puts = vec![
        Op::Put {
            key: b("k"),
            value: b("v")
        };
        TXN_OPS_MAX + 1
    ];
    let oversized = [
        Txn {
            compares: vec![Compare::Absent { key: b("k") }; TXN_OPS_MAX + 1],
            ..Txn::default()
        },
        Txn {
            success: puts.clone(),
            ..Txn::default()
        },
        Txn {
            failure: puts,
            ..Txn::default()
        },
    ];
    let mut machine = StateMachine::new(Limits::default());
    for (index, txn) in oversized.into_iter().enumerate() {
        let applied = apply(&mut machine, index as u64 + 1, Write::Txn(txn));
        assert!(
            matches!(applied.result, Err(ApplyError::TooLarge { .. })),
            "{applied:?}"
        );
        assert!(applied.changes.is_empty() && machine.is_empty());
    }
    assert_eq!(machine.metrics().writes_applied, 0);

    let at_the_limit = Txn {
        success: vec![
            Op::Put {
                key: b("k"),
                value: b("v")
            };
            TXN_OPS_MAX
        ],
        ..Txn::default()
    };
    let applied = apply(&mut machine, 9, Write::Txn(at_the_limit));
    assert!(applied.result.is_ok());
    assert_eq!(applied.changes.len(), TXN_OPS_MAX);
}

#[test]
fn skip_moves_the_applied_index_without_touching_the_keys() {
    let mut machine = StateMachine::new(Limits::default());
    machine.skip(1);
    apply(&mut machine, 2, put("k", "v"));
    machine.skip(5);
    assert_eq!(machine.applied_index(), 5);
    assert_eq!(machine.get(b"k"), Some(&versioned("v", 2, 2)));
    assert_eq!(
        machine.metrics().entries_applied,
        1,
        "skips are not entries applied"
    );
}

#[test]
#[should_panic(expected = "log order")]
fn applying_an_index_not_above_the_applied_index_is_misuse() {
    let mut machine = StateMachine::new(Limits::default());
    apply(&mut machine, 2, put("k", "v"));
    apply(&mut machine, 2, put("k", "v"));
}

#[test]
#[should_panic(expected = "log order")]
fn skipping_backwards_is_misuse() {
    let mut machine = StateMachine::new(Limits::default());
    machine.skip(3);
    machine.skip(1);
}

#[test]
#[should_panic(expected = "sessions_max")]
fn limits_without_room_for_a_session_are_misuse() {
    StateMachine::new(Limits {
        sessions_max: 0,
        ..Limits::default()
    });
}
