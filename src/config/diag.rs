//! Configuration diagnostics: every problem found in one pass, each with its file, line,
//! column, key path, the bad value, the valid choices and a "did you mean".

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::paths::ResolvedPath;
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

/// How many errors are printed in full; the rest are counted (200,000 unknown keys must not
/// bury the terminal or take minutes to format).
pub const MAX_SHOWN: usize = 50;

/// All problems found while loading a job, with the text of each file for snippets.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
    /// Keys KubeEdge-Ianvs ignores too: reported, not fatal (fatal under `--strict`).
    pub warnings: Vec<Diagnostic>,
    /// (file, mapping path, suggested key) of each unknown key reported with a did-you-mean,
    /// so a "missing required key" is not reported a second time for the same typo.
    pub suggested: HashSet<(PathBuf, String, String)>,
    /// Paths resolved so far, with the rule that found each (for `validate --json`).
    pub resolved: Vec<ResolvedPath>,
    /// Each file's text and the byte offset of each line start, for snippets in O(1).
    sources: HashMap<PathBuf, (String, Vec<usize>)>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }
    pub fn warn(&mut self, d: Diagnostic) {
        self.warnings.push(d);
    }
    /// Drops repeats (a file referenced twice is checked twice but reported once). Linear.
    pub fn dedup(&mut self) {
        for list in [&mut self.items, &mut self.warnings] {
            let mut seen = HashSet::new();
            list.retain(|d| seen.insert((d.file.clone(), d.mark, d.message.clone())));
        }
    }
    /// Turns warnings into errors (`--strict`).
    pub fn promote_warnings(&mut self) {
        for mut d in self.warnings.drain(..) {
            d.help = Some("`--strict` makes keys KubeEdge-Ianvs ignores errors; remove it".into());
            self.items.push(d);
        }
    }
    pub fn add_source(&mut self, file: &Path, text: &str) {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        self.sources
            .insert(file.to_path_buf(), (text.to_string(), starts));
    }
    fn line(&self, file: &Path, line: usize) -> Option<&str> {
        let (text, starts) = self.sources.get(file)?;
        let start = *starts.get(line.checked_sub(1)?)?;
        let end = starts.get(line).map_or(text.len(), |e| e.saturating_sub(1));
        text.get(start..end.max(start))
            .map(|l| l.trim_end_matches('\r'))
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    fn write_one(&self, f: &mut fmt::Formatter<'_>, level: &str, d: &Diagnostic) -> fmt::Result {
        writeln!(f, "{level}: {}", d.message)?;
        match d.mark {
            Some(m) => writeln!(f, "  --> {}:{}:{}", d.file.display(), m.line, m.col)?,
            None => writeln!(f, "  --> {}", d.file.display())?,
        }
        if !d.path.is_empty() {
            writeln!(f, "   = at: {}", d.path)?;
        }
        if let Some(m) = d.mark {
            if let Some(line) = self.line(&d.file, m.line) {
                // Long lines (a minified file) are cut so one diagnostic stays readable.
                let line: String = line.chars().take(200).collect();
                let n = m.line.to_string();
                let pad = " ".repeat(n.len());
                writeln!(f, "{pad} |")?;
                writeln!(f, "{n} | {line}")?;
                writeln!(
                    f,
                    "{pad} | {}^",
                    " ".repeat(m.col.saturating_sub(1).min(200))
                )?;
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
        Ok(())
    }
    /// The warnings alone, as printed before a valid job runs.
    pub fn warnings_text(&self) -> String {
        struct W<'a>(&'a Diagnostics);
        impl fmt::Display for W<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for (i, d) in self.0.warnings.iter().take(MAX_SHOWN).enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    self.0.write_one(f, "warning", d)?;
                }
                if self.0.warnings.len() > MAX_SHOWN {
                    writeln!(
                        f,
                        "... and {} more warnings",
                        self.0.warnings.len() - MAX_SHOWN
                    )?;
                }
                Ok(())
            }
        }
        W(self).to_string()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().take(MAX_SHOWN).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            self.write_one(f, "error", d)?;
        }
        if self.items.len() > MAX_SHOWN {
            writeln!(
                f,
                "\n... and {} more errors (the first {MAX_SHOWN} are shown)",
                self.items.len() - MAX_SHOWN
            )?;
        }
        if !self.warnings.is_empty() {
            writeln!(f)?;
            write!(f, "{}", self.warnings_text())?;
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
