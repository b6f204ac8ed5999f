//! A persistent thread pool for the forward pass: `n - 1` workers started once, woken for each
//! operation, spinning briefly after it (the next operation usually follows within
//! microseconds) and then parking on a condition variable so an idle engine costs no CPU.
//!
//! [`ThreadPool::run`] hands one closure to every thread (the caller is thread 0) and returns
//! when all have finished; it allocates nothing and creates no thread. Work splitting is the
//! closure's business (see `matmul`, which deals out row chunks through an atomic counter).

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spin iterations a worker waits for the next job before parking (≈ 50-200 µs).
const SPIN: u32 = 1 << 14;

type Job<'a> = &'a (dyn Fn(usize, usize) + Sync);

struct Shared {
    n_threads: usize,
    /// Bumped once per job; workers compare it with the last one they ran.
    epoch: AtomicUsize,
    /// Points at the caller's `Job` (a fat reference on its stack) while a job runs.
    job: AtomicPtr<()>,
    /// Workers that have not finished the current job.
    remaining: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
    /// Serialises `run` calls made through clones of one pool from different threads.
    run_lock: Mutex<()>,
}

struct Inner {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.park.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Worker threads for the forward pass. Cloning shares the same threads.
#[derive(Clone)]
pub struct ThreadPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.n_threads())
    }
}

thread_local! {
    /// Set while this thread runs a pool job: a nested `run` then executes inline.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

impl ThreadPool {
    /// A pool of `n_threads` (at least 1) threads including the caller of [`run`](Self::run).
    pub fn new(n_threads: usize) -> Self {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            n_threads,
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
            run_lock: Mutex::new(()),
        });
        let workers = (1..n_threads)
            .map(|idx| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("ferrite-worker-{idx}"))
                    .spawn(move || worker(&s, idx))
                    .expect("spawning a pool worker thread")
            })
            .collect();
        ThreadPool {
            inner: Arc::new(Inner { shared, workers }),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.inner.shared.n_threads
    }

    /// Runs `f(thread_idx, n_threads)` once on each of the pool's threads (the caller is
    /// thread 0) and returns when every call has returned. A panic in any call is re-raised
    /// here after all threads have finished. Called from inside a job, it runs `f(0, 1)`
    /// inline, so closures must accept any thread count.
    pub fn run(&self, f: impl Fn(usize, usize) + Sync) {
        let s = &*self.inner.shared;
        if s.n_threads == 1 || IN_JOB.with(|c| c.get()) {
            f(0, 1);
            return;
        }
        let _serial = s.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let job: Job<'_> = &f;
        s.panicked.store(false, Ordering::Relaxed);
        s.remaining.store(s.n_threads - 1, Ordering::Relaxed);
        s.job
            .store(&job as *const Job<'_> as *mut (), Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        IN_JOB.with(|c| c.set(true));
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, s.n_threads)));
        IN_JOB.with(|c| c.set(false));
        // `job` lives on this stack frame: wait until no worker can still be using it.
        let mut spins = 0u32;
        while s.remaining.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        s.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a thread-pool worker panicked");
        }
    }
}

fn worker(s: &Shared, idx: usize) {
    IN_JOB.with(|c| c.set(true));
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen || s.shutdown.load(Ordering::Relaxed) {
                break e;
            }
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
                continue;
            }
            // Park. Registering as a sleeper before re-checking the epoch (both SeqCst)
            // means `run` either sees us and notifies, or we see its new epoch.
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            let mut g = s.park.lock().unwrap_or_else(|e| e.into_inner());
            while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            drop(g);
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            spins = 0;
        };
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        seen = epoch;
        let p = s.job.load(Ordering::Acquire) as *const Job<'_>;
        // SAFETY: `run` stored a pointer to its live `Job` before bumping the epoch
        // (Release/Acquire through `epoch`), and does not return, nor clear the pointer,
        // until `remaining` reaches zero, which happens only after this call.
        let job: Job<'_> = unsafe { *p };
        if catch_unwind(AssertUnwindSafe(|| job(idx, s.n_threads))).is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.remaining.fetch_sub(1, Ordering::Release);
    }
}

/// A pointer that may be shared across pool threads which write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub(crate) *mut T);

impl<T> SharedMut<T> {
    /// The pointer. (A method, so closures capture the whole `Sync` wrapper.)
    #[inline]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: users only write disjoint indices from different threads, and the pool joins all
// threads before the borrow the pointer came from ends.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_each_job_once() {
        for n in 1..=4 {
            let pool = ThreadPool::new(n);
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(|i, nt| {
                    assert_eq!(nt, n);
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = ThreadPool::new(3);
        let sum = AtomicUsize::new(0);
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(30));
            pool.run(|i, _| {
                sum.fetch_add(i + 1, Ordering::Relaxed);
            });
        }
        assert_eq!(sum.load(Ordering::Relaxed), 3 * 6);
    }

    #[test]
    fn nested_run_executes_inline_and_clones_share_threads() {
        let pool = ThreadPool::new(2);
        let clone = pool.clone();
        let count = AtomicUsize::new(0);
        pool.run(|_, _| {
            clone.run(|i, n| {
                assert_eq!((i, n), (0, 1));
                count.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn worker_panic_reaches_the_caller_and_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(|i, _| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn concurrent_callers_are_serialised() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..3 {
                let p = pool.clone();
                let t = &total;
                sc.spawn(move || {
                    for _ in 0..100 {
                        p.run(|_, _| {
                            t.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 100 * 2);
    }
}
