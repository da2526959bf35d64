//! Opt-in timing of forward passes by operation class (`IANVS_PROFILE=1`).
//!
//! Off by default: every timed region then costs one relaxed load of a cached flag and no clock
//! read. On, each region reads the monotonic clock once more and adds to process-wide totals,
//! which [`take`] returns and resets (the `llm_decode` bench prints them per model). Totals are
//! summed over every model and thread of the process, so profile one model at a time.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The classes a forward pass is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Token embedding lookup (dequantizing the rows).
    Embed,
    /// RMSNorm before attention, before the MLP and at the end.
    Norm,
    /// The q, k and v projections (activation quantization, kernel, pool sync, bias).
    Qkv,
    /// RoPE, KV-cache append and attention over the cache.
    Attention,
    /// The attention output projection.
    O,
    /// The gate and up projections.
    GateUp,
    /// SiLU(gate) · up.
    SiluMul,
    /// The down projection.
    Down,
    /// Residual adds.
    Residual,
    /// The output head (logits).
    Head,
    /// Tensor/host conversions, RoPE tables and what is left.
    Other,
}

impl Op {
    const ALL: [Op; 11] = [
        Op::Embed,
        Op::Norm,
        Op::Qkv,
        Op::Attention,
        Op::O,
        Op::GateUp,
        Op::SiluMul,
        Op::Down,
        Op::Residual,
        Op::Head,
        Op::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Embed => "embedding",
            Op::Norm => "rms-norm",
            Op::Qkv => "matmul q/k/v",
            Op::Attention => "rope + attention",
            Op::O => "matmul o",
            Op::GateUp => "matmul gate/up",
            Op::SiluMul => "silu * up",
            Op::Down => "matmul down",
            Op::Residual => "residual add",
            Op::Head => "matmul head",
            Op::Other => "other",
        }
    }
}

const N: usize = Op::ALL.len();
static NANOS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static CALLS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static PASSES: AtomicU64 = AtomicU64::new(0);
/// 0: not read yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Whether `IANVS_PROFILE` is set to something other than `0` or empty (read once).
#[inline]
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("IANVS_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
            set_enabled(on);
            on
        }
    }
}

/// Turns profiling on or off regardless of the environment (and the kernel pools' barrier
/// timing with it).
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
    ianvs_kernels::Pool::set_profiling(on);
}

/// A started region; [`Timer::lap`] adds the time since the last lap to an op class.
pub(crate) struct Timer(Option<Instant>);

impl Timer {
    #[inline]
    pub(crate) fn start() -> Self {
        Self(enabled().then(Instant::now))
    }

    /// Adds the time since `start` (or since the last `lap`) to `op` and restarts the clock.
    #[inline]
    pub(crate) fn lap(&mut self, op: Op) {
        if let Some(t0) = self.0 {
            let now = Instant::now();
            let i = op as usize;
            NANOS[i].fetch_add((now - t0).as_nanos() as u64, Ordering::Relaxed);
            CALLS[i].fetch_add(1, Ordering::Relaxed);
            self.0 = Some(now);
        }
    }
}

/// Counts one forward pass (for per-pass averages).
#[inline]
pub(crate) fn pass() {
    if enabled() {
        PASSES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Totals since the last [`take`].
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Forward passes.
    pub passes: u64,
    /// (class name, total time, timed regions) per class, in pass order.
    pub ops: Vec<(&'static str, Duration, u64)>,
    /// Parallel regions of the models' own kernel pools (`LoadOptions::threads`/`cpus`).
    pub pool_regions: u64,
    /// Time the calling thread waited at the end of those regions for the other threads.
    pub pool_wait: Duration,
}

/// Returns the totals and resets them.
pub fn take() -> Profile {
    let ops = Op::ALL
        .iter()
        .map(|&op| {
            let i = op as usize;
            (
                op.name(),
                Duration::from_nanos(NANOS[i].swap(0, Ordering::Relaxed)),
                CALLS[i].swap(0, Ordering::Relaxed),
            )
        })
        .collect();
    let (pool_regions, pool_wait) = ianvs_kernels::Pool::take_profile();
    Profile {
        passes: PASSES.swap(0, Ordering::Relaxed),
        ops,
        pool_regions,
        pool_wait,
    }
}

impl fmt::Display for Profile {
    /// A Markdown table: per class, µs per pass and share of the timed total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: Duration = self.ops.iter().map(|(_, d, _)| *d).sum();
        let passes = self.passes.max(1) as f64;
        let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-12);
        writeln!(f, "| op class | µs per pass | share | regions per pass |")?;
        writeln!(f, "|---|---|---|---|")?;
        for (name, d, calls) in &self.ops {
            if *calls == 0 {
                continue;
            }
            writeln!(
                f,
                "| {name} | {:.1} | {:.1} % | {:.0} |",
                d.as_secs_f64() * 1e6 / passes,
                share(*d),
                *calls as f64 / passes
            )?;
        }
        writeln!(
            f,
            "| total (timed) | {:.1} | 100 % | |",
            total.as_secs_f64() * 1e6 / passes
        )?;
        if self.pool_regions > 0 {
            writeln!(
                f,
                "| of which: pool barrier wait (caller) | {:.1} | {:.1} % | {:.0} |",
                self.pool_wait.as_secs_f64() * 1e6 / passes,
                share(self.pool_wait),
                self.pool_regions as f64 / passes
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_per_class() {
        // Other tests may run forward passes meanwhile: only lower bounds are exact.
        set_enabled(true);
        let mut t = Timer::start();
        std::thread::sleep(Duration::from_millis(2));
        t.lap(Op::Norm);
        t.lap(Op::Head);
        pass();
        set_enabled(false);
        let p = take();
        let norm = p.ops.iter().find(|o| o.0 == "rms-norm").unwrap();
        assert!(norm.1 >= Duration::from_millis(2), "{p:?}");
        assert!(norm.2 >= 1 && p.passes >= 1, "{p:?}");
        assert!(p.to_string().contains("| rms-norm |"));
    }
}
