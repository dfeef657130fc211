//! WAL throughput and recovery time on the real disk, next to the disk's raw fdatasync rate and sequential
//! bandwidth measured in the same run. Prints a table and writes it to `bench-results/storage.txt`.
//!
//! Run: `cargo bench -p storage --bench wal`. The files live under `target/bench-tmp` (on the disk, not a tmpfs)
//! and are deleted at the end. `BENCH_SECONDS` (default 3) sets the time per measurement.
//!
//! The disk of a shared virtual machine drifts (its fdatasync rate can change tenfold within a minute, and it
//! runs fast for a burst of about a gigabyte, then is throttled), so every WAL row is measured in 20 slices
//! that rotate through three writers on the same disk:
//!
//! - "seq.": raw sequential writes, 1 MiB each, one fdatasync per 64 MiB and at the end of the slice (the
//!   issue's baseline, measured in the same slices);
//! - "raw same": raw writes of the WAL's batch shape, the same payload bytes in one write, then one fdatasync;
//! - the WAL itself, one sync per batch.
//!
//! "% of seq." is the goal; "% of raw same" is the WAL's own cost over the I/O shape it must issue.
//!
//! The "steady" rows (4 KiB x 256 and 100 B x 256) run the WAL as a compacted Raft log runs: after each sync
//! every group is compacted to its last few MiB, so old segments become free and are recycled (16 MiB segments,
//! so that the 100-byte row recycles too). Before the slices the WAL is warmed up until two segments have been
//! started in recycled files; the row then reports how many rotations reused a file. Their "raw same" twin
//! writes the same batches into a 16 MiB region of its file, over and over, so that it too writes over blocks
//! already allocated.
//! The device's write requests per fdatasync (from `/sys/class/block/<device>/stat`, so other processes'
//! I/O in the same slices is counted too) show what each fdatasync costs the disk.
//!
//! The disk absorbs a burst of a gigabyte or two at over 2 GB/s and then falls to a few hundred MB/s until it
//! has rested (pausing between slices did not bring it back in probes). Each row starts after a rest of
//! `BENCH_REST_SECONDS` (default 10), but a row that writes gigabytes is throttled within a second; a row whose
//! "seq." fell below half the sequential bandwidth measured at the start ran on a throttled disk, and its
//! goal verdict is reported as inconclusive rather than met or not met.

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

/// The `stat` file of the block device holding `path` (a partition's own file if it is a partition).
fn device_stat_path(path: &Path) -> Option<PathBuf> {
    let mount = mount_of(path);
    let device = mount.split_whitespace().next()?;
    let name = Path::new(device).file_name()?;
    let stat = Path::new("/sys/class/block").join(name).join("stat");
    stat.exists().then_some(stat)
}

/// Write requests the device has completed so far (0 if unknown).
fn device_writes(stat: Option<&Path>) -> u64 {
    stat.and_then(|stat| std::fs::read_to_string(stat).ok())
        .and_then(|text| text.split_whitespace().nth(4)?.parse().ok())
        .unwrap_or(0)
}

/// The pause before each row, so that every row starts on a rested disk.
fn rest_seconds() -> f64 {
    std::env::var("BENCH_REST_SECONDS")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(10.0)
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
    syncs: u64,
    /// Write over the first this many bytes of the file again and again (steady rows), instead of appending.
    region_bytes: Option<u64>,
}

impl RawBatches {
    fn new(dir: &Path, batch_bytes: usize, region_bytes: Option<u64>) -> Self {
        let path = dir.join("raw-batches");
        let file = StdFs.create(&path).expect("create");
        RawBatches {
            file,
            path,
            batch: vec![0x3c; batch_bytes],
            written: 0,
            syncs: 0,
            region_bytes,
        }
    }

    fn run_for(&mut self, seconds: f64) -> f64 {
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            let offset = match self.region_bytes {
                Some(region) => {
                    self.written % (region / self.batch.len() as u64).max(1)
                        * self.batch.len() as u64
                }
                None => self.written,
            };
            self.file.write_at(offset, &self.batch).expect("write");
            self.file.sync_data().expect("fdatasync");
            self.written += self.batch.len() as u64;
            self.syncs += 1;
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
    /// Steady rows: after each sync every group keeps only its last this many entries.
    keep_entries: Option<u64>,
}

/// The segment size of the steady rows.
const STEADY_SEGMENT_BYTES: u64 = 16 << 20;
/// The payload each group keeps in a steady row (the rest is compacted, as after a snapshot).
const STEADY_KEPT_BYTES: u64 = 2 << 20;

impl WalBatches {
    fn new(dir: &Path, payload_bytes: usize, batch: u64, steady: bool) -> Self {
        let dir = dir.join(format!("wal-{payload_bytes}-{batch}-{steady}"));
        let config = if steady {
            WalConfig {
                segment_size_bytes_max: STEADY_SEGMENT_BYTES,
                ..WalConfig::new(&dir)
            }
        } else {
            WalConfig::new(&dir)
        };
        let wal = Wal::open(StdFs, config).expect("open");
        let payload = Bytes::from(vec![0x42; payload_bytes]);
        WalBatches {
            wal,
            dir,
            payload,
            batch,
            index_next: [1; GROUPS as usize],
            appends: 0,
            syncs: 0,
            keep_entries: steady.then(|| (STEADY_KEPT_BYTES / payload_bytes as u64).max(1)),
        }
    }

    /// Steady rows: runs until two segments were started in recycled files, then resets the counters.
    fn warm_up(&mut self) {
        let start = Instant::now();
        while self.wal.segments_reused() < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no segment was recycled"
            );
            self.run_for(0.1);
        }
        self.appends = 0;
        self.syncs = 0;
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
            if let Some(keep) = self.keep_entries {
                for (group, index_next) in (1..=GROUPS).zip(self.index_next) {
                    let index_first_kept = index_next.saturating_sub(keep).max(1);
                    self.wal.compact(group, index_first_kept).expect("compact");
                }
            }
        }
        start.elapsed().as_secs_f64()
    }
}

/// Raw sequential writes in slices: 1 MiB writes, one fdatasync after every 64 MiB and at the end of the slice,
/// in a file that starts over every 1 GiB so that the disk usage stays bounded.
struct RawSequential {
    file: storage::StdFile,
    path: PathBuf,
    chunk: Vec<u8>,
    offset: u64,
    written: u64,
}

const SEQUENTIAL_SYNC_BYTES: u64 = 64 << 20;

impl RawSequential {
    fn new(dir: &Path) -> Self {
        let path = dir.join("raw-sequential-slices");
        let file = StdFs.create(&path).expect("create");
        RawSequential {
            file,
            path,
            chunk: vec![0xa5; 1 << 20],
            offset: 0,
            written: 0,
        }
    }

    /// Writes for `seconds` (then finishes the current 64 MiB stretch's sync); returns the seconds it took.
    /// Time-sliced like the other two writers, so that each regime of the disk weighs the same in all three.
    fn run_for(&mut self, seconds: f64) -> f64 {
        if self.offset >= 1 << 30 {
            StdFs.remove(&self.path).expect("remove");
            self.file = StdFs.create(&self.path).expect("create");
            self.offset = 0;
        }
        let start = Instant::now();
        let mut unsynced = false;
        while start.elapsed().as_secs_f64() < seconds {
            self.file.write_at(self.offset, &self.chunk).expect("write");
            self.offset += self.chunk.len() as u64;
            self.written += self.chunk.len() as u64;
            unsynced = true;
            if self.offset.is_multiple_of(SEQUENTIAL_SYNC_BYTES) {
                self.file.sync_data().expect("fdatasync");
                unsynced = false;
            }
        }
        if unsynced {
            self.file.sync_data().expect("fdatasync");
        }
        start.elapsed().as_secs_f64()
    }
}

struct Figures {
    appends_per_second: f64,
    megabytes_per_second: f64,
    syncs_per_second: f64,
    raw_megabytes_per_second: f64,
    sequential_megabytes_per_second: f64,
    wal_device_writes_per_sync: f64,
    raw_device_writes_per_sync: f64,
    /// Rotations during the measurement, and how many of them reused a recycled file.
    rotations: u64,
    segments_reused: u64,
}

/// Rotates short slices of raw sequential writes, raw writes of the WAL's shape and WAL appends (each slice
/// in a different order, so that none always follows the same one), so that all three see the same disk
/// even when its speed drifts, and returns the totals.
fn measure(dir: &Path, payload_bytes: usize, batch: u64, steady: bool) -> Figures {
    let slices = 20;
    let slice_seconds = measure_seconds() / f64::from(slices);
    let stat = device_stat_path(dir);
    let stat = stat.as_deref();
    let mut sequential = RawSequential::new(dir);
    let mut raw = RawBatches::new(
        dir,
        payload_bytes * batch as usize,
        steady.then_some(STEADY_SEGMENT_BYTES),
    );
    let mut wal = WalBatches::new(dir, payload_bytes, batch, steady);
    if steady {
        wal.warm_up();
    }
    let reused_before = wal.wal.segments_reused();
    let segment_before = *wal.wal.segment_numbers().last().expect("a segment");
    let (mut sequential_seconds, mut raw_seconds, mut wal_seconds) = (0.0, 0.0, 0.0);
    let (mut raw_device_writes, mut wal_device_writes) = (0, 0);
    for slice in 0..slices {
        for step in 0..3 {
            let device_writes_before = device_writes(stat);
            match (slice + step) % 3 {
                0 => sequential_seconds += sequential.run_for(slice_seconds),
                1 => {
                    raw_seconds += raw.run_for(slice_seconds);
                    raw_device_writes += device_writes(stat) - device_writes_before;
                }
                _ => {
                    wal_seconds += wal.run_for(slice_seconds);
                    wal_device_writes += device_writes(stat) - device_writes_before;
                }
            }
        }
    }
    StdFs.remove(&raw.path).expect("remove");
    StdFs.remove(&sequential.path).expect("remove");
    let figures = Figures {
        appends_per_second: wal.appends as f64 / wal_seconds,
        megabytes_per_second: wal.appends as f64 * payload_bytes as f64 / MIB / wal_seconds,
        syncs_per_second: wal.syncs as f64 / wal_seconds,
        raw_megabytes_per_second: raw.written as f64 / MIB / raw_seconds,
        sequential_megabytes_per_second: sequential.written as f64 / MIB / sequential_seconds,
        wal_device_writes_per_sync: wal_device_writes as f64 / wal.syncs as f64,
        raw_device_writes_per_sync: raw_device_writes as f64 / raw.syncs as f64,
        rotations: *wal.wal.segment_numbers().last().expect("a segment") - segment_before,
        segments_reused: wal.wal.segments_reused() - reused_before,
    };
    let wal_dir = wal.dir.clone();
    drop(wal);
    std::fs::remove_dir_all(&wal_dir).expect("remove the WAL");
    figures
}

/// A file system that keeps names and lengths but throws the bytes away, so that the CPU-only figure is the
/// WAL's own work (encoding, checksum, one copy into the write buffer, the index) and not the copies and page
/// faults of an in-memory disk such as `MemFs`, which keeps two growing copies of every file.
#[derive(Clone, Copy)]
struct DiscardFs;

struct DiscardFile {
    length: u64,
}

impl FileSystem for DiscardFs {
    type File = DiscardFile;

    fn create_dir_all(&self, _dir: &Path) -> std::io::Result<()> {
        Ok(())
    }

    fn list(&self, _dir: &Path) -> std::io::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn create(&self, _path: &Path) -> std::io::Result<DiscardFile> {
        Ok(DiscardFile { length: 0 })
    }

    fn open(&self, _path: &Path) -> std::io::Result<DiscardFile> {
        Ok(DiscardFile { length: 0 })
    }

    fn remove(&self, _path: &Path) -> std::io::Result<()> {
        Ok(())
    }

    fn rename(&self, _from: &Path, _to: &Path) -> std::io::Result<()> {
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> std::io::Result<()> {
        Ok(())
    }

    fn random_u64(&self) -> u64 {
        StdFs.random_u64()
    }
}

impl File for DiscardFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.length)
    }

    fn read_at(&self, _offset: u64, _buffer: &mut [u8]) -> std::io::Result<usize> {
        // A free file reads as empty, so the WAL deletes it instead of reusing it: nothing to reuse here.
        Ok(0)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.length = self.length.max(offset + data.len() as u64);
        Ok(())
    }

    fn set_len(&mut self, length: u64) -> std::io::Result<()> {
        self.length = length;
        Ok(())
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends per second with nothing behind the file system: what the WAL costs in CPU, without the disk.
/// Same loop as the disk rows (one-entry records round-robin over three groups, a sync per 256).
fn cpu_only_rate<F: FileSystem>(fs: F, payload_bytes: usize) -> f64 {
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
        // Compaction keeps the index (and an in-memory disk) small, as a server's snapshots would.
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
        "seconds per WAL measurement (and as many for its raw same twin and for seq.): {}",
        measure_seconds()
    ));
    line(String::new());

    line(format!("load average at start: {}", load_average()));
    let fdatasync_rate = raw_fdatasync_rate(&dir);
    std::thread::sleep(Duration::from_secs_f64(rest_seconds()));
    let sequential_start = raw_bandwidth(&dir, 512 << 20, 1 << 20, 512 << 20);
    std::thread::sleep(Duration::from_secs_f64(rest_seconds()));
    let sequential_one_mib_syncs = raw_bandwidth(&dir, 256 << 20, 1 << 20, 1 << 20);
    line(format!(
        "raw fdatasync rate (4 KiB write + fdatasync): {fdatasync_rate:.0} /s at start"
    ));
    line(format!(
        "raw sequential bandwidth (1 MiB writes, one fdatasync at the end of 512 MiB): {sequential_start:.1} MiB/s at start"
    ));
    line(format!(
        "raw sequential bandwidth (1 MiB write + fdatasync each, 256 MiB): {sequential_one_mib_syncs:.1} MiB/s at start"
    ));
    line(String::new());
    line(format!(
        "{:>6} {:>5} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "record",
        "batch",
        "appends/s",
        "MiB/s",
        "syncs/s",
        "seq.MiB/s",
        "% of seq.",
        "raw same",
        "% of same",
        "writes/sync"
    ));
    line(format!(
        "{:>6} {:>5} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "bytes", "", "WAL", "WAL", "WAL", "", "", "MiB/s", "", "WAL / same"
    ));
    let mut verdicts = Vec::new();
    let rows = [100usize, 4096]
        .into_iter()
        .flat_map(|payload_bytes| [1u64, 16, 256].map(|batch| (payload_bytes, batch, false)))
        .chain([(100, 256, true), (4096, 256, true)]);
    let mut recycling = Vec::new();
    for (payload_bytes, batch, steady) in rows {
        {
            std::thread::sleep(Duration::from_secs_f64(rest_seconds()));
            let figures = measure(&dir, payload_bytes, batch, steady);
            let raw_same = figures.raw_megabytes_per_second;
            let sequential = figures.sequential_megabytes_per_second;
            line(format!(
                "{:>6} {:>5} {:>10.0} {:>8.2} {:>7.0} {:>9.1} {:>8.1}% {:>9.2} {:>8.1}% {:>5.1} / {:<4.1}{}",
                payload_bytes,
                if steady {
                    format!("{batch}s")
                } else {
                    batch.to_string()
                },
                figures.appends_per_second,
                figures.megabytes_per_second,
                figures.syncs_per_second,
                sequential,
                100.0 * figures.megabytes_per_second / sequential,
                raw_same,
                100.0 * figures.megabytes_per_second / raw_same,
                figures.wal_device_writes_per_sync,
                figures.raw_device_writes_per_sync,
                if steady { "  (steady)" } else { "" },
            ));
            if steady {
                recycling.push(format!(
                    "  steady {payload_bytes} B x 256: {} rotations during the slices, {} into recycled files",
                    figures.rotations, figures.segments_reused
                ));
            }
            if batch == 256 {
                verdicts.push((payload_bytes, steady, figures));
            }
        }
    }
    let fdatasync_rate_end = raw_fdatasync_rate(&dir);
    std::thread::sleep(Duration::from_secs_f64(rest_seconds()));
    let sequential_end = raw_bandwidth(&dir, 512 << 20, 1 << 20, 512 << 20);
    line(format!(
        "raw fdatasync rate (4 KiB write + fdatasync): {fdatasync_rate_end:.0} /s at end"
    ));
    line(format!(
        "raw sequential bandwidth (1 MiB writes, one fdatasync at the end of 512 MiB): {sequential_end:.1} MiB/s at end"
    ));
    line(
        "steady rows (\"256s\"): compacted to the last 2 MiB of each group after each sync, 16 MiB segments, \
         recycled; their raw same twin overwrites a 16 MiB region"
            .to_owned(),
    );
    for text in recycling {
        line(text);
    }
    line(String::new());
    line("goal: with batches of 256, at least 80% of the raw sequential bandwidth".to_owned());
    for (payload_bytes, steady, figures) in &verdicts {
        let label = if *steady {
            "steady, recycled"
        } else {
            "growing log"
        };
        let share = figures.megabytes_per_second / figures.sequential_megabytes_per_second;
        let ceiling = figures.raw_megabytes_per_second / figures.sequential_megabytes_per_second;
        let throttled = figures.sequential_megabytes_per_second < 0.5 * sequential_start;
        let verdict = if throttled {
            "INCONCLUSIVE (the disk was throttled during this row: rerun)"
        } else if share >= 0.8 {
            "MET"
        } else {
            "NOT MET"
        };
        line(format!(
            "  {payload_bytes:>4} B x 256 ({label}): WAL {:.0} MiB/s = {:.1}% of the {:.0} MiB/s seq. in the \
             same slices: {verdict}",
            figures.megabytes_per_second,
            100.0 * share,
            figures.sequential_megabytes_per_second,
        ));
        let mut ceiling_line = format!(
            "               ceiling for any WAL with one fdatasync per batch: its raw same twin{} reached {:.1}% \
             of seq.",
            if *steady { " (overwriting)" } else { "" },
            100.0 * ceiling
        );
        if *payload_bytes * 256 == 1 << 20 && !steady {
            let _ = write!(
                ceiling_line,
                " (at start, on the rested disk: 1 MiB write + fdatasync each = {:.1}% of the 512 MiB figure)",
                100.0 * sequential_one_mib_syncs / sequential_start
            );
        }
        line(ceiling_line);
    }
    line(String::new());
    for payload_bytes in [100usize, 4096] {
        let rate = cpu_only_rate(DiscardFs, payload_bytes);
        line(format!(
            "WAL CPU cost alone (file system discarding the bytes, sync per 256): {rate:.0} appends/s of \
             {payload_bytes} bytes, {:.0} MiB/s",
            rate * payload_bytes as f64 / MIB
        ));
    }
    for payload_bytes in [100usize, 4096] {
        let rate = cpu_only_rate(storage::MemFs::new(), payload_bytes);
        line(format!(
            "same over MemFs (adds MemFs's two copies and page faults): {rate:.0} appends/s of {payload_bytes} \
             bytes, {:.0} MiB/s",
            rate * payload_bytes as f64 / MIB
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
