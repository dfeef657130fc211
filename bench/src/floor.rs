//! The machine's physical floor, measured in the same run: how fast the disk that holds both
//! systems' data makes a small append to a preallocated file durable (`fdatasync`), and the
//! round trip of one byte over loopback TCP. A replicated write cannot be acknowledged faster
//! than one of each.

use crate::load::percentile;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

/// The floor's figures.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Floor {
    /// Appends made durable per second, one after the other.
    pub fdatasync_per_second: f64,
    /// Latency of one append and its `fdatasync`, median, in milliseconds.
    pub fdatasync_p50_ms: f64,
    /// The same, 99th percentile.
    pub fdatasync_p99_ms: f64,
    /// One byte there and back over loopback TCP, median, in milliseconds.
    pub loopback_rtt_p50_ms: f64,
    /// The same, 99th percentile.
    pub loopback_rtt_p99_ms: f64,
}

impl Floor {
    /// One fdatasync plus one loopback round trip (medians): the least a replicated write
    /// usually takes.
    pub fn write_ms(&self) -> f64 {
        self.fdatasync_p50_ms + self.loopback_rtt_p50_ms
    }

    /// The same at the 99th percentile: what a write's p99 is compared with.
    pub fn write_p99_ms(&self) -> f64 {
        self.fdatasync_p99_ms + self.loopback_rtt_p99_ms
    }
}

/// Measures the floor with `syncs` appends in `folder` and `round_trips` loopback round trips.
pub fn measure(folder: &Path, syncs: usize, round_trips: usize) -> anyhow::Result<Floor> {
    std::fs::create_dir_all(folder)?;
    let path = folder.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path)?;
    let record = [0x5a_u8; 128];
    // As a WAL does (this project's segments and etcd's are preallocated): the appends land
    // in a file whose length is already durable, so each fdatasync flushes data, not the
    // file's size.
    file.write_all(&vec![0; syncs * record.len()])?;
    file.sync_all()?;
    file.seek(SeekFrom::Start(0))?;
    let mut sync_us = Vec::with_capacity(syncs);
    let started = Instant::now();
    for _ in 0..syncs {
        let began = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        sync_us.push(began.elapsed().as_micros() as u32);
    }
    let sync_seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    sync_us.sort_unstable();

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).is_ok() {
            stream.write_all(&byte)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut rtt_us = Vec::with_capacity(round_trips);
    let mut byte = [7u8; 1];
    for _ in 0..round_trips {
        let began = Instant::now();
        stream.write_all(&byte)?;
        stream.read_exact(&mut byte)?;
        rtt_us.push(began.elapsed().as_micros().max(1) as u32);
    }
    drop(stream);
    let _ = echo.join();
    rtt_us.sort_unstable();

    let ms = |values: &[u32], quantile| f64::from(percentile(values, quantile)) / 1000.0;
    Ok(Floor {
        fdatasync_per_second: syncs as f64 / sync_seconds,
        fdatasync_p50_ms: ms(&sync_us, 0.5),
        fdatasync_p99_ms: ms(&sync_us, 0.99),
        loopback_rtt_p50_ms: ms(&rtt_us, 0.5),
        loopback_rtt_p99_ms: ms(&rtt_us, 0.99),
    })
}
