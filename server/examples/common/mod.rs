//! What the examples share: the addresses of a `demo` cluster, and reading one figure of a
//! server's `/metrics`.

use std::net::SocketAddr;

/// The value of metric `name` on the server whose HTTP port is `address` (0 if it cannot be
/// read).
pub fn metric(address: SocketAddr, name: &str) -> f64 {
    server::probe::get(address, "/metrics").map_or(0.0, |text| server::probe::metric(&text, name))
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
