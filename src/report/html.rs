//! The report as one self-contained HTML file (`<job>/report.html`): inline CSS, charts as
//! inline SVG, no script, no external reference of any kind, so it opens offline and can be
//! attached to a CI run as it is.

use super::{Report, Table};

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn table(t: &Table, class: &str, key_value: bool) -> String {
    let mut s = format!("<table class=\"{class}\">\n");
    if !key_value {
        s.push_str("<thead><tr>");
        for h in &t.headers {
            s.push_str(&format!("<th>{}</th>", escape(h)));
        }
        s.push_str("</tr></thead>\n");
    }
    s.push_str("<tbody>\n");
    for r in &t.rows {
        s.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            if key_value && i == 0 {
                s.push_str(&format!("<th scope=\"row\">{}</th>", escape(c)));
            } else {
                s.push_str(&format!("<td>{}</td>", escape(c)));
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    s
}

/// An SVG ready to inline: no XML prolog and no namespace URL (HTML5 does not need it, and a
/// report with no URL in it at all is easy to check for external references).
pub fn inline_svg(svg: &str) -> String {
    let body = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    };
    body.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

const CSS: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222;line-height:1.45}\
h1{font-size:1.7rem;border-bottom:2px solid #4e79a7;padding-bottom:.3rem}h2{font-size:1.3rem;margin-top:2.2rem;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}th,td{border:1px solid #d0d0d0;padding:.3rem .55rem;text-align:left;vertical-align:top}\
thead th{background:#eef2f7}table.kv th{background:#f6f6f6;font-weight:600;white-space:nowrap}table.board td{white-space:nowrap}\
table.failed td:last-child{white-space:pre-wrap;font-family:monospace}figure{margin:1.4rem 0}figure svg{max-width:100%;height:auto;border:1px solid #eee}\
figcaption{font-size:.88rem;color:#555}p.summary{font-size:1.02rem}.note{color:#555;font-size:.88rem}.wide{overflow-x:auto}";

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    s.push_str(&format!(
        "<title>Benchmark report: {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape(&r.job)
    ));
    s.push_str(&format!(
        "<h1>Benchmark report: {}</h1>\n<p class=\"summary\">{}</p>\n",
        escape(&r.job),
        escape(&r.summary)
    ));
    s.push_str("<h2>Configuration</h2>\n");
    s.push_str(&table(&r.configuration, "kv", true));
    s.push_str("<h3>Algorithms</h3>\n<div class=\"wide\">\n");
    s.push_str(&table(&r.algorithms, "algorithms", false));
    s.push_str("</div>\n<h2>Machine</h2>\n");
    match &r.machine {
        Some(m) => s.push_str(&table(m, "kv", true)),
        None => s.push_str("<p class=\"note\">Not recorded: this job was run by an ianvs that did not write <code>run.json</code>.</p>\n"),
    }
    s.push_str("<h2>Leaderboard</h2>\n<div class=\"wide\">\n");
    s.push_str(&table(&r.leaderboard, "board", false));
    s.push_str("</div>\n");
    s.push_str(&format!(
        "<p class=\"note\">{}</p>\n",
        escape(&r.leaderboard_note)
    ));
    if !r.interval_notes.is_empty() {
        s.push_str("<p class=\"note\">Intervals (95 %):</p>\n<ul class=\"note\">\n");
        for n in &r.interval_notes {
            s.push_str(&format!("<li>{}</li>\n", escape(n)));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("<h2>Charts</h2>\n");
    if r.charts.is_empty() {
        s.push_str("<p class=\"note\">No chart: no case produced a value to draw.</p>\n");
    }
    for c in &r.charts {
        s.push_str(&format!(
            "<figure>\n{}\n<figcaption><strong>{}</strong>: {}.</figcaption>\n</figure>\n",
            inline_svg(&c.svg),
            escape(&c.title),
            escape(&c.caption)
        ));
    }
    s.push_str("<h2>Failed cases</h2>\n");
    if r.failed.rows.is_empty() {
        s.push_str("<p>None: every case finished and every metric was computed.</p>\n");
    } else {
        s.push_str(&table(&r.failed, "failed", false));
    }
    s.push_str("</body>\n</html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_inlining() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let svg = "<?xml version=\"1.0\"?>\n<svg width=\"10\" height=\"10\" xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg>";
        assert_eq!(
            inline_svg(svg),
            "<svg width=\"10\" height=\"10\"><rect/></svg>"
        );
    }
}
