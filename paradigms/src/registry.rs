//! The module registry: every built-in module, keyed by `(module type, name)`, with its typed
//! hyperparameters and a constructor. `ianvs list`, config validation and "did you mean"
//! suggestions are all generated from it.

use crate::hp::{HpSpec, Hyperparameters};
use crate::modules::{BaseModel, BuildContext};

/// Builds a module from its resolved hyperparameters.
pub enum Constructor {
    BaseModel(fn(&Hyperparameters, &BuildContext) -> anyhow::Result<Box<dyn BaseModel>>),
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

/// All modules known to this build.
#[derive(Default)]
pub struct Registry {
    entries: Vec<ModuleEntry>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn register(&mut self, entry: ModuleEntry) {
        debug_assert!(self.find(entry.module_type, entry.name).is_none(), "{} {} registered twice", entry.module_type, entry.name);
        self.entries.push(entry);
    }
    pub fn entries(&self) -> &[ModuleEntry] {
        &self.entries
    }
    /// Module names are matched case-insensitively (Ianvs configs write `FPN`, `fpn`, ...).
    pub fn find(&self, module_type: &str, name: &str) -> Option<&ModuleEntry> {
        self.entries.iter().find(|e| e.module_type == module_type && e.name.eq_ignore_ascii_case(name))
    }
    pub fn names(&self, module_type: &str) -> Vec<&'static str> {
        self.entries.iter().filter(|e| e.module_type == module_type).map(|e| e.name).collect()
    }

    pub fn build_basemodel(&self, name: &str, hps: &Hyperparameters, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
        match self.find("basemodel", name).map(|e| &e.constructor) {
            Some(Constructor::BaseModel(f)) => f(hps, ctx),
            _ => anyhow::bail!("no basemodel named \"{name}\"; known: {}", self.names("basemodel").join(", ")),
        }
    }
}
