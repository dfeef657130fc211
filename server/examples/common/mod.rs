//! What the examples share: the addresses of a `demo` cluster, and reading one figure of a
//! server's `/metrics`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// The value of metric `name` on the server whose HTTP port is `address` (0 if it cannot be
/// read).
pub fn metric(address: SocketAddr, name: &str) -> f64 {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return 0.0;
    };
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The HTTP addresses and the native client addresses (with server ids) of a `demo` cluster of
/// `servers` servers whose first HTTP port is `http_port` (client ports are 1000 above).
pub fn demo_addresses(servers: u16, http_port: u16) -> (Vec<SocketAddr>, Vec<(u64, SocketAddr)>) {
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let http = (0..servers).map(|i| local(http_port + i)).collect();
    let native = (0..servers)
        .map(|i| (u64::from(i) + 1, local(http_port + 1000 + i)))
        .collect();
    (http, native)
}
