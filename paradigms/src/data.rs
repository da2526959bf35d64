//! Datasets: loading Ianvs index files, CSV (optionally gzipped) and JSONL into one in-memory
//! form, and splitting them reproducibly.
//!
//! Every malformed input is reported with the file and the 1-based line number, because the
//! person who has to fix it opens that file in an editor.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Which column holds the label in a CSV file.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum LabelColumn {
    /// The last column (Ianvs / scikit-learn convention).
    #[default]
    Last,
    First,
    /// A 0-based column index.
    Index(usize),
    /// A header name; the file must have a header row.
    Name(String),
}

impl LabelColumn {
    pub fn parse(s: &str) -> Self {
        match s {
            "last" | "" => LabelColumn::Last,
            "first" => LabelColumn::First,
            _ => match s.parse::<usize>() {
                Ok(i) => LabelColumn::Index(i),
                Err(_) => LabelColumn::Name(s.to_string()),
            },
        }
    }
}

/// How to read a data file.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub label: LabelColumn,
    /// Every feature is divided by this (255 for 8-bit pixels).
    pub feature_scale: f32,
    /// Field holding the text in JSONL rows (`prompt`, `text`, `question`, `query` are tried when unset).
    pub text_field: Option<String>,
    /// The number of classes when known (`num_classes`): a label must be below it. When unset,
    /// a label must be below [`MAX_CLASSES`], so one stray `1000000` cannot build a
    /// million-class model.
    pub num_classes: Option<u32>,
}

/// The most classes a label may imply when `num_classes` is not given.
pub const MAX_CLASSES: u32 = 10_000;

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            label: LabelColumn::Last,
            feature_scale: 1.0,
            text_field: None,
            num_classes: None,
        }
    }
}

/// An in-memory dataset: dense f32 features (row-major), integer labels, and for text data the
/// texts plus each JSONL row as written.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub source: PathBuf,
    /// Features per sample (0 for text-only data).
    pub dim: usize,
    pub features: Vec<f32>,
    /// Class ids; empty for unlabeled text data.
    pub labels: Vec<u32>,
    pub texts: Vec<String>,
    /// The raw JSONL rows (only for JSONL data), for modules that need extra fields.
    pub rows: Vec<Value>,
    /// For an Ianvs index file: each sample as Ianvs passes it to a plug-in (a path) and its
    /// label as Ianvs passes it (text).
    pub index: Option<IndexSamples>,
}

/// The samples of an Ianvs index file as KubeEdge-Ianvs hands them to modules and metrics.
///
/// Ianvs (`core/testenvmanager/dataset/dataset.py`, `_process_txt_index_file`) rewrites an
/// index file in which any line's first field is a relative path: **every** field of every
/// line becomes `os.path.abspath(os.path.join(<index folder>, field))`, the label included
/// (so label `7` reaches the module as `/abs/index/folder/7`, which is why Ianvs's example
/// metrics read `int(y.split('/')[-1])`). An index whose paths are all absolute is used as
/// written. Sedna's `TxtDataParse` then gives `x` = the first field and `y` = the second, as
/// numpy string arrays.
#[derive(Debug, Clone, Default)]
pub struct IndexSamples {
    /// The index file.
    pub file: PathBuf,
    /// Each sample's first field as Ianvs passes it (`.x`).
    pub x: Vec<String>,
    /// Each sample's label field as Ianvs passes it (`.y`).
    pub y: Vec<String>,
    /// Each sample's 1-based line in the index file.
    pub lines: Vec<usize>,
    /// Why the samples have no numeric features (`None` when every sample was decoded as a
    /// PGM image or numeric text): the first sample that could not be, with its line.
    pub undecoded: Option<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        if let Some(n) = self.features.len().checked_div(self.dim) {
            n
        } else if !self.texts.is_empty() {
            self.texts.len()
        } else {
            self.labels.len()
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Features of sample `i`.
    pub fn x(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }
    /// Number of classes: one more than the largest label.
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |m| *m as usize + 1)
    }
    /// A new dataset holding the samples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut out = Dataset {
            source: self.source.clone(),
            dim: self.dim,
            ..Default::default()
        };
        for &i in idx {
            if self.dim > 0 {
                out.features.extend_from_slice(self.x(i));
            }
            if !self.labels.is_empty() {
                out.labels.push(self.labels[i]);
            }
            if !self.texts.is_empty() {
                out.texts.push(self.texts[i].clone());
            }
            if !self.rows.is_empty() {
                out.rows.push(self.rows[i].clone());
            }
        }
        out.index = self.index.as_ref().map(|s| IndexSamples {
            file: s.file.clone(),
            x: idx.iter().map(|&i| s.x[i].clone()).collect(),
            y: idx.iter().map(|&i| s.y[i].clone()).collect(),
            lines: idx.iter().map(|&i| s.lines[i]).collect(),
            undecoded: s.undecoded.clone(),
        });
        out
    }
    /// Why built-in modules cannot read this data (index-file samples ianvs did not decode into
    /// numbers), or `None` when every sample has numeric features or text.
    pub fn undecoded(&self) -> Option<String> {
        let s = self.index.as_ref()?.undecoded.as_ref()?;
        Some(format!("{}: {s}", self.index.as_ref()?.file.display()))
    }
}

/// How to split one file into train and test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitMethod {
    /// Every k-th sample goes to test (k = round(1 / test_fraction)); keeps label-sorted files balanced.
    Interleaved,
    /// Per class, a seeded shuffle, then the first `test_fraction` go to test.
    Stratified,
    /// A seeded shuffle of all samples.
    Random,
}

impl SplitMethod {
    pub const NAMES: &'static [&'static str] = &["interleaved", "stratified", "random"];
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "interleaved" => Some(Self::Interleaved),
            "stratified" => Some(Self::Stratified),
            "random" => Some(Self::Random),
            _ => None,
        }
    }
}

/// Splits `data` into (train, test). Deterministic for a given seed.
pub fn split(
    data: &Dataset,
    method: SplitMethod,
    test_fraction: f64,
    seed: u64,
) -> (Dataset, Dataset) {
    let n = data.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    match method {
        SplitMethod::Interleaved => {
            let k = (1.0 / test_fraction).round().max(1.0) as usize;
            for i in 0..n {
                if i % k == k - 1 {
                    test.push(i)
                } else {
                    train.push(i)
                }
            }
        }
        SplitMethod::Random => {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(&mut rng);
            let n_test = (n as f64 * test_fraction).round() as usize;
            test = idx[..n_test].to_vec();
            train = idx[n_test..].to_vec();
            test.sort_unstable();
            train.sort_unstable();
        }
        SplitMethod::Stratified => {
            let classes = data.num_classes().max(1);
            let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
            for i in 0..n {
                by_class[data.labels.get(i).copied().unwrap_or(0) as usize].push(i);
            }
            for mut members in by_class {
                members.shuffle(&mut rng);
                let n_test = (members.len() as f64 * test_fraction).round() as usize;
                test.extend_from_slice(&members[..n_test]);
                train.extend_from_slice(&members[n_test..]);
            }
            test.sort_unstable();
            train.sort_unstable();
        }
    }
    (data.subset(&train), data.subset(&test))
}

/// Refuses what is not a regular file before opening it: opening a FIFO blocks until a
/// writer appears, and a device never ends.
pub fn check_regular_file(path: &Path) -> Result<(), DataError> {
    let meta = std::fs::metadata(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "a folder"
    } else {
        special_kind(&meta)
    };
    Err(DataError::Invalid {
        path: path.into(),
        message: format!("is {what}, not a regular file; ianvs reads data only from regular files"),
    })
}

#[cfg(unix)]
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_meta: &std::fs::Metadata) -> &'static str {
    "a special file"
}

/// An I/O error on line `line`: invalid UTF-8 is named with its line.
fn line_error(path: &Path, line: usize, source: std::io::Error) -> DataError {
    if source.kind() == std::io::ErrorKind::InvalidData {
        DataError::Malformed {
            path: path.into(),
            line,
            message: "the line is not valid UTF-8 text".into(),
        }
    } else {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

fn open(path: &Path) -> Result<Box<dyn BufRead>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    check_regular_file(path)?;
    let file = File::open(path).map_err(io)?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        ))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

/// The format implied by a file name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Csv,
    Jsonl,
    /// Ianvs index file: each line `<sample path> <label>`.
    Index,
}

impl Format {
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_string_lossy().to_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".csv") {
            Some(Format::Csv)
        } else if name.ends_with(".jsonl") || name.ends_with(".json") {
            Some(Format::Jsonl)
        } else if name.ends_with(".txt") {
            Some(Format::Index)
        } else {
            None
        }
    }
}

/// Loads a data file in the format its name implies.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let mut ds = match Format::of(path) {
        Some(Format::Csv) => load_csv(path, opts)?,
        Some(Format::Jsonl) => load_jsonl(path, opts)?,
        Some(Format::Index) => load_index(path, opts)?,
        None => {
            return Err(DataError::Invalid {
                path: path.into(),
                message: "unknown data format: expected .csv, .csv.gz, .jsonl, .jsonl.gz or an Ianvs index .txt".into(),
            })
        }
    };
    if ds.is_empty() {
        return Err(DataError::Invalid {
            path: path.into(),
            message: "holds no samples".into(),
        });
    }
    if opts.feature_scale != 1.0 {
        let s = opts.feature_scale;
        ds.features.iter_mut().for_each(|v| *v /= s);
    }
    ds.source = path.to_path_buf();
    Ok(ds)
}

fn parse_label(raw: &str, path: &Path, line: usize, opts: &LoadOptions) -> Result<u32, DataError> {
    let t = raw.trim();
    let l = t.parse::<u32>().or_else(|_| match t.parse::<f64>() {
        Ok(f) if f >= 0.0 && f.fract() == 0.0 && f < u32::MAX as f64 => Ok(f as u32),
        _ => Err(DataError::Malformed {
            path: path.into(),
            line,
            message: format!("label \"{t}\" is not a non-negative integer class id"),
        }),
    })?;
    let bad = |message| {
        Err(DataError::Malformed {
            path: path.into(),
            line,
            message,
        })
    };
    match opts.num_classes {
        Some(n) if l >= n => bad(format!(
            "label {l} is not below `num_classes` = {n} (class ids run from 0 to {})",
            n.saturating_sub(1)
        )),
        None if l >= MAX_CLASSES => bad(format!(
            "label {l} implies {} classes, more than the limit of {MAX_CLASSES}; set `num_classes` in `testenv.dataset` if the data really has that many",
            l as u64 + 1
        )),
        _ => Ok(l),
    }
}

/// A feature value that must be finite (NaN or infinity would poison every model and metric).
fn finite(v: f32, what: &str) -> Result<f32, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{what} is {v}, not a finite number"))
    }
}

fn load_csv(path: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let reader = open(path)?;
    let mut ds = Dataset::default();
    let mut label_col: Option<usize> = None;
    let mut width = 0;
    for (i, line) in reader.lines().enumerate() {
        let lineno = i + 1;
        let line = line.map_err(|source| line_error(path, lineno, source))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if width == 0 {
            width = fields.len();
            if width < 2 {
                return Err(DataError::Malformed {
                    path: path.into(),
                    line: lineno,
                    message: "a CSV row needs at least one feature and a label".into(),
                });
            }
            let header = fields.iter().any(|f| f.trim().parse::<f64>().is_err());
            let col = match &opts.label {
                LabelColumn::Last => width - 1,
                LabelColumn::First => 0,
                LabelColumn::Index(k) if *k < width => *k,
                LabelColumn::Index(k) => {
                    return Err(DataError::Invalid {
                        path: path.into(),
                        message: format!(
                            "label column {k} does not exist: rows have {width} columns"
                        ),
                    })
                }
                LabelColumn::Name(name) => {
                    if !header {
                        return Err(DataError::Invalid { path: path.into(), message: format!("label column \"{name}\" given by name, but the file has no header row") });
                    }
                    fields
                        .iter()
                        .position(|f| f.trim() == name)
                        .ok_or_else(|| DataError::Invalid {
                            path: path.into(),
                            message: format!(
                                "no column named \"{name}\"; columns are: {}",
                                fields.join(", ")
                            ),
                        })?
                }
            };
            label_col = Some(col);
            ds.dim = width - 1;
            if header {
                continue;
            }
        }
        if fields.len() != width {
            return Err(DataError::Malformed {
                path: path.into(),
                line: lineno,
                message: format!("expected {width} columns, found {}", fields.len()),
            });
        }
        let col = label_col.unwrap_or(width - 1);
        for (j, f) in fields.iter().enumerate() {
            if j == col {
                ds.labels.push(parse_label(f, path, lineno, opts)?);
            } else {
                let v: f32 = f
                    .trim()
                    .parse()
                    .map_err(|_| format!("column {} holds \"{}\", not a number", j + 1, f.trim()))
                    .and_then(|v| finite(v, &format!("column {}", j + 1)))
                    .map_err(|message| DataError::Malformed {
                        path: path.into(),
                        line: lineno,
                        message,
                    })?;
                ds.features.push(v);
            }
        }
    }
    Ok(ds)
}

const TEXT_FIELDS: &[&str] = &["prompt", "text", "question", "query", "input"];

fn load_jsonl(path: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let reader = open(path)?;
    let mut ds = Dataset::default();
    for (i, line) in reader.lines().enumerate() {
        let lineno = i + 1;
        let line = line.map_err(|source| line_error(path, lineno, source))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DataError::Malformed {
            path: path.into(),
            line: lineno,
            message,
        };
        let row: Value =
            serde_json::from_str(&line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = row
            .as_object()
            .ok_or_else(|| bad("each line must be a JSON object".into()))?;
        if let Some(feats) = obj.get("features") {
            let arr = feats
                .as_array()
                .ok_or_else(|| bad("\"features\" must be a list of numbers".into()))?;
            if ds.dim == 0 && ds.is_empty() {
                ds.dim = arr.len();
            } else if arr.len() != ds.dim {
                return Err(bad(format!(
                    "\"features\" has {} values, earlier rows have {}",
                    arr.len(),
                    ds.dim
                )));
            }
            for v in arr {
                ds.features.push(
                    v.as_f64()
                        .ok_or_else(|| bad(format!("feature {v} is not a number")))?
                        as f32,
                );
            }
        }
        let text_key = match &opts.text_field {
            Some(k) => Some(k.as_str()),
            None => TEXT_FIELDS.iter().copied().find(|k| obj.contains_key(*k)),
        };
        if let Some(k) = text_key {
            let t = obj
                .get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("field \"{k}\" is missing or not text")))?;
            ds.texts.push(t.to_string());
        }
        if let Some(label) = obj.get("label") {
            let l = match label {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(bad("\"label\" must be an integer class id".into())),
            };
            ds.labels.push(parse_label(&l, path, lineno, opts)?);
        }
        if ds.dim == 0 && text_key.is_none() {
            return Err(bad(format!(
                "row has neither \"features\" nor a text field ({})",
                TEXT_FIELDS.join(", ")
            )));
        }
        ds.rows.push(row);
    }
    let n = ds.rows.len();
    if !ds.labels.is_empty() && ds.labels.len() != n {
        return Err(DataError::Invalid {
            path: path.into(),
            message: "some rows have a \"label\" and others do not".into(),
        });
    }
    Ok(ds)
}

/// Ianvs index file: each line is `<sample path> <label>`, the path relative to the index file.
/// Every sample is kept as Ianvs passes it ([`IndexSamples`]) for plug-ins; when every sample
/// is a numeric text file (comma or whitespace separated) or a PGM image of one size, its
/// values are also decoded for built-in modules. A missing sample is an error naming the line.
fn load_index(path: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let reader = open(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut ds = Dataset::default();
    let mut fields = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let lineno = i + 1;
        let line = line.map_err(|source| line_error(path, lineno, source))?;
        let bad = |message: String| DataError::Malformed {
            path: path.into(),
            line: lineno,
            message,
        };
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.len() {
            0 => continue,
            2 => {}
            k => {
                return Err(bad(format!(
                    "expected \"<sample path> <label>\", found {k} fields"
                )))
            }
        }
        let sample = base.join(parts[0]);
        check_regular_file(&sample).map_err(|e| {
            bad(format!(
                "sample \"{}\" ({}): {}",
                parts[0],
                sample.display(),
                io_reason(&e)
            ))
        })?;
        ds.labels.push(parse_label(parts[1], path, lineno, opts)?);
        fields.push((parts[0].to_string(), parts[1].to_string(), lineno));
        // Decoding stops at the first sample that is not numbers (an image ianvs does not
        // read, say): the data is then for plug-ins only, and the rest need not be read.
        if ds.index.is_none() {
            match read_sample(&sample) {
                Ok(feats) if feats.is_empty() => {
                    ds.index = Some(IndexSamples {
                        undecoded: Some(format!(
                            "line {lineno}: sample {} holds no values",
                            parts[0]
                        )),
                        ..Default::default()
                    })
                }
                Ok(feats) if ds.features.is_empty() || feats.len() == ds.dim => {
                    ds.dim = feats.len();
                    ds.features.extend(feats);
                }
                Ok(feats) => {
                    ds.index = Some(IndexSamples {
                        undecoded: Some(format!(
                            "line {lineno}: sample {} has {} values, earlier samples have {}",
                            parts[0],
                            feats.len(),
                            ds.dim
                        )),
                        ..Default::default()
                    })
                }
                Err(why) => {
                    ds.index = Some(IndexSamples {
                        undecoded: Some(format!("line {lineno}: sample {}: {why}", parts[0])),
                        ..Default::default()
                    })
                }
            }
        }
    }
    if ds.index.is_some() {
        ds.features.clear();
        ds.dim = 0;
    }
    // Ianvs's rewrite: one relative first field makes every field of every line absolute.
    let rewrite = fields.iter().any(|(x, _, _)| !Path::new(x).is_absolute());
    let root = absolute(base);
    let as_ianvs = |f: &str| {
        if rewrite {
            normalize(&root.join(f)).to_string_lossy().into_owned()
        } else {
            f.to_string()
        }
    };
    let mut s = ds.index.take().unwrap_or_default();
    s.file = path.to_path_buf();
    for (x, y, line) in &fields {
        s.x.push(as_ianvs(x));
        s.y.push(as_ianvs(y));
        s.lines.push(*line);
    }
    ds.index = Some(s);
    Ok(ds)
}

/// The reason of a sample check, without repeating the path the caller already names.
fn io_reason(e: &DataError) -> String {
    match e {
        DataError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "no such file".into()
        }
        DataError::Io { source, .. } => source.to_string(),
        DataError::Invalid { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `p` made absolute against the working directory, as Python's `os.path.abspath`.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `.` and `..` removed lexically (symbolic links are not followed), as Python's
/// `os.path.normpath`.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn read_sample(path: &Path) -> Result<Vec<f32>, String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.starts_with(b"P5") || bytes.starts_with(b"P2") {
        return read_pgm(&bytes);
    }
    let kind = [
        (&b"\x89PNG"[..], "a PNG image"),
        (&b"\xff\xd8\xff"[..], "a JPEG image"),
        (&b"GIF8"[..], "a GIF image"),
        (&b"BM"[..], "a BMP image"),
        (&b"II*\0"[..], "a TIFF image"),
        (&b"MM\0*"[..], "a TIFF image"),
    ]
    .iter()
    .find(|(magic, _)| bytes.starts_with(magic))
    .map(|(_, k)| *k);
    if let Some(k) = kind {
        return Err(format!(
            "{k}, which ianvs does not decode (only PGM images and numeric text)"
        ));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| "neither a PGM image nor numeric text".to_string())?;
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<f32>()
                .map_err(|_| format!("\"{t}\" is not a number"))
                .and_then(|v| finite(v, "a value"))
        })
        .collect()
}

/// Minimal PGM reader (P2 ASCII, P5 binary 8-bit), enough for image datasets given as index files.
fn read_pgm(bytes: &[u8]) -> Result<Vec<f32>, String> {
    let binary = bytes.starts_with(b"P5");
    let mut pos = 2;
    let mut header = Vec::new();
    while header.len() < 3 {
        while pos < bytes.len() && (bytes[pos].is_ascii_whitespace() || bytes[pos] == b'#') {
            if bytes[pos] == b'#' {
                while pos < bytes.len() && bytes[pos] != b'\n' {
                    pos += 1;
                }
            }
            pos += 1;
        }
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let v: usize = std::str::from_utf8(&bytes[start..pos])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad PGM header")?;
        header.push(v);
    }
    let (w, h, max) = (header[0], header[1], header[2]);
    if max > 255 {
        return Err("16-bit PGM is not supported".into());
    }
    if binary {
        let data = bytes
            .get(pos + 1..pos + 1 + w * h)
            .ok_or("PGM pixel data is truncated")?;
        Ok(data.iter().map(|&b| b as f32).collect())
    } else {
        let text = std::str::from_utf8(&bytes[pos..]).map_err(|_| "bad PGM body")?;
        let px: Vec<f32> = text
            .split_whitespace()
            .map(|t| t.parse::<f32>().map_err(|_| "bad PGM pixel".to_string()))
            .collect::<Result<_, _>>()?;
        if px.len() != w * h {
            return Err(format!(
                "PGM has {} pixels, header says {}",
                px.len(),
                w * h
            ));
        }
        Ok(px)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn csv_with_header_and_named_label() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "a.csv", "y,a,b\n1,0.5,2\n0,1,3\n");
        let ds = load(
            &p,
            &LoadOptions {
                label: LabelColumn::Name("y".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((ds.len(), ds.dim), (2, 2));
        assert_eq!(ds.labels, vec![1, 0]);
        assert_eq!(ds.x(1), &[1.0, 3.0]);
    }

    #[test]
    fn hostile_values_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        // A label past the class cap, or past `num_classes` when given.
        let p = write(d.path(), "l.csv", "1,2,0\n1,2,1000000\n");
        let e = load(&p, &LoadOptions::default()).unwrap_err().to_string();
        assert!(
            e.contains("l.csv:2: label 1000000 implies 1000001 classes"),
            "{e}"
        );
        let p = write(d.path(), "k.csv", "1,2,0\n1,2,3\n");
        let opts = LoadOptions {
            num_classes: Some(3),
            ..LoadOptions::default()
        };
        let e = load(&p, &opts).unwrap_err().to_string();
        assert!(
            e.contains("k.csv:2: label 3 is not below `num_classes` = 3"),
            "{e}"
        );
        // NaN and infinite features.
        let p = write(d.path(), "n.csv", "1,2,0\n1,NaN,1\n");
        let e = load(&p, &LoadOptions::default()).unwrap_err().to_string();
        assert!(
            e.contains("n.csv:2: column 2 is NaN, not a finite number"),
            "{e}"
        );
        let p = write(d.path(), "i.csv", "1,2,0\ninf,2,1\n");
        let e = load(&p, &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("i.csv:2: column 1 is inf"), "{e}");
        // A line that is not UTF-8.
        let p = d.path().join("u.jsonl");
        std::fs::write(&p, b"{\"prompt\": \"a\"}\n{\"prompt\": \"\xff\"}\n").unwrap();
        let e = load(&p, &LoadOptions::default()).unwrap_err().to_string();
        assert!(
            e.contains("u.jsonl:2: the line is not valid UTF-8 text"),
            "{e}"
        );
        // A folder is not a data file.
        let e = load(&d.path().join("sub.csv"), &LoadOptions::default());
        assert!(e.is_err());
        std::fs::create_dir(d.path().join("dir.csv")).unwrap();
        let e = load(&d.path().join("dir.csv"), &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a folder, not a regular file"), "{e}");
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "a.csv", "1,2,0\n1,x,1\n");
        let e = load(&p, &LoadOptions::default()).unwrap_err().to_string();
        assert!(
            e.ends_with("a.csv:2: column 2 holds \"x\", not a number"),
            "{e}"
        );
        let p = write(d.path(), "b.jsonl", "{\"prompt\": \"hi\"}\n{bad\n");
        let e = load(&p, &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("b.jsonl:2: not valid JSON"), "{e}");
        let p = write(d.path(), "i.txt", "s1.csv 3 extra\n");
        let e = load(&p, &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("i.txt:1: expected"), "{e}");
    }

    #[test]
    fn index_files_resolve_relative_samples() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "s1.csv", "1,2,3");
        write(d.path(), "s2.pgm", "P2\n3 1\n255\n4 5 6\n");
        let p = write(d.path(), "index.txt", "s1.csv 0\ns2.pgm 1\n");
        let ds = load(&p, &LoadOptions::default()).unwrap();
        assert_eq!(ds.features, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(ds.labels, vec![0, 1]);
    }

    #[test]
    fn index_samples_are_kept_as_ianvs_passes_them() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("img")).unwrap();
        std::fs::write(d.path().join("img/a.png"), b"\x89PNG\r\n\x1a\n\0").unwrap();
        std::fs::write(d.path().join("img/b.png"), b"\x89PNG\r\n\x1a\n\0").unwrap();
        // Relative paths: every field becomes absolute against the index folder (Ianvs's
        // `_process_txt_index_file`), the label too; nothing is decoded.
        let p = write(d.path(), "rel.txt", "img/a.png 3\n./img/../img/b.png 1\n");
        let ds = load(&p, &LoadOptions::default()).unwrap();
        assert_eq!((ds.len(), ds.dim, ds.labels.clone()), (2, 0, vec![3, 1]));
        let s = ds.index.as_ref().unwrap();
        let root = std::path::absolute(d.path()).unwrap();
        assert_eq!(s.x[1], root.join("img/b.png").display().to_string());
        assert_eq!(s.y[0], root.join("3").display().to_string());
        assert_eq!(s.lines, vec![1, 2]);
        let why = ds.undecoded().unwrap();
        assert!(
            why.contains("rel.txt: line 1: sample img/a.png: a PNG image"),
            "{why}"
        );
        // Absolute paths only: used as written.
        let abs = root.join("img/a.png").display().to_string();
        let p = write(d.path(), "abs.txt", &format!("{abs} 2\n"));
        let ds = load(&p, &LoadOptions::default()).unwrap();
        let s = ds.index.as_ref().unwrap();
        assert_eq!((s.x[0].as_str(), s.y[0].as_str()), (abs.as_str(), "2"));
        // A subset keeps the samples with their labels.
        let sub = ds.subset(&[0, 0]);
        assert_eq!(sub.index.unwrap().y, vec!["2", "2"]);
        // Decodable samples keep their numbers for built-in modules, and their paths.
        write(d.path(), "s1.csv", "1,2");
        let p = write(d.path(), "num.txt", "s1.csv 0\n");
        let ds = load(&p, &LoadOptions::default()).unwrap();
        assert_eq!(ds.features, vec![1.0, 2.0]);
        assert!(ds.undecoded().is_none());
        assert_eq!(
            ds.index.unwrap().x[0],
            root.join("s1.csv").display().to_string()
        );
    }

    #[test]
    fn splits_are_balanced_and_deterministic() {
        let ds = Dataset {
            dim: 1,
            features: (0..100).map(|i| i as f32).collect(),
            labels: (0..100).map(|i| (i / 10) as u32).collect(),
            ..Default::default()
        };
        let (tr, te) = split(&ds, SplitMethod::Interleaved, 0.2, 0);
        assert_eq!((tr.len(), te.len()), (80, 20));
        let (_, te1) = split(&ds, SplitMethod::Stratified, 0.2, 7);
        let (_, te2) = split(&ds, SplitMethod::Stratified, 0.2, 7);
        assert_eq!(te1.features, te2.features);
        for c in 0..10 {
            assert_eq!(te1.labels.iter().filter(|&&l| l == c).count(), 2);
        }
    }
}
