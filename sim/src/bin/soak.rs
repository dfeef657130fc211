//! The soak: many seeds on every core, with a progress bar and a summary.
//!
//! ```sh
//! scripts/soak 10000          # seeds 1..=10000
//! scripts/soak 2000 50001     # seeds 50001..=52000
//! SIM_FOCUS=default-cluster scripts/soak 500   # the default cluster only (the speed figure)
//! ```
//!
//! The parent process starts one worker process per core (this same binary with `--worker`),
//! each running its share of the seeds one after another and writing one line per seed to a
//! file; the parent follows the files, draws the progress and prints the summary. (Workers are
//! processes, not threads: each runs madsim's single-threaded simulation.)

#[cfg(madsim)]
fn main() {
    soak::main();
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("the soak runs only in a simulation build: use scripts/soak");
    std::process::exit(2);
}

#[cfg(madsim)]
mod soak {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    pub fn main() {
        let arguments: Vec<String> = std::env::args().collect();
        if arguments.get(1).map(String::as_str) == Some("--worker") {
            let number =
                |position: usize| -> u64 { arguments[position].parse().expect("a number") };
            worker(number(2), number(3), number(4), Path::new(&arguments[5]));
            return;
        }
        let seeds: u64 = arguments
            .get(1)
            .map_or(1000, |value| value.parse().expect("seeds"));
        let first: u64 = arguments
            .get(2)
            .map_or(1, |value| value.parse().expect("first seed"));
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        parent(seeds, first, workers.min(seeds.max(1)));
    }

    /// Runs seeds `first + k * stride` for k in 0.. while below `end`, one line each.
    fn worker(first: u64, end: u64, stride: u64, out: &Path) {
        let mut file = std::fs::File::create(out).expect("the worker's output file");
        let mut seed = first;
        while seed < end {
            let started = Instant::now();
            let line = match sim::run_seed_focused(seed, sim::Focus::from_env()) {
                Ok(report) => format!(
                    "ok {seed} {} {} {} {} {} {} {} {}\n",
                    report.simulated.as_secs_f64(),
                    report.faults,
                    report.operations,
                    report.options.servers,
                    report.options.shards.len(),
                    started.elapsed().as_secs_f64(),
                    report.notifications,
                    report.invitations_checked,
                ),
                Err(failure) => {
                    let reason = failure.reason.lines().next().unwrap_or("").to_owned();
                    format!("fail {seed} {reason}\n")
                }
            };
            file.write_all(line.as_bytes()).expect("write");
            file.flush().expect("flush");
            seed += stride;
        }
    }

    #[derive(Default)]
    struct Totals {
        done: u64,
        simulated_seconds: f64,
        faults: u64,
        operations: u64,
        notifications: u64,
        invitations: u64,
        default_cluster_seconds: f64,
        default_cluster_wall_seconds: f64,
        failures: Vec<(u64, String)>,
    }

    fn read(files: &[PathBuf]) -> Totals {
        let mut totals = Totals::default();
        for path in files {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines() {
                let fields: Vec<&str> = line.splitn(3, ' ').collect();
                match fields.as_slice() {
                    ["ok", _, rest] => {
                        let values: Vec<f64> =
                            rest.split(' ').filter_map(|v| v.parse().ok()).collect();
                        if let [
                            seconds,
                            faults,
                            operations,
                            servers,
                            shards,
                            wall,
                            notifications,
                            invitations,
                        ] = values[..]
                        {
                            totals.simulated_seconds += seconds;
                            totals.faults += faults as u64;
                            totals.operations += operations as u64;
                            totals.notifications += notifications as u64;
                            totals.invitations += invitations as u64;
                            if servers == 4.0 && shards == 4.0 {
                                totals.default_cluster_seconds += seconds;
                                totals.default_cluster_wall_seconds += wall;
                            }
                        }
                        totals.done += 1;
                    }
                    ["fail", seed, reason] => {
                        totals
                            .failures
                            .push((seed.parse().unwrap_or(0), (*reason).to_owned()));
                        totals.done += 1;
                    }
                    _ => {}
                }
            }
        }
        totals.failures.sort();
        totals
    }

    fn parent(seeds: u64, first: u64, workers: u64) {
        let dir = std::env::temp_dir().join(format!("agenda-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the soak's directory");
        let exe = std::env::current_exe().expect("this program");
        let started = Instant::now();
        let mut files = Vec::new();
        let mut children: Vec<Child> = Vec::new();
        for worker in 0..workers {
            let out = dir.join(format!("worker-{worker}.txt"));
            let child = Command::new(&exe)
                .args([
                    "--worker",
                    &(first + worker).to_string(),
                    &(first + seeds).to_string(),
                ])
                .arg(workers.to_string())
                .arg(&out)
                .stderr(
                    std::fs::File::create(dir.join(format!("worker-{worker}.err"))).expect("a log"),
                )
                .spawn()
                .expect("a worker starts");
            files.push(out);
            children.push(child);
        }
        loop {
            let totals = read(&files);
            let width = 40;
            let filled = (totals.done * width / seeds.max(1)) as usize;
            eprint!(
                "\r[{}{}] {}/{} seeds, {} failed, {:.1} simulated hours, {:.0} s",
                "#".repeat(filled),
                "-".repeat(width as usize - filled),
                totals.done,
                seeds,
                totals.failures.len(),
                totals.simulated_seconds / 3600.0,
                started.elapsed().as_secs_f64()
            );
            let running = children
                .iter_mut()
                .any(|child| child.try_wait().ok().flatten().is_none());
            if !running {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!();
        // A worker that ended abnormally (aborted, killed, out of memory) leaves seeds unrun:
        // that is a failed soak, not a shorter one.
        let mut abnormal = Vec::new();
        for (worker, child) in children.iter_mut().enumerate() {
            match child.wait() {
                Ok(status) if status.success() => {}
                status => abnormal.push(format!(
                    "worker {worker} ended abnormally ({status:?}); its log: {}",
                    dir.join(format!("worker-{worker}.err")).display()
                )),
            }
        }
        let totals = read(&files);
        let wall = started.elapsed().as_secs_f64();
        let focus = sim::Focus::from_env();
        let (focus_note, replay_env) = match focus {
            sim::Focus::Any => (String::new(), String::new()),
            focus => (
                format!(", focus {}", focus.name()),
                format!("SIM_FOCUS={} ", focus.name()),
            ),
        };
        println!(
            "seeds:               {} (first {first}, {workers} workers{focus_note})",
            totals.done
        );
        println!("wall time:           {wall:.0} s");
        println!(
            "simulated time:      {:.2} hours ({:.0}x real time over all cores)",
            totals.simulated_seconds / 3600.0,
            totals.simulated_seconds / wall
        );
        if totals.default_cluster_wall_seconds > 0.0 {
            let shape = if focus == sim::Focus::DefaultCluster {
                "the default cluster (4 servers, 4 shards, the default timing)"
            } else {
                "the seeds that drew 4 servers and 4 shards (10 ms ticks)"
            };
            println!(
                "speed:               {:.0} simulated seconds per wall second on one core, for {shape}",
                totals.default_cluster_seconds / totals.default_cluster_wall_seconds
            );
        }
        println!("faults injected:     {}", totals.faults);
        println!("operations checked:  {}", totals.operations);
        println!("notifications checked: {}", totals.notifications);
        println!("invitations checked: {}", totals.invitations);
        println!("failures:            {}", totals.failures.len());
        for (seed, reason) in &totals.failures {
            println!("  seed {seed}: {reason}");
            println!(
                "    replay: {replay_env}MADSIM_TEST_SEED={seed} RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo test -p sim --test simulation -- --nocapture"
            );
        }
        let missing = seeds.saturating_sub(totals.done);
        for line in &abnormal {
            println!("{line}");
        }
        if missing > 0 {
            println!("seeds not run:       {missing}");
        }
        if totals.failures.is_empty() && abnormal.is_empty() && missing == 0 {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            println!("worker outputs kept in {}", dir.display());
            std::process::exit(1);
        }
    }
}
