//! A model's own worker threads: `threads − 1` persistent workers plus the calling thread,
//! optionally pinned to given CPUs, so two models in one process (a drafter and a verifier)
//! can each have their own thread count and cores instead of sharing candle's global pool.
//!
//! Work is handed out in chunks from an atomic cursor; which thread computes a chunk never
//! changes its result (every kernel computes a column from start to end on one thread).
//! Idle workers spin briefly (the next matmul of a forward pass follows within microseconds),
//! then park.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(200);

type Job = dyn Fn(usize) + Sync + 'static;

struct Shared {
    /// Bumped once per call; workers run the job of every new generation.
    generation: AtomicUsize,
    /// Workers that finished the current generation.
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
            generation: AtomicUsize::new(0),
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
        sh.generation.fetch_add(1, Ordering::AcqRel);
        for (_, t) in &self.workers {
            t.unpark();
        }
        struct Finish<'a>(&'a Shared, usize);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                let mut spins = 0u32;
                while self.0.done.load(Ordering::Acquire) < self.1 {
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
            }
        }
        let finish = Finish(sh, self.workers.len());
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
    let mut seen = 0usize;
    loop {
        let started = Instant::now();
        loop {
            if sh.stop.load(Ordering::Acquire) {
                return;
            }
            let g = sh.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
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
    fn pinned_restores_the_callers_cpu_set() {
        let Some(before) = allowed_cpus() else { return };
        let pool = Pool::new(2, vec![before[0]]).unwrap();
        let inside = pool.pinned(|| allowed_cpus().unwrap());
        assert_eq!(inside, vec![before[0]]);
        assert_eq!(allowed_cpus().unwrap(), before);
    }
}
