//! An algorithm file: its paradigm, modules (resolved in the registry) and hyperparameter
//! grid axes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ianvs_paradigms::hp::Hyperparameters;
use ianvs_paradigms::registry::Registry;
use ianvs_paradigms::Paradigm;
use serde_json::Value;

use super::keys::*;
use super::walker::*;
use super::yaml::{Mark, NodeKind};
use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn read_algorithm(
    name: &str,
    file: &Path,
    from: &Path,
    mark: Mark,
    registry: &Registry,
    paradigms: &'static [Box<dyn Paradigm>],
    seed: u64,
    diags: &mut Diagnostics,
) -> Option<Algorithm> {
    let root = read_yaml(
        file,
        diags,
        Some((from, mark, "benchmarkingjob.test_object.algorithms")),
    )?;
    let errors_before = diags.len();
    let mut w = Walker {
        file: file.to_path_buf(),
        diags,
    };
    let top = w.map(&root, "", &["algorithm"], &[])?;
    let an = w.required(&top, "", "algorithm")?;
    let p = "algorithm";
    let entries = an.as_map().map(|e| e.to_vec()).unwrap_or_default();
    // `<mode>_data_setting` keys are Ianvs's; we do not implement them yet.
    let unsupported: Vec<(String, String)> = entries
        .iter()
        .map(|(k, _)| k.key_text())
        .filter(|k| k.ends_with("_data_setting"))
        .map(|k| (k, DATA_SETTING_WHY.to_string()))
        .chain(
            ALGO_UNSUPPORTED
                .iter()
                .map(|(k, w)| (k.to_string(), w.to_string())),
        )
        .collect();
    let unsupported_refs: Vec<(&str, &str)> = unsupported
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let f = w.map(an, p, ALGO_KEYS, &unsupported_refs)?;
    let paradigm_names: Vec<&str> = paradigms.iter().map(|pd| pd.name()).collect();
    let paradigm = w.required(&f, p, "paradigm_type").and_then(|n| {
        let s = w.string(n, "algorithm.paradigm_type")?;
        let found = paradigms
            .iter()
            .find(|pd| pd.name().eq_ignore_ascii_case(&s));
        if found.is_none() {
            if IANVS_PARADIGMS.contains(&s.to_ascii_lowercase().as_str()) {
                w.err(
                    Some(n.mark),
                    "algorithm.paradigm_type",
                    format!(
                        "paradigm \"{s}\" is a KubeEdge-Ianvs paradigm ianvs does not run yet (not supported yet); ianvs runs: {}",
                        paradigm_names.join(", ")
                    ),
                );
            } else {
                w.err(
                    Some(n.mark),
                    "algorithm.paradigm_type",
                    format!("unknown paradigm \"{s}\""),
                )
                .choices(&s, &paradigm_names);
            }
        }
        found.map(|b| b.as_ref())
    });
    let mut modules = Vec::new();
    if let (Some(mn), Some(pd)) = (w.required(&f, p, "modules"), paradigm) {
        let slot_types: Vec<&str> = pd.slots().iter().map(|s| s.module_type).collect();
        match mn.as_seq() {
            Some(items) => {
                let mut seen_types: BTreeMap<String, Mark> = BTreeMap::new();
                for (i, m) in items.iter().enumerate() {
                    let mp = format!("algorithm.modules[{i}]");
                    let Some(mf) = w.map(m, &mp, MODULE_KEYS, &[]) else {
                        continue;
                    };
                    let Some(tn) = w.required(&mf, &mp, "type") else {
                        continue;
                    };
                    let Some(mtype) = w.string(tn, &format!("{mp}.type")) else {
                        continue;
                    };
                    if !slot_types.contains(&mtype.as_str()) {
                        w.err(
                            Some(tn.mark),
                            &format!("{mp}.type"),
                            format!(
                                "module type \"{mtype}\" is not used by paradigm `{}`",
                                pd.name()
                            ),
                        )
                        .choices(&mtype, &slot_types);
                        continue;
                    }
                    if let Some(prev) = seen_types.insert(mtype.clone(), tn.mark) {
                        w.err(Some(tn.mark), &format!("{mp}.type"), format!("module type \"{mtype}\" appears twice (first at line {}); each type may appear once", prev.line));
                        continue;
                    }
                    if super::plugin::has_url(mf.get("url")) {
                        if let Some(mc) =
                            super::plugin::read_plugin_module(&mut w, &mp, &mf, &mtype, pd.name())
                        {
                            modules.push(mc);
                        }
                        continue;
                    }
                    super::plugin::refuse_plugin_keys(&mut w, &mf, &mp);
                    let Some(nn) = w.required(&mf, &mp, "name") else {
                        continue;
                    };
                    let Some(mname) = w.string(nn, &format!("{mp}.name")) else {
                        continue;
                    };
                    let Some(entry) = registry.find(&mtype, &mname) else {
                        w.err(
                            Some(nn.mark),
                            &format!("{mp}.name"),
                            format!("unknown {mtype} module \"{mname}\""),
                        )
                        .choices(&mname, &registry.names(&mtype));
                        continue;
                    };
                    if let Some(mc) = read_module_hps(&mut w, &mp, &mf, entry, registry, seed) {
                        modules.push(mc);
                    }
                }
                for slot in pd.slots().iter().filter(|s| s.required) {
                    if !seen_types.contains_key(slot.module_type) {
                        w.err(
                            Some(mn.mark),
                            "algorithm.modules",
                            format!(
                                "paradigm `{}` needs a `{}` module ({})",
                                pd.name(),
                                slot.module_type,
                                slot.help
                            ),
                        )
                        .valid = registry
                            .names(slot.module_type)
                            .iter()
                            .map(|s| s.to_string())
                            .collect();
                    }
                }
            }
            None => w.expected(mn, "algorithm.modules", "a list of modules"),
        }
    }
    initial_model_url(&mut w, &f, paradigm.map(|pd| pd.name()), &mut modules);
    let mut repeat = 1;
    if let Some(rn) = f.get("repeat") {
        match repeat_spec().check(&rn.to_json()) {
            Ok(v) => repeat = v.as_u64().unwrap_or(1) as u32,
            Err(why) => {
                w.err(
                    Some(rn.mark),
                    "algorithm.repeat",
                    format!("`algorithm.repeat`: {why}"),
                );
            }
        }
    }
    if diags.len() > errors_before {
        return None;
    }
    Some(Algorithm {
        name: name.to_string(),
        folder: paths::folder_name(name, crate::story::RESERVED_DIRS),
        file: file.to_path_buf(),
        paradigm: paradigm?,
        modules,
        settings: Hyperparameters::default(),
        repeat,
    })
}

pub(super) fn read_module_hps(
    w: &mut Walker,
    mp: &str,
    mf: &Fields,
    entry: &ianvs_paradigms::registry::ModuleEntry,
    registry: &Registry,
    seed: u64,
) -> Option<ModuleConfig> {
    let hp_names: Vec<&str> = entry.hyperparameters.iter().map(|h| h.name).collect();
    let mut axes: Vec<Vec<BTreeMap<String, Value>>> = Vec::new();
    let mut given: BTreeSet<String> = BTreeSet::new();
    let mut ok = true;
    if let Some(hn) = mf.get("hyperparameters") {
        let hp = format!("{mp}.hyperparameters");
        let Some(items) = hn.as_seq() else {
            w.expected(hn, &hp, "a list of `- <name>: {values: [...]}`");
            return None;
        };
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{hp}[{i}]");
            let Some([(k, v)]) = item.as_map() else {
                w.expected(item, &ip, "a one-key mapping `<name>: {values: [...]}`");
                ok = false;
                continue;
            };
            let key = k.key_text();
            let kp = format!("{ip}.{key}");
            let Some(vals) = w.grid_values(v, &kp) else {
                ok = false;
                continue;
            };
            if key == "other_hyperparameters" {
                // Each value is a YAML file of `name: value` pairs: one grid point setting several hyperparameters together.
                let mut axis = Vec::new();
                for (j, v) in vals.iter().enumerate() {
                    let vp = format!("{kp}.values[{j}]");
                    let Some(path) = w.existing_path(v, &vp) else {
                        ok = false;
                        continue;
                    };
                    let mut sub = Diagnostics::default();
                    let point =
                        read_yaml(&path, &mut sub, Some((&w.file, v.mark, &vp))).and_then(|node| {
                            let mut sw = Walker {
                                file: path.clone(),
                                diags: &mut sub,
                            };
                            let fields = sw.map(&node, "", &hp_names, &[])?;
                            let mut point = BTreeMap::new();
                            for (name, kn, vn) in &fields.entries {
                                let spec = entry.hp(name).expect("key checked against hp names");
                                match check_finite(vn).and_then(|j| spec.check(&j)) {
                                    Ok(val) => {
                                        point.insert(name.clone(), val);
                                    }
                                    Err(why) => {
                                        sw.err(
                                            Some(kn.mark),
                                            name,
                                            format!(
                                                "hyperparameter `{name}` of {} {}: {why}",
                                                entry.module_type, entry.name
                                            ),
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
                    match point {
                        Some(pt) if !failed => {
                            given.extend(pt.keys().cloned());
                            axis.push(pt);
                        }
                        _ => ok = false,
                    }
                }
                axes.push(axis);
                continue;
            }
            let Some(spec) = entry.hp(&key) else {
                // A setting of the same module in another role (a drafter-only `draft_vocab`
                // given to the verifier LLM): say where it belongs.
                let owners: Vec<String> = registry
                    .entries()
                    .iter()
                    .filter(|e| {
                        e.module_type != entry.module_type
                            && e.name.eq_ignore_ascii_case(entry.name)
                            && e.hp(&key).is_some()
                    })
                    .map(|e| format!("`{}` {}", e.module_type, e.name))
                    .collect();
                let d = w
                    .err(
                        Some(k.mark),
                        &kp,
                        format!(
                            "{} module \"{}\" has no hyperparameter `{key}`",
                            entry.module_type, entry.name
                        ),
                    )
                    .choices(&key, &hp_names);
                if !owners.is_empty() {
                    d.help(format!(
                        "`{key}` is a setting of the {} module only: move it there",
                        owners.join(", ")
                    ));
                }
                ok = false;
                continue;
            };
            if !given.insert(key.clone()) {
                w.err(
                    Some(k.mark),
                    &kp,
                    format!("hyperparameter `{key}` is given twice"),
                );
                ok = false;
                continue;
            }
            let mut axis = Vec::new();
            for (j, v) in vals.iter().enumerate() {
                let mut json = match check_finite(v) {
                    Ok(j) => j,
                    Err(why) => {
                        w.err(
                            Some(v.mark),
                            &format!("{kp}.values[{j}]"),
                            format!(
                                "hyperparameter `{key}` of {} {}: {why}",
                                entry.module_type, entry.name
                            ),
                        );
                        ok = false;
                        continue;
                    }
                };
                if spec.kind == ianvs_paradigms::hp::HpKind::Path {
                    if let Some(s) = json.as_str() {
                        json =
                            Value::String(resolve_path(&w.file, s).to_string_lossy().into_owned());
                    }
                }
                match spec.check(&json) {
                    Ok(val) => axis.push(BTreeMap::from([(key.clone(), val)])),
                    Err(why) => {
                        w.err(
                            Some(v.mark),
                            &format!("{kp}.values[{j}]"),
                            format!(
                                "hyperparameter `{key}` of {} {}: {why}",
                                entry.module_type, entry.name
                            ),
                        )
                        .help(spec.help.to_string());
                        ok = false;
                    }
                }
            }
            axes.push(axis);
        }
    }
    // Every hyperparameter gets its default here, even one set on an axis: an
    // `other_hyperparameters` file that leaves a key out then still gets the default.
    let mut fixed = BTreeMap::new();
    for spec in &entry.hyperparameters {
        match &spec.default {
            Some(d) => {
                fixed.insert(spec.name.to_string(), d.clone());
            }
            None if spec.name == "seed" => {
                fixed.insert("seed".into(), Value::from(seed));
            }
            None if given.contains(spec.name) => {}
            None => {
                w.err(
                    Some(mf.mark),
                    mp,
                    format!(
                        "{} module \"{}\" needs the hyperparameter `{}` ({})",
                        entry.module_type, entry.name, spec.name, spec.help
                    ),
                );
                ok = false;
            }
        }
    }
    // A job-wide `--seed` replaces a module's default seed (not one written in the YAML).
    if fixed.contains_key("seed") && !given.contains("seed") {
        fixed.insert("seed".into(), Value::from(seed));
    }
    ok.then(|| ModuleConfig {
        module_type: entry.module_type.to_string(),
        name: entry.name.to_string(),
        axes,
        fixed,
        plugin: None,
    })
}

/// `initial_model_url`: Ianvs's pretrained model for the single-task base model. A plug-in
/// base model gets it as Ianvs gives it (`BASE_MODEL_URL` in its environment, and
/// `load(initial_model_url)` when `save` returns no path); built-in models are refused.
fn initial_model_url(
    w: &mut Walker,
    f: &Fields,
    paradigm: Option<&str>,
    modules: &mut [ModuleConfig],
) {
    let Some(iu) = f.get("initial_model_url") else {
        return;
    };
    match &iu.kind {
        NodeKind::Str(s) if s.is_empty() => return,
        NodeKind::Null => return,
        _ => {}
    }
    let key = "algorithm.initial_model_url";
    let target = modules
        .iter_mut()
        .find(|m| m.module_type == "basemodel" && m.plugin.is_some());
    match (paradigm, target) {
        (Some("singletasklearning"), Some(m)) => {
            if let Some(path) = w.existing_path(iu, key) {
                let sha = match file_sha256(&path) {
                    Ok(sha) => sha,
                    Err(e) => {
                        w.err(
                            Some(iu.mark),
                            key,
                            format!("cannot read `initial_model_url` {}: {e}", path.display()),
                        );
                        return;
                    }
                };
                if let Some(p) = m.plugin.as_mut() {
                    p.initial_model_url = Some(paths::absolute(&path));
                    p.initial_model_sha256 = sha;
                }
            }
        }
        _ => {
            w.err(Some(iu.mark), key, "`initial_model_url` is not supported yet for this algorithm: only a plug-in `basemodel` (one with `url:`) of single-task learning receives it; built-in models are trained from scratch or named by a module hyperparameter")
                .help("remove it or set it to \"\"");
        }
    }
}

/// sha256 of a regular file, read in chunks (a model may be large); `None` for a folder.
fn file_sha256(path: &Path) -> std::io::Result<Option<String>> {
    use sha2::Digest;
    use std::io::Read;
    if std::fs::metadata(path)?.is_dir() {
        return Ok(None);
    }
    ianvs_paradigms::data::check_regular_file(path)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(
        h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
    ))
}
