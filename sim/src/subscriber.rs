//! A subscriber of the gateway on a machine of its own (see [`crate::feed`] for what is
//! checked of what it sees).

use crate::feed::{Event, Feed, Positions};
use crate::invariants::Invariants;
use crate::options::Draw;
use bytes::BytesMut;
use client::protocol::{ClientFrame, FrameReader, Request, Response, ServerFrame};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A frame of the gateway protocol is at most this large here (values are short).
const FRAME_BYTES_MAX: usize = 1024 * 1024;

/// Where a subscriber connects, and when it stops.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The servers' native client addresses.
    pub servers: Vec<SocketAddr>,
    /// The token it authenticates with.
    pub token: String,
    /// Set to end it.
    pub stop: Arc<AtomicBool>,
    /// What it sees.
    pub feed: Feed,
    /// The run's invariants, asked on receipt whether a change's entry was applied.
    pub invariants: Arc<Invariants>,
}

impl Subscriber {
    /// Runs until `stop` is set: connects to a server drawn at random, subscribes (resuming
    /// from its last position after the first time), receives for a drawn while, and moves
    /// to another server; a failed connection is retried elsewhere after a pause.
    pub async fn run(self, mut draw: Draw) {
        let mut resume: Option<Positions> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let server = draw.between(0, self.servers.len() as u64 - 1) as usize;
            let stay = Duration::from_millis(draw.between(500, 5_000));
            let _ = self.session(server, stay, &mut resume).await;
            self.feed.push(Event::Disconnected);
            tokio::time::sleep(Duration::from_millis(draw.between(10, 200))).await;
        }
    }

    /// One connection; returns when it ends or `stay` is over.
    async fn session(
        &self,
        server: usize,
        stay: Duration,
        resume: &mut Option<Positions>,
    ) -> Result<(), String> {
        let leave_at = Instant::now() + stay;
        let stream = tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(self.servers[server]),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|error| error.to_string())?;
        let (reader, mut writer) = tokio::io::split(stream);
        let mut frames = FrameReader::new(reader, FRAME_BYTES_MAX);
        let mut buffer = BytesMut::new();
        let hello = ClientFrame {
            id: 0,
            request: Request::Gateway,
        };
        net::codec::encode_message(&hello, FRAME_BYTES_MAX, &mut buffer)
            .map_err(|error| error.to_string())?;
        let from = resume.clone();
        for message in [
            json!({"op": "auth", "token": self.token}),
            match &from {
                Some(from) => {
                    json!({"op": "subscribe", "channel": self.feed.channel().name(), "from": from})
                }
                None => json!({"op": "subscribe", "channel": self.feed.channel().name()}),
            },
        ] {
            net::codec::encode_message(&message.to_string(), FRAME_BYTES_MAX, &mut buffer)
                .map_err(|error| error.to_string())?;
        }
        writer
            .write_all(&buffer)
            .await
            .map_err(|error| error.to_string())?;
        writer.flush().await.map_err(|error| error.to_string())?;
        let welcome = read_until(&mut frames, leave_at).await?;
        match net::codec::decode_message::<ServerFrame>(&welcome) {
            Ok(ServerFrame {
                response: Response::Welcome { .. },
                ..
            }) => {}
            other => return Err(format!("no welcome: {other:?}")),
        }
        // The resume position moves to an entry only once its last change arrived: an entry cut
        // off by the end of the connection is received again, whole.
        loop {
            let payload = read_until(&mut frames, leave_at).await?;
            let text: String = net::codec::decode_message(&payload)
                .map_err(|error| format!("a frame that is not text: {error}"))?;
            let frame: Value =
                serde_json::from_str(&text).map_err(|error| format!("{error}: {text}"))?;
            match frame["op"].as_str() {
                Some("subscribed") => {
                    let at = positions(&frame["at"])?;
                    self.feed.push(Event::Subscribed {
                        server: server + 1,
                        resumed_from: from.clone(),
                        at: at.clone(),
                    });
                    resume.get_or_insert(at);
                }
                Some("change") => {
                    let shard = frame["position"]["shard"].as_u64().ok_or("no shard")?;
                    let index = frame["position"]["index"].as_u64().ok_or("no index")?;
                    let key = frame["key"].as_str().ok_or("no key")?.to_string();
                    let value = frame["value"].as_str().map(str::to_string);
                    let last = frame["last"].as_bool().ok_or("no last")?;
                    self.feed.push(Event::Change {
                        shard,
                        index,
                        change: (key, value),
                        last,
                        applied_on_receipt: self.invariants.has_applied(shard, index),
                    });
                    if last && let Some(resume) = resume.as_mut() {
                        resume.insert(shard, index);
                    }
                }
                Some("resync") => {
                    let at = positions(&frame["at"])?;
                    self.feed.push(Event::Resync { at: at.clone() });
                    if let Some(resume) = resume.as_mut() {
                        resume.extend(at);
                    }
                }
                Some("error") => return Err(format!("refused: {text}")),
                _ => {}
            }
        }
    }
}

/// The next frame, or an error once `until` has passed or the connection ended.
async fn read_until(
    frames: &mut FrameReader<tokio::io::ReadHalf<TcpStream>>,
    until: Instant,
) -> Result<BytesMut, String> {
    let left = until.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, frames.next()).await {
        Ok(Ok(Some(payload))) => Ok(payload),
        Ok(Ok(None)) => Err("closed".into()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("left".into()),
    }
}

/// `{"1": 120, "4": 77}` as positions.
fn positions(value: &Value) -> Result<Positions, String> {
    let object = value.as_object().ok_or("positions are not an object")?;
    object
        .iter()
        .map(|(shard, index)| {
            let shard = shard.parse().map_err(|_| format!("shard {shard:?}"))?;
            let index = index.as_u64().ok_or("an index is not a number")?;
            Ok((shard, index))
        })
        .collect()
}
