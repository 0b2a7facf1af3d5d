//! Parallelism: rayon natively and in wasm built with the `threads` feature (Web Workers), one
//! thread in plain wasm. Two levels: over the samples of a batch (below), and inside one large
//! matrix product (`tensor::gemm`), which is what keeps every core busy when a camera frame
//! has a single face.
//!
//! Work is split into chunks of a fixed number of samples, never "one chunk per thread", and
//! per-chunk results are combined in chunk order: the sums, and so the whole training run, are
//! bit-identical on a 2-core laptop, a 16-core server and a browser tab.

use std::ops::Range;

#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
thread_local! {
    /// Set while this thread runs one of several chunks in parallel: the pool is then busy
    /// with chunks, and the chunk's matrix products are not split further.
    static IN_PARALLEL_CHUNK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` as one of several parallel chunks (see `IN_PARALLEL_CHUNK`).
#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
fn as_parallel_chunk<T>(f: impl FnOnce() -> T) -> T {
    let outer = IN_PARALLEL_CHUNK.replace(true);
    let result = f();
    IN_PARALLEL_CHUNK.set(outer);
    result
}

/// Samples per chunk: small enough to balance 8 threads on a batch of 64, large enough that a
/// chunk's convolution is one big gemm and its partial gradients cost little.
pub const SAMPLES_PER_CHUNK: usize = 8;

/// Calls `f(samples, out_chunk)` for consecutive chunks of samples, where `out_chunk` is the part
/// of `out` (`item_len` values per sample) those samples own; returns each chunk's result in order.
pub fn map_sample_chunks<E, T, F>(out: &mut [E], item_len: usize, f: F) -> Vec<T>
where
    E: Send,
    T: Send,
    F: Fn(Range<usize>, &mut [E]) -> T + Sync + Send,
{
    let chunk_len = (item_len * SAMPLES_PER_CHUNK).max(1);
    let run = |(index, chunk): (usize, &mut [E])| {
        let first = index * SAMPLES_PER_CHUNK;
        let count = chunk.len().checked_div(item_len).unwrap_or(0);
        f(first..first + count, chunk)
    };
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        if out.len() <= chunk_len {
            // One chunk (a camera frame's faces): its matrix products split across the pool
            // instead (see `parts_for`).
            return out.chunks_mut(chunk_len).enumerate().map(run).collect();
        }
        out.par_chunks_mut(chunk_len).enumerate().map(|item| as_parallel_chunk(|| run(item))).collect()
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
        (0..chunks).into_par_iter().map(|c| as_parallel_chunk(|| f(range(c)))).collect()
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
    {
        (0..chunks).map(|c| f(range(c))).collect()
    }
}

/// Into how many parts (1 to the thread count) to split `work` units of work, each part at
/// least `min_part` units. 1 in single-threaded wasm, and inside one of several parallel
/// chunks of a batch: the pool is busy with the other chunks, and splitting again would only
/// add overhead.
pub fn parts_for(work: usize, min_part: usize) -> usize {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        if IN_PARALLEL_CHUNK.get() {
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

/// Least work (multiply-adds, or comparable steps) per part of a split loop over rows.
const ROW_PART_WORK: usize = 1 << 20;

/// Calls `f(first_row, block)` for blocks of consecutive rows of `out` (`row_len` values per
/// row), in parallel when the rows' work (`work_per_row` each) is worth splitting (see
/// [`parts_for`]). For loops whose every row is computed on its own, so the result does not
/// depend on the split.
pub fn for_row_blocks<F>(out: &mut [f32], row_len: usize, work_per_row: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let rows = out.len().checked_div(row_len).unwrap_or(0);
    let rows_per_part = rows.div_ceil(parts_for(rows * work_per_row, ROW_PART_WORK)).max(1);
    let blocks: Vec<_> = out.chunks_mut(rows_per_part * row_len).enumerate().collect();
    for_each_item(blocks, |(index, block)| f(index * rows_per_part, block));
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

/// Runs `f` on a thread of the pool and waits for it. Work that splits often (a camera
/// frame: a dozen matrix products, each split in parts) is best started there: a split made on
/// a pool thread keeps one part for itself and lets idle threads steal the rest, while a split
/// made outside the pool waits for a pool thread to wake up for every part.
pub fn on_pool<R, F>(f: F) -> R
where
    R: Send,
    F: FnOnce() -> R + Send,
{
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        rayon::scope(|_| f())
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
    {
        f()
    }
}

// Natively, where there is always a pool (the wasm tests run the single-threaded build).
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn in_pool_of_four<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new().num_threads(4).build().expect("a test pool").install(f)
    }

    #[test]
    fn row_blocks_see_their_own_rows_wherever_the_split_falls() {
        // Enough work to split across the pool: each value must come from its own row's index.
        let (rows, row_len) = (1001, 7);
        let mut out = vec![-1.0f32; rows * row_len];
        let mut blocks = 0;
        in_pool_of_four(|| {
            let seen = std::sync::atomic::AtomicUsize::new(0);
            for_row_blocks(&mut out, row_len, ROW_PART_WORK / 8, |first_row, block| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for (i, row) in block.chunks_exact_mut(row_len).enumerate() {
                    row.iter_mut().enumerate().for_each(|(j, v)| *v = ((first_row + i) * row_len + j) as f32);
                }
            });
            blocks = seen.into_inner();
        });
        assert_eq!(blocks, 4);
        assert!(out.iter().enumerate().all(|(k, &v)| v == k as f32));
    }

    #[test]
    fn products_split_outside_parallel_chunks_only() {
        in_pool_of_four(|| {
            assert_eq!(parts_for(100 << 20, 1 << 20), 4);
            assert_eq!(parts_for(1 << 20, 1 << 20), 1);
            let inside: Vec<usize> = map_ranges(3 * SAMPLES_PER_CHUNK, |_| parts_for(100 << 20, 1 << 20));
            assert_eq!(inside, vec![1; 3]);
            let single_chunk: Vec<usize> = map_ranges(SAMPLES_PER_CHUNK, |_| parts_for(100 << 20, 1 << 20));
            assert_eq!(single_chunk, vec![4]);
        });
    }
}
