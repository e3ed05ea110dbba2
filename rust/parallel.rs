//! penchant's own thread pool. Kernels go parallel only from [`PARALLEL_MIN_ROWS`] rows up, the
//! size below which splitting the work costs more than it saves (measured with
//! `benches/bench_rank.py::test_parallel_threshold`; see BENCHMARKS.md).

use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub const PARALLEL_MIN_ROWS: usize = 32_768;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_the_same_either_side_of_the_threshold() {
        for n in [10, PARALLEL_MIN_ROWS + 7] {
            let mut out = vec![0.0; n];
            fill(&mut out, |i| (i * 3) as f64);
            assert!(out.iter().enumerate().all(|(i, &v)| v == (i * 3) as f64));
        }
    }
}
