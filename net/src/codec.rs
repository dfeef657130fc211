//! Frames on the wire and the messages inside them.
//!
//! Everything here is synchronous and allocation-bounded, so the fuzz target and the unit tests
//! reach the same code that the connection tasks run.

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::Decoder;

/// Bytes of the length prefix in front of every frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a byte stream could not be cut into frames. The connection that produced it is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more bytes than the configured maximum. Nothing was allocated
    /// for it.
    #[error("frame of {length_bytes} bytes is over the maximum of {frame_size_bytes_max} bytes")]
    TooLarge {
        /// The length that the prefix announced.
        length_bytes: u64,
        /// The maximum the decoder accepts.
        frame_size_bytes_max: usize,
    },
    /// Reading the socket failed.
    #[error("reading the connection failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a message could not be put into a frame. The message is dropped; the connection carries on.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message is larger than the maximum frame size.
    #[error(
        "message of {length_bytes} bytes is over the maximum frame size of {frame_size_bytes_max} bytes"
    )]
    TooLarge {
        /// Size of the encoded message.
        length_bytes: usize,
        /// The configured maximum.
        frame_size_bytes_max: usize,
    },
    /// postcard could not serialize the message.
    #[error("the message could not be serialized: {0}")]
    Serialize(#[from] postcard::Error),
}

/// Why the payload of a frame is not a message. The connection that sent it is closed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The payload is empty: it lacks even the kind byte.
    #[error("the frame is empty")]
    Empty,
    /// The kind byte is neither [`KIND_MESSAGE`] nor [`KIND_PING`].
    #[error("the frame is of unknown kind {0}")]
    UnknownKind(u8),
    /// A ping where a message was expected (by [`decode_message`]).
    #[error("the frame is a ping, not a message")]
    Ping,
    /// postcard rejected the bytes.
    #[error("the frame is not a valid message: {0}")]
    Postcard(#[from] postcard::Error),
    /// A valid message (or a ping) was followed by bytes that belong to nothing.
    #[error("{trailing_bytes} bytes follow the message inside its frame")]
    TrailingBytes {
        /// How many bytes were left over.
        trailing_bytes: usize,
    },
}

/// Cuts a byte stream into frames, checking each length before reserving memory for it.
///
/// The layout of one frame:
///
/// ```text
/// +-----------------------------+----------------------------------------+
/// | length: u32, big-endian (4) | payload: `length` bytes                |
/// +-----------------------------+----------------------------------------+
/// ```
///
/// During the handshake the payloads are the fixed records of [`crate::handshake`]; afterwards
/// each payload starts with a kind byte:
///
/// ```text
/// +-----------+-----------------------------------------------+
/// | kind (1)  | body                                          |
/// +-----------+-----------------------------------------------+
///   0 = message: the body is one postcard-encoded message
///   1 = ping:    no body (sent by a writer that has been idle for `ping_interval_ms`, so that
///                the peer's reader sees traffic; see `read_timeout_ms`)
/// ```
///
/// A frame never holds part of two messages, and `frame_size_bytes_max` counts the kind byte.
///
/// It is a two-state machine, as in tokio-util's `LengthDelimitedCodec`: first the header, then
/// the data whose length the header gave. "Need more bytes" is `Ok(None)`.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    frame_size_bytes_max: usize,
    state: DecodeState,
}

#[derive(Debug, Clone, Copy)]
enum DecodeState {
    Head,
    Data { length_bytes: usize },
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `frame_size_bytes_max` bytes of payload.
    pub fn new(frame_size_bytes_max: usize) -> Self {
        FrameDecoder {
            frame_size_bytes_max,
            state: DecodeState::Head,
        }
    }

    /// Changes the maximum; the connection tasks raise it once the peer has authenticated.
    pub fn set_frame_size_bytes_max(&mut self, frame_size_bytes_max: usize) {
        self.frame_size_bytes_max = frame_size_bytes_max;
    }

    fn decode_head(&mut self, source: &mut BytesMut) -> Result<Option<usize>, FrameError> {
        if source.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let length_bytes = u64::from(source.get_u32());
        // The check comes before `reserve`, so a hostile prefix costs nothing.
        if length_bytes > self.frame_size_bytes_max as u64 {
            return Err(FrameError::TooLarge {
                length_bytes,
                frame_size_bytes_max: self.frame_size_bytes_max,
            });
        }
        let length_bytes = length_bytes as usize;
        source.reserve(length_bytes.saturating_sub(source.len()));
        Ok(Some(length_bytes))
    }
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, source: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let length_bytes = match self.state {
            DecodeState::Head => match self.decode_head(source)? {
                Some(length_bytes) => length_bytes,
                None => return Ok(None),
            },
            DecodeState::Data { length_bytes } => length_bytes,
        };
        if source.len() < length_bytes {
            self.state = DecodeState::Data { length_bytes };
            return Ok(None);
        }
        self.state = DecodeState::Head;
        Ok(Some(source.split_to(length_bytes)))
    }
}

/// Appends one frame (header and payload) to `destination`.
pub fn encode_frame_payload(
    payload: &[u8],
    frame_size_bytes_max: usize,
    destination: &mut BytesMut,
) -> Result<(), EncodeError> {
    if payload.len() > frame_size_bytes_max || payload.len() > u32::MAX as usize {
        return Err(EncodeError::TooLarge {
            length_bytes: payload.len(),
            frame_size_bytes_max,
        });
    }
    destination.reserve(FRAME_HEADER_BYTES + payload.len());
    destination.put_u32(payload.len() as u32);
    destination.put_slice(payload);
    Ok(())
}

/// The kind byte of a frame that carries a message.
pub const KIND_MESSAGE: u8 = 0;
/// The kind byte of a ping frame (a payload of exactly this one byte).
pub const KIND_PING: u8 = 1;

/// What the payload of a frame holds after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<M> {
    /// A message for the node loop.
    Message(M),
    /// A ping: proof of life from an idle peer, consumed by the transport.
    Ping,
}

/// Appends one ping frame to `destination`.
pub fn encode_ping(destination: &mut BytesMut) {
    destination.reserve(FRAME_HEADER_BYTES + 1);
    destination.put_u32(1);
    destination.put_u8(KIND_PING);
}

/// Appends `message` as one frame (kind [`KIND_MESSAGE`]) to `destination`, serializing it in
/// place.
///
/// On error `destination` is left as it was, so the frames already in it still go out.
pub fn encode_message<M: Serialize>(
    message: &M,
    frame_size_bytes_max: usize,
    destination: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = destination.len();
    destination.put_u32(0);
    destination.put_u8(KIND_MESSAGE);
    if let Err(error) = postcard::to_io(message, (&mut *destination).writer()) {
        destination.truncate(start);
        return Err(EncodeError::Serialize(error));
    }
    let length_bytes = destination.len() - start - FRAME_HEADER_BYTES;
    if length_bytes > frame_size_bytes_max || length_bytes > u32::MAX as usize {
        destination.truncate(start);
        return Err(EncodeError::TooLarge {
            length_bytes,
            frame_size_bytes_max,
        });
    }
    destination[start..start + FRAME_HEADER_BYTES]
        .copy_from_slice(&(length_bytes as u32).to_be_bytes());
    Ok(())
}

/// Decodes the payload of a frame: a message or a ping; every byte must belong to it.
pub fn decode_payload<M: DeserializeOwned>(payload: &[u8]) -> Result<Payload<M>, MessageError> {
    let Some((&kind, body)) = payload.split_first() else {
        return Err(MessageError::Empty);
    };
    let (decoded, rest) = match kind {
        KIND_MESSAGE => {
            let (message, rest) = postcard::take_from_bytes(body)?;
            (Payload::Message(message), rest)
        }
        KIND_PING => (Payload::Ping, body),
        other => return Err(MessageError::UnknownKind(other)),
    };
    if !rest.is_empty() {
        return Err(MessageError::TrailingBytes {
            trailing_bytes: rest.len(),
        });
    }
    Ok(decoded)
}

/// Decodes the payload of a frame that must hold a message (not a ping).
pub fn decode_message<M: DeserializeOwned>(payload: &[u8]) -> Result<M, MessageError> {
    match decode_payload(payload)? {
        Payload::Message(message) => Ok(message),
        Payload::Ping => Err(MessageError::Ping),
    }
}

/// The frames found in a byte slice by [`decode_frames`].
#[derive(Debug, Default)]
pub struct DecodedFrames {
    /// Payloads of the complete frames, in order.
    pub payloads: Vec<BytesMut>,
    /// Bytes at the end that do not yet form a whole frame.
    pub incomplete_tail_bytes: usize,
}

/// Cuts `bytes` into frames as a connection would, synchronously (the fuzz target's entry point).
pub fn decode_frames(
    bytes: &[u8],
    frame_size_bytes_max: usize,
) -> Result<DecodedFrames, FrameError> {
    let mut decoder = FrameDecoder::new(frame_size_bytes_max);
    let mut source = BytesMut::from(bytes);
    let mut decoded = DecodedFrames::default();
    while let Some(payload) = decoder.decode(&mut source)? {
        decoded.payloads.push(payload);
    }
    decoded.incomplete_tail_bytes = source.len();
    if let DecodeState::Data { .. } = decoder.state {
        // The header of the unfinished frame was consumed; count it as part of the tail.
        decoded.incomplete_tail_bytes += FRAME_HEADER_BYTES;
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::arbitrary::Arbitrary;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note {
        group: u32,
        text: String,
    }

    fn note(group: u32, text: &str) -> Note {
        Note {
            group,
            text: text.to_string(),
        }
    }

    #[test]
    fn messages_round_trip_through_frames() {
        let mut wire = BytesMut::new();
        encode_message(&note(1, "alpha"), 1024, &mut wire).unwrap();
        encode_message(&note(2, ""), 1024, &mut wire).unwrap();
        let decoded = decode_frames(&wire, 1024).unwrap();
        assert_eq!(decoded.incomplete_tail_bytes, 0);
        let notes: Vec<Note> = decoded
            .payloads
            .iter()
            .map(|payload| decode_message(payload).unwrap())
            .collect();
        assert_eq!(notes, vec![note(1, "alpha"), note(2, "")]);
    }

    #[test]
    fn a_frame_split_anywhere_decodes_once_complete() {
        let mut wire = BytesMut::new();
        encode_message(&note(7, "split me"), 1024, &mut wire).unwrap();
        for cut in 0..wire.len() {
            let mut decoder = FrameDecoder::new(1024);
            let mut source = BytesMut::from(&wire[..cut]);
            assert!(decoder.decode(&mut source).unwrap().is_none(), "cut {cut}");
            source.extend_from_slice(&wire[cut..]);
            let payload = decoder.decode(&mut source).unwrap().unwrap();
            assert_eq!(
                decode_message::<Note>(&payload).unwrap(),
                note(7, "split me")
            );
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let mut source = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let mut decoder = FrameDecoder::new(1024);
        let error = decoder.decode(&mut source).unwrap_err();
        assert!(matches!(
            error,
            FrameError::TooLarge {
                length_bytes: 4_294_967_295,
                frame_size_bytes_max: 1024
            }
        ));
        assert!(source.capacity() < 1024 * 1024);
    }

    #[test]
    fn a_message_over_the_maximum_is_not_encoded() {
        let mut wire = BytesMut::new();
        encode_message(&note(1, "fits"), 64, &mut wire).unwrap();
        let before = wire.clone();
        let error = encode_message(&note(1, &"x".repeat(100)), 64, &mut wire).unwrap_err();
        assert!(matches!(error, EncodeError::TooLarge { .. }));
        assert_eq!(wire, before);
    }

    #[test]
    fn trailing_bytes_and_garbage_are_errors() {
        let mut payload = vec![KIND_MESSAGE];
        payload.extend(postcard::to_allocvec(&note(3, "x")).unwrap());
        assert_eq!(decode_message::<Note>(&payload).unwrap(), note(3, "x"));
        payload.push(0);
        assert!(matches!(
            decode_message::<Note>(&payload),
            Err(MessageError::TrailingBytes { trailing_bytes: 1 })
        ));
        assert!(decode_message::<Note>(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(matches!(
            decode_message::<Note>(&[]),
            Err(MessageError::Empty)
        ));
        assert!(matches!(
            decode_message::<Note>(&[7, 1, 0]),
            Err(MessageError::UnknownKind(7))
        ));
        assert!(matches!(
            decode_payload::<Note>(&[KIND_PING, 0]),
            Err(MessageError::TrailingBytes { trailing_bytes: 1 })
        ));
    }

    #[test]
    fn pings_and_messages_share_the_stream() {
        let mut wire = BytesMut::new();
        encode_ping(&mut wire);
        encode_message(&note(1, "between"), 1024, &mut wire).unwrap();
        encode_ping(&mut wire);
        assert_eq!(&wire[..5], &[0, 0, 0, 1, KIND_PING]);
        let decoded = decode_frames(&wire, 1024).unwrap();
        let payloads: Vec<Payload<Note>> = decoded
            .payloads
            .iter()
            .map(|payload| decode_payload(payload).unwrap())
            .collect();
        assert_eq!(
            payloads,
            vec![
                Payload::Ping,
                Payload::Message(note(1, "between")),
                Payload::Ping
            ]
        );
        assert!(matches!(
            decode_message::<Note>(&decoded.payloads[0]),
            Err(MessageError::Ping)
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_messages_and_pings_cut_anywhere_decode_to_themselves(
            notes in proptest::collection::vec((proptest::num::u32::ANY, ".{0,40}"), 0..20),
            cuts in proptest::collection::vec(proptest::sample::Index::arbitrary(), 0..8),
        ) {
            // A ping follows every note of an odd group, as an idle writer would interleave them.
            let mut expected = Vec::new();
            let mut wire = BytesMut::new();
            for (group, text) in &notes {
                encode_message(&note(*group, text), 1024, &mut wire).unwrap();
                expected.push(Payload::Message(note(*group, text)));
                if group % 2 == 1 {
                    encode_ping(&mut wire);
                    expected.push(Payload::Ping);
                }
            }
            let mut cut_points: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
            cut_points.push(wire.len());
            cut_points.sort_unstable();
            let mut decoder = FrameDecoder::new(1024);
            let mut source = BytesMut::new();
            let mut decoded = Vec::new();
            let mut fed = 0;
            for cut in cut_points {
                source.extend_from_slice(&wire[fed..cut]);
                fed = cut;
                while let Some(payload) = decoder.decode(&mut source).unwrap() {
                    decoded.push(decode_payload::<Note>(&payload).unwrap());
                }
            }
            proptest::prop_assert_eq!(decoded, expected);
            proptest::prop_assert!(source.is_empty());
        }
    }

    #[test]
    fn an_incomplete_tail_is_reported() {
        let mut wire = BytesMut::new();
        encode_message(&note(1, "whole"), 1024, &mut wire).unwrap();
        let whole_bytes = wire.len();
        encode_message(&note(2, "cut"), 1024, &mut wire).unwrap();
        let decoded = decode_frames(&wire[..wire.len() - 1], 1024).unwrap();
        assert_eq!(decoded.payloads.len(), 1);
        assert_eq!(decoded.incomplete_tail_bytes, wire.len() - 1 - whole_bytes);
    }
}
