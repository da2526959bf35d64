//! The report as Markdown (`<job>/report.md`): GitHub-flavoured tables, charts as PNG links
//! into `plots/` beside it.

use super::{Report, Table};

/// A cell safe inside a pipe table: one line, pipes escaped.
pub fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

pub fn table(t: &Table) -> String {
    let mut s = String::new();
    let headers: Vec<String> = t.headers.iter().map(|h| cell(h)).collect();
    s.push_str(&format!("| {} |\n", headers.join(" | ")));
    s.push_str(&format!(
        "|{}|\n",
        t.headers
            .iter()
            .map(|_| " --- ")
            .collect::<Vec<_>>()
            .join("|")
    ));
    for r in &t.rows {
        s.push_str(&format!(
            "| {} |\n",
            r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    s
}

pub fn render(r: &Report) -> String {
    let mut s = format!("# Benchmark report: {}\n\n{}\n\n", r.job, r.summary);
    s.push_str("## Configuration\n\n");
    s.push_str(&table(&r.configuration));
    s.push_str("\n### Algorithms\n\n");
    s.push_str(&table(&r.algorithms));
    s.push_str("\n## Machine\n\n");
    match &r.machine {
        Some(m) => s.push_str(&table(m)),
        None => s.push_str(
            "Not recorded: this job was run by an ianvs that did not write `run.json`.\n",
        ),
    }
    s.push_str("\n## Leaderboard\n\n");
    s.push_str(&table(&r.leaderboard));
    s.push_str(&format!("\n{}\n", r.leaderboard_note));
    if !r.interval_notes.is_empty() {
        s.push_str("\nIntervals (95 %):\n\n");
        for n in &r.interval_notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    s.push_str("\n## Charts\n\n");
    if r.charts.is_empty() {
        s.push_str("No chart: no case produced a value to draw.\n");
    }
    for c in &r.charts {
        s.push_str(&format!(
            "### {}\n\n![{}](plots/{}.png)\n\n{}.\n\n",
            c.title, c.title, c.stem, c.caption
        ));
    }
    s.push_str("## Failed cases\n\n");
    if r.failed.rows.is_empty() {
        s.push_str("None: every case finished and every metric was computed.\n");
    } else {
        s.push_str(&table(&r.failed));
    }
    s
}
