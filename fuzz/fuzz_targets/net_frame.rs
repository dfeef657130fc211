//! Cuts arbitrary bytes into transport frames and decodes handshake records, messages and pings from
//! them: never panics; complete frames re-encode to exactly the bytes they came from, and every
//! message that decodes encodes again to a frame that decodes to the same value (a ping, to the
//! very same frame).
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::bytes::BytesMut;
use net::codec::{
    Payload, decode_frames, decode_payload, encode_frame_payload, encode_message, encode_ping,
};
use net::handshake::Hello;

/// A message with the kinds of fields Raft messages have: integers, a flag, bytes and text.
type Sample = (u64, u32, bool, Vec<u8>, Option<String>);

const FRAME_SIZE_BYTES_MAX: usize = 4096;

fuzz_target!(|bytes: &[u8]| {
    let Ok(decoded) = decode_frames(bytes, FRAME_SIZE_BYTES_MAX) else {
        return;
    };
    let mut frames = BytesMut::new();
    for payload in &decoded.payloads {
        encode_frame_payload(payload, FRAME_SIZE_BYTES_MAX, &mut frames).unwrap();
        if let Ok(hello) = Hello::from_bytes(payload) {
            assert_eq!(&hello.to_bytes()[..], &payload[..]);
        }
        match decode_payload::<Sample>(payload) {
            Ok(Payload::Message(message)) => {
                let mut frame = BytesMut::new();
                encode_message(&message, FRAME_SIZE_BYTES_MAX, &mut frame).unwrap();
                let again = decode_frames(&frame, FRAME_SIZE_BYTES_MAX).unwrap();
                assert_eq!(again.payloads.len(), 1);
                assert_eq!(
                    decode_payload::<Sample>(&again.payloads[0]).unwrap(),
                    Payload::Message(message)
                );
            }
            Ok(Payload::Ping) => {
                let mut frame = BytesMut::new();
                encode_ping(&mut frame);
                assert_eq!(&frame[4..], &payload[..]);
            }
            Err(_) => {}
        }
    }
    let complete_bytes = bytes.len() - decoded.incomplete_tail_bytes;
    assert_eq!(&frames[..], &bytes[..complete_bytes]);
});
