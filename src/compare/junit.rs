//! JUnit XML of a comparison, one test case per case × metric, in the common schema CI systems
//! read (Jenkins' junit-10: `testsuites` > `testsuite` > `testcase` with `failure` / `skipped`).

use super::{Comparison, Verdict};

pub fn escape_attr(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' => o.push_str("&#9;"),
            // XML 1.0 forbids most control characters outright, even escaped.
            c if (c as u32) < 0x20 && c != '\r' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn escape_text(s: &str) -> String {
    escape_attr(s).replace("&#10;", "\n")
}

/// Renders the comparison as JUnit XML.
pub fn render(c: &Comparison) -> String {
    let suite = if c.current.job.is_empty() {
        "ianvs".to_string()
    } else {
        c.current.job.clone()
    };
    let mut cases = String::new();
    let (mut tests, mut failures, mut skipped) = (0usize, 0usize, 0usize);
    for m in &c.checks {
        tests += 1;
        let classname = format!("{suite}.{}", m.algorithm);
        let name = format!("{} :: {}", m.case, m.metric);
        let detail = m.detail();
        match m.verdict {
            Verdict::Regressed => {
                failures += 1;
                cases.push_str(&format!(
                    "    <testcase classname=\"{}\" name=\"{}\" time=\"0\">\n      <failure type=\"regression\" message=\"{}\">{}</failure>\n    </testcase>\n",
                    escape_attr(&classname),
                    escape_attr(&name),
                    escape_attr(&m.reason),
                    escape_text(&detail)
                ));
            }
            Verdict::NotComparable => {
                failures += 1;
                cases.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\" time=\"0\">\n      <failure type=\"not-comparable\" message=\"{}\">{}</failure>\n    </testcase>\n", escape_attr(&classname), escape_attr(&name), escape_attr(&m.reason), escape_text(&detail)));
            }
            _ => {
                cases.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\" time=\"0\">\n      <system-out>{}</system-out>\n    </testcase>\n", escape_attr(&classname), escape_attr(&name), escape_text(&detail)));
            }
        }
    }
    for miss in &c.missing {
        tests += 1;
        let classname = format!("{suite}.{}", miss.algorithm);
        let name = format!("{} :: present", miss.label);
        let msg = "in the baseline but not in the current results";
        if c.fail_on_missing {
            failures += 1;
            cases.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\" time=\"0\">\n      <failure type=\"missing-case\" message=\"{msg}\">case {} {msg}</failure>\n    </testcase>\n", escape_attr(&classname), escape_attr(&name), escape_text(&miss.case_id)));
        } else {
            skipped += 1;
            cases.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\" time=\"0\">\n      <skipped message=\"{msg}\"/>\n    </testcase>\n", escape_attr(&classname), escape_attr(&name)));
        }
    }
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(&format!("<testsuites name=\"ianvs compare\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"0\">\n"));
    s.push_str(&format!("  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"0\">\n", escape_attr(&suite)));
    s.push_str("    <properties>\n");
    for (k, v) in [
        ("baseline", c.baseline.source.as_str()),
        ("current", c.current.source.as_str()),
        ("rule", super::RULE),
    ] {
        s.push_str(&format!(
            "      <property name=\"{k}\" value=\"{}\"/>\n",
            escape_attr(v)
        ));
    }
    s.push_str("    </properties>\n");
    s.push_str(&cases);
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}
