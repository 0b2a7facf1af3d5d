//! Parallelism: rayon natively and in wasm built with the `threads` feature (Web Workers), one
//! thread in plain wasm. Two levels: over the samples of a batch (below), and inside one large
//! matrix product (`tensor::gemm`), which is what keeps every core busy when a camera frame
//! has a single face.
//!
//! Work is split into chunks of a fixed number of samples, never "one chunk per thread", and
//! per-chunk results are combined in chunk order: the sums, and so the whole training run, are
//! bit-identical on a 2-core laptop, a 16-core server and a browser tab.

use std::ops::Range;

/// Samples per chunk: small enough to balance 8 threads on a batch of 64, large enough that a
/// chunk's convolution is one big gemm and its partial gradients cost little.
pub const SAMPLES_PER_CHUNK: usize = 8;

/// Calls `f(samples, out_chunk)` for consecutive chunks of samples, where `out_chunk` is the part
/// of `out` (`item_len` values per sample) those samples own; returns each chunk's result in order.
pub fn map_sample_chunks<T, F>(out: &mut [f32], item_len: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(Range<usize>, &mut [f32]) -> T + Sync + Send,
{
    let chunk_len = (item_len * SAMPLES_PER_CHUNK).max(1);
    let run = |(index, chunk): (usize, &mut [f32])| {
        let first = index * SAMPLES_PER_CHUNK;
        let count = chunk.len().checked_div(item_len).unwrap_or(0);
        f(first..first + count, chunk)
    };
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        if out.len() <= chunk_len {
            // One chunk (a camera frame's faces): run it here, so that its matrix products
            // may split across the pool instead (see `parts_for`).
            return out.chunks_mut(chunk_len).enumerate().map(run).collect();
        }
        out.par_chunks_mut(chunk_len).enumerate().map(run).collect()
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
    {
        out.chunks_mut(chunk_len).enumerate().map(run).collect()
    }
}

/// Like [`map_sample_chunks`] with no output buffer: `f(samples)` for chunks of `0..n`.
pub fn map_ranges<T, F>(n: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(Range<usize>) -> T + Sync + Send,
{
    let chunks = n.div_ceil(SAMPLES_PER_CHUNK);
    let range = |c: usize| c * SAMPLES_PER_CHUNK..((c + 1) * SAMPLES_PER_CHUNK).min(n);
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        if chunks <= 1 {
            return (0..chunks).map(|c| f(range(c))).collect();
        }
        (0..chunks).into_par_iter().map(|c| f(range(c))).collect()
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
    {
        (0..chunks).map(|c| f(range(c))).collect()
    }
}

/// Into how many parts (1 to the thread count) to split `work` units of work, each part at
/// least `min_part` units. 1 in single-threaded wasm, and on a thread of the pool: the caller
/// is then already one of several parallel tasks (say, one chunk of a batch), and splitting
/// again would only add overhead.
pub fn parts_for(work: usize, min_part: usize) -> usize {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        if rayon::current_thread_index().is_some() {
            return 1;
        }
        (work / min_part.max(1)).clamp(1, rayon::current_num_threads())
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
    {
        let _ = (work, min_part);
        1
    }
}

/// Calls `f` on every item, in parallel where there are threads. For work whose items are
/// independent (each writes only its own output), so the order does not matter.
pub fn for_each_item<T, F>(items: Vec<T>, f: F)
where
    T: Send,
    F: Fn(T) + Sync + Send,
{
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        items.into_par_iter().for_each(f);
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
    {
        items.into_iter().for_each(f);
    }
}
