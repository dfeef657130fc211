//! Decodes one WAL record from arbitrary bytes: never panics, and whatever decodes re-encodes to a record that
//! decodes to the same value. Also encodes an append built from the bytes and checks that it decodes back, and
//! that a record never decodes as a record of another segment life.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::{DecodeError, EntryRef, Record, decode, encode};

fn round_trip(record: &Record<'_>, life: u64) {
    let mut encoded = Vec::new();
    let length = encode(record, life, &mut encoded).expect("a record within the limit encodes");
    assert_eq!(length as usize, encoded.len());
    let (decoded, decoded_length) = decode(&encoded, life).expect("an encoded record decodes");
    assert_eq!(&decoded, record);
    assert_eq!(decoded_length, encoded.len());
    let other = life.wrapping_add(1);
    assert_eq!(
        decode(&encoded, other).unwrap_err(),
        DecodeError::OtherLife { life },
        "a record of one segment life never passes for a record of another"
    );
}

fuzz_target!(|bytes: &[u8]| {
    // The life id the bytes claim (bytes 8..16 of a record header), so that intact records are found.
    let life = bytes.get(8..16).map_or(1, |claimed| {
        u64::from_le_bytes(claimed.try_into().expect("eight bytes"))
    });
    if let Ok((record, length)) = decode(bytes, life) {
        assert!(length <= bytes.len());
        round_trip(&record, life);
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
        round_trip(
            &Record::Append {
                group: bytes.len() as u64,
                index_first: 1 + u64::from(bytes[0]),
                entries,
            },
            u64::from(bytes[0]),
        );
    }
});
