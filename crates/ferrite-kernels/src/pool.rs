//! A persistent SPMD thread pool: `run(|ith, nth| ...)` calls the closure once on each of `nth`
//! threads (the caller is thread 0) and returns when all are done.
//!
//! Design (see docs/cpu-kernels.md §6): threads are created once; between jobs workers spin on a
//! generation counter for a bounded time, then park on a condvar, so a burst of small operations
//! (a decode step issues hundreds) costs no thread creation, no allocation and no syscall, while an
//! idle pool costs no CPU. Counters sit on separate cache lines. Work stealing is deliberately
//! absent: operations are uniform and data-parallel, and a static `(ith, nth)` split is enough.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(200);

#[repr(align(128))]
struct Padded<T>(T);

type Job = dyn Fn(usize, usize) + Sync;

struct Inner {
    n_threads: usize,
    generation: Padded<AtomicUsize>,
    remaining: Padded<AtomicUsize>,
    /// The current job, valid while `remaining > 0` for the current generation. Written only by
    /// the thread holding `run_lock`, before the generation is published.
    job: UnsafeCell<Option<*const Job>>,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the single `run` caller (serialised by `run_lock`) before the
// generation bump (SeqCst) and read by workers only after observing that bump; the pointee is
// `Sync` and outlives every read because `run` waits for all workers before returning.
unsafe impl Sync for Inner {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Inner {}

/// Persistent worker threads for data-parallel kernels.
pub struct ThreadPool {
    inner: Arc<Inner>,
    workers: Vec<JoinHandle<()>>,
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.inner.n_threads)
            .finish()
    }
}

impl ThreadPool {
    /// A pool of `n_threads` threads including the caller (so `n_threads - 1` workers).
    /// `0` is treated as 1.
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_threads = n_threads.max(1);
        let inner = Arc::new(Inner {
            n_threads,
            generation: Padded(AtomicUsize::new(0)),
            remaining: Padded(AtomicUsize::new(0)),
            job: UnsafeCell::new(None),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..n_threads)
            .map(|ith| {
                let inner = Arc::clone(&inner);
                std::thread::Builder::new()
                    .name(format!("ferrite-kernel-{ith}"))
                    .spawn(move || worker(inner, ith))
                    .expect("failed to spawn kernel thread")
            })
            .collect();
        ThreadPool {
            inner,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// Number of threads, the caller included.
    pub fn n_threads(&self) -> usize {
        self.inner.n_threads
    }

    /// Run `f(ith, nth)` on every thread and wait for all of them. A panic on any thread is
    /// re-raised here after all threads have finished.
    pub fn run<F: Fn(usize, usize) + Sync>(&self, f: F) {
        let n = self.inner.n_threads;
        if n == 1 {
            f(0, 1);
            return;
        }
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &*self.inner;
        inner.remaining.0.store(n - 1, Ordering::SeqCst);
        let job: &(dyn Fn(usize, usize) + Sync + '_) = &f;
        // SAFETY: erase the closure's lifetime; we do not return before every worker has
        // finished calling it (the wait below), so the pointer never dangles when dereferenced.
        let job: *const Job = unsafe {
            std::mem::transmute::<&(dyn Fn(usize, usize) + Sync + '_), &'static Job>(job)
        };
        // SAFETY: only this thread (holding run_lock) writes `job`, and no worker reads it until
        // the generation bump below publishes it.
        unsafe { *inner.job.get() = Some(job) };
        inner.generation.0.fetch_add(1, Ordering::SeqCst);
        if inner.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = inner.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            inner.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, n)));
        let mut spins = 0u32;
        while inner.remaining.0.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if inner.panicked.swap(false, Ordering::SeqCst) {
            panic!("a kernel worker thread panicked");
        }
    }

    /// Call `f(unit)` once for every unit in `0..n_units`, the threads claiming units one at a
    /// time from a shared counter: a thread slowed by a co-tenant (this host's vCPUs are
    /// shared) takes fewer units instead of making the others wait at the end. For work cut
    /// into units much larger than the cost of one atomic increment.
    pub fn run_claimed<F: Fn(usize) + Sync>(&self, n_units: usize, f: F) {
        if self.n_threads() == 1 || n_units <= 1 {
            (0..n_units).for_each(f);
            return;
        }
        let next = AtomicUsize::new(0);
        self.run(|_, _| loop {
            let u = next.fetch_add(1, Ordering::Relaxed);
            if u >= n_units {
                break;
            }
            f(u);
        });
    }

    /// Split `data` into chunks of `chunk` elements (the last may be shorter) and call
    /// `f(chunk_index, chunk)` for each, threads taking contiguous runs of chunks. The safe way for
    /// callers to fill disjoint parts of one buffer in parallel.
    pub fn par_chunks_mut<T: Send, F: Fn(usize, &mut [T]) + Sync>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: F,
    ) {
        self.chunks_on_threads(data, chunk, false, f)
    }

    /// [`par_chunks_mut`](Self::par_chunks_mut) for work whose cost grows along the buffer
    /// (causal attention, where later tokens see more keys): the threads claim chunks one at a
    /// time from the last (dearest) to the first, so the work left at the end is cheap and a
    /// slower thread simply claims fewer.
    pub fn par_chunks_mut_growing<T: Send, F: Fn(usize, &mut [T]) + Sync>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: F,
    ) {
        self.chunks_on_threads(data, chunk, true, f)
    }

    /// Both of the above: chunk indices split into contiguous runs, or claimed last first.
    fn chunks_on_threads<T: Send, F: Fn(usize, &mut [T]) + Sync>(
        &self,
        data: &mut [T],
        chunk: usize,
        growing: bool,
        f: F,
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let n_chunks = len.div_ceil(chunk);
        if self.n_threads() == 1 || n_chunks <= 1 {
            for (i, c) in data.chunks_mut(chunk).enumerate() {
                f(i, c);
            }
            return;
        }
        let base = SharedMut(data.as_mut_ptr());
        let one = |i: usize| {
            let start = i * chunk;
            let n = chunk.min(len - start);
            // SAFETY: chunk i covers [start, start + n) inside `data`; each chunk index goes to
            // exactly one call (a thread's contiguous run, or one claim of the shared counter),
            // so the mutable slices are disjoint, and `data` is borrowed mutably for the whole
            // call.
            let c = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(start), n) };
            f(i, c);
        };
        if growing {
            self.run_claimed(n_chunks, |u| one(n_chunks - 1 - u));
            return;
        }
        self.run(|ith, nth| {
            let r = Self::split(n_chunks, ith, nth, 1);
            r.for_each(one);
        });
    }

    /// Split `0..n` into `nth` contiguous ranges and return range `ith`, each a multiple of
    /// `align` except the last.
    pub fn split(n: usize, ith: usize, nth: usize, align: usize) -> std::ops::Range<usize> {
        let align = align.max(1);
        let units = n.div_ceil(align);
        let per = units / nth;
        let extra = units % nth;
        let start_u = ith * per + ith.min(extra);
        let end_u = start_u + per + usize::from(ith < extra);
        (start_u * align).min(n)..(end_u * align).min(n)
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self
                .inner
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.inner.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(inner: Arc<Inner>, ith: usize) {
    let mut seen = 0usize;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = inner.generation.0.load(Ordering::SeqCst);
            if g != seen {
                seen = g;
                break;
            }
            if inner.shutdown.load(Ordering::SeqCst) {
                return;
            }
            spins += 1;
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN_BEFORE_PARK {
                std::hint::spin_loop();
                continue;
            }
            let mut guard = inner.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            inner.sleepers.fetch_add(1, Ordering::SeqCst);
            while inner.generation.0.load(Ordering::SeqCst) == seen
                && !inner.shutdown.load(Ordering::SeqCst)
            {
                guard = inner.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            inner.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        if inner.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the generation we observed was bumped after `job` was written, and `run` keeps
        // the closure alive until `remaining` reaches zero, which happens only after this call.
        let job = unsafe { *inner.job.get() };
        if let Some(job) = job {
            // SAFETY: see above; the pointee is a live `Sync` closure.
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(ith, inner.n_threads) }));
            if r.is_err() {
                inner.panicked.store(true, Ordering::SeqCst);
            }
        }
        inner.remaining.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A raw pointer that may be shared between pool threads, for writing disjoint parts of one
/// output buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SharedMut<T>(pub(crate) *mut T);

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }
}
// SAFETY: users write disjoint elements only (documented at each use).
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_thread_runs_once_per_job() {
        let pool = ThreadPool::new(3);
        let hits = AtomicU64::new(0);
        for _ in 0..1000 {
            pool.run(|ith, nth| {
                assert_eq!(nth, 3);
                hits.fetch_add(1 << (ith * 16), Ordering::Relaxed);
            });
        }
        let h = hits.load(Ordering::Relaxed);
        assert_eq!(h & 0xFFFF, 1000);
        assert_eq!((h >> 16) & 0xFFFF, 1000);
        assert_eq!((h >> 32) & 0xFFFF, 1000);
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(Duration::from_millis(20));
        let hits = AtomicU64::new(0);
        pool.run(|_, _| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn worker_panic_is_reported_not_hung() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(|ith, _| {
                if ith == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let hits = AtomicU64::new(0);
        pool.run(|_, _| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn par_chunks_mut_visits_every_chunk_once() {
        for nth in 1..4 {
            let pool = ThreadPool::new(nth);
            for growing in [false, true] {
                let mut v = vec![0usize; 103];
                let f = |i: usize, c: &mut [usize]| {
                    for x in c.iter_mut() {
                        *x += i + 1;
                    }
                };
                if growing {
                    pool.par_chunks_mut_growing(&mut v, 10, f);
                } else {
                    pool.par_chunks_mut(&mut v, 10, f);
                }
                for (j, x) in v.iter().enumerate() {
                    assert_eq!(*x, j / 10 + 1, "{nth} threads, growing {growing}");
                }
            }
        }
    }

    #[test]
    fn claimed_units_are_each_run_once() {
        for nth in 1..4 {
            let pool = ThreadPool::new(nth);
            for n in [0, 1, 2, 5, 97] {
                let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
                pool.run_claimed(n, |u| {
                    hits[u].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{nth} {n}"
                );
            }
        }
    }

    #[test]
    fn split_covers_range_without_overlap() {
        for n in [0, 1, 7, 64, 100, 1000] {
            for nth in 1..5 {
                for align in [1, 16] {
                    let mut next = 0;
                    for ith in 0..nth {
                        let r = ThreadPool::split(n, ith, nth, align);
                        assert_eq!(r.start, next);
                        next = r.end;
                    }
                    assert_eq!(next, n);
                }
            }
        }
    }
}
