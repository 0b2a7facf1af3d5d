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

impl Epilogue {
    /// Filter `filter`'s output `v` (its sum plus bias) through the folded layers, computed as
    /// those layers compute it.
    #[inline]
    pub fn apply(&self, filter: usize, v: f32) -> f32 {
        let v = match &self.affine {
            Some((scale, shift)) => v * scale[filter] + shift[filter],
            None => v,
        };
        if self.relu {
            larger(v, 0.0)
        } else {
            v
        }
    }
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

/// Where a convolution reads its input: its shape, padding and stride.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeometry {
    /// Input channels, all groups together.
    pub channels: usize,
    pub groups: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// A convolution in integer arithmetic: its weights rounded and laid out for the kernel, and
/// where the kernel finds each pair of inputs.
///
/// There is no im2col matrix. A sample's input is rounded once into planes of 32-bit words, one
/// per pair of channels (`c`, `c + 1` of a group) and column phase (`x mod stride`), zero-padded
/// so that every tap of every output position reads inside its plane. The kernel's inner index
/// is then (pair of channels, `ki`, `kj`), and the 8 consecutive output columns of a block read 8
/// consecutive words at a fixed offset per inner index from the block's first column. Copying
/// patches into the kernel's layout was about a quarter of a camera face's time in wasm; this is
/// one pass over the input instead of over `k²` copies of it.
pub struct Int8Conv {
    geometry: ConvGeometry,
    group_filters: usize,
    /// Length of each filter's sum (its patch), and how many pairs of inputs it reads.
    inner: usize,
    pairs: usize,
    /// Pairs of channels per group (the last one half zeros when the group's count is odd).
    pair_channels: usize,
    /// Size of one plane: rows as the padded input has them; columns per phase, with room for
    /// a whole last block of 8 output columns.
    plane_rows: usize,
    plane_columns: usize,
    /// Per inner index: where its 8 words lie, counted from the block's first column.
    offsets: Vec<usize>,
    /// Per group, per block of 4 filters, per inner index, the 4 filters' pairs of weights.
    packed: Vec<u32>,
    /// Per filter: `w ≈ q · scale`.
    scales: Vec<f32>,
    /// The largest rounded activation: `2³¹ − 1` must bound `inner · 127 · limit`.
    activation_limit: f32,
}

impl Int8Conv {
    /// `weight`: `[filters, channels / groups, kernel, kernel]` row-major, filters in
    /// consecutive groups.
    pub fn new(weight: &[f32], filters: usize, geometry: ConvGeometry) -> Int8Conv {
        let ConvGeometry { channels, groups, kernel, stride, out_h, out_w, .. } = geometry;
        let taps = kernel * kernel;
        let group_channels = channels / groups;
        let group_filters = filters / groups;
        let pair_channels = group_channels.div_ceil(2);
        let (inner, pairs) = (group_channels * taps, pair_channels * taps);
        let (quantised, scales) = quantise_rows(weight, filters);
        let blocks = group_filters.div_ceil(BLOCK_FILTERS);
        let mut packed = vec![0u32; groups * blocks * pairs * BLOCK_FILTERS];
        for filter in 0..filters {
            let (group, index) = (filter / group_filters, filter % group_filters);
            let block = group * blocks + index / BLOCK_FILTERS;
            let q = &quantised[filter * inner..(filter + 1) * inner];
            for p in 0..pairs {
                let (first_channel, tap) = (2 * (p / taps), p % taps);
                let second = if first_channel + 1 < group_channels { q[(first_channel + 1) * taps + tap] as i16 } else { 0 };
                packed[(block * pairs + p) * BLOCK_FILTERS + index % BLOCK_FILTERS] = pair(q[first_channel * taps + tap] as i16, second);
            }
        }
        let plane_rows = (out_h - 1) * stride + kernel;
        let plane_columns = out_w.next_multiple_of(BLOCK_COLUMNS) + (kernel - 1) / stride;
        let offsets = (0..pairs)
            .map(|p| {
                let (pair_channel, ki, kj) = (p / taps, p % taps / kernel, p % kernel);
                ((pair_channel * stride + kj % stride) * plane_rows + ki) * plane_columns + kj / stride
            })
            .collect();
        let limit = ((i32::MAX as i64) / (inner.max(1) as i64 * WEIGHT_LIMIT as i64)).min(ACTIVATION_LIMIT);
        Int8Conv {
            geometry,
            group_filters,
            inner,
            pairs,
            pair_channels,
            plane_rows,
            plane_columns,
            offsets,
            packed,
            scales,
            activation_limit: limit as f32,
        }
    }

    /// Rounds `x` to integers with one scale (returned; 0 when `x` is all zeros) such that the
    /// largest magnitude becomes the activation limit.
    pub fn quantise_activations(&self, x: &[f32], q: &mut [i16]) -> f32 {
        // Eight running maxima (vectorised: the maximum does not depend on the order).
        let mut lanes = [0.0f32; 8];
        for chunk in x.chunks(8) {
            lanes.iter_mut().zip(chunk).for_each(|(m, v)| *m = larger(*m, v.abs()));
        }
        let largest = lanes.into_iter().fold(0.0f32, larger);
        if largest == 0.0 || !largest.is_finite() {
            q.fill(0);
            return 0.0;
        }
        let to_integer = self.activation_limit / largest;
        let limit = self.activation_limit;
        // Through i32, which wasm converts four at a time (straight to i16 it goes one by one);
        // the clamp keeps the value in i16's range, so the narrowing is exact.
        q.iter_mut().zip(x).for_each(|(q, v)| *q = round_small((v * to_integer).clamp(-limit, limit)) as i32 as i16);
        largest / self.activation_limit
    }

    /// One sample's input `[channels, in_h, in_w]`, rounded (see
    /// [`Int8Conv::quantise_activations`]) into the padded planes the kernel reads (`planes`);
    /// returns the activations' scale.
    pub fn lay_out(&self, x: &[f32], planes: &mut Vec<u32>) -> f32 {
        let ConvGeometry { channels, groups, in_h, in_w, stride, pad_top, pad_left, .. } = self.geometry;
        let mut rounded = vec![0i16; x.len()];
        let scale = self.quantise_activations(x, &mut rounded);
        let plane_len = self.plane_rows * self.plane_columns;
        planes.clear();
        planes.resize(groups * self.pair_channels * stride * plane_len, 0);
        let (group_channels, channel_len) = (channels / groups, in_h * in_w);
        let channel = |c: usize| &rounded[c * channel_len..][..channel_len];
        for group in 0..groups {
            for pair_channel in 0..self.pair_channels {
                let first = group * group_channels + 2 * pair_channel;
                let second = (2 * pair_channel + 1 < group_channels).then(|| channel(first + 1));
                let first_planes = (group * self.pair_channels + pair_channel) * stride * plane_len;
                // Input rows the padded geometry never reads (valid padding) are left out.
                for iy in 0..in_h.min(self.plane_rows - pad_top) {
                    let row = iy * in_w..(iy + 1) * in_w;
                    let (low, high) = (&channel(first)[row.clone()], second.map(|second| &second[row]));
                    for phase in 0..stride {
                        // The first input column of this phase, and where it goes in the plane's row.
                        let first_column = (phase + stride - pad_left % stride) % stride;
                        let plane_row = first_planes + (phase * self.plane_rows + iy + pad_top) * self.plane_columns;
                        let target = &mut planes[plane_row..plane_row + self.plane_columns][(first_column + pad_left) / stride..];
                        if stride == 1 {
                            interleave(target, low, high);
                        } else {
                            let phase_of = |row: &[i16]| row.iter().skip(first_column).step_by(stride).copied().collect::<Vec<_>>();
                            interleave(target, &phase_of(low), high.map(phase_of).as_deref());
                        }
                    }
                }
            }
        }
        scale
    }

    /// `out[f, j] = (Σ_k q_w[f, k] · q_x[k, j]) · scale_w[f] · activation_scale + bias[f]`, then
    /// the epilogue, for group `group`'s filters (`out`: `[group_filters, out_h · out_w]`), from
    /// planes laid out by [`Int8Conv::lay_out`]. Split across threads by blocks of filters when large.
    pub fn product(&self, group: usize, planes: &[u32], activation_scale: f32, bias: &[f32], epilogue: &Epilogue, out: &mut [f32]) {
        let ConvGeometry { stride, out_h, out_w, .. } = self.geometry;
        let width = out_h * out_w;
        let filter_blocks = self.group_filters.div_ceil(BLOCK_FILTERS);
        let weights_per_block = self.pairs * BLOCK_FILTERS;
        let group_weights = &self.packed[group * filter_blocks * weights_per_block..][..filter_blocks * weights_per_block];
        let group_len = self.pair_channels * stride * self.plane_rows * self.plane_columns;
        let inputs = Gather::new(&planes[group * group_len..][..group_len], &self.offsets);
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
                for oy in 0..out_h {
                    for first_column in (0..out_w).step_by(BLOCK_COLUMNS) {
                        let sums = block_sums(weights, &inputs, oy * stride * self.plane_columns + first_column);
                        let targets = oy * out_w + first_column..oy * out_w + out_w.min(first_column + BLOCK_COLUMNS);
                        for (r, row) in out_block.chunks_exact_mut(width).enumerate() {
                            let (factor, offset) = scale_and_offset[block * BLOCK_FILTERS + r];
                            let targets = &mut row[targets.clone()];
                            targets.iter_mut().zip(&sums[r]).for_each(|(t, &s)| *t = larger(s as f32 * factor + offset, floor));
                        }
                    }
                }
            }
        });
    }
}

/// Where the kernel reads its inputs: for inner index `p` of a block whose first column is at
/// `base`, the 8 pairs of values at `base + offsets[p]` in `input`.
pub struct Gather<'a> {
    input: &'a [u32],
    offsets: &'a [usize],
    /// One past the furthest word any block at base 0 reads.
    reach: usize,
}

impl<'a> Gather<'a> {
    pub fn new(input: &'a [u32], offsets: &'a [usize]) -> Gather<'a> {
        Gather { input, offsets, reach: offsets.iter().max().map_or(0, |&m| m + BLOCK_COLUMNS) }
    }
}

/// `target[i] = pair(low[i], high[i])` (`high` all zeros when `None`), as far as both go.
fn interleave(target: &mut [u32], low: &[i16], high: Option<&[i16]>) {
    match high {
        Some(high) => target.iter_mut().zip(low.iter().zip(high)).for_each(|(t, (&low, &high))| *t = pair(low, high)),
        None => target.iter_mut().zip(low).for_each(|(t, &low)| *t = pair(low, 0)),
    }
}

/// Rounds to the nearest integer, ties to even, for |v| < 2²²: adding 1.5·2²³ leaves no bits
/// for a fraction, so the addition itself rounds. Plain IEEE additions, so every platform gives
/// the same result; `round_ties_even` is a slow library call on x86-64 without SSE4.1.
fn round_small(v: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (v + SHIFT) - SHIFT
}

/// The 4x8 block of sums over the inner indices `p` of `inputs`: `weights` is `[p][4]`, the
/// columns of `p` the 8 words at `base + offsets[p]`; each word a pair of 16-bit values. Every
/// implementation returns the same integers.
pub fn block_sums(weights: &[u32], inputs: &Gather, base: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    let pairs = inputs.offsets.len();
    assert!(weights.len() >= pairs * BLOCK_FILTERS && base + inputs.reach <= inputs.input.len(), "kernel operands too short");
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        // SAFETY: the assert above keeps every load inside the two slices.
        unsafe { block_sums_simd128(weights, inputs, base) }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: as above, and the CPU has AVX2 (checked at run time; the check is cached).
            return unsafe { block_sums_avx2(weights, inputs, base) };
        }
        // SAFETY: as above; SSE2 is part of every x86-64 CPU.
        unsafe { block_sums_sse2(weights, inputs, base) }
    }
    #[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
    {
        block_sums_portable(weights, inputs, base)
    }
}

/// The reference for the SIMD kernels (and the kernel where there is none).
pub fn block_sums_portable(weights: &[u32], inputs: &Gather, base: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    let halves = |pair: u32| (pair as i16 as i32, (pair >> 16) as i16 as i32);
    let mut sums = [[0i32; BLOCK_COLUMNS]; BLOCK_FILTERS];
    for (p, &offset) in inputs.offsets.iter().enumerate() {
        let w = &weights[p * BLOCK_FILTERS..][..BLOCK_FILTERS];
        let x = &inputs.input[base + offset..][..BLOCK_COLUMNS];
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
unsafe fn block_sums_simd128(weights: &[u32], inputs: &Gather, base: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    use core::arch::wasm32::*;
    let (w, x) = (weights.as_ptr(), inputs.input.as_ptr().add(base));
    let mut acc = [[i32x4_splat(0); 2]; BLOCK_FILTERS];
    for (p, &offset) in inputs.offsets.iter().enumerate() {
        let x_low = v128_load(x.add(offset) as *const v128);
        let x_high = v128_load(x.add(offset + 4) as *const v128);
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
unsafe fn block_sums_sse2(weights: &[u32], inputs: &Gather, base: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    use core::arch::x86_64::*;
    let (w, x) = (weights.as_ptr(), inputs.input.as_ptr().add(base));
    let mut acc = [[_mm_setzero_si128(); 2]; BLOCK_FILTERS];
    for (p, &offset) in inputs.offsets.iter().enumerate() {
        let x_low = _mm_loadu_si128(x.add(offset) as *const __m128i);
        let x_high = _mm_loadu_si128(x.add(offset + 4) as *const __m128i);
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
unsafe fn block_sums_avx2(weights: &[u32], inputs: &Gather, base: usize) -> [[i32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    use core::arch::x86_64::*;
    let (w, x) = (weights.as_ptr(), inputs.input.as_ptr().add(base));
    let mut acc = [_mm256_setzero_si256(); BLOCK_FILTERS];
    for (p, &offset) in inputs.offsets.iter().enumerate() {
        let columns = _mm256_loadu_si256(x.add(offset) as *const __m256i);
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

    /// Operands with the extremes of both ranges, where an overflow or a sign slip would show,
    /// and offsets in no order, overlapping, at any alignment.
    fn operands(pairs: usize, seed: u64) -> (Vec<u32>, Vec<u32>, Vec<usize>) {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as i64
        };
        let mut weight = || (next() % 255 - 127) as i16;
        let weights = (0..pairs * BLOCK_FILTERS).map(|_| pair(weight(), weight())).collect();
        let mut activation = || [i16::MAX, -i16::MAX, 0, (next() % 65535 - 32767) as i16][next() as usize % 4];
        let input: Vec<u32> = (0..pairs * BLOCK_COLUMNS + 16).map(|_| pair(activation(), activation())).collect();
        let offsets = (0..pairs).map(|_| next() as usize % (input.len() - BLOCK_COLUMNS - 3)).collect();
        (weights, input, offsets)
    }

    #[test]
    fn simd_kernels_give_the_portable_kernels_sums() {
        // The longest sum an activation limit of 32,767 allows: 2³¹ / (127 · 32,767) ≈ 516 terms.
        for pairs in [1, 2, 7, 258] {
            let (weights, input, offsets) = operands(pairs, pairs as u64);
            let inputs = Gather::new(&input, &offsets);
            for base in [0, 3] {
                let expected = block_sums_portable(&weights, &inputs, base);
                assert_eq!(block_sums(&weights, &inputs, base), expected, "{pairs} pairs");
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: every offset plus the base leaves 8 words in `input`; SSE2 is always there.
                    assert_eq!(unsafe { block_sums_sse2(&weights, &inputs, base) }, expected, "SSE2, {pairs} pairs");
                    if std::is_x86_feature_detected!("avx2") {
                        // SAFETY: as above, and the CPU has AVX2.
                        assert_eq!(unsafe { block_sums_avx2(&weights, &inputs, base) }, expected, "AVX2, {pairs} pairs");
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "kernel operands too short")]
    fn the_kernel_refuses_a_block_that_would_read_past_its_input() {
        let input = vec![0u32; 20];
        let offsets = [0, 12];
        block_sums(&[0; 8], &Gather::new(&input, &offsets), 1);
    }

    /// The sums the kernel reads for output `(f, oy, ox)` equal the direct convolution of the
    /// rounded input: every pair lands on the right tap, padding and phase included.
    #[test]
    fn laid_out_planes_give_the_direct_convolutions_sums() {
        for (channels, groups, size, kernel, stride, pad) in
            [(3, 1, 7, 3, 1, 1), (4, 2, 9, 4, 2, 0), (5, 1, 6, 3, 2, 1), (2, 1, 5, 1, 1, 0), (1, 1, 20, 3, 1, 1)]
        {
            let out = (size + 2 * pad - kernel) / stride + 1;
            let geometry = ConvGeometry {
                channels,
                groups,
                in_h: size,
                in_w: size,
                kernel,
                stride,
                pad_top: pad,
                pad_left: pad,
                out_h: out,
                out_w: out,
            };
            let filters = 2 * groups;
            let inner = channels / groups * kernel * kernel;
            let weight: Vec<f32> = (0..filters * inner).map(|i| ((i * 37 % 23) as f32 - 11.0) / 11.0).collect();
            let x: Vec<f32> = (0..channels * size * size).map(|i| ((i * 53 % 41) as f32 - 20.0) / 20.0).collect();
            let conv = Int8Conv::new(&weight, filters, geometry);
            let mut planes = Vec::new();
            conv.lay_out(&x, &mut planes);
            let mut rounded = vec![0i16; x.len()];
            conv.quantise_activations(&x, &mut rounded);
            let (q, _) = quantise_rows(&weight, filters);
            // The convolution written out: filter `filter`'s sum at output `(oy, ox)`.
            let group_channels = channels / groups;
            let direct_sum = |filter: usize, oy: usize, ox: usize| {
                let mut sum = 0i32;
                for c in 0..group_channels {
                    let channel = filter / 2 * group_channels + c;
                    for (ki, kj) in (0..kernel).flat_map(|ki| (0..kernel).map(move |kj| (ki, kj))) {
                        let (iy, ix) = ((oy * stride + ki).wrapping_sub(pad), (ox * stride + kj).wrapping_sub(pad));
                        if iy < size && ix < size {
                            let value = rounded[(channel * size + iy) * size + ix] as i32;
                            sum += value * q[filter * group_channels * kernel * kernel + (c * kernel + ki) * kernel + kj] as i32;
                        }
                    }
                }
                sum
            };
            let group_len = planes.len() / groups;
            for group in 0..groups {
                let inputs = Gather::new(&planes[group * group_len..][..group_len], &conv.offsets);
                let weights = &conv.packed[group * conv.pairs * BLOCK_FILTERS..][..conv.pairs * BLOCK_FILTERS];
                for (oy, first_column) in (0..out).flat_map(|oy| (0..out).step_by(BLOCK_COLUMNS).map(move |ox| (oy, ox))) {
                    let sums = block_sums(weights, &inputs, oy * stride * conv.plane_columns + first_column);
                    for (f, row) in sums.iter().enumerate().take(2) {
                        let filter = group * 2 + f;
                        for (j, &sum) in row.iter().enumerate().take(out - first_column) {
                            let ox = first_column + j;
                            assert_eq!(sum, direct_sum(filter, oy, ox), "{geometry:?}: filter {filter}, ({oy}, {ox})");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn activations_use_the_range_the_sum_length_allows() {
        let geometry = |channels, kernel| ConvGeometry {
            channels,
            groups: 1,
            in_h: 6,
            in_w: 6,
            kernel,
            stride: 1,
            pad_top: 0,
            pad_left: 0,
            out_h: 7 - kernel,
            out_w: 7 - kernel,
        };
        let long = Int8Conv::new(&vec![0.5; 4 * 1152], 4, geometry(128, 3));
        assert_eq!(long.activation_limit, (i32::MAX as i64 / (1152 * 127)) as f32);
        let short = Int8Conv::new(&[0.5; 4 * 9], 4, geometry(1, 3));
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
