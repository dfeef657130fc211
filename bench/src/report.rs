//! The results: `latest.json`, a markdown table and two SVG plots (throughput against
//! clients; the latency distribution of writes), written to the results folder.

use crate::floor::Floor;
use crate::load::{Measured, Operation, percentile};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One system at one concurrency doing one operation.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `agenda-1-shard`, `agenda-4-shards` or `etcd`.
    pub system: String,
    /// `write` or `read`.
    pub operation: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations completed per second.
    pub throughput: f64,
    /// Latency percentiles, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Operations that failed.
    pub errors: u64,
    /// The servers' CPU seconds per 1,000 operations.
    pub server_cpu_seconds_per_1000: f64,
    /// The load generator's own CPU seconds per 1,000 operations.
    pub load_generator_cpu_seconds_per_1000: f64,
    /// Entries made durable per fsync over the run (writes only).
    pub entries_per_fsync: Option<f64>,
    /// The write latency distribution, for the plot: (percentile, milliseconds).
    #[serde(skip)]
    pub distribution: Vec<(f64, f64)>,
}

impl Row {
    /// A row from a run's measurement and the resources it used.
    pub fn new(
        system: &str,
        operation: Operation,
        clients: usize,
        measured: &Measured,
        server_cpu_seconds: f64,
        load_cpu_seconds: f64,
        entries_per_fsync: Option<f64>,
    ) -> Row {
        let per_1000 = |seconds: f64| seconds * 1000.0 / (measured.operations.max(1) as f64);
        let distribution = DISTRIBUTION
            .iter()
            .map(|&quantile| {
                (
                    quantile * 100.0,
                    f64::from(percentile(&measured.latencies_us, quantile)) / 1000.0,
                )
            })
            .collect();
        Row {
            system: system.to_owned(),
            operation: operation.name().to_owned(),
            clients,
            throughput: measured.throughput(),
            p50_ms: measured.percentile_ms(0.5),
            p99_ms: measured.percentile_ms(0.99),
            p999_ms: measured.percentile_ms(0.999),
            errors: measured.errors,
            server_cpu_seconds_per_1000: per_1000(server_cpu_seconds),
            load_generator_cpu_seconds_per_1000: per_1000(load_cpu_seconds),
            entries_per_fsync,
            distribution,
        }
    }
}

/// The quantiles the latency plot draws.
const DISTRIBUTION: [f64; 9] = [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999];

/// Failover of one system: SIGKILL of a leader to the next acknowledged write.
#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// The system.
    pub system: String,
    /// Each trial, in milliseconds.
    pub trials_ms: Vec<f64>,
    /// Their median.
    pub median_ms: f64,
    /// Their maximum.
    pub max_ms: f64,
}

impl Failover {
    /// The summary of `trials_ms`.
    pub fn new(system: &str, mut trials_ms: Vec<f64>) -> Failover {
        let mut sorted = trials_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median_ms = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        let max_ms = sorted.last().copied().unwrap_or(0.0);
        trials_ms.shrink_to_fit();
        Failover {
            system: system.to_owned(),
            trials_ms,
            median_ms,
            max_ms,
        }
    }
}

/// Everything one run of the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Whether this was the few-second smoke run (its figures mean little).
    pub smoke: bool,
    /// Seconds each load ran.
    pub seconds_per_load: f64,
    /// The physical floor.
    pub floor: Floor,
    /// Every system, operation and concurrency.
    pub rows: Vec<Row>,
    /// Peak resident memory of each system's servers (summed), in bytes.
    pub peak_memory_bytes: BTreeMap<String, u64>,
    /// Failover per system.
    pub failover: Vec<Failover>,
    /// Agenda (one shard) writes per second over etcd's, per concurrency.
    pub write_throughput_ratio_vs_etcd: BTreeMap<String, f64>,
    /// The same for linearizable reads.
    pub read_throughput_ratio_vs_etcd: BTreeMap<String, f64>,
    /// Agenda (one shard): p99 write latency at one client over the floor's p99 (one
    /// fdatasync plus one loopback round trip; goal ≤ 1.5).
    pub p99_write_at_1_client_over_floor: Option<f64>,
    /// The same over the floor's median (a stricter reading of the goal).
    pub p99_write_at_1_client_over_floor_p50: Option<f64>,
    /// Agenda (one shard): entries per fsync at 256 clients (goal ≥ 50).
    pub entries_per_fsync_at_256: Option<f64>,
}

impl Results {
    /// Fills the ratios and goal figures from the rows.
    pub fn compute_ratios(&mut self) {
        let find = |system: &str, operation: &str, clients: usize| {
            self.rows.iter().find(|row| {
                row.system == system && row.operation == operation && row.clients == clients
            })
        };
        let mut writes = BTreeMap::new();
        let mut reads = BTreeMap::new();
        let concurrencies: Vec<usize> = self.rows.iter().map(|row| row.clients).collect();
        for clients in concurrencies {
            for (operation, ratios) in [("write", &mut writes), ("read", &mut reads)] {
                if let (Some(ours), Some(etcd)) = (
                    find("agenda-1-shard", operation, clients),
                    find("etcd", operation, clients),
                ) && etcd.throughput > 0.0
                {
                    ratios.insert(clients.to_string(), ours.throughput / etcd.throughput);
                }
            }
        }
        self.write_throughput_ratio_vs_etcd = writes;
        self.read_throughput_ratio_vs_etcd = reads;
        self.p99_write_at_1_client_over_floor =
            find("agenda-1-shard", "write", 1).map(|row| row.p99_ms / self.floor.write_p99_ms());
        self.p99_write_at_1_client_over_floor_p50 =
            find("agenda-1-shard", "write", 1).map(|row| row.p99_ms / self.floor.write_ms());
        self.entries_per_fsync_at_256 =
            find("agenda-1-shard", "write", 256).and_then(|row| row.entries_per_fsync);
    }

    /// Writes `latest.json`, `latest.md`, `throughput.svg` and `latency.svg` into `folder`.
    pub fn write(&self, folder: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(folder)?;
        std::fs::write(
            folder.join("latest.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(folder.join("latest.md"), self.markdown())?;
        std::fs::write(folder.join("throughput.svg"), self.throughput_svg())?;
        std::fs::write(folder.join("latency.svg"), self.latency_svg())?;
        Ok(())
    }

    /// The tables, for the README and the terminal.
    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let floor = &self.floor;
        let _ = writeln!(
            text,
            "Floor: fdatasync {:.0}/s (p50 {:.2} ms, p99 {:.2} ms); loopback round trip p50 {:.3} ms, p99 {:.3} ms; one of each: p50 {:.2} ms, p99 {:.2} ms.\n",
            floor.fdatasync_per_second,
            floor.fdatasync_p50_ms,
            floor.fdatasync_p99_ms,
            floor.loopback_rtt_p50_ms,
            floor.loopback_rtt_p99_ms,
            floor.write_ms(),
            floor.write_p99_ms()
        );
        let _ = writeln!(
            text,
            "| system | operation | clients | ops/s | p50 ms | p99 ms | p99.9 ms | server CPU s / 1k ops | load generator CPU s / 1k ops | entries / fsync | errors |"
        );
        let _ = writeln!(text, "|---|---|---|---|---|---|---|---|---|---|---|");
        for row in &self.rows {
            let _ = writeln!(
                text,
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {} | {} |",
                row.system,
                row.operation,
                row.clients,
                row.throughput,
                row.p50_ms,
                row.p99_ms,
                row.p999_ms,
                row.server_cpu_seconds_per_1000,
                row.load_generator_cpu_seconds_per_1000,
                row.entries_per_fsync
                    .map_or_else(|| "".to_owned(), |value| format!("{value:.1}")),
                row.errors
            );
        }
        let _ = writeln!(text);
        for (name, ratios) in [
            ("writes/s", &self.write_throughput_ratio_vs_etcd),
            ("reads/s", &self.read_throughput_ratio_vs_etcd),
        ] {
            let mut ratios: Vec<(usize, f64)> = ratios
                .iter()
                .filter_map(|(clients, ratio)| Some((clients.parse().ok()?, *ratio)))
                .collect();
            ratios.sort_by_key(|(clients, _)| *clients);
            let ratios: Vec<String> = ratios
                .iter()
                .map(|(clients, ratio)| format!("{clients} clients {ratio:.2}×"))
                .collect();
            let _ = writeln!(
                text,
                "Agenda (1 shard) / etcd, {name}: {}.",
                ratios.join(", ")
            );
        }
        if let (Some(ratio), Some(strict)) = (
            self.p99_write_at_1_client_over_floor,
            self.p99_write_at_1_client_over_floor_p50,
        ) {
            let _ = writeln!(
                text,
                "Agenda (1 shard) p99 write latency at 1 client: {ratio:.2}× the floor's p99, {strict:.2}× its median (goal ≤ 1.5×)."
            );
        }
        if let Some(entries) = self.entries_per_fsync_at_256 {
            let _ = writeln!(
                text,
                "Agenda (1 shard) entries per fsync at 256 clients: {entries:.1} (goal ≥ 50)."
            );
        }
        let memory: Vec<String> = self
            .peak_memory_bytes
            .iter()
            .map(|(system, bytes)| format!("{system} {:.0} MiB", *bytes as f64 / 1048576.0))
            .collect();
        let _ = writeln!(
            text,
            "Peak memory of the 3 servers together: {}.",
            memory.join(", ")
        );
        for failover in &self.failover {
            let _ = writeln!(
                text,
                "Failover of {} (SIGKILL of the leader → next acknowledged write, {} trials): median {:.0} ms, max {:.0} ms.",
                failover.system,
                failover.trials_ms.len(),
                failover.median_ms,
                failover.max_ms
            );
        }
        text
    }

    fn systems(&self) -> Vec<String> {
        let mut systems: Vec<String> = Vec::new();
        for row in &self.rows {
            if !systems.contains(&row.system) {
                systems.push(row.system.clone());
            }
        }
        systems
    }

    /// Throughput against clients, writes and reads side by side.
    pub fn throughput_svg(&self) -> String {
        let systems = self.systems();
        let mut panels = Vec::new();
        for operation in ["write", "read"] {
            let series = systems
                .iter()
                .map(|system| {
                    let points = self
                        .rows
                        .iter()
                        .filter(|row| &row.system == system && row.operation == operation)
                        .map(|row| (row.clients as f64, row.throughput))
                        .collect();
                    (system.clone(), points)
                })
                .collect();
            panels.push(Panel {
                title: format!("{operation}s per second"),
                x_label: "concurrent clients".into(),
                x_log: true,
                y_log: false,
                series,
            });
        }
        svg(&panels)
    }

    /// The distribution of write latencies at the highest concurrency every system ran.
    pub fn latency_svg(&self) -> String {
        let systems = self.systems();
        let clients = self
            .rows
            .iter()
            .filter(|row| row.operation == "write")
            .map(|row| row.clients)
            .filter(|&clients| clients <= 256)
            .max()
            .unwrap_or(1);
        let series = systems
            .iter()
            .filter_map(|system| {
                let row = self.rows.iter().find(|row| {
                    &row.system == system && row.operation == "write" && row.clients == clients
                })?;
                // x: the percentile on a log scale of the tail (1 / (1 − q)).
                let points = row
                    .distribution
                    .iter()
                    .map(|&(percent, ms)| (100.0 / (100.0 - percent), ms))
                    .collect();
                Some((system.clone(), points))
            })
            .collect();
        svg(&[Panel {
            title: format!("write latency (ms) at {clients} clients, by percentile"),
            x_label: "percentile (10 … 99.9, tail on a log scale)".into(),
            x_log: true,
            y_log: true,
            series,
        }])
    }
}

/// One plot: lines of (x, y) points, one per system.
struct Panel {
    title: String,
    x_label: String,
    x_log: bool,
    y_log: bool,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

const COLOURS: [&str; 4] = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A self-contained SVG of `panels` side by side (no script, no external font).
fn svg(panels: &[Panel]) -> String {
    let (width, height) = (460.0, 320.0);
    let (left, right, top, bottom) = (64.0, 16.0, 36.0, 72.0);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        width * panels.len() as f64
    );
    let _ = write!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (number, panel) in panels.iter().enumerate() {
        let origin = width * number as f64;
        let points: Vec<(f64, f64)> = panel
            .series
            .iter()
            .flat_map(|(_, points)| points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let scale = |value: f64, log: bool| if log { value.max(1e-3).log10() } else { value };
        let range = |values: Vec<f64>, log: bool| {
            let low = values.iter().copied().fold(f64::INFINITY, f64::min);
            let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            match (low.is_finite(), log) {
                (false, _) => (0.0, 1.0),
                (true, true) => (low, if high > low { high } else { low + 1.0 }),
                (true, false) => (0.0, if high > 0.0 { high * 1.1 } else { 1.0 }),
            }
        };
        let xs: Vec<f64> = points.iter().map(|(x, _)| scale(*x, panel.x_log)).collect();
        let ys: Vec<f64> = points.iter().map(|(_, y)| scale(*y, panel.y_log)).collect();
        let (x_low, x_high) = range(xs, true);
        let (y_low, y_high) = range(ys, panel.y_log);
        let plot_width = width - left - right;
        let plot_height = height - top - bottom;
        let to_x = |x: f64| {
            origin
                + left
                + (scale(x, panel.x_log) - x_low) / (x_high - x_low).max(1e-9) * plot_width
        };
        let to_y = |y: f64| {
            top + plot_height
                - (scale(y, panel.y_log) - y_low) / (y_high - y_low).max(1e-9) * plot_height
        };
        let _ = write!(
            out,
            r#"<text x="{}" y="20" font-weight="bold">{}</text>"#,
            origin + left,
            escape(&panel.title)
        );
        let _ = write!(
            out,
            r##"<rect x="{}" y="{top}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#888"/>"##,
            origin + left
        );
        // Axis labels: the low and high ends of y, and each distinct x.
        for y_value in [y_low, y_high] {
            let value = if panel.y_log {
                10f64.powf(y_value)
            } else {
                y_value
            };
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                origin + left - 4.0,
                to_y(value) + 4.0,
                short(value)
            );
        }
        let mut x_values: Vec<f64> = points.iter().map(|(x, _)| *x).collect();
        x_values.sort_by(f64::total_cmp);
        x_values.dedup();
        for x in x_values {
            let label = if panel.y_log {
                // The latency plot's x is 1 / (1 − q): show q as a percentile, for the
                // usual ones only (the others would overlap).
                let percent = 100.0 - 100.0 / x;
                if ![50.0, 90.0, 99.0, 99.9]
                    .iter()
                    .any(|p| (p - percent).abs() < 1e-6)
                {
                    continue;
                }
                short(percent)
            } else {
                short(x)
            };
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">{label}</text>"#,
                to_x(x),
                top + plot_height + 16.0
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            origin + left + plot_width / 2.0,
            top + plot_height + 34.0,
            escape(&panel.x_label)
        );
        for (index, (name, points)) in panel.series.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let path: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", to_x(x), to_y(y)))
                .collect();
            let _ = write!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for &(x, y) in points {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                    to_x(x),
                    to_y(y)
                );
            }
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
                origin + left + 120.0 * index as f64,
                height - 12.0,
                escape(name)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A number in a few characters: 12, 1.5, 0.25, 12k.
fn short(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 100.0 || (value >= 1.0 && value.fract() == 0.0) {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn measured(latencies_us: Vec<u32>) -> Measured {
        Measured {
            operations: latencies_us.len() as u64,
            completed_in_time: latencies_us.len() as u64,
            errors: 0,
            elapsed: Duration::from_secs(1),
            latencies_us,
            first_error: None,
        }
    }

    #[test]
    fn ratios_goals_tables_and_plots_come_from_the_rows() {
        let floor = Floor {
            fdatasync_per_second: 500.0,
            fdatasync_p50_ms: 2.0,
            fdatasync_p99_ms: 3.0,
            loopback_rtt_p50_ms: 0.05,
            loopback_rtt_p99_ms: 0.1,
        };
        let ours = measured((1..=3000).collect());
        let theirs = measured((1..=1000).collect());
        let mut results = Results {
            smoke: true,
            seconds_per_load: 1.0,
            floor,
            rows: vec![
                Row::new(
                    "agenda-1-shard",
                    Operation::Write,
                    1,
                    &ours,
                    1.5,
                    0.3,
                    Some(60.0),
                ),
                Row::new("etcd", Operation::Write, 1, &theirs, 2.0, 0.1, Some(1.0)),
                Row::new(
                    "agenda-1-shard",
                    Operation::Write,
                    256,
                    &ours,
                    1.5,
                    0.3,
                    Some(60.0),
                ),
            ],
            peak_memory_bytes: BTreeMap::from([("etcd".to_owned(), 64 << 20)]),
            failover: vec![Failover::new("etcd", vec![1200.0, 900.0, 1500.0])],
            write_throughput_ratio_vs_etcd: BTreeMap::new(),
            read_throughput_ratio_vs_etcd: BTreeMap::new(),
            p99_write_at_1_client_over_floor: None,
            p99_write_at_1_client_over_floor_p50: None,
            entries_per_fsync_at_256: None,
        };
        results.compute_ratios();
        assert_eq!(results.write_throughput_ratio_vs_etcd["1"], 3.0);
        assert!(!results.write_throughput_ratio_vs_etcd.contains_key("256"));
        // p99 of 1..=3000 µs is 2.97 ms; the floor's p99 is 3.1 ms.
        let over = results.p99_write_at_1_client_over_floor.unwrap();
        assert!((over - 2.97 / 3.1).abs() < 1e-9, "{over}");
        assert_eq!(results.entries_per_fsync_at_256, Some(60.0));
        assert_eq!(results.rows[0].server_cpu_seconds_per_1000, 0.5);
        assert_eq!(results.failover[0].median_ms, 1200.0);
        assert_eq!(results.failover[0].max_ms, 1500.0);
        let table = results.markdown();
        assert!(
            table.contains("| agenda-1-shard | write | 1 | 3000 |"),
            "{table}"
        );
        assert!(table.contains("writes/s: 1 clients 3.00×"), "{table}");
        for svg in [results.throughput_svg(), results.latency_svg()] {
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
            assert!(svg.contains("polyline") && !svg.contains("NaN"), "{svg}");
        }
        let json = serde_json::to_value(&results).unwrap();
        assert_eq!(json["write_throughput_ratio_vs_etcd"]["1"], 3.0);
        assert_eq!(json["rows"][0]["p99_ms"], 2.97);
    }
}
