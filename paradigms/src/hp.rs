//! Typed hyperparameters: the spec a module declares (name, kind, range, default) and the
//! resolved values a test case hands to the module.
//!
//! Specs are the single source of truth for `ianvs list modules`, config validation (type,
//! range and "did you mean" messages) and defaults, so none of these lists is kept by hand.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// What values a hyperparameter accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum HpKind {
    /// An integer in `[min, max]`.
    Int {
        min: i64,
        max: i64,
    },
    /// A float in `[min, max]` (integers are accepted and widened).
    Float {
        min: f64,
        max: f64,
    },
    Bool,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A list of integers, each in `[min, max]`; a single integer is accepted as a one-item list.
    IntList {
        min: i64,
        max: i64,
    },
    /// A list of CPU numbers in `[0, 1023]` that this process may run on (on Linux, the
    /// `Cpus_allowed_list` of `/proc/self/status`: a CPU outside it would fail only when the
    /// case runs); a single integer is accepted as a one-item list.
    CpuList,
    /// Free text (a model name, a path relative to the YAML file that names it, ...).
    Text,
    /// A file or folder path; resolved relative to the YAML file that names it.
    Path,
}

impl fmt::Display for HpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HpKind::Int { min, max } => write!(f, "integer in [{min}, {max}]"),
            HpKind::Float { min, max } => write!(f, "number in [{min}, {max}]"),
            HpKind::Bool => write!(f, "true | false"),
            HpKind::Choice(c) => write!(f, "one of {}", c.join(" | ")),
            HpKind::IntList { min, max } => write!(f, "list of integers in [{min}, {max}]"),
            HpKind::CpuList => match allowed_cpus() {
                Some(cpus) => write!(
                    f,
                    "list of CPUs this process may run on ({})",
                    cpu_ranges(&cpus)
                ),
                None => write!(f, "list of CPU numbers in [0, {MAX_CPU}]"),
            },
            HpKind::Text => write!(f, "text"),
            HpKind::Path => write!(f, "path"),
        }
    }
}

/// One hyperparameter a module (or a paradigm's test-environment setting) accepts.
#[derive(Debug, Clone)]
pub struct HpSpec {
    pub name: &'static str,
    pub kind: HpKind,
    /// `None` means the value is required.
    pub default: Option<Value>,
    pub help: &'static str,
}

impl HpSpec {
    pub fn new(
        name: &'static str,
        kind: HpKind,
        default: impl Into<Option<Value>>,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind,
            default: default.into(),
            help,
        }
    }

    /// Checks `value` against the kind and returns it in canonical form (ints widened to
    /// floats for float specs, a scalar int wrapped for int lists), or a one-line reason.
    pub fn check(&self, value: &Value) -> Result<Value, String> {
        match (&self.kind, value) {
            (HpKind::Int { min, max }, Value::Number(n)) if n.is_i64() || n.is_u64() => {
                let v = n.as_i64().ok_or_else(|| format!("{n} is too large"))?;
                if v < *min || v > *max {
                    return Err(format!("{v} is out of range: expected an {}", self.kind));
                }
                Ok(value.clone())
            }
            (HpKind::Float { min, max }, Value::Number(n)) => {
                let v = n.as_f64().unwrap_or(f64::NAN);
                if !(v >= *min && v <= *max) {
                    return Err(format!("{v} is out of range: expected a {}", self.kind));
                }
                Ok(serde_json::json!(v))
            }
            (HpKind::Bool, Value::Bool(_)) => Ok(value.clone()),
            (HpKind::Choice(choices), Value::String(s)) => {
                if choices.contains(&s.as_str()) {
                    Ok(value.clone())
                } else {
                    Err(format!("\"{s}\" is not one of {}", choices.join(", ")))
                }
            }
            (HpKind::IntList { .. }, Value::Number(_)) => {
                self.check(&Value::Array(vec![value.clone()]))
            }
            (HpKind::IntList { min, max }, Value::Array(items)) => {
                for item in items {
                    match item.as_i64() {
                        Some(v) if v >= *min && v <= *max => {}
                        _ => return Err(format!("{item} is not an integer in [{min}, {max}]")),
                    }
                }
                Ok(value.clone())
            }
            (HpKind::CpuList, Value::Number(_)) => self.check(&Value::Array(vec![value.clone()])),
            (HpKind::CpuList, Value::Array(items)) => {
                let allowed = allowed_cpus();
                for item in items {
                    let cpu = item
                        .as_u64()
                        .filter(|&c| c <= MAX_CPU)
                        .ok_or_else(|| format!("{item} is not a CPU number in [0, {MAX_CPU}]"))?;
                    if let Some(allowed) = &allowed {
                        if !allowed.contains(&cpu) {
                            return Err(format!(
                                "CPU {cpu} is not one this process may run on (allowed CPUs: {})",
                                cpu_ranges(allowed)
                            ));
                        }
                    }
                }
                Ok(value.clone())
            }
            (HpKind::Text | HpKind::Path, Value::String(_)) => Ok(value.clone()),
            (kind, other) => Err(format!("expected {kind}, found {}", describe(other))),
        }
    }
}

/// The highest CPU number a [`HpKind::CpuList`] accepts (Linux's default `CPU_SETSIZE` − 1).
const MAX_CPU: u64 = 1023;

/// The CPUs this process may run on: Linux's `Cpus_allowed_list` (`None` elsewhere, or when it
/// cannot be read).
pub fn allowed_cpus() -> Option<Vec<u64>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(list.trim())
}

/// Parses Linux's CPU list format (`0-3,8,10-11`).
fn parse_cpu_list(list: &str) -> Option<Vec<u64>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.trim().parse::<u64>().ok()?..=b.trim().parse().ok()?),
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// `[0, 1, 2, 5]` → `0-2, 5`.
fn cpu_ranges(cpus: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if j == i {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

/// A short description of a JSON value's type for error messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("text \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Resolved hyperparameter values of one module in one test case, defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hyperparameters(pub BTreeMap<String, Value>);

/// Asking for a hyperparameter that validation should have guaranteed; a bug, not bad input.
#[derive(Debug, thiserror::Error)]
#[error("hyperparameter `{name}`: {reason}")]
pub struct HpError {
    pub name: String,
    pub reason: String,
}

impl Hyperparameters {
    pub fn get(&self, name: &str) -> Result<&Value, HpError> {
        self.0.get(name).ok_or_else(|| HpError {
            name: name.into(),
            reason: "missing".into(),
        })
    }
    fn bad(name: &str, want: &str, v: &Value) -> HpError {
        HpError {
            name: name.into(),
            reason: format!("expected {want}, found {}", describe(v)),
        }
    }
    pub fn int(&self, name: &str) -> Result<i64, HpError> {
        let v = self.get(name)?;
        v.as_i64().ok_or_else(|| Self::bad(name, "an integer", v))
    }
    pub fn usize(&self, name: &str) -> Result<usize, HpError> {
        let v = self.int(name)?;
        usize::try_from(v).map_err(|_| HpError {
            name: name.into(),
            reason: format!("{v} is negative"),
        })
    }
    pub fn u64(&self, name: &str) -> Result<u64, HpError> {
        let v = self.int(name)?;
        u64::try_from(v).map_err(|_| HpError {
            name: name.into(),
            reason: format!("{v} is negative"),
        })
    }
    pub fn float(&self, name: &str) -> Result<f64, HpError> {
        let v = self.get(name)?;
        v.as_f64().ok_or_else(|| Self::bad(name, "a number", v))
    }
    /// A number, or `None` when the value is null (an optional hyperparameter left unset).
    pub fn opt_float(&self, name: &str) -> Result<Option<f64>, HpError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Self::bad(name, "a number", v)),
        }
    }
    pub fn bool(&self, name: &str) -> Result<bool, HpError> {
        let v = self.get(name)?;
        v.as_bool()
            .ok_or_else(|| Self::bad(name, "true or false", v))
    }
    pub fn str(&self, name: &str) -> Result<&str, HpError> {
        let v = self.get(name)?;
        v.as_str().ok_or_else(|| Self::bad(name, "text", v))
    }
    pub fn int_list(&self, name: &str) -> Result<Vec<i64>, HpError> {
        let v = self.get(name)?;
        match v {
            Value::Number(_) => Ok(vec![self.int(name)?]),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_i64().ok_or_else(|| Self::bad(name, "integers", i)))
                .collect(),
            _ => Err(Self::bad(name, "a list of integers", v)),
        }
    }
    pub fn is_set(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|v| !v.is_null())
    }
}

/// A module's hyperparameters as one typed struct: the spec table (`ianvs list modules`, config
/// validation, defaults) and the parse of a case's resolved values both come from the struct's
/// definition. Write it with [`hyperparameters!`](crate::hyperparameters).
pub trait HpStruct: Sized {
    /// The spec table, in field order.
    fn specs() -> Vec<HpSpec>;
    /// Reads the resolved values of one case (validated against [`HpStruct::specs`], defaults
    /// filled in, so an error here is a bug, not bad input).
    fn parse(h: &Hyperparameters) -> Result<Self, HpError>;
}

/// A module without hyperparameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoHyperparameters;

impl HpStruct for NoHyperparameters {
    fn specs() -> Vec<HpSpec> {
        Vec::new()
    }
    fn parse(_: &Hyperparameters) -> Result<Self, HpError> {
        Ok(NoHyperparameters)
    }
}

/// A Rust type one hyperparameter is read into.
pub trait HpValue: Sized {
    fn read(h: &Hyperparameters, name: &str) -> Result<Self, HpError>;
}

macro_rules! hp_value {
    ($($ty:ty => |$h:ident, $n:ident| $read:expr;)*) => {
        $(impl HpValue for $ty {
            fn read($h: &Hyperparameters, $n: &str) -> Result<Self, HpError> {
                $read
            }
        })*
    };
}

hp_value! {
    i64 => |h, n| h.int(n);
    u64 => |h, n| h.u64(n);
    usize => |h, n| h.usize(n);
    f64 => |h, n| h.float(n);
    bool => |h, n| h.bool(n);
    String => |h, n| h.str(n).map(str::to_string);
    Vec<i64> => |h, n| h.int_list(n);
    Option<f64> => |h, n| h.opt_float(n);
    Option<u64> => |h, n| if h.is_set(n) { h.u64(n).map(Some) } else { Ok(None) };
    Option<String> => |h, n| if h.is_set(n) { h.str(n).map(|s| Some(s.to_string())) } else { Ok(None) };
    Value => |h, n| h.get(n).cloned();
}

impl HpValue for Vec<usize> {
    fn read(h: &Hyperparameters, name: &str) -> Result<Self, HpError> {
        h.int_list(name)?
            .into_iter()
            .map(|v| {
                usize::try_from(v).map_err(|_| HpError {
                    name: name.into(),
                    reason: format!("{v} is negative"),
                })
            })
            .collect()
    }
}

/// What a `default:` in [`hyperparameters!`](crate::hyperparameters) may be: a number, a bool, a
/// string, a JSON value (`json!([128])`), or `None` for "required" (or filled by the job, like
/// `seed`).
pub trait IntoDefault {
    fn into_default(self) -> Option<Value>;
}

impl IntoDefault for Option<Value> {
    fn into_default(self) -> Option<Value> {
        self
    }
}

macro_rules! into_default {
    ($($ty:ty),*) => {
        $(impl IntoDefault for $ty {
            fn into_default(self) -> Option<Value> {
                Some(serde_json::json!(self))
            }
        })*
    };
}

into_default!(i64, i32, u64, usize, f64, bool, &str, Value);

/// Declares a module's hyperparameters as a typed struct and derives [`HpStruct`] for it: the
/// spec table (names, kinds and ranges, defaults, help) and the parse of a case's values, in
/// field order. A field written `{ flatten }` splices in
/// another `HpStruct` (shared training settings, say) at that position.
///
/// ```
/// use ianvs_paradigms::hp::{HpKind, HpStruct, Hyperparameters};
///
/// ianvs_paradigms::hyperparameters! {
///     /// The hyperparameters of a confidence miner.
///     #[derive(Debug, Clone, PartialEq)]
///     pub struct MinerHps {
///         pub threshold: f64 {
///             kind: HpKind::Float { min: 0.0, max: 1.0 },
///             default: 0.5,
///             help: "hard iff the confidence is below this",
///         },
///         pub seed: Option<u64> {
///             kind: HpKind::Int { min: 0, max: i64::MAX },
///             default: None,
///             help: "seeds the draws (default: the job seed)",
///         },
///     }
/// }
///
/// let specs = MinerHps::specs();
/// assert_eq!(specs[0].name, "threshold");
/// assert_eq!(specs[0].default, Some(serde_json::json!(0.5)));
/// let h = Hyperparameters([("threshold".to_string(), serde_json::json!(0.7))].into());
/// assert_eq!(MinerHps::parse(&h).unwrap(), MinerHps { threshold: 0.7, seed: None });
/// ```
#[macro_export]
macro_rules! hyperparameters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $field:ident : $ty:ty { $($spec:tt)* }
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$fmeta])* $fvis $field: $ty,
            )*
        }

        impl $crate::hp::HpStruct for $name {
            #[allow(clippy::vec_init_then_push)]
            fn specs() -> ::std::vec::Vec<$crate::hp::HpSpec> {
                #[allow(unused_mut)]
                let mut v = ::std::vec::Vec::new();
                $( $crate::__hp_spec!(v, $field, $ty, { $($spec)* }); )*
                v
            }
            fn parse(
                h: &$crate::hp::Hyperparameters,
            ) -> ::std::result::Result<Self, $crate::hp::HpError> {
                ::std::result::Result::Ok(Self {
                    $( $field: $crate::__hp_read!(h, $field, $ty, { $($spec)* }), )*
                })
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hp_spec {
    ($v:ident, $field:ident, $ty:ty, { flatten }) => {
        $v.extend(<$ty as $crate::hp::HpStruct>::specs())
    };
    ($v:ident, $field:ident, $ty:ty, { kind: $kind:expr, default: $default:expr, help: $help:expr $(,)? }) => {
        $v.push($crate::hp::HpSpec::new(
            stringify!($field),
            $kind,
            $crate::hp::IntoDefault::into_default($default),
            $help,
        ))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hp_read {
    ($h:ident, $field:ident, $ty:ty, { flatten }) => {
        <$ty as $crate::hp::HpStruct>::parse($h)?
    };
    ($h:ident, $field:ident, $ty:ty, { kind: $kind:expr, default: $default:expr, help: $help:expr $(,)? }) => {
        <$ty as $crate::hp::HpValue>::read($h, stringify!($field))?
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn check_ranges_and_kinds() {
        let s = HpSpec::new(
            "threshold",
            HpKind::Float { min: 0.0, max: 1.0 },
            json!(0.5),
            "",
        );
        assert_eq!(s.check(&json!(1)).unwrap(), json!(1.0));
        assert!(s.check(&json!(1.5)).unwrap_err().contains("out of range"));
        assert!(s
            .check(&json!("x"))
            .unwrap_err()
            .contains("expected number"));
        let c = HpSpec::new("opt", HpKind::Choice(&["sgd", "adam"]), None, "");
        assert!(c.check(&json!("adamw")).is_err());
        let l = HpSpec::new("hidden", HpKind::IntList { min: 1, max: 10 }, None, "");
        assert_eq!(l.check(&json!(4)).unwrap(), json!([4]));
        assert!(l.check(&json!([4, 11])).is_err());
    }

    #[test]
    fn cpu_lists_are_checked_against_the_cpus_this_process_may_use() {
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(cpu_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        let s = HpSpec::new("cpus", HpKind::CpuList, json!([]), "");
        assert!(s.check(&json!([-1])).unwrap_err().contains("[0, 1023]"));
        assert!(s.check(&json!("0")).is_err());
        assert_eq!(s.check(&json!([])).unwrap(), json!([]));
        let Some(allowed) = allowed_cpus() else {
            return; // not Linux: only the range is checked
        };
        assert_eq!(s.check(&json!(allowed[0])).unwrap(), json!([allowed[0]]));
        let outside = (0..=MAX_CPU).find(|c| !allowed.contains(c)).unwrap();
        let err = s.check(&json!([allowed[0], outside])).unwrap_err();
        assert!(
            err.contains(&format!("CPU {outside} is not one this process may run on"))
                && err.contains(&cpu_ranges(&allowed)),
            "{err}"
        );
    }

    crate::hyperparameters! {
        #[derive(Debug, Clone, PartialEq)]
        struct Inner {
            epochs: usize {
                kind: HpKind::Int { min: 1, max: 100 },
                default: 5,
                help: "passes",
            },
            optimizer: String {
                kind: HpKind::Choice(&["adam", "sgd"]),
                default: "adam",
                help: "which optimizer",
            },
        }
    }

    crate::hyperparameters! {
        #[derive(Debug, Clone, PartialEq)]
        struct Outer {
            hidden: Vec<usize> {
                kind: HpKind::IntList { min: 1, max: 10 },
                default: json!([4]),
                help: "widths",
            },
            inner: Inner { flatten },
            seed: Option<u64> {
                kind: HpKind::Int { min: 0, max: i64::MAX },
                default: None,
                help: "seed",
            },
        }
    }

    #[test]
    fn macro_derives_specs_in_field_order_and_parses() {
        let specs = Outer::specs();
        let names: Vec<_> = specs.iter().map(|s| s.name).collect();
        assert_eq!(names, ["hidden", "epochs", "optimizer", "seed"]);
        assert_eq!(specs[0].default, Some(json!([4])));
        assert_eq!(specs[1].default, Some(json!(5)));
        assert_eq!(specs[2].kind, HpKind::Choice(&["adam", "sgd"]));
        assert_eq!(specs[3].default, None);
        assert_eq!(specs[2].help, "which optimizer");
        // Every default passes its own spec's check.
        for s in &specs {
            if let Some(d) = &s.default {
                s.check(d).unwrap();
            }
        }
        let h = Hyperparameters(
            [
                ("hidden".to_string(), json!([3, 2])),
                ("epochs".to_string(), json!(7)),
                ("optimizer".to_string(), json!("sgd")),
            ]
            .into(),
        );
        assert_eq!(
            Outer::parse(&h).unwrap(),
            Outer {
                hidden: vec![3, 2],
                inner: Inner {
                    epochs: 7,
                    optimizer: "sgd".into()
                },
                seed: None,
            }
        );
        let mut bad = h.clone();
        bad.0.insert("epochs".into(), json!("many"));
        let e = Outer::parse(&bad).unwrap_err();
        assert_eq!(e.name, "epochs");
        assert!(e.reason.contains("text \"many\""), "{e}");
        let mut missing = h;
        missing.0.remove("optimizer");
        assert_eq!(Outer::parse(&missing).unwrap_err().name, "optimizer");
    }
}
