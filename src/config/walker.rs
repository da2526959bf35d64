//! The YAML walker: checks one file's located tree against a schema (the three kinds of
//! keys), reads scalars and paths, and pushes every problem as a diagnostic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ianvs_paradigms::data::{self};
use serde_json::Value;

use super::yaml::{Mark, Node, NodeKind};
use super::*;

/// Walks one file's YAML tree against a schema, pushing diagnostics.
pub(super) struct Walker<'d> {
    pub(super) file: PathBuf,
    pub(super) diags: &'d mut Diagnostics,
}

/// The entries of a mapping that passed the key check.
pub(super) struct Fields<'n> {
    pub(super) entries: Vec<(String, &'n Node, &'n Node)>,
    pub(super) mark: Mark,
}

impl<'n> Fields<'n> {
    pub(super) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, v)| *v)
    }
}

impl Walker<'_> {
    pub(super) fn err(
        &mut self,
        mark: Option<Mark>,
        path: &str,
        msg: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::new(&self.file, mark, path, msg));
        self.diags.items.last_mut().expect("just pushed")
    }

    pub(super) fn expected(&mut self, node: &Node, path: &str, want: &str) {
        let found = node.type_name();
        self.err(
            Some(node.mark),
            path,
            format!("`{path}` must be {want}, found {found}"),
        );
    }

    /// Checks that `node` is a mapping whose keys are all in `allowed` (or `extra`); keys in
    /// `unsupported` are Ianvs keys we do not implement yet and get their own message.
    pub(super) fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
        unsupported: &[(&str, &str)],
    ) -> Option<Fields<'n>> {
        let Some(entries) = node.as_map() else {
            self.expected(node, path, "a mapping");
            return None;
        };
        let mut fields = Fields {
            entries: Vec::new(),
            mark: node.mark,
        };
        let mut seen = BTreeSet::new();
        for (k, v) in entries {
            let key = k.key_text();
            let kp = join(path, &key);
            if !seen.insert(key.clone()) {
                self.err(
                    Some(k.mark),
                    &kp,
                    format!("key `{key}` appears twice in `{path}`"),
                );
                continue;
            }
            if let Some((_, why)) = unsupported.iter().find(|(u, _)| *u == key) {
                self.err(
                    Some(k.mark),
                    &kp,
                    format!("`{key}` is not supported yet: {why}"),
                )
                .help(format!(
                    "remove `{key}` (a KubeEdge-Ianvs key ianvs does not implement)"
                ));
                continue;
            }
            if !allowed.contains(&key.as_str())
                && keys::ignored(&keys::level_of(path)).contains(&key.as_str())
            {
                self.diags.warn(Diagnostic::new(
                    &self.file,
                    Some(k.mark),
                    &kp,
                    format!("`{key}` in `{path}` is ignored; KubeEdge-Ianvs ignores it too"),
                ));
                continue;
            }
            if !allowed.contains(&key.as_str()) {
                self.err(
                    Some(k.mark),
                    &kp,
                    format!("unknown key `{key}` in `{path}`"),
                )
                .valid = allowed.iter().map(|s| s.to_string()).collect();
                let sugg = diag::did_you_mean(
                    &key,
                    &allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                );
                if let Some(sg) = &sugg {
                    self.diags
                        .suggested
                        .insert((self.file.clone(), path.to_string(), sg.clone()));
                }
                self.diags.items.last_mut().expect("just pushed").suggestion = sugg;
                continue;
            }
            fields.entries.push((key, k, v));
        }
        Some(fields)
    }

    /// A hyperparameter's `{values: [...]}` mapping at `path`: its non-empty list of values, or
    /// `None` with the located error already reported.
    pub(super) fn grid_values<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        let f = self.map(node, path, &["values"], &[])?;
        let values = self.required(&f, path, "values")?;
        let vals = values.as_seq().filter(|s| !s.is_empty());
        if vals.is_none() {
            self.expected(values, &format!("{path}.values"), "a non-empty list");
        }
        vals
    }

    pub(super) fn required<'n>(
        &mut self,
        f: &Fields<'n>,
        path: &str,
        key: &str,
    ) -> Option<&'n Node> {
        let v = f.get(key);
        // A misspelt key already reported with this key as its suggestion needs no second message.
        // (A set look-up, not a scan of every diagnostic: checks stay linear in the file.)
        let misspelt = v.is_none()
            && self.diags.suggested.contains(&(
                self.file.clone(),
                path.to_string(),
                key.to_string(),
            ));
        if v.is_none() && !misspelt {
            self.err(
                Some(f.mark),
                path,
                format!("`{path}` is missing the required key `{key}`"),
            );
        }
        v
    }

    pub(super) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Str(s) if !s.trim().is_empty() => Some(s.clone()),
            NodeKind::Str(_) => {
                self.err(Some(node.mark), path, format!("`{path}` must not be empty"));
                None
            }
            _ => {
                self.expected(node, path, "text");
                None
            }
        }
    }

    pub(super) fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<(String, Mark)>> {
        let Some(items) = node.as_seq() else {
            self.expected(node, path, "a list of text");
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = self.string(item, &format!("{path}[{i}]")) {
                out.push((s, item.mark));
            }
        }
        Some(out)
    }

    /// A path value, found by the path rule ([`paths::lookup`]): the YAML's folder, then the
    /// working directory. Records which rule found it.
    pub(super) fn existing_path(&mut self, node: &Node, path: &str) -> Option<PathBuf> {
        let rel = self.string(node, path)?;
        match paths::lookup(&self.file, &rel) {
            paths::Lookup::Found(p, rule) => {
                self.diags.resolved.push(ResolvedPath {
                    file: paths::absolute(&self.file),
                    key: path.to_string(),
                    written: rel,
                    path: paths::absolute(&p),
                    rule,
                });
                Some(p)
            }
            paths::Lookup::Missing(tried) => {
                let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                self.err(
                    Some(node.mark),
                    path,
                    format!(
                        "`{path}` names \"{rel}\", which does not exist (looked for {})",
                        tried.join(" and ")
                    ),
                )
                .help("relative paths are tried against the YAML file's folder, then the working directory");
                None
            }
            paths::Lookup::Ambiguous { yaml, cwd } => {
                self.err(
                    Some(node.mark),
                    path,
                    format!(
                        "`{path}` names \"{rel}\", which exists both relative to the YAML file ({}) and to the working directory ({}), and they differ",
                        yaml.display(),
                        cwd.display()
                    ),
                )
                .help("write the path so only one reading exists (e.g. absolute), or run from another folder");
                None
            }
            paths::Lookup::SymlinkLoop(p) => {
                self.err(
                    Some(node.mark),
                    path,
                    format!(
                        "`{path}` names \"{rel}\": {} is a symbolic link that loops (or is nested too deep)",
                        p.display()
                    ),
                );
                None
            }
        }
    }

    /// The workspace folder: the path rule, except that a workspace that does not exist yet is
    /// created in the YAML's folder.
    pub(super) fn workspace(&mut self, node: &Node, path: &str) -> Option<PathBuf> {
        let rel = self.string(node, path)?;
        let (p, rule) = match paths::lookup(&self.file, &rel) {
            paths::Lookup::Found(p, rule) => (p, rule),
            paths::Lookup::Missing(_) if Path::new(&rel).is_absolute() => {
                (normalize(Path::new(&rel)), PathRule::Absolute)
            }
            paths::Lookup::Missing(_) => (resolve_path(&self.file, &rel), PathRule::YamlFolderNew),
            paths::Lookup::Ambiguous { .. } | paths::Lookup::SymlinkLoop(_) => {
                return self.existing_path(node, path);
            }
        };
        self.diags.resolved.push(ResolvedPath {
            file: paths::absolute(&self.file),
            key: path.to_string(),
            written: rel,
            path: paths::absolute(&p),
            rule,
        });
        Some(p)
    }
}

/// The node as JSON, or why not: `.nan` / `.inf` are read as numbers and refused here with
/// their spelling (JSON would turn them into `null`, "found nothing").
pub(super) fn check_finite(node: &Node) -> Result<Value, String> {
    match node.non_finite() {
        Some((what, _)) => Err(format!("must be a finite number, found {what}")),
        None => Ok(node.to_json()),
    }
}

/// A module or metric `url:` naming a Python plug-in file. The plug-in issue replaces this
/// one function with the real wiring; until then a non-empty `url` is a clear "plug-in" error.
/// Returns true when it reported one.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Reads and parses one YAML file; problems become diagnostics.
pub(super) fn read_yaml(
    file: &Path,
    diags: &mut Diagnostics,
    referenced_from: Option<(&Path, Mark, &str)>,
) -> Option<Node> {
    // A FIFO or device would block `read_to_string` forever.
    let read = data::check_regular_file(file)
        .map_err(|e| match e {
            data::DataError::Io { source, .. } => source.to_string(),
            data::DataError::Invalid { message, .. } => message,
            other => other.to_string(),
        })
        .and_then(|()| std::fs::read_to_string(file).map_err(|e| e.to_string()));
    let text = match read {
        Ok(t) => t,
        Err(e) => {
            let d = match referenced_from {
                Some((from, mark, key)) => Diagnostic::new(
                    from,
                    Some(mark),
                    key,
                    format!("cannot read {}: {e}", file.display()),
                ),
                None => Diagnostic::new(
                    file,
                    None,
                    "",
                    format!("cannot read {}: {e}", file.display()),
                ),
            };
            diags.push(d);
            return None;
        }
    };
    diags.add_source(file, &text);
    match yaml::parse(&text) {
        Ok(n) => Some(n),
        Err(e) => {
            diags.push(Diagnostic::new(
                file,
                Some(e.mark),
                "",
                format!("invalid YAML: {}", e.message),
            ));
            None
        }
    }
}
