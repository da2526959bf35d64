//! A model's own worker threads: `threads − 1` persistent workers plus the calling thread,
//! optionally pinned to given CPUs, so two models in one process (a drafter and a verifier)
//! can each have their own thread count and cores instead of sharing candle's global pool.
//!
//! Work is handed out in chunks from an atomic cursor; which thread computes a chunk never
//! changes its result (every kernel computes a column from start to end on one thread).
//! Idle workers spin briefly (the next matmul of a forward pass follows within microseconds),
//! then park.
//!
//! Late workers are not waited for. A forward pass of a small model is a few hundred parallel
//! regions of tens of microseconds; on a machine shared with other work a worker is often not
//! running when a region starts. The calling thread then takes every chunk itself and closes
//! the region: a worker joins a region only before it is closed (one atomic word holds the
//! generation, a closed flag and the count of joined workers), and the caller waits only for
//! the workers that joined, instead of for a descheduled thread to wake up and find nothing
//! left to do.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(200);

/// `state` layout: generation in the high 32 bits, the closed flag, then the joined count.
const GEN_SHIFT: u32 = 32;
const CLOSED: u64 = 1 << 31;
const COUNT: u64 = CLOSED - 1;

/// Profiling of the caller's barrier wait (see `Pool::set_profiling`).
static PROFILING: AtomicBool = AtomicBool::new(false);
static PROFILE_REGIONS: AtomicU64 = AtomicU64::new(0);
static PROFILE_WAIT_NS: AtomicU64 = AtomicU64::new(0);

type Job = dyn Fn(usize) + Sync + 'static;

struct Shared {
    /// Generation (bumped once per call), closed flag and joined-worker count (see `GEN_SHIFT`).
    state: AtomicU64,
    /// Joined workers that finished the current generation.
    done: AtomicUsize,
    /// The current job, valid while a call is in flight (`call` waits for every worker).
    job: Mutex<Option<&'static Job>>,
    stop: AtomicBool,
    panicked: AtomicBool,
}

/// A fixed set of threads that run one job at a time (see the module docs).
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<(JoinHandle<()>, Thread)>,
    threads: usize,
    cpus: Vec<usize>,
    /// Serializes callers (a model used from two threads at once).
    call: Mutex<()>,
}

impl Pool {
    /// `threads` ≥ 1 threads in all (the caller included). `cpus`: when not empty, worker `i`
    /// is pinned to `cpus[(i + 1) % cpus.len()]`; the caller is pinned to `cpus[0]` only for
    /// the duration of [`Pool::pinned`].
    pub fn new(threads: usize, cpus: Vec<usize>) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: Mutex::new(None),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for i in 1..threads {
            let sh = shared.clone();
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let handle = std::thread::Builder::new()
                .name(format!("ianvs-kernels-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        // Best effort: a CPU outside the process's set is refused by the OS,
                        // and the worker then runs unpinned.
                        let _ = set_affinity(&[cpu]);
                    }
                    worker(&sh, i)
                })?;
            let thread = handle.thread().clone();
            workers.push((handle, thread));
        }
        Ok(Self {
            shared,
            workers,
            threads,
            cpus,
            call: Mutex::new(()),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Times how long callers wait at the end of each parallel region for the workers that
    /// joined it (process-wide, every pool; off by default, one relaxed load per region then).
    pub fn set_profiling(on: bool) {
        PROFILING.store(on, Ordering::Relaxed);
    }

    /// (parallel regions, total caller wait) since the last call, while profiling was on.
    pub fn take_profile() -> (u64, Duration) {
        (
            PROFILE_REGIONS.swap(0, Ordering::Relaxed),
            Duration::from_nanos(PROFILE_WAIT_NS.swap(0, Ordering::Relaxed)),
        )
    }

    /// Runs `f(range)` over `0..n_items` in chunks, on every thread of the pool.
    pub fn execute_chunked<F: Fn(std::ops::Range<usize>) + Sync>(&self, n_items: usize, f: F) {
        if n_items == 0 {
            return;
        }
        if self.threads == 1 {
            f(0..n_items);
            return;
        }
        let chunk = n_items.div_ceil(self.threads * 4).max(1);
        let cursor = AtomicUsize::new(0);
        let job = |_tid: usize| loop {
            let start = cursor.fetch_add(chunk, Ordering::Relaxed);
            if start >= n_items {
                break;
            }
            f(start..n_items.min(start + chunk));
        };
        self.run(&job);
    }

    fn run<'a>(&self, job: &'a (dyn Fn(usize) + Sync + 'a)) {
        let _guard = self.call.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        // SAFETY: the reference is only reachable by workers until every one of them has
        // reported `done` for this generation, which this function waits for before returning
        // (also when `job` panics on the calling thread, through `Finish`).
        let job_static: &'static Job =
            unsafe { std::mem::transmute::<&'a (dyn Fn(usize) + Sync + 'a), &'static Job>(job) };
        *sh.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job_static);
        sh.done.store(0, Ordering::Release);
        // Every worker of the previous generation has either finished (it was waited for) or
        // never joined (and cannot: its generation is gone), so the new word starts at 0 joined.
        let generation = (sh.state.load(Ordering::Acquire) >> GEN_SHIFT) + 1;
        sh.state
            .store((generation & 0xffff_ffff) << GEN_SHIFT, Ordering::Release);
        for (_, t) in &self.workers {
            t.unpark();
        }
        struct Finish<'a>(&'a Shared);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                let t0 = PROFILING.load(Ordering::Relaxed).then(Instant::now);
                // Close the region: workers that have not joined yet skip it.
                let joined = (self.0.state.fetch_or(CLOSED, Ordering::AcqRel) & COUNT) as usize;
                let mut spins = 0u32;
                while self.0.done.load(Ordering::Acquire) < joined {
                    // Spin, then yield: on an oversubscribed machine the workers we wait
                    // for may need this CPU.
                    if spins < 2000 {
                        spins += 1;
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                *self.0.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if let Some(t0) = t0 {
                    PROFILE_REGIONS.fetch_add(1, Ordering::Relaxed);
                    PROFILE_WAIT_NS.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            }
        }
        let finish = Finish(sh);
        job(0);
        drop(finish);
        if sh.panicked.swap(false, Ordering::AcqRel) {
            panic!("a kernel worker thread panicked");
        }
    }

    /// Runs `f` with the calling thread pinned to `cpus[0]` (when the pool has CPUs), then
    /// restores the caller's previous CPU set: a model's whole forward pass stays on its cores.
    pub fn pinned<T>(&self, f: impl FnOnce() -> T) -> T {
        let Some(&cpu) = self.cpus.first() else {
            return f();
        };
        let previous = get_affinity();
        let _ = set_affinity(&[cpu]);
        let out = f();
        if let Some(prev) = previous {
            let _ = set_affinity(&prev);
        }
        out
    }
}

fn worker(sh: &Shared, tid: usize) {
    let mut seen = 0u64;
    loop {
        let started = Instant::now();
        let mut state;
        loop {
            if sh.stop.load(Ordering::Acquire) {
                return;
            }
            state = sh.state.load(Ordering::Acquire);
            if state >> GEN_SHIFT != seen {
                seen = state >> GEN_SHIFT;
                break;
            }
            let idle = started.elapsed();
            if idle < SPIN / 10 {
                std::hint::spin_loop();
            } else if idle < SPIN {
                std::thread::yield_now();
            } else {
                std::thread::park_timeout(Duration::from_millis(50));
            }
        }
        // Join the region unless the caller closed it (or has already started the next one).
        let joined = loop {
            if state >> GEN_SHIFT != seen || state & CLOSED != 0 {
                break false;
            }
            match sh.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break true,
                Err(now) => state = now,
            }
        };
        if !joined {
            continue;
        }
        let job = *sh.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(tid))).is_err() {
                sh.panicked.store(true, Ordering::Release);
            }
        }
        sh.done.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for (h, t) in self.workers.drain(..) {
            t.unpark();
            let _ = h.join();
        }
    }
}

#[cfg(target_os = "linux")]
fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: `cpu_set_t` is plain data; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn get_affinity() -> Option<Vec<usize>> {
    // SAFETY: as in `set_affinity`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect(),
        )
    }
}

#[cfg(not(target_os = "linux"))]
fn set_affinity(_: &[usize]) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "CPU pinning is implemented on Linux only",
    ))
}

#[cfg(not(target_os = "linux"))]
fn get_affinity() -> Option<Vec<usize>> {
    None
}

/// The CPUs this process may run on (Linux), for validating a `cpus` setting.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    get_affinity()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_exactly_once_on_any_thread_count() {
        for threads in [1, 2, 3, 5] {
            let pool = Pool::new(threads, vec![]).unwrap();
            for n in [0, 1, 7, 100, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.execute_chunked(n, |r| {
                    for i in r {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{threads} {n}"
                );
            }
        }
    }

    #[test]
    fn back_to_back_regions_run_every_item_once() {
        // Many short regions in a row: workers join some, miss others (closed before they
        // looked), and must never run a region twice or touch one that has ended.
        let pool = Pool::new(3, vec![]).unwrap();
        for round in 0..20_000usize {
            let n = 1 + round % 13;
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.execute_chunked(n, |r| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "round {round}"
            );
        }
    }

    #[test]
    fn pinned_restores_the_callers_cpu_set() {
        let Some(before) = allowed_cpus() else { return };
        let pool = Pool::new(2, vec![before[0]]).unwrap();
        let inside = pool.pinned(|| allowed_cpus().unwrap());
        assert_eq!(inside, vec![before[0]]);
        assert_eq!(allowed_cpus().unwrap(), before);
    }
}
