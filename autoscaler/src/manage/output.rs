//! How `autoscaler-manage` prints answers: aligned tables for people, JSON for scripts.

use serde::Serialize;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A table: a header row and data rows of the same width.
pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table as text, columns padded to their widest cell.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let padded: Vec<String> = cells
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}", w = *w))
                .collect();
            padded.join("  ").trim_end().to_owned() + "\n"
        };
        let mut out = line(&mut self.header.iter().copied());
        out += &line(
            &mut widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        );
        for row in &self.rows {
            out += &line(&mut row.iter().map(String::as_str));
        }
        out
    }
}

/// Prints `value` as JSON, or `table()` as a table.
pub fn print<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> Table) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).expect("answers serialize to JSON")
        ),
        Format::Table => print!("{}", table().render()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = Table {
            header: vec!["name", "vms"],
            rows: vec![
                vec!["shop".into(), "1-4".into()],
                vec!["a".into(), "10-20".into()],
            ],
        };
        assert_eq!(
            t.render(),
            "name  vms\n----  -----\nshop  1-4\na     10-20\n"
        );
    }
}
