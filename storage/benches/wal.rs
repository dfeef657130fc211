//! WAL throughput and recovery time on the real disk, next to the disk's raw fdatasync rate and sequential
//! bandwidth measured in the same run. Prints a table and writes it to `bench-results/storage.txt`.
//!
//! Run: `cargo bench -p storage --bench wal`. The files live under `target/bench-tmp` (on the disk, not a tmpfs)
//! and are deleted at the end. `BENCH_SECONDS` (default 3) sets the time per measurement.
//!
//! The disk of a shared virtual machine drifts (its fdatasync rate can change tenfold within a minute), so
//! each WAL figure is printed next to "raw same": the same bytes per fdatasync written raw, measured in
//! slices alternating with the WAL's. That ratio is the WAL's own cost; the ratio to the sequential
//! bandwidth is the goal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use storage::{Entry, File, FileSystem, StdFs, Wal, WalConfig};

const MIB: f64 = 1024.0 * 1024.0;
const GROUPS: u64 = 3;
const RECOVERY_LOG_BYTES: u64 = 1 << 30;

fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench-tmp")
}

/// The device and file-system type holding `path`, from /proc/mounts (longest matching mount point).
fn mount_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 3 && path.starts_with(fields[1])).then(|| {
                (
                    fields[1].len(),
                    format!("{} ({}) on {}", fields[0], fields[2], fields[1]),
                )
            })
        })
        .max()
        .map_or_else(|| "unknown".to_owned(), |(_, mount)| mount)
}

/// The 1, 5 and 15 minute load averages: the machine is shared, so figures taken under load say so.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn measure_seconds() -> f64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(3.0)
}

/// fdatasync calls per second, each after a 4 KiB append, as the WAL with batches of one record does.
fn raw_fdatasync_rate(dir: &Path) -> f64 {
    let path = dir.join("raw-fdatasync");
    let mut file = StdFs.create(&path).expect("create");
    let block = vec![0x5a; 4096];
    let start = Instant::now();
    let mut syncs = 0u64;
    while start.elapsed().as_secs_f64() < measure_seconds() {
        file.write_at(syncs * 4096, &block).expect("write");
        file.sync_data().expect("fdatasync");
        syncs += 1;
    }
    let rate = syncs as f64 / start.elapsed().as_secs_f64();
    StdFs.remove(&path).expect("remove");
    rate
}

/// MB/s writing `total_bytes` in `chunk_bytes` writes, with an fdatasync every `sync_every_bytes`.
fn raw_bandwidth(dir: &Path, total_bytes: u64, chunk_bytes: usize, sync_every_bytes: u64) -> f64 {
    let path = dir.join("raw-sequential");
    let mut file = StdFs.create(&path).expect("create");
    let chunk = vec![0xa5; chunk_bytes];
    let start = Instant::now();
    let mut written = 0u64;
    while written < total_bytes {
        file.write_at(written, &chunk).expect("write");
        written += chunk_bytes as u64;
        if written.is_multiple_of(sync_every_bytes) {
            file.sync_data().expect("fdatasync");
        }
    }
    file.sync_data().expect("fdatasync");
    let bandwidth = written as f64 / MIB / start.elapsed().as_secs_f64();
    StdFs.remove(&path).expect("remove");
    bandwidth
}

/// Writes `batch_bytes` per write followed by one fdatasync: the same shape of I/O as the WAL with that batch.
struct RawBatches {
    file: storage::StdFile,
    path: PathBuf,
    batch: Vec<u8>,
    written: u64,
}

impl RawBatches {
    fn new(dir: &Path, batch_bytes: usize) -> Self {
        let path = dir.join("raw-batches");
        let file = StdFs.create(&path).expect("create");
        RawBatches {
            file,
            path,
            batch: vec![0x3c; batch_bytes],
            written: 0,
        }
    }

    fn run_for(&mut self, seconds: f64) -> f64 {
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            self.file
                .write_at(self.written, &self.batch)
                .expect("write");
            self.file.sync_data().expect("fdatasync");
            self.written += self.batch.len() as u64;
        }
        start.elapsed().as_secs_f64()
    }
}

/// Appends one-entry records round-robin over three groups, with one sync per batch.
struct WalBatches {
    wal: Wal<StdFs>,
    dir: PathBuf,
    payload: Bytes,
    batch: u64,
    index_next: [u64; GROUPS as usize],
    appends: u64,
    syncs: u64,
}

impl WalBatches {
    fn new(dir: &Path, payload_bytes: usize, batch: u64) -> Self {
        let dir = dir.join(format!("wal-{payload_bytes}-{batch}"));
        let wal = Wal::open(StdFs, WalConfig::new(&dir)).expect("open");
        let payload = Bytes::from(vec![0x42; payload_bytes]);
        WalBatches {
            wal,
            dir,
            payload,
            batch,
            index_next: [1; GROUPS as usize],
            appends: 0,
            syncs: 0,
        }
    }

    fn run_for(&mut self, seconds: f64) -> f64 {
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            for _ in 0..self.batch {
                let group = (self.appends % GROUPS) as usize;
                let entry = Entry {
                    index: self.index_next[group],
                    term: 1,
                    payload: self.payload.clone(),
                };
                self.wal.append(group as u64 + 1, &[entry]).expect("append");
                self.index_next[group] += 1;
                self.appends += 1;
            }
            self.wal.sync().expect("sync");
            self.syncs += 1;
        }
        start.elapsed().as_secs_f64()
    }
}

struct Figures {
    appends_per_second: f64,
    megabytes_per_second: f64,
    syncs_per_second: f64,
    raw_megabytes_per_second: f64,
}

/// Alternates short slices of raw writes and WAL appends of the same shape, so that both see the same disk
/// even when its speed drifts, and returns the totals.
fn measure(dir: &Path, payload_bytes: usize, batch: u64) -> Figures {
    let slices = 20;
    let slice_seconds = measure_seconds() / f64::from(slices);
    let mut raw = RawBatches::new(dir, payload_bytes * batch as usize);
    let mut wal = WalBatches::new(dir, payload_bytes, batch);
    let (mut raw_seconds, mut wal_seconds) = (0.0, 0.0);
    for _ in 0..slices {
        raw_seconds += raw.run_for(slice_seconds);
        wal_seconds += wal.run_for(slice_seconds);
    }
    StdFs.remove(&raw.path).expect("remove");
    let figures = Figures {
        appends_per_second: wal.appends as f64 / wal_seconds,
        megabytes_per_second: wal.appends as f64 * payload_bytes as f64 / MIB / wal_seconds,
        syncs_per_second: wal.syncs as f64 / wal_seconds,
        raw_megabytes_per_second: raw.written as f64 / MIB / raw_seconds,
    };
    let wal_dir = wal.dir.clone();
    drop(wal);
    std::fs::remove_dir_all(&wal_dir).expect("remove the WAL");
    figures
}

/// Appends per second over the in-memory file system: what the WAL costs in CPU, without the disk.
fn cpu_only_rate(payload_bytes: usize) -> f64 {
    let fs = storage::MemFs::new();
    let mut wal = Wal::open(fs, WalConfig::new("/bench")).expect("open");
    let payload = Bytes::from(vec![0x42; payload_bytes]);
    let mut index_next = [1u64; GROUPS as usize];
    let mut appends = 0u64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 1.0 {
        for _ in 0..256 {
            let group = (appends % GROUPS) as usize;
            let entry = Entry {
                index: index_next[group],
                term: 1,
                payload: payload.clone(),
            };
            wal.append(group as u64 + 1, &[entry]).expect("append");
            index_next[group] += 1;
            appends += 1;
        }
        wal.sync().expect("sync");
        // Compaction keeps the in-memory disk small, as a server's snapshots would.
        for (group, index) in (1..=GROUPS).zip(index_next) {
            wal.compact(group, index).expect("compact");
        }
    }
    appends as f64 / start.elapsed().as_secs_f64()
}

/// Asks the kernel to drop clean cached pages, so that recovery reads from the disk. Needs root; reports
/// whether it worked.
fn drop_page_cache() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// Writes a 1 GiB log (4 KiB entries, 16 per append, a sync every 16 MiB), then times its recovery.
fn recovery_time(dir: &Path) -> (Duration, u64, bool) {
    let wal_dir = dir.join("wal-recovery");
    let mut wal = Wal::open(StdFs, WalConfig::new(&wal_dir)).expect("open");
    let payload = Bytes::from(vec![0x17; 4096]);
    let mut index_next = [1u64; GROUPS as usize];
    let mut bytes = 0u64;
    let mut records = 0u64;
    while bytes < RECOVERY_LOG_BYTES {
        let group = records % GROUPS;
        let index_first = index_next[group as usize];
        let entries: Vec<Entry> = (index_first..index_first + 16)
            .map(|index| Entry {
                index,
                term: 1,
                payload: payload.clone(),
            })
            .collect();
        wal.append(group + 1, &entries).expect("append");
        index_next[group as usize] += 16;
        records += 1;
        bytes += 16 * 4096;
        if bytes.is_multiple_of(16 << 20) {
            wal.sync().expect("sync");
        }
    }
    wal.sync().expect("sync");
    drop(wal);
    let cold = drop_page_cache();
    let start = Instant::now();
    let wal = Wal::open(StdFs, WalConfig::new(&wal_dir)).expect("recover");
    let elapsed = start.elapsed();
    let replayed = wal.recovery_report().bytes_replayed;
    drop(wal);
    std::fs::remove_dir_all(&wal_dir).expect("remove the WAL");
    (elapsed, replayed, cold)
}

fn main() {
    let dir = bench_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let mut report = String::new();
    let mut line = |text: String| {
        println!("{text}");
        report.push_str(&text);
        report.push('\n');
    };
    line("storage WAL benchmark (cargo bench -p storage --bench wal)".to_owned());
    line(format!("files: {} on {}", dir.display(), mount_of(&dir)));
    line(format!(
        "seconds per WAL measurement (and as many for its raw twin): {}",
        measure_seconds()
    ));
    line(String::new());

    line(format!("load average at start: {}", load_average()));
    let fdatasync_rate = raw_fdatasync_rate(&dir);
    let sequential = raw_bandwidth(&dir, 512 << 20, 1 << 20, 512 << 20);
    let sequential_one_mib_syncs = raw_bandwidth(&dir, 256 << 20, 1 << 20, 1 << 20);
    line(format!(
        "raw fdatasync rate (4 KiB write + fdatasync): {fdatasync_rate:.0} /s at start"
    ));
    line(format!(
        "raw sequential bandwidth (1 MiB writes, one fdatasync at the end of 512 MiB): {sequential:.1} MiB/s"
    ));
    line(format!(
        "raw sequential bandwidth (1 MiB write + fdatasync each): {sequential_one_mib_syncs:.1} MiB/s"
    ));
    line(String::new());
    line(format!(
        "{:>13} {:>6} {:>12} {:>9} {:>8} {:>10} {:>13} {:>12}",
        "record bytes",
        "batch",
        "appends/s",
        "MiB/s",
        "syncs/s",
        "% of seq.",
        "raw same MiB/s",
        "% of raw same"
    ));
    for payload_bytes in [100usize, 4096] {
        for batch in [1u64, 16, 256] {
            let figures = measure(&dir, payload_bytes, batch);
            let raw_same = figures.raw_megabytes_per_second;
            line(format!(
                "{:>13} {:>6} {:>12.0} {:>9.2} {:>8.0} {:>9.1}% {:>13.2} {:>11.1}%",
                payload_bytes,
                batch,
                figures.appends_per_second,
                figures.megabytes_per_second,
                figures.syncs_per_second,
                100.0 * figures.megabytes_per_second / sequential,
                raw_same,
                100.0 * figures.megabytes_per_second / raw_same
            ));
        }
    }
    let fdatasync_rate_end = raw_fdatasync_rate(&dir);
    line(format!(
        "raw fdatasync rate (4 KiB write + fdatasync): {fdatasync_rate_end:.0} /s at end"
    ));
    for payload_bytes in [100usize, 4096] {
        line(format!(
            "WAL CPU cost alone (MemFs, sync per 256): {:.0} appends/s of {payload_bytes} bytes",
            cpu_only_rate(payload_bytes)
        ));
    }
    line(String::new());
    let (elapsed, replayed, cold) = recovery_time(&dir);
    line(format!(
        "recovery of a {:.2} GiB log (4 KiB entries, 16 per record): {:.2} s, {:.0} MiB/s, page cache {}",
        replayed as f64 / (MIB * 1024.0),
        elapsed.as_secs_f64(),
        replayed as f64 / MIB / elapsed.as_secs_f64(),
        if cold {
            "dropped before recovery (cold)"
        } else {
            "NOT dropped (warm: needs root)"
        }
    ));
    line(format!("load average at end: {}", load_average()));
    std::fs::remove_dir_all(&dir).expect("remove the bench directory");
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    std::fs::create_dir_all(&results).expect("create bench-results");
    let mut file_text = String::new();
    let _ = writeln!(file_text, "{report}");
    std::fs::write(results.join("storage.txt"), file_text)
        .expect("write bench-results/storage.txt");
}
