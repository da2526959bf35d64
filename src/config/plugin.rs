//! Plug-in modules and metrics (`url:` naming a file, docs/plugins.md): the path, the
//! interpreter, the hyperparameter grid, and a check of the file in the plug-in host (alias
//! registered, imports installed, constructor accepting every hyperparameter) before any case
//! runs, every failure a located configuration error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ianvs_algorithms::plugin::{self, PluginFailure};
use ianvs_paradigms::PluginRef;
use serde_json::Value;

use super::walker::*;
use super::yaml::{Node, NodeKind};
use super::ModuleConfig;

/// Paradigms whose modules may be plug-ins, and the module types open to them.
pub const OPEN_PARADIGMS: &[(&str, &[&str])] = &[
    ("singletasklearning", &["basemodel"]),
    (
        "jointinference",
        &["edgemodel", "cloudmodel", "hard_example_mining"],
    ),
];

/// The per-call timeout when `timeout_s` is not given.
pub const DEFAULT_TIMEOUT_S: f64 = 600.0;

/// Keys a module or metric entry may hold only with a `url`.
pub const PLUGIN_KEYS: &[&str] = &["python", "timeout_s"];

/// True when `url` names something (Ianvs writes `url: ""` for built-ins).
pub(super) fn has_url(url: Option<&Node>) -> bool {
    url.is_some_and(|u| {
        !(matches!(&u.kind, NodeKind::Str(s) if s.is_empty()) || matches!(u.kind, NodeKind::Null))
    })
}

/// `python` / `timeout_s` written on an entry without a `url`.
pub(super) fn refuse_plugin_keys(w: &mut Walker, f: &Fields, path: &str) {
    for k in PLUGIN_KEYS {
        if let Some(n) = f.get(k) {
            w.err(
                Some(n.mark),
                &join(path, k),
                format!("`{k}` only applies to a plug-in (an entry with `url`)"),
            )
            .help(format!("remove `{k}`, or give the plug-in file as `url`"));
        }
    }
}

/// Resolves the plug-in file, interpreter and timeout of an entry with a `url`.
pub(super) fn plugin_ref(w: &mut Walker, f: &Fields, path: &str) -> Option<PluginRef> {
    let url_node = f.get("url")?;
    let url = w.existing_path(url_node, &join(path, "url"));
    let key = match f.get("python") {
        Some(n) => {
            let s = w.string(n, &join(path, "python"))?;
            // A bare name is looked up on PATH; a path is relative to the YAML like every path.
            Some(if s.contains('/') {
                super::resolve_path(&w.file, &s)
            } else {
                PathBuf::from(s)
            })
        }
        None => None,
    };
    let timeout_s = match f.get("timeout_s") {
        Some(n) => match n.to_json().as_f64() {
            Some(t) if t > 0.0 && t.is_finite() => t,
            _ => {
                w.err(
                    Some(n.mark),
                    &join(path, "timeout_s"),
                    format!(
                        "`timeout_s` must be a number of seconds above 0, found {}",
                        n.to_json()
                    ),
                );
                return None;
            }
        },
        None => DEFAULT_TIMEOUT_S,
    };
    let url = url?;
    let (python, rule) = plugin::choose_python(key.as_deref());
    let is_py = url.extension().is_some_and(|e| e == "py");
    if is_py && plugin::process::find_program(&python).is_none() {
        let mark = f.get("python").unwrap_or(url_node).mark;
        w.err(Some(mark), path, format!("the Python interpreter \"{}\" (chosen by {rule}) was not found, so the plug-in {} cannot run", python.display(), url.display()))
            .help("the interpreter is the module's `python` key, else IANVS_PYTHON, else $VIRTUAL_ENV/bin/python, else python3 on PATH");
        return None;
    }
    let sha256 = match std::fs::read(&url) {
        Ok(bytes) => {
            use sha2::Digest;
            sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }
        Err(e) => {
            w.err(
                Some(url_node.mark),
                &join(path, "url"),
                format!("cannot read the plug-in {}: {e}", url.display()),
            );
            return None;
        }
    };
    Some(PluginRef {
        url: super::paths::absolute(&url),
        sha256,
        python: plugin::process::find_program(&python).unwrap_or(python),
        timeout_s,
        initial_model_url: None,
        initial_model_sha256: None,
    })
}

/// The hyperparameter axes of a plug-in module: any name (the constructor decides, checked in
/// the host), each `- name: {values: [...]}` one axis.
/// Grid axes (each a list of points) and the hyperparameter names with their YAML marks.
type PluginHps = (
    Vec<Vec<BTreeMap<String, Value>>>,
    Vec<(String, super::yaml::Mark)>,
);

fn plugin_hps(w: &mut Walker, mp: &str, mf: &Fields) -> Option<PluginHps> {
    let mut axes = Vec::new();
    let mut names = Vec::new();
    let Some(hn) = mf.get("hyperparameters") else {
        return Some((axes, names));
    };
    let hp = format!("{mp}.hyperparameters");
    let Some(items) = hn.as_seq() else {
        w.expected(hn, &hp, "a list of `- <name>: {values: [...]}`");
        return None;
    };
    let mut ok = true;
    let (mut file_axes, mut file_names) = (Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{hp}[{i}]");
        let Some([(k, v)]) = item.as_map() else {
            w.expected(item, &ip, "a one-key mapping `<name>: {values: [...]}`");
            ok = false;
            continue;
        };
        let key = k.key_text();
        let kp = format!("{ip}.{key}");
        if key == "other_hyperparameters" {
            // Ianvs's: each value a YAML file of `name: value` pairs (a grid point setting
            // several at once, as for built-in modules); a name also listed here wins.
            let Some(vals) = w.grid_values(v, &kp) else {
                ok = false;
                continue;
            };
            let mut axis = Vec::new();
            for (j, v) in vals.iter().enumerate() {
                match other_hyperparameters_file(w, v, &format!("{kp}.values[{j}]")) {
                    Some(pt) => axis.push(pt),
                    None => ok = false,
                }
            }
            file_names.push(k.mark);
            file_axes.push(axis);
            continue;
        }
        if names.iter().any(|(n, _)| *n == key) {
            w.err(
                Some(k.mark),
                &kp,
                format!("hyperparameter `{key}` is given twice"),
            );
            ok = false;
            continue;
        }
        let Some(vals) = w.grid_values(v, &kp) else {
            ok = false;
            continue;
        };
        let mut axis = Vec::new();
        for (j, v) in vals.iter().enumerate() {
            match check_finite(v) {
                Ok(j) => axis.push(BTreeMap::from([(key.clone(), j)])),
                Err(why) => {
                    w.err(
                        Some(v.mark),
                        &format!("{kp}.values[{j}]"),
                        format!("hyperparameter `{key}`: {why}"),
                    );
                    ok = false;
                }
            }
        }
        names.push((key, k.mark));
        axes.push(axis);
    }
    // File axes first, without the names listed explicitly (Ianvs updates the files' values
    // with the listed ones); their names are checked against the constructor too.
    for (axis, mark) in file_axes.into_iter().zip(file_names).rev() {
        let axis: Vec<BTreeMap<String, Value>> = axis
            .into_iter()
            .map(|mut pt| {
                pt.retain(|k, _| !names.iter().any(|(n, _)| n == k));
                pt
            })
            .collect();
        for pt in &axis {
            for k in pt.keys() {
                if !names.iter().any(|(n, _)| n == k) {
                    names.push((k.clone(), mark));
                }
            }
        }
        if axis.iter().any(|pt| !pt.is_empty()) {
            axes.insert(0, axis);
        }
    }
    ok.then_some((axes, names))
}

/// One `other_hyperparameters` file of a plug-in module: a mapping of any names to values.
fn other_hyperparameters_file(
    w: &mut Walker,
    v: &Node,
    vp: &str,
) -> Option<BTreeMap<String, Value>> {
    let path = w.existing_path(v, vp)?;
    let mut sub = super::Diagnostics::default();
    let point = read_yaml(&path, &mut sub, Some((&w.file, v.mark, vp))).and_then(|node| {
        let mut sw = Walker {
            file: path.clone(),
            diags: &mut sub,
        };
        let Some(entries) = node.as_map() else {
            sw.expected(&node, "", "a mapping of hyperparameter names to values");
            return None;
        };
        let mut point = BTreeMap::new();
        for (kn, vn) in entries {
            let name = kn.key_text();
            match check_finite(vn) {
                Ok(val) => {
                    point.insert(name, val);
                }
                Err(why) => {
                    sw.err(
                        Some(kn.mark),
                        &name,
                        format!("hyperparameter `{name}`: {why}"),
                    );
                }
            }
        }
        Some(point)
    });
    let failed = !sub.is_empty();
    for d in sub.items.drain(..) {
        w.diags.push(d);
    }
    if let Some(src) = std::fs::read_to_string(&path).ok().filter(|_| failed) {
        w.diags.add_source(&path, &src);
    }
    point.filter(|_| !failed)
}

/// Reads a plug-in module entry (one with a `url`) and checks it in the host.
pub(super) fn read_plugin_module(
    w: &mut Walker,
    mp: &str,
    mf: &Fields,
    mtype: &str,
    paradigm: &str,
) -> Option<ModuleConfig> {
    let url_node = mf.get("url")?;
    match OPEN_PARADIGMS.iter().find(|(p, _)| *p == paradigm) {
        None => {
            let open: Vec<String> = OPEN_PARADIGMS.iter().map(|(p, _)| p.to_string()).collect();
            w.err(Some(url_node.mark), &join(mp, "url"), format!("plug-in modules are not supported yet in paradigm `{paradigm}`: its modules are built in (`ianvs list modules`)"))
                .help(format!("remove `url` and pick a built-in module by `name`; plug-ins run in: {}", open.join(", ")));
            return None;
        }
        Some((_, types)) if !types.contains(&mtype) => {
            w.err(
                Some(url_node.mark),
                &join(mp, "url"),
                format!("plug-in `{mtype}` modules are not supported yet in paradigm `{paradigm}`"),
            )
            .help(format!(
                "plug-in module types of `{paradigm}`: {}",
                types.join(", ")
            ));
            return None;
        }
        _ => {}
    }
    let p = plugin_ref(w, mf, mp);
    let name_node = w.required(mf, mp, "name")?;
    let alias = w.string(name_node, &join(mp, "name"))?;
    let (axes, names) = plugin_hps(w, mp, mf)?;
    let p = p?;
    let hp_names: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let kind = plugin::class_type(mtype);
    if let Err(e) = plugin::check_plugin(&p, mtype, kind, &alias, &hp_names) {
        report(w, &e, mp, url_node, name_node, &alias, kind, &names, &p);
        return None;
    }
    Some(ModuleConfig {
        module_type: mtype.to_string(),
        name: alias,
        axes,
        fixed: BTreeMap::new(),
        plugin: Some(p),
    })
}

/// Reads a plug-in metric (`- name: x` with `url`) and checks it in the host.
pub(super) fn check_plugin_metric(
    w: &mut Walker,
    ip: &str,
    f: &Fields,
    name_node: &Node,
    name: &str,
) -> Option<PluginRef> {
    let url_node = f.get("url")?;
    let p = plugin_ref(w, f, ip)?;
    if let Err(e) = plugin::check_plugin(&p, "metric", "general", name, &[]) {
        report(w, &e, ip, url_node, name_node, name, "general", &[], &p);
        return None;
    }
    Some(p)
}

/// A failed check as a located error: at the `url` for a file that does not load, at the
/// `name` for an alias it does not register, at the hyperparameter the constructor refuses.
#[allow(clippy::too_many_arguments)]
fn report(
    w: &mut Walker,
    e: &anyhow::Error,
    path: &str,
    url: &Node,
    name: &Node,
    alias: &str,
    kind: &str,
    hps: &[(String, super::yaml::Mark)],
    p: &PluginRef,
) {
    let Some(f) = e.downcast_ref::<PluginFailure>() else {
        w.err(Some(url.mark), &join(path, "url"), format!("{e:#}"));
        return;
    };
    let file = shown(&p.url);
    match f.kind.as_str() {
        "import" => {
            let missing = f.detail["missing"].as_str().unwrap_or("?");
            w.err(Some(url.mark), &join(path, "url"), format!("the plug-in {file} imports `{missing}`, which is not installed for {}: {}", p.python.display(), f.message))
                .help(format!("install it for that interpreter (`{} -m pip install {missing}`), or choose another interpreter with IANVS_PYTHON or the `python` key", p.python.display()));
        }
        "alias" => {
            let registered: Vec<String> = f.detail["registered"][kind]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let all = f.detail["registered"].to_string();
            w.err(Some(name.mark), &join(path, "name"), format!("{file} registers no `{kind}` class or function named \"{alias}\" (it registers {all})"))
                .choices(alias, &registered)
                .help("`name` picks the alias given to @ClassFactory.register(ClassType..., alias=\"...\")");
        }
        "params" => {
            let accepted: Vec<String> = f.detail["accepted"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for bad in f.detail["unknown"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let mark = hps
                    .iter()
                    .find(|(n, _)| n == bad)
                    .map(|(_, m)| *m)
                    .unwrap_or(name.mark);
                w.err(Some(mark), &format!("{path}.hyperparameters"), format!("the constructor of \"{alias}\" in {file} does not accept the hyperparameter `{bad}`"))
                    .choices(bad, &accepted);
            }
        }
        _ => {
            w.err(
                Some(url.mark),
                &join(path, "url"),
                format!("the plug-in {file} cannot be used: {}", f.message),
            );
        }
    }
}

fn shown(p: &Path) -> String {
    ianvs_algorithms::plugin::modules::shown(p)
}

/// One line per plug-in of a job (module or metric): the file and the interpreter that runs
/// it, for `ianvs validate`.
pub fn describe(job: &super::Job) -> Vec<String> {
    let mut lines = Vec::new();
    let line = |what: String, p: &PluginRef| {
        let runs = if p.url.extension().is_some_and(|e| e == "py") {
            format!("python {}", p.python.display())
        } else {
            "executable".to_string()
        };
        let initial = p.initial_model_url.as_ref().map_or(String::new(), |u| {
            format!("; initial_model_url {}", shown(u))
        });
        format!(
            "plug-in {what}: {} ({runs}; per-call timeout {} s{initial})",
            shown(&p.url),
            p.timeout_s
        )
    };
    for a in &job.algorithms {
        for m in &a.modules {
            if let Some(p) = &m.plugin {
                lines.push(line(
                    format!(
                        "{} \"{}\" of algorithm \"{}\"",
                        m.module_type, m.name, a.name
                    ),
                    p,
                ));
            }
        }
    }
    for (name, p) in crate::metrics::plugin::registered() {
        if job.testenv.metrics.iter().any(|m| m.id == name) {
            lines.push(line(format!("metric \"{name}\""), &p));
        }
    }
    if !lines.is_empty() {
        let (_, rule) = plugin::choose_python(None);
        lines.push(format!("python interpreter rule: the `python` key, then IANVS_PYTHON, then $VIRTUAL_ENV/bin/python, then python3 on PATH (without a key: {rule})"));
    }
    lines
}
