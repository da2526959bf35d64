//! The module registry: every built-in module, keyed by `(module type, name)`, with its typed
//! hyperparameters and a constructor. `ianvs list`, config validation and "did you mean"
//! suggestions are all generated from it.

use crate::hp::{HpSpec, HpStruct, Hyperparameters};
use crate::joint_inference::{DatasetProcessor, HardExampleMiner};
use crate::lifelong::{
    StrategyContext, TaskAllocation, TaskDefinition, TaskUpdateDecision, UnseenTaskDetect,
};
use crate::link::LinkSpec;
use crate::modules::{BaseModel, BuildContext};
use crate::paradigm::ResolvedModule;

/// A constructor taking the case's resolved hyperparameters and a context.
pub type Build<C, T> = Box<dyn Fn(&Hyperparameters, &C) -> anyhow::Result<T> + Send + Sync>;

/// A constructor of a shared language model (no context: it is loaded once per job).
pub type BuildLanguageModel = Box<
    dyn Fn(&Hyperparameters) -> anyhow::Result<std::sync::Arc<dyn crate::modules::LanguageModel>>
        + Send
        + Sync,
>;

/// Builds a module from its resolved hyperparameters. Usually made by a typed helper of
/// [`ModuleEntry`] (`ModuleEntry::miner::<MyHps>(...)`), which parses the values into the
/// module's hyperparameter struct first.
pub enum Constructor {
    /// A classifier: `basemodel`, and the `edgemodel` / `cloudmodel` of joint inference.
    BaseModel(Build<BuildContext, Box<dyn BaseModel>>),
    /// A `hard_example_mining` module of joint inference.
    HardExampleMiner(Build<BuildContext, Box<dyn HardExampleMiner>>),
    /// A `dataset_processor` module.
    DatasetProcessor(Build<BuildContext, Box<dyn DatasetProcessor>>),
    /// A `link` module: the emulated edge-cloud network.
    Link(Build<BuildContext, LinkSpec>),
    /// A `drafter` or `verifier` language model of speculative decoding (shared, loaded once).
    LanguageModel(BuildLanguageModel),
    /// A `task_definition` module of lifelong learning.
    TaskDefinition(Build<BuildContext, Box<dyn TaskDefinition>>),
    /// An `unseen_sample_recognition` module of lifelong learning.
    UnseenTaskDetect(Build<BuildContext, Box<dyn UnseenTaskDetect>>),
    /// A `task_allocation` module of lifelong learning.
    TaskAllocation(Build<BuildContext, Box<dyn TaskAllocation>>),
    /// A `task_update_decision` module (lifelong-learning strategy); it builds its models from
    /// the algorithm's `basemodel`.
    TaskUpdateDecision(Build<StrategyContext, Box<dyn TaskUpdateDecision>>),
}

impl Constructor {
    /// The module types this kind of constructor serves (what the paradigms ask it for).
    pub fn module_types(&self) -> &'static [&'static str] {
        match self {
            Constructor::BaseModel(_) => &["basemodel", "edgemodel", "cloudmodel"],
            Constructor::HardExampleMiner(_) => &["hard_example_mining"],
            Constructor::DatasetProcessor(_) => &["dataset_processor"],
            Constructor::Link(_) => &["link"],
            Constructor::LanguageModel(_) => &["drafter", "verifier"],
            Constructor::TaskDefinition(_) => &["task_definition"],
            Constructor::UnseenTaskDetect(_) => &["unseen_sample_recognition"],
            Constructor::TaskAllocation(_) => &["task_allocation"],
            Constructor::TaskUpdateDecision(_) => &["task_update_decision"],
        }
    }
}

/// Wraps a constructor of a typed hyperparameter struct into one of resolved values.
fn typed<H: HpStruct + 'static, C: ?Sized, T>(
    f: fn(H, &C) -> anyhow::Result<T>,
) -> impl Fn(&Hyperparameters, &C) -> anyhow::Result<T> + Send + Sync {
    move |h, c| f(H::parse(h)?, c)
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
    fn of<H: HpStruct>(
        module_type: &'static str,
        name: &'static str,
        summary: &'static str,
        constructor: Constructor,
    ) -> Self {
        Self {
            module_type,
            name,
            summary,
            hyperparameters: H::specs(),
            constructor,
        }
    }

    /// A classifier of module type `basemodel`, `edgemodel` or `cloudmodel` whose
    /// hyperparameters are the struct `H` (spec table and parse both from `H`).
    pub fn model<H: HpStruct + 'static>(
        module_type: &'static str,
        name: &'static str,
        summary: &'static str,
        build: fn(H, &BuildContext) -> anyhow::Result<Box<dyn BaseModel>>,
    ) -> Self {
        Self::of::<H>(
            module_type,
            name,
            summary,
            Constructor::BaseModel(Box::new(typed(build))),
        )
    }

    /// A `hard_example_mining` module with hyperparameters `H`.
    pub fn miner<H: HpStruct + 'static>(
        name: &'static str,
        summary: &'static str,
        build: fn(H, &BuildContext) -> anyhow::Result<Box<dyn HardExampleMiner>>,
    ) -> Self {
        Self::of::<H>(
            "hard_example_mining",
            name,
            summary,
            Constructor::HardExampleMiner(Box::new(typed(build))),
        )
    }

    /// A `dataset_processor` module with hyperparameters `H`.
    pub fn dataset_processor<H: HpStruct + 'static>(
        name: &'static str,
        summary: &'static str,
        build: fn(H, &BuildContext) -> anyhow::Result<Box<dyn DatasetProcessor>>,
    ) -> Self {
        Self::of::<H>(
            "dataset_processor",
            name,
            summary,
            Constructor::DatasetProcessor(Box::new(typed(build))),
        )
    }

    /// A `task_definition` module (lifelong learning) with hyperparameters `H`.
    pub fn task_definition<H: HpStruct + 'static>(
        name: &'static str,
        summary: &'static str,
        build: fn(H, &BuildContext) -> anyhow::Result<Box<dyn TaskDefinition>>,
    ) -> Self {
        Self::of::<H>(
            "task_definition",
            name,
            summary,
            Constructor::TaskDefinition(Box::new(typed(build))),
        )
    }

    /// An `unseen_sample_recognition` module (lifelong learning) with hyperparameters `H`.
    pub fn unseen_sample_recognition<H: HpStruct + 'static>(
        name: &'static str,
        summary: &'static str,
        build: fn(H, &BuildContext) -> anyhow::Result<Box<dyn UnseenTaskDetect>>,
    ) -> Self {
        Self::of::<H>(
            "unseen_sample_recognition",
            name,
            summary,
            Constructor::UnseenTaskDetect(Box::new(typed(build))),
        )
    }

    /// A `task_allocation` module (lifelong learning) with hyperparameters `H`.
    pub fn task_allocation<H: HpStruct + 'static>(
        name: &'static str,
        summary: &'static str,
        build: fn(H, &BuildContext) -> anyhow::Result<Box<dyn TaskAllocation>>,
    ) -> Self {
        Self::of::<H>(
            "task_allocation",
            name,
            summary,
            Constructor::TaskAllocation(Box::new(typed(build))),
        )
    }

    /// A `task_update_decision` module (lifelong-learning strategy) with hyperparameters `H`.
    pub fn task_update_decision<H: HpStruct + 'static>(
        name: &'static str,
        summary: &'static str,
        build: fn(H, &StrategyContext) -> anyhow::Result<Box<dyn TaskUpdateDecision>>,
    ) -> Self {
        Self::of::<H>(
            "task_update_decision",
            name,
            summary,
            Constructor::TaskUpdateDecision(Box::new(typed(build))),
        )
    }

    pub fn hp(&self, name: &str) -> Option<&HpSpec> {
        self.hyperparameters.iter().find(|h| h.name == name)
    }
}

/// Why a module from outside the built-ins could not be registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    #[error("module {module_type} \"{name}\" is already registered (as \"{existing}\"; names match case-insensitively): pick another name")]
    Taken {
        module_type: &'static str,
        name: &'static str,
        existing: &'static str,
    },
    #[error("module {module_type} \"{name}\": its constructor builds modules of type {}, not {module_type}", serves.join(" / "))]
    WrongConstructor {
        module_type: &'static str,
        name: &'static str,
        serves: &'static [&'static str],
    },
    #[error("module {module_type} \"{name}\": a module name must be non-empty and without spaces")]
    BadName {
        module_type: &'static str,
        name: &'static str,
    },
    #[error("module {module_type} \"{name}\" declares hyperparameter `{hp}` twice")]
    DuplicateHp {
        module_type: &'static str,
        name: &'static str,
        hp: &'static str,
    },
    #[error("module {module_type} \"{name}\": the default of hyperparameter `{hp}` does not fit its own spec: {reason}")]
    BadDefault {
        module_type: &'static str,
        name: &'static str,
        hp: &'static str,
        reason: String,
    },
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
    /// Adds a built-in module; registering the same `(module type, name)` twice is a bug.
    pub fn register(&mut self, entry: ModuleEntry) {
        debug_assert!(
            self.find(entry.module_type, entry.name).is_none(),
            "{} {} registered twice",
            entry.module_type,
            entry.name
        );
        debug_assert!(
            entry
                .constructor
                .module_types()
                .contains(&entry.module_type),
            "{} {}: constructor for another module type",
            entry.module_type,
            entry.name
        );
        self.entries.push(entry);
    }

    /// Adds a module from outside this build's built-ins (a downstream crate), refusing one
    /// whose `(module type, name)` is already taken (names match case-insensitively, as in
    /// YAML) or whose name or hyperparameters cannot be written in a config.
    pub fn try_register(&mut self, entry: ModuleEntry) -> Result<(), RegistryError> {
        if let Some(e) = self.find(entry.module_type, entry.name) {
            return Err(RegistryError::Taken {
                module_type: entry.module_type,
                name: entry.name,
                existing: e.name,
            });
        }
        if entry.name.is_empty() || entry.name.chars().any(|c| c.is_whitespace()) {
            return Err(RegistryError::BadName {
                module_type: entry.module_type,
                name: entry.name,
            });
        }
        let serves = entry.constructor.module_types();
        if !serves.contains(&entry.module_type) {
            return Err(RegistryError::WrongConstructor {
                module_type: entry.module_type,
                name: entry.name,
                serves,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &entry.hyperparameters {
            if !seen.insert(h.name) {
                return Err(RegistryError::DuplicateHp {
                    module_type: entry.module_type,
                    name: entry.name,
                    hp: h.name,
                });
            }
            if let Some(d) = &h.default {
                if !d.is_null() {
                    if let Err(reason) = h.check(d) {
                        return Err(RegistryError::BadDefault {
                            module_type: entry.module_type,
                            name: entry.name,
                            hp: h.name,
                            reason,
                        });
                    }
                }
            }
        }
        self.entries.push(entry);
        Ok(())
    }
    /// The module types some entry is registered under, in registration order.
    pub fn module_types(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for e in &self.entries {
            if !out.contains(&e.module_type) {
                out.push(e.module_type);
            }
        }
        out
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

    /// The constructor of `(module_type, name)`, or an error listing the known names.
    fn constructor(&self, module_type: &str, name: &str) -> anyhow::Result<&Constructor> {
        match self.find(module_type, name) {
            Some(e) => Ok(&e.constructor),
            None => anyhow::bail!(
                "no {module_type} module named \"{name}\"; known: {}",
                self.names(module_type).join(", ")
            ),
        }
    }

    pub fn build_basemodel(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn BaseModel>> {
        self.build_model("basemodel", name, hps, ctx)
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
        match self.constructor(module_type, name)? {
            Constructor::BaseModel(f) => f(hps, ctx),
            c => Err(mismatch(module_type, name, c)),
        }
    }

    pub fn build_miner(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn HardExampleMiner>> {
        match self.constructor("hard_example_mining", name)? {
            Constructor::HardExampleMiner(f) => f(hps, ctx),
            c => Err(mismatch("hard_example_mining", name, c)),
        }
    }

    pub fn build_dataset_processor(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn DatasetProcessor>> {
        match self.constructor("dataset_processor", name)? {
            Constructor::DatasetProcessor(f) => f(hps, ctx),
            c => Err(mismatch("dataset_processor", name, c)),
        }
    }

    pub fn build_language_model(
        &self,
        module_type: &str,
        name: &str,
        hps: &Hyperparameters,
    ) -> anyhow::Result<std::sync::Arc<dyn crate::modules::LanguageModel>> {
        match self.constructor(module_type, name)? {
            Constructor::LanguageModel(f) => f(hps),
            c => Err(mismatch(module_type, name, c)),
        }
    }

    pub fn build_link(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<LinkSpec> {
        match self.constructor("link", name)? {
            Constructor::Link(f) => f(hps, ctx),
            c => Err(mismatch("link", name, c)),
        }
    }

    pub fn build_task_definition(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn TaskDefinition>> {
        match self.constructor("task_definition", name)? {
            Constructor::TaskDefinition(f) => f(hps, ctx),
            c => Err(mismatch("task_definition", name, c)),
        }
    }

    pub fn build_unseen_sample_recognition(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn UnseenTaskDetect>> {
        match self.constructor("unseen_sample_recognition", name)? {
            Constructor::UnseenTaskDetect(f) => f(hps, ctx),
            c => Err(mismatch("unseen_sample_recognition", name, c)),
        }
    }

    pub fn build_task_allocation(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn TaskAllocation>> {
        match self.constructor("task_allocation", name)? {
            Constructor::TaskAllocation(f) => f(hps, ctx),
            c => Err(mismatch("task_allocation", name, c)),
        }
    }

    pub fn build_task_update_decision(
        &self,
        name: &str,
        hps: &Hyperparameters,
        ctx: &StrategyContext,
    ) -> anyhow::Result<Box<dyn TaskUpdateDecision>> {
        match self.constructor("task_update_decision", name)? {
            Constructor::TaskUpdateDecision(f) => f(hps, ctx),
            c => Err(mismatch("task_update_decision", name, c)),
        }
    }
}

/// A module whose constructor does not build what its type asks for: registration refuses
/// this, so reaching it is a bug.
fn mismatch(module_type: &str, name: &str, c: &Constructor) -> anyhow::Error {
    anyhow::anyhow!(
        "module {module_type} \"{name}\" was registered with a constructor for {}",
        c.module_types().join(" / ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hp::HpKind;
    use serde_json::json;

    fn entry(name: &'static str, hyperparameters: Vec<HpSpec>) -> ModuleEntry {
        ModuleEntry {
            module_type: "link",
            name,
            summary: "",
            hyperparameters,
            constructor: Constructor::Link(Box::new(|_, _| {
                anyhow::bail!("not built in this test")
            })),
        }
    }

    #[test]
    fn try_register_refuses_clashes_and_bad_specs() {
        let mut r = Registry::new();
        r.try_register(entry("Wan", vec![])).unwrap();
        let e = r.try_register(entry("WAN", vec![])).unwrap_err();
        assert!(
            matches!(
                e,
                RegistryError::Taken {
                    existing: "Wan",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("already registered"), "{e}");
        let t = HpSpec::new("t", HpKind::Float { min: 0.0, max: 1.0 }, json!(2.0), "");
        let e = r.try_register(entry("Lan", vec![t.clone()])).unwrap_err();
        assert!(e.to_string().contains("`t`"), "{e}");
        let ok = HpSpec::new("t", HpKind::Float { min: 0.0, max: 1.0 }, json!(0.5), "");
        let e = r
            .try_register(entry("Lan", vec![ok.clone(), ok.clone()]))
            .unwrap_err();
        assert!(
            matches!(e, RegistryError::DuplicateHp { hp: "t", .. }),
            "{e}"
        );
        assert!(r.try_register(entry("my link", vec![])).is_err());
        let miner = ModuleEntry {
            module_type: "hard_example_mining",
            ..entry("Lan", vec![])
        };
        let e = r.try_register(miner).unwrap_err();
        assert!(
            matches!(
                e,
                RegistryError::WrongConstructor {
                    serves: ["link"],
                    ..
                }
            ),
            "{e}"
        );
        r.try_register(entry("Lan", vec![ok])).unwrap();
        assert_eq!(r.names("link"), vec!["Wan", "Lan"]);
        assert_eq!(r.module_types(), vec!["link"]);
    }
}
