//! The test environment: metrics, paradigm settings and the dataset section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::dataset::read_dataset;
use super::keys::*;
use super::walker::*;
use super::yaml::{Mark, Node, NodeKind};
use super::*;
use crate::metrics;

pub(super) struct LoadedTestEnv {
    pub(super) env: TestEnv,
    pub(super) file: PathBuf,
    pub(super) metric_marks: BTreeMap<&'static str, Mark>,
}

impl std::ops::Deref for LoadedTestEnv {
    type Target = TestEnv;
    fn deref(&self) -> &TestEnv {
        &self.env
    }
}

pub(super) fn read_testenv(
    file: &Path,
    from: &Path,
    mark: Mark,
    diags: &mut Diagnostics,
    unknown_metrics: &mut Vec<(usize, String)>,
) -> Option<(LoadedTestEnv, Vec<(String, Node)>)> {
    let root = read_yaml(file, diags, Some((from, mark, "benchmarkingjob.testenv")))?;
    let errors_before = diags.len();
    let mut w = Walker {
        file: file.to_path_buf(),
        diags,
    };
    let top = w.map(&root, "", &["testenv"], &[])?;
    let te = w.required(&top, "", "testenv")?;
    // Paradigm settings are checked against the paradigms of the job later, so accept any key
    // here except the unsupported ones; remember the rest.
    let Some(entries) = te.as_map() else {
        w.expected(te, "testenv", "a mapping");
        return None;
    };
    let mut settings_nodes = Vec::new();
    let mut dataset_node = None;
    let mut metrics_node = None;
    for (k, v) in entries {
        let key = k.key_text();
        match key.as_str() {
            "dataset" => dataset_node = Some(v),
            "metrics" => metrics_node = Some(v),
            _ => {
                if let Some((_, why)) = TESTENV_UNSUPPORTED.iter().find(|(u, _)| *u == key) {
                    w.err(
                        Some(k.mark),
                        &format!("testenv.{key}"),
                        format!("`{key}` is not supported yet: {why}"),
                    )
                    .help(format!(
                        "remove `{key}` (a KubeEdge-Ianvs key ianvs does not implement)"
                    ));
                } else {
                    settings_nodes.push((
                        key,
                        Node {
                            kind: v.kind.clone(),
                            mark: k.mark,
                        },
                    ));
                }
            }
        }
    }
    let mut metric_list = Vec::new();
    let mut metric_marks = BTreeMap::new();
    match metrics_node {
        None => {
            w.err(
                Some(te.mark),
                "testenv",
                "`testenv` is missing the required key `metrics`",
            );
        }
        Some(mn) => match mn.as_seq() {
            Some(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    let ip = format!("testenv.metrics[{i}]");
                    // Ianvs writes `- name: accuracy` (optionally with `url`); a bare string is accepted too.
                    let mut fields = None;
                    let name_node = match &item.kind {
                        NodeKind::Str(_) => Some(item),
                        _ => w
                            .map(item, &ip, &["name", "url", "python", "timeout_s"], &[])
                            .and_then(|f| {
                                let name = w.required(&f, &ip, "name");
                                fields = Some(f);
                                name
                            }),
                    };
                    let Some(nn) = name_node else { continue };
                    let Some(name) = w.string(nn, &format!("{ip}.name")) else {
                        continue;
                    };
                    if let Some(f) = &fields {
                        if super::plugin::has_url(f.get("url")) {
                            // A plug-in metric: `name` is the alias its file registers.
                            let Some(p) =
                                super::plugin::check_plugin_metric(&mut w, &ip, f, nn, &name)
                            else {
                                continue;
                            };
                            match metrics::plugin::register(p, &name) {
                                Ok(m) => {
                                    if metric_marks.insert(m.id, nn.mark).is_some() {
                                        w.err(
                                            Some(nn.mark),
                                            &ip,
                                            format!("metric `{}` is listed twice", m.id),
                                        );
                                    } else {
                                        metric_list.push(m);
                                    }
                                }
                                Err(e) => {
                                    w.err(Some(nn.mark), &ip, format!("{e:#}"));
                                }
                            }
                            continue;
                        }
                        super::plugin::refuse_plugin_keys(&mut w, f, &ip);
                    }
                    match metrics::canonical(&name) {
                        Some(m) => {
                            if metric_marks.insert(m.id, nn.mark).is_some() {
                                w.err(
                                    Some(nn.mark),
                                    &ip,
                                    format!("metric `{}` is listed twice", m.id),
                                );
                            } else {
                                metric_list.push(m);
                            }
                        }
                        None => {
                            unknown_metrics.push((w.diags.items.len(), name.to_string()));
                            w.err(
                                Some(nn.mark),
                                &format!("{ip}.name"),
                                format!("unknown metric \"{name}\""),
                            )
                            .choices(&name, &metrics::all_ids());
                        }
                    }
                }
            }
            _ => w.expected(
                mn,
                "testenv.metrics",
                "a non-empty list of `- name: <metric>`",
            ),
        },
    }
    let data = match dataset_node {
        None => {
            w.err(
                Some(te.mark),
                "testenv",
                "`testenv` is missing the required key `dataset`",
            );
            None
        }
        Some(dn) => read_dataset(&mut w, dn),
    };
    if diags.len() > errors_before {
        return None;
    }
    let data = data?;
    Some((
        LoadedTestEnv {
            env: TestEnv {
                file: file.to_path_buf(),
                data,
                metrics: metric_list,
                settings: settings_nodes
                    .iter()
                    .map(|(k, n)| (k.clone(), n.to_json()))
                    .collect(),
            },
            file: file.to_path_buf(),
            metric_marks,
        },
        settings_nodes,
    ))
}
