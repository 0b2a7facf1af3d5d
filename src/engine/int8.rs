//! Convolutions in integer arithmetic, for inference: 8-bit weights (one scale per filter, as
//! int8 model files store them) times 16-bit activations (one scale per sample and layer,
//! measured on the fly), summed exactly in 32-bit integers.
//!
//! Why: in wasm, simd128's `i32x4.dot_i16x8_s` does eight multiply-adds in one instruction,
//! where f32 needs a multiply and an add for four; a camera face's products run about 2.5x
//! faster than matrixmultiply's f32 sgemm (measured in V8). Hand-written because no
//! maintained crate has an integer matrix product for wasm simd128.
//!
//! Integer sums are exact, so the result does not depend on the order of the sum: the SIMD
//! kernels (wasm simd128, x86-64 SSE2 or AVX2) and the portable one give the same bits,
//! natively and in the browser, split across threads or not. What differs from f32 is the
//! rounding of each activation to a 16-bit step (the sample's largest activation over 32,767,
//! or over `2³¹ / (127 · patch length)` for patches longer than 516, so that no sum can
//! overflow) and, for models not stored in int8, of each weight to 8 bits.

use super::parallel::for_row_blocks;
use super::tensor::larger;

/// Filters and output columns one call of the kernel computes (32 sums in 8 SIMD registers).
const BLOCK_FILTERS: usize = 4;
const BLOCK_COLUMNS: usize = 8;
/// Weights are rounded to -127..=127 (symmetric: no zero point).
const WEIGHT_LIMIT: f32 = 127.0;
/// Activations are rounded to at most ±32,767, fewer where a long sum could overflow `i32`.
const ACTIVATION_LIMIT: i64 = i16::MAX as i64;

/// What a convolution's output pass applies after the bias: the evaluation-mode batch-norm
/// that follows it (`x · scale + shift` per channel) and a ReLU, each if present. Folding them
/// in saves two passes over the activations per layer.
pub struct Epilogue {
    pub affine: Option<(Vec<f32>, Vec<f32>)>,
    pub relu: bool,
}

/// Per row of `values` (`rows` rows, one per output channel): `q = round(w / scale)` with
/// `scale = max |w| / 127` (0 for an all-zero row).
pub fn quantise_rows(values: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let per_row = values.len().checked_div(rows).unwrap_or(0).max(1);
    let mut quantised = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    for row in values.chunks(per_row) {
        let scale = row.iter().fold(0.0f32, |m, v| larger(m, v.abs())) / WEIGHT_LIMIT;
        scales.push(scale);
        quantised.extend(row.iter().map(|v| if scale > 0.0 { (v / scale).round().clamp(-WEIGHT_LIMIT, WEIGHT_LIMIT) as i8 } else { 0 }));
    }
    (quantised, scales)
}

/// Two 16-bit values side by side in one 32-bit word, the first in the low half: what
/// `i32x4.dot_i16x8_s` (and x86's `pmaddwd`) multiplies pairwise in each 32-bit lane.
pub fn pair(first: i16, second: i16) -> u32 {
    first as u16 as u32 | (second as u16 as u32) << 16
}

/// A convolution's weights, rounded and laid out for the kernel: per group, per block of 4
/// filters, per pair of consecutive inner indices `k`, the 4 filters' pairs of weights.
pub struct Int8Weights {
    group_filters: usize,
    /// Length of each filter's sum (its patch), and that in pairs, rounded up.
    inner: usize,
    pairs: usize,
    packed: Vec<u32>,
    /// Per filter: `w ≈ q · scale`.
    scales: Vec<f32>,
    /// The largest rounded activation: `2³¹ − 1` must bound `inner · 127 · limit`.
    activation_limit: f32,
}

impl Int8Weights {
    /// `weight`: `[filters, inner]` row-major, filters in `groups` consecutive groups.
    pub fn new(weight: &[f32], filters: usize, groups: usize) -> Int8Weights {
        let inner = weight.len() / filters;
        let group_filters = filters / groups;
        let pairs = inner.div_ceil(2);
        let (quantised, scales) = quantise_rows(weight, filters);
        let blocks = group_filters.div_ceil(BLOCK_FILTERS);
        let mut packed = vec![0u32; groups * blocks * pairs * BLOCK_FILTERS];
        for filter in 0..filters {
            let (group, index) = (filter / group_filters, filter % group_filters);
            let block = group * blocks + index / BLOCK_FILTERS;
            // An odd inner length pairs its last weight with a zero.
            for (p, weights) in quantised[filter * inner..(filter + 1) * inner].chunks(2).enumerate() {
                let second = weights.get(1).map_or(0, |&q| q as i16);
                packed[(block * pairs + p) * BLOCK_FILTERS + index % BLOCK_FILTERS] = pair(weights[0] as i16, second);
            }
        }
        let limit = ((i32::MAX as i64) / (inner.max(1) as i64 * WEIGHT_LIMIT as i64)).min(ACTIVATION_LIMIT);
        Int8Weights { group_filters, inner, pairs, packed, scales, activation_limit: limit as f32 }
    }

    /// Rounds `x` to integers with one scale (returned; 0 when `x` is all zeros) such that the
    /// largest magnitude becomes the activation limit.
    pub fn quantise_activations(&self, x: &[f32], q: &mut [i16]) -> f32 {
        let largest = x.iter().fold(0.0f32, |m, v| larger(m, v.abs()));
        if largest == 0.0 || !largest.is_finite() {
            q.fill(0);
            return 0.0;
        }
        let to_integer = self.activation_limit / largest;
        let limit = self.activation_limit;
        q.iter_mut().zip(x).for_each(|(q, v)| *q = round_small((v * to_integer).clamp(-limit, limit)) as i16);
        largest / self.activation_limit
    }

    /// Lays out the `[inner, width]` matrix whose row `k` `row_of(k, row)` writes for the
    /// kernel: per block of 8 columns, per pair of rows, the 8 columns' pairs of values.
    /// Columns past `width` in the last block are left as they were: their sums are never read.
    pub fn pack_rows(&self, width: usize, packed: &mut Vec<u32>, mut row_of: impl FnMut(usize, &mut [i16])) {
        let block_len = self.pairs * BLOCK_COLUMNS;
        let len = width.div_ceil(BLOCK_COLUMNS) * block_len;
        if packed.len() < len {
            packed.resize(len, 0);
        }
        let (mut first, mut second) = (vec![0i16; width], vec![0i16; width]);
        for p in 0..self.pairs {
            row_of(2 * p, &mut first);
            // An odd inner length pairs its last row with zeros (their weights are zero too).
            if 2 * p + 1 < self.inner {
                row_of(2 * p + 1, &mut second);
            } else {
                second.fill(0);
            }
            let blocks = first.chunks(BLOCK_COLUMNS).zip(second.chunks(BLOCK_COLUMNS));
            for (block, (first, second)) in blocks.enumerate() {
                let target = &mut packed[block * block_len + p * BLOCK_COLUMNS..][..first.len()];
                target.iter_mut().zip(first.iter().zip(second)).for_each(|(t, (&a, &b))| *t = pair(a, b));
            }
        }
    }

    /// `out[f, j] = (Σ_k q_w[f, k] · q_x[k, j]) · scale_w[f] · activation_scale + bias[f]`, then
    /// the epilogue, for group `group`'s filters (`out`: `[group_filters, width]`), from columns
    /// packed by [`Int8Weights::pack_rows`]. Split across threads by blocks of filters when large.
    #[allow(clippy::too_many_arguments)]
    pub fn product(
        &self,
        group: usize,
        packed_columns: &[u32],
        width: usize,
        activation_scale: f32,
        bias: &[f32],
        epilogue: &Epilogue,
        out: &mut [f32],
    ) {
        let filter_blocks = self.group_filters.div_ceil(BLOCK_FILTERS);
        let column_blocks = width.div_ceil(BLOCK_COLUMNS);
        let weights_per_block = self.pairs * BLOCK_FILTERS;
        let columns_per_block = self.pairs * BLOCK_COLUMNS;
        let group_weights = &self.packed[group * filter_blocks * weights_per_block..][..filter_blocks * weights_per_block];
        let first_filter = group * self.group_filters;
        // Per filter, (sum · scales + bias) · affine scale + affine shift as one multiply-add.
        let scale_and_offset: Vec<(f32, f32)> = (first_filter..first_filter + self.group_filters)
            .map(|filter| {
                let (scale, shift) = epilogue.affine.as_ref().map_or((1.0, 0.0), |(scale, shift)| (scale[filter], shift[filter]));
                (self.scales[filter] * activation_scale * scale, bias[filter] * scale + shift)
            })
            .collect();
        let floor = if epilogue.relu { 0.0 } else { f32::NEG_INFINITY };
        let block_len = BLOCK_FILTERS * width;
        for_row_blocks(out, block_len, BLOCK_FILTERS * self.inner * width, |first_block, blocks| {
            for (b, out_block) in blocks.chunks_mut(block_len).enumerate() {
                let block = first_block + b;
                let weights = &group_weights[block * weights_per_block..][..weights_per_block];
                for column_block in 0..column_blocks {
                    let columns = &packed_columns[column_block * columns_per_block..][..columns_per_block];
                    let sums = block_sums(weights, columns, self.pairs);
                    let first_column = column_block * BLOCK_COLUMNS;
                    let count = BLOCK_COLUMNS.min(width - first_column);
                    for (r, row) in out_block.chunks_exact_mut(width).enumerate() {
                        let (factor, offset) = scale_and_offset[block * BLOCK_FILTERS + r];
                        let targets = &mut row[first_column..first_column + count];
                        targets.iter_mut().zip(&sums[r]).for_each(|(t, &s)| *t = larger(s as f32 * factor + offset, floor));
                    }
                }
            }
        });
    }
}

/// Rounds to the nearest integer, ties to even, for |v| < 2²²: adding 1.5·2²³ leaves no bits
/// for a fraction, so the addition itself rounds. Plain IEEE additions, so every platform gives
/// the same result; `round_ties_even` is a slow library call on x86-64 without SSE4.1.
fn round_small(v: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (v + SHIFT) - SHIFT
}

/// The 4x8 block of sums over `pairs` pairs: `weights` is `[pairs][4]`, `columns` `[pairs][8]`,
/// each a pair of 16-bit values. Every implementation returns the same integers.
pub fn block_sums(weights: &[u32], columns: &[u32], pairs: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    assert!(weights.len() >= pairs * BLOCK_FILTERS && columns.len() >= pairs * BLOCK_COLUMNS, "kernel operands too short");
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        // SAFETY: the assert above keeps every load inside the two slices.
        unsafe { block_sums_simd128(weights, columns, pairs) }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: as above, and the CPU has AVX2 (checked at run time; the check is cached).
            return unsafe { block_sums_avx2(weights, columns, pairs) };
        }
        // SAFETY: as above; SSE2 is part of every x86-64 CPU.
        unsafe { block_sums_sse2(weights, columns, pairs) }
    }
    #[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
    {
        block_sums_portable(weights, columns, pairs)
    }
}

/// The reference for the SIMD kernels (and the kernel where there is none).
pub fn block_sums_portable(weights: &[u32], columns: &[u32], pairs: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    let halves = |pair: u32| (pair as i16 as i32, (pair >> 16) as i16 as i32);
    let mut sums = [[0i32; BLOCK_COLUMNS]; BLOCK_FILTERS];
    for p in 0..pairs {
        let w = &weights[p * BLOCK_FILTERS..][..BLOCK_FILTERS];
        let x = &columns[p * BLOCK_COLUMNS..][..BLOCK_COLUMNS];
        for (row, &w) in sums.iter_mut().zip(w) {
            let (w0, w1) = halves(w);
            for (sum, &x) in row.iter_mut().zip(x) {
                let (x0, x1) = halves(x);
                *sum += w0 * x0 + w1 * x1;
            }
        }
    }
    sums
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
unsafe fn block_sums_simd128(weights: &[u32], columns: &[u32], pairs: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    use core::arch::wasm32::*;
    let (w, x) = (weights.as_ptr(), columns.as_ptr());
    let mut acc = [[i32x4_splat(0); 2]; BLOCK_FILTERS];
    for p in 0..pairs {
        let x_low = v128_load(x.add(p * BLOCK_COLUMNS) as *const v128);
        let x_high = v128_load(x.add(p * BLOCK_COLUMNS + 4) as *const v128);
        for (r, acc) in acc.iter_mut().enumerate() {
            // Filter r's pair of weights in every 32-bit lane, one lane per column.
            let pair = v128_load32_splat(w.add(p * BLOCK_FILTERS + r));
            acc[0] = i32x4_add(acc[0], i32x4_dot_i16x8(pair, x_low));
            acc[1] = i32x4_add(acc[1], i32x4_dot_i16x8(pair, x_high));
        }
    }
    let mut sums = [[0i32; BLOCK_COLUMNS]; BLOCK_FILTERS];
    for (row, acc) in sums.iter_mut().zip(&acc) {
        v128_store(row.as_mut_ptr() as *mut v128, acc[0]);
        v128_store(row.as_mut_ptr().add(4) as *mut v128, acc[1]);
    }
    sums
}

#[cfg(target_arch = "x86_64")]
unsafe fn block_sums_sse2(weights: &[u32], columns: &[u32], pairs: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    use core::arch::x86_64::*;
    let (w, x) = (weights.as_ptr(), columns.as_ptr());
    let mut acc = [[_mm_setzero_si128(); 2]; BLOCK_FILTERS];
    for p in 0..pairs {
        let x_low = _mm_loadu_si128(x.add(p * BLOCK_COLUMNS) as *const __m128i);
        let x_high = _mm_loadu_si128(x.add(p * BLOCK_COLUMNS + 4) as *const __m128i);
        for (r, acc) in acc.iter_mut().enumerate() {
            let pair = _mm_set1_epi32(*w.add(p * BLOCK_FILTERS + r) as i32);
            acc[0] = _mm_add_epi32(acc[0], _mm_madd_epi16(pair, x_low));
            acc[1] = _mm_add_epi32(acc[1], _mm_madd_epi16(pair, x_high));
        }
    }
    let mut sums = [[0i32; BLOCK_COLUMNS]; BLOCK_FILTERS];
    for (row, acc) in sums.iter_mut().zip(&acc) {
        _mm_storeu_si128(row.as_mut_ptr() as *mut __m128i, acc[0]);
        _mm_storeu_si128(row.as_mut_ptr().add(4) as *mut __m128i, acc[1]);
    }
    sums
}

/// The x86-64 kernel with 256-bit registers: one register holds a pair of rows for all 8 columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_sums_avx2(weights: &[u32], columns: &[u32], pairs: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    use core::arch::x86_64::*;
    let (w, x) = (weights.as_ptr(), columns.as_ptr());
    let mut acc = [_mm256_setzero_si256(); BLOCK_FILTERS];
    for p in 0..pairs {
        let columns = _mm256_loadu_si256(x.add(p * BLOCK_COLUMNS) as *const __m256i);
        for (r, acc) in acc.iter_mut().enumerate() {
            let pair = _mm256_set1_epi32(*w.add(p * BLOCK_FILTERS + r) as i32);
            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(pair, columns));
        }
    }
    let mut sums = [[0i32; BLOCK_COLUMNS]; BLOCK_FILTERS];
    for (row, acc) in sums.iter_mut().zip(&acc) {
        _mm256_storeu_si256(row.as_mut_ptr() as *mut __m256i, *acc);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operands with the extremes of both ranges, where an overflow or a sign slip would show.
    fn operands(pairs: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as i64
        };
        let mut weight = || (next() % 255 - 127) as i16;
        let weights = (0..pairs * BLOCK_FILTERS).map(|_| pair(weight(), weight())).collect();
        let mut activation = || [i16::MAX, -i16::MAX, 0, (next() % 65535 - 32767) as i16][next() as usize % 4];
        let columns = (0..pairs * BLOCK_COLUMNS).map(|_| pair(activation(), activation())).collect();
        (weights, columns)
    }

    #[test]
    fn simd_kernels_give_the_portable_kernels_sums() {
        // The longest sum an activation limit of 32,767 allows: 2³¹ / (127 · 32,767) ≈ 516 terms.
        for pairs in [1, 2, 7, 258] {
            let (weights, columns) = operands(pairs, pairs as u64);
            let expected = block_sums_portable(&weights, &columns, pairs);
            assert_eq!(block_sums(&weights, &columns, pairs), expected, "{pairs} pairs");
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: the operands are as long as `pairs` needs; SSE2 is always there.
                assert_eq!(unsafe { block_sums_sse2(&weights, &columns, pairs) }, expected, "SSE2, {pairs} pairs");
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: as above, and the CPU has AVX2.
                    assert_eq!(unsafe { block_sums_avx2(&weights, &columns, pairs) }, expected, "AVX2, {pairs} pairs");
                }
            }
        }
    }

    #[test]
    fn activations_use_the_range_the_sum_length_allows() {
        let long = Int8Weights::new(&vec![0.5; 4 * 1152], 4, 1);
        assert_eq!(long.activation_limit, (i32::MAX as i64 / (1152 * 127)) as f32);
        let short = Int8Weights::new(&[0.5; 4 * 9], 4, 1);
        assert_eq!(short.activation_limit, i16::MAX as f32);
        let mut q = [0i16; 4];
        let scale = short.quantise_activations(&[-2.0, 1.0, 0.5, 0.0], &mut q);
        assert_eq!(q, [-32767, 16384, 8192, 0]);
        assert_eq!(scale, 2.0 / 32767.0);
        assert_eq!(short.quantise_activations(&[0.0; 4], &mut q), 0.0);
    }

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        let rounded: Vec<f32> = [0.4, 0.5, 1.5, 2.5, -0.5, -1.5, -2.6, 32766.5].iter().map(|&v| round_small(v)).collect();
        assert_eq!(rounded, [0.0, 0.0, 2.0, 2.0, -0.0, -2.0, -3.0, 32766.0]);
    }
}
