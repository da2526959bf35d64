//! Out-of-process plug-ins (docs/plugins.md): a module or metric `url:` naming a file runs in
//! a child process spoken to over stdin/stdout with a small versioned protocol. `.py` files run
//! unchanged in the Python host (`plugins/python/ianvs_host.py`, which provides Sedna's
//! `ClassFactory` when Sedna is absent); any other file is run as an executable that speaks
//! the protocol itself.

pub mod modules;
pub mod process;
pub mod protocol;
pub mod shm;

pub use modules::{check_plugin, class_type, PluginFactory, PluginMetric};
pub use process::{choose_python, kill_all, CallStats, Launch, PluginFailure, PluginProcess};
