//! Corpus loading: fortune-style text files → cleaned, de-duplicated documents → a fixed
//! train/validation split.
//!
//! A corpus is one or more UTF-8 text files (or folders of them, read in file-name order). Within
//! a file, a line holding only `%` ends a document — the `fortune(6)` format of Debian's
//! `fortunes` package; the end of a file ends one too, so a plain text file is one document.
//!
//! The split is by document index and does not depend on any seed: document `i` (counting after
//! de-duplication, in load order) is a validation document when `i % val_every == val_every - 1`.
//! A draft and a verifier trained with different seeds therefore see the same validation text,
//! which is what makes their validation losses comparable — and that held-out text is where the
//! speculative-decoding prompts come from.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{LmTrainError, Result};

/// The default `val_every`: one document in 20 (5 %) is held out.
pub const DEFAULT_VAL_EVERY: usize = 20;

/// A corpus split into training and validation documents.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub train: Vec<String>,
    pub validation: Vec<String>,
    pub stats: CorpusStats,
}

/// What loading found, for logs and provenance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CorpusStats {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// Non-empty documents before de-duplication.
    pub documents: usize,
    /// Documents dropped because an identical one came earlier (keeps them out of both splits).
    pub duplicates: usize,
    pub train_documents: usize,
    pub validation_documents: usize,
    /// UTF-8 bytes of the cleaned training / validation documents.
    pub train_bytes: usize,
    pub validation_bytes: usize,
    pub val_every: usize,
}

/// Expands `paths` (files, or folders whose regular files are taken in name order, hidden
/// files skipped) into the list of files to read.
pub fn corpus_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(LmTrainError::Corpus(
            "no corpus given: pass at least one text file or folder".into(),
        ));
    }
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| LmTrainError::io(path, e))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            let entries = std::fs::read_dir(path).map_err(|e| LmTrainError::io(path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| LmTrainError::io(path, e))?;
                let p = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if !hidden && p.is_file() {
                    found.push(p);
                }
            }
            if found.is_empty() {
                return Err(LmTrainError::Corpus(format!(
                    "folder {} holds no files",
                    path.display()
                )));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Splits a fortune file into raw documents at lines that hold only `%`.
pub fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "%" {
            docs.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(&text[start..]);
    docs
}

/// Cleans one raw document; `None` when nothing is left.
///
/// - a backspace deletes the character before it: fortune files underline and embolden with
///   terminal overstrikes (`_\bw`, `w\bw`), and what a terminal shows is the last character;
/// - other control characters except newline and tab are dropped (`\r` included, so CRLF files
///   read like LF files);
/// - trailing whitespace is removed from every line, and blank lines from both ends.
pub fn clean_document(raw: &str) -> Option<String> {
    let mut chars: Vec<char> = Vec::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '\u{8}' => {
                chars.pop();
            }
            '\n' | '\t' => chars.push(c),
            c if c.is_control() => {}
            c => chars.push(c),
        }
    }
    let text: String = chars.into_iter().collect();
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let first = lines.iter().position(|l| !l.is_empty())?;
    let last = lines.iter().rposition(|l| !l.is_empty())?;
    Some(lines[first..=last].join("\n"))
}

/// Reads, cleans, de-duplicates and splits the corpus (see the module docs).
pub fn load_corpus(paths: &[PathBuf], val_every: usize) -> Result<Corpus> {
    if val_every < 2 {
        return Err(LmTrainError::Settings(format!(
            "val_every must be at least 2 (one document in val_every is held out), got {val_every}"
        )));
    }
    let files = corpus_files(paths)?;
    let mut seen = HashSet::new();
    let mut stats = CorpusStats {
        val_every,
        ..CorpusStats::default()
    };
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    let mut index = 0usize;
    for file in &files {
        let text = read_utf8(file)?;
        for raw in split_documents(&text) {
            let Some(doc) = clean_document(raw) else {
                continue;
            };
            stats.documents += 1;
            if !seen.insert(doc.clone()) {
                stats.duplicates += 1;
                continue;
            }
            if index % val_every == val_every - 1 {
                stats.validation_bytes += doc.len();
                validation.push(doc);
            } else {
                stats.train_bytes += doc.len();
                train.push(doc);
            }
            index += 1;
        }
    }
    stats.files = files;
    stats.train_documents = train.len();
    stats.validation_documents = validation.len();
    if validation.is_empty() {
        return Err(LmTrainError::Corpus(format!(
            "{} distinct document(s) is too few: one in {val_every} is held out for validation, \
             so at least {val_every} are needed (documents are separated by lines holding `%`)",
            index
        )));
    }
    Ok(Corpus {
        train,
        validation,
        stats,
    })
}

fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| LmTrainError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        LmTrainError::Corpus(format!(
            "{} is not UTF-8 text (invalid byte at offset {}); convert it first, e.g. with iconv",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_percent_lines_only() {
        let docs = split_documents("a\n%\nb 50%\n%\r\nc\n");
        assert_eq!(docs, vec!["a\n", "b 50%\n", "c\n"]);
        assert_eq!(split_documents("no separator"), vec!["no separator"]);
    }

    #[test]
    fn cleaning_resolves_overstrikes_and_trims() {
        assert_eq!(
            clean_document("\n\n_\u{8}h_\u{8}i  \r\n\tthere\u{7}\n\n").as_deref(),
            Some("hi\n\tthere")
        );
        assert_eq!(clean_document(" \n\t\n"), None);
    }

    #[test]
    fn split_is_by_index_and_drops_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<String> = (0..9).map(|i| format!("doc {i}")).collect();
        let mut text = body.join("\n%\n");
        text.push_str("\n%\ndoc 3\n%\n"); // a duplicate, dropped
        std::fs::write(dir.path().join("b"), text).unwrap();
        std::fs::write(dir.path().join("a"), "first\n").unwrap();
        std::fs::write(dir.path().join(".hidden"), "skipped\n").unwrap();
        let c = load_corpus(&[dir.path().to_path_buf()], 3).unwrap();
        // Order: "first", doc 0..8 → indices 2, 5, 8 are validation.
        assert_eq!(c.validation, vec!["doc 1", "doc 4", "doc 7"]);
        assert_eq!(c.train.len(), 7);
        assert_eq!(c.stats.duplicates, 1);
        assert_eq!(c.stats.files.len(), 2);
    }

    #[test]
    fn too_small_and_bad_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("one");
        std::fs::write(&f, "just one\n").unwrap();
        let e = load_corpus(std::slice::from_ref(&f), 20).unwrap_err();
        assert!(e.to_string().contains("too few"), "{e}");
        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0x66, 0xff, 0xfe]).unwrap();
        let e = load_corpus(&[bin], 20).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        let e = load_corpus(&[dir.path().join("missing")], 20).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(load_corpus(&[], 20).is_err());
        assert!(load_corpus(&[f], 1).is_err());
    }
}
