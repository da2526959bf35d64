//! The job's `rank` section (Ianvs's story manager options).

use super::keys::*;
use super::walker::*;
use super::yaml::{Mark, Node};
use super::*;
use crate::metrics;

/// Ianvs's `Rank.save` modes. `selected_and_all_and_picture` saves both tables and, as Ianvs
/// draws pictures in that mode, `ianvs run` writes the report and its charts at the end.
pub const SAVE_MODES: &[&str] = &[
    "selected_and_all",
    "selected_only",
    "selected_and_all_and_picture",
];
pub const VIS_MODES: &[&str] = &["selected_only", "all", "none"];

pub(super) struct RankMarks {
    pub(super) sort_by: Vec<Mark>,
    pub(super) selected_metrics: Vec<Mark>,
    pub(super) selected_modules: Vec<Mark>,
    pub(super) selected_hps: Vec<Mark>,
    pub(super) output_columns: Vec<Mark>,
}

pub(super) fn read_rank(w: &mut Walker, node: &Node) -> Option<(RankConfig, RankMarks)> {
    let p = "benchmarkingjob.rank";
    let f = w.map(node, p, RANK_KEYS, &[])?;
    let mut ok = true;
    let mut marks = RankMarks {
        sort_by: vec![],
        selected_metrics: vec![],
        selected_modules: vec![],
        selected_hps: vec![],
        output_columns: vec![],
    };
    let mut sort_by = Vec::new();
    if let Some(sb) = w.required(&f, p, "sort_by") {
        match sb.as_seq() {
            Some(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    let ip = format!("{p}.sort_by[{i}]");
                    match item.as_map() {
                        Some([(k, v)]) => {
                            let metric = metrics::canonical(&k.key_text())
                                .map(|m| m.id.to_string())
                                .unwrap_or_else(|| k.key_text());
                            let order = match v.as_str() {
                                Some("descend") => Some(Order::Descend),
                                Some("ascend") => Some(Order::Ascend),
                                _ => {
                                    let shown = v.to_json().to_string();
                                    w.err(
                                        Some(v.mark),
                                        &ip,
                                        format!("sort order {shown} is not valid"),
                                    )
                                    .choices(&shown, &["ascend", "descend"]);
                                    ok = false;
                                    None
                                }
                            };
                            if let Some(o) = order {
                                sort_by.push((metric, o));
                                marks.sort_by.push(k.mark);
                            }
                        }
                        _ => {
                            w.expected(item, &ip, "a one-key mapping `{metric: ascend|descend}`");
                            ok = false;
                        }
                    }
                }
            }
            _ => {
                w.expected(
                    sb,
                    &format!("{p}.sort_by"),
                    "a non-empty list of `{metric: ascend|descend}`",
                );
                ok = false;
            }
        }
    }
    let mut visualization_mode = "selected_only".to_string();
    if let Some(v) = f.get("visualization") {
        let vp = format!("{p}.visualization");
        if let Some(vf) = w.map(v, &vp, &["mode", "method"], &[]) {
            if let Some(m) = vf.get("mode") {
                if let Some(s) = w.string(m, &format!("{vp}.mode")) {
                    if VIS_MODES.contains(&s.as_str()) {
                        visualization_mode = s;
                    } else {
                        w.err(
                            Some(m.mark),
                            &format!("{vp}.mode"),
                            format!("visualization mode \"{s}\" is not valid"),
                        )
                        .choices(&s, VIS_MODES);
                        ok = false;
                    }
                }
            }
            if let Some(m) = vf.get("method") {
                if let Some(s) = w.string(m, &format!("{vp}.method")) {
                    if s != "print_table" {
                        w.err(
                            Some(m.mark),
                            &format!("{vp}.method"),
                            format!("visualization method \"{s}\" is not valid"),
                        )
                        .choices(&s, &["print_table"]);
                        ok = false;
                    }
                }
            }
        }
    }
    let mut selected = SelectedDataitem::default();
    if let Some(sd) = f.get("selected_dataitem") {
        let sp = format!("{p}.selected_dataitem");
        if let Some(sf) = w.map(
            sd,
            &sp,
            &["paradigms", "modules", "hyperparameters", "metrics"],
            &[],
        ) {
            let list = |w: &mut Walker, key: &str, marks: &mut Vec<Mark>| -> Option<Vec<String>> {
                let n = sf.get(key)?;
                let items = w.string_list(n, &format!("{sp}.{key}"))?;
                if items.iter().any(|(s, _)| s == "all") {
                    return None;
                }
                marks.extend(items.iter().map(|(_, m)| *m));
                Some(
                    items
                        .into_iter()
                        .map(|(s, _)| {
                            if key == "metrics" {
                                metrics::canonical(&s)
                                    .map(|m| m.id.to_string())
                                    .unwrap_or(s)
                            } else {
                                s
                            }
                        })
                        .collect(),
                )
            };
            let mut unused = Vec::new();
            selected.paradigms = list(w, "paradigms", &mut unused);
            selected.modules = list(w, "modules", &mut marks.selected_modules);
            selected.hyperparameters = list(w, "hyperparameters", &mut marks.selected_hps);
            selected.metrics = list(w, "metrics", &mut marks.selected_metrics);
        }
    }
    let mut save_mode = "selected_and_all".to_string();
    if let Some(s) = f.get("save_mode") {
        if let Some(v) = w.string(s, &format!("{p}.save_mode")) {
            if SAVE_MODES.contains(&v.as_str()) {
                save_mode = v;
            } else {
                w.err(
                    Some(s.mark),
                    &format!("{p}.save_mode"),
                    format!("save mode \"{v}\" is not valid"),
                )
                .choices(&v, SAVE_MODES);
                ok = false;
            }
        }
    }
    let selected_output_columns = f.get("selected_output_columns").and_then(|n| {
        let items = w.string_list(n, &format!("{p}.selected_output_columns"))?;
        marks.output_columns = items.iter().map(|(_, m)| *m).collect();
        Some(items.into_iter().map(|(s, _)| s).collect())
    });
    ok.then_some((
        RankConfig {
            sort_by,
            visualization_mode,
            selected,
            save_mode,
            selected_output_columns,
        },
        marks,
    ))
}
