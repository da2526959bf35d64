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
    JointInference,
    Lifelong,
    Speculative,
}

/// All records of one test case.
#[derive(Debug, Clone, PartialEq)]
pub enum Records {
    Classification(Vec<ClassificationRecord>),
    JointInference(Vec<crate::joint_inference::JointInferenceRecord>),
    Lifelong(Vec<crate::lifelong::LifelongRecord>),
    Speculative(Vec<crate::speculative::SpeculativeRecord>),
}

impl Records {
    pub fn kind(&self) -> RecordKind {
        match self {
            Records::Classification(_) => RecordKind::Classification,
            Records::JointInference(_) => RecordKind::JointInference,
            Records::Lifelong(_) => RecordKind::Lifelong,
            Records::Speculative(_) => RecordKind::Speculative,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Records::Classification(r) => r.len(),
            Records::JointInference(r) => r.len(),
            Records::Lifelong(r) => r.len(),
            Records::Speculative(r) => r.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The records at `idx`, in that order and with repeats: one bootstrap resample (the
    /// confidence intervals recompute a metric on many of these). Out-of-range indices are skipped.
    pub fn resample(&self, idx: &[usize]) -> Records {
        fn pick<T: Clone>(r: &[T], idx: &[usize]) -> Vec<T> {
            idx.iter().filter_map(|&i| r.get(i).cloned()).collect()
        }
        match self {
            Records::Classification(r) => Records::Classification(pick(r, idx)),
            Records::JointInference(r) => Records::JointInference(pick(r, idx)),
            Records::Lifelong(r) => Records::Lifelong(pick(r, idx)),
            Records::Speculative(r) => Records::Speculative(pick(r, idx)),
        }
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
            Records::JointInference(r) => each(w, r),
            Records::Lifelong(r) => each(w, r),
            Records::Speculative(r) => each(w, r),
        }
    }
    /// The records as classification outcomes (label, prediction, confidence, latency), for the
    /// metrics every classifying paradigm shares: accuracy, macro F1, latency, throughput.
    /// `None` for records that are not classifications.
    pub fn classification(&self) -> Option<std::borrow::Cow<'_, [ClassificationRecord]>> {
        match self {
            Records::Classification(r) => Some(std::borrow::Cow::Borrowed(r)),
            Records::JointInference(r) => Some(std::borrow::Cow::Owned(
                r.iter().map(|x| x.as_classification()).collect(),
            )),
            Records::Lifelong(_) | Records::Speculative(_) => None,
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
    /// The test split's labels as Ianvs passes them to metrics (`test_dataset.y` of an index
    /// file: text), by sample index (a record's `index`); `None` for other data. Plug-in
    /// metrics receive these as `y_true`.
    pub sample_labels: Option<std::sync::Arc<Vec<String>>>,
}

impl CaseOutput {
    pub fn new(records: Records) -> Self {
        Self {
            records,
            measurements: BTreeMap::new(),
            artifacts: Vec::new(),
            sample_labels: None,
        }
    }
}
