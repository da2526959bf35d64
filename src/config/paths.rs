//! Where a relative path in a YAML file points: KubeEdge-Ianvs's rule, made safe.
//!
//! Ianvs opens relative paths from the working directory (its examples write
//! `testenv: "./examples/pcb-aoi/…/testenv.yaml"` and are run from the Ianvs root); ianvs's own
//! files write paths relative to the YAML that holds them. A relative path is therefore tried
//! against the YAML's folder first, then against the working directory. When only one exists it
//! is used; when both exist and are different files it is an error naming both, because
//! silently picking one would benchmark the wrong data.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

/// Which rule found a path (shown by `validate --json` and in `resolved.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRule {
    /// The path was absolute as written.
    Absolute,
    /// Relative to the folder of the YAML file that contains it.
    YamlFolder,
    /// Relative to the working directory (KubeEdge-Ianvs's rule).
    WorkingDir,
    /// Not found anywhere (a workspace to be created): the YAML's folder.
    YamlFolderNew,
}

/// One path read from a YAML file and what it resolved to.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedPath {
    /// The YAML file that holds the path.
    pub file: PathBuf,
    /// Key path such as `benchmarkingjob.testenv`.
    pub key: String,
    /// The path as written.
    pub written: String,
    /// The absolute path used.
    pub path: PathBuf,
    pub rule: PathRule,
}

/// The outcome of looking a written path up.
pub enum Lookup {
    Found(PathBuf, PathRule),
    /// Neither candidate exists; both are named.
    Missing(Vec<PathBuf>),
    /// Both candidates exist and are different files.
    Ambiguous {
        yaml: PathBuf,
        cwd: PathBuf,
    },
    /// A candidate exists as a symbolic link that cannot be followed (a loop or too deep).
    SymlinkLoop(PathBuf),
}

/// Joins `rel` onto the folder of `file` and removes `.` and `..` components lexically, so
/// messages show `testenvs/x/testenv.yaml`, not `testenvs/x/./testenv.yaml`.
pub fn resolve_path(file: &Path, rel: &str) -> PathBuf {
    let base = file.parent().unwrap_or(Path::new(""));
    normalize(&base.join(rel))
}

pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let at_start = out.as_os_str().is_empty() || out.ends_with("..");
                if at_start {
                    out.push("..")
                } else {
                    out.pop();
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The absolute form of `p` (lexically, without following links), for reports.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p)
        .map(|a| normalize(&a))
        .unwrap_or_else(|_| p.to_path_buf())
}

enum Probe {
    Exists,
    Absent,
    Loop,
}

fn probe(p: &Path) -> Probe {
    match std::fs::metadata(p) {
        Ok(_) => Probe::Exists,
        Err(e) => {
            // ELOOP (40 on Linux, 62 on macOS): the link exists but cannot be followed.
            let is_link = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
            if is_link && matches!(e.raw_os_error(), Some(40) | Some(62)) {
                Probe::Loop
            } else {
                Probe::Absent
            }
        }
    }
}

/// Finds `rel`, written in `file`, by the rule above.
pub fn lookup(file: &Path, rel: &str) -> Lookup {
    if Path::new(rel).is_absolute() {
        let p = normalize(Path::new(rel));
        return match probe(&p) {
            Probe::Exists => Lookup::Found(p, PathRule::Absolute),
            Probe::Loop => Lookup::SymlinkLoop(p),
            Probe::Absent => Lookup::Missing(vec![p]),
        };
    }
    let yaml = resolve_path(file, rel);
    let cwd = normalize(Path::new(rel));
    let (y, c) = (probe(&yaml), probe(&cwd));
    let same_candidate = absolute(&yaml) == absolute(&cwd);
    match (y, c) {
        (Probe::Exists, Probe::Exists) => {
            let differ = !same_candidate
                && match (std::fs::canonicalize(&yaml), std::fs::canonicalize(&cwd)) {
                    (Ok(a), Ok(b)) => a != b,
                    _ => true,
                };
            if differ {
                Lookup::Ambiguous { yaml, cwd }
            } else {
                Lookup::Found(yaml, PathRule::YamlFolder)
            }
        }
        (Probe::Exists, _) => Lookup::Found(yaml, PathRule::YamlFolder),
        (Probe::Loop, _) => Lookup::SymlinkLoop(yaml),
        (_, Probe::Exists) => Lookup::Found(cwd, PathRule::WorkingDir),
        (_, Probe::Loop) => Lookup::SymlinkLoop(cwd),
        _ if same_candidate => Lookup::Missing(vec![yaml]),
        _ => Lookup::Missing(vec![yaml, cwd]),
    }
}

/// A folder name for a name as written: the name itself when it is already a safe, ordinary
/// folder name, otherwise its safe characters plus a short hash of the full name, so two
/// different names never share a folder (`"feature extraction"` → `feature_extraction-1a2b3c`).
pub fn folder_name(name: &str, reserved: &[&str]) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    let plain = !name.is_empty()
        && name.len() <= 100
        && name.chars().all(safe)
        && !name.starts_with('.')
        && !reserved.contains(&name);
    if plain {
        return name.to_string();
    }
    use sha2::{Digest, Sha256};
    let mut stem: String = name
        .chars()
        .map(|c| if safe(c) { c } else { '_' })
        .take(60)
        .collect();
    stem = stem.trim_start_matches('.').to_string();
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    if stem.is_empty() {
        format!("alg-{hash}")
    } else {
        format!("{stem}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_keeps_leading_parent_dirs() {
        assert_eq!(
            normalize(Path::new("../../tiny/x.yaml")),
            PathBuf::from("../../tiny/x.yaml")
        );
        assert_eq!(
            normalize(Path::new("a/./b/../c.yaml")),
            PathBuf::from("a/c.yaml")
        );
        assert_eq!(
            resolve_path(Path::new("testenvs/x/benchmark.yaml"), "./testenv.yaml"),
            PathBuf::from("testenvs/x/testenv.yaml")
        );
        assert_eq!(
            resolve_path(Path::new("benchmark.yaml"), "../d.csv"),
            PathBuf::from("../d.csv")
        );
    }

    #[test]
    fn folder_names_are_safe_and_distinct() {
        assert_eq!(folder_name("knn-1", &["rank"]), "knn-1");
        let a = folder_name("feature extraction", &[]);
        let b = folder_name("feature_extraction", &[]);
        let c = folder_name("feature/extraction", &[]);
        assert!(a.starts_with("feature_extraction-"), "{a}");
        assert_eq!(b, "feature_extraction");
        assert_ne!(a, c);
        let r = folder_name("rank", &["rank"]);
        assert!(r.starts_with("rank-"), "{r}");
        assert!(!folder_name("..", &[]).starts_with('.'));
        assert!(!folder_name("", &[]).is_empty());
    }

    #[test]
    fn both_rules_existing_and_differing_is_ambiguous() {
        let dir = std::env::temp_dir().join(format!("ianvs-paths-{}", std::process::id()));
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("x.txt"), "a").unwrap();
        // Absolute base: the working-directory candidate is `x.txt` relative to the test's cwd,
        // which does not exist, so the YAML folder wins.
        match lookup(&sub.join("job.yaml"), "x.txt") {
            Lookup::Found(p, PathRule::YamlFolder) => assert_eq!(p, sub.join("x.txt")),
            _ => panic!("expected the YAML-folder rule"),
        }
        match lookup(&sub.join("job.yaml"), "nope.txt") {
            Lookup::Missing(c) => assert_eq!(c.len(), 2),
            _ => panic!("expected missing"),
        }
        #[cfg(unix)]
        {
            let l = sub.join("loop.yaml");
            let _ = std::fs::remove_file(&l);
            std::os::unix::fs::symlink(&l, &l).unwrap();
            assert!(matches!(
                lookup(&sub.join("job.yaml"), "loop.yaml"),
                Lookup::SymlinkLoop(_)
            ));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
