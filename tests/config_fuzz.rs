//! Property test ("fuzz target" on stable Rust) for the config layer: the YAML of the test
//! fixtures (`tests/fixtures/tiny` and every `tests/fixtures/bad/*` job) is mutated — lines
//! deleted, duplicated, swapped, cut short, tokens YAML finds awkward spliced in — and loaded
//! with the public `ianvs::config::load_job`, planned and preflighted. Whatever the input, the
//! loader must return a job or a non-empty diagnostic, never panic.
//!
//! Bounded for CI: `IANVS_FUZZ_CASES` cases (default 500, a few seconds), seeded by
//! `IANVS_FUZZ_SEED` (default 13) so a failure reproduces; set a larger count and another seed
//! to fuzz longer.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use ianvs::config::{self, Overrides};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestRunner};

static PARADIGMS: LazyLock<Vec<Box<dyn ianvs_paradigms::Paradigm>>> =
    LazyLock::new(ianvs_paradigms::paradigms);

const TOKENS: &[&str] = &[
    "",
    ":",
    ": ",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "\t",
    "#",
    "&a ",
    "*a",
    "!!binary ",
    "~",
    "null",
    "0",
    "-1",
    "1e309",
    ".nan",
    "true",
    "[]",
    "{}",
    "<<: *a",
    "? ",
    "|",
    ">",
    "\u{feff}",
    "é",
    "../",
    "/dev/null",
    "values: []",
    "values: [0.1, 0.1]",
    "name: ",
    "url: ./nope.yaml",
    "paradigm_type: x",
];

#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    Truncate(Index),
    Insert(Index, usize),
    Replace(Index, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::DeleteLine),
        any::<Index>().prop_map(Edit::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 0..TOKENS.len()).prop_map(|(i, t)| Edit::Insert(i, t)),
        (any::<Index>(), 1usize..12, 0..TOKENS.len()).prop_map(|(i, n, t)| Edit::Replace(i, n, t)),
    ]
}

/// Applies the edits on char boundaries, so the result stays UTF-8 like a real file.
fn apply(text: &str, edits: &[Edit]) -> String {
    let mut s = text.to_string();
    for e in edits {
        let mut lines: Vec<String> = s.lines().map(String::from).collect();
        let chars: Vec<(usize, char)> = s.char_indices().collect();
        let at = |i: &Index| {
            if chars.is_empty() {
                0
            } else {
                chars[i.index(chars.len())].0
            }
        };
        match e {
            Edit::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i.index(lines.len()));
                s = lines.join("\n");
            }
            Edit::DuplicateLine(i) if !lines.is_empty() => {
                let k = i.index(lines.len());
                lines.insert(k, lines[k].clone());
                s = lines.join("\n");
            }
            Edit::SwapLines(a, b) if !lines.is_empty() => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
                s = lines.join("\n");
            }
            Edit::Truncate(i) => s.truncate(at(i)),
            Edit::Insert(i, t) => s.insert_str(at(i), TOKENS[*t]),
            Edit::Replace(i, n, t) => {
                let start = at(i);
                let end = s[start..]
                    .char_indices()
                    .nth(*n)
                    .map_or(s.len(), |(k, _)| start + k);
                s.replace_range(start..end, TOKENS[*t]);
            }
            _ => {}
        }
    }
    s
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, dest).unwrap();
        }
    }
}

/// (benchmark to load, YAML file to mutate) for every YAML of the corpus jobs.
fn corpus(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut jobs = vec![root.join("tiny")];
    let mut bad: Vec<PathBuf> = std::fs::read_dir(root.join("bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    bad.sort();
    jobs.extend(bad);
    let mut out = Vec::new();
    for j in jobs {
        let bench = j.join("benchmark.yaml");
        let mut stack = vec![j.clone()];
        while let Some(d) = stack.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml") {
                    out.push((bench.clone(), p));
                }
            }
        }
    }
    out
}

#[test]
fn mutated_fixture_configs_never_panic_the_loader() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let d = tempfile::tempdir().unwrap();
    copy_tree(&fixtures.join("tiny"), &d.path().join("tiny"));
    copy_tree(&fixtures.join("bad"), &d.path().join("bad"));
    let corpus = corpus(d.path());
    assert!(corpus.len() >= 20, "the corpus lost its fixtures");
    let reg = ianvs_algorithms::registry();
    let env = |k: &str, default: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut runner = TestRunner::new(Config {
        cases: env("IANVS_FUZZ_CASES", 500) as u32,
        rng_seed: RngSeed::Fixed(env("IANVS_FUZZ_SEED", 13)),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..corpus.len(), prop::collection::vec(edit(), 1..5));
    let result = runner.run(&strategy, |(pick, edits)| {
        let (bench, target) = &corpus[pick];
        let original = std::fs::read_to_string(target).unwrap();
        let mutated = apply(&original, &edits);
        std::fs::write(target, &mutated).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match config::load_job(bench, &reg, &PARADIGMS, &Overrides::default()) {
                Ok(job) => {
                    let (cases, _) = ianvs::controller::plan_with_warnings(&job);
                    match ianvs::preflight::check(&job, &cases, &reg) {
                        Ok(()) => String::from("ok"),
                        Err(d) => d.to_string(),
                    }
                }
                Err(d) => d.to_string(),
            }
        }));
        std::fs::write(target, &original).unwrap();
        match outcome {
            Ok(msg) => {
                prop_assert!(
                    !msg.trim().is_empty(),
                    "an empty diagnostic for {}:\n{mutated}",
                    target.display()
                );
                Ok(())
            }
            Err(_) => Err(TestCaseError::fail(format!(
                "the config layer panicked on {} mutated to:\n{mutated}",
                target.display()
            ))),
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
