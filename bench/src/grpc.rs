//! etcd's gRPC API, the little of it the benchmark needs: `KV.Put`, `KV.Range` (linearizable)
//! and `Maintenance.Status`, over one HTTP/2 connection with many concurrent streams.
//!
//! gRPC over HTTP/2: a `POST` to `/<package>.<Service>/<Method>` with `content-type:
//! application/grpc` and `te: trailers`; the body is one message framed as a compressed flag
//! (0) and a 4-byte big-endian length; the answer is one such message followed by trailers
//! carrying `grpc-status` (0: OK) and `grpc-message`. The messages are protobuf, written and
//! read here field by field (the field numbers are those of etcd's `rpc.proto` and `kv.proto`).

use anyhow::{Context, anyhow, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// One HTTP/2 connection to an etcd member; clones share it (each call is its own stream).
#[derive(Clone, Debug)]
pub struct Etcd {
    address: SocketAddr,
    sender: h2::client::SendRequest<Bytes>,
}

/// What `Maintenance.Status` says of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    /// The answering member's id.
    pub member_id: u64,
    /// The id of the leader it knows (0: none).
    pub leader: u64,
    /// Its Raft index.
    pub raft_index: u64,
}

impl Etcd {
    /// Connects to the member whose client URL is `http://address`.
    pub async fn connect(address: SocketAddr) -> anyhow::Result<Etcd> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to etcd at {address}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .handshake(stream)
            .await
            .context("the HTTP/2 handshake with etcd")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Etcd { address, sender })
    }

    /// `KV.Put`: sets `key` to `value`.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        let mut message = BytesMut::with_capacity(key.len() + value.len() + 8);
        put_bytes(&mut message, 1, key);
        put_bytes(&mut message, 2, value);
        self.call("/etcdserverpb.KV/Put", message.freeze()).await?;
        Ok(())
    }

    /// `KV.Range` of one key, linearizable (not `serializable`): its value, if any.
    pub async fn get(&self, key: &[u8]) -> anyhow::Result<Option<Bytes>> {
        let mut message = BytesMut::with_capacity(key.len() + 4);
        put_bytes(&mut message, 1, key);
        let answer = self
            .call("/etcdserverpb.KV/Range", message.freeze())
            .await?;
        // RangeResponse: kvs = 2 (KeyValue: value = 5).
        match fields(&answer)?.into_iter().find(|field| field.number == 2) {
            Some(Field {
                value: Value::Bytes(kv),
                ..
            }) => {
                let value = fields(&kv)?
                    .into_iter()
                    .find_map(|field| match field {
                        Field {
                            number: 5,
                            value: Value::Bytes(value),
                        } => Some(value),
                        _ => None,
                    })
                    .unwrap_or_default();
                Ok(Some(value))
            }
            _ => Ok(None),
        }
    }

    /// `Maintenance.Status` of the member this connection reaches.
    pub async fn status(&self) -> anyhow::Result<MemberStatus> {
        let answer = self
            .call("/etcdserverpb.Maintenance/Status", Bytes::new())
            .await?;
        // StatusResponse: header = 1 (ResponseHeader: member_id = 2), leader = 4,
        // raftIndex = 5.
        let mut status = MemberStatus {
            member_id: 0,
            leader: 0,
            raft_index: 0,
        };
        for field in fields(&answer)? {
            match (field.number, field.value) {
                (1, Value::Bytes(header)) => {
                    for inner in fields(&header)? {
                        if let (2, Value::Varint(id)) = (inner.number, inner.value) {
                            status.member_id = id;
                        }
                    }
                }
                (4, Value::Varint(leader)) => status.leader = leader,
                (5, Value::Varint(index)) => status.raft_index = index,
                _ => {}
            }
        }
        Ok(status)
    }

    /// One unary call: `message` in, the answer's message out, or the gRPC error.
    async fn call(&self, path: &str, message: Bytes) -> anyhow::Result<Bytes> {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", self.address))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let mut sender = self.sender.clone().ready().await?;
        let (response, mut body) = sender.send_request(request, false)?;
        let mut framed = BytesMut::with_capacity(5 + message.len());
        framed.put_u8(0);
        framed.put_u32(u32::try_from(message.len())?);
        framed.extend_from_slice(&message);
        body.send_data(framed.freeze(), true)?;
        let response = response.await?;
        let (head, mut body) = response.into_parts();
        if head.status != http::StatusCode::OK {
            bail!("{path}: HTTP status {}", head.status);
        }
        let mut received = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            received.extend_from_slice(&chunk);
        }
        // A failed call may carry its status in the headers alone (a "trailers-only" answer).
        let trailers = body.trailers().await?.unwrap_or_default();
        let status = trailers
            .get("grpc-status")
            .or_else(|| head.headers.get("grpc-status"))
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if status != "0" {
            let message = trailers
                .get("grpc-message")
                .or_else(|| head.headers.get("grpc-message"))
                .and_then(|value| value.to_str().ok())
                .unwrap_or("");
            bail!("{path}: gRPC status {status:?}: {message}");
        }
        if received.len() < 5 {
            bail!("{path}: an answer of {} bytes", received.len());
        }
        let mut answer = received.freeze();
        let compressed = answer.get_u8();
        let length = answer.get_u32() as usize;
        if compressed != 0 || length != answer.len() {
            bail!("{path}: a compressed or mis-sized answer");
        }
        Ok(answer)
    }
}

/// One protobuf field.
#[derive(Debug, PartialEq, Eq)]
struct Field {
    number: u64,
    value: Value,
}

/// The two wire types the messages used here hold (fixed-width fields are read and skipped).
#[derive(Debug, PartialEq, Eq)]
enum Value {
    Varint(u64),
    Bytes(Bytes),
    Fixed,
}

fn put_varint(buffer: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buffer.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.put_u8(value as u8);
}

/// A length-delimited field (wire type 2).
fn put_bytes(buffer: &mut BytesMut, number: u64, bytes: &[u8]) {
    put_varint(buffer, (number << 3) | 2);
    put_varint(buffer, bytes.len() as u64);
    buffer.extend_from_slice(bytes);
}

fn get_varint(buffer: &mut Bytes) -> anyhow::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buffer.has_remaining() {
            bail!("a varint cut short");
        }
        let byte = buffer.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(anyhow!("a varint longer than 64 bits"))
}

/// The top-level fields of a message, in order.
fn fields(message: &Bytes) -> anyhow::Result<Vec<Field>> {
    let mut buffer = message.clone();
    let mut fields = Vec::new();
    while buffer.has_remaining() {
        let key = get_varint(&mut buffer)?;
        let number = key >> 3;
        let value = match key & 7 {
            0 => Value::Varint(get_varint(&mut buffer)?),
            2 => {
                let length = usize::try_from(get_varint(&mut buffer)?)?;
                if length > buffer.remaining() {
                    bail!("field {number}: {length} bytes announced, fewer present");
                }
                Value::Bytes(buffer.split_to(length))
            }
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                if width > buffer.remaining() {
                    bail!("field {number}: a fixed-width value cut short");
                }
                buffer.advance(width);
                Value::Fixed
            }
            other => bail!("field {number}: wire type {other} is not used by etcd's messages"),
        };
        fields.push(Field { number, value });
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_request_is_encoded_as_protobuf_writes_it() {
        let mut message = BytesMut::new();
        put_bytes(&mut message, 1, b"k");
        put_bytes(&mut message, 2, &[7; 200]);
        // Field 1, wire type 2, length 1, "k"; field 2, wire type 2, length 200 (two bytes).
        assert_eq!(&message[..6], &[0x0a, 0x01, b'k', 0x12, 0xc8, 0x01]);
        let parsed = fields(&message.freeze()).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].value, Value::Bytes(Bytes::from(vec![7; 200])));
    }

    #[test]
    fn nested_messages_varints_and_fixed_fields_are_read_and_bad_input_refused() {
        // StatusResponse { header { member_id: 300 }, version: "3.4", dbSize (fixed64 here
        // only to exercise the skip), leader: 300 }.
        let mut header = BytesMut::new();
        put_varint(&mut header, 2 << 3);
        put_varint(&mut header, 300);
        let mut message = BytesMut::new();
        put_bytes(&mut message, 1, &header);
        put_bytes(&mut message, 2, b"3.4");
        put_varint(&mut message, (3 << 3) | 1);
        message.extend_from_slice(&[0; 8]);
        put_varint(&mut message, 4 << 3);
        put_varint(&mut message, 300);
        let parsed = fields(&message.clone().freeze()).unwrap();
        assert_eq!(
            parsed[3],
            Field {
                number: 4,
                value: Value::Varint(300)
            }
        );
        assert_eq!(parsed[2].value, Value::Fixed);
        // Cut anywhere inside, it is refused rather than misread.
        for cut in 1..message.len() {
            let short = message.clone().freeze().slice(..cut);
            if let Ok(parsed) = fields(&short) {
                assert!(parsed.len() < 4, "cut at {cut} parsed whole");
            }
        }
        assert!(fields(&Bytes::from_static(&[0x0b])).is_err(), "wire type 3");
    }
}
