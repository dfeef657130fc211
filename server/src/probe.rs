//! A minimal HTTP/1.1 `GET` for the tools around a server (`demo` waiting for its leaders, the
//! benchmark and the examples reading `/metrics` and `/v1/cluster/status`): blocking, on
//! loopback, one request per connection, on real sockets (under madsim it builds, for the
//! examples, but is not simulated). Not for serving anything.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The body of `GET path` at `address`, if the answer is `200 OK` (connect within 1 s, the
/// whole answer within 5 s).
///
/// # Errors
/// The connection failed or timed out, or the answer was not a 200.
pub fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        Some((head, _)) => Err(std::io::Error::other(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or("")
        ))),
        None => Err(std::io::Error::other(format!("GET {path}: no answer"))),
    }
}

/// The sum of Prometheus metric `name` over its label sets in `text` (0 if absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let series_name = series.split('{').next()?;
            (series_name == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_summed_over_its_label_sets_and_others_are_ignored() {
        let text = "# HELP x\nagenda_fsyncs 12\nagenda_fsyncs_total 5\n\
                    etcd_disk_wal_fsync_duration_seconds_count{a=\"b\"} 3\n\
                    etcd_disk_wal_fsync_duration_seconds_count{a=\"c\"} 4\n";
        assert_eq!(metric(text, "agenda_fsyncs"), 12.0);
        assert_eq!(
            metric(text, "etcd_disk_wal_fsync_duration_seconds_count"),
            7.0
        );
        assert_eq!(metric(text, "missing"), 0.0);
    }

    #[test]
    fn a_closed_port_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        assert!(get(address, "/metrics").is_err());
    }
}
