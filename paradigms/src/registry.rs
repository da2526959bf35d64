//! The module registry: every built-in module, keyed by `(module type, name)`, with its typed
//! hyperparameters and a constructor. `ianvs list`, config validation and "did you mean"
//! suggestions are all generated from it.

use crate::hp::{HpSpec, Hyperparameters};
use crate::joint_inference::{DatasetProcessor, HardExampleMiner};
use crate::lifelong::{
    StrategyContext, TaskAllocation, TaskDefinition, TaskUpdateDecision, UnseenTaskDetect,
};
use crate::link::LinkSpec;
use crate::modules::{BaseModel, BuildContext};
use crate::paradigm::ResolvedModule;

/// Builds a module from its resolved hyperparameters.
pub enum Constructor {
    /// A classifier: `basemodel`, and the `edgemodel` / `cloudmodel` of joint inference.
    BaseModel(fn(&Hyperparameters, &BuildContext) -> anyhow::Result<Box<dyn BaseModel>>),
    /// A `hard_example_mining` module of joint inference.
    HardExampleMiner(
        fn(&Hyperparameters, &BuildContext) -> anyhow::Result<Box<dyn HardExampleMiner>>,
    ),
    /// A `dataset_processor` module.
    DatasetProcessor(
        fn(&Hyperparameters, &BuildContext) -> anyhow::Result<Box<dyn DatasetProcessor>>,
    ),
    /// A `link` module: the emulated edge-cloud network.
    Link(fn(&Hyperparameters, &BuildContext) -> anyhow::Result<LinkSpec>),
    /// A `drafter` or `verifier` language model of speculative decoding (shared, loaded once).
    LanguageModel(
        fn(&Hyperparameters) -> anyhow::Result<std::sync::Arc<dyn crate::modules::LanguageModel>>,
    ),
    /// A `task_definition` module of lifelong learning.
    TaskDefinition(fn(&Hyperparameters, &BuildContext) -> anyhow::Result<Box<dyn TaskDefinition>>),
    /// An `unseen_sample_recognition` module of lifelong learning.
    UnseenTaskDetect(
        fn(&Hyperparameters, &BuildContext) -> anyhow::Result<Box<dyn UnseenTaskDetect>>,
    ),
    /// A `task_allocation` module of lifelong learning.
    TaskAllocation(fn(&Hyperparameters, &BuildContext) -> anyhow::Result<Box<dyn TaskAllocation>>),
    /// A `task_update_decision` module (lifelong-learning strategy); it builds its models from
    /// the algorithm's `basemodel`.
    TaskUpdateDecision(
        fn(&Hyperparameters, &StrategyContext) -> anyhow::Result<Box<dyn TaskUpdateDecision>>,
    ),
}

/// One registered module.
pub struct ModuleEntry {
    pub module_type: &'static str,
    pub name: &'static str,
    pub summary: &'static str,
    pub hyperparameters: Vec<HpSpec>,
    pub constructor: Constructor,
}

impl ModuleEntry {
    pub fn hp(&self, name: &str) -> Option<&HpSpec> {
        self.hyperparameters.iter().find(|h| h.name == name)
    }
}

/// Builds out-of-process plug-in modules (a module with `url:`); the algorithms crate installs
/// one with [`Registry::set_plugins`].
pub trait PluginModules: Send + Sync {
    /// A `basemodel`, `edgemodel` or `cloudmodel` plug-in.
    fn model(&self, m: &ResolvedModule, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>>;
    /// A `hard_example_mining` plug-in.
    fn miner(
        &self,
        m: &ResolvedModule,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn HardExampleMiner>>;
}

/// All modules known to this build.
#[derive(Default)]
pub struct Registry {
    entries: Vec<ModuleEntry>,
    plugins: Option<Box<dyn PluginModules>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn register(&mut self, entry: ModuleEntry) {
        debug_assert!(
            self.find(entry.module_type, entry.name).is_none(),
            "{} {} registered twice",
            entry.module_type,
            entry.name
        );
        self.entries.push(entry);
    }
    pub fn set_plugins(&mut self, p: Box<dyn PluginModules>) {
        self.plugins = Some(p);
    }

    fn plugin_builder(&self, m: &ResolvedModule) -> anyhow::Result<&dyn PluginModules> {
        self.plugins.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "{} \"{}\" is a plug-in (url), but this build has no plug-in support",
                m.module_type,
                m.name
            )
        })
    }

    /// A classifier module of a case: built-in by name, or a plug-in when it has a `url`.
    pub fn module_model(
        &self,
        m: &ResolvedModule,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn BaseModel>> {
        match &m.plugin {
            Some(_) => self.plugin_builder(m)?.model(m, ctx),
            None => self.build_model(&m.module_type, &m.name, &m.hyperparameters, ctx),
        }
    }

    /// A hard-example miner of a case: built-in by name, or a plug-in when it has a `url`.
    pub fn module_miner(
        &self,
        m: &ResolvedModule,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn HardExampleMiner>> {
        match &m.plugin {
            Some(_) => self.plugin_builder(m)?.miner(m, ctx),
            None => self.build_miner(&m.name, &m.hyperparameters, ctx),
        }
    }

    pub fn entries(&self) -> &[ModuleEntry] {
        &self.entries
    }
    /// Module names are matched case-insensitively (Ianvs configs write `FPN`, `fpn`, ...).
    pub fn find(&self, module_type: &str, name: &str) -> Option<&ModuleEntry> {
        self.entries
            .iter()
            .find(|e| e.module_type == module_type && e.name.eq_ignore_ascii_case(name))
    }
    pub fn names(&self, module_type: &str) -> Vec<&'static str> {
        self.entries
            .iter()
            .filter(|e| e.module_type == module_type)
            .map(|e| e.name)
            .collect()
    }

    pub fn build_basemodel(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn BaseModel>> {
        match self.find("basemodel", name).map(|e| &e.constructor) {
            Some(Constructor::BaseModel(f)) => f(hps, ctx),
            _ => anyhow::bail!(
                "no basemodel named \"{name}\"; known: {}",
                self.names("basemodel").join(", ")
            ),
        }
    }

    /// Builds a classifier of any module type registered with [`Constructor::BaseModel`]
    /// (`basemodel`, `edgemodel`, `cloudmodel`).
    pub fn build_model(
        &self,
        module_type: &str,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn BaseModel>> {
        match self.find(module_type, name).map(|e| &e.constructor) {
            Some(Constructor::BaseModel(f)) => f(hps, ctx),
            _ => anyhow::bail!(
                "no {module_type} model named \"{name}\"; known: {}",
                self.names(module_type).join(", ")
            ),
        }
    }

    pub fn build_miner(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn HardExampleMiner>> {
        match self
            .find("hard_example_mining", name)
            .map(|e| &e.constructor)
        {
            Some(Constructor::HardExampleMiner(f)) => f(hps, ctx),
            _ => anyhow::bail!(
                "no hard_example_mining module named \"{name}\"; known: {}",
                self.names("hard_example_mining").join(", ")
            ),
        }
    }

    pub fn build_dataset_processor(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn DatasetProcessor>> {
        match self.find("dataset_processor", name).map(|e| &e.constructor) {
            Some(Constructor::DatasetProcessor(f)) => f(hps, ctx),
            _ => anyhow::bail!(
                "no dataset_processor module named \"{name}\"; known: {}",
                self.names("dataset_processor").join(", ")
            ),
        }
    }

    pub fn build_language_model(
        &self,
        module_type: &str,
        name: &str,
        hps: &Hyperparameters,
    ) -> anyhow::Result<std::sync::Arc<dyn crate::modules::LanguageModel>> {
        match self.find(module_type, name).map(|e| &e.constructor) {
            Some(Constructor::LanguageModel(f)) => f(hps),
            _ => anyhow::bail!(
                "no {module_type} named \"{name}\"; known: {}",
                self.names(module_type).join(", ")
            ),
        }
    }

    pub fn build_link(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<LinkSpec> {
        match self.find("link", name).map(|e| &e.constructor) {
            Some(Constructor::Link(f)) => f(hps, ctx),
            _ => anyhow::bail!(
                "no link module named \"{name}\"; known: {}",
                self.names("link").join(", ")
            ),
        }
    }

    pub fn build_task_definition(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn TaskDefinition>> {
        match self.find("task_definition", name).map(|e| &e.constructor) {
            Some(Constructor::TaskDefinition(f)) => f(hps, ctx),
            _ => anyhow::bail!(
                "no task_definition module named \"{name}\"; known: {}",
                self.names("task_definition").join(", ")
            ),
        }
    }

    pub fn build_unseen_sample_recognition(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn UnseenTaskDetect>> {
        match self
            .find("unseen_sample_recognition", name)
            .map(|e| &e.constructor)
        {
            Some(Constructor::UnseenTaskDetect(f)) => f(hps, ctx),
            _ => anyhow::bail!(
                "no unseen_sample_recognition module named \"{name}\"; known: {}",
                self.names("unseen_sample_recognition").join(", ")
            ),
        }
    }

    pub fn build_task_allocation(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn TaskAllocation>> {
        match self.find("task_allocation", name).map(|e| &e.constructor) {
            Some(Constructor::TaskAllocation(f)) => f(hps, ctx),
            _ => anyhow::bail!(
                "no task_allocation module named \"{name}\"; known: {}",
                self.names("task_allocation").join(", ")
            ),
        }
    }

    pub fn build_task_update_decision(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &StrategyContext,
    ) -> anyhow::Result<Box<dyn TaskUpdateDecision>> {
        match self
            .find("task_update_decision", name)
            .map(|e| &e.constructor)
        {
            Some(Constructor::TaskUpdateDecision(f)) => f(hps, ctx),
            _ => anyhow::bail!(
                "no task_update_decision module named \"{name}\"; known: {}",
                self.names("task_update_decision").join(", ")
            ),
        }
    }
}
