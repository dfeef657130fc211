//! The handshake that opens every connection: who is speaking, in which cluster, proven with the
//! cluster secret.
//!
//! Both sides run the same four steps, each record in its own frame (see
//! [`crate::codec::FrameDecoder`] for the frame layout):
//!
//! 1. send a [`Hello`] with a fresh random nonce;
//! 2. read the peer's [`Hello`] and check version, cluster id and server id;
//! 3. send a proof: HMAC-SHA256, keyed by the cluster secret, over a label naming the sender's role
//!    followed by the dialer's and the acceptor's hellos exactly as sent;
//! 4. read the peer's proof and verify it (in constant time, by the `hmac` crate).
//!
//! Because each proof covers both nonces, a recorded handshake cannot be replayed into a new
//! connection, and because the label names the role, a proof cannot be reflected back to its sender.
//!
//! Limits, on purpose for now: nothing is encrypted and frames after the handshake are not
//! authenticated, so an attacker on the path can read and alter traffic or take over an
//! established connection; the secret is shared by every server, so any one server that leaks it
//! lets an outsider pose as any server. The handshake keeps stray and misconfigured processes
//! (another cluster, an old version, a port scanner) out; TLS is the answer to a hostile network.
//!
//! HMAC and SHA-256 come from the RustCrypto `hmac` and `sha2` crates: cryptography written here
//! by hand would be a liability.

use bytes::{Buf, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::ServerId;
use crate::codec::{FrameError, encode_frame_payload};
use crate::connection::FrameReader;

/// Version of the wire protocol; peers with another version are refused.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of an encoded [`Hello`].
pub const HELLO_BYTES: usize = 38;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_BYTES: usize = 32;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 16;
/// The largest frame read before the peer is authenticated, so that a stranger cannot make the
/// server reserve a large buffer.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 64;

const MAGIC: [u8; 4] = *b"AGNT";

/// The first record each side sends, [`HELLO_BYTES`] long, as the payload of one frame.
///
/// ```text
/// offset 0        4          6             14            22           38
///        +--------+----------+-------------+-------------+------------+
///        | magic  | version  | cluster id  | server id   | nonce      |
///        | "AGNT" | u16 BE   | u64 BE      | u64 BE      | 16 random  |
///        +--------+----------+-------------+-------------+------------+
/// ```
///
/// The proof that follows it is a frame of [`PROOF_BYTES`]:
/// `HMAC-SHA256(cluster secret, role label || dialer's hello || acceptor's hello)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// The cluster the sender belongs to.
    pub cluster_id: u64,
    /// The sender's server id.
    pub server_id: ServerId,
    /// Fresh random bytes for this connection.
    pub nonce: [u8; NONCE_BYTES],
}

impl Hello {
    /// The record as sent on the wire.
    pub fn to_bytes(&self) -> [u8; HELLO_BYTES] {
        let mut bytes = [0; HELLO_BYTES];
        bytes[0..4].copy_from_slice(&MAGIC);
        bytes[4..6].copy_from_slice(&self.version.to_be_bytes());
        bytes[6..14].copy_from_slice(&self.cluster_id.to_be_bytes());
        bytes[14..22].copy_from_slice(&self.server_id.to_be_bytes());
        bytes[22..38].copy_from_slice(&self.nonce);
        bytes
    }

    /// Parses a record; anything but exactly [`HELLO_BYTES`] bytes starting with the magic is
    /// [`HandshakeFailure::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Hello, HandshakeFailure> {
        if bytes.len() != HELLO_BYTES || bytes[0..4] != MAGIC {
            return Err(HandshakeFailure::Malformed);
        }
        let mut fields = &bytes[4..];
        let version = fields.get_u16();
        let cluster_id = fields.get_u64();
        let server_id = fields.get_u64();
        let mut nonce = [0; NONCE_BYTES];
        fields.copy_to_slice(&mut nonce);
        Ok(Hello {
            version,
            cluster_id,
            server_id,
            nonce,
        })
    }
}

/// Why a handshake was refused. Each reason is logged and counted in
/// [`crate::Metrics::handshake_failures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum HandshakeFailure {
    /// The connection failed or closed mid-handshake, or no nonce could be drawn.
    #[error("the connection failed during the handshake")]
    Io,
    /// The peer did not finish the handshake in time.
    #[error("the handshake timed out")]
    Timeout,
    /// A record was not a well-formed hello or proof (garbage on the port).
    #[error("the peer sent a malformed handshake record")]
    Malformed,
    /// The peer speaks another protocol version.
    #[error("the peer speaks another protocol version")]
    Version,
    /// The peer belongs to another cluster.
    #[error("the peer belongs to another cluster")]
    ClusterId,
    /// The peer's server id is not in this server's peer list (or is this server's own id).
    #[error("the peer's server id is not a configured peer")]
    UnknownServer,
    /// The address dialed answered with another server id than the one configured for it.
    #[error("the dialed address answered with an unexpected server id")]
    UnexpectedServer,
    /// The peer dialed although the rule says that this server dials it (the lower id dials).
    #[error("the peer dialed although the lower server id dials")]
    WrongDirection,
    /// The peer's proof does not match: it does not hold the cluster secret.
    #[error("the peer's proof does not match the cluster secret")]
    Authentication,
}

impl HandshakeFailure {
    /// Every reason, in the order of their counters.
    pub const ALL: [HandshakeFailure; 9] = [
        HandshakeFailure::Io,
        HandshakeFailure::Timeout,
        HandshakeFailure::Malformed,
        HandshakeFailure::Version,
        HandshakeFailure::ClusterId,
        HandshakeFailure::UnknownServer,
        HandshakeFailure::UnexpectedServer,
        HandshakeFailure::WrongDirection,
        HandshakeFailure::Authentication,
    ];

    /// Position of this reason in [`HandshakeFailure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which end of the connection a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection.
    Dialer,
    /// Accepted it.
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"agenda net handshake v1: dialer",
            Role::Acceptor => b"agenda net handshake v1: acceptor",
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }
}

fn proof_mac(
    secret: &[u8],
    role: Role,
    dialer_hello: &[u8; HELLO_BYTES],
    acceptor_hello: &[u8; HELLO_BYTES],
) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; an empty key is refused earlier, by the config check.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(role.label());
    mac.update(dialer_hello);
    mac.update(acceptor_hello);
    mac
}

/// The proof that the side playing `role` sends.
pub fn proof(
    secret: &[u8],
    role: Role,
    dialer_hello: &[u8; HELLO_BYTES],
    acceptor_hello: &[u8; HELLO_BYTES],
) -> [u8; PROOF_BYTES] {
    proof_mac(secret, role, dialer_hello, acceptor_hello)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `received` is the proof that the side playing `role` must send; compared in constant
/// time.
pub fn verify_proof(
    secret: &[u8],
    role: Role,
    dialer_hello: &[u8; HELLO_BYTES],
    acceptor_hello: &[u8; HELLO_BYTES],
    received: &[u8],
) -> bool {
    proof_mac(secret, role, dialer_hello, acceptor_hello)
        .verify_slice(received)
        .is_ok()
}

/// What one side brings to a handshake.
pub(crate) struct HandshakeSettings<'a> {
    pub(crate) server_id: ServerId,
    pub(crate) cluster_id: u64,
    pub(crate) cluster_secret: &'a [u8],
    pub(crate) role: Role,
    pub(crate) nonce: [u8; NONCE_BYTES],
}

/// Runs the handshake on a fresh connection and returns the authenticated peer's id.
///
/// `check_peer` decides whether the id the peer claims is acceptable (known, expected, right
/// direction) before any proof is sent.
pub(crate) async fn handshake<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    settings: &HandshakeSettings<'_>,
    check_peer: impl Fn(ServerId) -> Result<(), HandshakeFailure>,
) -> Result<ServerId, HandshakeFailure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let local_hello = Hello {
        version: PROTOCOL_VERSION,
        cluster_id: settings.cluster_id,
        server_id: settings.server_id,
        nonce: settings.nonce,
    }
    .to_bytes();
    write_record(writer, &local_hello).await?;
    let remote_hello_frame = read_record(reader).await?;
    let remote = Hello::from_bytes(&remote_hello_frame)?;
    if remote.version != PROTOCOL_VERSION {
        return Err(HandshakeFailure::Version);
    }
    if remote.cluster_id != settings.cluster_id {
        return Err(HandshakeFailure::ClusterId);
    }
    check_peer(remote.server_id)?;
    let remote_hello = remote.to_bytes();
    let (dialer_hello, acceptor_hello) = match settings.role {
        Role::Dialer => (&local_hello, &remote_hello),
        Role::Acceptor => (&remote_hello, &local_hello),
    };
    let local_proof = proof(
        settings.cluster_secret,
        settings.role,
        dialer_hello,
        acceptor_hello,
    );
    write_record(writer, &local_proof).await?;
    let remote_proof = read_record(reader).await?;
    let peer_role = settings.role.other();
    if !verify_proof(
        settings.cluster_secret,
        peer_role,
        dialer_hello,
        acceptor_hello,
        &remote_proof,
    ) {
        return Err(HandshakeFailure::Authentication);
    }
    Ok(remote.server_id)
}

async fn write_record<W: AsyncWrite + Unpin>(
    writer: &mut W,
    record: &[u8],
) -> Result<(), HandshakeFailure> {
    let mut frame = BytesMut::with_capacity(64);
    encode_frame_payload(record, HANDSHAKE_FRAME_BYTES_MAX, &mut frame)
        .map_err(|_| HandshakeFailure::Malformed)?;
    writer
        .write_all(&frame)
        .await
        .map_err(|_| HandshakeFailure::Io)?;
    // madsim's TCP delivers written bytes only on flush.
    writer.flush().await.map_err(|_| HandshakeFailure::Io)
}

async fn read_record<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<BytesMut, HandshakeFailure> {
    match reader.next_frame().await {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) | Err(FrameError::Io(_)) => Err(HandshakeFailure::Io),
        Err(FrameError::TooLarge { .. }) => Err(HandshakeFailure::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(server_id: ServerId, nonce_byte: u8) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            cluster_id: 42,
            server_id,
            nonce: [nonce_byte; NONCE_BYTES],
        }
    }

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        let original = hello(7, 9);
        assert_eq!(Hello::from_bytes(&original.to_bytes()), Ok(original));
        let mut wrong_magic = original.to_bytes();
        wrong_magic[0] = b'X';
        assert_eq!(
            Hello::from_bytes(&wrong_magic),
            Err(HandshakeFailure::Malformed)
        );
        assert_eq!(
            Hello::from_bytes(&original.to_bytes()[..37]),
            Err(HandshakeFailure::Malformed)
        );
    }

    #[test]
    fn a_proof_verifies_only_with_the_same_secret_role_and_hellos() {
        let dialer = hello(1, 1).to_bytes();
        let acceptor = hello(2, 2).to_bytes();
        let tag = proof(b"secret", Role::Dialer, &dialer, &acceptor);
        assert!(verify_proof(
            b"secret",
            Role::Dialer,
            &dialer,
            &acceptor,
            &tag
        ));
        assert!(!verify_proof(
            b"other",
            Role::Dialer,
            &dialer,
            &acceptor,
            &tag
        ));
        assert!(!verify_proof(
            b"secret",
            Role::Acceptor,
            &dialer,
            &acceptor,
            &tag
        ));
        let fresh = hello(2, 3).to_bytes();
        assert!(!verify_proof(
            b"secret",
            Role::Dialer,
            &dialer,
            &fresh,
            &tag
        ));
        assert!(!verify_proof(
            b"secret",
            Role::Dialer,
            &dialer,
            &acceptor,
            &tag[..31]
        ));
    }

    #[test]
    fn reasons_are_indexed_in_order() {
        for (position, reason) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position);
        }
    }
}
