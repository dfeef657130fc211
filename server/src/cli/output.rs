//! What the client commands print: tables with aligned columns, times in the user's zone, and
//! stdout written so that a closed pipe (`agenda | head -1`) ends the output quietly instead of
//! panicking as `println!` does.

use super::client::Reply;
use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use serde_json::Value;
use std::io::Write;

/// Prints `text` and a newline on stdout, flushed; a write that fails (the reader went away)
/// is dropped: a command that prints once ends anyway.
pub(super) fn line(text: &str) {
    let _ = try_line(text);
}

/// Prints `text` and a newline on stdout, flushed (`watch` prints as changes come), and says
/// whether it could: `watch` ends when its reader went away (`BrokenPipe`).
pub(super) fn try_line(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()
}

/// Prints a JSON value on one line (see [`try_line`]).
pub(super) fn try_json(value: &Value) -> std::io::Result<()> {
    try_line(&value.to_string())
}

/// `text` with its control characters escaped as Rust writes them (`\n`, `\u{1b}`): one line
/// that drives no terminal, whatever a title or a value holds.
pub(super) fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Prints a JSON value on one line.
pub(super) fn json(value: &Value) {
    line(&value.to_string());
}

/// Prints an answer as the server sent it (`--json`).
pub(super) fn reply(reply: &Reply) {
    if !reply.text().is_empty() {
        line(reply.text());
    }
}

/// A table: a header and rows of cells, printed with each column as wide as its widest cell.
#[derive(Debug)]
pub(super) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    headless: bool,
}

impl Table {
    pub(super) fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|cell| (*cell).to_owned()).collect(),
            rows: Vec::new(),
            headless: false,
        }
    }

    /// A table of `columns` printed without a header (`name  value` lines).
    pub(super) fn headless(columns: usize) -> Table {
        Table {
            header: vec![String::new(); columns],
            rows: Vec::new(),
            headless: true,
        }
    }

    /// Adds a row; missing cells are blank, extra ones dropped.
    pub(super) fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, without a trailing newline. Cells are one line each: a newline or
    /// tab in a title would break the columns, so control characters show as spaces.
    pub(super) fn render(&self) -> String {
        let clean = |cell: &str| -> String {
            cell.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        };
        let header = (!self.headless).then_some(&self.header);
        let rows: Vec<Vec<String>> = header
            .into_iter()
            .chain(&self.rows)
            .map(|row| row.iter().map(|cell| clean(cell)).collect())
            .collect();
        let mut widths = vec![0; self.header.len()];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let lines: Vec<String> = rows
            .iter()
            .map(|row| {
                let mut text = String::new();
                for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
                    if column > 0 {
                        text.push_str("  ");
                    }
                    text.push_str(cell);
                    if column + 1 < row.len() {
                        let pad = width - cell.chars().count();
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                }
                text.trim_end().to_owned()
            })
            .collect();
        lines.join("\n")
    }

    /// Prints the table, or `empty` when it has no rows.
    pub(super) fn print_or(&self, empty: &str) {
        if self.is_empty() {
            line(empty);
        } else {
            line(&self.render());
        }
    }
}

/// A field of a JSON object as text: strings as they are, numbers and booleans written out,
/// null and absent as empty.
pub(super) fn field(value: &Value, name: &str) -> String {
    text(&value[name])
}

/// A JSON value as a cell.
pub(super) fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// An IANA zone name, or UTC when the server named one this build does not know.
pub(super) fn zone(name: &str) -> Tz {
    name.parse().unwrap_or(Tz::UTC)
}

/// ms since the epoch as `Mon 2026-06-01 10:00` in `zone`.
pub(super) fn ms_in_zone(ms: i64, zone: Tz) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(instant) => zone
            .from_utc_datetime(&instant.naive_utc())
            .format("%a %Y-%m-%d %H:%M")
            .to_string(),
        None => ms.to_string(),
    }
}

/// An RFC 3339 time as the API gives it (already in the user's zone) written as
/// `Mon 2026-06-01 10:00`; a date (an all-day occurrence) as `Mon 2026-06-01`; anything else
/// as it is.
pub(super) fn local_time(text: &str) -> String {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return instant.format("%a %Y-%m-%d %H:%M").to_string();
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date.format("%a %Y-%m-%d").to_string();
    }
    text.to_owned()
}

/// A span between two RFC 3339 times as the API gives them (see [`local_time`]).
pub(super) fn span(start: &str, end: &str) -> String {
    join_span(local_time(start), local_time(end))
}

/// A span between two instants in ms, in `zone`.
pub(super) fn ms_span(start: i64, end: i64, zone: Tz) -> String {
    join_span(ms_in_zone(start, zone), ms_in_zone(end, zone))
}

/// The end of a span beside its start: only the time when both fall on the same day.
fn join_span(start: String, end: String) -> String {
    match (start.rsplit_once(' '), end.rsplit_once(' ')) {
        (Some((start_day, _)), Some((end_day, end_time))) if start_day == end_day => {
            format!("{start}-{end_time}")
        }
        _ => format!("{start} - {end}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns_and_keeps_each_row_on_one_line() {
        let mut table = Table::new(&["ID", "TITLE", "WHERE"]);
        table.row(vec![
            "a.1".into(),
            "Planning\nsecret".into(),
            "Room 2".into(),
        ]);
        table.row(vec!["alice.22".into(), "Retro".into()]);
        assert_eq!(
            table.render(),
            "ID        TITLE            WHERE\n\
             a.1       Planning secret  Room 2\n\
             alice.22  Retro"
        );
        let mut pairs = Table::headless(2);
        pairs.row(vec!["id".into(), "a.1".into()]);
        pairs.row(vec!["location".into(), "Room 2".into()]);
        assert_eq!(pairs.render(), "id        a.1\nlocation  Room 2");
    }

    #[test]
    fn times_are_shown_in_the_zone_the_api_gave() {
        assert_eq!(
            local_time("2026-06-01T04:00:00-04:00"),
            "Mon 2026-06-01 04:00"
        );
        assert_eq!(local_time("2026-06-01"), "Mon 2026-06-01");
        assert_eq!(
            span("2026-06-01T04:00:00-04:00", "2026-06-01T05:30:00-04:00"),
            "Mon 2026-06-01 04:00-05:30"
        );
        assert_eq!(
            span("2026-06-01T23:00:00Z", "2026-06-02T01:00:00Z"),
            "Mon 2026-06-01 23:00 - Tue 2026-06-02 01:00"
        );
        let madrid = zone("Europe/Madrid");
        assert_eq!(
            ms_in_zone(1_780_300_800_000, madrid),
            "Mon 2026-06-01 10:00"
        );
        assert_eq!(
            ms_span(1_780_300_800_000, 1_780_304_400_000, madrid),
            "Mon 2026-06-01 10:00-11:00"
        );
        assert_eq!(zone("Nowhere/Else"), Tz::UTC);
    }
}
