//! Decodes one WAL record from arbitrary bytes: never panics, and whatever decodes re-encodes to a record that
//! decodes to the same value. Also encodes an append built from the bytes and checks that it decodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::{EntryRef, Record, decode, encode};

fn round_trip(record: &Record<'_>) {
    let mut encoded = Vec::new();
    let length = encode(record, &mut encoded).expect("a record within the limit encodes");
    assert_eq!(length as usize, encoded.len());
    let (decoded, decoded_length) = decode(&encoded).expect("an encoded record decodes");
    assert_eq!(&decoded, record);
    assert_eq!(decoded_length, encoded.len());
}

fuzz_target!(|bytes: &[u8]| {
    if let Ok((record, length)) = decode(bytes) {
        assert!(length <= bytes.len());
        round_trip(&record);
    }
    // The same bytes, cut into entries whose terms come from their first byte.
    let entries: Vec<EntryRef<'_>> = bytes
        .chunks(7)
        .map(|chunk| EntryRef {
            term: u64::from(chunk[0]),
            payload: &chunk[1..],
        })
        .collect();
    if !entries.is_empty() {
        round_trip(&Record::Append {
            group: bytes.len() as u64,
            index_first: 1 + u64::from(bytes[0]),
            entries,
        });
    }
});
