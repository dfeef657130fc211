//! A picture of a simulation run, to debug by looking: who led each shard when, which faults
//! were active over which servers, and every client operation from invocation to completion,
//! with the operations the checker could not linearize drawn in red on top.
//!
//! # What it promises
//!
//! - **Deterministic.** [`Timeline::to_svg`] reads no clock and iterates no hash map: the same
//!   timeline gives the same bytes, so the pictures of a failing seed and of its replay can be
//!   compared with `diff`.
//! - **Self-contained.** One `<svg>` document with inline attributes only: no external fonts,
//!   scripts, style sheets or images. Every text is escaped for XML.
//! - **Total.** Any timeline renders, including an empty one, spans that end before they start
//!   (drawn from their start), and leaders or faults naming shards or servers the timeline does
//!   not list (lanes are added for them). Zero-length spans are drawn one pixel wide.
//! - **Inspectable.** Hovering a leader bar, a fault band or an operation shows its details in a
//!   tooltip (`<title>`); an operation's tooltip gives its index in the history and its times in
//!   microseconds, as the checker's explanations do.
//!
//! # Layout
//!
//! ```text
//! seed 42 — passed                                   title: the seed and the verdict
//! ── get ── put ── delete ...                        legend
//! 0 s        5 s        10 s       15 s   ...        time axis, in simulated seconds
//! kv (shard 1)                                       one group of lanes per shard
//!   server 1  [t1======]          [t4=====]          a bar per leader tenure, labelled with its term
//!   server 2  ░░░░[t2]░░░░░                          a band per fault over the servers it affects
//! clients
//!   client 1  ───  ───  ── ─ ─ ─ ─ ─ ─ ─             operations; an unknown outcome is dashed
//!                           ┆ faults healed          the end of the safety phase
//! ```
//!
//! Time scales linearly from 0 to the end of the run (or to the latest time in the timeline, if
//! later). A client's concurrent operations (for example a timed-out request and its successor)
//! are stacked in rows of its lane, at most [`OPERATION_ROWS_MAX`] of them.
//!
//! # Example
//!
//! ```
//! use linearizability::{Input, Operation, Output};
//! use sim::timeline::{LeaderSpan, Timeline};
//!
//! let timeline = Timeline {
//!     seed: 7,
//!     servers: 3,
//!     shards: vec![(1, "kv".to_string())],
//!     end_us: 2_000_000,
//!     safety_end_us: 1_000_000,
//!     leaders: vec![LeaderSpan { shard: 1, server: 2, term: 1, from_us: 0, to_us: None }],
//!     operations: vec![Operation::completed(1, b"k", Input::Get, 10, 20, Output::Value(None))],
//!     verdict: "passed".to_string(),
//!     ..Timeline::default()
//! };
//! let svg = timeline.to_svg();
//! assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
//! assert_eq!(svg, timeline.to_svg(), "the same timeline always gives the same bytes");
//! ```

use linearizability::{Input, Operation, Outcome};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// One leader's tenure: server `server` led shard `shard` in `term` from `from_us` until `to_us`
/// (None: until the end of the run or until a later term's leader was seen for that shard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderSpan {
    /// The shard led.
    pub shard: u64,
    /// The leader.
    pub server: u64,
    /// The term in which it led.
    pub term: u64,
    /// When it was seen to become leader, in simulated microseconds.
    pub from_us: u64,
    /// When its tenure ended; `None`: it lasted until the end of the run.
    pub to_us: Option<u64>,
}

/// A fault while it lasted (to_us None: until healed at the end of the safety phase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpan {
    /// What the fault was, for example `partition {1, 2} | {3}`.
    pub description: String,
    /// The servers it affected; empty: the whole cluster (for example message loss).
    pub servers: Vec<u64>,
    /// When it was injected, in simulated microseconds.
    pub from_us: u64,
    /// When it was healed; `None`: at the end of the safety phase.
    pub to_us: Option<u64>,
}

/// Everything the picture of one run shows. See the [module documentation](self).
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// The seed of the run.
    pub seed: u64,
    /// The number of servers; their ids are `1..=servers`.
    pub servers: u64,
    /// The shards, as id and name, in the order their lanes are drawn.
    pub shards: Vec<(u64, String)>,
    /// The end of the run, in simulated microseconds.
    pub end_us: u64,
    /// When the faults stopped (the end of the safety phase), in simulated microseconds.
    pub safety_end_us: u64,
    /// Every leader tenure seen.
    pub leaders: Vec<LeaderSpan>,
    /// Every fault injected.
    pub faults: Vec<FaultSpan>,
    /// The client history, as given to the linearizability checker.
    pub operations: Vec<Operation>,
    /// Indexes into `operations` that the checker could not linearize; out-of-range indexes
    /// are ignored.
    pub highlighted: Vec<usize>,
    /// One line for the title: "passed" or the failure reason (truncated to 200 characters).
    pub verdict: String,
}

/// The width of the picture, in pixels.
const WIDTH: f64 = 1600.0;
/// Where time 0 is drawn; the lane labels are on its left.
const PLOT_LEFT: f64 = 170.0;
/// Where the end of the run is drawn.
const PLOT_RIGHT: f64 = WIDTH - 30.0;
/// The vertical position of the time axis.
const AXIS_Y: f64 = 78.0;
/// The top of the first group of lanes.
const LANES_TOP: f64 = 88.0;
/// The height of a group's name above its lanes.
const HEADER_HEIGHT: f64 = 18.0;
/// The height of a (shard, server) lane.
const LANE_HEIGHT: f64 = 16.0;
/// The height of a leader bar inside its lane.
const BAR_HEIGHT: f64 = 12.0;
/// The space between two groups of lanes.
const GROUP_GAP: f64 = 8.0;
/// The height of one row of operations in a client's lane.
const OPERATION_ROW_HEIGHT: f64 = 10.0;
/// The most rows of operations in a client's lane; beyond, operations share a row.
pub const OPERATION_ROWS_MAX: usize = 12;
/// The space below the last lane, for the "faults healed" label.
const BOTTOM_MARGIN: f64 = 28.0;
/// The narrowest shape drawn, so that zero-length spans stay visible.
const WIDTH_MIN: f64 = 1.0;
/// The most ticks on the time axis, besides the one at 0.
const TICKS_MAX: u64 = 12;
/// The longest verdict shown in the title, in characters.
const VERDICT_CHARS_MAX: usize = 200;

/// The colour of the operations the checker could not linearize.
const WARNING: &str = "#d62728";
/// The colour of fault bands.
const FAULT: &str = "#ff9f1c";
/// The colours of leader bars, by server id.
const SERVER_COLOURS: [&str; 8] = [
    "#88ccee", "#44aa99", "#ddcc77", "#cc99bb", "#99bb55", "#aabbdd", "#eebb88", "#bbbbbb",
];

impl Timeline {
    /// Renders the timeline as a standalone SVG document, ending with `</svg>` and a newline.
    pub fn to_svg(&self) -> String {
        let layout = Layout::new(self);
        let mut svg = String::new();
        self.draw_header(&mut svg, &layout);
        draw_axis(&mut svg, &layout);
        draw_lanes(&mut svg, &layout);
        self.draw_leaders(&mut svg, &layout);
        self.draw_faults(&mut svg, &layout);
        self.draw_operations(&mut svg, &layout);
        self.draw_safety_end(&mut svg, &layout);
        self.draw_highlighted(&mut svg, &layout);
        svg.push_str("</svg>\n");
        svg
    }

    /// The latest time the picture must show: the end of the run, or any later time in it.
    fn horizon_us(&self) -> u64 {
        let leaders = self
            .leaders
            .iter()
            .flat_map(|span| [Some(span.from_us), span.to_us]);
        let faults = self
            .faults
            .iter()
            .flat_map(|span| [Some(span.from_us), span.to_us]);
        let operations = self
            .operations
            .iter()
            .flat_map(|operation| [Some(operation.invoked_at), operation.completed_at()]);
        leaders
            .chain(faults)
            .chain(operations)
            .flatten()
            .chain([self.end_us, self.safety_end_us, 1])
            .max()
            .unwrap_or(1)
    }

    /// The highlighted operations, each once, in index order.
    fn highlighted_indexes(&self) -> BTreeSet<usize> {
        self.highlighted
            .iter()
            .copied()
            .filter(|&index| index < self.operations.len())
            .collect()
    }

    /// Opens the document, writes the title (seed and verdict) and the legend.
    fn draw_header(&self, svg: &mut String, layout: &Layout) {
        let height = layout.height;
        let _ = writeln!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="11" style="background:#ffffff">"##
        );
        let verdict = truncate(&self.verdict, VERDICT_CHARS_MAX);
        let colour = if self.verdict == "passed" {
            "#222222"
        } else {
            WARNING
        };
        let _ = writeln!(
            svg,
            r#"<text x="8" y="22" font-size="15" font-weight="bold" fill="{colour}">seed {} — {}</text>"#,
            self.seed,
            escape(&verdict)
        );
        draw_legend(svg);
    }

    /// Draws a bar per leader tenure in the lane of its (shard, server), labelled with the
    /// term when wide enough.
    fn draw_leaders(&self, svg: &mut String, layout: &Layout) {
        for span in &self.leaders {
            let Some(top) = layout.lane_top(span.shard, span.server) else {
                continue;
            };
            let to_us = span.to_us.unwrap_or(layout.horizon_us);
            let (x, width) = layout.span(span.from_us, to_us);
            let y = top + (LANE_HEIGHT - BAR_HEIGHT) / 2.0;
            let until = span
                .to_us
                .map_or("the end of the run".to_string(), |to_us| {
                    seconds(to_us) + " s"
                });
            let tooltip = format!(
                "shard {}: server {} led in term {} from {} s until {until}",
                span.shard,
                span.server,
                span.term,
                seconds(span.from_us)
            );
            let _ = writeln!(
                svg,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{BAR_HEIGHT}" rx="2" fill="{}" stroke="#555555" stroke-width="0.5"><title>{}</title></rect>"##,
                server_colour(span.server),
                escape(&tooltip)
            );
            let label = format!("t{}", span.term);
            if width >= 6.0 * label.len() as f64 + 6.0 {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" font-size="10" pointer-events="none">{label}</text>"#,
                    x + 3.0,
                    y + BAR_HEIGHT - 2.5
                );
            }
        }
    }

    /// Draws a semi-transparent band per fault over the lanes of the servers it affects (in
    /// every shard), with its description as a tooltip and, when wide enough, as a label. The
    /// band is one `<rect>` from the first to the last affected lane, clipped to those lanes.
    fn draw_faults(&self, svg: &mut String, layout: &Layout) {
        for (index, fault) in self.faults.iter().enumerate() {
            let tops = layout.fault_lane_tops(&fault.servers);
            let (Some(&first), Some(&last)) = (tops.first(), tops.last()) else {
                continue;
            };
            let clip: String = tops
                .iter()
                .map(|top| format!("M0 {top:.1}H{WIDTH}V{:.1}H0Z", top + LANE_HEIGHT))
                .collect();
            let _ = writeln!(
                svg,
                r#"<clipPath id="fault-{index}"><path d="{clip}"/></clipPath>"#
            );
            let to_us = fault.to_us.unwrap_or(self.safety_end_us);
            let (x, width) = layout.span(fault.from_us, to_us);
            let height = last + LANE_HEIGHT - first;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{first:.1}" width="{width:.1}" height="{height:.1}" fill="{FAULT}" fill-opacity="0.3" stroke="{FAULT}" clip-path="url(#fault-{index})"><title>{}</title></rect>"#,
                escape(&fault_tooltip(fault))
            );
            let label_chars = ((width - 4.0) / 5.5).max(0.0) as usize;
            if label_chars >= 4 {
                let label = truncate(&fault.description, label_chars);
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#8a4b00" pointer-events="none">{}</text>"##,
                    x + 2.0,
                    first + 9.0,
                    escape(&label)
                );
            }
        }
    }

    /// Draws every operation in its client's lane, coloured by kind.
    fn draw_operations(&self, svg: &mut String, layout: &Layout) {
        for index in 0..self.operations.len() {
            self.draw_operation(svg, layout, index, false);
        }
    }

    /// Draws the highlighted operations again, thicker and in the warning colour, on top of
    /// everything else.
    fn draw_highlighted(&self, svg: &mut String, layout: &Layout) {
        for index in self.highlighted_indexes() {
            self.draw_operation(svg, layout, index, true);
        }
    }

    /// Draws operation `index` as a line from invocation to completion (to the end of the run,
    /// dashed, if its outcome is unknown), with its details as a tooltip.
    fn draw_operation(&self, svg: &mut String, layout: &Layout, index: usize, highlighted: bool) {
        let operation = &self.operations[index];
        let Some(&top) = layout.client_tops.get(&operation.client) else {
            return;
        };
        let row = layout.operation_rows[index] as f64;
        let y = top + 2.0 + row * OPERATION_ROW_HEIGHT + OPERATION_ROW_HEIGHT / 2.0;
        let end_us = operation.completed_at().unwrap_or(layout.horizon_us);
        let (x, width) = layout.span(operation.invoked_at, end_us);
        let (colour, stroke_width) = if highlighted {
            (WARNING, 7)
        } else {
            (kind_colour(&operation.input), 4)
        };
        let dash = match operation.outcome {
            Outcome::Unknown => r#" stroke-dasharray="4 3""#,
            Outcome::Completed { .. } => "",
        };
        let mut tooltip = operation_tooltip(index, operation);
        if highlighted {
            tooltip.push_str(" (could not be linearized)");
        }
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="{stroke_width}"{dash}><title>{}</title></line>"#,
            x + width,
            escape(&tooltip)
        );
    }

    /// Draws a vertical line at the end of the safety phase, labelled "faults healed".
    fn draw_safety_end(&self, svg: &mut String, layout: &Layout) {
        let x = layout.x(self.safety_end_us);
        let bottom = layout.height - BOTTOM_MARGIN + 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{AXIS_Y}" x2="{x:.1}" y2="{bottom:.1}" stroke="#333333" stroke-width="1.5" stroke-dasharray="6 4"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">faults healed</text>"#,
            bottom + 14.0
        );
    }
}

/// Where everything goes: the time scale and the vertical position of every lane.
struct Layout {
    /// The time drawn at the right edge of the plot; at least 1.
    horizon_us: u64,
    /// The number of server lanes per shard.
    server_count: u64,
    /// Per shard, in drawing order: its id, its name and the top of its group.
    shards: Vec<(u64, String, f64)>,
    /// The top of the clients' group.
    clients_top: f64,
    /// The top of each client's lane, by client id.
    client_tops: BTreeMap<u64, f64>,
    /// The row of each operation inside its client's lane, by index in the history.
    operation_rows: Vec<usize>,
    /// The height of the picture.
    height: f64,
}

impl Layout {
    /// Places the lanes of `timeline`: a group per shard (listed ones first, then any other
    /// shard a leader names), each with a lane per server, then a lane per client.
    fn new(timeline: &Timeline) -> Layout {
        let horizon_us = timeline.horizon_us();
        let named_servers = timeline.leaders.iter().map(|span| span.server);
        let fault_servers = timeline
            .faults
            .iter()
            .flat_map(|fault| fault.servers.clone());
        let server_count = named_servers
            .chain(fault_servers)
            .fold(timeline.servers, u64::max);
        let mut shards: Vec<(u64, String, f64)> = Vec::new();
        let mut top = LANES_TOP;
        for (id, name) in shard_list(timeline) {
            shards.push((id, name, top));
            top += HEADER_HEIGHT + server_count as f64 * LANE_HEIGHT + GROUP_GAP;
        }
        let clients_top = top;
        top += HEADER_HEIGHT;
        let mut by_client: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (index, operation) in timeline.operations.iter().enumerate() {
            by_client.entry(operation.client).or_default().push(index);
        }
        let mut client_tops = BTreeMap::new();
        let mut operation_rows = vec![0; timeline.operations.len()];
        for (client, mut indexes) in by_client {
            client_tops.insert(client, top);
            let rows = pack_rows(
                &timeline.operations,
                &mut indexes,
                horizon_us,
                &mut operation_rows,
            );
            top += rows as f64 * OPERATION_ROW_HEIGHT + 4.0;
        }
        Layout {
            horizon_us,
            server_count,
            shards,
            clients_top,
            client_tops,
            operation_rows,
            height: (top + BOTTOM_MARGIN).ceil(),
        }
    }

    /// The horizontal position of time `at_us`.
    fn x(&self, at_us: u64) -> f64 {
        let fraction = at_us.min(self.horizon_us) as f64 / self.horizon_us as f64;
        PLOT_LEFT + fraction * (PLOT_RIGHT - PLOT_LEFT)
    }

    /// The left edge and the width of a span from `from_us` to `to_us`, at least
    /// [`WIDTH_MIN`] wide; a span that ends before it starts is drawn from its start.
    fn span(&self, from_us: u64, to_us: u64) -> (f64, f64) {
        let left = self.x(from_us);
        let right = self.x(to_us.max(from_us));
        (left, (right - left).max(WIDTH_MIN))
    }

    /// The top of the lane of `server` in the group of `shard`, if both are drawn.
    fn lane_top(&self, shard: u64, server: u64) -> Option<f64> {
        let (_, _, group_top) = self.shards.iter().find(|(id, _, _)| *id == shard)?;
        let lane = (1..=self.server_count)
            .contains(&server)
            .then(|| server - 1)?;
        Some(group_top + HEADER_HEIGHT + lane as f64 * LANE_HEIGHT)
    }

    /// The tops of the lanes of `servers` (every server if empty) in every shard, top first.
    fn fault_lane_tops(&self, servers: &[u64]) -> Vec<f64> {
        let servers: BTreeSet<u64> = if servers.is_empty() {
            (1..=self.server_count).collect()
        } else {
            servers.iter().copied().collect()
        };
        let mut tops = Vec::new();
        for (shard, _, _) in &self.shards {
            tops.extend(
                servers
                    .iter()
                    .filter_map(|&server| self.lane_top(*shard, server)),
            );
        }
        tops
    }
}

/// The shards to draw: the listed ones in order, then those only leaders name, by id.
fn shard_list(timeline: &Timeline) -> Vec<(u64, String)> {
    let mut shards = timeline.shards.clone();
    let listed: BTreeSet<u64> = shards.iter().map(|(id, _)| *id).collect();
    let unlisted: BTreeSet<u64> = timeline
        .leaders
        .iter()
        .map(|span| span.shard)
        .filter(|id| !listed.contains(id))
        .collect();
    shards.extend(unlisted.into_iter().map(|id| (id, format!("shard {id}"))));
    shards
}

/// Packs one client's operations (`indexes` into `operations`) into rows so that operations
/// in a row do not overlap in time, first fit by invocation time, and records each one's row in
/// `rows_of`. Beyond [`OPERATION_ROWS_MAX`] rows, an operation goes to the row that frees up
/// first. Returns the number of rows, at least 1.
fn pack_rows(
    operations: &[Operation],
    indexes: &mut [usize],
    horizon_us: u64,
    rows_of: &mut [usize],
) -> usize {
    indexes.sort_by_key(|&index| (operations[index].invoked_at, index));
    let mut row_ends_us: Vec<u64> = Vec::new();
    for &index in indexes.iter() {
        let operation = &operations[index];
        let free = row_ends_us
            .iter()
            .position(|&end_us| end_us <= operation.invoked_at);
        let row = match free {
            Some(row) => row,
            None if row_ends_us.len() < OPERATION_ROWS_MAX => {
                row_ends_us.push(0);
                row_ends_us.len() - 1
            }
            None => (0..row_ends_us.len())
                .min_by_key(|&row| (row_ends_us[row], row))
                .unwrap_or(0),
        };
        let end_us = operation.completed_at().unwrap_or(horizon_us);
        row_ends_us[row] = row_ends_us[row].max(end_us).max(operation.invoked_at);
        rows_of[index] = row;
    }
    row_ends_us.len().max(1)
}

/// Draws the time axis along the top, with a tick, a label in seconds and a faint grid line
/// every round number of seconds (at most [`TICKS_MAX`] of them).
fn draw_axis(svg: &mut String, layout: &Layout) {
    let bottom = layout.height - BOTTOM_MARGIN;
    let _ = writeln!(
        svg,
        r##"<line x1="{PLOT_LEFT}" y1="{AXIS_Y}" x2="{PLOT_RIGHT}" y2="{AXIS_Y}" stroke="#222222"/>"##
    );
    let step_us = tick_step_us(layout.horizon_us);
    for tick in 0..=layout.horizon_us / step_us {
        let at_us = tick * step_us;
        let x = layout.x(at_us);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{AXIS_Y}" x2="{x:.1}" y2="{bottom:.1}" stroke="#eeeeee"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{AXIS_Y}" stroke="#222222"/>"##,
            AXIS_Y - 5.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{} s</text>"#,
            AXIS_Y - 8.0,
            seconds(at_us)
        );
    }
}

/// Labels the groups (shards and clients) and their lanes, with a faint line under each lane.
fn draw_lanes(svg: &mut String, layout: &Layout) {
    for (id, name, top) in &layout.shards {
        let title = format!("{name} (shard {id})");
        draw_group_title(svg, *top, &title);
        for server in 1..=layout.server_count {
            let lane_top = top + HEADER_HEIGHT + (server - 1) as f64 * LANE_HEIGHT;
            draw_lane_label(svg, lane_top, LANE_HEIGHT, &format!("server {server}"));
        }
    }
    draw_group_title(svg, layout.clients_top, "clients");
    let mut client_tops = layout.client_tops.iter().peekable();
    while let Some((client, &top)) = client_tops.next() {
        let bottom = match client_tops.peek() {
            Some((_, next_top)) => **next_top,
            None => layout.height - BOTTOM_MARGIN,
        };
        draw_lane_label(svg, top, bottom - top, &format!("client {client}"));
    }
}

/// Writes the name of a group of lanes whose header starts at `top`.
fn draw_group_title(svg: &mut String, top: f64, title: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="8" y="{:.1}" font-weight="bold">{}</text>"#,
        top + 13.0,
        escape(title)
    );
}

/// Writes the label of a lane from `top`, `height` high, and a faint line under it.
fn draw_lane_label(svg: &mut String, top: f64, height: f64, label: &str) {
    let bottom = top + height;
    let _ = writeln!(
        svg,
        r#"<text x="24" y="{:.1}">{}</text>"#,
        top + 12.0,
        escape(label)
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{PLOT_LEFT}" y1="{bottom:.1}" x2="{PLOT_RIGHT}" y2="{bottom:.1}" stroke="#dddddd"/>"##
    );
}

/// Draws the legend under the title: operation kinds, unknown outcomes, operations that could
/// not be linearized, and faults.
fn draw_legend(svg: &mut String) {
    let cas = Input::Cas {
        expected: None,
        new: None,
    };
    let entries = [
        ("get", kind_colour(&Input::Get), 4, "", "1"),
        ("put", kind_colour(&Input::Put(Vec::new())), 4, "", "1"),
        ("delete", kind_colour(&Input::Delete), 4, "", "1"),
        ("cas", kind_colour(&cas), 4, "", "1"),
        (
            "unknown outcome",
            "#666666",
            4,
            r#" stroke-dasharray="4 3""#,
            "1",
        ),
        ("not linearizable", WARNING, 7, "", "1"),
        ("fault", FAULT, 12, "", "0.3"),
    ];
    let y = 46.0;
    let mut x = 8.0;
    for (label, colour, stroke_width, dash, opacity) in entries {
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{y}" x2="{:.1}" y2="{y}" stroke="{colour}" stroke-width="{stroke_width}" stroke-opacity="{opacity}"{dash}/>"#,
            x + 28.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{label}</text>"#,
            x + 34.0,
            y + 4.0
        );
        // About 6 pixels per character at 11 pixels, and a gap before the next entry.
        x += 34.0 + 6.5 * label.len() as f64 + 24.0;
    }
}

/// The colour of an operation's kind.
fn kind_colour(input: &Input) -> &'static str {
    match input {
        Input::Get => "#1f77b4",
        Input::Put(_) => "#2ca02c",
        Input::Delete => "#9467bd",
        Input::Cas { .. } => "#17becf",
    }
}

/// The colour of `server`'s leader bars.
fn server_colour(server: u64) -> &'static str {
    SERVER_COLOURS[(server % SERVER_COLOURS.len() as u64) as usize]
}

/// For example `#3 client 2 key "x" put "a" -> ok [invoked at 20 µs, completed at 30 µs]`.
fn operation_tooltip(index: usize, operation: &Operation) -> String {
    let (output, completion) = match &operation.outcome {
        Outcome::Completed { at, output } => (output.to_string(), format!("completed at {at} µs")),
        Outcome::Unknown => ("unknown outcome".to_string(), "never completed".to_string()),
    };
    format!(
        "#{index} client {} key {} {} -> {output} [invoked at {} µs, {completion}]",
        operation.client,
        show_bytes(&operation.key),
        operation.input,
        operation.invoked_at
    )
}

/// The description of a fault, the servers it affected and when.
fn fault_tooltip(fault: &FaultSpan) -> String {
    let servers = if fault.servers.is_empty() {
        "every server".to_string()
    } else {
        let ids: Vec<String> = fault.servers.iter().map(u64::to_string).collect();
        format!("servers {}", ids.join(", "))
    };
    let until = fault
        .to_us
        .map_or("the end of the safety phase".to_string(), |to_us| {
            seconds(to_us) + " s"
        });
    format!(
        "{} ({servers}) from {} s until {until}",
        fault.description,
        seconds(fault.from_us)
    )
}

/// Shows bytes as the checker does: a quoted string if printable ASCII, hexadecimal otherwise.
fn show_bytes(bytes: &[u8]) -> String {
    if bytes.iter().all(|byte| (0x20..0x7f).contains(byte)) {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("0x{hex}")
    }
}

/// Microseconds as seconds, without trailing zeros: `1500000` is `1.5`.
fn seconds(at_us: u64) -> String {
    let (whole, fraction) = (at_us / 1_000_000, at_us % 1_000_000);
    if fraction == 0 {
        return whole.to_string();
    }
    let text = format!("{whole}.{fraction:06}");
    text.trim_end_matches('0').to_string()
}

/// The smallest round step (1, 2 or 5 times a power of ten microseconds) that puts at most
/// [`TICKS_MAX`] ticks after 0 on an axis up to `horizon_us`.
fn tick_step_us(horizon_us: u64) -> u64 {
    let mut power: u64 = 1;
    loop {
        for multiple in [1, 2, 5] {
            let step_us = power.saturating_mul(multiple);
            if horizon_us / step_us <= TICKS_MAX {
                return step_us;
            }
        }
        power = power.saturating_mul(10);
    }
}

/// The first `chars_max` characters of `text`, ending with `…` if it was longer.
fn truncate(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text.to_string();
    }
    let mut short: String = text.chars().take(chars_max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// Escapes `text` for XML text and attribute values; control characters, which XML does not
/// allow (or which would break the one-line title), become spaces.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            character if character.is_control() => escaped.push(' '),
            character => escaped.push(character),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use linearizability::Output;

    /// Two shards on three servers, two leader tenures (one of zero length), two faults, and
    /// four operations from two clients, one with an unknown outcome and one on a key that
    /// needs escaping.
    fn small() -> Timeline {
        let leader = |shard, server, term, from_us, to_us| LeaderSpan {
            shard,
            server,
            term,
            from_us,
            to_us,
        };
        Timeline {
            seed: 42,
            servers: 3,
            shards: vec![(1, "meta".to_string()), (2, "users".to_string())],
            end_us: 30_000_000,
            safety_end_us: 20_000_000,
            leaders: vec![
                leader(1, 1, 1, 100_000, Some(5_000_000)),
                leader(1, 2, 2, 5_000_000, None),
                leader(2, 3, 1, 7_000_000, Some(7_000_000)),
            ],
            faults: vec![
                FaultSpan {
                    description: "partition {1} | {2, 3}".to_string(),
                    servers: vec![1],
                    from_us: 4_000_000,
                    to_us: Some(9_000_000),
                },
                FaultSpan {
                    description: "message loss".to_string(),
                    servers: Vec::new(),
                    from_us: 10_000_000,
                    to_us: None,
                },
            ],
            operations: vec![
                Operation::completed(1, b"x", Input::Put(b"a".to_vec()), 1_000, 2_000, Output::Ok),
                Operation::completed(2, b"a<&>", Input::Get, 3_000, 9_000, Output::Value(None)),
                Operation::unknown(1, b"x", Input::Delete, 10_000_000),
                Operation::completed(
                    1,
                    b"\x00\xff",
                    Input::Cas {
                        expected: None,
                        new: Some(b"b".to_vec()),
                    },
                    11_000_000,
                    11_000_000,
                    Output::Swapped(true),
                ),
            ],
            highlighted: vec![1, 1, 99],
            verdict: "key \"a<&>\" is not linearizable:\n  #1 client 2".to_string(),
        }
    }

    /// The `<line …>…</line>` elements of `svg` that carry a tooltip (the operations).
    fn operation_lines(svg: &str) -> Vec<&str> {
        svg.lines()
            .filter(|line| line.starts_with("<line") && line.contains("<title>#"))
            .collect()
    }

    #[test]
    fn a_small_timeline_is_one_svg_document() {
        let svg = small().to_svg();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.contains(">seed 42 — key"));
        assert!(svg.contains(">meta (shard 1)<") && svg.contains(">users (shard 2)<"));
        assert!(svg.contains(">faults healed<"));
        assert!(svg.contains(">20 s<"), "the axis is in simulated seconds");
        assert!(!svg.contains("href") && !svg.contains("<script") && !svg.contains("@import"));
    }

    #[test]
    fn every_leader_span_and_every_fault_is_one_rect() {
        let timeline = small();
        let svg = timeline.to_svg();
        let expected = timeline.leaders.len() + timeline.faults.len();
        assert_eq!(svg.matches("<rect").count(), expected);
        assert_eq!(
            svg.matches("clip-path=\"url(#fault-").count(),
            timeline.faults.len()
        );
        assert!(
            svg.contains("<title>partition {1} | {2, 3} (servers 1) from 4 s until 9 s</title>")
        );
        assert!(
            svg.contains(">message loss<"),
            "a wide fault band is labelled"
        );
        assert!(svg.contains(">t2<"), "a wide leader bar shows its term");
    }

    #[test]
    fn a_zero_length_span_is_still_visible() {
        let svg = small().to_svg();
        let zero = svg
            .lines()
            .find(|line| line.contains("shard 2: server 3 led in term 1"))
            .expect("the zero-length tenure is drawn");
        assert!(zero.contains("width=\"1.0\""), "{zero}");
    }

    #[test]
    fn every_text_is_escaped() {
        let svg = small().to_svg();
        assert!(
            svg.contains("key &quot;a&lt;&amp;&gt;&quot; get -&gt; absent"),
            "{svg}"
        );
        assert!(!svg.contains("a<&>"));
        assert!(
            svg.contains("is not linearizable:   #1 client 2</text>"),
            "one line"
        );
        for (position, _) in svg.match_indices('&') {
            let entity = &svg[position..];
            let known = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"];
            assert!(
                known.iter().any(|known| entity.starts_with(known)),
                "{entity}"
            );
        }
        assert!(
            svg.contains("key 0x00ff cas absent -&gt; &quot;b&quot;"),
            "binary keys are in hex"
        );
    }

    #[test]
    fn highlighted_operations_are_drawn_in_the_warning_colour_on_top() {
        let svg = small().to_svg();
        let lines = operation_lines(&svg);
        let warning = format!("stroke=\"{WARNING}\"");
        let red: Vec<&&str> = lines
            .iter()
            .filter(|line| line.contains(&warning))
            .collect();
        assert_eq!(
            red.len(),
            1,
            "a repeated index is drawn once, an unknown one not at all"
        );
        assert!(red[0].contains("<title>#1 client 2 ") && red[0].contains("stroke-width=\"7\""));
        assert!(red[0].contains("(could not be linearized)"));
        assert_eq!(
            lines.last(),
            red.first().copied(),
            "highlighted operations come last, on top"
        );
        assert_eq!(lines.len(), small().operations.len() + 1);
    }

    #[test]
    fn an_unknown_outcome_is_dashed_to_the_end_of_the_run() {
        let svg = small().to_svg();
        let unknown = operation_lines(&svg)
            .into_iter()
            .find(|line| line.contains("<title>#2 "))
            .expect("the unknown operation is drawn");
        assert!(unknown.contains("stroke-dasharray"), "{unknown}");
        assert!(
            unknown.contains(&format!("x2=\"{PLOT_RIGHT:.1}\"")),
            "{unknown}"
        );
        assert!(
            unknown
                .contains("delete -&gt; unknown outcome [invoked at 10000000 µs, never completed]")
        );
        let completed = operation_lines(&svg)
            .into_iter()
            .find(|line| line.contains("<title>#0 "))
            .expect("the completed operation is drawn");
        assert!(!completed.contains("stroke-dasharray"));
        assert!(completed.contains("[invoked at 1000 µs, completed at 2000 µs]"));
    }

    #[test]
    fn an_unknown_outcome_does_not_hide_the_next_operation_of_its_client() {
        let mut timeline = small();
        timeline.operations.push(Operation::completed(
            1,
            b"x",
            Input::Get,
            12_000_000,
            13_000_000,
            Output::Value(None),
        ));
        let layout = Layout::new(&timeline);
        assert_eq!(layout.operation_rows, vec![0, 0, 0, 1, 1]);
    }

    #[test]
    fn an_empty_timeline_renders() {
        let svg = Timeline::default().to_svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<rect").count(), 0);
        assert!(operation_lines(&svg).is_empty());
        assert!(svg.contains(">faults healed<"));
        assert!(svg.contains(">clients<"));
    }

    #[test]
    fn the_same_timeline_gives_the_same_bytes() {
        let timeline = small();
        assert_eq!(timeline.to_svg(), timeline.to_svg());
        assert_eq!(timeline.to_svg(), timeline.clone().to_svg());
    }

    #[test]
    fn a_long_verdict_is_truncated() {
        let mut timeline = small();
        timeline.verdict = "x".repeat(1000);
        let svg = timeline.to_svg();
        let expected = format!(">seed 42 — {}…</text>", "x".repeat(VERDICT_CHARS_MAX - 1));
        assert!(svg.contains(&expected));
    }

    #[test]
    fn unlisted_shards_and_servers_get_lanes() {
        let mut timeline = Timeline::default();
        timeline.leaders.push(LeaderSpan {
            shard: 9,
            server: 4,
            term: 3,
            from_us: 0,
            to_us: None,
        });
        let svg = timeline.to_svg();
        assert_eq!(svg.matches("<rect").count(), 1);
        assert!(svg.contains(">shard 9 (shard 9)<") && svg.contains(">server 4<"));
    }

    #[test]
    fn helpers() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_500_000), "1.5");
        assert_eq!(seconds(20_000_001), "20.000001");
        assert_eq!(tick_step_us(30_000_000), 5_000_000);
        assert_eq!(tick_step_us(20_000_000), 2_000_000);
        assert_eq!(tick_step_us(1), 1);
        assert_eq!(tick_step_us(u64::MAX), 2_000_000_000_000_000_000);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(
            escape("<a href=\"x\">&'\u{0}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos; "
        );
    }
}
