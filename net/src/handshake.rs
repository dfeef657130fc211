//! The handshake that opens every connection: who is speaking, in which cluster, proven with the
//! cluster secret.
//!
//! Each record travels in its own frame (see [`crate::codec::FrameDecoder`] for the frame layout;
//! before authentication frames are limited to [`HANDSHAKE_FRAME_BYTES_MAX`] bytes). The acceptor
//! says nothing until the dialer has spoken, and reveals who it is only once the dialer has
//! proven that it holds the cluster secret:
//!
//! ```text
//!  dialer                                                     acceptor
//!    | 1. hello_d  (Hello: version, cluster, id, frame max, nonce_d) |
//!    | ------------------------------------------------------------> | checks magic, version,
//!    |                                                               | cluster id
//!    | 2. challenge (nonce_a: 16 fresh random bytes)                 |
//!    | <------------------------------------------------------------ |
//!    | 3. proof_d = HMAC(secret, "…dialer" || hello_d || nonce_a)    |
//!    | ------------------------------------------------------------> | verifies proof_d, then
//!    |                                                               | checks the dialer's id
//!    | 4. hello_a  (Hello, its nonce field = nonce_a)                 |
//!    |    proof_a = HMAC(secret, "…acceptor" || hello_d || nonce_a || hello_a)
//!    | <------------------------------------------------------------ | (two frames, one write)
//!    | checks version, cluster id, the id it dialed; verifies proof_a |
//! ```
//!
//! What each rule is for:
//!
//! - **Replay.** Each side's proof covers the other side's fresh nonce (`proof_d` covers
//!   `nonce_a`, `proof_a` covers `nonce_d` inside `hello_d`), so a recorded handshake is useless
//!   on a new connection.
//! - **Reflection.** The label names the sender's role, and the two proofs cover different
//!   records, so neither proof can be sent back to its author.
//! - **Scanners.** A stranger that sends nothing receives nothing. One that sends a well-formed
//!   hello with the right version and cluster id (neither is secret) receives 16 random bytes,
//!   and nothing else unless it proves the secret: it cannot learn the acceptor's server id, and
//!   since the dialer's id is checked only after its proof, refusals do not tell members from
//!   strangers. The price: a dialer refused by the acceptor (wrong cluster, wrong secret, wrong
//!   direction) only sees the connection closed ([`HandshakeFailure::Io`]); the acceptor logs and
//!   counts the real reason.
//! - **Frame sizes.** Each hello carries its sender's `frame_size_bytes_max`; a writer never
//!   sends a frame larger than the peer accepts, so a message too large for the peer is dropped
//!   and counted at the sender instead of closing the connection at the receiver (and again at
//!   every resend). Servers with different limits still talk, so the limit can be changed one
//!   server at a time.
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

/// Version of the wire protocol; peers with another version are refused. Version 2 changed the
/// handshake's order, added the frame limit to the hello and the kind byte to every frame.
pub const PROTOCOL_VERSION: u16 = 2;
/// Bytes of an encoded [`Hello`].
pub const HELLO_BYTES: usize = 42;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_BYTES: usize = 32;
/// Bytes of a nonce (and of the acceptor's challenge).
pub const NONCE_BYTES: usize = 16;
/// The largest frame read before the peer is authenticated, so that a stranger cannot make the
/// server reserve a large buffer (the reader also reads at most this much at a time until then).
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 64;

const MAGIC: [u8; 4] = *b"AGNT";

/// The record that introduces each side, [`HELLO_BYTES`] long, as the payload of one frame.
///
/// ```text
/// offset 0        4          6             14            22               26           42
///        +--------+----------+-------------+-------------+----------------+------------+
///        | magic  | version  | cluster id  | server id   | frame size max | nonce      |
///        | "AGNT" | u16 BE   | u64 BE      | u64 BE      | u32 BE         | 16 random  |
///        +--------+----------+-------------+-------------+----------------+------------+
/// ```
///
/// The order of the records and what the proofs cover are in the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// The cluster the sender belongs to.
    pub cluster_id: u64,
    /// The sender's server id.
    pub server_id: ServerId,
    /// The largest frame payload the sender accepts after the handshake.
    pub frame_size_bytes_max: u32,
    /// Fresh random bytes for this connection (the acceptor repeats its challenge here).
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
        bytes[22..26].copy_from_slice(&self.frame_size_bytes_max.to_be_bytes());
        bytes[26..42].copy_from_slice(&self.nonce);
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
        let frame_size_bytes_max = fields.get_u32();
        let mut nonce = [0; NONCE_BYTES];
        fields.copy_to_slice(&mut nonce);
        Ok(Hello {
            version,
            cluster_id,
            server_id,
            frame_size_bytes_max,
            nonce,
        })
    }
}

/// Why a handshake was refused. Each reason is logged and counted in
/// [`crate::Metrics::handshake_failures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum HandshakeFailure {
    /// The connection failed or closed mid-handshake, or no nonce could be drawn. A dialer that
    /// the acceptor refuses sees this: the acceptor does not say why (it counts the reason).
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
            Role::Dialer => b"agenda net handshake v2: dialer",
            Role::Acceptor => b"agenda net handshake v2: acceptor",
        }
    }
}

fn mac(secret: &[u8], role: Role, records: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; an empty key is refused earlier, by the config check.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(role.label());
    for record in records {
        mac.update(record);
    }
    mac
}

/// The dialer's proof (record 3): over its own hello and the acceptor's challenge.
pub fn dialer_proof(
    secret: &[u8],
    dialer_hello: &[u8; HELLO_BYTES],
    challenge: &[u8; NONCE_BYTES],
) -> [u8; PROOF_BYTES] {
    mac(secret, Role::Dialer, &[dialer_hello, challenge])
        .finalize()
        .into_bytes()
        .into()
}

/// The acceptor's proof (record 4): over the dialer's hello, the challenge and its own hello.
pub fn acceptor_proof(
    secret: &[u8],
    dialer_hello: &[u8; HELLO_BYTES],
    challenge: &[u8; NONCE_BYTES],
    acceptor_hello: &[u8; HELLO_BYTES],
) -> [u8; PROOF_BYTES] {
    mac(
        secret,
        Role::Acceptor,
        &[dialer_hello, challenge, acceptor_hello],
    )
    .finalize()
    .into_bytes()
    .into()
}

/// Whether `received` is the dialer's proof; compared in constant time (by the `hmac` crate).
pub fn verify_dialer_proof(
    secret: &[u8],
    dialer_hello: &[u8; HELLO_BYTES],
    challenge: &[u8; NONCE_BYTES],
    received: &[u8],
) -> bool {
    mac(secret, Role::Dialer, &[dialer_hello, challenge])
        .verify_slice(received)
        .is_ok()
}

/// Whether `received` is the acceptor's proof; compared in constant time.
pub fn verify_acceptor_proof(
    secret: &[u8],
    dialer_hello: &[u8; HELLO_BYTES],
    challenge: &[u8; NONCE_BYTES],
    acceptor_hello: &[u8; HELLO_BYTES],
    received: &[u8],
) -> bool {
    mac(
        secret,
        Role::Acceptor,
        &[dialer_hello, challenge, acceptor_hello],
    )
    .verify_slice(received)
    .is_ok()
}

/// What one side brings to a handshake.
pub(crate) struct HandshakeSettings<'a> {
    pub(crate) server_id: ServerId,
    pub(crate) cluster_id: u64,
    pub(crate) cluster_secret: &'a [u8],
    pub(crate) frame_size_bytes_max: u32,
    pub(crate) role: Role,
    pub(crate) nonce: [u8; NONCE_BYTES],
}

impl HandshakeSettings<'_> {
    fn hello(&self) -> [u8; HELLO_BYTES] {
        Hello {
            version: PROTOCOL_VERSION,
            cluster_id: self.cluster_id,
            server_id: self.server_id,
            frame_size_bytes_max: self.frame_size_bytes_max,
            nonce: self.nonce,
        }
        .to_bytes()
    }

    /// Parses the peer's hello and checks what both sides must share.
    fn check_hello(&self, record: &[u8]) -> Result<Hello, HandshakeFailure> {
        let remote = Hello::from_bytes(record)?;
        if remote.version != PROTOCOL_VERSION {
            return Err(HandshakeFailure::Version);
        }
        if remote.cluster_id != self.cluster_id {
            return Err(HandshakeFailure::ClusterId);
        }
        Ok(remote)
    }
}

/// Runs the handshake on a fresh connection and returns the authenticated peer's hello.
///
/// `check_peer` decides whether the id the peer claims is acceptable (known, expected, right
/// direction). The acceptor asks it only after the dialer's proof has been verified, and the
/// dialer before it verifies the acceptor's proof.
pub(crate) async fn handshake<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    settings: &HandshakeSettings<'_>,
    check_peer: impl Fn(ServerId) -> Result<(), HandshakeFailure>,
) -> Result<Hello, HandshakeFailure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match settings.role {
        Role::Dialer => dial_side(reader, writer, settings, check_peer).await,
        Role::Acceptor => accept_side(reader, writer, settings, check_peer).await,
    }
}

async fn dial_side<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    settings: &HandshakeSettings<'_>,
    check_peer: impl Fn(ServerId) -> Result<(), HandshakeFailure>,
) -> Result<Hello, HandshakeFailure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let dialer_hello = settings.hello();
    write_records(writer, &[&dialer_hello]).await?;
    let challenge: [u8; NONCE_BYTES] = read_record(reader)
        .await?
        .as_ref()
        .try_into()
        .map_err(|_| HandshakeFailure::Malformed)?;
    let proof = dialer_proof(settings.cluster_secret, &dialer_hello, &challenge);
    write_records(writer, &[&proof]).await?;
    let acceptor_hello_frame = read_record(reader).await?;
    let remote = settings.check_hello(&acceptor_hello_frame)?;
    check_peer(remote.server_id)?;
    let acceptor_hello = remote.to_bytes();
    let received_proof = read_record(reader).await?;
    if !verify_acceptor_proof(
        settings.cluster_secret,
        &dialer_hello,
        &challenge,
        &acceptor_hello,
        &received_proof,
    ) {
        return Err(HandshakeFailure::Authentication);
    }
    Ok(remote)
}

async fn accept_side<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    settings: &HandshakeSettings<'_>,
    check_peer: impl Fn(ServerId) -> Result<(), HandshakeFailure>,
) -> Result<Hello, HandshakeFailure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Nothing is sent before the dialer has spoken.
    let dialer_hello_frame = read_record(reader).await?;
    let remote = settings.check_hello(&dialer_hello_frame)?;
    let dialer_hello = remote.to_bytes();
    let challenge = settings.nonce;
    write_records(writer, &[&challenge]).await?;
    let received_proof = read_record(reader).await?;
    if !verify_dialer_proof(
        settings.cluster_secret,
        &dialer_hello,
        &challenge,
        &received_proof,
    ) {
        return Err(HandshakeFailure::Authentication);
    }
    // Only now, so that refusals do not tell a stranger which ids are members.
    check_peer(remote.server_id)?;
    let acceptor_hello = settings.hello();
    let proof = acceptor_proof(
        settings.cluster_secret,
        &dialer_hello,
        &challenge,
        &acceptor_hello,
    );
    write_records(writer, &[&acceptor_hello, &proof]).await?;
    Ok(remote)
}

/// Writes each record as a frame, all in one write.
async fn write_records<W: AsyncWrite + Unpin>(
    writer: &mut W,
    records: &[&[u8]],
) -> Result<(), HandshakeFailure> {
    let mut frames = BytesMut::with_capacity(2 * (HANDSHAKE_FRAME_BYTES_MAX + 4));
    for record in records {
        encode_frame_payload(record, HANDSHAKE_FRAME_BYTES_MAX, &mut frames)
            .map_err(|_| HandshakeFailure::Malformed)?;
    }
    writer
        .write_all(&frames)
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
            frame_size_bytes_max: 1 << 20,
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
            Hello::from_bytes(&original.to_bytes()[..HELLO_BYTES - 1]),
            Err(HandshakeFailure::Malformed)
        );
    }

    #[test]
    fn a_proof_verifies_only_with_the_same_secret_role_and_records() {
        let dialer = hello(1, 1).to_bytes();
        let acceptor = hello(2, 2).to_bytes();
        let challenge = [2; NONCE_BYTES];
        let tag = dialer_proof(b"secret", &dialer, &challenge);
        assert!(verify_dialer_proof(b"secret", &dialer, &challenge, &tag));
        assert!(!verify_dialer_proof(b"other", &dialer, &challenge, &tag));
        assert!(!verify_dialer_proof(
            b"secret",
            &dialer,
            &[3; NONCE_BYTES],
            &tag
        ));
        assert!(!verify_dialer_proof(
            b"secret",
            &dialer,
            &challenge,
            &tag[..31]
        ));
        // Not reflectable: the dialer's proof is not an acceptor's proof, nor the reverse.
        assert!(!verify_acceptor_proof(
            b"secret", &dialer, &challenge, &acceptor, &tag
        ));
        let answer = acceptor_proof(b"secret", &dialer, &challenge, &acceptor);
        assert!(verify_acceptor_proof(
            b"secret", &dialer, &challenge, &acceptor, &answer
        ));
        assert!(!verify_dialer_proof(
            b"secret", &dialer, &challenge, &answer
        ));
        let other_dialer = hello(1, 5).to_bytes();
        assert!(!verify_acceptor_proof(
            b"secret",
            &other_dialer,
            &challenge,
            &acceptor,
            &answer
        ));
    }

    #[test]
    fn reasons_are_indexed_in_order() {
        for (position, reason) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position);
        }
    }
}
