//! One connection to one server: a writer task, a reader task, and the answers waited for.

use crate::protocol::{
    CLIENT_FRAME_BYTES_MAX, ClientFrame, FrameReader, Request, Response, ServerFrame,
    write_and_flush,
};
use bytes::BytesMut;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Requests queued for the writer of one connection.
const WRITE_QUEUE_CAPACITY: usize = 1024;

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// A pipelined connection; clones share it, and it closes when the last clone is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Dropping it ends the writer task, which drops the socket's write half.
    frames: mpsc::Sender<ClientFrame>,
    waiting: Waiting,
    next_id: AtomicU64,
    open: Arc<AtomicBool>,
    /// Aborted on drop, which drops the socket's read half: the socket closes.
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects, says hello with the token and waits for the welcome.
    pub(crate) async fn open(address: SocketAddr, token: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (reader, mut writer) = tokio::io::split(stream);
        let mut frames = FrameReader::new(reader, CLIENT_FRAME_BYTES_MAX);
        let hello = ClientFrame {
            id: 0,
            request: Request::Hello {
                token: token.to_owned(),
            },
        };
        let mut buffer = BytesMut::new();
        encode(&hello, &mut buffer)?;
        write_and_flush(&mut writer, &buffer).await?;
        match frames.next().await {
            Ok(Some(payload)) => match decode(&payload)? {
                ServerFrame {
                    response: Response::Welcome { .. },
                    ..
                } => {}
                ServerFrame {
                    response: Response::Error(error),
                    ..
                } => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        error.to_string(),
                    ));
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected answer to hello: {other:?}"),
                    ));
                }
            },
            Ok(None) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Err(error) => return Err(error),
        }
        let (sender, mut queue) = mpsc::channel::<ClientFrame>(WRITE_QUEUE_CAPACITY);
        let waiting: Waiting = Arc::default();
        let open = Arc::new(AtomicBool::new(true));
        let writer_open = open.clone();
        tokio::spawn(async move {
            let mut buffer = BytesMut::new();
            while let Some(frame) = queue.recv().await {
                buffer.clear();
                let mut result = encode(&frame, &mut buffer);
                // Everything queued meanwhile goes out in the same write.
                while result.is_ok() {
                    match queue.try_recv() {
                        Ok(frame) => result = encode(&frame, &mut buffer),
                        Err(_) => break,
                    }
                }
                if result.is_err() || write_and_flush(&mut writer, &buffer).await.is_err() {
                    break;
                }
            }
            writer_open.store(false, Ordering::Relaxed);
        });
        let reader_waiting = waiting.clone();
        let reader_open = open.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(payload)) = frames.next().await {
                let Ok(frame) = decode(&payload) else { break };
                let sender = reader_waiting
                    .lock()
                    .expect("waiting lock")
                    .remove(&frame.id);
                if let Some(sender) = sender {
                    let _ = sender.send(frame.response);
                }
            }
            reader_open.store(false, Ordering::Relaxed);
            // Dropping the senders tells every waiting caller that the connection is gone.
            reader_waiting.lock().expect("waiting lock").clear();
        });
        Ok(Connection {
            shared: Arc::new(Shared {
                frames: sender,
                waiting,
                next_id: AtomicU64::new(1),
                open,
                reader,
            }),
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::Relaxed) && !self.shared.frames.is_closed()
    }

    /// Sends one request and waits for its answer; an error means the connection failed and
    /// the outcome is unknown.
    pub(crate) async fn call(&self, request: Request) -> io::Result<Response> {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        shared
            .waiting
            .lock()
            .expect("waiting lock")
            .insert(id, sender);
        let guard = Forget {
            waiting: &shared.waiting,
            id,
        };
        if !self.is_open()
            || shared
                .frames
                .send(ClientFrame { id, request })
                .await
                .is_err()
        {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let response = receiver
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::ConnectionReset));
        drop(guard);
        response
    }
}

/// Removes a waiting entry when its caller gives up (a timeout drops the future).
struct Forget<'a> {
    waiting: &'a Waiting,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiting.lock().expect("waiting lock").remove(&self.id);
    }
}

fn encode(frame: &ClientFrame, buffer: &mut BytesMut) -> io::Result<()> {
    net::codec::encode_message(frame, CLIENT_FRAME_BYTES_MAX, buffer)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))
}

fn decode(payload: &[u8]) -> io::Result<ServerFrame> {
    net::codec::decode_message(payload)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))
}
