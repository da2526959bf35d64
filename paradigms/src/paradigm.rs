//! The `Paradigm` trait: one collaboration flow (single-task learning, joint inference, ...)
//! that turns a resolved test case into typed records.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::hp::{HpSpec, Hyperparameters};
use crate::modules::WorkContext;
use crate::records::{CaseOutput, RecordKind};
use crate::registry::Registry;

/// A module type a paradigm expects in an algorithm's `modules` list.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSlot {
    pub module_type: &'static str,
    pub required: bool,
    pub help: &'static str,
}

/// One module of a resolved test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedModule {
    #[serde(rename = "type")]
    pub module_type: String,
    pub name: String,
    pub hyperparameters: Hyperparameters,
    /// Set for an out-of-process plug-in module (`url:` in the YAML); `name` is then the alias
    /// the file registers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
}

/// Where a plug-in module lives and how it is run (docs/plugins.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRef {
    /// The plug-in file, absolute.
    pub url: std::path::PathBuf,
    /// sha256 of the file when the job was loaded: an edited plug-in is a new case (a
    /// `--resume` does not skip it).
    #[serde(default)]
    pub sha256: String,
    /// The Python interpreter (for `.py` files).
    pub python: std::path::PathBuf,
    /// The longest one call may take, seconds (not part of the case: it changes no result).
    #[serde(skip_serializing, default)]
    pub timeout_s: f64,
    /// The algorithm's `initial_model_url` (absolute), for a single-task plug-in base model:
    /// in its environment as `BASE_MODEL_URL` and loaded when `save` returns no path, as Ianvs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_model_url: Option<std::path::PathBuf>,
    /// sha256 of the `initial_model_url` file (a folder is named by its path only): a changed
    /// pretrained model is a new case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_model_sha256: Option<String>,
}

/// Everything a paradigm needs to know about one test case.
#[derive(Debug, Clone)]
pub struct CaseSpec {
    pub id: String,
    pub algorithm: String,
    pub modules: Vec<ResolvedModule>,
    /// The paradigm's test-environment settings, defaults filled in.
    pub settings: Hyperparameters,
    /// The job-level seed.
    pub seed: u64,
}

impl CaseSpec {
    pub fn module(&self, module_type: &str) -> Option<&ResolvedModule> {
        self.modules.iter().find(|m| m.module_type == module_type)
    }
    pub fn require(&self, module_type: &str) -> anyhow::Result<&ResolvedModule> {
        self.module(module_type)
            .ok_or_else(|| anyhow::anyhow!("the algorithm has no `{module_type}` module"))
    }
}

/// The test environment's data, loaded once per job and shared by its cases.
#[derive(Debug, Clone)]
pub struct DataSplits {
    pub train: Option<Arc<Dataset>>,
    pub test: Arc<Dataset>,
    /// (channels, height, width) of one sample.
    pub input_shape: (usize, usize, usize),
    pub num_classes: usize,
}

impl DataSplits {
    /// One line for people: "4000 train / 1000 test samples, 784 features, 10 classes", or
    /// "20 prompts" for text data.
    pub fn summary(&self) -> String {
        if !self.test.texts.is_empty() {
            return format!("{} prompts", self.test.texts.len());
        }
        let train = self
            .train
            .as_ref()
            .map_or(String::new(), |t| format!("{} train / ", t.len()));
        if self.test.undecoded().is_some() {
            return format!(
                "{train}{} test samples as index-file paths (for plug-ins), {} classes",
                self.test.len(),
                self.num_classes
            );
        }
        format!(
            "{train}{} test samples, {} features, {} classes",
            self.test.len(),
            self.test.dim,
            self.num_classes
        )
    }
}

/// Values shared by the cases of one job (trained models, loaded LLMs), built once on first
/// use. Concurrent cases asking for the same key wait for the one that builds it.
/// One cache entry: filled once, by the first case that asks.
type CacheCell = Arc<Mutex<Option<Arc<dyn Any + Send + Sync>>>>;

#[derive(Default)]
pub struct JobCache {
    cells: Mutex<HashMap<String, CacheCell>>,
}

impl JobCache {
    pub fn get_or_try_insert<T: Any + Send + Sync>(
        &self,
        key: &str,
        build: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<Arc<T>> {
        let cell = {
            let mut cells = self
                .cells
                .lock()
                .map_err(|_| anyhow::anyhow!("job cache poisoned"))?;
            cells.entry(key.to_string()).or_default().clone()
        };
        let mut slot = cell
            .lock()
            .map_err(|_| anyhow::anyhow!("job cache entry `{key}` poisoned"))?;
        if let Some(v) = slot.as_ref() {
            return v
                .clone()
                .downcast::<T>()
                .map_err(|_| anyhow::anyhow!("job cache entry `{key}` has another type"));
        }
        let v: Arc<T> = Arc::new(build()?);
        *slot = Some(v.clone());
        Ok(v)
    }
}

/// What a paradigm gets to run one case.
pub struct CaseContext<'a> {
    pub data: &'a DataSplits,
    pub registry: &'a Registry,
    pub cache: &'a JobCache,
    pub progress: &'a ProgressBar,
    pub cancel: &'a AtomicBool,
}

impl CaseContext<'_> {
    pub fn work(&self) -> WorkContext<'_> {
        WorkContext {
            progress: self.progress,
            cancel: self.cancel,
        }
    }
}

/// One collaboration flow.
pub trait Paradigm: Send + Sync {
    /// The `paradigm_type` value in algorithm YAML.
    fn name(&self) -> &'static str;
    fn summary(&self) -> &'static str;
    fn slots(&self) -> &'static [ModuleSlot];
    /// Settings this paradigm reads from the test environment, with defaults.
    fn settings(&self) -> Vec<HpSpec>;
    fn record_kind(&self) -> RecordKind;
    /// Cheap checks of one case against the loaded data and the registry (module compatibility,
    /// model files, class counts), run for every case before the first case runs, so
    /// `ianvs validate` reports them and `ianvs run` writes nothing when one fails.
    fn preflight(
        &self,
        _case: &CaseSpec,
        _data: &DataSplits,
        _registry: &Registry,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    fn run(&self, case: &CaseSpec, ctx: &CaseContext) -> anyhow::Result<CaseOutput>;
}
