//! penchant's own thread pool. Kernels go parallel only from [`PARALLEL_MIN_ROWS`] rows up, the
//! size below which splitting the work costs more than it saves (measured with
//! `benches/bench_rank.py::test_parallel_threshold`; see BENCHMARKS.md).

use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Measured 2026-11-26 on the project's 2-core machine, shared with other work (BENCHMARKS.md):
/// a ranking on one thread was as fast or faster than on the pool at 10,000, 30,000, 100,000
/// and 300,000 candidates, so the pool starts above the largest size measured. Callers with
/// idle cores to spare can lower it with `_core.set_parallel_min_rows` after measuring.
pub const PARALLEL_MIN_ROWS: usize = 1 << 20;

static MIN_ROWS: AtomicUsize = AtomicUsize::new(PARALLEL_MIN_ROWS);
static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets the pool size; only effective before the first parallel kernel runs. Returns whether it
/// took effect.
pub fn set_num_threads(n: usize) -> bool {
    REQUESTED_THREADS.store(n, Ordering::SeqCst);
    POOL.get().is_none()
}

/// Changes the threshold (for measuring it); 0 restores the default.
pub fn set_parallel_min_rows(n: usize) {
    MIN_ROWS.store(
        if n == 0 { PARALLEL_MIN_ROWS } else { n },
        Ordering::Relaxed,
    );
}

pub fn parallel_min_rows() -> usize {
    MIN_ROWS.load(Ordering::Relaxed)
}

pub fn num_threads() -> usize {
    pool().current_num_threads()
}

fn pool() -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| {
        let requested = REQUESTED_THREADS.load(Ordering::SeqCst);
        let threads = if requested > 0 {
            requested
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        };
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("penchant-{i}"))
            .build()
            .expect("building a thread pool with a positive size")
    })
}

/// `out[i] = f(i)` for every `i`, on the pool when `out` is long enough to gain from it.
pub fn fill<F>(out: &mut [f64], f: F)
where
    F: Fn(usize) -> f64 + Sync + Send,
{
    if out.len() < parallel_min_rows() {
        out.iter_mut().enumerate().for_each(|(i, v)| *v = f(i));
    } else {
        pool().install(|| {
            out.par_iter_mut()
                .with_min_len(4096)
                .enumerate()
                .for_each(|(i, v)| *v = f(i));
        });
    }
}

/// `f(start, chunk)` over consecutive chunks of `out` that cover it, where `chunk` begins at
/// index `start`: one chunk (the whole slice) below the threshold, chunks on the pool above.
/// For kernels whose per-element work is a loop worth compiling as one (SIMD) loop.
pub fn fill_chunks<F>(out: &mut [f64], f: F)
where
    F: Fn(usize, &mut [f64]) + Sync + Send,
{
    const CHUNK: usize = 4096;
    if out.len() < parallel_min_rows() {
        f(0, out);
    } else {
        pool().install(|| {
            out.par_chunks_mut(CHUNK)
                .enumerate()
                .for_each(|(i, chunk)| f(i * CHUNK, chunk));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_the_same_either_side_of_the_threshold() {
        for n in [10, PARALLEL_MIN_ROWS + 7] {
            let mut out = vec![0.0; n];
            fill(&mut out, |i| (i * 3) as f64);
            assert!(out.iter().enumerate().all(|(i, &v)| v == (i * 3) as f64));
            let mut out = vec![0.0; n];
            fill_chunks(&mut out, |start, chunk| {
                for (j, v) in chunk.iter_mut().enumerate() {
                    *v = (start + j) as f64 * 3.0;
                }
            });
            assert!(out.iter().enumerate().all(|(i, &v)| v == (i * 3) as f64));
        }
    }
}
