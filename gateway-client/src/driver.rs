//! The task behind a [`GatewayClient`](crate::GatewayClient): it owns the connection, makes
//! it again when it drops (next server, backoff), subscribes again from the last positions,
//! and routes frames to events and replies.

use crate::{Change, Command, Event, GatewayConfig, GatewayError, Position, Positions};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply<T> = oneshot::Sender<Result<T, GatewayError>>;

pub(crate) struct Driver {
    config: GatewayConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// The last positions delivered, per channel (shared with the client's handle).
    positions: Arc<Mutex<BTreeMap<String, Positions>>>,
    /// The subscribed channels, with the positions the user asked to start from (used until
    /// the server acknowledged the subscription once).
    channels: BTreeMap<String, Option<Positions>>,
    /// Subscriptions the user waits on, kept across reconnections until acknowledged.
    awaiting: BTreeMap<String, Reply<Positions>>,
    next_server: usize,
    next_request_id: u64,
    /// Per channel, the changes of an entry whose last change has not arrived yet: they are
    /// handed over together, and dropped if the connection ends first (the server replays the
    /// whole entry on the next one, since the position never moved to it).
    partial: BTreeMap<String, Vec<Change>>,
}

/// The socket's read buffer, in bytes (the server's is the same size).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Why a connection ended.
type Ending = String;

impl Driver {
    pub(crate) fn new(
        config: GatewayConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        positions: Arc<Mutex<BTreeMap<String, Positions>>>,
    ) -> Driver {
        Driver {
            config,
            commands,
            events,
            positions,
            channels: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            next_server: 0,
            next_request_id: 1,
            partial: BTreeMap::new(),
        }
    }

    /// Connects, serves, reconnects, until the client is dropped.
    pub(crate) async fn run(mut self) {
        let mut backoff = self.config.backoff_min;
        loop {
            if self.config.servers.is_empty() {
                return;
            }
            let server = self.config.servers[self.next_server % self.config.servers.len()].clone();
            self.next_server += 1;
            match self.connect(&server).await {
                Ok(socket) => {
                    backoff = self.config.backoff_min;
                    let connected = Event::Connected {
                        server: server.clone(),
                    };
                    if self.events.send(connected).await.is_err() {
                        return;
                    }
                    let Some(reason) = self.serve(socket).await else {
                        return;
                    };
                    let disconnected = Event::Disconnected { server, reason };
                    if self.events.send(disconnected).await.is_err() {
                        return;
                    }
                    // The next server at once, but never in a tight loop.
                    tokio::time::sleep(self.config.backoff_min).await;
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.backoff_max);
                }
            }
        }
    }

    /// Opens a connection, authenticates, and subscribes to every channel again.
    async fn connect(&mut self, server: &str) -> Result<Socket, Ending> {
        self.partial.clear();
        let timeout = self.config.connect_timeout;
        // A small read buffer: tungstenite's default (128 KiB) is zero-filled before every read,
        // a cost paid per frame; notifications are a few hundred bytes, and the buffer grows
        // for a larger message when one comes.
        let socket_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES);
        // `true`: TCP_NODELAY, so that a request or a pong leaves at once.
        let connecting =
            tokio_tungstenite::connect_async_with_config(server, Some(socket_config), true);
        let (mut socket, _) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| "connect timeout".to_owned())?
            .map_err(|error| error.to_string())?;
        let auth = json!({"op": "auth", "token": self.config.token});
        send(&mut socket, &auth).await?;
        let answer = tokio::time::timeout(timeout, next_text(&mut socket))
            .await
            .map_err(|_| "no answer to auth".to_owned())??;
        if answer["op"] != "authenticated" {
            let code = answer["code"].as_str().unwrap_or("unexpected").to_owned();
            let message = answer["message"].as_str().unwrap_or_default().to_owned();
            let _ = self.events.send(Event::Error { code, message }).await;
            return Err("authentication refused".to_owned());
        }
        let channels: Vec<(String, Option<Positions>)> = self
            .channels
            .iter()
            .map(|(channel, from)| {
                let seen = self
                    .positions
                    .lock()
                    .expect("positions lock")
                    .get(channel)
                    .cloned();
                (channel.clone(), seen.or_else(|| from.clone()))
            })
            .collect();
        for (channel, from) in channels {
            send(&mut socket, &subscribe_frame(&channel, from.as_ref())).await?;
        }
        Ok(socket)
    }

    /// Serves one connection; `None` when the client was dropped, else why it ended.
    async fn serve(&mut self, mut socket: Socket) -> Option<Ending> {
        let mut pending: HashMap<u64, Reply<Value>> = HashMap::new();
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    let command = command?;
                    if let Err(ending) = self.on_command(&mut socket, command, &mut pending).await {
                        return Some(ending);
                    }
                }
                message = tokio::time::timeout(self.config.idle_timeout, socket.next()) => {
                    let message = match message {
                        Err(_) => return Some("idle".to_owned()),
                        Ok(None) => return Some("closed".to_owned()),
                        Ok(Some(Err(error))) => return Some(error.to_string()),
                        Ok(Some(Ok(message))) => message,
                    };
                    match message {
                        Message::Text(text) => {
                            let frame = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                            if !self.on_frame(frame, &mut pending).await {
                                return None;
                            }
                        }
                        Message::Close(frame) => {
                            let reason = frame.map_or_else(String::new, |frame| frame.reason.to_string());
                            return Some(reason);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    async fn on_command(
        &mut self,
        socket: &mut Socket,
        command: Command,
        pending: &mut HashMap<u64, Reply<Value>>,
    ) -> Result<(), Ending> {
        match command {
            Command::Subscribe {
                channel,
                from,
                reply,
            } => {
                if self.channels.contains_key(&channel) {
                    let at = self
                        .positions
                        .lock()
                        .expect("positions lock")
                        .get(&channel)
                        .cloned();
                    let _ = reply.send(Ok(at.unwrap_or_default()));
                    return Ok(());
                }
                let frame = subscribe_frame(&channel, from.as_ref());
                self.channels.insert(channel.clone(), from);
                self.awaiting.insert(channel, reply);
                send(socket, &frame).await
            }
            Command::Unsubscribe { channel } => {
                self.forget(&channel);
                send(socket, &json!({"op": "unsubscribe", "channel": channel})).await
            }
            Command::Request { call, reply } => {
                let id = self.next_request_id;
                self.next_request_id += 1;
                let mut frame = call;
                frame["op"] = json!("request");
                frame["id"] = json!(id);
                pending.insert(id, reply);
                send(socket, &frame).await
            }
        }
    }

    /// Records `change` as the last delivered of its channel and shard.
    fn delivered(&self, change: &Change) {
        let mut positions = self.positions.lock().expect("positions lock");
        let channel_positions = positions.entry(change.channel.clone()).or_default();
        channel_positions.insert(change.position.shard, change.position.index);
    }

    fn forget(&mut self, channel: &str) {
        self.channels.remove(channel);
        self.positions
            .lock()
            .expect("positions lock")
            .remove(channel);
    }

    /// Handles one frame from the server; false when the user dropped the client.
    async fn on_frame(&mut self, frame: Value, pending: &mut HashMap<u64, Reply<Value>>) -> bool {
        let channel = frame["channel"].as_str().unwrap_or_default().to_owned();
        match frame["op"].as_str().unwrap_or_default() {
            "change" => match parse_change(&frame) {
                Some(change) if self.channels.contains_key(&change.channel) => {
                    // A server that does not mark entries sends each change as its own.
                    let last = frame["last"].as_bool().unwrap_or(true);
                    let entry = self.partial.entry(change.channel.clone()).or_default();
                    entry.push(change);
                    if !last {
                        return true;
                    }
                    let changes = std::mem::take(entry);
                    if let Some(final_change) = changes.last() {
                        self.delivered(final_change);
                    }
                    for change in changes {
                        if self.events.send(Event::Change(change)).await.is_err() {
                            return false;
                        }
                    }
                    return true;
                }
                _ => {}
            },
            "subscribed" => {
                let at = parse_positions(&frame["at"]);
                self.positions
                    .lock()
                    .expect("positions lock")
                    .insert(channel.clone(), at.clone());
                if let Some(reply) = self.awaiting.remove(&channel) {
                    let _ = reply.send(Ok(at));
                }
            }
            "resync" => {
                let at = parse_positions(&frame["at"]);
                self.positions
                    .lock()
                    .expect("positions lock")
                    .insert(channel.clone(), at.clone());
                return self
                    .events
                    .send(Event::Resync { channel, at })
                    .await
                    .is_ok();
            }
            "reply" => {
                if let Some(reply) = frame["id"].as_u64().and_then(|id| pending.remove(&id)) {
                    let _ = reply.send(Ok(frame));
                }
            }
            "error" => return self.on_error(frame, channel, pending).await,
            _ => {}
        }
        true
    }

    async fn on_error(
        &mut self,
        frame: Value,
        channel: String,
        pending: &mut HashMap<u64, Reply<Value>>,
    ) -> bool {
        let error = GatewayError::Server {
            code: frame["code"].as_str().unwrap_or_default().to_owned(),
            message: frame["message"].as_str().unwrap_or_default().to_owned(),
        };
        if let Some(reply) = frame["id"].as_u64().and_then(|id| pending.remove(&id)) {
            let _ = reply.send(Err(error));
            return true;
        }
        if !channel.is_empty() && self.channels.contains_key(&channel) {
            // The subscription was refused: it is not made again on the next connection.
            self.forget(&channel);
            if let Some(reply) = self.awaiting.remove(&channel) {
                let _ = reply.send(Err(error));
                return true;
            }
        }
        let GatewayError::Server { code, message } = error else {
            return true;
        };
        self.events
            .send(Event::Error { code, message })
            .await
            .is_ok()
    }
}

fn subscribe_frame(channel: &str, from: Option<&Positions>) -> Value {
    match from {
        Some(from) => json!({"op": "subscribe", "channel": channel, "from": from}),
        None => json!({"op": "subscribe", "channel": channel}),
    }
}

async fn send(socket: &mut Socket, frame: &Value) -> Result<(), Ending> {
    let text = frame.to_string();
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|error| error.to_string())
}

/// The next text frame, parsed.
async fn next_text(socket: &mut Socket) -> Result<Value, Ending> {
    loop {
        match socket.next().await {
            None => return Err("closed".to_owned()),
            Some(Err(error)) => return Err(error.to_string()),
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).map_err(|error| error.to_string());
            }
            Some(Ok(Message::Close(_))) => return Err("closed".to_owned()),
            Some(Ok(_)) => {}
        }
    }
}

fn parse_positions(value: &Value) -> Positions {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

fn parse_change(frame: &Value) -> Option<Change> {
    let position: Position = serde_json::from_value(frame["position"].clone()).ok()?;
    Some(Change {
        channel: frame["channel"].as_str()?.to_owned(),
        position,
        key: frame["key"].as_str()?.to_owned(),
        value: frame["value"].as_str().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_frame_becomes_a_change_and_a_deletion_has_no_value() {
        let frame = json!({"op": "change", "channel": "kv:us/", "position": {"shard": 4, "index": 9},
                           "key": "us/alice", "value": null});
        let change = parse_change(&frame).unwrap();
        assert_eq!(change.position, Position { shard: 4, index: 9 });
        assert_eq!((change.key.as_str(), change.value), ("us/alice", None));
        assert_eq!(parse_change(&json!({"op": "change", "key": "k"})), None);
    }

    #[tokio::test]
    async fn an_entry_is_handed_over_whole_and_only_then_becomes_the_resume_position() {
        let (_commands_in, commands) = mpsc::channel(1);
        let (events, mut events_out) = mpsc::channel(16);
        let positions = Arc::default();
        let config = GatewayConfig::new(vec!["ws://unused".into()], "token");
        let mut driver = Driver::new(config, commands, events, Arc::clone(&positions));
        driver.channels.insert("kv:".into(), None);
        let mut pending = HashMap::new();
        let frame = |index: u64, key: &str, last: bool| {
            json!({"op": "change", "channel": "kv:", "position": {"shard": 1, "index": index},
                   "key": key, "value": "v", "last": last})
        };
        // Entry 7 fully, then the first half of entry 8 before the connection ends.
        for (index, key, last) in [(7, "a", false), (7, "b", true), (8, "c", false)] {
            assert!(driver.on_frame(frame(index, key, last), &mut pending).await);
        }
        let mut delivered_keys = || -> Vec<String> {
            std::iter::from_fn(|| events_out.try_recv().ok())
                .map(|event| match event {
                    Event::Change(change) => change.key,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(delivered_keys(), ["a", "b"]);
        let resume_from = positions.lock().unwrap()["kv:"].clone();
        assert_eq!(resume_from, [(1, 7)].into_iter().collect::<Positions>());
        // The next connection starts clean: entry 8 comes again whole.
        driver.partial.clear();
        for (key, last) in [("c", false), ("d", true)] {
            assert!(driver.on_frame(frame(8, key, last), &mut pending).await);
        }
        assert_eq!(delivered_keys(), ["c", "d"]);
    }

    #[test]
    fn a_subscription_is_resumed_from_its_positions_only_when_it_has_some() {
        let fresh = subscribe_frame("kv:", None);
        assert_eq!(fresh, json!({"op": "subscribe", "channel": "kv:"}));
        let from: Positions = [(1, 5), (4, 77)].into_iter().collect();
        let resumed = subscribe_frame("kv:", Some(&from));
        assert_eq!(resumed["from"], json!({"1": 5, "4": 77}));
        assert_eq!(parse_positions(&resumed["from"]), from);
    }
}
