//! Configuration diagnostics: every problem found in one pass, each with its file, line,
//! column, key path, the bad value, the valid choices and a "did you mean".

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::yaml::Mark;

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub mark: Option<Mark>,
    /// Key path such as `benchmarkingjob.rank.sort_by[0]`.
    pub path: String,
    pub message: String,
    /// Valid choices, generated from the registry or schema.
    pub valid: Vec<String>,
    pub suggestion: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(
        file: &Path,
        mark: Option<Mark>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_path_buf(),
            mark,
            path: path.into(),
            message: message.into(),
            valid: Vec::new(),
            suggestion: None,
            help: None,
        }
    }
    /// Lists the valid choices and suggests the closest to `bad`.
    pub fn choices<S: AsRef<str>>(&mut self, bad: &str, valid: &[S]) -> &mut Self {
        self.valid = valid.iter().map(|s| s.as_ref().to_string()).collect();
        self.suggestion = did_you_mean(bad, &self.valid);
        self
    }
    pub fn help(&mut self, help: impl Into<String>) -> &mut Self {
        self.help = Some(help.into());
        self
    }
    /// [`Diagnostic::choices`] for a diagnostic being built by value.
    pub fn with_choices<S: AsRef<str>>(mut self, bad: &str, valid: &[S]) -> Self {
        self.choices(bad, valid);
        self
    }
}

/// The closest candidate to `bad`, if one is close enough to be a likely typo.
pub fn did_you_mean(bad: &str, candidates: &[String]) -> Option<String> {
    let norm = |s: &str| s.to_lowercase().replace(['-', '_', ' '], "");
    let b = norm(bad);
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(&b, &norm(c)), c))
        .filter(|(d, c)| *d <= (c.len().max(bad.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

/// All problems found while loading a job, with the text of each file for snippets.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
    sources: HashMap<PathBuf, String>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }
    /// Drops repeats (a file referenced twice is checked twice but reported once).
    pub fn dedup(&mut self) {
        let mut seen = Vec::new();
        self.items.retain(|d| {
            let key = (d.file.clone(), d.mark, d.message.clone());
            let new = !seen.contains(&key);
            seen.push(key);
            new
        });
    }
    pub fn add_source(&mut self, file: &Path, text: &str) {
        self.sources.insert(file.to_path_buf(), text.to_string());
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: {}", d.message)?;
            match d.mark {
                Some(m) => writeln!(f, "  --> {}:{}:{}", d.file.display(), m.line, m.col)?,
                None => writeln!(f, "  --> {}", d.file.display())?,
            }
            if !d.path.is_empty() {
                writeln!(f, "   = at: {}", d.path)?;
            }
            if let (Some(m), Some(src)) = (d.mark, self.sources.get(&d.file)) {
                if let Some(line) = src.lines().nth(m.line.saturating_sub(1)) {
                    let n = m.line.to_string();
                    let pad = " ".repeat(n.len());
                    writeln!(f, "{pad} |")?;
                    writeln!(f, "{n} | {line}")?;
                    writeln!(f, "{pad} | {}^", " ".repeat(m.col.saturating_sub(1)))?;
                }
            }
            if !d.valid.is_empty() {
                writeln!(f, "   = valid: {}", d.valid.join(", "))?;
            }
            if let Some(s) = &d.suggestion {
                writeln!(f, "   = did you mean `{s}`?")?;
            }
            if let Some(h) = &d.help {
                writeln!(f, "   = help: {h}")?;
            }
        }
        write!(
            f,
            "{} configuration error{} found; nothing was run or written",
            self.items.len(),
            if self.items.len() == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let c: Vec<String> = ["accuracy", "macro-f1", "edge-ratio"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(did_you_mean("acuracy", &c).as_deref(), Some("accuracy"));
        assert_eq!(did_you_mean("macro_f1", &c).as_deref(), Some("macro-f1"));
        assert_eq!(did_you_mean("zzzzzz", &c), None);
    }
}
