//! Typed per-sample records each paradigm returns; metrics read these, never re-parsed tuples.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

/// One test sample of a classification paradigm (single-task learning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationRecord {
    /// Index of the sample in the test split.
    pub index: usize,
    pub label: u32,
    pub prediction: u32,
    /// Probability the model gave its prediction.
    pub confidence: f32,
    /// Wall time of the single-sample forward pass, seconds (device synced).
    pub latency_s: f64,
    /// Warm-up samples are recorded but excluded from latency figures.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warmup: bool,
}

/// The kind of records a paradigm produces; metrics declare which kinds they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordKind {
    Classification,
}

/// All records of one test case.
#[derive(Debug, Clone, PartialEq)]
pub enum Records {
    Classification(Vec<ClassificationRecord>),
}

impl Records {
    pub fn kind(&self) -> RecordKind {
        match self {
            Records::Classification(_) => RecordKind::Classification,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Records::Classification(r) => r.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes one JSON object per line.
    pub fn write_jsonl(&self, w: &mut dyn Write) -> std::io::Result<()> {
        fn each<T: Serialize>(w: &mut dyn Write, rs: &[T]) -> std::io::Result<()> {
            for r in rs {
                serde_json::to_writer(&mut *w, r)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        }
        match self {
            Records::Classification(r) => each(w, r),
        }
    }
}

/// What a paradigm hands back for one test case.
#[derive(Debug, Clone)]
pub struct CaseOutput {
    pub records: Records,
    /// Case-level measurements that are not per-sample (e.g. `training_time_s`), by name.
    pub measurements: BTreeMap<String, f64>,
    /// Extra files to persist in the case folder (name, bytes), e.g. a matrix as CSV.
    pub artifacts: Vec<(String, Vec<u8>)>,
}

impl CaseOutput {
    pub fn new(records: Records) -> Self {
        Self { records, measurements: BTreeMap::new(), artifacts: Vec::new() }
    }
}
